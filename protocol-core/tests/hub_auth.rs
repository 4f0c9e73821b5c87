//! Hub scenarios: API keys, tokens, renewal, capabilities.

mod support;

use std::time::Duration;

use support::hub::*;
use tether_core::ErrorCode;
use tether_core::server::{Capabilities, Claims, HubEvent, Operation};
use tether_core::wire::{ClientFrame, ClientId, ServerFrame};

fn b64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn refused_with(h: &mut HubHarness, frame: ClientFrame, code: ErrorCode) {
    let (id, frames) = h.open(&frame);
    assert_eq!(error_code(&frames), Some(code), "{frames:?}");
    assert_eq!(h.closed.get(&id), Some(&code), "the connection is closed");
}

fn connects(h: &mut HubHarness, frame: ClientFrame) -> ServerFrame {
    let (id, mut frames) = h.open(&frame);
    assert!(!h.closed.contains_key(&id));
    assert_eq!(frames.len(), 1, "{frames:?}");
    frames.remove(0)
}

#[test]
fn key_auth_with_the_right_secret_connects() {
    let mut h = HubHarness::new();
    let frame = connects(&mut h, key_connect("app", "app-secret", None));
    assert!(
        matches!(frame, ServerFrame::Connected { ref client_id, resumed: false, token_expires_at_ms: None, .. } if client_id.as_str() == "app")
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, HubEvent::Connected { .. }))
    );
}

#[test]
fn key_auth_with_a_wrong_secret_or_unknown_key_is_refused() {
    let mut h = HubHarness::new();
    refused_with(
        &mut h,
        key_connect("app", "wrong", None),
        ErrorCode::InvalidCredentials,
    );
    refused_with(
        &mut h,
        key_connect("nobody", "app-secret", None),
        ErrorCode::InvalidCredentials,
    );
}

#[test]
fn a_valid_token_connects_with_its_client_id_and_expiry() {
    let mut h = HubHarness::new();
    let claims = claims("alice", h.unix_ms, Duration::from_secs(3600));
    let frame = connects(&mut h, token_connect(token(&claims)));
    let ServerFrame::Connected {
        client_id,
        token_expires_at_ms,
        ..
    } = frame
    else {
        panic!("connected");
    };
    assert_eq!(client_id.as_str(), "alice");
    assert_eq!(token_expires_at_ms, Some(claims.exp * 1000));
}

/// A token connect may name a client id: the token's own connects, another is refused
/// with `client_id_mismatch` (§4.2) — a token grants one identity only.
#[test]
fn a_token_connect_naming_its_own_client_id_connects_and_another_is_refused() {
    let mut h = HubHarness::new();
    let claims = claims("alice", h.unix_ms, Duration::from_secs(3600));
    let named = |client_id: &str| match token_connect(token(&claims)) {
        ClientFrame::Connect {
            version,
            credentials,
            resume,
            heartbeat_interval_ms,
            options,
            ..
        } => ClientFrame::Connect {
            version,
            credentials,
            client_id: Some(ClientId::new(client_id).expect("valid")),
            resume,
            heartbeat_interval_ms,
            options,
        },
        other => other,
    };
    let frame = connects(&mut h, named("alice"));
    assert!(
        matches!(frame, ServerFrame::Connected { ref client_id, .. } if client_id.as_str() == "alice"),
        "{frame:?}"
    );
    refused_with(&mut h, named("mallory"), ErrorCode::ClientIdMismatch);
}

