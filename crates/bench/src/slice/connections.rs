//! New TCP connections per second from one lab host to others: a client making short
//! connections as fast as it can for a fixed time, each a TCP handshake, one byte from the server
//! and the server's close (the client closes after it, so no `TIME_WAIT` holds its ports), with
//! [`Options::parallel`] connections in flight, spread round robin over [`Options::ports`]
//! server ports. The floating-IP phase compares distributed SNAT with plain routing with it.
//!
//! Several server ports, because a NAT can make only so many connections to one destination
//! (address and port) from one address: Open vSwitch's userspace conntrack holds a translated
//! source port until its sweeper removes the old connection, also after a new connection has
//! taken over the same original tuple, so with one destination port SNAT runs out of ports
//! after some tens of thousands of connections (`--connection-ports 1` shows it).
//!
//! Client and servers run in this process, each on a thread of its own that has entered the
//! host's network namespace (`setns`: the sockets it makes are the namespace's) and runs a
//! single-threaded tokio runtime there; no tool in the guests is needed. Each server counts the
//! source addresses it sees, so the report shows what the path did to them (the chassis' SNAT
//! address, or the client's own).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{proc_usage, secs, stats_json};
use crate::median;

/// The first port the servers listen on.
pub(crate) const PORT: u16 = 5300;
/// Longest time one connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the first connection to a target may take to work (the path's first packets wait
/// for neighbours to be resolved).
const WARM_UP: Duration = Duration::from_secs(10);

/// How the client runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Seconds per run.
    pub seconds: u32,
    /// Runs per target, alternating between the targets.
    pub runs: usize,
    /// Connections in flight at once.
    pub parallel: usize,
    /// Server ports (from 5300) the connections go to, round robin.
    pub ports: u16,
}

/// Runs `f` on a new thread inside network namespace `netns` (by its name under `/run/netns`).
pub(crate) fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: `ns` is an open namespace file; setns changes only this thread's namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {path}"));
        }
        f()
    })
}

/// Runs `fut` on a fresh single-threaded runtime (in the calling thread's namespace).
pub(crate) fn block_on<T>(
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Waits for a thread of [`in_netns`] without blocking the runtime's other tasks.
pub(crate) fn join<T>(t: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::task::block_in_place(|| t.join()).map_err(|_| anyhow!("a namespace thread panicked"))?
}

/// A server in a host's namespace, on several ports: accepts, sends one byte, closes; counts the
/// connections by source address. Stopped (and its counts returned) by [`Server::stop`].
pub(crate) struct Server {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<BTreeMap<IpAddr, u64>>>,
}

impl Server {
    /// Listens on `ports` ports from [`PORT`] in `netns`; returns once it listens.
    pub(crate) fn start(netns: &str, ports: u16) -> anyhow::Result<Server> {
        let (stop, mut stopped) = oneshot::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = in_netns(netns, move || {
            block_on(async move {
                let mut listeners = Vec::new();
                for port in PORT..PORT + ports {
                    match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
                        Ok(l) => listeners.push(l),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("port {port}: {e}")));
                            bail!("listening on port {port}");
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let mut seen: BTreeMap<IpAddr, u64> = BTreeMap::new();
                loop {
                    let accepts = listeners.iter().map(|l| Box::pin(l.accept()));
                    tokio::select! {
                        _ = &mut stopped => return Ok(seen),
                        (accepted, _, _) = futures::future::select_all(accepts) => {
                            let Ok((mut s, peer)) = accepted else { continue };
                            *seen.entry(peer.ip()).or_default() += 1;
                            // One byte, then our close; a client gone meanwhile is its failure.
                            let _ = s.write_all(b"x").await;
                        }
                    }
                }
            })
        });
        match ready.recv() {
            Ok(Ok(())) => Ok(Server { stop, thread }),
            Ok(Err(e)) => bail!("server in {netns}: {e}"),
            Err(_) => Err(join(thread)
                .err()
                .unwrap_or_else(|| anyhow!("server ended"))),
        }
    }

    /// Stops the server; returns the connections it accepted, by source address.
    pub(crate) fn stop(self) -> anyhow::Result<BTreeMap<IpAddr, u64>> {
        let _ = self.stop.send(());
        join(self.thread)
    }
}

