//! Amplification: what each request an unauthenticated client can send gets back, in bytes,
//! over real sockets on loopback. A spoofed UDP source turns any answer larger than its
//! request into a reflector, so every answer here is measured against its request.
//!
//! Two answers cannot be as small as their request, whatever the server does: a Binding
//! success must carry XOR-MAPPED-ADDRESS (RFC 8489 §7.3.1), and the 401 to an Allocate
//! without credentials must carry ERROR-CODE, REALM and NONCE (RFC 8489 §9.2.4) that the
//! request did not. For those two the test allows exactly those attributes and nothing
//! more (no SOFTWARE, no reason phrase, FINGERPRINT only if the request had one); every
//! other answer must be no larger than its request.
//!
//! The last test bounds what one unauthenticated source can make plenary turn hold
//! (issue 14, item 5): UDP requests leave no per-source state, and a silent TCP connection
//! costs at most one frame buffer.
//!
//! Relay port ranges used here: k = 48..=49.

mod common;

use common::sfu::Sfu;
use common::stun_client::*;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};
use stun::attributes::*;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use stun::textattrs::TextAttribute;

/// Wire size of attribute `t` in `m` (header and padding), 0 if absent.
fn wire_len(m: &Message, t: AttrType) -> usize {
    m.get(t).map_or(0, |v| 4 + v.len().div_ceil(4) * 4)
}

/// One request/answer pair and the bytes the RFCs oblige the answer to add.
struct Measured {
    case: String,
    request: usize,
    answer: Option<Message>,
    allowance: usize,
}

impl Measured {
    fn answer_len(&self) -> usize {
        self.answer.as_ref().map_or(0, |m| m.raw.len())
    }

    fn row(&self) -> String {
        let code = self.answer.as_ref().and_then(error_code);
        format!(
            "{:<48} request {:>4} B  answer {:>4} B{}  ratio {:.2}",
            self.case,
            self.request,
            self.answer_len(),
            code.map(|c| format!(" ({c})")).unwrap_or_default(),
            self.answer_len() as f64 / self.request as f64
        )
    }
}

fn transact(t: &mut Transport, case: &str, req: &Message) -> Measured {
    let answer = t.transact(req, Duration::from_secs(5));
    assert!(answer.is_some(), "{case}: no answer");
    Measured {
        case: case.to_owned(),
        request: req.raw.len(),
        answer,
        allowance: 0,
    }
}

fn allocate(attrs: Vec<Box<dyn Setter>>) -> Message {
    let mut all: Vec<Box<dyn Setter>> = vec![Box::new(RawAttr(
        ATTR_REQUESTED_TRANSPORT,
        vec![UDP, 0, 0, 0],
    ))];
    all.extend(attrs);
    request(METHOD_ALLOCATE, all)
}

/// Allocate with long-term credentials for `password` and the given nonce.
fn allocate_with(username: &str, password: &str, nonce: &str) -> Message {
    let key = MessageIntegrity::new_long_term_integrity(
        username.to_owned(),
        BARE_REALM.to_owned(),
        password.to_owned(),
    );
    allocate(vec![
        Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
        Box::new(TextAttribute::new(ATTR_REALM, BARE_REALM.to_owned())),
        Box::new(TextAttribute::new(ATTR_NONCE, nonce.to_owned())),
        Box::new(key),
        Box::new(FINGERPRINT),
    ])
}

/// Every unauthenticated TURN request over one transport.
fn turn_cases(mut t: Transport, transport: &str) -> Vec<Measured> {
    let mut rows = Vec::new();
    for (name, fingerprint) in [("bare", false), ("with FINGERPRINT", true)] {
        let attrs: Vec<Box<dyn Setter>> = if fingerprint {
            vec![Box::new(FINGERPRINT)]
        } else {
            vec![]
        };
        let req = request(METHOD_BINDING, attrs);
        let mut m = transact(&mut t, &format!("{transport} Binding, {name}"), &req);
        let a = m.answer.as_ref().expect("answered");
        assert!(is_success(a), "{}: not a success", m.case);
        m.allowance = wire_len(a, ATTR_XORMAPPED_ADDRESS);
        rows.push(m);

        let attrs: Vec<Box<dyn Setter>> = if fingerprint {
            vec![Box::new(FINGERPRINT)]
        } else {
            vec![]
        };
        let mut m = transact(
            &mut t,
            &format!("{transport} Allocate, no credentials, {name}"),
            &allocate(attrs),
        );
        let a = m.answer.as_ref().expect("answered");
        assert_eq!(error_code(a), Some(401), "{}", m.case);
        m.allowance =
            wire_len(a, ATTR_ERROR_CODE) + wire_len(a, ATTR_REALM) + wire_len(a, ATTR_NONCE);
        rows.push(m);
    }
    // A real nonce (from the 401 above), then credentials with the wrong password.
    let challenge = rows.last().and_then(|m| m.answer.as_ref()).expect("401");
    let nonce = text_attr(challenge, ATTR_NONCE).expect("NONCE in the 401");
    let username = format!("{}:amplification", unix_now() + 3600);
    let m = transact(
        &mut t,
        &format!("{transport} Allocate, wrong password"),
        &allocate_with(&username, "not-the-password", &nonce),
    );
    assert_eq!(
        error_code(m.answer.as_ref().unwrap()),
        Some(401),
        "{}",
        m.case
    );
    rows.push(m);
    // The right password with a nonce that expired long ago (valid hex shape, bad tag).
    let password = rest_password(BARE_SECRET, &username);
    let stale = format!("{:08x}{}", 1, "0".repeat(16));
    let m = transact(
        &mut t,
        &format!("{transport} Allocate, stale nonce"),
        &allocate_with(&username, &password, &stale),
    );
    let code = error_code(m.answer.as_ref().unwrap());
    assert!(matches!(code, Some(401 | 438)), "{}: {code:?}", m.case);
    rows.push(m);
    rows
}

