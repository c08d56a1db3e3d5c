//! Transactions larger than one etcd transaction (issue 17): all or nothing, however many keys.
//!
//! etcd applies at most `--max-txn-ops` (default 128) compares and as many writes per transaction,
//! and at most `--max-request-bytes` (default 1.5 MiB) per request. A larger [`Txn`] is applied in
//! three phases behind one *bulk record* (`/\0bulk/<id>`), so that its commit point is one write:
//!
//! 1. **Begin**: the bulk record is written as `pending`, attached to a lease of its own (5 s,
//!    kept alive while the bulk runs).
//! 2. **Lock**, in key order, in chunks of at most 100 keys: each written key is replaced by an
//!    *intent* (the bulk's id, the value readers saw before, the value the bulk writes), on
//!    condition of the revision the caller pinned (or of the revision it had when read, for a key
//!    written without a condition), and a *redo record* (`/\0bulk/<id>/<n>`) lists the chunk's keys;
//!    each chunk also requires the bulk record to still be pending. Keys the caller only pins go into
//!    the commit (up to 100; more are locked as read intents).
//! 3. **Commit**: one transaction checks the bulk record and the pins and rewrites the record as
//!    `committed` (detaching it from the lease). Afterwards the intents are rewritten as plain
//!    values, chunk by chunk (roll-forward), and the redo records and the bulk record deleted.
//!
//! Readers resolve intents ([`resolve`]): an intent of a committed bulk reads as the value it writes,
//! any other as the value before (with its old revisions, so that a writer that pinned it conflicts).
//! The status of a bulk is read at the same revision as the key. A writer whose condition fails on
//! a key held by a pending bulk waits until the bulk ends before it reports the conflict; two bulks
//! lock in key order, so the first to lock a contested key wins and the other fails on it. A bulk
//! whose owner died (its lease expired, the record is gone) is aborted: its intents read as the
//! values before, and whoever meets one (a conflicting writer, or the sweeper every few seconds and
//! at start-up) rolls it back. Watchers see nothing of the locks and the cleanup, and the whole bulk
//! in one batch at the commit record's revision (read from the redo records at that revision).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, GetOptions, PutOptions, TxnOp, TxnOpResponse,
};

use super::{EtcdStore, Resend, backend, revision_of};
use crate::{Event, Op, Revision, Store, StoreError, Txn, TxnOutcome};

/// Store keys starting with this are the backend's own (never shown to users).
pub(super) const INTERNAL: &str = "/\u{0}";
/// Bulk records and their redo records.
const BULKS: &str = "/\u{0}bulk/";
const PENDING: &[u8] = b"pending";
const COMMITTED: &[u8] = b"committed";
/// etcd's default `--max-txn-ops`: a transaction with more compares or writes goes in chunks.
pub(super) const MAX_OPS: usize = 128;
/// Requests larger than this (keys and values, estimated) go in chunks (etcd: 1.5 MiB).
pub(super) const MAX_BYTES: usize = 1024 * 1024;
/// Keys per lock, roll-forward or rollback step.
const CHUNK_KEYS: usize = 100;
/// Bytes of values per lock step (an intent holds the old and the new value, the redo record the
/// new one again).
const CHUNK_BYTES: usize = 384 * 1024;
/// Pins checked by the commit itself; more are locked as read intents.
const COMMIT_PINS: usize = 100;
/// The bulk record's lease: how long a dead owner's bulk blocks its keys.
const LEASE_SECS: i64 = 5;
/// How often the sweeper looks for bulks whose owner died.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// What a fault-injection hook asks after a lock step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkFault {
    Continue,
    /// Behave as a process killed at this point: stop keeping the lease alive, send nothing more,
    /// never return.
    Die,
}

/// Called with the number of lock steps done, after each one (tests only).
pub type BulkHook = Arc<dyn Fn(usize) -> BulkFault + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Values

/// How a user value is stored: values starting with a zero byte are escaped with `[0, 0]`, so
/// that `[0, 1]` starts only intents.
pub(super) fn encode_plain(v: &[u8]) -> Vec<u8> {
    if v.first() == Some(&0) {
        let mut out = vec![0, 0];
        out.extend_from_slice(v);
        out
    } else {
        v.to_vec()
    }
}

/// A stored value: a user value or an intent.
pub(super) enum Raw {
    Plain(Vec<u8>),
    Intent(Intent),
}

