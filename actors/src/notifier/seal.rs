//! Webhook secrets at rest: sealed with ChaCha20-Poly1305 under `notifications.secret_key`
//! (the base64 of 32 bytes). A sealed value is `nonce (12 bytes) || ciphertext+tag`, and the
//! channel id is bound in as associated data, so a sealed secret copied onto another channel
//! does not open.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("must be the base64 of 32 bytes (generate one with `openssl rand -base64 32`)")]
    BadKey,
    #[error("the OS random source failed: {0}")]
    Random(getrandom::Error),
    #[error("a sealed secret does not open with this key (was notifications.secret_key changed?)")]
    Open,
}

#[derive(Clone)]
pub struct SealKey(ChaCha20Poly1305);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Self(ChaCha20Poly1305::new(&Key::from(bytes))))
    }

    pub fn seal(&self, plain: &[u8], bound_to: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::getrandom(&mut nonce).map_err(SealError::Random)?;
        let sealed = self
            .0
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], bound_to: &str) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_BYTES {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Open)?;
        self.0
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealKey {
        SealKey::from_base64(&STANDARD.encode([byte; 32])).unwrap()
    }

    #[test]
    fn opens_what_it_sealed_and_nothing_else() {
        let k = key(1);
        let sealed = k.seal(b"whsec_abc", "channel-1").unwrap();
        assert!(
            !sealed.windows(9).any(|w| w == b"whsec_abc"),
            "stored in clear"
        );
        assert_eq!(k.open(&sealed, "channel-1").unwrap(), b"whsec_abc");
        assert!(
            k.open(&sealed, "channel-2").is_err(),
            "bound to its channel"
        );
        assert!(key(2).open(&sealed, "channel-1").is_err(), "another key");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open(&tampered, "channel-1").is_err());
        assert!(k.open(&[1, 2, 3], "channel-1").is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(SealKey::from_base64("").is_err());
        assert!(SealKey::from_base64("not base64!").is_err());
        assert!(SealKey::from_base64(&STANDARD.encode([0u8; 16])).is_err());
    }
}
