//! End-to-end tests of `strixd` with real models (converted by the `strix`
//! binary), real media generated with ffmpeg and sox from the shipped files,
//! and a real mosquitto broker started on a free loopback port.
//!
//! Needs: mosquitto, ffmpeg, sox (scripts/test-strixd.sh installs them) and
//! the `strix` binary (`STRIX_BIN`, else `<target>/release/strix`, else it is
//! built with `cargo build --release -p strix-tools`).
//!
//! One binary (strixd and strix build once), a module per area: see `strixd/`.
mod strixd {
    mod alsa;
    mod boards;
    mod camera;
    mod delivery;
    mod ha;
    pub mod harness;
    mod lifecycle;
    #[cfg(feature = "rknpu")]
    mod npu;
    mod speech;
    mod tls;
    mod v4l2;
}
