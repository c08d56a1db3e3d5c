//! Shared test support: one [`Backend`] type that runs the same tests on the embedded store and on a
//! real etcd cluster, keeping the temp dir or the etcd processes alive for as long as the store; and
//! [`crash_disk`], a simulated disk that loses unsynced writes in a power cut.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod crash_disk;

use std::sync::Arc;
use std::time::Duration;

use etcd_fixture::EtcdCluster;
use store::embedded::{EmbeddedOptions, EmbeddedStore};
use store::etcd::{EtcdOptions, EtcdStore};
use store::{Event, Revision, Store, StoreError, Txn, TxnOutcome, Watch};

/// A store under test plus whatever keeps it alive.
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub guard: Guard,
}

pub enum Guard {
    Embedded(tempfile::TempDir),
    Etcd(EtcdCluster),
}

/// Log retention of embedded stores under test: small, so that compaction is easy to reach.
pub const EMBEDDED_RETAIN: u64 = 64;
/// Write-ahead log size of embedded stores under test at which they checkpoint: small, so that the
/// tests go through batches made durable by the log and by checkpoints alike.
pub const EMBEDDED_CHECKPOINT: u64 = 4096;

impl Backend {
    pub fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = EmbeddedOptions {
            log_retain: EMBEDDED_RETAIN,
            checkpoint_bytes: EMBEDDED_CHECKPOINT,
        };
        let store = EmbeddedStore::open_with(dir.path().join("store.redb"), options).expect("open");
        Self {
            store: Arc::new(store),
            guard: Guard::Embedded(dir),
        }
    }

    pub async fn etcd(members: usize) -> Self {
        let cluster = EtcdCluster::start(members).await.expect("etcd cluster");
        let store = store::open(&cluster.spec("/contract")).expect("etcd store");
        Self {
            store,
            guard: Guard::Etcd(cluster),
        }
    }

    /// An etcd store on the same cluster reaching only `endpoints`.
    pub fn etcd_store(&self, endpoints: Vec<String>) -> Arc<dyn Store> {
        let Guard::Etcd(cluster) = &self.guard else {
            panic!("not an etcd backend")
        };
        let mut options = EtcdOptions::parse(&cluster.spec("/contract")).expect("spec");
        options.endpoints = endpoints;
        Arc::new(EtcdStore::new(options))
    }

    pub fn cluster(&mut self) -> &mut EtcdCluster {
        match &mut self.guard {
            Guard::Etcd(cluster) => cluster,
            Guard::Embedded(_) => panic!("not an etcd backend"),
        }
    }

    /// Whether every committed transaction takes exactly the next revision (the embedded store).
    pub fn dense_revisions(&self) -> bool {
        matches!(self.guard, Guard::Embedded(_))
    }

    /// Makes history up to `revision` unavailable: etcd is compacted explicitly; the embedded store
    /// compacts by itself once more than [`EMBEDDED_RETAIN`] revisions follow.
    pub async fn compact(&self, revision: Revision) {
        if let Guard::Etcd(cluster) = &self.guard {
            cluster
                .compact(i64::try_from(revision).unwrap())
                .await
                .expect("compact");
        }
    }
}

/// Commits `txn`, failing the test on a conflict or error.
pub async fn commit(store: &dyn Store, txn: Txn) -> Revision {
    match store.txn(txn).await.expect("txn") {
        TxnOutcome::Committed(rev) => rev,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// Reads events from `watch` until one at `until` (or later) arrives; fails after `within`.
pub async fn collect_until(watch: &mut dyn Watch, until: Revision, within: Duration) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.last().is_none_or(|e| e.revision < until) {
        let batch = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("no event up to {until} within {within:?}; got {out:?}"))
            .expect("watch");
        assert!(!batch.is_empty(), "empty watch batch");
        out.extend(batch);
    }
    out
}

/// Asserts that `result` is a compaction error and returns its `oldest`.
pub fn expect_compacted<T>(result: Result<T, StoreError>) -> Revision {
    match result {
        Err(StoreError::Compacted { oldest, .. }) => oldest,
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a result"),
    }
}
