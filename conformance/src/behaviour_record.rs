//! The scenarios the committed behaviour vectors were recorded from.
//!
//! A scenario lists inputs only; recording runs them and stores every output and deadline.
//! The runner never records: it replays the committed files, so any change of behaviour
//! shows up as a failing vector, and changing an expectation is a reviewed commit.

use std::path::Path;

use serde_json::Value;
use tether_core::server::{ApiKey, Capabilities, Claims, Operation, mint_token};
use tether_core::wire::{
    self, ChannelMessage, ChannelName, ClientFrame, ClientId, ConnectOptions, Continuity,
    Credentials, HistoryBound, HistoryQuery, Limits, Message, MessageId, PROTOCOL_VERSION,
    Position, ResumeSecret, ResumeToken, ServerFrame, SessionId, SessionLimits, hex,
};
use tether_core::{ErrorCode, ErrorInfo};

use crate::behaviour::{
    BehaviourVector, ClientInput, ClientSettings, HubInput, HubSettings, Machine, Step, VectorAuth,
    VectorKey, VectorMessage,
};

const UNIX: u64 = 1_767_225_600_000;

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("JSON-serializable")
}

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).expect("valid")
}

fn error(code: ErrorCode) -> ErrorInfo {
    ErrorInfo::new(code, code.name())
}

const SESSION: ResumeToken = ResumeToken {
    session_id: SessionId(77),
    secret: ResumeSecret([9; 16]),
};

fn connected(resumed: bool) -> ServerFrame {
    ServerFrame::Connected {
        session: SESSION,
        client_id: ClientId::new("me").expect("valid"),
        resumed,
        server_time_ms: UNIX,
        heartbeat_interval_ms: 15_000,
        session_ttl_ms: 120_000,
        token_expires_at_ms: None,
        limits: SessionLimits {
            max_frame_size: 65_536,
            max_channel_name_len: 256,
            max_messages_per_publish: 100,
            max_channels: 100,
        },
        error: None,
        dedupe_window_ms: None,
    }
}

fn connected_token(expires_in_ms: u64, resumed: bool) -> ServerFrame {
    let mut frame = connected(resumed);
    if let ServerFrame::Connected {
        token_expires_at_ms,
        ..
    } = &mut frame
    {
        *token_expires_at_ms = Some(UNIX + expires_in_ms);
    }
    frame
}

fn attached(
    name: &str,
    serial: u64,
    continuity: Continuity,
    error: Option<ErrorInfo>,
) -> ServerFrame {
    ServerFrame::Attached {
        channel: channel(name),
        position: Position { epoch: 5, serial },
        continuity,
        error,
    }
}

fn delivery(name: &str, epoch: u64, serial: u64) -> ServerFrame {
    ServerFrame::Message {
        channel: channel(name),
        message: ChannelMessage {
            position: Position { epoch, serial },
            message: Message {
                id: MessageId::new(format!("other:{serial}")).expect("valid"),
                name: "n".into(),
                data: bytes::Bytes::from(format!("payload {serial}")),
            },
            publisher: ClientId::new("other").expect("valid"),
            timestamp_ms: UNIX,
        },
    }
}

/// Builds a client scenario step by step.
struct ClientScript {
    file: String,
    vector: BehaviourVector,
    now: u64,
}

impl ClientScript {
    fn new(name: &str, description: &str) -> ClientScript {
        ClientScript {
            file: format!("client/{name}.json"),
            vector: BehaviourVector {
                description: description.into(),
                machine: Machine::Client,
                seed: hex::encode(&[1; 32]),
                client: Some(ClientSettings {
                    auth: VectorAuth::ApiKey {
                        name: "app".into(),
                        secret: "secret".into(),
                    },
                    ..ClientSettings::default()
                }),
                hub: None,
                client_steps: Vec::new(),
                hub_steps: Vec::new(),
            },
            now: 1_000,
        }
    }

    fn token(mut self) -> ClientScript {
        if let Some(settings) = &mut self.vector.client {
            settings.auth = VectorAuth::Token;
        }
        self
    }

    fn seed(mut self, byte: u8) -> ClientScript {
        self.vector.seed = hex::encode(&[byte; 32]);
        self
    }

    fn settings(mut self, change: impl FnOnce(&mut ClientSettings)) -> ClientScript {
        if let Some(settings) = &mut self.vector.client {
            change(settings);
        }
        self
    }

    fn after(mut self, ms: u64) -> ClientScript {
        self.now += ms;
        self
    }

    fn input(mut self, input: ClientInput) -> ClientScript {
        self.vector.client_steps.push(Step {
            at_ms: self.now,
            unix_ms: None,
            input,
            outputs: Vec::new(),
            next_deadline_ms: None,
        });
        self
    }

    /// Moves the clock to the client's next deadline and fires it.
    fn fire(mut self) -> ClientScript {
        let ran = self.vector.execute().expect("scenario runs");
        if let Some(deadline) = ran.client_steps.last().and_then(|s| s.next_deadline_ms) {
            self.now = self.now.max(deadline);
        }
        self.input(ClientInput::Timeout)
    }

    fn open(self, transport: u64) -> ClientScript {
        self.after(5)
            .input(ClientInput::TransportOpen { transport })
    }

    fn lost(self, transport: u64) -> ClientScript {
        self.input(ClientInput::TransportClosed {
            transport,
            reason: "connection reset".into(),
        })
    }

    fn recv(self, transport: u64, frame: ServerFrame) -> ClientScript {
        let bytes = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("encodes");
        self.after(10).input(ClientInput::Receive {
            transport,
            frame: Some(json(&frame)),
            hex: hex::encode(&bytes),
        })
    }

    fn garbage(self, transport: u64, bytes: &[u8]) -> ClientScript {
        self.after(10).input(ClientInput::Receive {
            transport,
            frame: None,
            hex: hex::encode(bytes),
        })
    }

    fn publish(self, name: &str, texts: &[&str]) -> ClientScript {
        let messages = texts
            .iter()
            .map(|text| VectorMessage {
                id: None,
                name: "t".into(),
                data: hex::encode(text.as_bytes()),
            })
            .collect();
        self.input(ClientInput::Publish {
            channel: name.into(),
            messages,
        })
    }

