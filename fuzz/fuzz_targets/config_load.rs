//! The configuration loader: arbitrary text as a configuration file. Loading never panics;
//! a configuration it accepts builds a snapshot without panicking (an error is fine), and an
//! error names at least one problem.
#![no_main]

use imds_tun::config;
use imds_tun::snapshot::{Keys, Snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let no_env = |_: &str| None;
    match config::load_str(text, "fuzz.json", &no_env) {
        Ok(cfg) => {
            let _ = Snapshot::build(cfg, &Keys::fixed(1), "fuzz");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
