//! RFC 5769 test vectors (STUN sample messages), shared by the codec's unit tests.
//! Padding bytes are as printed in the RFC (0x20 in some vectors: padding may be anything).

/// Short-term password of §2.1-2.3.
pub const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

/// Transaction id of §2.1-2.3.
pub const TXID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// §2.1 Sample Request: Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME
/// "evtj:h6vY", MESSAGE-INTEGRITY and FINGERPRINT.
pub const SAMPLE_REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// §2.2 Sample IPv4 Response: XOR-MAPPED-ADDRESS 192.0.2.1:32853.
pub const IPV4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";
pub const IPV4_MAPPED: &str = "192.0.2.1:32853";

/// §2.3 Sample IPv6 Response.
pub const IPV6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";
pub const IPV6_MAPPED: &str = "[2001:db8:1234:5678:11:2233:4455:6677]:32853";

/// §2.4 Sample Request with Long-Term Authentication: USERNAME, NONCE, REALM and
/// MESSAGE-INTEGRITY, no FINGERPRINT.
pub const LONG_TERM_REQUEST: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";
pub const LONG_TERM_TXID: [u8; 12] = [
    0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
];
pub const LONG_TERM_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// SASLprep of "The<U+00AD>M<U+00AA>tr<U+2168>".
pub const LONG_TERM_PASSWORD: &str = "TheMatrIX";
pub const LONG_TERM_REALM: &str = "example.org";
pub const LONG_TERM_NONCE: &str = "f//499k954d6OL34oL9FSTvy64sA";

/// Hex as the RFC prints it (whitespace ignored) to bytes.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| (b as char).to_digit(16).expect("hex digit") as u8)
        .collect();
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

/// Every vector, with the key its MESSAGE-INTEGRITY was made with.
pub fn all() -> Vec<(Vec<u8>, Vec<u8>)> {
    let long_term =
        super::integrity::long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD);
    vec![
        (hex(SAMPLE_REQUEST), SHORT_TERM_PASSWORD.to_vec()),
        (hex(IPV4_RESPONSE), SHORT_TERM_PASSWORD.to_vec()),
        (hex(IPV6_RESPONSE), SHORT_TERM_PASSWORD.to_vec()),
        (hex(LONG_TERM_REQUEST), long_term.to_vec()),
    ]
}

/// Deterministic xorshift bytes, for mutation tests without a `rand` dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
