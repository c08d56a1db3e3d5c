//! The topology file: what a lab consists of (see the crate documentation for the schema).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

mod kubernetes;
mod lbaas;
mod sfc;
mod trunks;

pub use kubernetes::{
    ContainerPortSpec, KubeServiceSpec, KubernetesSpec, NetworkPolicySpec, PodSpec,
    ServicePortSpec, TargetPort,
};
pub use lbaas::{
    LbAlgorithm, LbProtocol, ListenerSpec, LoadBalancerSpec, MemberSpec, MonitorSpec, MonitorType,
    Persistence, ServeProtocol, ServeSpec,
};
pub use sfc::{ClassifierSpec, Correlation, PortChainSpec, SfSpec, egress_port_name};
pub use trunks::{SubportSpec, subport_port_name};

use crate::names::{self, CHASSIS_MAX, EXTERNAL_MAX, PHYSICAL_MAX, PHYSICAL_RESERVED, VM_MAX};
use crate::{Error, Result};

/// A lab: server, chassis, networks and VMs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The lab's name; it is part of every name the lab makes.
    pub name: String,
    /// The API server.
    #[serde(default)]
    pub server: ServerSpec,
    /// The network between the chassis.
    #[serde(default)]
    pub underlay: UnderlaySpec,
    /// The chassis (at least one).
    #[serde(default)]
    pub chassis: Vec<ChassisSpec>,
    /// Networks with their subnets.
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkSpec>,
    /// VMs, each with one port.
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmSpec>,
    /// Routers joining subnets.
    #[serde(default, rename = "router")]
    pub routers: Vec<RouterSpec>,
    /// Security groups with their rules.
    #[serde(default, rename = "security_group")]
    pub security_groups: Vec<SecurityGroupSpec>,
    /// Address groups (sets of prefixes that rules refer to).
    #[serde(default, rename = "address_group")]
    pub address_groups: Vec<AddressGroupSpec>,
    /// Physical segments: the switches that provider networks are on.
    #[serde(default)]
    pub physical: Vec<PhysicalSpec>,
    /// External hosts on the physical segments (the world outside the cloud).
    #[serde(default, rename = "external")]
    pub externals: Vec<ExternalSpec>,
    /// Floating IPs of VMs.
    #[serde(default, rename = "floating_ip")]
    pub floating_ips: Vec<FloatingIpSpec>,
    /// Load balancers (Octavia's API) with their listeners, pools, members and monitors.
    #[serde(default, rename = "load_balancer")]
    pub load_balancers: Vec<LoadBalancerSpec>,
    /// Port chains (networking-sfc's API) through the service-function VMs.
    #[serde(default, rename = "port_chain")]
    pub port_chains: Vec<PortChainSpec>,
    /// A Kubernetes cluster: its nodes, pods, services and network policies.
    pub kubernetes: Option<KubernetesSpec>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// `ADDR` or `ADDR:PORT` to listen on (an IP address; IPv6 with a port in brackets);
    /// default `127.0.0.1` with a free port (port 0 also means a free one). With several
    /// servers, server n listens on PORT + n - 1. See [`ServerSpec::listen`].
    pub listen: Option<String>,
    /// The northbound store.
    #[serde(default)]
    pub store: StoreKind,
    /// How many etcd members (with `store = "etcd"`): 1, 3 or 5; default 3.
    pub etcd_members: Option<usize>,
    /// How many API servers share the store (more than one needs `store = "etcd"`); default 1.
    pub servers: Option<usize>,
}

/// `[server] store`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One redb file in the lab's state directory (one server only).
    #[default]
    Embedded,
    /// A cluster of real etcd members that the lab starts.
    Etcd,
}

impl ServerSpec {
    /// How many etcd members the lab runs (0 on the embedded store).
    pub fn etcd_member_count(&self) -> usize {
        match self.store {
            StoreKind::Embedded => 0,
            StoreKind::Etcd => self.etcd_members.unwrap_or(3),
        }
    }

    /// How many API servers the lab runs.
    pub fn server_count(&self) -> usize {
        self.servers.unwrap_or(1)
    }

    /// `listen` as an address and a port (0: a free one); default `127.0.0.1`, a free port.
    pub fn listen(&self) -> Result<SocketAddr> {
        let Some(text) = self.listen.as_deref() else {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        };
        text.parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
            .map_err(|_| {
                Error::Topology(format!(
                    "[server] listen {text:?}: an IP address (127.0.0.1, ::1) or an address and \
                     a port (127.0.0.1:9696, [::1]:9696)"
                ))
            })
    }

    fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::Topology(format!("[server]: {why}")));
        let listen = self.listen()?;
        let last = usize::from(listen.port()) + self.server_count().saturating_sub(1);
        if listen.port() != 0 && last > usize::from(u16::MAX) {
            return bad(&format!(
                "listen {listen}: server-{} would listen on port {last}",
                self.server_count()
            ));
        }
        if self.store == StoreKind::Embedded && self.etcd_members.is_some() {
            return bad("etcd_members needs store = \"etcd\"");
        }
        if self.store == StoreKind::Embedded && self.server_count() > 1 {
            return bad("several servers need store = \"etcd\" (they share it)");
        }
        if self.etcd_members.is_some_and(|n| ![1, 3, 5].contains(&n)) {
            return bad("etcd_members: 1, 3 or 5");
        }
        if !(1..=9).contains(&self.server_count()) {
            return bad("servers: 1 to 9");
        }
        Ok(())
    }
}

/// `[underlay]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnderlaySpec {
    /// Subnet of the chassis' tunnel addresses (only inside the lab's namespaces).
    pub cidr: Ipv4Net,
    /// MTU of the underlay links, so full-size overlay frames fit into tunnels.
    pub mtu: u32,
    /// Encapsulation the agents use (`geneve` or `vxlan`); both tunnel ports exist.
    pub encap: String,
}

impl Default for UnderlaySpec {
    fn default() -> Self {
        UnderlaySpec {
            cidr: Ipv4Net::new(Ipv4Addr::new(172, 31, 0, 0), 24).expect("prefix length 24"),
            mtu: 9000,
            encap: "geneve".into(),
        }
    }
}

/// `[[chassis]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChassisSpec {
    /// Name (OVS `system-id`, the agent's `--chassis`, ports' `binding:host_id`).
    pub name: String,
    /// Tunnel address; default: the n-th host address of the underlay subnet.
    pub ip: Option<Ipv4Addr>,
    /// Whether the chassis may host routers' centralized gateways (the agent's `--gateway`).
    #[serde(default)]
    pub gateway: bool,
}

/// Default MTU of a physical segment.
const PHYSICAL_MTU: u32 = 1500;

fn physical_mtu() -> u32 {
    PHYSICAL_MTU
}

/// `[[physical]]`: a physical segment, the switch that provider networks (flat or VLAN) and
/// external hosts are on; every chassis has an uplink into each.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysicalSpec {
    /// Name: the provider networks' `physical_network` (1-8 of `[a-z0-9-]`).
    pub name: String,
    /// MTU of its links (uplinks, external hosts); default 1500.
    #[serde(default = "physical_mtu")]
    pub mtu: u32,
}

/// `[[external]]`: a host outside the cloud, on a physical segment (untagged, or in a VLAN).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSpec {
    /// Name (unique among chassis, VMs, external hosts and segments; 1-12 of `[a-z0-9-]`).
    pub name: String,
    /// The physical segment it is on.
    pub physical: String,
    /// Its address with prefix length.
    pub ip: Ipv4Net,
    /// Its IPv6 address with prefix length (`2001:db8:ee::100/64`), if it has IPv6 (usable at
    /// once: no duplicate address detection); without it the host has no IPv6 at all.
    pub ip6: Option<Ipv6Net>,
    /// The VLAN its port on the segment is in (an access port); default: untagged.
    pub vlan: Option<u16>,
    /// Default gateway (on its subnet).
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 default gateway (on `ip6`'s subnet).
    pub gateway6: Option<Ipv6Addr>,
    /// Further routes: IPv4 ones with next hops on `ip`'s subnet, IPv6 ones (which need `ip6`)
    /// on `ip6`'s.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// `[[floating_ip]]`: a floating IP of a VM, on an external network.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpSpec {
    /// The VM whose port it is associated with (its first IPv4 address).
    pub vm: String,
    /// The external network it is on.
    pub network: String,
    /// Its address; default: allocated by the server.
    pub address: Option<Ipv4Addr>,
}

/// A network's `provider:network_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// Untagged on a physical segment.
    Flat,
    /// A VLAN of a physical segment.
    Vlan,
    /// VXLAN tunnels between the chassis.
    Vxlan,
    /// Geneve tunnels between the chassis.
    Geneve,
}

impl NetworkType {
    /// The API's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Flat => "flat",
            NetworkType::Vlan => "vlan",
            NetworkType::Vxlan => "vxlan",
            NetworkType::Geneve => "geneve",
        }
    }

    /// Whether networks of this type are on a physical segment.
    pub fn is_physical(self) -> bool {
        matches!(self, NetworkType::Flat | NetworkType::Vlan)
    }
}

/// `[[network]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Name (unique in the file).
    pub name: String,
    /// Project that owns it; default: the admin project.
    pub project: Option<String>,
    /// MTU; default: what the server chooses.
    pub mtu: Option<u32>,
    /// `provider:network_type`; default: the server's (a tunnel network). Provider settings
    /// make the network an admin's (created as admin for its project).
    pub network_type: Option<NetworkType>,
    /// `provider:physical_network` (flat and vlan): a `[[physical]]` segment.
    pub physical_network: Option<String>,
    /// `provider:segmentation_id`: the VLAN id (vlan), or the tunnel id (vxlan, geneve).
    pub segmentation_id: Option<u32>,
    /// `router:external`: routers' gateways and floating IPs are on it.
    #[serde(default)]
    pub external: bool,
    /// Its subnets.
    #[serde(default, rename = "subnet")]
    pub subnets: Vec<SubnetSpec>,
}

/// `[[network.subnet]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    /// Name; default `<network>-<n>` (n from 1).
    pub name: Option<String>,
    /// Address range.
    pub cidr: IpNet,
    /// Gateway address, or `"none"`; default: the server's choice (the first address).
    pub gateway: Option<String>,
    /// 4 or 6; it must agree with `cidr`, which it defaults to.
    pub ip_version: Option<u8>,
    /// IPv6 only: what the router advertisements on the subnet say.
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    /// IPv6 only: how ports get their addresses.
    pub ipv6_address_mode: Option<Ipv6Mode>,
    /// DNS servers handed to the ports (DHCP); absent: left as they are (none when created).
    pub dns_nameservers: Option<Vec<IpAddr>>,
}

