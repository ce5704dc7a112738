//! Zones: polygons in image fractions. An object is in a zone when the
//! bottom centre of its box (where it stands) is inside the polygon.

use strix_runtime::meta::Detection;

#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    pub name: String,
    pub polygon: Vec<[f32; 2]>,
}

impl Zone {
    /// Even-odd ray casting; points on an edge may fall either way.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let p = &self.polygon;
        let mut inside = false;
        let mut j = p.len().wrapping_sub(1);
        for i in 0..p.len() {
            let ([xi, yi], [xj, yj]) = (p[i], p[j]);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }

    pub fn contains_det(&self, d: &Detection) -> bool {
        self.contains((d.x0 + d.x1) / 2.0, d.y1.min(0.999))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_in_polygon() {
        let z = Zone {
            name: "z".into(),
            polygon: vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
        };
        assert!(z.contains(0.25, 0.5));
        assert!(!z.contains(0.75, 0.5));
        let tri = Zone {
            name: "t".into(),
            polygon: vec![[0.0, 1.0], [1.0, 1.0], [0.5, 0.0]],
        };
        assert!(tri.contains(0.5, 0.9));
        assert!(!tri.contains(0.05, 0.1));
        let d = Detection {
            x0: 0.1,
            y0: 0.1,
            x1: 0.3,
            y1: 1.0,
            score: 1.0,
            class: 0,
        };
        assert!(z.contains_det(&d));
    }
}
