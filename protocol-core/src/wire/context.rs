//! The decode scope: how field-level deserializers learn the active limits, share the
//! input buffer instead of copying payloads, and report which limit a frame broke.
//!
//! serde's `Deserialize` impls take no context argument and postcard drops the text of
//! custom errors, so [`decode_scoped`] installs a per-thread scope for the duration of one
//! decode call. Outside such a call (for example when a frame is read from JSON) the
//! protocol maxima apply and payloads are copied.

use std::cell::{Cell, RefCell};

use bytes::Bytes;

use super::codec::{DecodeError, Limits};

// Three thread-locals rather than one scope struct: the two read by every field are plain
// `Cell`s of types without destructors, the cheapest thread-locals there are; only the
// buffer that payloads are shared from needs a destructor, and it is touched only for frames
// that carry payloads.
thread_local! {
    static LIMITS: Cell<Option<Limits>> = const { Cell::new(None) };
    static VIOLATION: Cell<Option<DecodeError>> = const { Cell::new(None) };
    static INPUT: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Restores the previous scope when dropped, so an early return or a panic cannot leak one.
struct Restore {
    limits: Option<Limits>,
    violation: Option<DecodeError>,
    input: Option<Option<Bytes>>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        LIMITS.with(|cell| cell.set(self.limits));
        VIOLATION.with(|cell| cell.set(self.violation.take()));
        if let Some(previous) = self.input.take() {
            INPUT.with(|cell| *cell.borrow_mut() = previous);
        }
    }
}

/// Runs `decode` over `input` with `limits` active; returns its result and the first limit
/// violation a field deserializer reported, if any. Payloads are shared from `share` when
/// given, copied otherwise.
pub(crate) fn decode_scoped<R>(
    input: &[u8],
    share: Option<&Bytes>,
    limits: Limits,
    decode: impl FnOnce(&[u8]) -> R,
) -> (R, Option<DecodeError>) {
    let mut restore = Restore {
        limits: LIMITS.with(|cell| cell.replace(Some(limits))),
        violation: VIOLATION.with(Cell::take),
        input: share.map(|bytes| INPUT.with(|cell| cell.replace(Some(bytes.clone())))),
    };
    let result = decode(input);
    let violation = VIOLATION.with(|cell| cell.replace(restore.violation.take()));
    drop(restore);
    (result, violation)
}

/// The limits in force: the scope's, or the protocol maxima outside a decode call.
pub(crate) fn limits() -> Limits {
    LIMITS.with(Cell::get).unwrap_or(Limits::PROTOCOL_MAX)
}

/// Records the first violation of the current decode call (later ones are consequences).
pub(crate) fn report(violation: DecodeError) {
    if LIMITS.with(Cell::get).is_none() {
        return;
    }
    VIOLATION.with(|cell| {
        let first = cell.take().unwrap_or(violation);
        cell.set(Some(first));
    });
}

/// Turns a slice of the input into shared `Bytes` without copying when the slice lies
/// inside the buffer being decoded; copies otherwise.
pub(crate) fn share(slice: &[u8]) -> Bytes {
    INPUT.with(|cell| {
        if let Some(input) = cell.borrow().as_ref() {
            let start = input.as_ptr() as usize;
            let end = start + input.len();
            let at = slice.as_ptr() as usize;
            if at >= start && at + slice.len() <= end {
                return input.slice_ref(slice);
            }
        }
        Bytes::copy_from_slice(slice)
    })
}
