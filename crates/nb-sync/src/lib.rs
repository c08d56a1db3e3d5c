//! The agent's side of the sync API: a local replica of the northbound topics an agent needs, kept
//! current by list-then-watch.
//!
//! [`Replica::run`] takes a snapshot of its [`Topics`] at revision R, then follows the change stream
//! after R. After a broken connection (server restart, network) it resumes from the last revision it
//! applied, without a new snapshot, through another of its [`Servers`] if it has several. When the
//! server answers that the store has compacted past that revision, it takes a fresh full snapshot
//! and emits only the difference from what it held.
//!
//! Topics change through the [`Handle`] without a full snapshot ([`Topics::wants`] is the membership
//! rule, the server's own). A removed topic costs no request: the replica emits deletions for the keys
//! it holds that no remaining topic wants (judged on the held values). Added topics cost a snapshot of
//! those topics alone, at revision S: the replica emits the objects in it that none of its other
//! topics wants (what they want it holds already, or gets from its stream), then resumes its watch
//! after its own revision R with the added topics marked `@S`, so that the server sends their changes
//! only after S; the stream's changes up to S to a key this partial snapshot brought are older than
//! what is held and skipped (the server sends every deletion, whatever its topic). Only switching
//! [`Topics::everything`] on or off takes a full snapshot.
//!
//! What a consumer gets: [`Update`]s to apply in order, whose revisions never decrease. After applying
//! the one at revision r, the replica holds what its topics want, every object as the store held it at
//! r, with one exception while r is below the revision S of a partial snapshot: the objects that
//! snapshot brought (those no older topic wants) are held as at S, newer and never older, since
//! nothing up to S is replayed over them. So each Update is consistent at its revision once the stream
//! has passed every partial snapshot's S: always after a full snapshot, and from the first stream
//! Update at S or later. A partial snapshot's Update carries the stream's revision R (its newer objects
//! do not advance the stream). Each change of topics the replica takes up (changes in quick succession
//! may be taken up together) is answered by exactly one Update marked [`Update::from_snapshot`], even
//! an empty one, so that a consumer can wait for it.
//!
//! What the replica holds of an object is not the object (the consumer has it) but what decides
//! its topics ([`Topics::membership`]) and a 128-bit fingerprint of its encoding, to tell a fresh
//! copy from the one held: a changed object is taken for the same one only if the two collide.
//!
//! A limit of filtering on values: the server cannot tell that an object left a topic by a change of
//! its own (a port re-bound elsewhere, or given another `device_id`), so the replica keeps the last
//! value its topics wanted until the object is deleted, or a topic change or a full snapshot drops it.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use futures::StreamExt;
use nb_keys::Topic;
pub use nb_keys::Topics;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

mod servers;
pub use servers::{Backoff, Servers};

/// One change to one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(String, Value),
    Delete(String),
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put(k, _) | Change::Delete(k) => k,
        }
    }
}

/// A batch of changes to apply in order (see the module doc for the state it leaves).
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub revision: u64,
    pub changes: Vec<Change>,
    /// The batch is not from the change stream: it is a full snapshot's difference (first sync,
    /// compaction), or the answer to a change of topics (the removed topics' deletions and the added
    /// topics' partial snapshot). Each effective change of topics gets exactly one such answer, even
    /// an empty one, so that a consumer can wait for it.
    pub from_snapshot: bool,
}

/// Counters a test or an operator can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Full snapshots: the first sync, after a compaction, on switching `everything`.
    pub snapshots: u64,
    /// Snapshots of added topics alone.
    pub partial_snapshots: u64,
    pub resumes: u64,
    pub compactions: u64,
    /// The revision of the stream, as of the last update handed (or being handed) to the consumer.
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server answered {0}")]
    Status(u16),
    #[error("the store has compacted past our revision")]
    Compacted,
    #[error("malformed sync message: {0}")]
    Malformed(String),
    #[error("no message for too long")]
    Silent,
    #[error("topics changed")]
    TopicsChanged,
    #[error("consumer gone")]
    Closed,
}

