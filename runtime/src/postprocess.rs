//! Model outputs -> results: detection decoders (FastestDet, UltraFace),
//! non-maximum suppression, top-k classification and a small mAP@0.5 metric.
//!
//! All boxes are [`Detection`]s with corners in fractions (0..1) of the model
//! input; map them back to the source image with
//! [`crate::preprocess::Letterbox::to_source`].

use std::cmp::Ordering;

use thiserror::Error;

use crate::meta::{Decoder, Detection};

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PostprocessError {
    /// A tensor's shape does not fit the decoder.
    #[error("{what}: expected shape {expected}, got {actual:?}")]
    Shape {
        what: &'static str,
        expected: String,
        actual: Vec<usize>,
    },
    /// A buffer's length does not match its shape.
    #[error("{what}: shape {shape:?} holds {expected} values but the buffer has {actual}")]
    Length {
        what: &'static str,
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    /// The decoder needs more model outputs than were given.
    #[error("{decoder} decoder needs {expected} output(s), got {actual}")]
    OutputCount {
        decoder: &'static str,
        expected: usize,
        actual: usize,
    },
}

/// Result of [`decode`].
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// Boxes after NMS, by descending score.
    Detections(Vec<Detection>),
    /// `(class, probability)` by descending probability.
    TopK(Vec<(usize, f32)>),
    /// [`Decoder::Raw`]: the caller shows the tensors themselves.
    Raw,
}

