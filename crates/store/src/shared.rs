//! One store watch shared by many watchers of the whole key space: the server's sync API has one
//! watcher per agent, and without sharing every agent would cost a watch on the store (an etcd watch
//! each, or a change-log read each per write).
//!
//! A hub task follows the store from the revision it started at, keeps the most recent batches in a
//! ring and broadcasts each new one. A watcher that starts after a revision the ring covers replays
//! the ring and then follows the broadcast; one that starts before catches up with a direct store
//! watch first and then joins (until the next write to the store it may stay on that direct watch:
//! the ring's first revision need not be one of the watched keys'). A watcher that falls too far
//! behind the broadcast joins again the same way, so no watcher ever misses or repeats a revision.
//! When the hub itself falls behind compaction it starts again at the store's head and its watchers
//! get [`StoreError::Compacted`], as a direct watch would; when the store is closed they get
//! [`StoreError::Closed`]. A watcher that returned an error returns it again (as `Closed`) ever after.
//! While the store is unreachable the hub retries and its watchers simply wait: nothing is lost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::{Event, Revision, Store, StoreError, Watch};

/// How much the hub keeps.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Batches kept for watchers that start a little behind the head...
    ring: usize,
    /// ... and at most this many bytes of keys and values in them.
    ring_bytes: usize,
    /// Batches a watcher may fall behind the broadcast before it catches up on its own.
    broadcast: usize,
}

const LIMITS: Limits = Limits {
    ring: 1024,
    ring_bytes: 32 << 20,
    broadcast: 256,
};

/// The memory a batch holds, roughly.
fn batch_bytes(batch: &[Event]) -> usize {
    batch
        .iter()
        .map(|e| e.key.len() + e.value.as_ref().map_or(0, Vec::len) + 32)
        .sum()
}
/// Pause before the hub watches again after a store failure.
const RETRY: Duration = Duration::from_millis(200);

/// What the hub broadcasts: a batch of whole revisions, or that it fell behind compaction and
/// started again after this revision.
#[derive(Debug)]
enum Item {
    Batch(Vec<Event>),
    Restarted(Revision),
    /// The store was closed; the hub stopped.
    Closed,
}

fn last_revision(batch: &[Event]) -> Revision {
    batch.last().map_or(0, |e| e.revision)
}

struct Hub {
    store: Arc<dyn Store>,
    state: Mutex<HubState>,
    /// The task following the store; it stops with the hub.
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

struct HubState {
    limits: Limits,
    /// Whether the hub's store watch is up (not broken, not being re-established).
    following: bool,
    /// The newest revision the hub has seen.
    newest: Revision,
    /// Bytes held by the ring's batches.
    ring_bytes: usize,
    /// The ring holds every revision after `base`, up to the newest batch.
    base: Revision,
    ring: VecDeque<Arc<Item>>,
    tx: broadcast::Sender<Arc<Item>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the store from `from` for as long as the hub lives.
    async fn run(hub: Weak<Hub>, store: Arc<dyn Store>, mut from: Revision) {
        loop {
            let watch = store.watch("/", from).await;
            let mut watch = match watch {
                Ok(w) => {
                    let Some(hub) = hub.upgrade() else { return };
                    hub.lock().following = true;
                    w
                }
                Err(StoreError::Closed) => {
                    if let Some(hub) = hub.upgrade() {
                        hub.publish(Arc::new(Item::Closed));
                    }
                    return;
                }
                Err(e) => {
                    let Some(hub) = hub.upgrade() else { return };
                    hub.failed(e, &mut from).await;
                    continue;
                }
            };
            loop {
                let next = watch.next().await;
                let Some(hub) = hub.upgrade() else { return };
                match next {
                    Ok(batch) if batch.is_empty() => {}
                    Ok(batch) => {
                        from = from.max(last_revision(&batch));
                        hub.publish(Arc::new(Item::Batch(batch)));
                    }
                    Err(StoreError::Closed) => {
                        hub.publish(Arc::new(Item::Closed));
                        return;
                    }
                    Err(e) => {
                        hub.failed(e, &mut from).await;
                        break;
                    }
                }
            }
        }
    }

    fn publish(&self, item: Arc<Item>) {
        let mut st = self.lock();
        match &*item {
            Item::Closed => {}
            Item::Restarted(at) => {
                st.ring.clear();
                st.ring_bytes = 0;
                st.base = *at;
                st.newest = *at;
            }
            Item::Batch(batch) => {
                st.newest = st.newest.max(last_revision(batch));
                st.ring_bytes += batch_bytes(batch);
                st.ring.push_back(item.clone());
                while st.ring.len() > st.limits.ring || st.ring_bytes > st.limits.ring_bytes {
                    let Some(old) = st.ring.pop_front() else {
                        break;
                    };
                    if let Item::Batch(b) = &*old {
                        st.ring_bytes -= batch_bytes(b);
                        st.base = last_revision(b);
                    }
                }
            }
        }
        // Nobody listening is fine.
        let _ = st.tx.send(item);
    }