/// Longest silence on a watch before the connection counts as dead (the server sends a heartbeat
/// every second); also the longest wait for a watch's answer to start.
const SILENCE: Duration = Duration::from_secs(3);
/// Longest wait for a connection to a server.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for a whole snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the replica keeps of an object it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    /// What decides which topics want it ([`Topics::membership`]), encoded: read back only when
    /// the topics change, and much smaller than the decoded map (heaptrack: ~1 KB a port).
    membership: Box<str>,
    /// Two keyed hashes of its encoding.
    fingerprint: u128,
}

/// Configuration and state of one replica.
pub struct Replica {
    /// The servers to follow through, and the base URL of the one the current attempt uses.
    servers: Servers,
    base: String,
    backoff: Backoff,
    http: reqwest::Client,
    /// The topics asked for.
    topics: watch::Receiver<Topics>,
    /// The topics `held` replicates; `None` until the first snapshot and after a compaction, when a
    /// full snapshot comes next.
    following: Option<Topics>,
    /// What is held, by key (see [`Held`]).
    held: BTreeMap<String, Held>,
    fingerprints: (RandomState, RandomState),
    /// The stream's revision: every change up to it is applied.
    revision: u64,
    /// Topics a partial snapshot at a revision after [`Replica::revision`] added, with that revision:
    /// the watch asks for their changes only after it.
    late: BTreeMap<Topic, u64>,
    /// Keys a partial snapshot at a revision after [`Replica::revision`] brought, with that revision:
    /// the stream's changes to them up to it are older than what is held.
    ahead: BTreeMap<String, u64>,
    stats: watch::Sender<Stats>,
}

/// The named topics a replica follows besides its chassis: what [`Handle::set_topics`] replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Follow {
    /// [`Topic::Network`]s: each network, its subnets and ports.
    pub networks: BTreeSet<String>,
    /// [`Topic::Router`]s: each router and its ports.
    pub routers: BTreeSet<String>,
    /// [`Topic::SecurityGroup`]s: each group, its rules and the ports in it.
    pub security_groups: BTreeSet<String>,
    /// [`Topic::AddressGroup`]s: each address group.
    pub address_groups: BTreeSet<String>,
    /// [`Topic::Physnet`]s: the external networks on each physical network.
    pub physnets: BTreeSet<String>,
}

impl Follow {
    /// Makes `topics` follow exactly these; whether that changed them.
    fn apply(self, topics: &mut Topics) -> bool {
        let Follow {
            networks,
            routers,
            security_groups,
            address_groups,
            physnets,
        } = self;
        let changed = topics.networks != networks
            || topics.routers != routers
            || topics.security_groups != security_groups
            || topics.address_groups != address_groups
            || topics.physnets != physnets;
        topics.networks = networks;
        topics.routers = routers;
        topics.security_groups = security_groups;
        topics.address_groups = address_groups;
        topics.physnets = physnets;
        changed
    }
}

/// A handle to change the topics of a running replica and read its counters.
#[derive(Clone)]
pub struct Handle {
    topics: watch::Sender<Topics>,
    stats: watch::Receiver<Stats>,
}

impl Handle {
    /// Follows exactly these networks, routers, security groups and address groups from now on
    /// (the chassis and `everything` stay): what only removed topics wanted is deleted and the added
    /// topics come from a snapshot of them alone, in one [`Update`] marked `from_snapshot` (see the
    /// module doc). Asking again for the topics last asked for changes nothing (and brings no
    /// Update).
    pub fn set_topics(&self, follow: Follow) {
        self.topics.send_if_modified(|t| follow.apply(t));
    }

    pub fn stats(&self) -> Stats {
        self.stats.borrow().clone()
    }

