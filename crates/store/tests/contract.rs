//! The store contract: the same tests run against the embedded store and a 1-member etcd.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use store::{Event, SharedWatch, StoreError, Txn, TxnOutcome};
use support::{Backend, collect_until, commit, expect_compacted};

/// A hang guard, not a time limit: how long a watch may take to deliver what it must before the
/// test gives up (minutes: a loaded machine never trips it).
const WAIT: Duration = Duration::from_secs(180);

/// Instantiates each contract test once per backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::embedded()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::etcd(1).await).await;
                }
            )*
        }
    };
}

contract!(
    get_put_delete,
    range_is_a_sorted_prefix_snapshot,
    range_reads_beyond_one_page,
    txn_conflicts_write_nothing,
    one_txn_writing_a_key_twice_keeps_the_last_write,
    revisions_increase_per_txn,
    watch_delivers_every_later_event_once_in_order,
    watch_follows_live_writes,
    watch_behind_compaction_fails,
    concurrent_create_if_absent_has_one_winner_per_key,
    leased_keys_live_while_kept_alive_and_go_on_expiry,
    revoking_a_lease_deletes_only_its_keys,
    shared_watchers_each_get_every_revision_once,
    shared_watch_behind_compaction_fails,
    large_txn_is_all_or_nothing,
    large_txn_reaches_watchers_as_one_revision,
);

async fn get_put_delete(b: Backend) {
    let s = &*b.store;
    assert_eq!(s.get("a").await.unwrap(), None);
    let r1 = commit(s, Txn::new().when("a", 0).put("a", b"1".to_vec())).await;
    let kv = s.get("a").await.unwrap().expect("a");
    assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("a", &b"1"[..]));
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r1));
    let r2 = commit(s, Txn::new().when("a", r1).put("a", b"2".to_vec())).await;
    let kv = s.get("a").await.unwrap().expect("a");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"2"[..], r1, r2)
    );
    commit(s, Txn::new().when("a", r2).delete("a")).await;
    assert_eq!(s.get("a").await.unwrap(), None);
    // Deleting an absent key is not a conflict.
    commit(s, Txn::new().delete("a")).await;
}

async fn range_is_a_sorted_prefix_snapshot(b: Backend) {
    let s = &*b.store;
    let mut last = 0;
    for key in ["net/2", "net/10", "netx/1", "port/1", "net/1"] {
        last = commit(s, Txn::new().put(key, key.as_bytes().to_vec())).await;
    }
    let (kvs, rev) = s.range("net/").await.unwrap();
    let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["net/1", "net/10", "net/2"]);
    assert!(kvs.iter().all(|kv| kv.value == kv.key.as_bytes()));
    assert_eq!(rev, last);
    assert_eq!(s.revision().await.unwrap(), last);
    let (all, _) = s.range("").await.unwrap();
    assert_eq!(all.len(), 5);
    let (none, rev) = s.range("nothing/").await.unwrap();
    assert!(none.is_empty());
    assert_eq!(rev, last);
}

