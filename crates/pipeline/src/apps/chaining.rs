//! Service function chaining (networking-sfc's port chains; tables [`SFC`], [`SFC_ARRIVAL`]), on
//! every chassis, as Dragonflow did it.
//!
//! A chain is an ordered list of hops (its port pair groups); each hop's pairs share its traffic,
//! one connection on one pair (an OpenFlow select group over the pairs, weights as bucket
//! weights: the switch's per-connection hash). Traffic is classified where it enters, after the
//! source port's own checks (port security, egress security groups): a packet from a
//! classifier's logical source port that matches it goes to the first hop instead of on. A
//! pair's function gets it at its ingress port and gives it back at its egress port: there the
//! pipeline knows the chain and the hop from the port (SF-unaware functions, correlation none,
//! get the packet exactly as it was sent) or from the MPLS label it returns (SF-aware ones,
//! correlation `mpls`: they get the packet labelled); the packet goes to the next hop, and after
//! the last one on its way as if sent from there. A pair on another chassis is reached through
//! the tunnel with the chaining tunnel id ([`SFC_VNI`], which no network has), the packet
//! labelled to say which pair; the chassis there takes the label off (for SF-unaware functions)
//! and delivers it ([`SFC_ARRIVAL`]). A symmetric chain also classifies the replies at its
//! classifiers' logical destination ports (addresses and ports swapped) and steers them through
//! the hops in reverse, in at the pairs' egress ports, back at their ingress ports; the switch's
//! hash is symmetric, so a connection's replies take the pairs its packets took.
//!
//! The label ([`label`], 20 bits): the chain's `chain_id` (11 bits: chains numbered above 2 047
//! get no flows), whether the packet is IPv6 (1), whether it goes the reverse way (1), the hop
//! (4: up to 15 hops) and the pair in its group (3: up to 8 pairs).
//!
//! A port pair whose group two chains share steers for the first of them (by id) when its
//! function is SF-unaware: the port alone cannot say which chain a packet belongs to.

use openflow::message::{Bucket, Group, GroupType};
use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match};

use super::{App, ETH_IPV4, ETH_IPV6, OwnerKind, Spec, flow, goto, ip_match, output, port_ranges};
use crate::cookie::Owner;
use crate::deps::Ctx;
use crate::model::{FlowClassifier, Kind, PortPair};
use crate::tables::{SFC, SFC_ARRIVAL, SFC_VNI, next};

pub struct Chaining;

static SPEC: Spec = Spec {
    name: "chaining",
    tables: &[SFC, SFC_ARRIVAL],
    reads: &[],
    writes: &[],
    owners: &[OwnerKind::PortChain],
    inputs: &[
        Kind::Network,
        Kind::Port,
        Kind::Chassis,
        Kind::PortPair,
        Kind::PortPairGroup,
        Kind::FlowClassifier,
        Kind::PortChain,
    ],
};

const ETH_MPLS: u16 = 0x8847;
/// The highest chain number the label carries.
pub const MAX_CHAIN: u32 = 0x7ff;
/// The most hops a chain may have, and pairs a hop.
const MAX_HOPS: usize = 15;
const MAX_PAIRS: usize = 8;

/// The MPLS label of a chain's packet at a hop's pair.
pub fn label(chain: u32, ipv6: bool, reverse: bool, hop: usize, pair: usize) -> u32 {
    ((chain & MAX_CHAIN) << 9)
        | (u32::from(ipv6) << 8)
        | (u32::from(reverse) << 7)
        | ((hop as u32 & 0xf) << 3)
        | (pair as u32 & 0x7)
}

/// The group of a chain's hop in one direction and family: bit 31 (load balancers' groups are
/// below it), then the label's chain, family, direction and hop bits.
fn group_id(chain: u32, ipv6: bool, reverse: bool, hop: usize) -> u32 {
    0x8000_0000 | (label(chain, ipv6, reverse, hop, 0) >> 3)
}

/// A pair where a direction of a chain goes in and comes back, on this chassis or elsewhere.
struct Stop<'t> {
    pair: &'t PortPair,
    /// Where the packet goes in: the local port, or the chassis' tunnel address.
    into: Into,
    /// Where it comes back, if that port is here.
    back: Option<u32>,
}

enum Into {
    Local(u32),
    Remote(std::net::Ipv4Addr),
    Nowhere,
}

impl App for Chaining {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        if let Owner::PortChain(id) = owner {
            chain_flows(ctx, owner, id, out);
        }
    }
}

