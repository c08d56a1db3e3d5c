//! The embedded store's writer thread: group commit of transactions, the change log, and leases.
//!
//! All writes go through one thread, as [`Work`] items. It takes every queued item at once, applies
//! them in order inside one redb write transaction, makes the batch durable once (one append to the
//! write-ahead log and its sync, [`super::wal`]), commits it to redb and then answers each caller.
//! Batches that wrote nothing (only keep-alives) are not committed.
//!
//! Leases: a lease's TTL is stored in the file; its deadline is kept in memory by this thread, which
//! wakes at the earliest deadline and ends the expired leases, deleting their keys in one revision.
//! After a restart every stored lease gets a full TTL again (as etcd does after a leader change).

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use tokio::sync::{oneshot, watch};

use super::wal::{Change, Wal};
use super::{EmbeddedOptions, KV, LOG, MAX_BATCH, META, META_COMPACTED, META_REVISION};
use super::{backend, read_meta};
use super::{decode_kv, encode_event, encode_kv};
use crate::{Compare, LeaseId, Op, Revision, StoreError, Txn, TxnOutcome};

/// Lease id → TTL in milliseconds.
pub(super) const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
/// Key → the lease it is attached to.
pub(super) const KEY_LEASE: TableDefinition<&str, i64> = TableDefinition::new("key_lease");
/// [`lease_key`] → nothing: the keys of each lease, in order.
pub(super) const LEASE_KEYS: TableDefinition<&str, ()> = TableDefinition::new("lease_keys");
/// The last lease id handed out.
const META_LAST_LEASE: &str = "last_lease";
/// The sequence number of the last batch written (see [`super::wal`]).
const META_WAL_SEQ: &str = "wal_seq";

/// One request to the writer.
pub(super) enum Work {
    Txn(Txn),
    Grant(Duration),
    KeepAlive(LeaseId),
    Revoke(LeaseId),
}

/// The writer's answer to one [`Work`] item, of the matching kind.
pub(super) enum Answer {
    Txn(TxnOutcome),
    Granted(LeaseId),
    Ttl(Duration),
    Revoked,
}

pub(super) type Reply = oneshot::Sender<Result<Answer, StoreError>>;

/// The live leases' deadlines and TTLs.
#[derive(Debug, Clone, Default)]
pub(super) struct Leases(HashMap<LeaseId, (Instant, Duration)>);

impl Leases {
    /// Every stored lease, each with a full TTL from now.
    pub(super) fn load(db: &Database) -> Result<Self, StoreError> {
        let tx = db.begin_read().map_err(backend)?;
        let table = tx.open_table(LEASES).map_err(backend)?;
        let mut leases = Self::default();
        for item in table.iter().map_err(backend)? {
            let (id, ttl) = item.map_err(backend)?;
            leases.insert(id.value(), Duration::from_millis(ttl.value()));
        }
        Ok(leases)
    }

    fn insert(&mut self, id: LeaseId, ttl: Duration) {
        self.0.insert(id, (Instant::now() + ttl, ttl));
    }

    fn keep_alive(&mut self, id: LeaseId) -> Result<Duration, StoreError> {
        let (deadline, ttl) = self.0.get_mut(&id).ok_or(StoreError::LeaseNotFound(id))?;
        *deadline = Instant::now() + *ttl;
        Ok(*ttl)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.0.values().map(|(deadline, _)| *deadline).min()
    }