#[test]
fn alg_none_is_refused() {
    let mut h = HubHarness::new();
    let header = b64(r#"{"alg":"none","typ":"JWT","kid":"app"}"#);
    let exp = h.unix_ms / 1000 + 3600;
    let payload = b64(&format!(r#"{{"sub":"mallory","exp":{exp},"iat":0}}"#));
    refused_with(
        &mut h,
        token_connect(format!("{header}.{payload}.")),
        ErrorCode::TokenInvalid,
    );
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let mut h = HubHarness::new();
    let mut forged = app_key();
    forged.secret = "guessed".into();
    let token = tether_core::server::mint_token(
        &forged,
        &claims("mallory", h.unix_ms, Duration::from_secs(60)),
    )
    .expect("signs");
    refused_with(&mut h, token_connect(token), ErrorCode::TokenInvalid);
}

#[test]
fn a_token_naming_an_unknown_key_is_refused() {
    let mut h = HubHarness::new();
    let mut unknown = app_key();
    unknown.name = "ghost".into();
    let token =
        tether_core::server::mint_token(&unknown, &claims("a", h.unix_ms, Duration::from_secs(60)))
            .expect("signs");
    refused_with(&mut h, token_connect(token), ErrorCode::TokenKeyUnknown);
}

#[test]
fn an_expired_token_is_refused_with_the_distinct_expired_code_as_a_disconnect() {
    let mut h = HubHarness::new();
    let mut expired = claims("alice", h.unix_ms, Duration::ZERO);
    expired.exp = h.unix_ms / 1000 - 31; // beyond the 30 s leeway
    let (_, frames) = h.open(&token_connect(token(&expired)));
    assert!(
        matches!(frames.as_slice(), [ServerFrame::Disconnect { error }] if error.code == ErrorCode::TokenExpired)
    );
}

#[test]
fn an_expiry_within_the_leeway_is_accepted_and_beyond_it_refused() {
    let mut h = HubHarness::new();
    let mut within = claims("alice", h.unix_ms, Duration::ZERO);
    within.exp = h.unix_ms / 1000 - 29;
    connects(&mut h, token_connect(token(&within)));
    let mut beyond = within.clone();
    beyond.exp = h.unix_ms / 1000 - 30;
    refused_with(
        &mut h,
        token_connect(token(&beyond)),
        ErrorCode::TokenExpired,
    );
}

#[test]
fn a_wrong_audience_or_issuer_is_refused() {
    let mut config = config();
    config.tokens.audience = Some("tether".into());
    config.tokens.issuer = Some("auth.example".into());
    let mut h = HubHarness::with(config, 1);
    let mut good = claims("alice", h.unix_ms, Duration::from_secs(60));
    good.aud = Some("tether".into());
    good.iss = Some("auth.example".into());
    connects(&mut h, token_connect(token(&good)));
    let mut wrong_aud = good.clone();
    wrong_aud.aud = Some("other".into());
    refused_with(
        &mut h,
        token_connect(token(&wrong_aud)),
        ErrorCode::TokenClaimsRejected,
    );
    let mut no_aud = good.clone();
    no_aud.aud = None;
    refused_with(
        &mut h,
        token_connect(token(&no_aud)),
        ErrorCode::TokenClaimsRejected,
    );
    let mut wrong_iss = good;
    wrong_iss.iss = Some("evil".into());
    refused_with(
        &mut h,
        token_connect(token(&wrong_iss)),
        ErrorCode::TokenClaimsRejected,
    );
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let mut h = HubHarness::new();
    let mut early = claims("alice", h.unix_ms, Duration::from_secs(3600));
    early.nbf = Some(h.unix_ms / 1000 + 120);
    refused_with(
        &mut h,
        token_connect(token(&early)),
        ErrorCode::TokenClaimsRejected,
    );
}

#[test]
fn in_band_renewal_extends_the_session_without_reconnecting() {
    let mut h = HubHarness::new();
    let first = claims("alice", h.unix_ms, Duration::from_secs(60));
    let (id, _) = h.open(&token_connect(token(&first)));
    h.advance_alive(&[id], Duration::from_secs(50));
    h.take(id);
    let second = claims("alice", h.unix_ms, Duration::from_secs(3600));
    h.send(
        id,
        &ClientFrame::Auth {
            token: token(&second),
        },
    );
    let frames = h.take(id);
    assert_eq!(
        frames,
        vec![ServerFrame::Authed {
            token_expires_at_ms: Some(second.exp * 1000),
            error: None
        }]
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, HubEvent::Reauthenticated { .. }))
    );
    // Well past the first token's expiry and leeway, the connection is still there.
    h.advance_alive(&[id], Duration::from_secs(120));
    assert!(!h.closed.contains_key(&id));
}

#[test]
fn a_renewal_changing_the_client_id_is_refused_and_the_old_token_stays() {
    let mut h = HubHarness::new();
    let first = claims("alice", h.unix_ms, Duration::from_secs(600));
    let (id, _) = h.open(&token_connect(token(&first)));
    h.send(
        id,
        &ClientFrame::Auth {
            token: token(&claims("bob", h.unix_ms, Duration::from_secs(600))),
        },
    );
    let frames = h.take(id);
    assert!(matches!(
        frames.as_slice(),
        [ServerFrame::Authed { token_expires_at_ms: None, error: Some(e) }] if e.code == ErrorCode::ClientIdMismatch
    ));
    assert!(!h.closed.contains_key(&id));
}

#[test]
fn a_token_that_expires_without_renewal_disconnects_with_token_expired() {
    let mut h = HubHarness::new();
    let (id, _) = h.open(&token_connect(token(&claims(
        "alice",
        h.unix_ms,
        Duration::from_secs(20),
    ))));
    h.advance_alive(&[id], Duration::from_secs(49)); // 20 s + 30 s leeway
    assert!(!h.closed.contains_key(&id), "{:?}", h.closed);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.closed.get(&id), Some(&ErrorCode::TokenExpired));
    assert!(h.take(id).iter().any(
        |f| matches!(f, ServerFrame::Disconnect { error } if error.code == ErrorCode::TokenExpired)
    ));
}

