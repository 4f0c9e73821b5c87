//! A tour of the wire format: encodes a few frames, shows their bytes in both framings, and
//! decodes them back. Run with `cargo run -p tether-core --example wire_tour`.

use bytes::{Bytes, BytesMut};
use tether_core::wire::{
    self, ChannelName, ClientFrame, Credentials, Limits, Message, MessageId, PROTOCOL_VERSION,
    StreamDecoder, hex,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limits = Limits::DEFAULT;
    let frames = vec![
        ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            credentials: Credentials::ApiKey {
                name: "app".into(),
                secret: "secret".into(),
            },
            client_id: None,
            resume: None,
            heartbeat_interval_ms: Some(30_000),
            options: None,
        },
        ClientFrame::Attach {
            channel: ChannelName::new("chat:lobby")?,
            from: None,
        },
        ClientFrame::Publish {
            serial: 0,
            channel: ChannelName::new("chat:lobby")?,
            messages: vec![Message {
                id: MessageId::new("c1:0")?,
                name: "text".into(),
                data: Bytes::from_static(b"hello"),
            }],
        },
        ClientFrame::Ping { id: 1 },
    ];

    let mut stream = BytesMut::new();
    for frame in &frames {
        let bytes = wire::encode(frame, &limits)?;
        println!(
            "{:<8} {:>3} bytes  {}",
            frame_kind(frame),
            bytes.len(),
            hex::encode(&bytes)
        );
        let back: ClientFrame = wire::decode(&bytes, &limits)?;
        assert_eq!(&back, frame, "decodes to itself");
        wire::encode_length_prefixed(frame, &limits, &mut stream)?;
    }

    let mut decoder = StreamDecoder::<ClientFrame>::new(limits);
    let mut count = 0;
    for byte in stream.iter() {
        decoder.push(std::slice::from_ref(byte));
        while let Some(frame) = decoder.next_frame()? {
            assert_eq!(frame, frames[count]);
            count += 1;
        }
    }
    println!(
        "stream framing: {} bytes fed one at a time gave back all {count} frames",
        stream.len()
    );

    let error = wire::decode::<ClientFrame>(&Bytes::from_static(&[0, 2]), &limits)
        .expect_err("version 2 is refused");
    println!(
        "a connect for protocol 2.x is refused: {} ({error})",
        error.code()
    );
    Ok(())
}

fn frame_kind(frame: &ClientFrame) -> &'static str {
    use tether_core::wire::Frame;
    frame.kind()
}
