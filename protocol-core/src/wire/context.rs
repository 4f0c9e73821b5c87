//! The decode scope: how field-level deserializers learn the active limits, share the
//! input buffer instead of copying payloads, and report which limit a frame broke.
//!
//! serde's `Deserialize` impls take no context argument and postcard drops the text of
//! custom errors, so [`decode_scoped`] installs a per-thread scope for the duration of one
//! decode call. Outside such a call (for example when a frame is read from JSON) the
//! protocol maxima apply and payloads are copied.

use std::cell::RefCell;

use bytes::Bytes;

use super::codec::{DecodeError, Limits};

struct Scope {
    input: Bytes,
    limits: Limits,
    violation: Option<DecodeError>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Restores the previous scope when dropped, so an early return cannot leak a scope.
struct Restore(Option<Scope>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        ACTIVE.with(|active| *active.borrow_mut() = previous);
    }
}

/// Runs `decode` over `input` with `limits` active; returns its result and the first limit
/// violation a field deserializer reported, if any.
pub(crate) fn decode_scoped<R>(
    input: &Bytes,
    limits: Limits,
    decode: impl FnOnce(&[u8]) -> R,
) -> (R, Option<DecodeError>) {
    let scope = Scope {
        input: input.clone(),
        limits,
        violation: None,
    };
    let previous = ACTIVE.with(|active| active.borrow_mut().replace(scope));
    let restore = Restore(previous);
    let result = decode(input);
    let violation = ACTIVE.with(|active| {
        active
            .borrow_mut()
            .as_mut()
            .and_then(|scope| scope.violation.take())
    });
    drop(restore);
    (result, violation)
}

/// The limits in force: the scope's, or the protocol maxima outside a decode call.
pub(crate) fn limits() -> Limits {
    ACTIVE.with(|active| {
        active
            .borrow()
            .as_ref()
            .map_or(Limits::PROTOCOL_MAX, |scope| scope.limits)
    })
}

/// Records the first violation of the current decode call (later ones are consequences).
pub(crate) fn report(violation: DecodeError) {
    ACTIVE.with(|active| {
        if let Some(scope) = active.borrow_mut().as_mut() {
            scope.violation.get_or_insert(violation);
        }
    });
}

/// Turns a slice of the input into shared `Bytes` without copying when the slice lies
/// inside the buffer being decoded; copies otherwise.
pub(crate) fn share(slice: &[u8]) -> Bytes {
    ACTIVE.with(|active| {
        if let Some(scope) = active.borrow().as_ref() {
            let start = scope.input.as_ptr() as usize;
            let end = start + scope.input.len();
            let at = slice.as_ptr() as usize;
            if at >= start && at + slice.len() <= end {
                return scope.input.slice_ref(slice);
            }
        }
        Bytes::copy_from_slice(slice)
    })
}
