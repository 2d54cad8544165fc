//! Cascade link format on arbitrary bytes: media datagrams and control-stream framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_cascade::wire::{
    decode_datagram, encode_datagram, ControlDecoder, WireError, MAX_CONTROL_FRAME,
};

fuzz_target!(|data: &[u8]| {
    // Anything that decodes re-encodes to a datagram that decodes the same.
    if let Ok(p) = decode_datagram(data) {
        assert!(p.layer <= 2);
        assert!(p.payload.len() <= data.len());
        let mut out = Vec::new();
        encode_datagram(&p, &mut out);
        assert_eq!(decode_datagram(&out).as_ref(), Ok(&p));
    }

    // The first byte picks a chunk size, so frames get split at varied boundaries.
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first).max(1);
    let mut d = ControlDecoder::new();
    let mut too_large = 0;
    for piece in stream.chunks(chunk) {
        d.push(piece);
        assert!(d.buffered() <= 4 + MAX_CONTROL_FRAME + chunk);
        while let Some(r) = d.next() {
            if let Err(WireError::FrameTooLarge(n)) = r {
                assert!(n > MAX_CONTROL_FRAME);
                too_large += 1;
            }
        }
    }
    assert!(too_large <= 1);
});
