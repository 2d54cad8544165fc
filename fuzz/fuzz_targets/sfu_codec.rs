//! `core::codec` on arbitrary RTP payloads: keyframe detection (VP8, H.264, Opus) and the VP8
//! picture ID, which the forwarding path reads from every video packet. First byte: codec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_sfu::core::codec::{is_keyframe_start, vp8_picture_id, Codec};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let codec = [Codec::Vp8, Codec::H264, Codec::Opus, Codec::Other][usize::from(pick % 4)];
    let key = is_keyframe_start(codec, payload);
    match codec {
        // S bit set, partition 0.
        Codec::Vp8 if key => assert_eq!(payload[0] & 0x17, 0x10),
        // forbidden_zero_bit clear.
        Codec::H264 if key => assert_eq!(payload[0] & 0x80, 0),
        Codec::Opus => assert_eq!(key, !payload.is_empty()),
        Codec::Other => assert!(!key),
        _ => {}
    }
    if let Some((pid, long, _)) = vp8_picture_id(payload) {
        assert!(if long { pid < 0x8000 } else { pid < 0x80 });
    }
    if let Ok(name) = std::str::from_utf8(payload) {
        let _ = Codec::from_name(name).needs_keyframe();
    }
});
