//! The codec's limits and error codes, one behaviour per test.

use bytes::{Bytes, BytesMut};
use tether_core::ErrorCode;
use tether_core::wire::{
    self, ChannelName, ClientFrame, Credentials, DecodeError, Limits, Message, MessageId,
    ServerFrame, StreamDecoder,
};

fn publish(channel: &str, count: usize, payload: &'static [u8]) -> ClientFrame {
    ClientFrame::Publish {
        serial: 0,
        channel: ChannelName::new(channel).expect("valid name"),
        messages: (0..count)
            .map(|n| Message {
                id: MessageId::new(format!("m{n}")).expect("valid id"),
                name: String::new(),
                data: Bytes::from_static(payload),
            })
            .collect(),
    }
}

fn decode_client(bytes: &[u8], limits: &Limits) -> Result<ClientFrame, DecodeError> {
    wire::decode_slice(bytes, limits)
}

#[test]
fn stream_prefix_claiming_2_pow_60_bytes_fails_before_buffering() {
    let mut prefix = BytesMut::new();
    let mut value: u64 = 1 << 60;
    while value >= 0x80 {
        prefix.extend_from_slice(&[(value as u8 & 0x7f) | 0x80]);
        value >>= 7;
    }
    prefix.extend_from_slice(&[value as u8]);
    let mut decoder = StreamDecoder::<ClientFrame>::new(Limits::DEFAULT);
    decoder.push(&prefix);
    let error = decoder.next_frame().expect_err("over the limit");
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
    assert_eq!(decoder.buffered_len(), 0, "nothing kept after the error");
    decoder.push(&[0; 16]);
    assert_eq!(decoder.next_frame(), Err(error), "errors are sticky");
}

#[test]
fn stream_prefix_of_eleven_continuation_bytes_is_malformed() {
    let mut decoder = StreamDecoder::<ClientFrame>::new(Limits::DEFAULT);
    decoder.push(&[0xff; 11]);
    let error = decoder.next_frame().expect_err("bad varint");
    assert_eq!(error.code(), ErrorCode::MalformedFrame);
}

#[test]
fn stream_frame_of_zero_length_is_malformed() {
    let mut decoder = StreamDecoder::<ClientFrame>::new(Limits::DEFAULT);
    decoder.push(&[0]);
    assert_eq!(decoder.next_frame(), Err(DecodeError::Empty));
}

#[test]
fn message_frame_over_the_size_limit_is_refused() {
    let frame = publish("big", 1, &[7; 2000]);
    let bytes = wire::encode(&frame, &Limits::DEFAULT).expect("fits the default");
    let small = Limits {
        max_frame_size: 1000,
        ..Limits::DEFAULT
    };
    let error = decode_client(&bytes, &small).expect_err("too large");
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
    let error = wire::encode(&frame, &small).expect_err("the encoder checks too");
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
}

#[test]
fn channel_name_over_the_configured_length_is_refused_with_its_code() {
    let name = "c".repeat(300);
    let bytes = wire::encode(
        &ClientFrame::Detach {
            channel: ChannelName::new(name).expect("within the protocol maximum"),
        },
        &Limits::DEFAULT,
    )
    .expect("encodes");
    let error = decode_client(&bytes, &Limits::DEFAULT).expect_err("256 is the default");
    assert_eq!(
        error,
        DecodeError::ChannelNameTooLong { len: 300, max: 256 }
    );
    assert_eq!(error.code(), ErrorCode::ChannelNameTooLong);
}

#[test]
fn channel_names_with_control_characters_or_stars_are_refused() {
    for bad in ["", "a\nb", "news:*", "\u{7f}"] {
        let error = ChannelName::new(bad).expect_err(bad);
        assert_eq!(error.code, ErrorCode::InvalidChannelName, "{bad:?}");
    }
    // The decoder applies the same rule to names built by hand on the wire: tag 3
    // (detach), length 3, "a*b".
    let error = decode_client(&[3, 3, b'a', b'*', b'b'], &Limits::DEFAULT).expect_err("star");
    assert_eq!(error.code(), ErrorCode::InvalidChannelName);
}

