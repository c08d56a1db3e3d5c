//! The table map: every stage of `br-int` in order, which app owns it, where packets that it admits
//! go next, what it does with packets no flow matches, and which registers carry what between
//! stages. This is the one place that numbers tables; apps name stages by these constants and
//! continue with [`next`], so a stage can be inserted without editing the apps around it.

/// Classification: port security for packets from local VIFs, network by `tun_id` for tunnels.
pub const INGRESS: u8 = 0;
/// Security groups, egress: IP from a filtered port goes through conntrack in its zone.
pub const ACL_EGRESS: u8 = 2;
/// Security groups, egress: the connection state and the rules decide.
pub const ACL_EGRESS_STATE: u8 = 3;
/// Service function chaining: classified traffic from its source port, and traffic back from a
/// function, to the next hop's function (or on its way after the last).
pub const SFC: u8 = 5;
/// Service function chaining: chained traffic from other chassis to a function here.
pub const SFC_ARRIVAL: u8 = 6;
/// ARP and neighbour-discovery answers for known addresses.
pub const RESPOND: u8 = 10;
/// DHCP requests to the agent.
pub const DHCP: u8 = 11;
/// Packets from a physical network: ARP for the addresses this chassis answers for there
/// (floating IPs), neighbours learned, floating IPs entering their router.
pub const EXTERNAL_IN: u8 = 15;
/// Inside a router, after conntrack: new connections to a floating IP translated to its fixed IP.
pub const DNAT: u8 = 16;
/// Load balancing: the VIPs' addresses answered; connections to a listener go through
/// conntrack (with NAT) in the client port's load-balancing zone; health checks' answers to the
/// agent.
pub const LB_VIP: u8 = 17;
/// Load balancing: a new connection to a listener gets a member from the listener's group
/// (conntrack NAT to it); a translated one goes on.
pub const LB_SELECT: u8 = 18;
/// Load balancing: a connection translated to a member is sent on to it, on the client's network
/// or through its router.
pub const LB_FORWARD: u8 = 19;
/// Frames addressed to a router interface's MAC enter that router.
pub const L3_ENTRY: u8 = 20;
/// Destination MAC lookup: local delivery or the tunnel to the chassis of a remote port.
pub const L2: u8 = 30;
/// Broadcast, multicast and unknown unicast.
pub const FLOOD: u8 = 31;
/// Load balancing: a member's answer to a local client is translated back (from the VIP) in the
/// client's load-balancing zone.
pub const LB_REPLY: u8 = 39;
/// Security groups, ingress: IP to a filtered local port goes through conntrack in its zone.
pub const ACL_INGRESS: u8 = 40;
/// Security groups, ingress: the connection state and the rules decide.
pub const ACL_INGRESS_STATE: u8 = 41;
/// Output to the local port in `reg4`.
pub const DELIVER: u8 = 42;
/// Router input: the router's own addresses (ICMP echo), TTL expiry, router solicitations.
pub const ROUTER_IN: u8 = 21;
/// Longest-prefix match over connected subnets and extra routes.
pub const ROUTE: u8 = 22;
/// Next-hop MAC of a routed packet's destination, from the topology; then the outgoing network's
/// L2 (a next hop that is another router's interface is not routed again: chains of routers
/// are not supported yet).
pub const NEIGHBOUR: u8 = 23;
/// Routed to an external network: source NAT in the port's NAT zone (to a floating IP, or to
/// the port's inner addresses), or in the router's zone (centralized).
pub const SNAT: u8 = 24;
/// Distributed SNAT's second stage: from the ports' inner addresses to the chassis' address.
pub const SNAT_CHASSIS: u8 = 25;
/// The next hop's MAC on an external network, from the neighbours learned there.
pub const EXTERNAL_OUT: u8 = 26;
/// Learned neighbours (flows added by the switch's `learn` action, not by the agent).
pub const NEIGHBOURS_LEARNED: u8 = 27;
/// A next hop not learned yet goes to the agent, which asks for it by ARP.
pub const RESOLVE: u8 = 28;

/// What a stage does with a packet that no flow matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Drop,
    /// Continue at this table.
    Continue(u8),
}

/// One stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub table: u8,
    /// Short name, as `trace` shows it.
    pub name: &'static str,
    /// The app that owns the stage's flows.
    pub app: &'static str,
    /// Where packets the stage admits continue (`None`: the stage outputs or drops them).
    pub next: Option<u8>,
    pub miss: Miss,
    /// What the stage expects on entry.
    pub expects: &'static str,
}

