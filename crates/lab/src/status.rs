//! `wyvern lab status`: what of a lab runs, read from its state file and checked against the
//! processes and namespaces that exist.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use testbed::{Daemon, Netns};

use crate::lab::control::Service;
use crate::lab::{agent_supervision, supervised_agent};
use crate::names;
use crate::state::{ExternalState, State, VmState};
use crate::supervise::Supervision;
use crate::topology::describe_routes;
use crate::{Error, Result};

/// A lab as it is now.
#[derive(Debug, Clone)]
pub struct Status {
    /// The lab's state (what `up` made).
    pub state: State,
    /// Its state directory.
    pub dir: PathBuf,
    /// The etcd members (if any), then the servers.
    pub services: Vec<ServiceStatus>,
    /// Per chassis (by name): PIDs of ovsdb-server, ovs-vswitchd and the agent, if running.
    pub chassis: Vec<ChassisStatus>,
    /// Per VM: whether its namespace exists.
    pub vms: Vec<(String, VmState, bool)>,
    /// Per physical segment (by name): PIDs of its switch's ovsdb-server and ovs-vswitchd.
    pub physical: Vec<ChassisStatus>,
    /// Per external host: whether its namespace exists.
    pub externals: Vec<(String, ExternalState, bool)>,
    /// Per VM with tiny servers (`serve`): the PID of its server, if it runs.
    pub serving: BTreeMap<String, Option<u32>>,
}

/// An etcd member or a server as it is now.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    /// Name (`etcd-N`, `server-N`).
    pub name: String,
    /// Where clients reach it (a server's URL, a member's `127.0.0.1:PORT`).
    pub address: String,
    /// PID, if it runs.
    pub pid: Option<u32>,
}

/// One chassis (or a physical segment's switch) as it is now.
#[derive(Debug, Clone)]
pub struct ChassisStatus {
    /// Name.
    pub name: String,
    /// PID of `ovsdb-server`.
    pub ovsdb: Option<u32>,
    /// PID of `ovs-vswitchd`.
    pub vswitchd: Option<u32>,
    /// PID of the agent (none for a segment).
    pub agent: Option<u32>,
    /// What the agent's supervisor recorded (restarts, how the agent last ended), if the
    /// supervisor runs (none for a segment).
    pub supervision: Option<Supervision>,
}

/// The state of lab `name`; an error that says there is no such lab if it has none.
pub(crate) fn existing(name: &str) -> Result<State> {
    names::check_lab_name(name)?;
    let dir = names::state_dir(name);
    State::load(&dir)?.ok_or_else(|| {
        Error::NotFound(format!(
            "no lab {name} (no {}; `wyvern lab status` lists the labs)",
            State::path(&dir).display()
        ))
    })
}

/// The status of lab `name`.
pub fn status(name: &str) -> Result<Status> {
    let state = existing(name)?;
    let dir = names::state_dir(name);
    let marker = names::marker(name);
    let chassis = state
        .chassis
        .iter()
        .map(|(c, s)| {
            let supervision = agent_supervision(&dir, c, &marker);
            ChassisStatus {
                name: c.clone(),
                ovsdb: Daemon::running(&s.rundir.join("ovsdb-server.pid"), &marker),
                vswitchd: Daemon::running(&s.rundir.join("ovs-vswitchd.pid"), &marker),
                agent: supervision
                    .as_ref()
                    .and_then(|s| supervised_agent(s, &marker)),
                supervision,
            }
        })
        .collect();
    let vms = state
        .vms
        .iter()
        .map(|(n, v)| (n.clone(), v.clone(), Netns::exists(&v.netns)))
        .collect();
    let physical = state
        .physical
        .iter()
        .map(|(p, s)| ChassisStatus {
            name: p.clone(),
            ovsdb: Daemon::running(&s.rundir.join("ovsdb-server.pid"), &marker),
            vswitchd: Daemon::running(&s.rundir.join("ovs-vswitchd.pid"), &marker),
            agent: None,
            supervision: None,
        })
        .collect();
    let externals = state
        .externals
        .iter()
        .map(|(n, e)| (n.clone(), e.clone(), Netns::exists(&e.netns)))
        .collect();
    let serving = state
        .serve
        .keys()
        .map(|vm| {
            let pid = Daemon::running(&dir.join(format!("serve-{vm}.pid")), &marker);
            (vm.clone(), pid)
        })
        .collect();
    let service = |name: String, address: String| ServiceStatus {
        pid: Daemon::running(&dir.join(format!("{name}.pid")), &marker),
        name,
        address,
    };
    let members = state.etcd.iter().enumerate().map(|(i, m)| {
        service(
            Service::Etcd(i).to_string(),
            format!("127.0.0.1:{}", m.client_port),
        )
    });
    let servers = state
        .servers
        .iter()
        .enumerate()
        .map(|(i, l)| service(Service::Server(i).to_string(), format!("http://{l}")));
    let services = members.chain(servers).collect();
    Ok(Status {
        services,
        dir,
        chassis,
        vms,
        physical,
        externals,
        serving,
        state,
    })
}

