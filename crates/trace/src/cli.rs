//! The `wyvern trace` command line: where the topology, the VIFs and the flows come from (a lab,
//! or a server, chassis and Open vSwitch named one by one), and which packet to trace.

use std::net::IpAddr;
use std::path::PathBuf;

use chassis::Encap;
use flowsim::Mac;

use crate::inventory::Inventory;
use crate::local::{Local, compute_flows, drift};
use crate::request::{Probe, Request};
use crate::{Error, FlowSet, fetch, simulate};

/// `wyvern trace`: explain what happens to a packet, step by step, in API terms.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    wyvern trace --lab demo web1 10.0.0.12\n  \
    wyvern trace --lab demo web1 web2 --tcp 80\n  \
    wyvern trace --lab demo web1 10.0.0.12 --src-ip 10.0.0.99\n  \
    wyvern trace --lab routed web1 10.2.0.11 --ttl 1\n  \
    wyvern trace --server http://127.0.0.1:9696 --chassis c1 --computed --from-port web1 --to 10.0.0.12")]
pub struct TraceArgs {
    /// Where the packet comes from: a port (name or id), or a VM of the lab.
    #[arg(value_name = "FROM")]
    pub from: Option<String>,
    /// Where it goes: an IP address, or a port or VM whose address is used.
    #[arg(value_name = "TO")]
    pub to: Option<String>,
    /// Same as FROM.
    #[arg(long = "from-port", value_name = "PORT", conflicts_with = "from")]
    pub from_port: Option<String>,
    /// Same as TO.
    #[arg(long = "to", value_name = "IP_OR_PORT", conflicts_with = "to")]
    pub to_opt: Option<String>,
    /// A lab (`wyvern lab up`): its server, and the chassis and Open vSwitch of the source VM.
    #[arg(long)]
    pub lab: Option<String>,
    /// The server's URL (default: the lab's, else http://127.0.0.1:9696).
    #[arg(long)]
    pub server: Option<String>,
    /// The chassis to trace on (default: the one the source port is bound to).
    #[arg(long)]
    pub chassis: Option<String>,
    /// The chassis' Open vSwitch run directory (default: the lab's, else /var/run/openvswitch).
    #[arg(long)]
    pub ovs_rundir: Option<PathBuf>,
    /// The chassis' OVSDB endpoint (default: unix:RUNDIR/db.sock).
    #[arg(long)]
    pub ovsdb: Option<String>,
    /// The integration bridge.
    #[arg(long, default_value = "br-int")]
    pub bridge: String,
    /// The tunnel encapsulation the agent uses: geneve or vxlan (default: the lab's, else geneve).
    #[arg(long)]
    pub encap: Option<Encap>,
    /// Send a TCP SYN to this port instead of an ICMP echo request.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["udp", "arp"])]
    pub tcp: Option<u16>,
    /// Send a UDP datagram to this port.
    #[arg(long, value_name = "PORT", conflicts_with = "arp")]
    pub udp: Option<u16>,
    /// Send an ARP request (IPv6: a neighbour solicitation) for the destination address.
    #[arg(long)]
    pub arp: bool,
    /// Source IP instead of the port's (e.g. to see a spoofed packet dropped).
    #[arg(long, value_name = "IP")]
    pub src_ip: Option<IpAddr>,
    /// Source MAC instead of the port's.
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<Mac>,
    /// TTL (IPv6: hop limit) instead of 64, e.g. 1 to see a router's "time exceeded".
    #[arg(long, value_name = "TTL", conflicts_with = "arp")]
    pub ttl: Option<u8>,
    /// Trace through the flows br-int holds (the default when it is reachable).
    #[arg(long, conflicts_with = "computed")]
    pub from_switch: bool,
    /// Trace through the flows the pipeline computes from the server's topology (no OVS needed).
    #[arg(long)]
    pub computed: bool,
}

impl TraceArgs {
    fn probe(&self) -> Probe {
        match (self.tcp, self.udp, self.arp) {
            (Some(p), _, _) => Probe::Tcp(p),
            (_, Some(p), _) => Probe::Udp(p),
            (_, _, true) => Probe::Arp,
            _ => Probe::Echo,
        }
    }
}

/// Where things are, after the lab (if any) and the defaults are applied.
struct Places {
    server: String,
    lab: Option<lab::State>,
}

fn load_lab(name: &str) -> Result<lab::State, Error> {
    lab::names::check_lab_name(name).map_err(|e| Error::Lab(e.to_string()))?;
    let dir = lab::names::state_dir(name);
    match lab::State::load(&dir) {
        Ok(Some(s)) => Ok(s),
        Ok(None) => {
            let labs = lab::names::labs();
            let known = if labs.is_empty() {
                "no lab is up".to_string()
            } else {
                format!("labs: {}", labs.join(", "))
            };
            Err(Error::Lab(format!(
                "no lab named {name:?} ({} has no state.json; {known})",
                dir.display()
            )))
        }
        Err(e) => Err(Error::Lab(format!("lab {name}: {e}"))),
    }
}

