//! strixd, the Strix board daemon: camera and speech pipelines on the board,
//! alerts upstream through a durable outbox. The binary (`src/main.rs`) wires
//! these modules together; the library exists so tests can reach them.

pub mod alert;
pub mod board;
pub mod camera;
pub mod capture;
pub mod config;
pub mod gpio;
pub mod log;
pub mod metrics;
pub mod outbox;
pub mod snapshots;
pub mod speech;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod webhook;

/// Process exit codes (documented in README.md and `--help`).
pub mod exit {
    pub const OK: i32 = 0;
    /// Unexpected internal failure (a thread could not start, ...).
    pub const INTERNAL: i32 = 1;
    /// The config file (or the board file) is missing, malformed or invalid.
    pub const CONFIG: i32 = 2;
    /// A model is missing, corrupt, or not the kind the pipeline needs.
    pub const MODEL: i32 = 3;
    /// A media source is missing or unreadable.
    pub const MEDIA: i32 = 4;
    /// A system resource is unavailable: the outbox file, the metrics port,
    /// a GPIO line.
    pub const RESOURCE: i32 = 5;
    /// A pipeline, delivery or metrics thread panicked (a bug): strixd
    /// stops, so that the service manager restarts it.
    pub const PANIC: i32 = 6;
}
