//! Property tests of the codec: round-trips, arbitrary input, and stream splitting.

mod support;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tether_core::wire::{
    self, ClientFrame, DecodeError, Frame, Limits, ServerFrame, StreamDecoder,
};

fn roundtrip<F: Frame + PartialEq + std::fmt::Debug>(frame: &F) {
    let limits = Limits::PROTOCOL_MAX;
    let bytes = wire::encode(frame, &limits).expect("encodes");
    let back: F = wire::decode(&bytes, &limits).expect("decodes what it encoded");
    assert_eq!(&back, frame);

    let mut stream = BytesMut::new();
    let written = wire::encode_length_prefixed(frame, &limits, &mut stream).expect("encodes");
    assert_eq!(written, stream.len());
    let mut decoder = StreamDecoder::<F>::new(limits);
    decoder.push(&stream);
    assert_eq!(decoder.next_frame().expect("decodes").as_ref(), Some(frame));
    assert_eq!(decoder.next_frame().expect("nothing more"), None);
    assert_eq!(decoder.buffered_len(), 0);
}

/// Every frame a stream decoder yields when the stream is cut at `cuts`.
fn decode_in_pieces<F: Frame>(stream: &[u8], cuts: &[usize]) -> Result<Vec<F>, DecodeError> {
    let mut decoder = StreamDecoder::<F>::new(Limits::DEFAULT);
    let mut frames = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        decoder.push(&stream[start..cut]);
        start = cut;
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
    }
    Ok(frames)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_client_frame_round_trips(frame in support::client_frame()) {
        roundtrip(&frame);
    }

    #[test]
    fn every_server_frame_round_trips(frame in support::server_frame()) {
        roundtrip(&frame);
    }

    #[test]
    fn stream_decoder_yields_the_same_frames_wherever_the_stream_is_cut(
        frames in vec(support::server_frame(), 1..6),
        cut_seeds in vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut stream = BytesMut::new();
        for frame in &frames {
            wire::encode_length_prefixed(frame, &Limits::DEFAULT, &mut stream).expect("encodes");
        }
        let mut cuts: Vec<usize> = cut_seeds.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(decode_in_pieces::<ServerFrame>(&stream, &cuts)?, frames);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12_000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in vec(any::<u8>(), 0..256)) {
        let input = Bytes::from(bytes);
        if let Err(error) = wire::decode::<ClientFrame>(&input, &Limits::DEFAULT) {
            let _ = error.code();
        }
        if let Err(error) = wire::decode::<ServerFrame>(&input, &Limits::DEFAULT) {
            let _ = error.code();
        }
        let mut decoder = StreamDecoder::<ClientFrame>::new(Limits::DEFAULT);
        decoder.push(&input);
        for _ in 0..input.len() + 1 {
            match decoder.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn mutated_valid_frames_decode_or_fail_with_a_code(
        frame in support::client_frame(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("encodes").to_vec();
        for (index, value) in flips {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        // Must not panic; a success must re-encode to a frame that decodes to itself.
        if let Ok(decoded) = wire::decode::<ClientFrame>(&Bytes::from(bytes), &Limits::PROTOCOL_MAX) {
            roundtrip(&decoded);
        }
    }
}

#[test]
fn stream_decoder_accepts_every_single_split_point() {
    let frames = vec![
        ServerFrame::Heartbeat,
        ServerFrame::Pong { id: 300 },
        ServerFrame::Ack {
            serial: 1 << 40,
            count: 7,
        },
        ServerFrame::Closed,
    ];
    let mut stream = BytesMut::new();
    for frame in &frames {
        wire::encode_length_prefixed(frame, &Limits::DEFAULT, &mut stream).expect("encodes");
    }
    for cut in 0..=stream.len() {
        assert_eq!(
            decode_in_pieces::<ServerFrame>(&stream, &[cut]).expect("decodes"),
            frames,
            "cut at {cut}"
        );
    }
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(
        decode_in_pieces::<ServerFrame>(&stream, &every_byte).expect("decodes"),
        frames
    );
}
