//! Store benchmark: transaction throughput and watch fan-out latency, printed as JSON lines.
//!
//! `cargo run -p store --release --example store_bench -- [--backends embedded,etcd1,etcd3]
//!  [--concurrency 64] [--txns 4000] [--watchers 500] [--rounds 20]`
//!
//! Throughput: `concurrency` tasks commit `txns` "create if absent" transactions between them (the shape
//! of a port create). Fan-out: `watchers` watches on one prefix; each of `rounds` writes is timed from
//! just before its commit until each watcher has it; p50/p99/max over all deliveries. etcd backends run
//! on fresh local clusters (1 or 3 members, loopback, temporary directories).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_fixture::EtcdCluster;
use store::embedded::EmbeddedStore;
use store::{Store, Txn, TxnOutcome};

struct Args {
    backends: Vec<String>,
    concurrency: usize,
    txns: usize,
    watchers: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        backends: vec!["embedded".into(), "etcd1".into(), "etcd3".into()],
        concurrency: 64,
        txns: 4000,
        watchers: 500,
        rounds: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--backends" => args.backends = value.split(',').map(str::to_string).collect(),
            "--concurrency" => args.concurrency = number()?.max(1),
            "--txns" => args.txns = number()?,
            "--watchers" => args.watchers = number()?.max(1),
            "--rounds" => args.rounds = number()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Keeps a backend's files or processes alive while it is measured (a temp dir or an etcd cluster).
type Guard = Box<dyn std::any::Any>;

async fn open(backend: &str) -> Result<(Arc<dyn Store>, Guard), String> {
    let members = match backend {
        "embedded" => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let store =
                EmbeddedStore::open(dir.path().join("bench.redb")).map_err(|e| e.to_string())?;
            return Ok((Arc::new(store), Box::new(dir)));
        }
        "etcd1" => 1,
        "etcd3" => 3,
        other => return Err(format!("unknown backend {other}")),
    };
    let cluster = EtcdCluster::start(members)
        .await
        .map_err(|e| e.to_string())?;
    let store = store::open(&cluster.spec("/bench")).map_err(|e| e.to_string())?;
    Ok((store, Box::new(cluster)))
}

async fn throughput(
    store: &Arc<dyn Store>,
    concurrency: usize,
    txns: usize,
) -> Result<f64, String> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (t..txns).step_by(concurrency) {
                    let key = format!("bench/ports/{i:08}");
                    let txn = Txn::new().when(key.clone(), 0).put(key, vec![b'p'; 200]);
                    match store.txn(txn).await {
                        Ok(TxnOutcome::Committed(_)) => {}
                        other => return Err(format!("txn {i}: {other:?}")),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(txns as f64 / started.elapsed().as_secs_f64())
}

/// Delivery latencies (ms, sorted) of `rounds` writes to `watchers` watches.
async fn fan_out(
    store: &Arc<dyn Store>,
    watchers: usize,
    rounds: usize,
) -> Result<Vec<f64>, String> {
    let from = store.revision().await.map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let mut watch = store
            .watch("bench/fan/", from)
            .await
            .map_err(|e| e.to_string())?;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(events) = watch.next().await {
                let now = Instant::now();
                for event in events {
                    if tx.send((event.revision, now)).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut sent_at = HashMap::new();
    let mut latencies = Vec::with_capacity(watchers * rounds);
    for round in 0..rounds {
        let started = Instant::now();
        let txn = Txn::new().put("bench/fan/key", round.to_le_bytes().to_vec());
        let revision = match store.txn(txn).await {
            Ok(TxnOutcome::Committed(rev)) => rev,
            other => return Err(format!("fan-out write: {other:?}")),
        };
        sent_at.insert(revision, started);
        // Wait for all deliveries of this write before the next one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut delivered = 0;
        while delivered < watchers {
            let (rev, at) = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .map_err(|_| format!("round {round}: {delivered}/{watchers} deliveries"))?
                .ok_or("watchers ended")?;
            let sent = sent_at.get(&rev).ok_or("event of an unknown write")?;
            latencies.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
            delivered += usize::from(rev == revision);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in tasks {
        task.abort();
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

async fn run(args: &Args, backend: &str) -> Result<serde_json::Value, String> {
    let (store, guard) = open(backend).await?;
    let txns_per_s = throughput(&store, args.concurrency, args.txns).await?;
    let latencies = fan_out(&store, args.watchers, args.rounds).await?;
    drop(store);
    drop(guard);
    Ok(serde_json::json!({
        "backend": backend,
        "concurrency": args.concurrency,
        "txns": args.txns,
        "txns_per_s": (txns_per_s * 10.0).round() / 10.0,
        "watchers": args.watchers,
        "rounds": args.rounds,
        "deliveries": latencies.len(),
        "delivery_ms": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "max": percentile(&latencies, 1.0),
        },
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("store_bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut failed = false;
    for backend in &args.backends {
        match run(&args, backend).await {
            Ok(report) => println!("{report}"),
            Err(e) => {
                eprintln!("store_bench: {backend}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
