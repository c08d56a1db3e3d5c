//! The pipeline's apps: one module per datapath feature. An app declares the tables it owns, the
//! registers it reads and writes, the kinds of owner it computes flows for and the inputs it
//! depends on ([`Spec`]), and computes one owner's flows at a time through a [`Ctx`] that records
//! what it read. Adding a feature means adding an app to [`APPS`] (and its stages to
//! [`crate::tables`]), not editing the others.

mod chaining;
pub use chaining::label as chaining_label;
mod classifier;
mod dhcp;
mod flood;
pub(crate) use flood::Collected;
mod l2;
pub mod load_balancing;
mod nat;
mod responder;
mod routing;
mod security_groups;
mod trunks;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use openflow::action::Controller;
use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match, Subfield};

use crate::cookie::Owner;
use crate::deps::Ctx;
use crate::model::{Kind, Mac};
use crate::tables::{REG_NEXT_HOP6, REG_SCRATCH, Register, next_hop6_words};

/// The kinds of owner an app computes flows for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    Network,
    Port,
    Router,
    RouterInterface,
    SgRule,
    FloatingIp,
    LoadBalancer,
    Listener,
    Member,
    PortChain,
    Trunk,
}

impl OwnerKind {
    pub fn of(owner: &Owner) -> Option<OwnerKind> {
        match owner {
            Owner::Static => None,
            Owner::Network(_) => Some(OwnerKind::Network),
            Owner::Port(_) => Some(OwnerKind::Port),
            Owner::Router(_) => Some(OwnerKind::Router),
            Owner::RouterInterface(_) => Some(OwnerKind::RouterInterface),
            Owner::SgRule(_) => Some(OwnerKind::SgRule),
            Owner::FloatingIp(_) => Some(OwnerKind::FloatingIp),
            Owner::LoadBalancer(_) => Some(OwnerKind::LoadBalancer),
            Owner::Listener(_) => Some(OwnerKind::Listener),
            Owner::Member(_) => Some(OwnerKind::Member),
            Owner::PortChain(_) => Some(OwnerKind::PortChain),
            Owner::Trunk(_) => Some(OwnerKind::Trunk),
        }
    }
}

/// What an app is, declared.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    /// The tables its flows go into (each owned by it in [`crate::tables::STAGES`], or one it
    /// is a guest of, [`crate::tables::GUESTS`]).
    pub tables: &'static [u8],
    pub reads: &'static [Register],
    pub writes: &'static [Register],
    /// The owners it computes flows for.
    pub owners: &'static [OwnerKind],
    /// The northbound object kinds its flows depend on.
    pub inputs: &'static [Kind],
}

/// One datapath feature.
pub trait App: Sync {
    fn spec(&self) -> &'static Spec;
    /// Flows that depend on no input (owned by [`Owner::Static`], like the table misses).
    fn fixed(&self) -> Vec<Flow> {
        Vec::new()
    }
    /// Appends `owner`'s flows to `out`, reading the topology only through `ctx`.
    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>);
}

/// Every app, in pipeline order.
pub static APPS: [&dyn App; 11] = [
    &trunks::Trunks,
    &classifier::Classifier,
    &security_groups::SecurityGroups,
    &chaining::Chaining,
    &responder::Responder,
    &dhcp::Dhcp,
    &load_balancing::LoadBalancing,
    &nat::Nat,
    &routing::Routing,
    &l2::L2Lookup,
    &flood::Flood,
];

