//! Entry points for the fuzz targets in `fuzz/` (not an API): the crate-private steps the SFU
//! runs on untrusted input, called in the order the server calls them. Each returns what a
//! client would see, so a target can assert on it.

use std::net::SocketAddr;
use std::time::Instant;

use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, IceCreds, Input, Rtc, RtcConfig};

use crate::http::{sdp_error, text, token_of, valid_room};
use crate::media::model::parse_id;
use crate::signal::ClientMsg;

use crate::media::io as media_io;

/// A room API text frame as the WebSocket session parses it, then the SDP and track ids the
/// media worker reads out of it. `Err` is the error line the client would be sent.
pub fn room_message(frame: &str) -> Result<ClientMsg, String> {
    let msg = serde_json::from_str::<ClientMsg>(frame).map_err(|e| format!("bad message: {e}"))?;
    let bad_track = |t: &str| parse_id(t, 't').is_none();
    let error = match &msg {
        ClientMsg::Publish { sdp, .. } => SdpOffer::from_sdp_string(sdp)
            .err()
            .map(|e| format!("publish: unparsable SDP offer: {}", sdp_error(&e))),
        ClientMsg::Answer { sdp } => SdpAnswer::from_sdp_string(sdp)
            .err()
            .map(|e| format!("answer: unparsable SDP: {}", sdp_error(&e))),
        ClientMsg::Subscribe { tracks } => tracks
            .iter()
            .any(|t| bad_track(&t.track))
            .then(|| "subscribe: unknown track id".to_owned()),
        // Unknown ids are skipped, not refused.
        ClientMsg::Unsubscribe { tracks } => {
            let _unknown = tracks.iter().filter(|t| bad_track(t)).count();
            None
        }
        ClientMsg::SetLayer { track, .. } => {
            bad_track(track).then(|| "set_layer: unknown track id".to_owned())
        }
        ClientMsg::Join { .. } | ClientMsg::Leave => None,
    };
    match error {
        Some(e) => Err(e),
        None => Ok(msg),
    }
}

/// A WHIP or WHEP `POST` up to the SDP parse: room name, room token (`?token=` or bearer),
/// content type, body size, UTF-8, `SdpOffer::from_sdp_string`. Returns the status and the
/// body a client would get; 201 with an empty body means the offer would go to a worker.
pub fn whip_offer(
    path_and_query: &str,
    authorization: Option<&[u8]>,
    content_type: Option<&[u8]>,
    body: &[u8],
    secrets: &[String],
    now_unix: u64,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(Method::POST).uri(path_and_query);
    if let Some(v) = authorization {
        req = req.header(AUTHORIZATION, v);
    }
    if let Some(v) = content_type {
        req = req.header(CONTENT_TYPE, v);
    }
    // hyper refuses such a request line or header before the service sees it.
    let Ok(req) = req.body(()) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let reply = |status: StatusCode, msg: &str| {
        let r = text(status, msg);
        let body = r.body().clone();
        // A `Full` body is one frame; read it without a runtime.
        let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body))
            .and_then(Result::ok)
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (r.status(), String::from_utf8_lossy(&bytes).into_owned())
    };
    let path = req.uri().path();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, room) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if kind != "whip" && kind != "whep" {
        return reply(StatusCode::NOT_FOUND, "no such endpoint");
    }
    if !valid_room(room) {
        return reply(
            StatusCode::BAD_REQUEST,
            "room must be 1-64 chars of [A-Za-z0-9_-]",
        );
    }
    if let Err(e) = crate::token::verify(secrets, token_of(&req).as_deref(), room, now_unix) {
        return reply(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    if !crate::http::is_sdp(&req) {
        return reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/sdp",
        );
    }
    if body.len() > crate::MAX_SDP {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "offer too large or body unreadable",
        );
    }
    let Ok(sdp) = std::str::from_utf8(body) else {
        return reply(StatusCode::BAD_REQUEST, "offer is not UTF-8");
    };
    match SdpOffer::from_sdp_string(sdp) {
        Ok(_) => (StatusCode::CREATED, String::new()),
        Err(e) => reply(
            StatusCode::BAD_REQUEST,
            &format!("unparsable SDP offer: {}", sdp_error(&e)),
        ),
    }
}

/// ICE credentials of the [`MediaIntake`] peer, so seeds can carry a check it accepts.
pub const INTAKE_UFRAG: &str = "w0xfuzz";
pub const INTAKE_PASS: &str = "fuzzfuzzfuzzfuzzfuzzfuzz";

/// What a media worker does with a datagram before str0m's `handle_input`: demultiplex it
/// (`Receive::new`), ask a not-yet-connected peer's `Rtc` whether it is its (the ICE ufrag),
/// else find the worker owning the ufrag in the STUN USERNAME; DTLS records are traced.
pub struct MediaIntake {
    rtc: Rtc,
    local: SocketAddr,
}

/// How the worker would route one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Not STUN, DTLS, RTP or RTCP: counted as malformed.
    Malformed,
    /// The peer's `Rtc` takes it.
    Peer,
    /// A STUN check naming another worker's ufrag: handed over.
    Worker(usize),
    /// Nobody's: counted as unknown.
    Unknown,
}

impl Default for MediaIntake {
    fn default() -> Self {
        Self::new()
    }
}

