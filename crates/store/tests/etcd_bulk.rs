//! Transactions larger than one etcd transaction (issue 17), on real etcd clusters: atomic on 3
//! members, exactly one winner between racing bulks, and a bulk whose owner dies between its lock
//! steps leaves nothing visible and is cleaned up once its lease has run out.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use etcd_fixture::EtcdCluster;
use store::etcd::{BulkFault, EtcdOptions, EtcdStore};
use store::{Store, Txn, TxnOutcome};

const PREFIX: &str = "/bulk-test";

fn etcd_store(cluster: &EtcdCluster) -> EtcdStore {
    EtcdStore::new(EtcdOptions::parse(&cluster.spec(PREFIX)).expect("spec"))
}

fn creates(prefix: &str, range: std::ops::Range<usize>) -> Txn {
    let mut txn = Txn::new();
    for i in range {
        let key = format!("{prefix}{i:04}");
        txn = txn
            .when(key.clone(), 0)
            .put(key, format!("v{i}").into_bytes());
    }
    txn
}

/// Every raw etcd key under the test prefix that belongs to the bulk machinery: bulk and redo
/// records, and values that are intents.
async fn leftovers(cluster: &EtcdCluster) -> Vec<String> {
    let mut client = cluster.client().await.expect("client");
    let all = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .expect("range");
    all.kvs()
        .iter()
        .filter(|kv| kv.key().contains(&0) || kv.value().starts_with(&[0, 1]))
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_txn_on_three_members_is_atomic_and_leaves_no_trace() {
    let cluster = EtcdCluster::start(3).await.expect("cluster");
    let s = etcd_store(&cluster);
    let started = Instant::now();
    let outcome = s.txn(creates("/k/", 0..1000)).await.unwrap();
    eprintln!(
        "1000 creates in one store transaction on 3 members: {:?}",
        started.elapsed()
    );
    assert!(matches!(outcome, TxnOutcome::Committed(_)), "{outcome:?}");
    assert_eq!(s.range("/k/").await.unwrap().0.len(), 1000);
    assert!(leftovers(&cluster).await.is_empty());
    // Another server's view is the same.
    assert_eq!(etcd_store(&cluster).range("/").await.unwrap().0.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_bulks_with_a_common_key_have_one_winner() {
    let cluster = EtcdCluster::start(1).await.expect("cluster");
    for round in 0..3 {
        let a = Arc::new(etcd_store(&cluster));
        let b = Arc::new(etcd_store(&cluster));
        let common = format!("/claim/{round}");
        let txn = |p: &str| {
            creates(&format!("/r{round}/{p}/"), 0..300)
                .when(common.clone(), 0)
                .put(common.clone(), p.as_bytes().to_vec())
        };
        let (ta, tb) = (txn("a"), txn("b"));
        let (ra, rb) = tokio::join!(
            {
                let a = a.clone();
                async move { a.txn(ta).await.unwrap() }
            },
            {
                let b = b.clone();
                async move { b.txn(tb).await.unwrap() }
            }
        );
        let won: Vec<bool> = [&ra, &rb]
            .iter()
            .map(|r| matches!(r, TxnOutcome::Committed(_)))
            .collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{ra:?} {rb:?}");
        let winner = if won[0] { "a" } else { "b" };
        let loser = if won[0] { "b" } else { "a" };
        assert_eq!(
            a.get(&common).await.unwrap().unwrap().value,
            winner.as_bytes()
        );
        let prefix = |p: &str| format!("/r{round}/{p}/");
        assert_eq!(a.range(&prefix(winner)).await.unwrap().0.len(), 300);
        assert!(b.range(&prefix(loser)).await.unwrap().0.is_empty());
    }
    assert!(leftovers(&cluster).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_whose_owner_dies_mid_way_vanishes() {
    let cluster = EtcdCluster::start(1).await.expect("cluster");
    let dying = Arc::new(etcd_store(&cluster));
    let died = Arc::new(AtomicBool::new(false));
    dying.set_bulk_hook(Some(Arc::new({
        let died = died.clone();
        move |step| {
            if step == 3 {
                died.store(true, Ordering::SeqCst);
                BulkFault::Die
            } else {
                BulkFault::Continue
            }
        }
    })));
    let survivor = etcd_store(&cluster);
    let before = survivor.revision().await.unwrap();
    let mut watch = survivor.watch("/", before).await.unwrap();
    let bulk = tokio::spawn({
        let dying = dying.clone();
        async move { dying.txn(creates("/p/", 0..1000)).await }
    });
    while !died.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Three lock steps are in etcd; nobody sees them.
    assert!(
        !leftovers(&cluster).await.is_empty(),
        "the bulk's locks are in etcd"
    );
    assert!(survivor.range("/").await.unwrap().0.is_empty());
    assert!(survivor.get("/p/0000").await.unwrap().is_none());
    // A writer wanting one of the locked keys waits for the dead bulk's lease, then wins.
    let started = Instant::now();
    let mut outcome = survivor.txn(creates("/p/", 0..1)).await.unwrap();
    while !matches!(outcome, TxnOutcome::Committed(_)) {
        assert!(started.elapsed() < Duration::from_secs(60), "{outcome:?}");
        outcome = survivor.txn(creates("/p/", 0..1)).await.unwrap();
    }
    // The sweeper rolls the rest back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leftovers(&cluster).await.is_empty() {
        assert!(Instant::now() < deadline, "{:?}", leftovers(&cluster).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (kvs, _) = survivor.range("/").await.unwrap();
    assert_eq!(kvs.len(), 1, "only the survivor's key: {kvs:?}");
    // The watcher saw only the survivor's write.
    let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 1, "{batch:?}");
    assert_eq!(batch[0].key, "/p/0000");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), watch.next())
            .await
            .is_err(),
        "nothing else"
    );
    bulk.abort();
}
