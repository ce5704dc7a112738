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

/// `vec![value; n]`, reserved fallibly: when the allocator refuses (a size
/// read from a file, on a small board), an error naming `what` instead of
/// the process abort `vec!` would cause, which no caller (nor the C ABI's
/// panic guard) could catch.
pub(crate) fn try_vec<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = try_vec_empty(n, what)?;
    v.resize(n, value);
    Ok(v)
}

/// An empty vector with room for exactly `n` values, reserved fallibly (see
/// [`try_vec`]).
pub(crate) fn try_vec_empty<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::Invalid(format!(
            "cannot allocate {} bytes for {what} (too large for this system)",
            (n as u128) * std::mem::size_of::<T>() as u128
        ))
    })?;
    Ok(v)
}