/// Why a packet is sent to the agent: the `controller` action's userdata (one byte), which the
/// agent dispatches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Punt {
    /// A neighbour solicitation for an address the topology knows (the cookie names its port
    /// or router interface).
    NeighbourSolicitation = 1,
    /// A DHCPv4 request (the port is the packet's in_port).
    Dhcp = 2,
    /// A router solicitation (the cookie names the router interface).
    RouterSolicitation = 3,
    /// A DHCPv6 request.
    Dhcpv6 = 4,
    /// A routed packet whose TTL or hop limit ran out (the cookie names the router).
    TtlExceeded = 5,
    /// A packet routed to an external network whose next hop (`reg2`) has no known MAC yet:
    /// the agent asks for it by ARP (the packet waits in the agent for the answer).
    ResolveNeighbour = 6,
    /// An ARP answer to one of this chassis' addresses on an external network (the switch
    /// learned its sender): the agent sends on the packets that waited for it.
    NeighbourLearned = 7,
    /// A new connection to a listener with no member available: the agent answers with a TCP
    /// reset (an ICMP port unreachable for UDP).
    Reject = 8,
    /// A local member's answer to a health check (to the VIP, from the port probed).
    HealthReply = 9,
}

impl Punt {
    pub fn from_userdata(userdata: &[u8]) -> Option<Punt> {
        Some(match userdata {
            [1] => Punt::NeighbourSolicitation,
            [2] => Punt::Dhcp,
            [3] => Punt::RouterSolicitation,
            [4] => Punt::Dhcpv6,
            [5] => Punt::TtlExceeded,
            [6] => Punt::ResolveNeighbour,
            [7] => Punt::NeighbourLearned,
            [8] => Punt::Reject,
            [9] => Punt::HealthReply,
            _ => return None,
        })
    }

    /// The action that sends the packet to the agent for this reason.
    pub fn action(self) -> Action {
        Action::Controller(Controller {
            userdata: vec![self as u8],
            ..Controller::default()
        })
    }
}

pub(crate) const ETH_IPV4: u128 = 0x0800;
pub(crate) const ETH_ARP: u128 = 0x0806;
pub(crate) const ETH_IPV6: u128 = 0x86dd;
pub(crate) const IPPROTO_ICMP: u128 = 1;
pub(crate) const IPPROTO_UDP: u128 = 17;
pub(crate) const IPPROTO_ICMPV6: u128 = 58;

/// `ct_state` bits.
pub(crate) const NEW: u128 = 0x01;
pub(crate) const EST: u128 = 0x02;
pub(crate) const REL: u128 = 0x04;
pub(crate) const RPL: u128 = 0x08;
pub(crate) const INV: u128 = 0x10;
pub(crate) const TRK: u128 = 0x20;

/// Packets whose `ct_state` has the bits of `value` that `mask` selects.
pub(crate) fn ct_state(value: u128, mask: u128) -> Match {
    Match::new().with_masked(Field::CtState, value, mask)
}

pub(crate) fn flow(owner: &Owner, table: u8, priority: u16, m: Match, ins: Instructions) -> Flow {
    Flow::new(table, priority, m, vec![])
        .cookie(owner.cookie())
        .instructions(ins)
}

pub(crate) fn goto(table: u8) -> Instructions {
    Instructions::default().goto(table)
}

/// Sets `metadata` to `value`, then continues at `table`.
pub(crate) fn enter(value: u64, table: u8) -> Instructions {
    let mut ins = goto(table);
    ins.set_write_metadata(Some((value, u64::MAX)));
    ins
}

/// Packets of a connection conntrack `zone` knows, translated back (as the connection was
/// translated, in the other direction), continuing at `table`.
pub(crate) fn translated_back(zone: openflow::action::CtZone, table: u8) -> Action {
    Action::Ct(Box::new(openflow::action::Ct {
        zone,
        table: Some(table),
        nat: Some(openflow::action::Nat::default()),
        ..openflow::action::Ct::default()
    }))
}

/// Packets sent to the agent for `reason`.
pub(crate) fn punt(reason: Punt) -> Instructions {
    Instructions::apply(vec![reason.action()])
}

pub(crate) fn output(port: u32) -> Action {
    Action::Output { port, max_len: 0 }
}

pub(crate) fn set_mac(field: Field, mac: Mac) -> Action {
    set_field(field, mac.into(), u128::from(u64::MAX >> 16))
}

