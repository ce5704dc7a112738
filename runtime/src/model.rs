//! A loaded, validated model.

use crate::error::{Error, Result};
use crate::format;
use crate::graph::{Consts, Graph};
use crate::meta::ModelMeta;
use std::path::Path;
use strix_kernels::table::KernelSet;
use strix_kernels::Isa;

/// An immutable model: share it read-only between threads; run it through
/// one [`crate::Session`] per thread.
#[derive(Clone, Debug)]
pub struct Model {
    pub meta: ModelMeta,
    pub graph: Graph,
    pub consts: Consts,
    /// Prepared per-node data for the fast kernels (folded biases, scratch).
    pub(crate) prepared: crate::kernels::Prepared,
}

impl Model {
    /// Validates the parts and builds a model (what the compiler calls).
    pub fn new(meta: ModelMeta, graph: Graph, consts: Consts) -> Result<Self> {
        crate::validate::validate(&graph, &consts)?;
        let isa = Isa::from_env().map_err(Error::Argument)?;
        let prepared = crate::kernels::Prepared::new(&graph, &consts, isa);
        Ok(Model {
            meta,
            graph,
            consts,
            prepared,
        })
    }

    /// Parses and validates a `.strix` image.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (meta, graph, consts) = format::read(bytes)?;
        Model::new(meta, graph, consts)
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > format::MAX_FILE_BYTES {
            return Err(Error::Corrupt(format!(
                "{} is {len} bytes, over the limit",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Model::from_bytes(&bytes)
    }

    /// The same model running on another kernel path (tests compare paths).
    pub fn with_isa(mut self, isa: Isa) -> Result<Self> {
        if !isa.available() {
            return Err(Error::Argument(format!(
                "this CPU cannot run the {} path",
                isa.name()
            )));
        }
        self.prepared = crate::kernels::Prepared::new(&self.graph, &self.consts, isa);
        Ok(self)
    }

    /// The kernel path this model runs on.
    pub fn isa(&self) -> Isa {
        self.prepared.isa
    }

    pub fn kernels(&self) -> &'static KernelSet {
        self.prepared.ks
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        format::write(&self.meta, &self.graph, &self.consts)
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{conv, noise, GEOM};
    use crate::{Session, TensorData};

    fn run(m: &Model, x: &[f32]) -> Vec<f32> {
        let mut s = Session::new(m);
        s.input_mut(0).unwrap().copy_from_slice(x);
        s.run().unwrap();
        let mut y = vec![];
        s.output_f32(0, &mut y).unwrap();
        y
    }

    /// An f32 conv whose weights are stored as f16 computes exactly the conv
    /// of the f16-rounded weights, within the f16 rounding bound of the f32
    /// conv, from a file with half the weight bytes.
    #[test]
    fn f16_weights_run_the_f32_conv_within_the_rounding_bound() {
        let w = noise(GEOM.weight_len(), 3);
        let x = noise(GEOM.input_len(), 5);
        let load = |w: &[f32], f16: bool| {
            let (meta, g, c) = conv(w, f16);
            let bytes = format::write(&meta, &g, &c);
            (Model::from_bytes(&bytes).unwrap(), bytes.len())
        };
        let (m32, n32) = load(&w, false);
        let (m16, n16) = load(&w, true);
        assert!(n16 < n32, "f16 file {n16} bytes, f32 file {n32}");
        let y32 = run(&m32, &x);
        let y16 = run(&m16, &x);

        // Expansion is exact: same result as f32 storage of the rounded weights.
        let rounded: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(y16, run(&load(&rounded, false).0, &x));
        // And the session exposes the expanded weights as an f32 constant.
        let s = Session::new(&m16);
        let Some(TensorData::F32(seen)) = s.tensor(1) else {
            panic!("f16-stored weights are not an f32 tensor")
        };
        assert_eq!(seen, rounded.as_slice());

        // Round to nearest: |w - f16(w)| <= 2^-11 |w| for normal values, so
        // |y16 - y32| <= 2^-11 sum |x||w| (+ f32 accumulation noise, 1e-6).
        let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let wa: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let (meta, g, mut c) = conv(&wa, false);
        c.f32[GEOM.weight_len()..].fill(0.0); // zero bias: sum |x||w| only
        let mag = run(&Model::new(meta, g, c).unwrap(), &xa);
        let mut worst = 0f32;
        for ((a, b), m) in y16.iter().zip(&y32).zip(&mag) {
            let d = (a - b).abs();
            assert!(d <= m / 2048.0 + 1e-6, "diff {d} over bound {}", m / 2048.0);
            worst = worst.max(d);
        }
        // The f16 path really ran (rounding is visible), and did not
        // produce something trivially close: outputs are O(1).
        assert!(worst > 0.0, "f16 weights gave bit-identical outputs");
        assert!(y32.iter().any(|v| v.abs() > 0.5));
    }

    #[test]
    fn f16_weights_count_two_bytes_and_survive_a_resave() {
        let w = noise(GEOM.weight_len(), 3);
        let c32 = conv(&w, false).2;
        let (meta, g, c16) = conv(&w, true);
        assert_eq!(c32.bytes() - c16.bytes(), 2 * GEOM.weight_len());
        // The loaded model keeps the f16 pool (not the expansion) for saving.
        let m = Model::new(meta, g, c16).unwrap();
        let again = Model::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(again.consts, m.consts);
        assert_eq!(again.to_bytes(), m.to_bytes());
    }
}
