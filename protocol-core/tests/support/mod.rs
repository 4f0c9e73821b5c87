//! Test support: proptest strategies producing every frame type, and a scripted hub.
#![allow(dead_code)]

pub mod hub;
pub mod pair;
pub mod scripted;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tether_core::wire::{
    ChannelMessage, ChannelName, ClientFrame, ClientId, Continuity, Credentials, Direction,
    HistoryBound, HistoryQuery, Message, MessageId, Position, ProtocolVersion, ResumeSecret,
    ResumeToken, ServerFrame, SessionId, SessionLimits,
};
use tether_core::{ErrorCode, ErrorInfo};

pub fn channel() -> impl Strategy<Value = ChannelName> {
    "[a-z0-9:_\\-é]{1,40}".prop_map(|name| ChannelName::new(name).expect("valid by construction"))
}

pub fn message_id() -> impl Strategy<Value = MessageId> {
    "[a-zA-Z0-9:]{1,64}".prop_map(|id| MessageId::new(id).expect("valid by construction"))
}

pub fn client_id() -> impl Strategy<Value = ClientId> {
    "[a-zA-Z0-9@.]{1,32}".prop_map(|id| ClientId::new(id).expect("valid by construction"))
}

pub fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

pub fn message() -> impl Strategy<Value = Message> {
    (message_id(), "[a-z.]{0,16}", payload()).prop_map(|(id, name, data)| Message {
        id,
        name,
        data,
    })
}

pub fn position() -> impl Strategy<Value = Position> {
    (any::<u64>(), any::<u64>()).prop_map(|(epoch, serial)| Position { epoch, serial })
}

pub fn error_info() -> impl Strategy<Value = ErrorInfo> {
    (proptest::sample::select(ErrorCode::ALL), ".{0,40}")
        .prop_map(|(code, message)| ErrorInfo::new(code, message))
}

pub fn resume_token() -> impl Strategy<Value = ResumeToken> {
    (any::<u64>(), any::<[u8; 16]>()).prop_map(|(id, secret)| ResumeToken {
        session_id: SessionId(id),
        secret: ResumeSecret(secret),
    })
}

pub fn channel_message() -> impl Strategy<Value = ChannelMessage> {
    (position(), message(), client_id(), any::<u64>()).prop_map(
        |(position, message, publisher, timestamp_ms)| ChannelMessage {
            position,
            message,
            publisher,
            timestamp_ms,
        },
    )
}

pub fn history_query() -> impl Strategy<Value = HistoryQuery> {
    let bound = prop_oneof![
        position().prop_map(HistoryBound::Position),
        any::<u64>().prop_map(HistoryBound::Time),
    ];
    (
        option::of(bound.clone()),
        option::of(bound),
        prop_oneof![Just(Direction::Backwards), Just(Direction::Forwards)],
        1u32..=1000,
    )
        .prop_map(|(start, end, direction, limit)| HistoryQuery {
            start,
            end,
            direction,
            limit,
        })
}

pub fn credentials() -> impl Strategy<Value = Credentials> {
    prop_oneof![
        ("[a-z]{1,8}", "[a-zA-Z0-9]{1,32}")
            .prop_map(|(name, secret)| Credentials::ApiKey { name, secret }),
        "[a-zA-Z0-9._\\-]{1,200}".prop_map(|token| Credentials::Token { token }),
    ]
}

pub fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (
            any::<u16>(),
            credentials(),
            option::of(client_id()),
            option::of(resume_token()),
            option::of(any::<u32>())
        )
            .prop_map(
                |(minor, credentials, client_id, resume, heartbeat_interval_ms)| {
                    ClientFrame::Connect {
                        version: ProtocolVersion { major: 1, minor },
                        credentials,
                        client_id,
                        resume,
                        heartbeat_interval_ms,
                        options: None,
                    }
                }
            ),
        "[a-zA-Z0-9._\\-]{0,200}".prop_map(|token| ClientFrame::Auth { token }),
        (channel(), option::of(position()))
            .prop_map(|(channel, from)| ClientFrame::Attach { channel, from }),
        channel().prop_map(|channel| ClientFrame::Detach { channel }),
        (any::<u64>(), channel(), vec(message(), 1..5)).prop_map(|(serial, channel, messages)| {
            ClientFrame::Publish {
                serial,
                channel,
                messages,
            }
        }),
        (any::<u64>(), channel(), history_query()).prop_map(|(request_id, channel, query)| {
            ClientFrame::HistoryRequest {
                request_id,
                channel,
                query,
            }
        }),
        any::<u64>().prop_map(|id| ClientFrame::Ping { id }),
        Just(ClientFrame::Heartbeat),
        Just(ClientFrame::Close),
    ]
}

pub fn session_limits() -> impl Strategy<Value = SessionLimits> {
    any::<[u32; 4]>().prop_map(|[a, b, c, d]| SessionLimits {
        max_frame_size: a,
        max_channel_name_len: b,
        max_messages_per_publish: c,
        max_channels: d,
    })
}

pub fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (
            resume_token(),
            client_id(),
            any::<bool>(),
            any::<(u64, u32, u32)>(),
            option::of(any::<u64>()),
            session_limits(),
            option::of(error_info())
        )
            .prop_map(
                |(session, client_id, resumed, times, token_expires_at_ms, limits, error)| {
                    ServerFrame::Connected {
                        session,
                        client_id,
                        resumed,
                        server_time_ms: times.0,
                        heartbeat_interval_ms: times.1,
                        session_ttl_ms: times.2,
                        token_expires_at_ms,
                        limits,
                        error,
                        dedupe_window_ms: None,
                    }
                }
            ),
        (option::of(any::<u64>()), option::of(error_info())).prop_map(
            |(token_expires_at_ms, error)| ServerFrame::Authed {
                token_expires_at_ms,
                error
            }
        ),
        (
            channel(),
            position(),
            prop_oneof![
                Just(Continuity::Fresh),
                Just(Continuity::Continuous),
                Just(Continuity::Gap)
            ],
            option::of(error_info())
        )
            .prop_map(
                |(channel, position, continuity, error)| ServerFrame::Attached {
                    channel,
                    position,
                    continuity,
                    error
                }
            ),
        (channel(), option::of(error_info()))
            .prop_map(|(channel, error)| ServerFrame::Detached { channel, error }),
        (any::<u64>(), 1u32..1000).prop_map(|(serial, count)| ServerFrame::Ack { serial, count }),
        (any::<u64>(), 1u32..1000, error_info()).prop_map(|(serial, count, error)| {
            ServerFrame::Nack {
                serial,
                count,
                error,
            }
        }),
        (channel(), channel_message())
            .prop_map(|(channel, message)| ServerFrame::Message { channel, message }),
        (
            any::<u64>(),
            channel(),
            vec(channel_message(), 0..4),
            option::of(history_query()),
            option::of(error_info())
        )
            .prop_map(|(request_id, channel, messages, next, error)| {
                ServerFrame::HistoryPage {
                    request_id,
                    channel,
                    messages,
                    next,
                    error,
                }
            }),
        any::<u64>().prop_map(|id| ServerFrame::Pong { id }),
        Just(ServerFrame::Heartbeat),
        error_info().prop_map(|error| ServerFrame::Error { error }),
        error_info().prop_map(|error| ServerFrame::Disconnect { error }),
        Just(ServerFrame::Closed),
    ]
}
