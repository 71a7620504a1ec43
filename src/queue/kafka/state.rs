//! What a worker holds of the Kafka queue: fetched records not yet settled, per partition, in a
//! ready list, a list of retries waiting for their due time, and leases with deadlines; and the
//! offsets that can be committed (up to the first one not settled).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::{Offset, TopicPartitionList};

use crate::message::Message;
use crate::queue::{Lease, QueueError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Source {
    Main,
    Retry,
}

/// A record this process has fetched and not yet settled.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) message: Message,
    pub(super) source: Source,
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// Attempts used before this record was published (`mailroom-attempts`).
    pub(super) prior: u32,
    /// Times this process has leased it.
    pub(super) leased: u32,
    /// When the record was written, for the oldest-age gauge.
    pub(super) written_ms: i64,
}

impl Entry {
    pub(super) fn key(&self) -> (Source, i32) {
        (self.source, self.partition)
    }
}

/// Offsets fetched from one partition and not yet settled.
#[derive(Debug, Default)]
pub(super) struct PartitionState {
    pub(super) pending: BTreeSet<i64>,
    /// One past the highest offset fetched.
    pub(super) next: i64,
    /// The last position committed.
    pub(super) committed: i64,
}

impl PartitionState {
    /// The offset to commit: the first unsettled one, or past everything fetched.
    pub(super) fn position(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) partitions: HashMap<(Source, i32), PartitionState>,
    pub(super) ready: VecDeque<Entry>,
    /// Retries not yet due, by due time.
    pub(super) delayed: BTreeMap<(Instant, u64), Entry>,
    /// Leased entries by lease id, with their deadline.
    pub(super) leases: HashMap<u64, (Entry, Instant)>,
    pub(super) next_id: u64,
}

impl State {
    pub(super) fn fetched(&mut self, entry: Entry, due: Option<Instant>) {
        let p = self.partitions.entry(entry.key()).or_default();
        p.pending.insert(entry.offset);
        p.next = p.next.max(entry.offset + 1);
        self.next_id += 1;
        match due {
            Some(due) if due > Instant::now() => {
                self.delayed.insert((due, self.next_id), entry);
            }
            _ => self.ready.push_back(entry),
        }
    }

    pub(super) fn settle(&mut self, entry: &Entry) {
        if let Some(p) = self.partitions.get_mut(&entry.key()) {
            p.pending.remove(&entry.offset);
        }
    }

    /// Moves due retries and expired leases to the ready list.
    pub(super) fn promote(&mut self, now: Instant) {
        while let Some(first) = self.delayed.first_entry() {
            if first.key().0 > now {
                break;
            }
            self.ready.push_back(first.remove());
        }
        let expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((entry, _)) = self.leases.remove(&id) {
                tracing::warn!(message_id = %entry.message.id, "A Kafka lease ran out unsettled; the message goes back to the ready list.");
                self.ready.push_front(entry);
            }
        }
    }

    pub(super) fn take(&mut self, max: usize, visibility: Duration) -> Vec<Lease> {
        let now = Instant::now();
        self.promote(now);
        let mut leases = Vec::new();
        while leases.len() < max {
            let Some(mut entry) = self.ready.pop_front() else {
                break;
            };
            entry.leased += 1;
            self.next_id += 1;
            leases.push(Lease {
                message: entry.message.clone(),
                attempt: entry.prior + entry.leased,
                receipt: self.next_id.to_string(),
            });
            self.leases.insert(self.next_id, (entry, now + visibility));
        }
        leases
    }

    pub(super) fn unlease(&mut self, lease: &Lease) -> Result<(Entry, Instant), QueueError> {
        lease
            .receipt
            .parse::<u64>()
            .ok()
            .and_then(|id| self.leases.remove(&id))
            .ok_or(QueueError::LeaseLost(lease.message.id))
    }

    /// The earliest moment something becomes ready without a new fetch.
    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        let due = self.delayed.keys().next().map(|(at, _)| *at);
        let lease = self.leases.values().map(|(_, d)| *d).min();
        due.into_iter().chain(lease).min()
    }

    /// Positions that moved since the last commit, as the list to commit.
    /// The positions of `source`'s partitions that moved since their last commit.
    pub(super) fn to_commit(&self, topics: &Topics, source: Source) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for ((from, partition), p) in &self.partitions {
            let position = p.position();
            if *from == source && position > p.committed {
                let _ = tpl.add_partition_offset(
                    topics.name(source),
                    *partition,
                    Offset::Offset(position),
                );
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }

    pub(super) fn committed(&mut self, tpl: &TopicPartitionList, topics: &Topics) {
        for e in tpl.elements() {
            if let (Some(source), Offset::Offset(o)) = (topics.source(e.topic()), e.offset())
                && let Some(p) = self.partitions.get_mut(&(source, e.partition()))
            {
                p.committed = p.committed.max(o);
            }
        }
    }

    /// Forgets partitions this process no longer owns: their records go to the new owner from
    /// the last committed offset, and leases on them are lost.
    pub(super) fn drop_partitions(&mut self, revoked: &[(Source, i32)]) {
        let gone = |e: &Entry| revoked.contains(&e.key());
        for key in revoked {
            self.partitions.remove(key);
        }
        self.ready.retain(|e| !gone(e));
        self.delayed.retain(|_, e| !gone(e));
        self.leases.retain(|_, (e, _)| !gone(e));
    }

    pub(super) fn oldest_written_ms(&self) -> Option<i64> {
        self.ready
            .iter()
            .chain(self.delayed.values())
            .chain(self.leases.values().map(|(e, _)| e))
            .map(|e| e.written_ms)
            .min()
    }
}

