//! End-to-end tests on the real shared models (one binary: tract links once).
mod e2e {
    mod f16;
    mod hostile;
    mod hostile_model;
    mod kws;
    mod models;
    mod prune;
    mod sparse;
    mod vad;
    mod vww;
}
