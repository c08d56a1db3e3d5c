//! `wyvern-bench k8s`: issue 15's Kubernetes figures, on a lab, in one run.
//!
//! A lab (server, 3 chassis `c1`..`c3` with real userspace Open vSwitch and an agent each,
//! Geneve) whose chassis are Kubernetes nodes (`[kubernetes]`: the lab runs
//! `wyvern-kube-apiserver` with its EndpointSlice controller and `wyvern k8s`, pods on the
//! controller's own pod network), one anchor pod per node (`anchor-c1`.., made by the lab's own
//! kubelet) and the Service [`SERVICE`] (selector `app=bench`, port 80 → 8080).
//!
//! 1. *Pod start*: `pods` pods `kp0`.. spread round robin over the nodes, the first `endpoints`
//!    of them labelled `app=bench`. The bench is their kubelet, with the lab's own pieces (its
//!    relay into the node's chassis namespace, its `wyvern-cni` runner): per pod it creates the
//!    Pod (`spec.nodeName`), makes the pod's namespace (the sandbox, while the controller works),
//!    waits for the controller's port tagged `k8s-pod-uid:<uid>` (followed on one sync watch
//!    stream of the Neutron API, not polled), runs `wyvern-cni ADD` in the node's chassis
//!    namespace, then pings the anchor pod of the next node from the pod until a reply comes
//!    (`ping -i 0.01`: a request every 10 ms), and only then sets the pod's status (`Running`,
//!    `podIP`, `Ready`: what feeds the EndpointSlice). `parallel` pods per node at a time, as a
//!    kubelet starts pods in parallel (its pod workers). Reported: Pod create → CNI ADD returned
//!    (p50/p99/max, the measure: target p99 ≤ 300 ms), Pod create → first reply (the
//!    connectivity the CNI's return promised), the CNI ADD on its own, and the phases between.
//! 2. *Endpoint change*: with the `endpoints` pods in the Service's EndpointSlice and their
//!    members in every chassis' select group of the Service's listener, `changes` times one
//!    endpoint pod leaves the selector (its `app` label removed) or joins it again (the label
//!    back), alternately; per change the time from the label patch until every chassis' group
//!    (`ovs-ofctl dump-groups`, as `lb` measures) has (or no longer has) the pod's bucket
//!    (`nat(dst=<pod IP>:8080)`).
//! 3. *Processes*: CPU (user + sys from `/proc/<pid>/stat`, over phases 1 and 2), peak RSS
//!    (`VmHWM`) and final RSS of `wyvern k8s` and of `wyvern-kube-apiserver`; and over phase 1
//!    where the machine's CPU went, by program ([`crate::cpu`]), per pod.
//!
//! The lab (and the pods' namespaces, named like the lab's hosts) is removed at the end, also on
//! errors and signals (the lab's `Drop`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use lab::{Lab, LabOptions, Relay, Topology};
use serde_json::{Value, json};
use testbed::Netns;
use tokio::sync::{Semaphore, watch};

use crate::lb::{Node, dump_groups, group_id, nodes, secs, settle};
use crate::slice::stats_json;

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
/// The Service whose endpoints change.
const SERVICE: &str = "bench";
/// The Service's selector label (`app=bench`).
const APP: &str = "bench";
/// The pods' container port, the Service's target port.
const TARGET_PORT: u16 = 8080;
/// The pods' Kubernetes namespace.
const NAMESPACE: &str = "default";
/// The target for pod start, p99.
const TARGET_P99_MS: f64 = 300.0;
/// Longest wait for one pod's port, CNI ADD or first reply.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the Service's members on every chassis.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often each chassis' groups are dumped while waiting for an endpoint change.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// The pause before each endpoint change.
const CHANGE_GAP: Duration = Duration::from_millis(200);

pub struct Params {
    pub wyvern: PathBuf,
    pub pods: usize,
    pub nodes: usize,
    /// Pods started at once per node.
    pub parallel: usize,
    pub endpoints: usize,
    pub changes: usize,
}