pub(crate) fn move_field(src: Field, dst: Field) -> Action {
    Action::Move {
        src: Subfield::whole(src),
        dst: Subfield::whole(dst),
    }
}

/// The IPv6 next-hop registers, most significant word first, each with the bits of a 128-bit
/// field it holds.
fn next_hop6_bits(field: Field) -> impl Iterator<Item = (Subfield, Subfield)> {
    REG_NEXT_HOP6.into_iter().enumerate().map(move |(i, reg)| {
        let ofs = 96 - 32 * u16::try_from(i).expect("four words");
        let bits = Subfield {
            field,
            ofs,
            n_bits: 32,
        };
        (bits, Subfield::whole(Field::Reg(reg)))
    })
}

/// The actions that load `ip` into the IPv6 next-hop registers.
pub(crate) fn load_next_hop6(ip: Ipv6Addr) -> Vec<Action> {
    REG_NEXT_HOP6
        .into_iter()
        .zip(next_hop6_words(ip))
        .map(|(reg, word)| set_field(Field::Reg(reg), word.into(), 0xffff_ffff))
        .collect()
}

/// The actions that copy the IPv6 address in `field` into the IPv6 next-hop registers.
pub(crate) fn copy_next_hop6(field: Field) -> Vec<Action> {
    next_hop6_bits(field)
        .map(|(src, dst)| Action::Move { src, dst })
        .collect()
}

/// `learn` specs by which a learned flow matches packets whose IPv6 next hop is the address in
/// `field` of the packet that teaches it.
pub(crate) fn match_next_hop6(field: Field) -> Vec<openflow::action::LearnSpec> {
    next_hop6_bits(field)
        .map(|(src, dst)| openflow::action::LearnSpec::Match {
            src: openflow::action::LearnSrc::Field(src),
            dst,
        })
        .collect()
}

/// `lo..=hi` as (value, mask) prefixes.
pub(crate) fn port_ranges(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size /= 2;
        }
        out.push((lo as u16, (0xffff_u32 & !(size - 1)) as u16));
        lo += size;
    }
    out
}

/// `m` restricted to packets from (`source`) or to an address in `net`, with the IP ethertype.
pub(crate) fn ip_match(m: Match, net: &IpNet, source: bool) -> Match {
    let (eth, field, addr, mask) = match (net, source) {
        (IpNet::V4(n), src) => (
            ETH_IPV4,
            if src { Field::Ipv4Src } else { Field::Ipv4Dst },
            u128::from(u32::from(n.addr())),
            u128::from(u32::from(n.netmask())),
        ),
        (IpNet::V6(n), src) => (
            ETH_IPV6,
            if src { Field::Ipv6Src } else { Field::Ipv6Dst },
            u128::from(n.addr()),
            u128::from(n.netmask()),
        ),
    };
    m.with(Field::EthType, eth).with_masked(field, addr, mask)
}

/// The flow that answers ARP requests for `ip` on the network `meta` with `mac`, in place.
pub(crate) fn arp_answer(owner: &Owner, table: u8, meta: u64, ip: Ipv4Addr, mac: Mac) -> Flow {
    let m = Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_ARP)
        .with(Field::ArpOp, 1)
        .with(Field::ArpTpa, u32::from(ip).into());
    let actions = vec![
        move_field(Field::EthSrc, Field::EthDst),
        set_mac(Field::EthSrc, mac),
        set_field(Field::ArpOp, 2, 0xffff),
        move_field(Field::ArpSha, Field::ArpTha),
        set_mac(Field::ArpSha, mac),
        move_field(Field::ArpSpa, Field::ArpTpa),
        set_field(Field::ArpSpa, u32::from(ip).into(), 0xffff_ffff),
        output(openflow::field::port::IN_PORT),
    ];
    flow(owner, table, 100, m, Instructions::apply(actions))
}

