//! Strix runtime: the `.strix` format, execution plan, arena and executor.
//!
//! `Model::load` (validate everything) -> `Session::new` (allocate the arena
//! once) -> `Session::run` (no allocation) -> outputs.
pub mod audio;
pub mod capi;
pub mod error;
pub mod exec;
pub mod format;
pub mod graph;
mod kernels;
pub mod limits;
pub mod meta;
pub mod model;
pub mod npu;
mod ops;
mod par;
pub mod plan;
pub mod pool;
pub mod postprocess;
pub mod preprocess;
pub mod validate;

pub use error::{Error, Result};
pub use exec::{Session, TensorData};
pub use model::{LoadOptions, Model};
/// The kernel paths, for [`LoadOptions::isa`].
pub use strix_kernels::Isa;
