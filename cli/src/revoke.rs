//! `tether revoke`: a call to `POST /api/revoke` of a server's HTTP API (docs/http-api.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Failure, parse_key};

/// Whose tokens.
pub(crate) enum Target {
    ClientId(String),
    Key(String),
    All,
}

pub(crate) fn run(
    api: &str,
    key: &str,
    target: Target,
    issued_before: Option<&str>,
    lasts: &str,
) -> Result<(), Failure> {
    parse_key(key).map_err(|e| Failure::usage(format!("--key: {e}")))?;
    let lasts = humantime::parse_duration(lasts)
        .map_err(|e| Failure::usage(format!("--lasts {lasts:?}: {e}")))?;
    let mut body = serde_json::json!({});
    // Defaults (tokens issued before the server's current second) are the server's.
    if let Some(text) = issued_before {
        let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
            Failure::usage(format!(
                "--issued-before {text:?}: an RFC 3339 time such as 2026-12-03T10:00:00Z ({e})"
            ))
        })?;
        let issued_before_ms = millis(at);
        body["issued_before_ms"] = issued_before_ms.into();
        body["expires_at_ms"] = issued_before_ms
            .saturating_add(u64::try_from(lasts.as_millis()).unwrap_or(u64::MAX))
            .into();
    } else {
        body["expires_at_ms"] = millis(SystemTime::now())
            .saturating_add(u64::try_from(lasts.as_millis()).unwrap_or(u64::MAX))
            .into();
    }
    match target {
        Target::ClientId(id) => body["client_id"] = id.into(),
        Target::Key(name) => body["key"] = name.into(),
        Target::All => body["all"] = true.into(),
    }
    let url = format!("{}/api/revoke", api.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .post(&url)
        .header("X-Tether-Key", key)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map_err(|e| Failure::run(format!("{url}: {e}")))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| Failure::run(format!("{url}: {e}")))?;
    if !status.is_success() {
        let why = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                Some(format!(
                    "{} {}",
                    v["error"]["name"].as_str()?,
                    v["error"]["message"].as_str()?
                ))
            })
            .unwrap_or(text);
        return Err(Failure::run(format!("{url}: {status}: {why}")));
    }
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::run(format!("{url}: not the API's answer: {e}")))?;
    let time = |field: &str| {
        let ms = answer[field].as_u64().unwrap_or(0);
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
    };
    println!(
        "revoked: {} connection(s) closed; tokens issued before {} refused until {}",
        answer["disconnected"],
        time("issued_before_ms"),
        time("expires_at_ms"),
    );
    Ok(())
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
