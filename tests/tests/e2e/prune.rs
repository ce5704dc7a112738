//! `strix convert --prune` on the real models: the pruned graph is genuinely
//! smaller, the held-back samples stay within the budget, and the pruned
//! model still passes the foundation's accuracy gates (tests/e2e/kws.rs,
//! tests/e2e/vww.rs).

use std::path::{Path, PathBuf};
use strix_runtime::graph::DType;
use strix_runtime::Model;
use strix_tests::{all_images, case, convert, crops, kws_clips, models, root, scratch};
use strix_tools::calib::Method;
use strix_tools::eval::Reference;
use strix_tools::prune::{report::Report, Budget, Options};

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

fn wavs(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(wavs(&p));
        } else if p.extension().is_some_and(|x| x == "wav") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Output channels of every conv/gemm node, by name.
fn channels(m: &Model) -> Vec<(String, usize)> {
    m.graph
        .nodes
        .iter()
        .filter(|n| n.op.macs(1) > 0)
        .map(|n| {
            let s = &m.graph.tensors[n.output].shape;
            (
                n.name.clone(),
                if s.len() == 4 { s[1] } else { s[s.len() - 1] },
            )
        })
        .collect()
}

/// Checks common to every pruned model; returns the MACs reduction of the
/// search. With `search_must_prune`, the search must have removed channels
/// (not only the dead ones every convert removes).
fn check_pruned(
    name: &str,
    unpruned: &Model,
    pruned: &Model,
    rep: &Report,
    budget: &Budget,
    search_must_prune: bool,
) -> f64 {
    let red = rep.macs_reduction();
    eprintln!(
        "{name}: {}\n{name}: runtime MACs {} -> {}, weights {} -> {} bytes, f32 layers {:?}",
        rep.summary(),
        unpruned.graph.macs(),
        pruned.graph.macs(),
        unpruned.consts.bytes(),
        pruned.consts.bytes(),
        rep.f32_layers
    );
    assert!(rep.held_within_budget, "{name}: held-back check failed");
    assert!(
        budget.within(&rep.measured_held),
        "{name}: {:?}",
        rep.measured_held
    );
    assert!(
        pruned.graph.macs() <= unpruned.graph.macs(),
        "{name}: runtime MACs"
    );
    if search_must_prune {
        assert!(rep.macs_after < rep.macs_before, "{name}: nothing pruned");
        assert!(
            pruned.graph.macs() < unpruned.graph.macs(),
            "{name}: runtime MACs"
        );
        // Genuinely smaller: some layer has fewer output channels in the runtime graph.
        let before = channels(unpruned);
        let after = channels(pruned);
        let shrunk = after
            .iter()
            .filter(|(n, c)| before.iter().any(|(m, d)| m == n && c < d))
            .count();
        assert!(shrunk > 0, "{name}: no layer has fewer channels");
    }
    // Mixed precision: the layers the report keeps in f32 are f32 in the model.
    for l in &rep.f32_layers {
        let n = pruned.graph.nodes.iter().find(|n| &n.name == l).unwrap();
        assert_eq!(
            pruned.graph.tensors[n.output].dtype,
            DType::F32,
            "{name}: {l}"
        );
    }
    red
}

#[test]
fn prune_kws_within_one_point_of_top1() {
    let dir = scratch("prune-kws");
    let c = case("kws");
    let gen = dir.join("clips");
    let status = std::process::Command::new("bash")
        .arg(root().join("tests/scripts/gen_kws_clips.sh"))
        .arg(&gen)
        .arg("20")
        .status()
        .expect("running tests/scripts/gen_kws_clips.sh (needs espeak-ng and sox)");
    assert!(status.success(), "clip generation failed");
    let clips = wavs(&gen);
    assert!(clips.len() >= 200);
    let mut samples = kws_clips();
    samples.extend(clips.iter().cloned());
    let budget = Budget::parse(&["top1=0.01".to_string()]).unwrap();
    let mut opts = Options::new(budget.clone());
    // Half the clips are held back: with 61 held-back clips a single flipped
    // near-tie clip is already 1.6 points, so the check would be pure noise.
    opts.holdout = 0.5;
    let out = dir.join("kws-pruned.strix");
    let t = std::time::Instant::now();
    let (m, rep) = strix_tools::convert_pruned(
        &c.onnx,
        &samples,
        &out,
        None,
        Method::Mse,
        &opts,
        None,
        None,
    )
    .unwrap();
    eprintln!("kws: pruning took {:.1} s", t.elapsed().as_secs_f64());
    let (unpruned, _) = convert(&c, &dir);
    let red = check_pruned("kws", &unpruned, &m, &rep, &budget, true);
    eprintln!("kws: MACs reduced by {:.1}%", 100.0 * red);
    // Foundation gate (tests/e2e/kws.rs): fp32 says "yes" on the yes clip, the
    // shipped clips agree, and >= 97% of the generated clips agree with fp32.
    let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
    let reference = Reference::new(&c.onnx, &shape).unwrap();
    let top1 = |p: &PathBuf| {
        let x = strix_tools::media::load_input(p, &m.meta.input, &shape).unwrap();
        (
            argmax(&reference.run(&shape, &x).unwrap()[0].0),
            argmax(&strix_tools::run_values(&m, &x).unwrap()[0].0),
        )
    };
    for p in &c.samples {
        let (f, q) = top1(p);
        assert_eq!(f, q, "{}", p.display());
    }
    let agree = clips.iter().filter(|p| {
        let (f, q) = top1(p);
        f == q
    });
    let rate = agree.count() as f64 / clips.len() as f64;
    eprintln!(
        "kws: pruned int8 agrees with fp32 on {:.1}% of generated clips",
        100.0 * rate
    );
    assert!(rate >= 0.97, "agreement {rate}");
}

