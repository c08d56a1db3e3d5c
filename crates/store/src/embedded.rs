//! The embedded backend: one redb file, one writer thread with group commit, watches from a change log.
//!
//! Every transaction is queued to a single writer thread ([`writer`]), which takes all queued
//! transactions at once, checks and applies each in order inside one redb write transaction (each
//! committed one gets its own revision), makes the batch durable with one append to a write-ahead log
//! and its fsync ([`wal`]), commits it to redb, and only then answers the callers. That keeps every
//! acknowledged write durable while many concurrent writers share the cost of one fsync, and keeps that
//! cost the same however much the store holds. The writer thread also keeps the leases and ends the
//! expired ones.
//!
//! Each committed revision is also appended to a change log table, which watchers read from; the log
//! keeps the last [`LOG_RETAIN`] revisions (or [`EmbeddedOptions::log_retain`]), older ones are compacted
//! away.
//!
//! The store normally lives in a file and its log next to it, named after it with `-wal` appended
//! ([`EmbeddedStore::open`]); [`EmbeddedStore::open_on`] opens it on any redb storage backends instead,
//! which is how the crash tests run it on a simulated disk that loses everything not yet synced.

mod wal;
mod writer;

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use futures::future::BoxFuture;
use redb::backends::FileBackend;
use redb::{Builder, Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};
use tokio::sync::{oneshot, watch};

use crate::{Event, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOutcome, Watch};
use writer::{Answer, Work};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
/// All revisions at or below this one are no longer in the log.
const META_COMPACTED: &str = "compacted";

/// How many revisions of history the change log keeps.
pub const LOG_RETAIN: u64 = 200_000;
/// At most this many queued transactions share one commit.
const MAX_BATCH: usize = 512;
/// At most this many revisions are read from the log for one watch batch.
const MAX_WATCH_REVISIONS: u64 = 1024;

/// Tunables of an embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How many revisions of history the change log keeps (at least 1).
    pub log_retain: u64,
    /// The write-ahead log's size at which the next batch commits to redb durably and empties it.
    pub checkpoint_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            log_retain: LOG_RETAIN,
            checkpoint_bytes: wal::CHECKPOINT_BYTES,
        }
    }
}

/// A store in one local file.
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: mpsc::Sender<(Work, writer::Reply)>,
    /// The writer thread, joined on drop so that the file is closed when the store is gone.
    thread: Option<std::thread::JoinHandle<()>>,
    revision: watch::Receiver<Revision>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens (creating if needed) the store file at `path` with non-default options.
    pub fn open_with(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let open = |path: &Path| -> Result<FileBackend, StoreError> {
            let failed = |e: &dyn std::fmt::Display| backend(format!("{}: {e}", path.display()));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| failed(&e))?;
            FileBackend::new(file).map_err(|e| failed(&e))
        };
        let store = open(path)?;
        Self::open_on(store, open(&wal_path(path))?, options)
    }

    /// Opens (creating if needed) the store on `storage` and its write-ahead log on `wal`, any redb
    /// storage backends: files (what [`Self::open_with`] does) or, in tests, a simulated disk.
    /// Acknowledged writes are as durable as the backends' `sync_data` makes them.
    pub fn open_on(
        storage: impl StorageBackend,
        wal: impl StorageBackend,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        let options = EmbeddedOptions {
            log_retain: options.log_retain.max(1),
            ..options
        };
        let db = Arc::new(
            Builder::new()
                .create_with_backend(storage)
                .map_err(backend)?,
        );
        let mut wal = wal::Wal::new(Box::new(wal))?;
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(KV).map_err(backend)?;
        tx.open_table(LOG).map_err(backend)?;
        tx.open_table(writer::LEASES).map_err(backend)?;
        tx.open_table(writer::KEY_LEASE).map_err(backend)?;
        tx.open_table(writer::LEASE_KEYS).map_err(backend)?;
        tx.open_table(META).map_err(backend)?;
        tx.commit().map_err(backend)?;
        writer::replay(&db, &mut wal)?;
        let current = {
            let tx = db.begin_read().map_err(backend)?;
            read_meta(&tx.open_table(META).map_err(backend)?, META_REVISION)?
        };
        let leases = writer::Leases::load(&db)?;
        let (rev_tx, revision) = watch::channel(current);
        let (writer, queue) = mpsc::channel();
        let wdb = db.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::run(&wdb, wal, &queue, &rev_tx, options, leases))
            .map_err(backend)?;
        Ok(Self {
            db,
            writer,
            thread: Some(thread),
            revision,
        })
    }

    /// Hands `work` to the writer thread and waits for its answer.
    async fn submit(&self, work: Work) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send((work, reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn read_get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let kv = tx.open_table(KV).map_err(backend)?;
        match kv.get(key).map_err(backend)? {
            Some(v) => Ok(Some(decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn read_range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let rev = read_meta(&tx.open_table(META).map_err(backend)?, META_REVISION)?;
        let kv = tx.open_table(KV).map_err(backend)?;
        let mut out = Vec::new();
        for item in kv.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(decode_kv(key, v.value())?);
        }
        Ok((out, rev))
    }
}

impl Drop for EmbeddedStore {
    /// Stops the writer thread (it finishes the queued transactions) and waits for it, so the file can
    /// be reopened right away. Watches still alive keep the file open until they are dropped too.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.writer, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where the write-ahead log of the store file at `path` lives: next to it, `-wal` appended.
fn wal_path(path: &Path) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The writer answered a request with an answer of another kind (a bug, reported rather than panicking).
fn mismatched() -> StoreError {
    StoreError::Backend("store writer answered with the wrong kind of answer".into())
}

fn read_meta(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(meta
        .get(key)
        .map_err(backend)?
        .map(|v| v.value())
        .unwrap_or(0))
}

impl Store for EmbeddedStore {
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move { Ok(*self.revision.borrow()) })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        Box::pin(async move { self.read_get(key) })
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>> {
        Box::pin(async move { self.read_range(prefix) })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            match self.submit(Work::Txn(txn)).await? {
                Answer::Txn(outcome) => Ok(outcome),
                _ => Err(mismatched()),
            }
        })
    }

    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        Box::pin(async move {
            match self.submit(Work::Grant(ttl)).await? {
                Answer::Granted(id) => Ok(id),
                _ => Err(mismatched()),
            }
        })
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, StoreError>> {
        Box::pin(async move {
            match self.submit(Work::KeepAlive(lease)).await? {
                Answer::Ttl(ttl) => Ok(ttl),
                _ => Err(mismatched()),
            }
        })
    }

    fn lease_revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            match self.submit(Work::Revoke(lease)).await? {
                Answer::Revoked => Ok(()),
                _ => Err(mismatched()),
            }
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<Box<dyn Watch>, StoreError>> {
        Box::pin(async move {
            let watcher = EmbeddedWatch {
                db: self.db.clone(),
                prefix: prefix.to_string(),
                last: after,
                revision: self.revision.clone(),
            };
            watcher.check_compacted()?;
            Ok(Box::new(watcher) as Box<dyn Watch>)
        })
    }
}

