//! `SERVING_READINESS_PROBE` JSON, single and multi-container: any input is
//! accepted or refused with an error, never a panic; accepted input gives at
//! least one probe in single-container mode.
#![no_main]

use kdp_queue_proxy::readiness::parse_probes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(probes) = parse_probes(json, false) {
        assert!(json.is_empty() || probes.len() == 1);
    }
    let _ = parse_probes(json, true);
});
