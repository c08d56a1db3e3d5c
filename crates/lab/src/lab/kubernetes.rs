//! A Kubernetes cluster in the lab (`[kubernetes]` in the file): the lab runs the in-memory API
//! server `wyvern-kube-apiserver` (with its EndpointSlice controller; PID `kube-apiserver.pid`,
//! log `kube-apiserver.log`, kubeconfig `kubeconfig` in the lab's directory) and the controller
//! `wyvern k8s` against it and the lab's API (`k8s-controller.pid`, `k8s-controller.log`),
//! creates a Node per node chassis (Ready, its tunnel address as InternalIP), the file's
//! namespaces, services and network policies (labelled `wyvern.io/lab=<lab>`; those the file no
//! longer has are deleted), and acts as the kubelet of every node: for each pod it creates the
//! Pod (`spec.nodeName`), waits for the controller's port (tag `k8s-pod-uid:<uid>`), makes the
//! pod's namespace (named like a VM's, so `exec` works on it), runs `wyvern-cni ADD` inside the
//! node's chassis namespace (where a real kubelet's runtime would; the lab's API is reached there
//! through a relay on the chassis' loopback that lives while `up` runs), then sets the pod's
//! status (`Running`, `podIP`, `Ready`, one ready container). With `network` in the file the
//! controller puts the pods on that network of the file (`--pod-network`, `--pod-subnet`: its
//! first IPv4 subnet), which VMs share. A pod the file no longer has (or whose node or
//! namespace changed) gets `CNI DEL`, loses its namespace and its Pod object. A VM node
//! (`vm_nodes`, nested mode) is a trunk VM with its own Open vSwitch (see `trunks.rs`): its Node
//! is annotated `wyvern.io/trunk-port=<its port>`, and its pods' `wyvern-cni` runs inside the VM
//! (relay on the VM's loopback) with `"mode": "nested", "vlan": "ovs"` on `br-trunk`. Labels are
//! patched in place. The binaries are found next to the `wyvern` binary the lab runs (or by
//! `WYVERN_KUBE_APISERVER`, `WYVERN_CNI`). The lab's Kubernetes state is `kubernetes.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use testbed::{Daemon, Netns, Relay};

use super::{Lab, io, log_tail, trunks};
use crate::names;
use crate::neutron::{Neutron, text};
use crate::topology::{KubernetesSpec, PodSpec, TargetPort, Topology};
use crate::{Error, Result};

/// The tiny server's script (as the VMs').
const SCRIPT: &str = include_str!("serve.py");
/// The label on everything the lab creates in the cluster.
const LAB_LABEL: &str = "wyvern.io/lab";
/// The lab's Kubernetes state, in its directory.
const STATE_FILE: &str = "kubernetes.json";
/// How long the controller may take to make a pod's port.
const PORT_WAIT: Duration = Duration::from_secs(60);
/// The node annotation naming a VM node's port, whose trunk gets its pods as subports.
const TRUNK_PORT_ANNOTATION: &str = "wyvern.io/trunk-port";

/// Where the kubelet of a node runs `wyvern-cni`, and with what.
struct NodeCni {
    /// The namespace: a chassis' (host mode), or a VM node's own (nested mode).
    netns: String,
    /// The configuration's keys for the node's switch: `br-int` of the chassis' Open vSwitch,
    /// or nested `ovs` with the VM's own Open vSwitch and its bridge.
    conf: Value,
    /// The node's address: a chassis' tunnel address, a VM's IPv4 address.
    host_ip: String,
    /// Whether it is a VM (nested mode).
    nested: bool,
}

/// What the lab knows of its cluster (`kubernetes.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeState {
    /// The API server's URL.
    pub api: Option<String>,
    /// The service CIDR the API server was started with.
    pub service_cidr: Option<String>,
    /// The controller's command line.
    pub controller_args: Option<Vec<String>>,
    /// The pods the lab runs, by name.
    pub pods: BTreeMap<String, PodState>,
}

/// A pod the lab runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Node (chassis).
    pub node: String,
    /// The Pod's uid.
    pub uid: String,
    /// Its network namespace.
    pub netns: String,
    /// Its Neutron port.
    pub port_id: String,
    /// Its MAC.
    pub mac: String,
    /// Its IPv4 address.
    pub ip: String,
    /// Its tiny server's ports (`http:8080`).
    #[serde(default)]
    pub serve: Vec<String>,
}

/// Loads the lab's Kubernetes state from `dir` (empty if there is none).
pub fn load(dir: &Path) -> KubeState {
    std::fs::read_to_string(dir.join(STATE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save(dir: &Path, state: &KubeState) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))
}

