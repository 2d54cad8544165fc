//! What a media worker does with a datagram before str0m does: demultiplexing, the ICE ufrag
//! match against a peer (`Rtc::accepts`), the owning worker from a STUN USERNAME, the DTLS
//! trace. Input: two bytes of source port, then the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_sfu::fuzzing::{Intake, MediaIntake};
use std::net::SocketAddr;

thread_local! {
    // Building a peer makes a DTLS certificate: once per process.
    static INTAKE: MediaIntake = MediaIntake::new();
}

fuzz_target!(|data: &[u8]| {
    let [hi, lo, datagram @ ..] = data else {
        return;
    };
    let src = SocketAddr::from(([198, 51, 100, 7], u16::from_be_bytes([*hi, *lo])));
    let intake = INTAKE.with(|i| i.datagram(src, datagram));
    match intake {
        // Only something shaped as STUN (top two bits clear) names a ufrag.
        Intake::Worker(_) => assert!(datagram[0] < 0x40),
        // DTLS, and RTP/RTCP past two bytes, always demultiplex (RFC 7983 first-byte ranges).
        Intake::Malformed => {
            if let Some(&b) = datagram.first() {
                assert!(!(20..64).contains(&b));
                assert!(!(128..192).contains(&b) || datagram.len() <= 2);
            }
        }
        Intake::Peer | Intake::Unknown => {}
    }
});
