//! Authentication and capabilities: `docs/protocol.md` §8.
//!
//! API keys are compared in constant time. Tokens are HS256 JWTs verified with
//! `jsonwebtoken`, the algorithm pinned by the hub, `kid` naming the key. `jsonwebtoken`'s
//! own time checks read the system clock, so they are disabled and `exp` / `nbf` are checked
//! here against the wall-clock time the caller passes in.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ErrorInfo};
use crate::wire::{ChannelName, ClientId};

/// An operation a capability grants on matching channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Attach and receive messages.
    Subscribe,
    /// Publish messages.
    Publish,
    /// Query retained history.
    History,
}

/// A capability map: channel pattern → operations (`docs/protocol.md` §8).
///
/// Patterns are `:`-separated segments. A `*` segment matches exactly one segment, except as
/// the last segment, where it matches one or more; `*` alone matches every channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capabilities(pub BTreeMap<String, Vec<Operation>>);

impl Capabilities {
    /// Every operation on every channel.
    pub fn all() -> Capabilities {
        let mut map = BTreeMap::new();
        map.insert(
            "*".to_owned(),
            vec![Operation::Subscribe, Operation::Publish, Operation::History],
        );
        Capabilities(map)
    }

    /// Adds `operations` on channels matching `pattern`.
    pub fn with(mut self, pattern: &str, operations: &[Operation]) -> Capabilities {
        self.0
            .entry(pattern.to_owned())
            .or_default()
            .extend_from_slice(operations);
        self
    }

    /// Whether `operation` is granted on `channel`.
    pub fn allows(&self, channel: &ChannelName, operation: Operation) -> bool {
        self.0.iter().any(|(pattern, operations)| {
            operations.contains(&operation) && pattern_matches(pattern, channel.as_str())
        })
    }
}

/// Whether a capability pattern matches a channel name.
pub fn pattern_matches(pattern: &str, channel: &str) -> bool {
    let mut wanted = pattern.split(':').peekable();
    let mut given = channel.split(':');
    while let Some(segment) = wanted.next() {
        let last = wanted.peek().is_none();
        match (segment, given.next()) {
            (_, None) => return false,
            ("*", Some(_)) if last => return true,
            ("*", Some(_)) => {}
            (literal, Some(name)) if literal == name => {}
            _ => return false,
        }
    }
    given.next().is_none()
}

/// An API key the hub accepts.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The public name (also the `kid` of tokens signed with it).
    pub name: String,
    /// The secret.
    pub secret: String,
    /// What a client authenticated with this key directly may do.
    #[serde(default = "Capabilities::all")]
    pub capabilities: Capabilities,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

/// How tokens are checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenRules {
    /// Allowed clock difference for `exp` and `nbf` (at most 60 s; default 30 s).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Required `aud`, if any.
    pub audience: Option<String>,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
}

impl Default for TokenRules {
    fn default() -> TokenRules {
        TokenRules {
            leeway: Duration::from_secs(30),
            audience: None,
            issuer: None,
        }
    }
}

/// The largest leeway the hub applies, whatever is configured (RFC 8725 spirit).
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// The claims of a tether token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The client id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issue time, Unix seconds.
    pub iat: u64,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Capabilities.
    #[serde(default)]
    pub cap: Capabilities,
}

impl Claims {
    /// Claims for client `sub` with `cap`, issued at `issued_at` (Unix seconds) and valid for
    /// `lifetime` (whole seconds); no `nbf`, `aud` or `iss`.
    pub fn new(
        sub: impl Into<String>,
        cap: Capabilities,
        issued_at: u64,
        lifetime: Duration,
    ) -> Claims {
        Claims {
            sub: sub.into(),
            exp: issued_at.saturating_add(lifetime.as_secs()),
            iat: issued_at,
            nbf: None,
            aud: None,
            iss: None,
            cap,
        }
    }
}

/// Who a client is and what it may do, once its credentials are verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The client id.
    pub client_id: ClientId,
    /// What it may do.
    pub capabilities: Capabilities,
    /// When its token expires (Unix ms, without leeway); `None` for API keys.
    pub expires_at_ms: Option<u64>,
}

