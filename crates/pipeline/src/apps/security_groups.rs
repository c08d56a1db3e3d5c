//! Security groups, as Neutron's Open vSwitch firewall enforces them (tables [`ACL_EGRESS`],
//! [`ACL_EGRESS_STATE`], [`ACL_INGRESS`], [`ACL_INGRESS_STATE`]).
//!
//! A port with port security on a local VIF is filtered: its IP traffic, leaving it (after port
//! security) and reaching it (after the L2 lookup chose it), goes through conntrack in the port's
//! own zone (its OpenFlow port number, in `reg3`), then: invalid packets drop; packets of a
//! connection marked as no longer allowed drop; replies and related packets (ICMP errors) pass; new
//! connections and the originator's further packets pass only if a rule of the port's groups
//! admits them, and are committed. An established connection whose packet no rule admits any more
//! (a rule was removed, a peer left a remote group) is marked in conntrack and dropped, as Neutron
//! does: it is cut within a packet. A port whose groups are stateless (`stateful=false`) skips
//! conntrack: every packet needs a rule, in each direction. DHCP, neighbour discovery and router
//! solicitations bypass the rules, whatever they say. Broadcast and multicast (flooded) frames are
//! delivered without the ingress rules.
//!
//! Rules cost O(ports + rules + remote addresses) flows, not their product: each rule is a
//! conjunctive match of up to three clauses — the filtered port (one flow per port listing every
//! rule that applies to it), the protocol and port range (port ranges as masked matches), and the
//! remote addresses (a prefix, the fixed IPs and allowed address pairs of every member of a remote
//! group on any network or chassis, or an address group). Identical clause flows of several rules
//! are merged by the pipeline into one flow with all their `conjunction` actions.

use std::collections::BTreeMap;

use ipnet::IpNet;
use openflow::action::{Ct, CtZone};
use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match, Subfield};

use super::{
    App, EST, ETH_IPV4, ETH_IPV6, INV, IPPROTO_ICMPV6, IPPROTO_UDP, NEW, OwnerKind, REL, RPL, Spec,
    TRK, ct_state, flow, goto, ip_match, port_ranges,
};
use crate::cookie::{Owner, fnv1a};
use crate::deps::Ctx;
use crate::model::{Kind, Port, Remote, SgRule};
use crate::tables::{
    ACL_EGRESS, ACL_EGRESS_STATE, ACL_INGRESS, ACL_INGRESS_STATE, DELIVER, REG_CT_ZONE,
    REG_OUT_PORT, Register, SFC,
};

pub struct SecurityGroups;

static SPEC: Spec = Spec {
    name: "security-groups",
    tables: &[ACL_EGRESS, ACL_EGRESS_STATE, ACL_INGRESS, ACL_INGRESS_STATE],
    reads: &[Register::OutPort, Register::CtZone],
    writes: &[Register::CtZone],
    owners: &[OwnerKind::Port, OwnerKind::SgRule],
    inputs: &[
        Kind::Network,
        Kind::Port,
        Kind::SecurityGroup,
        Kind::SecurityGroupRule,
        Kind::AddressGroup,
    ],
};

/// `ct_mark` of a connection no rule admits any more.
const MARK_DENIED: u128 = 1;

/// One direction of the filter.
struct Side {
    /// Where a filtered port's IP goes through conntrack.
    entry: u8,
    /// Where the state and the rules decide.
    state: u8,
    /// Where admitted packets continue.
    next: u8,
    /// The field naming the filtered port.
    port: Field,
    /// The remote address is the packet's source (ingress) or destination (egress).
    remote_is_source: bool,
}

const EGRESS: Side = Side {
    entry: ACL_EGRESS,
    state: ACL_EGRESS_STATE,
    next: SFC,
    port: Field::InPort,
    remote_is_source: false,
};

const INGRESS: Side = Side {
    entry: ACL_INGRESS,
    state: ACL_INGRESS_STATE,
    next: DELIVER,
    port: Field::Reg(REG_OUT_PORT),
    remote_is_source: true,
};

