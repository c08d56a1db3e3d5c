//! Load balancing: Octavia's listeners served in the pipeline of the client's own chassis, with
//! no appliance and no extra hop (tables [`LB_VIP`], [`LB_SELECT`], [`LB_FORWARD`],
//! [`LB_REPLY`]).
//!
//! On every network from which a VIP can be reached (the VIP's network and the networks of the
//! routers on it), a packet from a local VIF to a listener (VIP, protocol, port) goes through
//! conntrack with NAT in the client port's load-balancing zone ([`LB_ZONE`] plus its OpenFlow
//! port). A new connection gets a member from the listener's OpenFlow select group: each
//! bucket commits the connection translated to its member (`nat(dst=address:port)`, weights as
//! bucket weights) and stores the member's MAC in the connection's `ct_label`; later packets are
//! translated by conntrack alone, so a connection stays on its member whatever the group becomes.
//! Then a member on the client's own network gets the packet at its MAC (from `ct_label`), any
//! other through the client network's router. The member's answers are translated back where
//! they reach the client ([`LB_REPLY`]: packets from a member's address and port go through the
//! destination port's zone before its security groups). With `SOURCE_IP` (algorithm or
//! persistence) the group chooses by the client's address alone: the source port is held in a
//! register and zeroed while the switch hashes, then restored in the bucket ([`hash_input`];
//! UDP's ports, which the switch does not hash, are shown to it the other way round).
//!
//! Members are those administratively up, with a weight above zero and not found failing by
//! their pool's health monitor; backups only while no other is available. A listener with no
//! available member answers new connections through the agent (a TCP reset, an ICMP port
//! unreachable for UDP). The VIP's address is answered (ARP, ICMP echo) on its network.
//!
//! Health checks: each member's own chassis probes it from the VIP's address ([`health_checks`]);
//! the member's answers to the probes (from its port, to the VIP, to the probes' source ports)
//! go to the agent instead of being routed.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use openflow::action::{Ct, CtZone, Nat, NatAddr};
use openflow::message::{Bucket, Group, GroupType};
use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match, Subfield};

use super::{
    App, ETH_IPV4, ETH_IPV6, IPPROTO_ICMP, NEW, OwnerKind, Punt, Spec, TRK, arp_answer, ct_state,
    echo_reply, flow, goto, ip_match, punt, translated_back,
};
use crate::cookie::{Owner, fnv1a};
use crate::deps::Ctx;
use crate::deps::Wire;
use crate::model::{
    Chassis, FloatingIp, Health, HealthMonitor, Kind, Listener, LoadBalancer, Mac, Member,
    MonitorKind, Port, Topology,
};
use crate::tables::{
    ACL_INGRESS, L3_ENTRY, LB_FORWARD, LB_REPLY, LB_SELECT, LB_VIP, LB_ZONE, REG_CT_ZONE,
    REG_FROM_TUNNEL, REG_OUT_PORT, REG_SCRATCH, ROUTE, Register, nat_zone, next, router_metadata,
};

pub struct LoadBalancing;

static SPEC: Spec = Spec {
    name: "load-balancing",
    tables: &[LB_VIP, LB_SELECT, LB_FORWARD, LB_REPLY],
    reads: &[Register::FromTunnel, Register::OutPort, Register::Scratch],
    writes: &[
        Register::CtZone,
        Register::Scratch,
        Register::OutPort,
        Register::Metadata,
        Register::FromTunnel,
    ],
    owners: &[
        OwnerKind::LoadBalancer,
        OwnerKind::Listener,
        OwnerKind::Member,
    ],
    inputs: &[
        Kind::Network,
        Kind::Subnet,
        Kind::Port,
        Kind::Router,
        Kind::FloatingIp,
        Kind::Chassis,
        Kind::ChassisUp,
        Kind::LoadBalancer,
        Kind::Listener,
        Kind::Pool,
        Kind::Member,
        Kind::HealthMonitor,
    ],
};

/// `ct_state` bit: the packet's destination was translated.
const DNAT: u128 = 0x80;

/// Health probes leave from source ports with these bits set (65024 and up), so that their
/// answers are told from a member's other traffic to the VIP.
pub const PROBE_PORTS: u16 = 0xfe00;

