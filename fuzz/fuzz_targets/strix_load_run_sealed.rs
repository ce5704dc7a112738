//! The `.strix` loader and executor behind the checksums. Every input is
//! re-sealed (declared length, section and table sha256 recomputed) before
//! loading, and a custom mutator edits the sections' content rather than
//! their stored bytes: it inflates a section, changes a number of the
//! META/GRAPH JSON (boundary values, values that wrap size products,
//! copies of other numbers) or mutates the content with libFuzzer's own
//! mutator, then deflates and reassembles the file. Saved crash inputs are
//! therefore valid `.strix` files that `strix run` loads as they are.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use strix_fuzz::{copy_json_number, mutate_json_number, reseal, Container, Rng};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    reseal(&mut bytes);
    strix_fuzz::load_and_run(&bytes);
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let mut rng = Rng::new(seed);
    // A quarter of the time plain byte mutation (re-sealed by the target):
    // headers, tables and raw sections.
    if rng.below(4) == 0 {
        return fuzzer_mutate(data, size, max_size);
    }
    let Some(mut c) = Container::parse(&data[..size]) else {
        return fuzzer_mutate(data, size, max_size);
    };
    // The graph half of the time, otherwise any section.
    let i = match c.find(b"GRAPH") {
        Some(g) if rng.below(2) == 0 => g,
        _ => rng.below(c.sections.len()),
    };
    let json = [&b"GRAPH"[..], b"META"].iter().any(|t| c.find(t) == Some(i));
    let s = &mut c.sections[i];
    let done = match rng.below(if json { 4 } else { 1 }) {
        1 | 2 => mutate_json_number(&mut s.data, rng.next() as usize, rng.next() as usize),
        3 => copy_json_number(&mut s.data, rng.next() as usize, rng.next() as usize),
        _ => {
            let n = s.data.len();
            s.data.resize(n + n / 8 + 64, 0);
            let m = fuzzer_mutate(&mut s.data, n, n + n / 8 + 64);
            s.data.truncate(m);
            true
        }
    };
    if !done {
        return fuzzer_mutate(data, size, max_size);
    }
    let out = c.to_bytes();
    if out.len() > max_size {
        return fuzzer_mutate(data, size, max_size);
    }
    data[..out.len()].copy_from_slice(&out);
    out.len()
});
