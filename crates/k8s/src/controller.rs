//! The watchers and the reconcile loop.
//!
//! One kube-runtime watcher per kind feeds a reflector store (list, then watch from the list's
//! resourceVersion; on 410 Expired the watcher lists again and the store swaps its contents at
//! the end of that list, so a re-list never shows a half cache); every event wakes the loop.
//! Nothing is reconciled before every store has completed its first list: deletions need the
//! whole picture. A pass runs on a snapshot of the stores; events that arrive meanwhile wake the
//! next pass, so bursts coalesce. Failed objects are retried on their own backoff.

use std::sync::Arc;
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

/// Aborts the watcher tasks when the controller stops (or its future is dropped).
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn watch<K>(api: Api<K>, notify: Arc<Notify>, tasks: &mut Tasks) -> Store<K>
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
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    tasks.0.push(tokio::spawn(async move {
        stream
            .for_each(|event| {
                if let Err(e) = &event {
                    tracing::warn!("watching {kind}: {e}");
                }
                notify.notify_one();
                futures::future::ready(())
            })
            .await;
    }));
    reader
}

/// Runs the controller with `client` until the future is dropped (or fails to start).
pub async fn run(config: Config, client: kube::Client) -> Result<(), Error> {
    config.check()?;
    let notify = Arc::new(Notify::new());
    let mut tasks = Tasks(Vec::new());
    let stores = Stores {
        namespaces: watch(Api::all(client.clone()), notify.clone(), &mut tasks),
        nodes: watch(Api::all(client.clone()), notify.clone(), &mut tasks),
        pods: watch(Api::all(client.clone()), notify.clone(), &mut tasks),
        services: watch(Api::all(client.clone()), notify.clone(), &mut tasks),
        slices: watch(Api::all(client.clone()), notify.clone(), &mut tasks),
        policies: watch(Api::all(client.clone()), notify.clone(), &mut tasks),
    };
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
    loop {
        let snapshot = stores.snapshot();
        let wait = rec.pass(&snapshot).await;
        tokio::select! {
            _ = notify.notified() => {
                // Let a burst of events land before the next pass.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
