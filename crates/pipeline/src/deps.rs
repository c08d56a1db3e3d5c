//! Recorded dependencies: apps read the topology only through a [`Ctx`], which notes every read
//! as a [`Dep`]. The pipeline keeps, for every (app, owner), what its flows were computed from,
//! and a change recomputes exactly the owners that read something it touched (as OVN's
//! `lib/objdep.h` does). A read of a whole collection ("the ports on network N") is one
//! dependency on that collection, which any member's change touches.

use std::net::IpAddr;

use openflow::message::Group;

use crate::model::{
    AddressGroup, Chassis, FloatingIp, FlowClassifier, HealthMonitor, Kind, Listener, LoadBalancer,
    Member, Network, Physical, Pool, Port, PortChain, PortPair, PortPairGroup, Router,
    SecurityGroup, SgRule, Subnet, Topology, Trunk,
};

/// How a carried network's frames leave the chassis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Through the tunnel port, with this VNI.
    Tunnel(u32),
    /// Through the patch to a physical network's bridge, tagged with the VLAN id if any.
    Physical { patch: u32, vlan: Option<u16> },
}

/// Something an app's flows were computed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dep {
    Network(String),
    Port(String),
    Router(String),
    /// A chassis: its registration, its lease and its data plane as seen from here.
    Chassis(String),
    /// The ports on a network (membership and contents).
    PortsOn(String),
    /// The subnets of a network.
    SubnetsOn(String),
    /// A subnet.
    Subnet(String),
    /// The router interfaces on a network.
    InterfacesOn(String),
    /// A router's interfaces.
    InterfacesOf(String),
    /// The ports claiming a MAC or an IP on a network ([`Topology::claim_keys`]).
    Claim(String),
    SecurityGroup(String),
    SgRule(String),
    /// The rules of a security group.
    RulesOf(String),
    /// The rules naming a security group as their remote.
    RulesNaming(String),
    AddressGroup(String),
    FloatingIp(String),
    /// The floating IPs forwarding to a port.
    FloatingIpsOf(String),
    /// This chassis' SNAT address on a network.
    SnatAddress(String),
    /// A router's gateway port.
    GatewayOf(String),
    /// Every chassis, their registrations and liveness (an election over them).
    AllChassis,
    /// A load balancer, listener, pool, member or health monitor (by id).
    LoadBalancer(String),
    Listener(String),
    Pool(String),
    Member(String),
    HealthMonitor(String),
    /// The members of a pool (membership and contents).
    MembersOf(String),
    /// A port pair, port pair group, flow classifier or port chain (by id).
    PortPair(String),
    PortPairGroup(String),
    FlowClassifier(String),
    PortChain(String),
    Trunk(String),
    /// The trunks naming a port (as their parent or a subport).
    TrunksNaming(String),
    /// The local OpenFlow port of a port's VIF.
    Vif(String),
    /// The local OpenFlow port of the inner end of a subport's patch pair.
    Inner(String),
    /// The local tunnel port.
    Tunnel,
    /// Whether this chassis is cut off from every chassis it had BFD sessions with
    /// ([`Topology::isolated`]): read by its own candidacy as a gateway chassis.
    Isolated,
    /// The local patch port to a physical network's bridge.
    Patch(String),
}

impl Dep {
    /// The northbound object kind the dependency is on (`None`: local state of the switch).
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Dep::Network(_) => Kind::Network,
            Dep::Port(_)
            | Dep::PortsOn(_)
            | Dep::InterfacesOn(_)
            | Dep::InterfacesOf(_)
            | Dep::Claim(_)
            | Dep::SnatAddress(_)
            | Dep::GatewayOf(_) => Kind::Port,
            Dep::SecurityGroup(_) => Kind::SecurityGroup,
            Dep::SgRule(_) | Dep::RulesOf(_) | Dep::RulesNaming(_) => Kind::SecurityGroupRule,
            Dep::AddressGroup(_) => Kind::AddressGroup,
            Dep::FloatingIp(_) | Dep::FloatingIpsOf(_) => Kind::FloatingIp,
            Dep::Router(_) => Kind::Router,
            Dep::Chassis(_) | Dep::AllChassis => Kind::Chassis,
            Dep::SubnetsOn(_) | Dep::Subnet(_) => Kind::Subnet,
            Dep::LoadBalancer(_) => Kind::LoadBalancer,
            Dep::Listener(_) => Kind::Listener,
            Dep::Pool(_) => Kind::Pool,
            Dep::Member(_) | Dep::MembersOf(_) => Kind::Member,
            Dep::HealthMonitor(_) => Kind::HealthMonitor,
            Dep::PortPair(_) => Kind::PortPair,
            Dep::PortPairGroup(_) => Kind::PortPairGroup,
            Dep::FlowClassifier(_) => Kind::FlowClassifier,
            Dep::PortChain(_) => Kind::PortChain,
            Dep::Trunk(_) | Dep::TrunksNaming(_) => Kind::Trunk,
            Dep::Vif(_) | Dep::Inner(_) | Dep::Tunnel | Dep::Isolated | Dep::Patch(_) => {
                return None;
            }
        })
    }
}