/// The flow that sends neighbour solicitations for `target` on network `meta` to the agent.
pub(crate) fn nd_punt(owner: &Owner, table: u8, meta: u64, target: std::net::Ipv6Addr) -> Flow {
    let m = Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_IPV6)
        .with(Field::IpProto, IPPROTO_ICMPV6)
        .with(Field::Icmpv6Type, 135)
        .with(Field::NdTarget, u128::from(target));
    flow(owner, table, 100, m, punt(Punt::NeighbourSolicitation))
}

/// Tags the frame with `vlan` (if any) and outputs it to the physical network's patch port.
/// Comes last: the tag stays on the frame for any later output.
pub(crate) fn to_physical(patch: u32, vlan: Option<u16>, actions: &mut Vec<Action>) {
    if let Some(vid) = vlan {
        actions.push(Action::PushVlan(0x8100));
        actions.push(set_field(
            Field::VlanVid,
            u128::from(VLAN_PRESENT | vid),
            0x1fff,
        ));
    }
    actions.push(output(patch));
}

/// OpenFlow's "a VLAN tag is present" bit of `vlan_vid`.
pub(crate) const VLAN_PRESENT: u16 = 0x1000;

/// Sets the tunnel destination and VNI and outputs to the tunnel port.
pub(crate) fn to_tunnel(tunnel: u32, vni: u32, dst: Ipv4Addr, actions: &mut Vec<Action>) {
    actions.push(set_field(Field::TunDst, u32::from(dst).into(), 0xffff_ffff));
    actions.push(set_field(Field::TunId, vni.into(), u128::from(u64::MAX)));
    actions.push(output(tunnel));
}

/// Answers an ICMP echo request to a router's address `ip` (`to_router` matches packets to it)
/// in place: addresses and MACs swapped (the MAC through the scratch registers), type echo
/// reply, TTL 255, back out of the port it came in on (tagged with `vlan`, if any: from a
/// physical network).
pub(crate) fn echo_reply(
    owner: &Owner,
    table: u8,
    priority: u16,
    to_router: Match,
    ip: IpAddr,
    vlan: Option<u16>,
) -> Flow {
    let [lo, hi] = REG_SCRATCH;
    let part = |field, ofs, n_bits| Subfield { field, ofs, n_bits };
    let mut actions = vec![
        Action::Move {
            src: part(Field::EthDst, 0, 32),
            dst: part(Field::Reg(lo), 0, 32),
        },
        Action::Move {
            src: part(Field::EthDst, 32, 16),
            dst: part(Field::Reg(hi), 0, 16),
        },
        move_field(Field::EthSrc, Field::EthDst),
        Action::Move {
            src: part(Field::Reg(lo), 0, 32),
            dst: part(Field::EthSrc, 0, 32),
        },
        Action::Move {
            src: part(Field::Reg(hi), 0, 16),
            dst: part(Field::EthSrc, 32, 16),
        },
    ];
    let m = match ip {
        IpAddr::V4(v4) => {
            actions.push(move_field(Field::Ipv4Src, Field::Ipv4Dst));
            actions.push(set_field(Field::Ipv4Src, u32::from(v4).into(), 0xffff_ffff));
            actions.push(set_field(Field::IcmpType, 0, 0xff));
            to_router
                .with(Field::IpProto, IPPROTO_ICMP)
                .with(Field::IcmpType, 8)
        }
        IpAddr::V6(v6) => {
            actions.push(move_field(Field::Ipv6Src, Field::Ipv6Dst));
            actions.push(set_field(Field::Ipv6Src, u128::from(v6), u128::MAX));
            actions.push(set_field(Field::Icmpv6Type, 129, 0xff));
            to_router
                .with(Field::IpProto, IPPROTO_ICMPV6)
                .with(Field::Icmpv6Type, 128)
        }
    };
    actions.push(set_field(Field::IpTtl, 255, 0xff));
    to_physical(openflow::field::port::IN_PORT, vlan, &mut actions);
    flow(owner, table, priority, m, Instructions::apply(actions))
}