/// The group of a listener's members: the first 32 bits of its UUID (a hash of another id),
/// kept below the reserved ids.
pub fn group_id(listener: &str) -> u32 {
    let hex: String = listener.chars().filter(|c| *c != '-').take(8).collect();
    let id = match u32::from_str_radix(&hex, 16) {
        Ok(v) if hex.len() == 8 => v,
        _ => fnv1a(listener) as u32,
    };
    if id >= 0xffff_ff00 {
        id & 0x7fff_ffff
    } else {
        id
    }
}

fn ct_zone() -> CtZone {
    CtZone::Field(Subfield::range(Field::Reg(REG_CT_ZONE), 0, 15))
}

/// Loads the load-balancing zone of the port in `port` (a field holding an OpenFlow port) into
/// the zone register.
fn load_zone(port: Field) -> [Action; 2] {
    [
        set_field(Field::Reg(REG_CT_ZONE), LB_ZONE.into(), 0xffff_ffff),
        Action::Move {
            src: Subfield::range(port, 0, 13),
            dst: Subfield::range(Field::Reg(REG_CT_ZONE), 0, 13),
        },
    ]
}

fn transport(proto: u8) -> (Field, Field) {
    if proto == 17 {
        (Field::UdpSrc, Field::UdpDst)
    } else {
        (Field::TcpSrc, Field::TcpDst)
    }
}

/// Packets on `meta` to the listener (VIP, protocol, port).
fn to_listener(meta: u64, vip: IpAddr, proto: u8, port: u16) -> Match {
    let m = ip_match(
        Match::new().with(Field::Metadata, meta.into()),
        &IpNet::from(vip),
        false,
    );
    m.with(Field::IpProto, proto.into())
        .with(transport(proto).1, port.into())
}

/// The networks from which `lb`'s VIP is reached, with their `metadata` here: its own and those
/// of the routers on it.
fn client_networks(ctx: &mut Ctx<'_>, lb: &LoadBalancer) -> Vec<(String, u64)> {
    let mut nets = BTreeSet::from([lb.vip_network_id.clone()]);
    let routers: BTreeSet<String> = ctx
        .interfaces_on(&lb.vip_network_id)
        .filter_map(|i| i.router().map(str::to_string))
        .collect();
    for r in routers {
        nets.extend(ctx.interfaces_of(&r).map(|i| i.network_id.clone()));
    }
    nets.into_iter()
        .filter_map(|n| ctx.carried(&n).map(|m| (n, m)))
        .collect()
}

/// A VIP reached from outside, through a floating IP of its port: served on the chassis that
/// hosts the gateway of the floating IP's router.
pub(crate) struct Outside<'t> {
    pub fip: &'t FloatingIp,
    /// The floating IP's router: its `metadata` and number.
    pub router: u64,
    pub number: u16,
    pub host: &'t Chassis,
    /// Whether this chassis is the host.
    pub here: bool,
}

/// How the VIP held by `vip_port` is reached from outside, if a floating IP forwards to it (the
/// first, by id, whose router has its gateway on the floating IP's network and a number).
pub(crate) fn outside<'t>(ctx: &mut Ctx<'t>, vip_port: &str) -> Option<Outside<'t>> {
    let fips: Vec<&FloatingIp> = ctx.floating_ips_of(vip_port).collect();
    for fip in fips {
        let Some(t) = fip.target.as_ref() else {
            continue;
        };
        let Some(router) = ctx.router(&t.router_id).filter(|r| r.admin_up) else {
            continue;
        };
        let gateway_there = router
            .gateway
            .as_ref()
            .is_some_and(|g| g.network_id == fip.network_id);
        let (true, Some(number)) = (gateway_there, router.number) else {
            continue;
        };
        let host = ctx.gateway_host(&t.router_id)?;
        return Some(Outside {
            fip,
            router: router_metadata(&t.router_id),
            number,
            host,
            here: host.id == ctx.chassis_id(),
        });
    }
    None
}

