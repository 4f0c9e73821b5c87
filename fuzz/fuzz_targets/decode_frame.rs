//! Arbitrary bytes as one frame of either direction: decoding never panics, and whatever
//! decodes re-encodes to a frame that decodes to itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether_core::wire::{self, ClientFrame, Limits, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    let limits = Limits::DEFAULT;
    if let Ok(frame) = wire::decode::<ClientFrame>(&input, &limits) {
        let again = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("decoded frames encode");
        assert_eq!(wire::decode::<ClientFrame>(&again, &Limits::PROTOCOL_MAX), Ok(frame));
    }
    if let Ok(frame) = wire::decode::<ServerFrame>(&input, &limits) {
        let again = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("decoded frames encode");
        assert_eq!(wire::decode::<ServerFrame>(&again, &Limits::PROTOCOL_MAX), Ok(frame));
    }
});
