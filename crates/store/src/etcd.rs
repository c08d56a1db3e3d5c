//! The etcd backend: the [`Store`] trait on an etcd v3 cluster, so that several servers share one store.
//!
//! Every store key lives under a configurable key prefix (default `/wyvern`): store key `ports/p1` is
//! etcd key `/wyvern/ports/p1`. Revisions are etcd's own (the response header revision), so they increase
//! with every write but may skip numbers when other clients write to the same cluster.
//!
//! Failure handling. One client holds all endpoints and balances requests over them; a dead member fails
//! fast (connection refused) and the request is retried on another one.
//! - Reads (get, range, revision) and watch (re)connections are retried on any transport or availability
//!   error, with backoff, for up to [`EtcdOptions::retry_for`].
//! - A transaction is resent only when the error proves that etcd never started to apply it: the
//!   connection was refused, or the member answered "no leader" / "too many requests" before proposing it.
//!   In every other failure (connection lost mid-request, timeout, "leader changed") the transaction may
//!   already be committed. Resending it could apply it twice (a transaction without compares) or turn a
//!   success into a spurious conflict (one with compares), so the backend returns
//!   [`StoreError::OutcomeUnknown`] and leaves the decision to the caller, who can read the keys back.
//!
//! Leases are etcd leases (TTLs in whole seconds). Granting is retried like a read: a lease granted
//! twice leaves an unused one that expires by itself. Keep-alive and revoke are idempotent.
//!
//! A watch follows the prefix from a revision and, when its stream breaks, reconnects from the last
//! revision it delivered, so a consumer sees every revision once and in order across member failures.
//! When etcd has compacted the history the watch needs, it fails with [`StoreError::Compacted`].

mod bulk;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bulk::{BulkFault, BulkHook};

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::{
    Compare, Event, KeyValue, LeaseId, Op, Revision, Store, StoreError, Txn, TxnOutcome, Watch,
};

/// The key prefix used when the spec names none.
pub const DEFAULT_PREFIX: &str = "/wyvern";
/// Keys fetched per request when reading a range.
const RANGE_PAGE: i64 = 1000;
/// What etcd says when a write names a lease that has ended.
const LEASE_NOT_FOUND: &str = "requested lease not found";
/// What etcd says when a read asks for a compacted revision.
const COMPACTED: &str = "required revision has been compacted";
/// The longest pause between two retries.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Where and how to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `host:port` (or `http://host:port`) of every member.
    pub endpoints: Vec<String>,
    /// All store keys live under this etcd key prefix (no trailing `/`).
    pub prefix: String,
    /// How long one request may take before it counts as failed.
    pub request_timeout: Duration,
    /// How long reads, safe transaction resends and watch reconnections keep retrying.
    pub retry_for: Duration,
}

