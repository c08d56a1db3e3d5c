//! `api-growth`: issue 17's "the API stays fast as the store grows" — port creates per second
//! with 100 000 ports already stored against those on an empty store.
//!
//! A `wyvern server` process (the binary given, on a fresh embedded store in a temporary
//! directory) gets `--networks` networks, each with one IPv4 /16 subnet (`10.<i>.0.0/16`, 65 533
//! addresses), as an operator's cloud spreads its ports over many networks; the admin project's
//! network, subnet and port quotas are lifted (`PUT /v2.0/quotas/admin`, -1). Then:
//!
//! 1. *Empty store*: `--samples` single creates, `--concurrency` in flight, each a plain
//!    `POST /v2.0/ports` with only `network_id` (so MAC and IP allocation, the default security
//!    group, quota counting and the index keys are all exercised), round robin over the networks;
//!    then `--reads` lists of one network's ports (`GET /v2.0/ports?network_id=X&limit=100`) and
//!    as many shows of one port (`GET /v2.0/ports/<id>`), one at a time.
//! 2. *Fill*: bulk creates of `--bulk` ports (one network per request, round robin, two requests
//!    in flight) until the store holds `--ports` ports, timed.
//! 3. *Full store*: the same creates in the same networks, and the same reads.
//!
//! Reported: creates/s on both, their ratio (the target is 0.8 or more) and latency percentiles,
//! the server's CPU time per create (less disturbed by other work on the machine than the rate),
//! the list and show latencies, the fill's duration and rate, the server's RSS and the store
//! file's size after each phase, and the load average around each measurement.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::slice::{proc_usage, stats_json};
use crate::soak::ServerProcess;

/// What the benchmark runs.
pub struct Params {
    pub wyvern: PathBuf,
    /// Ports in the store after the fill (the empty phase's ports included).
    pub ports: usize,
    pub networks: usize,
    /// Single creates per measurement.
    pub samples: usize,
    /// Single creates in flight at once.
    pub concurrency: usize,
    /// Ports per bulk create of the fill.
    pub bulk: usize,
    /// Lists and shows per measurement.
    pub reads: usize,
}

/// Bulk creates of the fill in flight at once (one per core of the project's machine).
const FILL_IN_FLIGHT: usize = 2;
/// The page size of the measured lists.
const LIST_LIMIT: usize = 100;
/// Addresses of one subnet (a /16 less network, broadcast and gateway addresses).
const SUBNET_ADDRESSES: usize = 65_533;

fn progress(what: &str) {
    crate::progress("api-growth", what);
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / f64::from(1 << 20) * 10.0).round() / 10.0
}