fn side(ingress: bool) -> &'static Side {
    if ingress { &INGRESS } else { &EGRESS }
}

fn zone() -> CtZone {
    CtZone::Field(Subfield::range(Field::Reg(REG_CT_ZONE), 0, 15))
}

/// The conjunction id of a rule (a hash of its id; never 0).
fn conj_id(rule: &str) -> u32 {
    (fnv1a(rule) as u32).max(1)
}

/// How many clauses a rule's conjunction has: the port, the protocol, and the remote if any.
fn clauses(rule: &SgRule) -> u8 {
    if rule.remote == Remote::Any { 2 } else { 3 }
}

fn conjunction(rule: &SgRule, clause: u8) -> Action {
    Action::Conjunction {
        id: conj_id(&rule.id),
        clause,
        n_clauses: clauses(rule),
    }
}

/// The matches of a rule's protocol clause.
fn protocol_matches(rule: &SgRule) -> Vec<Match> {
    let eth = if rule.ipv6 { ETH_IPV6 } else { ETH_IPV4 };
    let base = Match::new().with(Field::EthType, eth);
    let Some(proto) = rule.protocol else {
        return vec![base];
    };
    let base = base.with(Field::IpProto, proto.into());
    let port_field = match proto {
        6 => Some(Field::TcpDst),
        17 => Some(Field::UdpDst),
        132 => Some(Field::SctpDst),
        _ => None,
    };
    if let Some(field) = port_field {
        let Some(lo) = rule.port_min else {
            return vec![base];
        };
        let hi = rule.port_max.unwrap_or(lo);
        if lo > hi {
            return Vec::new();
        }
        return port_ranges(lo, hi)
            .into_iter()
            .map(|(v, m)| base.clone().with_masked(field, v.into(), m.into()))
            .collect();
    }
    let (ty, code) = match (proto, rule.ipv6) {
        (1, false) => (Field::IcmpType, Field::IcmpCode),
        (58, true) => (Field::Icmpv6Type, Field::Icmpv6Code),
        _ => return vec![base],
    };
    let mut m = base;
    if let Some(t) = rule.port_min.filter(|t| *t <= 255) {
        m = m.with(ty, t.into());
        if let Some(c) = rule.port_max.filter(|c| *c <= 255) {
            m = m.with(code, c.into());
        }
    }
    vec![m]
}

/// The remote addresses of a rule that are its own (a prefix, an address group), of its family.
/// A remote group's addresses are its members': each member contributes them ([`member_flows`]).
fn remote_addresses(ctx: &mut Ctx<'_>, rule: &SgRule) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = match &rule.remote {
        Remote::Any | Remote::Group(_) => Vec::new(),
        Remote::Prefix(p) => vec![*p],
        Remote::AddressGroup(a) => ctx
            .address_group(a)
            .map(|a| a.addresses.clone())
            .unwrap_or_default(),
    };
    out.retain(|n| matches!(n, IpNet::V6(_)) == rule.ipv6);
    out.sort();
    out.dedup();
    out
}

/// A port's addresses as a remote: its fixed IPs and allowed address pairs.
fn addresses_of(port: &Port) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = port
        .ips
        .iter()
        .map(|ip| IpNet::from(*ip))
        .chain(port.pairs.iter().map(|(net, _)| *net))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A filtered port: port security, up, on a carried network, on a local VIF.
fn filtered<'t>(ctx: &mut Ctx<'t>, id: &str) -> Option<(&'t Port, u32)> {
    let port = ctx.port(id).filter(|p| p.admin_up && p.port_security)?;
    ctx.carried(&port.network_id)?;
    let ofport = ctx.ofport(id)?;
    Some((port, ofport))
}

