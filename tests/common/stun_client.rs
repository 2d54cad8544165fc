//! A small blocking STUN/TURN client built on the webrtc-rs `stun` crate, independent of
//! plenary's own codec, so the tests do not share a bug with the server.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use stun::attributes::*;
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;

pub use stun::message::{Message, Method};

pub const UDP: u8 = 17;
pub const FAMILY_V4: u8 = 0x01;
pub const FAMILY_V6: u8 = 0x02;

/// Any attribute, as raw bytes.
pub struct RawAttr(pub AttrType, pub Vec<u8>);

impl Setter for RawAttr {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

/// XOR-PEER-ADDRESS (or any XOR address attribute) for exactly this IP, v4 or v6 as given.
pub struct XorAddr(pub AttrType, pub SocketAddr);

impl Setter for XorAddr {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        XorMappedAddress {
            ip: self.1.ip(),
            port: self.1.port(),
        }
        .add_to_as(m, self.0)
    }
}

pub fn request(method: Method, attrs: Vec<Box<dyn Setter>>) -> Message {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(stun::agent::TransactionId::new()),
        Box::new(MessageType::new(method, CLASS_REQUEST)),
    ];
    setters.extend(attrs);
    let mut m = Message::new();
    m.build(&setters).expect("build request");
    m
}

pub fn parse(bytes: &[u8]) -> Option<Message> {
    let mut m = Message::new();
    m.unmarshal_binary(bytes).ok()?;
    Some(m)
}

pub fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok()?;
    Some(e.code.0)
}

pub fn error_reason(m: &Message) -> String {
    let mut e = ErrorCodeAttribute::default();
    match e.get_from(m) {
        Ok(()) => String::from_utf8_lossy(&e.reason).into_owned(),
        Err(_) => String::new(),
    }
}

pub fn text_attr(m: &Message, t: AttrType) -> Option<String> {
    TextAttribute::get_from_as(m, t).ok().map(|a| a.text)
}

pub fn xor_addr(m: &Message, t: AttrType) -> Option<SocketAddr> {
    let mut a = XorMappedAddress::default();
    a.get_from_as(m, t).ok()?;
    Some(SocketAddr::new(a.ip, a.port))
}

pub fn is_success(m: &Message) -> bool {
    m.typ.class == CLASS_SUCCESS_RESPONSE
}

pub fn is_error(m: &Message) -> bool {
    m.typ.class == CLASS_ERROR_RESPONSE
}

/// One-shot Binding over UDP; the XOR-MAPPED-ADDRESS on success.
pub fn udp_binding(server: SocketAddr, timeout: Duration) -> Option<SocketAddr> {
    let mut t = Transport::udp(server);
    let m = t.transact(&request(METHOD_BINDING, vec![]), timeout)?;
    if !is_success(&m) {
        return None;
    }
    xor_addr(&m, ATTR_XORMAPPED_ADDRESS)
}

/// Anything that carries bytes: a TCP or TLS stream (with a read timeout set).
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One frame from the server: a STUN message or a ChannelData message.
pub enum Frame {
    Stun(Message),
    ChannelData(u16, Vec<u8>),
    Other(Vec<u8>),
}

/// UDP datagrams, or a byte stream framed as RFC 8656 section 11.4 says.
pub enum Transport {
    Udp {
        sock: UdpSocket,
        server: SocketAddr,
    },
    Stream {
        stream: Box<dyn Stream>,
        buf: Vec<u8>,
    },
}