fn progress(what: &str) {
    crate::progress("k8s", what);
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

/// Runs the benchmark; SIGINT and SIGTERM end it early (and tear the lab down).
pub async fn run(p: Params) -> anyhow::Result<Value> {
    if p.nodes != CHASSIS.len() {
        bail!(
            "--nodes must be {} (the lab's chassis c1..c3)",
            CHASSIS.len()
        );
    }
    if p.endpoints > p.pods || p.endpoints == 0 {
        bail!(
            "--endpoints {} must be between 1 and --pods {}",
            p.endpoints,
            p.pods
        );
    }
    crate::until_signal(bench(p)).await
}

fn pod_name(i: usize) -> String {
    format!("kp{i}")
}

fn anchor(node: &str) -> String {
    format!("anchor-{node}")
}

fn topology(name: &str) -> anyhow::Result<Topology> {
    let mut text = crate::geneve_lab(name, &CHASSIS);
    let nodes: Vec<String> = CHASSIS.iter().map(|c| format!("\"{c}\"")).collect();
    text.push_str(&format!(
        "[kubernetes]\nnodes = [{}]\n[[kubernetes.service]]\nname = \"{SERVICE}\"\n\
         selector = {{ app = \"{APP}\" }}\nports = [{{ port = 80, target_port = {TARGET_PORT} }}]\n",
        nodes.join(", ")
    ));
    for c in CHASSIS {
        text.push_str(&format!(
            "[[kubernetes.pod]]\nname = \"{}\"\nnode = \"{c}\"\nlabels = {{ role = \"anchor\" }}\n",
            anchor(c)
        ));
    }
    Ok(Topology::parse(&text, "k8s-bench.toml".as_ref())?)
}

async fn bench(p: Params) -> anyhow::Result<Value> {
    let wyvern = std::fs::canonicalize(&p.wyvern)
        .with_context(|| format!("the wyvern binary {}", p.wyvern.display()))?;
    let name = format!("k8s-{}", std::process::id());
    let topo = topology(&name)?;
    let opts = LabOptions {
        wyvern: wyvern.clone(),
        progress: false,
    };
    progress(&format!(
        "lab {name}: {} node chassis, an anchor pod on each, service {SERVICE}",
        CHASSIS.len()
    ));
    let t = Instant::now();
    let lab = tokio::task::block_in_place(|| Lab::up(&topo, &opts))?;
    let lab_up = t.elapsed();
    let report = measure(&p, &lab, &wyvern).await;
    progress("tearing the lab down");
    tokio::task::block_in_place(|| lab.down())?;
    let mut report = report?;
    report["setup"]["wyvern"] = wyvern.display().to_string().into();
    report["setup"]["lab_up_seconds"] = secs(lab_up).into();
    Ok(report)
}

/// CPU seconds (user + sys), `VmHWM` and `VmRSS` (KiB) of a process.
fn proc_stats(pid: u32) -> Option<(f64, u64, u64)> {
    let (rss, cpu) = crate::slice::proc_usage(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((cpu, hwm, rss))
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// A process' usage over the run window (from `start`'s CPU reading).
fn usage_json(what: &str, pid: Option<u32>, start: Option<f64>, window: Duration) -> Value {
    match (pid, pid.and_then(proc_stats)) {
        (Some(pid), Some((cpu, hwm, rss))) => {
            let used = cpu - start.unwrap_or(0.0);
            json!({
                "process": what, "pid": pid,
                "cpu_seconds": (used * 100.0).round() / 100.0,
                "cpu_share_of_one_core": (used / window.as_secs_f64() * 1000.0).round() / 1000.0,
                "cpu_seconds_since_start": (cpu * 100.0).round() / 100.0,
                "peak_rss_mib": mib(hwm), "final_rss_mib": mib(rss),
            })
        }
        _ => json!({"process": what, "pid": pid, "error": "not running at the end"}),
    }
}

/// What the sync watch stream showed of a pod's port.
#[derive(Debug, Default, Clone)]
struct PortSeen {
    /// The first event of a port whose `device_id` is the pod's uid (the create).
    created: Option<Instant>,
    /// The first event with the tag `k8s-pod-uid:<uid>` (what `wyvern-cni` looks the port up by).
    tagged: Option<Instant>,
    /// The first event with `status` `ACTIVE`: the node's agent saw the VIF and reported its
    /// binding (it does so when the VIF appears, while it computes the port's flows).
    active: Option<Instant>,
}

/// The ports seen on the sync watch stream, by pod uid; `changed` ticks on every new sighting.
#[derive(Clone)]
struct Ports {
    seen: Arc<Mutex<HashMap<String, PortSeen>>>,
    changed: watch::Receiver<u64>,
}

impl Ports {
    /// Follows `GET /wyvern/v1/sync/watch?all=1` from now on.
    async fn follow(http: &reqwest::Client, base: &str) -> anyhow::Result<Ports> {
        let snapshot: Value = http
            .get(format!("{base}/wyvern/v1/sync/snapshot"))
            .send()
            .await?
            .json()
            .await?;
        let after = snapshot["revision"].as_u64().context("snapshot revision")?;
        let url = format!("{base}/wyvern/v1/sync/watch?after={after}&all=1");
        let mut resp = http.get(&url).send().await?;
        if !resp.status().is_success() {
            bail!("GET {url}: {}", resp.status());
        }
        let seen: Arc<Mutex<HashMap<String, PortSeen>>> = Arc::default();
        let (tx, changed) = watch::channel(0u64);
        let map = seen.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let now = Instant::now();
                buf.extend_from_slice(&chunk);
                let mut news = false;
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    for e in msg["events"].as_array().into_iter().flatten() {
                        let key = e["key"].as_str().unwrap_or_default();
                        if !key.starts_with(nb_keys::PORTS) {
                            continue;
                        }
                        let v = &e["value"];
                        let Some(uid) = v["device_id"].as_str().filter(|u| !u.is_empty()) else {
                            continue;
                        };
                        let tag = format!("k8s-pod-uid:{uid}");
                        let tagged = v["tags"]
                            .as_array()
                            .is_some_and(|t| t.iter().any(|t| t.as_str() == Some(&tag)));
                        let mut m = map.lock().expect("ports");
                        let s = m.entry(uid.to_owned()).or_default();
                        if s.created.is_none() {
                            s.created = Some(now);
                            news = true;
                        }
                        if v["status"].as_str() == Some("ACTIVE") && s.active.is_none() {
                            s.active = Some(now);
                        }
                        if tagged && s.tagged.is_none() {
                            s.tagged = Some(now);
                            news = true;
                        }
                    }
                }
                if news {
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
        Ok(Ports { seen, changed })
    }

    /// What was seen of the port of pod `uid` so far.
    fn get(&self, uid: &str) -> PortSeen {
        self.seen
            .lock()
            .expect("ports")
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the port of pod `uid` is tagged.
    async fn tagged(&self, uid: &str) -> anyhow::Result<PortSeen> {
        let mut changed = self.changed.clone();
        let until = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(s) = self.seen.lock().expect("ports").get(uid)
                && s.tagged.is_some()
            {
                return Ok(s.clone());
            }
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the sync watch stream ended"),
                Err(_) => bail!("no port tagged k8s-pod-uid:{uid} after {STEP_TIMEOUT:?}"),
            }
        }
    }
}

/// The cluster's API (JSON, no auth), as the lab's kubelet talks to it.
#[derive(Clone)]
struct Kube {
    http: reqwest::Client,
    base: String,
}

impl Kube {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        ct: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .request(method.clone(), &url)
            .header("content-type", ct)
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {url}: {status}: {v}");
        }
        Ok(v)
    }

    async fn patch(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(
            reqwest::Method::PATCH,
            path,
            "application/merge-patch+json",
            body,
        )
        .await
    }
}

