//! Keyword spotting: the Rust MFCC front end feeds the model correctly, and the
//! int8 model agrees with fp32 on the shipped clips and on two sets of 240
//! clips synthesised at test time (espeak-ng voices, accents, speeds,
//! pitches, sox noise), calibrated on the four shipped clips only.

use std::path::PathBuf;
use strix_tests::{case, convert, root, scratch};
use strix_tools::eval::Reference;

const LABELS: [&str; 12] = [
    "down",
    "go",
    "left",
    "no",
    "off",
    "on",
    "right",
    "stop",
    "up",
    "yes",
    "_silence_",
    "_unknown_",
];

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

#[test]
fn kws_int8_agrees_with_fp32() {
    let dir = scratch("kws");
    let c = case("kws");
    let (m, _) = convert(&c, &dir);
    let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
    let reference = Reference::new(&c.onnx, &shape).unwrap();
    let top1 = |p: &PathBuf| {
        let x = strix_tools::media::load_input(p, &m.meta.input, &shape).unwrap();
        (
            argmax(&reference.run(&shape, &x).unwrap()[0].0),
            argmax(&strix_tools::run_values(&m, &x).unwrap()[0].0),
        )
    };
    // The front end is right: fp32 says "yes" on the yes clip.
    let (f, _) = top1(&c.samples[0]);
    assert_eq!(LABELS[f], "yes");
    for p in &c.samples {
        let (f, q) = top1(p);
        assert_eq!(
            f,
            q,
            "{}: fp32 {} int8 {}",
            p.display(),
            LABELS[f],
            LABELS[q]
        );
    }
    // Synthesised sets, never used for calibration: English voices, and
    // (KWS_PROFILE=accents) other accents, speeds, levels and louder noise.
    let mut low = vec![];
    for profile in ["standard", "accents"] {
        let gen = dir.join(format!("clips-{profile}"));
        let status = std::process::Command::new("bash")
            .arg(root().join("tests/scripts/gen_kws_clips.sh"))
            .arg(&gen)
            .arg("20")
            .env("KWS_PROFILE", profile)
            .status()
            .expect("running tests/scripts/gen_kws_clips.sh (needs espeak-ng and sox)");
        assert!(
            status.success(),
            "clip generation failed (apt-get install espeak-ng sox)"
        );
        let mut clips: Vec<PathBuf> = walk(&gen);
        clips.sort();
        assert!(clips.len() >= 200, "only {} clips generated", clips.len());
        let mut agree = 0;
        for p in &clips {
            let (f, q) = top1(p);
            agree += (f == q) as usize;
        }
        let rate = agree as f64 / clips.len() as f64;
        eprintln!(
            "kws: int8 agrees with fp32 on {agree}/{} generated clips ({profile}: {:.1}%)",
            clips.len(),
            100.0 * rate
        );
        if rate < 0.97 {
            low.push(format!("{profile}: {rate}"));
        }
    }
    assert!(low.is_empty(), "agreement below 97%: {low:?}");
}

fn walk(d: &std::path::Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "wav") {
            out.push(p);
        }
    }
    out
}