/// Intersection over union of two boxes. Boxes with inverted corners count as
/// empty; returns 0 when the union is empty or not a number.
pub fn iou(a: &Detection, b: &Detection) -> f32 {
    let area = |d: &Detection| (d.x1 - d.x0).max(0.0) * (d.y1 - d.y0).max(0.0);
    let iw = (a.x1.min(b.x1) - a.x0.max(b.x0)).max(0.0);
    let ih = (a.y1.min(b.y1) - a.y0.max(b.y0)).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Descending-score order that puts NaN scores last instead of panicking.
fn by_score_desc(a: f32, b: f32) -> Ordering {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    key(b).total_cmp(&key(a))
}

/// Greedy per-class non-maximum suppression, in place.
///
/// Sorts `dets` by descending score (stable: equal scores keep their input
/// order; NaN scores go last), then drops every box whose IoU with an already
/// kept box of the same class is greater than `iou_threshold`. The survivors
/// stay sorted by descending score. Allocates nothing.
pub fn nms(dets: &mut Vec<Detection>, iou_threshold: f32) {
    dets.sort_by(|a, b| by_score_desc(a.score, b.score));
    let mut kept = 0;
    for i in 0..dets.len() {
        let d = dets[i];
        let suppressed = dets[..kept]
            .iter()
            .any(|k| k.class == d.class && iou(k, &d) > iou_threshold);
        if !suppressed {
            dets[kept] = d;
            kept += 1;
        }
    }
    dets.truncate(kept);
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Clamps to 0..1, sending NaN to 0 (`f32::clamp` would keep NaN).
fn clamp01(v: f32) -> f32 {
    if v >= 0.0 {
        v.min(1.0)
    } else {
        0.0
    }
}

/// Number of values a shape describes, or `None` on overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

fn check_len(what: &'static str, data: &[f32], shape: &[usize]) -> Result<(), PostprocessError> {
    let expected = numel(shape).unwrap_or(usize::MAX);
    if data.len() != expected {
        return Err(PostprocessError::Length {
            what,
            shape: shape.to_vec(),
            expected,
            actual: data.len(),
        });
    }
    Ok(())
}

/// Decodes a FastestDet head of shape `[1, 5 + C, H, W]` (`C >= 1`), laid out
/// channel-major: per cell `(h, w)` the channels are `obj, tx, ty, tw, th`
/// and `C` class scores.
///
/// Per cell: `score = obj^0.6 * max(cls)^0.4` (negative values count as 0),
/// kept when `score > score_threshold`; class = first argmax; centre
/// `cx = (w + tanh(tx)) / W`, `cy = (h + tanh(ty)) / H`; size `sigmoid(tw)` x
/// `sigmoid(th)`; corners clamped to 0..1. Then per-class [`nms`] at `nms_iou`.
/// Coordinates are fractions of the model input. Cells with NaN scores are
/// dropped.
pub fn decode_fastestdet(
    out: &[f32],
    shape: &[usize],
    score_threshold: f32,
    nms_iou: f32,
) -> Result<Vec<Detection>, PostprocessError> {
    let bad_shape = || PostprocessError::Shape {
        what: "FastestDet output",
        expected: "[1, 5 + classes, H, W] with classes, H, W >= 1".into(),
        actual: shape.to_vec(),
    };
    let &[n, c, h, w] = shape else {
        return Err(bad_shape());
    };
    if n != 1 || c < 6 || h == 0 || w == 0 {
        return Err(bad_shape());
    }
    check_len("FastestDet output", out, shape)?;
    let plane = h * w;
    let mut dets = Vec::new();
    for cy in 0..h {
        for cx in 0..w {
            let i = cy * w + cx;
            let at = |ch: usize| out[ch * plane + i];
            let (mut best, mut class) = (f32::NEG_INFINITY, 0usize);
            for k in 0..c - 5 {
                let v = at(5 + k);
                if v > best {
                    (best, class) = (v, k);
                }
            }
            let score = at(0).max(0.0).powf(0.6) * best.max(0.0).powf(0.4);
            // partial_cmp so that a NaN score (or threshold) drops the cell.
            if score.partial_cmp(&score_threshold) != Some(Ordering::Greater) {
                continue;
            }
            let bx = (cx as f32 + at(1).tanh()) / w as f32;
            let by = (cy as f32 + at(2).tanh()) / h as f32;
            let (bw, bh) = (sigmoid(at(3)), sigmoid(at(4)));
            dets.push(Detection {
                x0: clamp01(bx - 0.5 * bw),
                y0: clamp01(by - 0.5 * bh),
                x1: clamp01(bx + 0.5 * bw),
                y1: clamp01(by + 0.5 * bh),
                score,
                class: u32::try_from(class).unwrap_or(u32::MAX),
            });
        }
    }
    nms(&mut dets, nms_iou);
    Ok(dets)
}

/// Decodes UltraFace outputs: `scores [1, N, 2]` (background, face
/// probabilities) and `boxes [1, N, 4]` (`x0, y0, x1, y1` in 0..1).
///
/// Keeps anchors whose face score is `> score_threshold` as class 0 with
/// corners clamped to 0..1, then applies [`nms`] at `nms_iou`.
pub fn decode_ultraface(
    scores: &[f32],
    scores_shape: &[usize],
    boxes: &[f32],
    boxes_shape: &[usize],
    score_threshold: f32,
    nms_iou: f32,
) -> Result<Vec<Detection>, PostprocessError> {
    let n = match scores_shape {
        &[1, n, 2] => n,
        _ => {
            return Err(PostprocessError::Shape {
                what: "UltraFace scores",
                expected: "[1, N, 2]".into(),
                actual: scores_shape.to_vec(),
            })
        }
    };
    if boxes_shape != [1, n, 4] {
        return Err(PostprocessError::Shape {
            what: "UltraFace boxes",
            expected: format!("[1, {n}, 4] to match scores {scores_shape:?}"),
            actual: boxes_shape.to_vec(),
        });
    }
    check_len("UltraFace scores", scores, scores_shape)?;
    check_len("UltraFace boxes", boxes, boxes_shape)?;
    let mut dets: Vec<Detection> = scores
        .chunks_exact(2)
        .zip(boxes.chunks_exact(4))
        .filter(|(s, _)| s[1] > score_threshold)
        .map(|(s, b)| Detection {
            x0: clamp01(b[0]),
            y0: clamp01(b[1]),
            x1: clamp01(b[2]),
            y1: clamp01(b[3]),
            score: s[1],
            class: 0,
        })
        .collect();
    nms(&mut dets, nms_iou);
    Ok(dets)
}

/// The `k` highest scores as `(index, score)`, descending; equal scores keep
/// index order and NaN scores come last. Returns fewer than `k` pairs when
/// `scores` is shorter.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut all: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    all.sort_by(|a, b| by_score_desc(a.1, b.1));
    all.truncate(k);
    all
}

/// Mean average precision at IoU 0.5 over one image (or any pooled set).
///
/// Per class, predictions are taken by descending score (stable); each is a
/// true positive when the truth box of its class it overlaps most has
/// IoU >= 0.5 and is not matched yet (each truth matches at most once, VOC
/// rule), otherwise a false positive. AP is the area under the precision /
/// recall curve with all-point interpolation (VOC 2010+). The mean runs over
/// every class that appears in `truth` or in `preds`: a class with truth but
/// no predictions, or with predictions but no truth, has AP 0. When both are
/// empty the result is 1.0 (nothing to find, nothing claimed).
pub fn map50(preds: &[Detection], truth: &[Detection]) -> f32 {
    let mut classes: Vec<u32> = preds.iter().chain(truth).map(|d| d.class).collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.is_empty() {
        return 1.0;
    }
    let total: f64 = classes
        .iter()
        .map(|&c| average_precision(preds, truth, c))
        .sum();
    (total / classes.len() as f64) as f32
}

fn average_precision(preds: &[Detection], truth: &[Detection], class: u32) -> f64 {
    let gts: Vec<&Detection> = truth.iter().filter(|d| d.class == class).collect();
    if gts.is_empty() {
        return 0.0;
    }
    let mut ps: Vec<&Detection> = preds.iter().filter(|d| d.class == class).collect();
    ps.sort_by(|a, b| by_score_desc(a.score, b.score));
    let mut matched = vec![false; gts.len()];
    // (recall, precision) after each prediction.
    let mut curve = Vec::with_capacity(ps.len());
    let mut tp = 0usize;
    for (i, p) in ps.iter().enumerate() {
        let best = gts.iter().enumerate().map(|(j, g)| (j, iou(p, g))).fold(
            None,
            |acc: Option<(usize, f32)>, (j, o)| match acc {
                Some((_, bo)) if bo >= o => acc,
                _ => Some((j, o)),
            },
        );
        if let Some((j, o)) = best {
            if o >= 0.5 && !matched[j] {
                matched[j] = true;
                tp += 1;
            }
        }
        curve.push((tp as f64 / gts.len() as f64, tp as f64 / (i + 1) as f64));
    }
    // All-point interpolation: precision at recall r is the best precision at
    // any recall >= r, so sweep from the end keeping the running maximum.
    let mut ap = 0.0;
    let mut best_prec: f64 = 0.0;
    for i in (0..curve.len()).rev() {
        best_prec = best_prec.max(curve[i].1);
        let prev_recall = if i == 0 { 0.0 } else { curve[i - 1].0 };
        ap += (curve[i].0 - prev_recall) * best_prec;
    }
    ap
}

/// Numerically stable softmax; NaN inputs propagate instead of panicking.
fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = v.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Whether `v` already looks like a probability distribution.
fn is_distribution(v: &[f32]) -> bool {
    let sum: f32 = v.iter().sum();
    v.iter().all(|&x| x >= 0.0) && (sum - 1.0).abs() <= 1e-2
}

/// Runs the decoder named in the model metadata over the model outputs,
/// given as `(data, shape)` pairs in graph order.
///
/// * [`Decoder::Raw`] -> [`Decoded::Raw`].
/// * [`Decoder::Classify`] reads output 0 (batch 1: a leading dimension, if
///   any besides the class axis, must be 1) and returns its `top_k`; the
///   values are softmaxed first unless they are already non-negative and sum
///   to 1 within 0.01.
/// * [`Decoder::Fastestdet`] -> [`decode_fastestdet`] on output 0.
/// * [`Decoder::Ultraface`] -> [`decode_ultraface`] on outputs 0 (scores) and
///   1 (boxes), swapped when their last dimensions say 4 and 2.
pub fn decode(
    meta_decoder: &Decoder,
    outputs: &[(&[f32], &[usize])],
) -> Result<Decoded, PostprocessError> {
    let need = |decoder: &'static str, expected: usize| {
        if outputs.len() < expected {
            Err(PostprocessError::OutputCount {
                decoder,
                expected,
                actual: outputs.len(),
            })
        } else {
            Ok(())
        }
    };
    match *meta_decoder {
        Decoder::Raw => Ok(Decoded::Raw),
        Decoder::Classify { top_k: k } => {
            need("classify", 1)?;
            let (data, shape) = outputs[0];
            if shape.len() >= 2 && shape[0] != 1 {
                return Err(PostprocessError::Shape {
                    what: "classifier output",
                    expected: "batch 1: [classes] or [1, classes, ...]".into(),
                    actual: shape.to_vec(),
                });
            }
            check_len("classifier output", data, shape)?;
            let probs = if is_distribution(data) {
                top_k(data, k)
            } else {
                top_k(&softmax(data), k)
            };
            Ok(Decoded::TopK(probs))
        }
        Decoder::Fastestdet {
            score_threshold,
            nms_iou,
        } => {
            need("fastestdet", 1)?;
            let (data, shape) = outputs[0];
            decode_fastestdet(data, shape, score_threshold, nms_iou).map(Decoded::Detections)
        }
        Decoder::Ultraface {
            score_threshold,
            nms_iou,
        } => {
            need("ultraface", 2)?;
            let (mut s, mut b) = (outputs[0], outputs[1]);
            if s.1.last() == Some(&4) && b.1.last() == Some(&2) {
                std::mem::swap(&mut s, &mut b);
            }
            decode_ultraface(s.0, s.1, b.0, b.1, score_threshold, nms_iou).map(Decoded::Detections)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x0: f32, y0: f32, x1: f32, y1: f32, score: f32, class: u32) -> Detection {
        Detection {
            x0,
            y0,
            x1,
            y1,
            score,
            class,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn iou_hand_values() {
        let a = det(0.0, 0.0, 0.5, 0.5, 1.0, 0);
        assert_eq!(iou(&a, &a), 1.0);
        // Half overlap along x: inter 0.125, union 0.375.
        let b = det(0.25, 0.0, 0.75, 0.5, 1.0, 0);
        assert!(close(iou(&a, &b), 1.0 / 3.0));
        assert_eq!(iou(&a, &b), iou(&b, &a));
        // Quarter-area corner overlap: inter 1/16, union 2/4 - 1/16 = 7/16.
        let c = det(0.25, 0.25, 0.75, 0.75, 1.0, 0);
        assert!(close(iou(&a, &c), 1.0 / 7.0));
        // Touching and disjoint boxes.
        assert_eq!(iou(&a, &det(0.5, 0.0, 1.0, 0.5, 1.0, 0)), 0.0);
        assert_eq!(iou(&a, &det(0.6, 0.6, 0.9, 0.9, 1.0, 0)), 0.0);
        // Contained box: area ratio.
        assert!(close(iou(&a, &det(0.0, 0.0, 0.25, 0.5, 1.0, 0)), 0.5));
        // Degenerate, inverted and NaN boxes give 0, not NaN.
        let z = det(0.2, 0.2, 0.2, 0.2, 1.0, 0);
        assert_eq!(iou(&z, &z), 0.0);
        assert_eq!(iou(&det(0.5, 0.5, 0.0, 0.0, 1.0, 0), &a), 0.0);
        assert_eq!(iou(&det(f32::NAN, 0.0, 0.5, 0.5, 1.0, 0), &a), 0.0);
    }

    #[test]
    fn nms_suppresses_per_class_and_sorts() {
        let mut d = vec![
            det(0.0, 0.0, 0.5, 0.5, 0.8, 0),
            det(0.0, 0.0, 0.5, 0.5, 0.7, 1), // same box, other class: kept
            det(0.02, 0.0, 0.52, 0.5, 0.9, 0), // IoU ~0.92 with the first: wins
            det(0.6, 0.6, 1.0, 1.0, 0.5, 0), // disjoint: kept
            det(0.25, 0.0, 0.75, 0.5, 0.6, 0), // IoU ~0.37 with the 0.9 box: kept
        ];
        nms(&mut d, 0.45);
        let scores: Vec<f32> = d.iter().map(|x| x.score).collect();
        assert_eq!(scores, [0.9, 0.7, 0.6, 0.5]);
        // A lower threshold suppresses the partial overlap too.
        let mut d2 = vec![
            det(0.0, 0.0, 0.5, 0.5, 0.9, 0),
            det(0.25, 0.0, 0.75, 0.5, 0.6, 0),
        ];
        nms(&mut d2, 0.3);
        assert_eq!(d2.len(), 1);
        // IoU exactly at the threshold is kept (suppress only when greater).
        let mut d3 = vec![
            det(0.0, 0.0, 0.5, 0.5, 0.9, 0),
            det(0.25, 0.0, 0.75, 0.5, 0.6, 0),
        ];
        let at = iou(&d3[0], &d3[1]);
        nms(&mut d3, at);
        assert_eq!(d3.len(), 2);
    }

    #[test]
    fn nms_ties_are_stable_and_nan_goes_last() {
        let mut d = vec![
            det(0.0, 0.0, 0.1, 0.1, 0.5, 3),
            det(0.2, 0.2, 0.3, 0.3, f32::NAN, 0),
            det(0.5, 0.5, 0.6, 0.6, 0.5, 1),
            det(0.7, 0.7, 0.8, 0.8, 0.5, 2),
            det(0.0, 0.0, 0.1, 0.1, 0.5, 3), // duplicate of the first: dropped
        ];
        nms(&mut d, 0.5);
        let classes: Vec<u32> = d.iter().map(|x| x.class).collect();
        assert_eq!(classes, [3, 1, 2, 0]);
        assert!(d[3].score.is_nan());
        let mut empty = Vec::new();
        nms(&mut empty, 0.5);
        assert!(empty.is_empty());
    }

    /// A `[1, 5 + classes, 2, 2]` head filled with "nothing here" values.
    fn fastestdet_map(classes: usize) -> (Vec<f32>, Vec<usize>) {
        (vec![0.0; (5 + classes) * 4], vec![1, 5 + classes, 2, 2])
    }

    fn set(map: &mut [f32], ch: usize, h: usize, w: usize, v: f32) {
        map[ch * 4 + h * 2 + w] = v;
    }

    #[test]
    fn fastestdet_synthetic_1x85x2x2() {
        let (mut m, shape) = fastestdet_map(80);
        // Cell (h=0, w=1): obj 0.9, class 2 at 0.8 (class 7 at 0.5), centred
        // offset tanh(0) = 0, size sigmoid(0) = 0.5.
        set(&mut m, 0, 0, 1, 0.9);
        set(&mut m, 5 + 2, 0, 1, 0.8);
        set(&mut m, 5 + 7, 0, 1, 0.5);
        // Cell (h=1, w=0): obj 1, person 1, tx = atanh(0.5), ty = atanh(-0.5),
        // tw = logit(0.2), th = logit(0.6).
        set(&mut m, 0, 1, 0, 1.0);
        set(&mut m, 5, 1, 0, 1.0);
        set(&mut m, 1, 1, 0, 0.5f32.atanh());
        set(&mut m, 2, 1, 0, (-0.5f32).atanh());
        set(&mut m, 3, 1, 0, (0.2f32 / 0.8).ln());
        set(&mut m, 4, 1, 0, (0.6f32 / 0.4).ln());
        // Cell (h=1, w=1): obj 0.5, cls 0.9 -> 0.5^0.6 * 0.9^0.4 = 0.637 < 0.65.
        set(&mut m, 0, 1, 1, 0.5);
        set(&mut m, 5 + 4, 1, 1, 0.9);
        let d = decode_fastestdet(&m, &shape, 0.65, 0.45).unwrap();
        assert_eq!(d.len(), 2, "{d:?}");

        // Highest score first: cell (1, 0) with score 1.
        assert_eq!(d[0].class, 0);
        assert!(close(d[0].score, 1.0));
        // cx = (0 + 0.5) / 2 = 0.25, w 0.2; cy = (1 - 0.5) / 2 = 0.25, h 0.6
        // -> y0 = -0.05 clamped to 0.
        assert!(close(d[0].x0, 0.15) && close(d[0].x1, 0.35), "{:?}", d[0]);
        assert!(close(d[0].y0, 0.0) && close(d[0].y1, 0.55), "{:?}", d[0]);

        assert_eq!(d[1].class, 2);
        assert!(close(d[1].score, 0.9f32.powf(0.6) * 0.8f32.powf(0.4)));
        // Offsets count from the cell's corner, not its centre: cx = (1 + 0) / 2
        // = 0.5, cy = 0 / 2 = 0, size 0.5 x 0.5 -> y0 = -0.25 clamped to 0.
        assert!(close(d[1].x0, 0.25) && close(d[1].x1, 0.75), "{:?}", d[1]);
        assert!(close(d[1].y0, 0.0) && close(d[1].y1, 0.25), "{:?}", d[1]);

        // Threshold is strict and a lower one admits the third cell.
        let d = decode_fastestdet(&m, &shape, 0.6, 0.45).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[2].class, 4);
        assert_eq!(decode_fastestdet(&m, &shape, 0.9, 0.45).unwrap().len(), 1);
    }

    #[test]
    fn fastestdet_nms_merges_neighbours_of_one_class() {
        let (mut m, shape) = fastestdet_map(2);
        // Two adjacent cells predicting the same big box (offset towards each
        // other); different classes in a third cell survive.
        for (w, tx, obj) in [(0, 0.4f32, 0.9f32), (1, -0.4, 0.8)] {
            set(&mut m, 0, 0, w, obj);
            set(&mut m, 1, 0, w, tx.atanh());
            set(&mut m, 3, 0, w, 2.0);
            set(&mut m, 4, 0, w, 2.0);
            set(&mut m, 5, 0, w, 1.0);
        }
        set(&mut m, 0, 1, 1, 0.9);
        set(&mut m, 6, 1, 1, 1.0);
        set(&mut m, 3, 1, 1, 2.0);
        set(&mut m, 4, 1, 1, 2.0);
        let d = decode_fastestdet(&m, &shape, 0.5, 0.45).unwrap();
        let classes: Vec<u32> = d.iter().map(|x| x.class).collect();
        assert_eq!(classes, [0, 1], "{d:?}");
        assert!(close(d[0].score, 0.9f32.powf(0.6)));
    }

    #[test]
    fn fastestdet_nan_and_negative_values_are_dropped() {
        let (mut m, shape) = fastestdet_map(3);
        set(&mut m, 0, 0, 0, f32::NAN);
        set(&mut m, 5, 0, 0, 1.0);
        set(&mut m, 0, 0, 1, -1.0);
        set(&mut m, 5, 0, 1, 1.0);
        set(&mut m, 0, 1, 0, 1.0);
        for k in 0..3 {
            set(&mut m, 5 + k, 1, 0, f32::NAN);
        }
        assert!(decode_fastestdet(&m, &shape, 0.0, 0.45).unwrap().is_empty());
        // NaN box offsets still yield a box inside 0..1.
        set(&mut m, 0, 1, 1, 1.0);
        set(&mut m, 5, 1, 1, 1.0);
        set(&mut m, 1, 1, 1, f32::NAN);
        let d = decode_fastestdet(&m, &shape, 0.5, 0.45).unwrap();
        assert_eq!(d.len(), 1);
        for v in [d[0].x0, d[0].y0, d[0].x1, d[0].y1] {
            assert!((0.0..=1.0).contains(&v));
        }
    }

    #[test]
    fn fastestdet_shape_errors() {
        let m = vec![0.0; 85 * 4];
        for bad in [
            vec![85, 2, 2],
            vec![2, 85, 2, 1],
            vec![1, 5, 2, 2],
            vec![1, 85, 0, 2],
            vec![1, 85, 2, 2, 1],
        ] {
            let e = decode_fastestdet(&m, &bad, 0.5, 0.5).unwrap_err();
            assert!(
                matches!(e, PostprocessError::Shape { ref actual, .. } if *actual == bad),
                "{e}"
            );
            assert!(e.to_string().contains("[1, 5 + classes, H, W]"), "{e}");
        }
        let e = decode_fastestdet(&m[1..], &[1, 85, 2, 2], 0.5, 0.5).unwrap_err();
        assert_eq!(
            e,
            PostprocessError::Length {
                what: "FastestDet output",
                shape: vec![1, 85, 2, 2],
                expected: 340,
                actual: 339
            }
        );
        assert_eq!(
            e.to_string(),
            "FastestDet output: shape [1, 85, 2, 2] holds 340 values but the buffer has 339"
        );
        // Overflowing shapes are a length error, not a panic.
        let e = decode_fastestdet(&m, &[1, 85, usize::MAX, 2], 0.5, 0.5).unwrap_err();
        assert!(matches!(
            e,
            PostprocessError::Length {
                expected: usize::MAX,
                ..
            }
        ));
    }

    fn ultraface_fixture() -> (Vec<f32>, Vec<f32>) {
        let scores = vec![
            0.1, 0.9, // face
            0.05, 0.95, // overlapping face, higher score
            0.8, 0.2, // background
            0.3, 0.7, // exactly at threshold: dropped
            0.2, 0.8, // separate face, box partly outside 0..1
        ];
        let boxes = vec![
            0.1, 0.1, 0.3, 0.3, //
            0.11, 0.1, 0.31, 0.3, //
            0.5, 0.5, 0.6, 0.6, //
            0.7, 0.7, 0.8, 0.8, //
            0.9, -0.1, 1.1, 0.2,
        ];
        (scores, boxes)
    }

    #[test]
    fn ultraface_decoding() {
        let (s, b) = ultraface_fixture();
        let d = decode_ultraface(&s, &[1, 5, 2], &b, &[1, 5, 4], 0.7, 0.3).unwrap();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0], det(0.11, 0.1, 0.31, 0.3, 0.95, 0));
        assert_eq!(d[1], det(0.9, 0.0, 1.0, 0.2, 0.8, 0));
        // Empty output is fine.
        assert!(decode_ultraface(&[], &[1, 0, 2], &[], &[1, 0, 4], 0.7, 0.3)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn ultraface_errors() {
        let (s, b) = ultraface_fixture();
        let e = decode_ultraface(&s, &[1, 5, 3], &b, &[1, 5, 4], 0.7, 0.3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "UltraFace scores: expected shape [1, N, 2], got [1, 5, 3]"
        );
        let e = decode_ultraface(&s, &[1, 5, 2], &b, &[1, 4, 4], 0.7, 0.3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "UltraFace boxes: expected shape [1, 5, 4] to match scores [1, 5, 2], got [1, 4, 4]"
        );
        let e = decode_ultraface(&s[1..], &[1, 5, 2], &b, &[1, 5, 4], 0.7, 0.3).unwrap_err();
        assert!(matches!(
            e,
            PostprocessError::Length {
                what: "UltraFace scores",
                expected: 10,
                actual: 9,
                ..
            }
        ));
        let e = decode_ultraface(&s, &[1, 5, 2], &b[..19], &[1, 5, 4], 0.7, 0.3).unwrap_err();
        assert!(matches!(
            e,
            PostprocessError::Length {
                what: "UltraFace boxes",
                expected: 20,
                actual: 19,
                ..
            }
        ));
        let e = decode_ultraface(&s, &[5, 2], &b, &[1, 5, 4], 0.7, 0.3).unwrap_err();
        assert!(matches!(e, PostprocessError::Shape { .. }));
    }

    #[test]
    fn top_k_order() {
        let s = [0.1, 0.7, f32::NAN, 0.7, 0.2];
        assert_eq!(top_k(&s, 3), vec![(1, 0.7), (3, 0.7), (4, 0.2)]);
        assert_eq!(top_k(&s, 0), vec![]);
        let all = top_k(&s, 10);
        assert_eq!(all.len(), 5);
        assert_eq!(all[4].0, 2);
        assert!(top_k(&[], 5).is_empty());
        assert_eq!(top_k(&[-1.0, f32::INFINITY], 1), vec![(1, f32::INFINITY)]);
    }

    #[test]
    fn map50_cases() {
        let t = vec![
            det(0.0, 0.0, 0.2, 0.2, 1.0, 0),
            det(0.5, 0.5, 0.7, 0.7, 1.0, 0),
            det(0.1, 0.6, 0.3, 0.9, 1.0, 1),
        ];
        // Perfect predictions, any scores.
        let mut p = t.clone();
        p[0].score = 0.3;
        p[2].score = 0.6;
        assert_eq!(map50(&p, &t), 1.0);
        // Nothing predicted: every truth class has AP 0.
        assert_eq!(map50(&[], &t), 0.0);
        // Both empty: 1.
        assert_eq!(map50(&[], &[]), 1.0);
        // Predictions without truth: AP 0 for that class.
        assert_eq!(map50(&t, &[]), 0.0);
        // Half the class-0 truth found: AP 0.5 for class 0, 1 for class 1.
        assert!(close(map50(&[t[0], t[2]], &t), 0.75));
        // Class 0 only, one of two found: recall 0.5 at precision 1.
        assert!(close(map50(&[t[1]], &t[..2]), 0.5));
        // A spurious class halves the mean.
        let extra = det(0.0, 0.0, 1.0, 1.0, 0.99, 5);
        assert!(close(map50(&[t[0], t[1], extra], &t[..2]), 0.5));
    }

    #[test]
    fn map50_ranking_duplicates_and_threshold() {
        let t = vec![
            det(0.0, 0.0, 0.2, 0.2, 1.0, 0),
            det(0.5, 0.5, 0.7, 0.7, 1.0, 0),
        ];
        // Ranked FP, TP, TP: recall steps at precisions 1/2 and 2/3; the
        // interpolated precision is 2/3 on the whole range -> AP 2/3.
        let fp = det(0.8, 0.0, 0.9, 0.1, 0.9, 0);
        let p = [
            fp,
            Detection { score: 0.8, ..t[0] },
            Detection { score: 0.7, ..t[1] },
        ];
        assert!(close(map50(&p, &t), 2.0 / 3.0));
        // Ranked TP, FP, TP: 0.5 * 1 + 0.5 * 2/3.
        let p = [
            Detection { score: 0.9, ..t[0] },
            Detection { score: 0.8, ..fp },
            Detection { score: 0.7, ..t[1] },
        ];
        assert!(close(map50(&p, &t), 0.5 + 1.0 / 3.0));
        // A duplicate of a matched truth is a false positive.
        let p = [
            Detection { score: 0.9, ..t[0] },
            Detection { score: 0.8, ..t[0] },
        ];
        assert!(close(map50(&p, &t[..1]), 1.0));
        assert!(close(map50(&p, &t), 0.5));
        // IoU exactly 0.5 matches; just below does not.
        let g = det(0.0, 0.0, 0.5, 0.25, 1.0, 0);
        let half = det(0.0, 0.0, 0.25, 0.25, 0.9, 0);
        assert_eq!(iou(&half, &g), 0.5);
        assert_eq!(map50(&[half], &[g]), 1.0);
        let under = det(0.0, 0.0, 0.2499, 0.25, 0.9, 0);
        assert_eq!(map50(&[under], &[g]), 0.0);
        // Wrong class never matches.
        assert_eq!(map50(&[Detection { class: 1, ..t[0] }], &t[..1]), 0.0);
        // NaN scores rank last and do not panic.
        let p = [
            Detection {
                score: f32::NAN,
                ..fp
            },
            Detection { score: 0.1, ..t[0] },
        ];
        assert!(close(map50(&p, &t[..1]), 1.0));
    }

    #[test]
    fn decode_dispatch() {
        assert_eq!(decode(&Decoder::Raw, &[]).unwrap(), Decoded::Raw);

        // Logits are softmaxed: [0, ln 3] -> [0.25, 0.75].
        let logits = [0.0, 3f32.ln()];
        let r = decode(&Decoder::Classify { top_k: 5 }, &[(&logits, &[1, 2])]).unwrap();
        let Decoded::TopK(v) = r else { panic!("{r:?}") };
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, 1);
        assert!(close(v[0].1, 0.75) && close(v[1].1, 0.25));
        // Probabilities pass through untouched.
        let probs = [0.1, 0.2, 0.7];
        let r = decode(&Decoder::Classify { top_k: 2 }, &[(&probs, &[3])]).unwrap();
        assert_eq!(r, Decoded::TopK(vec![(2, 0.7), (1, 0.2)]));
        // Non-negative but not summing to 1: softmaxed.
        let r = decode(
            &Decoder::Classify { top_k: 1 },
            &[(&[2.0, 0.0], &[1, 2, 1, 1])],
        )
        .unwrap();
        let Decoded::TopK(v) = r else { panic!("{r:?}") };
        assert!(close(v[0].1, 1.0 / (1.0 + (-2f32).exp())));
        // Huge logits do not overflow; NaN does not panic.
        let r = decode(&Decoder::Classify { top_k: 1 }, &[(&[1e30, 0.0], &[2])]).unwrap();
        assert_eq!(r, Decoded::TopK(vec![(0, 1.0)]));
        assert!(decode(&Decoder::Classify { top_k: 1 }, &[(&[f32::NAN, 0.0], &[2])]).is_ok());

        let (mut m, shape) = fastestdet_map(80);
        set(&mut m, 0, 0, 0, 1.0);
        set(&mut m, 5 + 3, 0, 0, 1.0);
        let fd = Decoder::Fastestdet {
            score_threshold: 0.65,
            nms_iou: 0.45,
        };
        let Decoded::Detections(d) = decode(&fd, &[(&m, &shape)]).unwrap() else {
            panic!()
        };
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class, 3);

        let (s, b) = ultraface_fixture();
        let uf = Decoder::Ultraface {
            score_threshold: 0.7,
            nms_iou: 0.3,
        };
        let sp: (&[f32], &[usize]) = (&s, &[1, 5, 2]);
        let bp: (&[f32], &[usize]) = (&b, &[1, 5, 4]);
        let a = decode(&uf, &[sp, bp]).unwrap();
        let Decoded::Detections(d) = &a else {
            panic!("{a:?}")
        };
        assert_eq!(d.len(), 2);
        // Swapped outputs are recognised by their last dimension.
        assert_eq!(decode(&uf, &[bp, sp]).unwrap(), a);
    }

    #[test]
    fn decode_errors() {
        let e = decode(&Decoder::Classify { top_k: 1 }, &[]).unwrap_err();
        assert_eq!(e.to_string(), "classify decoder needs 1 output(s), got 0");
        let e = decode(
            &Decoder::Ultraface {
                score_threshold: 0.7,
                nms_iou: 0.3,
            },
            &[(&[0.0, 1.0], &[1, 1, 2])],
        )
        .unwrap_err();
        assert_eq!(
            e,
            PostprocessError::OutputCount {
                decoder: "ultraface",
                expected: 2,
                actual: 1
            }
        );
        let fd = Decoder::Fastestdet {
            score_threshold: 0.65,
            nms_iou: 0.45,
        };
        assert!(matches!(
            decode(&fd, &[]),
            Err(PostprocessError::OutputCount { .. })
        ));
        assert!(matches!(
            decode(&fd, &[(&[0.0; 4], &[4])]),
            Err(PostprocessError::Shape { .. })
        ));
        let e = decode(&Decoder::Classify { top_k: 1 }, &[(&[0.5; 4], &[2, 2])]).unwrap_err();
        assert!(e.to_string().contains("batch 1"), "{e}");
        let e = decode(&Decoder::Classify { top_k: 1 }, &[(&[0.5; 3], &[1, 4])]).unwrap_err();
        assert!(matches!(
            e,
            PostprocessError::Length {
                expected: 4,
                actual: 3,
                ..
            }
        ));
    }
}
