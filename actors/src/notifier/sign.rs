//! Standard Webhooks signing: secrets are `whsec_<base64 of 24–64 bytes>`, the HMAC-SHA256
//! key is the decoded bytes, and `webhook-signature` is `v1,<base64 MAC>` of
//! `"{id}.{timestamp}.{body}"` — one per valid secret, space-separated, during a rotation.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
const MIN_BYTES: usize = 24;
const MAX_BYTES: usize = 64;
/// Bytes in a generated secret.
const GENERATED_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by the base64 of 24 to 64 random bytes")]
pub struct SecretFormatError;

/// A webhook signing secret (its bytes are the HMAC key).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<Self, SecretFormatError> {
        let b64 = text.strip_prefix(PREFIX).ok_or(SecretFormatError)?;
        let bytes = STANDARD.decode(b64).map_err(|_| SecretFormatError)?;
        if !(MIN_BYTES..=MAX_BYTES).contains(&bytes.len()) {
            return Err(SecretFormatError);
        }
        Ok(Self(bytes))
    }

    /// A fresh secret from the OS random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; GENERATED_BYTES];
        getrandom::getrandom(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretFormatError> {
        if !(MIN_BYTES..=MAX_BYTES).contains(&bytes.len()) {
            return Err(SecretFormatError);
        }
        Ok(Self(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `whsec_…` text, shown once: when generated or rotated.
    pub fn to_text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// Enough to recognise a secret without revealing it: `whsec_…` and its last 4 characters.
    pub fn hint(&self) -> String {
        let text = self.to_text();
        let tail: String = text
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{PREFIX}…{tail}")
    }

    /// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example in the Standard Webhooks specification and its reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn parse_refuses_what_is_not_whsec_base64_of_24_to_64_bytes() {
        let short = format!("whsec_{}", STANDARD.encode([1u8; 23]));
        let long = format!("whsec_{}", STANDARD.encode([1u8; 65]));
        for bad in [
            "",
            "whsec_",
            "secret",
            "whsec_!!!!",
            short.as_str(),
            long.as_str(),
        ] {
            assert!(WebhookSecret::parse(bad).is_err(), "{bad}");
        }
        let ok = format!("whsec_{}", STANDARD.encode([7u8; 24]));
        assert!(WebhookSecret::parse(&ok).is_ok());
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let a = WebhookSecret::generate().unwrap();
        let b = WebhookSecret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(WebhookSecret::parse(&a.to_text()).unwrap(), a);
        assert!(a.hint().starts_with("whsec_…") && a.hint().chars().count() == 11);
    }

    #[test]
    fn rotation_signs_with_both() {
        let (a, b) = (
            WebhookSecret::generate().unwrap(),
            WebhookSecret::generate().unwrap(),
        );
        let h = signature_header(&[a.clone(), b.clone()], "id", 1, b"{}");
        assert_eq!(
            h,
            format!("{} {}", a.sign("id", 1, b"{}"), b.sign("id", 1, b"{}"))
        );
    }
}
