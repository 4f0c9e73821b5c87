//! Issue 13, defect 8: token claims are checked with the codes of the spec (§8, §9):
//! a missing `sub` or `exp` is `token_claims_rejected`, `iat` is optional, `aud` may be an
//! array (RFC 7519), and a token accepted within the leeway is enforced at `exp` + leeway.

mod support;

use std::time::Duration;

use serde_json::json;
use support::hub::*;
use tether_core::ErrorCode;
use tether_core::wire::ServerFrame;

/// A token with exactly these claims, signed by the `app` key.
fn raw_token(claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("app".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"app-secret"),
    )
    .expect("signs")
}

fn connect_with(h: &mut HubHarness, claims: serde_json::Value) -> Vec<ServerFrame> {
    h.open(&token_connect(raw_token(claims))).1
}

fn in_an_hour(h: &HubHarness) -> u64 {
    h.unix_ms / 1000 + 3600
}

#[test]
fn a_token_without_sub_or_exp_is_claims_rejected() {
    let mut h = HubHarness::new();
    let (now, exp) = (h.unix_ms / 1000, in_an_hour(&h));
    let no_sub = connect_with(&mut h, json!({ "exp": exp, "iat": now }));
    assert_eq!(error_code(&no_sub), Some(ErrorCode::TokenClaimsRejected));
    let no_exp = connect_with(&mut h, json!({ "sub": "alice", "iat": now }));
    assert_eq!(error_code(&no_exp), Some(ErrorCode::TokenClaimsRejected));
}

#[test]
fn a_token_without_iat_is_accepted() {
    let mut h = HubHarness::new();
    let exp = in_an_hour(&h);
    let frames = connect_with(
        &mut h,
        json!({ "sub": "alice", "exp": exp, "cap": { "*": ["subscribe"] } }),
    );
    assert!(
        matches!(frames.as_slice(), [ServerFrame::Connected { .. }]),
        "{frames:?}"
    );
}

#[test]
fn an_audience_array_is_accepted_when_it_names_the_hub() {
    let mut config = config();
    config.tokens.audience = Some("tether".into());
    let mut h = HubHarness::with(config, 1);
    let now = h.unix_ms / 1000;
    let exp = in_an_hour(&h);
    let named = connect_with(
        &mut h,
        json!({ "sub": "alice", "exp": exp, "iat": now, "aud": ["billing", "tether"] }),
    );
    assert!(
        matches!(named.as_slice(), [ServerFrame::Connected { .. }]),
        "{named:?}"
    );
    let other = connect_with(
        &mut h,
        json!({ "sub": "alice", "exp": exp, "iat": now, "aud": ["billing"] }),
    );
    assert_eq!(error_code(&other), Some(ErrorCode::TokenClaimsRejected));
}

#[test]
fn a_token_accepted_within_the_leeway_is_enforced_at_exp_plus_leeway() {
    let mut h = HubHarness::new();
    // Expired 10 s ago; the leeway is 30 s: accepted, and cut 20 s from now, not 30 s.
    let exp = h.unix_ms / 1000 - 10;
    let (id, frames) = h.open(&token_connect(raw_token(
        json!({ "sub": "alice", "exp": exp, "iat": exp - 60 }),
    )));
    match frames.as_slice() {
        [
            ServerFrame::Connected {
                token_expires_at_ms,
                ..
            },
        ] => assert_eq!(
            *token_expires_at_ms,
            Some(exp * 1000),
            "the token's own exp"
        ),
        other => panic!("{other:?}"),
    }
    h.advance_alive(&[id], Duration::from_millis(19_999));
    assert!(!h.closed.contains_key(&id), "cut before exp + leeway");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.closed.get(&id), Some(&ErrorCode::TokenExpired));
}

/// Issue 20, item 11 (decided in §8): `cap` is an object from pattern to operation names; an
/// unknown operation makes the token `token_invalid`; a token without `cap` grants nothing.
#[test]
fn cap_shape_unknown_operations_and_a_missing_cap() {
    let mut h = HubHarness::new();
    let exp = in_an_hour(&h);
    let frames = connect_with(
        &mut h,
        json!({"sub": "a", "exp": exp, "cap": {"chat:*": ["subscribe", "post"]}}),
    );
    assert_eq!(
        error_code(&frames),
        Some(ErrorCode::TokenInvalid),
        "{frames:?}"
    );

    let mut h = HubHarness::new();
    let exp = in_an_hour(&h);
    let (connection, frames) = h.open(&token_connect(raw_token(json!({"sub": "a", "exp": exp}))));
    assert!(
        matches!(frames.first(), Some(ServerFrame::Connected { .. })),
        "{frames:?}"
    );
    let refused = h.publish(connection, 0, "news", vec![message("m", "x")]);
    assert!(
        matches!(&refused[..], [ServerFrame::Nack { error, .. }] if error.code == ErrorCode::Forbidden),
        "a token without cap grants nothing: {refused:?}"
    );
}
