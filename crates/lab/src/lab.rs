//! A running lab: bringing it in line with a topology (`up`), acting on it (exec, agents) and
//! tearing it down (`down`, also by name after a crash). Routers, floating IPs, load balancers,
//! the physical segments with their external hosts, the inside of VMs and their tiny servers have
//! modules of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chassis::{ChassisConfig, Encap};
use ipnet::IpNet;
use ovsdb::{Client, ClientOptions, Endpoint};
use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts, Daemon, Host, Netns, Underlay};

use crate::names::{self, host_netns};
use crate::neutron::{Neutron, text};
use crate::output;
use crate::state::{ChassisState, NetworkState, State, VmState};
use crate::supervise::Supervision;
use crate::topology::{ChassisSpec, Ipv6Config, NetworkSpec, Topology, VmSpec};
use crate::{Error, Result};

mod attrs;
pub(crate) mod control;
mod floating;
mod guest;
pub(crate) mod kubernetes;
mod lbaas;
mod physical;
mod routers;
mod secgroups;
mod serve;
mod sfc;
mod subnets;
mod trunks;

pub use kubernetes::{KubeState, PodState, cni_run, sibling};
pub use testbed::Relay;

use attrs::{
    has_fixed_ips, network_attrs, network_update, port_groups, port_pairs, segment_of,
    wanted_fixed_ips, wanted_pairs,
};

/// The integration bridge.
const BR_INT: &str = "br-int";
/// `device_owner` of the VMs' ports.
const VM_OWNER: &str = "compute:lab";
/// How long the server may take to answer its first request.
const SERVER_START: Duration = Duration::from_secs(15);

/// How to run a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The `wyvern` binary run as `wyvern server` and `wyvern agent` (default: the running
    /// executable, which is right for the `wyvern lab` command; tests outside the `wyvern`
    /// crate pass the binary they want).
    pub wyvern: PathBuf,
    /// Print a progress line for every step on stdout.
    pub progress: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            wyvern: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("wyvern")),
            progress: true,
        }
    }
}

/// A lab: a server, chassis (each an Open vSwitch in its own namespace, joined by an
/// underlay), one agent per chassis, VMs (namespaces wired into their chassis' `br-int`),
/// physical segments (switches every chassis has an uplink into) and external hosts on them.
///
/// Dropping the value tears the lab down (like [`Lab::down`]) unless [`Lab::keep`] was
/// called, which leaves everything running for a later process ([`Lab::open`], `wyvern lab`).
#[derive(Debug)]
pub struct Lab {
    name: String,
    dir: PathBuf,
    opts: LabOptions,
    state: State,
    /// The etcd members and servers by name (see [`control`]).
    services: BTreeMap<String, Daemon>,
    underlay: Option<Underlay>,
    chassis: BTreeMap<String, Chassis>,
    /// The agents' supervisors (`wyvern supervise`), by chassis.
    agents: BTreeMap<String, Daemon>,
    vms: BTreeMap<String, Host>,
    /// The physical segments' switches by segment name (see [`physical`]).
    segments: BTreeMap<String, Chassis>,
    /// The external hosts' namespaces by name.
    externals: BTreeMap<String, Netns>,
    keep: bool,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |error| Error::Io { what, error }
}

/// Runs `fut` to completion on a fresh runtime in a thread of its own, so that callers may
/// be inside another runtime or in none.
fn block_on<T: Send>(fut: impl Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io("start a tokio runtime".into()))?
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
    format!("{} says:\n  {tail}", path.display())
}

/// PID file of chassis `chassis`'s agent supervisor in state directory `dir`.
fn agent_pidfile(dir: &Path, chassis: &str) -> PathBuf {
    dir.join(format!("agent-{chassis}.pid"))
}

/// Status file of chassis `chassis`'s agent supervisor (see [`Supervision`]).
fn agent_status_file(dir: &Path, chassis: &str) -> PathBuf {
    dir.join(format!("agent-{chassis}.supervise.json"))
}

/// What the supervisor of chassis `chassis`'s agent recorded, if that supervisor runs.
pub(crate) fn agent_supervision(dir: &Path, chassis: &str, marker: &str) -> Option<Supervision> {
    let supervisor = Daemon::running(&agent_pidfile(dir, chassis), marker)?;
    Supervision::load(&agent_status_file(dir, chassis)).filter(|s| s.supervisor == supervisor)
}

/// PID of the agent that `supervision` names, if it runs (and is ours: `marker` is on its
/// command line, which it is once its exec finished).
pub(crate) fn supervised_agent(supervision: &Supervision, marker: &str) -> Option<u32> {
    supervision
        .pid
        .filter(|p| testbed::alive_with_marker(*p, marker))
}

/// How many chassis [`Lab::start_chassis`] starts at once.
const START_WORKERS: usize = 8;

/// `f` of every item, on up to `workers` threads; the results in the items' order.
fn parallel<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// `ADDR:PORT` for the `nth` server (from 0) of a lab whose `[server] listen` is `base`: its
/// port plus `nth`, else (port 0) `previous` if it is on the same address, else a free one.
fn listen_addr(base: SocketAddr, nth: usize, previous: Option<&str>) -> Result<String> {
    if base.port() != 0 {
        // Checked by the validation: the last server's port fits.
        let port = u16::try_from(nth)
            .ok()
            .and_then(|n| base.port().checked_add(n))
            .ok_or_else(|| Error::Topology(format!("server listen {base}: port too high")))?;
        return Ok(SocketAddr::new(base.ip(), port).to_string());
    }
    if let Some(prev) = previous
        && prev
            .parse::<SocketAddr>()
            .is_ok_and(|p| p.ip() == base.ip())
    {
        return Ok(prev.to_owned());
    }
    let l = std::net::TcpListener::bind(base)
        .map_err(io(format!("find a free port on {}", base.ip())))?;
    let free = l
        .local_addr()
        .map_err(io("read the local address".into()))?;
    Ok(free.to_string())
}

impl Lab {
    /// Brings the lab described by `topo` up, or in line with `topo` if it runs already
    /// (also when started by another process): only what is missing or different is made.
    /// On error, everything of the lab is torn down.
    pub fn up(topo: &Topology, opts: &LabOptions) -> Result<Lab> {
        let mut lab = Lab::open(&topo.name, opts)?;
        lab.converge(topo)?;
        Ok(lab)
    }

