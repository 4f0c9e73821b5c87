//! Deliberately broken behaviours (feature `sabotage`), one per guarantee of
//! `docs/protocol.md`, so the conformance checker can show that it catches each violation.
//! Never enable this feature in production.

/// A broken behaviour to switch on in a client or hub configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Sabotage {
    /// Behave correctly.
    #[default]
    None,
    /// G1: the client silently skips every fifth message it should deliver.
    ClientDropsDeliveries,
    /// G2: the hub forgets message ids and its sessions' records of publishes, so a resent
    /// publish is stored twice.
    HubForgetsMessageIds,
    /// G3: the client hands messages to the application in swapped pairs.
    ClientSwapsDeliveries,
    /// G4: the client forgets its pending publishes when a transport drops, unresolved.
    ClientForgetsPendingPublishes,
    /// G5: the client acts on frames from transports other than its current one.
    ClientAcceptsStaleTransports,
    /// G6: the client never retries after its second transport loss.
    ClientStopsRetrying,
    /// G2 over time (issue 20, the old behaviour): the hub keeps no record of its sessions'
    /// publishes, so a resend is caught only by the dedupe window — one after it is stored
    /// twice.
    HubWithoutPublishRecord,
    /// G4 for the application API: an attach of an already attached channel is never
    /// answered (issue 14, defect 1), so a second subscribe waits forever.
    ClientIgnoresAttachOfAttached,
    /// G2 over time (issue 20, the old client): the client resends to a new session a
    /// publish first sent longer ago than the hub's dedupe window, so the hub may store it
    /// again.
    ClientResendsPastDedupeWindow,
}