/// The pipeline in table order, which is the order a packet meets it (OpenFlow only goes
/// forward): a packet that is not for a router skips the router stages.
pub const STAGES: [Stage; 27] = [
    Stage {
        table: INGRESS,
        name: "ingress",
        app: "classifier",
        next: Some(ACL_EGRESS),
        miss: Miss::Drop,
        expects: "in_port",
    },
    Stage {
        table: ACL_EGRESS,
        name: "acl-egress",
        app: "security-groups",
        next: Some(ACL_EGRESS_STATE),
        miss: Miss::Continue(SFC),
        expects: "in_port, metadata = network",
    },
    Stage {
        table: ACL_EGRESS_STATE,
        name: "acl-egress-state",
        app: "security-groups",
        next: Some(SFC),
        miss: Miss::Drop,
        expects: "in_port, reg3 = conntrack zone",
    },
    Stage {
        table: SFC,
        name: "sfc",
        app: "chaining",
        next: Some(RESPOND),
        miss: Miss::Continue(RESPOND),
        expects: "in_port, metadata = network",
    },
    Stage {
        table: SFC_ARRIVAL,
        name: "sfc-arrival",
        app: "chaining",
        next: None,
        miss: Miss::Drop,
        expects: "tun_id = the chaining tunnel id, an MPLS label",
    },
    Stage {
        table: RESPOND,
        name: "arp-nd-responder",
        app: "responder",
        next: Some(DHCP),
        miss: Miss::Continue(DHCP),
        expects: "metadata = network",
    },
    Stage {
        table: DHCP,
        name: "dhcp",
        app: "dhcp",
        next: Some(LB_VIP),
        miss: Miss::Continue(LB_VIP),
        expects: "metadata = network",
    },
    Stage {
        table: EXTERNAL_IN,
        name: "external-input",
        app: "nat",
        next: Some(DNAT),
        miss: Miss::Continue(L2),
        expects: "metadata = physical network, reg5 = 1",
    },
    Stage {
        table: DNAT,
        name: "dnat",
        app: "nat",
        next: Some(ROUTE),
        miss: Miss::Drop,
        expects: "metadata = router, conntrack state of the NAT zone",
    },
    Stage {
        table: LB_VIP,
        name: "lb-vip",
        app: "load-balancing",
        next: Some(LB_SELECT),
        miss: Miss::Continue(L3_ENTRY),
        expects: "metadata = network, reg5 = came from a tunnel",
    },
    Stage {
        table: LB_SELECT,
        name: "lb-select",
        app: "load-balancing",
        next: Some(LB_FORWARD),
        miss: Miss::Drop,
        expects: "metadata = network, reg3 = load-balancing zone, its conntrack state",
    },
    Stage {
        table: LB_FORWARD,
        name: "lb-forward",
        app: "load-balancing",
        next: Some(L3_ENTRY),
        miss: Miss::Drop,
        expects: "metadata = network, ct_label = the member's MAC",
    },
    Stage {
        table: L3_ENTRY,
        name: "l3-entry",
        app: "routing",
        next: Some(ROUTER_IN),
        miss: Miss::Continue(L2),
        expects: "metadata = network",
    },
    Stage {
        table: ROUTER_IN,
        name: "router-input",
        app: "routing",
        next: Some(ROUTE),
        miss: Miss::Continue(ROUTE),
        expects: "metadata = router",
    },
    Stage {
        table: ROUTE,
        name: "ip-routing",
        app: "routing",
        next: Some(NEIGHBOUR),
        miss: Miss::Drop,
        expects: "metadata = router",
    },
    Stage {
        table: NEIGHBOUR,
        name: "next-hop",
        app: "routing",
        next: Some(L2),
        miss: Miss::Drop,
        expects: "metadata = outgoing network, eth_src = outgoing interface",
    },
    Stage {
        table: SNAT,
        name: "snat",
        app: "nat",
        next: Some(SNAT_CHASSIS),
        miss: Miss::Drop,
        expects: "metadata = router, reg2 (IPv4) or reg8-11 (IPv6) = next hop",
    },
    Stage {
        table: SNAT_CHASSIS,
        name: "snat-chassis",
        app: "nat",
        next: Some(EXTERNAL_OUT),
        miss: Miss::Drop,
        expects: "metadata = router, reg2 = next hop, source = a port's inner address",
    },
    Stage {
        table: EXTERNAL_OUT,
        name: "external-next-hop",
        app: "nat",
        next: Some(RESOLVE),
        miss: Miss::Drop,
        expects: "metadata = external network, reg2 (IPv4) or reg8-11 (IPv6) = next hop",
    },
    Stage {
        table: NEIGHBOURS_LEARNED,
        name: "neighbours-learned",
        app: "nat",
        next: None,
        miss: Miss::Drop,
        expects: "metadata = external network, reg2 (IPv4) or reg8-11 (IPv6) = next hop",
    },
    Stage {
        table: RESOLVE,
        name: "resolve",
        app: "nat",
        next: Some(L2),
        miss: Miss::Continue(L2),
        expects: "metadata = external network, eth_dst = next hop or zero",
    },
    Stage {
        table: L2,
        name: "l2-lookup",
        app: "l2",
        next: Some(FLOOD),
        miss: Miss::Drop,
        expects: "metadata = network, reg5 = came from a tunnel",
    },
    Stage {
        table: FLOOD,
        name: "flood",
        app: "flood",
        next: None,
        miss: Miss::Drop,
        expects: "metadata = network, reg5 = came from a tunnel",
    },
    Stage {
        table: LB_REPLY,
        name: "lb-reply",
        app: "load-balancing",
        next: Some(ACL_INGRESS),
        miss: Miss::Continue(ACL_INGRESS),
        expects: "reg4 = local output port",
    },
    Stage {
        table: ACL_INGRESS,
        name: "acl-ingress",
        app: "security-groups",
        next: Some(ACL_INGRESS_STATE),
        miss: Miss::Continue(DELIVER),
        expects: "reg4 = local output port",
    },
    Stage {
        table: ACL_INGRESS_STATE,
        name: "acl-ingress-state",
        app: "security-groups",
        next: Some(DELIVER),
        miss: Miss::Drop,
        expects: "reg4 = local output port, reg3 = conntrack zone",
    },
    Stage {
        table: DELIVER,
        name: "deliver",
        app: "l2",
        next: None,
        miss: Miss::Drop,
        expects: "reg4 = local output port",
    },
];