impl MediaIntake {
    /// A peer configured as `media::control` configures it (ICE-lite, RTP mode).
    pub fn new() -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], 8443));
        let mut creds = IceCreds::new();
        creds.ufrag = INTAKE_UFRAG.to_owned();
        creds.pass = INTAKE_PASS.to_owned();
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds)
            .build(Instant::now());
        if let Ok(c) = Candidate::host(local, "udp") {
            rtc.add_local_candidate(c);
        }
        Self { rtc, local }
    }

    pub fn datagram(&self, src: SocketAddr, data: &[u8]) -> Intake {
        if crate::dtls_trace::is_dtls(data) {
            // Formatted only at debug level in the server; here always.
            let _ = crate::dtls_trace::DtlsRecords(data).to_string();
        }
        let Ok(recv) = Receive::new(Protocol::Udp, src, self.local, data) else {
            return Intake::Malformed;
        };
        if self.rtc.accepts(&Input::Receive(Instant::now(), recv)) {
            return Intake::Peer;
        }
        match media_io::stun_owner(data) {
            Some(w) => Intake::Worker(w),
            None => Intake::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plenary_turn::stun::{attr, method, Class, MessageWriter};

    const SDP: Option<&[u8]> = Some(b"application/sdp");

    #[test]
    fn whip_offer_answers_as_the_http_side_does() {
        let status = |path, ct, body: &[u8], secrets: &[String]| {
            whip_offer(path, None, ct, body, secrets, 0).0
        };
        assert_eq!(status("/whip/a.b", SDP, b"", &[]), StatusCode::BAD_REQUEST);
        assert_eq!(
            status("/whep/r", None, b"", &[]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let secret = vec!["s".to_string()];
        assert_eq!(
            status("/whip/r", SDP, b"", &secret),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status("/whip/r?token=e30.AAAA", SDP, b"", &secret),
            StatusCode::UNAUTHORIZED
        );
        let big = vec![b'a'; crate::MAX_SDP + 1];
        assert_eq!(
            status("/whip/r", SDP, &big, &[]),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let (status, body) = whip_offer("/whip/r", None, SDP, b"v=0\r\nm=nope\r\n", &[], 0);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.starts_with("unparsable SDP offer:"), "{body}");
        assert_eq!(body.matches('\n').count(), 1, "{body}");
    }

    #[test]
    fn room_message_checks_what_the_worker_reads() {
        assert!(room_message(r#"{"type":"join","name":"ada"}"#).is_ok());
        assert!(room_message(r#"{"type":"set_layer","track":"t9","max_layer":1}"#).is_ok());
        let e = room_message(r#"{"type":"set_layer","track":"p9","max_layer":1}"#);
        assert_eq!(e.unwrap_err(), "set_layer: unknown track id");
        let e = room_message(r#"{"type":"publish","sdp":"garbage"}"#).unwrap_err();
        assert!(e.starts_with("publish: unparsable SDP offer"), "{e}");
        assert!(room_message("{").unwrap_err().starts_with("bad message"));
    }

    /// Fuzz crash 670a9790 (sfu_room_message, 2026-12-07), shortened: a JSON error quotes
    /// the client's text, here one that looks like the SDP parser's pointer line. Nothing
    /// of the server's is in it; the fuzz target now only counts what the client did not send.
    #[test]
    fn room_message_errors_quote_only_the_clients_own_text() {
        let frame = r#"{"type": "publisp:9 IN IP4\r\na=extmap:PointerOffsetrams:rtp"}"#;
        let e = room_message(frame).unwrap_err();
        assert!(e.starts_with("bad message: unknown variant"), "{e}");
        assert_eq!(e.matches("PointerOffset").count(), 1, "{e}");
        // Through the SDP path the parser's own pointer lines are dropped, even quoted ones.
        let sdp = r#"{"type":"publish","sdp":"v=0\r\na=PointerOffset(0x1)\r\n"}"#;
        let e = room_message(sdp).unwrap_err();
        assert!(!e.contains("PointerOffset"), "{e}");
    }

    fn ice_check(username: &str, key: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, method::BINDING, Class::Request, &[7; 12])
            .expect("header");
        w.attr(attr::USERNAME, username.as_bytes())
            .expect("username");
        // PRIORITY: str0m refuses a check without it.
        w.u32(0x0024, 0x6e00_1eff).expect("priority");
        w.message_integrity(key).expect("integrity");
        w.fingerprint().expect("fingerprint");
        let n = w.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn media_intake_routes_as_a_worker_does() {
        let intake = MediaIntake::new();
        let src = SocketAddr::from(([198, 51, 100, 7], 5000));
        let ours = ice_check(&format!("{INTAKE_UFRAG}:them"), INTAKE_PASS.as_bytes());
        assert_eq!(intake.datagram(src, &ours), Intake::Peer);
        assert_eq!(
            intake.datagram(src, &ice_check("w3xabc:them", b"k")),
            Intake::Worker(3)
        );
        assert_eq!(
            intake.datagram(src, &ice_check("abc:them", b"k")),
            Intake::Unknown
        );
        // RTP from an address no peer has used: nobody's.
        let rtp = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42, 1];
        assert_eq!(intake.datagram(src, &rtp), Intake::Unknown);
        assert_eq!(intake.datagram(src, &[]), Intake::Malformed);
        assert_eq!(intake.datagram(src, &[100, 1, 2]), Intake::Malformed);
        // A Binding request without USERNAME, PRIORITY and MESSAGE-INTEGRITY is not ICE.
        let mut bare = ice_check("x:y", b"k");
        bare.truncate(20);
        bare[2..4].fill(0);
        assert_eq!(intake.datagram(src, &bare), Intake::Malformed);
    }
}