    fn attach(self, name: &str) -> ClientScript {
        self.input(ClientInput::Attach {
            channel: name.into(),
        })
    }

    /// Connects a key client to a new session on transport 0.
    fn connected(self) -> ClientScript {
        self.input(ClientInput::Connect)
            .open(0)
            .recv(0, connected(false))
    }

    /// Drops transport `t`, waits for the retry, opens `t + 1` and answers `connected`.
    fn reconnect(self, t: u64, resumed: bool) -> ClientScript {
        self.lost(t)
            .fire()
            .open(t + 1)
            .recv(t + 1, connected(resumed))
    }

    fn done(self) -> (String, BehaviourVector) {
        let vector = self.vector.execute().expect("scenario runs");
        (self.file, vector)
    }
}

fn client_scenarios() -> Vec<(String, BehaviourVector)> {
    let s = ClientScript::new;
    let frame_too_many: Vec<&str> = vec!["x"; 101];
    vec![
        s("connect-api-key", "connect with an API key: connect frame with credentials, then Connected").connected().done(),
        s("connect-token-asks-first", "token auth: the client asks the application for a token before opening a transport")
            .token().input(ClientInput::Connect).done(),
        s("connect-token", "token auth: the provided token is sent in the connect frame")
            .token().input(ClientInput::Connect).input(ClientInput::ProvideToken { token: "tok-1".into() }).open(0)
            .recv(0, connected_token(3_600_000, false)).done(),
        s("bad-credentials-failed", "an error frame for bad credentials: Failed, no retry, no timer")
            .input(ClientInput::Connect).open(0).recv(0, ServerFrame::Error { error: error(ErrorCode::InvalidCredentials) }).done(),
        s("unsupported-version-failed", "the hub refuses the protocol version: Failed")
            .input(ClientInput::Connect).open(0).recv(0, ServerFrame::Error { error: error(ErrorCode::UnsupportedVersion) }).done(),
        s("connect-timeout", "no connected within the request timeout: the attempt fails and a retry is scheduled")
            .input(ClientInput::Connect).open(0).fire().done(),
        s("websocket-blocked-falls-back", "a WebSocket upgrade answered by a proxy (403): at once an HTTP binding transport (§6.10)")
            .input(ClientInput::Connect)
            .input(ClientInput::TransportBlocked { transport: 0, reason: "the WebSocket upgrade was answered 403 Forbidden".into() })
            .open(1).recv(1, connected(false)).done(),
        s("websocket-timeout-falls-back", "a WebSocket not open within 5 s counts as blocked: an HTTP binding transport (§6.10)")
            .input(ClientInput::Connect).fire().open(1).recv(1, connected(false)).done(),
        s("fallback-probes-websocket-again", "after the probe interval (5 min) the next attempt is a WebSocket again; once it opens the client stays on it (§6.10)")
            .input(ClientInput::Connect)
            .input(ClientInput::TransportBlocked { transport: 0, reason: "the WebSocket upgrade was answered 403 Forbidden".into() })
            .open(1).recv(1, connected(false)).after(300_000).lost(1).fire().open(2).recv(2, connected(true)).lost(2).fire().done(),
        s("transport-refused-backoff", "transports that fail to open back off with growing delays")
            .input(ClientInput::Connect).lost(0).fire().lost(1).fire().lost(2).fire().lost(3).done(),
        s("liveness-timeout", "silence for heartbeat + request timeout: the transport is dead, reconnect with resume")
            .connected().fire().fire().fire().open(1).done(),
        s("any-frame-resets-liveness", "any frame from the hub moves the liveness deadline")
            .connected().after(20_000).recv(0, ServerFrame::Pong { id: 99 }).after(20_000).recv(0, ServerFrame::Heartbeat).done(),
        s("heartbeat-when-idle", "the client sends a heartbeat after sending nothing for the interval")
            .connected().fire().done(),
        s("heartbeat-interval-requested", "the requested interval goes in the connect frame; the hub's answer is used")
            .settings(|c| c.heartbeat_interval_ms = Some(60_000))
            .input(ClientInput::Connect).open(0)
            .recv(0, { let mut f = connected(false); if let ServerFrame::Connected { heartbeat_interval_ms, .. } = &mut f { *heartbeat_interval_ms = 30_000; } f })
            .fire().done(),
        s("ping-rtt", "ping and pong: the round-trip time").connected().input(ClientInput::Ping).after(42).input(ClientInput::Receive {
            transport: 0, frame: Some(json(&ServerFrame::Pong { id: 0 })), hex: hex::encode(&wire::encode(&ServerFrame::Pong { id: 0 }, &Limits::PROTOCOL_MAX).expect("encodes")),
        }).done(),
        s("ping-timeout", "a ping without a pong fails with request_timeout").connected().input(ClientInput::Ping).fire().done(),
        s("publish-ack", "a publish is sent with serial 0 and resolved by its ack")
            .connected().publish("news", &["hello"]).recv(0, ServerFrame::Ack { serial: 0, count: 1 }).done(),
        s("publish-nack", "a nack fails the publish with its code; the connection stays")
            .connected().publish("news", &["hello"]).recv(0, ServerFrame::Nack { serial: 0, count: 1, error: error(ErrorCode::Forbidden) }).done(),
        s("range-ack", "one ack for serials 0-2 resolves three publishes")
            .connected().publish("news", &["a"]).publish("news", &["b"]).publish("news", &["c"])
            .recv(0, ServerFrame::Ack { serial: 0, count: 3 }).done(),
        s("publish-queued-while-disconnected", "a publish while disconnected waits, then is sent once on the new transport")
            .connected().lost(0).publish("news", &["later"]).fire().open(1).recv(1, connected(true)).done(),
        s("publish-queue-full", "the bound on unresolved publishes refuses one more at once")
            .settings(|c| c.max_pending_publishes = Some(2)).publish("news", &["a"]).publish("news", &["b"]).publish("news", &["c"]).done(),
        s("publish-too-many-messages", "a publish of more messages than the hub accepts is refused at once")
            .connected().publish("news", &frame_too_many).done(),
        (1..=16)
            .fold(
                s("suspended-after-ttl", "unreachable for the session TTL: Suspended, pending publishes fail, new ones refused")
                    .connected().publish("news", &["stuck"]).lost(0),
                |script, t| script.fire().lost(t),
            )
            .fire()
            .publish("news", &["refused"])
            .done(),
        (1..=16)
            .fold(
                s("attach-refused-while-suspended", "Suspended: a new attach is refused at once with connection_suspended, like a publish")
                    .connected().lost(0),
                |script, t| script.fire().lost(t),
            )
            .fire()
            .attach("news")
            .done(),
        s("no-resend-after-dedupe-window", "a new session 130 s after a publish was first sent (hub window 120 s): it fails with publish_outcome_unknown instead of being resent")
            .connected().publish("news", &["late"]).lost(0).after(130_000).input(ClientInput::RetryNow).open(1)
            .recv(1, {
                let mut frame = connected(false);
                if let ServerFrame::Connected { server_time_ms, dedupe_window_ms, .. } = &mut frame {
                    *server_time_ms = UNIX + 130_000;
                    *dedupe_window_ms = Some(120_000);
                }
                frame
            })
            .done(),
        s("resend-within-dedupe-window", "a new session 60 s after a publish was first sent: resent with a new serial and the same id")
            .connected().publish("news", &["soon"]).lost(0).after(60_000).input(ClientInput::RetryNow).open(1)
            .recv(1, {
                let mut frame = connected(false);
                if let ServerFrame::Connected { server_time_ms, dedupe_window_ms, .. } = &mut frame {
                    *server_time_ms = UNIX + 60_000;
                    *dedupe_window_ms = Some(120_000);
                }
                frame
            })
            .done(),
        s("resume-success-resends-same-serials", "resumed: unacknowledged publishes are sent again with the same serials")
            .connected().publish("news", &["a"]).publish("news", &["b"]).recv(0, ServerFrame::Ack { serial: 0, count: 1 })
            .reconnect(0, true).done(),
        s("resume-failure-new-serials", "resume failed: update event, serials restart at 0 with the same message ids")
            .connected().publish("news", &["a"]).publish("news", &["b"]).recv(0, ServerFrame::Ack { serial: 0, count: 1 })
            .lost(0).fire().open(1)
            .recv(1, { let mut f = connected(false); if let ServerFrame::Connected { error: e, .. } = &mut f { *e = Some(error(ErrorCode::SessionNotFound)); } f })
            .done(),
        s("attach-fresh-deliveries", "attach without a position, then deliveries in order")
            .connected().attach("news").recv(0, attached("news", 10, Continuity::Fresh, None))
            .recv(0, delivery("news", 5, 11)).recv(0, delivery("news", 5, 12)).done(),
        s("duplicate-positions-dropped", "a position at or before the last delivered one is dropped")
            .connected().attach("news").recv(0, attached("news", 0, Continuity::Fresh, None))
            .recv(0, delivery("news", 5, 1)).recv(0, delivery("news", 5, 1)).recv(0, delivery("news", 5, 2)).done(),
        s("gap-discontinuity", "a gap after resume is an explicit discontinuity event")
            .connected().attach("news").recv(0, attached("news", 0, Continuity::Fresh, None)).recv(0, delivery("news", 5, 1))
            .reconnect(0, true).recv(1, ServerFrame::Attached { channel: channel("news"), position: Position { epoch: 6, serial: 0 }, continuity: Continuity::Gap, error: Some(error(ErrorCode::EpochChanged)) })
            .done(),
        s("skipped-serial-discontinuity", "a skipped serial in the stream is reported as a discontinuity")
            .connected().attach("news").recv(0, attached("news", 0, Continuity::Fresh, None))
            .recv(0, delivery("news", 5, 1)).recv(0, delivery("news", 5, 3)).done(),
        s("resume-channel-without-messages", "a channel that received nothing resumes from its attached position")
            .connected().attach("quiet").recv(0, attached("quiet", 40, Continuity::Fresh, None))
            .reconnect(0, true).recv(1, attached("quiet", 40, Continuity::Continuous, None)).recv(1, delivery("quiet", 5, 41)).done(),
        s("resume-replay-continuous", "resume: re-attach from the last position, replayed duplicates dropped")
            .connected().attach("news").recv(0, attached("news", 0, Continuity::Fresh, None)).recv(0, delivery("news", 5, 1)).recv(0, delivery("news", 5, 2))
            .reconnect(0, true).recv(1, attached("news", 1, Continuity::Continuous, None)).recv(1, delivery("news", 5, 2)).recv(1, delivery("news", 5, 3)).done(),
        s("attach-refused", "an attach refused by the hub is reported and forgotten")
            .connected().attach("secret").recv(0, ServerFrame::Detached { channel: channel("secret"), error: Some(error(ErrorCode::Forbidden)) }).done(),
        s("detach", "detach sends detach; the answer is a detached event")
            .connected().attach("news").recv(0, attached("news", 0, Continuity::Fresh, None))
            .input(ClientInput::Detach { channel: "news".into() }).recv(0, ServerFrame::Detached { channel: channel("news"), error: None }).done(),
        s("attach-during-detach", "an attach made while a detach awaits its answer starts fresh; the detach's answer does not end it")
            .connected().attach("news").recv(0, attached("news", 0, Continuity::Fresh, None)).recv(0, delivery("news", 5, 1))
            .input(ClientInput::Detach { channel: "news".into() }).attach("news")
            .recv(0, ServerFrame::Detached { channel: channel("news"), error: None })
            .recv(0, attached("news", 2, Continuity::Fresh, None)).recv(0, delivery("news", 5, 3)).done(),
        s("no-echo", "echo off: connect asks for it; an own_message advances the position silently, so the next message is continuous")
            .settings(|c| c.echo = Some(false))
            .connected().attach("news").recv(0, attached("news", 0, Continuity::Fresh, None))
            .recv(0, ServerFrame::OwnMessage { channel: channel("news"), position: Position { epoch: 5, serial: 1 } })
            .recv(0, delivery("news", 5, 2)).done(),
        s("attach-timeout-reconnects", "an unanswered attach means the transport is broken: close and reconnect")
            .connected().attach("news").fire().done(),
        s("history-page", "a history query and its page")
            .connected().input(ClientInput::History { channel: "news".into(), query: HistoryQuery::default() })
            .recv(0, ServerFrame::HistoryPage { request_id: 0, channel: channel("news"), messages: vec![], next: None, error: None }).done(),
        s("history-invalid-limit", "a history limit above 1000 is refused at once")
            .connected().input(ClientInput::History { channel: "news".into(), query: HistoryQuery { limit: 1001, ..HistoryQuery::default() } }).done(),
        s("backoff-seed-1", "retry delays after losing a stable connection, seed 1")
            .connected().after(11_000).lost(0).fire().lost(1).fire().lost(2).fire().lost(3).fire().lost(4).fire().done(),
        s("backoff-seed-2", "the same failures with seed 2 give other delays within the same bounds")
            .seed(2).connected().after(11_000).lost(0).fire().lost(1).fire().lost(2).fire().lost(3).fire().lost(4).fire().done(),
        s("backoff-no-reset-on-short-connections", "connections that drop before 10 s keep the backoff growing")
            .connected().after(11_000).reconnect(0, true).after(1_000).reconnect(1, true).after(1_000).reconnect(2, true).after(1_000).lost(3).done(),
        s("retry-now", "retry now skips the wait").connected().lost(0).input(ClientInput::RetryNow).done(),
        s("token-renewal-in-band", "the token is renewed on the live connection: token_required, auth frame, authed")
            .token().input(ClientInput::Connect).input(ClientInput::ProvideToken { token: "tok-1".into() }).open(0)
            .recv(0, connected_token(20_000, false)).fire()
            .input(ClientInput::ProvideToken { token: "tok-2".into() })
            .recv(0, ServerFrame::Authed { token_expires_at_ms: Some(UNIX + 400_000), error: None }).done(),
        s("token-renewal-refused", "a refused renewal is an update; the connection stays")
            .token().input(ClientInput::Connect).input(ClientInput::ProvideToken { token: "tok-1".into() }).open(0)
            .recv(0, connected_token(3_600_000, false)).input(ClientInput::ProvideToken { token: "other".into() })
            .recv(0, ServerFrame::Authed { token_expires_at_ms: None, error: Some(error(ErrorCode::ClientIdMismatch)) }).done(),
        s("token-expired-renew-resume", "token_expired disconnect: ask for a token, then reconnect and resume with it")
            .token().input(ClientInput::Connect).input(ClientInput::ProvideToken { token: "tok-1".into() }).open(0)
            .recv(0, connected_token(3_600_000, false)).recv(0, ServerFrame::Disconnect { error: error(ErrorCode::TokenExpired) })
            .after(500).input(ClientInput::ProvideToken { token: "tok-2".into() }).open(1).done(),
        s("token-refused-failed", "the application refuses a token: Failed")
            .token().input(ClientInput::Connect).input(ClientInput::TokenRefused { reason: "logged out".into() }).done(),
        s("token-unavailable-retried", "the application has no token now: the attempt fails, is retried after the backoff delay, and asks again")
            .token().input(ClientInput::Connect).input(ClientInput::TokenUnavailable { reason: "auth service unreachable".into() }).fire().done(),
        s("token-request-unanswered-retried", "a token request without an answer: dropped at the request timeout, the attempt fails, the retry asks again")
            .token().input(ClientInput::Connect).fire().fire().done(),
        s("token-new-but-expired-backs-off", "a new token the hub already sees as expired: a failed attempt, the next token asked for after the backoff delay")
            .token().input(ClientInput::Connect).input(ClientInput::ProvideToken { token: "stale".into() }).open(0)
            .recv(0, ServerFrame::Disconnect { error: error(ErrorCode::TokenExpired) }).fire().done(),
        s("close-handshake", "close sends close; closed ends it").connected().input(ClientInput::Close).recv(0, ServerFrame::Closed).done(),
        s("close-timeout", "close without an answer ends after the request timeout").connected().input(ClientInput::Close).fire().done(),
        s("old-transport-ignored", "frames and closes of an old transport do nothing")
            .connected().lost(0).fire().open(1).recv(0, connected(true)).recv(0, delivery("news", 5, 1)).lost(0).recv(1, connected(true)).done(),
        s("malformed-frame-reconnects", "undecodable bytes from the hub close the transport and reconnect")
            .connected().garbage(0, &[0xff, 0xff]).done(),
        s("disconnect-frame-reconnects", "a disconnect frame (slow consumer) closes the transport and schedules a resume")
            .connected().recv(0, ServerFrame::Disconnect { error: error(ErrorCode::SlowConsumer) }).fire().open(1).done(),
        s("second-connected-is-a-protocol-error", "a second connected on a live transport closes it")
            .connected().recv(0, connected(true)).done(),
    ]
}

