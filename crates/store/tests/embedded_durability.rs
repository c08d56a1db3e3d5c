//! Embedded-store specifics: committed data survives closing and reopening the file.

use std::sync::Arc;
use std::time::Duration;

use store::Txn;
use store::embedded::EmbeddedStore;
use store::{Store, TxnOutcome};

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