#[test]
fn a_wall_clock_jump_expires_a_token_on_the_next_frame() {
    let mut h = HubHarness::new();
    let (id, _) = h.open(&token_connect(token(&claims(
        "alice",
        h.unix_ms,
        Duration::from_secs(3600),
    ))));
    h.unix_ms += 2 * 3600 * 1000; // the wall clock jumps two hours
    h.send(id, &ClientFrame::Ping { id: 1 });
    assert_eq!(h.closed.get(&id), Some(&ErrorCode::TokenExpired));
}

#[test]
fn publish_without_capability_is_nacked_and_the_connection_stays() {
    let mut h = HubHarness::new();
    let (id, _) = h.open(&key_connect("reader", "reader-secret", None));
    let frames = h.publish(id, 0, "news", vec![message("m1", "x")]);
    assert!(matches!(
        frames.as_slice(),
        [ServerFrame::Nack { serial: 0, count: 1, error }] if error.code == ErrorCode::Forbidden
    ));
    assert!(!h.closed.contains_key(&id));
    h.send(id, &ClientFrame::Ping { id: 5 });
    assert_eq!(h.take(id), vec![ServerFrame::Pong { id: 5 }]);
}

#[test]
fn capabilities_of_a_token_are_enforced_per_operation_and_channel() {
    let mut h = HubHarness::new();
    let mut limited = claims("carol", h.unix_ms, Duration::from_secs(600));
    limited.cap = Capabilities::default()
        .with("chat:*", &[Operation::Subscribe])
        .with("chat:carol", &[Operation::Publish]);
    let (id, _) = h.open(&token_connect(token(&limited)));
    assert!(matches!(
        h.attach(id, "chat:lobby", None)[0],
        ServerFrame::Attached { .. }
    ));
    assert!(matches!(
        &h.attach(id, "admin", None)[0],
        ServerFrame::Detached { error: Some(e), .. } if e.code == ErrorCode::Forbidden
    ));
    assert!(matches!(
        h.publish(id, 0, "chat:carol", vec![message("c1", "hi")])
            .last(),
        Some(ServerFrame::Ack { .. })
    ));
    assert!(matches!(
        h.publish(id, 1, "chat:lobby", vec![message("c2", "hi")]).as_slice(),
        [ServerFrame::Nack { error, .. }] if error.code == ErrorCode::Forbidden
    ));
    let _: Claims = limited;
}