/// Lines for `wyvern lab status`: the API server, the controller and the pods.
pub fn status_lines(dir: &Path, marker: &str) -> Vec<String> {
    let s = load(dir);
    let Some(api) = &s.api else {
        return Vec::new();
    };
    let pid = |f: &str| {
        Daemon::running(&dir.join(f), marker).map_or_else(|| "DOWN".into(), |p| format!("pid {p}"))
    };
    let mut out = vec![
        format!(
            "  kubernetes api {api} ({}), kubeconfig {}",
            pid("kube-apiserver.pid"),
            dir.join("kubeconfig").display()
        ),
        format!("  kubernetes controller ({})", pid("k8s-controller.pid")),
    ];
    for (name, p) in &s.pods {
        let up = if Netns::exists(&p.netns) {
            ""
        } else {
            " (netns missing)"
        };
        let serve = if p.serve.is_empty() {
            String::new()
        } else {
            let running = Daemon::running(&dir.join(format!("serve-{name}.pid")), marker);
            format!(
                "  serves {} ({})",
                p.serve.join(" "),
                running.map_or_else(|| "DOWN".into(), |p| format!("pid {p}"))
            )
        };
        out.push(format!(
            "  pod      {name:<12} {}/{name} on {}  {} {}  port {}{up}{serve}",
            p.namespace, p.node, p.ip, p.mac, p.port_id
        ));
    }
    out
}

/// A binary next to `wyvern` (or named by the environment variable `env`): how the lab finds
/// `wyvern-kube-apiserver` and `wyvern-cni` (public for benchmarks that act as the kubelet).
pub fn sibling(wyvern: &Path, name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let next = wyvern.with_file_name(name);
    if next.exists() {
        next
    } else {
        PathBuf::from(name)
    }
}

fn kube_err(what: impl std::fmt::Display) -> Error {
    Error::Start(format!("kubernetes: {what}"))
}

/// A small client of the cluster's API (JSON, no auth).
struct Kube {
    base: String,
    http: reqwest::Client,
}

