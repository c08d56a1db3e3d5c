//! The watchers and the reconcile loop.
//!
//! One kube-runtime watcher per kind feeds a reflector store (list, then watch from the list's
//! resourceVersion; on 410 Expired the watcher lists again and the store swaps its contents at
//! the end of that list, so a re-list never shows a half cache); every event wakes the loop.
//! Nothing is reconciled before every store has completed its first list: deletions need the
//! whole picture. A pass runs on a snapshot of the stores; events that arrive meanwhile wake the
//! next pass, so bursts coalesce. Events of pods alone run a pod pass (those pods' ports and
//! annotations, see `Reconciler::pods_pass`); any other event, a re-list, a failed write, a
//! backoff or the resync falling due runs a full pass. Failed objects are retried on their own
//! backoff.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use crate::reconcile::Reconciler;
use crate::{Config, Error};

/// The stores' contents at one moment.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    pub namespaces: Vec<Arc<Namespace>>,
    pub nodes: Vec<Arc<Node>>,
    pub pods: Vec<Arc<Pod>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub policies: Vec<Arc<NetworkPolicy>>,
}

struct Stores {
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    policies: Store<NetworkPolicy>,
}

impl Stores {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            namespaces: self.namespaces.state(),
            nodes: self.nodes.state(),
            pods: self.pods.state(),
            services: self.services.state(),
            slices: self.slices.state(),
            policies: self.policies.state(),
        }
    }

    async fn ready(&self) -> Result<(), Error> {
        let gone = |e: reflector::store::WriterDropped| Error::Kube(e.to_string());
        self.namespaces.wait_until_ready().await.map_err(gone)?;
        self.nodes.wait_until_ready().await.map_err(gone)?;
        self.pods.wait_until_ready().await.map_err(gone)?;
        self.services.wait_until_ready().await.map_err(gone)?;
        self.slices.wait_until_ready().await.map_err(gone)?;
        self.policies.wait_until_ready().await.map_err(gone)?;
        Ok(())
    }
}

/// What changed since the last pass: the uids of pods with an event, or anything else (another
/// kind's event, a re-list) that asks for a full pass.
#[derive(Debug, Default)]
struct Changes {
    full: bool,
    pods: HashSet<String>,
}

type SharedChanges = Arc<Mutex<Changes>>;

/// Records a watch event: a pod's own event names the pod, anything else asks for a full pass.
fn record<K: kube::Resource>(changes: &SharedChanges, event: &watcher::Event<K>, pods: bool) {
    let mut c = changes.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) if pods => {
            match o.meta().uid.clone() {
                Some(uid) => {
                    c.pods.insert(uid);
                }
                None => c.full = true,
            }
        }
        _ => c.full = true,
    }
}

/// Aborts the watcher tasks when the controller stops (or its future is dropped).
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// What each watcher needs: the client, the loop's wake-up and change record, and the task
/// list it joins.
struct Watchers {
    client: kube::Client,
    notify: Arc<Notify>,
    changes: SharedChanges,
    tasks: Tasks,
}

impl Watchers {
    /// Starts the watcher of every `K` in the cluster; returns its store.
    fn watch<K>(&mut self) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (reader, writer) = reflector::store();
        let kind = K::kind(&()).to_string();
        let pods = kind == "Pod";
        let stream = reflector::reflector(
            writer,
            watcher::watcher(
                Api::<K>::all(self.client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        let (notify, changes) = (self.notify.clone(), self.changes.clone());
        self.tasks.0.push(tokio::spawn(async move {
            stream
                .for_each(|event| {
                    match &event {
                        Ok(ev) => record(&changes, ev, pods),
                        Err(e) => {
                            tracing::warn!("watching {kind}: {e}");
                            changes.lock().unwrap_or_else(|e| e.into_inner()).full = true;
                        }
                    }
                    notify.notify_one();
                    futures::future::ready(())
                })
                .await;
        }));
        reader
    }
}

/// Runs the controller with `client` until the future is dropped (or fails to start).
pub async fn run(config: Config, client: kube::Client) -> Result<(), Error> {
    config.check()?;
    let mut watchers = Watchers {
        client: client.clone(),
        notify: Arc::new(Notify::new()),
        changes: SharedChanges::default(),
        tasks: Tasks(Vec::new()),
    };
    let stores = Stores {
        namespaces: watchers.watch(),
        nodes: watchers.watch(),
        pods: watchers.watch(),
        services: watchers.watch(),
        slices: watchers.watch(),
        policies: watchers.watch(),
    };
    let Watchers {
        notify,
        changes,
        tasks: _tasks,
        ..
    } = watchers;
    let mut rec = Reconciler::new(config, client)?;
    // The Neutron side first (it does not need the caches), then the initial lists.
    let mut delay = Duration::from_millis(200);
    loop {
        match rec.setup().await {
            Ok(()) => break,
            // A configuration that cannot work (`--pod-network` naming several networks, ...).
            Err(e @ Error::Config(_)) => return Err(e),
            Err(e) => {
                tracing::warn!("setting up the pod and service networks: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    stores.ready().await?;
    tracing::info!("initial lists complete; reconciling");
    // The first pass is a full one; then a wake-up by pod events alone reconciles those pods,
    // anything else (another kind's event, a re-list, a failed write, a backoff or the resync
    // falling due) a full pass.
    let mut full = true;
    let mut wait = Duration::ZERO;
    loop {
        let taken = std::mem::take(&mut *changes.lock().unwrap_or_else(|e| e.into_inner()));
        let snapshot = stores.snapshot();
        if full || taken.full || rec.needs_full_pass() {
            wait = rec.pass(&snapshot).await;
        } else if !taken.pods.is_empty() {
            rec.pods_pass(&snapshot, &taken.pods).await;
        }
        tokio::select! {
            _ = notify.notified() => {
                full = false;
                // Let a burst of events land before the next pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ = tokio::time::sleep(wait) => full = true,
        }
    }
}
