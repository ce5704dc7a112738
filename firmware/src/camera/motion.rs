//! The motion gate: frame differencing on a downscaled grey frame. A still
//! scene skips inference; the caller still runs the detector while tracks are
//! alive so that an object that stops moving is not lost.

use super::source::Image;

pub struct MotionGate {
    width: usize,
    pixel_delta: u8,
    threshold: f32,
    prev: Vec<u8>,
    cur: Vec<u8>,
    dims: (usize, usize),
}

impl MotionGate {
    /// `width`: width of the compared grey frame; `pixel_delta`: grey level
    /// change that counts a pixel as changed; `threshold`: fraction of changed
    /// pixels that means motion.
    pub fn new(width: usize, pixel_delta: u8, threshold: f32) -> Self {
        MotionGate {
            width: width.max(1),
            pixel_delta,
            threshold,
            prev: vec![],
            cur: vec![],
            dims: (0, 0),
        }
    }

    /// Fraction of changed pixels against the previous frame (1.0 for the
    /// first frame or after a size change).
    pub fn changed_fraction(&mut self, img: &Image) -> f32 {
        let w = self.width.min(img.width).max(1);
        let h = ((img.height * w) / img.width.max(1)).max(1);
        self.cur.clear();
        // Box average over each cell: cheap and noise-tolerant.
        for gy in 0..h {
            let (y0, y1) = (
                gy * img.height / h,
                ((gy + 1) * img.height / h).max(gy * img.height / h + 1),
            );
            for gx in 0..w {
                let (x0, x1) = (
                    gx * img.width / w,
                    ((gx + 1) * img.width / w).max(gx * img.width / w + 1),
                );
                let mut sum = 0u64;
                let mut n = 0u64;
                for y in y0..y1.min(img.height) {
                    for x in x0..x1.min(img.width) {
                        let p = &img.rgb[(y * img.width + x) * 3..][..3];
                        sum += (77 * p[0] as u64 + 150 * p[1] as u64 + 29 * p[2] as u64) >> 8;
                        n += 1;
                    }
                }
                self.cur.push((sum / n.max(1)) as u8);
            }
        }
        let frac = if self.dims != (w, h) || self.prev.len() != self.cur.len() {
            1.0
        } else {
            let changed = self
                .prev
                .iter()
                .zip(&self.cur)
                .filter(|(a, b)| a.abs_diff(**b) > self.pixel_delta)
                .count();
            changed as f32 / self.cur.len().max(1) as f32
        };
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.dims = (w, h);
        frac
    }

    /// Whether `img` differs enough from the previous frame.
    pub fn is_motion(&mut self, img: &Image) -> bool {
        self.changed_fraction(img) > self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(v: u8, w: usize, h: usize) -> Image {
        Image {
            width: w,
            height: h,
            rgb: vec![v; w * h * 3],
        }
    }

    #[test]
    fn still_scene_is_not_motion() {
        let mut g = MotionGate::new(16, 20, 0.01);
        assert!(g.is_motion(&img(100, 64, 48)), "first frame");
        assert!(!g.is_motion(&img(105, 64, 48)), "small brightness change");
        let mut moved = img(105, 64, 48);
        for y in 0..24 {
            for x in 0..32 {
                moved.rgb[(y * 64 + x) * 3..][..3].fill(250);
            }
        }
        assert!(g.is_motion(&moved));
        assert!(!g.is_motion(&moved));
        assert!(g.is_motion(&img(105, 32, 32)), "size change");
    }
}