    /// A receiver that wakes whenever the counters change (a resume after a failover, a
    /// snapshot), for consumers that publish them.
    pub fn subscribe(&self) -> watch::Receiver<Stats> {
        self.stats.clone()
    }
}

/// The query naming `topics`, those in `late` from after their revision.
fn query(topics: &Topics, late: &BTreeMap<Topic, u64>) -> String {
    if topics.everything {
        return "&all=1".into();
    }
    topics
        .iter()
        .map(|t| format!("&{}", t.param(late.get(&t).copied())))
        .collect()
}

/// Waits until the topics asked for change (forever once the [`Handle`]s are gone).
async fn topics_changed(topics: &mut watch::Receiver<Topics>) {
    if topics.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Replica {
    /// A replica of `topics` served at `base` (`http://host:port`, or several, comma-separated: see
    /// [`Replica::with_servers`]).
    pub fn new(base: &str, topics: Topics) -> (Self, Handle) {
        Self::with_servers(Servers::parse(base), topics)
    }

    /// A replica of `topics` that follows through one of `servers` and moves to another when it fails
    /// (connection refused or timed out, broken or silent watch, an error status), resuming its
    /// watch from the last revision it applied: no new snapshot.
    pub fn with_servers(servers: Servers, topics: Topics) -> (Self, Handle) {
        let (topics_tx, topics) = watch::channel(topics);
        let (stats, stats_rx) = watch::channel(Stats::default());
        let replica = Self {
            base: servers.current(),
            servers,
            backoff: Backoff::default(),
            http: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .unwrap_or_default(),
            topics,
            following: None,
            held: BTreeMap::new(),
            fingerprints: (RandomState::new(), RandomState::new()),
            revision: 0,
            late: BTreeMap::new(),
            ahead: BTreeMap::new(),
            stats,
        };
        (
            replica,
            Handle {
                topics: topics_tx,
                stats: stats_rx,
            },
        )
    }

    /// What is kept of `value` while it is held.
    fn hold(&self, value: &Value) -> Held {
        // The encoding of a value is one string whatever path it came by (objects are read
        // into ordered maps): equal values have equal fingerprints.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        let (a, b) = &self.fingerprints;
        Held {
            membership: serde_json::to_string(&Topics::membership(value))
                .unwrap_or_default()
                .into_boxed_str(),
            fingerprint: (u128::from(a.hash_one(&bytes)) << 64) | u128::from(b.hash_one(&bytes)),
        }
    }

    /// Runs until the receiver of `updates` is dropped.
    pub async fn run(mut self, updates: mpsc::Sender<Update>) {
        loop {
            self.base = self.servers.current();
            let wanted = self.topics.borrow_and_update().clone();
            let result = match &self.following {
                None => self.snapshot(wanted, &updates).await,
                Some(following) if *following != wanted => {
                    let following = following.clone();
                    self.retopic(following, wanted, &updates).await
                }
                Some(following) => {
                    let topics = query(following, &self.late);
                    self.follow(&topics, &updates).await
                }
            };
            match result {
                Ok(()) | Err(SyncError::TopicsChanged) => self.backoff.reset(),
                Err(SyncError::Closed) => return,
                Err(SyncError::Compacted) => {
                    self.stats.send_modify(|s| s.compactions += 1);
                    self.following = None;
                }
                Err(e) => {
                    self.servers.failed(&self.base);
                    let wait = self.backoff.delay();
                    tracing::debug!("sync through {}: {e}; reconnecting in {wait:?}", self.base);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Publishes the revision and the counters `count` bumps, then hands `update` to the consumer (a
    /// stream batch only if it changes something): a consumer that got an update reads counters
    /// that count it.
    async fn deliver(
        &self,
        update: Update,
        updates: &mpsc::Sender<Update>,
        count: impl FnOnce(&mut Stats),
    ) -> Result<(), SyncError> {
        self.stats.send_modify(|s| {
            s.revision = self.revision;
            count(s);
        });
        if update.from_snapshot || !update.changes.is_empty() {
            updates.send(update).await.map_err(|_| SyncError::Closed)?;
        }
        Ok(())
    }

    /// The objects `topics` want, and the revision they were read at.
    async fn fetch(&self, topics: &Topics) -> Result<(u64, BTreeMap<String, Value>), SyncError> {
        let url = format!(
            "{}/wyvern/v1/sync/snapshot?x=1{}",
            self.base,
            query(topics, &BTreeMap::new())
        );
        let asked = std::time::Instant::now();
        let resp = self.http.get(url).timeout(SNAPSHOT_TIMEOUT).send().await?;
        if !resp.status().is_success() {
            return Err(SyncError::Status(resp.status().as_u16()));
        }
        let answered = asked.elapsed();
        let bytes = resp.bytes().await?;
        let read = asked.elapsed();
        let mut body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| SyncError::Malformed(format!("snapshot: {e}")))?;
        tracing::debug!(
            bytes = bytes.len(),
            ?answered,
            ?read,
            parsed = ?asked.elapsed(),
            "snapshot fetched"
        );
        let revision = body["revision"]
            .as_u64()
            .ok_or_else(|| SyncError::Malformed("snapshot without revision".into()))?;
        let mut items = BTreeMap::new();
        for item in body["items"].as_array_mut().into_iter().flatten() {
            let Value::String(key) = item["key"].take() else {
                return Err(SyncError::Malformed("item without key".into()));
            };
            items.insert(key, item["value"].take());
        }
        Ok((revision, items))
    }

    /// Takes a full snapshot of `topics` and emits the difference from what is held.
    async fn snapshot(
        &mut self,
        topics: Topics,
        updates: &mpsc::Sender<Update>,
    ) -> Result<(), SyncError> {
        let (revision, fresh) = self.fetch(&topics).await?;
        let mut changes = Vec::new();
        let mut held = BTreeMap::new();
        for (k, v) in fresh {
            let h = self.hold(&v);
            if self.held.get(&k) != Some(&h) {
                changes.push(Change::Put(k.clone(), v));
            }
            held.insert(k, h);
        }
        for k in self.held.keys() {
            if !held.contains_key(k) {
                changes.push(Change::Delete(k.clone()));
            }
        }
        self.held = held;
        self.revision = revision;
        self.following = Some(topics);
        self.late.clear();
        self.ahead.clear();
        let update = Update {
            revision,
            changes,
            from_snapshot: true,
        };
        self.deliver(update, updates, |s| s.snapshots += 1).await
    }

    /// Replicates `wanted` instead of `following`: deletes what only removed topics wanted, adds what a
    /// snapshot of the added topics alone brings (see the module doc).
    async fn retopic(
        &mut self,
        following: Topics,
        wanted: Topics,
        updates: &mpsc::Sender<Update>,
    ) -> Result<(), SyncError> {
        if following.everything != wanted.everything {
            return self.snapshot(wanted, updates).await;
        }
        let added = if wanted.everything {
            Topics::default()
        } else {
            wanted.minus(&following)
        };
        let remaining = wanted.minus(&added);
        let partial = if added.is_empty() {
            None
        } else {
            let (start, items) = self.fetch(&added).await?;
            if start < self.revision {
                // A store that went back in time (restored?): start over from what it has.
                return self.snapshot(wanted, updates).await;
            }
            Some((start, items))
        };
        let mut changes = Vec::new();
        let dropped: Vec<String> = self
            .held
            .iter()
            .filter(|(k, h)| {
                let membership = serde_json::from_str::<Value>(&h.membership).ok();
                !remaining.wants(k, membership.as_ref())
                    && !partial
                        .as_ref()
                        .is_some_and(|(_, items)| items.contains_key(*k))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in dropped {
            self.held.remove(&key);
            self.ahead.remove(&key);
            changes.push(Change::Delete(key));
        }
        for topic in following.minus(&wanted).iter() {
            self.late.remove(&topic);
        }
        let partial_snapshot = partial.is_some();
        if let Some((start, items)) = partial {
            for (key, value) in items {
                // What the other topics want is held already, or on its way through the stream.
                if remaining.wants(&key, Some(&value)) {
                    continue;
                }
                if start > self.revision {
                    self.ahead.insert(key.clone(), start);
                }
                let h = self.hold(&value);
                if self.held.get(&key) != Some(&h) {
                    self.held.insert(key.clone(), h);
                    changes.push(Change::Put(key, value));
                }
            }
            if start > self.revision {
                self.late.extend(added.iter().map(|t| (t, start)));
            }
        }
        self.following = Some(wanted);
        let update = Update {
            revision: self.revision,
            changes,
            from_snapshot: true,
        };
        self.deliver(update, updates, |s| {
            if partial_snapshot {
                s.partial_snapshots += 1;
            }
        })
        .await
    }

    /// Follows the change stream of `topics` (a query) after the held revision until it breaks or the
    /// topics change.
    async fn follow(
        &mut self,
        topics: &str,
        updates: &mpsc::Sender<Update>,
    ) -> Result<(), SyncError> {
        let url = format!(
            "{}/wyvern/v1/sync/watch?after={}{topics}",
            self.base, self.revision
        );
        let resp = tokio::time::timeout(SILENCE, self.http.get(url).send())
            .await
            .map_err(|_| SyncError::Silent)??;
        match resp.status().as_u16() {
            200 => {}
            410 => return Err(SyncError::Compacted),
            other => return Err(SyncError::Status(other)),
        }
        self.backoff.reset();
        self.stats.send_modify(|s| s.resumes += 1);
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(SILENCE, body.next()) => chunk,
                _ = topics_changed(&mut self.topics) => return Err(SyncError::TopicsChanged),
                _ = updates.closed() => return Err(SyncError::Closed),
            };
            let chunk = match chunk {
                Err(_) => return Err(SyncError::Silent),
                Ok(None) => return Err(SyncError::Malformed("stream ended".into())),
                Ok(Some(c)) => c?,
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                self.apply_line(&line, updates).await?;
            }
        }
    }

    async fn apply_line(
        &mut self,
        line: &[u8],
        updates: &mpsc::Sender<Update>,
    ) -> Result<(), SyncError> {
        let mut msg: Value =
            serde_json::from_slice(line).map_err(|e| SyncError::Malformed(e.to_string()))?;
        if msg.get("heartbeat").is_some() {
            return Ok(());
        }
        if msg.get("compacted").is_some() {
            return Err(SyncError::Compacted);
        }
        if let Some(e) = msg.get("error") {
            return Err(SyncError::Malformed(e.to_string()));
        }
        let revision = msg["revision"]
            .as_u64()
            .ok_or_else(|| SyncError::Malformed("batch without revision".into()))?;
        let mut changes = Vec::new();
        for e in msg["events"].as_array_mut().into_iter().flatten() {
            let Value::String(key) = e["key"].take() else {
                return Err(SyncError::Malformed("event without key".into()));
            };
            let at = e["revision"]
                .as_u64()
                .ok_or_else(|| SyncError::Malformed("event without revision".into()))?;
            if self.ahead.get(&key).is_some_and(|start| at <= *start) {
                continue;
            }
            match e["value"].take() {
                Value::Null => {
                    if self.held.remove(&key).is_some() {
                        changes.push(Change::Delete(key));
                    }
                }
                v => {
                    self.held.insert(key.clone(), self.hold(&v));
                    changes.push(Change::Put(key, v));
                }
            }
        }
        self.revision = revision;
        self.late.retain(|_, start| *start > revision);
        self.ahead.retain(|_, start| *start > revision);
        let update = Update {
            revision,
            changes,
            from_snapshot: false,
        };
        self.deliver(update, updates, |_| {}).await
    }
}