impl Status {
    /// What of the lab runs or exists, in one line: services, chassis, agents, segments,
    /// external hosts and VMs that run, and the networks and routers made in the API.
    pub fn summary(&self) -> String {
        let s = &self.state;
        let switches = |c: &[ChassisStatus]| {
            listed(c.iter().filter(|c| c.vswitchd.is_some()).map(|c| &c.name))
        };
        let parts = [
            (
                "services",
                listed(
                    self.services
                        .iter()
                        .filter(|v| v.pid.is_some())
                        .map(|v| &v.name),
                ),
            ),
            ("chassis", switches(&self.chassis)),
            (
                "agents on",
                listed(
                    self.chassis
                        .iter()
                        .filter(|c| c.agent.is_some())
                        .map(|c| &c.name),
                ),
            ),
            ("physical segments", switches(&self.physical)),
            (
                "external hosts",
                listed(self.externals.iter().filter(|e| e.2).map(|e| &e.0)),
            ),
            ("vms", listed(self.vms.iter().filter(|v| v.2).map(|v| &v.0))),
            ("networks", listed(s.networks.keys())),
            ("routers", listed(s.routers.keys())),
            ("load balancers", listed(s.load_balancers.keys())),
            ("port chains", listed(s.port_chains.keys())),
        ];
        let parts: Vec<String> = parts
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(label, names)| format!("{label} {names}"))
            .collect();
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Names, separated by spaces.
fn listed<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(String::as_str).collect::<Vec<_>>().join(" ")
}

fn pid(p: Option<u32>) -> String {
    p.map_or_else(|| "DOWN".to_owned(), |p| format!("pid {p}"))
}

/// A supervised agent: `pid 12 (restarts 1, last: pid 9 killed by signal 9 (SIGKILL) 3 s
/// ago)`, `restarting (...)` while its supervisor waits to start it again.
fn supervised(agent: Option<u32>, s: &Supervision) -> String {
    let running = agent.map_or_else(|| "restarting".to_owned(), |p| format!("pid {p}"));
    let last = s.last_exit.as_ref().map_or_else(String::new, |e| {
        format!(", last: pid {} {e} {} s ago", e.pid, e.ago().as_secs())
    });
    format!("{running} (restarts {}{last})", s.restarts)
}

