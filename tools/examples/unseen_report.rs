//! Per-layer int8 error on a sample calibration never saw: `cargo run
//! --release -p strix-tools --example unseen_report -- MODEL.onnx EVAL CALIB...`
//! (the `--report` of `strix convert` compares on the first calibration
//! sample; this one on any other). Prints the layers whose cosine against
//! f32 drops the most.
use anyhow::{Context, Result};
use std::path::PathBuf;
use strix_tools::{calib, config, lower, media, onnx, passes, report};

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (model, eval, cal) = match args.as_slice() {
        [m, e, c @ ..] if !c.is_empty() => (m, e, c),
        _ => anyhow::bail!("usage: unseen_report MODEL.onnx EVAL CALIB..."),
    };
    let method = match std::env::var("METHOD").as_deref() {
        Ok("minmax") => calib::Method::Minmax,
        Ok("percentile") => calib::Method::Percentile,
        _ => calib::Method::Mse,
    };
    let resolved = config::resolve(None, model, &Default::default())?;
    let mut cg = onnx::import_with(model, &resolved.import).context("import")?;
    passes::run_graph_passes(&mut cg, &passes::PassOptions::default())?;
    let shape = cg.values[cg.inputs[0]].shape.clone();
    let load = |p: &PathBuf| media::load_input(p, &resolved.meta.input, &shape);
    let samples: Vec<Vec<Vec<f32>>> = cal
        .iter()
        .map(|p| load(p).map(|v| vec![v]))
        .collect::<Result<_>>()?;
    let stats = calib::calibrate(&cg, &samples, method, || {})?;
    let l = lower::lower_int8(&cg, &stats, method, &Default::default())?;
    let x = load(eval)?;
    if let Ok(node) = std::env::var("DUMP") {
        let (mut fb, fmap) = lower::lower_f32(&cg)?;
        strix_runtime::plan::plan(&mut fb.g, false);
        let fm = strix_runtime::Model::new(Default::default(), fb.g, fb.c)?;
        let mut fs = strix_runtime::Session::new(&fm);
        fs.input_mut(0)?.copy_from_slice(&x);
        fs.run()?;
        let n = cg
            .nodes
            .iter()
            .find(|n| n.name == node)
            .context("no such node")?;
        let v = n.output;
        let shape = &cg.values[v].shape;
        let Some(strix_runtime::TensorData::F32(d)) = fs.tensor(fmap[v].unwrap()) else {
            anyhow::bail!("no f32")
        };
        let hi = stats[&v].range(method).1;
        let per: usize = shape[2..].iter().product();
        for c in 0..shape[1] {
            let ch = &d[c * per..(c + 1) * per];
            let over: Vec<(usize, f32)> = ch
                .iter()
                .copied()
                .enumerate()
                .filter(|&(_, x)| x > hi)
                .collect();
            if !over.is_empty() {
                println!(
                    "channel {c}: {} of {per} over {hi:.3}: {:?}",
                    over.len(),
                    &over[..over.len().min(8)]
                );
            }
        }
        return Ok(());
    }
    if std::env::var("RANGES").is_ok() {
        let one = calib::calibrate(&cg, &[vec![x.clone()]], calib::Method::Minmax, || {})?;
        for n in &cg.nodes {
            let v = n.output;
            if let (Some(c), Some(e)) = (stats.get(&v), one.get(&v)) {
                let (lo, hi) = c.range(method);
                println!(
                    "{:<24} calib [{:>9.3}, {:>9.3}] chosen [{:>9.3}, {:>9.3}] eval [{:>9.3}, {:>9.3}]",
                    n.name, c.min, c.max, lo, hi, e.min, e.max
                );
            }
        }
        return Ok(());
    }
    for (name, op, cos, err) in report::layer_errors(&cg, &l.builder, &l.value_tensor, &x)? {
        println!("{name:<40} {op:<10} {cos:>10.5} {err:>10.4}");
    }
    Ok(())
}
