//! Test support: an in-memory Kubernetes API server.
//!
//! [`KubeApi::start`] serves a Kubernetes API over plain HTTP on `127.0.0.1:<free port>` from a
//! runtime thread of its own inside the test process (so it works from sync tests, from any tokio
//! runtime flavour, and next to a blocking `std::process::Command` running `kubectl`); there is no
//! child process, and nothing outlives the test process. Dropping the [`KubeApi`] stops it. The
//! binary `wyvern-kube-apiserver` serves the same API for `wyvern lab`
//! (`--listen ADDR --service-cidr CIDR [--endpoint-controller=false]`, prints its URL).
//!
//! # What it serves
//!
//! * Types: `namespaces`, `nodes` (cluster-scoped), `pods`, `services`, `endpoints` (core `v1`),
//!   `endpointslices` (`discovery.k8s.io/v1`), `networkpolicies` (`networking.k8s.io/v1`), with
//!   `status` subresources for namespaces, nodes, pods and services. Paths as the real server's:
//!   `/api/v1/namespaces/{ns}/pods[/{name}[/status]]`, `/api/v1/pods` (all namespaces),
//!   `/apis/{group}/{version}/...`.
//! * Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`,
//!   always in the legacy (unaggregated) shape as `application/json`: kubectl asks for aggregated
//!   discovery first and falls back on that content type. `/openapi/v2` and `/openapi/v3` answer
//!   404, which kubectl takes as "no schema" (see the kubectl list below).
//! * Objects are `serde_json::Value`s. The server sets `metadata.uid`, `creationTimestamp`,
//!   `generation` (1, bumped when anything outside `metadata` and `status` changes) and
//!   `resourceVersion` from one global counter (as etcd's revision). An update that changes
//!   nothing keeps the resourceVersion and sends no event, as the real server does.
//! * Namespaces: `default`, `kube-system`, `kube-public`, `kube-node-lease` exist at start (and
//!   cannot be deleted: 403). Every namespace gets the label `kubernetes.io/metadata.name`,
//!   `spec.finalizers: [kubernetes]` and `status.phase: Active`. Creating into a missing namespace
//!   is 404 `namespaces "x" not found`. Deleting a namespace deletes everything in it at once
//!   (a DELETED event each, then the namespace's own, with `phase: Terminating` and a
//!   `deletionTimestamp`); there is no lingering Terminating phase and no finalizer processing.
//! * Services get `spec.clusterIP`/`clusterIPs` from the service CIDR (default `10.96.0.0/16`):
//!   the network address is never used, the first host address (`10.96.0.1`) belongs to the
//!   `kubernetes` service in `default` that exists from the start (as in real clusters), and the
//!   others are handed out lowest-free-first (the real allocator picks at random), released on
//!   delete. `clusterIP: None` makes a headless service, a given address must be in the CIDR and
//!   free (else 422 Invalid), `ExternalName` services get none. The cluster IP is immutable (422)
//!   and kept when an update leaves it out. `NodePort`/`LoadBalancer` ports get node ports from
//!   30000–32767. Ports default to `protocol: TCP` and `targetPort: <port>`.
//! * Pods get `status.phase: Pending` unless created with a phase (the real server resets the
//!   status of a new pod; tests set it through the status subresource or at creation), and
//!   `restartPolicy`, `dnsPolicy`, `schedulerName`, `terminationGracePeriodSeconds` defaults.
//!   Deletion is immediate (no graceful termination, no `deletionTimestamp` phase, no finalizers).
//!
//! # Verbs
//!
//! * GET; LIST with `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`),
//!   `fieldSelector` (`metadata.name`, `metadata.namespace` for all types; for pods also
//!   `spec.nodeName`, `status.phase`, `status.podIP` and a few more; unsupported fields are 400),
//!   `limit` + `continue` (pages served from one consistent snapshot, rebuilt from the history;
//!   a token older than the retained history is 410 Expired), `resourceVersion` with
//!   `resourceVersionMatch`: unset = latest; `0` = any (limit ignored, as the watch cache does);
//!   `N` or `NotOlderThan` = at least N (waits up to 3 s for a newer N, then 504 "Too large
//!   resource version"); `Exact` = the state at exactly N (410 if compacted away).
//!   List items carry no `kind`/`apiVersion`, as in real list responses.
//! * WATCH (`watch=true|1`): newline-delimited `{"type": ..., "object": ...}` events on a
//!   chunked response. From `resourceVersion=N`: the changes after N; unset or `0`: synthetic
//!   ADDED events for the current objects first. A resourceVersion older than the retained history
//!   gets HTTP 200 and one `ERROR` event with a `Status` of code 410, reason `Expired`, then the
//!   stream ends: that is what the real server does (errors after a watch was accepted are
//!   reported in-stream; see kubernetes/kubernetes#25151), and what kube-runtime's watcher
//!   re-lists on. A watch that falls behind a compaction gets the same. `allowWatchBookmarks=true`
//!   adds a BOOKMARK (only `metadata.resourceVersion`, the latest the watch has caught up to) every
//!   [`Config::bookmark_interval`]. `timeoutSeconds` ends the stream cleanly (default
//!   [`Config::watch_timeout`]). Label selectors on watches turn an object moving into or out of
//!   the selection into ADDED or DELETED, as the real server does. Streaming lists
//!   (`sendInitialEvents=true`, which requires `resourceVersionMatch=NotOlderThan` and
//!   `allowWatchBookmarks=true`, else 422 as on the real server): ADDED events for the current
//!   state, then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`, then changes.
//!   kube-runtime's watcher uses this only with `watcher::Config::streaming_lists()`; by default
//!   it lists with `limit=500` and then watches from the list's resourceVersion.
//! * CREATE (POST; 409 AlreadyExists; `generateName`; a body with a resourceVersion is 500 as on
//!   the real server), UPDATE (PUT; a stale `metadata.resourceVersion` is 409 Conflict, an empty
//!   one is an unconditional update), PATCH (`application/merge-patch+json`;
//!   `application/strategic-merge-patch+json`, which merges maps like a merge patch and lists of
//!   the built-in types by their merge keys (`containers` by `name`, ...) with the `$patch`,
//!   `$setElementOrder`, `$retainKeys` and `$deleteFromPrimitiveList` directives;
//!   `application/json-patch+json`; `application/apply-patch+yaml` with a JSON body is treated as
//!   a merge patch that creates a missing object, without field ownership or `managedFields`,
//!   and needs `fieldManager`), DELETE (returns the object, `preconditions` in the DeleteOptions
//!   body are checked, 409 on mismatch), DELETE on a collection (deletecollection, with
//!   selectors). Writes to `.../status` change only `status`; writes to an object with a status
//!   subresource leave `status` alone.
//! * Errors are `Status` objects (`kind: Status`, `status: Failure`, `message`, `reason`:
//!   NotFound, AlreadyExists, Conflict, Invalid, BadRequest, Expired, MethodNotAllowed,
//!   Forbidden, UnsupportedMediaType, Timeout, InternalError; `details` with name, group and kind;
//!   `code`) with messages worded like the real server's.
//! * `kubectl get` asks for `Table`s (`Accept: ...;as=Table;g=meta.k8s.io;v=v1`): lists, single
//!   objects and watches are answered with per-type columns (pods: Ready, Status, Restarts, Age,
//!   IP, Node; services: Type, Cluster-IP, External-IP, Port(s), Age, Selector; ...).
//!
//! # The EndpointSlice controller
//!
//! With [`Config::endpoint_controller`] (`--endpoint-controller`, on by default in the binary), every
//! write that touches pods, services or namespaces is followed, under the same lock, by what
//! kube-controller-manager's EndpointSlice controller would do: each Service with a non-empty
//! selector (not `ExternalName`) keeps EndpointSlices (`kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io` labels, `addressType:
//! IPv4`, an owner reference) whose `ports` are the service's ports with `targetPort` resolved
//! (named ones against the pods' container ports; one slice per distinct port list) and whose
//! `endpoints` are the namespace's pods matching the selector with an IPv4 `status.podIP` (not
//! `Succeeded`/`Failed`): `conditions.ready`/`serving` from the pod's `Ready` condition,
//! `terminating: false`, `nodeName`, `targetRef`. A service without such pods keeps one empty slice.
//! Slices are updated in place (no event when nothing changes) and deleted with their service or
//! its selector. v1 `Endpoints` objects are not maintained.
//!
//! # Test hooks
//!
//! [`KubeApi::compact`] drops the event history (the next watch or exact list from an older
//! resourceVersion gets 410), [`KubeApi::close_watches`] ends every open watch as an API server
//! restart would, [`KubeApi::stop`] / [`KubeApi::resume`] take the whole server off the port and
//! back (keeping the objects), [`KubeApi::requests`] counts requests by verb and resource,
//! [`KubeApi::inject_fault`] makes the next matching requests fail, and [`KubeApi::create`],
//! [`KubeApi::get`], [`KubeApi::update_status`] and [`KubeApi::delete`] change objects directly.
//!
//! # kubectl
//!
//! The tests in `tests/kubectl.rs` drive `/usr/bin/kubectl` (override with `WYVERN_KUBECTL`; a
//! missing kubectl fails them) with a kubeconfig from [`KubeApi::kubeconfig`] and a private
//! `--cache-dir`, and show that these work: `version -o json`, `api-resources`, `get pods -A`
//! (empty and with pods), `get pods -A -o wide`, `get pods -A -o json`, `get ns`,
//! `get svc -n default`, `get pods -A -l app=dns -o name`,
//! `get pods -A --field-selector spec.nodeName=n1 -o name`,
//! `get pod NAME -o jsonpath={.status.phase}`, `create -f FILE --validate=false` (Pod and
//! Namespace manifests; a second create reports AlreadyExists), `label pod NAME k=v`,
//! `label pod NAME k-`, `annotate pod NAME k=v`, `delete pod NAME`,
//! `apply -n NS -f FILE --validate=false` (created, then "configured" through a strategic merge
//! patch, then "unchanged"), `delete -n NS -f FILE`, `delete namespace NAME`, `get pods -w`
//! (table, then rows for a new pod and a status change) and `get pods -w -o json`.
//!
//! Known gaps: `create`/`apply` without `--validate=false` fail ("failed to download openapi"):
//! there is no `/openapi/v2` or `/openapi/v3` document. Generator commands such as
//! `kubectl create namespace NAME` send protobuf bodies, which the server does not decode (400);
//! use `create -f` with a manifest. The installed kubectl is Google Cloud SDK's dispatcher
//! (`kubectl version` shows `v1.32.4-dispatcher` offline); it runs the client release matching the
//! server's minor version, v1.33.1 here, because `/version` reports 1.33.