    fn expired(&self, now: Instant) -> Vec<LeaseId> {
        let mut ids: Vec<LeaseId> = self
            .0
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// The writer thread's main loop; returns when the store is dropped, after a last checkpoint.
pub(super) fn run(
    db: &Database,
    mut wal: Wal,
    queue: &mpsc::Receiver<(Work, Reply)>,
    revision: &watch::Sender<Revision>,
    options: EmbeddedOptions,
    mut leases: Leases,
) {
    loop {
        let first = match leases.next_deadline() {
            Some(deadline) => {
                match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(item) => Some(item),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match queue.recv() {
                Ok(item) => Some(item),
                Err(_) => break,
            },
        };
        let mut batch: Vec<(Work, Reply)> = first.into_iter().collect();
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let expired = leases.expired(Instant::now());
        if batch.is_empty() && expired.is_empty() {
            continue;
        }
        let (works, replies): (Vec<Work>, Vec<Reply>) = batch.into_iter().unzip();
        // Work on a copy of the leases, kept only if the batch commits.
        let mut next = leases.clone();
        match apply_batch(db, &mut wal, &works, &expired, &mut next, options) {
            Ok((answers, rev)) => {
                leases = next;
                revision.send_replace(rev);
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!("store commit failed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(backend(&e)));
                }
            }
        }
    }
    if let Err(e) = checkpoint(db, &mut wal) {
        tracing::warn!(
            "store: last checkpoint failed ({e}); the write-ahead log is replayed on open"
        );
    }
}

/// Makes every batch committed so far durable in redb itself and empties the log.
fn checkpoint(db: &Database, wal: &mut Wal) -> Result<(), StoreError> {
    if wal.len() == 0 {
        return Ok(());
    }
    let mut tx = db.begin_write().map_err(backend)?;
    tx.set_durability(Durability::Immediate).map_err(backend)?;
    tx.commit().map_err(backend)?;
    wal.clear()
}

/// Applies the log's batches that redb does not hold yet (those after its [`META_WAL_SEQ`]), in
/// order, and makes them durable: what a crash took from redb comes back. A record that does not
/// follow the one before it means a batch is missing: the store is then not opened.
pub(super) fn replay(db: &Database, wal: &mut Wal) -> Result<(), StoreError> {
    let records = wal.records()?;
    let tx = db.begin_write().map_err(backend)?;
    let mut replayed = 0;
    {
        let mut t = Tables::open(&tx)?;
        let durable = read_meta(&t.meta, META_WAL_SEQ)?;
        let mut seq = durable;
        for record in records.iter().filter(|r| r.seq > durable) {
            if record.seq != seq + 1 {
                return Err(StoreError::Corrupt(format!(
                    "write-ahead log: batch {} follows batch {seq}",
                    record.seq
                )));
            }
            for change in record.changes() {
                t.write(&change?)?;
            }
            // Already in the log: not to be recorded again.
            t.changes.clear();
            seq = record.seq;
            replayed += 1;
        }
        t.meta.insert(META_WAL_SEQ, seq).map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    if replayed > 0 {
        tracing::info!(batches = replayed, "store: replayed the write-ahead log");
    }
    wal.clear()
}

/// Applies a batch in one write transaction, made durable by the log or, when the log is due for
/// a checkpoint, by redb itself; returns each item's answer and the new revision.
fn apply_batch(
    db: &Database,
    wal: &mut Wal,
    works: &[Work],
    expired: &[LeaseId],
    leases: &mut Leases,
    options: EmbeddedOptions,
) -> Result<(Vec<Result<Answer, StoreError>>, Revision), StoreError> {
    let mut tx = db.begin_write().map_err(backend)?;
    let checkpoint = wal.len() >= options.checkpoint_bytes;
    if !checkpoint {
        tx.set_durability(Durability::None).map_err(backend)?;
    }
    let mut answers = Vec::with_capacity(works.len());
    let (current, logged) = {
        let mut t = Tables::open(&tx)?;
        let start = read_meta(&t.meta, META_REVISION)?;
        let mut current = start;
        let mut wrote = false;
        for &id in expired {
            leases.0.remove(&id);
            t.end_lease(id, &mut current)?;
            wrote = true;
        }
        for work in works {
            let answer = match work {
                Work::Txn(txn) => t.txn(txn, leases, &mut current)?.map(Answer::Txn),
                Work::Grant(ttl) => {
                    let id = t.grant(*ttl)?;
                    leases.insert(id, *ttl);
                    wrote = true;
                    Ok(Answer::Granted(id))
                }
                Work::KeepAlive(id) => leases.keep_alive(*id).map(Answer::Ttl),
                Work::Revoke(id) => {
                    if leases.0.remove(id).is_some() {
                        t.end_lease(*id, &mut current)?;
                        wrote = true;
                    }
                    Ok(Answer::Revoked)
                }
            };
            answers.push(answer);
        }
        if current != start {
            t.write(&Change::Meta(META_REVISION, current))?;
            t.compact(current, options.log_retain)?;
            wrote = true;
        }
        // The batch's sequence number and its changes, if it wrote anything.
        let logged = if wrote {
            let seq = read_meta(&t.meta, META_WAL_SEQ)? + 1;
            t.meta.insert(META_WAL_SEQ, seq).map_err(backend)?;
            Some((seq, std::mem::take(&mut t.changes)))
        } else {
            None
        };
        (current, logged)
    };
    let Some((seq, changes)) = logged else {
        tx.abort().map_err(backend)?;
        return Ok((answers, current));
    };
    if checkpoint {
        tx.commit().map_err(backend)?;
        if let Err(e) = wal.clear() {
            // Harmless: what the log holds is in redb now, and skipped on open.
            tracing::warn!("store: emptying the write-ahead log failed: {e}");
        }
    } else {
        let start = wal.len();
        wal.append(seq, &changes)?;
        if let Err(e) = tx.commit() {
            // Not committed: the record must not come back on the next open.
            wal.truncate(start)?;
            return Err(backend(e));
        }
    }
    Ok((answers, current))
}

/// The key of `key`'s row in [`LEASE_KEYS`]: keys of one lease sort together.
fn lease_key(lease: LeaseId, key: &str) -> String {
    format!("{}{key}", lease_prefix(lease))
}

fn lease_prefix(lease: LeaseId) -> String {
    format!("{lease:020}/")
}

/// The open tables of one write transaction, and the changes written through them so far (for the
/// write-ahead log).
struct Tables<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    log: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    leases: Table<'t, i64, u64>,
    key_lease: Table<'t, &'static str, i64>,
    lease_keys: Table<'t, &'static str, ()>,
    changes: Vec<u8>,
}

impl<'t> Tables<'t> {
    fn open(tx: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            kv: tx.open_table(KV).map_err(backend)?,
            log: tx.open_table(LOG).map_err(backend)?,
            meta: tx.open_table(META).map_err(backend)?,
            leases: tx.open_table(LEASES).map_err(backend)?,
            key_lease: tx.open_table(KEY_LEASE).map_err(backend)?,
            lease_keys: tx.open_table(LEASE_KEYS).map_err(backend)?,
            changes: Vec::new(),
        })
    }

    /// Writes one change to its table and records it; answers whether the row it wrote or
    /// deleted was there before (always `false` for a [`Change::LogDrop`]). Every write of a
    /// batch goes through here, and so does the log's replay.
    fn write(&mut self, change: &Change) -> Result<bool, StoreError> {
        change.encode(&mut self.changes);
        let existed = match *change {
            Change::KvPut(key, value) => self.kv.insert(key, value).map(|old| old.is_some()),
            Change::KvDelete(key) => self.kv.remove(key).map(|old| old.is_some()),
            Change::LogPut(revision, record) => {
                self.log.insert(revision, record).map(|old| old.is_some())
            }
            Change::LogDrop(from, to) => {
                self.log.retain_in(from..=to, |_, _| false).map(|()| false)
            }
            Change::Meta(key, value) => self.meta.insert(key, value).map(|old| old.is_some()),
            Change::LeasePut(lease, ttl) => self.leases.insert(lease, ttl).map(|old| old.is_some()),
            Change::LeaseDelete(lease) => self.leases.remove(lease).map(|old| old.is_some()),
            Change::KeyLeasePut(key, lease) => {
                self.key_lease.insert(key, lease).map(|old| old.is_some())
            }
            Change::KeyLeaseDelete(key) => self.key_lease.remove(key).map(|old| old.is_some()),
            Change::LeaseKeyPut(row) => self.lease_keys.insert(row, ()).map(|old| old.is_some()),
            Change::LeaseKeyDelete(row) => self.lease_keys.remove(row).map(|old| old.is_some()),
        }
        .map_err(backend)?;
        Ok(existed)
    }

    /// Checks and applies one transaction. The outer error fails the batch, the inner one only `txn`.
    fn txn(
        &mut self,
        txn: &Txn,
        leases: &Leases,
        current: &mut Revision,
    ) -> Result<Result<TxnOutcome, StoreError>, StoreError> {
        for Compare::ModRevision(key, want) in &txn.compares {
            let have = match self.kv.get(key.as_str()).map_err(backend)? {
                Some(v) => decode_kv(key, v.value())?.mod_revision,
                None => 0,
            };
            if have != *want {
                return Ok(Ok(TxnOutcome::Conflict(key.clone())));
            }
        }
        let ended = txn.ops.iter().find_map(|op| match op {
            Op::PutLeased(_, _, lease) if !leases.0.contains_key(lease) => Some(*lease),
            _ => None,
        });
        if let Some(lease) = ended {
            return Ok(Err(StoreError::LeaseNotFound(lease)));
        }
        *current += 1;
        let mut record = Vec::new();
        for op in &txn.ops {
            match op {
                Op::Put(key, value) => {
                    self.put(key, value, *current)?;
                    self.detach(key)?;
                    encode_event(&mut record, key, Some(value));
                }
                Op::PutLeased(key, value, lease) => {
                    self.put(key, value, *current)?;
                    self.detach(key)?;
                    self.write(&Change::KeyLeasePut(key, *lease))?;
                    self.write(&Change::LeaseKeyPut(&lease_key(*lease, key)))?;
                    encode_event(&mut record, key, Some(value));
                }
                Op::Delete(key) => {
                    if self.write(&Change::KvDelete(key))? {
                        self.detach(key)?;
                        encode_event(&mut record, key, None);
                    }
                }
            }
        }
        self.write(&Change::LogPut(*current, &record))?;
        Ok(Ok(TxnOutcome::Committed(*current)))
    }

    fn put(&mut self, key: &str, value: &[u8], revision: Revision) -> Result<(), StoreError> {
        let created = match self.kv.get(key).map_err(backend)? {
            Some(v) => decode_kv(key, v.value())?.create_revision,
            None => revision,
        };
        let stored = encode_kv(created, revision, value);
        self.write(&Change::KvPut(key, &stored))?;
        Ok(())
    }

    /// Detaches `key` from its lease, if any.
    fn detach(&mut self, key: &str) -> Result<(), StoreError> {
        let lease = self.key_lease.get(key).map_err(backend)?.map(|l| l.value());
        if let Some(lease) = lease {
            self.write(&Change::KeyLeaseDelete(key))?;
            self.write(&Change::LeaseKeyDelete(&lease_key(lease, key)))?;
        }
        Ok(())
    }

    fn grant(&mut self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let next = read_meta(&self.meta, META_LAST_LEASE)? + 1;
        let id = LeaseId::try_from(next).map_err(backend)?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.write(&Change::Meta(META_LAST_LEASE, next))?;
        self.write(&Change::LeasePut(id, ttl_ms))?;
        Ok(id)
    }

    /// Forgets a lease and deletes its keys, in one new revision if it had any.
    fn end_lease(&mut self, lease: LeaseId, current: &mut Revision) -> Result<(), StoreError> {
        self.write(&Change::LeaseDelete(lease))?;
        let prefix = lease_prefix(lease);
        let mut rows = Vec::new();
        for item in self.lease_keys.range(prefix.as_str()..).map_err(backend)? {
            let (row, _) = item.map_err(backend)?;
            match row.value().strip_prefix(prefix.as_str()) {
                Some(key) => rows.push(key.to_string()),
                None => break,
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        *current += 1;
        let mut record = Vec::new();
        for key in &rows {
            self.write(&Change::LeaseKeyDelete(&lease_key(lease, key)))?;
            self.write(&Change::KeyLeaseDelete(key))?;
            if self.write(&Change::KvDelete(key))? {
                encode_event(&mut record, key, None);
            }
        }
        self.write(&Change::LogPut(*current, &record))?;
        Ok(())
    }

    /// Drops log entries older than `retain` revisions, a bounded number per commit.
    fn compact(&mut self, current: Revision, retain: u64) -> Result<(), StoreError> {
        let compacted = read_meta(&self.meta, META_COMPACTED)?;
        let target = current.saturating_sub(retain);
        if target > compacted {
            let upto = target.min(compacted + 4 * MAX_BATCH as u64);
            self.write(&Change::LogDrop(compacted + 1, upto))?;
            self.write(&Change::Meta(META_COMPACTED, upto))?;
        }
        Ok(())
    }
}
