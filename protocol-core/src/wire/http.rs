//! The HTTP binding's framing (`docs/protocol.md` §2.5): what the bodies of the HTTP
//! fallback transport carry, for clients whose WebSocket upgrade is blocked.
//!
//! - An **up** body (client → hub, `POST`) is one or more frames, each preceded by its length
//!   as a LEB128 varint (§2.3); nothing else. [`split_frames`] splits one.
//! - A **down** body (hub → client) is a sequence of items: a frame with its varint length
//!   (§2.3), or a *mark* — a length of zero followed by one byte: [`Mark::Open`] (`00 01`:
//!   the response is streaming, sent first in stream mode) or [`Mark::End`] (`00 02`: the
//!   hub ended this response on purpose; ask for the next one). A body that stops without
//!   `End` was cut: the transport is lost. [`DownDecoder`] reads one incrementally;
//!   [`put_frame`] and the mark bytes write one.

use bytes::{Buf, Bytes, BytesMut};

use super::codec::{DecodeError, read_varint};

/// The media type of both bodies.
pub const CONTENT_TYPE: &str = "application/x-tether-stream";
/// The request header naming the transport (never the URL): 22 characters of unpadded
/// base64url, 16 random bytes, given by the hub in the answer that opened it.
pub const TRANSPORT_HEADER: &str = "x-tether-transport";
/// The request header numbering a transport's up requests: 0, 1, 2, … in order.
pub const SEQ_HEADER: &str = "x-tether-seq";
/// The request header choosing how a down response ends: `stream` or `poll`.
pub const MODE_HEADER: &str = "x-tether-mode";

/// A mark in a down body (§2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// `00 01`: the response streams (the first bytes of a stream-mode response).
    Open,
    /// `00 02`: the hub ended this response on purpose; the transport goes on.
    End,
}

impl Mark {
    /// Its bytes.
    pub const fn bytes(self) -> &'static [u8] {
        match self {
            Mark::Open => &[0, 1],
            Mark::End => &[0, 2],
        }
    }
}

/// One item of a down body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownItem {
    /// A frame's bytes (one `ServerFrame`, still encoded).
    Frame(Bytes),
    /// A mark.
    Mark(Mark),
}

/// Appends `frame` with its length prefix to `out`.
pub fn put_frame(out: &mut BytesMut, frame: &[u8]) {
    let mut length = frame.len() as u64;
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.extend_from_slice(&[byte]);
            break;
        }
        out.extend_from_slice(&[byte | 0x80]);
    }
    out.extend_from_slice(frame);
}

/// The frames of an up body, in order, sharing its buffer.
///
/// # Errors
/// [`DecodeError::Empty`] for a body of no bytes or a zero length, `FrameTooLarge` for a
/// length over `max_frame`, `Truncated` when the body ends inside a frame or its prefix,
/// `Malformed` for a prefix over 10 bytes or 64 bits.
pub fn split_frames(body: &Bytes, max_frame: usize) -> Result<Vec<Bytes>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let Some((length, prefix)) = read_varint(&body[at..])? else {
            return Err(DecodeError::Truncated);
        };
        if length == 0 {
            return Err(DecodeError::Empty);
        }
        if length > max_frame as u64 {
            return Err(DecodeError::FrameTooLarge {
                size: length,
                max: max_frame,
            });
        }
        let start = at + prefix;
        // `length` is at most `max_frame`, a usize.
        let end = start + length as usize;
        if end > body.len() {
            return Err(DecodeError::Truncated);
        }
        frames.push(body.slice(start..end));
        at = end;
    }
    Ok(frames)
}

/// Incremental reader of a down body: [`push`](DownDecoder::push) what arrived, then take
/// [`next_item`](DownDecoder::next_item) until `Ok(None)`. Holds at most one incomplete
/// item plus what was pushed since; after an error every call returns it.
#[derive(Debug)]
pub struct DownDecoder {
    buffer: BytesMut,
    max_frame: usize,
    error: Option<DecodeError>,
}