mod endpoints;
mod patch;
pub mod resources;
pub mod selector;
mod server;
mod status;
mod store;

pub use patch::{json_patch, merge_patch, strategic_merge_patch};
pub use status::ApiError;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

/// Fixture failures.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The listening socket or the runtime could not be set up.
    #[error("kube-fixture: {0}")]
    Io(#[from] std::io::Error),
    /// The server's runtime thread is gone.
    #[error("kube-fixture: the server thread is gone")]
    Gone,
    /// [`KubeApi::resume`] on a running server.
    #[error("kube-fixture: the server is already running")]
    Running,
    /// A type that is not served.
    #[error("kube-fixture: no resource type {0}")]
    UnknownType(String),
    /// The API refused a direct change.
    #[error("kube-fixture: {0}")]
    Api(#[from] ApiError),
}

/// A request verb, as the API server's audit log names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

/// A fault to inject: the next `times` requests matching `verb` and `resource` (plural name;
/// `None` matches any) are answered with a `Status` of HTTP status `code` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The verb to fail, or any.
    pub verb: Option<Verb>,
    /// The resource (plural name, e.g. `pods`) to fail, or any.
    pub resource: Option<String>,
    /// The HTTP status code (500, 503, 429, 410, ...).
    pub code: u16,
    /// How many requests fail.
    pub times: usize,
}

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// Service cluster IPs come from here (default `10.96.0.0/16`).
    pub service_cidr: IpNet,
    /// How often watches that allow bookmarks get one (default 1 s; the real server: ~1 min).
    pub bookmark_interval: Duration,
    /// How long a watch without `timeoutSeconds` lasts (default 30 min, as the real server's
    /// default minimum request timeout).
    pub watch_timeout: Duration,
    /// How many events the history keeps; older ones are compacted away (default 10000).
    pub history_limit: usize,
    /// Runs a minimal EndpointSlice controller inside the server (default off here, on in
    /// `wyvern-kube-apiserver`): every Service with a selector keeps EndpointSlices of the
    /// matching pods with an IP, updated as pods and services change, as
    /// kube-controller-manager's controller would (see the crate documentation).
    pub endpoint_controller: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service_cidr: "10.96.0.0/16".parse().expect("a valid CIDR"),
            bookmark_interval: Duration::from_secs(1),
            watch_timeout: Duration::from_secs(1800),
            history_limit: 10_000,
            endpoint_controller: false,
        }
    }
}