async fn range_reads_beyond_one_page(b: Backend) {
    let s = &*b.store;
    // 2500 keys (more than one etcd page), 100 per transaction (etcd allows 128 operations).
    for chunk in 0..25 {
        let mut txn = Txn::new();
        for i in 0..100 {
            let key = format!("big/{:05}", chunk * 100 + i);
            txn = txn.put(key, vec![7; 64]);
        }
        commit(s, txn).await;
    }
    let (kvs, rev) = s.range("big/").await.unwrap();
    assert_eq!(kvs.len(), 2500);
    assert!(kvs.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(kvs.last().unwrap().key, "big/02499");
    assert_eq!(rev, s.revision().await.unwrap());
}

async fn txn_conflicts_write_nothing(b: Backend) {
    let s = &*b.store;
    let r1 = commit(s, Txn::new().when("x", 0).put("x", b"1".to_vec())).await;
    let again = s.txn(Txn::new().when("x", 0).put("x", b"2".to_vec())).await;
    assert_eq!(again.unwrap(), TxnOutcome::Conflict("x".into()));
    let stale = s
        .txn(Txn::new().when("x", r1 + 100).put("x", b"3".to_vec()))
        .await;
    assert_eq!(stale.unwrap(), TxnOutcome::Conflict("x".into()));
    // The second of two conditions fails: it is named, and nothing is written.
    let two = Txn::new()
        .when("x", r1)
        .when("y", 5)
        .put("x", b"4".to_vec())
        .put("z", b"4".to_vec());
    assert_eq!(s.txn(two).await.unwrap(), TxnOutcome::Conflict("y".into()));
    assert_eq!(s.get("x").await.unwrap().unwrap().value, b"1");
    assert_eq!(s.get("z").await.unwrap(), None);
    assert_eq!(
        s.revision().await.unwrap(),
        r1,
        "a conflict takes no revision"
    );
}

async fn one_txn_writing_a_key_twice_keeps_the_last_write(b: Backend) {
    let s = &*b.store;
    commit(s, Txn::new().put("k", b"old".to_vec())).await;
    let txn = Txn::new()
        .put("k", b"1".to_vec())
        .delete("k")
        .put("j", b"1".to_vec())
        .put("j", b"2".to_vec());
    commit(s, txn).await;
    assert_eq!(s.get("k").await.unwrap(), None);
    assert_eq!(s.get("j").await.unwrap().unwrap().value, b"2");
}

async fn revisions_increase_per_txn(b: Backend) {
    let s = &*b.store;
    let mut last = s.revision().await.unwrap();
    for i in 0..30 {
        let rev = commit(s, Txn::new().put(format!("r/{}", i % 4), vec![i])).await;
        if b.dense_revisions() {
            assert_eq!(rev, last + 1);
        } else {
            assert!(rev > last, "{rev} after {last}");
        }
        last = rev;
    }
    assert_eq!(s.revision().await.unwrap(), last);
}

async fn watch_delivers_every_later_event_once_in_order(b: Backend) {
    let s = &*b.store;
    let mut history: Vec<Event> = Vec::new();
    for i in 0..12u8 {
        let (k1, k2) = (format!("w/{}", i % 3), format!("w/extra{i}"));
        let txn = match i % 4 {
            3 => Txn::new().delete(k1.clone()),
            _ => Txn::new().put(k1.clone(), vec![i]).put(k2.clone(), vec![i]),
        };
        // Writes outside the prefix must not show up.
        commit(s, Txn::new().put("other/x", vec![i])).await;
        let rev = commit(s, txn).await;
        match i % 4 {
            3 => history.push(Event {
                revision: rev,
                key: k1,
                value: None,
            }),
            _ => {
                history.push(Event {
                    revision: rev,
                    key: k1,
                    value: Some(vec![i]),
                });
                history.push(Event {
                    revision: rev,
                    key: k2,
                    value: Some(vec![i]),
                });
            }
        }
    }
    let last = history.last().unwrap().revision;
    let start = history[5].revision;
    let mut watch = s.watch("w/", start).await.unwrap();
    let got = collect_until(&mut *watch, last, WAIT).await;
    let want: Vec<Event> = history
        .iter()
        .filter(|e| e.revision > start)
        .cloned()
        .collect();
    assert_eq!(got, want);
    // Nothing more is pending: a write made now is the very next event, whenever it comes (no
    // window of time to guess).
    let marker = commit(s, Txn::new().put("w/marker", vec![99])).await;
    let next = collect_until(&mut *watch, marker, WAIT).await;
    assert_eq!(
        next,
        [Event {
            revision: marker,
            key: "w/marker".into(),
            value: Some(vec![99]),
        }]
    );
}

async fn watch_follows_live_writes(b: Backend) {
    let s = b.store.clone();
    let from = s.revision().await.unwrap();
    let mut watch = s.watch("live/", from).await.unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50u8 {
                revs.push(commit(&*s, Txn::new().put(format!("live/{}", i % 7), vec![i])).await);
            }
            revs
        })
    };
    let revs = writer.await.unwrap();
    let got = collect_until(&mut *watch, *revs.last().unwrap(), WAIT).await;
    let got_revs: Vec<_> = got.iter().map(|e| e.revision).collect();
    assert_eq!(got_revs, revs);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, e)| e.value == Some(vec![i as u8]))
    );
}

