//! Table publication to the workers: read-copy-update with two copies (left-right).
//!
//! The control thread owns a standby copy of the tables, in sync with the active one. A batch
//! is validated and applied on the standby (`Tables::apply_batch` is all-or-nothing, so a
//! rejected batch leaves it untouched); the standby then becomes active: it is handed to every
//! worker's mailbox and a sequence number is bumped. Each worker checks the sequence between
//! batches (one relaxed load), takes the new `Arc` and acknowledges. The retired copy becomes
//! the next standby once every worker has acknowledged (so nobody reads it any more): the same
//! batch is replayed on it. Per-update cost is therefore O(batch), not O(table size), and a
//! million-route table is never copied in steady state.
//!
//! Workers never block on the control side: the mailbox is taken with `try_lock`, and a worker
//! that finds it busy keeps its current tables until the next batch. If a worker does not
//! acknowledge within [`ACK_TIMEOUT`] (stalled, or sleeping longer than expected) the control
//! thread falls back to cloning the active tables, which is always correct, just slower.

use pipelines::tables::{BatchError, TableOp, Tables};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to wait for workers to move off a retired copy before cloning instead.
pub const ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// One worker's side of the publication.
#[derive(Debug, Default)]
pub struct Mailbox {
    next: Mutex<Option<Arc<Tables>>>,
    acked: AtomicU64,
}

/// Shared between the control thread and the workers.
#[derive(Debug)]
pub struct Publication {
    sequence: AtomicU64,
    mailboxes: Vec<Mailbox>,
}

impl Publication {
    /// Publication for `workers` workers.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Publication {
            sequence: AtomicU64::new(0),
            mailboxes: (0..workers).map(|_| Mailbox::default()).collect(),
        })
    }

    /// Worker side: if a newer generation was published, replaces `current` with it. Called
    /// between batches; never blocks.
    #[inline]
    pub fn refresh(&self, worker: usize, seen: &mut u64, current: &mut Arc<Tables>) {
        let sequence = self.sequence.load(Ordering::Acquire);
        if sequence == *seen {
            return;
        }
        let Some(mailbox) = self.mailboxes.get(worker) else {
            return;
        };
        let Ok(mut slot) = mailbox.next.try_lock() else {
            return;
        };
        if let Some(tables) = slot.take() {
            *current = tables;
        }
        drop(slot);
        *seen = sequence;
        mailbox.acked.store(sequence, Ordering::Release);
    }

    fn publish(&self, tables: &Arc<Tables>) -> u64 {
        for mailbox in &self.mailboxes {
            if let Ok(mut slot) = mailbox.next.lock() {
                *slot = Some(tables.clone());
            }
        }
        self.sequence.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn all_acked(&self, sequence: u64) -> bool {
        self.mailboxes
            .iter()
            .all(|m| m.acked.load(Ordering::Acquire) >= sequence)
    }
}

/// Something applied to the tables, kept to replay on the retired copy.
#[derive(Clone, Debug)]
enum Replay {
    Batch(Vec<TableOp>),
    ExpireNeighbors { now_ns: u64, max_age_ns: u64 },
}

/// Control-thread side: the active tables and the standby copy.
#[derive(Debug)]
pub struct TableStore {
    active: Arc<Tables>,
    standby: Option<Tables>,
    retired: Option<(Arc<Tables>, u64, Replay)>,
    publication: Arc<Publication>,
    /// Times the standby had to be rebuilt by cloning (workers did not acknowledge in time).
    pub clones: u64,
}

impl TableStore {
    /// Empty tables published to `publication`'s workers.
    pub fn new(publication: Arc<Publication>) -> Self {
        let active = Arc::new(Tables::new());
        publication.publish(&active);
        TableStore {
            standby: Some((*active).clone()),
            active,
            retired: None,
            publication,
            clones: 0,
        }
    }

    /// The tables workers are using (or about to).
    pub fn active(&self) -> &Arc<Tables> {
        &self.active
    }

    /// Validates and applies `ops` as one transaction, then publishes. Nothing changes on
    /// error.
    pub fn apply(&mut self, ops: &[TableOp]) -> Result<u64, BatchError> {
        let mut next = self.take_standby();
        if let Err(error) = next.apply_batch(ops) {
            self.standby = Some(next);
            return Err(error);
        }
        self.install(next, Replay::Batch(ops.to_vec()));
        Ok(self.active.generation())
    }

