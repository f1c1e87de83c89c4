//! Bearer JWT auth (HS256). Missing, malformed, expired, wrongly signed or `alg: none`
//! tokens are 401; a valid token for another workspace or without the scope is 403.
//!
//! Only HS256 is accepted: the algorithm is pinned, never read from the token. A `kid`
//! header picks one of `auth.jwt_secrets` (unknown `kid` → 401); `jku`, `jwk` and `x5u` are
//! never followed (a token carrying them is refused).

use std::collections::HashMap;
use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use shadower_actors::domain::ids::WorkspaceId;

use crate::error::ApiError;
use crate::AppState;

/// Longest token accepted; anything larger is refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// The token's claims, as signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub workspaces: Vec<String>,
    #[serde(default)]
    pub scope: String,
    /// Issued-at; a token issued further in the future than the clock leeway is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// The keys tokens are checked against.
pub struct AuthKeys {
    default: Option<DecodingKey>,
    by_kid: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl AuthKeys {
    /// `secret` is `auth.jwt_secret`; `rotated` are `auth.jwt_secrets` as `(kid, secret)`.
    pub fn new(secret: Option<&str>, rotated: &[(String, String)]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        Self {
            default: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            by_kid: rotated
                .iter()
                .map(|(kid, s)| (kid.clone(), DecodingKey::from_secret(s.as_bytes())))
                .collect(),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let invalid = |why: &str| ApiError::Unauthorized(format!("invalid token: {why}"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("too large"));
        }
        let head = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        if head.alg != Algorithm::HS256 {
            return Err(invalid("algorithm must be HS256"));
        }
        if head.jku.is_some() || head.jwk.is_some() || head.x5u.is_some() {
            return Err(invalid("jku, jwk and x5u headers are not accepted"));
        }
        let key = match &head.kid {
            Some(kid) => self.by_kid.get(kid).ok_or_else(|| invalid("unknown kid"))?,
            None => self
                .default
                .as_ref()
                .ok_or_else(|| invalid("a kid is required"))?,
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => invalid("expired"),
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::ImmatureSignature => invalid("not valid yet"),
                ErrorKind::MissingRequiredClaim(c) => invalid(&format!("missing claim {c}")),
                _ => invalid("malformed"),
            }
        })?;
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        if data
            .claims
            .iat
            .is_some_and(|iat| iat > now + self.validation.leeway)
        {
            return Err(invalid("issued in the future"));
        }
        Ok(Principal {
            claims: data.claims,
        })
    }
}

/// Signs a token (the `token` command and tests).
pub fn sign(
    secret: &str,
    kid: Option<&str>,
    claims: &Claims,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    claims: Claims,
}

impl Principal {
    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// 403 unless the token names `ws` and carries `scope`.
    pub fn require(&self, ws: &WorkspaceId, scope: Scope) -> Result<(), ApiError> {
        if !self.claims.workspaces.iter().any(|w| w == ws.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "the token does not grant workspace {ws}"
            )));
        }
        if !self
            .claims
            .scope
            .split_ascii_whitespace()
            .any(|s| s == scope.as_str())
        {
            return Err(ApiError::Forbidden(format!(
                "the token lacks the `{}` scope",
                scope.as_str()
            )));
        }
        Ok(())
    }
}

/// The bearer token of a request: the Authorization header, or `?token=` where allowed.
pub fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = (|| {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::Unavailable("hub state missing".into()))?;
            state.auth.verify(bearer(req)?)
        })();
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-secret-unit-secret-unit-secret-0";

    fn claims(exp_offset: i64, scope: &str) -> Claims {
        Claims {
            sub: "u".into(),
            exp: (chrono::Utc::now().timestamp() + exp_offset) as u64,
            workspaces: vec!["ws1".into(), "ws2".into()],
            scope: scope.into(),
            iat: None,
        }
    }

    fn keys() -> AuthKeys {
        AuthKeys::new(
            Some(SECRET),
            &[("k1".into(), "kid-secret-kid-secret-kid-secret-01".into())],
        )
    }

    fn is_401(r: Result<Principal, ApiError>) -> bool {
        matches!(r, Err(ApiError::Unauthorized(_)))
    }

    #[test]
    fn valid_tokens_verify_and_scopes_are_checked() {
        let p = keys()
            .verify(&sign(SECRET, None, &claims(60, "read ingest")).unwrap())
            .unwrap();
        let ws1 = WorkspaceId::parse("ws1").unwrap();
        assert!(p.require(&ws1, Scope::Read).is_ok());
        assert!(p.require(&ws1, Scope::Ingest).is_ok());
        assert!(matches!(
            p.require(&ws1, Scope::Admin),
            Err(ApiError::Forbidden(_))
        ));
        let ws3 = WorkspaceId::parse("ws3").unwrap();
        assert!(matches!(
            p.require(&ws3, Scope::Read),
            Err(ApiError::Forbidden(_))
        ));
        // A scope must match a whole word.
        let p = keys()
            .verify(&sign(SECRET, None, &claims(60, "readonly")).unwrap())
            .unwrap();
        assert!(p.require(&ws1, Scope::Read).is_err());
    }

    #[test]
    fn bad_tokens_are_401() {
        let k = keys();
        assert!(is_401(
            k.verify(&sign(SECRET, None, &claims(-120, "read")).unwrap())
        ));
        assert!(is_401(
            k.verify(
                &sign(
                    "wrong-wrong-wrong-wrong-wrong-wrong",
                    None,
                    &claims(60, "read")
                )
                .unwrap()
            )
        ));
        assert!(is_401(k.verify(
            &sign(SECRET, Some("k9"), &claims(60, "read")).unwrap()
        )));
        assert!(is_401(k.verify("a.b.c")));
        assert!(is_401(k.verify("")));
        assert!(is_401(k.verify(&"x".repeat(MAX_TOKEN_BYTES + 1))));
        let ok_kid = sign(
            "kid-secret-kid-secret-kid-secret-01",
            Some("k1"),
            &claims(60, "read"),
        )
        .unwrap();
        assert!(k.verify(&ok_kid).is_ok());
    }

    #[test]
    fn future_iat_and_nbf_are_refused() {
        let k = keys();
        let now = chrono::Utc::now().timestamp() as u64;
        let mut c = claims(3600, "read");
        c.iat = Some(now + 600);
        assert!(is_401(k.verify(&sign(SECRET, None, &c).unwrap())));
        c.iat = Some(now);
        assert!(k.verify(&sign(SECRET, None, &c).unwrap()).is_ok());
        #[derive(serde::Serialize)]
        struct WithNbf {
            sub: &'static str,
            exp: u64,
            nbf: u64,
        }
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &WithNbf {
                sub: "u",
                exp: now + 3600,
                nbf: now + 600,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(is_401(k.verify(&t)));
    }

    #[test]
    fn wildcards_and_duplicates_grant_nothing_extra() {
        let mut c = claims(60, "read");
        c.workspaces = vec!["*".into(), "ws1".into(), "ws1".into()];
        let p = keys().verify(&sign(SECRET, None, &c).unwrap()).unwrap();
        assert!(p
            .require(&WorkspaceId::parse("ws1").unwrap(), Scope::Read)
            .is_ok());
        // `*` is no wildcard: it names no workspace (ids cannot contain it).
        assert!(p
            .require(&WorkspaceId::parse("ws2").unwrap(), Scope::Read)
            .is_err());
    }
}