async fn watch_behind_compaction_fails(b: Backend) {
    let s = &*b.store;
    let first = commit(s, Txn::new().put("c/0", vec![0])).await;
    let mut last = first;
    for i in 1..(2 * support::EMBEDDED_RETAIN as u8 + 4) {
        last = commit(s, Txn::new().put(format!("c/{i}"), vec![i])).await;
    }
    b.compact(last).await;
    let oldest = expect_compacted(s.watch("c/", first).await);
    assert!(
        oldest > first && oldest < last,
        "oldest {oldest} in ({first}, {last})"
    );
    // From the oldest available revision on, the watch works and starts right after it.
    let mut watch = s.watch("c/", oldest).await.unwrap();
    let got = collect_until(&mut *watch, last, WAIT).await;
    assert!(got[0].revision > oldest);
    assert_eq!(got.last().unwrap().revision, last);
}

async fn concurrent_create_if_absent_has_one_winner_per_key(b: Backend) {
    const TASKS: usize = 200;
    const KEYS: usize = 20;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let s = Arc::clone(&b.store);
            tokio::spawn(async move {
                let key = format!("ip/10.0.0.{}", t % KEYS);
                let outcome = s.txn(
                    Txn::new()
                        .when(key.clone(), 0)
                        .put(key.clone(), t.to_string().into_bytes()),
                );
                (t, key, outcome.await.expect("txn"))
            })
        })
        .collect();
    let mut winners: BTreeMap<String, usize> = BTreeMap::new();
    let mut revisions = HashSet::new();
    for task in tasks {
        let (t, key, outcome) = task.await.unwrap();
        match outcome {
            TxnOutcome::Committed(rev) => {
                assert!(
                    winners.insert(key.clone(), t).is_none(),
                    "two winners for {key}"
                );
                assert!(revisions.insert(rev), "revision {rev} committed twice");
            }
            TxnOutcome::Conflict(k) => assert_eq!(k, key),
        }
    }
    assert_eq!(winners.len(), KEYS);
    let (kvs, _) = b.store.range("ip/").await.unwrap();
    assert_eq!(kvs.len(), KEYS);
    for kv in kvs {
        assert_eq!(kv.value, winners[&kv.key].to_string().into_bytes());
    }
}

async fn leased_keys_live_while_kept_alive_and_go_on_expiry(b: Backend) {
    let s = &*b.store;
    // Keep-alives every 100 ms against a 3 s TTL: a stall of 30 periods would be needed to lose
    // the lease while it is kept alive.
    let ttl = Duration::from_secs(3);
    let lease = s.lease_grant(ttl).await.unwrap();
    let mut watch = s
        .watch("chassis/", s.revision().await.unwrap())
        .await
        .unwrap();
    let txn = Txn::new()
        .put_leased("chassis/a", b"up".to_vec(), lease)
        .put_leased("chassis/b", b"up".to_vec(), lease);
    let put = commit(s, txn).await;
    // Kept alive for twice the TTL (by the clock, however many keep-alives that takes), the keys
    // stay.
    let kept = std::time::Instant::now();
    while kept.elapsed() < 2 * ttl {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(s.lease_keep_alive(lease).await.unwrap() >= ttl);
    }
    assert!(s.get("chassis/a").await.unwrap().is_some());
    // Without keep-alives both go, in one revision.
    let events = collect_until(&mut *watch, put + 1, WAIT).await;
    assert_eq!(events.len(), 4, "{events:?}");
    let (puts, deletes) = events.split_at(2);
    assert!(puts.iter().all(|e| e.revision == put && e.value.is_some()));
    assert!(
        deletes
            .iter()
            .all(|e| e.revision == deletes[0].revision && e.value.is_none())
    );
    assert_eq!(s.get("chassis/a").await.unwrap(), None);
    assert!(matches!(
        s.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(l)) if l == lease
    ));
    // A write with the ended lease fails whole.
    let late = Txn::new()
        .put("chassis/plain", vec![1])
        .put_leased("chassis/c", vec![1], lease);
    assert!(matches!(s.txn(late).await, Err(StoreError::LeaseNotFound(l)) if l == lease));
    assert_eq!(s.get("chassis/plain").await.unwrap(), None);
}

