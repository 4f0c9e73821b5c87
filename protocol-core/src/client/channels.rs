//! Channel attachments and in-order, once-only delivery: `docs/protocol.md` §6.6.

use super::event::Event;
use crate::error::ErrorInfo;
use crate::time::Time;
use crate::wire::{ChannelMessage, ChannelName, ClientFrame, Continuity, Position};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Wanted, but not (yet) sent on the current transport.
    Pending,
    /// `attach` sent; answer due by the deadline.
    Attaching { deadline: Time },
    /// `attached` received.
    Attached,
    /// `detach` sent; answer due by the deadline.
    Detaching { deadline: Time },
}

#[derive(Clone, Debug)]
struct Channel {
    phase: Phase,
    /// The last position delivered to the application (or set by `attached`).
    last: Option<Position>,
    /// Attach and detach frames sent on this transport and not answered yet. The hub answers
    /// each with one `attached` or `detached`, in order, and attach answers carry no request
    /// id (§6.6): while more than one is outstanding, the next answer belongs to a request
    /// the latest one superseded and is dropped.
    outstanding: u32,
}

impl Channel {
    /// Takes one answer off the outstanding requests: whether it answers one that a later
    /// request superseded (to be dropped). With none outstanding, the answer is the hub's
    /// own (a revocation) and concerns the current state.
    fn superseded(&mut self) -> bool {
        let superseded = self.outstanding > 1;
        self.outstanding = self.outstanding.saturating_sub(1);
        superseded
    }
}

/// What an attach asks of the client.
#[derive(Debug)]
pub(crate) enum Attach {
    /// Send this frame.
    Send(ClientFrame),
    /// An answer will come (an attach is under way, or will be sent once connected).
    Underway,
    /// Already attached: deliveries continue after this position.
    Already(Position),
}

/// What a detach request needs.
#[derive(Debug)]
pub(crate) enum Detach {
    /// Send this frame and wait for `detached`.
    Send(ClientFrame),
    /// A detach is already on its way.
    Underway,
    /// Nothing was attached on the hub: the channel is detached now.
    Done,
}

/// Every channel the application attached, by name (ordered, for deterministic output).
#[derive(Clone, Debug, Default)]
pub(crate) struct Channels {
    map: super::vec_map::VecMap<ChannelName, Channel>,
}

impl Channels {
    /// Channel positions, for snapshots.
    pub(crate) fn positions(&self) -> Vec<(ChannelName, Option<Position>)> {
        self.map
            .iter()
            .filter(|(_, channel)| !matches!(channel.phase, Phase::Detaching { .. }))
            .map(|(name, channel)| (name.clone(), channel.last))
            .collect()
    }

    /// Restores a channel from a snapshot.
    pub(crate) fn restore(&mut self, name: ChannelName, last: Option<Position>) {
        self.map.insert(
            name,
            Channel {
                phase: Phase::Pending,
                last,
                outstanding: 0,
            },
        );
    }

    /// Records the wish to attach: the frame to send (when connected), nothing to do yet
    /// (attaching, or waiting for a connection), or already attached at a position.
    pub(crate) fn attach(&mut self, name: ChannelName, connected: bool, deadline: Time) -> Attach {
        let channel = self.map.get_or_insert_with(name.clone(), || Channel {
            phase: Phase::Pending,
            last: None,
            outstanding: 0,
        });
        match channel.phase {
            Phase::Attaching { .. } => Attach::Underway,
            Phase::Attached => match channel.last {
                Some(position) => Attach::Already(position),
                None => Attach::Underway,
            },
            Phase::Pending | Phase::Detaching { .. } => {
                if let Phase::Detaching { .. } = channel.phase {
                    // Attached again while detaching: a new attachment, from the channel's
                    // current position like any first attach (§6.6); the detach's answer,
                    // if this transport still brings it, belongs to the detach.
                    channel.last = None;
                }
                if connected {
                    channel.phase = Phase::Attaching { deadline };
                    channel.outstanding += 1;
                    Attach::Send(ClientFrame::Attach {
                        channel: name,
                        from: channel.last,
                    })
                } else {
                    channel.phase = Phase::Pending;
                    Attach::Underway
                }
            }
        }
    }

    /// Records the wish to detach.
    pub(crate) fn detach(&mut self, name: &ChannelName, deadline: Time) -> Detach {
        let Some(channel) = self.map.get_mut(name) else {
            return Detach::Done;
        };
        match channel.phase {
            Phase::Pending => {
                self.map.remove(name);
                Detach::Done
            }
            Phase::Detaching { .. } => Detach::Underway,
            Phase::Attaching { .. } | Phase::Attached => {
                channel.phase = Phase::Detaching { deadline };
                channel.outstanding += 1;
                Detach::Send(ClientFrame::Detach {
                    channel: name.clone(),
                })
            }
        }
    }

