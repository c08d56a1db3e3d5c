//! `wyvern-bench`: benchmarks that print their figures as JSON.
//!
//! `api-ports` creates ports over HTTP with a given concurrency against a Wyvern server it starts
//! in-process, or against any Neutron-compatible endpoint (`--url`), and reports ports/s and latency
//! percentiles.
//!
//! `sync-watchers` opens many sync watch streams (`/wyvern/v1/sync/watch`, what an agent follows,
//! without OVS) on an in-process server, then makes one write per round and reports how long the
//! streams took to deliver it (p50/p99 over all streams and rounds). With `--servers N` it runs N
//! `wyvern server` processes on the store instead (several need etcd), spreads the streams over
//! them round robin, makes each write through the next server in turn, and reports each server's
//! CPU time while the streams opened and during the rounds, and its RSS before, with the streams
//! open and at the end (issue 17's fan-out).
//!
//! The in-process server runs on a fresh embedded store, on the store given with `--store SPEC`, or on
//! an etcd cluster of `--etcd-members N` that the benchmark starts itself (etcd-fixture: private data
//! directories, free loopback ports, stopped when the benchmark ends).
//!
//! `slice` runs the whole first slice against real Open vSwitch: a `wyvern server` and one
//! `wyvern agent` per chassis (through the lab), many ports created and plugged as VIFs, and reports
//! time to all flows, flows per chassis, agent RSS/CPU, single-port latency and agent restarts
//! (see [`slice`]). `slice --router` is the routed variant: one router with an interface on every
//! network, and a router interface added to the loaded system until a routed ping works.
//! `slice --store etcd --etcd-members 3 --servers 2` runs the same slice on real etcd members
//! with several servers, and measures server failover too (servers killed and started again).
//! `slice --router --security-groups` is issue 11's workload B (every port in one security group
//! with 20 remote-group rules), with Open vSwitch's own one-port floor measured in the same run.
//! `slice --floating-ips` is issue 12's workload: the routed slice with the router's gateway on an
//! external network and a floating IP per port, then a floating IP associated until an external
//! host's ping gets through, and new connections per second through distributed SNAT against
//! plain routing.
//!
//! `soak` runs a `wyvern server` under a long mixed API load from several projects while slow
//! sockets trickle bytes at it, and reports latency, RSS and store size (see [`soak`]).
//!
//! `api-growth` is issue 17's figure: port creates per second on a `wyvern server` with 100 000
//! ports stored against the same creates on an empty store, with list and show latencies (see
//! [`api_growth`]).
//!
//! `lb` is issue 13's distributed load balancing on a lab: 100 load balancers × 3 listeners × 10
//! members made through the Octavia v2 API until every chassis holds their flows and groups, one
//! member added until a client's connection reaches it, and new connections per second through a
//! VIP against the member directly (see [`lb`]).
//!
//! `sfc` is issue 14's service function chaining on a lab: 100 chains of 3 port pair groups × 2
//! port pairs made through networking-sfc's API until every chassis holds their flows and groups,
//! and iperf3 through a 2-hop chain of service-function VMs against the same VMs directly (see
//! [`sfc`]).
//!
//! `k8s` is issue 15's Kubernetes figures on a lab whose 3 chassis are Kubernetes nodes: pods
//! started as a kubelet would (Pod create → the controller's port → CNI ADD → first ping), an
//! endpoint change of a Service until every chassis balances to it, and the controller's and the
//! Kubernetes API server's CPU and memory (see [`k8s`]).
//!
//! `lab-scale` brings up a lab of many chassis and VMs (issue 17: 100 chassis, 200 VMs) and reports
//! how long `lab up` and `lab down` take, when the agents are in sync and a ping crosses the lab,
//! and the idle lab's CPU (see [`lab_scale`]).
//!
//! `throughput` runs iperf3 between two VMs on two chassis through the whole pipeline with
//! security groups, then through the same switches reduced to `actions=NORMAL` (see
//! [`throughput`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod lb;

/// A progress line of bench `bench` on stderr, with the Unix time.
pub(crate) fn progress(bench: &str, what: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("[{bench} {:.3}] {what}", now.as_secs_f64());
}