/// The network a member is on: its subnet's, or the VIP's.
fn member_network(ctx: &mut Ctx<'_>, m: &Member, lb: &LoadBalancer) -> String {
    m.subnet_id
        .as_deref()
        .and_then(|s| ctx.subnet(s))
        .map(|s| s.network_id.clone())
        .unwrap_or_else(|| lb.vip_network_id.clone())
}

/// The members a listener's group sends new connections to: those available, or the available
/// backups when no other is.
fn chosen<'a>(members: &[&'a Member], monitored: bool) -> Vec<&'a Member> {
    let available: Vec<&Member> = members
        .iter()
        .copied()
        .filter(|m| m.admin_up && m.weight > 0)
        .filter(|m| !(monitored && m.health == Some(Health::Error)))
        .collect();
    let primary: Vec<&Member> = available.iter().copied().filter(|m| !m.backup).collect();
    if primary.is_empty() {
        available
    } else {
        primary
    }
}

impl App for LoadBalancing {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn fixed(&self) -> Vec<Flow> {
        // A connection already translated (its later packets, a retransmitted first one) goes
        // on to its member.
        vec![flow(
            &Owner::Static,
            LB_SELECT,
            50,
            ct_state(TRK | DNAT, TRK | DNAT),
            goto(next(LB_SELECT)),
        )]
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::LoadBalancer(id) => vip_flows(ctx, owner, id, out),
            Owner::Listener(id) => listener_flows(ctx, owner, id, out),
            Owner::Member(id) => probe_answers(ctx, owner, id, out),
            _ => {}
        }
    }
}

/// The VIP's address answered: ARP on its network, ICMP echo on every client network.
fn vip_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(lb) = ctx.load_balancer(id).filter(|lb| lb.admin_up) else {
        return;
    };
    let Some(mac) = lb
        .vip_port_id
        .as_deref()
        .and_then(|p| ctx.port(p))
        .map(|p| p.mac)
    else {
        return;
    };
    for (net, meta) in client_networks(ctx, lb) {
        let on_vip = Match::new().with(Field::Metadata, meta.into());
        if let IpAddr::V4(v4) = lb.vip
            && net == lb.vip_network_id
        {
            out.push(arp_answer(owner, LB_VIP, meta, v4, mac));
        }
        let to_vip = ip_match(on_vip, &IpNet::from(lb.vip), false);
        out.push(echo_reply(owner, LB_VIP, 90, to_vip, lb.vip, None));
    }
}

fn listener_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(l) = ctx.listener(id).filter(|l| l.admin_up) else {
        return;
    };
    let Some(lb) = ctx
        .load_balancer(&l.loadbalancer_id)
        .filter(|lb| lb.admin_up)
    else {
        return;
    };
    let pool = l
        .default_pool_id
        .as_deref()
        .and_then(|p| ctx.pool(p))
        .filter(|p| p.admin_up);
    let monitored = pool
        .and_then(|p| p.healthmonitor_id.as_deref())
        .and_then(|h| ctx.health_monitor(h))
        .is_some_and(|h| h.admin_up);
    let members: Vec<&Member> = pool
        .map(|p| ctx.members_of(&p.id).collect())
        .unwrap_or_default();
    let source_ip = pool.is_some_and(|p| p.source_ip);
    let clients = client_networks(ctx, lb);
    if clients.is_empty() {
        return;
    }
    let chosen = chosen(&members, monitored);
    let (hide, restore) = hash_input(l.protocol, source_ip, lb.vip);
    let select = if chosen.is_empty() {
        punt(Punt::Reject)
    } else {
        let buckets = chosen
            .iter()
            .map(|m| bucket(ctx, m, lb, &restore))
            .collect();
        ctx.group(Group {
            group_id: group_id(&l.id),
            group_type: GroupType::Select,
            buckets,
        });
        let mut actions = hide;
        actions.push(Action::Group(group_id(&l.id)));
        Instructions::apply(actions)
    };
    for (net, meta) in &clients {
        let listener = to_listener(*meta, lb.vip, l.protocol, l.port);
        let mut enter = load_zone(Field::InPort).to_vec();
        enter.push(translated_back(ct_zone(), LB_SELECT));
        out.push(flow(
            owner,
            LB_VIP,
            100,
            listener.clone().with(Field::Reg(REG_FROM_TUNNEL), 0),
            Instructions::apply(enter),
        ));
        let new = listener.with_masked(Field::CtState, TRK | NEW, TRK | NEW | DNAT);
        out.push(flow(owner, LB_SELECT, 100, new, select.clone()));
        forward_flows(ctx, owner, net, *meta, lb.vip, out);
    }
    let outside = lb
        .vip_port_id
        .as_deref()
        .and_then(|p| outside(ctx, p))
        .and_then(|o| from_outside(ctx, lb, o));
    if let Some(o) = &outside
        && o.here
    {
        outside_flows(owner, l, lb, o, &members, &select, out);
    }
    for m in &members {
        hairpin_flows(ctx, owner, l, lb, m, &clients, outside.as_ref(), out);
    }
    for m in &members {
        let (src, _) = transport(l.protocol);
        let from_member = ip_match(Match::new(), &IpNet::from(m.address), true)
            .with(Field::IpProto, l.protocol.into())
            .with(src, m.port.into());
        let mut actions = load_zone(Field::Reg(REG_OUT_PORT)).to_vec();
        actions.push(translated_back(ct_zone(), ACL_INGRESS));
        out.push(flow(
            owner,
            LB_REPLY,
            100,
            from_member,
            Instructions::apply(actions),
        ));
    }
}