fn missing(present: bool) -> &'static str {
    if present { "" } else { "  NAMESPACE MISSING" }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.state;
        let from = s
            .file
            .as_ref()
            .map_or_else(String::new, |p| format!(", from {}", p.display()));
        writeln!(f, "lab {} (state in {}{from})", s.name, self.dir.display())?;
        for v in &self.services {
            let kind = v.name.split('-').next().unwrap_or_default();
            let state = v
                .pid
                .map_or_else(|| "DOWN".to_owned(), |p| format!("up (pid {p})"));
            writeln!(f, "  {kind:<8} {:<12} {:<26} {state}", v.name, v.address)?;
        }
        for c in &self.chassis {
            let st = &s.chassis[&c.name];
            let agent = match (s.agents_available, &c.supervision) {
                (Some(false), _) => "none (no agent subcommand)".to_owned(),
                (_, None) => pid(None),
                (_, Some(sup)) => supervised(c.agent, sup),
            };
            writeln!(
                f,
                "  chassis  {:<12} tunnel {:<15} netns {}  ovsdb {}  vswitchd {}  agent {}{}",
                c.name,
                st.tunnel_ip,
                st.netns,
                pid(c.ovsdb),
                pid(c.vswitchd),
                agent,
                if st.gateway { "  gateway" } else { "" }
            )?;
        }
        for p in &self.physical {
            let st = &s.physical[&p.name];
            writeln!(
                f,
                "  physical {:<12} mtu {:<5}  netns {}  ovsdb {}  vswitchd {}  {} on every chassis",
                p.name,
                st.mtu,
                st.netns,
                pid(p.ovsdb),
                pid(p.vswitchd),
                st.provider_bridge
            )?;
        }
        for (name, e, present) in &self.externals {
            let vlan = e
                .vlan
                .map_or_else(|| "untagged".to_owned(), |v| format!("vlan {v}"));
            writeln!(
                f,
                "  external {:<12} {:<18} on {} {vlan}  netns {}{}",
                name,
                e.addresses(),
                e.physical,
                e.netns,
                missing(*present)
            )?;
        }
        for (name, n) in &s.networks {
            let subnets: Vec<String> = n
                .subnets
                .iter()
                .map(|x| format!("{} gw {}", x.cidr, x.gateway.as_deref().unwrap_or("none")))
                .collect();
            writeln!(
                f,
                "  network  {:<12} project {:<10} mtu {}  {}{}  {}  id {}",
                name,
                n.project.as_deref().unwrap_or("admin"),
                n.mtu,
                n.segment,
                if n.external { ", external" } else { "" },
                subnets.join(", "),
                n.id
            )?;
        }
        for (name, r) in &s.routers {
            let gateway = r.gateway.as_ref().map_or_else(String::new, |g| {
                let addrs: Vec<String> = g.addresses.iter().map(ToString::to_string).collect();
                let snat = if g.enable_snat { "on" } else { "off" };
                format!("  gateway {} {} (snat {snat})", g.network, addrs.join(" "))
            });
            writeln!(
                f,
                "  router   {:<12} project {:<10} interfaces {}  routes {}{gateway}  id {}",
                name,
                r.project.as_deref().unwrap_or("admin"),
                r.interfaces.join(" "),
                describe_routes(&r.routes),
                r.id
            )?;
        }
        for (name, v, present) in &self.vms {
            let serving = s.serve.get(name).map_or_else(String::new, |serve| {
                let each: Vec<String> = serve.iter().map(ToString::to_string).collect();
                let running = self.serving.get(name).copied().flatten();
                format!("  serves {} ({})", each.join(" "), pid(running))
            });
            let sf = s
                .service_functions
                .get(name)
                .map_or_else(String::new, |sf| {
                    format!(
                        "  service function{}: egress {} {} network {} port {}",
                        if sf.mpls { " (MPLS-aware)" } else { "" },
                        sf.egress_addresses.join(" "),
                        sf.egress_mac,
                        sf.egress_network,
                        sf.egress_port_id
                    )
                });
            writeln!(
                f,
                "  vm       {:<12} {:<18} {}  on {}  network {}  port {}{serving}{sf}{}",
                name,
                v.addresses.join(" "),
                v.mac,
                v.chassis,
                v.network,
                v.port_id,
                missing(*present)
            )?;
        }
        for fip in &s.floating_ips {
            writeln!(
                f,
                "  fip      {:<12} -> vm {} ({})  network {}  id {}",
                fip.address, fip.vm, fip.fixed_ip, fip.network, fip.id
            )?;
        }
        for (name, lb) in &s.load_balancers {
            writeln!(
                f,
                "  lb       {:<12} vip {}  network {} (subnet {})  project {}  id {}",
                name,
                lb.vip,
                lb.network,
                lb.subnet,
                lb.project.as_deref().unwrap_or("admin"),
                lb.id
            )?;
            for l in &lb.listeners {
                let members = if l.members.is_empty() {
                    "none".to_owned()
                } else {
                    l.members.join(", ")
                };
                let monitor = l
                    .monitor
                    .map_or_else(String::new, |m| format!("  monitor {}", m.as_str()));
                writeln!(
                    f,
                    "  listener {:<12} {} {}  members {members}{monitor}  id {}",
                    name,
                    l.protocol.as_str(),
                    l.port,
                    l.id
                )?;
            }
        }
        for (name, c) in &s.port_chains {
            let groups: Vec<String> = c
                .groups
                .iter()
                .map(|g| format!("{} [{}]", g.name, g.vms.join(" ")))
                .collect();
            writeln!(
                f,
                "  chain    {:<12} through {}  correlation {}{}  id {}",
                name,
                groups.join(" -> "),
                c.correlation.as_str(),
                if c.symmetric { ", symmetric" } else { "" },
                c.id
            )?;
            for fc in &c.classifiers {
                writeln!(f, "  classifier {:<10} {}  id {}", fc.name, fc.label, fc.id)?;
            }
        }
        for line in crate::lab::kubernetes::status_lines(&self.dir, &names::marker(&s.name)) {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}