/// Compares two byte strings in time that depends only on their lengths (`subtle`).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Checks an API key. The client may choose its id; without one it is the key's name.
pub fn verify_api_key(
    keys: &[ApiKey],
    name: &str,
    secret: &str,
    client_id: Option<&ClientId>,
) -> Result<Identity, ErrorInfo> {
    let refused = || ErrorInfo::new(ErrorCode::InvalidCredentials, "unknown key or wrong secret");
    let key = keys
        .iter()
        .find(|key| key.name == name)
        .ok_or_else(refused)?;
    if !constant_time_eq(key.secret.as_bytes(), secret.as_bytes()) {
        return Err(refused());
    }
    let client_id = match client_id {
        Some(id) => id.clone(),
        None => ClientId::new(key.name.clone()).map_err(|_| {
            ErrorInfo::new(
                ErrorCode::BadRequest,
                "the key name is not a valid client id",
            )
        })?,
    };
    Ok(Identity {
        client_id,
        capabilities: key.capabilities.clone(),
        expires_at_ms: None,
    })
}

/// Verifies a token at wall-clock time `now_ms` (Unix ms).
pub fn verify_token(
    keys: &[ApiKey],
    rules: &TokenRules,
    token: &str,
    now_ms: u64,
) -> Result<Identity, ErrorInfo> {
    verify_token_with_info(keys, rules, token, now_ms).map(|(identity, _)| identity)
}

/// What revocations look at in a verified token (§8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// The key it is signed with (`kid`).
    pub key: String,
    /// When it was issued (`iat`, in Unix ms), if it says.
    pub issued_at_ms: Option<u64>,
}

/// Revokes tokens (§8): those of `target` issued before `issued_before_ms` (a token with
/// no `iat` counts as issued before) are refused with `token_revoked`, and sessions holding
/// one are disconnected, until `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Whose tokens.
    pub target: RevocationTarget,
    /// Tokens issued before this time (Unix ms) are revoked.
    pub issued_before_ms: u64,
    /// When the revocation ends (Unix ms): set it at or after the revoked tokens' `exp`.
    pub expires_at_ms: u64,
}

/// Whose tokens a [`Revocation`] revokes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevocationTarget {
    /// The tokens of one client id (`sub`).
    ClientId(ClientId),
    /// The tokens signed with one key (`kid`).
    Key(String),
    /// Every token.
    All,
}

/// How long a revocation lasts when its caller does not say (24 h), in ms.
pub const DEFAULT_REVOCATION_MS: u64 = 24 * 3600 * 1000;

impl Revocation {
    /// A revocation of `target` with the defaults for what is not given (§8): tokens
    /// issued before the current second of `now_ms` (`iat` has whole seconds, so a token
    /// issued in that second is not revoked), until [`DEFAULT_REVOCATION_MS`] after that.
    pub fn with_defaults(
        target: RevocationTarget,
        now_ms: u64,
        issued_before_ms: Option<u64>,
        expires_at_ms: Option<u64>,
    ) -> Revocation {
        let issued_before_ms = issued_before_ms.unwrap_or(now_ms / 1000 * 1000);
        Revocation {
            target,
            issued_before_ms,
            expires_at_ms: expires_at_ms
                .unwrap_or(issued_before_ms.saturating_add(DEFAULT_REVOCATION_MS)),
        }
    }

    /// Whether it revokes a token of `client_id` with `info`.
    pub fn revokes(&self, client_id: &ClientId, info: &TokenInfo) -> bool {
        let whose = match &self.target {
            RevocationTarget::ClientId(id) => id == client_id,
            RevocationTarget::Key(key) => *key == info.key,
            RevocationTarget::All => true,
        };
        whose
            && info
                .issued_at_ms
                .is_none_or(|iat| iat < self.issued_before_ms)
    }
}

