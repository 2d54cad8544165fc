//! The config parsers: coturn syntax, Plenary TOML, and peer address ranges. Operators
//! paste these by hand, so anything must give a value or a clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_turn::config::{parse_coturn, parse_toml};
use plenary_turn::policy::IpRange;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_coturn(text, "fuzz.conf");
    let _ = parse_toml(text, "fuzz.toml");
    for line in text.lines().take(16) {
        if let Ok(range) = line.parse::<IpRange>() {
            let _ = range.contains(range.start);
        }
    }
});