/// A local member's connections to its own VIP that its listener sends back to it (hairpin):
/// besides the destination, their source is translated, to the VIP, in the member port's NAT
/// zone, so the member sees them come from the VIP (not from itself) and answers to it; its
/// answers are translated back in both zones and delivered to it from the VIP.
#[allow(clippy::too_many_arguments)]
fn hairpin_flows(
    ctx: &mut Ctx<'_>,
    owner: &Owner,
    l: &Listener,
    lb: &LoadBalancer,
    m: &Member,
    clients: &[(String, u64)],
    outside: Option<&FromOutside>,
    out: &mut Vec<Flow>,
) {
    let net = member_network(ctx, m, lb);
    if !clients.iter().any(|(n, _)| *n == net) {
        return;
    }
    let Some(port) = ctx.port_with_ip(&net, m.address) else {
        return;
    };
    let (Some(ofport), Some(zone)) = (
        ctx.ofport(&port.id),
        ctx.ofport(&port.id).and_then(nat_zone),
    ) else {
        return;
    };
    // The MAC the member sees the VIP behind: the VIP port's on its network, else its router's.
    let Some(vip_mac) = vip_side_mac(ctx, lb, &net) else {
        return;
    };
    let (src_port, dst_port) = transport(l.protocol);
    let member = IpNet::from(m.address);
    let vip = IpNet::from(lb.vip);
    let from_port = |src: &IpNet, dst: &IpNet| {
        ip_match(
            ip_match(Match::new().with(Field::InPort, ofport.into()), src, true),
            dst,
            false,
        )
        .with(Field::IpProto, l.protocol.into())
    };
    let set_zone = set_field(Field::Reg(REG_CT_ZONE), zone.into(), 0xffff_ffff);
    // To the member as a guest of itself: delivered to its port from the VIP's MAC, with
    // `in_port` cleared so the switch outputs to the port it came from.
    let deliver = [
        super::set_mac(Field::EthDst, port.mac),
        super::set_mac(Field::EthSrc, vip_mac),
        set_field(Field::Reg(REG_OUT_PORT), ofport.into(), 0xffff_ffff),
        // `load`, not `set_field`: Open vSwitch refuses the latter for `in_port` 0.
        Action::RegLoad {
            dst: Subfield::whole(Field::InPort),
            value: 0,
        },
    ];
    let (ct_dst, ct_tp_dst) = match lb.vip {
        IpAddr::V4(v4) => (Field::CtNwDst, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Field::CtIpv6Dst, u128::from(v6)),
    };
    // The connection's first direction, translated to the member by its listener.
    let mut actions = deliver.to_vec();
    actions.push(set_zone.clone());
    actions.push(Action::Ct(Box::new(Ct {
        commit: true,
        zone: ct_zone(),
        table: Some(ACL_INGRESS),
        nat: Some(Nat {
            src: Some(true),
            addr: Some(nat_addr(lb.vip)),
            ..Nat::default()
        }),
        ..Ct::default()
    })));
    out.push(flow(
        owner,
        LB_FORWARD,
        30,
        from_port(&member, &member)
            .with(dst_port, m.port.into())
            .with_masked(Field::CtState, TRK | DNAT, TRK | DNAT)
            .with(ct_dst, ct_tp_dst)
            .with(Field::CtTpDst, l.port.into()),
        Instructions::apply(actions),
    ));
    // The member's answers to the VIP: the source translation undone, then the destination's.
    out.push(flow(
        owner,
        LB_VIP,
        150,
        from_port(&member, &vip).with(src_port, m.port.into()),
        Instructions::apply(vec![set_zone, translated_back(ct_zone(), LB_SELECT)]),
    ));
    let mut back = load_zone(Field::InPort).to_vec();
    back.push(translated_back(ct_zone(), LB_FORWARD));
    out.push(flow(
        owner,
        LB_SELECT,
        120,
        from_port(&member, &member)
            .with(src_port, m.port.into())
            .with_masked(Field::CtState, TRK, TRK),
        Instructions::apply(back),
    ));
    out.push(flow(
        owner,
        LB_FORWARD,
        30,
        from_port(&vip, &member).with(src_port, l.port.into()),
        Instructions::apply(deliver.to_vec()).goto(ACL_INGRESS),
    ));
    // Its answers to the VIP that are no hairpin's: to clients outside, whose connections the
    // chassis hosting the floating IP translated to come from the VIP. They go there.
    if let Some(o) = outside {
        let to_host = if o.here {
            vec![
                set_field(Field::Reg(REG_CT_ZONE), o.proxy_zone.into(), 0xffff_ffff),
                translated_back(ct_zone(), LB_FORWARD),
            ]
        } else {
            let mut a = vec![super::set_mac(Field::EthDst, o.vip_mac)];
            super::to_tunnel(o.tunnel, o.vni, o.host_ip, &mut a);
            a
        };
        out.push(flow(
            owner,
            LB_SELECT,
            115,
            from_port(&member, &vip).with(src_port, m.port.into()),
            Instructions::apply(to_host),
        ));
    }
}

