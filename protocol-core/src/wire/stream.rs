//! Length-prefixed framing for ordered byte streams (TCP, QUIC streams, pipes).
//!
//! Each frame is preceded by its length as a LEB128 varint. [`StreamDecoder`] takes bytes
//! in pieces of any size and yields whole frames; it rejects an announced length over the
//! limit as soon as the prefix is read, before buffering the body.

use std::marker::PhantomData;

use bytes::{Buf, BytesMut};

use super::codec::{DecodeError, Limits, decode, read_varint};
use super::frame::Frame;

/// Incremental decoder of length-prefixed frames.
///
/// Call [`push`](StreamDecoder::push) with whatever bytes arrived, then
/// [`next_frame`](StreamDecoder::next_frame) until it returns `Ok(None)`. The buffer holds at
/// most one incomplete frame plus the bytes pushed since the last drain. After an error the
/// stream is unusable: every later call returns the same error.
#[derive(Debug)]
pub struct StreamDecoder<F> {
    buffer: BytesMut,
    limits: Limits,
    error: Option<DecodeError>,
    frame: PhantomData<fn() -> F>,
}

impl<F: Frame> StreamDecoder<F> {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> StreamDecoder<F> {
        StreamDecoder {
            buffer: BytesMut::new(),
            limits,
            error: None,
            frame: PhantomData,
        }
    }

    /// Enforces `limits` from the next frame on (a client adopts the hub's announced
    /// limits once connected).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or the error that
    /// ended the stream.
    pub fn next_frame(&mut self) -> Result<Option<F>, DecodeError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        self.try_next().inspect_err(|error| {
            self.error = Some(error.clone());
            self.buffer = BytesMut::new();
        })
    }

    /// Appends received bytes and returns every frame they complete.
    pub fn push_and_drain(&mut self, bytes: &[u8]) -> Result<Vec<F>, DecodeError> {
        self.push(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    fn try_next(&mut self) -> Result<Option<F>, DecodeError> {
        let Some((length, prefix_len)) = read_varint(&self.buffer)? else {
            return Ok(None);
        };
        if length == 0 {
            return Err(DecodeError::Empty);
        }
        if length > self.limits.max_frame_size as u64 {
            return Err(DecodeError::FrameTooLarge {
                size: length,
                max: self.limits.max_frame_size,
            });
        }
        // `length` is at most `max_frame_size`, a usize, so the cast is exact.
        let total = prefix_len + length as usize;
        if self.buffer.len() < total {
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(prefix_len);
        let body = self.buffer.split_to(length as usize).freeze();
        decode(&body, &self.limits).map(Some)
    }
}

/// The frames in bytes received from a transport: exactly one frame with message framing
/// (`decoder` is `None`), any number with stream framing.
pub fn decode_received<F: Frame>(
    decoder: Option<&mut StreamDecoder<F>>,
    bytes: &bytes::Bytes,
    limits: &Limits,
) -> Result<Vec<F>, DecodeError> {
    match decoder {
        None => decode(bytes, limits).map(|frame| vec![frame]),
        Some(decoder) => decoder.push_and_drain(bytes),
    }
}
