//! Board files: parsed and checked by the `strix-boards` crate (shared with
//! `strix flash`); strixd maps their errors to config errors.

pub use strix_boards::*;

use crate::config::ConfigError;

impl From<BoardError> for ConfigError {
    fn from(e: BoardError) -> ConfigError {
        ConfigError {
            key: e.key,
            expected: e.expected,
            found: e.found,
        }
    }
}