    /// After a failed watch: start again at the head if the hub fell behind compaction (and tell
    /// the watchers), else retry from where it was.
    async fn failed(&self, e: StoreError, from: &mut Revision) {
        self.lock().following = false;
        if let StoreError::Compacted { .. } = e {
            match self.store.revision().await {
                Ok(head) => {
                    tracing::warn!("shared watch fell behind compaction; restarting at {head}");
                    *from = head;
                    self.publish(Arc::new(Item::Restarted(head)));
                    return;
                }
                Err(e) => tracing::warn!("shared watch: {e}"),
            }
        } else {
            tracing::warn!("shared watch: {e}; retrying");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// What a [`SharedWatch`] looks like, for health checks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedWatchStatus {
    /// Its store watch is up: false while the store is unreachable and it retries.
    pub following: bool,
    /// The newest revision it has seen.
    pub newest: Revision,
    /// Batches in its ring, and the bytes of keys and values they hold.
    pub ring_batches: usize,
    pub ring_bytes: usize,
}

/// Hands out watches of the whole key space that share one store watch (started by the first).
#[derive(Clone)]
pub struct SharedWatch {
    store: Arc<dyn Store>,
    limits: Limits,
    hub: Arc<tokio::sync::OnceCell<Arc<Hub>>>,
}

impl SharedWatch {
    /// Shares watches of `store`; nothing happens until the first watch.
    pub fn new(store: Arc<dyn Store>) -> SharedWatch {
        SharedWatch {
            store,
            limits: LIMITS,
            hub: Arc::default(),
        }
    }

    /// The hub, started at the store's current revision by the first caller.
    async fn hub(&self) -> Result<Arc<Hub>, StoreError> {
        let hub = self
            .hub
            .get_or_try_init(|| async {
                let head = self.store.revision().await?;
                let (tx, _) = broadcast::channel(self.limits.broadcast);
                let hub = Arc::new(Hub {
                    store: self.store.clone(),
                    state: Mutex::new(HubState {
                        limits: self.limits,
                        following: false,
                        newest: head,
                        ring_bytes: 0,
                        base: head,
                        ring: VecDeque::new(),
                        tx,
                    }),
                    task: Mutex::new(None),
                });
                let task = tokio::spawn(Hub::run(Arc::downgrade(&hub), self.store.clone(), head));
                *hub.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
                Ok::<_, StoreError>(hub)
            })
            .await?;
        Ok(hub.clone())
    }

    /// Starts the shared store watch now if no watcher did yet (it needs the store's revision).
    pub async fn start(&self) -> Result<(), StoreError> {
        self.hub().await.map(drop)
    }

    /// The shared watch as it is now; `None` before it started.
    pub fn status(&self) -> Option<SharedWatchStatus> {
        let hub = self.hub.get()?;
        let st = hub.lock();
        Some(SharedWatchStatus {
            following: st.following,
            newest: st.newest,
            ring_batches: st.ring.len(),
            ring_bytes: st.ring_bytes,
        })
    }

    /// Every change after `after`, like [`Store::watch`] of `/`.
    pub async fn watch(&self, after: Revision) -> Result<Box<dyn Watch>, StoreError> {
        let mut w = SharedWatcher {
            hub: self.hub().await?,
            last: after,
            direct: None,
            replay: VecDeque::new(),
            rx: None,
            failed: false,
        };
        w.join().await?;
        Ok(Box::new(w))
    }
}

/// One watcher of a [`SharedWatch`].
struct SharedWatcher {
    hub: Arc<Hub>,
    /// The last revision handed out.
    last: Revision,
    /// Catching up on its own until `last` reaches the ring.
    direct: Option<(Box<dyn Watch>, Revision)>,
    /// Ring batches to hand out before the broadcast.
    replay: VecDeque<Arc<Item>>,
    rx: Option<broadcast::Receiver<Arc<Item>>>,
    /// It returned an error: it returns one ever after.
    failed: bool,
}

impl SharedWatcher {
    /// Joins the hub: if the ring covers everything after `last`, subscribes (first, so that
    /// nothing published from now on is missed) and takes the ring; else catches up with a
    /// direct watch up to the ring's start and joins again then.
    async fn join(&mut self) -> Result<(), StoreError> {
        self.rx = None;
        self.replay.clear();
        self.direct = None;
        let base = {
            let st = self.hub.lock();
            if self.last >= st.base {
                self.rx = Some(st.tx.subscribe());
                self.replay = st.ring.iter().cloned().collect();
                return Ok(());
            }
            st.base
        };
        let direct = self.hub.store.watch("/", self.last).await?;
        self.direct = Some((direct, base));
        Ok(())
    }

    /// The part of `item` after `last`, if any; advances `last`.
    fn take(&mut self, item: &Item) -> Result<Option<Vec<Event>>, StoreError> {
        match item {
            Item::Batch(batch) => {
                let new: Vec<Event> = batch
                    .iter()
                    .filter(|e| e.revision > self.last)
                    .cloned()
                    .collect();
                if let Some(last) = new.last() {
                    self.last = last.revision;
                    return Ok(Some(new));
                }
                Ok(None)
            }
            Item::Restarted(at) if *at > self.last => Err(StoreError::Compacted {
                requested: self.last,
                oldest: *at,
            }),
            Item::Restarted(_) => Ok(None),
            Item::Closed => Err(StoreError::Closed),
        }
    }

    async fn next_batch(&mut self) -> Result<Vec<Event>, StoreError> {
        if self.failed {
            return Err(StoreError::Closed);
        }
        let result = self.next_batch_inner().await;
        self.failed = result.is_err();
        result
    }

    async fn next_batch_inner(&mut self) -> Result<Vec<Event>, StoreError> {
        loop {
            if let Some((direct, until)) = &mut self.direct {
                if self.last >= *until {
                    // Caught up to where the ring started: join (again).
                    self.join().await?;
                    continue;
                }
                let batch = direct.next().await?;
                if let Some(new) = self.take(&Item::Batch(batch))? {
                    return Ok(new);
                }
                continue;
            }
            if let Some(item) = self.replay.pop_front() {
                if let Some(new) = self.take(&item)? {
                    return Ok(new);
                }
                continue;
            }
            let Some(rx) = self.rx.as_mut() else {
                return Err(StoreError::Closed);
            };
            match rx.recv().await {
                Ok(item) => {
                    if let Some(new) = self.take(&item)? {
                        return Ok(new);
                    }
                }
                // Too far behind: catch up on its own, then join again.
                Err(broadcast::error::RecvError::Lagged(_)) => self.join().await?,
                Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }
}

impl Watch for SharedWatcher {
    fn next(&mut self) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(self.next_batch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Txn;
    use crate::embedded::EmbeddedStore;

    async fn put(store: &dyn Store, i: u32) -> Revision {
        match store
            .txn(Txn::new().put(format!("/k/{}", i % 7), i.to_be_bytes().to_vec()))
            .await
            .expect("txn")
        {
            crate::TxnOutcome::Committed(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// With a tiny ring (by count or by bytes) and broadcast queue, a watcher that stops reading
    /// falls behind the broadcast and one that starts late falls behind the ring: both still get
    /// every revision once, and the ring stays within its byte budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchers_that_fall_behind_catch_up_on_their_own() {
        for limits in [
            Limits {
                ring: 2,
                ring_bytes: 1 << 20,
                broadcast: 2,
            },
            Limits {
                ring: 1000,
                ring_bytes: 200,
                broadcast: 2,
            },
        ] {
            fall_behind_and_catch_up(limits).await;
        }
    }

    async fn fall_behind_and_catch_up(limits: Limits) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("s.redb")).unwrap());
        let start = put(&*store, 0).await;
        let shared = SharedWatch {
            limits,
            ..SharedWatch::new(store.clone())
        };
        let mut sleeper = shared.watch(start).await.unwrap();
        let mut reader = shared.watch(start).await.unwrap();
        let mut seen_by_reader = Vec::new();
        let mut last = start;
        for i in 1..=150 {
            last = put(&*store, i).await;
            if i % 3 == 0 {
                // The reader keeps up now and then; the hub publishes one batch per write or so.
                while seen_by_reader.last().is_none_or(|r| *r < last) {
                    seen_by_reader.extend(reader.next().await.unwrap().iter().map(|e| e.revision));
                }
            }
        }
        let late = start + 10;
        let mut late_watcher = shared.watch(late).await.unwrap();
        for (after, w, mut got) in [
            (start, &mut sleeper, Vec::new()),
            (start, &mut reader, seen_by_reader),
            (late, &mut late_watcher, Vec::new()),
        ] {
            while got.last().is_none_or(|r| *r < last) {
                let batch = tokio::time::timeout(Duration::from_secs(10), w.next())
                    .await
                    .expect("in time")
                    .unwrap();
                got.extend(batch.iter().map(|e| e.revision));
            }
            assert_eq!(
                got,
                (after + 1..=last).collect::<Vec<_>>(),
                "after {after}, {limits:?}"
            );
        }
        let hub = shared.hub().await.unwrap();
        let st = hub.lock();
        assert!(st.ring.len() <= limits.ring && st.ring_bytes <= limits.ring_bytes);
    }
}
