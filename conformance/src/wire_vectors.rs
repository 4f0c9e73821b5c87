//! Wire vectors: a frame in readable form and its exact bytes, or bytes and the error code
//! they must produce. The file format is documented in `conformance/README.md`.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether_core::ErrorCode;
use tether_core::wire::http::{self as binding, Mark};
use tether_core::wire::{
    self, ClientFrame, DecodeError, Frame, Limits, ServerFrame, StreamDecoder, hex,
};

/// Who sends the frame of a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    /// A client frame, decoded by hubs.
    ClientToServer,
    /// A hub frame, decoded by clients.
    ServerToClient,
}

/// How the bytes are delimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// The bytes are one transport message holding one frame (WebSocket).
    #[default]
    Message,
    /// The bytes are a byte stream of length-prefixed frames.
    Stream,
    /// The bytes are an up body of the HTTP binding (§2.5): length-prefixed frames.
    HttpUp,
    /// The bytes are a down body of the HTTP binding (§2.5): frames and marks.
    HttpDown,
}

/// Limits a vector runs under; absent fields take the protocol defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorLimits {
    /// Overrides the maximum frame size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame_size: Option<usize>,
    /// Overrides the maximum channel name length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_channel_name_len: Option<usize>,
    /// Overrides the maximum number of messages per publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_publish: Option<usize>,
}

impl VectorLimits {
    fn resolve(self) -> Limits {
        let default = Limits::DEFAULT;
        Limits {
            max_frame_size: self.max_frame_size.unwrap_or(default.max_frame_size),
            max_channel_name_len: self
                .max_channel_name_len
                .unwrap_or(default.max_channel_name_len),
            max_messages_per_publish: self
                .max_messages_per_publish
                .unwrap_or(default.max_messages_per_publish),
        }
    }

    fn is_default(&self) -> bool {
        *self == VectorLimits::default()
    }
}

/// The error an invalid vector must produce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedError {
    /// The numeric code.
    pub code: u32,
    /// The code's short name (informative; the runner checks it matches the code).
    pub name: String,
}

/// One wire vector file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireVector {
    /// What the vector shows.
    pub description: String,
    /// Which side sends the frame.
    pub sender: Sender,
    /// How the bytes are delimited.
    #[serde(default)]
    pub framing: Framing,
    /// Limits in force, when not the defaults.
    #[serde(default, skip_serializing_if = "VectorLimits::is_default")]
    pub limits: VectorLimits,
    /// The frame in readable form (valid vectors of `message` and `stream` framing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Value>,
    /// The body's items in order (valid vectors of the HTTP framings): each
    /// `{"frame": <readable frame>}` or `{"mark": "open" | "end"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Value>>,
    /// The exact bytes, lower-case hex.
    pub hex: String,
    /// The error the bytes must produce (invalid vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExpectedError>,
}

impl WireVector {
    /// Checks the vector against the codec: a valid vector must decode to its frame and its
    /// frame must encode to its bytes; an invalid vector must fail with its code.
    pub fn check(&self) -> Result<(), String> {
        let bytes = hex::decode(&self.hex).map_err(|e| format!("hex: {e}"))?;
        let limits = self.limits.resolve();
        if matches!(self.framing, Framing::HttpUp | Framing::HttpDown) {
            return self.check_http(&bytes, &limits);
        }
        match (&self.frame, &self.error) {
            (Some(frame), None) => match self.sender {
                Sender::ClientToServer => {
                    check_valid::<ClientFrame>(frame, &bytes, self.framing, &limits)
                }
                Sender::ServerToClient => {
                    check_valid::<ServerFrame>(frame, &bytes, self.framing, &limits)
                }
            },
            (None, Some(expected)) => {
                let code = ErrorCode::from_u32_exact(expected.code)
                    .ok_or_else(|| format!("unknown expected code {}", expected.code))?;
                if code.name() != expected.name {
                    return Err(format!(
                        "expected code {} is named {}, not {}",
                        expected.code,
                        code.name(),
                        expected.name
                    ));
                }
                let outcome = match self.sender {
                    Sender::ClientToServer => {
                        decode_all::<ClientFrame>(&bytes, self.framing, &limits).map(|_| ())
                    }
                    Sender::ServerToClient => {
                        decode_all::<ServerFrame>(&bytes, self.framing, &limits).map(|_| ())
                    }
                };
                match outcome {
                    Ok(()) => Err(format!("decoded, but {code} was expected")),
                    Err(error) if error.code() == code => Ok(()),
                    Err(error) => Err(format!(
                        "failed with {} ({error}), not {code}",
                        error.code()
                    )),
                }
            }
            _ => Err("a vector has exactly one of `frame` and `error`".into()),
        }
    }
}

