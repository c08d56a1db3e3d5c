//! `wyvern-bench`: benchmarks that print their figures as JSON.
//!
//! `api-ports` creates ports over HTTP with a given concurrency against a Wyvern server it starts
//! in-process on a fresh embedded store, or against any Neutron-compatible endpoint (`--url`), and
//! reports ports/s and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "wyvern-bench", about = "Wyvern benchmarks (JSON output)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create ports over the Neutron API.
    ApiPorts {
        /// Ports to create.
        #[arg(long, default_value_t = 10_000)]
        ports: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// An existing endpoint (e.g. the reference Neutron); default: an in-process Wyvern server
        /// on a fresh embedded store.
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::ApiPorts { ports, concurrency, url } => {
            let report = runtime.block_on(api_ports(ports, concurrency.max(1), url))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

/// Serves the API in-process on a temporary store; returns its base URL.
async fn local_server(dir: &tempfile::TempDir) -> anyhow::Result<String> {
    let spec = format!("embedded:{}", dir.path().join("bench.redb").display());
    let store = store::open(&spec)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(api::serve(listener, store, api::ApiConfig::default()));
    Ok(base)
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    let resp = client.post(url).json(&body).send().await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST {url}: {status}: {body}");
    }
    Ok(body)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn api_ports(ports: usize, concurrency: usize, url: Option<String>) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let (base, target) = match url {
        Some(u) => (u.trim_end_matches('/').to_string(), "external"),
        None => (local_server(&dir).await?, "wyvern-embedded"),
    };
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let net = post(&client, &format!("{base}/v2.0/networks"), json!({"network": {"name": "bench"}}))
        .await
        .context("creating the network")?;
    let net_id = net["network"]["id"].as_str().unwrap_or_default().to_string();
    post(
        &client,
        &format!("{base}/v2.0/subnets"),
        json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.128.0.0/16"}}),
    )
    .await
    .context("creating the subnet")?;

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, url, net_id) =
                (client.clone(), next.clone(), format!("{base}/v2.0/ports"), net_id.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                while next.fetch_add(1, Ordering::Relaxed) < ports {
                    let t = Instant::now();
                    let body = json!({"port": {"network_id": net_id}});
                    match post(&client, &url, body).await {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(ports);
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok(json!({
        "benchmark": "api-ports",
        "target": target,
        "ports": ports,
        "concurrency": concurrency,
        "created": latencies.len(),
        "errors": errors,
        "seconds": elapsed,
        "ports_per_second": latencies.len() as f64 / elapsed,
        "latency_ms": {"p50": percentile(&latencies, 0.50), "p99": percentile(&latencies, 0.99)},
    }))
}