/// An IPv6 subnet's `ipv6_ra_mode` or `ipv6_address_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ipv6Mode {
    /// Addresses from router advertisements (SLAAC).
    Slaac,
    /// SLAAC addresses, other configuration from DHCPv6.
    Dhcpv6Stateless,
    /// Addresses and configuration from DHCPv6.
    Dhcpv6Stateful,
}

impl Ipv6Mode {
    /// The API's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv6Mode::Slaac => "slaac",
            Ipv6Mode::Dhcpv6Stateless => "dhcpv6-stateless",
            Ipv6Mode::Dhcpv6Stateful => "dhcpv6-stateful",
        }
    }
}

/// The gateway a subnet asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    /// The server's default.
    Default,
    /// No gateway.
    None,
    /// This address.
    Ip(IpAddr),
}

impl SubnetSpec {
    /// The parsed `gateway` (checked by [`Topology::validate`]).
    pub fn gateway(&self) -> Result<Gateway> {
        self.parse_gateway().map_err(Error::Topology)
    }

    fn parse_gateway(&self) -> std::result::Result<Gateway, String> {
        match self.gateway.as_deref() {
            None => Ok(Gateway::Default),
            Some("none") => Ok(Gateway::None),
            Some(s) => {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| format!("gateway {s:?} is neither an address nor \"none\""))?;
                match host_address_problem(self.cidr, ip) {
                    Some(why) => Err(format!("gateway {why}")),
                    None => Ok(Gateway::Ip(ip)),
                }
            }
        }
    }

    /// Whether ports get their address on this subnet from router advertisements (the
    /// address mode, or failing that the RA mode, is `slaac` or `dhcpv6-stateless`), as the
    /// server decides.
    pub fn is_auto_address(&self) -> bool {
        matches!(
            self.ipv6_address_mode.or(self.ipv6_ra_mode),
            Some(Ipv6Mode::Slaac | Ipv6Mode::Dhcpv6Stateless)
        )
    }

    /// The address the subnet's gateway has: the file's, or the server's default (IPv4: the
    /// first host address; IPv6: the subnet-router anycast address, the network address).
    fn gateway_address(&self) -> Result<Option<IpAddr>> {
        Ok(match self.gateway()? {
            Gateway::Ip(ip) => Some(ip),
            Gateway::None => None,
            Gateway::Default => match self.cidr {
                IpNet::V4(net) => net.hosts().next().map(IpAddr::V4),
                IpNet::V6(net) => Some(IpAddr::V6(net.network())),
            },
        })
    }

    fn validate(&self, name: &str) -> Result<()> {
        let bad = |why: String| Err(Error::Topology(format!("subnet {name}: {why}")));
        if let Err(why) = check_prefix("cidr", self.cidr) {
            return bad(why);
        }
        if let Err(why) = self.parse_gateway() {
            return bad(why);
        }
        let v6 = self.cidr.addr().is_ipv6();
        match self.ip_version {
            None => {}
            Some(4) if !v6 => {}
            Some(6) if v6 => {}
            Some(n) => return bad(format!("ip_version {n} does not fit {}", self.cidr)),
        }
        if !v6 && (self.ipv6_ra_mode.is_some() || self.ipv6_address_mode.is_some()) {
            return bad("IPv6 modes on an IPv4 subnet".into());
        }
        if let (Some(ra), Some(addr)) = (self.ipv6_ra_mode, self.ipv6_address_mode)
            && ra != addr
        {
            return bad(format!(
                "ipv6_ra_mode {} and ipv6_address_mode {} differ",
                ra.as_str(),
                addr.as_str()
            ));
        }
        let dns = self.dns_nameservers.as_deref().unwrap_or_default();
        if dns.iter().collect::<BTreeSet<_>>().len() != dns.len() {
            return bad("a DNS server is listed twice".into());
        }
        Ok(())
    }
}

/// `[[router]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    /// Name (unique in the file).
    pub name: String,
    /// Project that owns it; default: the admin project.
    pub project: Option<String>,
    /// Names of the subnets it has an interface on (at the subnet's gateway address).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Extra routes.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// The external network its gateway is on.
    pub gateway: Option<String>,
    /// The gateway's addresses (its `external_fixed_ips`), each in a subnet of the gateway
    /// network, one of them IPv4: the gateway gets exactly these (and any automatic address
    /// of a SLAAC subnet). Empty (the default): the server chooses, and whatever it has is kept.
    #[serde(default)]
    pub gateway_ips: Vec<IpAddr>,
    /// Whether the gateway translates the inside's addresses (SNAT); default true.
    pub enable_snat: Option<bool>,
    /// Where SNAT happens (the router's `snat_mode`): on every chassis (`distributed`, the
    /// default) or on one gateway chassis (`centralized`).
    pub snat_mode: Option<SnatMode>,
}

/// A router's `snat_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnatMode {
    Distributed,
    Centralized,
}

impl SnatMode {
    /// The API's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SnatMode::Distributed => "distributed",
            SnatMode::Centralized => "centralized",
        }
    }
}

/// A route: one of a router's extra routes, or of an external host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Where to (a network address with prefix length).
    pub destination: IpNet,
    /// Through which address (inside a subnet the router has an interface on).
    pub nexthop: IpAddr,
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {}", self.destination, self.nexthop)
    }
}

/// Refuses a prefix with host bits set (`10.9.0.77/24`) instead of cutting them off silently:
/// `what` it is, and the network address that was probably meant.
fn check_prefix(what: &str, prefix: IpNet) -> std::result::Result<(), String> {
    let net = prefix.trunc();
    if prefix == net {
        Ok(())
    } else {
        Err(format!(
            "{what} {prefix} is not a network address (it has host bits set; the network \
             address is {net})"
        ))
    }
}

/// Why `ip` cannot be a host's address in `net`, if it cannot: outside it, or IPv4's network
/// or broadcast address (of a subnet with more than two addresses), as the server decides.
fn host_address_problem(net: IpNet, ip: IpAddr) -> Option<String> {
    let v4_reserved = net.addr().is_ipv4() && net.prefix_len() < 31;
    if !net.contains(&ip) {
        Some(format!("{ip} is outside {net}"))
    } else if v4_reserved && ip == net.network() {
        Some(format!(
            "{ip} is the network address of {net}, not a host address"
        ))
    } else if v4_reserved && ip == net.broadcast() {
        Some(format!(
            "{ip} is the broadcast address of {net}, not a host address"
        ))
    } else {
        None
    }
}

/// Whether two prefixes share addresses (never across IP versions).
fn overlap(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Checks routes: destinations are network addresses, each route one IP version, next hops
/// `on_link`, no route twice.
fn check_routes(
    routes: &[RouteSpec],
    on_link: impl Fn(IpAddr) -> bool,
) -> std::result::Result<(), String> {
    for (i, route) in routes.iter().enumerate() {
        let (dest, hop) = (route.destination, route.nexthop);
        check_prefix("route destination", dest)?;
        if dest.addr().is_ipv4() != hop.is_ipv4() {
            return Err(format!("route to {dest} via {hop} mixes IPv4 and IPv6"));
        }
        if !on_link(hop) {
            return Err(format!(
                "next hop {hop} is not on a subnet it is connected to"
            ));
        }
        if routes[..i].contains(route) {
            return Err(format!("route to {dest} via {hop} listed twice"));
        }
    }
    Ok(())
}

/// Checks a router's `gateway_ips` on its gateway network `net`: each a host address of one of
/// its subnets (not of a SLAAC one, whose addresses come from router advertisements), once; one
/// of them IPv4, which the gateway needs.
fn check_gateway_ips(net: &NetworkSpec, ips: &[IpAddr]) -> std::result::Result<(), String> {
    for (i, &ip) in ips.iter().enumerate() {
        match net.subnets.iter().find(|s| s.cidr.contains(&ip)) {
            None => {
                return Err(format!(
                    "gateway address {ip} is in no subnet of {}",
                    net.name
                ));
            }
            Some(s) if s.is_auto_address() => {
                return Err(format!(
                    "gateway address {ip} is on {}, whose addresses come from router \
                     advertisements",
                    s.cidr
                ));
            }
            Some(s) => {
                if let Some(why) = host_address_problem(s.cidr, ip) {
                    return Err(format!("gateway address {why}"));
                }
            }
        }
        if ips[..i].contains(&ip) {
            return Err(format!("gateway address {ip} listed twice"));
        }
    }
    if !ips.is_empty() && !ips.iter().any(IpAddr::is_ipv4) {
        return Err(
            "gateway_ips has no IPv4 address (the gateway gets exactly these addresses, and \
             needs an IPv4 one)"
                .into(),
        );
    }
    Ok(())
}

/// Highest VLAN id.
const VLAN_MAX: u32 = 4094;
/// Highest tunnel id (24 bits: VXLAN's VNI, Geneve's VNI).
const TUNNEL_ID_MAX: u32 = (1 << 24) - 1;

impl NetworkSpec {
    /// Where a flat or VLAN network is: its physical segment and VLAN id (none: untagged).
    pub fn on_segment(&self) -> Option<(&str, Option<u32>)> {
        let seg = self.physical_network.as_deref()?;
        match self.network_type? {
            NetworkType::Flat => Some((seg, None)),
            NetworkType::Vlan => Some((seg, self.segmentation_id)),
            NetworkType::Vxlan | NetworkType::Geneve => None,
        }
    }

    /// The segment the network claims, for people (`VLAN 101 on physnet1`), if it names one:
    /// no two networks may claim the same.
    fn segment_label(&self) -> Option<String> {
        match (self.on_segment(), self.segmentation_id) {
            (Some((seg, None)), _) => Some(format!("the untagged (flat) segment of {seg}")),
            (Some((seg, Some(id))), _) => Some(format!("VLAN {id} on {seg}")),
            (None, Some(id)) => Some(format!("tunnel id {id}")),
            (None, None) => None,
        }
    }
}

impl ExternalSpec {
    /// Its physical segment and VLAN id (none: untagged), as [`NetworkSpec::on_segment`].
    pub fn on_segment(&self) -> (&str, Option<u32>) {
        (self.physical.as_str(), self.vlan.map(u32::from))
    }
}

/// Routes for people: `D via H, ...`, or `none`.
pub(crate) fn describe_routes<'a>(routes: impl IntoIterator<Item = &'a RouteSpec>) -> String {
    let each: Vec<String> = routes.into_iter().map(RouteSpec::to_string).collect();
    if each.is_empty() {
        "none".into()
    } else {
        each.join(", ")
    }
}

