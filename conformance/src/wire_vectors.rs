//! Wire vectors: a frame in readable form and its exact bytes, or bytes and the error code
//! they must produce. The file format is documented in `conformance/README.md`.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether_core::ErrorCode;
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
    /// The frame in readable form (valid vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Value>,
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

/// Decodes every frame in `bytes` under `framing`; a stream must end on a frame boundary.
fn decode_all<F: Frame>(
    bytes: &[u8],
    framing: Framing,
    limits: &Limits,
) -> Result<Vec<F>, DecodeError> {
    match framing {
        Framing::Message => wire::decode(&Bytes::copy_from_slice(bytes), limits).map(|f| vec![f]),
        Framing::Stream => {
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
        Framing::Stream => {
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