impl EtcdOptions {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...][/KEY-PREFIX]`; the prefix defaults to [`DEFAULT_PREFIX`].
    pub fn parse(spec: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::BadSpec(spec.to_string());
        let rest = spec.strip_prefix("etcd://").ok_or_else(bad)?;
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, DEFAULT_PREFIX),
        };
        let endpoints: Vec<String> = hosts.split(',').map(str::to_string).collect();
        if prefix.is_empty() || endpoints.iter().any(|e| !valid_endpoint(e)) {
            return Err(bad());
        }
        Ok(Self {
            endpoints,
            prefix: prefix.to_string(),
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(20),
        })
    }
}

fn valid_endpoint(e: &str) -> bool {
    matches!(e.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
}

/// A store on an etcd cluster. Connects on first use.
pub struct EtcdStore {
    options: EtcdOptions,
    /// `prefix` + `/`: prepended to every store key.
    root: String,
    client: OnceCell<Client>,
    /// Bulks known to have ended (see [`bulk`]), shared with the store's watches.
    statuses: Arc<bulk::Statuses>,
    /// Fault injection between the lock steps of a bulk (tests).
    hook: Arc<Mutex<Option<BulkHook>>>,
    /// Held while the store lives: its sweeper stops when it goes. `None` in the sweeper's own.
    alive: Option<Arc<()>>,
}

/// What a failed request tells about its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// etcd did not start to apply it: safe to resend.
    NotApplied,
    /// It may have been applied (or not); only reads may be resent.
    Unknown,
    /// Retrying cannot help (bad request, permission, ...).
    Fatal,
}

/// When a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// After any transient failure: reads, and writes whose repetition is harmless.
    Always,
    /// Only after a [`Failure::NotApplied`]: transactions.
    IfNotApplied,
}

/// Either an etcd error or our own per-request timeout.
enum CallError {
    Etcd(etcd_client::Error),
    TimedOut(Duration),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Etcd(e) => e.fmt(f),
            Self::TimedOut(d) => write!(f, "no answer within {d:?}"),
        }
    }
}

impl CallError {
    fn failure(&self) -> Failure {
        match self {
            Self::Etcd(e) => classify(e),
            Self::TimedOut(_) => Failure::Unknown,
        }
    }
}

/// What etcd says when a transaction has more operations than `--max-txn-ops`.
const TXN_TOO_LARGE: &str = "too many operations in txn request";
/// What etcd says when a request is larger than `--max-request-bytes`.
const REQUEST_TOO_LARGE: &str = "request is too large";

/// Sorts an etcd error into [`Failure`] classes.
fn classify(e: &etcd_client::Error) -> Failure {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            // Rejections etcd makes before proposing anything to raft, and a paged range whose
            // revision was compacted meanwhile (it is read again at a new revision).
            const NOT_PROPOSED: [&str; 5] = [
                "no leader",
                "too many requests",
                "raft proposal dropped",
                "not capable",
                COMPACTED,
            ];
            if NOT_PROPOSED.iter().any(|m| message.contains(m)) || connection_refused(status) {
                return Failure::NotApplied;
            }
            match status.code() {
                Code::Unavailable
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::Internal
                | Code::ResourceExhausted => Failure::Unknown,
                _ => Failure::Fatal,
            }
        }
        etcd_client::Error::TransportError(t) if connection_refused(t) => Failure::NotApplied,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => Failure::Unknown,
        _ => Failure::Fatal,
    }
}

/// Whether the error was a refused TCP connection: the request never left this process.
fn connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        let refused = c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused || c.to_string().contains("tcp connect error") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A failed read at revision `at`: [`StoreError::Compacted`] when that revision is gone.
fn read_error(e: etcd_client::Error, at: Revision) -> StoreError {
    if e.to_string().contains(COMPACTED) {
        StoreError::Compacted {
            requested: at,
            oldest: at,
        }
    } else {
        backend(e)
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn revision_of(raw: i64) -> Revision {
    Revision::try_from(raw).unwrap_or(0)
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Exponential backoff with a deadline.
struct Backoff {
    deadline: Instant,
    pause: Duration,
}

impl Backoff {
    fn new(retry_for: Duration) -> Self {
        Self {
            deadline: Instant::now() + retry_for,
            pause: Duration::from_millis(20),
        }
    }
    /// Sleeps before the next attempt; `false` when the deadline has passed.
    async fn wait(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX_BACKOFF);
        true
    }
}

impl EtcdStore {
    /// A store that will connect to `options.endpoints` on first use.
    pub fn new(options: EtcdOptions) -> Self {
        let root = format!("{}/", options.prefix);
        Self {
            options,
            root,
            client: OnceCell::new(),
            statuses: Arc::default(),
            hook: Arc::default(),
            alive: Some(Arc::new(())),
        }
    }

    /// Calls `hook` after each lock step of a transaction too large for one etcd transaction
    /// (fault injection for tests: [`BulkFault::Die`] stops the bulk there as a killed process
    /// would).
    pub fn set_bulk_hook(&self, hook: Option<BulkHook>) {
        *self.hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// Finishes now the large transactions whose owner died (rolled back) or whose cleanup was
    /// cut short (rolled forward). The store also does this when it connects and every 2 s.
    pub async fn sweep_bulks(&self) -> Result<(), StoreError> {
        self.sweep().await
    }

    /// How many stored keys belong to unfinished large transactions (bulk and redo records,
    /// intents): 0 when none is under way and none was left behind.
    pub async fn bulk_residue(&self) -> Result<usize, StoreError> {
        let start = self.root.clone().into_bytes();
        let (kvs, _) = self
            .call(Resend::Always, |c| Self::read_range(c, start.clone(), 0))
            .await?;
        let internal = self.full_key(bulk::INTERNAL).into_bytes();
        Ok(kvs
            .iter()
            .filter(|kv| kv.key().starts_with(&internal) || kv.value().starts_with(&[0, 1]))
            .count())
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    async fn client(&self) -> Result<Client, StoreError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let options = ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
                    .with_keep_alive_while_idle(true)
                    // A member cut off from the leader rejects requests and ends watches, so they are
                    // retried on a member that is still part of the cluster.
                    .with_require_leader(true);
                let client = Client::connect(&self.options.endpoints, Some(options))
                    .await
                    .map_err(backend)?;
                if let Some(alive) = &self.alive {
                    let sweeper = Self {
                        options: self.options.clone(),
                        root: self.root.clone(),
                        client: OnceCell::new_with(Some(client.clone())),
                        statuses: self.statuses.clone(),
                        hook: Arc::default(),
                        alive: None,
                    };
                    bulk::start_sweeper(Arc::downgrade(alive), sweeper);
                }
                Ok::<_, StoreError>(client)
            })
            .await?;
        Ok(client.clone())
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn store_key(&self, raw: &[u8]) -> Result<String, StoreError> {
        let corrupt = || StoreError::Corrupt(String::from_utf8_lossy(raw).into_owned());
        let key = std::str::from_utf8(raw).map_err(|_| corrupt())?;
        key.strip_prefix(self.root.as_str())
            .map(str::to_string)
            .ok_or_else(corrupt)
    }

    /// The key as readers see it, read at revision `at`: an intent of a large transaction reads
    /// as the value it writes once that has committed, as the value before otherwise (`None`:
    /// absent). `bulks` caches whether each bulk had committed at `at`.
    async fn key_value(
        &self,
        kv: &etcd_client::KeyValue,
        at: i64,
        bulks: &mut std::collections::HashMap<String, bool>,
    ) -> Result<Option<KeyValue>, StoreError> {
        let key = self.store_key(kv.key())?;
        let (value, create, modr) = match bulk::decode(kv.value())? {
            bulk::Raw::Plain(v) => (v, kv.create_revision(), kv.mod_revision()),
            bulk::Raw::Intent(intent) => {
                let committed = match bulks.get(&intent.bulk) {
                    Some(c) => *c,
                    None => {
                        let client = self.client().await?;
                        let c = bulk::committed_at(
                            &client,
                            &self.root,
                            &self.statuses,
                            &intent.bulk,
                            at,
                        )
                        .await?
                        .unwrap_or(false);
                        bulks.insert(intent.bulk.clone(), c);
                        c
                    }
                };
                match bulk::resolve(intent, committed, kv.create_revision(), kv.mod_revision()) {
                    Some(seen) => seen,
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(KeyValue {
            key,
            value,
            create_revision: revision_of(create),
            mod_revision: revision_of(modr),
        }))
    }

    /// Runs `request` with a timeout, sending it again as the failure and `resend` allow.
    async fn call<T, F, Fut>(&self, resend: Resend, mut request: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        let timeout = self.options.request_timeout;
        let mut backoff = Backoff::new(self.options.retry_for);
        loop {
            let error = match tokio::time::timeout(timeout, request(client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => CallError::Etcd(e),
                Err(_) => CallError::TimedOut(timeout),
            };
            match (error.failure(), resend) {
                (Failure::Fatal, _)
                    if error.to_string().contains(TXN_TOO_LARGE)
                        || error.to_string().contains(REQUEST_TOO_LARGE) =>
                {
                    return Err(StoreError::TxnTooLarge(error.to_string()));
                }
                (Failure::Fatal, _) => return Err(backend(error)),
                (Failure::Unknown, Resend::IfNotApplied) => {
                    return Err(StoreError::OutcomeUnknown(error.to_string()));
                }
                _ => {
                    tracing::debug!("etcd request failed, retrying: {error}");
                    if !backoff.wait().await {
                        return Err(StoreError::Backend(format!(
                            "etcd unavailable for {:?}: {error}",
                            self.options.retry_for
                        )));
                    }
                }
            }
        }
    }

    /// Reads every key under `start` (an etcd key prefix) at one revision, a page at a time.
    async fn read_range(
        mut client: Client,
        start: Vec<u8>,
        at: i64,
    ) -> Result<(Vec<etcd_client::KeyValue>, i64), etcd_client::Error> {
        let end = prefix_end(&start);
        let mut from = start;
        let mut revision = at;
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(RANGE_PAGE);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let mut page = client.get(from, Some(options)).await?;
            if revision == 0 {
                revision = page.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = page.more();
            let kvs = page.take_kvs();
            let Some(last) = kvs.last() else {
                return Ok((out, revision));
            };
            from = last.key().to_vec();
            from.push(0);
            out.extend(kvs);
            if !more {
                return Ok((out, revision));
            }
        }
    }

    /// The etcd transaction for `txn`: its compares, its writes, and on failure a read of every compared
    /// key, so that the conflicting key can be named.
    fn etcd_txn(&self, txn: &Txn) -> etcd_client::Txn {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|Compare::ModRevision(key, rev)| match rev {
                // etcd compares a missing key as having create revision 0.
                0 => EtcdCompare::create_revision(self.full_key(key), CompareOp::Equal, 0),
                rev => EtcdCompare::mod_revision(
                    self.full_key(key),
                    CompareOp::Equal,
                    i64::try_from(*rev).unwrap_or(i64::MAX),
                ),
            })
            .collect();
        let writes: Vec<TxnOp> = last_op_per_key(&txn.ops)
            .into_iter()
            .map(|op| match op {
                Op::Put(key, value) => {
                    TxnOp::put(self.full_key(key), bulk::encode_plain(value), None)
                }
                Op::PutLeased(key, value, lease) => TxnOp::put(
                    self.full_key(key),
                    bulk::encode_plain(value),
                    Some(PutOptions::new().with_lease(*lease)),
                ),
                Op::Delete(key) => TxnOp::delete(self.full_key(key), None),
            })
            .collect();
        let reads: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|Compare::ModRevision(key, _)| {
                TxnOp::get(self.full_key(key), Some(GetOptions::new().with_keys_only()))
            })
            .collect();
        etcd_client::Txn::new()
            .when(compares)
            .and_then(writes)
            .or_else(reads)
    }
}

/// etcd refuses a transaction that writes one key twice; the last write of each key is what the
/// transaction means, so only that one is sent (in its original order).
fn last_op_per_key(ops: &[Op]) -> Vec<&Op> {
    let key = |op: &Op| match op {
        Op::Put(k, _) | Op::PutLeased(k, _, _) | Op::Delete(k) => k.clone(),
    };
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&Op> = ops.iter().rev().filter(|op| seen.insert(key(op))).collect();
    kept.reverse();
    kept
}

/// Names the first compare of `txn` that the failed etcd transaction's reads show to be false.
fn conflicting_key(txn: &Txn, responses: &[TxnOpResponse]) -> String {
    let found =
        txn.compares
            .iter()
            .zip(responses)
            .find(|(Compare::ModRevision(_, want), response)| {
                let have = match response {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
                    _ => None,
                };
                revision_of(have.unwrap_or(0)) != *want
            });
    let Some((Compare::ModRevision(key, _), _)) =
        found.or_else(|| txn.compares.iter().zip(responses).next())
    else {
        return String::new();
    };
    key.clone()
}

impl Store for EtcdStore {
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let root = self.root.clone();
            let response = self
                .call(Resend::Always, |mut c| {
                    let root = root.clone();
                    async move {
                        c.get(
                            root,
                            Some(GetOptions::new().with_count_only().with_prefix()),
                        )
                        .await
                    }
                })
                .await?;
            Ok(revision_of(
                response.header().map(|h| h.revision()).unwrap_or(0),
            ))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        Box::pin(async move {
            if key.starts_with(bulk::INTERNAL) {
                return Ok(None);
            }
            let full = self.full_key(key);
            let response = self
                .call(Resend::Always, |mut c| {
                    let full = full.clone();
                    async move { c.get(full, None).await }
                })
                .await?;
            let at = response.header().map_or(0, |h| h.revision());
            match response.kvs().first() {
                Some(kv) => self.key_value(kv, at, &mut Default::default()).await,
                None => Ok(None),
            }
        })
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>> {
        Box::pin(async move {
            let start = self.full_key(prefix).into_bytes();
            let (kvs, revision) = self
                .call(Resend::Always, |c| Self::read_range(c, start.clone(), 0))
                .await?;
            let internal = self.full_key(bulk::INTERNAL).into_bytes();
            let mut bulks = std::collections::HashMap::new();
            let mut out = Vec::with_capacity(kvs.len());
            for kv in &kvs {
                if kv.key().starts_with(&internal) {
                    continue;
                }
                if let Some(kv) = self.key_value(kv, revision, &mut bulks).await? {
                    out.push(kv);
                }
            }
            Ok((out, revision_of(revision)))
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            if !bulk::fits(&txn) {
                return self.bulk_txn(txn).await;
            }
            let request = self.etcd_txn(&txn);
            let response = match self
                .call(Resend::IfNotApplied, |mut c| {
                    let request = request.clone();
                    async move { unless_lease_not_found(c.txn(request).await) }
                })
                .await
            {
                // etcd's limits are lower than assumed: nothing was written; go in steps.
                Err(StoreError::TxnTooLarge(_))
                    if !txn.ops.iter().any(|op| matches!(op, Op::PutLeased(..))) =>
                {
                    return self.bulk_txn(txn).await;
                }
                other => other?,
            };
            let Some(response) = response else {
                let lease = txn.ops.iter().find_map(|op| match op {
                    Op::PutLeased(_, _, lease) => Some(*lease),
                    _ => None,
                });
                return Err(StoreError::LeaseNotFound(lease.unwrap_or(0)));
            };
            if response.succeeded() {
                let revision = response.header().map(|h| h.revision()).unwrap_or(0);
                Ok(TxnOutcome::Committed(revision_of(revision)))
            } else {
                let key = conflicting_key(&txn, &response.op_responses());
                // A large transaction may hold the key: wait until it has ended.
                self.settle(&key).await?;
                Ok(TxnOutcome::Conflict(key))
            }
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<Box<dyn Watch>, StoreError>> {
        Box::pin(async move {
            // The watch also covers the bulk records, whose commits it turns into events.
            let user = self.full_key(prefix).into_bytes();
            let internal = self.full_key(bulk::INTERNAL).into_bytes();
            let end = prefix_end(&user).max(prefix_end(&internal));
            let mut watch = EtcdWatch {
                client: self.client().await?,
                key: user.clone().min(internal),
                end,
                root: self.root.clone(),
                prefix: prefix.to_string(),
                statuses: self.statuses.clone(),
                last: after,
                stream: None,
                pending: Vec::new(),
                timeout: self.options.request_timeout,
                retry_for: self.options.retry_for,
            };
            watch.reconnect().await?;
            Ok(Box::new(watch) as Box<dyn Watch>)
        })
    }

    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        Box::pin(async move {
            let seconds = i64::try_from(ttl.as_millis().div_ceil(1000))
                .unwrap_or(i64::MAX)
                .max(1);
            let granted = self
                .call(Resend::Always, |mut c| async move {
                    c.lease_grant(seconds, None).await
                })
                .await?;
            Ok(granted.id())
        })
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, StoreError>> {
        Box::pin(async move {
            let ttl = self
                .call(Resend::Always, |mut c| async move {
                    // Opening the stream sends one keep-alive and checks its answer; a second one
                    // reports the TTL.
                    let (mut keeper, mut stream) =
                        match unless_lease_not_found(c.lease_keep_alive(lease).await)? {
                            Some(opened) => opened,
                            None => return Ok(None),
                        };
                    keeper.keep_alive().await?;
                    Ok(stream.message().await?.map(|r| r.ttl()).filter(|&t| t > 0))
                })
                .await?;
            let seconds = ttl.ok_or(StoreError::LeaseNotFound(lease))?;
            Ok(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
        })
    }

    fn lease_revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.call(Resend::Always, |mut c| async move {
                unless_lease_not_found(c.lease_revoke(lease).await)
            })
            .await?;
            Ok(())
        })
    }
}

/// `Ok(None)` for etcd's "lease not found" answer, the result otherwise.
fn unless_lease_not_found<T>(
    result: Result<T, etcd_client::Error>,
) -> Result<Option<T>, etcd_client::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains(LEASE_NOT_FOUND) => Ok(None),
        // The keep-alive stream reports an ended lease as a zero TTL, turned into this error.
        Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => Ok(None),
        Err(e) => Err(e),
    }
}

/// A watch that survives member failures by reconnecting after its last delivered revision.
struct EtcdWatch {
    client: Client,
    /// The watched etcd key range: the store prefix and the bulk records.
    key: Vec<u8>,
    end: Vec<u8>,
    /// The store's root prefix, stripped from event keys.
    root: String,
    /// The watched store prefix.
    prefix: String,
    statuses: Arc<bulk::Statuses>,
    /// The last revision delivered (or the starting point).
    last: Revision,
    stream: Option<WatchStream>,
    /// Events received but not yet delivered.
    pending: Vec<bulk::RawEvent>,
    timeout: Duration,
    retry_for: Duration,
}

impl EtcdWatch {
    /// Opens a stream after `self.last`, retrying for up to `retry_for`.
    async fn reconnect(&mut self) -> Result<(), StoreError> {
        let mut backoff = Backoff::new(self.retry_for);
        loop {
            let error = match tokio::time::timeout(self.timeout, self.open()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e @ StoreError::Compacted { .. })) => return Err(e),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", self.timeout),
            };
            tracing::debug!(
                "etcd watch on {} failed, reconnecting: {error}",
                self.prefix
            );
            if !backoff.wait().await {
                return Err(StoreError::Backend(format!(
                    "etcd watch unavailable for {:?}: {error}",
                    self.retry_for
                )));
            }
        }
    }

    /// One attempt: creates the watch and waits for etcd to confirm it.
    async fn open(&mut self) -> Result<(), StoreError> {
        let start = i64::try_from(self.last.saturating_add(1)).map_err(backend)?;
        let options = WatchOptions::new()
            .with_range(self.end.clone())
            .with_prev_key()
            .with_start_revision(start);
        let mut stream = self
            .client
            .watch(self.key.clone(), Some(options))
            .await
            .map_err(backend)?;
        // etcd confirms the watch first and reports a compacted start revision only later, so a read
        // at the start revision tells whether to wait for that report (and fail with it).
        let mut compacted = false;
        loop {
            let Some(response) = stream.message().await.map_err(backend)? else {
                return Err(backend("watch stream ended before it was created"));
            };
            let created = response.created();
            let current = response.header().map_or(0, |h| h.revision());
            if !self.absorb(response)? {
                return Err(backend("watch canceled before it was created"));
            }
            if created && start <= current {
                compacted = self.is_compacted(start).await?;
            }
            if (created || !self.pending.is_empty()) && !compacted {
                self.stream = Some(stream);
                return Ok(());
            }
        }
    }

    /// Whether the history at `revision` has been compacted away.
    async fn is_compacted(&mut self, revision: i64) -> Result<bool, StoreError> {
        let probe = GetOptions::new().with_revision(revision).with_count_only();
        match self.client.get(self.key.clone(), Some(probe)).await {
            Ok(_) => Ok(false),
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains(COMPACTED) => Ok(true),
            Err(e) => Err(backend(e)),
        }
    }

    /// Takes a response's events; `Ok(false)` when etcd canceled the watch (it must be reopened).
    fn absorb(&mut self, response: WatchResponse) -> Result<bool, StoreError> {
        if response.canceled() {
            let compacted = revision_of(response.compact_revision());
            if compacted > 0 {
                return Err(StoreError::Compacted {
                    requested: self.last,
                    oldest: compacted - 1,
                });
            }
            tracing::debug!(
                "etcd canceled watch on {}: {}",
                self.prefix,
                response.cancel_reason()
            );
            return Ok(false);
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = revision_of(kv.mod_revision());
            // Never deliver a revision twice, whatever etcd resends after a reconnection.
            if revision <= self.last {
                continue;
            }
            let key = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| k.strip_prefix(self.root.as_str()))
                .ok_or_else(|| StoreError::Corrupt(String::from_utf8_lossy(kv.key()).into()))?;
            self.pending.push(bulk::RawEvent {
                revision: kv.mod_revision(),
                key: key.to_string(),
                value: match event.event_type() {
                    EventType::Put => Some(kv.value().to_vec()),
                    EventType::Delete => None,
                },
                prev: event.prev_kv().map(|p| p.value().to_vec()),
            });
        }
        Ok(true)
    }
}

impl Watch for EtcdWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(async move {
            loop {
                if let Some(last) = self.pending.last().map(|e| e.revision) {
                    let raws = std::mem::take(&mut self.pending);
                    let events = bulk::visible_events(
                        &self.client,
                        &self.root,
                        &self.statuses,
                        &self.prefix,
                        raws,
                    )
                    .await?;
                    self.last = revision_of(last);
                    if events.is_empty() {
                        continue;
                    }
                    return Ok(events);
                }
                let Some(stream) = self.stream.as_mut() else {
                    self.reconnect().await?;
                    continue;
                };
                match stream.message().await {
                    Ok(Some(response)) => {
                        if !self.absorb(response)? {
                            self.stream = None;
                        }
                    }
                    Ok(None) => self.stream = None,
                    Err(e) => {
                        tracing::debug!("etcd watch on {} broke: {e}", self.prefix);
                        self.stream = None;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let o = EtcdOptions::parse("etcd://127.0.0.1:2379,127.0.0.1:22379").unwrap();
        assert_eq!(o.endpoints, ["127.0.0.1:2379", "127.0.0.1:22379"]);
        assert_eq!(o.prefix, DEFAULT_PREFIX);
        let o = EtcdOptions::parse("etcd://h:1/a/b/").unwrap();
        assert_eq!(
            (o.endpoints, o.prefix.as_str()),
            (vec!["h:1".into()], "/a/b")
        );
        for bad in [
            "etcd://",
            "etcd://h",
            "etcd://h:x",
            "etcd://h:1,",
            "etcd:h:1",
            "etcd://h:1/",
        ] {
            assert!(EtcdOptions::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_end_skips_ff() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn keeps_last_write_per_key() {
        let ops = [
            Op::Put("a".into(), vec![1]),
            Op::Put("b".into(), vec![2]),
            Op::Delete("a".into()),
        ];
        assert_eq!(last_op_per_key(&ops), [&ops[1], &ops[2]]);
    }
}
