//! The etcd backend on a 3-member cluster: the leader dies during a stream of writes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use store::{Store, StoreError, Txn, TxnOutcome};
use support::Backend;

const WRITERS: usize = 2;
const PER_WRITER: usize = 150;

/// What a writer learnt about each of its keys.
#[derive(Debug)]
enum Fate {
    /// Acknowledged at this revision.
    Acked(u64),
    /// An attempt's outcome was unknown and the resend found the key already there.
    AppliedUnacknowledged,
}

/// Creates its keys one after the other; an attempt whose outcome is unknown is resent, which is safe
/// because it only creates an absent key.
async fn writer(store: Arc<dyn Store>, w: usize) -> (BTreeMap<String, Fate>, usize) {
    let mut fates = BTreeMap::new();
    let mut errors = 0;
    for i in 0..PER_WRITER {
        let key = format!("stream/{w}-{i:04}");
        let mut unknown = false;
        let fate = loop {
            let txn = Txn::new()
                .when(key.clone(), 0)
                .put(key.clone(), vec![w as u8]);
            match store.txn(txn).await {
                Ok(TxnOutcome::Committed(rev)) => break Fate::Acked(rev),
                Ok(TxnOutcome::Conflict(_)) if unknown => break Fate::AppliedUnacknowledged,
                Ok(TxnOutcome::Conflict(k)) => panic!("conflict on fresh key {k}"),
                Err(StoreError::OutcomeUnknown(_)) => unknown = true,
                Err(e) => panic!("write {key} failed: {e}"),
            }
            errors += 1;
        };
        fates.insert(key, fate);
    }
    (fates, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_writes() {
    let mut b = Backend::etcd(3).await;
    let store = b.store.clone();
    let start = store.revision().await.unwrap();
    // The watcher starts before the failure and must see every revision exactly once.
    let mut watch = store.watch("stream/", start).await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut seen: Vec<(u64, String)> = Vec::new();
        while seen.len() < WRITERS * PER_WRITER {
            let batch = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("watch stalled")
                .expect("watch failed");
            seen.extend(batch.into_iter().map(|e| (e.revision, e.key)));
        }
        seen
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(store.clone(), w)))
        .collect();

    // Let the stream get going, then kill the leader.
    while store.range("stream/").await.unwrap().0.len() < 60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = b.cluster().kill_leader().await.unwrap();

    let mut fates = BTreeMap::new();
    let mut resent = 0;
    for w in writers {
        let (f, e) = w.await.unwrap();
        fates.extend(f);
        resent += e;
    }
    let (kvs, _) = store.range("stream/").await.unwrap();
    let stored: BTreeMap<String, u64> = kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    assert_eq!(stored.len(), WRITERS * PER_WRITER, "every write is present");
    for (key, fate) in &fates {
        if let Fate::Acked(rev) = fate {
            assert_eq!(stored.get(key), Some(rev), "acknowledged write {key}");
        }
    }

    let seen = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watcher finished")
        .unwrap();
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions in order, none twice"
    );
    let from_watch: BTreeSet<(u64, String)> = seen.into_iter().collect();
    let from_store: BTreeSet<(u64, String)> = stored.iter().map(|(k, r)| (*r, k.clone())).collect();
    assert_eq!(
        from_watch, from_store,
        "the watch saw exactly the store's history"
    );

    // The killed member comes back, catches up, and serves everything on its own.
    b.cluster().restart(killed).await.unwrap();
    let endpoint = b.cluster().endpoint(killed).unwrap();
    let only_it = b.etcd_store(vec![endpoint]);
    let (again, _) = only_it.range("stream/").await.unwrap();
    assert_eq!(again, kvs);
    println!(
        "killed member {killed}; {} writes, {resent} resent after an error, {} applied without an answer",
        fates.len(),
        fates
            .values()
            .filter(|f| matches!(f, Fate::AppliedUnacknowledged))
            .count()
    );
}
