//! Embedded-store durability: committed data survives closing and reopening the file, and every
//! acknowledged write survives a power cut, on a simulated disk ([`support::crash_disk`]) that loses
//! whatever was not synced. A reopen alone cannot catch a missing fsync (the OS page cache keeps the
//! writes); the power-cut tests can, and two of them show that they do.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use redb::{Durability, ReadableDatabase, TableDefinition};
use store::embedded::{EmbeddedOptions, EmbeddedStore};
use store::{KeyValue, LeaseId, Revision, Store, Txn, TxnOutcome};
use support::crash_disk::{CrashDisk, Cut, DiskImage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_every_committed_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&path).unwrap());
    let tasks: Vec<_> = (0..100u32)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                let key = format!("k/{i:03}");
                s.txn(
                    Txn::new()
                        .when(key.clone(), 0)
                        .put(key, i.to_le_bytes().to_vec()),
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(
            task.await.unwrap().unwrap(),
            TxnOutcome::Committed(_)
        ));
    }
    let (before, rev) = store.range("").await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(&path).expect("reopen right after close");
    let (after, rev_after) = store.range("").await.unwrap();
    assert_eq!((after.len(), rev_after), (100, rev));
    assert_eq!(after, before);
    // History continues after the old revision.
    let next = store.txn(Txn::new().put("k/new", vec![1])).await.unwrap();
    assert_eq!(next, TxnOutcome::Committed(rev + 1));
    // Watching from before the close replays the log.
    let mut watch = store.watch("k/", rev - 3).await.unwrap();
    let events = watch.next().await.unwrap();
    assert_eq!(events.first().unwrap().revision, rev - 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let txn = Txn::new().put_leased("chassis/a", vec![1], lease);
    assert!(matches!(
        store.txn(txn).await.unwrap(),
        TxnOutcome::Committed(_)
    ));
    drop(store);

    let store = EmbeddedStore::open(&path).unwrap();
    assert!(store.get("chassis/a").await.unwrap().is_some());
    assert_eq!(
        store.lease_keep_alive(lease).await.unwrap(),
        Duration::from_secs(60)
    );
    // New leases get new ids.
    let next = store.lease_grant(Duration::from_secs(1)).await.unwrap();
    assert_ne!(next, lease);
    store.lease_revoke(lease).await.unwrap();
    assert_eq!(store.get("chassis/a").await.unwrap(), None);
}