/// Whether a port's groups track connections (a group not known yet counts as stateful, the
/// default).
fn stateful(ctx: &mut Ctx<'_>, port: &Port) -> bool {
    port.security_groups
        .iter()
        .all(|g| ctx.security_group(g).is_none_or(|g| g.stateful))
}

impl SecurityGroups {
    /// A filtered port's way into conntrack (or, stateless, straight to the rules), and the
    /// port clause of every rule of its groups.
    fn port_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
        Self::member_flows(ctx, owner, id, out);
        let Some((port, ofport)) = filtered(ctx, id) else {
            return;
        };
        let stateful = stateful(ctx, port);
        for s in [&EGRESS, &INGRESS] {
            for eth in [ETH_IPV4, ETH_IPV6] {
                let m = Match::new()
                    .with(s.port, ofport.into())
                    .with(Field::EthType, eth);
                let ins = if stateful {
                    Instructions::apply(vec![
                        set_field(Field::Reg(REG_CT_ZONE), ofport.into(), 0xffff_ffff),
                        Action::Ct(Box::new(Ct {
                            zone: zone(),
                            table: Some(s.state),
                            ..Ct::default()
                        })),
                    ])
                } else {
                    goto(s.state)
                };
                out.push(flow(owner, s.entry, 100, m, ins));
            }
        }
        let mut conj: BTreeMap<bool, Vec<Action>> = BTreeMap::new();
        for group in &port.security_groups {
            for rule in ctx.rules_of(group) {
                conj.entry(rule.ingress)
                    .or_default()
                    .push(conjunction(rule, 1));
            }
        }
        for (ingress, actions) in conj {
            let s = side(ingress);
            let m = Match::new().with(s.port, ofport.into());
            out.push(flow(owner, s.state, 100, m, Instructions::apply(actions)));
        }
    }

    /// A port's addresses as the remote clause of every rule that names one of its groups as
    /// remote, wherever the port is: so a port joining or leaving a group costs its own flows
    /// only, whatever the group's size.
    fn member_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
        let Some(port) = ctx.port(id) else {
            return;
        };
        let addresses = addresses_of(port);
        let mut clauses: BTreeMap<(bool, IpNet), Vec<Action>> = BTreeMap::new();
        for group in &port.security_groups {
            for rule in ctx.rules_naming(group) {
                for net in addresses
                    .iter()
                    .filter(|n| matches!(n, IpNet::V6(_)) == rule.ipv6)
                {
                    clauses
                        .entry((rule.ingress, *net))
                        .or_default()
                        .push(conjunction(rule, 3));
                }
            }
        }
        for ((ingress, net), mut actions) in clauses {
            let s = side(ingress);
            actions.sort_by_key(|a| match a {
                Action::Conjunction { id, .. } => *id,
                _ => 0,
            });
            actions.dedup();
            let m = ip_match(Match::new(), &net, s.remote_is_source);
            out.push(flow(owner, s.state, 100, m, Instructions::apply(actions)));
        }
    }

    /// A rule's protocol clause, its own remote addresses, and what its conjunction does (it
    /// completes only for a port that names it: see [`SecurityGroups::port_flows`]).
    fn rule_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
        let Some(rule) = ctx.rule(id) else {
            return;
        };
        let s = side(rule.ingress);
        let stateful = ctx.security_group(&rule.group).is_none_or(|g| g.stateful);
        for m in protocol_matches(rule) {
            let ins = Instructions::apply(vec![conjunction(rule, 2)]);
            out.push(flow(owner, s.state, 100, m, ins));
        }
        if rule.remote != Remote::Any {
            for net in remote_addresses(ctx, rule) {
                let m = ip_match(Match::new(), &net, s.remote_is_source);
                let ins = Instructions::apply(vec![conjunction(rule, 3)]);
                out.push(flow(owner, s.state, 100, m, ins));
            }
        }
        // conntrack needs the IP ethertype in the match.
        let eth = if rule.ipv6 { ETH_IPV6 } else { ETH_IPV4 };
        let admitted = Match::new()
            .with(Field::ConjId, conj_id(&rule.id).into())
            .with(Field::EthType, eth);
        let mut ins = goto(s.next);
        if stateful {
            ins.apply = vec![Action::Ct(Box::new(Ct {
                commit: true,
                zone: zone(),
                ..Ct::default()
            }))];
        }
        out.push(flow(owner, s.state, 100, admitted, ins));
    }
}

