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
    /// Its data plane as the other chassis' BFD sessions see it (none for a segment).
    pub data_plane: DataPlane,
}

/// A chassis' data plane as the BFD sessions of the other chassis' monitor ports see it
/// (`forwarding` in their `bfd_status`), by the names of those chassis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataPlane {
    /// Chassis whose session with it forwards.
    pub up: Vec<String>,
    /// Chassis whose session with it does not (down, or not up yet).
    pub down: Vec<String>,
}

impl fmt::Display for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.up.len(), self.down.len()) {
            (0, 0) => write!(f, "unknown (no BFD session)"),
            (n, 0) => write!(f, "up (BFD: {n} peers)"),
            (0, _) => write!(f, "DOWN (BFD: down at {})", self.down.join(",")),
            (_, _) => write!(
                f,
                "partial (BFD: up at {}, down at {})",
                self.up.join(","),
                self.down.join(",")
            ),
        }
    }
}

/// What chassis `name`'s switch says of its BFD sessions: by peer chassis id (its monitor
/// port's `external_ids:wyvern-peer`), whether the session forwards. Empty when the switch
/// cannot be asked.
fn bfd_sessions(rundir: &std::path::Path) -> BTreeMap<String, bool> {
    let db = format!("--db=unix:{}", rundir.join("db.sock").display());
    let out = std::process::Command::new("ovs-vsctl")
        .args([
            db.as_str(),
            "--timeout=2",
            "--format=json",
            "--columns=external_ids,bfd_status",
            "list",
            "Interface",
        ])
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        _ => return BTreeMap::new(),
    };
    serde_json::from_slice(&out.stdout)
        .map(|table| sessions_in(&table))
        .unwrap_or_default()
}

/// The BFD sessions in `ovs-vsctl --format=json --columns=external_ids,bfd_status list
/// Interface` output: by peer chassis, whether each forwards.
fn sessions_in(table: &serde_json::Value) -> BTreeMap<String, bool> {
    // An OVSDB map in ovs-vsctl's JSON: ["map", [[key, value], ...]].
    let map = |v: &serde_json::Value| -> BTreeMap<String, String> {
        v.get(1)
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                Some((
                    kv.get(0)?.as_str()?.to_owned(),
                    kv.get(1)?.as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    table["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let ids = map(row.get(0)?);
            let peer = ids.get(PEER_KEY)?.clone();
            let forwarding = map(row.get(1)?).get("forwarding").map(String::as_str) == Some("true");
            Some((peer, forwarding))
        })
        .collect()
}

/// The key on a BFD monitor port naming the chassis at its other end (the agent's
/// `peers::PEER_KEY`).
const PEER_KEY: &str = "wyvern-peer";

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
    // Every chassis' BFD sessions, then each chassis as the others see it.
    let sessions: BTreeMap<&String, BTreeMap<String, bool>> = state
        .chassis
        .iter()
        .map(|(c, s)| (c, bfd_sessions(&s.rundir)))
        .collect();
    let seen = |c: &str| {
        let mut dp = DataPlane::default();
        for (peer, view) in &sessions {
            match view.get(c) {
                Some(true) => dp.up.push((*peer).clone()),
                Some(false) => dp.down.push((*peer).clone()),
                None => {}
            }
        }
        dp
    };
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
                data_plane: seen(c),
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
            data_plane: DataPlane::default(),
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
                "  chassis  {:<12} tunnel {:<15} netns {}  ovsdb {}  vswitchd {}  agent {}  data plane {}{}",
                c.name,
                st.tunnel_ip,
                st.netns,
                pid(c.ovsdb),
                pid(c.vswitchd),
                agent,
                c.data_plane,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfd_sessions_are_read_from_monitor_ports_only() {
        let table = serde_json::json!({
            "headings": ["external_ids", "bfd_status"],
            "data": [
                [["map", [["wyvern-peer", "c2"]]],
                 ["map", [["forwarding", "true"], ["state", "up"]]]],
                [["map", [["wyvern-peer", "c3"]]],
                 ["map", [["forwarding", "false"], ["state", "down"]]]],
                [["map", [["iface-id", "p1"]]], ["map", []]],
            ]
        });
        let got = sessions_in(&table);
        let want: BTreeMap<String, bool> =
            [("c2".to_owned(), true), ("c3".to_owned(), false)].into();
        assert_eq!(got, want);
    }

    #[test]
    fn data_plane_says_who_sees_what() {
        let dp = |up: &[&str], down: &[&str]| DataPlane {
            up: up.iter().map(|s| s.to_string()).collect(),
            down: down.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(dp(&[], &[]).to_string(), "unknown (no BFD session)");
        assert_eq!(dp(&["c2", "c3"], &[]).to_string(), "up (BFD: 2 peers)");
        assert_eq!(dp(&[], &["c2"]).to_string(), "DOWN (BFD: down at c2)");
        assert_eq!(
            dp(&["c2"], &["c3"]).to_string(),
            "partial (BFD: up at c2, down at c3)"
        );
    }
}