/// A key locked by a bulk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Intent {
    pub bulk: String,
    /// The key as readers saw it before: value, create and mod revision.
    pub prev: Option<(Vec<u8>, i64, i64)>,
    pub next: Next,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    Put(Vec<u8>),
    Delete,
    /// A read lock: the value stays.
    Keep,
}

pub(super) fn decode(raw: &[u8]) -> Result<Raw, StoreError> {
    match raw {
        [0, 0, rest @ ..] => Ok(Raw::Plain(rest.to_vec())),
        [0, 1, rest @ ..] => decode_intent(rest)
            .map(Raw::Intent)
            .ok_or_else(|| StoreError::Corrupt("bulk intent".into())),
        _ => Ok(Raw::Plain(raw.to_vec())),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

fn encode_next(out: &mut Vec<u8>, next: &Next) {
    match next {
        Next::Put(v) => {
            out.push(1);
            put_bytes(out, v);
        }
        Next::Delete => out.push(0),
        Next::Keep => out.push(2),
    }
}

fn decode_next(r: &mut Reader) -> Option<Next> {
    Some(match r.u8()? {
        0 => Next::Delete,
        1 => Next::Put(r.bytes()?.to_vec()),
        2 => Next::Keep,
        _ => return None,
    })
}

pub(super) fn encode_intent(i: &Intent) -> Vec<u8> {
    let mut out = vec![0, 1];
    put_bytes(&mut out, i.bulk.as_bytes());
    match &i.prev {
        Some((v, c, m)) => {
            out.push(1);
            out.extend_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&m.to_be_bytes());
            put_bytes(&mut out, v);
        }
        None => out.push(0),
    }
    encode_next(&mut out, &i.next);
    out
}

fn decode_intent(raw: &[u8]) -> Option<Intent> {
    let mut r = Reader(raw);
    let bulk = String::from_utf8(r.bytes()?.to_vec()).ok()?;
    let prev = match r.u8()? {
        0 => None,
        _ => {
            let c = r.i64()?;
            let m = r.i64()?;
            Some((r.bytes()?.to_vec(), c, m))
        }
    };
    let next = decode_next(&mut r)?;
    Some(Intent { bulk, prev, next })
}

/// A redo record: the keys of one lock step and what the bulk writes there.
fn encode_redo(entries: &[(&str, &Next)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, next) in entries {
        put_bytes(&mut out, key.as_bytes());
        encode_next(&mut out, next);
    }
    out
}

fn decode_redo(raw: &[u8]) -> Result<Vec<(String, Next)>, StoreError> {
    let corrupt = || StoreError::Corrupt("bulk redo record".into());
    let mut r = Reader(raw);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let key =
            String::from_utf8(r.bytes().ok_or_else(corrupt)?.to_vec()).map_err(|_| corrupt())?;
        out.push((key, decode_next(&mut r).ok_or_else(corrupt)?));
    }
    Ok(out)
}

/// The key as readers see it (value, create and mod revision; `None`: absent), given whether its
/// bulk has committed and the stored key's revisions.
pub(super) fn resolve(
    intent: Intent,
    committed: bool,
    create: i64,
    modr: i64,
) -> Option<(Vec<u8>, i64, i64)> {
    if !committed {
        return intent.prev;
    }
    match intent.next {
        Next::Put(v) => Some((v, intent.prev.map_or(create, |p| p.1), modr)),
        Next::Delete => None,
        Next::Keep => intent.prev.map(|(v, c, _)| (v, c, modr)),
    }
}

// ---------------------------------------------------------------------------------------------
// Bulk status

/// What is known for good about a bulk.
#[derive(Debug, Clone, Copy)]
enum Final {
    /// Committed at this revision.
    Committed(i64),
    Aborted,
}

/// Statuses of bulks that have ended, shared by a store and its watches.
#[derive(Default)]
pub(super) struct Statuses(Mutex<HashMap<String, Final>>);

impl Statuses {
    fn note(&self, bulk: &str, f: Final) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(bulk.to_string(), f);
    }
    fn known(&self, bulk: &str, at: i64) -> Option<bool> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(bulk)? {
            Final::Committed(rev) if at >= *rev => Some(true),
            Final::Committed(_) => None,
            Final::Aborted => Some(false),
        }
    }
}

fn record_key(bulk: &str) -> String {
    format!("{BULKS}{bulk}")
}

