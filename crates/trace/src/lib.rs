//! `wyvern trace`: what happens to a packet on a chassis, step by step, in API terms.
//!
//! The packet is described as an operator thinks of it — from a port (or lab VM) to an IP
//! address or another port, ICMP echo, TCP, UDP, ARP (request, reply, probe, gratuitous) or
//! DHCP, from the port's VIF or over the tunnel from another chassis — and built as the VM
//! would send it ([`request`]). The flows come either from the switch (`br-int` as it is, dumped over
//! OpenFlow) or from the pure pipeline over the server's topology (what the agent would
//! install, [`local::compute_flows`]). The simulator ([`flowsim`]) walks them; every step is
//! printed with its table and stage ([`pipeline::tables`]), flow and owning API object (from the
//! cookie, [`inventory`]); the way through routers is told in API terms ([`path`]: the router
//! entered, the route taken, the next hop), so are the security groups ([`acl`]: the connection
//! state and the rule that admitted the packet, or that none did), and so is the verdict
//! ([`explain`]): delivered to a
//! port, sent over the tunnel to a chassis for a port, answered by the ARP responder or a router,
//! sent to the agent and why, or dropped and why.
//!
//! * [`inventory`]: the server's topology from a sync snapshot, names and lookups.
//! * [`request`]: packet construction.
//! * [`local`]: the chassis' VIFs and tunnel, and the computed flows.
//! * [`path`]: the way through routers.
//! * [`acl`]: the security groups.
//! * [`explain`]: the verdict.
//! * [`fetch`]: talking to the server, OVSDB and the switch.
//! * [`cli`]: the `wyvern trace` command line.

pub mod acl;
pub mod cli;
pub mod explain;
pub mod fetch;
pub mod inventory;
pub mod local;
pub mod path;
pub mod request;

use std::fmt;

use openflow::Flow;
use openflow::message::Group;

pub use cli::{TraceArgs, run};
pub use inventory::Inventory;
pub use local::{Local, compute_flows, drift};
pub use request::{ArpKind, Built, DhcpKind, FromTunnel, Probe, Request};

/// Errors of `wyvern trace`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: an unknown port or VM, a malformed address, a missing option.
    #[error("{0}")]
    Input(String),
    /// The named lab does not exist or its state is unreadable.
    #[error("{0}")]
    Lab(String),
    /// The server could not be asked, or answered nonsense.
    #[error("server: {0}")]
    Server(String),
    /// OVSDB could not be asked.
    #[error("OVSDB {endpoint}: {why}")]
    Ovsdb {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        why: String,
    },
    /// The switch could not be asked.
    #[error("switch {target}: {why}")]
    Switch {
        /// The OpenFlow target.
        target: String,
        /// What went wrong.
        why: String,
    },
    /// The flows cannot be simulated.
    #[error("the flows cannot be simulated: {0}")]
    Flows(#[from] flowsim::Error),
    /// No async runtime could be started.
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Flows to trace through, and where they come from.
#[derive(Debug, Clone, Default)]
pub struct FlowSet {
    /// The flows.
    pub flows: Vec<Flow>,
    /// The groups.
    pub groups: Vec<Group>,
    /// Where they come from, for the report.
    pub origin: String,
    /// More about them (how they differ from the computed ones), for the report.
    pub remarks: Vec<String>,
}

/// A finished trace.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was traced: chassis, flow source, packet, how its addresses were chosen.
    pub header: Vec<String>,
    /// The simulator's record.
    pub trace: flowsim::Trace,
    /// The steps, rendered with each table's stage and each flow's owner.
    pub steps: String,
    /// The way through routers in API terms, one sentence per line (empty if none routed it).
    pub path: Vec<String>,
    /// The security groups in API terms, one sentence per direction filtered (empty if none).
    pub security: Vec<String>,
    /// The verdict in API terms, one sentence per line.
    pub verdict: Vec<String>,
}