/// How a VM gets its IPv6 configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Config {
    /// The lab configures the port's IPv6 fixed IPs and a default route via the subnet's
    /// gateway (router advertisements are ignored).
    #[default]
    Static,
    /// The lab configures no IPv6: the VM accepts router advertisements and configures
    /// itself (SLAAC).
    Slaac,
}

/// `[[vm]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Name (unique among chassis and VMs); also the port's name.
    pub name: String,
    /// The network of its port.
    pub network: String,
    /// The chassis it runs on.
    pub chassis: String,
    /// Fixed IP address; default: allocated by the server.
    pub ip: Option<IpAddr>,
    /// Project that owns the port; default: the network's.
    pub project: Option<String>,
    /// How the VM configures IPv6.
    #[serde(default)]
    pub ipv6: Ipv6Config,
    /// Whether the VM forwards packets (IPv4 and IPv6), like a router.
    #[serde(default)]
    pub forwarding: bool,
    /// Addresses (with prefix length) on a dummy interface inside the VM (`behind0`):
    /// prefixes "behind" it. Its port allows them as sources (`allowed_address_pairs`).
    #[serde(default)]
    pub extra_addresses: Vec<IpNet>,
    /// Its port's security groups by name (`default`: the project's own); absent: the
    /// project's `default` group, as Neutron chooses.
    pub security_groups: Option<Vec<String>>,
    /// Whether its port has port security (anti-spoofing and security groups).
    #[serde(default = "yes")]
    pub port_security: bool,
    /// Tiny servers the VM runs (answering with its name), to show load balancing.
    #[serde(default)]
    pub serve: Vec<ServeSpec>,
    /// Makes the VM a service function (`sf = { network = "net2", mpls = false }`): a second
    /// port, the egress, and the two bridged inside the VM; see [`SfSpec`].
    pub sf: Option<SfSpec>,
    /// Makes the VM's port the parent of a trunk with these subports
    /// (`subports = [{ network = "net2", vlan = 101 }]`), tagged inside the VM; see
    /// [`SubportSpec`].
    #[serde(default)]
    pub subports: Vec<SubportSpec>,
}

fn yes() -> bool {
    true
}

/// The name of the group every project has (made by the server, never by the file).
pub const DEFAULT_GROUP: &str = "default";

/// `[[security_group]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupSpec {
    /// Name (unique in the file; not `default`).
    pub name: String,
    /// Project that owns it; default: the admin project.
    pub project: Option<String>,
    /// Whether return traffic is let through by connection tracking.
    #[serde(default = "yes")]
    pub stateful: bool,
    /// Whether the group keeps the two allow-all egress rules (IPv4, IPv6) that Neutron gives
    /// every new group.
    #[serde(default = "yes")]
    pub default_rules: bool,
    /// Its rules (besides the default ones).
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// Which way a rule lets packets through, seen from the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Into the port.
    Ingress,
    /// Out of the port.
    Egress,
}

/// A rule's IP version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Ethertype {
    /// IPv4 (the default).
    #[default]
    IPv4,
    /// IPv6.
    IPv6,
}

/// A rule's protocol: a name Neutron knows (`tcp`, `udp`, `icmp`, `icmpv6`, ...) or a number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Protocol {
    /// IP protocol number.
    Number(u8),
    /// Name.
    Name(String),
}

/// One rule of a security group (`rules = [{ ... }]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// `ingress` or `egress`.
    pub direction: Direction,
    /// `IPv4` (default) or `IPv6`.
    #[serde(default)]
    pub ethertype: Ethertype,
    /// Protocol; absent: any.
    pub protocol: Option<Protocol>,
    /// Lowest port (TCP, UDP, ...) or ICMP type.
    pub port_range_min: Option<u16>,
    /// Highest port, or ICMP code.
    pub port_range_max: Option<u16>,
    /// Remote addresses.
    pub remote_ip_prefix: Option<IpNet>,
    /// Remote ports: the members of this group (by name; `default`: the project's own).
    pub remote_group: Option<String>,
    /// Remote addresses: this address group (by name).
    pub remote_address_group: Option<String>,
}

/// `[[address_group]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressGroupSpec {
    /// Name (unique in the file).
    pub name: String,
    /// Project that owns it; default: the admin project.
    pub project: Option<String>,
    /// Its prefixes (an address alone is a host prefix).
    #[serde(default, deserialize_with = "prefixes")]
    pub addresses: Vec<IpNet>,
}

/// Prefixes, each written as a prefix or as an address alone (a host prefix).
fn prefixes<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is no address or prefix")))
        })
        .collect()
}

/// The project an object of the file belongs to (`admin` when it names none).
pub(crate) fn project_of(project: &Option<String>) -> &str {
    project.as_deref().unwrap_or("admin")
}

fn check_project(project: Option<&str>) -> Result<()> {
    project.map_or(Ok(()), |p| check_api_name("project", p))
}

impl Protocol {
    /// The IP protocol number (`icmp` and `icmpv6` apart: the caller's ethertype decides).
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Number(n) => Some(*n),
            Protocol::Name(name) => model::validate::PROTOCOLS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .or_else(|| name.parse().ok()),
        }
    }
}

fn check_api_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::Topology(format!(
            "{what} name {name:?}: 1 to 64 of [A-Za-z0-9._-], starting with a letter or digit"
        )))
    }
}

impl Topology {
    /// Parses and validates a topology.
    pub fn parse(text: &str, origin: &Path) -> Result<Topology> {
        let t: Topology = toml::from_str(text).map_err(|e| Error::Parse {
            path: origin.to_owned(),
            error: Box::new(e),
        })?;
        t.validate()?;
        Ok(t)
    }