/// What a listener needs of a VIP reached from outside ([`Outside`]), on an overlay VIP network.
struct FromOutside {
    here: bool,
    router: u64,
    /// On the host: the external network's patch port, and the zone where the outside clients'
    /// connections are translated to come from the VIP (the external network's SNAT zone).
    patch: Option<u32>,
    proxy_zone: u16,
    /// The VIP network's `metadata` and VNI, and the VIP port's MAC: the members' answers travel
    /// to the host on that network, to that MAC.
    vip_meta: u64,
    vni: u32,
    vip_mac: Mac,
    tunnel: u32,
    host_ip: std::net::Ipv4Addr,
}

fn from_outside(ctx: &mut Ctx<'_>, lb: &LoadBalancer, o: Outside<'_>) -> Option<FromOutside> {
    let Wire::Tunnel(vni) = ctx.wire(&lb.vip_network_id)? else {
        return None;
    };
    let vip_meta = ctx.carried(&lb.vip_network_id)?;
    let vip_mac = ctx.port(lb.vip_port_id.as_deref()?)?.mac;
    let tunnel = ctx.tunnel()?;
    let patch = match ctx.wire(&o.fip.network_id) {
        Some(Wire::Physical { patch, .. }) => Some(patch),
        _ => None,
    };
    if o.here && patch.is_none() {
        return None;
    }
    Some(FromOutside {
        here: o.here,
        router: o.router,
        patch,
        proxy_zone: patch.and_then(nat_zone).unwrap_or(0),
        vip_meta,
        vni,
        vip_mac,
        tunnel,
        host_ip: o.host.tunnel_ip,
    })
}

