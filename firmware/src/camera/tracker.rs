//! A SORT-like multi-object tracker: greedy IoU matching of detections to
//! tracks of the same class (no Kalman prediction yet), new tracks for
//! unmatched detections, tracks removed after `max_age` missed frames.

use strix_runtime::meta::Detection;
use strix_runtime::postprocess::iou;

#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub id: u64,
    pub class: u32,
    /// Latest matched box (fractions of the image).
    pub det: Detection,
    pub top_score: f32,
    /// Frames with a match.
    pub hits: u32,
    /// Consecutive inferred frames without a match.
    pub misses: u32,
    /// Matched on the latest update.
    pub matched: bool,
}

pub struct Tracker {
    iou_min: f32,
    max_age: u32,
    next_id: u64,
    tracks: Vec<Track>,
}

impl Tracker {
    pub fn new(iou_min: f32, max_age: u32) -> Self {
        Tracker {
            iou_min,
            max_age,
            next_id: 1,
            tracks: Vec::new(),
        }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Updates with one frame's detections; returns the tracks removed (ended).
    pub fn update(&mut self, dets: &[Detection]) -> Vec<Track> {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in dets.iter().enumerate() {
                if d.class == t.class {
                    let v = iou(&t.det, d);
                    if v >= self.iou_min {
                        pairs.push((v, ti, di));
                    }
                }
            }
        }
        // Greedy: best overlaps first; NaN-free since iou never returns NaN.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut t_used = vec![false; self.tracks.len()];
        let mut d_used = vec![false; dets.len()];
        for t in &mut self.tracks {
            t.matched = false;
        }
        for (_, ti, di) in pairs {
            if t_used[ti] || d_used[di] {
                continue;
            }
            t_used[ti] = true;
            d_used[di] = true;
            let t = &mut self.tracks[ti];
            t.det = dets[di];
            t.top_score = t.top_score.max(dets[di].score);
            t.hits += 1;
            t.misses = 0;
            t.matched = true;
        }
        let mut ended = Vec::new();
        let max_age = self.max_age;
        self.tracks.retain_mut(|t| {
            if !t.matched {
                t.misses += 1;
                if t.misses > max_age {
                    ended.push(t.clone());
                    return false;
                }
            }
            true
        });
        for (di, d) in dets.iter().enumerate() {
            if !d_used[di] {
                self.tracks.push(Track {
                    id: self.next_id,
                    class: d.class,
                    det: *d,
                    top_score: d.score,
                    hits: 1,
                    misses: 0,
                    matched: true,
                });
                self.next_id += 1;
            }
        }
        ended
    }

    /// Ends every track (end of stream).
    pub fn finish(&mut self) -> Vec<Track> {
        std::mem::take(&mut self.tracks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: f32, class: u32) -> Detection {
        Detection {
            x0: x,
            y0: 0.1,
            x1: x + 0.2,
            y1: 0.5,
            score: 0.8,
            class,
        }
    }

    #[test]
    fn keeps_ids_while_moving_and_ages_out() {
        let mut t = Tracker::new(0.3, 2);
        t.update(&[d(0.1, 0), d(0.6, 0)]);
        let ids: Vec<u64> = t.tracks().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 2]);
        t.update(&[d(0.62, 0), d(0.12, 0)]);
        assert_eq!(t.tracks().len(), 2);
        assert!(t.tracks().iter().all(|t| t.hits == 2));
        // Track 2 disappears: survives max_age misses, then ends.
        assert!(t.update(&[d(0.14, 0)]).is_empty());
        assert!(t.update(&[d(0.16, 0)]).is_empty());
        let ended = t.update(&[d(0.18, 0)]);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].id, 2);
        assert_eq!(t.tracks()[0].id, 1);
    }

    #[test]
    fn classes_do_not_match_each_other() {
        let mut t = Tracker::new(0.3, 0);
        t.update(&[d(0.1, 0)]);
        let ended = t.update(&[d(0.1, 2)]);
        assert_eq!(ended.len(), 1);
        assert_eq!(t.tracks()[0].id, 2);
    }
}