/// [`verify_token`], with what revocations look at.
pub fn verify_token_with_info(
    keys: &[ApiKey],
    rules: &TokenRules,
    token: &str,
    now_ms: u64,
) -> Result<(Identity, TokenInfo), ErrorInfo> {
    let invalid = |why: &str| ErrorInfo::new(ErrorCode::TokenInvalid, why);
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
    if header.alg != Algorithm::HS256 {
        return Err(invalid("only HS256 tokens are accepted"));
    }
    let kid = header.kid.ok_or_else(|| {
        ErrorInfo::new(ErrorCode::TokenKeyUnknown, "the token names no key (kid)")
    })?;
    let key = keys.iter().find(|key| key.name == kid).ok_or_else(|| {
        ErrorInfo::new(
            ErrorCode::TokenKeyUnknown,
            "the token's key (kid) is unknown",
        )
    })?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false; // checked below against the given time
    validation.validate_nbf = false;
    validation.validate_aud = rules.audience.is_some();
    // `sub` and `exp` are checked below, so that their absence is `token_claims_rejected`;
    // `aud` and `iss` are required only when configured. `aud` may be a string or an array
    // (RFC 7519 §4.1.3); `iat` is optional.
    validation.set_required_spec_claims::<&str>(&[]);
    if let Some(audience) = &rules.audience {
        validation.set_audience(&[audience]);
        validation.required_spec_claims.insert("aud".to_owned());
    }
    if let Some(issuer) = &rules.issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".to_owned());
    }
    let data = jsonwebtoken::decode::<ReceivedClaims>(
        token,
        &DecodingKey::from_secret(key.secret.as_bytes()),
        &validation,
    )
    .map_err(|error| match error.kind() {
        ErrorKind::InvalidAudience
        | ErrorKind::InvalidIssuer
        | ErrorKind::MissingRequiredClaim(_) => ErrorInfo::new(
            ErrorCode::TokenClaimsRejected,
            format!("claims refused: {error}"),
        ),
        ErrorKind::InvalidSignature => invalid("bad signature"),
        _ => invalid("malformed token"),
    })?;
    let claims = data.claims;
    let rejected = |why: &str| ErrorInfo::new(ErrorCode::TokenClaimsRejected, why);
    let sub = claims.sub.ok_or_else(|| rejected("the token has no sub"))?;
    let exp = claims.exp.ok_or_else(|| rejected("the token has no exp"))?;
    let leeway_ms = rules.leeway.min(MAX_LEEWAY).as_millis() as u64;
    let expires_at_ms = exp.saturating_mul(1000);
    if expires_at_ms.saturating_add(leeway_ms) <= now_ms {
        return Err(ErrorInfo::new(
            ErrorCode::TokenExpired,
            "the token has expired",
        ));
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf.saturating_mul(1000) > now_ms.saturating_add(leeway_ms))
    {
        return Err(ErrorInfo::new(
            ErrorCode::TokenClaimsRejected,
            "the token is not valid yet",
        ));
    }
    let client_id = ClientId::new(sub).map_err(|_| {
        ErrorInfo::new(
            ErrorCode::TokenClaimsRejected,
            "sub is not a valid client id",
        )
    })?;
    let info = TokenInfo {
        key: kid,
        issued_at_ms: claims.iat.map(|iat| iat.saturating_mul(1000)),
    };
    Ok((
        Identity {
            client_id,
            capabilities: claims.cap,
            expires_at_ms: Some(expires_at_ms),
        },
        info,
    ))
}

/// The claims the hub reads from a token, each optional at this stage so that a missing one
/// gets its own code; `aud`, `iss` and `iat` are left to the JWT library (`aud` as a string
/// or an array) and unknown claims are ignored.
#[derive(Deserialize)]
struct ReceivedClaims {
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    cap: Capabilities,
}

/// Mints a token signed with `key` (for tests, tools and application auth servers).
pub fn mint_token(key: &ApiKey, claims: &Claims) -> Result<String, ErrorInfo> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.name.clone());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(key.secret.as_bytes()),
    )
    .map_err(|error| {
        ErrorInfo::new(
            ErrorCode::Internal,
            format!("cannot sign the token: {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_patterns_match_as_specified() {
        let cases = [
            ("*", "a", true),
            ("*", "a:b:c", true),
            ("chat:*", "chat:lobby", true),
            ("chat:*", "chat:lobby:thread", true),
            ("chat:*", "chat", false),
            ("chat:*", "chats:lobby", false),
            ("chat:lobby", "chat:lobby", true),
            ("chat:lobby", "chat:lobby:x", false),
            ("chat:lobby", "chat", false),
            ("*:lobby", "chat:lobby", true),
            ("*:lobby", "chat:room", false),
            ("*:lobby", "lobby", false),
            ("a:*:c", "a:b:c", true),
            ("a:*:c", "a:b:d", false),
            ("a:*:c", "a:b:x:c", false),
            ("a:*:*", "a:b:c:d", true),
            ("ch*", "chat", false),
            ("news", "news", true),
            ("news", "newsletter", false),
        ];
        for (pattern, channel, expected) in cases {
            assert_eq!(
                pattern_matches(pattern, channel),
                expected,
                "{pattern} vs {channel}"
            );
        }
    }

    #[test]
    fn constant_time_comparison_is_correct() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
        assert!(constant_time_eq(b"", b""));
    }
}