/// What the kubelet needs of the lab.
struct Kubelet {
    lab_name: String,
    kube: Kube,
    ports: Ports,
    cni: PathBuf,
    /// Per node: its chassis' namespace and OVS run directory, its relay's port, the address
    /// the new pods there ping, its tunnel address.
    nodes: HashMap<String, NodeCtx>,
}

struct NodeCtx {
    netns: String,
    rundir: PathBuf,
    relay: u16,
    ping: String,
    host_ip: String,
}

/// One pod's start, timed.
#[derive(Debug)]
struct Started {
    name: String,
    node: String,
    ip: String,
    /// Pod create call's start, its answer, the port's create and tag on the sync stream, the
    /// sandbox ready, the CNI ADD's start and return, the first reply.
    t0: Instant,
    posted: Instant,
    created: Instant,
    tagged: Instant,
    sandbox: Instant,
    cni_start: Instant,
    cni_end: Instant,
    replied: Instant,
    /// The port `ACTIVE` on the sync stream (its agent saw the VIF), if it was by the first reply.
    active: Option<Instant>,
    /// Echo requests sent until the first reply.
    pings_sent: u32,
}

impl Started {
    /// The measure: from the Pod's create call until `wyvern-cni ADD` returned (which
    /// it does once the node's agent installed the port's flows; the ping after it shows the
    /// connectivity is there).
    fn ready(&self) -> Duration {
        self.cni_end - self.t0
    }