/// The topology as one app sees it while computing one owner's flows; every read is recorded.
pub struct Ctx<'t> {
    topo: &'t Topology,
    reads: Vec<Dep>,
    groups: Vec<Group>,
}

impl<'t> Ctx<'t> {
    pub fn new(topo: &'t Topology) -> Self {
        Self {
            topo,
            reads: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// What was read, each once, and the groups emitted.
    pub fn finish(mut self) -> (Vec<Dep>, Vec<Group>) {
        self.reads.sort();
        self.reads.dedup();
        (self.reads, self.groups)
    }

    fn read(&mut self, dep: Dep) {
        self.reads.push(dep);
    }

    /// This chassis' id (fixed for the pipeline's life).
    pub fn chassis_id(&self) -> &'t str {
        &self.topo.local.chassis
    }

    pub fn network(&mut self, id: &str) -> Option<&'t Network> {
        self.read(Dep::Network(id.to_string()));
        self.topo.networks.get(id)
    }

    /// The `metadata` of a network the pipeline carries: known, administratively up, and an
    /// overlay or a provider network on a physical network this chassis reaches.
    pub fn carried(&mut self, id: &str) -> Option<u64> {
        let n = self.network(id).filter(|n| n.admin_up)?;
        if let Some(p) = &n.physical {
            self.patch(p)?;
        }
        n.metadata()
    }

    /// How a carried network's frames leave this chassis.
    pub fn wire(&mut self, id: &str) -> Option<Wire> {
        let n = self.network(id).filter(|n| n.admin_up)?;
        if let Some(vni) = n.vni {
            return Some(Wire::Tunnel(vni));
        }
        let p = n.physical.as_ref()?;
        let patch = self.patch(p)?;
        Some(Wire::Physical {
            patch,
            vlan: p.vlan,
        })
    }

    /// The local patch port to `physical`'s bridge.
    fn patch(&mut self, physical: &Physical) -> Option<u32> {
        self.read(Dep::Patch(physical.physnet.clone()));
        self.topo.local.patches.get(&physical.physnet).copied()
    }

