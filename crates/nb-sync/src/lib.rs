//! The agent's side of the sync API: a local replica of the northbound topics an agent needs, kept
//! current by list-then-watch.
//!
//! [`Replica::run`] takes a snapshot of the topics at revision R, then follows the change stream after
//! R. After a broken connection (server restart, network) it resumes from the last revision it applied,
//! without a new snapshot. When the server answers that the store has compacted past that revision, or
//! when the set of topics changes, it takes a fresh snapshot and emits only the difference from what it
//! held. Consumers receive [`Update`]s, each one consistent at a store revision.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

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

/// A batch of changes after which the replica is consistent at `revision`.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub revision: u64,
    pub changes: Vec<Change>,
    /// The batch comes from a fresh snapshot (first sync, compaction, or new topics).
    pub from_snapshot: bool,
}

/// What a replica follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    /// Everything the sync API serves (overrides the rest).
    pub everything: bool,
    /// These networks: each network with its subnets and ports.
    pub networks: BTreeSet<String>,
    /// The ports bound to this chassis, whatever their network.
    pub chassis: Option<String>,
}

impl Topics {
    pub fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    pub fn networks(networks: BTreeSet<String>) -> Self {
        Self {
            networks,
            ..Self::default()
        }
    }

    fn query(&self) -> String {
        if self.everything {
            return "&all=1".into();
        }
        let mut q: String = self
            .networks
            .iter()
            .map(|n| format!("&network={n}"))
            .collect();
        if let Some(c) = &self.chassis {
            q.push_str(&format!("&chassis={c}"));
        }
        q
    }
}

/// Counters a test or an operator can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub snapshots: u64,
    pub resumes: u64,
    pub compactions: u64,
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

/// Longest silence on a watch before the connection counts as dead (the server sends heartbeats).
const SILENCE: Duration = Duration::from_secs(15);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Configuration and state of one replica.
pub struct Replica {
    base: String,
    http: reqwest::Client,
    topics: watch::Receiver<Topics>,
    held: BTreeMap<String, Value>,
    revision: u64,
    stats: watch::Sender<Stats>,
}

/// A handle to change the topics of a running replica and read its counters.
#[derive(Clone)]
pub struct Handle {
    topics: watch::Sender<Topics>,
    stats: watch::Receiver<Stats>,
}

impl Handle {
    /// Follows exactly these networks from now on (a fresh snapshot if they differ).
    pub fn set_networks(&self, networks: BTreeSet<String>) {
        self.topics.send_if_modified(|t| {
            if t.networks == networks {
                false
            } else {
                t.networks = networks;
                true
            }
        });
    }
    pub fn stats(&self) -> Stats {
        self.stats.borrow().clone()
    }
}

impl Replica {
    /// A replica of `topics` served at `base` (`http://host:port`).
    pub fn new(base: &str, topics: Topics) -> (Self, Handle) {
        let (topics_tx, topics) = watch::channel(topics);
        let (stats, stats_rx) = watch::channel(Stats::default());
        let replica = Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            topics,
            held: BTreeMap::new(),
            revision: 0,
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

    fn query(&self) -> String {
        self.topics.borrow().query()
    }

    /// Runs until the receiver of `updates` is dropped.
    pub async fn run(mut self, updates: mpsc::Sender<Update>) {
        let mut backoff = Duration::from_millis(50);
        let mut need_snapshot = true;
        loop {
            let result = if need_snapshot {
                self.snapshot(&updates).await
            } else {
                self.follow(&updates).await
            };
            match result {
                Ok(()) => {
                    need_snapshot = false;
                    backoff = Duration::from_millis(50);
                }
                Err(SyncError::Closed) => return,
                Err(SyncError::Compacted) => {
                    self.stats.send_modify(|s| s.compactions += 1);
                    need_snapshot = true;
                }
                Err(SyncError::TopicsChanged) => need_snapshot = true,
                Err(e) => {
                    tracing::debug!("sync: {e}; reconnecting in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Takes a snapshot and emits the difference from what is held.
    async fn snapshot(&mut self, updates: &mpsc::Sender<Update>) -> Result<(), SyncError> {
        self.topics.mark_unchanged();
        let url = format!("{}/wyvern/v1/sync/snapshot?x=1{}", self.base, self.query());
        let resp = self.http.get(url).send().await?;
        if !resp.status().is_success() {
            return Err(SyncError::Status(resp.status().as_u16()));
        }
        let body: Value = resp.json().await?;
        let revision = body["revision"]
            .as_u64()
            .ok_or_else(|| SyncError::Malformed("snapshot without revision".into()))?;
        let mut fresh = BTreeMap::new();
        for item in body["items"].as_array().into_iter().flatten() {
            let key = item["key"]
                .as_str()
                .ok_or_else(|| SyncError::Malformed("item without key".into()))?;
            fresh.insert(key.to_string(), item["value"].clone());
        }
        let mut changes = Vec::new();
        for (k, v) in &fresh {
            if self.held.get(k) != Some(v) {
                changes.push(Change::Put(k.clone(), v.clone()));
            }
        }
        for k in self.held.keys() {
            if !fresh.contains_key(k) {
                changes.push(Change::Delete(k.clone()));
            }
        }
        self.held = fresh;
        self.revision = revision;
        self.stats.send_modify(|s| {
            s.snapshots += 1;
            s.revision = revision;
        });
        let update = Update {
            revision,
            changes,
            from_snapshot: true,
        };
        updates.send(update).await.map_err(|_| SyncError::Closed)
    }

    /// Follows the change stream after the held revision until it breaks.
    async fn follow(&mut self, updates: &mpsc::Sender<Update>) -> Result<(), SyncError> {
        let url = format!(
            "{}/wyvern/v1/sync/watch?after={}{}",
            self.base,
            self.revision,
            self.query()
        );
        let resp = self.http.get(url).send().await?;
        match resp.status().as_u16() {
            200 => {}
            410 => return Err(SyncError::Compacted),
            other => return Err(SyncError::Status(other)),
        }
        self.stats.send_modify(|s| s.resumes += 1);
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(SILENCE, body.next()) => chunk,
                _ = self.topics.changed() => return Err(SyncError::TopicsChanged),
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
        let msg: Value =
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
        for e in msg["events"].as_array().into_iter().flatten() {
            let key = e["key"]
                .as_str()
                .ok_or_else(|| SyncError::Malformed("event without key".into()))?;
            match &e["value"] {
                Value::Null => {
                    if self.held.remove(key).is_some() {
                        changes.push(Change::Delete(key.to_string()));
                    }
                }
                v => {
                    self.held.insert(key.to_string(), v.clone());
                    changes.push(Change::Put(key.to_string(), v.clone()));
                }
            }
        }
        self.revision = revision;
        self.stats.send_modify(|s| s.revision = revision);
        if changes.is_empty() {
            return Ok(());
        }
        let update = Update {
            revision,
            changes,
            from_snapshot: false,
        };
        updates.send(update).await.map_err(|_| SyncError::Closed)
    }
}
