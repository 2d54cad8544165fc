//! Session key derivation (RFC 3711 §4.3, key derivation rate 0), also used by the AEAD
//! profiles (RFC 7714 §11).

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::iv::FixedLength;

use crate::keys::MasterKey;
use crate::Error;

/// The labels of RFC 3711 §4.3.1 / §4.3.2.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub(crate) enum Label {
    RtpEncryption = 0x00,
    RtpAuth = 0x01,
    RtpSalt = 0x02,
    RtcpEncryption = 0x03,
    RtcpAuth = 0x04,
    RtcpSalt = 0x05,
}

/// Fills `out` with the AES-CM PRF keystream for `label`: x = label·2^48 XOR master salt,
/// keystream from IV x·2^16 under the master key. With a derivation rate of 0 the index
/// term is zero. A 12-byte (AEAD) master salt sits in the top 96 bits of the 112-bit field.
pub(crate) fn derive(master: &MasterKey, label: Label, out: &mut [u8]) -> Result<(), Error> {
    let algorithm = if master.key().len() == 32 {
        &AES_256
    } else {
        &AES_128
    };
    let key = UnboundCipherKey::new(algorithm, master.key()).map_err(|_| Error::KeyLength)?;
    let ctr = EncryptingKey::ctr(key).map_err(|_| Error::KeyLength)?;
    let mut iv = [0u8; 16];
    iv[..master.salt().len()].copy_from_slice(master.salt());
    // The 56-bit key_id (label, then the 48-bit index DIV rate) is right-aligned in the
    // 112-bit field, so the label lands on byte 7.
    iv[7] ^= label as u8;
    out.fill(0);
    ctr.less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| Error::Crypto)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SrtpProfile;
    use crate::test_util::hex;

    /// RFC 3711 Appendix B.3.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let master = MasterKey::new(
            SrtpProfile::Aes128CmHmacSha1_80,
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let mut key = [0; 16];
        derive(&master, Label::RtpEncryption, &mut key).unwrap();
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0; 14];
        derive(&master, Label::RtpSalt, &mut salt).unwrap();
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0; 20];
        derive(&master, Label::RtpAuth, &mut auth).unwrap();
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn rtcp_labels_give_other_keys() {
        let master = MasterKey::new(
            SrtpProfile::Aes128CmHmacSha1_80,
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let (mut rtp, mut rtcp) = ([0; 16], [0; 16]);
        derive(&master, Label::RtpEncryption, &mut rtp).unwrap();
        derive(&master, Label::RtcpEncryption, &mut rtcp).unwrap();
        assert_ne!(rtp, rtcp);
        let (mut a, mut s) = ([0; 20], [0; 14]);
        derive(&master, Label::RtcpAuth, &mut a).unwrap();
        derive(&master, Label::RtcpSalt, &mut s).unwrap();
        assert_ne!(a, [0; 20]);
        assert_ne!(s, [0; 14]);
    }
}