    /// Takes charge of lab `name` as far as it exists (nothing is started or checked).
    pub fn open(name: &str, opts: &LabOptions) -> Result<Lab> {
        names::check_lab_name(name)?;
        let dir = names::state_dir(name);
        std::fs::create_dir_all(&dir).map_err(io(format!("mkdir {}", dir.display())))?;
        let state = State::load(&dir)?.unwrap_or_else(|| State {
            name: name.to_owned(),
            ..State::default()
        });
        let mut lab = Lab {
            name: name.to_owned(),
            dir,
            opts: opts.clone(),
            state,
            services: BTreeMap::new(),
            underlay: None,
            chassis: BTreeMap::new(),
            agents: BTreeMap::new(),
            vms: BTreeMap::new(),
            segments: BTreeMap::new(),
            externals: BTreeMap::new(),
            keep: false,
        };
        lab.adopt();
        Ok(lab)
    }

    /// Adopts what exists of the lab: etcd members, servers and agents by PID file,
    /// namespaces (chassis, segments, VMs, external hosts) by name.
    fn adopt(&mut self) {
        let marker = self.marker();
        self.adopt_services();
        if let Ok(ns) = Netns::adopt(&names::underlay_netns(&self.name)) {
            self.underlay = Some(Underlay::adopt(ns));
        }
        for (name, c) in &self.state.chassis {
            if let Some(d) = Daemon::find(&agent_pidfile(&self.dir, name), &marker) {
                self.agents.insert(name.clone(), d);
            }
            if let Ok(ns) = Netns::adopt(&c.netns) {
                let ch = Chassis::adopt(name, ns, c.rundir.clone());
                self.chassis.insert(name.clone(), ch);
            }
        }
        for (name, v) in &self.state.vms {
            if let Ok(h) = Netns::adopt(&v.netns).and_then(|ns| Host::adopt(ns, &v.tap)) {
                self.vms.insert(name.clone(), h);
            }
        }
        for (name, p) in &self.state.physical {
            if let Ok(ns) = Netns::adopt(&p.netns) {
                let sw = Chassis::adopt(name, ns, p.rundir.clone());
                self.segments.insert(name.clone(), sw);
            }
        }
        for (name, e) in &self.state.externals {
            if let Ok(ns) = Netns::adopt(&e.netns) {
                self.externals.insert(name.clone(), ns);
            }
        }
    }

    fn marker(&self) -> String {
        names::marker(&self.name)
    }

    fn say(&self, what: &str, status: &str) {
        if self.opts.progress {
            output::progress(format_args!("[lab {}] {what}: {status}", self.name));
        }
    }

    fn warn(&self, text: &str) {
        if self.opts.progress {
            output::warning(format_args!("[lab {}] warning: {text}", self.name));
        }
    }

    /// Brings the running lab in line with `topo` (which must have the lab's name); returns
    /// one line per change made (empty: nothing had to change). The state file is written
    /// also when a step fails.
    pub fn converge(&mut self, topo: &Topology) -> Result<Vec<String>> {
        topo.validate()?;
        if topo.name != self.name {
            return Err(Error::Topology(format!(
                "topology of lab {} given to lab {}",
                topo.name, self.name
            )));
        }
        let mut changes = Vec::new();
        let r = block_on(self.converge_steps(topo, &mut changes));
        self.state.save(&self.dir)?;
        r?;
        if changes.is_empty() {
            self.say("lab", "up to date, nothing changed");
        } else {
            self.say("lab", &format!("up ({} changes)", changes.len()));
        }
        Ok(changes)
    }

    fn changed(&self, changes: &mut Vec<String>, what: &str, status: &str) {
        self.say(what, status);
        changes.push(format!("{what}: {status}"));
    }

    async fn converge_steps(&mut self, topo: &Topology, changes: &mut Vec<String>) -> Result<()> {
        self.state.encap = topo.underlay.encap.clone();
        let agents = self.probe_agent();
        self.state.agents_available = Some(agents.is_ok());
        self.ensure_control_plane(topo, changes).await?;
        let api = Neutron::new(&self.server_url())?;
        self.remove_floating_ips(&api, topo, changes).await?;
        self.remove_load_balancers(&api, topo, changes).await?;
        self.remove_port_chains(&api, topo, changes).await?;
        for vm in self.state.vms.keys().cloned().collect::<Vec<_>>() {
            if !topo.vms.iter().any(|v| v.name == vm) {
                self.remove_vm(&api, &vm).await?;
                self.changed(changes, &format!("vm {vm}"), "removed");
            }
        }
        self.ensure_underlay(changes)?;
        self.ensure_segments(topo, changes)?;
        let ips = topo.tunnel_ips()?;
        let fresh = self.start_chassis(topo, &ips, changes)?;
        for (spec, ip) in topo.chassis.iter().zip(ips) {
            let is_fresh = fresh.contains(&spec.name);
            self.ensure_chassis(topo, spec, ip, is_fresh, changes)
                .await?;
        }
        for c in self.state.chassis.keys().cloned().collect::<Vec<_>>() {
            if !topo.chassis.iter().any(|s| s.name == c) {
                self.remove_chassis(&c);
                self.changed(changes, &format!("chassis {c}"), "removed");
            }
        }
        self.ensure_externals(topo, changes)?;
        self.remove_segments(topo, changes);
        for net in &topo.networks {
            self.ensure_network(&api, topo, net, changes).await?;
        }
        self.ensure_routers(&api, topo, changes).await?;
        self.ensure_groups(&api, topo, changes).await?;
        for vm in &topo.vms {
            self.ensure_vm(&api, topo, vm, changes).await?;
        }
        match agents {
            Ok(()) => self.ensure_agents(topo, changes)?,
            Err(why) => self.warn(&format!(
                "{} has no usable `agent` subcommand ({why}); the chassis run without agents",
                self.opts.wyvern.display()
            )),
        }
        self.ensure_floating_ips(&api, topo, changes).await?;
        self.ensure_servers(topo, changes)?;
        self.ensure_load_balancers(&api, topo, changes).await?;
        self.ensure_port_chains(&api, topo, changes).await?;
        self.ensure_kubernetes(&api, topo, changes).await?;
        self.remove_groups(&api, topo, changes).await?;
        self.warm_underlay();
        for (name, net) in self.state.networks.clone() {
            if topo.network(&name).is_none() {
                api.delete("networks", &net.id).await?;
                self.state.networks.remove(&name);
                self.changed(changes, &format!("network {name}"), "deleted");
            }
        }
        Ok(())
    }

    /// The first server's base URL (`http://ADDR:PORT`).
    pub fn server_url(&self) -> String {
        self.server_urls()
            .into_iter()
            .next()
            .unwrap_or_else(|| "http://127.0.0.1:9696".into())
    }

    fn ensure_underlay(&mut self, changes: &mut Vec<String>) -> Result<()> {
        let ns = names::underlay_netns(&self.name);
        if self.underlay.is_some() && Netns::exists(&ns) {
            self.say("underlay", &format!("ok (netns {ns})"));
            return Ok(());
        }
        self.underlay = None;
        let u = match Netns::adopt(&ns) {
            Ok(n) => Underlay::adopt(n),
            Err(_) => {
                let u = Underlay::create_in(Netns::create_named(&ns)?)?;
                self.changed(changes, "underlay", &format!("created (netns {ns})"));
                u
            }
        };
        self.underlay = Some(u);
        Ok(())
    }