    /// Ages out learned neighbors on both copies; returns how many were removed.
    pub fn expire_neighbors(&mut self, now_ns: u64, max_age_ns: u64) -> usize {
        let stale = self
            .active
            .neighbors()
            .iter()
            .filter(|(_, n)| {
                n.kind == pipelines::tables::NeighborKind::Learned
                    && now_ns.saturating_sub(n.confirmed_ns) > max_age_ns
            })
            .count();
        if stale == 0 {
            return 0;
        }
        let mut next = self.take_standby();
        let removed = next.expire_neighbors(now_ns, max_age_ns);
        self.install(next, Replay::ExpireNeighbors { now_ns, max_age_ns });
        removed
    }

    fn install(&mut self, next: Tables, replay: Replay) {
        let next = Arc::new(next);
        let sequence = self.publication.publish(&next);
        let old = std::mem::replace(&mut self.active, next);
        self.retired = Some((old, sequence, replay));
    }

    /// The standby copy, in sync with `active`.
    fn take_standby(&mut self) -> Tables {
        if let Some(standby) = self.standby.take() {
            return standby;
        }
        if let Some((retired, sequence, replay)) = self.retired.take() {
            let deadline = Instant::now() + ACK_TIMEOUT;
            while !self.publication.all_acked(sequence) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
            if self.publication.all_acked(sequence) {
                if let Ok(mut tables) = Arc::try_unwrap(retired) {
                    let replayed = match &replay {
                        Replay::Batch(ops) => tables.apply_batch(ops).is_ok(),
                        Replay::ExpireNeighbors { now_ns, max_age_ns } => {
                            tables.expire_neighbors(*now_ns, *max_age_ns);
                            true
                        }
                    };
                    if replayed && tables.generation() == self.active.generation() {
                        return tables;
                    }
                }
            }
        }
        self.clones += 1;
        (*self.active).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelines::wire::EthernetAddress;
    use pipelines::{PortId, VrfId};

    fn add_port(id: u16) -> TableOp {
        TableOp::AddPort {
            id: PortId(id),
            name: format!("p{id}"),
            mac: EthernetAddress([2, 0, 0, 0, 0, id as u8 + 1]),
            mtu: 1500,
            vrf: VrfId(0),
        }
    }

    #[test]
    fn workers_see_batches_atomically_and_the_standby_is_replayed_not_cloned() {
        let publication = Publication::new(2);
        let mut store = TableStore::new(publication.clone());
        let mut seen = [0u64; 2];
        let mut current = [store.active().clone(), store.active().clone()];
        for w in 0..2 {
            publication.refresh(w, &mut seen[w], &mut current[w]);
        }
        for id in 0..5 {
            let generation = store.apply(&[add_port(id)]).unwrap();
            for w in 0..2 {
                publication.refresh(w, &mut seen[w], &mut current[w]);
                assert_eq!(current[w].generation(), generation);
            }
        }
        assert!(store.apply(&[add_port(9), add_port(9)]).is_err());
        assert_eq!(store.active().ports().count(), 5);
        assert_eq!(store.clones, 0);
    }

    #[test]
    fn neighbor_expiry_reaches_both_copies() {
        let publication = Publication::new(1);
        let mut store = TableStore::new(publication.clone());
        let mut seen = 0;
        let mut current = store.active().clone();
        let ip: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let learn = TableOp::LearnNeighbor {
            port: PortId(1),
            ip,
            mac: EthernetAddress([2, 0, 0, 0, 0, 9]),
            now_ns: 1_000,
        };
        for ops in [vec![add_port(1)], vec![learn]] {
            store.apply(&ops).unwrap();
            publication.refresh(0, &mut seen, &mut current);
        }
        assert!(store.active().neighbors().get(PortId(1), ip).is_some());
        assert_eq!(store.expire_neighbors(10_000_000_000, 1_000_000_000), 1);
        publication.refresh(0, &mut seen, &mut current);
        assert!(current.neighbors().get(PortId(1), ip).is_none());
        // Two more publications: each copy in turn becomes active; neither has the neighbor.
        for id in [2, 3] {
            store.apply(&[add_port(id)]).unwrap();
            publication.refresh(0, &mut seen, &mut current);
            assert!(current.neighbors().get(PortId(1), ip).is_none());
        }
        assert_eq!(store.clones, 0, "the expiry was replayed, not cloned");
    }

    #[test]
    fn a_stalled_worker_costs_a_clone_not_a_hang() {
        let publication = Publication::new(1);
        let mut store = TableStore::new(publication);
        store.apply(&[add_port(1)]).unwrap();
        // The worker never refreshes: the next apply falls back to cloning.
        store.apply(&[add_port(2)]).unwrap();
        assert_eq!(store.clones, 1);
        assert_eq!(store.active().ports().count(), 2);
    }
}