    pub fn floating_ip(&mut self, id: &str) -> Option<&'t FloatingIp> {
        self.read(Dep::FloatingIp(id.to_string()));
        self.topo.floating_ips.get(id)
    }

    /// `router`'s gateway port.
    /// The floating IPs forwarding to `port`, in id order.
    pub fn floating_ips_of(&mut self, port: &str) -> impl Iterator<Item = &'t FloatingIp> + 't {
        self.read(Dep::FloatingIpsOf(port.to_string()));
        self.topo.floating_ips_of(port)
    }

    pub fn gateway_port(&mut self, router: &str) -> Option<&'t Port> {
        self.read(Dep::GatewayOf(router.to_string()));
        self.topo.gateway_port(router)
    }

    /// The chassis hosting `router`'s gateway ([`Topology::gateway_host`]).
    pub fn gateway_host(&mut self, router: &str) -> Option<&'t Chassis> {
        self.read(Dep::Router(router.to_string()));
        self.read(Dep::AllChassis);
        if let Some(g) = self
            .topo
            .routers
            .get(router)
            .and_then(|r| r.gateway.as_ref())
        {
            self.read(Dep::Network(g.network_id.clone()));
        }
        // The candidates' data planes, and for this chassis among them whether it is isolated.
        let candidates = self.topo.gateway_candidates(router);
        for c in &candidates {
            self.read(if c.id == self.topo.local.chassis {
                Dep::Isolated
            } else {
                Dep::Chassis(c.id.clone())
            });
        }
        self.topo.elect(candidates)
    }

    /// This chassis' SNAT address port on `network`.
    pub fn snat_port(&mut self, network: &str) -> Option<&'t Port> {
        self.read(Dep::SnatAddress(network.to_string()));
        self.topo.snat_port(network, &self.topo.local.chassis)
    }

    pub fn port(&mut self, id: &str) -> Option<&'t Port> {
        self.read(Dep::Port(id.to_string()));
        self.topo.ports.get(id)
    }

    pub fn router(&mut self, id: &str) -> Option<&'t Router> {
        self.read(Dep::Router(id.to_string()));
        self.topo.routers.get(id)
    }

    pub fn security_group(&mut self, id: &str) -> Option<&'t SecurityGroup> {
        self.read(Dep::SecurityGroup(id.to_string()));
        self.topo.security_groups.get(id)
    }

    pub fn rule(&mut self, id: &str) -> Option<&'t SgRule> {
        self.read(Dep::SgRule(id.to_string()));
        self.topo.rules.get(id)
    }

    pub fn rules_of(&mut self, group: &str) -> impl Iterator<Item = &'t SgRule> + 't {
        self.read(Dep::RulesOf(group.to_string()));
        self.topo.rules_of(group)
    }

    pub fn rules_naming(&mut self, group: &str) -> impl Iterator<Item = &'t SgRule> + 't {
        self.read(Dep::RulesNaming(group.to_string()));
        self.topo.rules_naming(group)
    }

    pub fn address_group(&mut self, id: &str) -> Option<&'t AddressGroup> {
        self.read(Dep::AddressGroup(id.to_string()));
        self.topo.address_groups.get(id)
    }

    pub fn load_balancer(&mut self, id: &str) -> Option<&'t LoadBalancer> {
        self.read(Dep::LoadBalancer(id.to_string()));
        self.topo.load_balancers.get(id)
    }

    pub fn listener(&mut self, id: &str) -> Option<&'t Listener> {
        self.read(Dep::Listener(id.to_string()));
        self.topo.listeners.get(id)
    }

    pub fn pool(&mut self, id: &str) -> Option<&'t Pool> {
        self.read(Dep::Pool(id.to_string()));
        self.topo.pools.get(id)
    }

    pub fn member(&mut self, id: &str) -> Option<&'t Member> {
        self.read(Dep::Member(id.to_string()));
        self.topo.members.get(id)
    }

    pub fn health_monitor(&mut self, id: &str) -> Option<&'t HealthMonitor> {
        self.read(Dep::HealthMonitor(id.to_string()));
        self.topo.health_monitors.get(id)
    }

    pub fn port_pair(&mut self, id: &str) -> Option<&'t PortPair> {
        self.read(Dep::PortPair(id.to_string()));
        self.topo.port_pairs.get(id)
    }

    pub fn port_pair_group(&mut self, id: &str) -> Option<&'t PortPairGroup> {
        self.read(Dep::PortPairGroup(id.to_string()));
        self.topo.port_pair_groups.get(id)
    }

    pub fn flow_classifier(&mut self, id: &str) -> Option<&'t FlowClassifier> {
        self.read(Dep::FlowClassifier(id.to_string()));
        self.topo.flow_classifiers.get(id)
    }

    pub fn port_chain(&mut self, id: &str) -> Option<&'t PortChain> {
        self.read(Dep::PortChain(id.to_string()));
        self.topo.port_chains.get(id)
    }

    pub fn trunk(&mut self, id: &str) -> Option<&'t Trunk> {
        self.read(Dep::Trunk(id.to_string()));
        self.topo.trunks.get(id)
    }

    /// Whether `trunk` alone names `port` (as its parent or a subport).
    pub fn sole_trunk(&mut self, port: &str, trunk: &str) -> bool {
        self.read(Dep::TrunksNaming(port.to_string()));
        let mut naming = self.topo.trunks_naming(port);
        naming.next().is_some_and(|t| t.id == trunk) && naming.next().is_none()
    }

    /// The OpenFlow port of the inner end of a local subport's patch pair, if it alone claims
    /// it (as [`Ctx::ofport`]).
    pub fn inner_port(&mut self, subport: &str) -> Option<u32> {
        self.read(Dep::Inner(subport.to_string()));
        self.read(Dep::Tunnel);
        self.topo.local.inner_port(subport)
    }

    /// The members of `pool`, in id order.
    pub fn members_of(&mut self, pool: &str) -> impl Iterator<Item = &'t Member> + 't {
        self.read(Dep::MembersOf(pool.to_string()));
        self.topo.members_of(pool)
    }

    pub fn subnet(&mut self, id: &str) -> Option<&'t Subnet> {
        self.read(Dep::Subnet(id.to_string()));
        self.topo.subnets.get(id)
    }

    /// The port that alone holds `ip` on `network`.
    pub fn port_with_ip(&mut self, network: &str, ip: IpAddr) -> Option<&'t Port> {
        self.read(Dep::Claim(Topology::ip_claim(network, ip)));
        let port = self.topo.port_with_ip(network, ip)?;
        self.read(Dep::Port(port.id.clone()));
        Some(port)
    }

    /// Whether an administratively up port on `network` holds `ip` (two claiming it or not).
    pub fn ip_held(&mut self, network: &str, ip: IpAddr) -> bool {
        let key = Topology::ip_claim(network, ip);
        let held = self.topo.claimants(&key).any(|p| p.admin_up);
        self.read(Dep::Claim(key));
        held
    }

    /// Emits a group: the owner's flows refer to it by id (it is installed before them and
    /// removed after them).
    pub fn group(&mut self, group: Group) {
        self.groups.push(group);
    }

    pub fn ports_on(&mut self, network: &str) -> impl Iterator<Item = &'t Port> + 't {
        self.read(Dep::PortsOn(network.to_string()));
        self.topo.ports_on(network)
    }

    pub fn subnets_on(&mut self, network: &str) -> impl Iterator<Item = &'t Subnet> + 't {
        self.read(Dep::SubnetsOn(network.to_string()));
        self.topo.subnets_on(network)
    }

    /// The router interface ports on `network`.
    pub fn interfaces_on(&mut self, network: &str) -> impl Iterator<Item = &'t Port> + 't {
        self.read(Dep::InterfacesOn(network.to_string()));
        self.topo.interfaces_on(network)
    }

    /// A router's interface ports.
    pub fn interfaces_of(&mut self, router: &str) -> impl Iterator<Item = &'t Port> + 't {
        self.read(Dep::InterfacesOf(router.to_string()));
        self.topo.interfaces_of(router)
    }

    /// Whether `network` alone uses its physical segment (always true for other networks).
    pub fn sole_segment(&mut self, network: &Network) -> bool {
        match Topology::segment_claim(network) {
            Some(key) => self.sole(key),
            None => true,
        }
    }

    /// Whether `port` alone holds its MAC on its network.
    pub fn sole_mac(&mut self, port: &Port) -> bool {
        self.sole(Topology::mac_claim(&port.network_id, port.mac))
    }

    /// Whether `port` alone holds `ip` on its network.
    pub fn sole_ip(&mut self, port: &Port, ip: IpAddr) -> bool {
        self.sole(Topology::ip_claim(&port.network_id, ip))
    }

    fn sole(&mut self, key: String) -> bool {
        let sole = self.topo.sole_claim(&key);
        self.read(Dep::Claim(key));
        sole
    }

    /// The OpenFlow port of a local VIF, if it alone claims it.
    pub fn ofport(&mut self, port: &str) -> Option<u32> {
        self.read(Dep::Vif(port.to_string()));
        // A number the tunnel port claims too belongs to neither.
        self.read(Dep::Tunnel);
        self.topo.local.ofport(port)
    }

    pub fn tunnel(&mut self) -> Option<u32> {
        self.read(Dep::Tunnel);
        self.topo.local.tunnel
    }

    /// The chassis a port is reachable through, if it is bound to another chassis that is
    /// reachable (see [`Topology::remote_chassis`]).
    pub fn remote_chassis(&mut self, port: &Port) -> Option<&'t Chassis> {
        if let Some(host) = &port.host {
            self.read(Dep::Chassis(host.clone()));
        }
        self.topo.remote_chassis(port)
    }
}
