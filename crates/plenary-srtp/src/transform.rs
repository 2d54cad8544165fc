//! The per-packet cryptographic transforms, in place, on aws-lc-rs:
//! AES-CM + HMAC-SHA1-80 (RFC 3711 §4.1.1, §4.2.1) and AEAD AES-GCM (RFC 7714 §8, §9).
//!
//! Layout conventions: `buf[..len]` is the plain packet, and `buf` has room for the
//! profile's overhead after it. Nothing here allocates.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

use crate::kdf::{derive, Label};
use crate::keys::{MasterKey, SrtpProfile};
use crate::Error;

const GCM_TAG: usize = 16;
const HMAC_TAG: usize = 10;
/// The E flag of the SRTCP index word: the packet is encrypted.
const E_FLAG: u32 = 0x8000_0000;

/// Session keys of one direction for either RTP or RTCP.
pub(crate) enum Transform {
    Gcm {
        key: LessSafeKey,
        salt: [u8; 12],
    },
    CmHmac {
        // AES-CTR is its own inverse, so one encrypting key serves both directions.
        // Boxed: the HMAC key holds two digest states, over 1.5 kB.
        ctr: Box<EncryptingKey>,
        auth: Box<hmac::Key>,
        salt: [u8; 14],
    },
}

impl fmt::Debug for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transform::Gcm { .. } => "Transform::Gcm",
            Transform::CmHmac { .. } => "Transform::CmHmac",
        })
    }
}