/// Apps that write into a stage another app owns, each at priorities above all of the owner's
/// flows there: the trunks app takes a trunk parent's tagged frames, and its subports' frames on
/// their way back, in [`INGRESS`] before the classifier would see them.
pub const GUESTS: [(u8, &str); 1] = [(INGRESS, "trunks")];

/// Whether `app` may write into `table`: it owns the stage, or is a guest there ([`GUESTS`]).
pub fn writes(app: &str, table: u8) -> bool {
    stage(table).is_some_and(|s| s.app == app) || GUESTS.contains(&(table, app))
}

/// The stage of `table`.
pub fn stage(table: u8) -> Option<&'static Stage> {
    STAGES.iter().find(|s| s.table == table)
}

/// Where packets admitted by `table` continue.
///
/// # Panics
/// If `table` is not a stage with a successor: a bug in an app, caught by every test.
pub fn next(table: u8) -> u8 {
    stage(table)
        .and_then(|s| s.next)
        .unwrap_or_else(|| panic!("table {table} has no next stage"))
}

/// What a register (or `metadata`) carries between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Register {
    /// `metadata`: the network's VNI (below 2^24), or [`ROUTER_CONTEXT`] plus the router's id
    /// bits inside a router.
    Metadata,
    /// `reg5`: 1 if the packet came from a tunnel (never sent back into one).
    FromTunnel,
    /// `reg6`, `reg7`: scratch space within one flow's actions.
    Scratch,
    /// `reg3`: the conntrack zone of the filtered port (its OpenFlow port number).
    CtZone,
    /// `reg4`: the local port a packet is delivered to.
    OutPort,
    /// `reg2`: the IPv4 next hop of a packet routed to an external network.
    NextHop,
    /// `reg8`..`reg11` (OVS's `xxreg2`, most significant word first): the IPv6 next hop of a
    /// packet routed to an external network.
    NextHop6,
}

/// The register number of [`Register::FromTunnel`].
pub const REG_FROM_TUNNEL: u8 = 5;
/// The register number of [`Register::CtZone`].
pub const REG_CT_ZONE: u8 = 3;
/// The register number of [`Register::OutPort`].
pub const REG_OUT_PORT: u8 = 4;
/// The register number of [`Register::NextHop`].
pub const REG_NEXT_HOP: u8 = 2;
/// The register numbers of [`Register::NextHop6`], most significant word first.
pub const REG_NEXT_HOP6: [u8; 4] = [8, 9, 10, 11];
/// `ip` as the values of the [`REG_NEXT_HOP6`] registers, in their order.
pub fn next_hop6_words(ip: std::net::Ipv6Addr) -> [u32; 4] {
    let b = ip.octets();
    std::array::from_fn(|i| {
        u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    })
}

/// The IPv6 address that the [`REG_NEXT_HOP6`] registers hold (their values in their order).
pub fn next_hop6_from_words(words: [u32; 4]) -> std::net::Ipv6Addr {
    let ip = words
        .iter()
        .fold(0u128, |acc, w| (acc << 32) | u128::from(*w));
    std::net::Ipv6Addr::from(ip)
}