    /// Until the first echo reply.
    fn total(&self) -> Duration {
        self.replied - self.t0
    }

    fn json(&self) -> Value {
        json!({
            "pod": self.name, "node": self.node, "ip": self.ip,
            "create_to_cni_return_ms": ms(self.ready()),
            "total_ms": ms(self.total()),
            "pod_create_call_ms": ms(self.posted - self.t0),
            "watch_to_port_created_ms": ms(self.created.saturating_duration_since(self.posted)),
            "port_created_to_tagged_ms": ms(self.tagged.saturating_duration_since(self.created)),
            "port_to_cni_start_ms": ms(self.cni_start.saturating_duration_since(self.tagged)),
            "sandbox_ready_after_create_ms": ms(self.sandbox.saturating_duration_since(self.posted)),
            "cni_add_ms": ms(self.cni_end - self.cni_start),
            "cni_to_first_ping_ms": ms(self.replied - self.cni_end),
            "vif_reported_after_cni_start_ms": self.active.map(|a| ms(a.saturating_duration_since(self.cni_start))),
            "pings_sent": self.pings_sent,
        })
    }
}

impl Kubelet {
    /// Starts pod `name` on `node` (see the module's documentation).
    async fn start(&self, name: String, node: String, labels: Value) -> anyhow::Result<Started> {
        let n = &self.nodes[&node];
        let t0 = Instant::now();
        let pod = self
            .kube
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
                "application/json",
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
                    "spec": {"nodeName": node, "containers": [{"name": "main", "image": "wyvern-lab",
                        "ports": [{"name": "http", "containerPort": TARGET_PORT, "protocol": "TCP"}]}]}}),
            )
            .await?;
        let posted = Instant::now();
        let uid = pod["metadata"]["uid"]
            .as_str()
            .context("the Pod's uid")?
            .to_owned();
        // The sandbox (the pod's namespace) while the controller makes the port.
        let netns = lab::names::host_netns(&self.lab_name, &name);
        let sandbox = {
            let netns = netns.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<Instant> {
                let ns = Netns::create_named(&netns)?;
                ns.ip(&["link", "set", "lo", "up"])?;
                ns.detach();
                Ok(Instant::now())
            })
        };
        let seen = self.ports.tagged(&uid).await?;
        let sandbox = sandbox.await??;
        let conf = json!({
            "cniVersion": "1.0.0", "name": "wyvern", "type": "wyvern-cni",
            "api_url": format!("http://127.0.0.1:{}", n.relay),
            "ovsdb": format!("unix:{}", n.rundir.join("db.sock").display()),
            "bridge": "br-int", "port_wait": 30,
        });
        let cni_start = Instant::now();
        let out = {
            let (cni, chassis, pod_ns, pod, uid) = (
                self.cni.clone(),
                n.netns.clone(),
                netns.clone(),
                name.clone(),
                uid.clone(),
            );
            tokio::task::spawn_blocking(move || {
                lab::cni_run(&cni, "ADD", &chassis, &pod_ns, NAMESPACE, &pod, &uid, &conf)
            })
            .await??
        };
        let cni_end = Instant::now();
        let result: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        let ip = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .find(|a| !a.contains(':'))
            .and_then(|a| a.split('/').next())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("wyvern-cni ADD for {name} gave no IPv4: {result}"))?;
        // Until the first reply: a request every 10 ms, at most STEP_TIMEOUT.
        let ping = {
            let (netns, to) = (netns.clone(), n.ping.clone());
            tokio::task::spawn_blocking(move || {
                testbed::within_netns(&netns, || {
                    std::process::Command::new("ping")
                        .args(["-n", "-q", "-c", "1", "-i", "0.01"])
                        .args(["-w", &STEP_TIMEOUT.as_secs().to_string(), &to])
                        .output()
                })
            })
            .await?
            .context("running ping")?
        };
        let replied = Instant::now();
        let text = String::from_utf8_lossy(&ping.stdout);
        if !ping.status.success() {
            bail!(
                "pod {name} ({ip} on {node}): no reply from {} within {STEP_TIMEOUT:?}: {}",
                n.ping,
                text.trim()
            );
        }
        let pings_sent = text
            .split_once(" packets transmitted")
            .and_then(|(a, _)| a.rsplit(char::is_whitespace).next()?.parse().ok())
            .unwrap_or(0);
        // The kubelet's status: what the EndpointSlice controller reads.
        let created = pod["metadata"]["creationTimestamp"].clone();
        self.kube
            .patch(
                &format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}/status"),
                json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "hostIP": n.host_ip, "startTime": created,
                    "conditions": [{"type": "Ready", "status": "True"},
                                   {"type": "ContainersReady", "status": "True"},
                                   {"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [{"name": "main", "ready": true, "started": true,
                        "restartCount": 0, "image": "wyvern-lab", "imageID": "",
                        "state": {"running": {"startedAt": created}}}]}}),
            )
            .await?;
        let active = self.ports.get(&uid).active;
        Ok(Started {
            name,
            node,
            ip,
            t0,
            posted,
            created: seen.created.unwrap_or(posted),
            tagged: seen.tagged.unwrap_or(posted),
            sandbox,
            cni_start,
            cni_end,
            replied,
            active,
            pings_sent,
        })
    }
}