fn check(rows: &[Measured]) {
    for r in rows {
        eprintln!("{}", r.row());
    }
    let over: Vec<String> = rows
        .iter()
        .filter(|r| r.answer_len() > r.request + r.allowance)
        .map(|r| format!("{} (allowed {} B)", r.row(), r.request + r.allowance))
        .collect();
    assert!(
        over.is_empty(),
        "answers larger than allowed:\n{}",
        over.join("\n")
    );
}

#[test]
fn unauthenticated_turn_requests_get_no_more_than_they_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ServerSpec::new(bare_conf(dir.path(), ""), 48));
    let mut rows = turn_cases(Transport::udp(server.addr()), "UDP");
    rows.extend(turn_cases(Transport::tcp(server.addr()), "TCP"));
    if server_kind() == ServerKind::Coturn {
        // coturn adds SOFTWARE and reason phrases: report, do not fail.
        for r in rows
            .iter()
            .filter(|r| r.answer_len() > r.request + r.allowance)
        {
            note_difference(&r.row());
        }
        return;
    }
    check(&rows);
}

// ---- the SFU's media port ----

/// The value of `a=<key>:` in an SDP.
fn sdp_attr(sdp: &str, key: &str) -> Option<String> {
    let prefix = format!("a={key}:");
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(str::to_owned)
}

/// An ICE connectivity check as a browser sends it (RFC 8445 §7.1.2).
fn ice_check(username: &str, password: &str) -> Message {
    let mut tie = [0u8; 8];
    tie[7] = 7;
    request(
        METHOD_BINDING,
        vec![
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
            Box::new(RawAttr(
                ATTR_PRIORITY,
                0x6e00_1eff_u32.to_be_bytes().to_vec(),
            )),
            Box::new(RawAttr(ATTR_ICE_CONTROLLING, tie.to_vec())),
            Box::new(MessageIntegrity::new_short_term_integrity(
                password.to_owned(),
            )),
            Box::new(FINGERPRINT),
        ],
    )
}

/// Sends `req` to the media port and waits a second for an answer (None: dropped).
fn send_check(media: SocketAddr, req: &Message) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    sock.send_to(&req.raw, media).expect("send");
    while Instant::now() < deadline {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from == media {
                return parse(&buf[..n]);
            }
        }
    }
    None
}

#[test]
fn sfu_media_port_answers_unauthenticated_ice_checks_with_nothing_larger() {
    let sfu = Sfu::start();
    let http = sfu.base();
    let media = sfu.media_addr();

    // A WHEP viewer whose offer was answered: the SFU now holds an ICE agent with a ufrag.
    let mut rtc = RtcConfig::new().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("offer");
    let offer = offer.to_sdp_string();
    let answer = ureq::post(&format!("{http}/whep/amplification"))
        .set("Content-Type", "application/sdp")
        .send_string(&offer)
        .expect("WHEP POST")
        .into_string()
        .expect("answer body");
    let (ours, pass) = (
        sdp_attr(&answer, "ice-ufrag").expect("ufrag"),
        sdp_attr(&answer, "ice-pwd").expect("pwd"),
    );
    let theirs = sdp_attr(&offer, "ice-ufrag").expect("offer ufrag");

    let cases = [
        ("bare Binding", request(METHOD_BINDING, vec![])),
        (
            "check for an unknown ufrag",
            ice_check(&format!("nobody:{theirs}"), &pass),
        ),
        (
            "check with a wrong password",
            ice_check(&format!("{ours}:{theirs}"), "wrong-password-wrong-pass"),
        ),
    ];
    let mut rows = Vec::new();
    for (case, req) in cases {
        let answer = send_check(media, &req);
        rows.push(Measured {
            case: format!("SFU media port, {case}"),
            request: req.raw.len(),
            answer,
            allowance: 0,
        });
    }
    // The valid check is answered, so the silence above is the SFU's choice, not a wrong
    // port; it is authenticated, yet no larger either.
    let valid = ice_check(&format!("{ours}:{theirs}"), &pass);
    let answer = send_check(media, &valid);
    assert!(
        answer.as_ref().is_some_and(is_success),
        "a valid ICE check got no success"
    );
    rows.push(Measured {
        case: "SFU media port, valid check (authenticated)".into(),
        request: valid.raw.len(),
        answer,
        allowance: 0,
    });
    check(&rows);
}

