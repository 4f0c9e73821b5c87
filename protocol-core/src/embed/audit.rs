//! An outside check of exactly-once, in-order delivery, for demos and chaos tests.

use std::collections::{BTreeMap, BTreeSet};

/// Collects what publishers had acknowledged and what each subscriber received, then counts
/// what was lost, duplicated or reordered.
///
/// Messages are labelled `"{publisher}-{sequence}"` ([`label`](DeliveryAudit::label)); each
/// publisher's sequence numbers increase in publish order.
#[derive(Clone, Debug, Default)]
pub struct DeliveryAudit {
    acked: BTreeMap<usize, BTreeSet<usize>>,
    subscribers: Vec<Vec<(usize, usize)>>,
}

/// What the audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Acknowledged messages.
    pub acked: usize,
    /// Messages each subscriber received (with duplicates).
    pub received: Vec<usize>,
    /// Acknowledged messages a subscriber never received, summed over subscribers.
    pub lost: usize,
    /// Messages a subscriber received more than once.
    pub duplicated: usize,
    /// Messages a subscriber received after a later message of the same publisher.
    pub reordered: usize,
}

impl DeliveryAudit {
    /// An empty audit.
    pub fn new() -> DeliveryAudit {
        DeliveryAudit::default()
    }

    /// The payload that identifies message `sequence` of `publisher`.
    pub fn label(publisher: usize, sequence: usize) -> String {
        format!("{publisher}-{sequence}")
    }

    /// Reads a payload made by [`label`](DeliveryAudit::label).
    pub fn parse_label(data: &[u8]) -> Option<(usize, usize)> {
        let text = std::str::from_utf8(data).ok()?;
        let (publisher, sequence) = text.split_once('-')?;
        Some((publisher.parse().ok()?, sequence.parse().ok()?))
    }

    /// The hub acknowledged message `sequence` of `publisher`.
    pub fn acked(&mut self, publisher: usize, sequence: usize) {
        self.acked.entry(publisher).or_default().insert(sequence);
    }

    /// Everything one subscriber received, in the order received.
    pub fn subscriber(&mut self, received: Vec<(usize, usize)>) {
        self.subscribers.push(received);
    }

    /// Counts what went wrong.
    pub fn report(&self) -> AuditReport {
        let mut report = AuditReport {
            acked: self.acked.values().map(BTreeSet::len).sum(),
            ..AuditReport::default()
        };
        for received in &self.subscribers {
            report.received.push(received.len());
            let mut last: BTreeMap<usize, usize> = BTreeMap::new();
            let mut got: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
            for &(publisher, sequence) in received {
                if !got.entry(publisher).or_default().insert(sequence) {
                    report.duplicated += 1;
                }
                if last
                    .get(&publisher)
                    .is_some_and(|previous| sequence <= *previous)
                {
                    report.reordered += 1;
                }
                last.insert(publisher, sequence);
            }
            for (publisher, sequences) in &self.acked {
                let got = got.get(publisher);
                report.lost += sequences
                    .iter()
                    .filter(|s| got.is_none_or(|g| !g.contains(s)))
                    .count();
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_run_reports_nothing_wrong() {
        let mut audit = DeliveryAudit::new();
        for s in 0..3 {
            audit.acked(0, s);
        }
        audit.subscriber(vec![(0, 0), (0, 1), (0, 2)]);
        let report = audit.report();
        assert_eq!(report.acked, 3);
        assert_eq!(report.received, vec![3]);
        assert_eq!(
            (report.lost, report.duplicated, report.reordered),
            (0, 0, 0)
        );
    }

    #[test]
    fn loss_duplicates_and_reordering_are_each_counted() {
        let mut audit = DeliveryAudit::new();
        for s in 0..4 {
            audit.acked(1, s);
        }
        // 3 never arrives, 1 arrives twice, 0 arrives after 2.
        audit.subscriber(vec![(1, 1), (1, 1), (1, 2), (1, 0)]);
        let report = audit.report();
        assert_eq!(report.lost, 1);
        assert_eq!(report.duplicated, 1);
        assert_eq!(report.reordered, 2, "the second 1, and the 0 after 2");
    }

    #[test]
    fn labels_round_trip_and_garbage_is_ignored() {
        let label = DeliveryAudit::label(12, 345);
        assert_eq!(
            DeliveryAudit::parse_label(label.as_bytes()),
            Some((12, 345))
        );
        assert_eq!(DeliveryAudit::parse_label(b"hello"), None);
        assert_eq!(DeliveryAudit::parse_label(&[0xff, b'-', b'1']), None);
    }
}