async fn measure(p: &Params, lab: &Lab, wyvern: &std::path::Path) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let chassis = nodes(lab)?;
    settle(&http, &chassis).await?;
    let base = lab.server_url();
    let kube = Kube {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: lab
            .kube_api_url()
            .ok_or_else(|| anyhow!("the lab runs no Kubernetes API"))?,
    };
    let server: SocketAddr = lab
        .state()
        .servers
        .first()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("the lab's server has no address"))?;
    let anchors = lab.pods();
    let mut relays: Vec<Relay> = Vec::new();
    let mut ctx = HashMap::new();
    for (i, c) in CHASSIS.iter().enumerate() {
        let st = lab
            .state()
            .chassis
            .get(*c)
            .ok_or_else(|| anyhow!("no chassis {c}"))?;
        let relay = Relay::start(&st.netns, server)?;
        let next = CHASSIS[(i + 1) % CHASSIS.len()];
        let ping = anchors
            .get(&anchor(next))
            .map(|a| a.ip.clone())
            .ok_or_else(|| anyhow!("no anchor pod on {next}"))?;
        ctx.insert(
            (*c).to_owned(),
            NodeCtx {
                netns: st.netns.clone(),
                rundir: st.rundir.clone(),
                relay: relay.port,
                ping,
                host_ip: st.tunnel_ip.to_string(),
            },
        );
        relays.push(relay);
    }
    let kubelet = Arc::new(Kubelet {
        lab_name: lab.name().to_owned(),
        kube: kube.clone(),
        ports: Ports::follow(&http, &base).await?,
        cni: lab::sibling(wyvern, "wyvern-cni", "WYVERN_CNI"),
        nodes: ctx,
    });
    let controller = lab.k8s_controller_pid();
    let apiserver = lab.kube_apiserver_pid();
    let cpu0 = |pid: Option<u32>| pid.and_then(proc_stats).map(|s| s.0);
    let (controller_cpu0, apiserver_cpu0) = (cpu0(controller), cpu0(apiserver));
    let window = Instant::now();

    let cpu_before = crate::cpu::snapshot();
    let pods = pod_start(p, &kubelet).await?;
    let pod_cpu = crate::cpu::since(&cpu_before, pods.len());
    let endpoints = endpoint_changes(p, &kube, &http, &base, &chassis, &pods).await?;

    let window = window.elapsed();
    drop(relays);
    let mut totals: Vec<Duration> = pods.iter().map(Started::total).collect();
    totals.sort();
    let mut ready: Vec<Duration> = pods.iter().map(Started::ready).collect();
    ready.sort();
    let p99 = crate::percentile(&ready, 0.99);
    let col =
        |f: &dyn Fn(&Started) -> Duration| -> Value { stats_json(pods.iter().map(f).collect()) };
    let mut slowest: Vec<&Started> = pods.iter().collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.ready()));
    let sent: Vec<u32> = pods.iter().map(|s| s.pings_sent).collect();
    Ok(json!({
        "benchmark": "k8s",
        "about": {
            "pod_start": "per pod: create_to_cni_return (the issue's measure, the target's): from the start of the Pod's create call in the Kubernetes API until wyvern-cni ADD returned (it returns once the node's agent marked the port's flows installed); create_to_first_reply: until the first ICMP echo reply from the pod to a fixed pod already up on the next node (anchor-cN, over the Geneve tunnel: the new port's flows on its own chassis and its address known to the other chassis); the kubelet (this bench, with the lab's relay and wyvern-cni runner) makes the pod's namespace while the controller makes the port, waits for the port tagged k8s-pod-uid:<uid> on a sync watch stream of the Neutron API (no polling), runs wyvern-cni ADD in the node's chassis namespace (the API reached through the lab's relay), then runs `ping -c 1 -i 0.01` in the pod (started from a thread in the pod's namespace; a request every 10 ms until one is answered; its process start included), then sets the pod's status",
            "concurrency": format!("{} pods in flight per node ({} in all), as a kubelet's parallel pod workers; every pod queued at once, each node taking the next as one finishes", p.parallel, p.parallel * CHASSIS.len()),
            "endpoint_change": "a Service pod's label app=bench removed (it leaves the EndpointSlice) or put back (it joins), alternately; from the label patch's start until every chassis' select group of the Service's listener has (or no longer has) the pod's bucket nat(dst=<pod IP>:8080) in ovs-ofctl dump-groups, each chassis polled every 10 ms (upper bound by one poll)",
            "processes": "cpu_seconds: user + sys from /proc/<pid>/stat over the measured window (phases 1 and 2, after the lab was up); peak_rss_mib: VmHWM (since the process started); final_rss_mib: VmRSS at the end",
        },
        "setup": {
            "nodes": CHASSIS.len(), "encap": "geneve", "datapath": "userspace (netdev)",
            "pod_network": "the controller's own (--pod-cidr 10.244.0.0/16)",
            "anchors": kubelet.nodes.iter().map(|(n, c)| (n.clone(), json!(c.ping))).collect::<serde_json::Map<_, _>>(),
            "window_seconds": secs(window),
        },
        "pods": {
            "count": pods.len(),
            "per_node_parallel": p.parallel,
            "create_to_cni_return_ms": stats_json(ready),
            "create_to_first_reply_ms": stats_json(totals.clone()),
            "target_p99_ms": TARGET_P99_MS,
            "meets_target": p99 <= TARGET_P99_MS,
            "cni_add_ms": col(&|s| s.cni_end - s.cni_start),
            "phases": {
                "pod_create_call_ms": col(&|s| s.posted - s.t0),
                "watch_to_port_created_ms": col(&|s| s.created.saturating_duration_since(s.posted)),
                "port_created_to_tagged_ms": col(&|s| s.tagged.saturating_duration_since(s.created)),
                "port_to_cni_start_ms": col(&|s| s.cni_start.saturating_duration_since(s.tagged)),
                "cni_add_ms": col(&|s| s.cni_end - s.cni_start),
                "cni_to_first_ping_ms": col(&|s| s.replied - s.cni_end),
                "sandbox_ready_after_create_ms": col(&|s| s.sandbox.saturating_duration_since(s.posted)),
                "vif_reported_after_cni_start_ms": stats_json(pods.iter().filter_map(|s| Some(s.active?.saturating_duration_since(s.cni_start))).collect()),
                "note": "watch_to_port_created: from the Pod create's answer to the controller's port create on the sync stream (the controller's watch, reconcile pass and POST); port_created_to_tagged: its tag PUT (what wyvern-cni looks ports up by); port_to_cni_start: the bench noticing (the sandbox is made meanwhile); cni_to_first_ping: ping's process start and the requests until one is answered (an ARP request unanswered because the new port's flows are not yet installed — the pod's for the anchor, or the anchor's for the pod — is repeated only after the kernel's retrans_time, 1 s); vif_reported_after_cni_start: the port ACTIVE on the sync stream, i.e. the node's agent saw the VIF the CNI plugged and reported its binding (it computes and installs the port's flows from then on)",
            },
            "pings_sent_before_reply": {"one": sent.iter().filter(|n| **n <= 1).count(), "more": sent.iter().filter(|n| **n > 1).count(), "max": sent.iter().max()},
            "cpu": pod_cpu,
            "first_reply_over_900ms_after_cni": pods.iter().filter(|s| s.replied - s.cni_end > Duration::from_millis(900)).count(),
            "slowest": slowest.iter().take(5).map(|s| s.json()).collect::<Vec<_>>(),
        },
        "endpoints": endpoints,
        "processes": {
            "controller": usage_json("wyvern k8s", controller, controller_cpu0, window),
            "kube_apiserver": usage_json("wyvern-kube-apiserver", apiserver, apiserver_cpu0, window),
        },
    }))
}

