//! What a lab has made, kept as JSON in its state directory (`state.json`) so that later
//! commands (`status`, a second `up`, `down`) know it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topology::{Ipv6Config, RouteSpec};
use crate::{Error, Result};

/// The state of one lab.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The lab's name.
    pub name: String,
    /// `ADDR:PORT` each API server listens on (`server-1` first).
    #[serde(default)]
    pub servers: Vec<String>,
    /// The etcd members (`etcd-1` first); none on the embedded store.
    #[serde(default)]
    pub etcd: Vec<EtcdMemberState>,
    /// Whether the `wyvern` binary has the `agent` subcommand.
    pub agents_available: Option<bool>,
    /// Encapsulation the agents use.
    pub encap: String,
    /// Chassis by name.
    pub chassis: BTreeMap<String, ChassisState>,
    /// Networks by name.
    pub networks: BTreeMap<String, NetworkState>,
    /// VMs by name.
    pub vms: BTreeMap<String, VmState>,
    /// Routers by name.
    #[serde(default)]
    pub routers: BTreeMap<String, RouterState>,
    /// Security groups of the file by name.
    #[serde(default)]
    pub security_groups: BTreeMap<String, GroupState>,
    /// Address groups by name.
    #[serde(default)]
    pub address_groups: BTreeMap<String, GroupState>,
}

/// A security group or an address group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// API id.
    pub id: String,
    /// Owning project (`None`: admin).
    pub project: Option<String>,
}

/// An etcd member (on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMemberState {
    /// Port for clients (the servers).
    pub client_port: u16,
    /// Port for the other members.
    pub peer_port: u16,
}

/// A chassis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChassisState {
    /// Its network namespace.
    pub netns: String,
    /// Its OVS run directory.
    pub rundir: PathBuf,
    /// Its tunnel (underlay) address.
    pub tunnel_ip: Ipv4Addr,
    /// Prefix length of the underlay.
    pub prefix_len: u8,
    /// The agent's command line (arguments after the binary), if one was started.
    pub agent_args: Option<Vec<String>>,
    /// Loopback port of the agent's Prometheus metrics.
    #[serde(default)]
    pub metrics_port: Option<u16>,
}

/// A network and its subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkState {
    /// API id.
    pub id: String,
    /// Owning project (`None`: admin).
    pub project: Option<String>,
    /// MTU the server reports.
    pub mtu: u32,
    /// Subnets.
    pub subnets: Vec<SubnetState>,
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetState {
    /// API id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Address range.
    pub cidr: String,
    /// Gateway address, if any.
    pub gateway: Option<String>,
}

/// A VM and its port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    /// The port's API id.
    pub port_id: String,
    /// Project of the port (`None`: admin).
    pub project: Option<String>,
    /// The network's name.
    pub network: String,
    /// The chassis it runs on.
    pub chassis: String,
    /// Its network namespace.
    pub netns: String,
    /// The chassis-side interface on `br-int`.
    pub tap: String,
    /// MAC address (the port's).
    pub mac: String,
    /// Addresses with prefix length (the port's fixed IPs, IPv4 first), e.g. `10.0.0.5/24`.
    /// The lab configures them all on `eth0`, except the IPv6 ones of a VM with
    /// `ipv6 = "slaac"`, which come from router advertisements.
    pub addresses: Vec<String>,
    /// IPv4 default gateway.
    pub gateway: Option<String>,
    /// IPv6 default gateway (the lab's route; none with SLAAC).
    #[serde(default)]
    pub gateway6: Option<String>,
    /// MTU of `eth0` (the network's).
    pub mtu: u32,
    /// How the VM configures IPv6.
    #[serde(default)]
    pub ipv6: Ipv6Config,
    /// Whether the VM forwards packets.
    #[serde(default)]
    pub forwarding: bool,
    /// Addresses on the VM's dummy interface.
    #[serde(default)]
    pub extra_addresses: Vec<String>,
}

/// A router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterState {
    /// API id.
    pub id: String,
    /// Owning project (`None`: admin).
    pub project: Option<String>,
    /// Names of the subnets it has an interface on.
    pub interfaces: Vec<String>,
    /// Its extra routes.
    pub routes: Vec<RouteSpec>,
}

impl State {
    /// Path of the state file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads the state in `dir`; `None` if there is none.
    pub fn load(dir: &Path) -> Result<Option<State>> {
        let path = State::path(dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| Error::State { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                what: format!("read {}", path.display()),
                source,
            }),
        }
    }

    /// Writes the state into `dir` (atomically: a temporary file renamed over the old one).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = State::path(dir);
        let tmp = dir.join("state.json.tmp");
        let io = |what: String| move |source| Error::Io { what, source };
        let text = serde_json::to_vec_pretty(self).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("rename to {}", path.display())))
    }
}
