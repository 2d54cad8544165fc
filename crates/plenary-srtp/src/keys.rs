//! SRTP protection profiles and the DTLS-SRTP key split (RFC 5764 §4.2).

use std::fmt;

use crate::Error;

/// The SRTP protection profiles str0m's DTLS can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711, RFC 5764).
    Aes128CmHmacSha1_80,
    /// SRTP_AEAD_AES_128_GCM (RFC 7714).
    AeadAes128Gcm,
    /// SRTP_AEAD_AES_256_GCM (RFC 7714). What two str0m peers pick.
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// Master (and session) encryption key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 | SrtpProfile::AeadAes128Gcm => 16,
            SrtpProfile::AeadAes256Gcm => 32,
        }
    }

    /// Master (and session) salt length in bytes.
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => 14,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 12,
        }
    }

    /// Bytes SRTP adds to an RTP packet: the authentication tag.
    pub const fn rtp_overhead(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => 10,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 16,
        }
    }

    /// Bytes SRTCP adds to an RTCP packet: the E flag + SRTCP index word and the tag.
    pub const fn rtcp_overhead(self) -> usize {
        4 + self.rtp_overhead()
    }

    /// Length of the DTLS exporter output this profile needs: two keys and two salts.
    pub const fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }
}

impl fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrtpProfile::Aes128CmHmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "AEAD_AES_256_GCM",
        })
    }
}

/// Which side of the DTLS handshake this end was. It decides which half of the keying
/// material encrypts what we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    /// DTLS client ("active"): sends with the client write key.
    Client,
    /// DTLS server ("passive"): sends with the server write key.
    Server,
}

/// One direction's master key and salt. Session keys are derived from it (RFC 3711 §4.3).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    profile: SrtpProfile,
    key: [u8; 32],
    salt: [u8; 14],
}

impl MasterKey {
    /// A master key and salt of the lengths `profile` uses.
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<Self, Error> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(Error::KeyLength);
        }
        let mut k = [0; 32];
        let mut s = [0; 14];
        k[..key.len()].copy_from_slice(key);
        s[..salt.len()].copy_from_slice(salt);
        Ok(Self {
            profile,
            key: k,
            salt: s,
        })
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    pub fn key(&self) -> &[u8] {
        &self.key[..self.profile.key_len()]
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.profile.salt_len()]
    }
}

// Keys never go to logs.
impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, ..)", self.profile)
    }
}

/// The keys of one DTLS-SRTP association, as this end sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub profile: SrtpProfile,
    pub role: DtlsRole,
    /// Protects what this end sends.
    pub local: MasterKey,
    /// Unprotects what this end receives.
    pub remote: MasterKey,
}

impl SrtpKeys {
    /// Splits the DTLS exporter output "EXTRACTOR-dtls_srtp" (RFC 5764 §4.2):
    /// client key | server key | client salt | server salt.
    pub fn from_keying_material(
        profile: SrtpProfile,
        role: DtlsRole,
        material: &[u8],
    ) -> Result<Self, Error> {
        if material.len() != profile.keying_material_len() {
            return Err(Error::KeyLength);
        }
        let (k, s) = (profile.key_len(), profile.salt_len());
        let client = MasterKey::new(profile, &material[..k], &material[2 * k..2 * k + s])?;
        let server = MasterKey::new(profile, &material[k..2 * k], &material[2 * k + s..])?;
        let (local, remote) = match role {
            DtlsRole::Client => (client, server),
            DtlsRole::Server => (server, client),
        };
        Ok(Self {
            profile,
            role,
            local,
            remote,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_roles_see_mirrored_keys() {
        let profile = SrtpProfile::AeadAes128Gcm;
        let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
        let client = SrtpKeys::from_keying_material(profile, DtlsRole::Client, &material).unwrap();
        let server = SrtpKeys::from_keying_material(profile, DtlsRole::Server, &material).unwrap();
        assert_eq!(client.local, server.remote);
        assert_eq!(client.remote, server.local);
        // Client write key is the first 16 bytes, client write salt follows both keys.
        assert_eq!(client.local.key(), &material[..16]);
        assert_eq!(client.local.salt(), &material[32..44]);
        assert_eq!(server.local.key(), &material[16..32]);
        assert_eq!(server.local.salt(), &material[44..56]);
    }

    #[test]
    fn wrong_material_length_is_refused() {
        let err =
            SrtpKeys::from_keying_material(SrtpProfile::AeadAes256Gcm, DtlsRole::Client, &[0; 60]);
        assert!(matches!(err, Err(Error::KeyLength)));
    }
}