/// Builds a hub scenario step by step.
struct HubScript {
    file: String,
    vector: BehaviourVector,
    now: u64,
    unix: u64,
}

fn app_key() -> ApiKey {
    ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
        capabilities: Capabilities::all(),
    }
}

fn token(sub: &str, expires_in_s: u64) -> String {
    let claims = Claims {
        sub: sub.into(),
        exp: UNIX / 1000 + expires_in_s,
        iat: UNIX / 1000,
        nbf: None,
        aud: None,
        iss: None,
        cap: Capabilities::all(),
    };
    mint_token(&app_key(), &claims).expect("signs")
}

fn key_connect(secret: &str, client_id: Option<&str>) -> ClientFrame {
    ClientFrame::Connect {
        version: PROTOCOL_VERSION,
        credentials: Credentials::ApiKey {
            name: "app".into(),
            secret: secret.into(),
        },
        client_id: client_id.map(|c| ClientId::new(c).expect("valid")),
        resume: None,
        heartbeat_interval_ms: None,
        options: None,
    }
}

/// `connect` with the options of a client that wants no echo.
fn without_echo(mut frame: ClientFrame) -> ClientFrame {
    if let ClientFrame::Connect { options, .. } = &mut frame {
        *options = Some(ConnectOptions { echo: false });
    }
    frame
}