/// Phase 1: every pod started, `parallel` per node at a time.
async fn pod_start(p: &Params, kubelet: &Arc<Kubelet>) -> anyhow::Result<Vec<Started>> {
    progress(&format!(
        "starting {} pods, {} at a time per node",
        p.pods, p.parallel
    ));
    let sems: HashMap<&str, Arc<Semaphore>> = CHASSIS
        .iter()
        .map(|c| (*c, Arc::new(Semaphore::new(p.parallel))))
        .collect();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(p.pods);
    for i in 0..p.pods {
        let node = CHASSIS[i % CHASSIS.len()];
        let sem = sems[node].clone();
        let kubelet = kubelet.clone();
        let mut labels = json!({"wyvern.io/bench": "k8s"});
        if i < p.endpoints {
            labels["app"] = json!(APP);
        }
        tasks.push(tokio::spawn(async move {
            let _slot = sem.acquire_owned().await?;
            kubelet.start(pod_name(i), node.to_owned(), labels).await
        }));
    }
    let mut out = Vec::with_capacity(p.pods);
    for (i, t) in tasks.into_iter().enumerate() {
        let s = t.await?.with_context(|| format!("pod {}", pod_name(i)))?;
        if (i + 1) % 50 == 0 {
            progress(&format!("{} pods up", i + 1));
        }
        out.push(s);
    }
    progress(&format!(
        "{} pods up in {:.1} s",
        out.len(),
        t0.elapsed().as_secs_f64()
    ));
    Ok(out)
}

