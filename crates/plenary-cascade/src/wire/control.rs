//! Control frames: 4-byte big-endian length, then a JSON `ControlMsg`.

use super::{ControlMsg, WireError, MAX_CONTROL_FRAME};

const LEN_PREFIX: usize = 4;

/// Appends one frame for `msg` to `out`. The sender should check the frame against
/// `MAX_CONTROL_FRAME` (the link does): a larger one makes the peer end the link.
pub fn encode_control(msg: &ControlMsg, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    // Serializing these plain types into a Vec cannot fail; keep `out` whole if it ever did.
    if serde_json::to_writer(&mut *out, msg).is_err() {
        debug_assert!(false, "ControlMsg failed to serialize");
        out.truncate(start);
        return;
    }
    let len = (out.len() - start - LEN_PREFIX) as u32;
    out[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
}

/// Sans-IO reassembly of control frames from stream chunks.
///
/// Memory stays bounded if the caller drains `next()` after each `push()`: the decoder then
/// holds at most one partial frame (≤ 4 + `MAX_CONTROL_FRAME` bytes) plus the last chunk.
/// An oversized length prefix is reported once as `FrameTooLarge`; the stream cannot be
/// resynchronised after it, so the decoder then ignores input and yields nothing more.
#[derive(Debug, Default)]
pub struct ControlDecoder {
    buf: Vec<u8>,
    /// Start of the first undecoded byte in `buf`; compacted on the next push.
    start: usize,
    poisoned: bool,
}

impl ControlDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.poisoned {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        // Don't hold the body of a frame we will refuse anyway: keep only its prefix.
        if let Some(len) = self.pending_len() {
            if len > MAX_CONTROL_FRAME {
                self.buf.truncate(LEN_PREFIX);
            }
        }
    }

    #[allow(clippy::should_implement_trait)] // not an Iterator: `None` means "need more bytes"
    pub fn next(&mut self) -> Option<Result<ControlMsg, WireError>> {
        if self.poisoned {
            return None;
        }
        let len = self.pending_len()?;
        if len > MAX_CONTROL_FRAME {
            self.poisoned = true;
            self.buf = Vec::new();
            self.start = 0;
            return Some(Err(WireError::FrameTooLarge(len)));
        }
        let body_start = self.start + LEN_PREFIX;
        let frame = self.buf.get(body_start..body_start + len)?;
        self.start = body_start + len;
        Some(serde_json::from_slice(frame).map_err(|e| WireError::BadControl(e.to_string())))
    }

    /// Bytes held that are not yet decoded (for tests and bounds checks).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn pending_len(&self) -> Option<usize> {
        let p = self.buf.get(self.start..self.start + LEN_PREFIX)?;
        Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Kind;

    fn samples() -> Vec<ControlMsg> {
        vec![
            ControlMsg::Hello { node: "a".into() },
            ControlMsg::TrackUp {
                room: "r1".into(),
                id: 7,
                owner: 3,
                mid: "0".into(),
                kind: Kind::Video,
                source: "camera".into(),
                codec: "vp8".into(),
                rids: vec!["q".into(), "h".into(), "f".into()],
            },
            ControlMsg::Demand {
                track: 7,
                layers: 0b101,
            },
            ControlMsg::Draining,
            ControlMsg::Nack {
                track: 7,
                layer: 1,
                seqs: vec![65_535, 0, 1],
            },
        ]
    }

    fn drain(d: &mut ControlDecoder) -> Vec<Result<ControlMsg, WireError>> {
        std::iter::from_fn(|| d.next()).collect()
    }

    #[test]
    fn frames_split_at_every_boundary() {
        let mut stream = Vec::new();
        for m in samples() {
            encode_control(&m, &mut stream);
        }
        for cut in 0..=stream.len() {
            let mut d = ControlDecoder::new();
            d.push(&stream[..cut]);
            let mut got = drain(&mut d);
            d.push(&stream[cut..]);
            got.extend(drain(&mut d));
            let want: Vec<_> = samples().into_iter().map(Ok).collect();
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(d.buffered(), 0);
        }
        // Byte by byte.
        let mut d = ControlDecoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            got.extend(drain(&mut d));
            assert!(d.buffered() <= 4 + MAX_CONTROL_FRAME);
        }
        assert_eq!(got.len(), samples().len());
    }

    #[test]
    fn oversized_prefix_is_refused_without_buffering_the_body() {
        let mut d = ControlDecoder::new();
        let len = (MAX_CONTROL_FRAME + 1) as u32;
        d.push(&len.to_be_bytes());
        d.push(&vec![b' '; 64 * 1024]);
        assert!(d.buffered() <= 4);
        assert_eq!(
            d.next(),
            Some(Err(WireError::FrameTooLarge(MAX_CONTROL_FRAME + 1)))
        );
        assert_eq!(d.next(), None);
        let mut ok = Vec::new();
        encode_control(&ControlMsg::Draining, &mut ok);
        d.push(&ok);
        assert_eq!(d.next(), None, "no resync after an oversized frame");
    }

    #[test]
    fn frame_at_the_limit_is_accepted() {
        let mut frame = Vec::new();
        let node = "n".repeat(MAX_CONTROL_FRAME - r#"{"type":"hello","node":""}"#.len());
        encode_control(&ControlMsg::Hello { node: node.clone() }, &mut frame);
        assert_eq!(frame.len(), 4 + MAX_CONTROL_FRAME);
        let mut d = ControlDecoder::new();
        d.push(&frame);
        assert_eq!(d.next(), Some(Ok(ControlMsg::Hello { node })));
    }

    #[test]
    fn garbage_json_is_an_error_and_the_next_frame_decodes() {
        let mut stream = Vec::new();
        for body in [&b"{not json"[..], b"", br#"{"type":"nope"}"#] {
            stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
            stream.extend_from_slice(body);
        }
        encode_control(&ControlMsg::Draining, &mut stream);
        let mut d = ControlDecoder::new();
        d.push(&stream);
        let got = drain(&mut d);
        assert_eq!(got.len(), 4);
        assert!(got[..3]
            .iter()
            .all(|r| matches!(r, Err(WireError::BadControl(_)))));
        assert_eq!(got[3], Ok(ControlMsg::Draining));
    }

    #[test]
    fn random_chunks_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let mut d = ControlDecoder::new();
            for _ in 0..rng.gen_range(1..8) {
                let mut chunk: Vec<u8> = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
                if rng.gen_bool(0.5) && chunk.len() >= 4 {
                    chunk[..2].fill(0); // plausible lengths
                }
                d.push(&chunk);
                while d.next().is_some() {}
            }
        }
    }
}