fn token_connect(token: String) -> ClientFrame {
    ClientFrame::Connect {
        version: PROTOCOL_VERSION,
        credentials: Credentials::Token { token },
        client_id: None,
        resume: None,
        heartbeat_interval_ms: None,
        options: None,
    }
}

fn message(id: &str, text: &str) -> Message {
    Message {
        id: MessageId::new(id).expect("valid"),
        name: "n".into(),
        data: bytes::Bytes::from(text.to_owned()),
    }
}

impl HubScript {
    fn new(name: &str, description: &str) -> HubScript {
        HubScript {
            file: format!("hub/{name}.json"),
            vector: BehaviourVector {
                description: description.into(),
                machine: Machine::Hub,
                seed: hex::encode(&[3; 32]),
                client: None,
                hub: Some(HubSettings {
                    keys: vec![
                        VectorKey {
                            name: "app".into(),
                            secret: "app-secret".into(),
                            capabilities: Capabilities::all(),
                        },
                        VectorKey {
                            name: "reader".into(),
                            secret: "reader-secret".into(),
                            capabilities: Capabilities::default()
                                .with("*", &[Operation::Subscribe, Operation::History]),
                        },
                    ],
                    ..HubSettings::default()
                }),
                client_steps: Vec::new(),
                hub_steps: Vec::new(),
            },
            now: 10_000,
            unix: UNIX,
        }
    }

