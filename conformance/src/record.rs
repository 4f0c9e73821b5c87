//! Writes the wire vectors from the sample frames below.
//!
//! This is how the committed files under `vectors/wire/` were made. The runner never calls
//! it: it always checks against the committed files, so a change to the encoding shows up
//! as a failing vector and changing an expectation is a reviewed commit.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use tether_core::wire::{
    self, ChannelMessage, ChannelName, ClientFrame, ClientId, ConnectOptions, Continuity,
    Credentials, Direction, Frame, HistoryBound, HistoryQuery, Limits, Message, MessageId,
    PROTOCOL_VERSION, Position, ProtocolVersion, ResumeSecret, ResumeToken, ServerFrame, SessionId,
    SessionLimits, hex,
};
use tether_core::{ErrorCode, ErrorInfo};

use crate::wire_vectors::{ExpectedError, Framing, Sender, VectorLimits, WireVector};

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).expect("sample names are valid")
}

fn message(id: &str, name: &str, data: &'static [u8]) -> Message {
    Message {
        id: MessageId::new(id).expect("sample ids are valid"),
        name: name.into(),
        data: Bytes::from_static(data),
    }
}

fn client(id: &str) -> ClientId {
    ClientId::new(id).expect("sample client ids are valid")
}

fn session() -> ResumeToken {
    ResumeToken {
        session_id: SessionId(0x5e55_1011),
        secret: ResumeSecret(*b"0123456789abcdef"),
    }
}

fn stored(serial: u64, id: &str, data: &'static [u8]) -> ChannelMessage {
    ChannelMessage {
        position: Position { epoch: 42, serial },
        message: message(id, "update", data),
        publisher: client("alice"),
        timestamp_ms: 1_767_225_600_000 + serial,
    }
}

const LIMITS: SessionLimits = SessionLimits {
    max_frame_size: 65536,
    max_channel_name_len: 256,
    max_messages_per_publish: 100,
    max_channels: 100,
};