/// The buckets of group `gid` in a `dump-groups` text.
fn group_line(text: &str, gid: u32) -> Option<&str> {
    let want = format!("group_id={gid},");
    text.lines().find(|l| l.contains(&want))
}

/// Whether member `ip`:[`TARGET_PORT`] has a bucket in group `gid`.
fn has_member(line: &str, ip: &str) -> bool {
    line.contains(&format!("dst={ip}:{TARGET_PORT})"))
}

/// Polls every chassis (each on its own) until `done(group line)` holds there; when the slowest
/// got there, and when each did.
async fn until_all(
    chassis: &[Node],
    gid: u32,
    timeout: Duration,
    done: impl Fn(&str) -> bool + Clone,
) -> anyhow::Result<Vec<Instant>> {
    let t0 = Instant::now();
    let polls = chassis.iter().map(|n| {
        let done = done.clone();
        async move {
            loop {
                let text = dump_groups(&n.rundir).await?;
                if done(group_line(&text, gid).unwrap_or_default()) {
                    return anyhow::Ok(Instant::now());
                }
                if t0.elapsed() > timeout {
                    bail!(
                        "chassis {}: group {gid} not as wanted after {timeout:?}: {:?}",
                        n.name,
                        group_line(&text, gid)
                    );
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    });
    futures::future::try_join_all(polls).await
}

/// Phase 2: endpoint changes until balanced to on every chassis.
async fn endpoint_changes(
    p: &Params,
    kube: &Kube,
    http: &reqwest::Client,
    base: &str,
    chassis: &[Node],
    pods: &[Started],
) -> anyhow::Result<Value> {
    let listeners: Value = http
        .get(format!("{base}/v2.0/lbaas/listeners"))
        .send()
        .await?
        .json()
        .await?;
    let listener = listeners["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["protocol_port"].as_u64() == Some(80))
        .ok_or_else(|| anyhow!("no listener for service {SERVICE}: {listeners}"))?;
    let lid = listener["id"].as_str().unwrap_or_default().to_owned();
    let gid = group_id(&lid).ok_or_else(|| anyhow!("listener id {lid}"))?;
    let members: Vec<&Started> = pods.iter().take(p.endpoints).collect();
    progress(&format!(
        "waiting for {} members in group {gid} (listener {lid}) on every chassis",
        members.len()
    ));
    let t0 = Instant::now();
    let ips: Vec<String> = members.iter().map(|s| s.ip.clone()).collect();
    until_all(chassis, gid, CONVERGE_TIMEOUT, move |line| {
        ips.iter().all(|ip| has_member(line, ip))
    })
    .await?;
    let all_members = t0.elapsed();
    progress(&format!(
        "all members everywhere {:.1} s after the last pod; {} changes",
        all_members.as_secs_f64(),
        p.changes
    ));
    let (mut added, mut removed, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let mut samples = Vec::new();
    for c in 0..p.changes {
        tokio::time::sleep(CHANGE_GAP).await;
        let pod = members[(c / 2) % members.len()];
        let join = c % 2 == 1;
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{}", pod.name);
        let label = if join { json!(APP) } else { Value::Null };
        let t = Instant::now();
        kube.patch(&path, json!({"metadata": {"labels": {"app": label}}}))
            .await?;
        let answered = Instant::now();
        let ip = pod.ip.clone();
        let at = until_all(chassis, gid, STEP_TIMEOUT, move |line| {
            has_member(line, &ip) == join
        })
        .await?;
        let per: Vec<f64> = at
            .iter()
            .map(|a| ms(a.saturating_duration_since(t)))
            .collect();
        let slowest = at.iter().max().copied().unwrap_or(t) - t;
        if join {
            added.push(slowest);
        } else {
            removed.push(slowest);
        }
        both.push(slowest);
        samples.push(json!({
            "pod": pod.name, "change": if join { "added" } else { "removed" },
            "patch_call_ms": ms(answered - t), "all_chassis_ms": ms(slowest),
            "per_chassis_ms": per,
        }));
    }
    Ok(json!({
        "service": format!("{NAMESPACE}/{SERVICE}"),
        "endpoints": members.len(),
        "listener_group_id": gid,
        "all_members_on_every_chassis_after_pods_s": secs(all_members),
        "changes": p.changes,
        "change_to_every_chassis_ms": stats_json(both),
        "added_ms": stats_json(added),
        "removed_ms": stats_json(removed),
        "per_change": samples,
    }))
}
