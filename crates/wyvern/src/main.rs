//! The `wyvern` command: one binary with a subcommand per role (`server`, `agent`, `lab`, `trace`,
//! `k8s`, and `supervise`, which the lab runs its agents under).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wyvern",
    version,
    about = "Wyvern, a distributed SDN controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Neutron-compatible northbound API.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9696")]
        listen: String,
        /// Northbound store: `embedded:PATH` (default) or `etcd://HOST:PORT[,HOST:PORT...]`.
        #[arg(long, default_value = "embedded:wyvern.redb")]
        store: String,
        /// Server configuration file (JSON): `{"auth": {"tokens": {"TOKEN": {"project_id": "...",
        /// "roles": ["admin"]}}, "keystone": {"url": "http://HOST:5000/v3", "cache_seconds": 60}}}`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the agent of one chassis: program its br-int from the northbound topology.
    Agent(AgentArgs),
    /// Run a local lab: server, chassis with Open vSwitch, agents and VMs in namespaces.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
    /// Explain what happens to a packet on a chassis, step by step, in API terms.
    Trace(trace::TraceArgs),
    /// Run the Kubernetes controller: pods, services and network policies as ports, load
    /// balancers and security groups.
    K8s(k8s::K8sArgs),
    /// Run a program and start it again whenever it ends, after a backoff (what the lab runs
    /// each agent under; on a host, the systemd units in dist/ do this).
    Supervise(lab::supervise::SuperviseArgs),
}

/// Runs the command; an error is the user's to fix (a bad argument, an unreachable server, a
/// failed lab): its message is printed, with its causes, and no backtrace (bugs panic, and a
/// panic keeps its backtrace under `RUST_BACKTRACE`).
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Server {
            listen,
            store,
            config,
        } => run_server(&listen, &store, config.as_deref()),
        Command::Agent(args) => {
            let config = args.into_config()?;
            // One thread: the agent's work is small and ordered, and a single thread keeps
            // its memory small (no per-thread allocator arenas). Only a large batch's pipeline
            // computation (a snapshot at start) is shared out over the cores, for its duration.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(agent::run(config))?;
            Ok(())
        }
        Command::Lab { command } => Ok(lab::run(command)?),
        Command::Trace(args) => {
            print!("{}", trace::run(&args)?);
            Ok(())
        }
        Command::K8s(args) => Ok(k8s::run_cli(&args)?),
        // On the main thread: the child dies with the thread that started it.
        Command::Supervise(args) => Ok(lab::supervise::run(&args)?),
    }
}

/// `wyvern agent` options.
#[derive(clap::Args)]
struct AgentArgs {
    /// The server's URL, or several comma-separated (servers on one etcd): the agent uses one and
    /// moves to another when it stops answering.
    #[arg(long, default_value = "http://127.0.0.1:9696")]
    server: String,
    /// This chassis' id (unique among chassis).
    #[arg(long)]
    chassis: String,
    /// OVSDB endpoint of the local Open vSwitch (`unix:PATH` or `tcp:HOST:PORT`).
    #[arg(long, default_value = "unix:/var/run/openvswitch/db.sock")]
    ovsdb: String,
    /// Open vSwitch run directory (where `br-int.mgmt` lives).
    #[arg(long, default_value = "/var/run/openvswitch")]
    ovs_rundir: PathBuf,
    /// Underlay (tunnel endpoint) address of this chassis.
    #[arg(long)]
    tunnel_ip: std::net::IpAddr,
    /// Tunnel encapsulation: geneve or vxlan.
    #[arg(long, default_value = "geneve")]
    encap: String,
    /// Integration bridge.
    #[arg(long, default_value = "br-int")]
    bridge: String,
    /// Datapath type of the bridges the agent creates (`netdev`: userspace).
    #[arg(long, default_value = "netdev")]
    datapath_type: String,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Provider networks and the OVS bridges that reach them, comma-separated
    /// `physnet:bridge` (e.g. `physnet1:br-ex`); the agent creates the bridges and patches them
    /// to the integration bridge.
    #[arg(long, default_value = "")]
    bridge_mappings: String,
    /// This chassis may host centralized router gateways (centralized SNAT).
    #[arg(long)]
    gateway: bool,
}

impl AgentArgs {
    fn into_config(self) -> anyhow::Result<agent::AgentConfig> {
        Ok(agent::AgentConfig {
            encap: self.encap.parse().context("--encap")?,
            server: self.server,
            chassis: self.chassis,
            ovsdb: self.ovsdb,
            ovs_rundir: self.ovs_rundir,
            tunnel_ip: self.tunnel_ip,
            bridge: self.bridge,
            datapath_type: self.datapath_type,
            metrics_listen: self.metrics_listen,
            bridge_mappings: chassis::BridgeMapping::parse_list(&self.bridge_mappings)
                .context("--bridge-mappings")?,
            gateway: self.gateway,
        })
    }
}

/// Connections the kernel queues for the server before it accepts them (the kernel caps it at
/// `net.core.somaxconn`): agents reconnecting all at once after a failover overflowed the 128 of
/// `TcpListener::bind`, and each connection dropped so waits a second before it tries again (the
/// fan-out bench, docs/benchmarks.md).
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on the first address `listen` names that can be bound.
async fn listen_on(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let mut failed = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => anyhow::bail!("{listen} names no address"),
    }
}

fn run_server(listen: &str, store: &str, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config: api::ApiConfig = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => api::ApiConfig::default(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = store::open(store).with_context(|| format!("opening store {store}"))?;
        let listener = listen_on(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        tracing::info!(
            "serving the Neutron API on http://{}",
            listener.local_addr()?
        );
        api::serve(listener, store, config).await?;
        Ok(())
    })
}