fn client_samples() -> Vec<(&'static str, &'static str, ClientFrame)> {
    vec![
        (
            "connect-api-key",
            "first frame with an API key and nothing optional",
            ClientFrame::Connect {
                version: PROTOCOL_VERSION,
                credentials: Credentials::ApiKey {
                    name: "app".into(),
                    secret: "secret".into(),
                },
                client_id: Some(client("backend-1")),
                resume: None,
                heartbeat_interval_ms: None,
                options: None,
            },
        ),
        (
            "connect-token-resume",
            "first frame with a token, a resume token and a requested heartbeat interval",
            ClientFrame::Connect {
                version: PROTOCOL_VERSION,
                credentials: Credentials::Token {
                    token: "eyJhbGciOiJIUzI1NiJ9.e30.c2ln".into(),
                },
                client_id: None,
                resume: Some(session()),
                heartbeat_interval_ms: Some(60_000),
                options: None,
            },
        ),
        (
            "connect-1-0",
            "a version 1.0 connect: it ends after heartbeat_interval_ms (no options); 1.1 reads it with every default",
            ClientFrame::Connect {
                version: ProtocolVersion { major: 1, minor: 0 },
                credentials: Credentials::ApiKey {
                    name: "app".into(),
                    secret: "secret".into(),
                },
                client_id: None,
                resume: None,
                heartbeat_interval_ms: None,
                options: None,
            },
        ),
        (
            "connect-no-echo",
            "a 1.1 connect asking not to receive its own messages: the options field appended",
            ClientFrame::Connect {
                version: PROTOCOL_VERSION,
                credentials: Credentials::ApiKey {
                    name: "app".into(),
                    secret: "secret".into(),
                },
                client_id: None,
                resume: None,
                heartbeat_interval_ms: None,
                options: Some(ConnectOptions { echo: false }),
            },
        ),
        (
            "attach-empty-segments",
            "empty segments are allowed in channel names: `a::b:`",
            ClientFrame::Attach {
                channel: channel("a::b:"),
                from: None,
            },
        ),
        (
            "auth",
            "in-band token renewal",
            ClientFrame::Auth {
                token: "eyJhbGciOiJIUzI1NiJ9.e30.bmV3".into(),
            },
        ),
        (
            "attach-fresh",
            "attach without a position: live from now",
            ClientFrame::Attach {
                channel: channel("chat:lobby"),
                from: None,
            },
        ),
        (
            "attach-from-position",
            "attach continuing after a position",
            ClientFrame::Attach {
                channel: channel("chat:lobby"),
                from: Some(Position {
                    epoch: 42,
                    serial: 300,
                }),
            },
        ),
        (
            "detach",
            "detach a channel",
            ClientFrame::Detach {
                channel: channel("chat:lobby"),
            },
        ),
        (
            "publish-one",
            "publish of one text message",
            ClientFrame::Publish {
                serial: 0,
                channel: channel("chat:lobby"),
                messages: vec![message("c1:0", "text", b"hello")],
            },
        ),
        (
            "publish-batch",
            "publish of two messages, one with binary data and no name",
            ClientFrame::Publish {
                serial: 129,
                channel: channel("sensors:42"),
                messages: vec![
                    message("c1:129", "", &[0, 1, 2, 255]),
                    message("c1:130", "reading", b"{\"t\":21.5}"),
                ],
            },
        ),
        (
            "history-request-time",
            "history backwards over a time range",
            ClientFrame::HistoryRequest {
                request_id: 1,
                channel: channel("chat:lobby"),
                query: HistoryQuery {
                    start: Some(HistoryBound::Time(1_767_225_600_000)),
                    end: None,
                    direction: Direction::Backwards,
                    limit: 100,
                },
            },
        ),
        (
            "history-request-positions",
            "history forwards between two positions",
            ClientFrame::HistoryRequest {
                request_id: 2,
                channel: channel("chat:lobby"),
                query: HistoryQuery {
                    start: Some(HistoryBound::Position(Position {
                        epoch: 42,
                        serial: 10,
                    })),
                    end: Some(HistoryBound::Position(Position {
                        epoch: 42,
                        serial: 20,
                    })),
                    direction: Direction::Forwards,
                    limit: 1000,
                },
            },
        ),
        ("ping", "ping with an id", ClientFrame::Ping { id: 7 }),
        ("heartbeat", "client heartbeat", ClientFrame::Heartbeat),
        ("close", "orderly close", ClientFrame::Close),
    ]
}