#[derive(Debug, Clone)]
pub(super) struct Topics {
    pub(super) main: String,
    pub(super) retry: String,
    pub(super) dlq: String,
}

impl Topics {
    pub(super) fn name(&self, source: Source) -> &str {
        match source {
            Source::Main => &self.main,
            Source::Retry => &self.retry,
        }
    }

    pub(super) fn source(&self, topic: &str) -> Option<Source> {
        if topic == self.main {
            Some(Source::Main)
        } else if topic == self.retry {
            Some(Source::Retry)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{CompatEmail, Content};

    fn entry(partition: i32, offset: i64) -> Entry {
        Entry {
            message: Message::new(Content::Compat(CompatEmail {
                email_subject: "s".into(),
                email_sender: "S".into(),
                email_timestream: "1700000000".into(),
                email_content: "c".into(),
            })),
            source: Source::Main,
            partition,
            offset,
            prior: 0,
            leased: 0,
            written_ms: 0,
        }
    }

    fn topics() -> Topics {
        Topics {
            main: "m".into(),
            retry: "m.retry".into(),
            dlq: "m.dlq".into(),
        }
    }

    fn position(state: &State, partition: i32) -> i64 {
        let tpl = state
            .to_commit(&topics(), Source::Main)
            .expect("something to commit");
        match tpl.find_partition("m", partition).expect("listed").offset() {
            Offset::Offset(o) => o,
            other => panic!("{other:?}"),
        }
    }

    /// The committed position never passes an unsettled offset, whatever order settles come in.
    #[test]
    fn commit_stops_at_first_unsettled_offset() {
        let mut state = State::default();
        for offset in 10..15 {
            state.fetched(entry(0, offset), None);
        }
        for offset in [11, 13, 14] {
            state.settle(&entry(0, offset));
        }
        assert_eq!(position(&state, 0), 10, "10 is still out");
        state.settle(&entry(0, 10));
        assert_eq!(position(&state, 0), 12, "12 is still out");
        state.settle(&entry(0, 12));
        assert_eq!(position(&state, 0), 15, "everything fetched is settled");
    }

    /// A lease not settled in time goes back with the next attempt; the stale holder loses it.
    #[test]
    fn expired_lease_returns_with_next_attempt() {
        let mut state = State::default();
        state.fetched(entry(0, 1), None);
        let first = state.take(1, Duration::ZERO).pop().expect("one");
        assert_eq!(first.attempt, 1);
        let second = state.take(1, Duration::from_secs(60)).pop().expect("again");
        assert_eq!((second.message.id, second.attempt), (first.message.id, 2));
        assert!(matches!(
            state.unlease(&first),
            Err(QueueError::LeaseLost(_))
        ));
        assert!(state.unlease(&second).is_ok());
    }

    /// Revoked partitions vanish from every list, and their leases become lost.
    #[test]
    fn revoked_partitions_lose_their_leases() {
        let mut state = State::default();
        state.fetched(entry(0, 1), None);
        state.fetched(entry(1, 1), None);
        let leases = state.take(2, Duration::from_secs(60));
        state.drop_partitions(&[(Source::Main, 0)]);
        let lost = leases.iter().find(|l| state.unlease(l).is_err());
        assert!(lost.is_some(), "the lease on partition 0 is gone");
        assert!(
            state
                .to_commit(&topics(), Source::Main)
                .into_iter()
                .all(|t| t.elements().iter().all(|e| e.partition() == 1))
        );
    }
}