/// The flows every filtered port shares: the bypasses and the connection states.
fn shared_flows() -> Vec<Flow> {
    let owner = Owner::Static;
    let mut out = Vec::new();
    let udp = |eth: u128, src: u128, dst: u128| {
        Match::new()
            .with(Field::EthType, eth)
            .with(Field::IpProto, IPPROTO_UDP)
            .with(Field::UdpSrc, src)
            .with(Field::UdpDst, dst)
    };
    let icmpv6 = |ty: u128| {
        Match::new()
            .with(Field::EthType, ETH_IPV6)
            .with(Field::IpProto, IPPROTO_ICMPV6)
            .with(Field::Icmpv6Type, ty)
    };
    // What a VM may always send: DHCP, DHCPv6, router and neighbour solicitations and
    // advertisements; and receive: DHCP and DHCPv6 answers, router advertisements, neighbour
    // solicitations and advertisements.
    let egress = [
        udp(ETH_IPV4, 68, 67),
        udp(ETH_IPV6, 546, 547),
        icmpv6(133),
        icmpv6(135),
        icmpv6(136),
    ];
    let ingress = [
        udp(ETH_IPV4, 67, 68),
        udp(ETH_IPV6, 547, 546),
        icmpv6(134),
        icmpv6(135),
        icmpv6(136),
    ];
    for (s, bypass) in [(&EGRESS, egress), (&INGRESS, ingress)] {
        for m in bypass {
            out.push(flow(&owner, s.entry, 110, m, goto(s.next)));
        }
        let mut denied = ct_state(TRK, TRK);
        denied = denied.with_masked(Field::CtMark, MARK_DENIED, MARK_DENIED);
        let mark_denied = Instructions::apply(vec![Action::Ct(Box::new(Ct {
            commit: true,
            zone: zone(),
            exec: vec![set_field(Field::CtMark, MARK_DENIED, MARK_DENIED)],
            ..Ct::default()
        }))]);
        let established = ct_state(TRK | EST, TRK | EST | RPL | NEW);
        let states = [
            (200, ct_state(TRK | INV, TRK | INV), Instructions::default()),
            (190, denied, Instructions::default()),
            (
                180,
                ct_state(TRK | EST | RPL, TRK | EST | RPL),
                goto(s.next),
            ),
            (170, ct_state(TRK | REL, TRK | REL), goto(s.next)),
            // conntrack needs the IP ethertype in the match: one flow per family.
            (
                50,
                established.clone().with(Field::EthType, ETH_IPV4),
                mark_denied.clone(),
            ),
            (50, established.with(Field::EthType, ETH_IPV6), mark_denied),
        ];
        for (priority, m, ins) in states {
            out.push(flow(&owner, s.state, priority, m, ins));
        }
    }
    out
}

impl App for SecurityGroups {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn fixed(&self) -> Vec<Flow> {
        shared_flows()
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::Port(id) => Self::port_flows(ctx, owner, id, out),
            Owner::SgRule(id) => Self::rule_flows(ctx, owner, id, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_cover_exactly_the_range() {
        for (lo, hi) in [(22, 22), (8001, 8020), (0, 65535), (1, 1023), (1000, 1999)] {
            let parts = port_ranges(lo, hi);
            for p in 0..=65535u16 {
                let hits = parts.iter().filter(|(v, m)| p & m == *v).count();
                assert_eq!(hits, usize::from((lo..=hi).contains(&p)), "{lo}-{hi}: {p}");
            }
        }
        assert_eq!(port_ranges(0, 65535), vec![(0, 0)]);
    }
}