fn server_samples() -> Vec<(&'static str, &'static str, ServerFrame)> {
    let error = |code: ErrorCode, text: &str| ErrorInfo::new(code, text);
    vec![
        (
            "connected-new",
            "a new session for an API key",
            ServerFrame::Connected {
                session: session(),
                client_id: client("backend-1"),
                resumed: false,
                server_time_ms: 1_767_225_600_000,
                heartbeat_interval_ms: 15_000,
                session_ttl_ms: 120_000,
                token_expires_at_ms: None,
                limits: LIMITS,
                error: None,
                dedupe_window_ms: None,
            },
        ),
        (
            "connected-resumed",
            "a resumed session for a token, with its expiry",
            ServerFrame::Connected {
                session: session(),
                client_id: client("alice"),
                resumed: true,
                server_time_ms: 1_767_225_600_000,
                heartbeat_interval_ms: 60_000,
                session_ttl_ms: 120_000,
                token_expires_at_ms: Some(1_767_229_200_000),
                limits: LIMITS,
                error: None,
                dedupe_window_ms: None,
            },
        ),
        (
            "connected-resume-failed",
            "a resume that could not happen: a new session, and why",
            ServerFrame::Connected {
                session: session(),
                client_id: client("alice"),
                resumed: false,
                server_time_ms: 1_767_225_600_000,
                heartbeat_interval_ms: 15_000,
                session_ttl_ms: 120_000,
                token_expires_at_ms: Some(1_767_229_200_000),
                limits: LIMITS,
                error: Some(error(
                    ErrorCode::SessionNotFound,
                    "session unknown or expired",
                )),
                dedupe_window_ms: None,
            },
        ),
        (
            "authed-ok",
            "renewal accepted with the new expiry",
            ServerFrame::Authed {
                token_expires_at_ms: Some(1_767_232_800_000),
                error: None,
            },
        ),
        (
            "authed-refused",
            "renewal refused: another client id",
            ServerFrame::Authed {
                token_expires_at_ms: None,
                error: Some(error(
                    ErrorCode::ClientIdMismatch,
                    "token names another client",
                )),
            },
        ),
        (
            "attached-fresh",
            "attached live from the current position",
            ServerFrame::Attached {
                channel: channel("chat:lobby"),
                position: Position {
                    epoch: 42,
                    serial: 300,
                },
                continuity: Continuity::Fresh,
                error: None,
            },
        ),
        (
            "attached-continuous",
            "attached continuing a position (replay follows)",
            ServerFrame::Attached {
                channel: channel("chat:lobby"),
                position: Position {
                    epoch: 42,
                    serial: 250,
                },
                continuity: Continuity::Continuous,
                error: None,
            },
        ),
        (
            "attached-gap",
            "attached, but the requested position could not be continued",
            ServerFrame::Attached {
                channel: channel("chat:lobby"),
                position: Position {
                    epoch: 43,
                    serial: 0,
                },
                continuity: Continuity::Gap,
                error: Some(error(ErrorCode::EpochChanged, "epoch changed")),
            },
        ),
        (
            "detached",
            "answer to a detach",
            ServerFrame::Detached {
                channel: channel("chat:lobby"),
                error: None,
            },
        ),
        (
            "detached-forbidden",
            "attach refused for lack of capability",
            ServerFrame::Detached {
                channel: channel("admin:audit"),
                error: Some(error(ErrorCode::Forbidden, "no subscribe capability")),
            },
        ),
        (
            "ack",
            "acknowledgement of serials 0 to 2",
            ServerFrame::Ack {
                serial: 0,
                count: 3,
            },
        ),
        (
            "nack",
            "refusal of serial 3",
            ServerFrame::Nack {
                serial: 3,
                count: 1,
                error: error(ErrorCode::Forbidden, "no publish capability"),
            },
        ),
        (
            "message",
            "a delivered message with its position",
            ServerFrame::Message {
                channel: channel("chat:lobby"),
                message: stored(301, "c1:0", b"hello"),
            },
        ),
        (
            "history-page",
            "a page of two messages and the query for the next page",
            ServerFrame::HistoryPage {
                request_id: 1,
                channel: channel("chat:lobby"),
                messages: vec![stored(301, "c1:0", b"hello"), stored(300, "c2:9", b"hi")],
                next: Some(HistoryQuery {
                    start: None,
                    end: Some(HistoryBound::Position(Position {
                        epoch: 42,
                        serial: 299,
                    })),
                    direction: Direction::Backwards,
                    limit: 2,
                }),
                error: None,
            },
        ),
        (
            "history-page-refused",
            "a history query refused",
            ServerFrame::HistoryPage {
                request_id: 3,
                channel: channel("admin:audit"),
                messages: vec![],
                next: None,
                error: Some(error(ErrorCode::Forbidden, "no history capability")),
            },
        ),
        ("pong", "answer to ping 7", ServerFrame::Pong { id: 7 }),
        ("heartbeat", "hub heartbeat", ServerFrame::Heartbeat),
        (
            "error",
            "fatal error before closing",
            ServerFrame::Error {
                error: error(ErrorCode::InvalidCredentials, "invalid key"),
            },
        ),
        (
            "disconnect",
            "the hub closes the transport; the client may resume",
            ServerFrame::Disconnect {
                error: error(ErrorCode::TokenExpired, "token expired"),
            },
        ),
        ("closed", "answer to close", ServerFrame::Closed),
        (
            "own-message",
            "version 1.1, to a client that asked for no echo: the position its own message took",
            ServerFrame::OwnMessage {
                channel: channel("chat:lobby"),
                position: Position {
                    epoch: 7,
                    serial: 43,
                },
            },
        ),
    ]
}

