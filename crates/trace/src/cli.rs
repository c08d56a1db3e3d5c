//! The `wyvern trace` command line: where the topology, the VIFs and the flows come from (a lab,
//! or a server, chassis and Open vSwitch named one by one), and which packet to trace.

use std::net::IpAddr;
use std::path::PathBuf;

use chassis::Encap;
use flowsim::Mac;

use crate::inventory::Inventory;
use crate::local::{Local, compute_flows, drift};
use crate::request::{self, ArpKind, Built, DhcpKind, FromTunnel, Probe, Request};
use crate::{Error, FlowSet, fetch, report};

/// `wyvern trace`: explain what happens to a packet, step by step, in API terms.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    wyvern trace web1 10.0.0.12                      # the only lab's VM web1\n  \
    wyvern trace --lab demo web1 web2 --tcp 80\n  \
    wyvern trace --lab demo web1 10.0.0.12 --src-ip 10.0.0.99\n  \
    wyvern trace --lab demo web1 --arp probe\n  \
    wyvern trace --lab demo web1 --dhcp renew\n  \
    wyvern trace --lab demo web2 web1 --from-tunnel c2\n  \
    wyvern trace --lab routed web1 10.2.0.11 --ttl 1\n  \
    wyvern trace --lab demo web2 web1 --tcp 80 --ct-state est,rpl  # a reply\n  \
    wyvern trace --server http://127.0.0.1:9696 --chassis c1 --computed --from-port web1 --to 10.0.0.12")]
pub struct TraceArgs {
    /// Where the packet comes from: a port (name, id or short id), or a VM of the lab.
    #[arg(value_name = "FROM")]
    pub from: Option<String>,
    /// Where it goes: an IP address, or a port or VM whose address is used (none for DHCP and
    /// gratuitous ARP).
    #[arg(value_name = "TO")]
    pub to: Option<String>,
    /// Same as FROM.
    #[arg(long = "from-port", value_name = "PORT", conflicts_with = "from")]
    pub from_port: Option<String>,
    /// Same as TO.
    #[arg(long = "to", value_name = "IP_OR_PORT", conflicts_with = "to")]
    pub to_opt: Option<String>,
    /// A lab (`wyvern lab up`): its server, and the chassis and Open vSwitch of the source VM
    /// (default: the only lab, unless --server is given).
    #[arg(long)]
    pub lab: Option<String>,
    /// The server's URL (default: the lab's, else http://127.0.0.1:9696).
    #[arg(long)]
    pub server: Option<String>,
    /// The chassis to trace on (default: the one the source port is bound to; from the tunnel,
    /// the destination port's).
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
    #[arg(long, value_name = "PORT", conflicts_with_all = ["udp", "arp", "dhcp"])]
    pub tcp: Option<u16>,
    /// Send a UDP datagram to this port.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["arp", "dhcp"])]
    pub udp: Option<u16>,
    /// Send an ARP packet (IPv6: its neighbour discovery counterpart): a request for the
    /// destination address (the default), a reply to it, a probe (duplicate address detection)
    /// or a gratuitous ARP for the port's address.
    #[arg(long, value_name = "KIND", num_args = 0..=1, default_missing_value = "request",
          conflicts_with = "dhcp")]
    pub arp: Option<ArpKind>,
    /// Send a DHCP message as a client does: discover or request (broadcast from 0.0.0.0), or
    /// renew (unicast to the DHCP server).
    #[arg(long, value_name = "KIND")]
    pub dhcp: Option<DhcpKind>,
    /// Source IP instead of the port's (e.g. to see a spoofed packet dropped).
    #[arg(long, value_name = "IP")]
    pub src_ip: Option<IpAddr>,
    /// Source MAC instead of the port's.
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<Mac>,
    /// Destination MAC instead of the one a VM would send to.
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Option<Mac>,
    /// Tag the frame with this VLAN id (802.1Q).
    #[arg(long, value_name = "VID")]
    pub vlan: Option<u16>,
    /// TTL (IPv6: hop limit) instead of 64, e.g. 1 to see a router's "time exceeded".
    #[arg(long, value_name = "TTL", conflicts_with_all = ["arp", "dhcp"])]
    pub ttl: Option<u8>,
    /// The connection state conntrack gives the packet at each `ct` (as `ofproto/trace
    /// --ct-next`): `new`, `est` (a further packet of an established connection), `est,rpl` (a
    /// reply), `rel` (related, e.g. an ICMP error) or `inv`. Default: its own state; each
    /// trace starts with no connections, so an IP packet is a new connection (a TCP packet
    /// without SYN is invalid).
    #[arg(long, value_name = "FLAGS", value_parser = request::parse_ct_state)]
    pub ct_state: Option<u32>,
    /// The packet arrives over the tunnel from this chassis (default: the source port's), as
    /// the source port's packet sent to this chassis.
    #[arg(long, value_name = "CHASSIS", num_args = 0..=1, default_missing_value = "")]
    pub from_tunnel: Option<String>,
    /// The VNI it arrives with: a number, or a network whose VNI to use (default: the source
    /// port's network's); implies --from-tunnel.
    #[arg(long, value_name = "VNI_OR_NETWORK")]
    pub vni: Option<String>,
    /// Trace through the flows br-int holds (the default when it is reachable).
    #[arg(long, conflicts_with = "computed")]
    pub from_switch: bool,
    /// Trace through the flows the pipeline computes from the server's topology (no OVS needed).
    #[arg(long)]
    pub computed: bool,
}