impl Transform {
    /// Derives the session keys for RTP (`rtcp == false`) or RTCP from a master key.
    pub(crate) fn new(master: &MasterKey, rtcp: bool) -> Result<Self, Error> {
        let (enc_label, auth_label, salt_label) = if rtcp {
            (Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt)
        } else {
            (Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt)
        };
        let profile = master.profile();
        let mut enc = [0u8; 32];
        let enc = &mut enc[..profile.key_len()];
        derive(master, enc_label, enc)?;
        match profile {
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                let mut salt = [0u8; 12];
                derive(master, salt_label, &mut salt)?;
                Self::gcm(profile, enc, &salt)
            }
            SrtpProfile::Aes128CmHmacSha1_80 => {
                let mut salt = [0u8; 14];
                derive(master, salt_label, &mut salt)?;
                let mut auth = [0u8; 20];
                derive(master, auth_label, &mut auth)?;
                Self::cm_hmac(enc, &auth, &salt)
            }
        }
    }

    /// From session keys directly (the RFC 7714 vectors are given that way).
    pub(crate) fn gcm(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<Self, Error> {
        let algorithm = match profile {
            SrtpProfile::AeadAes128Gcm => &AES_128_GCM,
            SrtpProfile::AeadAes256Gcm => &AES_256_GCM,
            SrtpProfile::Aes128CmHmacSha1_80 => return Err(Error::KeyLength),
        };
        let key = UnboundKey::new(algorithm, key).map_err(|_| Error::KeyLength)?;
        Ok(Transform::Gcm {
            key: LessSafeKey::new(key),
            salt: salt.try_into().map_err(|_| Error::KeyLength)?,
        })
    }

    pub(crate) fn cm_hmac(key: &[u8], auth: &[u8], salt: &[u8]) -> Result<Self, Error> {
        let key = UnboundCipherKey::new(&AES_128, key).map_err(|_| Error::KeyLength)?;
        Ok(Transform::CmHmac {
            ctr: Box::new(EncryptingKey::ctr(key).map_err(|_| Error::KeyLength)?),
            auth: Box::new(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth)),
            salt: salt.try_into().map_err(|_| Error::KeyLength)?,
        })
    }

    /// Encrypts the payload `buf[header_len..len]` and appends the tag. Returns the new length.
    pub(crate) fn seal_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, Error> {
        match self {
            Transform::Gcm { key, salt } => {
                let end = len + GCM_TAG;
                if buf.len() < end {
                    return Err(Error::BufferTooSmall);
                }
                let nonce = gcm_rtp_iv(salt, ssrc, index);
                let (header, rest) = buf.split_at_mut(header_len);
                let (payload, tail) = rest.split_at_mut(len - header_len);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&*header),
                        payload,
                    )
                    .map_err(|_| Error::Crypto)?;
                tail[..GCM_TAG].copy_from_slice(tag.as_ref());
                Ok(end)
            }
            Transform::CmHmac { ctr, auth, salt } => {
                let end = len + HMAC_TAG;
                if buf.len() < end {
                    return Err(Error::BufferTooSmall);
                }
                let iv = cm_iv(salt, ssrc, index);
                ctr.less_safe_encrypt(&mut buf[header_len..len], iv128(iv))
                    .map_err(|_| Error::Crypto)?;
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = hmac_sha1(auth, &buf[..len], &roc);
                buf[len..end].copy_from_slice(&tag.as_ref()[..HMAC_TAG]);
                Ok(end)
            }
        }
    }

    /// Authenticates and decrypts `buf[..len]` in place. Returns the plain length.
    pub(crate) fn open_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, Error> {
        match self {
            Transform::Gcm { key, salt } => {
                if len < header_len + GCM_TAG {
                    return Err(Error::Malformed);
                }
                let nonce = gcm_rtp_iv(salt, ssrc, index);
                let (header, rest) = buf[..len].split_at_mut(header_len);
                let plain = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&*header),
                        rest,
                    )
                    .map_err(|_| Error::AuthFailed)?;
                Ok(header_len + plain.len())
            }
            Transform::CmHmac { ctr, auth, salt } => {
                if len < header_len + HMAC_TAG {
                    return Err(Error::Malformed);
                }
                let end = len - HMAC_TAG;
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = hmac_sha1(auth, &buf[..end], &roc);
                verify_slices_are_equal(&tag.as_ref()[..HMAC_TAG], &buf[end..len])
                    .map_err(|_| Error::AuthFailed)?;
                let iv = cm_iv(salt, ssrc, index);
                ctr.less_safe_encrypt(&mut buf[header_len..end], iv128(iv))
                    .map_err(|_| Error::Crypto)?;
                Ok(end)
            }
        }
    }

    /// Encrypts the RTCP packet `buf[..len]` past its first 8 bytes and appends the
    /// SRTCP trailer for `index`. Returns the new length.
    pub(crate) fn seal_rtcp(&self, buf: &mut [u8], len: usize, index: u32) -> Result<usize, Error> {
        if len < 8 {
            return Err(Error::Malformed);
        }
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let word = (E_FLAG | index).to_be_bytes();
        match self {
            Transform::Gcm { key, salt } => {
                let end = len + GCM_TAG + 4;
                if buf.len() < end {
                    return Err(Error::BufferTooSmall);
                }
                let nonce = gcm_rtcp_iv(salt, ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&word);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad),
                        &mut buf[8..len],
                    )
                    .map_err(|_| Error::Crypto)?;
                buf[len..len + GCM_TAG].copy_from_slice(tag.as_ref());
                buf[len + GCM_TAG..end].copy_from_slice(&word);
                Ok(end)
            }
            Transform::CmHmac { ctr, auth, salt } => {
                let end = len + 4 + HMAC_TAG;
                if buf.len() < end {
                    return Err(Error::BufferTooSmall);
                }
                let iv = cm_iv(salt, ssrc, u64::from(index));
                ctr.less_safe_encrypt(&mut buf[8..len], iv128(iv))
                    .map_err(|_| Error::Crypto)?;
                buf[len..len + 4].copy_from_slice(&word);
                let tag = hmac_sha1(auth, &buf[..len + 4], &[]);
                buf[len + 4..end].copy_from_slice(&tag.as_ref()[..HMAC_TAG]);
                Ok(end)
            }
        }
    }

    /// Reads the SRTCP index word of `buf[..len]`: (sender SSRC, index, encrypted).
    pub(crate) fn rtcp_index(&self, buf: &[u8], len: usize) -> Result<(u32, u32, bool), Error> {
        let tag = match self {
            Transform::Gcm { .. } => GCM_TAG,
            Transform::CmHmac { .. } => HMAC_TAG,
        };
        if len < 8 + 4 + tag || buf.len() < len {
            return Err(Error::Malformed);
        }
        let at = match self {
            Transform::Gcm { .. } => len - 4,
            Transform::CmHmac { .. } => len - 4 - HMAC_TAG,
        };
        let word = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        Ok((ssrc, word & !E_FLAG, word & E_FLAG != 0))
    }

    /// Authenticates and decrypts the SRTCP packet `buf[..len]` in place. Returns the
    /// plain length.
    pub(crate) fn open_rtcp(&self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let (ssrc, index, encrypted) = self.rtcp_index(buf, len)?;
        match self {
            Transform::Gcm { key, salt } => {
                let plain_end = len - GCM_TAG - 4;
                let nonce = Nonce::assume_unique_for_key(gcm_rtcp_iv(salt, ssrc, index));
                if encrypted {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&buf[len - 4..len]);
                    key.open_in_place(nonce, Aad::from(&aad), &mut buf[8..len - 4])
                        .map_err(|_| Error::AuthFailed)?;
                } else {
                    // Unencrypted (RFC 7714 §9.2 with E = 0): the whole packet and the index
                    // word are the AAD. Moving the word in front of the tag makes it one slice.
                    buf[plain_end..len].rotate_right(4);
                    let (aad, tag) = buf[..len].split_at_mut(plain_end + 4);
                    key.open_in_place(nonce, Aad::from(&*aad), tag)
                        .map_err(|_| Error::AuthFailed)?;
                }
                Ok(plain_end)
            }
            Transform::CmHmac { ctr, auth, salt } => {
                let tag_at = len - HMAC_TAG;
                let tag = hmac_sha1(auth, &buf[..tag_at], &[]);
                verify_slices_are_equal(&tag.as_ref()[..HMAC_TAG], &buf[tag_at..len])
                    .map_err(|_| Error::AuthFailed)?;
                let plain_end = tag_at - 4;
                if encrypted {
                    let iv = cm_iv(salt, ssrc, u64::from(index));
                    ctr.less_safe_encrypt(&mut buf[8..plain_end], iv128(iv))
                        .map_err(|_| Error::Crypto)?;
                }
                Ok(plain_end)
            }
        }
    }
}