/// Concurrent writers, each waiting for its commit before sending the next transaction.
const WRITERS: usize = 8;
const TXNS_PER_WRITER: usize = 40;
/// The power is cut when one of these syncs starts (one run each), counted over the store's file and
/// its log's from when the writers start. Each batch commits with at least one sync and holds at most
/// one transaction per writer, so at least [`TXNS_PER_WRITER`] syncs follow: the cut always falls
/// while writers are still in flight.
const CUT_AT_SYNCS: [u64; 3] = [6, 15, 23];
/// The write-ahead log sizes at which the store checkpoints, one run each: the default (no
/// checkpoint during a run: each batch is made durable by its log record alone) and a small one (a
/// checkpoint, redb's own durable commit and the log emptied, every few batches).
const CHECKPOINTS: [Option<u64>; 2] = [None, Some(2048)];
/// Lease TTL: far longer than any test, so that no lease expires while one runs.
const LEASE_TTL: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_and_leases_survive_a_power_cut_that_drops_unsynced_writes() {
    for checkpoint in CHECKPOINTS {
        for at in CUT_AT_SYNCS {
            power_cut_during_concurrent_writes(Cut::Clean, at, options(checkpoint)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_and_leases_survive_a_power_cut_that_tears_unsynced_writes() {
    for checkpoint in CHECKPOINTS {
        for (seed, at) in (1..=4).zip(CUT_AT_SYNCS.into_iter().cycle()) {
            power_cut_during_concurrent_writes(Cut::Torn(seed), at, options(checkpoint)).await;
        }
    }
}

fn options(checkpoint: Option<u64>) -> EmbeddedOptions {
    let default = EmbeddedOptions::default();
    EmbeddedOptions {
        checkpoint_bytes: checkpoint.unwrap_or(default.checkpoint_bytes),
        ..default
    }
}

/// An acknowledged transaction of writer `writer`: its `n`th, committed at `revision`.
#[derive(Debug, Clone, Copy)]
struct Ack {
    writer: usize,
    n: usize,
    revision: Revision,
    /// Acknowledged before the power cut, so it must survive it.
    before_cut: bool,
}

/// What one writer got acknowledged: its lease (and whether before the cut) and its transactions.
struct WriterAcks {
    lease: LeaseId,
    lease_before_cut: bool,
    txns: Vec<Ack>,
}

/// The keys of writer `writer`'s `n`th transaction; the last one is written with the writer's lease.
fn txn_keys(writer: usize, n: usize) -> [String; 3] {
    ["a", "b", "leased"].map(|k| format!("w/{writer}/{n:03}/{k}"))
}

fn txn_value(writer: usize, n: usize) -> Vec<u8> {
    format!("{writer}:{n}").into_bytes()
}

/// Writers commit three-key transactions (one key leased) while the power is cut in the middle of a
/// commit; the store reopened from what the disk kept must hold every transaction acknowledged before
/// the cut, and of all the others each one whole or not at all.
async fn power_cut_during_concurrent_writes(cut: Cut, at: u64, options: EmbeddedOptions) {
    let disk = CrashDisk::new();
    let (file, log) = disk.store_files();
    let store = Arc::new(EmbeddedStore::open_on(file, log, options).unwrap());
    disk.cut_power_at_sync(at, cut);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, disk) = (store.clone(), disk.clone());
            tokio::spawn(async move { write(&*store, &disk, writer).await })
        })
        .collect();
    let mut acks = Vec::new();
    for writer in writers {
        acks.push(writer.await.unwrap());
    }
    drop(store);
    // A store that never syncs never trips the wire: then the power goes now, and every write
    // counts as acknowledged before the cut.
    let image = disk.cut_image().unwrap_or_else(|| disk.power_cut(cut));
    let what = format!(
        "{cut:?} at sync {at}, checkpoint at {}",
        options.checkpoint_bytes
    );
    check_after_power_cut(image, &acks, &what, options).await;
}

/// Writer `writer`'s work: a lease, then [`TXNS_PER_WRITER`] transactions, each recorded once
/// acknowledged along with whether the power was already cut by then.
async fn write(store: &dyn Store, disk: &CrashDisk, writer: usize) -> WriterAcks {
    let lease = store.lease_grant(LEASE_TTL).await.unwrap();
    let lease_before_cut = !disk.power_was_cut();
    let mut txns = Vec::new();
    for n in 0..TXNS_PER_WRITER {
        let [a, b, leased] = txn_keys(writer, n);
        let value = txn_value(writer, n);
        let txn = Txn::new()
            .when(a.clone(), 0)
            .put(a, value.clone())
            .put(b, value.clone())
            .put_leased(leased, value, lease);
        let TxnOutcome::Committed(revision) = store.txn(txn).await.unwrap() else {
            panic!("a create of fresh keys conflicted");
        };
        txns.push(Ack {
            writer,
            n,
            revision,
            before_cut: !disk.power_was_cut(),
        });
    }
    WriterAcks {
        lease,
        lease_before_cut,
        txns,
    }
}

async fn check_after_power_cut(
    image: DiskImage,
    acks: &[WriterAcks],
    cut: &str,
    options: EmbeddedOptions,
) {
    let (file, log) = CrashDisk::from_image(image).store_files();
    let store = EmbeddedStore::open_on(file, log, options)
        .unwrap_or_else(|e| panic!("reopen after {cut}: {e}"));
    let (kvs, revision) = store.range("w/").await.unwrap();
    assert_eq!(store.revision().await.unwrap(), revision);
    let mut kept: BTreeMap<String, KeyValue> =
        kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    let all: Vec<Ack> = acks.iter().flat_map(|w| w.txns.iter().copied()).collect();
    let highest = all
        .iter()
        .filter(|a| a.before_cut)
        .map(|a| a.revision)
        .max()
        .unwrap_or(0);
    assert!(
        revision >= highest,
        "{cut}: reopened at revision {revision}, below the acknowledged {highest}"
    );
    assert!(
        all.iter().any(|a| !a.before_cut),
        "{cut}: the cut came after every commit, not during the writes"
    );
    // Commits are durable in revision order, so the store kept exactly the transactions up to its
    // revision, each with all its keys (the acknowledged-before-the-cut ones among them).
    for ack in &all {
        let found: Vec<Option<KeyValue>> = txn_keys(ack.writer, ack.n)
            .iter()
            .map(|key| kept.remove(key))
            .collect();
        if ack.revision <= revision {
            for kv in &found {
                let kv = kv.as_ref().unwrap_or_else(|| {
                    panic!("{cut}: {ack:?} is at or below revision {revision} but lost a key")
                });
                assert_eq!(kv.value, txn_value(ack.writer, ack.n), "{cut}: {ack:?}");
                assert_eq!(kv.mod_revision, ack.revision, "{cut}: {ack:?}");
            }
        } else {
            assert!(
                found.iter().all(Option::is_none),
                "{cut}: {ack:?} is above revision {revision} but left keys: {found:?}"
            );
        }
    }
    assert!(kept.is_empty(), "{cut}: keys nobody wrote: {kept:?}");
    // A lease granted before the cut, or used by a kept transaction, is still there; revoking it
    // deletes its kept keys and only those.
    for writer in acks {
        let used = writer.txns.iter().any(|a| a.revision <= revision);
        if !(writer.lease_before_cut || used) {
            continue;
        }
        assert_eq!(
            store.lease_keep_alive(writer.lease).await.unwrap(),
            LEASE_TTL,
            "{cut}: lease {} lost",
            writer.lease
        );
        store.lease_revoke(writer.lease).await.unwrap();
    }
    let (after_revoke, _) = store.range("w/").await.unwrap();
    let expected: Vec<String> = all
        .iter()
        .filter(|a| a.revision <= revision)
        .flat_map(|a| txn_keys(a.writer, a.n).into_iter().take(2))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let left: Vec<String> = after_revoke.into_iter().map(|kv| kv.key).collect();
    assert_eq!(left, expected, "{cut}: revoking the leases");
    // History goes on after the kept revision (and the revokes).
    let current = store.revision().await.unwrap();
    assert!(current >= revision);
    let next = store.txn(Txn::new().put("after", vec![1])).await.unwrap();
    assert_eq!(next, TxnOutcome::Committed(current + 1), "{cut}");
}

const PROBE: TableDefinition<&str, &str> = TableDefinition::new("probe");

/// The harness can fail: a redb commit made without fsync (`Durability::None`) is visible to the
/// process that made it, and gone after the power cut.
#[test]
fn power_cut_loses_a_redb_commit_made_without_fsync() {
    let disk = CrashDisk::new();
    let db = redb::Builder::new()
        .create_with_backend(disk.file(0))
        .unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(PROBE).unwrap().insert("synced", "1").unwrap();
    tx.commit().unwrap();
    let mut tx = db.begin_write().unwrap();
    tx.set_durability(Durability::None).unwrap();
    tx.open_table(PROBE)
        .unwrap()
        .insert("unsynced", "1")
        .unwrap();
    tx.commit().unwrap();
    let read = db.begin_read().unwrap();
    assert!(
        read.open_table(PROBE)
            .unwrap()
            .get("unsynced")
            .unwrap()
            .is_some()
    );
    drop(read);

    let image = disk.power_cut(Cut::Clean);
    drop(db);
    let db = redb::Builder::new()
        .create_with_backend(CrashDisk::from_image(image).file(0))
        .unwrap();
    let read = db.begin_read().unwrap();
    let table = read.open_table(PROBE).unwrap();
    assert!(table.get("synced").unwrap().is_some());
    assert!(
        table.get("unsynced").unwrap().is_none(),
        "an unsynced commit survived the power cut"
    );
}

/// The harness catches what a reopen test misses: the store on a disk whose syncs do nothing (as if
/// it skipped its fsyncs) keeps an acknowledged write through a process crash (the page cache
/// survives) but loses it in a power cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_skipping_fsync_survives_a_process_crash_but_loses_writes_in_a_power_cut() {
    let disk = CrashDisk::new();
    let store = EmbeddedStore::open_on(
        disk.file_ignoring_sync(0),
        disk.file_ignoring_sync(1),
        EmbeddedOptions::default(),
    )
    .unwrap();
    let txn = Txn::new().put("k", b"acknowledged".to_vec());
    assert!(matches!(
        store.txn(txn).await.unwrap(),
        TxnOutcome::Committed(_)
    ));
    let process_crash = disk.process_crash();
    let power_cut = disk.power_cut(Cut::Clean);
    drop(store);

    let reopen = |image| {
        let (file, log) = CrashDisk::from_image(image).store_files();
        EmbeddedStore::open_on(file, log, EmbeddedOptions::default()).unwrap()
    };
    let store = reopen(process_crash);
    assert_eq!(
        store.get("k").await.unwrap().unwrap().value,
        b"acknowledged"
    );
    drop(store);
    let store = reopen(power_cut);
    assert_eq!(
        store.get("k").await.unwrap(),
        None,
        "the power cut kept an unsynced write"
    );
}
