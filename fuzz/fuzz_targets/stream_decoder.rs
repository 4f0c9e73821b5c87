//! Arbitrary bytes cut at arbitrary points into the incremental stream decoder: no panic, and
//! the buffer never holds more than one frame's worth beyond what was pushed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::wire::{ClientFrame, Limits, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&cut_seed, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_frame_size: 1024,
        ..Limits::DEFAULT
    };
    let mut decoder = StreamDecoder::<ClientFrame>::new(limits);
    let step = usize::from(cut_seed).max(1);
    for piece in rest.chunks(step) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(decoder.buffered_len() <= limits.max_frame_size + 10 + step);
    }
});