// ---- memory one unauthenticated source can make plenary turn hold ----

/// Resident set of a process, in bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A request of every kind an unauthenticated source can send over UDP, round-robin.
fn unauthenticated_datagram(i: usize) -> Vec<u8> {
    match i % 5 {
        0 => request(METHOD_BINDING, vec![]).raw,
        1 => allocate(vec![]).raw,
        2 => allocate_with("1:nobody", "wrong", "0000000100000000000000000").raw,
        // ChannelData for a channel nobody bound, and a Send indication without allocation.
        3 => vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4],
        _ => (0..(i % 200) as u8).collect(),
    }
}

/// Per-connection worst case by design (net/stream.rs): the read buffer grows to one
/// frame being assembled at most (20 B header + 65,535 B), and bytes queued for a client
/// that does not read are capped at 256 KiB.
const MAX_FRAME: usize = 20 + 0xffff;

#[test]
fn one_unauthenticated_source_holds_bounded_memory_in_plenary_turn() {
    if server_kind() == ServerKind::Coturn {
        note_difference("memory bounds are plenary's own design figures: test not applicable");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ServerSpec::new(bare_conf(dir.path(), ""), 49));
    let pid = server.pid();
    // Warm up every path once, so first-use allocations are in the baseline.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..1000 {
        udp.send_to(&unauthenticated_datagram(i), server.addr())
            .expect("send");
    }
    assert!(udp_binding(server.addr(), Duration::from_secs(5)).is_some());
    std::thread::sleep(Duration::from_millis(300));
    let base = rss(pid);

    // 1. 100,000 unauthenticated datagrams from one address (25 source ports): stateless
    //    nonces and a global 401 limit mean none of it may stay.
    let socks: Vec<UdpSocket> = (0..25)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    for i in 0..100_000 {
        let _ = socks[i % socks.len()].send_to(&unauthenticated_datagram(i), server.addr());
        if i % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(udp_binding(server.addr(), Duration::from_secs(5)).is_some());
    std::thread::sleep(Duration::from_millis(300));
    let after_udp = rss(pid);

    // 2. TCP connections that each hold the largest frame half-sent: the most a stream can
    //    make the server buffer while it stays silent.
    const CONNS: usize = 64;
    let mut conns = Vec::with_capacity(CONNS);
    let mut partial = request(METHOD_BINDING, vec![]).raw;
    partial[2] = 0xff;
    partial[3] = 0xfc;
    partial.resize(MAX_FRAME - 1000, 0);
    for _ in 0..CONNS {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(server.addr()).expect("tcp connect");
        s.write_all(&partial).expect("partial frame");
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        udp_binding(server.addr(), Duration::from_secs(5)).is_some(),
        "server unresponsive while holding the connections"
    );
    let after_tcp = rss(pid);
    drop(conns);

    let mib = |b: usize| b as f64 / 1048576.0;
    eprintln!(
        "RSS: baseline {:.1} MiB, after 100,000 datagrams {:.1} MiB, with {CONNS} half-sent \
         max frames {:.1} MiB ({:.0} KiB per connection)",
        mib(base),
        mib(after_udp),
        mib(after_tcp),
        after_tcp.saturating_sub(after_udp) as f64 / 1024.0 / CONNS as f64
    );
    // Allocator and socket noise, not state: a per-source table for 100,000 requests
    // would show as several MiB.
    let slack = 2 << 20;
    assert!(
        after_udp <= base + slack,
        "100,000 unauthenticated datagrams left {:.1} MiB behind",
        mib(after_udp.saturating_sub(base))
    );
    // One frame buffer each, plus the connection's task and socket bookkeeping.
    let per_conn = MAX_FRAME + 32 * 1024;
    assert!(
        after_tcp <= after_udp + CONNS * per_conn + slack,
        "{CONNS} half-sent frames hold {:.1} MiB; bound {:.1} MiB",
        mib(after_tcp.saturating_sub(after_udp)),
        mib(CONNS * per_conn + slack)
    );
}