/// On the chassis hosting a VIP's floating IP: connections from outside (translated to the VIP
/// by the floating IP, in the router) are balanced in the router and translated to come from
/// the VIP, so the members answer the VIP; those answers (from the members' chassis through the
/// tunnel, or from local members) are translated back in both zones and routed out, where the
/// floating IP takes them.
fn outside_flows(
    owner: &Owner,
    l: &Listener,
    lb: &LoadBalancer,
    o: &FromOutside,
    members: &[&Member],
    select: &Instructions,
    out: &mut Vec<Flow>,
) {
    let Some(patch) = o.patch.and_then(|p| u16::try_from(p).ok()) else {
        return;
    };
    let listener = to_listener(o.router, lb.vip, l.protocol, l.port);
    let mut enter = load_zone(Field::InPort).to_vec();
    enter.push(translated_back(ct_zone(), LB_SELECT));
    out.push(flow(
        owner,
        LB_VIP,
        100,
        listener.clone(),
        Instructions::apply(enter),
    ));
    let new = listener.with_masked(Field::CtState, TRK | NEW, TRK | NEW | DNAT);
    out.push(flow(owner, LB_SELECT, 100, new, select.clone()));
    let (ct_dst, vip) = match lb.vip {
        IpAddr::V4(v4) => (Field::CtNwDst, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Field::CtIpv6Dst, u128::from(v6)),
    };
    let set_zone = |zone: u16| set_field(Field::Reg(REG_CT_ZONE), zone.into(), 0xffff_ffff);
    let eth = if lb.vip.is_ipv6() { ETH_IPV6 } else { ETH_IPV4 };
    out.push(flow(
        owner,
        LB_FORWARD,
        10,
        Match::new()
            .with(Field::Metadata, o.router.into())
            .with_masked(Field::CtState, TRK | DNAT, TRK | DNAT)
            .with(Field::EthType, eth)
            .with(ct_dst, vip),
        Instructions::apply(vec![
            set_zone(o.proxy_zone),
            // Sent on from here as the VIP's own: through the tunnel to a member elsewhere.
            set_field(Field::Reg(REG_FROM_TUNNEL), 0, 0xffff_ffff),
            Action::Ct(Box::new(Ct {
                commit: true,
                zone: ct_zone(),
                table: Some(ROUTE),
                nat: Some(Nat {
                    src: Some(true),
                    addr: Some(nat_addr(lb.vip)),
                    ..Nat::default()
                }),
                ..Ct::default()
            })),
        ]),
    ));
    // The members' answers arriving through the tunnel.
    out.push(flow(
        owner,
        LB_VIP,
        115,
        ip_match(
            Match::new()
                .with(Field::Metadata, o.vip_meta.into())
                .with(Field::Reg(REG_FROM_TUNNEL), 1),
            &IpNet::from(lb.vip),
            false,
        ),
        Instructions::apply(vec![
            set_zone(o.proxy_zone),
            translated_back(ct_zone(), LB_FORWARD),
        ]),
    ));
    let (src_port, _) = transport(l.protocol);
    for m in members {
        let answer = ip_match(
            Match::new().with(Field::Reg(REG_CT_ZONE), o.proxy_zone.into()),
            &IpNet::from(m.address),
            true,
        )
        .with(Field::IpProto, l.protocol.into())
        .with(src_port, m.port.into());
        out.push(flow(
            owner,
            LB_FORWARD,
            40,
            answer,
            Instructions::apply(vec![
                set_field(Field::Metadata, o.router.into(), u128::from(u64::MAX)),
                set_field(Field::Reg(REG_FROM_TUNNEL), 0, 0xffff_ffff),
                set_zone(LB_ZONE | patch),
                translated_back(ct_zone(), ROUTE),
            ]),
        ));
    }
}

fn nat_addr(ip: IpAddr) -> NatAddr {
    match ip {
        IpAddr::V4(a) => NatAddr::V4(a, None),
        IpAddr::V6(a) => NatAddr::V6(a, None),
    }
}