impl WireVector {
    /// An HTTP binding body: its items decode to the vector's and encode to its bytes, or it
    /// fails with the vector's code.
    fn check_http(&self, bytes: &[u8], limits: &Limits) -> Result<(), String> {
        let decoded = http_items(bytes, self.framing, self.sender, limits);
        match (&self.items, &self.error) {
            (Some(items), None) => {
                let decoded = decoded.map_err(|e| format!("decode: {e}"))?;
                if &decoded != items {
                    return Err(format!("decodes to {decoded:?}, vector says {items:?}"));
                }
                let mut encoded = BytesMut::new();
                for item in items {
                    match (item.get("frame"), item.get("mark").and_then(Value::as_str)) {
                        (Some(frame), None) => {
                            let bytes = match self.sender {
                                Sender::ClientToServer => {
                                    encode_readable::<ClientFrame>(frame, limits)?
                                }
                                Sender::ServerToClient => {
                                    encode_readable::<ServerFrame>(frame, limits)?
                                }
                            };
                            binding::put_frame(&mut encoded, &bytes);
                        }
                        (None, Some("open")) => encoded.extend_from_slice(Mark::Open.bytes()),
                        (None, Some("end")) => encoded.extend_from_slice(Mark::End.bytes()),
                        _ => return Err(format!("not an item: {item}")),
                    }
                }
                if encoded[..] != bytes[..] {
                    return Err(format!(
                        "encodes to {}, vector says {}",
                        hex::encode(&encoded),
                        hex::encode(bytes)
                    ));
                }
                Ok(())
            }
            (None, Some(expected)) => {
                let code = ErrorCode::from_u32_exact(expected.code)
                    .ok_or_else(|| format!("unknown expected code {}", expected.code))?;
                match decoded {
                    Ok(_) => Err(format!("decoded, but {code} was expected")),
                    Err(error) if error.code() == code => Ok(()),
                    Err(error) => Err(format!(
                        "failed with {} ({error}), not {code}",
                        error.code()
                    )),
                }
            }
            _ => Err("an HTTP vector has exactly one of `items` and `error`".into()),
        }
    }
}

fn encode_readable<F: Frame>(readable: &Value, limits: &Limits) -> Result<Bytes, String> {
    let frame: F = serde_json::from_value(readable.clone())
        .map_err(|e| format!("readable frame does not parse: {e}"))?;
    wire::encode(&frame, limits).map_err(|e| format!("encode failed: {e}"))
}

/// The readable items of an HTTP binding body; a down body must end on an item boundary.
fn http_items(
    bytes: &[u8],
    framing: Framing,
    sender: Sender,
    limits: &Limits,
) -> Result<Vec<Value>, DecodeError> {
    let readable = |frame: Bytes| -> Result<Value, DecodeError> {
        let value = match sender {
            Sender::ClientToServer => {
                serde_json::to_value(wire::decode::<ClientFrame>(&frame, limits)?)
            }
            Sender::ServerToClient => {
                serde_json::to_value(wire::decode::<ServerFrame>(&frame, limits)?)
            }
        };
        Ok(serde_json::json!({ "frame": value.unwrap_or(Value::Null) }))
    };
    let mut items = Vec::new();
    if framing == Framing::HttpUp {
        for frame in binding::split_frames(&Bytes::copy_from_slice(bytes), limits.max_frame_size)? {
            items.push(readable(frame)?);
        }
        return Ok(items);
    }
    let mut decoder = binding::DownDecoder::new(limits.max_frame_size);
    decoder.push(bytes);
    while let Some(item) = decoder.next_item()? {
        items.push(match item {
            binding::DownItem::Frame(frame) => readable(frame)?,
            binding::DownItem::Mark(Mark::Open) => serde_json::json!({ "mark": "open" }),
            binding::DownItem::Mark(Mark::End) => serde_json::json!({ "mark": "end" }),
        });
    }
    if decoder.is_partial() {
        return Err(DecodeError::Truncated);
    }
    Ok(items)
}

/// Decodes every frame in `bytes` under `framing`; a stream must end on a frame boundary.
fn decode_all<F: Frame>(
    bytes: &[u8],
    framing: Framing,
    limits: &Limits,
) -> Result<Vec<F>, DecodeError> {
    match framing {
        Framing::Message => wire::decode(&Bytes::copy_from_slice(bytes), limits).map(|f| vec![f]),
        Framing::Stream | Framing::HttpUp | Framing::HttpDown => {
            let mut decoder = StreamDecoder::new(*limits);
            decoder.push(bytes);
            let mut frames = Vec::new();
            while let Some(frame) = decoder.next_frame()? {
                frames.push(frame);
            }
            if decoder.buffered_len() > 0 {
                return Err(DecodeError::Truncated);
            }
            Ok(frames)
        }
    }
}

fn check_valid<F: Frame>(
    readable: &Value,
    bytes: &[u8],
    framing: Framing,
    limits: &Limits,
) -> Result<(), String> {
    let frame: F = serde_json::from_value(readable.clone())
        .map_err(|e| format!("readable frame does not parse: {e}"))?;
    let encoded = match framing {
        Framing::Message => wire::encode(&frame, limits).map(|b| b.to_vec()),
        Framing::Stream | Framing::HttpUp | Framing::HttpDown => {
            let mut out = BytesMut::new();
            wire::encode_length_prefixed(&frame, limits, &mut out).map(|_| out.to_vec())
        }
    }
    .map_err(|e| format!("encode failed: {e}"))?;
    if encoded != bytes {
        return Err(format!(
            "encodes to {}, vector says {}",
            hex::encode(&encoded),
            hex::encode(bytes)
        ));
    }
    let decoded = decode_all::<F>(bytes, framing, limits).map_err(|e| format!("decode: {e}"))?;
    let [decoded] = decoded.as_slice() else {
        return Err(format!("{} frames decoded, 1 expected", decoded.len()));
    };
    let decoded = serde_json::to_value(decoded).map_err(|e| e.to_string())?;
    if &decoded != readable {
        return Err(format!("decodes to {decoded}, vector says {readable}"));
    }
    Ok(())
}

/// Reads one vector file.
pub fn load(path: &Path) -> Result<WireVector, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not a wire vector: {e}"))
}

/// Every `.json` file below `dir`, sorted.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "json") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