    /// Has every chassis announce its tunnel address on the underlay (one gratuitous ARP reply
    /// each, several chassis at once): vswitchd learns a tunnel peer's MAC from it, so that a
    /// VM's first packet to that peer is not spent on resolving it. (It was a ping from every
    /// chassis to every other: 9 900 pings one after the other for 100 chassis.)
    fn warm_underlay(&self) {
        let announce: Vec<(&Chassis, Ipv4Addr)> = self
            .chassis
            .iter()
            .filter_map(|(name, ch)| Some((ch, self.state.chassis.get(name)?.tunnel_ip)))
            .collect();
        parallel(&announce, START_WORKERS, |(ch, ip)| {
            let ip = ip.to_string();
            // Open vSwitch learns from ARP replies and gratuitous ARPs; busybox's `-A` sends a
            // reply whose sender and target are the chassis' address. A chassis not announced
            // is no error here: the first packet to it just waits.
            let arping = ["busybox", "arping", "-A", "-c", "1", "-w", "1", "-I"];
            let _ = ch
                .netns()
                .exec(&[&arping[..], &[testbed::PHY_BRIDGE, &ip]].concat());
        });
        self.say("underlay", "tunnel addresses announced");
    }

    fn chassis_healthy(&self, name: &str, ip: Ipv4Addr, prefix_len: u8) -> bool {
        let Some(ch) = self.chassis.get(name) else {
            return false;
        };
        let same_place = self
            .state
            .chassis
            .get(name)
            .is_some_and(|s| s.tunnel_ip == ip && s.prefix_len == prefix_len);
        same_place
            && ch.ovsdb_pid().is_some()
            && ch.vswitchd_pid().is_some()
            && ch
                .netns()
                .ip(&["link", "show", &names::underlay_link(name)])
                .is_ok()
    }

