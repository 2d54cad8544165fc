//! ChannelData parsing and stream framing on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plenary_turn::stun::{channel_data, stream_frame_len};

fuzz_target!(|data: &[u8]| {
    if let Some((channel, payload)) = channel_data::parse(data) {
        assert!((channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL).contains(&channel));
        assert!(payload.len() + channel_data::HEADER_LEN <= data.len());
    }
    if let Some(len) = stream_frame_len(data) {
        assert!(len >= 4);
    }
});
