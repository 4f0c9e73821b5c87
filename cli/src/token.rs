//! `tether token`.

use tether_tokio::tether_core::wire::ClientId;
use tether_tokio::{ApiKey, Capabilities, Claims, Operation, mint_token};

use crate::{Failure, parse_key};

const OPERATIONS: &str = "subscribe, publish, history";

pub(crate) fn run(key: &str, client_id: String, ttl: u64, specs: &[String]) -> Result<(), Failure> {
    let (name, secret) = parse_key(key).map_err(|e| Failure::usage(format!("--key: {e}")))?;
    ClientId::new(client_id.as_str())
        .map_err(|e| Failure::usage(format!("--client-id {client_id:?}: {}", e.message)))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Failure::run(format!("the system clock is before 1970: {e}")))?
        .as_secs();
    let exp = now
        .checked_add(ttl)
        .ok_or_else(|| Failure::usage(format!("--ttl {ttl}: too large (the expiry overflows)")))?;
    let claims = Claims {
        sub: client_id,
        exp,
        iat: now,
        nbf: None,
        aud: None,
        iss: None,
        cap: capabilities(specs)?,
    };
    let key = ApiKey {
        name,
        secret,
        capabilities: Capabilities::default(),
    };
    let token = mint_token(&key, &claims).map_err(|e| Failure::run(e.to_string()))?;
    println!("{token}");
    Ok(())
}

/// `pattern=op+op` specs; none means everything.
fn capabilities(specs: &[String]) -> Result<Capabilities, Failure> {
    if specs.is_empty() {
        return Ok(Capabilities::all());
    }
    let mut caps = Capabilities::default();
    for spec in specs {
        let bad = |why: String| Failure::usage(format!("--cap {spec:?}: {why}"));
        let (pattern, ops) = spec
            .split_once('=')
            .ok_or_else(|| bad(format!("expected pattern=op+op (operations: {OPERATIONS})")))?;
        if pattern.is_empty() {
            return Err(bad("the channel pattern is empty".into()));
        }
        let ops = ops
            .split('+')
            .map(|op| match op {
                "subscribe" => Ok(Operation::Subscribe),
                "publish" => Ok(Operation::Publish),
                "history" => Ok(Operation::History),
                other => Err(bad(format!(
                    "unknown operation {other:?}; valid operations: {OPERATIONS}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        caps = caps.with(pattern, &ops);
    }
    Ok(caps)
}