/// What the actions before a listener's group change for the switch's hash to choose as the
/// pool asks, and what each bucket puts back. Open vSwitch's datapath hashes a packet for a
/// select group over its IP addresses, protocol and TCP's ports, but not UDP's
/// (`flow_hash_symmetric_l3l4`): with `SOURCE_IP`, TCP's source port is zeroed (held in a
/// register meanwhile); without it, UDP's source port is put in the low bits of the source
/// address (whose bits are held meanwhile), so datagrams of new flows spread.
fn hash_input(protocol: u8, source_ip: bool, vip: IpAddr) -> (Vec<Action>, Vec<Action>) {
    let held = Subfield::range(Field::Reg(REG_SCRATCH[1]), 0, 15);
    let (src_port, _) = transport(protocol);
    let address = if vip.is_ipv6() {
        Field::Ipv6Src
    } else {
        Field::Ipv4Src
    };
    let address_low = Subfield::range(address, 0, 15);
    let keep = |what: Subfield| Action::Move {
        src: what,
        dst: held,
    };
    let back = |what: Subfield| Action::Move {
        src: held,
        dst: what,
    };
    let port = Subfield::whole(src_port);
    match (protocol == 17, source_ip) {
        (false, true) => (
            vec![keep(port), set_field(src_port, 0, 0xffff)],
            vec![back(port)],
        ),
        (true, false) => (
            vec![
                keep(address_low),
                Action::Move {
                    src: port,
                    dst: address_low,
                },
            ],
            vec![back(address_low)],
        ),
        _ => (Vec::new(), Vec::new()),
    }
}

/// A member's bucket: the connection committed translated to it, its MAC in `ct_label`.
fn bucket(ctx: &mut Ctx<'_>, m: &Member, lb: &LoadBalancer, restore: &[Action]) -> Bucket {
    let net = member_network(ctx, m, lb);
    let mac: Mac = ctx.port_with_ip(&net, m.address).map_or(0, |p| p.mac);
    let addr = nat_addr(m.address);
    let mut actions = restore.to_vec();
    actions.push(Action::Ct(Box::new(Ct {
        commit: true,
        zone: ct_zone(),
        table: Some(LB_FORWARD),
        nat: Some(Nat {
            src: Some(false),
            addr: Some(addr),
            ports: Some((m.port, None)),
            ..Nat::default()
        }),
        exec: vec![set_field(
            Field::CtLabel,
            u128::from(mac),
            u128::from(u64::MAX >> 16),
        )],
        ..Ct::default()
    })));
    let mut b = Bucket::new(actions);
    b.weight = m.weight;
    b
}

/// On client network `net`: a translated packet for a member on the network goes to the
/// member's MAC (from `ct_label`), any other to the network's router.
fn forward_flows(
    ctx: &mut Ctx<'_>,
    owner: &Owner,
    net: &str,
    meta: u64,
    vip: IpAddr,
    out: &mut Vec<Flow>,
) {
    let on_net = Match::new().with(Field::Metadata, meta.into());
    let v6 = vip.is_ipv6();
    let subnets: Vec<IpNet> = ctx
        .subnets_on(net)
        .map(|s| s.cidr)
        .filter(|c| matches!(c, IpNet::V6(_)) == v6)
        .collect();
    for cidr in subnets {
        out.push(flow(
            owner,
            LB_FORWARD,
            20,
            ip_match(on_net.clone(), &cidr, false),
            Instructions::apply(vec![Action::Move {
                src: Subfield::range(Field::CtLabel, 0, 47),
                dst: Subfield::whole(Field::EthDst),
            }])
            .goto(next(LB_FORWARD)),
        ));
    }
    let router_mac = ctx.interfaces_on(net).map(|i| i.mac).min();
    if let Some(mac) = router_mac {
        let eth = if v6 { ETH_IPV6 } else { ETH_IPV4 };
        out.push(flow(
            owner,
            LB_FORWARD,
            10,
            on_net.with(Field::EthType, eth),
            Instructions::apply(vec![super::set_mac(Field::EthDst, mac)]).goto(L3_ENTRY),
        ));
    }
}