/// The pairs of each hop of a chain, or `None` while one is missing or a limit is exceeded.
fn hops<'t>(ctx: &mut Ctx<'t>, groups: &[String]) -> Option<Vec<Vec<&'t PortPair>>> {
    if groups.is_empty() || groups.len() > MAX_HOPS {
        return None;
    }
    let mut out = Vec::new();
    for g in groups {
        let group = ctx.port_pair_group(g)?;
        let pairs: Option<Vec<&PortPair>> =
            group.port_pairs.iter().map(|p| ctx.port_pair(p)).collect();
        let pairs = pairs?;
        if pairs.is_empty() || pairs.len() > MAX_PAIRS {
            return None;
        }
        out.push(pairs);
    }
    Some(out)
}

/// Where a port is: here (its OpenFlow port), on another chassis, or nowhere known.
fn place(ctx: &mut Ctx<'_>, port: &str) -> Into {
    let Some(p) = ctx.port(port) else {
        return Into::Nowhere;
    };
    if let Some(o) = ctx.ofport(port) {
        return Into::Local(o);
    }
    match ctx.remote_chassis(p) {
        Some(c) => Into::Remote(c.tunnel_ip),
        None => Into::Nowhere,
    }
}

fn chain_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(chain) = ctx
        .port_chain(id)
        .filter(|c| (1..=MAX_CHAIN).contains(&c.number))
    else {
        return;
    };
    let Some(hops) = hops(ctx, &chain.groups) else {
        return;
    };
    let classifiers: Vec<&FlowClassifier> = chain
        .classifiers
        .iter()
        .filter_map(|f| ctx.flow_classifier(f))
        .collect();
    let tunnel = ctx.tunnel();
    let directions: &[bool] = if chain.symmetric {
        &[false, true]
    } else {
        &[false]
    };
    for &reverse in directions {
        // The hops in this direction's order, each pair with where it goes in and comes back.
        let mut way: Vec<Vec<Stop<'_>>> = Vec::new();
        for pairs in &hops {
            let mut stops = Vec::new();
            for pair in pairs {
                let (into, back) = if reverse {
                    (&pair.egress, &pair.ingress)
                } else {
                    (&pair.ingress, &pair.egress)
                };
                let into = place(ctx, into);
                let back = match place(ctx, back) {
                    Into::Local(o) => Some(o),
                    _ => None,
                };
                stops.push(Stop { pair, into, back });
            }
            way.push(stops);
        }
        if reverse {
            way.reverse();
        }
        for ipv6 in [false, true] {
            let mine: Vec<&&FlowClassifier> =
                classifiers.iter().filter(|c| c.ipv6 == ipv6).collect();
            if mine.is_empty() {
                continue;
            }
            let n = way.len();
            for (k, stops) in way.iter().enumerate() {
                let hop = k + 1;
                ctx.group(steering_group(
                    chain.number,
                    ipv6,
                    reverse,
                    hop,
                    stops,
                    tunnel,
                ));
                // Into the pairs here that came through the tunnel.
                for (i, stop) in stops.iter().enumerate() {
                    if let Into::Local(o) = stop.into {
                        let l = label(chain.number, ipv6, reverse, hop, i);
                        let m = Match::new()
                            .with(Field::EthType, u128::from(ETH_MPLS))
                            .with(Field::MplsLabel, l.into());
                        let mut actions = Vec::new();
                        if !stop.pair.mpls {
                            actions.push(Action::PopMpls(eth(ipv6)));
                        }
                        actions.push(output(o));
                        out.push(flow(
                            owner,
                            SFC_ARRIVAL,
                            100,
                            m,
                            Instructions::apply(actions),
                        ));
                    }
                }
                // Back from the pairs here: on to the next hop, or on the packet's way.
                let then = if hop < n {
                    Instructions::apply(vec![Action::Group(group_id(
                        chain.number,
                        ipv6,
                        reverse,
                        hop + 1,
                    ))])
                } else {
                    goto(next(SFC))
                };
                for (i, stop) in stops.iter().enumerate() {
                    let Some(back) = stop.back else {
                        continue;
                    };
                    let from = Match::new().with(Field::InPort, back.into());
                    if stop.pair.mpls {
                        let l = label(chain.number, ipv6, reverse, hop, i);
                        let m = from
                            .with(Field::EthType, u128::from(ETH_MPLS))
                            .with(Field::MplsLabel, l.into());
                        let mut ins = then.clone();
                        ins.apply.insert(0, Action::PopMpls(eth(ipv6)));
                        out.push(flow(owner, SFC, 100, m, ins));
                    } else {
                        let m = from.with(Field::EthType, u128::from(eth(ipv6)));
                        out.push(flow(owner, SFC, 100, m, then.clone()));
                    }
                }
            }
            // Classified where the traffic enters.
            let first = Instructions::apply(vec![Action::Group(group_id(
                chain.number,
                ipv6,
                reverse,
                1,
            ))]);
            for c in mine {
                let source = if reverse {
                    c.destination_port_id.as_deref()
                } else {
                    c.source_port_id.as_deref()
                };
                let Some(ofport) = source.and_then(|p| ctx.ofport(p)) else {
                    continue;
                };
                let from = Match::new().with(Field::InPort, ofport.into());
                for m in classified(from, c, reverse) {
                    out.push(flow(owner, SFC, 90, m, first.clone()));
                }
            }
        }
    }
}

