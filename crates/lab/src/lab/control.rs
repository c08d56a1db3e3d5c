//! The lab's control plane: the etcd members (with `store = "etcd"`) and the API servers, each
//! a daemon named `etcd-N` or `server-N` (N from 1) with `NAME.pid` and `NAME.log` in the
//! state directory; a member keeps its data in `etcd-N.etcd/` there. [`Lab::stop`] kills one
//! like a crash and [`Lab::start`] starts it again on the same ports and data, so that users
//! and tests can try failures.

use std::fmt;
use std::process::Command;
use std::time::{Duration, Instant};

use testbed::Daemon;

use super::{Lab, SERVER_START, io, listen_addr, log_tail};
use crate::neutron::Neutron;
use crate::state::EtcdMemberState;
use crate::topology::Topology;
use crate::{Error, Result};

/// How long the etcd members may take to elect a leader and answer.
const ETCD_START: Duration = Duration::from_secs(30);

/// A daemon of the control plane (0-based index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// An etcd member.
    Etcd(usize),
    /// An API server.
    Server(usize),
}

impl Service {
    /// The service called `name` (`etcd-N` or `server-N`).
    pub(crate) fn parse(name: &str) -> Option<Service> {
        let nth = |n: &str| n.parse::<usize>().ok().filter(|&n| n > 0).map(|n| n - 1);
        if let Some(n) = name.strip_prefix("etcd-") {
            nth(n).map(Service::Etcd)
        } else {
            nth(name.strip_prefix("server-")?).map(Service::Server)
        }
    }

    /// Every service of a lab with `members` etcd members and `servers` servers, members first.
    pub(crate) fn all(members: usize, servers: usize) -> impl Iterator<Item = Service> {
        (0..members)
            .map(Service::Etcd)
            .chain((0..servers).map(Service::Server))
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Etcd(i) => write!(f, "etcd-{}", i + 1),
            Service::Server(i) => write!(f, "server-{}", i + 1),
        }
    }
}

impl Lab {
    fn service_pidfile(&self, s: Service) -> std::path::PathBuf {
        self.dir.join(format!("{s}.pid"))
    }

    /// `store::open`'s spelling of the lab's store.
    fn store_spec(&self) -> String {
        if self.state.etcd.is_empty() {
            format!("embedded:{}", self.dir.join("server.redb").display())
        } else {
            let endpoints: Vec<String> = self
                .state
                .etcd
                .iter()
                .map(|m| format!("127.0.0.1:{}", m.client_port))
                .collect();
            format!("etcd://{}", endpoints.join(","))
        }
    }

    fn service_command(&self, s: Service) -> Result<Command> {
        let missing = || Error::NotFound(format!("lab {} has no {s}", self.name));
        match s {
            Service::Etcd(i) => {
                let m = self.state.etcd.get(i).ok_or_else(missing)?;
                let names: Vec<String> = (0..self.state.etcd.len())
                    .map(|j| Service::Etcd(j).to_string())
                    .collect();
                let initial = etcd_fixture::initial_cluster(
                    names
                        .iter()
                        .map(String::as_str)
                        .zip(self.state.etcd.iter().map(|m| m.peer_port)),
                );
                Ok(etcd_fixture::MemberSpec {
                    name: &s.to_string(),
                    client_port: m.client_port,
                    peer_port: m.peer_port,
                    data_dir: &self.dir.join(format!("{s}.etcd")),
                    initial_cluster: &initial,
                    token: &format!("{}-{}", crate::names::PREFIX, self.name),
                }
                .command())
            }
            Service::Server(i) => {
                let listen = self.state.servers.get(i).ok_or_else(missing)?;
                // The command line must name the state directory (that is how `down` finds
                // the process), also with an etcd store: the configuration file there does.
                let config = self.dir.join("server.json");
                // Written aside and renamed: another server starting meanwhile reads the whole
                // file, never a truncated one.
                let aside = self.dir.join(format!("server.json.{i}"));
                std::fs::write(&aside, unlimited_quotas().to_string())
                    .and_then(|()| std::fs::rename(&aside, &config))
                    .map_err(io(format!("write {}", config.display())))?;
                let config = config.display().to_string();
                let store = self.store_spec();
                Ok(self.wyvern(&[
                    "server", "--listen", listen, "--store", &store, "--config", &config,
                ]))
            }
        }
    }