    /// A new transport is connected: every wanted channel is attached again from its last
    /// position. A detach that was in flight on the old transport is complete.
    pub(crate) fn on_connected(
        &mut self,
        deadline: Time,
        events: &mut Vec<Event>,
    ) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        self.map.retain(|name, channel| match channel.phase {
            Phase::Detaching { .. } => {
                events.push(Event::Detached {
                    channel: name.clone(),
                    error: None,
                });
                false
            }
            _ => {
                channel.phase = Phase::Attaching { deadline };
                channel.outstanding = 1;
                frames.push(ClientFrame::Attach {
                    channel: name.clone(),
                    from: channel.last,
                });
                true
            }
        });
        frames
    }

    /// The transport is gone: attachments must be made again on the next one.
    pub(crate) fn on_transport_lost(&mut self) {
        for channel in self.map.values_mut() {
            if !matches!(channel.phase, Phase::Detaching { .. }) {
                channel.phase = Phase::Pending;
            }
            // Answers of the old transport never come.
            channel.outstanding = 0;
        }
    }

    /// Forgets every channel (the connection ended for good) and returns their names, so
    /// each can be reported detached.
    pub(crate) fn drain(&mut self) -> Vec<ChannelName> {
        self.map.take().into_iter().map(|(name, _)| name).collect()
    }

    /// The earliest attach or detach deadline.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.map
            .values()
            .filter_map(|channel| match channel.phase {
                Phase::Attaching { deadline } | Phase::Detaching { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// `attached` from the hub.
    pub(crate) fn on_attached(
        &mut self,
        name: ChannelName,
        position: Position,
        continuity: Continuity,
        error: Option<ErrorInfo>,
        events: &mut Vec<Event>,
    ) {
        let Some(channel) = self.map.get_mut(&name) else {
            return; // detached meanwhile: nothing to do
        };
        if channel.superseded() {
            return; // the answer to an attach a later request superseded
        }
        if matches!(channel.phase, Phase::Detaching { .. }) {
            return;
        }
        channel.phase = Phase::Attached;
        let continues = match (continuity, channel.last) {
            (_, None) => true,
            (Continuity::Gap, Some(_)) => false,
            // Continuing from at or before our position: replays we already have are dropped.
            (_, Some(last)) => last.epoch == position.epoch && position.serial <= last.serial,
        };
        if continues {
            if channel.last.is_none() {
                channel.last = Some(position);
            }
        } else {
            events.push(Event::Discontinuity {
                channel: name.clone(),
                last: channel.last,
                resumed_after: position,
                reason: error,
            });
            channel.last = Some(position);
        }
        events.push(Event::Attached {
            channel: name,
            position,
            continuity,
        });
    }

    /// `detached` from the hub: an answer, a refusal or a revocation.
    pub(crate) fn on_detached(
        &mut self,
        name: ChannelName,
        error: Option<ErrorInfo>,
        events: &mut Vec<Event>,
    ) {
        if let Some(channel) = self.map.get_mut(&name) {
            if channel.superseded() {
                return; // the answer to a request a later one superseded
            }
        }
        if self.map.remove(&name).is_some() {
            events.push(Event::Detached {
                channel: name,
                error,
            });
        }
    }

    /// A delivery: passed on only if it is the next position of an attached channel;
    /// anything at or before the last position is a duplicate and dropped.
    pub(crate) fn on_message(
        &mut self,
        name: ChannelName,
        message: ChannelMessage,
        events: &mut Vec<Event>,
    ) {
        if self.advance(&name, message.position, events) {
            events.push(Event::Message {
                channel: name,
                message,
            });
        }
    }

    /// `own_message`: a message of this session, not echoed — its position counts like a
    /// delivery's for continuity, and nothing reaches the application.
    pub(crate) fn on_own_message(
        &mut self,
        name: ChannelName,
        position: Position,
        events: &mut Vec<Event>,
    ) {
        self.advance(&name, position, events);
    }

    /// Moves an attached channel's last position to `position` if it is a new one
    /// (reporting a discontinuity when it is not the next); whether it was new.
    fn advance(&mut self, name: &ChannelName, position: Position, events: &mut Vec<Event>) -> bool {
        let Some(channel) = self.map.get_mut(name) else {
            return false;
        };
        if channel.phase != Phase::Attached {
            return false;
        }
        if let Some(last) = channel.last {
            if last.epoch == position.epoch && position.serial <= last.serial {
                return false; // duplicate (G2)
            }
            if last.epoch != position.epoch || position.serial != last.serial + 1 {
                events.push(Event::Discontinuity {
                    channel: name.clone(),
                    last: Some(last),
                    resumed_after: Position {
                        epoch: position.epoch,
                        serial: position.serial.saturating_sub(1),
                    },
                    reason: None,
                });
            }
        }
        channel.last = Some(position);
        true
    }
}