#[test]
fn publish_announcing_more_messages_than_allowed_is_refused_before_reading_them() {
    // tag 4 (publish), serial 0, channel "a", message count 150 (varint 0x96 0x01), then
    // 200 bytes that are not messages: the count is refused before any message is read.
    let mut bytes = vec![4, 0, 1, b'a', 0x96, 0x01];
    bytes.extend_from_slice(&[0xff; 200]);
    let error = decode_client(&bytes, &Limits::DEFAULT).expect_err("too many");
    assert_eq!(
        error,
        DecodeError::TooManyMessages {
            count: 150,
            max: 100
        }
    );

    let frame = publish("a", 101, b"");
    let bytes = wire::encode(&frame, &Limits::DEFAULT).expect("encodes");
    let error = decode_client(&bytes, &Limits::DEFAULT).expect_err("101 > 100");
    assert_eq!(error.code(), ErrorCode::TooManyMessages);
}

#[test]
fn publish_announcing_more_messages_than_allowed_is_refused_by_its_count_alone() {
    // Count 1,000,000 in a 7-byte frame: the count is checked first (§2.4), whatever bytes
    // follow, and nothing is reserved for the claim.
    let bytes = [4, 0, 1, b'a', 0xc0, 0x84, 0x3d];
    let error = decode_client(&bytes, &Limits::DEFAULT).expect_err("too many");
    assert_eq!(
        error,
        DecodeError::TooManyMessages {
            count: 1_000_000,
            max: 100
        }
    );
}

#[test]
fn publish_announcing_more_messages_than_its_bytes_hold_is_truncated() {
    // Count 5 (within the limit) and no message after it.
    let bytes = [4, 0, 1, b'a', 5];
    let error = decode_client(&bytes, &Limits::DEFAULT).expect_err("truncated");
    assert_eq!(error.code(), ErrorCode::TruncatedFrame);
}

#[test]
fn connect_with_another_major_version_is_refused_before_the_rest_is_read() {
    // tag 0 (connect), major 2, then bytes a version-1 decoder could not read.
    let error = decode_client(&[0, 2, 0xff, 0xff], &Limits::DEFAULT).expect_err("v2");
    assert_eq!(error, DecodeError::UnsupportedVersion { major: 2 });
    assert_eq!(error.code(), ErrorCode::UnsupportedVersion);
}

#[test]
fn unknown_tag_trailing_bytes_and_truncation_have_their_codes() {
    let unknown = decode_client(&[9], &Limits::DEFAULT).expect_err("tag 9");
    assert_eq!(unknown.code(), ErrorCode::UnknownFrameType);
    let trailing = decode_client(&[7, 0], &Limits::DEFAULT).expect_err("heartbeat + 1 byte");
    assert_eq!(trailing, DecodeError::TrailingBytes { count: 1 });
    let truncated = decode_client(&[6], &Limits::DEFAULT).expect_err("ping without id");
    assert_eq!(truncated.code(), ErrorCode::TruncatedFrame);
    let empty = wire::decode::<ServerFrame>(&Bytes::new(), &Limits::DEFAULT).expect_err("empty");
    assert_eq!(empty.code(), ErrorCode::MalformedFrame);
}

#[test]
fn decoded_payloads_share_the_input_buffer() {
    let frame = publish("news", 2, b"hello world, this is a payload");
    let input = wire::encode(&frame, &Limits::DEFAULT).expect("encodes");
    let ClientFrame::Publish { messages, .. } =
        wire::decode::<ClientFrame>(&input, &Limits::DEFAULT).expect("decodes")
    else {
        panic!("decoded another frame type");
    };
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    for message in &messages {
        assert!(
            range.contains(&(message.data.as_ptr() as usize)),
            "payload was copied"
        );
    }
}

#[test]
fn debug_output_never_shows_credentials() {
    let key = Credentials::ApiKey {
        name: "app".into(),
        secret: "s3cr3t-value".into(),
    };
    let token = Credentials::Token {
        token: "eyJhbGciOiJIUzI1NiJ9.payload.sig".into(),
    };
    let shown = format!("{key:?} {token:?}");
    assert!(shown.contains("app"));
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(!shown.contains("eyJ"), "{shown}");
}

/// Issue 20, item 11 (decided in §2.1): an overlong varint is accepted on receipt — `80 00`
/// reads as 0 — and senders write the shortest form, so these bytes do not re-encode to
/// themselves.
#[test]
fn an_overlong_varint_is_accepted_and_re_encoded_short() {
    use tether_core::wire::{self, ClientFrame, Limits};
    let received = bytes::Bytes::from_static(&[6, 0x80, 0x00]);
    let frame: ClientFrame = wire::decode(&received, &Limits::DEFAULT).expect("accepted");
    assert_eq!(frame, ClientFrame::Ping { id: 0 });
    let sent = wire::encode(&frame, &Limits::DEFAULT).expect("encodes");
    assert_eq!(&sent[..], &[6, 0]);
}
