//! A monitor that survives reconnects: the client's view of some tables, kept in sync
//! across server restarts without losing or inventing a change.
//!
//! After every (re)connect the best monitor method the server offers is used
//! (`monitor_cond_since`, else `monitor_cond`, else `monitor`). When the server still knows
//! the last transaction seen, it sends only what changed since; otherwise its snapshot is
//! compared with the rows known before the connection broke and exactly the difference is
//! reported.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::client::{Client, ClientOptions, Endpoint, Notification};
use crate::monitor::{Cache, MonitorKind, MonitorRequest, RowChange};
use crate::{DatabaseSchema, Error, Result};

const MONITOR_ID: &str = "wyvern-replica";

/// What a [`Replica`] watches.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// Database name, e.g. `Open_vSwitch`.
    pub db: String,
    /// Tables and what to watch in each.
    pub tables: BTreeMap<String, MonitorRequest>,
}

/// Reconnect behaviour.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// Connection options.
    pub client: ClientOptions,
    /// First delay before reconnecting; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            client: ClientOptions::default(),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// What a replica reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaEvent {
    /// A (re)connection succeeded. `resumed`: the server sent only what was missed.
    Connected {
        /// Monitor method in use.
        kind: MonitorKind,
        /// Incremental resync (`monitor_cond_since` found our last transaction).
        resumed: bool,
    },
    /// Rows changed (one server transaction, or the whole difference after a reconnect).
    Changes(Vec<RowChange>),
    /// The connection broke; a reconnect follows.
    Disconnected(String),
}

/// A self-reconnecting monitor. Dropping it stops it.
#[derive(Debug)]
pub struct Replica {
    events: mpsc::UnboundedReceiver<ReplicaEvent>,
    cache: ReplicaReader,
    task: JoinHandle<()>,
}

impl Replica {
    /// Starts watching `spec` on `endpoint` (connects in the background).
    pub fn spawn(endpoint: Endpoint, spec: ReplicaSpec, opts: ReplicaOptions) -> Replica {
        let (tx, events) = mpsc::unbounded_channel();
        let cache = Arc::new(Mutex::new(Cache::new()));
        let task = tokio::spawn(run(endpoint, spec, opts, cache.clone(), tx));
        Replica {
            events,
            cache: ReplicaReader(cache),
            task,
        }
    }

    /// The next event; `None` only if the replica stopped.
    pub async fn next(&mut self) -> Option<ReplicaEvent> {
        self.events.recv().await
    }

    /// A copy of the rows known right now.
    pub fn snapshot(&self) -> Cache {
        self.read(Cache::clone)
    }

    /// Reads the rows known right now in place, without copying them (the replica's task
    /// waits for `f`: keep it short).
    pub fn read<R>(&self, f: impl FnOnce(&Cache) -> R) -> R {
        self.cache.read(f)
    }

    /// A handle that reads the rows as [`read`](Self::read) does, for another task than the
    /// one that takes the replica's events: two readers of the same rows share one replica.
    pub fn reader(&self) -> ReplicaReader {
        self.cache.clone()
    }
}

/// Reads a [`Replica`]'s rows from anywhere (see [`Replica::reader`]); it outlives the replica,
/// keeping the rows last known.
#[derive(Debug, Clone)]
pub struct ReplicaReader(Arc<Mutex<Cache>>);

impl ReplicaReader {
    /// Reads the rows known right now in place (the replica's task waits for `f`: keep it
    /// short).
    pub fn read<R>(&self, f: impl FnOnce(&Cache) -> R) -> R {
        f(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Session<'a> {
    spec: &'a ReplicaSpec,
    cache: &'a Mutex<Cache>,
    tx: &'a mpsc::UnboundedSender<ReplicaEvent>,
    last_txn: Option<Uuid>,
}

async fn run(
    endpoint: Endpoint,
    spec: ReplicaSpec,
    opts: ReplicaOptions,
    cache: Arc<Mutex<Cache>>,
    tx: mpsc::UnboundedSender<ReplicaEvent>,
) {
    let mut s = Session {
        spec: &spec,
        cache: &cache,
        tx: &tx,
        last_txn: None,
    };
    let mut backoff = opts.backoff_min;
    loop {
        match Client::connect(&endpoint, opts.client.clone()).await {
            Ok(client) => {
                let reason = match s.serve(&client, &mut backoff, opts.backoff_min).await {
                    Ok(()) => return,
                    Err(e) => e.to_string(),
                };
                if s.send(ReplicaEvent::Disconnected(reason)).is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!("ovsdb connect to {endpoint}: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

impl Session<'_> {
    fn send(&self, e: ReplicaEvent) -> std::result::Result<(), ()> {
        self.tx.send(e).map_err(|_| ())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one connection; `Ok` means the receiver is gone, `Err` that the connection ended.
    async fn serve(
        &mut self,
        client: &Client,
        backoff: &mut Duration,
        reset: Duration,
    ) -> Result<()> {
        let schema = client.get_schema(&self.spec.db).await?;
        for (t, r) in &self.spec.tables {
            for c in r.columns.iter().flatten() {
                schema.column_kind(t, c)?;
            }
        }
        let mut monitor = None;
        let mut last_err = None;
        for kind in [
            MonitorKind::MonitorCondSince,
            MonitorKind::MonitorCond,
            MonitorKind::Monitor,
        ] {
            match client
                .monitor(
                    &self.spec.db,
                    MONITOR_ID,
                    kind,
                    &self.spec.tables,
                    self.last_txn,
                )
                .await
            {
                Ok(m) => {
                    monitor = Some(m);
                    break;
                }
                // Older servers answer unknown methods with an error: try the next one.
                Err(e @ Error::Server { .. }) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        let mut m = monitor.ok_or_else(|| last_err.unwrap_or(Error::protocol("no monitor")))?;
        *backoff = reset;
        let changes = if m.found {
            self.lock().apply(&schema, &m.initial)?
        } else {
            let fresh = Cache::from_snapshot(&schema, &m.initial)?;
            let mut cache = self.lock();
            let d = cache.diff(&fresh);
            *cache = fresh;
            d
        };
        self.last_txn = m.last_txn_id.filter(|u| !u.is_nil());
        let connected = ReplicaEvent::Connected {
            kind: m.kind,
            resumed: m.found,
        };
        if self.send(connected).is_err() || self.emit(changes).is_err() {
            return Ok(());
        }
        while let Some(n) = m.updates.recv().await {
            let changes = self.apply(&schema, n)?;
            if self.emit(changes).is_err() {
                return Ok(());
            }
        }
        Err(Error::Disconnected(client.closed().await))
    }

    fn apply(&mut self, schema: &DatabaseSchema, n: Notification) -> Result<Vec<RowChange>> {
        match n {
            Notification::Updates(u) => self.lock().apply(schema, &u),
            Notification::Updates3 {
                last_txn_id,
                updates,
            } => {
                let c = self.lock().apply(schema, &updates)?;
                self.last_txn = Some(last_txn_id).filter(|u| !u.is_nil());
                Ok(c)
            }
        }
    }

    fn emit(&self, changes: Vec<RowChange>) -> std::result::Result<(), ()> {
        if changes.is_empty() {
            Ok(())
        } else {
            self.send(ReplicaEvent::Changes(changes))
        }
    }
}