/// A running in-memory API server; dropping it stops it.
pub struct KubeApi {
    shared: Arc<server::Shared>,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    serving: Option<(oneshot::Sender<()>, std::sync::mpsc::Receiver<()>)>,
}

impl KubeApi {
    /// Starts a server with the default [`Config`] on a free loopback port.
    pub fn start() -> Result<Self, FixtureError> {
        Self::start_with(Config::default())
    }

    /// Starts a server as `config` says.
    pub fn start_with(config: Config) -> Result<Self, FixtureError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-fixture")
            .enable_all()
            .build()?;
        let (rv_tx, _) = watch::channel(0);
        let (close_tx, _) = watch::channel(0);
        let store = store::Store::new(config.service_cidr, config.history_limit);
        rv_tx.send_replace(store.rv());
        let shared = Arc::new(server::Shared {
            store: Mutex::new(store),
            rv_tx,
            close_tx,
            counts: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Vec::new()),
            open_watches: AtomicUsize::new(0),
            bookmark_interval: config.bookmark_interval,
            watch_timeout: config.watch_timeout,
            endpoint_controller: config.endpoint_controller,
        });
        let listener = std::net::TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        let mut api = Self {
            shared,
            addr,
            runtime: Some(runtime),
            serving: None,
        };
        api.serve(listener)?;
        Ok(api)
    }

    fn serve(&mut self, listener: std::net::TcpListener) -> Result<(), FixtureError> {
        listener.set_nonblocking(true)?;
        let runtime = self.runtime.as_ref().ok_or(FixtureError::Gone)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(self.shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
            let _ = done_tx.send(());
        });
        self.serving = Some((stop_tx, done_rx));
        Ok(())
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig (YAML) for this server, with namespace `default`.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.read(store::Store::rv)
    }

    /// Drops the event history: a watch (or exact list, or continue token) from any earlier
    /// resourceVersion now gets 410 Expired. Watches that are caught up go on.
    pub fn compact(&self) {
        self.shared.write(store::Store::compact);
    }

    /// Ends every open watch (the response stream ends cleanly), as an API server restart would.
    pub fn close_watches(&self) {
        self.shared.close_tx.send_modify(|n| *n += 1);
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// How many `verb` requests for `resource` (plural name, e.g. `pods`) were made.
    pub fn requests(&self, verb: Verb, resource: &str) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(verb, resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every request count so far, by verb and resource.
    pub fn request_counts(&self) -> BTreeMap<(Verb, String), u64> {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets every request count back to zero.
    pub fn reset_request_counts(&self) {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Makes the next matching requests fail (see [`Fault`]).
    pub fn inject_fault(&self, fault: Fault) {
        if fault.times > 0 {
            self.shared
                .faults
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(fault);
        }
    }

    /// Takes the server off its port: open watches end, connections are closed (after at most
    /// 2 s of waiting for requests in flight), new connections are refused. The objects stay.
    pub fn stop(&mut self) {
        let Some((stop, done)) = self.serving.take() else {
            return;
        };
        self.close_watches();
        let _ = stop.send(());
        let _ = done.recv_timeout(Duration::from_secs(2));
    }

    /// Serves again on the same port after [`KubeApi::stop`], with the same objects.
    pub fn resume(&mut self) -> Result<(), FixtureError> {
        if self.serving.is_some() {
            return Err(FixtureError::Running);
        }
        let listener = std::net::TcpListener::bind(self.addr)?;
        self.serve(listener)
    }

    fn resource_type(
        api_version: &str,
        kind: &str,
    ) -> Result<&'static resources::ResourceType, FixtureError> {
        resources::by_kind(api_version, kind)
            .ok_or_else(|| FixtureError::UnknownType(format!("{api_version} {kind}")))
    }

    /// The type of `api_version` `kind` and the namespace its objects are stored under: `ns`,
    /// or none for a cluster-scoped type.
    fn locate<'a>(
        api_version: &str,
        kind: &str,
        ns: &'a str,
    ) -> Result<(&'static resources::ResourceType, &'a str), FixtureError> {
        let rt = Self::resource_type(api_version, kind)?;
        Ok((rt, if rt.namespaced { ns } else { "" }))
    }

    /// Creates `object` (its `apiVersion`, `kind` and `metadata.namespace` say where) as a POST
    /// would, and returns it as stored.
    pub fn create(&self, object: Value) -> Result<Value, FixtureError> {
        let api_version = object["apiVersion"].as_str().unwrap_or("");
        let rt = Self::resource_type(api_version, object["kind"].as_str().unwrap_or(""))?;
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(if rt.namespaced { "default" } else { "" })
            .to_string();
        Ok(self.shared.write(|s| s.create(rt, &ns, object))?)
    }

    /// One object (`ns` is ignored for cluster-scoped types).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<Value, FixtureError> {
        let (rt, ns) = Self::locate(api_version, kind, ns)?;
        Ok(self.shared.read(|s| s.get(rt, ns, name))?)
    }

    /// Replaces an object's `status` (as a PUT to the status subresource without a
    /// resourceVersion precondition would).
    pub fn update_status(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, FixtureError> {
        let (rt, ns) = Self::locate(api_version, kind, ns)?;
        Ok(self.shared.write(|s| -> Result<Value, ApiError> {
            let mut obj = s.get(rt, ns, name)?;
            obj["status"] = status;
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            Ok(s.update(rt, ns, name, obj, true)?.object)
        })?)
    }

    /// Deletes an object as a DELETE would, and returns its last state.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<Value, FixtureError> {
        let (rt, ns) = Self::locate(api_version, kind, ns)?;
        Ok(self.shared.write(|s| s.delete(rt, ns, name, None))?)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.close_watches();
        if let Some((stop, _)) = self.serving.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A kubeconfig (YAML) for the server at `url`: cluster, user and context `wyvern-test`,
/// namespace `default`, no credentials.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: wyvern-test
  cluster:
    server: {url}
users:
- name: wyvern-test
  user: {{}}
contexts:
- name: wyvern-test
  context:
    cluster: wyvern-test
    user: wyvern-test
    namespace: default
current-context: wyvern-test
"
    )
}