/// Stages whose flows several owners may compute identically (two listeners' members at one
/// address, two listeners reached from one network): the pipeline installs one of them.
pub const SHARED: [u8; 5] = [SFC, LB_VIP, LB_SELECT, LB_FORWARD, LB_REPLY];

/// The tunnel id of chained traffic between chassis (below the routers' transit ids; the server
/// never gives a network it).
pub const SFC_VNI: u32 = 0x00ff_bfff;

/// The conntrack zone of a local port's connections to load balancers: bit 14 plus its OpenFlow
/// port number (below [`MAX_OFPORT`]), next to its security-group and NAT zones.
pub const LB_ZONE: u16 = 0x4000;

/// The register numbers of [`Register::Scratch`].
pub const REG_SCRATCH: [u8; 2] = [6, 7];
/// `metadata` bit that marks a router context (the other 63 bits are a hash of the router's id).
pub const ROUTER_CONTEXT: u64 = 1 << 63;

/// `metadata` bit that marks a provider (flat or VLAN) network.
pub const PROVIDER_NETWORK: u64 = 1 << 62;

/// `metadata` on a provider network: bit 62 plus a 62-bit hash (FNV-1a) of its id.
pub fn provider_metadata(network: &str) -> u64 {
    PROVIDER_NETWORK | (crate::cookie::fnv1a(network) >> 2)
}

/// OpenFlow port numbers of VIFs (and patches) the pipeline serves are below this: their
/// security-group zone is the number, their NAT zone the number plus bit 15 ([`nat_zone`]), and
/// router zones take the rest ([`router_zone`]).
pub const MAX_OFPORT: u32 = 0x4000;

/// The conntrack zone of a local port's NAT (its floating IPs, distributed SNAT's first stage),
/// or of an external network's SNAT (after its patch port): bit 15 plus the OpenFlow port number,
/// next to the port's security-group zone (the number alone). `None` for numbers the pipeline
/// does not serve (Open vSwitch numbers ports from 1 up; 16 383 ports is far beyond a chassis).
pub fn nat_zone(ofport: u32) -> Option<u16> {
    u16::try_from(ofport)
        .ok()
        .filter(|_| ofport < MAX_OFPORT)
        .map(|p| 0x8000 | p)
}

/// The conntrack zone of a router's centralized SNAT on its gateway chassis: bits 15 and 14 plus
/// the router's number.
pub fn router_zone(number: u16) -> u16 {
    0xc000 | (number & 0x3fff)
}

/// The tunnel id that carries a router's packets to its gateway chassis: the top 16 384 VNIs are
/// routers' (the server never gives a network one of them).
pub fn transit_vni(number: u16) -> u32 {
    0x00ff_c000 | u32::from(number & 0x3fff)
}

/// `metadata` inside `router`: a 63-bit hash (FNV-1a) of its whole id, so no number needs
/// allocating and ids that share a prefix still differ.
pub fn router_metadata(router: &str) -> u64 {
    ROUTER_CONTEXT | (crate::cookie::fnv1a(router) >> 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_ordered_and_continue_to_stages() {
        for w in STAGES.windows(2) {
            assert!(w[0].table < w[1].table);
        }
        for s in &STAGES {
            if let Some(n) = s.next {
                assert!(stage(n).is_some(), "{} continues to unknown {n}", s.name);
            }
            if let Miss::Continue(n) = s.miss {
                assert!(stage(n).is_some(), "{} misses to unknown {n}", s.name);
            }
        }
    }

    #[test]
    fn the_design_document_shows_this_table_map() {
        let doc = include_str!("../../../docs/architecture.md");
        for s in &STAGES {
            let row = format!("| {} | {} | {} |", s.table, s.name, s.app);
            assert!(doc.contains(&row), "docs/architecture.md lacks `{row}`");
        }
    }

    #[test]
    fn router_contexts_never_look_like_networks() {
        let m = router_metadata("3f2a51c0-1234-4abc-8def-0123456789ab");
        assert!(m >= ROUTER_CONTEXT && m > u64::from(u32::MAX));
        let p = provider_metadata("3f2a51c0-1234-4abc-8def-0123456789ab");
        assert!(p & ROUTER_CONTEXT == 0 && p & PROVIDER_NETWORK != 0);
        assert_eq!(nat_zone(7), Some(0x8007));
        assert_eq!(nat_zone(MAX_OFPORT), None);
        assert_eq!(router_zone(5), 0xc005);
        assert_eq!(transit_vni(5), 0xffc005);
        let ip: std::net::Ipv6Addr = "2001:db8:ee::1".parse().unwrap();
        assert_eq!(next_hop6_words(ip), [0x2001_0db8, 0x00ee_0000, 0, 1]);
        assert_eq!(next_hop6_from_words(next_hop6_words(ip)), ip);
    }
}
