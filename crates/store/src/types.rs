//! The store's vocabulary: keys, revisions, transactions, watch events, and the [`Store`] trait.

use std::time::Duration;

use futures::future::BoxFuture;

/// A store-wide revision: incremented by one for every committed transaction. 0 means "never".
pub type Revision = u64;

/// A lease: keys written with it are deleted (in one revision) when it is revoked or expires, i.e.
/// when no keep-alive came within its TTL. Used for liveness, e.g. a chassis's registration.
pub type LeaseId = i64;

/// A key with its value and the revisions at which it was created and last modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// A condition a transaction checks before applying its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals the given one; 0 means the key must not exist.
    ModRevision(String, Revision),
}

/// A write a transaction applies when all its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes a key; a key written with a lease before is detached from it.
    Put(String, Vec<u8>),
    /// Writes a key attached to a lease; the whole transaction fails with
    /// [`StoreError::LeaseNotFound`] if the lease has ended.
    PutLeased(String, Vec<u8>, LeaseId),
    Delete(String),
}

/// A conditional, atomic batch of writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    /// Requires `key` to be at `rev` (0: absent).
    pub fn when(mut self, key: impl Into<String>, rev: Revision) -> Self {
        self.compares.push(Compare::ModRevision(key.into(), rev));
        self
    }
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put(key.into(), value));
        self
    }
    /// Writes `key` attached to `lease`.
    pub fn put_leased(mut self, key: impl Into<String>, value: Vec<u8>, lease: LeaseId) -> Self {
        self.ops.push(Op::PutLeased(key.into(), value, lease));
        self
    }
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }
}

/// What became of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Applied at this revision.
    Committed(Revision),
    /// A condition on this key did not hold; nothing was written.
    Conflict(String),
}

/// One change to one key, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: Revision,
    pub key: String,
    /// The new value, or `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// Store failures. Conflicts are not errors: see [`TxnOutcome::Conflict`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown store spec {0:?}: expected embedded:PATH or etcd://HOST:PORT[,HOST:PORT...]")]
    BadSpec(String),
    /// A watch cannot start after `requested`: the changes right after it are gone. `oldest` is the
    /// lowest revision a watch may start after; a caller re-reads a snapshot and watches after that.
    #[error("revision {requested} has been compacted; the oldest available is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("store closed")]
    Closed,
    #[error("store backend: {0}")]
    Backend(String),
    /// The connection was lost after a transaction was sent: it may or may not have been applied.
    /// The backend does not resend it (a resend could apply it twice); the caller reads back and decides.
    #[error("transaction outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("corrupt store record under {0:?}")]
    Corrupt(String),
    /// The lease was never granted, was revoked, or expired.
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// The backend refused the transaction as too large; nothing was written. etcd applies larger
    /// transactions in steps behind a commit record (all or nothing still), so this happens only
    /// when its `--max-txn-ops` is below the default 128, or for such a transaction with leased keys.
    #[error("transaction too large for the store: {0}")]
    TxnTooLarge(String),
}

/// A stream of change batches under a prefix, in revision order.
pub trait Watch: Send {
    /// The next non-empty batch of events (all events of one or more revisions, never a partial
    /// revision). Fails with [`StoreError::Compacted`] when the watcher fell behind compaction.
    fn next(&mut self) -> BoxFuture<'_, Result<Vec<Event>, StoreError>>;
}

/// A revisioned, transactional key-value store.
pub trait Store: Send + Sync + 'static {
    /// The current revision.
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>>;
    /// One key.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>>;
    /// All keys under `prefix`, in key order, with the revision of the snapshot they were read at.
    fn range<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>>;
    /// Applies `txn` atomically if its conditions hold. Returns once the outcome is durable.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>>;
    /// Every change under `prefix` after revision `after`.
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<Box<dyn Watch>, StoreError>>;
    /// Grants a lease that ends `ttl` after it was granted or last kept alive. etcd counts whole seconds
    /// and raises a TTL below its minimum (about 1.5 election timeouts).
    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>>;
    /// Restarts the lease's TTL; returns the TTL. Fails with [`StoreError::LeaseNotFound`] once it ended.
    fn lease_keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, StoreError>>;
    /// Ends the lease now, deleting its keys in one revision. Ending an unknown lease does nothing.
    fn lease_revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;
}
