//! A one-line description of the DTLS records in a datagram, for handshake traces at debug
//! level (`plenary_sfu::dtls=debug`). Formatting happens only when the line is logged.

use std::fmt;

/// RFC 7983 demultiplexing: DTLS records start with a byte in 20..=63.
pub fn is_dtls(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (20..=63).contains(b))
}

/// Displays each record as `type/epoch/len`, with the handshake message type when readable.
pub struct DtlsRecords<'a>(pub &'a [u8]);

impl fmt::Display for DtlsRecords<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        while let Some(&b0) = rest.first() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            if b0 & 0xe0 == 0x20 {
                // DTLS 1.3 unified header (RFC 9147 §4): encrypted, epoch in the low bits.
                write!(f, "enc13/e{}/{}B", b0 & 0x03, rest.len())?;
                return Ok(());
            }
            // DTLS 1.2 / 1.3 plaintext header: type, version, epoch, seq(6), length.
            if rest.len() < 13 {
                return write!(f, "short({}B)", rest.len());
            }
            let epoch = u16::from_be_bytes([rest[3], rest[4]]);
            let seq =
                u64::from_be_bytes([0, 0, rest[5], rest[6], rest[7], rest[8], rest[9], rest[10]]);
            let len = u16::from_be_bytes([rest[11], rest[12]]) as usize;
            let name = match b0 {
                20 => "ccs",
                21 => "alert",
                22 => "hs",
                23 => "app",
                25 => "ack",
                _ => "?",
            };
            write!(f, "{name}/e{epoch}/s{seq}/{len}B")?;
            if b0 == 22 && epoch == 0 {
                if let Some(t) = rest.get(13) {
                    write!(f, "/t{t}")?;
                }
            }
            rest = rest.get(13 + len..).unwrap_or(&[]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::DtlsRecords;

    #[test]
    fn names_records_and_handshake_types() {
        // A ClientHello record (type 1) followed by a CCS at epoch 1.
        let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 7, 0, 2, 1, 0];
        d.extend_from_slice(&[20, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(DtlsRecords(&d).to_string(), "hs/e0/s7/2B/t1 ccs/e1/s0/1B");
        assert_eq!(DtlsRecords(&[0x2c, 1, 2]).to_string(), "enc13/e0/3B");
        assert_eq!(DtlsRecords(&[22, 1]).to_string(), "short(2B)");
    }
}