impl DownDecoder {
    /// A decoder refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> DownDecoder {
        DownDecoder {
            buffer: BytesMut::new(),
            max_frame,
            error: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// Whether bytes of an incomplete item are held (a body that ends here was cut).
    pub fn is_partial(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// The next complete item, `Ok(None)` when more bytes are needed, or the error that
    /// ended the body: `FrameTooLarge` for a length over the limit (as soon as the prefix is
    /// read), `Malformed` for an unknown mark or a bad prefix.
    pub fn next_item(&mut self) -> Result<Option<DownItem>, DecodeError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        self.try_next().inspect_err(|error| {
            self.error = Some(error.clone());
            self.buffer = BytesMut::new();
        })
    }

    fn try_next(&mut self) -> Result<Option<DownItem>, DecodeError> {
        let Some((length, prefix)) = read_varint(&self.buffer)? else {
            return Ok(None);
        };
        if length == 0 {
            let Some(mark) = self.buffer.get(prefix) else {
                return Ok(None);
            };
            let mark = match mark {
                1 => Mark::Open,
                2 => Mark::End,
                _ => return Err(DecodeError::Malformed("an unknown mark in a down body")),
            };
            self.buffer.advance(prefix + 1);
            return Ok(Some(DownItem::Mark(mark)));
        }
        if length > self.max_frame as u64 {
            return Err(DecodeError::FrameTooLarge {
                size: length,
                max: self.max_frame,
            });
        }
        let total = prefix + length as usize;
        if self.buffer.len() < total {
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(prefix);
        Ok(Some(DownItem::Frame(
            self.buffer.split_to(length as usize).freeze(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_body_reads_back_in_pieces_of_any_size() {
        let mut body = BytesMut::new();
        body.extend_from_slice(Mark::Open.bytes());
        put_frame(&mut body, &[7; 3]);
        put_frame(&mut body, &[9; 200]);
        body.extend_from_slice(Mark::End.bytes());
        for piece in [1, 2, 3, 64, 1000] {
            let mut decoder = DownDecoder::new(1024);
            let mut items = Vec::new();
            for chunk in body.chunks(piece) {
                decoder.push(chunk);
                while let Some(item) = decoder.next_item().expect("valid") {
                    items.push(item);
                }
            }
            assert_eq!(
                items,
                [
                    DownItem::Mark(Mark::Open),
                    DownItem::Frame(Bytes::from(vec![7; 3])),
                    DownItem::Frame(Bytes::from(vec![9; 200])),
                    DownItem::Mark(Mark::End),
                ]
            );
            assert!(!decoder.is_partial());
        }
    }

    #[test]
    fn bad_down_bodies_are_refused() {
        let mut decoder = DownDecoder::new(16);
        decoder.push(&[0, 3]);
        assert!(matches!(
            decoder.next_item(),
            Err(DecodeError::Malformed(_))
        ));
        assert!(decoder.next_item().is_err(), "stays failed");
        let mut decoder = DownDecoder::new(16);
        decoder.push(&[17]);
        assert!(matches!(
            decoder.next_item(),
            Err(DecodeError::FrameTooLarge { size: 17, .. })
        ));
        let mut decoder = DownDecoder::new(16);
        decoder.push(&[5, 1, 2]);
        assert_eq!(decoder.next_item(), Ok(None));
        assert!(decoder.is_partial(), "cut inside a frame");
    }

    #[test]
    fn up_bodies_split_into_frames_or_are_refused() {
        let mut body = BytesMut::new();
        put_frame(&mut body, b"abc");
        put_frame(&mut body, b"de");
        let frames = split_frames(&body.freeze(), 16).expect("valid");
        assert_eq!(
            frames,
            [Bytes::from_static(b"abc"), Bytes::from_static(b"de")]
        );
        assert_eq!(split_frames(&Bytes::new(), 16), Err(DecodeError::Empty));
        assert_eq!(
            split_frames(&Bytes::from_static(&[0]), 16),
            Err(DecodeError::Empty)
        );
        assert_eq!(
            split_frames(&Bytes::from_static(&[3, 1]), 16),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            split_frames(&Bytes::from_static(&[0x80]), 16),
            Err(DecodeError::Truncated)
        );
        assert!(matches!(
            split_frames(&Bytes::from_static(&[20, 1]), 16),
            Err(DecodeError::FrameTooLarge { size: 20, .. })
        ));
    }
}
