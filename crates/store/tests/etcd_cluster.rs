//! The etcd backend on a 3-member cluster: member and leader failures during writes, and two servers
//! racing on the same keys.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use store::{Store, StoreError, Txn, TxnOutcome};
use support::{Backend, Guard};

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

/// Creates `key`; returns its fate and how many attempts had an unknown outcome. Such an attempt is
/// resent, which is safe because it only creates an absent key.
async fn create(store: &dyn Store, key: &str) -> (Fate, usize) {
    let mut unknown = 0;
    loop {
        let txn = Txn::new().when(key, 0).put(key, vec![1]);
        match store.txn(txn).await {
            Ok(TxnOutcome::Committed(rev)) => return (Fate::Acked(rev), unknown),
            Ok(TxnOutcome::Conflict(_)) if unknown > 0 => {
                return (Fate::AppliedUnacknowledged, unknown);
            }
            Ok(TxnOutcome::Conflict(k)) => panic!("conflict on fresh key {k}"),
            Err(StoreError::OutcomeUnknown(_)) => unknown += 1,
            Err(e) => panic!("write {key} failed: {e}"),
        }
    }
}

/// Creates its keys one after the other.
async fn writer(store: Arc<dyn Store>, w: usize) -> (BTreeMap<String, Fate>, usize) {
    let mut fates = BTreeMap::new();
    let mut errors = 0;
    for i in 0..PER_WRITER {
        let key = format!("stream/{w}-{i:04}");
        let (fate, unknown) = create(&*store, &key).await;
        errors += unknown;
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
    let mut before_kill = 0;
    while before_kill < 60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        before_kill = store.range("stream/").await.unwrap().0.len();
    }
    let killed = b.cluster().kill_leader().await.unwrap();
    let unfinished = writers.iter().filter(|w| !w.is_finished()).count();

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
    // The failure hit the stream, not its end: writers were still writing when the leader died.
    assert!(
        unfinished > 0 && before_kill < WRITERS * PER_WRITER,
        "no write was in flight when the leader died ({before_kill} written, {unfinished} writers left)"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_killed_and_restarted_in_turn() {
    let mut b = Backend::etcd(3).await;
    let store = b.store.clone();
    let start = store.revision().await.unwrap();
    // Whichever member the watch stream is on gets killed at some point, so it must reconnect.
    let mut watch = store.watch("roll/", start).await.unwrap();
    let mut acked = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for member in 0..3 {
        let leader = b.cluster().leader().await.unwrap();
        b.cluster().kill(member).unwrap();
        for i in 0..20 {
            let key = format!("roll/{member}-{i:02}");
            let began = std::time::Instant::now();
            if let (Fate::Acked(rev), _) = create(&*store, &key).await {
                acked.insert(key, rev);
            }
            slowest = slowest.max(began.elapsed());
        }
        println!("killed member {member} (leader: {leader}); slowest write so far {slowest:?}");
        b.cluster().restart(member).await.unwrap();
    }
    let (kvs, _) = store.range("roll/").await.unwrap();
    assert_eq!(kvs.len(), 60);
    let mut history: Vec<(u64, String)> = kvs
        .iter()
        .map(|kv| (kv.mod_revision, kv.key.clone()))
        .collect();
    history.sort();
    for (rev, key) in &history {
        assert!(
            acked.get(key).is_none_or(|r| r == rev),
            "acknowledged {key}"
        );
    }
    let last = history.last().unwrap().0;
    let events = support::collect_until(&mut *watch, last, Duration::from_secs(30)).await;
    let seen: Vec<(u64, String)> = events.into_iter().map(|e| (e.revision, e.key)).collect();
    assert_eq!(seen, history, "every revision once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_race_to_create_the_same_keys() {
    const TASKS: usize = 200;
    const KEYS: usize = 25;
    let b = Backend::etcd(3).await;
    // Two stores with their own connections, as two API servers would have.
    let Guard::Etcd(cluster) = &b.guard else {
        unreachable!("etcd backend")
    };
    let servers = [b.store.clone(), b.etcd_store(cluster.endpoints())];
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = servers[t % 2].clone();
            tokio::spawn(async move {
                let key = format!("ip/10.1.0.{}", t % KEYS);
                let txn = Txn::new()
                    .when(key.clone(), 0)
                    .put(key.clone(), t.to_string().into_bytes());
                (t, key, store.txn(txn).await.expect("txn"))
            })
        })
        .collect();
    let mut winners = BTreeMap::new();
    for task in tasks {
        let (t, key, outcome) = task.await.unwrap();
        match outcome {
            TxnOutcome::Committed(_) => assert!(winners.insert(key, t).is_none(), "two winners"),
            TxnOutcome::Conflict(k) => assert_eq!(k, key),
        }
    }
    assert_eq!(winners.len(), KEYS);
    let (kvs, _) = servers[1].range("ip/").await.unwrap();
    assert_eq!(kvs.len(), KEYS);
    for kv in kvs {
        assert_eq!(kv.value, winners[&kv.key].to_string().into_bytes());
    }
}