    /// Reads, parses and validates a topology file.
    pub fn from_file(path: &Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
            what: format!("read {}", path.display()),
            error,
        })?;
        Topology::parse(&text, path)
    }

    /// Checks names, references and addresses.
    pub fn validate(&self) -> Result<()> {
        names::check_lab_name(&self.name)?;
        self.server.validate()?;
        if self.chassis.is_empty() {
            return Err(Error::Topology("at least one [[chassis]] is needed".into()));
        }
        if !["geneve", "vxlan"].contains(&self.underlay.encap.as_str()) {
            return Err(Error::Topology(format!(
                "underlay encap {:?}: geneve or vxlan",
                self.underlay.encap
            )));
        }
        check_prefix("underlay cidr", self.underlay.cidr.into()).map_err(Error::Topology)?;
        if !(1280..=9000).contains(&self.underlay.mtu) {
            return Err(Error::Topology(format!(
                "underlay mtu {} outside 1280..=9000",
                self.underlay.mtu
            )));
        }
        let mut hosts = BTreeSet::new();
        for c in &self.chassis {
            names::check_host_name("chassis", &c.name, CHASSIS_MAX)?;
            if !hosts.insert(c.name.as_str()) {
                return Err(Error::Topology(format!("name {} used twice", c.name)));
            }
        }
        self.validate_tunnel_ips()?;
        for p in &self.physical {
            names::check_host_name("physical segment", &p.name, PHYSICAL_MAX)?;
            if PHYSICAL_RESERVED.contains(&p.name.as_str()) {
                return Err(Error::Topology(format!(
                    "physical segment name {}: reserved (its provider bridge would be br-{}, \
                     a chassis' own bridge)",
                    p.name, p.name
                )));
            }
            if !hosts.insert(p.name.as_str()) {
                return Err(Error::Topology(format!("name {} used twice", p.name)));
            }
            if !(1280..=9000).contains(&p.mtu) {
                return Err(Error::Topology(format!(
                    "physical segment {}: mtu {} outside 1280..=9000",
                    p.name, p.mtu
                )));
            }
        }
        for e in &self.externals {
            names::check_host_name("external host", &e.name, EXTERNAL_MAX)?;
            if !hosts.insert(e.name.as_str()) {
                return Err(Error::Topology(format!("name {} used twice", e.name)));
            }
            self.validate_external(e)?;
        }
        let mut nets = BTreeSet::new();
        let mut subnets = BTreeSet::new();
        let mut segments = BTreeMap::new();
        for n in &self.networks {
            check_api_name("network", &n.name)?;
            if let Some(p) = &n.project {
                check_api_name("project", p)?;
            }
            if !nets.insert(n.name.as_str()) {
                return Err(Error::Topology(format!("network {} defined twice", n.name)));
            }
            self.validate_provider(n)?;
            if let Some(seg) = n.segment_label()
                && let Some(other) = segments.insert(seg.clone(), n.name.as_str())
            {
                return Err(Error::Topology(format!(
                    "network {}: {seg} is network {other}'s already",
                    n.name
                )));
            }
            for (i, s) in n.subnets.iter().enumerate() {
                let name = self.subnet_name(n, i);
                check_api_name("subnet", &name)?;
                s.validate(&name)?;
                if !subnets.insert(name.clone()) {
                    return Err(Error::Topology(format!("subnet {name} defined twice")));
                }
            }
            self.validate_subnets_apart(n)?;
        }
        let mut groups = BTreeSet::new();
        for a in &self.address_groups {
            check_api_name("address group", &a.name)?;
            check_project(a.project.as_deref())?;
            if !groups.insert(a.name.as_str()) {
                return Err(Error::Topology(format!(
                    "address group {} defined twice",
                    a.name
                )));
            }
            for p in &a.addresses {
                check_prefix("address", *p)
                    .map_err(|why| Error::Topology(format!("address group {}: {why}", a.name)))?;
            }
        }
        groups.clear();
        for g in &self.security_groups {
            check_api_name("security group", &g.name)?;
            check_project(g.project.as_deref())?;
            if g.name == DEFAULT_GROUP {
                return Err(Error::Topology(format!(
                    "security group {DEFAULT_GROUP}: every project has it already (leave it out, \
                     or name the group otherwise)"
                )));
            }
            if !groups.insert(g.name.as_str()) {
                return Err(Error::Topology(format!(
                    "security group {} defined twice",
                    g.name
                )));
            }
            for (i, r) in g.rules.iter().enumerate() {
                self.validate_rule(g, r).map_err(|why| {
                    Error::Topology(format!("security group {} rule {}: {why}", g.name, i + 1))
                })?;
            }
        }
        for v in &self.vms {
            names::check_host_name("vm", &v.name, VM_MAX)?;
            if !hosts.insert(v.name.as_str()) {
                return Err(Error::Topology(format!("name {} used twice", v.name)));
            }
            self.validate_vm(v)?;
            lbaas::validate_serve(v)?;
            sfc::validate_sf(self, v)?;
            trunks::validate_subports(self, v)?;
        }
        kubernetes::validate(self)?;
        let mut routers = BTreeSet::new();
        for r in &self.routers {
            check_api_name("router", &r.name)?;
            if !routers.insert(r.name.as_str()) {
                return Err(Error::Topology(format!("router {} defined twice", r.name)));
            }
            self.validate_router(r)?;
        }
        self.validate_interfaces_once()?;
        for (i, f) in self.floating_ips.iter().enumerate() {
            self.validate_floating_ip(i, f)?;
        }
        self.validate_load_balancers()?;
        self.validate_port_chains()?;
        self.validate_addresses()
    }

    /// Checks that no two chassis have the same tunnel address (the file's `ip`, or the
    /// default one), naming both.
    fn validate_tunnel_ips(&self) -> Result<()> {
        let mut owners: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        for (c, ip) in self.chassis.iter().zip(self.tunnel_ips()?) {
            if let Some(other) = owners.insert(ip, &c.name) {
                return Err(Error::Topology(format!(
                    "chassis {}: tunnel address {ip} is chassis {other}'s too",
                    c.name
                )));
            }
        }
        Ok(())
    }

    /// Checks that the subnets of network `n` share no address (the server refuses
    /// overlapping subnets on a network), naming both.
    fn validate_subnets_apart(&self, n: &NetworkSpec) -> Result<()> {
        for (i, s) in n.subnets.iter().enumerate() {
            if let Some(j) = n.subnets[..i].iter().position(|o| overlap(o.cidr, s.cidr)) {
                return Err(Error::Topology(format!(
                    "subnet {} ({}) overlaps subnet {} ({}) of the same network {}",
                    self.subnet_name(n, i),
                    s.cidr,
                    self.subnet_name(n, j),
                    n.subnets[j].cidr,
                    n.name
                )));
            }
        }
        Ok(())
    }

    /// Checks that no subnet has interfaces of two routers: an interface is at the subnet's
    /// gateway address, which only one port can have (the server refuses the second).
    fn validate_interfaces_once(&self) -> Result<()> {
        let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
        for r in &self.routers {
            for subnet in &r.interfaces {
                if let Some(other) = owners.insert(subnet, &r.name)
                    && other != r.name
                {
                    return Err(Error::Topology(format!(
                        "router {}: subnet {subnet} has an interface of router {other} already \
                         (an interface is at the subnet's gateway address, and one router can \
                         have it)",
                        r.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Checks that no address is given twice on a network: the subnets' gateways (the file's
    /// or the server's default), the VMs' fixed IPs, the routers' gateway addresses, the
    /// floating IPs and the external hosts on a provider network's segment (in its VLAN).
    fn validate_addresses(&self) -> Result<()> {
        let mut taken: BTreeMap<(String, IpAddr), String> = BTreeMap::new();
        let mut claim =
            |network: &str, ip: IpAddr, who: String| match taken.entry((network.to_owned(), ip)) {
                Entry::Occupied(owner) => Err(Error::Topology(format!(
                    "{who}: {ip} is taken by {} on network {network}",
                    owner.get()
                ))),
                Entry::Vacant(free) => {
                    free.insert(who);
                    Ok(())
                }
            };
        for n in &self.networks {
            let mut outside = Vec::new();
            for h in &self.externals {
                let ip6 = h.ip6.map(|n| IpAddr::V6(n.addr()));
                for ip in std::iter::once(IpAddr::V4(h.ip.addr())).chain(ip6) {
                    if n.on_segment() == Some(h.on_segment())
                        && n.subnets.iter().any(|s| s.cidr.contains(&ip))
                    {
                        claim(&n.name, ip, format!("external host {}", h.name))?;
                        outside.push(ip);
                    }
                }
            }
            for (i, s) in n.subnets.iter().enumerate() {
                // An external network's gateway is outside the cloud: an external host may be
                // it (the upstream router).
                if let Some(gw) = s.gateway_address()?
                    && !(n.external && outside.contains(&gw))
                {
                    let who = format!("the gateway of subnet {}", self.subnet_name(n, i));
                    claim(&n.name, gw, who)?;
                }
            }
        }
        for r in &self.routers {
            if let Some(g) = &r.gateway {
                for &ip in &r.gateway_ips {
                    claim(g, ip, format!("the gateway of router {}", r.name))?;
                }
            }
        }
        for v in &self.vms {
            if let Some(ip) = v.ip {
                claim(&v.network, ip, format!("vm {}", v.name))?;
            }
            for s in &v.subports {
                if let Some(ip) = s.ip {
                    let who = format!("subport {}", subport_port_name(&v.name, s.vlan));
                    claim(&s.network, ip, who)?;
                }
            }
        }
        for f in &self.floating_ips {
            if let Some(a) = f.address {
                claim(
                    &f.network,
                    a.into(),
                    format!("the floating IP of vm {}", f.vm),
                )?;
            }
        }
        for lb in &self.load_balancers {
            if let (Some(ip), Some((net, _, _))) = (lb.vip, self.vip_subnet(lb)) {
                claim(
                    &net.name,
                    ip,
                    format!("the VIP of load balancer {}", lb.name),
                )?;
            }
        }
        Ok(())
    }

    fn validate_rule(
        &self,
        g: &SecurityGroupSpec,
        r: &RuleSpec,
    ) -> std::result::Result<(), String> {
        let remotes = [
            r.remote_ip_prefix.is_some(),
            r.remote_group.is_some(),
            r.remote_address_group.is_some(),
        ];
        if remotes.into_iter().filter(|x| *x).count() > 1 {
            return Err(
                "at most one of remote_ip_prefix, remote_group, remote_address_group".into(),
            );
        }
        if let Some(p) = r.remote_ip_prefix {
            if p.addr().is_ipv4() != (r.ethertype == Ethertype::IPv4) {
                return Err(format!("remote_ip_prefix {p} is not {:?}", r.ethertype));
            }
            check_prefix("remote_ip_prefix", p)?;
        }
        if let Some(name) = &r.remote_group {
            self.group_in_project(name, g.project.as_deref())?;
        }
        if let Some(name) = &r.remote_address_group {
            let Some(a) = self.address_groups.iter().find(|a| &a.name == name) else {
                return Err(format!("no address group {name}"));
            };
            if project_of(&a.project) != project_of(&g.project) {
                return Err(format!(
                    "address group {name} belongs to project {}, the group to {}",
                    project_of(&a.project),
                    project_of(&g.project)
                ));
            }
        }
        let number = match &r.protocol {
            None => None,
            Some(p) => Some(
                p.number()
                    .ok_or_else(|| format!("unknown protocol {p:?}"))?,
            ),
        };
        if number == Some(58) && r.ethertype == Ethertype::IPv4 {
            return Err("ICMPv6 in an IPv4 rule".into());
        }
        let (min, max) = (r.port_range_min, r.port_range_max);
        if min.is_none() && max.is_none() {
            return Ok(());
        }
        match number {
            Some(1 | 58) if min.is_none() => {
                Err("an ICMP code needs a type (port_range_min)".into())
            }
            Some(1 | 58) if min.max(max).is_some_and(|v| v > 255) => {
                Err("ICMP type and code are 0-255".into())
            }
            Some(1 | 58) => Ok(()),
            Some(6 | 17 | 33 | 132 | 136) => match (min, max) {
                (Some(a), Some(b)) if 0 < a && a <= b => Ok(()),
                _ => Err("ports need 1 <= port_range_min <= port_range_max".into()),
            },
            _ => Err("port ranges only with tcp, udp, dccp, sctp, udplite or ICMP".into()),
        }
    }

    /// Checks that security group `name` (one of the file's, or `default`) may be used by
    /// `project`'s objects.
    fn group_in_project(
        &self,
        name: &str,
        project: Option<&str>,
    ) -> std::result::Result<(), String> {
        if name == DEFAULT_GROUP {
            return Ok(());
        }
        let Some(g) = self.security_groups.iter().find(|g| g.name == name) else {
            return Err(format!("no security group {name}"));
        };
        let (theirs, ours) = (
            g.project.as_deref().unwrap_or("admin"),
            project.unwrap_or("admin"),
        );
        if theirs == ours {
            Ok(())
        } else {
            Err(format!(
                "security group {name} belongs to project {theirs}, not {ours}"
            ))
        }
    }

    fn validate_vm(&self, v: &VmSpec) -> Result<()> {
        let bad = |why: String| Err(Error::Topology(format!("vm {}: {why}", v.name)));
        let Some(net) = self.network(&v.network) else {
            return bad(format!("no network {}", v.network));
        };
        if net.subnets.is_empty() {
            return bad(format!("network {} has no subnet", v.network));
        }
        if !self.chassis.iter().any(|c| c.name == v.chassis) {
            return bad(format!("no chassis {}", v.chassis));
        }
        if let Some(p) = &v.project {
            check_api_name("project", p)?;
        }
        if let Some(ip) = v.ip {
            match net.subnets.iter().find(|s| s.cidr.contains(&ip)) {
                None => return bad(format!("{ip} is in no subnet of {}", v.network)),
                Some(s) if s.is_auto_address() => {
                    return bad(format!(
                        "{ip} is on {}, whose addresses come from router advertisements",
                        s.cidr
                    ));
                }
                Some(s) => {
                    if let Some(why) = host_address_problem(s.cidr, ip) {
                        return bad(why);
                    }
                }
            }
        }
        if v.ipv6 == Ipv6Config::Slaac && !net.subnets.iter().any(SubnetSpec::is_auto_address) {
            return bad(format!(
                "ipv6 = \"slaac\" needs an IPv6 subnet in slaac or dhcpv6-stateless mode on {}",
                v.network
            ));
        }
        let extra = &v.extra_addresses;
        if extra.iter().collect::<BTreeSet<_>>().len() != extra.len() {
            return bad("an extra address is listed twice".into());
        }
        let project = v.project.as_deref().or(net.project.as_deref());
        if let Some(groups) = &v.security_groups {
            if !v.port_security && !groups.is_empty() {
                return bad("security groups need port_security".into());
            }
            for (i, g) in groups.iter().enumerate() {
                if groups[..i].contains(g) {
                    return bad(format!("security group {g} listed twice"));
                }
                if let Err(why) = self.group_in_project(g, project) {
                    return bad(why);
                }
            }
        }
        if !v.port_security && !extra.is_empty() {
            return bad("extra addresses need port_security (allowed address pairs)".into());
        }
        Ok(())
    }

    fn validate_router(&self, r: &RouterSpec) -> Result<()> {
        let bad = |why: String| Err(Error::Topology(format!("router {}: {why}", r.name)));
        if let Some(p) = &r.project {
            check_api_name("project", p)?;
        }
        let admin = matches!(r.project.as_deref(), None | Some("admin"));
        let mut connected: Vec<IpNet> = Vec::new();
        for (i, name) in r.interfaces.iter().enumerate() {
            let Some((net, subnet)) = self.subnet(name) else {
                return bad(format!("no subnet {name}"));
            };
            if r.interfaces[..i].contains(name) {
                return bad(format!("subnet {name} listed twice"));
            }
            if subnet.gateway()? == Gateway::None {
                return bad(format!(
                    "subnet {name} has no gateway to put the interface on"
                ));
            }
            if !admin && net.project != r.project {
                return bad(format!(
                    "subnet {name} belongs to project {}, the router to {}",
                    net.project.as_deref().unwrap_or("admin"),
                    r.project.as_deref().unwrap_or("admin")
                ));
            }
            let cidr = subnet.cidr;
            if let Some(other) = connected.iter().find(|c| overlap(**c, cidr)) {
                return bad(format!("subnet {name} ({cidr}) overlaps {other}"));
            }
            connected.push(cidr);
        }
        check_routes(&r.routes, |hop| connected.iter().any(|c| c.contains(&hop)))
            .map_err(|why| Error::Topology(format!("router {}: {why}", r.name)))?;
        if let Some(g) = &r.gateway {
            let Some(net) = self.network(g) else {
                return bad(format!("no network {g} for the gateway"));
            };
            if !net.external {
                return bad(format!(
                    "gateway network {g} is not external (external = true)"
                ));
            }
            if !net.subnets.iter().any(|s| s.cidr.addr().is_ipv4()) {
                return bad(format!("gateway network {g} has no IPv4 subnet"));
            }
            if let Err(why) = check_gateway_ips(net, &r.gateway_ips) {
                return bad(why);
            }
        } else if r.enable_snat.is_some() {
            return bad("enable_snat needs a gateway".into());
        } else if r.snat_mode.is_some() {
            return bad("snat_mode needs a gateway".into());
        } else if !r.gateway_ips.is_empty() {
            return bad("gateway_ips needs a gateway".into());
        }
        Ok(())
    }

    fn validate_external(&self, e: &ExternalSpec) -> Result<()> {
        let bad = |why: String| Err(Error::Topology(format!("external host {}: {why}", e.name)));
        if self.physical_segment(&e.physical).is_none() {
            return bad(format!("no physical segment {}", e.physical));
        }
        if let Some(v) = e.vlan
            && !(1..=VLAN_MAX).contains(&u32::from(v))
        {
            return bad(format!("vlan {v} outside 1..={VLAN_MAX}"));
        }
        let (addr, net) = (e.ip.addr(), e.ip.trunc());
        if let Some(why) = host_address_problem(net.into(), addr.into()) {
            return bad(why);
        }
        let v6 = e.ip6.map(|ip6| (ip6.addr(), ip6.trunc()));
        if let Some((addr6, net6)) = v6 {
            if addr6.is_unspecified() || addr6.is_loopback() || addr6.is_multicast() {
                return bad(format!("ip6 {addr6} is not a unicast address"));
            }
            if let Some(why) = host_address_problem(net6.into(), addr6.into()) {
                return bad(format!("ip6 {why}"));
            }
        }
        let on_link = |hop: IpAddr| match hop {
            IpAddr::V4(h) => net.contains(&h) && h != addr,
            IpAddr::V6(h) => v6.is_some_and(|(addr6, net6)| net6.contains(&h) && h != addr6),
        };
        if let Some(gw) = e.gateway
            && !on_link(gw.into())
        {
            return bad(format!("gateway {gw} is not another address of {net}"));
        }
        match (e.gateway6, v6) {
            (Some(_), None) => return bad("gateway6 needs ip6".into()),
            (Some(gw), Some((_, net6))) if !on_link(gw.into()) => {
                return bad(format!("gateway6 {gw} is not another address of {net6}"));
            }
            _ => {}
        }
        if e.ip6.is_none()
            && let Some(r) = e.routes.iter().find(|r| r.nexthop.is_ipv6())
        {
            return bad(format!("route to {r}: an IPv6 route needs ip6"));
        }
        for (key, set, default) in [
            (
                "gateway",
                e.gateway.is_some(),
                IpNet::V4(Ipv4Net::default()),
            ),
            (
                "gateway6",
                e.gateway6.is_some(),
                IpNet::V6(Ipv6Net::default()),
            ),
        ] {
            if set && e.routes.iter().any(|r| r.destination == default) {
                return bad(format!(
                    "a route to {default} besides {key} (both are the default route)"
                ));
            }
        }
        check_routes(&e.routes, on_link)
            .map_err(|why| Error::Topology(format!("external host {}: {why}", e.name)))?;
        let twin = self
            .externals
            .iter()
            .take_while(|o| o.name != e.name)
            .filter(|o| o.physical == e.physical && o.vlan == e.vlan)
            .find_map(|o| {
                if o.ip.addr() == addr {
                    return Some((o, IpAddr::V4(addr)));
                }
                let ours = e.ip6?.addr();
                (o.ip6.map(|n| n.addr()) == Some(ours)).then_some((o, IpAddr::V6(ours)))
            });
        if let Some((o, ip)) = twin {
            return bad(format!(
                "{ip} is external host {}'s too, on the same segment and VLAN",
                o.name
            ));
        }
        Ok(())
    }

    fn validate_provider(&self, n: &NetworkSpec) -> Result<()> {
        let bad = |why: String| Err(Error::Topology(format!("network {}: {why}", n.name)));
        let Some(kind) = n.network_type else {
            if n.physical_network.is_some() || n.segmentation_id.is_some() {
                return bad("physical_network and segmentation_id need a network_type".into());
            }
            return Ok(());
        };
        let t = kind.as_str();
        let physical = kind.is_physical();
        match (n.physical_network.as_deref(), n.segmentation_id) {
            (None, _) if physical => return bad(format!("a {t} network needs a physical_network")),
            (Some(_), _) if !physical => {
                return bad(format!("a {t} network has no physical_network"));
            }
            (_, Some(_)) if kind == NetworkType::Flat => {
                return bad("a flat network has no segmentation_id".into());
            }
            (_, None) if kind == NetworkType::Vlan => {
                return bad("a vlan network needs a segmentation_id (its VLAN id)".into());
            }
            (_, Some(id)) if kind == NetworkType::Vlan && !(1..=VLAN_MAX).contains(&id) => {
                return bad(format!("VLAN id {id} outside 1..={VLAN_MAX}"));
            }
            (_, Some(id)) if !(1..=TUNNEL_ID_MAX).contains(&id) => {
                return bad(format!("tunnel id {id} outside 1..={TUNNEL_ID_MAX}"));
            }
            _ => {}
        }
        if let Some(p) = &n.physical_network {
            let Some(seg) = self.physical_segment(p) else {
                return bad(format!("no physical segment {p}"));
            };
            // Without `mtu`, the server gives flat and VLAN networks the segment default.
            let mtu = n.mtu.unwrap_or(PHYSICAL_MTU);
            if mtu > seg.mtu {
                return bad(format!(
                    "mtu {mtu} exceeds physical segment {p}'s {} (set the network's mtu)",
                    seg.mtu
                ));
            }
        }
        Ok(())
    }

    fn validate_floating_ip(&self, i: usize, f: &FloatingIpSpec) -> Result<()> {
        let bad = |why: String| {
            Err(Error::Topology(format!(
                "floating IP of vm {} on {}: {why}",
                f.vm, f.network
            )))
        };
        let Some(vm) = self.vms.iter().find(|v| v.name == f.vm) else {
            return bad(format!("no vm {}", f.vm));
        };
        let Some(net) = self.network(&f.network) else {
            return bad(format!("no network {}", f.network));
        };
        if !net.external {
            return bad(format!(
                "network {} is not external (external = true)",
                f.network
            ));
        }
        let earlier = &self.floating_ips[..i];
        if earlier
            .iter()
            .any(|o| o.vm == f.vm && o.network == f.network)
        {
            return bad("listed twice".into());
        }
        let joins = |r: &RouterSpec| {
            r.gateway.as_deref() == Some(f.network.as_str())
                && r.interfaces.iter().any(|s| {
                    self.subnet(s)
                        .is_some_and(|(n, s)| n.name == vm.network && s.cidr.addr().is_ipv4())
                })
        };
        if !self.routers.iter().any(joins) {
            return bad(format!(
                "no router joins network {} (an interface on an IPv4 subnet) to {} (its gateway)",
                vm.network, f.network
            ));
        }
        let Some(a) = f.address else {
            return Ok(());
        };
        // Addresses taken by others: see `validate_addresses`.
        match net.subnets.iter().find(|s| s.cidr.contains(&IpAddr::V4(a))) {
            None => bad(format!("{a} is in no subnet of {}", f.network)),
            Some(s) => host_address_problem(s.cidr, a.into()).map_or(Ok(()), bad),
        }
    }

    /// The physical segment called `name`.
    pub fn physical_segment(&self, name: &str) -> Option<&PhysicalSpec> {
        self.physical.iter().find(|p| p.name == name)
    }

    /// The subnet called `name` (see [`Topology::subnet_name`]) with its network.
    pub fn subnet(&self, name: &str) -> Option<(&NetworkSpec, &SubnetSpec)> {
        self.networks.iter().find_map(|n| {
            (0..n.subnets.len())
                .find(|&i| self.subnet_name(n, i) == name)
                .map(|i| (n, &n.subnets[i]))
        })
    }

    /// The network called `name`.
    pub fn network(&self, name: &str) -> Option<&NetworkSpec> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The name of the `i`-th subnet of `net`.
    pub fn subnet_name(&self, net: &NetworkSpec, i: usize) -> String {
        net.subnets[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", net.name, i + 1))
    }

    /// Tunnel address of every chassis, in file order: its `ip`, or the n-th host address of
    /// the underlay subnet.
    pub fn tunnel_ips(&self) -> Result<Vec<Ipv4Addr>> {
        let cidr = self.underlay.cidr;
        self.chassis
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ip = match c.ip {
                    Some(ip) => ip,
                    None => cidr
                        .hosts()
                        .nth(i)
                        .ok_or_else(|| Error::Topology(format!("underlay {cidr} is too small")))?,
                };
                match host_address_problem(cidr.into(), ip.into()) {
                    None => Ok(ip),
                    Some(why) => Err(Error::Topology(format!("chassis {}: {why}", c.name))),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Topology> {
        Topology::parse(s, Path::new("t.toml"))
    }

    const GOOD: &str = r#"
name = "t1"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
ip = "172.31.0.20"
[[network]]
name = "blue"
project = "alpha"
[[network.subnet]]
cidr = "10.0.0.0/24"
gateway = "10.0.0.254"
[[network]]
name = "green"
project = "alpha"
[[network.subnet]]
cidr = "10.1.0.0/24"
[[network.subnet]]
name = "green-v6"
cidr = "fd00:1::/64"
ip_version = 6
ipv6_ra_mode = "slaac"
ipv6_address_mode = "slaac"
dns_nameservers = ["fd00:1::53"]
[[vm]]
name = "vm1"
network = "blue"
chassis = "c2"
ip = "10.0.0.5"
forwarding = true
extra_addresses = ["192.168.50.1/24"]
[[vm]]
name = "vm2"
network = "green"
chassis = "c1"
ipv6 = "slaac"
[[router]]
name = "r1"
project = "alpha"
interfaces = ["blue-1", "green-1", "green-v6"]
routes = [{ destination = "192.168.50.0/24", nexthop = "10.0.0.5" }]
[[vm]]
name = "vm3"
network = "blue"
chassis = "c1"
security_groups = ["web", "default"]
[[vm]]
name = "vm4"
network = "blue"
chassis = "c1"
port_security = false
[[address_group]]
name = "admins"
project = "alpha"
addresses = ["10.9.0.0/24", "10.9.1.5"]
[[security_group]]
name = "web"
project = "alpha"
stateful = false
default_rules = false
rules = [
  { direction = "ingress", protocol = "tcp", port_range_min = 80, port_range_max = 80, remote_group = "web" },
  { direction = "ingress", ethertype = "IPv6", protocol = "icmpv6", port_range_min = 128 },
  { direction = "egress", protocol = 17, remote_address_group = "admins" },
  { direction = "ingress", protocol = "icmp", port_range_min = 8, remote_ip_prefix = "10.0.0.0/24" },
]
"#;

    #[test]
    fn parses_the_example_and_defaults() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.underlay.encap, "geneve");
        assert_eq!(
            t.tunnel_ips().unwrap(),
            [
                "172.31.0.1".parse::<Ipv4Addr>().unwrap(),
                "172.31.0.20".parse().unwrap()
            ]
        );
        assert_eq!(t.subnet_name(&t.networks[0], 0), "blue-1");
        assert_eq!(
            t.networks[0].subnets[0].gateway().unwrap(),
            Gateway::Ip("10.0.0.254".parse().unwrap())
        );
        let (net, v6) = t.subnet("green-v6").unwrap();
        assert_eq!(net.name, "green");
        assert!(v6.is_auto_address() && !t.networks[0].subnets[0].is_auto_address());
        assert_eq!(v6.ipv6_ra_mode, Some(Ipv6Mode::Slaac));
        assert_eq!(t.vms[0].ipv6, Ipv6Config::Static);
        assert_eq!(t.vms[1].ipv6, Ipv6Config::Slaac);
        assert_eq!(t.routers[0].routes[0].nexthop.to_string(), "10.0.0.5");
        // Security: groups omitted (the project's default), named, or no port security.
        assert_eq!(
            (t.vms[0].security_groups.as_ref(), t.vms[0].port_security),
            (None, true)
        );
        assert_eq!(
            t.vms[2].security_groups.as_deref().unwrap(),
            ["web", "default"]
        );
        assert!(!t.vms[3].port_security);
        let web = &t.security_groups[0];
        assert!(!web.stateful && !web.default_rules);
        assert_eq!(web.rules[0].ethertype, Ethertype::IPv4);
        assert_eq!(
            web.rules[1].protocol.as_ref().and_then(Protocol::number),
            Some(58)
        );
        assert_eq!(web.rules[2].protocol, Some(Protocol::Number(17)));
        assert_eq!(
            t.address_groups[0].addresses[1],
            "10.9.1.5/32".parse::<IpNet>().unwrap()
        );
        for example in [
            include_str!("../../../examples/demo.toml"),
            include_str!("../../../examples/routed.toml"),
            include_str!("../../../examples/secgroups.toml"),
            include_str!("../../../examples/ha.toml"),
            include_str!("../../../examples/outside.toml"),
            include_str!("../../../examples/loadbalancer.toml"),
            include_str!("../../../examples/chain.toml"),
            include_str!("../../../examples/trunk.toml"),
        ] {
            parse(example).unwrap();
        }
    }

    #[test]
    fn server_store_settings() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.server.store, StoreKind::Embedded);
        assert_eq!(
            (t.server.etcd_member_count(), t.server.server_count()),
            (0, 1)
        );
        let ha = |server: &str| {
            parse(&GOOD.replace(
                "name = \"t1\"\n",
                &format!("name = \"t1\"\n[server]\n{server}\n"),
            ))
        };
        let t = ha("store = \"etcd\"\nservers = 2").unwrap();
        assert_eq!(
            (t.server.etcd_member_count(), t.server.server_count()),
            (3, 2)
        );
        let t = ha("store = \"etcd\"\netcd_members = 1").unwrap();
        assert_eq!(
            (t.server.etcd_member_count(), t.server.server_count()),
            (1, 1)
        );
        for (bad, why) in [
            ("servers = 2", "several servers need store"),
            ("etcd_members = 3", "etcd_members needs store"),
            ("store = \"etcd\"\netcd_members = 2", "1, 3 or 5"),
            ("store = \"etcd\"\nservers = 0", "1 to 9"),
            ("store = \"zk\"", "unknown variant"),
        ] {
            let e = ha(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn server_listen_is_checked_before_anything_starts() {
        let with = |server: &str| {
            parse(&GOOD.replace(
                "name = \"t1\"\n",
                &format!("name = \"t1\"\n[server]\n{server}\n"),
            ))
        };
        let listen = |server: &str| with(server).unwrap().server.listen().unwrap().to_string();
        assert_eq!(listen(""), "127.0.0.1:0");
        assert_eq!(listen("listen = \"127.0.0.2\""), "127.0.0.2:0");
        assert_eq!(listen("listen = \"127.0.0.1:9797\""), "127.0.0.1:9797");
        assert_eq!(listen("listen = \"::1\""), "[::1]:0");
        assert_eq!(listen("listen = \"[::1]:9797\""), "[::1]:9797");
        for (bad, why) in [
            ("listen = \"localhost:9696\"", "an IP address"),
            ("listen = \"127.0.0.1:http\"", "an IP address"),
            ("listen = \"127.0.0.1:99999\"", "an IP address"),
            ("listen = \"10.1.2\"", "an IP address"),
            (
                "listen = \"127.0.0.1:65535\"\nstore = \"etcd\"\nservers = 2",
                "server-2 would listen on port 65536",
            ),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_cut_reserved_and_taken_addresses() {
        for (text, from, to, why) in [
            // Prefixes with host bits set are refused, naming the network address.
            (
                GOOD,
                "cidr = \"10.0.0.0/24\"",
                "cidr = \"10.0.0.77/24\"",
                "subnet blue-1: cidr 10.0.0.77/24 is not a network address (it has host bits \
                 set; the network address is 10.0.0.0/24)",
            ),
            (
                GOOD,
                "name = \"t1\"\n",
                "name = \"t1\"\n[underlay]\ncidr = \"172.31.0.1/24\"\n",
                "underlay cidr 172.31.0.1/24 is not a network address",
            ),
            (
                GOOD,
                "\"10.9.0.0/24\"",
                "\"10.9.0.7/24\"",
                "address group admins: address 10.9.0.7/24 is not a network address",
            ),
            (
                GOOD,
                "remote_ip_prefix = \"10.0.0.0/24\"",
                "remote_ip_prefix = \"10.0.0.9/24\"",
                "remote_ip_prefix 10.0.0.9/24 is not a network address",
            ),
            // Subnets of a network do not overlap.
            (
                GOOD,
                "[[network.subnet]]\nname = \"green-v6\"",
                "[[network.subnet]]\ncidr = \"10.1.0.128/25\"\n[[network.subnet]]\nname = \"green-v6\"",
                "subnet green-2 (10.1.0.128/25) overlaps subnet green-1 (10.1.0.0/24) of the \
                 same network green",
            ),
            // Fixed IPs and gateways: host addresses of their subnet, IPv4's network and
            // broadcast addresses are not.
            (
                GOOD,
                "ip = \"10.0.0.5\"",
                "ip = \"10.0.0.255\"",
                "vm vm1: 10.0.0.255 is the broadcast address of 10.0.0.0/24",
            ),
            (
                GOOD,
                "ip = \"10.0.0.5\"",
                "ip = \"10.0.0.0\"",
                "vm vm1: 10.0.0.0 is the network address of 10.0.0.0/24",
            ),
            (
                GOOD,
                "gateway = \"10.0.0.254\"",
                "gateway = \"10.0.0.255\"",
                "subnet blue-1: gateway 10.0.0.255 is the broadcast address",
            ),
            // Each address once on a network: gateways (the file's or the default), VMs,
            // floating IPs, external hosts in a provider network's VLAN; a subnet's gateway
            // address is one router's interface.
            (
                GOOD,
                "nexthop = \"10.0.0.5\" }]\n",
                "nexthop = \"10.0.0.5\" }]\n[[router]]\nname = \"r2\"\nproject = \"alpha\"\n\
                 interfaces = [\"green-1\"]\n",
                "router r2: subnet green-1 has an interface of router r1 already",
            ),
            (
                GOOD,
                "ip = \"10.0.0.5\"",
                "ip = \"10.0.0.254\"",
                "vm vm1: 10.0.0.254 is taken by the gateway of subnet blue-1 on network blue",
            ),
            (
                GOOD,
                "chassis = \"c1\"\nipv6",
                "chassis = \"c1\"\nip = \"10.1.0.1\"\nipv6",
                "vm vm2: 10.1.0.1 is taken by the gateway of subnet green-1 on network green",
            ),
            (
                GOOD,
                "chassis = \"c1\"\nsecurity_groups",
                "chassis = \"c1\"\nip = \"10.0.0.5\"\nsecurity_groups",
                "vm vm3: 10.0.0.5 is taken by vm vm1 on network blue",
            ),
            (
                OUTSIDE,
                "address = \"172.24.4.50\"",
                "address = \"172.24.4.1\"",
                "172.24.4.1 is taken by the gateway of subnet public-1 on network public",
            ),
            (
                OUTSIDE,
                "address = \"172.24.4.50\"",
                "address = \"172.24.4.255\"",
                "172.24.4.255 is the broadcast address of 172.24.4.0/24",
            ),
            (
                OUTSIDE,
                "chassis = \"c2\"\n[[floating_ip]]",
                "chassis = \"c2\"\nip = \"192.168.101.100\"\n[[floating_ip]]",
                "vm p1: 192.168.101.100 is taken by external host h101 on network vlan101",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            match parse(&bad) {
                Ok(_) => panic!("accepted {to}"),
                Err(e) => assert!(e.to_string().contains(why), "{to}: {e}"),
            }
        }
        // The same address on two networks, or an external host in another VLAN: no clash.
        let other_vlan = OUTSIDE.replacen("vlan = 101", "vlan = 102", 1).replacen(
            "chassis = \"c2\"\n[[floating_ip]]",
            "chassis = \"c2\"\nip = \"192.168.101.100\"\n[[floating_ip]]",
            1,
        );
        parse(&other_vlan).unwrap();
        // An external host may be an external subnet's gateway (the upstream router), not a
        // provider network's.
        let upstream = OUTSIDE.replacen(
            "gateway = \"2001:db8:ee::1\"",
            "gateway = \"2001:db8:ee::100\"",
            1,
        );
        assert!(upstream != OUTSIDE);
        parse(&upstream).unwrap();
        let provider = OUTSIDE.replacen(
            "cidr = \"192.168.101.0/24\"",
            "cidr = \"192.168.101.0/24\"\ngateway = \"192.168.101.100\"",
            1,
        );
        let e = parse(&provider).expect_err("a provider network's gateway is not outside");
        assert!(
            e.to_string().contains("is taken by external host h101"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_topologies() {
        for (from, to, why) in [
            ("name = \"t1\"", "name = \"T 1\"", "lab name"),
            ("network = \"blue\"", "network = \"red\"", "no network red"),
            ("chassis = \"c2\"", "chassis = \"c9\"", "no chassis c9"),
            ("ip = \"10.0.0.5\"", "ip = \"10.9.0.5\"", "in no subnet"),
            (
                "gateway = \"10.0.0.254\"",
                "gateway = \"10.1.0.1\"",
                "outside",
            ),
            (
                "ip = \"172.31.0.20\"",
                "ip = \"172.31.0.1\"",
                "chassis c2: tunnel address 172.31.0.1 is chassis c1's too",
            ),
            ("name = \"vm1\"", "name = \"c1\"", "used twice"),
            (
                "name = \"vm1\"",
                "name = \"vm1\"\ncolor = \"red\"",
                "unknown field",
            ),
            // Subnets: version, modes, DNS, names.
            ("ip_version = 6", "ip_version = 4", "does not fit"),
            (
                "ipv6_ra_mode = \"slaac\"",
                "ipv6_ra_mode = \"dhcpv6-stateful\"",
                "differ",
            ),
            (
                "ipv6_ra_mode = \"slaac\"",
                "ipv6_ra_mode = \"sometimes\"",
                "unknown variant",
            ),
            (
                "gateway = \"10.0.0.254\"",
                "ipv6_ra_mode = \"slaac\"",
                "on an IPv4 subnet",
            ),
            (
                "[\"fd00:1::53\"]",
                "[\"fd00:1::53\", \"fd00:1::53\"]",
                "listed twice",
            ),
            (
                "cidr = \"10.1.0.0/24\"",
                "name = \"blue-1\"\ncidr = \"10.1.0.0/24\"",
                "defined twice",
            ),
            // VMs: SLAAC needs such a subnet; no fixed IP on one; extra addresses once.
            ("ipv6 = \"slaac\"", "ipv6 = \"dhcp\"", "unknown variant"),
            (
                "network = \"green\"",
                "network = \"blue\"",
                "needs an IPv6 subnet",
            ),
            (
                "ipv6 = \"slaac\"",
                "ip = \"fd00:1::5\"",
                "router advertisements",
            ),
            (
                "\"192.168.50.1/24\"]",
                "\"192.168.50.1/24\", \"192.168.50.1/24\"]",
                "listed twice",
            ),
            // Routers: subnets exist, once, same project, with a gateway, no overlap.
            ("\"green-v6\"]", "\"green-v7\"]", "no subnet green-v7"),
            ("\"green-v6\"]", "\"green-v6\", \"blue-1\"]", "listed twice"),
            (
                "project = \"alpha\"\ninterfaces",
                "project = \"beta\"\ninterfaces",
                "belongs to",
            ),
            (
                "gateway = \"10.0.0.254\"",
                "gateway = \"none\"",
                "no gateway",
            ),
            (
                "cidr = \"10.1.0.0/24\"",
                "cidr = \"10.0.0.0/16\"",
                "overlaps",
            ),
            ("name = \"r1\"", "name = \"r 1\"", "router name"),
            // Routes: next hop on an interface's subnet, one version, a network address, once.
            (
                "nexthop = \"10.0.0.5\"",
                "nexthop = \"10.9.0.5\"",
                "is not on a subnet",
            ),
            ("nexthop = \"10.0.0.5\"", "nexthop = \"fd00:1::5\"", "mixes"),
            (
                "\"192.168.50.0/24\"",
                "\"192.168.50.1/24\"",
                "not a network address",
            ),
            (
                " }]",
                " }, { destination = \"192.168.50.0/24\", nexthop = \"10.0.0.5\" }]",
                "twice",
            ),
            // VMs' groups: exist, once, same project; none without port security.
            (
                "[\"web\", \"default\"]",
                "[\"web\", \"nope\"]",
                "no security group nope",
            ),
            (
                "[\"web\", \"default\"]",
                "[\"web\", \"web\"]",
                "listed twice",
            ),
            (
                "port_security = false",
                "port_security = false\nsecurity_groups = [\"web\"]",
                "need port_security",
            ),
            (
                "name = \"web\"\nproject = \"alpha\"",
                "name = \"web\"\nproject = \"beta\"",
                "belongs to project",
            ),
            // Groups: not `default`, once; address groups of the group's project.
            (
                "name = \"web\"\nproject",
                "name = \"default\"\nproject",
                "every project has it",
            ),
            (
                "name = \"admins\"\nproject = \"alpha\"",
                "name = \"admins\"\nproject = \"beta\"",
                "belongs to project beta",
            ),
            // Rules: one remote, protocols and their ports, versions.
            (
                "remote_group = \"web\"",
                "remote_group = \"web\", remote_ip_prefix = \"10.0.0.0/24\"",
                "at most one",
            ),
            (
                "ethertype = \"IPv6\", protocol = \"icmpv6\"",
                "protocol = \"icmpv6\"",
                "ICMPv6 in an IPv4 rule",
            ),
            (
                "port_range_min = 80, port_range_max = 80",
                "port_range_min = 90, port_range_max = 80",
                "port_range_min <=",
            ),
            ("\"admins\" }", "\"ops\" }", "no address group ops"),
            (
                "protocol = 17,",
                "protocol = \"bogus\",",
                "unknown protocol",
            ),
            ("\"10.0.0.0/24\" }", "\"fd00::/64\" }", "is not IPv4"),
            ("port_range_min = 8,", "port_range_min = 300,", "0-255"),
            (
                "\"egress\", protocol = 17,",
                "\"egress\", port_range_min = 5,",
                "port ranges only",
            ),
            (
                "\"ingress\", protocol = \"tcp\"",
                "\"inbound\", protocol = \"tcp\"",
                "unknown variant",
            ),
            ("\"10.9.1.5\"]", "\"10.9.1\"]", "no address or prefix"),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let bad = GOOD.replacen(from, to, 1);
            match parse(&bad) {
                Ok(_) => panic!("accepted {to}"),
                Err(e) => assert!(e.to_string().contains(why), "{to}: {e}"),
            }
        }
        // A router of the admin project may join any project's subnets.
        let admin = GOOD.replacen("project = \"alpha\"\ninterfaces", "interfaces", 1);
        parse(&admin).unwrap();
    }

    const OUTSIDE: &str = r#"
name = "t2"
[[physical]]
name = "physnet1"
[[physical]]
name = "ext"
mtu = 9000
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
gateway = true
[[external]]
name = "inet"
physical = "ext"
ip = "172.24.4.100/24"
ip6 = "2001:db8:ee::100/64"
gateway = "172.24.4.254"
gateway6 = "2001:db8:ee::fe"
routes = [
  { destination = "198.51.100.0/24", nexthop = "172.24.4.253" },
  { destination = "fd00:a::/64", nexthop = "2001:db8:ee::2" },
]
[[external]]
name = "h101"
physical = "physnet1"
vlan = 101
ip = "192.168.101.100/24"
[[network]]
name = "public"
network_type = "flat"
physical_network = "ext"
external = true
[[network.subnet]]
cidr = "172.24.4.0/24"
gateway = "172.24.4.1"
[[network.subnet]]
cidr = "2001:db8:ee::/64"
gateway = "2001:db8:ee::1"
[[network]]
name = "vlan101"
network_type = "vlan"
physical_network = "physnet1"
segmentation_id = 101
[[network.subnet]]
cidr = "192.168.101.0/24"
[[network]]
name = "inside"
project = "alpha"
network_type = "geneve"
segmentation_id = 77
[[network.subnet]]
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
[[router]]
name = "r1"
project = "alpha"
interfaces = ["inside-1"]
gateway = "public"
enable_snat = false
gateway_ips = ["172.24.4.2", "2001:db8:ee::2"]
[[vm]]
name = "v1"
network = "inside"
chassis = "c1"
[[vm]]
name = "p1"
network = "vlan101"
chassis = "c2"
[[floating_ip]]
vm = "v1"
network = "public"
address = "172.24.4.50"
"#;

    #[test]
    fn parses_segments_external_hosts_and_floating_ips() {
        let t = parse(OUTSIDE).unwrap();
        assert_eq!(t.physical[0].mtu, 1500);
        assert_eq!(t.physical[1].mtu, 9000);
        assert!(!t.chassis[0].gateway && t.chassis[1].gateway);
        let (inet, h101) = (&t.externals[0], &t.externals[1]);
        assert_eq!(inet.on_segment(), ("ext", None));
        assert_eq!(h101.on_segment(), ("physnet1", Some(101)));
        assert_eq!(inet.gateway, Some("172.24.4.254".parse().unwrap()));
        assert_eq!(
            inet.routes[0].to_string(),
            "198.51.100.0/24 via 172.24.4.253"
        );
        assert_eq!(inet.ip6, Some("2001:db8:ee::100/64".parse().unwrap()));
        assert_eq!(inet.gateway6, Some("2001:db8:ee::fe".parse().unwrap()));
        assert_eq!(inet.routes[1].to_string(), "fd00:a::/64 via 2001:db8:ee::2");
        assert_eq!(h101.ip6, None);
        let public = t.network("public").unwrap();
        assert!(public.external);
        assert_eq!(public.on_segment(), Some(("ext", None)));
        let vlan = t.network("vlan101").unwrap();
        assert_eq!(vlan.network_type, Some(NetworkType::Vlan));
        assert_eq!(vlan.on_segment(), Some(("physnet1", Some(101))));
        let inside = t.network("inside").unwrap();
        assert_eq!(inside.on_segment(), None);
        assert_eq!(inside.segment_label().as_deref(), Some("tunnel id 77"));
        assert_eq!(
            vlan.segment_label().as_deref(),
            Some("VLAN 101 on physnet1")
        );
        assert_eq!(t.routers[0].gateway.as_deref(), Some("public"));
        assert_eq!(t.routers[0].enable_snat, Some(false));
        let gateway_ips: Vec<IpAddr> = ["172.24.4.2", "2001:db8:ee::2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(t.routers[0].gateway_ips, gateway_ips);
        assert_eq!(
            t.floating_ips[0],
            FloatingIpSpec {
                vm: "v1".into(),
                network: "public".into(),
                address: Some("172.24.4.50".parse().unwrap()),
            }
        );
        // Without any of it, nothing changes for the other examples' files.
        let plain = parse(GOOD).unwrap();
        assert!(plain.physical.is_empty() && plain.externals.is_empty());
        assert!(plain.load_balancers.is_empty() && plain.vms.iter().all(|v| v.serve.is_empty()));
        assert!(plain.routers[0].gateway_ips.is_empty());
        assert_eq!(plain.networks[0].network_type, None);
    }

    #[test]
    fn rejects_bad_segments_hosts_networks_and_floating_ips() {
        for (from, to, why) in [
            // Segments: names, MTU.
            ("name = \"physnet1\"", "name = \"physnet12\"", "1 to 8"),
            ("name = \"ext\"\nmtu", "name = \"int\"\nmtu", "reserved"),
            ("name = \"ext\"\nmtu", "name = \"c1\"\nmtu", "used twice"),
            ("mtu = 9000", "mtu = 900", "outside 1280..=9000"),
            // External hosts: segment, VLAN, address, gateway, routes, twins.
            ("name = \"inet\"", "name = \"v1\"", "used twice"),
            ("name = \"inet\"", "name = \"thirteen-char\"", "1 to 12"),
            (
                "physical = \"ext\"",
                "physical = \"nope\"",
                "no physical segment nope",
            ),
            ("vlan = 101", "vlan = 4095", "vlan 4095 outside 1..=4094"),
            ("vlan = 101", "vlan = 0", "outside"),
            (
                "ip = \"172.24.4.100/24\"",
                "ip = \"172.24.4.0/24\"",
                "is the network address of 172.24.4.0/24, not a host address",
            ),
            (
                "gateway = \"172.24.4.254\"",
                "gateway = \"10.1.1.1\"",
                "not another address",
            ),
            (
                "gateway = \"172.24.4.254\"",
                "gateway = \"172.24.4.100\"",
                "not another address",
            ),
            (
                "nexthop = \"172.24.4.253\"",
                "nexthop = \"10.9.9.9\"",
                "is not on a subnet",
            ),
            (
                "\"198.51.100.0/24\"",
                "\"198.51.100.1/24\"",
                "not a network address",
            ),
            (
                "ip = \"192.168.101.100/24\"",
                "ip = \"192.168.101.100/24\"\n[[external]]\nname = \"h2\"\nphysical = \"physnet1\"\n\
                 vlan = 101\nip = \"192.168.101.100/16\"",
                "external host h101's too",
            ),
            // Their IPv6: a unicast address, gateway6 and IPv6 routes on its subnet, twins.
            (
                "ip6 = \"2001:db8:ee::100/64\"",
                "ip6 = \"ff02::1/64\"",
                "external host inet: ip6 ff02::1 is not a unicast address",
            ),
            (
                "gateway6 = \"2001:db8:ee::fe\"",
                "gateway6 = \"2001:db8:ef::fe\"",
                "external host inet: gateway6 2001:db8:ef::fe is not another address of \
                 2001:db8:ee::/64",
            ),
            (
                "gateway6 = \"2001:db8:ee::fe\"",
                "gateway6 = \"2001:db8:ee::100\"",
                "not another address",
            ),
            (
                "ip6 = \"2001:db8:ee::100/64\"\n",
                "",
                "external host inet: gateway6 needs ip6",
            ),
            (
                "ip6 = \"2001:db8:ee::100/64\"\ngateway = \"172.24.4.254\"\n\
                 gateway6 = \"2001:db8:ee::fe\"",
                "gateway = \"172.24.4.254\"",
                "external host inet: route to fd00:a::/64 via 2001:db8:ee::2: an IPv6 route \
                 needs ip6",
            ),
            (
                "nexthop = \"2001:db8:ee::2\"",
                "nexthop = \"2001:db8:ef::2\"",
                "external host inet: next hop 2001:db8:ef::2 is not on a subnet",
            ),
            (
                "nexthop = \"2001:db8:ee::2\"",
                "nexthop = \"2001:db8:ee::100\"",
                "is not on a subnet",
            ),
            (
                "nexthop = \"2001:db8:ee::2\"",
                "nexthop = \"172.24.4.2\"",
                "mixes",
            ),
            (
                "\"fd00:a::/64\"",
                "\"::/0\"",
                "external host inet: a route to ::/0 besides gateway6",
            ),
            (
                "\"198.51.100.0/24\"",
                "\"0.0.0.0/0\"",
                "external host inet: a route to 0.0.0.0/0 besides gateway (both",
            ),
            (
                "ip = \"192.168.101.100/24\"",
                "ip = \"192.168.101.100/24\"\n[[external]]\nname = \"h2\"\nphysical = \"ext\"\n\
                 ip = \"172.24.4.101/24\"\nip6 = \"2001:db8:ee::100/64\"",
                "external host h2: 2001:db8:ee::100 is external host inet's too",
            ),
            // Networks: provider settings that go together, exist, fit, and are not taken.
            ("segmentation_id = 101\n", "", "needs a segmentation_id"),
            (
                "segmentation_id = 101",
                "segmentation_id = 5000",
                "VLAN id 5000 outside",
            ),
            (
                "physical_network = \"ext\"\n",
                "physical_network = \"ext\"\nsegmentation_id = 3\n",
                "a flat network has no segmentation_id",
            ),
            (
                "physical_network = \"ext\"\n",
                "",
                "needs a physical_network",
            ),
            (
                "network_type = \"geneve\"",
                "network_type = \"geneve\"\nphysical_network = \"ext\"",
                "has no physical_network",
            ),
            (
                "segmentation_id = 77",
                "segmentation_id = 16777216",
                "tunnel id 16777216",
            ),
            (
                "network_type = \"vlan\"",
                "network_type = \"gre\"",
                "unknown variant",
            ),
            (
                "physical_network = \"physnet1\"",
                "physical_network = \"physnet9\"",
                "no physical segment physnet9",
            ),
            (
                "name = \"physnet1\"\n",
                "name = \"physnet1\"\nmtu = 1400\n",
                "exceeds physical segment physnet1's 1400",
            ),
            (
                "network_type = \"geneve\"\nsegmentation_id = 77",
                "network_type = \"vlan\"\nphysical_network = \"physnet1\"\nsegmentation_id = 101",
                "VLAN 101 on physnet1 is network vlan101's already",
            ),
            (
                "network_type = \"flat\"\nphysical_network",
                "physical_network",
                "need a network_type",
            ),
            // Routers' gateways.
            (
                "gateway = \"public\"",
                "gateway = \"nowhere\"",
                "no network nowhere",
            ),
            (
                "gateway = \"public\"",
                "gateway = \"vlan101\"",
                "is not external",
            ),
            ("gateway = \"public\"\n", "", "enable_snat needs a gateway"),
            // Their addresses: in a subnet of the gateway network, host addresses, once, one
            // IPv4, none from router advertisements, none of another's.
            (
                "gateway = \"public\"\nenable_snat = false\n",
                "",
                "router r1: gateway_ips needs a gateway",
            ),
            (
                "\"2001:db8:ee::2\"]",
                "\"2001:db8:ef::2\"]",
                "router r1: gateway address 2001:db8:ef::2 is in no subnet of public",
            ),
            (
                "[\"172.24.4.2\",",
                "[\"172.24.4.255\",",
                "router r1: gateway address 172.24.4.255 is the broadcast address",
            ),
            (
                "\"2001:db8:ee::2\"]",
                "\"172.24.4.2\"]",
                "router r1: gateway address 172.24.4.2 listed twice",
            ),
            (
                "[\"172.24.4.2\", ",
                "[",
                "router r1: gateway_ips has no IPv4 address",
            ),
            (
                "cidr = \"2001:db8:ee::/64\"",
                "cidr = \"2001:db8:ee::/64\"\nipv6_address_mode = \"slaac\"",
                "router r1: gateway address 2001:db8:ee::2 is on 2001:db8:ee::/64, whose addresses \
                 come from router advertisements",
            ),
            (
                "[\"172.24.4.2\",",
                "[\"172.24.4.100\",",
                "the gateway of router r1: 172.24.4.100 is taken by external host inet",
            ),
            (
                "address = \"172.24.4.50\"",
                "address = \"172.24.4.2\"",
                "the floating IP of vm v1: 172.24.4.2 is taken by the gateway of router r1",
            ),
            // Floating IPs.
            ("vm = \"v1\"", "vm = \"v9\"", "no vm v9"),
            (
                "vm = \"v1\"",
                "vm = \"p1\"",
                "no router joins network vlan101",
            ),
            (
                "network = \"public\"\naddress",
                "network = \"vlan101\"\naddress",
                "is not external",
            ),
            (
                "network = \"public\"\naddress",
                "network = \"nope\"\naddress",
                "no network nope",
            ),
            (
                "address = \"172.24.4.50\"",
                "address = \"10.0.0.50\"",
                "in no subnet of public",
            ),
            (
                "address = \"172.24.4.50\"",
                "address = \"172.24.4.100\"",
                "taken by external host inet on network public",
            ),
            (
                "address = \"172.24.4.50\"\n",
                "\n[[floating_ip]]\nvm = \"v1\"\nnetwork = \"public\"\n",
                "listed twice",
            ),
        ] {
            assert!(OUTSIDE.contains(from), "{from}");
            let bad = OUTSIDE.replacen(from, to, 1);
            match parse(&bad) {
                Ok(_) => panic!("accepted {to}"),
                Err(e) => assert!(e.to_string().contains(why), "{to}: {e}"),
            }
        }
    }
}