impl Report {
    /// The verdict as one text.
    pub fn verdict_text(&self) -> String {
        self.verdict.join("\n")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for h in &self.header {
            writeln!(f, "{h}")?;
        }
        writeln!(f)?;
        f.write_str(&self.steps)?;
        writeln!(f)?;
        if !self.path.is_empty() {
            writeln!(f, "Path in API terms:")?;
            for p in &self.path {
                writeln!(f, "  {p}")?;
            }
            writeln!(f)?;
        }
        if !self.security.is_empty() {
            writeln!(f, "Security groups in API terms:")?;
            for s in &self.security {
                writeln!(f, "  {s}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "Verdict in API terms:")?;
        for v in &self.verdict {
            writeln!(f, "  {v}")?;
        }
        Ok(())
    }
}

/// The simulator's tables for `flows` on the chassis `local`: outputs to its tunnel port carry
/// the tunnel fields, sent from its tunnel address; its subports' patch pairs lead back in.
pub fn tables(flows: &FlowSet, local: &Local) -> Result<flowsim::FlowTables, Error> {
    let mut tables = flowsim::FlowTables::new(flows.flows.iter().cloned(), flows.groups.clone())?;
    for (outer, inner) in local.patch_pairs() {
        tables = tables.with_patch_pair(outer, inner);
    }
    Ok(match (local.tunnel, local.tunnel_ip) {
        (Some(t), Some(ip)) => tables.with_tunnel_local_ip(t, ip),
        (Some(t), None) => tables.with_tunnel_port(t),
        (None, _) => tables,
    })
}

/// The VLAN id the traced packet came in with, if it was tagged.
fn packet_vlan(trace: &flowsim::Trace) -> Option<u16> {
    trace.packet.vlans().first().map(|t| t.vid)
}

/// Traces the packet `req` describes through `flows` on the chassis `local`, naming things
/// after `inv`.
pub fn simulate(
    inv: &Inventory,
    local: &Local,
    flows: FlowSet,
    req: &Request,
) -> Result<Report, Error> {
    report(inv, local, flows, &request::build(inv, req)?)
}

/// Traces the packet `built` through `flows` on the chassis `local`, naming things after `inv`;
/// conntrack gives the packet the state `built.ct_state` if set, else its own (a new
/// connection: the simulator holds none before it).
pub fn report(
    inv: &Inventory,
    local: &Local,
    flows: FlowSet,
    built: &Built,
) -> Result<Report, Error> {
    let (in_port, packet) = built.enter(inv, local)?;
    let tables = tables(&flows, local)?;
    let mut sim = flowsim::Simulator::new(&tables);
    sim.conntrack_mut().force_state(built.ct_state);
    let trace = sim.trace(in_port, packet);
    let mut header = vec![format!("Chassis {}: {}", local.chassis, flows.origin)];
    header.extend(flows.remarks.iter().map(|r| format!("  {r}")));
    header.extend([
        format!("VIFs and tunnel port: {}", local.origin),
        request::describe(inv, built),
    ]);
    header.extend(built.notes.iter().map(|n| format!("  {n}")));
    if let Some(state) = built.ct_state {
        header.push(format!(
            "  conntrack takes it as {} (--ct-state)",
            request::ct_state_text(state)
        ));
    }
    if !inv.malformed.is_empty() {
        header.push(format!(
            "Left out as malformed (as the agent leaves them out): {}",
            inv.malformed.join(", ")
        ));
    }
    let through = match (&built.arrival, packet_vlan(&trace)) {
        (Some(a), _) => format!("the tunnel port, from chassis {}", a.chassis.id),
        // A subport's packets come in through its trunk's parent, tagged.
        (None, Some(vid)) if local.vifs.get(&built.source.id) != Some(&in_port) => format!(
            "the parent port of {}'s trunk, tagged with VLAN {vid}",
            inv.port_label(&built.source)
        ),
        (None, _) => inv.port_label(&built.source),
    };
    header.push(format!(
        "It enters br-int on OpenFlow port {in_port} ({through})."
    ));
    let steps = trace
        .display(|cookie| Some(inv.describe_cookie(cookie)))
        .tables(explain::stage_name)
        .to_string();
    let path = path::path(inv, &trace);
    let security = acl::security(inv, local, &trace);
    let verdict = explain::verdict(inv, local, built, &trace);
    Ok(Report {
        header,
        trace,
        steps,
        path,
        security,
        verdict,
    })
}