impl Transport {
    pub fn udp(server: SocketAddr) -> Transport {
        let local: IpAddr = match server {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        let sock = UdpSocket::bind((local, 0)).expect("bind client socket");
        Transport::Udp { sock, server }
    }

    pub fn tcp(server: SocketAddr) -> Transport {
        let s = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("tcp connect");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        Transport::stream(Box::new(s))
    }

    /// The stream must already have a short read timeout.
    pub fn stream(stream: Box<dyn Stream>) -> Transport {
        Transport::Stream {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Transport::Udp { sock, .. } => sock.local_addr().ok(),
            Transport::Stream { .. } => None,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        match self {
            Transport::Udp { sock, server } => {
                sock.send_to(bytes, *server).expect("udp send");
            }
            Transport::Stream { stream, .. } => {
                stream.write_all(bytes).expect("stream write");
                stream.flush().expect("flush");
            }
        }
    }

    /// The next frame, or None at the deadline (or when the stream closed).
    pub fn recv_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        match self {
            Transport::Udp { sock, server } => {
                let mut buf = vec![0u8; 65536];
                loop {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                        .expect("timeout");
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) if from == *server => return Some(classify(&buf[..n])),
                        Ok(_) => continue,
                        Err(e) if is_timeout(&e) => return None,
                        Err(_) => return None,
                    }
                }
            }
            Transport::Stream { stream, buf } => loop {
                if let Some(len) = stream_frame_len(buf) {
                    if buf.len() >= len {
                        let frame: Vec<u8> = buf.drain(..len).collect();
                        return Some(classify(&frame));
                    }
                }
                if Instant::now() > deadline {
                    return None;
                }
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if is_timeout(&e) => continue,
                    Err(_) => return None,
                }
            },
        }
    }

    /// Sends a request and waits for the response with the same transaction ID, resending
    /// over UDP every 500 ms until the deadline.
    pub fn transact(&mut self, req: &Message, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let is_udp = matches!(self, Transport::Udp { .. });
        self.send_raw(&req.raw);
        let mut next_resend = Instant::now() + Duration::from_millis(500);
        loop {
            let now = Instant::now();
            if now > deadline {
                return None;
            }
            let wait = deadline.min(next_resend).saturating_duration_since(now);
            match self.recv_frame(wait.max(Duration::from_millis(1))) {
                Some(Frame::Stun(m)) if m.transaction_id == req.transaction_id => return Some(m),
                Some(_) => {}
                None => {
                    if is_udp && Instant::now() >= next_resend {
                        self.send_raw(&req.raw);
                        next_resend = Instant::now() + Duration::from_millis(500);
                    }
                }
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Length of the frame at the start of a stream buffer, once its header is there.
fn stream_frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if buf[0] & 0xC0 == 0x40 {
        // ChannelData over a stream is padded to 4 bytes.
        Some(4 + len.div_ceil(4) * 4)
    } else {
        Some(20 + len)
    }
}

fn classify(bytes: &[u8]) -> Frame {
    if bytes.len() >= 4 && bytes[0] & 0xC0 == 0x40 {
        let ch = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let end = (4 + len).min(bytes.len());
        return Frame::ChannelData(ch, bytes[4..end].to_vec());
    }
    match parse(bytes) {
        Some(m) => Frame::Stun(m),
        None => Frame::Other(bytes.to_vec()),
    }
}

/// A TURN client session with long-term credentials (learns REALM and NONCE from the 401).
pub struct TurnClient {
    pub t: Transport,
    pub username: String,
    pub password: String,
    pub realm: String,
    pub nonce: Vec<u8>,
    pub timeout: Duration,
    /// The last response, for diagnostics.
    pub last: Option<Message>,
}

impl TurnClient {
    pub fn new(t: Transport, username: &str, password: &str) -> TurnClient {
        TurnClient {
            t,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: String::new(),
            nonce: Vec::new(),
            timeout: Duration::from_secs(5),
            last: None,
        }
    }

    fn build(&self, method: Method, attrs: &dyn Fn() -> Vec<Box<dyn Setter>>) -> Message {
        let mut setters = attrs();
        if !self.nonce.is_empty() {
            setters.push(Box::new(TextAttribute::new(
                ATTR_USERNAME,
                self.username.clone(),
            )));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
            setters.push(Box::new(RawAttr(ATTR_NONCE, self.nonce.clone())));
            setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
                self.username.clone(),
                self.realm.clone(),
                self.password.clone(),
            )));
        }
        setters.push(Box::new(FINGERPRINT));
        request(method, setters)
    }

    /// Sends an authenticated request, answering one 401 or 438 challenge; panics on silence.
    pub fn call(&mut self, method: Method, attrs: &dyn Fn() -> Vec<Box<dyn Setter>>) -> Message {
        for _ in 0..3 {
            let req = self.build(method, attrs);
            let resp = self
                .t
                .transact(&req, self.timeout)
                .unwrap_or_else(|| panic!("no response to {method} within {:?}", self.timeout));
            self.last = Some(resp.clone());
            let code = error_code(&resp);
            let had_nonce = !self.nonce.is_empty();
            let retry = match code {
                Some(401) => !had_nonce,
                Some(438) => true,
                _ => false,
            };
            if retry {
                if let Some(realm) = text_attr(&resp, ATTR_REALM) {
                    self.realm = realm;
                }
                if let Ok(nonce) = resp.get(ATTR_NONCE) {
                    self.nonce = nonce;
                }
                if !self.nonce.is_empty() {
                    continue;
                }
            }
            if is_success(&resp) {
                self.check_integrity(&resp);
            }
            return resp;
        }
        self.last.clone().expect("a response")
    }

    /// Success responses to authenticated requests carry a valid MESSAGE-INTEGRITY.
    fn check_integrity(&self, resp: &Message) {
        let mut m = resp.clone();
        let mi = MessageIntegrity::new_long_term_integrity(
            self.username.clone(),
            self.realm.clone(),
            self.password.clone(),
        );
        mi.check(&mut m)
            .unwrap_or_else(|e| panic!("success response has a bad MESSAGE-INTEGRITY: {e}"));
    }

    /// Allocate (UDP relay); the relayed address, or the error code.
    pub fn allocate(&mut self, family: Option<u8>) -> Result<SocketAddr, u16> {
        let resp = self.call(METHOD_ALLOCATE, &|| {
            let mut v: Vec<Box<dyn Setter>> = vec![Box::new(RawAttr(
                ATTR_REQUESTED_TRANSPORT,
                vec![UDP, 0, 0, 0],
            ))];
            if let Some(f) = family {
                v.push(Box::new(RawAttr(
                    ATTR_REQUESTED_ADDRESS_FAMILY,
                    vec![f, 0, 0, 0],
                )));
            }
            v
        });
        outcome(&resp).map(|()| {
            xor_addr(&resp, ATTR_XOR_RELAYED_ADDRESS).expect("XOR-RELAYED-ADDRESS in success")
        })
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<(), u16> {
        let resp = self.call(METHOD_CREATE_PERMISSION, &|| {
            vec![Box::new(XorAddr(ATTR_XOR_PEER_ADDRESS, peer))]
        });
        outcome(&resp)
    }

    /// Refresh; the granted LIFETIME on success.
    pub fn refresh(&mut self, lifetime: u32) -> Result<u32, u16> {
        let resp = self.call(METHOD_REFRESH, &|| {
            vec![Box::new(RawAttr(
                ATTR_LIFETIME,
                lifetime.to_be_bytes().to_vec(),
            ))]
        });
        outcome(&resp)?;
        let v = resp.get(ATTR_LIFETIME).unwrap_or_default();
        Ok(v.get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0))
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), u16> {
        let resp = self.call(METHOD_CHANNEL_BIND, &|| {
            vec![
                Box::new(RawAttr(
                    ATTR_CHANNEL_NUMBER,
                    vec![(channel >> 8) as u8, channel as u8, 0, 0],
                )),
                Box::new(XorAddr(ATTR_XOR_PEER_ADDRESS, peer)),
            ]
        });
        outcome(&resp)
    }

    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(stun::agent::TransactionId::new()),
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(XorAddr(ATTR_XOR_PEER_ADDRESS, peer)),
            Box::new(RawAttr(ATTR_DATA, data.to_vec())),
            Box::new(FINGERPRINT),
        ];
        m.build(&setters).expect("build indication");
        self.t.send_raw(&m.raw);
    }

    /// The next relayed payload (Data indication or ChannelData), skipping anything else.
    pub fn recv_data(&mut self, timeout: Duration) -> Option<(Option<SocketAddr>, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.t.recv_frame(left)? {
                Frame::ChannelData(_, data) => return Some((None, data)),
                Frame::Stun(m) if m.typ == MessageType::new(METHOD_DATA, CLASS_INDICATION) => {
                    let from = xor_addr(&m, ATTR_XOR_PEER_ADDRESS);
                    let data = m.get(ATTR_DATA).ok()?;
                    return Some((from, data));
                }
                _ => {}
            }
        }
    }
}

/// Ok for a success response, the error code otherwise (0 when an error has no code).
pub fn outcome(resp: &Message) -> Result<(), u16> {
    if is_success(resp) {
        Ok(())
    } else {
        Err(error_code(resp).unwrap_or(0))
    }
}