fn redo_prefix(bulk: &str) -> String {
    format!("{BULKS}{bulk}/")
}

/// The bulk a store key is the record of.
fn record_of(key: &str) -> Option<&str> {
    key.strip_prefix(BULKS).filter(|id| !id.contains('/'))
}

/// Whether `bulk` has committed as of revision `at` (0: now), where an intent of it was seen at
/// `at`. `None`: still pending.
pub(super) async fn committed_at(
    client: &Client,
    root: &str,
    statuses: &Statuses,
    bulk: &str,
    at: i64,
) -> Result<Option<bool>, StoreError> {
    if at > 0
        && let Some(known) = statuses.known(bulk, at)
    {
        return Ok(Some(known));
    }
    let mut options = GetOptions::new();
    if at > 0 {
        options = options.with_revision(at);
    }
    let key = format!("{root}{}", record_key(bulk));
    let mut c = client.clone();
    let response = c.get(key, Some(options)).await.map_err(backend)?;
    Ok(match response.kvs().first() {
        Some(kv) if kv.value() == COMMITTED => {
            statuses.note(bulk, Final::Committed(kv.mod_revision()));
            Some(true)
        }
        Some(_) => None,
        None => {
            // An intent was seen at `at` and its record is gone: the bulk was aborted (a committed
            // bulk's record goes only after its intents). Read now, the record may also be gone
            // because the bulk has committed and finished since.
            if at > 0 {
                statuses.note(bulk, Final::Aborted);
            }
            Some(false)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Watch support

/// One etcd watch event, as received.
pub(super) struct RawEvent {
    pub revision: i64,
    pub key: String,
    /// The new stored value, `None` for a deletion.
    pub value: Option<Vec<u8>>,
    /// The stored value before, when etcd still had it.
    pub prev: Option<Vec<u8>>,
}

/// Turns received events into what watchers see: locks and cleanup vanish (they change nothing
/// visible), a commit brings every key of its bulk under `prefix`, at the commit's revision.
pub(super) async fn visible_events(
    client: &Client,
    root: &str,
    statuses: &Statuses,
    prefix: &str,
    raws: Vec<RawEvent>,
) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::new();
    for raw in raws {
        let revision = revision_of(raw.revision);
        if raw.key.starts_with(INTERNAL) {
            let Some(bulk) = record_of(&raw.key) else {
                continue;
            };
            match &raw.value {
                Some(v) if v == COMMITTED => {
                    statuses.note(bulk, Final::Committed(raw.revision));
                    let (redo, _) = super::EtcdStore::read_range(
                        client.clone(),
                        format!("{root}{}", redo_prefix(bulk)).into_bytes(),
                        raw.revision,
                    )
                    .await
                    .map_err(|e| super::read_error(e, revision))?;
                    for kv in redo {
                        for (key, next) in decode_redo(kv.value())? {
                            if !key.starts_with(prefix) {
                                continue;
                            }
                            let value = match next {
                                Next::Put(v) => Some(v),
                                Next::Delete => None,
                                Next::Keep => continue,
                            };
                            out.push(Event {
                                revision,
                                key,
                                value,
                            });
                        }
                    }
                }
                None if raw.prev.as_deref() != Some(COMMITTED) => {
                    statuses.note(bulk, Final::Aborted);
                }
                _ => {}
            }
            continue;
        }
        if !raw.key.starts_with(prefix) {
            continue;
        }
        let after = match raw.value.as_deref().map(decode).transpose()? {
            Some(Raw::Intent(_)) => continue,
            Some(Raw::Plain(v)) => Some(v),
            None => None,
        };
        if let Some(Raw::Intent(intent)) = raw.prev.as_deref().map(decode).transpose()? {
            let committed = committed_at(client, root, statuses, &intent.bulk, raw.revision - 1)
                .await?
                .unwrap_or(false);
            let before = resolve(intent, committed, 0, 0).map(|(v, _, _)| v);
            if before == after {
                continue;
            }
        }
        out.push(Event {
            revision,
            key: raw.key,
            value: after,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The bulk protocol

/// Whether `txn` fits one etcd transaction.
pub(super) fn fits(txn: &Txn) -> bool {
    let bytes: usize = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put(k, v) | Op::PutLeased(k, v, _) => k.len() + v.len() + 32,
            Op::Delete(k) => k.len() + 32,
        })
        .sum::<usize>()
        + txn
            .compares
            .iter()
            .map(|crate::Compare::ModRevision(k, _)| 2 * k.len() + 48)
            .sum::<usize>();
    txn.compares.len() <= MAX_OPS && txn.ops.len() <= MAX_OPS && bytes <= MAX_BYTES
}

/// A key the bulk locks.
struct Lock {
    /// The revision the caller requires (0: absent), if any.
    caller: Option<Revision>,
    next: Next,
    /// The stored key's mod revision when read (0: absent), which the lock requires.
    stored: i64,
    /// The key as readers saw it.
    prev: Option<(Vec<u8>, i64, i64)>,
    /// `stored` and `prev` are known.
    known: bool,
}

/// How a key read before locking stands.
enum Read {
    Ok,
    /// The caller's condition on it fails.
    Conflict,
    /// Another bulk holds it: wait for that one.
    Wait(String),
}

/// Aborts the keep-alive task when the bulk ends.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EtcdStore {
    fn etcd_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn compare_at(&self, key: &str, stored: i64) -> EtcdCompare {
        if stored == 0 {
            EtcdCompare::create_revision(self.etcd_key(key), CompareOp::Equal, 0)
        } else {
            EtcdCompare::mod_revision(self.etcd_key(key), CompareOp::Equal, stored)
        }
    }

    /// Sends one etcd transaction (resent only when certainly not applied).
    async fn raw_txn(&self, txn: etcd_client::Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        self.call(Resend::IfNotApplied, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// Reads keys (at most [`MAX_OPS`]) in one request: their stored key-values and the revision.
    async fn read_keys(
        &self,
        keys: &[&str],
    ) -> Result<(Vec<Option<etcd_client::KeyValue>>, i64), StoreError> {
        let gets: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::get(self.etcd_key(k), None))
            .collect();
        let txn = etcd_client::Txn::new().and_then(gets);
        let response = self
            .call(Resend::Always, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok((gets_of(&response.op_responses()), revision))
    }

    /// Notes how `kv` (the key as stored, read at `at`) stands for `lock`.
    async fn take_read(
        &self,
        lock: &mut Lock,
        kv: Option<&etcd_client::KeyValue>,
        at: i64,
    ) -> Result<Read, StoreError> {
        let (stored, seen) = match kv {
            None => (0, None),
            Some(kv) => {
                if kv.lease() != 0 {
                    return Err(StoreError::TxnTooLarge(
                        "a transaction this large cannot include leased keys".into(),
                    ));
                }
                let seen = match decode(kv.value())? {
                    Raw::Plain(v) => Some((v, kv.create_revision(), kv.mod_revision())),
                    Raw::Intent(intent) => {
                        let bulk = intent.bulk.clone();
                        match committed_at(
                            &self.client().await?,
                            &self.root,
                            &self.statuses,
                            &bulk,
                            at,
                        )
                        .await?
                        {
                            None => return Ok(Read::Wait(bulk)),
                            Some(committed) => {
                                resolve(intent, committed, kv.create_revision(), kv.mod_revision())
                            }
                        }
                    }
                };
                (kv.mod_revision(), seen)
            }
        };
        if let Some(want) = lock.caller {
            let have = seen.as_ref().map_or(0, |s| revision_of(s.2));
            if have != want {
                return Ok(Read::Conflict);
            }
        }
        if lock.next == Next::Keep && seen.is_none() && lock.caller != Some(0) {
            return Ok(Read::Conflict);
        }
        lock.stored = stored;
        lock.prev = seen;
        lock.known = true;
        Ok(Read::Ok)
    }

    /// Waits until `bulk` is no longer pending (at most `retry_for`).
    async fn wait_for(&self, bulk: &str) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + self.options.retry_for;
        let client = self.client().await?;
        loop {
            if committed_at(&client, &self.root, &self.statuses, bulk, 0)
                .await?
                .is_some()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Backend(format!(
                    "bulk transaction {bulk} still pending after {:?}",
                    self.options.retry_for
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After a failed condition on `key`: when a bulk holds the key, waits for it to end (and
    /// finishes its cleanup when it has ended), so that the caller's next attempt sees it settled.
    pub(super) async fn settle(&self, key: &str) -> Result<(), StoreError> {
        if key.is_empty() {
            return Ok(());
        }
        let (kvs, _) = self.read_keys(&[key]).await?;
        let Some(Some(kv)) = kvs.first() else {
            return Ok(());
        };
        let Raw::Intent(intent) = decode(kv.value())? else {
            return Ok(());
        };
        self.wait_for(&intent.bulk).await?;
        let client = self.client().await?;
        let committed = committed_at(&client, &self.root, &self.statuses, &intent.bulk, 0)
            .await?
            .unwrap_or(false);
        self.finish(&intent.bulk, committed).await
    }

    /// Applies `txn`, too large for one etcd transaction, all or nothing (see the module's doc).
    pub(super) async fn bulk_txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        // What the transaction means: one condition and the last write per key.
        let mut wants: BTreeMap<String, Revision> = BTreeMap::new();
        for crate::Compare::ModRevision(key, rev) in &txn.compares {
            if *wants.entry(key.clone()).or_insert(*rev) != *rev {
                return Ok(TxnOutcome::Conflict(key.clone()));
            }
        }
        let mut locks: BTreeMap<String, Lock> = BTreeMap::new();
        for op in &txn.ops {
            let (key, next) = match op {
                Op::Put(k, v) => (k, Next::Put(v.clone())),
                Op::Delete(k) => (k, Next::Delete),
                Op::PutLeased(..) => {
                    return Err(StoreError::TxnTooLarge(
                        "a transaction this large cannot write leased keys".into(),
                    ));
                }
            };
            let caller = wants.get(key).copied();
            locks.insert(
                key.clone(),
                Lock {
                    caller,
                    next,
                    stored: 0,
                    prev: None,
                    known: caller == Some(0),
                },
            );
        }
        let mut pins: Vec<(String, Revision)> = wants
            .into_iter()
            .filter(|(k, _)| !locks.contains_key(k))
            .collect();
        for (key, rev) in pins.split_off(pins.len().min(COMMIT_PINS)) {
            locks.insert(
                key,
                Lock {
                    caller: Some(rev),
                    next: Next::Keep,
                    stored: 0,
                    prev: None,
                    known: false,
                },
            );
        }

        // Read what the locks must name, before writing anything.
        if let Some(outcome) = self.read_locks(&mut locks).await? {
            return Ok(outcome);
        }

        // Begin.
        let client = self.client().await?;
        let lease = self
            .lease_grant(Duration::from_secs(LEASE_SECS as u64))
            .await?;
        let keep_alive = KeepAlive(tokio::spawn({
            let mut client = client.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(LEASE_SECS as u64 * 1000 / 4)).await;
                    if let Ok((mut keeper, _stream)) = client.lease_keep_alive(lease).await {
                        let _ = keeper.keep_alive().await;
                    }
                }
            }
        }));
        let bulk = format!("{lease:016x}");
        let record = self.etcd_key(&record_key(&bulk));
        let begin = etcd_client::Txn::new()
            .when([EtcdCompare::create_revision(
                record.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                record.clone(),
                PENDING,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let begun = self.raw_txn(begin).await;
        let pending = match begun {
            Ok(r) if r.succeeded() => r.header().map_or(0, |h| h.revision()),
            Ok(_) => return Err(backend("bulk record exists already")),
            Err(e) => {
                let _ = self.lease_revoke(lease).await;
                return Err(e);
            }
        };
        let alive = EtcdCompare::mod_revision(record.clone(), CompareOp::Equal, pending);

        // Lock, in key order.
        let keys: Vec<String> = locks.keys().cloned().collect();
        let mut steps = 0usize;
        let mut start = 0;
        while start < keys.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < keys.len()
                && end - start < CHUNK_KEYS
                && (bytes < CHUNK_BYTES || end == start)
            {
                let lock = &locks[&keys[end]];
                bytes += keys[end].len()
                    + lock.prev.as_ref().map_or(0, |p| p.0.len())
                    + match &lock.next {
                        Next::Put(v) => 2 * v.len(),
                        _ => 0,
                    };
                end += 1;
            }
            let chunk = &keys[start..end];
            let mut attempts = 0;
            loop {
                attempts += 1;
                let mut compares = vec![alive.clone()];
                let mut puts = Vec::with_capacity(chunk.len() + 1);
                for key in chunk {
                    let lock = &locks[key];
                    compares.push(self.compare_at(key, lock.stored));
                    let intent = Intent {
                        bulk: bulk.clone(),
                        prev: lock.prev.clone(),
                        next: lock.next.clone(),
                    };
                    puts.push(TxnOp::put(self.etcd_key(key), encode_intent(&intent), None));
                }
                let entries: Vec<(&str, &Next)> =
                    chunk.iter().map(|k| (k.as_str(), &locks[k].next)).collect();
                puts.push(TxnOp::put(
                    self.etcd_key(&format!("{}{steps:08}", redo_prefix(&bulk))),
                    encode_redo(&entries),
                    None,
                ));
                let mut reads = vec![TxnOp::get(record.clone(), None)];
                reads.extend(chunk.iter().map(|k| TxnOp::get(self.etcd_key(k), None)));
                let request = etcd_client::Txn::new()
                    .when(compares)
                    .and_then(puts)
                    .or_else(reads);
                let response = match self.raw_txn(request).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.abort(&bulk, pending).await;
                        return Err(e);
                    }
                };
                if response.succeeded() {
                    break;
                }
                let at = response.header().map_or(0, |h| h.revision());
                let got = gets_of(&response.op_responses());
                if got
                    .first()
                    .and_then(|kv| kv.as_ref())
                    .map(|kv| kv.mod_revision())
                    != Some(pending)
                {
                    self.abort(&bulk, pending).await;
                    return Ok(TxnOutcome::Conflict(String::new()));
                }
                for (key, kv) in chunk.iter().zip(&got[1..]) {
                    let lock = locks.get_mut(key).expect("locked key");
                    if kv.as_ref().map_or(0, |kv| kv.mod_revision()) == lock.stored {
                        continue;
                    }
                    match self.take_read(lock, kv.as_ref(), at).await {
                        Ok(Read::Ok) => {}
                        Ok(Read::Wait(other)) if lock.caller.is_none() && attempts < 50 => {
                            self.wait_for(&other).await.ok();
                            lock.known = false;
                        }
                        Ok(Read::Wait(_) | Read::Conflict) => {
                            self.abort(&bulk, pending).await;
                            self.settle(key).await?;
                            return Ok(TxnOutcome::Conflict(key.clone()));
                        }
                        Err(e) => {
                            self.abort(&bulk, pending).await;
                            return Err(e);
                        }
                    }
                }
                if attempts >= 50 {
                    self.abort(&bulk, pending).await;
                    return Ok(TxnOutcome::Conflict(String::new()));
                }
                if let Some(outcome) = self.read_locks(&mut locks).await? {
                    self.abort(&bulk, pending).await;
                    return Ok(outcome);
                }
            }
            steps += 1;
            start = end;
            let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(hook) = hook
                && hook(steps) == BulkFault::Die
            {
                keep_alive.0.abort();
                std::future::pending::<()>().await;
            }
        }

        // Commit.
        let mut compares = vec![alive];
        compares.extend(
            pins.iter()
                .map(|(key, rev)| self.compare_at(key, *rev as i64)),
        );
        let mut reads = vec![TxnOp::get(record.clone(), None)];
        reads.extend(pins.iter().map(|(k, _)| TxnOp::get(self.etcd_key(k), None)));
        let commit = etcd_client::Txn::new()
            .when(compares)
            .and_then([TxnOp::put(record.clone(), COMMITTED, None)])
            .or_else(reads);
        let committed = match self.raw_txn(commit).await {
            Ok(r) if r.succeeded() => r.header().map_or(0, |h| h.revision()),
            Ok(r) => {
                self.abort(&bulk, pending).await;
                let got = gets_of(&r.op_responses());
                let key = pins
                    .iter()
                    .zip(got.iter().skip(1))
                    .find(|((_, want), kv)| {
                        kv.as_ref().map_or(0, |kv| revision_of(kv.mod_revision())) != *want
                    })
                    .map(|((k, _), _)| k.clone())
                    .unwrap_or_default();
                self.settle(&key).await?;
                return Ok(TxnOutcome::Conflict(key));
            }
            Err(StoreError::OutcomeUnknown(why)) => {
                // Either the commit applied, or aborting now makes sure it never will.
                let undo = etcd_client::Txn::new()
                    .when([EtcdCompare::mod_revision(
                        record.clone(),
                        CompareOp::Equal,
                        pending,
                    )])
                    .and_then([TxnOp::delete(record.clone(), None)])
                    .or_else([TxnOp::get(record.clone(), None)]);
                let r = self.raw_txn(undo).await?;
                match gets_of(&r.op_responses()).first() {
                    Some(Some(kv)) if !r.succeeded() && kv.value() == COMMITTED => {
                        kv.mod_revision()
                    }
                    _ => {
                        tracing::debug!("bulk {bulk}: commit outcome unknown ({why}); rolled back");
                        self.finish(&bulk, false).await.ok();
                        return Ok(TxnOutcome::Conflict(String::new()));
                    }
                }
            }
            Err(e) => {
                self.abort(&bulk, pending).await;
                return Err(e);
            }
        };
        drop(keep_alive);
        self.statuses.note(&bulk, Final::Committed(committed));
        if let Err(e) = self.finish(&bulk, true).await {
            tracing::warn!("bulk {bulk} committed; cleanup left to the sweeper: {e}");
        }
        let _ = self.lease_revoke(lease).await;
        Ok(TxnOutcome::Committed(revision_of(committed)))
    }

    /// Reads the keys whose locks are not known yet, waiting for other bulks that hold them;
    /// `Some` when a caller's condition fails (nothing written).
    async fn read_locks(
        &self,
        locks: &mut BTreeMap<String, Lock>,
    ) -> Result<Option<TxnOutcome>, StoreError> {
        let mut rounds = 0;
        loop {
            let unknown: Vec<String> = locks
                .iter()
                .filter(|(_, l)| !l.known)
                .map(|(k, _)| k.clone())
                .collect();
            if unknown.is_empty() {
                return Ok(None);
            }
            rounds += 1;
            for batch in unknown.chunks(CHUNK_KEYS) {
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                let (kvs, at) = self.read_keys(&refs).await?;
                for (key, kv) in batch.iter().zip(&kvs) {
                    let lock = locks.get_mut(key).expect("lock");
                    match self.take_read(lock, kv.as_ref(), at).await? {
                        Read::Ok => {}
                        Read::Conflict => return Ok(Some(TxnOutcome::Conflict(key.clone()))),
                        Read::Wait(other) => {
                            self.wait_for(&other).await?;
                            if lock.caller.is_some() || rounds > 50 {
                                self.settle(key).await?;
                                return Ok(Some(TxnOutcome::Conflict(key.clone())));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Aborts a bulk of ours: its record goes (nothing can commit it any more), then its intents.
    async fn abort(&self, bulk: &str, pending: i64) {
        let record = self.etcd_key(&record_key(bulk));
        let undo = etcd_client::Txn::new()
            .when([EtcdCompare::mod_revision(
                record.clone(),
                CompareOp::Equal,
                pending,
            )])
            .and_then([TxnOp::delete(record, None)]);
        if let Err(e) = self.raw_txn(undo).await {
            tracing::warn!("aborting bulk {bulk}: {e}; its lease will end it");
            return;
        }
        self.statuses.note(bulk, Final::Aborted);
        if let Err(e) = self.finish(bulk, false).await {
            tracing::warn!("rolling back bulk {bulk}: {e}; left to the sweeper");
        }
    }

    /// Rewrites the intents of an ended bulk as plain values (committed: the values it writes;
    /// else the values before), deleting its redo records and, last, its record. Idempotent, safe
    /// to run concurrently: each key is rewritten only while it still holds the bulk's intent.
    pub(super) async fn finish(&self, bulk: &str, committed: bool) -> Result<(), StoreError> {
        let (redo, _) = self
            .call(Resend::Always, |c| {
                Self::read_range(c, self.etcd_key(&redo_prefix(bulk)).into_bytes(), 0)
            })
            .await?;
        for record in redo {
            let locked = record.mod_revision();
            let mut keys: Vec<String> = decode_redo(record.value())?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            loop {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                let (kvs, _) = self.read_keys(&refs).await?;
                let mut compares = Vec::new();
                let mut writes = Vec::new();
                let mut held = Vec::new();
                for (key, kv) in keys.iter().zip(kvs) {
                    let Some(kv) = kv.filter(|kv| kv.mod_revision() == locked) else {
                        continue;
                    };
                    let Raw::Intent(intent) = decode(kv.value())? else {
                        continue;
                    };
                    if intent.bulk != bulk {
                        continue;
                    }
                    compares.push(self.compare_at(key, locked));
                    held.push(key.clone());
                    writes.push(
                        match resolve(intent, committed, kv.create_revision(), locked) {
                            Some((v, _, _)) => {
                                TxnOp::put(self.etcd_key(key), encode_plain(&v), None)
                            }
                            None => TxnOp::delete(self.etcd_key(key), None),
                        },
                    );
                }
                writes.push(TxnOp::delete(record.key().to_vec(), None));
                let r = self
                    .raw_txn(etcd_client::Txn::new().when(compares).and_then(writes))
                    .await?;
                if r.succeeded() {
                    break;
                }
                keys = held;
            }
        }
        let record = self.etcd_key(&record_key(bulk));
        if committed {
            self.raw_txn(etcd_client::Txn::new().and_then([TxnOp::delete(record, None)]))
                .await?;
        }
        Ok(())
    }

    /// Finishes every bulk whose owner is gone (its record expired: rolled back) or that committed
    /// without its cleanup (rolled forward).
    pub(super) async fn sweep(&self) -> Result<(), StoreError> {
        let (kvs, _) = self
            .call(Resend::Always, |c| {
                Self::read_range(c, self.etcd_key(BULKS).into_bytes(), 0)
            })
            .await?;
        let mut bulks: BTreeMap<String, Option<bool>> = BTreeMap::new();
        for kv in &kvs {
            let key = self.store_key(kv.key())?;
            let rest = key.strip_prefix(BULKS).unwrap_or_default();
            let (id, redo) = match rest.split_once('/') {
                Some((id, _)) => (id, true),
                None => (rest, false),
            };
            let entry = bulks.entry(id.to_string()).or_insert(Some(false));
            if !redo {
                // Pending: the owner lives (or its lease has not run out yet).
                *entry = if kv.value() == COMMITTED {
                    Some(true)
                } else {
                    None
                };
            }
        }
        for (bulk, state) in bulks {
            if let Some(committed) = state {
                tracing::info!(
                    "bulk {bulk}: finishing ({})",
                    if committed {
                        "roll-forward"
                    } else {
                        "rollback"
                    }
                );
                self.finish(&bulk, committed).await?;
            }
        }
        Ok(())
    }
}

/// Sweeps now and every few seconds while the store (`alive`) lives.
pub(super) fn start_sweeper(alive: Weak<()>, sweeper: EtcdStore) {
    tokio::spawn(async move {
        while alive.upgrade().is_some() {
            if let Err(e) = sweeper.sweep().await {
                tracing::debug!("bulk sweep: {e}");
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    });
}

/// The key-values of a transaction's get responses, in order (`None`: absent).
fn gets_of(responses: &[TxnOpResponse]) -> Vec<Option<etcd_client::KeyValue>> {
    responses
        .iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for v in [&b""[..], b"x", b"\0", b"\0\x01abc", b"{}"] {
            match decode(&encode_plain(v)).unwrap() {
                Raw::Plain(p) => assert_eq!(p, v),
                Raw::Intent(_) => panic!("plain read as intent"),
            }
        }
        let i = Intent {
            bulk: "b1".into(),
            prev: Some((b"old".to_vec(), 3, 7)),
            next: Next::Put(b"\0new".to_vec()),
        };
        match decode(&encode_intent(&i)).unwrap() {
            Raw::Intent(j) => assert_eq!(i, j),
            Raw::Plain(_) => panic!("intent read as plain"),
        }
        let redo = encode_redo(&[
            ("/a", &Next::Delete),
            ("/b", &Next::Put(vec![1])),
            ("/c", &Next::Keep),
        ]);
        assert_eq!(
            decode_redo(&redo).unwrap(),
            [
                ("/a".to_string(), Next::Delete),
                ("/b".to_string(), Next::Put(vec![1])),
                ("/c".to_string(), Next::Keep)
            ]
        );
    }

    #[test]
    fn intents_resolve_by_status() {
        let created = Intent {
            bulk: "b".into(),
            prev: None,
            next: Next::Put(b"v".to_vec()),
        };
        assert_eq!(resolve(created.clone(), false, 5, 5), None);
        assert_eq!(resolve(created, true, 5, 5), Some((b"v".to_vec(), 5, 5)));
        let kept = Intent {
            bulk: "b".into(),
            prev: Some((b"p".to_vec(), 2, 3)),
            next: Next::Keep,
        };
        assert_eq!(
            resolve(kept.clone(), false, 2, 9),
            Some((b"p".to_vec(), 2, 3))
        );
        assert_eq!(resolve(kept, true, 2, 9), Some((b"p".to_vec(), 2, 9)));
    }
}