fn eth(ipv6: bool) -> u16 {
    if ipv6 {
        ETH_IPV6 as u16
    } else {
        ETH_IPV4 as u16
    }
}

/// A hop's select group: each pair's bucket delivers the packet to its pair, here or through the
/// tunnel, labelled as the pair needs it.
fn steering_group(
    chain: u32,
    ipv6: bool,
    reverse: bool,
    hop: usize,
    stops: &[Stop<'_>],
    tunnel: Option<u32>,
) -> Group {
    let buckets = stops
        .iter()
        .enumerate()
        .map(|(i, stop)| {
            let l = label(chain, ipv6, reverse, hop, i);
            let labelled = vec![
                Action::PushMpls(ETH_MPLS),
                set_field(Field::MplsLabel, l.into(), 0xf_ffff),
            ];
            let mut actions = Vec::new();
            match (&stop.into, tunnel) {
                (Into::Local(o), _) => {
                    if stop.pair.mpls {
                        actions.extend(labelled);
                    }
                    actions.push(output(*o));
                }
                (Into::Remote(ip), Some(t)) => {
                    actions.extend(labelled);
                    super::to_tunnel(t, SFC_VNI, *ip, &mut actions);
                }
                // Nowhere to send it: the bucket drops.
                _ => {}
            }
            let mut b = Bucket::new(actions);
            b.weight = stop.pair.weight;
            b
        })
        .collect();
    Group {
        group_id: group_id(chain, ipv6, reverse, hop),
        group_type: GroupType::Select,
        buckets,
    }
}

/// The matches of a classifier (after `from`): its protocol, prefixes and port ranges (ranges as
/// masked matches), swapped for the reverse way.
fn classified(from: Match, c: &FlowClassifier, reverse: bool) -> Vec<Match> {
    let (src, dst, sports, dports) = if reverse {
        (
            &c.destination_prefix,
            &c.source_prefix,
            c.destination_ports,
            c.source_ports,
        )
    } else {
        (
            &c.source_prefix,
            &c.destination_prefix,
            c.source_ports,
            c.destination_ports,
        )
    };
    let mut m = from.with(Field::EthType, if c.ipv6 { ETH_IPV6 } else { ETH_IPV4 });
    if let Some(p) = src {
        m = ip_match(m, p, true);
    }
    if let Some(p) = dst {
        m = ip_match(m, p, false);
    }
    let Some(proto) = c.protocol else {
        return vec![m];
    };
    m = m.with(Field::IpProto, proto.into());
    let (sf, df) = match proto {
        6 => (Field::TcpSrc, Field::TcpDst),
        17 => (Field::UdpSrc, Field::UdpDst),
        132 => (Field::SctpSrc, Field::SctpDst),
        _ => return vec![m],
    };
    // Each side's range as masked matches; no range: any port (one match without the field).
    let ranges = |r: Option<(u16, u16)>| -> Vec<Option<(u16, u16)>> {
        match r {
            Some((lo, hi)) if lo <= hi => port_ranges(lo, hi).into_iter().map(Some).collect(),
            Some(_) => Vec::new(),
            None => vec![None],
        }
    };
    let mut out = Vec::new();
    for s in ranges(sports) {
        for d in ranges(dports) {
            let mut x = m.clone();
            if let Some((v, mask)) = s {
                x = x.with_masked(sf, v.into(), mask.into());
            }
            if let Some((v, mask)) = d {
                x = x.with_masked(df, v.into(), mask.into());
            }
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_groups_keep_their_fields_apart() {
        assert_eq!(label(3, false, false, 1, 0), (3 << 9) | (1 << 3));
        assert_eq!(label(MAX_CHAIN, true, true, 15, 7), 0xf_ffff);
        assert_ne!(group_id(3, false, false, 1), group_id(3, false, true, 1));
        assert!(group_id(1, false, false, 1) >= 0x8000_0000);
    }
}