impl Kube {
    fn new(base: &str) -> Result<Kube> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Kube {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b.to_string());
        }
        let resp = req.send().await?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> Result<Option<Value>> {
        match self.call(Method::GET, path, None).await? {
            (200, v) => Ok(Some(v)),
            (404, _) => Ok(None),
            (c, v) => Err(kube_err(format!("GET {path}: {c} {v}"))),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<Value>> {
        Ok(self
            .get(path)
            .await?
            .and_then(|v| v.get("items").and_then(Value::as_array).cloned())
            .unwrap_or_default())
    }

    async fn send(&self, method: Method, path: &str, ct: &str, body: Value) -> Result<Value> {
        match self.call(method.clone(), path, Some((ct, body))).await? {
            (200 | 201, v) => Ok(v),
            (c, v) => Err(kube_err(format!("{method} {path}: {c} {v}"))),
        }
    }

    /// Creates the object unless it exists; then merge-patches it to `body`'s `spec`, labels.
    async fn apply(&self, collection: &str, name: &str, body: Value) -> Result<bool> {
        let path = format!("{collection}/{name}");
        match self.get(&path).await? {
            None => {
                self.send(Method::POST, collection, "application/json", body)
                    .await?;
                Ok(true)
            }
            Some(old) => {
                let mut patch = json!({"metadata": {"labels": body["metadata"]["labels"]}});
                if let Some(spec) = body.get("spec") {
                    patch["spec"] = spec.clone();
                }
                let new = self
                    .send(Method::PATCH, &path, "application/merge-patch+json", patch)
                    .await?;
                Ok(new["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"])
            }
        }
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.call(Method::DELETE, path, None).await? {
            (200 | 202 | 404, _) => Ok(()),
            (c, v) => Err(kube_err(format!("DELETE {path}: {c} {v}"))),
        }
    }
}

fn port_objects(p: &PodSpec) -> Vec<Value> {
    p.ports
        .iter()
        .map(|c| {
            let mut v = json!({"containerPort": c.port, "protocol": c.protocol});
            if let Some(n) = &c.name {
                v["name"] = json!(n);
            }
            v
        })
        .collect()
}

/// Sets `extra`'s keys in the object `conf`.
fn merge(conf: &mut Value, extra: &Value) {
    if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
        c.extend(e.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

impl Lab {
    /// How the kubelet of `node` runs `wyvern-cni`: in the chassis' namespace on its `br-int`,
    /// or, for a VM node, inside the VM in nested mode, tagging through the VM's own Open
    /// vSwitch ([`trunks::BRIDGE`]). `None`: no such chassis, or no such trunk VM.
    fn node_cni(&self, node: &str) -> Option<NodeCni> {
        if let Some(c) = self.state.chassis.get(node) {
            return Some(NodeCni {
                netns: c.netns.clone(),
                conf: json!({"bridge": "br-int",
                    "ovsdb": format!("unix:{}", c.rundir.join("db.sock").display())}),
                host_ip: c.tunnel_ip.to_string(),
                nested: false,
            });
        }
        let (vm, trunk) = (self.state.vms.get(node)?, self.state.trunks.get(node)?);
        let ip = vm.addresses.iter().find(|a| !a.contains(':'))?;
        Some(NodeCni {
            netns: vm.netns.clone(),
            conf: json!({"mode": "nested", "vlan": "ovs", "vm_bridge": trunks::BRIDGE,
                "vm_ovsdb": format!("unix:{}", trunk.rundir.join("db.sock").display())}),
            host_ip: ip.split('/').next().unwrap_or(ip).to_owned(),
            nested: true,
        })
    }

    /// Whether pod `s` on a VM node still has its end in the VM (re-wiring a VM makes its
    /// namespace afresh, and the pods' veths go with the old one); pods on chassis: true.
    fn pod_plugged(&self, s: &PodState) -> bool {
        match self.node_cni(&s.node) {
            Some(n) if n.nested => Command::new("ip")
                .args(["-n", &n.netns, "link", "show", &names::tap(&s.port_id)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success()),
            Some(_) => true,
            None => false,
        }
    }

    fn kube_pidfile(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{what}.pid"))
    }

    /// The cluster's API URL, once the lab runs one.
    pub fn kube_api_url(&self) -> Option<String> {
        load(&self.dir).api
    }

    /// The lab's kubeconfig (for `kubectl --kubeconfig`), once it runs a cluster.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The lab's pods as it runs them.
    pub fn pods(&self) -> BTreeMap<String, PodState> {
        load(&self.dir).pods
    }

    /// PID of the Kubernetes controller (`wyvern k8s`), if it runs.
    pub fn k8s_controller_pid(&self) -> Option<u32> {
        Daemon::running(&self.kube_pidfile("k8s-controller"), &self.marker())
    }

    /// PID of the Kubernetes API server (`wyvern-kube-apiserver`), if it runs.
    pub fn kube_apiserver_pid(&self) -> Option<u32> {
        Daemon::running(&self.kube_pidfile("kube-apiserver"), &self.marker())
    }

    /// Kills the Kubernetes controller with SIGKILL (like a crash).
    pub fn kill_k8s_controller(&mut self) -> Result<()> {
        let d = Daemon::find(&self.kube_pidfile("k8s-controller"), &self.marker())
            .ok_or_else(|| Error::NotFound("the kubernetes controller does not run".into()))?;
        d.kill();
        Ok(())
    }

    /// Starts the Kubernetes controller again (as `up` last ran it); returns its PID.
    pub fn restart_k8s_controller(&mut self) -> Result<u32> {
        let args = load(&self.dir)
            .controller_args
            .ok_or_else(|| Error::NotFound("the lab has no kubernetes controller".into()))?;
        self.spawn_controller(&args)
    }

    fn spawn_controller(&self, args: &[String]) -> Result<u32> {
        let pidfile = self.kube_pidfile("k8s-controller");
        Daemon::stop_pidfile(&pidfile, &self.marker());
        let mut cmd = self.wyvern(args);
        cmd.env("RUST_LOG", "info");
        let log = self.dir.join("k8s-controller.log");
        let d = Daemon::spawn(cmd, &pidfile, &log, &self.marker())?;
        Ok(d.detach())
    }

    /// Brings the cluster in line with the file's `[kubernetes]` (after the VMs are wired).
    pub(super) async fn ensure_kubernetes(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let mut st = load(&self.dir);
        let Some(k) = &topo.kubernetes else {
            if st.api.is_some() || !st.pods.is_empty() {
                for pod in st.pods.keys().cloned().collect::<Vec<_>>() {
                    self.unplug_pod(&mut st, &pod, None).await;
                    self.changed(changes, &format!("pod {pod}"), "removed");
                }
                let marker = self.marker();
                Daemon::stop_pidfile(&self.kube_pidfile("k8s-controller"), &marker);
                Daemon::stop_pidfile(&self.kube_pidfile("kube-apiserver"), &marker);
                let _ = std::fs::remove_file(self.dir.join(STATE_FILE));
                self.changed(changes, "kubernetes", "stopped");
            }
            return Ok(());
        };
        let r = self.ensure_cluster(api, topo, k, &mut st, changes).await;
        save(&self.dir, &st)?;
        r
    }

    async fn ensure_cluster(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        k: &KubernetesSpec,
        st: &mut KubeState,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let kube = self.ensure_apiserver(k, st, changes).await?;
        let lab_label = self.name.clone();
        // Nodes (a VM node annotated with its trunk's parent port: nested mode).
        for n in k.all_nodes() {
            let ip = self.node_cni(n).map(|c| c.host_ip).unwrap_or_default();
            let mut body = json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n, "labels": {LAB_LABEL: lab_label, "kubernetes.io/hostname": n}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                           "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": n}]}});
            let existing = kube.get(&format!("/api/v1/nodes/{n}")).await?;
            if k.is_vm_node(n) {
                let port = self.state.vms.get(n).map(|v| v.port_id.clone());
                let port = port.ok_or_else(|| kube_err(format!("vm node {n} has no port")))?;
                body["metadata"]["annotations"] = json!({TRUNK_PORT_ANNOTATION: port});
                if let Some(old) = &existing
                    && old["metadata"]["annotations"][TRUNK_PORT_ANNOTATION] != json!(port)
                {
                    kube.send(
                        Method::PATCH,
                        &format!("/api/v1/nodes/{n}"),
                        "application/merge-patch+json",
                        json!({"metadata": {"annotations": {TRUNK_PORT_ANNOTATION: port}}}),
                    )
                    .await?;
                    self.changed(changes, &format!("node {n}"), "trunk port annotated");
                }
            }
            if existing.is_none() {
                kube.send(
                    Method::POST,
                    "/api/v1/nodes",
                    "application/json",
                    body.clone(),
                )
                .await?;
                kube.send(
                    Method::PUT,
                    &format!("/api/v1/nodes/{n}/status"),
                    "application/json",
                    body,
                )
                .await?;
                self.changed(changes, &format!("node {n}"), "created");
            }
        }
        for node in kube
            .list(&format!(
                "/api/v1/nodes?labelSelector={LAB_LABEL}%3D{lab_label}"
            ))
            .await?
        {
            let n = text(&node["metadata"], "name").to_owned();
            if !k.all_nodes().any(|x| x == &n) {
                kube.delete(&format!("/api/v1/nodes/{n}")).await?;
                self.changed(changes, &format!("node {n}"), "deleted");
            }
        }
        // Namespaces.
        let mut namespaces: Vec<&str> = k
            .pods
            .iter()
            .map(|p| p.namespace.as_str())
            .chain(k.services.iter().map(|s| s.namespace.as_str()))
            .chain(k.network_policies.iter().map(|p| p.namespace.as_str()))
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        for ns in namespaces {
            if kube
                .get(&format!("/api/v1/namespaces/{ns}"))
                .await?
                .is_none()
            {
                kube.send(
                    Method::POST,
                    "/api/v1/namespaces",
                    "application/json",
                    json!({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": ns, "labels": {LAB_LABEL: lab_label}}}),
                )
                .await?;
                self.changed(changes, &format!("namespace {ns}"), "created");
            }
        }
        self.ensure_controller(topo, k, st, changes)?;
        // Services and policies.
        for s in &k.services {
            let ports: Vec<Value> = s
                .ports
                .iter()
                .map(|p| {
                    let mut v = json!({"port": p.port, "protocol": p.protocol,
                    "targetPort": match &p.target_port {
                        Some(TargetPort::Number(n)) => json!(n),
                        Some(TargetPort::Name(n)) => json!(n),
                        None => json!(p.port),
                    }});
                    if let Some(n) = &p.name {
                        v["name"] = json!(n);
                    }
                    v
                })
                .collect();
            let body = json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": s.name, "namespace": s.namespace, "labels": {LAB_LABEL: lab_label}},
                "spec": {"selector": s.selector, "ports": ports}});
            let coll = format!("/api/v1/namespaces/{}/services", s.namespace);
            if kube.apply(&coll, &s.name, body).await? {
                self.changed(
                    changes,
                    &format!("service {}/{}", s.namespace, s.name),
                    "applied",
                );
            }
        }
        for p in &k.network_policies {
            let spec: Value = serde_json::from_str(&p.spec).unwrap_or(json!({}));
            let body = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": p.name, "namespace": p.namespace, "labels": {LAB_LABEL: lab_label}},
                "spec": spec});
            let coll = format!(
                "/apis/networking.k8s.io/v1/namespaces/{}/networkpolicies",
                p.namespace
            );
            if kube.apply(&coll, &p.name, body).await? {
                self.changed(
                    changes,
                    &format!("network policy {}/{}", p.namespace, p.name),
                    "applied",
                );
            }
        }
        // The lab's services and policies the file no longer has.
        let selector = format!("labelSelector={LAB_LABEL}%3D{lab_label}");
        self.delete_dropped(
            &kube,
            changes,
            "service",
            &format!("/api/v1/services?{selector}"),
            |ns, name| format!("/api/v1/namespaces/{ns}/services/{name}"),
            |ns, name| {
                k.services
                    .iter()
                    .any(|s| s.namespace == ns && s.name == name)
            },
        )
        .await?;
        self.delete_dropped(
            &kube,
            changes,
            "network policy",
            &format!("/apis/networking.k8s.io/v1/networkpolicies?{selector}"),
            |ns, name| format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}"),
            |ns, name| {
                k.network_policies
                    .iter()
                    .any(|p| p.namespace == ns && p.name == name)
            },
        )
        .await?;
        // Pods: first those that go (or move), then the file's.
        for name in st.pods.keys().cloned().collect::<Vec<_>>() {
            let keep = k.pods.iter().any(|p| {
                let s = &st.pods[&name];
                p.name == name && p.namespace == s.namespace && p.node == s.node
            });
            if !keep {
                self.unplug_pod(st, &name, Some(&kube)).await;
                self.changed(changes, &format!("pod {name}"), "removed");
            }
        }
        let server: SocketAddr = self
            .state
            .servers
            .first()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| kube_err("the lab's server has no address"))?;
        let mut relays: BTreeMap<String, Relay> = BTreeMap::new();
        for p in &k.pods {
            self.ensure_pod(api, &kube, p, st, &mut relays, server, changes)
                .await?;
        }
        Ok(())
    }

    /// Deletes the lab's objects of one kind (`what`, listed at `list`, the lab's label
    /// selecting them) that `keep(namespace, name)` says the file no longer has; `path(namespace,
    /// name)` is an object's path.
    async fn delete_dropped(
        &self,
        kube: &Kube,
        changes: &mut Vec<String>,
        what: &str,
        list: &str,
        path: impl Fn(&str, &str) -> String,
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<()> {
        for obj in kube.list(list).await? {
            let (ns, name) = (
                text(&obj["metadata"], "namespace"),
                text(&obj["metadata"], "name"),
            );
            if !keep(ns, name) {
                kube.delete(&path(ns, name)).await?;
                self.changed(changes, &format!("{what} {ns}/{name}"), "deleted");
            }
        }
        Ok(())
    }

    async fn ensure_apiserver(
        &mut self,
        k: &KubernetesSpec,
        st: &mut KubeState,
        changes: &mut Vec<String>,
    ) -> Result<Kube> {
        let pidfile = self.kube_pidfile("kube-apiserver");
        let marker = self.marker();
        let cidr = k.service_cidr.to_string();
        if let Some(url) = &st.api
            && st.service_cidr.as_deref() == Some(cidr.as_str())
            && Daemon::running(&pidfile, &marker).is_some()
        {
            self.say("kubernetes api", &format!("running ({url})"));
            return Kube::new(url);
        }
        Daemon::stop_pidfile(&pidfile, &marker);
        // The pods of a cluster that is gone go with it.
        for pod in st.pods.keys().cloned().collect::<Vec<_>>() {
            self.unplug_pod(st, &pod, None).await;
        }
        let kubeconfig = self.kubeconfig();
        let bin = sibling(
            &self.opts.wyvern,
            "wyvern-kube-apiserver",
            "WYVERN_KUBE_APISERVER",
        );
        // The server picks its own free port and prints its URL first thing: no port is chosen
        // here and then lost to another process before the server binds it.
        let mut cmd = Command::new(&bin);
        cmd.args(["--listen", "127.0.0.1:0", "--service-cidr", &cidr])
            .arg("--kubeconfig")
            .arg(&kubeconfig);
        let log = self.dir.join("kube-apiserver.log");
        // Earlier runs' lines would be read as this one's URL.
        let _ = std::fs::remove_file(&log);
        let d = Daemon::spawn(cmd, &pidfile, &log, &marker)?;
        let pid = d.detach();
        let failed = |why: &str| {
            kube_err(format!(
                "{} (pid {pid}) {why}; {}",
                bin.display(),
                log_tail(&log)
            ))
        };
        // A hang guard, not an expectation: a loaded machine may take seconds.
        let until = Instant::now() + Duration::from_secs(120);
        let (url, kube) = loop {
            let printed = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = printed.lines().find(|l| l.starts_with("http://")) {
                let kube = Kube::new(url)?;
                if kube.get("/version").await.is_ok() {
                    break (url.to_owned(), kube);
                }
            }
            if Daemon::running(&pidfile, &marker).is_none() {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map_or_else(|_| "gone".to_owned(), |s| s.trim().to_owned());
                return Err(failed(&format!("is not running (/proc: {state})")));
            }
            if Instant::now() > until {
                return Err(failed("did not answer within 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        st.api = Some(url.clone());
        st.service_cidr = Some(cidr);
        st.controller_args = None;
        self.changed(
            changes,
            "kubernetes api",
            &format!("started ({url}, pid {pid})"),
        );
        Ok(kube)
    }

    fn ensure_controller(
        &mut self,
        topo: &Topology,
        k: &KubernetesSpec,
        st: &mut KubeState,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let mut args: Vec<String> = vec![
            "k8s".into(),
            "--kubeconfig".into(),
            self.kubeconfig().display().to_string(),
            "--api-url".into(),
            self.server_url(),
            "--project-id".into(),
            k.project.clone(),
            "--cluster-name".into(),
            k.cluster(&topo.name),
            "--service-cidr".into(),
            k.service_cidr.to_string(),
            "--unlimited-quotas".into(),
        ];
        // The pods on a network of the file (by id: its subnet's too, so a replaced subnet
        // restarts the controller), else on the controller's own.
        match k.pod_subnet(topo) {
            Some((net, subnet, _)) => {
                let state = self.state.networks.get(&net.name);
                let subnet_id = state
                    .and_then(|n| n.subnets.iter().find(|s| s.name == subnet))
                    .map(|s| s.id.clone());
                let (Some(state), Some(subnet_id)) = (state, subnet_id) else {
                    return Err(kube_err(format!(
                        "network {} (subnet {subnet}) was not made",
                        net.name
                    )));
                };
                args.extend([
                    "--pod-network".into(),
                    state.id.clone(),
                    "--pod-subnet".into(),
                    subnet_id,
                ]);
            }
            None => args.extend(["--pod-cidr".into(), k.pod_cidr.to_string()]),
        }
        if st.controller_args.as_ref() == Some(&args) && self.k8s_controller_pid().is_some() {
            self.say("kubernetes controller", "running");
            return Ok(());
        }
        let pid = self.spawn_controller(&args)?;
        st.controller_args = Some(args);
        self.changed(
            changes,
            "kubernetes controller",
            &format!("started (pid {pid})"),
        );
        Ok(())
    }

    /// The controller's port for the pod with `uid`, waiting for it.
    async fn pod_port(&self, api: &Neutron, uid: &str) -> Result<Value> {
        let until = Instant::now() + PORT_WAIT;
        loop {
            let ports = api
                .list("ports", &format!("tags=k8s-pod-uid:{uid}"))
                .await?;
            if let Some(p) = ports.into_iter().next()
                && !text(&p, "mac_address").is_empty()
            {
                return Ok(p);
            }
            if Instant::now() > until {
                return Err(kube_err(format!(
                    "no port tagged k8s-pod-uid:{uid} after {PORT_WAIT:?}; {}",
                    log_tail(&self.dir.join("k8s-controller.log"))
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn ensure_pod(
        &mut self,
        api: &Neutron,
        kube: &Kube,
        p: &PodSpec,
        st: &mut KubeState,
        relays: &mut BTreeMap<String, Relay>,
        server: SocketAddr,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let what = format!("pod {}", p.name);
        let path = format!("/api/v1/namespaces/{}/pods/{}", p.namespace, p.name);
        let mut labels = json!(p.labels);
        labels[LAB_LABEL] = json!(self.name);
        let existing = kube.get(&path).await?;
        let healthy = st.pods.get(&p.name).is_some_and(|s| {
            Netns::exists(&s.netns)
                && existing
                    .as_ref()
                    .is_some_and(|o| text(&o["metadata"], "uid") == s.uid)
                && self.pod_plugged(s)
        });
        if healthy {
            if existing.as_ref().map(|o| &o["metadata"]["labels"]) != Some(&labels) {
                kube.send(
                    Method::PATCH,
                    &path,
                    "application/merge-patch+json",
                    json!({"metadata": {"labels": labels}}),
                )
                .await?;
                self.changed(changes, &what, "labels updated");
            }
            self.ensure_pod_server(p, st, changes)?;
            let s = &st.pods[&p.name];
            self.say(&what, &format!("running ({} on {})", s.ip, s.node));
            return Ok(());
        }
        if st.pods.contains_key(&p.name) {
            self.unplug_pod(st, &p.name, Some(kube)).await;
        } else if existing.is_some() {
            kube.delete(&path).await?;
        }
        // The Pod, scheduled to its node.
        let pod = kube
            .send(
                Method::POST,
                &format!("/api/v1/namespaces/{}/pods", p.namespace),
                "application/json",
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": p.name, "namespace": p.namespace, "labels": labels},
                    "spec": {"nodeName": p.node, "containers": [
                        {"name": "main", "image": "wyvern-lab", "ports": port_objects(p)}]}}),
            )
            .await?;
        let uid = text(&pod["metadata"], "uid").to_owned();
        let port = self.pod_port(api, &uid).await?;
        let netns = names::host_netns(&self.name, &p.name);
        if Netns::exists(&netns) {
            testbed::leftovers::destroy_netns(&netns);
        }
        let ns = Netns::create_named(&netns)?;
        ns.ip(&["link", "set", "lo", "up"])?;
        let ns_name = ns.detach();
        let node = self
            .node_cni(&p.node)
            .ok_or_else(|| kube_err(format!("node {} has no chassis or trunk vm", p.node)))?;
        if !relays.contains_key(&p.node) {
            relays.insert(p.node.clone(), Relay::start(&node.netns, server)?);
        }
        let relay_port = relays[&p.node].port;
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "wyvern", "type": "wyvern-cni",
            "api_url": format!("http://127.0.0.1:{relay_port}"),
            "port_wait": 30,
        });
        merge(&mut conf, &node.conf);
        let out = self.cni("ADD", &node.netns, &ns_name, p, &uid, &conf)?;
        let result: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        let ip = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .find(|a| !a.contains(':'))
            .and_then(|a| a.split('/').next())
            .map(str::to_owned)
            .ok_or_else(|| {
                kube_err(format!(
                    "wyvern-cni ADD for {} gave no IPv4: {result}",
                    p.name
                ))
            })?;
        let state = PodState {
            namespace: p.namespace.clone(),
            node: p.node.clone(),
            uid: uid.clone(),
            netns: ns_name.clone(),
            port_id: text(&port, "id").to_owned(),
            mac: text(&port, "mac_address").to_owned(),
            ip: ip.clone(),
            serve: Vec::new(),
        };
        st.pods.insert(p.name.clone(), state);
        // One ready container per pod (`kubectl get pods`: READY 1/1), named as in the spec.
        let container = pod["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or("main");
        let started = pod["metadata"]["creationTimestamp"].clone();
        kube.send(
            Method::PATCH,
            &format!("{path}/status"),
            "application/merge-patch+json",
            json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "hostIP": node.host_ip,
                "startTime": started,
                "conditions": [{"type": "Ready", "status": "True"},
                               {"type": "ContainersReady", "status": "True"},
                               {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": container, "ready": true, "started": true,
                    "restartCount": 0, "image": "wyvern-lab", "imageID": "",
                    "state": {"running": {"startedAt": started}}}]}}),
        )
        .await?;
        self.changed(
            changes,
            &what,
            &format!(
                "running ({ip} {} on {}, {ns_name}, port {})",
                text(&port, "mac_address"),
                p.node,
                text(&port, "id")
            ),
        );
        self.ensure_pod_server(p, st, changes)?;
        Ok(())
    }

    /// Runs `wyvern-cni` with `command` in the node's chassis namespace for pod `p`; its stdout.
    fn cni(
        &self,
        command: &str,
        chassis_ns: &str,
        pod_ns: &str,
        p: &PodSpec,
        uid: &str,
        conf: &Value,
    ) -> Result<Vec<u8>> {
        cni_run(
            &sibling(&self.opts.wyvern, "wyvern-cni", "WYVERN_CNI"),
            command,
            chassis_ns,
            pod_ns,
            &p.namespace,
            &p.name,
            uid,
            conf,
        )
    }

    fn ensure_pod_server(
        &self,
        p: &PodSpec,
        st: &mut KubeState,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let want: Vec<String> = p.serve.iter().map(ToString::to_string).collect();
        let pidfile = self.dir.join(format!("serve-{}.pid", p.name));
        let marker = self.marker();
        let Some(s) = st.pods.get_mut(&p.name) else {
            return Ok(());
        };
        let running = Daemon::running(&pidfile, &marker).is_some();
        if s.serve == want && (running || want.is_empty()) {
            return Ok(());
        }
        Daemon::stop_pidfile(&pidfile, &marker);
        s.serve = want.clone();
        if want.is_empty() {
            self.changed(changes, &format!("pod {}", p.name), "server stopped");
            return Ok(());
        }
        let script = self.dir.join("serve.py");
        if std::fs::read_to_string(&script).ok().as_deref() != Some(SCRIPT) {
            std::fs::write(&script, SCRIPT).map_err(io(format!("write {}", script.display())))?;
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &s.netns, "python3"])
            .arg(&script)
            .arg(&p.name)
            .args(&want);
        let log = self.dir.join(format!("serve-{}.log", p.name));
        let d = Daemon::spawn(cmd, &pidfile, &log, &marker)?;
        let pid = d.detach();
        // Wait until it listens (it prints nothing; probe the first TCP port, if any).
        let until = Instant::now() + Duration::from_secs(5);
        if let Some(tcp) = p.serve.iter().find(|s| s.to_string().starts_with("http")) {
            while Instant::now() < until {
                let ok = Command::new("ip")
                    .args(["netns", "exec", &s.netns, "ss", "-Hltn"])
                    .output()
                    .is_ok_and(|o| {
                        String::from_utf8_lossy(&o.stdout).contains(&format!(":{} ", tcp.port))
                    });
                if ok {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.changed(
            changes,
            &format!("pod {}", p.name),
            &format!("serving {} (pid {pid})", want.join(" ")),
        );
        Ok(())
    }

    /// Takes pod `name` off its node (CNI DEL), deletes its namespace, its tiny server and (with
    /// `kube`) its Pod object.
    async fn unplug_pod(&self, st: &mut KubeState, name: &str, kube: Option<&Kube>) {
        let Some(s) = st.pods.remove(name) else {
            return;
        };
        Daemon::stop_pidfile(&self.dir.join(format!("serve-{name}.pid")), &self.marker());
        if let Some(node) = self.node_cni(&s.node)
            && Netns::exists(&node.netns)
        {
            let mut conf = json!({
                "cniVersion": "1.0.0", "name": "wyvern", "type": "wyvern-cni",
                "api_url": "http://127.0.0.1:1",
            });
            merge(&mut conf, &node.conf);
            if let Err(e) = cni_run(
                &sibling(&self.opts.wyvern, "wyvern-cni", "WYVERN_CNI"),
                "DEL",
                &node.netns,
                &s.netns,
                &s.namespace,
                name,
                &s.uid,
                &conf,
            ) {
                self.warn(&format!("pod {name}: CNI DEL: {e}"));
            }
        }
        testbed::leftovers::destroy_netns(&s.netns);
        if let Some(kube) = kube
            && let Err(e) = kube
                .delete(&format!("/api/v1/namespaces/{}/pods/{name}", s.namespace))
                .await
        {
            self.warn(&format!("pod {name}: {e}"));
        }
    }
}

/// Runs `wyvern-cni` (`bin`) with `command` in `chassis_ns` for the pod in `pod_ns` (named
/// `namespace/name`, uid `uid`; `CNI_IFNAME` `eth0`, the container id the uid), `conf` on its
/// stdin; its stdout, an error if it failed (public for benchmarks that act as the kubelet).
#[allow(clippy::too_many_arguments)]
pub fn cni_run(
    bin: &Path,
    command: &str,
    chassis_ns: &str,
    pod_ns: &str,
    namespace: &str,
    name: &str,
    uid: &str,
    conf: &Value,
) -> Result<Vec<u8>> {
    // Started from a thread in the chassis' namespace, as a container runtime runs plugins in
    // the host's: no `ip netns exec` process, mount namespace and `/sys` remount per call.
    let out = testbed::within_netns(chassis_ns, || {
        let mut child = Command::new(bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", uid)
            .env("CNI_NETNS", format!("/var/run/netns/{pod_ns}"))
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID={uid}"),
            )
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(conf.to_string().as_bytes())?;
        }
        child.wait_with_output()
    })
    .map_err(io(format!("run {} in {chassis_ns}", bin.display())))?;
    if !out.status.success() {
        return Err(kube_err(format!(
            "wyvern-cni {command} for {namespace}/{name} failed: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}