/// The VWW samples as the models README decodes them (see tests/e2e/vww.rs).
fn vww_png(name: &str, xor: bool, dir: &Path) -> PathBuf {
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
fn prune_vww_within_one_point_of_top1() {
    let dir = scratch("prune-vww");
    let c = case("vww");
    let person = vww_png("person.bmp", true, &dir);
    let no_person = vww_png("no_person.bmp", false, &dir);
    let mut srcs = all_images();
    srcs.push(person.clone());
    srcs.push(no_person.clone());
    let mut samples = srcs.clone();
    samples.extend(crops(&srcs, 9, &dir));
    let budget = Budget::parse(&["top1=0.01".to_string()]).unwrap();
    let mut opts = Options::new(budget.clone());
    // Coarser ratios keep the test short; the CLI default is finer.
    opts.ratios = vec![0.25, 0.5, 0.75];
    let out = dir.join("vww-pruned.strix");
    let html = dir.join("vww-prune.html");
    let t = std::time::Instant::now();
    let (m, rep) = strix_tools::convert_pruned(
        &c.onnx,
        &samples,
        &out,
        None,
        Method::Mse,
        &opts,
        None,
        Some(&html),
    )
    .unwrap();
    eprintln!("vww: pruning took {:.1} s", t.elapsed().as_secs_f64());
    let (unpruned, _) = convert(&c, &dir);
    // VWW's removable channels are its dead ones (removed before the search,
    // see vww_arrives_pruned_and_its_dead_channels_are_removed); what is left
    // is alive and the search may keep all of it within the budget.
    let red = check_pruned("vww", &unpruned, &m, &rep, &budget, false);
    eprintln!("vww: MACs reduced by {:.1}%", 100.0 * red);
    // The bar for VWW at this budget, against the model as it
    // arrived: most of it is the dead channels every convert removes (see
    // vww_arrives_pruned_and_its_dead_channels_are_removed), the search adds
    // a few percent on top.
    let onnx_macs =
        strix_tools::prune::graph::effective_macs(&strix_tools::onnx::import(&c.onnx).unwrap());
    let total = 1.0 - rep.macs_after as f64 / onnx_macs as f64;
    eprintln!(
        "vww: MACs {onnx_macs} as imported -> {} ({:.1}%)",
        rep.macs_after,
        -100.0 * total
    );
    assert!(
        total >= 0.25,
        "vww: MACs reduced by only {:.1}%",
        100.0 * total
    );
    // The report page is self-contained.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("</html>"));
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    // Foundation gates: size (tests/e2e/models.rs) and the person / no-person
    // samples (tests/e2e/vww.rs).
    let onnx = std::fs::metadata(&c.onnx).unwrap().len() as f64;
    assert!(std::fs::metadata(&out).unwrap().len() as f64 <= 0.30 * onnx);
    let shape = m.graph.tensors[m.graph.inputs[0]].shape.clone();
    let reference = Reference::new(&c.onnx, &shape).unwrap();
    for (png, want_person) in [(&person, true), (&no_person, false)] {
        let x = strix_tools::media::load_input(png, &m.meta.input, &shape).unwrap();
        let fp32 = reference.run(&shape, &x).unwrap()[0].0.clone();
        let int8 = strix_tools::run_values(&m, &x).unwrap()[0].0.clone();
        eprintln!(
            "vww pruned {}: fp32 person {:.4}, int8 person {:.4}",
            png.display(),
            fp32[1],
            int8[1]
        );
        assert_eq!(fp32[1] > 0.5, want_person);
        assert_eq!(int8[1] > 0.5, fp32[1] > 0.5);
        assert!(
            (int8[1] - fp32[1]).abs() <= 0.03,
            "person score {} vs fp32 {}",
            int8[1],
            fp32[1]
        );
    }
}

/// Output of the f32 graph `g` on `x`.
fn run_f32(g: &strix_tools::ir::CGraph, x: &[f32]) -> Vec<f32> {
    let m = strix_tools::prune::build_f32(g, &Default::default()).unwrap();
    strix_tools::run_values(&m, x).unwrap().remove(0).0
}

/// Inputs of `c` decoded from `paths`.
fn inputs_of(c: &strix_tests::Case, paths: &[PathBuf]) -> Vec<Vec<f32>> {
    let g = strix_tools::onnx::import(&c.onnx).unwrap();
    let shape = g.values[g.inputs[0]].shape.clone();
    let meta = strix_tools::config::load(None, &c.onnx).unwrap();
    paths
        .iter()
        .map(|p| strix_tools::media::load_input(p, &meta.input, &shape).unwrap())
        .collect()
}

/// Largest |difference| of the f32 outputs of `a` and `b` on `xs`, relative
/// to the largest |output| of `a`.
fn max_rel_diff(a: &strix_tools::ir::CGraph, b: &strix_tools::ir::CGraph, xs: &[Vec<f32>]) -> f32 {
    let mut worst = 0f32;
    for x in xs {
        let (p, q) = (run_f32(a, x), run_f32(b, x));
        assert_eq!(p.len(), q.len());
        let scale = p.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (u, v) in p.iter().zip(&q) {
            worst = worst.max((u - v).abs() / scale);
        }
    }
    worst
}

#[test]
fn vww_arrives_pruned_and_its_dead_channels_are_removed() {
    // Training with weight decay left most channels of VWW's later layers at
    // 1e-30: convert finds them and removes them, outputs unchanged.
    let c = case("vww");
    let g = strix_tools::onnx::import(&c.onnx).unwrap();
    let mut pruned = g.clone();
    let rep = strix_tools::prune::dead::remove_dead_channels(&mut pruned).unwrap();
    eprintln!("vww dead channels: {rep:?}");
    assert!(rep.channels >= 900, "{rep:?}");
    assert!(rep.macs_after * 10 <= rep.macs_before * 6, "{rep:?}");
    let xs = inputs_of(&c, &all_images());
    let d = max_rel_diff(&g, &pruned, &xs);
    eprintln!("vww dead channels: max relative output difference {d:e}");
    assert!(d <= 1e-4, "{d}");
}

/// Issue 13: `--keep-dead-channels` set `STRIX_KEEP_DEAD` for the library to
/// read. The passes are now `ConvertOptions::passes`, and turning dead
/// channel removal off through them keeps VWW's dead channels.
#[test]
fn convert_options_turn_dead_channel_removal_off() {
    use strix_tools::{ConvertOptions, Passes};
    let c = case("vww");
    let dir = scratch("keep-dead");
    let build = |passes: Passes| {
        let opts = ConvertOptions {
            passes,
            ..Default::default()
        };
        let out = dir.join("vww.strix");
        strix_tools::convert_with(&c.onnx, &[], &out, None, Method::Mse, true, false, opts)
            .unwrap()
            .graph
            .macs()
    };
    let removed = build(Passes::default());
    let kept = build(Passes {
        remove_dead_channels: false,
        ..Passes::default()
    });
    assert!(
        removed * 10 <= kept * 6,
        "MACs {removed} (removed) vs {kept} (kept)"
    );
}

#[test]
fn injected_dead_channels_are_removed_exactly() {
    // KWS (no dead channel of its own) as if pruned in training: some output
    // channels of two groups get all-zero weights and a negative bias, so the
    // ReLU outputs exact zeros; the depthwise conv after them then outputs its
    // own bias, a non-zero constant the consumers must absorb. One more
    // channel gets a positive bias: the depthwise conv's zero padding makes
    // it vary at the borders, so removing it would not be exact and it stays.
    let c = case("kws");
    let mut g = strix_tools::onnx::import(&c.onnx).unwrap();
    let mut plain = g.clone();
    let r = strix_tools::prune::dead::remove_dead_channels(&mut plain).unwrap();
    assert_eq!(r.channels, 0, "KWS has dead channels of its own: {r:?}");
    let groups = strix_tools::prune::graph::find_groups(&g);
    let mut zeroed = 0;
    for (gi, chans, bias) in [
        (1usize, vec![0usize, 5, 7], -1.0f32),
        (2, vec![1, 2, 60], -1.0),
        (3, vec![3], 1.0),
    ] {
        for &p in &groups[gi].producers {
            let wv = g.nodes[p].inputs[1];
            let t = g.values[wv].konst.clone().unwrap();
            let mut w = t.as_f32();
            let per = w.len() / groups[gi].channels;
            let bv = g.nodes[p].inputs[2];
            let bt = g.values[bv].konst.clone().unwrap();
            let mut b = bt.as_f32();
            for &ch in &chans {
                w[ch * per..(ch + 1) * per]
                    .iter_mut()
                    .for_each(|x| *x = 0.0);
                b[ch] = bias;
            }
            g.values[wv].konst = Some(strix_tools::ir::HostTensor::f32(t.shape.clone(), w));
            g.values[bv].konst = Some(strix_tools::ir::HostTensor::f32(bt.shape.clone(), b));
        }
        if bias < 0.0 {
            zeroed += chans.len();
        }
    }
    let mut pruned = g.clone();
    let rep = strix_tools::prune::dead::remove_dead_channels(&mut pruned).unwrap();
    eprintln!("kws injected dead channels: {rep:?}");
    assert_eq!(rep.channels, zeroed);
    assert!(rep.macs_after < rep.macs_before);
    let xs = inputs_of(&c, &c.samples);
    let d = max_rel_diff(&g, &pruned, &xs);
    assert!(d <= 1e-5, "{d}");
}