fn iv128(iv: [u8; 16]) -> EncryptionContext {
    EncryptionContext::Iv128(FixedLength::from(iv))
}

fn hmac_sha1(key: &hmac::Key, a: &[u8], b: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(a);
    ctx.update(b);
    ctx.sign()
}

/// AES-CM IV (RFC 3711 §4.1.1): (salt·2^16) XOR (SSRC·2^64) XOR (index·2^16).
pub(crate) fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

/// RTP AEAD IV (RFC 7714 §8.1): (00 00 | SSRC | ROC | SEQ) XOR salt.
pub(crate) fn gcm_rtp_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// RTCP AEAD IV (RFC 7714 §9.1): (00 00 | SSRC | 00 00 | 0 | index) XOR salt.
pub(crate) fn gcm_rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&(index & !E_FLAG).to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    const KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
    const KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const SALT: &str = "517569642070726f2071756f";
    /// RFC 7714 §16: "Gallia est omnis divisa in partes tres", SSRC 0x5501a0b2, seq 0xf17b.
    const RTP: &str = "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e6973206469766973612069\
                       6e20706172746573207472 6573";
    /// RFC 7714 §16.1.1.
    const SRTP_128: &str =
        "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f\
                            42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce";
    /// RFC 7714 §16.2.1.
    const SRTP_256: &str =
        "8040f17b8041f8d35501a0b232b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3\
                            b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13";
    /// RFC 7714 §17: sender SSRC "Mars", SRTCP index 0x5d4.
    const RTCP: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61\
                        deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
    /// RFC 7714 §17.1.
    const SRTCP_128: &str = "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32d\
                             c676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf872\
                             45d9eade800005d4";
    /// RFC 7714 §17.3: authenticated, not encrypted (E = 0).
    const SRTCP_128_CLEAR: &str =
        "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61\
                                   deadbeefdeadbeefdeadbeefdeadbeefdeadbeef841dd9683dd78ec92ae58790\
                                   125f62b3000005d4";

    fn gcm(profile: SrtpProfile, key: &str) -> Transform {
        Transform::gcm(profile, &hex(key), &hex(SALT)).unwrap()
    }

    fn rtp_roundtrip(t: &Transform, expected: &str) {
        let plain = hex(RTP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 16, 0);
        let n = t
            .seal_rtp(&mut buf, 12, plain.len(), 0x5501a0b2, 0xf17b)
            .unwrap();
        assert_eq!(buf[..n].to_vec(), hex(expected));
        let n = t.open_rtp(&mut buf, 12, n, 0x5501a0b2, 0xf17b).unwrap();
        assert_eq!(buf[..n].to_vec(), plain);
    }

    #[test]
    fn rfc7714_rtp_aes_128_gcm() {
        assert_eq!(
            gcm_rtp_iv(&hex(SALT).try_into().unwrap(), 0x5501a0b2, 0xf17b).to_vec(),
            hex("51753c6580c2726f20718414")
        );
        rtp_roundtrip(&gcm(SrtpProfile::AeadAes128Gcm, KEY_128), SRTP_128);
    }

    #[test]
    fn rfc7714_rtp_aes_256_gcm() {
        rtp_roundtrip(&gcm(SrtpProfile::AeadAes256Gcm, KEY_256), SRTP_256);
    }

    #[test]
    fn rfc7714_rtcp_aes_128_gcm() {
        let t = gcm(SrtpProfile::AeadAes128Gcm, KEY_128);
        let plain = hex(RTCP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 20, 0);
        let n = t.seal_rtcp(&mut buf, plain.len(), 0x5d4).unwrap();
        assert_eq!(buf[..n].to_vec(), hex(SRTCP_128));
        let n = t.open_rtcp(&mut buf, n).unwrap();
        assert_eq!(buf[..n].to_vec(), plain);

        let mut clear = hex(SRTCP_128_CLEAR);
        let len = clear.len();
        let n = t.open_rtcp(&mut clear, len).unwrap();
        assert_eq!(clear[..n].to_vec(), plain);
    }

    #[test]
    fn tampering_fails_authentication() {
        let t = gcm(SrtpProfile::AeadAes128Gcm, KEY_128);
        let mut buf = hex(SRTP_128);
        buf[20] ^= 1;
        let n = buf.len();
        assert!(matches!(
            t.open_rtp(&mut buf, 12, n, 0x5501a0b2, 0xf17b),
            Err(Error::AuthFailed)
        ));
        // The right bytes under the wrong ROC fail too: the ROC is in the IV.
        let mut buf = hex(SRTP_128);
        assert!(t.open_rtp(&mut buf, 12, n, 0x5501a0b2, 0x1_f17b).is_err());
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream for SSRC 0, index 0.
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let t = Transform::cm_hmac(
            &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
            &[0; 20],
            &hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
        )
        .unwrap();
        let mut buf = [0u8; 12 + 48 + 10];
        buf[0] = 0x80;
        t.seal_rtp(&mut buf, 12, 60, 0, 0).unwrap();
        assert_eq!(
            buf[12..60].to_vec(),
            hex(
                "E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB\
                 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
    }

    #[test]
    fn cm_hmac_rtp_and_rtcp_roundtrip() {
        let t = Transform::cm_hmac(&[7; 16], &[9; 20], &[3; 14]).unwrap();
        let plain = hex(RTP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 10, 0);
        let n = t
            .seal_rtp(&mut buf, 12, plain.len(), 0x5501a0b2, 0x2_0001)
            .unwrap();
        assert_eq!(n, plain.len() + 10);
        assert_ne!(buf[12..plain.len()], plain[12..]);
        let n = t.open_rtp(&mut buf, 12, n, 0x5501a0b2, 0x2_0001).unwrap();
        assert_eq!(buf[..n].to_vec(), plain);

        let plain = hex(RTCP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 14, 0);
        let n = t.seal_rtcp(&mut buf, plain.len(), 77).unwrap();
        assert_eq!(t.rtcp_index(&buf, n).unwrap(), (0x4d617273, 77, true));
        let mut bad = buf.clone();
        bad[n - 1] ^= 1;
        assert!(matches!(t.open_rtcp(&mut bad, n), Err(Error::AuthFailed)));
        let n = t.open_rtcp(&mut buf, n).unwrap();
        assert_eq!(buf[..n].to_vec(), plain);
    }
}