async fn revoking_a_lease_deletes_only_its_keys(b: Backend) {
    let s = &*b.store;
    let lease = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    let other = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    let txn = Txn::new()
        .put_leased("l/1", vec![1], lease)
        .put_leased("l/2", vec![2], lease)
        .put_leased("l/3", vec![3], lease)
        .put_leased("l/4", vec![4], other);
    commit(s, txn).await;
    // Rewriting a key without the lease detaches it; deleting one forgets it.
    commit(s, Txn::new().put("l/3", vec![33]).delete("l/2")).await;
    let before = s.revision().await.unwrap();
    s.lease_revoke(lease).await.unwrap();
    let (left, _) = s.range("l/").await.unwrap();
    let keys: Vec<_> = left.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["l/3", "l/4"]);
    let mut watch = s.watch("l/", before).await.unwrap();
    let events = watch.next().await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].key.as_str(), events[0].value.as_ref()),
        ("l/1", None)
    );
    // Revoking again, or an unknown lease, is harmless.
    s.lease_revoke(lease).await.unwrap();
    s.lease_revoke(987_654_321).await.unwrap();
    let missing = s
        .txn(Txn::new().put_leased("l/5", vec![5], 987_654_321))
        .await;
    assert!(matches!(
        missing,
        Err(StoreError::LeaseNotFound(987_654_321))
    ));
    assert!(s.lease_keep_alive(other).await.is_ok());
}

/// Watchers of one [`SharedWatch`] (which follows keys under `/`, as the API's are) that start before the hub, inside its ring and at the head, with
/// writes going on, each see every revision after their start exactly once, in order.
async fn shared_watchers_each_get_every_revision_once(b: Backend) {
    let s = b.store.clone();
    let mut first = 0;
    for i in 0..10u8 {
        first = commit(&*s, Txn::new().put(format!("/s/{i}"), vec![i])).await;
    }
    let shared = SharedWatch::new(s.clone());
    // Before the hub started: catches up directly, then joins.
    let early = first - 5;
    let mut watchers = vec![(early, shared.watch(early).await.unwrap())];
    let mut hub_start = first;
    for i in 0..10u8 {
        hub_start = commit(&*s, Txn::new().put(format!("/s/{i}"), vec![i])).await;
    }
    // Within the ring, and at the head.
    for after in [hub_start - 4, hub_start] {
        watchers.push((after, shared.watch(after).await.unwrap()));
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 0..30u8 {
                last = commit(&*s, Txn::new().put(format!("/s/{}", i % 5), vec![i])).await;
            }
            last
        })
    };
    // And one that joins while writes go on: once some of them are in (a condition, not a
    // guess at how long that takes).
    let mut mid = s.revision().await.unwrap();
    while mid < hub_start + 3 && !writer.is_finished() {
        tokio::task::yield_now().await;
        mid = s.revision().await.unwrap();
    }
    watchers.push((mid, shared.watch(mid).await.unwrap()));
    let last = writer.await.unwrap();
    for (after, mut w) in watchers {
        let got: Vec<u64> = collect_until(&mut *w, last, WAIT)
            .await
            .iter()
            .map(|e| e.revision)
            .collect();
        let want: Vec<u64> = (after + 1..=last).collect();
        assert_eq!(got, want, "watcher after {after}");
    }
}

/// A shared watch cannot start behind compaction either.
async fn shared_watch_behind_compaction_fails(b: Backend) {
    let s = &*b.store;
    let first = commit(s, Txn::new().put("/sc/0", vec![0])).await;
    let shared = SharedWatch::new(b.store.clone());
    let mut last = first;
    for i in 1..(2 * support::EMBEDDED_RETAIN as u8 + 4) {
        last = commit(s, Txn::new().put(format!("/sc/{i}"), vec![i])).await;
    }
    b.compact(last).await;
    let oldest = expect_compacted(shared.watch(first).await);
    let mut watch = shared.watch(oldest).await.unwrap();
    let got = collect_until(&mut *watch, last, WAIT).await;
    assert!(got[0].revision > oldest);
    assert_eq!(got.last().unwrap().revision, last);
}

/// A transaction of `n` creates under `prefix` (each key required absent), plus `extra`.
fn creates(prefix: &str, n: usize) -> Txn {
    let mut txn = Txn::new();
    for i in 0..n {
        let key = format!("{prefix}{i:04}");
        txn = txn
            .when(key.clone(), 0)
            .put(key, format!("v{i}").into_bytes());
    }
    txn
}

