//! The client's deliberately broken behaviours (feature `sabotage`; see
//! [`Sabotage`](crate::sabotage::Sabotage)). Never enabled in production builds.

use super::*;
use crate::sabotage::Sabotage;

/// State the broken behaviours need.
#[derive(Debug, Default)]
pub(super) struct SabotageState {
    messages: u64,
    losses: u64,
    held: Option<Event>,
}

impl Client {
    fn sabotage(&self) -> Sabotage {
        self.config.sabotage
    }

    /// Passes an event on, drops it, or holds it back, as the sabotage says.
    pub(super) fn sabotage_event(&mut self, event: Event) -> Option<Event> {
        if !matches!(event, Event::Message { .. }) {
            return Some(event);
        }
        match self.sabotage() {
            Sabotage::ClientDropsDeliveries => {
                self.sabotage_state.messages += 1;
                (self.sabotage_state.messages % 5 != 0).then_some(event)
            }
            Sabotage::ClientSwapsDeliveries => match self.sabotage_state.held.take() {
                Some(previous) => {
                    self.outputs.push_back(Output::Event(event));
                    Some(previous)
                }
                None => {
                    self.sabotage_state.held = Some(event);
                    None
                }
            },
            _ => Some(event),
        }
    }

    pub(super) fn sabotage_forgets_publishes(&mut self) {
        if self.sabotage() == Sabotage::ClientForgetsPendingPublishes {
            self.publishes.drain_all();
        }
    }

    pub(super) fn sabotage_accepts_stale(&self) -> bool {
        self.sabotage() == Sabotage::ClientAcceptsStaleTransports
    }

    /// True when the sabotage says an attach of an attached channel gets no answer.
    pub(super) fn sabotage_ignores_attach_of_attached(&self) -> bool {
        self.sabotage() == Sabotage::ClientIgnoresAttachOfAttached
    }

    /// True when the sabotage says to resend publishes older than the dedupe window.
    pub(super) fn sabotage_resends_past_dedupe_window(&self) -> bool {
        self.sabotage() == Sabotage::ClientResendsPastDedupeWindow
    }

    /// True when the sabotage says not to schedule this retry.
    pub(super) fn sabotage_stops_retrying(&mut self) -> bool {
        self.sabotage_state.losses += 1;
        self.sabotage() == Sabotage::ClientStopsRetrying && self.sabotage_state.losses > 2
    }
}