/// What one client run did.
struct Run {
    completed: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// One connection to `to`: handshake, the server's byte, its close.
async fn connection(to: SocketAddr) -> anyhow::Result<()> {
    let mut s = tokio::net::TcpStream::connect(to).await?;
    let mut got = Vec::with_capacity(1);
    s.read_to_end(&mut got).await?;
    if got != b"x" {
        bail!("the server sent {got:?}");
    }
    Ok(())
}

/// Connections from `netns` to `to`'s server ports, `o.parallel` at a time, for `o.seconds`.
fn client(netns: &str, to: IpAddr, o: Options) -> anyhow::Result<Run> {
    let thread = in_netns(netns, move || {
        block_on(async move {
            let start = Instant::now();
            let until = start + Duration::from_secs(u64::from(o.seconds));
            let loops = (0..o.parallel.max(1)).map(|l| async move {
                let (mut latencies, mut failed) = (Vec::new(), 0u64);
                let mut port = (PORT..PORT + o.ports.max(1)).cycle().skip(l);
                while Instant::now() < until {
                    let to = SocketAddr::new(to, port.next().unwrap_or(PORT));
                    let t = Instant::now();
                    match tokio::time::timeout(CONNECT_TIMEOUT, connection(to)).await {
                        Ok(Ok(())) => latencies.push(t.elapsed()),
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            });
            let mut run = Run {
                completed: 0,
                failed: 0,
                elapsed: Duration::ZERO,
                latencies: Vec::new(),
            };
            for (latencies, failed) in futures::future::join_all(loops).await {
                run.completed += latencies.len() as u64;
                run.latencies.extend(latencies);
                run.failed += failed;
            }
            run.elapsed = start.elapsed();
            Ok(run)
        })
    });
    join(thread)
}

/// Connects from `netns` to `to` until one connection works (within [`WARM_UP`]).
fn warm_up(netns: &str, to: SocketAddr) -> anyhow::Result<()> {
    let thread = in_netns(netns, move || {
        block_on(async move {
            let start = Instant::now();
            loop {
                match tokio::time::timeout(CONNECT_TIMEOUT, connection(to)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) if start.elapsed() > WARM_UP => return Err(e),
                    Err(_) if start.elapsed() > WARM_UP => bail!("connections time out"),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    });
    join(thread).with_context(|| format!("no TCP connection to {to} within {WARM_UP:?}"))
}

/// A destination of the client: a name for the report, the host's namespace and address.
pub(crate) struct Target {
    pub name: &'static str,
    pub netns: String,
    pub ip: IpAddr,
}

/// Runs the client in `from` against every target, `o.runs` times each, alternating (so that
/// the shared machine's ups and downs fall on all of them), with the CPU time that each of the
/// named `processes` (the switches on the paths) spent during each run.
pub(crate) fn compare(
    from: &str,
    targets: &[Target],
    o: &Options,
    processes: &[(String, u32)],
) -> anyhow::Result<Value> {
    let cpu = || -> Vec<Option<f64>> {
        processes
            .iter()
            .map(|(_, pid)| proc_usage(*pid).map(|(_, cpu)| cpu))
            .collect()
    };
    let servers = targets
        .iter()
        .map(|t| Server::start(&t.netns, o.ports.max(1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for t in targets {
        warm_up(from, SocketAddr::new(t.ip, PORT)).with_context(|| format!("target {}", t.name))?;
    }
    let mut runs: Vec<Vec<(Run, Value)>> = targets.iter().map(|_| Vec::new()).collect();
    for r in 0..o.runs {
        for (t, done) in targets.iter().zip(&mut runs) {
            let before = cpu();
            let run = client(from, t.ip, *o)?;
            let mut spent = serde_json::Map::new();
            for (((name, _), b), a) in processes.iter().zip(before).zip(cpu()) {
                let s = b.zip(a).map(|(b, a)| a - b);
                spent.insert(
                    name.clone(),
                    json!({
                        "cpu_s": s.map(|s| (s * 100.0).round() / 100.0),
                        "cpu_ms_per_connection": s
                            .filter(|_| run.completed > 0)
                            .map(|s| (s * 1e6 / run.completed as f64).round() / 1000.0),
                    }),
                );
            }
            let extra = json!({
                "connections": run.completed,
                "seconds": secs(run.elapsed),
                "processes": spent,
            });
            super::progress(&format!(
                "connections to {} ({}), run {}: {:.0}/s, {} failed",
                t.name,
                t.ip,
                r + 1,
                run.completed as f64 / run.elapsed.as_secs_f64(),
                run.failed
            ));
            done.push((run, extra));
        }
    }
    let mut report = serde_json::Map::new();
    let mut medians = Vec::new();
    for ((t, done), server) in targets.iter().zip(runs).zip(servers) {
        let seen = server.stop()?;
        let rates: Vec<f64> = done
            .iter()
            .map(|(r, _)| (r.completed as f64 / r.elapsed.as_secs_f64()).round())
            .collect();
        let rate = median(&rates);
        medians.push(rate);
        let latencies = done.iter().flat_map(|(r, _)| r.latencies.clone()).collect();
        let cpu_per_connection: serde_json::Map<String, Value> = processes
            .iter()
            .map(|(name, _)| {
                let per_run: Vec<f64> = done
                    .iter()
                    .filter_map(|(_, e)| e["processes"][name]["cpu_ms_per_connection"].as_f64())
                    .collect();
                (name.clone(), json!(median(&per_run)))
            })
            .collect();
        report.insert(
            t.name.to_owned(),
            json!({
                "to": t.ip.to_string(),
                "connections_per_s": rates,
                "median_per_s": rate,
                "failed": done.iter().map(|(r, _)| r.failed).collect::<Vec<_>>(),
                "connection_ms": stats_json(latencies),
                "cpu_ms_per_connection_median": cpu_per_connection,
                "per_run": done.iter().map(|(_, extra)| extra.clone()).collect::<Vec<_>>(),
                "server_saw_sources": seen.iter().map(|(ip, n)| (ip.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            }),
        );
    }
    if let [first, second] = medians[..] {
        let ratio = if second > 0.0 { first / second } else { 0.0 };
        let key = format!("{}_over_{}", targets[0].name, targets[1].name);
        report.insert(key, json!((ratio * 1000.0).round() / 1000.0));
    }
    Ok(Value::Object(report))
}
