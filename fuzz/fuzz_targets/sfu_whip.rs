//! WHIP/WHEP `POST` handling up to the SDP parse. Input: a flags byte, then lines
//! `path?query`, `Authorization` value, `Content-Type` value (empty line: header absent),
//! and the body as the rest. Flag bit 0 turns room tokens on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_sfu::fuzzing::whip_offer;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(4, |b| *b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header = |v: Option<&[u8]>| v.filter(|v| !v.is_empty()).map(<[u8]>::to_vec);
    let auth = header(parts.next());
    let ctype = header(parts.next());
    let body = parts.next().unwrap_or_default();
    let secrets = if flags & 1 == 1 {
        vec!["fuzz-secret".to_string()]
    } else {
        Vec::new()
    };
    let (status, text) = whip_offer(
        &path,
        auth.as_deref(),
        ctype.as_deref(),
        body,
        &secrets,
        1_800_000_000,
    );
    // A forged token never gets past the check.
    if flags & 1 == 1 {
        assert_ne!(status.as_u16(), 201, "accepted without a valid token");
    }
    // Error bodies are one line, with no memory address from the SDP parser.
    assert!(!text.contains("PointerOffset"), "{text}");
    assert!(text.is_empty() || (text.ends_with('\n') && text.matches('\n').count() == 1));
});