impl TraceArgs {
    fn probe(&self) -> Probe {
        match (self.tcp, self.udp, self.arp, self.dhcp) {
            (Some(p), ..) => Probe::Tcp(p),
            (_, Some(p), ..) => Probe::Udp(p),
            (_, _, Some(k), _) => Probe::Arp(k),
            (.., Some(k)) => Probe::Dhcp(k),
            _ => Probe::Echo,
        }
    }

    fn tunnel(&self) -> Option<FromTunnel> {
        if self.from_tunnel.is_none() && self.vni.is_none() {
            return None;
        }
        Some(FromTunnel {
            chassis: self.from_tunnel.clone().filter(|c| !c.is_empty()),
            vni: self.vni.clone(),
        })
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

/// The lab meant without `--lab`: none when a server is named, else the only lab that is up
/// (as `wyvern lab exec` picks it), none when no lab is up.
fn default_lab(args: &TraceArgs) -> Result<Option<String>, Error> {
    if args.lab.is_some() || args.server.is_some() {
        return Ok(args.lab.clone());
    }
    match lab::names::labs().as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(Error::Lab(format!(
            "several labs are up ({}); name one with --lab",
            many.join(", ")
        ))),
    }
}

fn places(args: &TraceArgs) -> Result<Places, Error> {
    let lab = default_lab(args)?.as_deref().map(load_lab).transpose()?;
    let server = match (&args.server, &lab) {
        (Some(s), _) => s.clone(),
        (None, Some(l)) => match l.servers.first() {
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
    let places = places(args)?;
    let req = Request {
        from,
        to: args.to.clone().or_else(|| args.to_opt.clone()),
        probe: args.probe(),
        src_ip: args.src_ip,
        src_mac: args.src_mac,
        dst_mac: args.dst_mac,
        vlan: args.vlan,
        ttl: args.ttl,
        tunnel: args.tunnel(),
        ct_state: args.ct_state,
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
    let built = request::build(&inv, req)?;
    // The port whose chassis it is traced on: the source's, or the destination's for a packet
    // from the tunnel.
    let (on, role) = match (&built.arrival, &built.target) {
        (None, _) => (Some(&built.source), "the source port"),
        (Some(_), target) => (target.as_ref(), "the destination"),
    };
    let lab_vm = places.lab.as_ref().and_then(|l| {
        l.vms
            .values()
            .find(|vm| on.is_some_and(|p| vm.port_id == p.id))
            .map(|vm| vm.chassis.clone())
    });
    let chassis = args
        .chassis
        .clone()
        .or(lab_vm)
        .or_else(|| on.and_then(|p| p.host.clone()))
        .ok_or_else(|| {
            let which = match on {
                Some(p) => format!("{} is bound to no chassis", inv.port_label(p)),
                None => format!("{role} is no port"),
            };
            Error::Input(format!(
                "{which}; say which chassis to trace on with --chassis"
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
        None => computed(&inv, &chassis, &ovsdb, encap, &built).await,
    };
    let report = report(&inv, &local, flows, &built)?;
    Ok(report.to_string())
}

/// The VIFs (from OVSDB if it answers, else from the bindings) and the computed flows; the
/// source port of a packet from its VIF is assumed plugged in if it is not (what would happen
/// if it were here).
async fn computed(
    inv: &Inventory,
    chassis: &str,
    ovsdb: &str,
    encap: Encap,
    built: &Built,
) -> (Local, FlowSet) {
    let mut local = match fetch::local(ovsdb, chassis, encap.port_name()).await {
        Ok(l) => l,
        Err(e) => {
            let mut l = Local::from_bindings(inv, chassis);
            l.origin = format!("{} — {e}", l.origin);
            l
        }
    };
    let source = &built.source.id;
    if built.arrival.is_none()
        && local.assume_vif(source)
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