    /// Starts the chassis of `topo` that do not run healthy where the file puts them, after
    /// removing what is left of them, several at once (a start mostly waits for its daemons);
    /// returns the names of those started. The chassis started are recorded also when another
    /// failed to start (the first error is returned), so that they are torn down with the lab.
    fn start_chassis(
        &mut self,
        topo: &Topology,
        ips: &[Ipv4Addr],
        changes: &mut Vec<String>,
    ) -> Result<BTreeSet<String>> {
        let prefix_len = topo.underlay.cidr.prefix_len();
        let mut fresh = Vec::new();
        for (spec, &ip) in topo.chassis.iter().zip(ips) {
            let name = spec.name.as_str();
            let netns = host_netns(&self.name, name);
            let rundir = self.dir.join(name);
            if !self.chassis.contains_key(name)
                && let Ok(ns) = Netns::adopt(&netns)
            {
                let ch = Chassis::adopt(name, ns, rundir.clone());
                self.chassis.insert(name.to_owned(), ch);
            }
            if self.chassis_healthy(name, ip, prefix_len) {
                continue;
            }
            // Whatever is left of it goes first (daemons, namespace, run directory).
            drop(self.chassis.remove(name));
            if let Ok(ns) = Netns::adopt(&netns) {
                drop(ns);
            }
            if rundir.exists() {
                std::fs::remove_dir_all(&rundir).map_err(io(format!("rm {}", rundir.display())))?;
            }
            fresh.push((spec, ip, netns, rundir));
        }
        if fresh.is_empty() {
            return Ok(BTreeSet::new());
        }
        let underlay = self
            .underlay
            .as_ref()
            .ok_or_else(|| Error::NotFound("the underlay is missing".into()))?;
        let mtu = topo.underlay.mtu;
        let started = parallel(&fresh, START_WORKERS, |(spec, ip, netns, rundir)| {
            let name = spec.name.as_str();
            let opts = ChassisOpts::default();
            let ch = Chassis::start_in(name, Netns::create_named(netns)?, rundir.clone(), &opts)?;
            let link = names::underlay_link(name);
            underlay.attach_named(&ch, &format!("{ip}/{prefix_len}"), &link, Some(mtu))?;
            Ok::<_, Error>(ch)
        });
        let mut done = BTreeSet::new();
        let mut failed = None;
        for ((spec, ip, netns, rundir), started) in fresh.into_iter().zip(started) {
            let name = spec.name.as_str();
            let ch = match started {
                Ok(ch) => ch,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            self.chassis.insert(name.to_owned(), ch);
            let previous = self.state.chassis.get(name);
            let agent_args = previous.and_then(|c| c.agent_args.clone());
            let metrics_port = previous.and_then(|c| c.metrics_port);
            self.state.chassis.insert(
                name.to_owned(),
                ChassisState {
                    netns: netns.clone(),
                    rundir,
                    tunnel_ip: ip,
                    prefix_len,
                    agent_args,
                    metrics_port,
                    gateway: spec.gateway,
                },
            );
            self.changed(
                changes,
                &format!("chassis {name}"),
                &format!("started (netns {netns}, tunnel ip {ip})"),
            );
            done.insert(name.to_owned());
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Completes chassis `spec` (started by [`Lab::start_chassis`] if `fresh`, else found
    /// running): its provider bridges and, for a fresh one, `br-int`.
    async fn ensure_chassis(
        &mut self,
        topo: &Topology,
        spec: &ChassisSpec,
        ip: Ipv4Addr,
        fresh: bool,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let name = spec.name.as_str();
        let what = format!("chassis {name}");
        if !fresh {
            let netns = host_netns(&self.name, name);
            self.say(&what, &format!("running (netns {netns}, tunnel ip {ip})"));
        }
        if let Some(c) = self.state.chassis.get_mut(name) {
            c.gateway = spec.gateway;
        }
        // The provider bridges exist before anyone's `ensure` would make them (secure).
        self.ensure_uplinks(topo, name, changes)?;
        // Where agents run, they own br-int's configuration (each runs `ensure` on start,
        // with the one encapsulation it uses); the lab sets it up for a new chassis only.
        if !fresh && self.state.agents_available == Some(true) {
            return Ok(());
        }
        let ch = &self.chassis[name];
        let client =
            Client::connect(&Endpoint::Unix(ch.db_socket()), ClientOptions::default()).await?;
        let cfg = ChassisConfig {
            encaps: vec![Encap::Geneve, Encap::Vxlan],
            local_ip: Some(ip.into()),
            bridge_mappings: physical::bridge_mappings(
                topo.physical.iter().map(|p| p.name.as_str()),
            ),
            ..ChassisConfig::default()
        };
        let rep = chassis::ensure(&client, &cfg).await?;
        if let Some(seq) = rep.cfg_seq {
            chassis::wait_applied(&client, seq, Duration::from_secs(10)).await?;
            let mut done = rep.created_bridges.clone();
            done.extend(rep.added_ports.iter().map(|p| format!("+{p}")));
            done.extend(rep.updated_ports.iter().map(|p| format!("~{p}")));
            done.extend(rep.removed_ports.iter().map(|p| format!("-{p}")));
            self.changed(
                changes,
                &what,
                &format!("br-int configured ({})", done.join(" ")),
            );
        }
        Ok(())
    }

    fn remove_chassis(&mut self, name: &str) {
        self.unplug_uplinks(name);
        drop(self.agents.remove(name));
        Daemon::stop_pidfile(&agent_pidfile(&self.dir, name), &self.marker());
        drop(self.chassis.remove(name));
        if let Some(c) = self.state.chassis.remove(name) {
            testbed::leftovers::destroy_netns(&c.netns);
            if let Err(e) = std::fs::remove_dir_all(&c.rundir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                self.warn(&format!("cannot remove {}: {e}", c.rundir.display()));
            }
        }
    }

    /// `wyvern args...`, logging without colours (its output goes to log files).
    fn wyvern<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.opts.wyvern);
        cmd.args(args).env("NO_COLOR", "1");
        cmd
    }

    /// Whether the `wyvern` binary knows `agent`; the first line of its complaint if not.
    fn probe_agent(&self) -> std::result::Result<(), String> {
        match self.wyvern(&["agent", "--help"]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn agent_args(&self, name: &str) -> Result<Vec<String>> {
        let c =
            self.state.chassis.get(name).ok_or_else(|| {
                Error::NotFound(format!("no chassis {name} in lab {}", self.name))
            })?;
        // Agents spread over the servers: each has its own first, then the others.
        let mut servers = self.server_urls();
        if let Some(k) = self.state.chassis.keys().position(|c| c == name) {
            let n = servers.len().max(1);
            servers.rotate_left(k % n);
        }
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            servers.join(","),
            "--chassis".into(),
            name.into(),
            "--ovsdb".into(),
            format!("unix:{}", c.rundir.join("db.sock").display()),
            "--ovs-rundir".into(),
            c.rundir.display().to_string(),
            "--tunnel-ip".into(),
            c.tunnel_ip.to_string(),
            "--encap".into(),
            self.state.encap.clone(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", c.metrics_port.unwrap_or(0)),
        ];
        let mappings: Vec<String> =
            physical::bridge_mappings(self.state.physical.keys().map(String::as_str))
                .iter()
                .map(|m| format!("{}:{}", m.physnet, m.bridge))
                .collect();
        if !mappings.is_empty() {
            args.extend(["--bridge-mappings".into(), mappings.join(",")]);
        }
        if c.gateway {
            args.push("--gateway".into());
        }
        Ok(args)
    }

    /// URL of chassis `name`'s agent metrics, once an agent was started there.
    pub fn agent_metrics_url(&self, name: &str) -> Option<String> {
        let port = self.state.chassis.get(name)?.metrics_port?;
        Some(format!("http://127.0.0.1:{port}/metrics"))
    }

    /// The value of metric `name` of chassis `chassis`'s agent (its first sample, whatever
    /// its labels), if the agent answers and has it.
    pub fn agent_metric(&self, chassis: &str, name: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let port = self.state.chassis.get(chassis)?.metrics_port?;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        body.lines().find_map(|l| {
            // `NAME{LABELS} VALUE` or `NAME VALUE`; comments start with `#`.
            (l.split(['{', ' ']).next()? == name)
                .then(|| l.rsplit(' ').next()?.parse().ok())
                .flatten()
        })
    }

    fn spawn_agent(&mut self, name: &str) -> Result<u32> {
        self.start_supervisor(name)?;
        self.wait_agent_started(name)
    }

    /// Starts a supervisor for chassis `name`'s agent (stopping a running one and its agent
    /// first), without waiting for the agent.
    fn start_supervisor(&mut self, name: &str) -> Result<()> {
        if let Some(c) = self.state.chassis.get_mut(name)
            && c.metrics_port.is_none()
        {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|error| Error::Io {
                    what: "finding a free port for agent metrics".into(),
                    error,
                })?;
            c.metrics_port = Some(port);
        }
        let args = self.agent_args(name)?;
        // Stops the running supervisor, which stops its agent.
        drop(self.agents.remove(name));
        let status = agent_status_file(&self.dir, name);
        match std::fs::remove_file(&status) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("rm {}", status.display()))(e));
            }
            _ => {}
        }
        let mut cmd = self.wyvern(&["supervise", "--status"]);
        cmd.arg(&status)
            .arg("--")
            .arg(&self.opts.wyvern)
            .args(&args);
        let log = self.dir.join(format!("agent-{name}.log"));
        let d = Daemon::spawn(cmd, &agent_pidfile(&self.dir, name), &log, &self.marker())?;
        self.agents.insert(name.to_owned(), d);
        if let Some(c) = self.state.chassis.get_mut(name) {
            c.agent_args = Some(args);
        }
        Ok(())
    }

    /// Waits until the supervisor just started for chassis `name` has its agent running, or
    /// ran it and saw it end (the supervisor starts it again); returns that agent's PID.
    fn wait_agent_started(&self, name: &str) -> Result<u32> {
        // A hang guard, not an expectation: the exec of a large binary on a loaded machine is
        // slow.
        let end = std::time::Instant::now() + Duration::from_secs(60);
        let marker = self.marker();
        loop {
            let s = agent_supervision(&self.dir, name, &marker);
            if let Some(pid) = s.as_ref().and_then(|s| supervised_agent(s, &marker)) {
                return Ok(pid);
            }
            if let Some(exit) = s.and_then(|s| s.last_exit) {
                return Ok(exit.pid);
            }
            let supervised = self.agents.get(name).is_some_and(Daemon::is_alive);
            if !supervised || std::time::Instant::now() >= end {
                let log = self.dir.join(format!("agent-{name}.log"));
                return Err(Error::Start(format!(
                    "the agent of chassis {name} did not start under its supervisor; {}",
                    log_tail(&log)
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn ensure_agents(&mut self, topo: &Topology, changes: &mut Vec<String>) -> Result<()> {
        let mut started = Vec::new();
        for spec in &topo.chassis {
            let name = spec.name.as_str();
            let what = format!("agent {name}");
            let want = self.agent_args(name)?;
            if !self.agents.contains_key(name)
                && let Some(d) = Daemon::find(&agent_pidfile(&self.dir, name), &self.marker())
            {
                self.agents.insert(name.to_owned(), d);
            }
            let current = self
                .state
                .chassis
                .get(name)
                .and_then(|c| c.agent_args.as_ref());
            // A process in the PID file without a supervisor's status is a bare agent (of a
            // lab from before agents were supervised): replaced by a supervised one.
            let supervised = self.agent_supervision(name).is_some();
            match self.agents.get(name) {
                Some(d) if d.is_alive() && supervised && current == Some(&want) => {
                    let running = self
                        .agent_pid(name)
                        .map_or_else(|| "being started again".to_owned(), |p| format!("pid {p}"));
                    self.say(
                        &what,
                        &format!("running ({running}, supervisor pid {})", d.pid()),
                    );
                }
                _ => {
                    self.start_supervisor(name)?;
                    started.push(name.to_owned());
                }
            }
        }
        // The agents start together (each waited for in turn took 15 s for 100 chassis).
        for name in &started {
            let pid = self.wait_agent_started(name)?;
            self.changed(
                changes,
                &format!("agent {name}"),
                &format!("started (pid {pid})"),
            );
        }
        if !started.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
            for name in started {
                if let Some(exit) = self.agent_supervision(&name).and_then(|s| s.last_exit) {
                    let log = self.dir.join(format!("agent-{name}.log"));
                    self.warn(&format!(
                        "agent {name} {exit} at once (its supervisor starts it again); {}",
                        log_tail(&log)
                    ));
                }
            }
        }
        Ok(())
    }

    async fn ensure_network(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        net: &NetworkSpec,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let what = format!("network {}", net.name);
        let before = changes.len();
        let project = net.project.clone();
        let owner = project.as_deref().unwrap_or("admin");
        let known = self.state.networks.get(&net.name).map(|s| s.id.as_str());
        let found = api
            .find("networks", "network", known, &net.name, owner)
            .await?;
        let mut v = match found {
            Some(v) => v,
            None => {
                let (attrs, admin) = network_attrs(net);
                let creator = if admin { None } else { project.as_deref() };
                let mut v = api.create("networks", "network", creator, attrs).await?;
                if !admin {
                    // A project is not shown the segment; an admin is.
                    let id = text(&v, "id").to_owned();
                    v = api.show("networks", "network", &id).await?.unwrap_or(v);
                }
                let status = format!("created ({}, {})", segment_of(&v), text(&v, "id"));
                self.changed(changes, &what, &status);
                v
            }
        };
        let id = text(&v, "id").to_owned();
        let update = network_update(&v, net)?;
        if !update.is_empty() {
            let keys: Vec<String> = update.keys().cloned().collect();
            v = api
                .update("networks", "network", &id, Value::Object(update))
                .await?;
            self.changed(changes, &what, &format!("updated ({})", keys.join(", ")));
        }
        if let Some(m) = net.mtu
            && v.get("mtu").and_then(Value::as_u64) != Some(u64::from(m))
        {
            v = api
                .update("networks", "network", &id, json!({ "mtu": m }))
                .await?;
            self.changed(changes, &what, &format!("mtu set to {m}"));
        }
        let mtu = v
            .get("mtu")
            .and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(1450);
        let subnets = self
            .ensure_subnets(api, topo, net, &id, project.as_deref(), changes)
            .await?;
        if changes.len() == before {
            self.say(&what, &format!("ok ({id})"));
        }
        self.state.networks.insert(
            net.name.clone(),
            NetworkState {
                id,
                project,
                mtu,
                subnets,
                segment: segment_of(&v),
                external: v.get("router:external").and_then(Value::as_bool) == Some(true),
            },
        );
        Ok(())
    }

    /// Finds or creates the VM's port and makes its binding (with `bind`; a trunk's parent is
    /// bound once its trunk exists, a subport where its parent is), fixed IPs, allowed address
    /// pairs, port security and security groups what `vm` asks for.
    #[allow(clippy::too_many_arguments)]
    async fn ensure_port(
        &self,
        api: &Neutron,
        vm: &VmSpec,
        spec: &NetworkSpec,
        net: &NetworkState,
        project: Option<&str>,
        device_id: &str,
        bind: bool,
        changes: &mut Vec<String>,
    ) -> Result<Value> {
        let what = format!("port {}", vm.name);
        let mut found = match self.state.vms.get(&vm.name) {
            Some(s) => api
                .show("ports", "port", &s.port_id)
                .await?
                .filter(|p| text(p, "network_id") == net.id),
            None => None,
        };
        if found.is_none() {
            found = api
                .list("ports", &format!("network_id={}&name={}", net.id, vm.name))
                .await?
                .into_iter()
                .next();
        }
        let fixed_ips = wanted_fixed_ips(vm, spec, net);
        let want_pairs = wanted_pairs(vm);
        let pairs: Vec<Value> = want_pairs
            .iter()
            .map(|p| json!({ "ip_address": p.to_string() }))
            .collect();
        let groups = self.port_groups(api, vm, project).await?;
        let Some(port) = found else {
            // As Nova does: the project creates the port, an admin binds it (Neutron's policy
            // lets only admins set `binding:host_id`).
            let mut attrs = json!({
                "name": vm.name,
                "network_id": net.id,
                "device_owner": VM_OWNER,
                "device_id": device_id,
            });
            if let Some(f) = fixed_ips {
                attrs["fixed_ips"] = f.into();
            }
            if !pairs.is_empty() {
                attrs["allowed_address_pairs"] = pairs.into();
            }
            if !vm.port_security {
                attrs["port_security_enabled"] = false.into();
            }
            attrs["security_groups"] = groups.into();
            if device_id.is_empty() {
                // A subport: the trunk gives it its owner.
                attrs.as_object_mut().map(|a| a.remove("device_owner"));
            }
            let created = api.create("ports", "port", project, attrs).await?;
            let id = text(&created, "id").to_owned();
            self.changed(changes, &what, &format!("created ({id})"));
            if !bind {
                return Ok(created);
            }
            let binding = json!({ "binding:host_id": vm.chassis });
            return api.update("ports", "port", &id, binding).await;
        };
        let mut update = serde_json::Map::new();
        if bind && text(&port, "binding:host_id") != vm.chassis {
            update.insert("binding:host_id".into(), vm.chassis.clone().into());
        }
        if let Some(f) = fixed_ips
            && !has_fixed_ips(&port, &f)
        {
            update.insert("fixed_ips".into(), f.into());
        }
        if port_pairs(&port) != want_pairs {
            update.insert("allowed_address_pairs".into(), pairs.into());
        }
        // Port security goes off only together with the groups (the server refuses either
        // alone), and comes on with them.
        let secure = port.get("port_security_enabled").and_then(Value::as_bool) != Some(false);
        if secure != vm.port_security {
            update.insert("port_security_enabled".into(), vm.port_security.into());
        }
        if secure != vm.port_security || port_groups(&port) != groups {
            update.insert("security_groups".into(), groups.into());
        }
        if update.is_empty() {
            return Ok(port);
        }
        let keys: Vec<String> = update.keys().cloned().collect();
        let id = text(&port, "id").to_owned();
        let p = api
            .update("ports", "port", &id, Value::Object(update))
            .await?;
        self.changed(changes, &what, &format!("updated ({})", keys.join(", ")));
        Ok(p)
    }

    /// What the VM's namespace should look like for `port`.
    fn vm_state(
        &self,
        vm: &VmSpec,
        net: &NetworkState,
        port: &Value,
        project: Option<String>,
    ) -> VmState {
        let port_id = text(port, "id").to_owned();
        let mut addrs: Vec<(String, Option<String>)> = port
            .get("fixed_ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let s = net.subnets.iter().find(|s| s.id == text(f, "subnet_id"))?;
                let len = s.cidr.parse::<IpNet>().ok()?.prefix_len();
                Some((
                    format!("{}/{len}", text(f, "ip_address")),
                    s.gateway.clone(),
                ))
            })
            .collect();
        // IPv4 first: the first address of each version carries its default route.
        addrs.sort_by_key(|(a, _)| a.contains(':'));
        let gateway = |v6: bool| {
            addrs
                .iter()
                .find(|(a, _)| a.contains(':') == v6)
                .and_then(|(_, g)| g.clone())
        };
        VmState {
            tap: names::tap(&port_id),
            port_id,
            project,
            network: vm.network.clone(),
            chassis: vm.chassis.clone(),
            netns: host_netns(&self.name, &vm.name),
            mac: text(port, "mac_address").to_owned(),
            gateway: gateway(false),
            gateway6: gateway(true).filter(|_| vm.ipv6 == Ipv6Config::Static),
            addresses: addrs.into_iter().map(|(a, _)| a).collect(),
            mtu: net.mtu,
            ipv6: vm.ipv6,
            forwarding: vm.forwarding,
            extra_addresses: vm.extra_addresses.iter().map(IpNet::to_string).collect(),
        }
    }

    /// True if VM `name` is wired as `want` says: namespace, tap and OVS port with the
    /// iface-id.
    fn vm_healthy(&self, name: &str, want: &VmState) -> bool {
        let Some(ch) = self.chassis.get(&want.chassis) else {
            return false;
        };
        self.state.vms.get(name) == Some(want)
            && Netns::exists(&want.netns)
            && ch.netns().ip(&["link", "show", &want.tap]).is_ok()
            && iface_id(ch, &want.tap).as_deref() == Some(want.port_id.as_str())
    }

    async fn ensure_vm(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        vm: &VmSpec,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let what = format!("vm {}", vm.name);
        let net = self
            .state
            .networks
            .get(&vm.network)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("network {} was not made", vm.network)))?;
        let spec = topo
            .network(&vm.network)
            .ok_or_else(|| Error::NotFound(format!("network {} is not in the file", vm.network)))?;
        let project = vm.project.clone().or_else(|| spec.project.clone());
        // A service function's ports have no port security: it forwards others' packets.
        let unsecured;
        let vm = if vm.sf.is_some() {
            unsecured = VmSpec {
                port_security: false,
                ..vm.clone()
            };
            &unsecured
        } else {
            vm
        };
        let port = self
            .ensure_port(
                api,
                vm,
                spec,
                &net,
                project.as_deref(),
                &vm.name,
                !topo.is_trunk_parent(vm),
                changes,
            )
            .await?;
        let sf = self
            .ensure_egress_port(api, topo, vm, project.as_deref(), changes)
            .await?;
        let trunk = self
            .ensure_trunk(api, topo, vm, &port, project.as_deref(), changes)
            .await?;
        let want = self.vm_state(vm, &net, &port, project);
        if want.addresses.is_empty() {
            return Err(Error::Start(format!(
                "port {} got no address",
                want.port_id
            )));
        }
        if self.vm_healthy(&vm.name, &want)
            && self.sf_healthy(&vm.name, sf.as_ref())
            && self.trunk_healthy(&vm.name, trunk.as_ref())
        {
            if !self.vms.contains_key(&vm.name) {
                let h = Host::adopt(Netns::adopt(&want.netns)?, &want.tap)?;
                self.vms.insert(vm.name.clone(), h);
            }
            self.say(
                &what,
                &format!(
                    "ok ({} {} on {})",
                    want.addresses.join(" "),
                    want.mac,
                    want.chassis
                ),
            );
            return Ok(());
        }
        self.unwire_vm(&vm.name);
        let ch = self
            .chassis
            .get(&want.chassis)
            .ok_or_else(|| Error::NotFound(format!("chassis {} is not running", want.chassis)))?;
        let ns = Netns::create_named(&want.netns)?;
        let client =
            Client::connect(&Endpoint::Unix(ch.db_socket()), ClientOptions::default()).await?;
        let host = match (&sf, &trunk) {
            (_, Some(trunk)) => {
                let host = trunks::wire(ch, ns, &want, trunk)?;
                chassis::plug_vif(&client, BR_INT, &want.tap, &want.port_id, Some(&want.mac))
                    .await?;
                host
            }
            (Some(sf), None) => {
                let host = sfc::wire(ch, ns, &want, sf)?;
                chassis::plug_vif(&client, BR_INT, &want.tap, &want.port_id, Some(&want.mac))
                    .await?;
                chassis::plug_vif(
                    &client,
                    BR_INT,
                    &sf.egress_tap,
                    &sf.egress_port_id,
                    Some(&sf.egress_mac),
                )
                .await?;
                host
            }
            (None, None) => {
                guest::prepare(&ns, &want)?;
                let host = Host::create_in(ch, ns, &want.tap, &guest::host_opts(&want))?;
                guest::configure(&host, &want)?;
                chassis::plug_vif(&client, BR_INT, &want.tap, &want.port_id, Some(&want.mac))
                    .await?;
                guest::start_slaac(&host, &want)?;
                host
            }
        };
        self.vms.insert(vm.name.clone(), host);
        let status = match &sf {
            None if let Some(t) = &trunk => format!(
                "wired as a trunk ({} {} untagged on {}{}; on {}, {})",
                want.addresses.join(" "),
                want.mac,
                trunks::PARENT_IF,
                t.subports
                    .iter()
                    .map(|s| format!(
                        ", VLAN {} {} {} on {}",
                        s.vlan,
                        s.addresses.join(" "),
                        s.mac,
                        trunks::subport_if(s.vlan)
                    ))
                    .collect::<String>(),
                want.chassis,
                want.netns
            ),
            Some(sf) => format!(
                "wired as a service function (ingress {} {}, egress {} {}, bridged by {} on {}, \
                 {})",
                want.addresses.join(" "),
                want.mac,
                sf.egress_addresses.join(" "),
                sf.egress_mac,
                sfc::BRIDGE,
                want.chassis,
                want.netns
            ),
            None => format!(
                "wired ({} {} on {}, {})",
                want.addresses.join(" "),
                want.mac,
                want.chassis,
                want.netns
            ),
        };
        self.state.vms.insert(vm.name.clone(), want);
        if let Some(sf) = sf {
            self.state.service_functions.insert(vm.name.clone(), sf);
        }
        match trunk {
            Some(t) => self.state.trunks.insert(vm.name.clone(), t),
            None => self.state.trunks.remove(&vm.name),
        };
        self.changed(changes, &what, &status);
        Ok(())
    }

    /// Takes VM `name` off its chassis and deletes its namespace (the port stays).
    fn unwire_vm(&mut self, name: &str) {
        drop(self.vms.remove(name));
        if let Some(old) = self.state.vms.remove(name) {
            if let Some(ch) = self.chassis.get(&old.chassis)
                && let Err(e) = ch.ovs_vsctl(&["--if-exists", "del-port", BR_INT, &old.tap])
            {
                self.warn(&format!("cannot unplug {}: {e}", old.tap));
            }
            if let Some(sf) = self.state.service_functions.remove(name)
                && let Some(ch) = self.chassis.get(&old.chassis)
                && let Err(e) = ch.ovs_vsctl(&["--if-exists", "del-port", BR_INT, &sf.egress_tap])
            {
                self.warn(&format!("cannot unplug {}: {e}", sf.egress_tap));
            }
            testbed::leftovers::destroy_netns(&old.netns);
        }
    }

    async fn remove_vm(&mut self, api: &Neutron, name: &str) -> Result<()> {
        if let (Some(vm), Some(trunk)) = (
            self.state.vms.get(name).cloned(),
            self.state.trunks.get(name).cloned(),
        ) {
            self.remove_trunk(api, &vm.port_id, &trunk, false).await?;
            self.state.trunks.remove(name);
        }
        if let Some(port) = self.state.vms.get(name).map(|v| v.port_id.clone()) {
            api.delete("ports", &port).await?;
        }
        if let Some(sf) = self.state.service_functions.get(name) {
            api.delete("ports", &sf.egress_port_id).await?;
        }
        self.unwire_vm(name);
        Ok(())
    }

    /// Starts IPv6 autoconfiguration of VM `vm` (with `ipv6 = "slaac"`) afresh: a new
    /// link-local address, then a router solicitation, as a VM booting now would send. `up`
    /// does this once the VM's port is plugged, possibly before its agent has the flows.
    pub fn restart_slaac(&self, vm: &str) -> Result<()> {
        let (Some(host), Some(state)) = (self.vms.get(vm), self.state.vms.get(vm)) else {
            return Err(Error::NotFound(format!("lab {} has no vm {vm}", self.name)));
        };
        guest::start_slaac(host, state)
    }

    /// Records that the lab runs from topology file `file` (its canonical path), which
    /// `wyvern lab up` checks (see [`State::file`]); saved with the state by
    /// [`Lab::converge`].
    pub fn record_file(&mut self, file: PathBuf) {
        self.state.file = Some(file);
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the lab knows about itself (also in `state.json`).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The API id of VM `vm`'s port.
    pub fn port_id(&self, vm: &str) -> Option<&str> {
        self.state.vms.get(vm).map(|v| v.port_id.as_str())
    }

    /// VM `vm`: MAC, addresses, chassis, namespace, tap.
    pub fn vm(&self, vm: &str) -> Option<&VmState> {
        self.state.vms.get(vm)
    }

    /// VM `vm` as a test-bed host (`exec`, `ping`).
    pub fn host(&self, vm: &str) -> Option<&Host> {
        self.vms.get(vm)
    }

    /// Chassis `name` (`ovs-vsctl`, `ovs-ofctl`, `ovs-appctl` against its OVS).
    pub fn chassis(&self, name: &str) -> Option<&Chassis> {
        self.chassis.get(name)
    }

    /// Runs `args` in the namespace of VM, chassis, external host or physical segment `host`
    /// (for a chassis, a segment or a trunk VM with `OVS_RUNDIR` set, so `ovs-vsctl`,
    /// `ovs-ofctl` and `ovs-appctl` find its OVS) and returns its output, whatever its exit
    /// status.
    pub fn exec(&self, host: &str, args: &[&str]) -> Result<Output> {
        let mut cmd = exec_command(&self.name, host)?;
        cmd.args(args);
        cmd.output().map_err(io(format!("run {args:?} in {host}")))
    }

    /// PID of chassis `name`'s agent (not its supervisor's), if it runs.
    pub fn agent_pid(&self, name: &str) -> Option<u32> {
        supervised_agent(&self.agent_supervision(name)?, &self.marker())
    }

    /// What the supervisor of chassis `name`'s agent recorded (the agent's PID, its restarts,
    /// how it last ended), if that supervisor runs.
    pub fn agent_supervision(&self, name: &str) -> Option<Supervision> {
        agent_supervision(&self.dir, name, &self.marker())
    }

    /// Kills chassis `name`'s agent alone with SIGKILL, like a crash, and waits until it is
    /// dead; its supervisor starts it again (a new [`Lab::agent_pid`]). Returns the PID it
    /// killed.
    pub fn crash_agent(&mut self, name: &str) -> Result<u32> {
        let pid = self
            .agent_pid(name)
            .ok_or_else(|| Error::NotFound(format!("no agent runs on chassis {name}")))?;
        testbed::kill_pid_now(pid, &self.marker());
        Ok(pid)
    }

    /// Kills chassis `name`'s agent and its supervisor with SIGKILL (like a crash of the
    /// chassis' services) and waits until both are dead: the agent stays down until
    /// [`Lab::restart_agent`] or `up`.
    pub fn kill_agent(&mut self, name: &str) -> Result<()> {
        let agent = self.agent_pid(name);
        let d = self
            .agents
            .remove(name)
            .ok_or_else(|| Error::NotFound(format!("no agent runs on chassis {name}")))?;
        // The supervisor first, so that nothing starts the agent again; the kernel then kills
        // the agent too (it dies with its supervisor), which is waited for here.
        d.kill();
        if let Some(pid) = agent {
            testbed::kill_pid_now(pid, &self.marker());
        }
        Ok(())
    }

    /// (Re)starts chassis `name`'s agent under a new supervisor (stopping a running one and
    /// its agent first); returns the agent's PID.
    pub fn restart_agent(&mut self, name: &str) -> Result<u32> {
        if self.state.agents_available == Some(false) {
            return Err(Error::Start(format!(
                "{} has no `agent` subcommand",
                self.opts.wyvern.display()
            )));
        }
        let pid = self.spawn_agent(name)?;
        self.state.save(&self.dir)?;
        Ok(pid)
    }

    /// Leaves the lab running when the value is dropped (for `wyvern lab up`); a later
    /// [`Lab::open`] or [`down`] takes charge of it again.
    pub fn keep(mut self) {
        self.release();
        self.keep = true;
    }

    /// Tears the lab down: see [`down`].
    pub fn down(mut self) -> Result<Vec<String>> {
        self.release();
        self.keep = true;
        down(&self.name, self.opts.progress)
    }

    /// Lets go of the handles without stopping anything (the teardown goes by name).
    fn release(&mut self) {
        for d in std::mem::take(&mut self.services).into_values() {
            d.detach();
        }
        for d in std::mem::take(&mut self.agents).into_values() {
            d.detach();
        }
        for h in std::mem::take(&mut self.vms).into_values() {
            h.detach();
        }
        for c in std::mem::take(&mut self.chassis).into_values() {
            c.detach();
        }
        for sw in std::mem::take(&mut self.segments).into_values() {
            sw.detach();
        }
        for ns in std::mem::take(&mut self.externals).into_values() {
            ns.detach();
        }
        if let Some(u) = self.underlay.take() {
            u.detach();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            self.release();
            if let Err(e) = down(&self.name, false) {
                output::warning(format_args!("[lab {}] teardown: {e}", self.name));
            }
        }
    }
}

/// `external_ids:iface-id` of interface `tap` on `ch`, if any.
fn iface_id(ch: &Chassis, tap: &str) -> Option<String> {
    let out = ch
        .ovs_vsctl(&[
            "--if-exists",
            "get",
            "Interface",
            tap,
            "external_ids:iface-id",
        ])
        .ok()?;
    let id = out.trim().trim_matches('"');
    (!id.is_empty()).then(|| id.to_owned())
}

/// A command prefix that runs in the namespace of VM, chassis, external host or physical
/// segment `host` of lab `lab` (with `OVS_RUNDIR` set for a chassis or a segment, and for a
/// trunk VM its own Open vSwitch's).
pub fn exec_command(lab: &str, host: &str) -> Result<Command> {
    names::check_lab_name(lab)?;
    let ns = host_netns(lab, host);
    if host.contains('/') || !Netns::exists(&ns) {
        let s = crate::status::existing(lab)?;
        let hosts: Vec<&str> = s
            .vms
            .keys()
            .chain(s.externals.keys())
            .chain(s.chassis.keys())
            .chain(s.physical.keys())
            .map(String::as_str)
            .collect();
        return Err(Error::NotFound(format!(
            "lab {lab} has no host {host} (it has {})",
            if hosts.is_empty() {
                "none".into()
            } else {
                hosts.join(", ")
            }
        )));
    }
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns]);
    // A chassis' or segment's Open vSwitch, or a trunk VM's own (`<vm>.ovs`).
    let dir = names::state_dir(lab);
    if let Some(rundir) = [dir.join(host), dir.join(format!("{host}.ovs"))]
        .into_iter()
        .find(|d| d.join("db.sock").exists())
    {
        cmd.arg("env")
            .arg(format!("OVS_RUNDIR={}", rundir.display()));
    }
    Ok(cmd)
}

