//! Log lines on stderr with a level filter (`--log-level`, `log_level`).
//!
//! Plain text, one line per message, no colours (ANSI escapes would litter
//! journald and log files). Under systemd (the binary sees `JOURNAL_STREAM`
//! and calls [`init`] with `syslog_prefix`) each line starts with its syslog
//! priority, `<3>` error, `<4>` warning, `<6>` info, `<7>` debug, which
//! journald strips and stores as the entry's priority
//! (`journalctl -p warning`). This module reads no environment itself.

use serde::Deserialize;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// A message's severity; a level also names the least severe messages shown.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
    Debug = 7,
}

impl Level {
    /// `error`, `warn`, `info` or `debug`.
    pub fn from_name(s: &str) -> Option<Level> {
        match s {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    /// The syslog priority (`<N>` prefix).
    pub fn priority(self) -> u8 {
        self as u8
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static SYSLOG_PREFIX: AtomicBool = AtomicBool::new(false);

/// Sets the least severe level printed and whether lines carry `<N>`
/// syslog priority prefixes. Until called: info, no prefixes.
pub fn init(level: Level, syslog_prefix: bool) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    SYSLOG_PREFIX.store(syslog_prefix, Ordering::Relaxed);
}

/// Whether messages of `level` are printed.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Prints one message (the text as given, e.g. `strixd: mqtt: connected`)
/// if `level` is enabled, as a single write so lines of threads do not mix.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = if SYSLOG_PREFIX.load(Ordering::Relaxed) {
        format!("<{}>{args}\n", level.priority())
    } else {
        format!("{args}\n")
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at error level: `log_error!("strixd: error: ...")`.
#[macro_export]
macro_rules! log_error {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) };
}

/// Logs at warning level.
#[macro_export]
macro_rules! log_warn {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) };
}

/// Logs at info level.
#[macro_export]
macro_rules! log_info {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
}

/// Logs at debug level.
#[macro_export]
macro_rules! log_debug {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_and_names() {
        assert!(Level::Error < Level::Warn && Level::Info < Level::Debug);
        assert_eq!(Level::from_name("warn"), Some(Level::Warn));
        assert_eq!(Level::from_name("verbose"), None);
        assert_eq!(Level::Debug.priority(), 7);
    }
}
