//! `soak`: the API server under a long mixed load while slow clients hold connections open.
//!
//! A `wyvern server` process (the binary given, on a fresh embedded store, default quotas and
//! limits) serves `--clients` clients spread over three projects, each repeating a life cycle
//! for `--seconds`: a network, a subnet, three ports, a router with its gateway on a shared
//! external network and an interface on the subnet, a floating IP on a port, then all of it
//! deleted again in reverse. Meanwhile `--slow-sockets` connections trickle a request head one
//! byte a second (reconnecting when the server closes them), and a probe shows one network
//! every 100 ms (the small GET whose latency is reported). At the end everything is deleted.
//!
//! Reported: cycles and requests by status (any 5xx is a failure of the run), the small GET's
//! p50/p99/max, the server's RSS at start, at its peak and at the end, the store file's size at
//! start and at the end after everything was deleted, both every minute, and what the slow
//! sockets saw (connections opened, closed by the server).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::percentile;

/// What the soak runs.
pub struct Params {
    pub wyvern: PathBuf,
    pub seconds: u64,
    pub clients: usize,
    pub slow_sockets: usize,
}

const PROJECTS: [&str; 3] = ["soak-a", "soak-b", "soak-c"];

/// A `wyvern server` process, killed (by PID) and reaped when dropped (and killed by the kernel
/// when the bench dies without dropping it): on a fresh embedded store
/// in a temporary directory (named after `name`, as its store file is), or on a store given by
/// its spec ([`ServerProcess::start_on`]).
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) base: String,
    /// The embedded store's file (`None`: a store the server was given).
    store: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    pub(crate) fn start(wyvern: &Path, name: &str) -> anyhow::Result<Self> {
        Self::start_on(wyvern, name, None)
    }

    /// Starts `wyvern server` on a free loopback port, on the store `spec` names (e.g.
    /// `etcd://HOST:PORT,...`, which several servers may share), or on a fresh embedded store.
    pub(crate) fn start_on(wyvern: &Path, name: &str, spec: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix(name).tempdir()?;
        let (store, spec) = match spec {
            Some(spec) => (None, spec.to_string()),
            None => {
                let file = dir.path().join(format!("{name}.redb"));
                let spec = format!("embedded:{}", file.display());
                (Some(file), spec)
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = Command::new(wyvern);
        command
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--store", &spec])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Killed with the bench however it ends (SIGKILL included), else when dropped.
        let child = testbed::spawn_tied(command)
            .with_context(|| format!("starting {}", wyvern.display()))?;
        Ok(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            store,
            _dir: dir,
        })
    }

    /// Waits until the server answers HTTP (at most 20 s).
    pub(crate) async fn wait_ready(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let ready = Instant::now() + Duration::from_secs(20);
        while http.get(&self.base).send().await.is_err() {
            if Instant::now() > ready {
                bail!("the server did not come up");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in bytes (from `/proc`).
    pub(crate) fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    pub(crate) fn store_bytes(&self) -> u64 {
        self.store
            .as_ref()
            .and_then(|f| std::fs::metadata(f).ok())
            .map_or(0, |m| m.len())
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests by status, shared by every client.
#[derive(Default)]
struct Tally {
    statuses: std::collections::BTreeMap<u16, u64>,
    /// Requests that got no answer (connection refused or reset).
    transport_errors: u64,
    /// The first few failures, for the report.
    failures: Vec<String>,
}

/// One client of one project.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    project: &'static str,
    tally: Arc<Mutex<Tally>>,
}

impl Client {
    /// Sends a request as the client's project (admin for `None`); the JSON answer, an error
    /// unless it succeeded.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/v2.0/{path}", self.base));
        if !self.project.is_empty() {
            req = req
                .header("X-Project-Id", self.project)
                .header("X-Roles", "member");
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let mut t = self.tally.lock().await;
                t.transport_errors += 1;
                bail!("{method} {path}: {e}");
            }
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let mut t = self.tally.lock().await;
        *t.statuses.entry(status).or_default() += 1;
        if status >= 400 {
            if t.failures.len() < 20 {
                t.failures.push(format!("{method} {path}: {status} {text}"));
            }
            bail!("{method} {path}: {status}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self, collection: &str, kind: &str, body: Value) -> anyhow::Result<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                collection,
                Some(json!({ kind: body })),
            )
            .await?;
        v[kind]["id"].as_str().map(str::to_owned).context("an id")
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, path, None)
            .await
            .map(drop)
    }
}

/// One life cycle of a client's objects; `n` makes its names and addresses unique.
/// Requests a complete cycle makes.
const CYCLE_REQUESTS: u64 = 17;

async fn cycle(c: &Client, external: &str, slot: usize, n: u64) -> anyhow::Result<()> {
    let net = c
        .create(
            "networks",
            "network",
            json!({"name": format!("soak-{slot}-{n}")}),
        )
        .await?;
    let cidr = format!("10.{}.{}.0/24", slot % 250, n % 250);
    let made = async {
        let subnet = c
            .create(
                "subnets",
                "subnet",
                json!({"network_id": net, "ip_version": 4, "cidr": cidr}),
            )
            .await?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push(
                c.create("ports", "port", json!({"network_id": net}))
                    .await?,
            );
        }
        let router = c
            .create(
                "routers",
                "router",
                json!({"external_gateway_info": {"network_id": external}}),
            )
            .await?;
        c.call(
            reqwest::Method::PUT,
            &format!("routers/{router}/add_router_interface"),
            Some(json!({"subnet_id": subnet})),
        )
        .await?;
        let fip = c
            .create(
                "floatingips",
                "floatingip",
                json!({"floating_network_id": external, "port_id": ports[0]}),
            )
            .await?;
        c.call(reqwest::Method::GET, "ports?fields=id", None)
            .await?;
        anyhow::Ok((subnet, ports, router, fip))
    }
    .await;
    // Whatever was made goes again, made completely or not.
    let cleanup = async {
        let (subnet, ports, router, fip) = made?;
        c.delete(&format!("floatingips/{fip}")).await?;
        c.call(
            reqwest::Method::PUT,
            &format!("routers/{router}/remove_router_interface"),
            Some(json!({"subnet_id": subnet})),
        )
        .await?;
        c.delete(&format!("routers/{router}")).await?;
        for p in &ports {
            c.delete(&format!("ports/{p}")).await?;
        }
        c.delete(&format!("subnets/{subnet}")).await
    }
    .await;
    // The network goes in any case (with what is left on it, as its owner may delete it once
    // its ports are gone; a leftover router interface keeps it, and is reported).
    let deleted = c.delete(&format!("networks/{net}")).await;
    cleanup?;
    deleted
}

/// A connection that sends a request head one byte a second until the server closes it; then
/// another. Counts connections opened and those the server closed.
async fn slow_socket(
    addr: String,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
) {
    let head = b"GET /v2.0/networks HTTP/1.1\r\nHost: soak\r\nX-Slow: ";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 512];
        let mut i = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let byte = [head.get(i).copied().unwrap_or(b'a')];
            i += 1;
            if s.write_all(&byte).await.is_err() {
                closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            // A closed connection reads as end of file (or the server's 408) within the second.
            let read = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
            if let Ok(Ok(0) | Err(_)) = read {
                closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// Runs the soak.
pub async fn run(p: Params) -> anyhow::Result<Value> {
    let mut server = ServerProcess::start(&p.wyvern, "soak")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    server.wait_ready(&http).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let admin = Client {
        http: http.clone(),
        base: server.base.clone(),
        project: "",
        tally: tally.clone(),
    };
    let mib = |b: u64| (b as f64 / (1 << 20) as f64 * 10.0).round() / 10.0;
    let rss_start = server.rss();
    let store_start = server.store_bytes();
    let external = admin
        .create(
            "networks",
            "network",
            json!({"name": "soak-public", "router:external": true,
                "provider:network_type": "flat", "provider:physical_network": "physnet1"}),
        )
        .await?;
    admin
        .create(
            "subnets",
            "subnet",
            json!({"network_id": external, "ip_version": 4, "cidr": "172.16.0.0/20"}),
        )
        .await?;
    let probe_net = admin
        .create("networks", "network", json!({"name": "soak-probe"}))
        .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (opened, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let addr = server.base.trim_start_matches("http://").to_owned();
    let slow: Vec<_> = (0..p.slow_sockets)
        .map(|_| {
            tokio::spawn(slow_socket(
                addr.clone(),
                stop.clone(),
                opened.clone(),
                closed.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(p.seconds);
    let workers: Vec<_> = (0..p.clients)
        .map(|slot| {
            let c = Client {
                http: http.clone(),
                base: server.base.clone(),
                project: PROJECTS[slot % PROJECTS.len()],
                tally: tally.clone(),
            };
            let external = external.clone();
            tokio::spawn(async move {
                let (mut cycles, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    if cycle(&c, &external, slot, cycles).await.is_err() {
                        failed += 1;
                    }
                    cycles += 1;
                }
                (cycles, failed)
            })
        })
        .collect();
    // The probe; the server's RSS every second, and with the store's size and the requests so
    // far every minute.
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut rss_peak = rss_start;
    let mut timeline = Vec::new();
    let (mut next_rss, mut next_minute) = (started, started + Duration::from_secs(60));
    while Instant::now() < deadline {
        let t = Instant::now();
        let ok = admin
            .call(reqwest::Method::GET, &format!("networks/{probe_net}"), None)
            .await
            .is_ok();
        if ok {
            latencies.push(t.elapsed());
        }
        if Instant::now() >= next_rss {
            rss_peak = rss_peak.max(server.rss());
            next_rss += Duration::from_secs(1);
        }
        if Instant::now() >= next_minute {
            let requests: u64 = tally.lock().await.statuses.values().sum();
            timeline.push(
                json!({"second": started.elapsed().as_secs(), "requests": requests,
                "rss_mib": mib(server.rss()), "store_mib": mib(server.store_bytes())}),
            );
            next_minute += Duration::from_secs(60);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut cycles, mut failed_cycles) = (0, 0);
    for w in workers {
        let (c, f) = w.await?;
        cycles += c;
        failed_cycles += f;
    }
    stop.store(true, Ordering::Relaxed);
    for s in slow {
        s.abort();
    }
    // Everything goes: what the cycles left behind, then the admin's networks.
    let leftovers = delete_everything(&admin).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = server.rss();
    let store_end = server.store_bytes();
    let alive = server.alive();
    latencies.sort();
    let t = tally.lock().await;
    let server_errors: u64 = t.statuses.range(500..).map(|(_, n)| n).sum();
    let requests: u64 = t.statuses.values().sum();
    Ok(json!({
        "benchmark": "soak",
        "seconds": p.seconds,
        "clients": p.clients,
        "projects": PROJECTS.len(),
        "cycles": cycles,
        "failed_cycles": failed_cycles,
        "requests_per_cycle": CYCLE_REQUESTS,
        "requests": requests,
        "statuses": t.statuses,
        "server_errors": server_errors,
        "transport_errors": t.transport_errors,
        "first_failures": t.failures,
        "small_get_ms": {"samples": latencies.len(), "p50": percentile(&latencies, 0.5),
            "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0)},
        "server_rss_mib": {"start": mib(rss_start), "peak": mib(rss_peak), "end": mib(rss_end)},
        "store_mib": {"start": mib(store_start), "end_after_deleting_everything": mib(store_end)},
        "leftovers_deleted_at_end": leftovers,
        "slow_sockets": {"sockets": p.slow_sockets, "connections_opened": opened.load(Ordering::Relaxed),
            "closed_by_server": closed.load(Ordering::Relaxed)},
        "server_alive": alive,
        "timeline": timeline,
    }))
}

/// Deletes every floating IP, router (interfaces first), port, subnet and network left; how
/// many objects that was.
async fn delete_everything(admin: &Client) -> anyhow::Result<usize> {
    let mut n = 0;
    let list =
        |v: &Value, key: &str| -> Vec<Value> { v[key].as_array().cloned().unwrap_or_default() };
    let fips = admin
        .call(reqwest::Method::GET, "floatingips", None)
        .await?;
    for f in list(&fips, "floatingips") {
        admin
            .delete(&format!("floatingips/{}", f["id"].as_str().unwrap_or("")))
            .await?;
        n += 1;
    }
    let ports = admin
        .call(
            reqwest::Method::GET,
            "ports?device_owner=network:router_interface",
            None,
        )
        .await?;
    for p in list(&ports, "ports") {
        let router = p["device_id"].as_str().unwrap_or("");
        admin
            .call(
                reqwest::Method::PUT,
                &format!("routers/{router}/remove_router_interface"),
                Some(json!({"port_id": p["id"]})),
            )
            .await?;
        n += 1;
    }
    for (collection, key) in [
        ("routers", "routers"),
        ("ports", "ports"),
        ("subnets", "subnets"),
        ("networks", "networks"),
    ] {
        let all = admin.call(reqwest::Method::GET, collection, None).await?;
        for o in list(&all, key) {
            let id = o["id"].as_str().unwrap_or("");
            // Ports a router or a floating IP owns go with it.
            if key == "ports"
                && o["device_owner"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("network:"))
            {
                continue;
            }
            admin.delete(&format!("{collection}/{id}")).await?;
            n += 1;
        }
    }
    Ok(n)
}