/// The 1-minute load average (from `/proc`).
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The server and the client that talks to it.
struct Target {
    server: ServerProcess,
    http: reqwest::Client,
    networks: Vec<String>,
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("{}/v2.0/{path}", self.server.base)
    }

    /// The server's CPU time so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        proc_usage(self.server.pid()).map_or(0.0, |(_, cpu)| cpu)
    }

    /// `GET`s `path`; the time until the whole answer was read.
    async fn timed_get(&self, path: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let resp = self.http.get(self.url(path)).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(started.elapsed())
    }

    /// `count` single port creates, `concurrency` in flight, round robin over the networks from
    /// `first` on: the figures and the ids of the ports made.
    async fn creates(
        &self,
        first: usize,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<(Value, Vec<String>)> {
        let url = self.url("ports");
        let cpu_before = self.cpu_seconds();
        let load_before = load_average();
        let started = Instant::now();
        let made: Vec<anyhow::Result<(Duration, String)>> =
            futures::stream::iter(first..first + count)
                .map(|i| {
                    let body =
                        json!({"port": {"network_id": self.networks[i % self.networks.len()]}});
                    let (http, url) = (&self.http, &url);
                    async move {
                        let t = Instant::now();
                        let port = crate::post(http, url, body).await?;
                        let id = port["port"]["id"].as_str().context("a port id")?;
                        anyhow::ensure!(
                            port["port"]["fixed_ips"]
                                .as_array()
                                .is_some_and(|ips| !ips.is_empty()),
                            "port {id} got no address"
                        );
                        Ok((t.elapsed(), id.to_string()))
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = self.cpu_seconds() - cpu_before;
        let (mut latencies, mut ids) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for m in made {
            let (latency, id) = m?;
            latencies.push(latency);
            ids.push(id);
        }
        let figures = json!({
            "creates": count,
            "seconds": (elapsed * 1000.0).round() / 1000.0,
            "creates_per_second": (count as f64 / elapsed).round(),
            "latency_ms": stats_json(latencies),
            "server_cpu_ms_per_create": (cpu / count as f64 * 1e6).round() / 1000.0,
            "load_average": {"before": load_before, "after": load_average()},
        });
        Ok((figures, ids))
    }

    /// `--reads` lists of one network's ports and shows of one port (of `ports`), one at a time.
    async fn reads(&self, reads: usize, ports: &[String]) -> anyhow::Result<Value> {
        let (mut lists, mut shows) = (Vec::with_capacity(reads), Vec::with_capacity(reads));
        for r in 0..reads {
            let network = &self.networks[r % self.networks.len()];
            lists.push(
                self.timed_get(&format!("ports?network_id={network}&limit={LIST_LIMIT}"))
                    .await?,
            );
            // Spread over the ports made (a stride prime to any count of them that matters).
            let port = &ports[(r * 7919) % ports.len()];
            shows.push(self.timed_get(&format!("ports/{port}")).await?);
        }
        Ok(json!({
            "list_one_network_ms": stats_json(lists),
            "show_one_port_ms": stats_json(shows),
        }))
    }

    /// The server's RSS and the store file's size now.
    fn footprint(&self) -> Value {
        json!({"server_rss_mib": mib(self.server.rss()), "store_mib": mib(self.server.store_bytes())})
    }

    /// Bulk creates until `count` more ports are stored, [`FILL_IN_FLIGHT`] requests at once.
    async fn fill(&self, count: usize, bulk: usize) -> anyhow::Result<Value> {
        let url = self.url("ports");
        let requests = count.div_ceil(bulk);
        let started = Instant::now();
        let cpu_before = self.cpu_seconds();
        let mut done = 0usize;
        let mut next_report = 0usize;
        let mut stream = futures::stream::iter(0..requests)
            .map(|r| {
                let size = bulk.min(count - r * bulk);
                let network = &self.networks[r % self.networks.len()];
                let body = json!({"ports": vec![json!({"network_id": network}); size]});
                let (http, url) = (&self.http, &url);
                async move {
                    let made = crate::post(http, url, body).await?;
                    let n = made["ports"].as_array().map_or(0, Vec::len);
                    anyhow::ensure!(n == size, "a bulk create of {size} made {n} ports");
                    Ok(n)
                }
            })
            .buffer_unordered(FILL_IN_FLIGHT);
        while let Some(made) = stream.next().await {
            done += made.context("filling the store")?;
            if done >= next_report {
                progress(&format!(
                    "filled {done} of {count} ports in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                next_report += count / 10;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        Ok(json!({
            "ports": count,
            "bulk": bulk,
            "in_flight": FILL_IN_FLIGHT,
            "seconds": elapsed.round(),
            "ports_per_second": (count as f64 / elapsed).round(),
            "server_cpu_ms_per_port": ((self.cpu_seconds() - cpu_before) / count as f64 * 1e6).round() / 1000.0,
        }))
    }
}

/// One measurement: creates, then reads, then the footprint.
async fn measure(
    t: &Target,
    p: &Params,
    first: usize,
    what: &str,
) -> anyhow::Result<(Value, Vec<String>)> {
    progress(&format!(
        "{what}: {} creates, {} in flight",
        p.samples, p.concurrency
    ));
    let (mut figures, ids) = t.creates(first, p.samples, p.concurrency).await?;
    progress(&format!("{what}: {} lists and shows", p.reads));
    let reads = t.reads(p.reads, &ids).await?;
    if let (Some(f), Some(r)) = (figures.as_object_mut(), reads.as_object()) {
        f.extend(r.clone());
        f.extend(t.footprint().as_object().cloned().unwrap_or_default());
    }
    Ok((figures, ids))
}

/// Runs the benchmark.
pub async fn run(p: Params) -> anyhow::Result<Value> {
    let networks = p.networks.clamp(1, 256);
    let fill = p.ports.saturating_sub(p.samples);
    // Every port of the run (both measurements and the fill) must find an address.
    if (p.ports + p.samples).div_ceil(networks) > SUBNET_ADDRESSES {
        bail!("{} ports do not fit {networks} /16 subnets", p.ports);
    }
    let server = ServerProcess::start(&p.wyvern, "apig")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(p.concurrency.max(FILL_IN_FLIGHT))
        .build()?;
    server.wait_ready(&http).await?;
    progress(&format!("server pid {} at {}", server.pid(), server.base));
    let mut t = Target {
        server,
        http,
        networks: Vec::new(),
    };
    crate::put(
        &t.http,
        &t.url("quotas/admin"),
        json!({"quota": {"network": -1, "subnet": -1, "port": -1}}),
    )
    .await
    .context("lifting the admin project's quotas")?;
    for i in 0..networks {
        let net = crate::post(
            &t.http,
            &t.url("networks"),
            json!({"network": {"name": format!("growth-{i}")}}),
        )
        .await?;
        let id = net["network"]["id"]
            .as_str()
            .context("a network id")?
            .to_string();
        crate::post(
            &t.http,
            &t.url("subnets"),
            json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": format!("10.{i}.0.0/16")}}),
        )
        .await?;
        t.networks.push(id);
    }
    let (empty, _) = measure(&t, &p, 0, "empty store").await?;
    progress(&format!(
        "filling to {} ports, bulks of {}",
        p.ports, p.bulk
    ));
    let filled = t.fill(fill, p.bulk.max(1)).await?;
    let stored = t.footprint();
    let (full, _) = measure(&t, &p, p.samples, &format!("{} ports stored", p.ports)).await?;
    let rate = |v: &Value| v["creates_per_second"].as_f64().unwrap_or(0.0);
    let ratio = if rate(&empty) > 0.0 {
        (rate(&full) / rate(&empty) * 1000.0).round() / 1000.0
    } else {
        0.0
    };
    Ok(json!({
        "benchmark": "api-growth",
        "store": "embedded",
        "networks": networks,
        "subnet_per_network": "/16",
        "ports_stored": p.ports,
        "concurrency": p.concurrency,
        "list_limit": LIST_LIMIT,
        "empty": empty,
        "fill": filled,
        "after_fill": stored,
        "full": full,
        "creates_per_second_ratio": ratio,
        "target_ratio": 0.8,
        "meets_target": ratio >= 0.8,
        "server_alive": t.server.alive(),
    }))
}