    fn spawn_service(&mut self, s: Service) -> Result<u32> {
        let cmd = self.service_command(s)?;
        let log = self.dir.join(format!("{s}.log"));
        let d = Daemon::spawn(cmd, &self.service_pidfile(s), &log, &self.marker())?;
        let pid = d.pid();
        self.services.insert(s.to_string(), d);
        Ok(pid)
    }

    /// The running daemon of `s`, adopted by PID file if need be.
    fn running_service(&mut self, s: Service) -> Option<&Daemon> {
        let name = s.to_string();
        if !self.services.get(&name).is_some_and(Daemon::is_alive) {
            let found = Daemon::find(&self.service_pidfile(s), &self.marker());
            match found {
                Some(d) => drop(self.services.insert(name.clone(), d)),
                None => drop(self.services.remove(&name)),
            }
        }
        self.services.get(&name)
    }

    /// Adopts the running daemons of the control plane by PID file.
    pub(super) fn adopt_services(&mut self) {
        for s in Service::all(self.state.etcd.len(), self.state.servers.len()) {
            self.running_service(s);
        }
    }

    /// Starts `s` unless it runs.
    fn ensure_service(&mut self, s: Service, changes: &mut Vec<String>) -> Result<()> {
        if let Some(d) = self.running_service(s) {
            let pid = d.pid();
            self.say(&s.to_string(), &format!("running (pid {pid})"));
            return Ok(());
        }
        let pid = self.spawn_service(s)?;
        self.changed(changes, &s.to_string(), &format!("started (pid {pid})"));
        Ok(())
    }

    /// Brings the etcd members and the servers in line with the file: starts what does not
    /// run and waits until the cluster has a leader and every server answers.
    pub(super) async fn ensure_control_plane(
        &mut self,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let members = topo.server.etcd_member_count();
        if !self.state.servers.is_empty() && members != self.state.etcd.len() {
            return Err(Error::Topology(format!(
                "lab {} runs on {} etcd members (0: the embedded store), the file asks for {members}; \
                 the store of a running lab cannot change: `wyvern lab up --replace FILE` brings \
                 the lab up afresh",
                self.name,
                self.state.etcd.len(),
            )));
        }
        if self.state.etcd.len() != members {
            let port = || etcd_fixture::free_port().map_err(io("find a free port for etcd".into()));
            self.state.etcd = (0..members)
                .map(|_| {
                    Ok(EtcdMemberState {
                        client_port: port()?,
                        peer_port: port()?,
                    })
                })
                .collect::<Result<_>>()?;
        }
        for i in 0..members {
            self.ensure_service(Service::Etcd(i), changes)?;
        }
        for i in 0..members {
            self.wait_member(i, ETCD_START).await?;
        }
        let count = topo.server.server_count();
        for i in count..self.state.servers.len() {
            let s = Service::Server(i);
            drop(self.services.remove(&s.to_string()));
            Daemon::stop_pidfile(&self.service_pidfile(s), &self.marker());
            self.changed(changes, &s.to_string(), "stopped (not in the file)");
        }
        self.state.servers.truncate(count);
        for i in 0..count {
            let s = Service::Server(i);
            let listen = listen_addr(
                topo.server.listen()?,
                i,
                self.state.servers.get(i).map(String::as_str),
            )?;
            if self.state.servers.get(i) != Some(&listen) {
                // A new address: whatever runs at the old one goes.
                drop(self.services.remove(&s.to_string()));
                Daemon::stop_pidfile(&self.service_pidfile(s), &self.marker());
                self.state.servers.truncate(i);
                self.state.servers.push(listen);
            }
            self.ensure_service(s, changes)?;
        }
        for i in 0..count {
            self.wait_server(i, SERVER_START).await?;
        }
        Ok(())
    }