/// Tears lab `name` down by name, also after a crash of `up` half way and without a state
/// file: stops the agents' supervisors (each stops its agent), the servers and the etcd members
/// by PID file, then the OVS daemons
/// of every chassis and segment,
/// then any other process whose command line mentions the state directory, deletes every
/// namespace of the lab and the state directory. Idempotent; returns what it removed.
pub fn down(name: &str, progress: bool) -> Result<Vec<String>> {
    names::check_lab_name(name)?;
    let dir = names::state_dir(name);
    let marker = names::marker(name);
    let mut gone = Vec::new();
    let mut pidfiles: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        // The VMs' (and pods') tiny servers, the Kubernetes controller and the agents'
        // supervisors (`agent-<chassis>.pid`, each stopping its agent) first, then
        // the Kubernetes API server, the servers, the etcd members, then
        // each chassis' vswitchd and ovsdb-server.
        for kind in ["serve-", "k8s-", "agent-", "kube-", "server-", "etcd-"] {
            pidfiles.extend(
                entries
                    .iter()
                    .filter(|p| {
                        p.extension().is_some_and(|e| e == "pid")
                            && p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with(kind))
                    })
                    .cloned(),
            );
        }
        for p in entries.iter().filter(|p| p.is_dir()) {
            pidfiles.push(p.join("ovs-vswitchd.pid"));
            pidfiles.push(p.join("ovsdb-server.pid"));
        }
    }
    for p in &pidfiles {
        if let Some(pid) = Daemon::running(p, &marker) {
            Daemon::stop_pidfile(p, &marker);
            gone.push(format!("process {pid} ({})", p.display()));
        }
    }
    for (pid, cmd) in testbed::leftovers::stop_processes_mentioning(&marker) {
        gone.push(format!("process {pid} ({cmd})"));
    }
    let prefix = names::netns_prefix(name);
    for ns in testbed::list_netns() {
        if ns.starts_with(&prefix) {
            testbed::leftovers::destroy_netns(&ns);
            gone.push(format!("netns {ns}"));
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => gone.push(format!("dir {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(Error::Io {
                what: format!("rm {}", dir.display()),
                error,
            });
        }
    }
    if progress {
        for g in &gone {
            output::progress(format_args!("[lab {name}] removed {g}"));
        }
        let nothing = if gone.is_empty() {
            " (nothing was there)"
        } else {
            ""
        };
        output::progress(format_args!("[lab {name}] down{nothing}"));
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            listen_addr(at("127.0.0.1:9797"), 0, None).unwrap(),
            "127.0.0.1:9797"
        );
        assert_eq!(
            listen_addr(at("127.0.0.1:9797"), 2, None).unwrap(),
            "127.0.0.1:9799"
        );
        assert_eq!(
            listen_addr(at("[::1]:9797"), 1, None).unwrap(),
            "[::1]:9798"
        );
        // Port 0: the previous one on the same address, else a free one.
        let prev = Some("127.0.0.1:5000");
        assert_eq!(
            listen_addr(at("127.0.0.1:0"), 0, prev).unwrap(),
            "127.0.0.1:5000"
        );
        let free = listen_addr(at("127.0.0.1:0"), 0, Some("127.0.0.2:5000")).unwrap();
        assert!(
            free.starts_with("127.0.0.1:") && free != "127.0.0.1:0",
            "{free}"
        );
    }
}
