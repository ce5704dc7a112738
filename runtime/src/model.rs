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