    /// Waits until etcd member `i` knows a leader and answers.
    async fn wait_member(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let s = Service::Etcd(i);
        let endpoint = format!("127.0.0.1:{}", self.state.etcd[i].client_port);
        let end = Instant::now() + timeout;
        loop {
            let why = match etcd_fixture::member_ready(&endpoint).await {
                Ok(()) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= end || self.running_service(s).is_none() {
                return Err(Error::Start(format!(
                    "{s} is not ready at {endpoint} ({why}); {}",
                    log_tail(&self.dir.join(format!("{s}.log")))
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until server `i` answers API requests.
    async fn wait_server(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let s = Service::Server(i);
        let url = format!("http://{}", self.state.servers[i]);
        let ok = match self.running_service(s) {
            Some(d) => {
                Neutron::new(&url)?
                    .wait_ready(timeout, || d.is_alive())
                    .await
            }
            None => false,
        };
        if ok {
            return Ok(());
        }
        Err(Error::Start(format!(
            "the server did not come up ({s} at {url}); {}",
            log_tail(&self.dir.join(format!("{s}.log")))
        )))
    }

    fn service(&self, name: &str) -> Result<Service> {
        Service::parse(name)
            .filter(|s| match *s {
                Service::Etcd(i) => i < self.state.etcd.len(),
                Service::Server(i) => i < self.state.servers.len(),
            })
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "lab {} has no {name} (it has {})",
                    self.name,
                    Service::all(self.state.etcd.len(), self.state.servers.len())
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Kills etcd member (`etcd-N`) or server (`server-N`) `name` with SIGKILL, like a crash,
    /// and waits until it is dead; [`Lab::start`] or [`Lab::converge`] starts it again.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let s = self.service(name)?;
        self.running_service(s)
            .ok_or_else(|| Error::NotFound(format!("{name} is not running")))?;
        if let Some(d) = self.services.remove(name) {
            d.kill();
        }
        self.say(name, "killed");
        Ok(())
    }

    /// Starts etcd member or server `name` again on its ports and data (nothing if it runs);
    /// returns its PID. A server is waited for until it answers; a member is not (alone it
    /// may not make a quorum).
    pub fn start(&mut self, name: &str) -> Result<u32> {
        let s = self.service(name)?;
        if let Some(d) = self.running_service(s) {
            return Ok(d.pid());
        }
        let pid = self.spawn_service(s)?;
        if let Service::Server(i) = s {
            super::block_on(self.wait_server(i, SERVER_START))?;
        }
        self.say(name, &format!("started (pid {pid})"));
        Ok(pid)
    }

    /// The etcd member that leads the cluster now (`etcd-N`), as the running members know it
    /// (for tests and users who want to kill the leader).
    pub fn etcd_leader(&self) -> Result<String> {
        let endpoints: Vec<String> = self
            .state
            .etcd
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        let leader = super::block_on(async {
            etcd_fixture::leader_among(&endpoints)
                .await
                .map_err(|e| Error::NotFound(format!("lab {}: no etcd leader: {e}", self.name)))
        })?;
        Ok(Service::Etcd(leader).to_string())
    }

    /// The URL of every server (`server-1` first).
    pub fn server_urls(&self) -> Vec<String> {
        self.state
            .servers
            .iter()
            .map(|l| format!("http://{l}"))
            .collect()
    }
}

/// The servers' configuration: no quota limits (a lab is a test bed: tests and benchmarks make
/// more objects than Neutron's defaults allow; a project's own limits can still be set).
fn unlimited_quotas() -> serde_json::Value {
    let quotas: serde_json::Map<String, serde_json::Value> = model::quotas::ALL
        .iter()
        .map(|r| (r.name.to_string(), serde_json::Value::from(-1)))
        .collect();
    serde_json::json!({ "quotas": quotas })
}
