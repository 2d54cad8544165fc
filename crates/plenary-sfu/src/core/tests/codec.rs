use crate::core::codec::{is_keyframe_start, vp8_picture_id, Codec};

/// VP8 keyframe payload header start: P bit clear, then the start code.
const KEY: [u8; 6] = [0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a];
/// Interframe: P bit set.
const DELTA: [u8; 3] = [0x51, 0x02, 0x00];

fn with(desc: &[u8], body: &[u8]) -> Vec<u8> {
    [desc, body].concat()
}

#[test]
fn names() {
    assert_eq!(Codec::from_name("VP8"), Codec::Vp8);
    assert_eq!(Codec::from_name("vp8"), Codec::Vp8);
    assert_eq!(Codec::from_name("H264"), Codec::H264);
    assert_eq!(Codec::from_name("h264"), Codec::H264);
    assert_eq!(Codec::from_name("opus"), Codec::Opus);
    assert_eq!(Codec::from_name("OPUS"), Codec::Opus);
    assert_eq!(Codec::from_name("video/VP8"), Codec::Vp8);
    assert_eq!(Codec::from_name("audio/opus"), Codec::Opus);
    assert_eq!(Codec::from_name("VP9"), Codec::Other);
    assert_eq!(Codec::from_name(""), Codec::Other);
    assert!(!Codec::Opus.needs_keyframe());
    assert!(Codec::Vp8.needs_keyframe());
}

#[test]
fn vp8_minimal_descriptor() {
    assert!(is_keyframe_start(Codec::Vp8, &with(&[0x10], &KEY)));
    assert!(!is_keyframe_start(Codec::Vp8, &with(&[0x10], &DELTA)));
    // Not the start of a partition.
    assert!(!is_keyframe_start(Codec::Vp8, &with(&[0x00], &KEY)));
    // Start of partition 1, not of the frame.
    assert!(!is_keyframe_start(Codec::Vp8, &with(&[0x11], &KEY)));
    // N (non-reference) bit does not matter.
    assert!(is_keyframe_start(Codec::Vp8, &with(&[0x30], &KEY)));
}

#[test]
fn vp8_extensions() {
    // X, I with 15-bit PictureID 0x1234, L (TL0PICIDX 7), T (TID byte).
    let desc = [0x90, 0xe0, 0x92, 0x34, 0x07, 0x40];
    assert!(is_keyframe_start(Codec::Vp8, &with(&desc, &KEY)));
    assert!(!is_keyframe_start(Codec::Vp8, &with(&desc, &DELTA)));
    assert_eq!(
        vp8_picture_id(&with(&desc, &KEY)),
        Some((0x1234, true, Some(7)))
    );
    // 7-bit PictureID only.
    let desc = [0x90, 0x80, 0x25];
    assert!(is_keyframe_start(Codec::Vp8, &with(&desc, &KEY)));
    assert_eq!(
        vp8_picture_id(&with(&desc, &DELTA)),
        Some((0x25, false, None))
    );
    // K alone also adds the TID/KEYIDX byte; 0x51 there must not be read as the P bit.
    let desc = [0x90, 0x10, 0x51];
    assert!(is_keyframe_start(Codec::Vp8, &with(&desc, &KEY)));
    assert_eq!(vp8_picture_id(&with(&desc, &KEY)), None);
    // X with no extension bits.
    assert!(is_keyframe_start(Codec::Vp8, &with(&[0x90, 0x00], &KEY)));
}

#[test]
fn vp8_truncated() {
    assert!(!is_keyframe_start(Codec::Vp8, &[]));
    // Descriptor alone, no payload header.
    assert!(!is_keyframe_start(Codec::Vp8, &[0x10]));
    assert!(!is_keyframe_start(Codec::Vp8, &[0x90]));
    assert!(!is_keyframe_start(Codec::Vp8, &[0x90, 0x80]));
    // 15-bit PictureID cut in half.
    assert!(!is_keyframe_start(Codec::Vp8, &[0x90, 0x80, 0x80]));
    assert_eq!(vp8_picture_id(&[0x90, 0x80, 0x80]), None);
    // L announced but missing.
    assert!(!is_keyframe_start(Codec::Vp8, &[0x90, 0xc0, 0x01]));
    // Full descriptor, payload missing.
    assert!(!is_keyframe_start(
        Codec::Vp8,
        &[0x90, 0xe0, 0x92, 0x34, 0x07, 0x40]
    ));
}

#[test]
fn h264_single_nal() {
    assert!(is_keyframe_start(Codec::H264, &[0x65, 0x88, 0x84])); // IDR
    assert!(is_keyframe_start(Codec::H264, &[0x67, 0x42, 0x00])); // SPS
    assert!(!is_keyframe_start(Codec::H264, &[0x41, 0x9a])); // non-IDR slice
    assert!(!is_keyframe_start(Codec::H264, &[0x68, 0xce])); // PPS
    assert!(!is_keyframe_start(Codec::H264, &[0x06, 0x05])); // SEI
    assert!(is_keyframe_start(Codec::H264, &[0x05])); // NRI 0 still IDR
    assert!(!is_keyframe_start(Codec::H264, &[0xe5, 0x88])); // forbidden bit
    assert!(!is_keyframe_start(Codec::H264, &[]));
}

#[test]
fn h264_stap_a() {
    let sps_pps = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
    assert!(is_keyframe_start(Codec::H264, &sps_pps));
    let sei_pps = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x68, 0xce];
    assert!(!is_keyframe_start(Codec::H264, &sei_pps));
    // Key NAL second.
    let pps_idr = [0x78, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x65, 0x88];
    assert!(is_keyframe_start(Codec::H264, &pps_idr));
    // Second size runs past the end.
    let cut = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x09, 0x68, 0xce];
    assert!(!is_keyframe_start(Codec::H264, &cut));
    // Dangling single size byte.
    let cut = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00];
    assert!(!is_keyframe_start(Codec::H264, &cut));
    // Zero size.
    assert!(!is_keyframe_start(Codec::H264, &[0x78, 0x00, 0x00, 0x67]));
    assert!(!is_keyframe_start(Codec::H264, &[0x78]));
}

#[test]
fn h264_fu_a() {
    assert!(is_keyframe_start(Codec::H264, &[0x7c, 0x85, 0x88])); // S, IDR
    assert!(is_keyframe_start(Codec::H264, &[0x7c, 0x87, 0x42])); // S, SPS
    assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x05, 0x88])); // middle
    assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x45, 0x88])); // end
    assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x81, 0x9a])); // S, non-IDR
    assert!(!is_keyframe_start(Codec::H264, &[0x7c])); // truncated

    // STAP-B, MTAP, FU-B are not used by WebRTC (non-interleaved mode).
    assert!(!is_keyframe_start(
        Codec::H264,
        &[0x79, 0x00, 0x00, 0x00, 0x02, 0x65, 0x88]
    ));
    assert!(!is_keyframe_start(Codec::H264, &[0x7d, 0x85, 0x00, 0x00]));
}

#[test]
fn other_codecs() {
    assert!(is_keyframe_start(Codec::Opus, &[0x78, 0x01]));
    assert!(!is_keyframe_start(Codec::Opus, &[]));
    assert!(!is_keyframe_start(Codec::Other, &[0x10, 0x50]));
}