/// A local member's answers to its health checks go to the agent.
fn probe_answers(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(m) = ctx.member(id) else {
        return;
    };
    let Some(p) = probed(ctx, m) else {
        return;
    };
    let (IpAddr::V4(addr), IpAddr::V4(vip)) = (m.address, p.lb.vip) else {
        return;
    };
    let from_member = Match::new()
        .with(Field::InPort, p.ofport.into())
        .with(Field::EthType, ETH_IPV4)
        .with(Field::Ipv4Src, u32::from(addr).into())
        .with(Field::Ipv4Dst, u32::from(vip).into());
    let answers = match p.monitor.kind {
        MonitorKind::Ping => from_member
            .with(Field::IpProto, IPPROTO_ICMP)
            .with(Field::IcmpType, 0),
        MonitorKind::Tcp | MonitorKind::Http => from_member
            .with(Field::IpProto, 6)
            .with(Field::TcpSrc, m.port.into())
            .with_masked(Field::TcpDst, PROBE_PORTS.into(), PROBE_PORTS.into()),
    };
    out.push(flow(owner, LB_VIP, 200, answers, punt(Punt::HealthReply)));
}

/// A health check this chassis runs: a local member, what to send it and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub member_id: String,
    pub pool_id: String,
    /// The member's port here.
    pub ofport: u32,
    pub member_mac: Mac,
    pub member_ip: std::net::Ipv4Addr,
    pub member_port: u16,
    /// Probes come from the VIP's address, with the MAC the member sees it behind (the VIP
    /// port's on the VIP's network, else its router's on the member's network).
    pub source_ip: std::net::Ipv4Addr,
    pub source_mac: Mac,
    pub monitor: HealthMonitor,
}

/// The health checks this chassis runs: for every member on a local port whose pool has a
/// monitor (administratively up), of an IPv4 load balancer.
pub fn health_checks(topo: &Topology) -> Vec<HealthCheck> {
    let mut ctx = Ctx::new(topo);
    let mut out = Vec::new();
    for m in topo.members.values() {
        let Some(p) = probed(&mut ctx, m) else {
            continue;
        };
        let (IpAddr::V4(member_ip), IpAddr::V4(source_ip)) = (m.address, p.lb.vip) else {
            continue;
        };
        let Some(source_mac) = vip_side_mac(&mut ctx, p.lb, &p.net) else {
            continue;
        };
        out.push(HealthCheck {
            member_id: m.id.clone(),
            pool_id: m.pool_id.clone(),
            ofport: p.ofport,
            member_mac: p.port.mac,
            member_ip,
            member_port: m.port,
            source_ip,
            source_mac,
            monitor: p.monitor.clone(),
        });
    }
    out
}

/// A member probed from this chassis: its pool's monitor (administratively up), its load
/// balancer, its network, and the port here that holds its address, with its OpenFlow port.
struct Probed<'t> {
    monitor: &'t HealthMonitor,
    lb: &'t LoadBalancer,
    net: String,
    port: &'t Port,
    ofport: u32,
}

fn probed<'t>(ctx: &mut Ctx<'t>, m: &Member) -> Option<Probed<'t>> {
    let monitor = ctx
        .pool(&m.pool_id)?
        .healthmonitor_id
        .as_deref()
        .and_then(|h| ctx.health_monitor(h))
        .filter(|h| h.admin_up)?;
    let lb = ctx.load_balancer(&m.loadbalancer_id)?;
    let net = member_network(ctx, m, lb);
    let port = ctx.port_with_ip(&net, m.address)?;
    let ofport = ctx.ofport(&port.id)?;
    Some(Probed {
        monitor,
        lb,
        net,
        port,
        ofport,
    })
}

/// The MAC a member on `net` sees the VIP behind: the VIP port's on the VIP's network, else its
/// network's router's.
fn vip_side_mac(ctx: &mut Ctx<'_>, lb: &LoadBalancer, net: &str) -> Option<Mac> {
    if net == lb.vip_network_id {
        lb.vip_port_id
            .as_deref()
            .and_then(|p| ctx.port(p))
            .map(|p| p.mac)
    } else {
        ctx.interfaces_on(net).map(|i| i.mac).min()
    }
}

/// The actions that send a probe (a frame built by the agent) to a local member's port through
/// its security groups, as if it had arrived for it.
pub fn probe_actions(ofport: u32) -> Vec<Action> {
    vec![
        set_field(Field::Reg(REG_OUT_PORT), ofport.into(), 0xffff_ffff),
        Action::Resubmit {
            port: openflow::field::port::IN_PORT,
            table: Some(ACL_INGRESS),
            ct: false,
        },
    ]
}
