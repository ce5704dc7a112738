//! Runtime errors. Every malformed model, input or call ends here, never in a panic.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("not a .strix file: {0}")]
    Format(String),
    #[error("unsupported .strix version {found} (this runtime reads versions 1 to {supported})")]
    Version { found: u32, supported: u32 },
    #[error("corrupt .strix file: {0}")]
    Corrupt(String),
    #[error("invalid model: node {node} ({op}): {msg}")]
    InvalidNode {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error("bad argument: {0}")]
    Argument(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
