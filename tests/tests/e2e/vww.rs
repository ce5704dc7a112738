//! Visual wake words on the two labelled samples, decoded as the models README
//! says (`person.bmp` stores int8 bit patterns: grey = byte ^ 0x80).

use strix_tests::{case, convert, models, scratch};
use strix_tools::eval::Reference;

fn decoded_png(name: &str, xor: bool, dir: &std::path::Path) -> std::path::PathBuf {
    let img = image::open(models().join("vww").join(name))
        .unwrap()
        .to_luma8();
    let (w, h) = img.dimensions();
    let mut rgb = image::RgbImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels() {
        let g = if xor { p[0] ^ 0x80 } else { p[0] };
        rgb.put_pixel(x, y, image::Rgb([g, g, g]));
    }
    let out = dir.join(name.replace(".bmp", ".png"));
    rgb.save(&out).unwrap();
    out
}

#[test]
fn vww_person_and_no_person() {
    let dir = scratch("vww");
    let c = case("vww");
    let (m, _) = convert(&c, &dir);
    let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
    let reference = Reference::new(&c.onnx, &shape).unwrap();
    for (name, xor, want_person) in [("person.bmp", true, true), ("no_person.bmp", false, false)] {
        let png = decoded_png(name, xor, &dir);
        let x = strix_tools::media::load_input(&png, &m.meta.input, &shape).unwrap();
        let fp32 = reference.run(&shape, &x).unwrap()[0].0.clone();
        let int8 = strix_tools::run_values(&m, &x).unwrap()[0].0.clone();
        eprintln!(
            "{name}: fp32 person {:.4}, int8 person {:.4}",
            fp32[1], int8[1]
        );
        assert_eq!(fp32[1] > 0.5, want_person, "{name}: fp32 {fp32:?}");
        assert_eq!(
            int8[1] > 0.5,
            fp32[1] > 0.5,
            "{name}: int8 {int8:?} vs fp32 {fp32:?}"
        );
        assert!(
            (int8[1] - fp32[1]).abs() <= 0.03,
            "{name}: person score {} vs fp32 {}",
            int8[1],
            fp32[1]
        );
    }
}