    fn settings(mut self, change: impl FnOnce(&mut HubSettings)) -> HubScript {
        if let Some(settings) = &mut self.vector.hub {
            change(settings);
        }
        self
    }

    fn after(mut self, ms: u64) -> HubScript {
        self.now += ms;
        self.unix += ms;
        self
    }

    fn input(mut self, input: HubInput) -> HubScript {
        self.vector.hub_steps.push(Step {
            at_ms: self.now,
            unix_ms: Some(self.unix),
            input,
            outputs: Vec::new(),
            next_deadline_ms: None,
        });
        self
    }

    fn fire(mut self) -> HubScript {
        let ran = self.vector.execute().expect("scenario runs");
        if let Some(deadline) = ran.hub_steps.last().and_then(|s| s.next_deadline_ms) {
            let step = deadline.saturating_sub(self.now);
            self = self.after(step);
        }
        self.input(HubInput::Timeout)
    }

    /// Fires every deadline up to `at_ms` (in order), then moves the clock there.
    fn run_until(mut self, at_ms: u64) -> HubScript {
        for _ in 0..1000 {
            let ran = self.vector.execute().expect("scenario runs");
            match ran.hub_steps.last().and_then(|s| s.next_deadline_ms) {
                Some(deadline) if deadline <= at_ms => self = self.fire(),
                _ => break,
            }
        }
        let step = at_ms.saturating_sub(self.now);
        self.after(step)
    }

    fn publish_text(
        self,
        connection: u64,
        serial: u64,
        name: &str,
        id: &str,
        text: &str,
    ) -> HubScript {
        self.send(
            connection,
            ClientFrame::Publish {
                serial,
                channel: channel(name),
                messages: vec![message(id, text)],
            },
        )
    }

    fn accept(self) -> HubScript {
        self.input(HubInput::Accept)
    }

    fn send(self, connection: u64, frame: ClientFrame) -> HubScript {
        let bytes = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("encodes");
        self.after(5).input(HubInput::Receive {
            connection,
            frame: Some(json(&frame)),
            hex: hex::encode(&bytes),
        })
    }

    fn raw(self, connection: u64, bytes: &[u8]) -> HubScript {
        self.after(5).input(HubInput::Receive {
            connection,
            frame: None,
            hex: hex::encode(bytes),
        })
    }

    /// Accepts connection `c` and connects it with the app key as `client_id`.
    fn client(self, client_id: &str) -> HubScript {
        let c = self.connections();
        self.accept()
            .send(c, key_connect("app-secret", Some(client_id)))
    }

    fn connections(&self) -> u64 {
        self.vector
            .hub_steps
            .iter()
            .filter(|s| s.input == HubInput::Accept)
            .count() as u64
    }

    fn publish(self, connection: u64, serial: u64, name: &str, id: &str) -> HubScript {
        self.send(
            connection,
            ClientFrame::Publish {
                serial,
                channel: channel(name),
                messages: vec![message(id, id)],
            },
        )
    }

    fn attach(self, connection: u64, name: &str, from: Option<Position>) -> HubScript {
        self.send(
            connection,
            ClientFrame::Attach {
                channel: channel(name),
                from,
            },
        )
    }

    /// The session token the hub gave connection `c` (from the recorded outputs).
    fn session_of(&self, c: u64) -> ResumeToken {
        let ran = self.vector.execute().expect("scenario runs");
        for step in &ran.hub_steps {
            for output in &step.outputs {
                if let Some(transmit) = output.get("transmit") {
                    if transmit["connection"] == c {
                        if let Ok(ServerFrame::Connected { session, .. }) =
                            serde_json::from_value(transmit["frame"].clone())
                        {
                            return session;
                        }
                    }
                }
            }
        }
        panic!("connection {c} has no session");
    }