/// Far more compares and writes than one etcd transaction takes (issue 17): applied whole, or
/// not at all when one condition fails.
async fn large_txn_is_all_or_nothing(b: Backend) {
    let s = b.store.as_ref();
    commit(s, Txn::new().put("big/taken", b"x".to_vec())).await;
    let rev = match s.txn(creates("big/a/", 700)).await.unwrap() {
        TxnOutcome::Committed(rev) => rev,
        other => panic!("{other:?}"),
    };
    let (kvs, at) = s.range("big/a/").await.unwrap();
    assert_eq!(kvs.len(), 700);
    assert!(at >= rev);
    assert_eq!(kvs[699].value, b"v699");
    assert_eq!(s.get("big/a/0001").await.unwrap().unwrap().value, b"v1");
    // One taken key among many: nothing of the transaction is written.
    let txn = creates("big/b/", 400)
        .when("big/taken", 0)
        .put("big/taken", b"y".to_vec());
    match s.txn(txn).await.unwrap() {
        TxnOutcome::Conflict(key) => assert_eq!(key, "big/taken"),
        other => panic!("{other:?}"),
    }
    assert!(s.range("big/b/").await.unwrap().0.is_empty());
    assert_eq!(s.get("big/taken").await.unwrap().unwrap().value, b"x");
    // The keys it would have created are free again.
    assert!(matches!(
        s.txn(creates("big/b/", 3)).await.unwrap(),
        TxnOutcome::Committed(_)
    ));
    // A large transaction pinning an existing key, and a value starting with a zero byte.
    let pinned = s.get("big/taken").await.unwrap().unwrap().mod_revision;
    let txn = creates("big/c/", 300)
        .when("big/taken", pinned)
        .put("big/zero", vec![0, 1, 2]);
    assert!(matches!(
        s.txn(txn).await.unwrap(),
        TxnOutcome::Committed(_)
    ));
    assert_eq!(s.get("big/zero").await.unwrap().unwrap().value, [0, 1, 2]);
    // Updating and deleting many keys at once.
    let mut txn = Txn::new();
    for kv in s.range("big/a/").await.unwrap().0 {
        txn = txn.when(kv.key.clone(), kv.mod_revision).delete(kv.key);
    }
    assert!(matches!(
        s.txn(txn).await.unwrap(),
        TxnOutcome::Committed(_)
    ));
    assert!(s.range("big/a/").await.unwrap().0.is_empty());
}

/// A watcher gets a large transaction whole, in one batch, at one revision.
async fn large_txn_reaches_watchers_as_one_revision(b: Backend) {
    let s = b.store.as_ref();
    let start = commit(s, Txn::new().put("/w/before", b"1".to_vec())).await;
    let mut watch = s.watch("/w/", start).await.unwrap();
    let shared = SharedWatch::new(b.store.clone());
    let mut through_shared = shared.watch(start).await.unwrap();
    let rev = match s.txn(creates("/w/bulk/", 500)).await.unwrap() {
        TxnOutcome::Committed(rev) => rev,
        other => panic!("{other:?}"),
    };
    let after = commit(s, Txn::new().put("/w/after", b"2".to_vec())).await;
    for w in [&mut watch, &mut through_shared] {
        let batch = tokio::time::timeout(WAIT, w.next()).await.unwrap().unwrap();
        let bulk: Vec<_> = batch
            .iter()
            .filter(|e| e.key.starts_with("/w/bulk/"))
            .collect();
        assert_eq!(
            bulk.len(),
            500,
            "the first batch after the bulk has all of it"
        );
        assert!(bulk.iter().all(|e| e.revision == rev && e.value.is_some()));
        let reached = batch.last().map_or(0, |e| e.revision);
        let rest = if reached >= after {
            batch.iter().filter(|e| e.revision > rev).cloned().collect()
        } else {
            collect_until(w.as_mut(), after, WAIT).await
        };
        let keys: Vec<&str> = rest.iter().map(|e| e.key.as_str()).collect();
        assert!(
            keys.iter()
                .all(|k| k.starts_with("/w/after") || !k.starts_with("/w/bulk")),
            "after the bulk's batch only later writes arrive, no cleanup: {keys:?}"
        );
        assert_eq!(rest.last().map(|e| e.key.as_str()), Some("/w/after"));
    }
}
