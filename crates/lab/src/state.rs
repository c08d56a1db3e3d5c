//! What a lab has made, kept as JSON in its state directory (`state.json`) so that later
//! commands (`status`, a second `up`, `down`) know it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topology::{Correlation, Ipv6Config, LbProtocol, MonitorType, RouteSpec, ServeSpec};
use crate::{Error, Result};

/// The state of one lab.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The lab's name.
    pub name: String,
    /// The topology file `wyvern lab up` brought the lab up from (its canonical path): a lab
    /// runs from one file, `up` of another with the same lab name is refused (see
    /// [`Error::OtherFile`]). None for a lab made through the library.
    #[serde(default)]
    pub file: Option<PathBuf>,
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
    /// Physical segments by name.
    #[serde(default)]
    pub physical: BTreeMap<String, PhysicalState>,
    /// External hosts by name.
    #[serde(default)]
    pub externals: BTreeMap<String, ExternalState>,
    /// Floating IPs, in the file's order.
    #[serde(default)]
    pub floating_ips: Vec<FloatingIpState>,
    /// Load balancers by name.
    #[serde(default)]
    pub load_balancers: BTreeMap<String, LoadBalancerState>,
    /// The tiny servers each VM runs (`serve` in the file), by VM name; a VM without is absent.
    #[serde(default)]
    pub serve: BTreeMap<String, Vec<ServeSpec>>,
    /// The service-function VMs' egress ports and bridges, by VM name (their ingress port is
    /// the VM's, in `vms`).
    #[serde(default)]
    pub service_functions: BTreeMap<String, SfState>,
    /// Port chains by name, with the port pairs, groups and classifiers made for them.
    #[serde(default)]
    pub port_chains: BTreeMap<String, PortChainState>,
    /// The trunks of VMs with subports, by VM name (the parent port is the VM's, in `vms`).
    #[serde(default)]
    pub trunks: BTreeMap<String, TrunkState>,
}

/// A VM's trunk: the trunk, its subports, and the Open vSwitch inside the VM that tags them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkState {
    /// The trunk's API id.
    pub trunk_id: String,
    /// The subports, in the file's order.
    pub subports: Vec<SubportState>,
    /// The run directory of the VM's Open vSwitch.
    pub rundir: PathBuf,
}

/// A subport as the VM carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubportState {
    /// The subport port's API id.
    pub port_id: String,
    /// Its network's name.
    pub network: String,
    /// The VLAN id that carries it.
    pub vlan: u16,
    /// Its MAC (the port's).
    pub mac: String,
    /// Its addresses with prefix length (the port's fixed IPs).
    pub addresses: Vec<String>,
    /// Its network's MTU.
    pub mtu: u32,
}

/// A service-function VM's second port and its bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SfState {
    /// The egress port's API id.
    pub egress_port_id: String,
    /// Its network's name.
    pub egress_network: String,
    /// The chassis-side interface of `eth1` on `br-int`.
    pub egress_tap: String,
    /// The egress port's MAC address.
    pub egress_mac: String,
    /// The egress port's addresses (unused inside the VM: the bridge has none).
    pub egress_addresses: Vec<String>,
    /// MTU of `eth1` (its network's).
    pub egress_mtu: u32,
    /// Whether it is MPLS-aware (its port pair's correlation `mpls`).
    pub mpls: bool,
}

/// A port chain and what the lab made for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortChainState {
    /// API id.
    pub id: String,
    /// What the file said of it when the lab made it (the chain, its service functions and
    /// the classifiers' VMs): another means it is made again.
    pub made_from: String,
    /// The ports it uses (pairs' and classifiers'), as the lab made it: other ones mean it is
    /// made again.
    pub ports: Vec<String>,
    /// The port pairs by service-function VM: API ids.
    pub pairs: BTreeMap<String, String>,
    /// Its port pair groups in order.
    pub groups: Vec<PortPairGroupState>,
    /// Its flow classifiers in order.
    pub classifiers: Vec<ClassifierState>,
    /// `chain_parameters.correlation`.
    pub correlation: Correlation,
    /// `chain_parameters.symmetric`.
    pub symmetric: bool,
}

/// A port pair group of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPairGroupState {
    /// API id.
    pub id: String,
    /// Its name (`<chain>-<n>`).
    pub name: String,
    /// The service-function VMs whose port pairs it has.
    pub vms: Vec<String>,
}

