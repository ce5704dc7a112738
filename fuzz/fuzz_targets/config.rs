//! strixd's config parser (`strix_firmware::config::parse`: TOML, then every
//! range and cross-reference check) on arbitrary text, and the webhook URL
//! parser of an accepted config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = strix_firmware::config::parse(text) {
        if let Some(w) = &cfg.webhook {
            let _ = w.endpoint();
        }
    }
});
