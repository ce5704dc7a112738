//! The WAV reader (`strix_runtime::audio::read_wav_mono_16k`: any rate and
//! channel count, resampled to 16 kHz mono) and the KWS MFCC front end on
//! what it returns, as `strix run` and strixd's speech pipeline use them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use strix_runtime::audio::{read_wav_mono_16k, KwsMfcc};

thread_local! {
    // Building the FFT plan once keeps executions fast.
    static MFCC: RefCell<KwsMfcc> = RefCell::new(KwsMfcc::new());
}

fuzz_target!(|data: &[u8]| {
    let path = strix_fuzz::scratch_file("wav", data);
    if let Ok(samples) = read_wav_mono_16k(&path) {
        let mut out = vec![0f32; KwsMfcc::OUTPUT_LEN];
        MFCC.with(|m| m.borrow_mut().compute(&samples, &mut out));
    }
});