/// A flow classifier of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierState {
    /// API id.
    pub id: String,
    /// Its name (`<chain>-fc<n>`).
    pub name: String,
    /// What it matches, for people (`a -> b tcp 80`).
    pub label: String,
}

/// A load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerState {
    /// API id.
    pub id: String,
    /// Owning project (`None`: admin).
    pub project: Option<String>,
    /// Its VIP address.
    pub vip: String,
    /// The VIP's network by name.
    pub network: String,
    /// The VIP's subnet by name.
    pub subnet: String,
    /// Its listeners, in the file's order.
    pub listeners: Vec<ListenerState>,
}

/// A listener of a load balancer, with its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerState {
    /// API id.
    pub id: String,
    /// `TCP`, `UDP` or `HTTP`.
    pub protocol: LbProtocol,
    /// Its port.
    pub port: u16,
    /// Its pool's API id.
    pub pool: String,
    /// The pool's members: `vm address:port`.
    pub members: Vec<String>,
    /// The pool's health monitor's type, if it has one.
    pub monitor: Option<MonitorType>,
}

/// A physical segment: an Open vSwitch bridge in a namespace of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalState {
    /// Its network namespace.
    pub netns: String,
    /// Its OVS run directory.
    pub rundir: PathBuf,
    /// MTU of its links.
    pub mtu: u32,
    /// The provider bridge on every chassis.
    pub provider_bridge: String,
}

/// An external host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalState {
    /// Its network namespace.
    pub netns: String,
    /// The physical segment it is on.
    pub physical: String,
    /// Its port's VLAN (none: untagged).
    pub vlan: Option<u16>,
    /// Its address with prefix length.
    pub address: String,
    /// Its IPv6 address with prefix length, if it has IPv6.
    #[serde(default)]
    pub address6: Option<String>,
    /// Its default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Its IPv6 default gateway.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// Its further routes (IPv4 and IPv6).
    pub routes: Vec<RouteSpec>,
    /// MTU of its `eth0` (the segment's).
    pub mtu: u32,
}

impl ExternalState {
    /// Its addresses for people: `172.24.4.100/24`, or with IPv6
    /// `172.24.4.100/24 2001:db8:ee::100/64`.
    pub fn addresses(&self) -> String {
        match &self.address6 {
            Some(a6) => format!("{} {a6}", self.address),
            None => self.address.clone(),
        }
    }
}

/// A floating IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpState {
    /// API id.
    pub id: String,
    /// Its address.
    pub address: String,
    /// The VM it is associated with.
    pub vm: String,
    /// The VM's address it stands for (`fixed_ip_address`).
    pub fixed_ip: String,
    /// The external network it is on.
    pub network: String,
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
    /// Whether it may host routers' centralized gateways.
    #[serde(default)]
    pub gateway: bool,
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
    /// Its segment as the server reports it: type, physical network, segmentation id.
    #[serde(default)]
    pub segment: SegmentState,
    /// `router:external`.
    #[serde(default)]
    pub external: bool,
}

/// A network's provider attributes as the server reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentState {
    /// `provider:network_type`.
    pub network_type: Option<String>,
    /// `provider:physical_network`.
    pub physical_network: Option<String>,
    /// `provider:segmentation_id`.
    pub segmentation_id: Option<u32>,
}

impl std::fmt::Display for SegmentState {
    /// `vlan 101 on physnet1`, `flat on physnet1`, `vxlan 5`; `?` if unknown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.network_type.as_deref().unwrap_or("?"))?;
        if let Some(id) = self.segmentation_id {
            write!(f, " {id}")?;
        }
        if let Some(p) = &self.physical_network {
            write!(f, " on {p}")?;
        }
        Ok(())
    }
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
    /// Its external gateway, if it has one.
    #[serde(default)]
    pub gateway: Option<RouterGatewayState>,
}

/// A router's external gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGatewayState {
    /// The external network's name.
    pub network: String,
    /// Whether it translates the inside's addresses.
    pub enable_snat: bool,
    /// Its addresses on the external network.
    pub addresses: Vec<IpAddr>,
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
                .map_err(|error| Error::State { path, error }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Error::Io {
                what: format!("read {}", path.display()),
                error,
            }),
        }
    }

    /// Writes the state into `dir` (atomically: a temporary file renamed over the old one).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = State::path(dir);
        let tmp = dir.join("state.json.tmp");
        let io = |what: String| move |error| Error::Io { what, error };
        let text = serde_json::to_vec_pretty(self).map_err(|error| Error::State {
            path: path.clone(),
            error,
        })?;
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("rename to {}", path.display())))
    }
}