struct EmbeddedWatch {
    db: Arc<Database>,
    prefix: String,
    last: Revision,
    revision: watch::Receiver<Revision>,
}

impl EmbeddedWatch {
    fn check_compacted(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let compacted = read_meta(&tx.open_table(META).map_err(backend)?, META_COMPACTED)?;
        if self.last < compacted {
            return Err(StoreError::Compacted {
                requested: self.last,
                oldest: compacted,
            });
        }
        Ok(())
    }

    /// Reads the log after `self.last` up to `upto`, bounded; advances `self.last`.
    fn read_log(&mut self, upto: Revision) -> Result<Vec<Event>, StoreError> {
        let end = upto.min(self.last + MAX_WATCH_REVISIONS);
        let tx = self.db.begin_read().map_err(backend)?;
        let compacted = read_meta(&tx.open_table(META).map_err(backend)?, META_COMPACTED)?;
        if self.last < compacted {
            return Err(StoreError::Compacted {
                requested: self.last,
                oldest: compacted,
            });
        }
        let log = tx.open_table(LOG).map_err(backend)?;
        let mut events = Vec::new();
        for item in log.range(self.last + 1..=end).map_err(backend)? {
            let (rev, data) = item.map_err(backend)?;
            decode_events(rev.value(), data.value(), &self.prefix, &mut events)?;
        }
        self.last = end;
        Ok(events)
    }
}

impl Watch for EmbeddedWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(async move {
            loop {
                let current = *self.revision.borrow_and_update();
                while self.last < current {
                    let events = self.read_log(current)?;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                self.revision
                    .changed()
                    .await
                    .map_err(|_| StoreError::Closed)?;
            }
        })
    }
}

fn encode_kv(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_kv(key: &str, stored: &[u8]) -> Result<KeyValue, StoreError> {
    let corrupt = || StoreError::Corrupt(key.to_string());
    let (header, value) = stored.split_at_checked(16).ok_or_else(corrupt)?;
    let (c, m) = header.split_at(8);
    Ok(KeyValue {
        key: key.to_string(),
        value: value.to_vec(),
        create_revision: u64::from_le_bytes(c.try_into().map_err(|_| corrupt())?),
        mod_revision: u64::from_le_bytes(m.try_into().map_err(|_| corrupt())?),
    })
}

/// Log record layout, per event: key length (u32 LE), key, present flag (u8), and for a put the value
/// length (u32 LE) and the value.
fn encode_event(out: &mut Vec<u8>, key: &str, value: Option<&Vec<u8>>) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    match value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
}

fn decode_events(
    revision: Revision,
    mut data: &[u8],
    prefix: &str,
    out: &mut Vec<Event>,
) -> Result<(), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("log@{revision}"));
    fn take<'d>(data: &mut &'d [u8], n: usize) -> Option<&'d [u8]> {
        let (head, rest) = data.split_at_checked(n)?;
        *data = rest;
        Some(head)
    }
    fn take_len(data: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(data, 4)?.try_into().ok()?) as usize)
    }
    while !data.is_empty() {
        let klen = take_len(&mut data).ok_or_else(corrupt)?;
        let key = std::str::from_utf8(take(&mut data, klen).ok_or_else(corrupt)?)
            .map_err(|_| corrupt())?;
        let value = match take(&mut data, 1).ok_or_else(corrupt)?[0] {
            0 => None,
            _ => {
                let vlen = take_len(&mut data).ok_or_else(corrupt)?;
                Some(take(&mut data, vlen).ok_or_else(corrupt)?.to_vec())
            }
        };
        if key.starts_with(prefix) {
            out.push(Event {
                revision,
                key: key.to_string(),
                value,
            });
        }
    }
    Ok(())
}