    /// The channel position the hub attached connection `c` at last.
    fn position_of(&self, c: u64) -> Position {
        let ran = self.vector.execute().expect("scenario runs");
        let mut found = None;
        for step in &ran.hub_steps {
            for output in &step.outputs {
                if let Some(transmit) = output.get("transmit") {
                    if transmit["connection"] == c {
                        match serde_json::from_value(transmit["frame"].clone()) {
                            Ok(ServerFrame::Attached { position, .. }) => found = Some(position),
                            Ok(ServerFrame::Message { message, .. }) => {
                                found = Some(message.position)
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        found.expect("attached")
    }

    /// Accepts connection `c` and connects it as `client_id`, asking for no echo (1.1).
    fn client_without_echo(self, client_id: &str) -> HubScript {
        let c = self.connections();
        self.accept()
            .send(c, without_echo(key_connect("app-secret", Some(client_id))))
    }

    fn resume(self, client_id: &str, session: ResumeToken) -> HubScript {
        let c = self.connections();
        let mut frame = key_connect("app-secret", Some(client_id));
        if let ClientFrame::Connect { resume, .. } = &mut frame {
            *resume = Some(session);
        }
        self.accept().send(c, frame)
    }

    fn done(self) -> (String, BehaviourVector) {
        let vector = self.vector.execute().expect("scenario runs");
        (self.file, vector)
    }
}

fn alg_none_token() -> String {
    fn b64(text: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in text.as_bytes().chunks(3) {
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
    let exp = UNIX / 1000 + 3600;
    format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT","kid":"app"}"#),
        b64(&format!(r#"{{"sub":"mallory","exp":{exp},"iat":0}}"#))
    )
}

fn hub_scenarios() -> Vec<(String, BehaviourVector)> {
    let s = HubScript::new;
    let mut forged = app_key();
    forged.secret = "guess".into();
    let forged_token = mint_token(
        &forged,
        &Claims {
            sub: "m".into(),
            exp: UNIX / 1000 + 60,
            iat: UNIX / 1000,
            nbf: None,
            aud: None,
            iss: None,
            cap: Capabilities::all(),
        },
    )
    .expect("signs");
    let mut ghost = app_key();
    ghost.name = "ghost".into();
    let ghost_token = mint_token(
        &ghost,
        &Claims {
            sub: "m".into(),
            exp: UNIX / 1000 + 60,
            iat: UNIX / 1000,
            nbf: None,
            aud: None,
            iss: None,
            cap: Capabilities::all(),
        },
    )
    .expect("signs");
    let mut scenarios = vec![
        s(
            "key-auth",
            "API key with the right secret: connected, heartbeat and idle deadlines",
        )
        .client("alice")
        .done(),
        s(
            "key-auth-wrong-secret",
            "a wrong key secret: error invalid_credentials, connection closed",
        )
        .accept()
        .send(0, key_connect("wrong", None))
        .done(),
        s(
            "token-auth",
            "a valid HS256 token: connected with its client id and expiry",
        )
        .accept()
        .send(0, token_connect(token("alice", 3600)))
        .done(),
        s(
            "token-expired",
            "an expired token: disconnect token_expired (the client renews)",
        )
        .accept()
        .send(0, token_connect(token("alice", 0)))
        .after(31_000)
        .done(),
        s("token-alg-none", "alg none is refused: token_invalid")
            .accept()
            .send(0, token_connect(alg_none_token()))
            .done(),
        s(
            "token-wrong-signature",
            "a token signed with another secret: token_invalid",
        )
        .accept()
        .send(0, token_connect(forged_token))
        .done(),
        s(
            "token-unknown-kid",
            "a token naming an unknown key: token_key_unknown",
        )
        .accept()
        .send(0, token_connect(ghost_token))
        .done(),
        s(
            "token-renewal",
            "in-band renewal: authed with the new expiry",
        )
        .accept()
        .send(0, token_connect(token("alice", 60)))
        .send(
            0,
            ClientFrame::Auth {
                token: token("alice", 3600),
            },
        )
        .done(),
        s(
            "token-renewal-other-client",
            "a renewal naming another client id is refused; the connection stays",
        )
        .accept()
        .send(0, token_connect(token("alice", 600)))
        .send(
            0,
            ClientFrame::Auth {
                token: token("bob", 600),
            },
        )
        .done(),
        s(
            "token-expiry-disconnects",
            "a token that expires un-renewed disconnects the session with token_expired",
        )
        .accept()
        .send(0, token_connect(token("alice", 20)))
        .after(10_000)
        .send(0, ClientFrame::Heartbeat)
        .after(10_000)
        .send(0, ClientFrame::Heartbeat)
        .after(10_000)
        .send(0, ClientFrame::Heartbeat)
        .after(10_000)
        .send(0, ClientFrame::Heartbeat)
        .run_until(60_000)
        .done(),
        s(
            "publish-forbidden",
            "publish without capability: nack forbidden, the connection stays",
        )
        .accept()
        .send(
            0,
            ClientFrame::Connect {
                version: PROTOCOL_VERSION,
                credentials: Credentials::ApiKey {
                    name: "reader".into(),
                    secret: "reader-secret".into(),
                },
                client_id: None,
                resume: None,
                heartbeat_interval_ms: None,
                options: None,
            },
        )
        .publish(0, 0, "news", "m0")
        .send(0, ClientFrame::Ping { id: 1 })
        .done(),
        s(
            "attach-forbidden",
            "attach without capability: detached forbidden",
        )
        .settings(|h| {
            h.keys[0].capabilities =
                Capabilities::default().with("public:*", &[Operation::Subscribe])
        })
        .client("alice")
        .attach(0, "private", None)
        .attach(0, "public:news", None)
        .done(),
        s(
            "publish-fan-out",
            "a publish is acked and delivered to every subscriber from one encoding",
        )
        .client("sub1")
        .client("sub2")
        .attach(0, "news", None)
        .attach(1, "news", None)
        .client("pub")
        .publish(2, 0, "news", "m0")
        .done(),
        s(
            "duplicate-message-id",
            "the same message id twice: acked twice, stored and delivered once",
        )
        .client("sub")
        .attach(0, "news", None)
        .client("a")
        .client("b")
        .publish(1, 0, "news", "same")
        .publish(2, 0, "news", "same")
        .done(),
        s(
            "publish-serial-skip",
            "a publish serial that skips ahead is a protocol error",
        )
        .client("a")
        .publish(0, 3, "news", "m")
        .done(),
        s(
            "too-many-channels",
            "one attach beyond the session's channel limit is refused",
        )
        .settings(|h| h.max_channels_per_session = Some(1))
        .client("a")
        .attach(0, "one", None)
        .attach(0, "two", None)
        .done(),
    ];
    // Resume within the TTL keeps serials and dedupe.
    let base = s(
        "resume-within-ttl",
        "resume within the TTL: same session, serials and dedupe kept",
    )
    .client("sub")
    .attach(0, "news", None)
    .client("pub")
    .publish(1, 0, "news", "p0")
    .input(HubInput::Closed { connection: 1 })
    .after(30_000);
    let session = base.session_of(1);
    scenarios.push(
        base.resume("pub", session)
            .publish(2, 0, "news", "p0")
            .publish(2, 1, "news", "p1")
            .done(),
    );
    let base = s(
        "resume-after-ttl",
        "resume after the TTL: a new session, session_not_found",
    )
    .client("a")
    .input(HubInput::Closed { connection: 0 })
    .run_until(131_000);
    let session = base.session_of(0);
    scenarios.push(base.resume("a", session).done());
    let base = s(
        "resume-replay",
        "attach from a position after a drop: continuous, missed messages in order, then live",
    )
    .client("sub")
    .attach(0, "news", None)
    .client("pub")
    .publish(1, 0, "news", "p0");
    let position = base.position_of(0);
    let session = base.session_of(0);
    scenarios.push(
        base.input(HubInput::Closed { connection: 0 })
            .publish(1, 1, "news", "p1")
            .publish(1, 2, "news", "p2")
            .resume("sub", session)
            .attach(2, "news", Some(position))
            .publish(1, 3, "news", "p3")
            .done(),
    );
    // A resend after the dedupe window, on the resumed session: answered from its record.
    let base = s(
        "resend-answered-from-record",
        "a resend 127 s after the message was stored (dedupe window 120 s), on the session resumed within its TTL: acknowledged from the session's record, stored once",
    )
    .client("sub")
    .attach(0, "news", None)
    .client("pub")
    .publish(1, 0, "news", "p0")
    .after(13_000)
    .send(0, ClientFrame::Heartbeat)
    .send(1, ClientFrame::Heartbeat)
    .after(13_000)
    .input(HubInput::Closed { connection: 1 });
    let session = base.session_of(1);
    // The subscriber stays alive (a heartbeat every 20 s) until the publisher is back.
    let alive = (0..5).fold(base, |script, _| {
        script.after(20_000).send(0, ClientFrame::Heartbeat)
    });
    scenarios.push(
        alive
            .after(1_000)
            .resume("pub", session)
            .publish(2, 0, "news", "p0")
            .publish(2, 1, "news", "p1")
            .done(),
    );
    let mut old = key_connect("app-secret", Some("old"));
    if let ClientFrame::Connect { version, .. } = &mut old {
        *version = tether_core::wire::ProtocolVersion { major: 1, minor: 0 };
    }
    scenarios.push(
        s(
            "connect-version-1-0",
            "a 1.0 client gets the 1.0 connected frame: no appended dedupe_window_ms",
        )
        .accept()
        .send(0, old)
        .done(),
    );
    // Spec decisions (issue 20 item 11), each pinned by a vector.
    let base = s(
        "history-bounds",
        "history bounds are inclusive (forwards 2..=3 gives 2 and 3); a start after the end gives an empty page; a position of another epoch is refused",
    )
    .client("a")
    .attach(0, "news", None)
    .publish(0, 0, "news", "m0")
    .publish(0, 1, "news", "m1")
    .publish(0, 2, "news", "m2")
    .publish(0, 3, "news", "m3");
    let epoch = base.position_of(0).epoch;
    let at = |serial| HistoryBound::Position(Position { epoch, serial });
    let query = |start, end| HistoryQuery {
        start: Some(start),
        end: Some(end),
        direction: wire::Direction::Forwards,
        limit: 10,
    };
    scenarios.push(
        base.send(
            0,
            ClientFrame::HistoryRequest {
                request_id: 1,
                channel: channel("news"),
                query: query(at(2), at(3)),
            },
        )
        .send(
            0,
            ClientFrame::HistoryRequest {
                request_id: 2,
                channel: channel("news"),
                query: query(at(4), at(2)),
            },
        )
        .send(
            0,
            ClientFrame::HistoryRequest {
                request_id: 3,
                channel: channel("news"),
                query: query(
                    HistoryBound::Position(Position {
                        epoch: epoch ^ 1,
                        serial: 1,
                    }),
                    at(3),
                ),
            },
        )
        .done(),
    );
    scenarios.push(
        s(
            "attach-twice",
            "an attach of a channel the session is already attached to is answered attached again, continuing from the given position (fresh: the channel's position)",
        )
        .client("a")
        .attach(0, "news", None)
        .publish(0, 0, "news", "m0")
        .attach(0, "news", None)
        .done(),
    );
    scenarios.push(
        s(
            "detach-unattached",
            "a detach of a channel the session is not attached to is answered detached without error",
        )
        .client("a")
        .send(
            0,
            ClientFrame::Detach {
                channel: channel("never"),
            },
        )
        .done(),
    );
    scenarios.push(
        s(
            "auth-on-key-connection",
            "a token auth on a connection authenticated with an API key",
        )
        .client("a")
        .send(
            0,
            ClientFrame::Auth {
                token: token("a", 3600),
            },
        )
        .done(),
    );
    let base = s(
        "attach-ahead",
        "an attach from a position ahead of the channel (a serial it never had) is answered gap history_unavailable at the channel's position",
    )
    .client("a")
    .attach(0, "news", None);
    let position = base.position_of(0);
    scenarios.push(
        base.attach(
            0,
            "news",
            Some(Position {
                epoch: position.epoch,
                serial: position.serial + 5,
            }),
        )
        .done(),
    );
    // No echo: the publisher gets its own messages as positions, live and in a replay.
    let base = s(
        "no-echo",
        "a client that asked for no echo gets own_message for its own publishes, live and replayed after a resume; others get the message",
    )
    .client_without_echo("me")
    .attach(0, "news", None)
    .client("other")
    .attach(1, "news", None)
    .publish(0, 0, "news", "m0")
    .publish(1, 0, "news", "o0");
    let position = base.position_of(0);
    let session = base.session_of(0);
    let mut resumed = without_echo(key_connect("app-secret", Some("me")));
    if let ClientFrame::Connect { resume, .. } = &mut resumed {
        *resume = Some(session);
    }
    scenarios.push(
        base.publish(0, 1, "news", "m1")
            .input(HubInput::Closed { connection: 0 })
            .publish(1, 1, "news", "o1")
            .accept()
            .send(2, resumed)
            .attach(2, "news", Some(position))
            .done(),
    );
    let base = s(
        "gap-beyond-retention",
        "a position older than retention: attached gap history_unavailable, no partial replay",
    )
    .settings(|h| h.retention_count = Some(2))
    .client("sub")
    .attach(0, "news", None);
    let position = base.position_of(0);
    scenarios.push(
        base.input(HubInput::Closed { connection: 0 })
            .client("pub")
            .publish(1, 0, "news", "a")
            .publish(1, 1, "news", "b")
            .publish(1, 2, "news", "c")
            .client("sub2")
            .attach(2, "news", Some(position))
            .done(),
    );
    scenarios.push(
        s(
            "epoch-changed",
            "a position of another epoch (a restarted hub): attached gap epoch_changed",
        )
        .client("sub")
        .attach(
            0,
            "news",
            Some(Position {
                epoch: 12345,
                serial: 7,
            }),
        )
        .done(),
    );
    scenarios.extend([
        s(
            "history-pages",
            "history pages: limit 2 forwards, with the query for the next page",
        )
        .client("a")
        .publish(0, 0, "news", "m0")
        .publish(0, 1, "news", "m1")
        .publish(0, 2, "news", "m2")
        .send(
            0,
            ClientFrame::HistoryRequest {
                request_id: 1,
                channel: channel("news"),
                query: HistoryQuery {
                    start: None,
                    end: None,
                    direction: wire::Direction::Forwards,
                    limit: 2,
                },
            },
        )
        .done(),
        s(
            "history-unknown-channel",
            "history of a channel the hub does not hold: an empty page, no error",
        )
        .client("a")
        .send(
            0,
            ClientFrame::HistoryRequest {
                request_id: 1,
                channel: channel("nothing-here"),
                query: HistoryQuery::default(),
            },
        )
        .done(),
        s(
            "connect-token-other-client-id",
            "a token connect asking for a client id other than the token's sub",
        )
        .accept()
        .send(0, {
            let mut frame = token_connect(token("alice", 3600));
            if let ClientFrame::Connect { client_id, .. } = &mut frame {
                *client_id = Some(ClientId::new("mallory").expect("valid"));
            }
            frame
        })
        .done(),
        s(
            "history-invalid-limit",
            "a history limit of 0 is refused with invalid_history_query",
        )
        .client("a")
        .send(
            0,
            ClientFrame::HistoryRequest {
                request_id: 1,
                channel: channel("news"),
                query: HistoryQuery {
                    limit: 0,
                    ..HistoryQuery::default()
                },
            },
        )
        .done(),
        s(
            "heartbeat-when-idle",
            "a heartbeat after sending nothing for the interval",
        )
        .client("a")
        .run_until(25_005)
        .done(),
        s(
            "idle-timeout",
            "a client silent for heartbeat + grace is disconnected with idle_timeout",
        )
        .client("a")
        .run_until(35_005)
        .done(),
        s(
            "first-frame-timeout",
            "no connect within 5 s: disconnect first_frame_timeout",
        )
        .accept()
        .fire()
        .done(),
        s(
            "oversize-frame",
            "a frame over 64 KiB: error frame_too_large, only that connection closed",
        )
        .client("a")
        .client("b")
        .raw(1, &vec![4u8; 65_537])
        .send(0, ClientFrame::Ping { id: 1 })
        .done(),
        s(
            "malformed-frame",
            "a truncated publish: error truncated_frame, connection closed",
        )
        .client("a")
        .raw(0, &[4, 0, 200])
        .done(),
        s(
            "unexpected-first-frame",
            "a first frame other than connect: error unexpected_frame",
        )
        .accept()
        .send(0, ClientFrame::Ping { id: 1 })
        .done(),
        s(
            "unsupported-version",
            "connect for protocol 2: error unsupported_version before the rest is read",
        )
        .accept()
        .raw(0, &[0, 2, 0, 0xff])
        .done(),
        s(
            "slow-consumer",
            "a subscriber that never reports writes is disconnected as a slow consumer",
        )
        .settings(|h| h.max_pending_bytes = Some(400))
        .client("slow")
        .attach(0, "news", None)
        .client("pub")
        .publish_text(1, 0, "news", "m0", &"x".repeat(100))
        .publish_text(1, 1, "news", "m1", &"x".repeat(100))
        .publish_text(1, 2, "news", "m2", &"x".repeat(100))
        .publish_text(1, 3, "news", "m3", &"x".repeat(100))
        .done(),
        s(
            "connection-cap",
            "one connection beyond the cap: disconnect too_many_connections",
        )
        .settings(|h| h.max_connections = Some(1))
        .client("a")
        .accept()
        .done(),
        s("close-session", "close: closed, and the session is gone")
            .client("a")
            .send(0, ClientFrame::Close)
            .done(),
        s(
            "shutdown",
            "shutdown: every connection gets disconnect server_shutting_down",
        )
        .client("a")
        .client("b")
        .input(HubInput::Shutdown)
        .done(),
        s(
            "written-reports",
            "bytes reported written release the pending count",
        )
        .client("a")
        .input(HubInput::Written {
            connection: 0,
            bytes: 100,
        })
        .done(),
    ]);
    scenarios
}

/// Every behaviour vector, with its file name relative to the vectors folder.
pub fn all_vectors() -> Vec<(String, BehaviourVector)> {
    let mut all = client_scenarios();
    all.extend(hub_scenarios());
    all
}

/// Writes every behaviour vector below `dir`, refusing to replace files unless `overwrite`.
pub fn write_all(dir: &Path, overwrite: bool) -> Result<usize, String> {
    crate::write_json_files(dir, &all_vectors(), overwrite)
}