/// Runs a bench until it ends, or until SIGINT or SIGTERM ends it early (its lab is torn down
/// as it is dropped).
pub(crate) async fn until_signal(
    bench: impl std::future::Future<Output = anyhow::Result<Value>>,
) -> anyhow::Result<Value> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = bench => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
    }
}
mod agent_cpu;
mod api_growth;
mod cpu;
mod k8s;
mod lab_scale;
mod port_add;
mod sfc;
mod slice;
mod soak;
mod throughput;

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
        /// An existing endpoint (e.g. the reference Neutron) instead of an in-process Wyvern server.
        #[arg(long, conflicts_with_all = ["store", "etcd_members"])]
        url: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Deliver writes to many sync watch streams.
    SyncWatchers {
        /// Watch streams to open.
        #[arg(long, default_value_t = 500)]
        watchers: usize,
        /// Writes, one after the other, each awaited by every stream.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Run this many `wyvern server` processes (the binary `--wyvern`) on the store instead
        /// of one server in process: the streams spread over them round robin, the writes go
        /// through each in turn; reports each server's CPU time and RSS. More than one needs a
        /// store they can share (`--etcd-members N` or `--store etcd://...`).
        #[arg(long)]
        servers: Option<usize>,
        /// With --servers: the `wyvern` binary (use a release build for figures).
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The first real slice under load: server, chassis with real OVS and agents (lab), many
    /// ports; time to all flows, flows per chassis, agent RSS/CPU, one port, agent restart.
    Slice {
        /// The `wyvern` binary to run as server and agents (use a release build for figures).
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        #[arg(long, default_value_t = 3)]
        chassis: usize,
        #[arg(long, default_value_t = 10)]
        networks: usize,
        #[arg(long, default_value_t = 1000)]
        ports: usize,
        /// Single ports added on the loaded system.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Port creations (each followed by its VIF plug) in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Agent restarts (round-robin over the chassis).
        #[arg(long, default_value_t = 3)]
        restarts: usize,
        /// The routed variant: one router with an interface on every network, and a router
        /// interface added to the loaded system until a routed ping works.
        #[arg(long)]
        router: bool,
        /// With --router (or --floating-ips): how often that interface is added (and removed
        /// again).
        #[arg(long, default_value_t = 5)]
        interface_samples: usize,
        /// The lab's store: `embedded` (one server) or `etcd` (real etcd members).
        #[arg(long, value_enum, default_value_t = SliceStore::Embedded)]
        store: SliceStore,
        /// With --store etcd: etcd members.
        #[arg(long, default_value_t = 3)]
        etcd_members: usize,
        /// With --store etcd: API servers (agents spread over them, each knowing all).
        #[arg(long, default_value_t = 1)]
        servers: usize,
        /// With several servers: server kills (`kill -9`, then started again), each of the
        /// server the bench's own sync follower uses, so the servers alternate.
        #[arg(long, default_value_t = 20)]
        failovers: usize,
        /// Issue 11's workload B: every port in one security group with 20 ingress rules (TCP
        /// 8001-8020, remote group = itself); Open vSwitch's floor is measured in the same run.
        #[arg(long)]
        security_groups: bool,
        /// Issue 12's workload (routed): the router's gateway on a flat external network on a
        /// physical segment, a floating IP per port; then a floating IP associated until an
        /// external host's ping gets through, and new TCP connections per second through
        /// distributed SNAT against plain routing.
        #[arg(long)]
        floating_ips: bool,
        /// With --floating-ips: how often the floating IP is associated (and disassociated).
        #[arg(long, default_value_t = 20, requires = "floating_ips")]
        associate_samples: usize,
        /// With --floating-ips: seconds per connection-rate run.
        #[arg(long, default_value_t = 5, requires = "floating_ips")]
        connection_seconds: u32,
        /// With --floating-ips: connection-rate runs per path (SNAT and routed alternate).
        #[arg(long, default_value_t = 3, requires = "floating_ips")]
        connection_runs: usize,
        /// With --floating-ips: connections in flight at once.
        #[arg(long, default_value_t = 4, requires = "floating_ips")]
        connection_parallel: usize,
        /// With --floating-ips: server ports the connections go to, round robin (a NAT runs
        /// out of source ports for one destination port sooner).
        #[arg(long, default_value_t = 16, requires = "floating_ips")]
        connection_ports: u16,
    },
    /// `lab up` of many chassis and VMs on this machine until the agents are in sync and a VM on
    /// the first chassis reaches one on the last, the idle lab's CPU, and `lab down`.
    LabScale {
        /// The `wyvern` binary to run as server and agents (use a release build for figures).
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        #[arg(long, default_value_t = 100)]
        chassis: usize,
        #[arg(long, default_value_t = 200)]
        vms: usize,
        #[arg(long, default_value_t = 1)]
        networks: usize,
        /// Seconds the idle lab's CPU is measured for.
        #[arg(long, default_value_t = 10)]
        idle_seconds: u64,
    },
    /// iperf3 TCP between two VMs on two chassis through the full pipeline with security groups,
    /// against the same two VMs with each `br-int` reduced to `actions=NORMAL`.
    Throughput {
        /// The `wyvern` binary to run as server and agents (use a release build for figures).
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        /// iperf3 runs per configuration.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// Distributed load balancing (issue 13) on a lab of 3 chassis: load balancers, listeners
    /// and members made through the Octavia v2 API until every chassis holds their flows and
    /// groups; one member added until it is used; new connections per second through a VIP
    /// against the member directly.
    Lb {
        /// The `wyvern` binary to run as server and agents (use a release build for figures).
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        #[arg(long, default_value_t = 100)]
        load_balancers: usize,
        /// TCP listeners per load balancer (ports 80, 81, ...), each with its own pool.
        #[arg(long, default_value_t = 3)]
        listeners: usize,
        /// Members per pool (at most --vms).
        #[arg(long, default_value_t = 10)]
        members: usize,
        /// Member VMs, spread round robin over the chassis.
        #[arg(long, default_value_t = 30)]
        vms: usize,
        /// Load balancers made at once (each one's requests in order: that many in flight).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// How often one member is added (and deleted again).
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Seconds per connection-rate run.
        #[arg(long, default_value_t = 5)]
        connection_seconds: u32,
        /// Connection-rate runs per path (VIP and direct alternate).
        #[arg(long, default_value_t = 3)]
        connection_runs: usize,
        /// Connections in flight at once.
        #[arg(long, default_value_t = 4)]
        connection_parallel: usize,
        /// Server ports the connections go to, round robin (a listener each on the VIP).
        #[arg(long, default_value_t = 16)]
        connection_ports: u16,
    },
    /// Issue 14's service function chaining on a lab: chains of port pair groups made through
    /// networking-sfc's API until every chassis holds their flows and groups; iperf3 between two
    /// VMs through a 2-hop chain of service-function VMs against the same VMs directly.
    Sfc {
        /// The `wyvern` binary to run as server and agents (use a release build for figures).
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        #[arg(long, default_value_t = 100)]
        chains: usize,
        /// Port pair groups (hops) per chain.
        #[arg(long, default_value_t = 3)]
        groups: usize,
        /// Port pairs per group.
        #[arg(long, default_value_t = 2)]
        pairs: usize,
        /// Classifier source VMs, spread round robin over the chassis.
        #[arg(long, default_value_t = 10)]
        sources: usize,
        /// Chains made at once (each one's requests in order).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// iperf3 runs per path (chained and direct alternate).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Issue 15's Kubernetes figures on a lab of 3 node chassis: pods started as a kubelet would
    /// (Pod create → port → CNI ADD → first ping), endpoint changes of a Service until every
    /// chassis balances to them, and the controller's and API server's CPU and memory.
    K8s {
        /// The `wyvern` binary to run as server, agents and controller (use a release build for
        /// figures); `wyvern-cni` and `wyvern-kube-apiserver` are taken from next to it.
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        #[arg(long, default_value_t = 300)]
        pods: usize,
        /// Kubernetes nodes (the lab's chassis; 3).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Pods started at once per node (a kubelet's parallel pod workers).
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Pods behind the Service (the first ones started).
        #[arg(long, default_value_t = 100)]
        endpoints: usize,
        /// Endpoint changes (a pod leaving the Service, then joining it again, alternately).
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
    /// The API server under a long mixed load from several projects while slow sockets trickle
    /// bytes at it: small GET latency, RSS and store size before and after, no 5xx.
    Soak {
        /// The `wyvern` binary to run as server (use a release build for figures).
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Clients, spread over three projects.
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// Connections that trickle a request head one byte a second.
        #[arg(long, default_value_t = 300)]
        slow_sockets: usize,
    },
    /// Issue 17: port creates per second with many ports stored against an empty store (same
    /// networks), list and show latency, server RSS and store size (see `api_growth`).
    ApiGrowth {
        /// The `wyvern` binary to run as server (use a release build for figures).
        #[arg(long, default_value = "target/release/wyvern")]
        wyvern: std::path::PathBuf,
        /// Ports stored before the second measurement (default 100 000; 5 000 with --quick).
        #[arg(long)]
        ports: Option<usize>,
        /// Networks, each with one /16 subnet (at most 256).
        #[arg(long, default_value_t = 100)]
        networks: usize,
        /// Single creates per measurement (default 2 000; 300 with --quick).
        #[arg(long)]
        samples: Option<usize>,
        /// Single creates in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Ports per bulk create of the fill.
        #[arg(long, default_value_t = 500)]
        bulk: usize,
        /// Lists and shows per measurement (default 100; 20 with --quick).
        #[arg(long)]
        reads: Option<usize>,
        /// A short run to check the bench itself (fewer ports, creates and reads).
        #[arg(long)]
        quick: bool,
    },
    /// One agent's pipeline CPU on the slice's workload, in process (no Open vSwitch): per
    /// port for growing port counts, and a restart's full computation.
    AgentCpu {
        /// Port counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
        ports: Vec<usize>,
        /// Network counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        networks: Vec<usize>,
        /// When what the agent follows (`Topology::needs`) is recomputed: after every event (as
        /// the agent does), only when the pipeline's `needs_epoch` or the VIFs changed, never.
        #[arg(long, value_enum, default_value = "always")]
        follow: agent_cpu::Follow,
    },
    /// Open vSwitch's own cost of adding a VIF to a loaded `br-int`: insert to OpenFlow port
    /// (PORT_STATUS, OVSDB) and to a flow confirmed for it (no Wyvern parts).
    OvsPortAdd {
        /// VIFs already on the bridge.
        #[arg(long, default_value_t = 333)]
        existing: usize,
        /// Ports added per way of learning the OpenFlow port.
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
}

/// The store of the slice's lab.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SliceStore {
    Embedded,
    Etcd,
}

/// The store of the in-process server.
#[derive(clap::Args)]
struct StoreArgs {
    /// A store spec (`embedded:PATH`, `etcd://HOST:PORT,...[/PREFIX]`); default: a fresh embedded
    /// store in a temporary directory.
    #[arg(long, conflicts_with = "etcd_members")]
    store: Option<String>,
    /// Start an etcd cluster of this many members and serve from it.
    #[arg(long)]
    etcd_members: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let report = match cli.command {
        Command::ApiPorts {
            ports,
            concurrency,
            url,
            store,
        } => runtime.block_on(api_ports(ports, concurrency.max(1), url, store))?,
        Command::SyncWatchers {
            watchers,
            rounds,
            servers,
            wyvern,
            store,
        } => {
            let servers = servers.map(|count| ServerProcesses {
                count: count.max(1),
                wyvern,
            });
            runtime.block_on(until_signal(sync_watchers(
                watchers.max(1),
                rounds.max(1),
                servers,
                store,
            )))?
        }
        Command::Slice {
            wyvern,
            chassis,
            networks,
            ports,
            samples,
            concurrency,
            restarts,
            router,
            interface_samples,
            store,
            etcd_members,
            servers,
            failovers,
            security_groups,
            floating_ips,
            associate_samples,
            connection_seconds,
            connection_runs,
            connection_parallel,
            connection_ports,
        } => {
            if store == SliceStore::Embedded && servers > 1 {
                bail!("several servers need --store etcd");
            }
            let floating_ips = floating_ips.then(|| slice::FloatingIps {
                samples: associate_samples,
                connections: slice::ConnectionOptions {
                    seconds: connection_seconds.max(1),
                    runs: connection_runs.max(1),
                    parallel: connection_parallel.max(1),
                    ports: connection_ports.clamp(1, 1000),
                },
            });
            runtime.block_on(slice::run(slice::Params {
                wyvern,
                chassis,
                networks,
                ports,
                samples,
                concurrency,
                restarts,
                router: router || floating_ips.is_some(),
                interface_samples,
                etcd_members: if store == SliceStore::Etcd {
                    etcd_members
                } else {
                    0
                },
                servers,
                failovers,
                security_groups,
                floating_ips,
            }))?
        }
        Command::LabScale {
            wyvern,
            chassis,
            vms,
            networks,
            idle_seconds,
        } => runtime.block_on(lab_scale::run(lab_scale::Params {
            wyvern,
            chassis,
            vms,
            networks,
            idle_seconds,
        }))?,
        Command::Throughput {
            wyvern,
            runs,
            seconds,
        } => runtime.block_on(throughput::run(throughput::Params {
            wyvern,
            runs: runs.max(1),
            seconds: seconds.max(1),
        }))?,
        Command::Lb {
            wyvern,
            load_balancers,
            listeners,
            members,
            vms,
            concurrency,
            samples,
            connection_seconds,
            connection_runs,
            connection_parallel,
            connection_ports,
        } => runtime.block_on(lb::run(lb::Params {
            wyvern,
            load_balancers,
            listeners,
            members,
            vms,
            concurrency: concurrency.max(1),
            samples,
            connections: slice::ConnectionOptions {
                seconds: connection_seconds.max(1),
                runs: connection_runs.max(1),
                parallel: connection_parallel.max(1),
                ports: connection_ports.clamp(1, 1000),
            },
        }))?,
        Command::Sfc {
            wyvern,
            chains,
            groups,
            pairs,
            sources,
            concurrency,
            runs,
            seconds,
        } => runtime.block_on(sfc::run(sfc::Params {
            wyvern,
            chains,
            groups,
            pairs,
            sources,
            concurrency: concurrency.max(1),
            runs: runs.max(1),
            seconds: seconds.max(1),
        }))?,
        Command::K8s {
            wyvern,
            pods,
            nodes,
            parallel,
            endpoints,
            changes,
        } => runtime.block_on(k8s::run(k8s::Params {
            wyvern,
            pods,
            nodes,
            parallel: parallel.max(1),
            endpoints,
            changes,
        }))?,
        Command::Soak {
            wyvern,
            seconds,
            clients,
            slow_sockets,
        } => runtime.block_on(soak::run(soak::Params {
            wyvern,
            seconds: seconds.max(1),
            clients: clients.max(1),
            slow_sockets,
        }))?,
        Command::ApiGrowth {
            wyvern,
            ports,
            networks,
            samples,
            concurrency,
            bulk,
            reads,
            quick,
        } => runtime.block_on(api_growth::run(api_growth::Params {
            wyvern,
            ports: ports.unwrap_or(if quick { 5_000 } else { 100_000 }),
            networks,
            samples: samples.unwrap_or(if quick { 300 } else { 2_000 }).max(1),
            concurrency: concurrency.max(1),
            bulk: bulk.max(1),
            reads: reads.unwrap_or(if quick { 20 } else { 100 }).max(1),
        }))?,
        Command::AgentCpu {
            ports,
            networks,
            follow,
        } => agent_cpu::run(&ports, &networks, follow),
        Command::OvsPortAdd { existing, samples } => {
            runtime.block_on(port_add::run(port_add::Params { existing, samples }))?
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The store a bench's servers use, and what keeps it alive: a temporary directory (the
/// embedded store's file), an etcd cluster the bench started (stopped, its data removed, when
/// this is dropped).
struct BenchStore {
    /// `store::open`'s spelling (also `wyvern server --store`'s).
    spec: String,
    /// What the store is, for the report (`embedded`, `etcd://...`, `etcd-fixture:3`).
    label: String,
    _cluster: Option<etcd_fixture::EtcdCluster>,
    _dir: tempfile::TempDir,
}

impl BenchStore {
    /// Starts or names the store `args` ask for.
    async fn start(args: StoreArgs) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (spec, label, cluster) = match (args.store, args.etcd_members) {
            (Some(spec), _) => (spec.clone(), spec, None),
            (None, Some(members)) => {
                let cluster = etcd_fixture::EtcdCluster::start(members)
                    .await
                    .context("starting etcd")?;
                (
                    cluster.spec("/wyvern"),
                    format!("etcd-fixture:{members}"),
                    Some(cluster),
                )
            }
            (None, None) => {
                let spec = format!("embedded:{}", dir.path().join("bench.redb").display());
                (spec, "embedded".to_string(), None)
            }
        };
        Ok(Self {
            spec,
            label,
            _cluster: cluster,
            _dir: dir,
        })
    }

    /// Whether several server processes can share the store (an embedded store is one process').
    fn shareable(&self) -> bool {
        !self.spec.starts_with("embedded:")
    }
}

/// An in-process server and what keeps its store alive.
struct LocalServer {
    base: String,
    store: BenchStore,
}

impl LocalServer {
    /// Opens the store `args` ask for and serves the API on it.
    async fn start(args: StoreArgs) -> anyhow::Result<Self> {
        let bench_store = BenchStore::start(args).await?;
        let store = store::open(&bench_store.spec)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let config = api::ApiConfig {
            quotas: api::quota::Defaults::unlimited(),
            ..api::ApiConfig::default()
        };
        tokio::spawn(api::serve(listener, store, config));
        Ok(Self {
            base,
            store: bench_store,
        })
    }
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    send(client, reqwest::Method::POST, url, body).await
}

/// `PUT` (a router's `add_router_interface` and `remove_router_interface`).
async fn put(client: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    send(client, reqwest::Method::PUT, url, body).await
}

/// Sends `body` as JSON; returns the answer's JSON body, an error for any status but success.
async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let resp = client
        .request(method.clone(), url)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{method} {url}: {status}: {body}");
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

/// The median of `v` (0 when empty).
/// The start of a bench lab's topology file: lab `name` on a Geneve underlay with `chassis`.
pub(crate) fn geneve_lab(name: &str, chassis: &[&str]) -> String {
    let mut text = format!("name = \"{name}\"\n[underlay]\nencap = \"geneve\"\n");
    for c in chassis {
        text.push_str(&format!("[[chassis]]\nname = \"{c}\"\n"));
    }
    text
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

async fn api_ports(
    ports: usize,
    concurrency: usize,
    url: Option<String>,
    store: StoreArgs,
) -> anyhow::Result<Value> {
    let (base, target, _server) = match url {
        Some(u) => (
            u.trim_end_matches('/').to_string(),
            "external".to_string(),
            None,
        ),
        None => {
            let server = LocalServer::start(store).await?;
            let target = format!("wyvern on {}", server.store.label);
            (server.base.clone(), target, Some(server))
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let net_id = bench_network(&client, &base).await?;

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, url, net_id) = (
                client.clone(),
                next.clone(),
                format!("{base}/v2.0/ports"),
                net_id.clone(),
            );
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

/// Creates a network with a subnet for the benchmark's ports; returns the network id.
async fn bench_network(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let net = post(
        client,
        &format!("{base}/v2.0/networks"),
        json!({"network": {"name": "bench"}}),
    )
    .await
    .context("creating the network")?;
    let net_id = net["network"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    post(
        client,
        &format!("{base}/v2.0/subnets"),
        json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.128.0.0/16"}}),
    )
    .await
    .context("creating the subnet")?;
    Ok(net_id)
}

/// Follows one sync watch stream (on server `server`, an index into the bench's servers):
/// reports on `ready` when it is open (or why it could not be opened), then when each port key
/// first arrives.
async fn watcher(
    client: reqwest::Client,
    url: String,
    server: usize,
    ready: mpsc::UnboundedSender<anyhow::Result<()>>,
    seen: mpsc::UnboundedSender<(usize, String, Instant)>,
) -> anyhow::Result<()> {
    let mut resp = match client.get(&url).send().await {
        Ok(resp) if resp.status().is_success() => resp,
        Ok(resp) => {
            let _ = ready.send(Err(anyhow::anyhow!("GET {url}: {}", resp.status())));
            return Ok(());
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow::Error::new(e).context(format!("GET {url}"))));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let msg: Value = serde_json::from_slice(&line)?;
            for event in msg["events"].as_array().into_iter().flatten() {
                if let Some(key) = event["key"]
                    .as_str()
                    .filter(|k| k.starts_with(nb_keys::PORTS))
                {
                    let _ = seen.send((server, key.to_string(), now));
                }
            }
        }
    }
    bail!("watch stream ended")
}

/// `sync-watchers --servers N`: how many `wyvern server` processes, and their binary.
struct ServerProcesses {
    count: usize,
    wyvern: std::path::PathBuf,
}

/// The servers `sync-watchers` runs against.
enum WatchServers {
    /// One server in the bench's own process.
    Local(LocalServer),
    /// `wyvern server` processes on one store. Fields drop in order: the processes are killed
    /// (by PID) and reaped, also when the bench fails or is interrupted, before the store (an
    /// etcd cluster the bench started) stops.
    Processes(Vec<soak::ServerProcess>, BenchStore),
}

impl WatchServers {
    /// Starts the servers (`None`: one in process) on the store `args` ask for, and waits until
    /// each is ready (`/readyz`: its store reachable, its shared watch current).
    async fn start(
        servers: Option<ServerProcesses>,
        args: StoreArgs,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        /// How long a server may take to become ready.
        const READY_WITHIN: Duration = Duration::from_secs(30);
        let Some(p) = servers else {
            return Ok(Self::Local(LocalServer::start(args).await?));
        };
        let store = BenchStore::start(args).await?;
        if p.count > 1 && !store.shareable() {
            bail!(
                "{} servers cannot share an embedded store: use --etcd-members N or --store etcd://...",
                p.count
            );
        }
        let processes = (1..=p.count)
            .map(|i| {
                let name = format!("sync-watchers-server-{i}-");
                soak::ServerProcess::start_on(&p.wyvern, &name, Some(&store.spec))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let servers = Self::Processes(processes, store);
        for (i, server) in servers.processes().iter().enumerate() {
            server.wait_ready(http).await?;
            let deadline = Instant::now() + READY_WITHIN;
            loop {
                let url = format!("{}/readyz", server.base);
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => break,
                    _ if Instant::now() > deadline => bail!("server {} is not ready", i + 1),
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Ok(servers)
    }

    fn bases(&self) -> Vec<String> {
        match self {
            Self::Local(s) => vec![s.base.clone()],
            Self::Processes(ps, _) => ps.iter().map(|p| p.base.clone()).collect(),
        }
    }

    /// The server processes (none for the in-process server).
    fn processes(&self) -> &[soak::ServerProcess] {
        match self {
            Self::Local(_) => &[],
            Self::Processes(ps, _) => ps,
        }
    }

    fn store(&self) -> &str {
        match self {
            Self::Local(s) => &s.store.label,
            Self::Processes(_, store) => &store.label,
        }
    }
}

/// Raises this process' soft limit on open files to its hard limit (thousands of streams are
/// thousands of sockets, twice as many with the server in process; server processes inherit the
/// limit); returns the soft limit now in force.
fn raise_fd_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
    }
    Ok(limit.rlim_cur)
}

/// Tasks aborted when this is dropped (the watch streams, also when the bench fails).
struct AbortOnDrop<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// VmRSS (KiB) and CPU seconds (user + system) of each process (`None`: it is gone).
fn usage_of(processes: &[soak::ServerProcess]) -> Vec<Option<(u64, f64)>> {
    processes
        .iter()
        .map(|p| slice::proc_usage(p.pid()))
        .collect()
}

/// The CPU the machine spent since `before`, all programs together, and that of the programs of
/// the bench: the servers, etcd, the bench itself (its streams' client side).
fn machine_cpu(before: &cpu::Snapshot) -> Value {
    const PROGRAMS: [&str; 3] = ["wyvern server", "etcd", "wyvern-bench"];
    let mut used = cpu::since(before, 1);
    let programs: serde_json::Map<String, Value> = used["by_program"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["program"].as_str().filter(|n| PROGRAMS.contains(n))?;
            Some((name.to_string(), p["cpu_seconds"].clone()))
        })
        .collect();
    json!({
        "window_seconds": used["window_seconds"].take(),
        "busy_cpu_seconds": used["machine_busy_cpu_seconds"].take(),
        "cpu_seconds_by_program": programs,
    })
}

fn latency_json(sorted: &[Duration]) -> Value {
    json!({
        "p50": percentile(sorted, 0.50),
        "p99": percentile(sorted, 0.99),
        "max": percentile(sorted, 1.0),
    })
}

async fn sync_watchers(
    watchers: usize,
    rounds: usize,
    processes: Option<ServerProcesses>,
    store: StoreArgs,
) -> anyhow::Result<Value> {
    /// How long one write may take to reach every stream.
    const DELIVERY_WITHIN: Duration = Duration::from_secs(30);
    /// Descriptors for everything but the streams' sockets.
    const OTHER_FDS: u64 = 256;
    // Before the servers start, so that they inherit it.
    let fd_limit = raise_fd_limit()?;
    let sockets_per_stream = if processes.is_none() { 2 } else { 1 };
    let needed = watchers as u64 * sockets_per_stream + OTHER_FDS;
    if fd_limit < needed {
        bail!(
            "{watchers} streams need about {needed} open files, the hard limit is {fd_limit} \
             (raise it: ulimit -Hn)"
        );
    }
    let load_at_start = api_growth::load_average();
    let client = reqwest::Client::new();
    let servers = WatchServers::start(processes, store, &client).await?;
    let bases = servers.bases();
    let base = bases[0].clone();
    if !servers.processes().is_empty() {
        // As the in-process server's unlimited quotas: any number of rounds.
        put(
            &client,
            &format!("{base}/v2.0/quotas/admin"),
            json!({"quota": {"network": -1, "subnet": -1, "port": -1}}),
        )
        .await
        .context("lifting the admin project's quotas")?;
    }
    let net_id = bench_network(&client, &base).await?;
    let snapshot: Value = client
        .get(format!("{base}/wyvern/v1/sync/snapshot"))
        .send()
        .await?
        .json()
        .await?;
    let after = snapshot["revision"].as_u64().context("snapshot revision")?;

    let before_streams = usage_of(servers.processes());
    let machine_before_streams = cpu::snapshot();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut watchers_on = vec![0usize; bases.len()];
    let opening = Instant::now();
    let streams = AbortOnDrop(
        (0..watchers)
            .map(|i| {
                let server = i % bases.len();
                watchers_on[server] += 1;
                let url = format!(
                    "{}/wyvern/v1/sync/watch?after={after}&network={net_id}",
                    bases[server]
                );
                let task = watcher(
                    client.clone(),
                    url,
                    server,
                    ready_tx.clone(),
                    seen_tx.clone(),
                );
                tokio::spawn(task)
            })
            .collect(),
    );
    drop((ready_tx, seen_tx));
    for _ in 0..watchers {
        ready
            .recv()
            .await
            .context("a watch stream failed to open")??;
    }
    let opened_in = opening.elapsed();
    let streams_open = usage_of(servers.processes());
    let machine_opening = machine_cpu(&machine_before_streams);

    let machine_before_rounds = cpu::snapshot();
    let rounds_started = Instant::now();
    let mut delivery = Vec::with_capacity(watchers * rounds);
    let mut delivery_on: Vec<Vec<Duration>> = vec![Vec::new(); bases.len()];
    let mut writes_via = vec![0usize; bases.len()];
    let mut writes = Vec::with_capacity(rounds);
    let mut round_p99 = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let via = round % bases.len();
        writes_via[via] += 1;
        let start = Instant::now();
        let port = post(
            &client,
            &format!("{}/v2.0/ports", bases[via]),
            json!({"port": {"network_id": net_id}}),
        )
        .await?;
        writes.push(start.elapsed());
        let key = nb_keys::Kind::Port.key(port["port"]["id"].as_str().unwrap_or_default());
        let mut this_round = Vec::with_capacity(watchers);
        while this_round.len() < watchers {
            let (server, k, at) = tokio::time::timeout(DELIVERY_WITHIN, seen.recv())
                .await
                .with_context(|| {
                    format!("{} of {watchers} streams got the write", this_round.len())
                })?
                .context("every watch stream ended")?;
            if k == key {
                let took = at.saturating_duration_since(start);
                this_round.push(took);
                delivery_on[server].push(took);
            }
        }
        this_round.sort();
        round_p99.push(percentile(&this_round, 0.99));
        delivery.extend(this_round);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rounds_took = rounds_started.elapsed();
    let at_end = usage_of(servers.processes());
    let machine_rounds = machine_cpu(&machine_before_rounds);
    drop(streams);
    delivery.sort();
    writes.sort();

    let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    let cpu = |from: Option<(u64, f64)>, to: Option<(u64, f64)>| match (from, to) {
        (Some((_, a)), Some((_, b))) => json!(((b - a) * 100.0).round() / 100.0),
        _ => Value::Null,
    };
    let rss = |u: Option<(u64, f64)>| u.map_or(Value::Null, |(kib, _)| json!(mib(kib)));
    let per_server: Vec<Value> = servers
        .processes()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            delivery_on[i].sort();
            json!({
                "server": i + 1,
                "pid": p.pid(),
                "url": p.base,
                "watchers": watchers_on[i],
                "writes_through": writes_via[i],
                "cpu_seconds": {
                    "opening_streams": cpu(before_streams[i], streams_open[i]),
                    "rounds": cpu(streams_open[i], at_end[i]),
                },
                "rss_mib": {
                    "before_streams": rss(before_streams[i]),
                    "streams_open": rss(streams_open[i]),
                    "end": rss(at_end[i]),
                },
                "delivery_latency_ms": latency_json(&delivery_on[i]),
            })
        })
        .collect();
    let mut report = json!({
        "benchmark": "sync-watchers",
        "store": servers.store(),
        "server_processes": per_server.len(),
        "watchers": watchers,
        "rounds": rounds,
        "open_files_limit": fd_limit,
        "streams_opened_seconds": opened_in.as_secs_f64(),
        "rounds_seconds": rounds_took.as_secs_f64(),
        "write_latency_ms": {"p50": percentile(&writes, 0.50), "max": percentile(&writes, 1.0)},
        "delivery_latency_ms": latency_json(&delivery),
        "delivery_p99_per_round_ms": round_p99,
        "machine_cpu": {"opening_streams": machine_opening, "rounds": machine_rounds},
        "load_average_1m": {"start": load_at_start, "end": api_growth::load_average()},
    });
    if !per_server.is_empty() {
        report["servers"] = Value::Array(per_server);
    }
    Ok(report)
}