fn places(args: &TraceArgs) -> Result<Places, Error> {
    let lab = args.lab.as_deref().map(load_lab).transpose()?;
    let server = match (&args.server, &lab) {
        (Some(s), _) => s.clone(),
        (None, Some(l)) => match &l.server_listen {
            Some(addr) => format!("http://{addr}"),
            None => return Err(Error::Lab(format!("lab {} has no server", l.name))),
        },
        (None, None) => "http://127.0.0.1:9696".into(),
    };
    Ok(Places { server, lab })
}

/// Runs `wyvern trace` and returns the report's text.
pub fn run(args: &TraceArgs) -> Result<String, Error> {
    let from = args
        .from
        .clone()
        .or_else(|| args.from_port.clone())
        .ok_or_else(|| {
            Error::Input("where does the packet come from? wyvern trace [--lab LAB] FROM TO".into())
        })?;
    let to = args
        .to
        .clone()
        .or_else(|| args.to_opt.clone())
        .ok_or_else(|| {
            Error::Input("where does the packet go? wyvern trace [--lab LAB] FROM TO".into())
        })?;
    let places = places(args)?;
    let req = Request {
        from,
        to,
        probe: args.probe(),
        src_ip: args.src_ip,
        src_mac: args.src_mac,
        ttl: args.ttl,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(run_async(args, &places, &req))
}

async fn run_async(args: &TraceArgs, places: &Places, req: &Request) -> Result<String, Error> {
    let mut inv = fetch::snapshot(&places.server).await?;
    if let Some(l) = &places.lab {
        inv.vms = l
            .vms
            .iter()
            .map(|(name, vm)| (vm.port_id.clone(), name.clone()))
            .collect();
    }
    let source = inv.find_port(&req.from)?.clone();
    let lab_vm = places.lab.as_ref().and_then(|l| {
        l.vms
            .values()
            .find(|vm| vm.port_id == source.id)
            .map(|vm| vm.chassis.clone())
    });
    let chassis = args
        .chassis
        .clone()
        .or(lab_vm)
        .or_else(|| source.host.clone())
        .ok_or_else(|| {
            Error::Input(format!(
                "{} is bound to no chassis; say which with --chassis",
                inv.port_label(&source)
            ))
        })?;
    let lab_chassis = match &places.lab {
        Some(l) => Some(l.chassis.get(&chassis).ok_or_else(|| {
            Error::Input(format!(
                "lab {} has no chassis {chassis:?} (it has {})",
                l.name,
                l.chassis.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?),
        None => None,
    };
    let rundir = args
        .ovs_rundir
        .clone()
        .or_else(|| lab_chassis.map(|c| c.rundir.clone()))
        .unwrap_or_else(|| PathBuf::from("/var/run/openvswitch"));
    let ovsdb = args
        .ovsdb
        .clone()
        .unwrap_or_else(|| format!("unix:{}", rundir.join("db.sock").display()));
    let encap = match (args.encap, &places.lab) {
        (Some(e), _) => e,
        (None, Some(l)) => l.encap.parse().unwrap_or(Encap::Geneve),
        (None, None) => Encap::Geneve,
    };
    let target = fetch::mgmt_target(&rundir, &args.bridge);
    let switch = if args.computed {
        None
    } else {
        match fetch::switch_flows(&target).await {
            Ok(flows) => Some(flows),
            Err(e) if args.from_switch => return Err(e),
            Err(e) => {
                eprintln!("note: {e}; tracing through computed flows instead");
                None
            }
        }
    };
    let (local, flows) = match switch {
        Some(mut flows) => {
            let local = fetch::local(&ovsdb, &chassis, encap.port_name()).await?;
            flows
                .remarks
                .push(drift(&flows.flows, &compute_flows(&inv, &local)));
            (local, flows)
        }
        None => computed(&inv, &chassis, &ovsdb, encap, &source.id).await,
    };
    let report = simulate(&inv, &local, flows, req)?;
    Ok(report.to_string())
}

/// The VIFs (from OVSDB if it answers, else from the bindings) and the computed flows; the
/// source port is assumed plugged in if it is not (what would happen if it were here).
async fn computed(
    inv: &Inventory,
    chassis: &str,
    ovsdb: &str,
    encap: Encap,
    source: &str,
) -> (Local, FlowSet) {
    let mut local = match fetch::local(ovsdb, chassis, encap.port_name()).await {
        Ok(l) => l,
        Err(e) => {
            let mut l = Local::from_bindings(inv, chassis);
            l.origin = format!("{} — {e}", l.origin);
            l
        }
    };
    if local.assume_vif(source)
        && let Some(ofport) = local.vifs.get(source)
    {
        local.origin = format!(
            "{}; the source port has no VIF here and is assumed plugged in on OpenFlow port {ofport}",
            local.origin
        );
    }
    let flows = compute_flows(inv, &local);
    let origin = format!(
        "{} flows computed by the pipeline from the server's topology at revision {} (what should be installed)",
        flows.len(),
        inv.revision
    );
    (
        local,
        FlowSet {
            flows,
            groups: vec![],
            origin,
            remarks: vec![],
        },
    )
}