struct Invalid {
    name: &'static str,
    description: &'static str,
    sender: Sender,
    framing: Framing,
    limits: VectorLimits,
    bytes: Vec<u8>,
    code: ErrorCode,
}

fn invalid(
    name: &'static str,
    description: &'static str,
    sender: Sender,
    bytes: Vec<u8>,
    code: ErrorCode,
) -> Invalid {
    Invalid {
        name,
        description,
        sender,
        framing: Framing::Message,
        limits: VectorLimits::default(),
        bytes,
        code,
    }
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

fn invalid_samples() -> Vec<Invalid> {
    use Sender::{ClientToServer as C, ServerToClient as S};
    let mut long_name = vec![3];
    long_name.extend(varint(257));
    long_name.extend(std::iter::repeat_n(b'c', 257));
    let mut many = vec![4, 0, 1, b'a'];
    many.extend(varint(101));
    many.extend(std::iter::repeat_n(0xff, 200));
    let mut long_id = vec![4, 0, 1, b'a', 1];
    long_id.extend(varint(129));
    long_id.extend(std::iter::repeat_n(b'i', 129));
    long_id.extend([0, 0]);
    let mut huge_page = vec![7, 1, 1, b'a'];
    huge_page.extend(varint(1001));
    huge_page.extend(std::iter::repeat_n(0, 1100));
    let mut prefix_2_60 = varint(1 << 60);
    prefix_2_60.extend([6, 1]);
    let mut prefix_over = varint(65_537);
    prefix_over.extend([6, 1]);
    vec![
        invalid(
            "empty",
            "a message with no bytes",
            C,
            vec![],
            ErrorCode::MalformedFrame,
        ),
        invalid(
            "truncated-ping",
            "ping without its id",
            C,
            vec![6],
            ErrorCode::TruncatedFrame,
        ),
        invalid(
            "truncated-connect",
            "connect cut after the version",
            C,
            vec![0, 1, 0],
            ErrorCode::TruncatedFrame,
        ),
        invalid(
            "channel-name-c1-control",
            "a channel name with U+0085 (NEL, a C1 control character): control characters are Unicode category Cc",
            C,
            vec![3, 3, b'a', 0xc2, 0x85],
            ErrorCode::InvalidChannelName,
        ),
        invalid(
            "connect-options-truncated",
            "a 1.1 connect whose options field starts (`01`) but ends before `echo`",
            C,
            vec![0, 1, 1, 0, 3, b'a', b'p', b'p', 1, b's', 0, 0, 0, 1],
            ErrorCode::TruncatedFrame,
        ),
        invalid(
            "connect-newer-minor-unknown-field",
            "a connect announcing minor version 7 with a field after options that 1.1 does not know (`01 2a`): refused, not ignored",
            C,
            vec![
                0, 1, 7, 0, 3, b'a', b'p', b'p', 1, b's', 0, 0, 0, 1, 1, 1, 0x2a,
            ],
            ErrorCode::TrailingBytes,
        ),
        invalid(
            "connect-trailing-bytes",
            "a 1.1 connect (not a newer minor) with a byte after its options",
            C,
            vec![0, 1, 1, 0, 3, b'a', b'p', b'p', 1, b's', 0, 0, 0, 1, 0, 9],
            ErrorCode::TrailingBytes,
        ),
        invalid(
            "trailing-bytes",
            "a heartbeat followed by one more byte",
            C,
            vec![7, 0],
            ErrorCode::TrailingBytes,
        ),
        invalid(
            "unknown-client-tag",
            "client frame tag 9 is not defined",
            C,
            vec![9],
            ErrorCode::UnknownFrameType,
        ),
        invalid(
            "unknown-server-tag",
            "server frame tag 14 is not defined (13, own_message, came with 1.1)",
            S,
            vec![14],
            ErrorCode::UnknownFrameType,
        ),
        invalid(
            "tag-varint-overflow",
            "a frame tag of eleven continuation bytes",
            C,
            vec![0xff; 11],
            ErrorCode::MalformedFrame,
        ),
        invalid(
            "unsupported-version",
            "connect announcing major version 2, whatever follows",
            C,
            vec![0, 2, 0, 0xff, 0xff],
            ErrorCode::UnsupportedVersion,
        ),
        invalid(
            "unknown-credentials-kind",
            "connect whose credentials tag 5 is not defined",
            C,
            vec![0, 1, 0, 5],
            ErrorCode::MalformedFrame,
        ),
        invalid(
            "channel-name-too-long",
            "detach of a 257-byte channel name (limit 256)",
            C,
            long_name,
            ErrorCode::ChannelNameTooLong,
        ),
        invalid(
            "channel-name-star",
            "a channel name containing the reserved '*'",
            C,
            vec![3, 3, b'a', b'*', b'b'],
            ErrorCode::InvalidChannelName,
        ),
        invalid(
            "channel-name-empty",
            "an empty channel name",
            C,
            vec![3, 0],
            ErrorCode::InvalidChannelName,
        ),
        invalid(
            "channel-name-not-utf8",
            "a channel name that is not UTF-8",
            C,
            vec![3, 2, 0xc3, 0x28],
            ErrorCode::MalformedFrame,
        ),
        invalid(
            "too-many-messages",
            "publish announcing 101 messages (limit 100)",
            C,
            many,
            ErrorCode::TooManyMessages,
        ),
        invalid(
            "message-id-empty",
            "publish of a message with an empty id",
            C,
            vec![4, 0, 1, b'a', 1, 0, 0, 0],
            ErrorCode::InvalidMessage,
        ),
        invalid(
            "message-id-too-long",
            "publish of a message with a 129-byte id",
            C,
            long_id,
            ErrorCode::InvalidMessage,
        ),
        invalid(
            "bad-option-tag",
            "attach whose position option tag is 2",
            C,
            vec![2, 1, b'a', 2],
            ErrorCode::MalformedFrame,
        ),
        invalid(
            "bad-bool",
            "connected whose `resumed` flag is 2",
            S,
            {
                let mut bytes = vec![0, 1];
                bytes.extend([0; 16]);
                bytes.extend([1, b'a', 2]);
                bytes
            },
            ErrorCode::MalformedFrame,
        ),
        invalid(
            "history-page-too-long",
            "history page announcing 1001 messages (limit 1000)",
            S,
            huge_page,
            ErrorCode::BadRequest,
        ),
        Invalid {
            limits: VectorLimits {
                max_frame_size: Some(4),
                ..VectorLimits::default()
            },
            ..invalid(
                "frame-over-size-limit",
                "a 5-byte frame where the limit is 4 bytes",
                C,
                vec![3, 3, b'a', b'b', b'c'],
                ErrorCode::FrameTooLarge,
            )
        },
        Invalid {
            framing: Framing::Stream,
            ..invalid(
                "stream-prefix-2-pow-60",
                "a length prefix claiming 2^60 bytes, refused before buffering",
                C,
                prefix_2_60,
                ErrorCode::FrameTooLarge,
            )
        },
        Invalid {
            framing: Framing::Stream,
            ..invalid(
                "stream-prefix-over-limit",
                "a length prefix claiming 65537 bytes (limit 65536)",
                C,
                prefix_over,
                ErrorCode::FrameTooLarge,
            )
        },
        Invalid {
            framing: Framing::Stream,
            ..invalid(
                "stream-zero-length",
                "a length prefix of zero",
                S,
                vec![0],
                ErrorCode::MalformedFrame,
            )
        },
        Invalid {
            framing: Framing::Stream,
            ..invalid(
                "stream-cut-mid-frame",
                "a stream ending inside a frame",
                S,
                vec![2, 8],
                ErrorCode::TruncatedFrame,
            )
        },
        Invalid {
            framing: Framing::HttpUp,
            ..invalid(
                "http-up-empty",
                "an up body of no bytes (§2.5)",
                C,
                vec![],
                ErrorCode::MalformedFrame,
            )
        },
        Invalid {
            framing: Framing::HttpUp,
            ..invalid(
                "http-up-zero-length",
                "an up body with a zero length: marks are for down bodies only (§2.5)",
                C,
                vec![2, 6, 1, 0],
                ErrorCode::MalformedFrame,
            )
        },
        Invalid {
            framing: Framing::HttpUp,
            ..invalid(
                "http-up-cut-mid-frame",
                "an up body ending inside its second frame (§2.5)",
                C,
                vec![2, 6, 1, 2, 6],
                ErrorCode::TruncatedFrame,
            )
        },
        Invalid {
            framing: Framing::HttpDown,
            ..invalid(
                "http-down-unknown-mark",
                "a down body with the mark 00 03, which no version defines (§2.5)",
                S,
                vec![0, 1, 0, 3],
                ErrorCode::MalformedFrame,
            )
        },
        Invalid {
            framing: Framing::HttpDown,
            ..invalid(
                "http-down-prefix-over-limit",
                "a down body announcing a frame over the limit, refused before buffering (§2.5)",
                S,
                varint(70_000),
                ErrorCode::FrameTooLarge,
            )
        },
        Invalid {
            framing: Framing::HttpDown,
            ..invalid(
                "http-down-cut-mid-frame",
                "a down body ending inside a frame: the transport is lost (§2.5)",
                S,
                vec![0, 1, 2, 8],
                ErrorCode::TruncatedFrame,
            )
        },
    ]
}

/// A valid vector of an HTTP binding body (§2.5): its items, readable, and their bytes.
fn http_vector(
    sender: Sender,
    framing: Framing,
    description: &str,
    items: Vec<serde_json::Value>,
) -> WireVector {
    let limits = Limits::DEFAULT;
    let mut bytes = BytesMut::new();
    for item in &items {
        match (
            item.get("frame"),
            item.get("mark").and_then(serde_json::Value::as_str),
        ) {
            (Some(frame), None) => {
                let encoded = match sender {
                    Sender::ClientToServer => {
                        let frame: ClientFrame =
                            serde_json::from_value(frame.clone()).expect("a frame");
                        wire::encode(&frame, &limits)
                    }
                    Sender::ServerToClient => {
                        let frame: ServerFrame =
                            serde_json::from_value(frame.clone()).expect("a frame");
                        wire::encode(&frame, &limits)
                    }
                }
                .expect("samples fit");
                tether_core::wire::http::put_frame(&mut bytes, &encoded);
            }
            (None, Some("open")) => bytes.extend_from_slice(&[0, 1]),
            (None, Some("end")) => bytes.extend_from_slice(&[0, 2]),
            _ => panic!("not an item: {item}"),
        }
    }
    WireVector {
        description: description.into(),
        sender,
        framing,
        limits: VectorLimits::default(),
        frame: None,
        items: Some(items),
        hex: hex::encode(&bytes),
        error: None,
    }
}

fn frame_item<F: Frame>(frame: &F) -> serde_json::Value {
    serde_json::json!({ "frame": serde_json::to_value(frame).expect("frames are JSON-serializable") })
}

fn valid_vector<F: Frame>(
    sender: Sender,
    framing: Framing,
    description: &str,
    frame: &F,
) -> WireVector {
    let limits = Limits::DEFAULT;
    let bytes = match framing {
        Framing::Message => wire::encode(frame, &limits).expect("samples fit").to_vec(),
        Framing::Stream | Framing::HttpUp | Framing::HttpDown => {
            let mut out = BytesMut::new();
            wire::encode_length_prefixed(frame, &limits, &mut out).expect("samples fit");
            out.to_vec()
        }
    };
    WireVector {
        description: description.into(),
        sender,
        framing,
        limits: VectorLimits::default(),
        frame: Some(serde_json::to_value(frame).expect("frames are JSON-serializable")),
        items: None,
        hex: hex::encode(&bytes),
        error: None,
    }
}

/// Every vector with its file name relative to the wire vector folder.
pub fn all_vectors() -> Vec<(String, WireVector)> {
    let mut out = Vec::new();
    for (name, description, frame) in client_samples() {
        let vector = valid_vector(
            Sender::ClientToServer,
            Framing::Message,
            description,
            &frame,
        );
        out.push((format!("valid/client-{name}.json"), vector));
    }
    for (name, description, frame) in server_samples() {
        let vector = valid_vector(
            Sender::ServerToClient,
            Framing::Message,
            description,
            &frame,
        );
        out.push((format!("valid/server-{name}.json"), vector));
    }
    let stream_client = ClientFrame::Ping { id: 300 };
    out.push((
        "valid/stream-client-ping.json".into(),
        valid_vector(
            Sender::ClientToServer,
            Framing::Stream,
            "ping 300 with its length prefix",
            &stream_client,
        ),
    ));
    out.push((
        "valid/stream-server-message.json".into(),
        valid_vector(
            Sender::ServerToClient,
            Framing::Stream,
            "a delivered message with its length prefix",
            &ServerFrame::Message {
                channel: channel("chat:lobby"),
                message: stored(302, "c1:1", b"again"),
            },
        ),
    ));
    out.push((
        "valid/http-up-ping-and-heartbeat.json".into(),
        http_vector(
            Sender::ClientToServer,
            Framing::HttpUp,
            "an up body of the HTTP binding: two frames, each with its length prefix (§2.5)",
            vec![
                frame_item(&ClientFrame::Ping { id: 1 }),
                frame_item(&ClientFrame::Heartbeat),
            ],
        ),
    ));
    out.push((
        "valid/http-down-stream.json".into(),
        http_vector(
            Sender::ServerToClient,
            Framing::HttpDown,
            "a stream-mode down body: the open mark, frames, the end mark (§2.5)",
            vec![
                serde_json::json!({"mark": "open"}),
                frame_item(&ServerFrame::Pong { id: 1 }),
                frame_item(&ServerFrame::Message {
                    channel: channel("chat:lobby"),
                    message: stored(302, "c1:1", b"again"),
                }),
                serde_json::json!({"mark": "end"}),
            ],
        ),
    ));
    out.push((
        "valid/http-down-poll.json".into(),
        http_vector(
            Sender::ServerToClient,
            Framing::HttpDown,
            "a poll-mode down body: frames then the end mark, no open mark (§2.5)",
            vec![
                frame_item(&ServerFrame::Heartbeat),
                serde_json::json!({"mark": "end"}),
            ],
        ),
    ));
    for sample in invalid_samples() {
        let vector = WireVector {
            description: sample.description.into(),
            sender: sample.sender,
            framing: sample.framing,
            limits: sample.limits,
            frame: None,
            items: None,
            hex: hex::encode(&sample.bytes),
            error: Some(ExpectedError {
                code: sample.code.as_u32(),
                name: sample.code.name().into(),
            }),
        };
        out.push((format!("invalid/{}.json", sample.name), vector));
    }
    out
}

/// Writes every vector below `dir`, refusing to replace files unless `overwrite` is set.
pub fn write_all(dir: &Path, overwrite: bool) -> Result<usize, String> {
    crate::write_json_files(dir, &all_vectors(), overwrite)
}
