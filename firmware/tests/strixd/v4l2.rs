//! V4L2 frame formats converted like ffmpeg converts them.

use super::harness::*;

/// Removes every DHT (Huffman table) segment before the scan, as many UVC
/// cameras send MJPEG (the decoder must then use the standard tables).
fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        let (m, len) = (
            jpeg[i + 1],
            u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize,
        );
        if m == 0xDA {
            out.extend_from_slice(&jpeg[i..]);
            return out;
        }
        if m != 0xC4 {
            out.extend_from_slice(&jpeg[i..i + 2 + len]);
        }
        i += 2 + len;
    }
    panic!("no scan in the JPEG");
}

/// V4L2 frame conversion on recorded buffers (the test double for a camera):
/// a 640x480 YUYV buffer and an MJPEG buffer, both made by ffmpeg from a
/// shipped photo, converted by strixd and compared with ffmpeg's own RGB.
#[test]
fn v4l2_frames_convert_like_ffmpeg() {
    use strix_firmware::camera::v4l2::{convert, PixelFormat};
    need_tool("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let photo = root().join("models/images/fastestdet_3.jpg");
    let ff = |args: &[&str]| {
        run_ok(
            Command::new("ffmpeg")
                .args(["-loglevel", "error", "-y"])
                .args(args)
                .current_dir(d),
        )
    };
    let src = photo.display().to_string();
    ff(&[
        "-i",
        &src,
        "-vf",
        "scale=640:480",
        "-pix_fmt",
        "yuyv422",
        "-f",
        "rawvideo",
        "frame.yuyv",
    ]);
    ff(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuyv422",
        "-s",
        "640x480",
        "-i",
        "frame.yuyv",
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        "frame.rgb",
    ]);
    // `-huffman default`: the standard tables, as UVC cameras use.
    ff(&[
        "-i",
        &src,
        "-vf",
        "scale=640:480",
        "-q:v",
        "3",
        "-huffman",
        "default",
        "-f",
        "mjpeg",
        "frame.mjpg",
    ]);
    let yuyv = std::fs::read(d.join("frame.yuyv")).unwrap();
    let want = std::fs::read(d.join("frame.rgb")).unwrap();
    assert_eq!(yuyv.len(), 640 * 480 * 2);
    let cam = Path::new("/dev/video-test");
    let got = convert(PixelFormat::Yuyv, 640, 480, 1280, &yuyv, cam).unwrap();
    let diffs: Vec<i32> = got
        .rgb
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .collect();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    let max = *diffs.iter().max().unwrap();
    eprintln!("YUYV vs ffmpeg rgb24: mean |diff| {mean:.3}, max {max}");
    assert!(mean < 2.0 && max <= 8, "mean {mean}, max {max}");
    // The same buffer in a driver's padded rows (stride 1344) converts the same.
    let padded: Vec<u8> = yuyv
        .chunks_exact(1280)
        .flat_map(|r| r.iter().copied().chain([0u8; 64]))
        .collect();
    assert_eq!(
        convert(PixelFormat::Yuyv, 640, 480, 1344, &padded, cam).unwrap(),
        got
    );
    // MJPEG, with its Huffman tables and without them (UVC style).
    let mjpg = std::fs::read(d.join("frame.mjpg")).unwrap();
    let full = convert(PixelFormat::Mjpeg, 640, 480, 0, &mjpg, cam).unwrap();
    let mean_vs_yuyv = full
        .rgb
        .iter()
        .zip(&got.rgb)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .sum::<i32>() as f64
        / full.rgb.len() as f64;
    assert!(
        mean_vs_yuyv < 6.0,
        "MJPEG and YUYV frames of one photo: mean |diff| {mean_vs_yuyv}"
    );
    let bare = strip_dht(&mjpg);
    assert!(bare.len() < mjpg.len());
    let no_dht = convert(PixelFormat::Mjpeg, 640, 480, 0, &bare, cam).unwrap();
    assert_eq!(
        no_dht, full,
        "decoded with the standard tables strixd inserts"
    );
}
