//! Room API client messages: a WebSocket text frame through `ClientMsg` and the SDP and track
//! ids the media worker reads from it. Whatever parses must re-encode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_sfu::fuzzing::room_message;
use plenary_sfu::signal::ClientMsg;

fuzz_target!(|data: &[u8]| {
    // tungstenite hands over text frames only as valid UTF-8.
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    match room_message(frame) {
        Ok(msg) => {
            let json = serde_json::to_string(&msg).expect("a parsed message serializes");
            let again: ClientMsg = serde_json::from_str(&json).expect("and parses back");
            assert_eq!(serde_json::to_string(&again).unwrap(), json);
        }
        // Sent to the client as is: no memory address from the SDP parser's error. The JSON
        // error may quote the client's own text back, so only what it did not send counts.
        Err(e) => {
            let leaked = |s: &str| s.matches("PointerOffset").count();
            assert!(leaked(&e) <= leaked(frame), "{e}");
        }
    }
});
