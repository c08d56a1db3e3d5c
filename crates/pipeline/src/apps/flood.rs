//! Flooding (table [`FLOOD`]): broadcast, multicast and unknown unicast go to every local VIF of
//! the network and, for packets sent on this chassis, through the tunnel to every other chassis
//! (that is up) with ports bound on the network, or onto the physical network of a provider
//! network; packets that came from a tunnel or a physical network go to local VIFs only.
//!
//! A network's two flood flows are assembled from contributions, so that a port's change costs
//! the port alone, whatever the network's size: the network gives each flow its match and what
//! comes last (onto the physical network), each admin-up port its own part (its local VIF's
//! output, or the tunnel to its chassis). The pipeline merges them ([`Collected`]): outputs to
//! local VIFs by port number, then one tunnel output per remote chassis by address, then the
//! network's actions — the one flow the network would compute over all its ports.

use std::collections::BTreeMap;

use openflow::{Action, Field, Flow, Instructions, Match};

use super::{App, OwnerKind, Spec, flow, output, to_physical, to_tunnel};
use crate::cookie::Owner;
use crate::deps::{Ctx, Wire};
use crate::model::Kind;
use crate::tables::{FLOOD, REG_FROM_TUNNEL, Register};

pub struct Flood;

static SPEC: Spec = Spec {
    name: "flood",
    tables: &[FLOOD],
    reads: &[Register::Metadata, Register::FromTunnel],
    writes: &[],
    owners: &[OwnerKind::Network, OwnerKind::Port],
    inputs: &[Kind::Network, Kind::Port, Kind::Chassis, Kind::ChassisUp],
};

/// The match of a network's flood flows: from this chassis (priority 100), from a tunnel or the
/// physical network (110).
fn matches(meta: u64) -> (Match, Match) {
    let this_net = Match::new().with(Field::Metadata, meta.into());
    let from_tunnel = this_net.clone().with(Field::Reg(REG_FROM_TUNNEL), 1);
    (this_net, from_tunnel)
}

impl App for Flood {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::Network(id) => {
                let (Some(meta), Some(wire)) = (ctx.carried(id), ctx.wire(id)) else {
                    return;
                };
                let (this_net, from_tunnel) = matches(meta);
                out.push(flow(
                    owner,
                    FLOOD,
                    110,
                    from_tunnel,
                    Instructions::apply(vec![]),
                ));
                let mut last = Vec::new();
                if let Wire::Physical { patch, vlan } = wire {
                    to_physical(patch, vlan, &mut last);
                }
                out.push(flow(owner, FLOOD, 100, this_net, Instructions::apply(last)));
            }
            Owner::Port(id) => {
                let Some(port) = ctx.port(id).filter(|p| p.admin_up) else {
                    return;
                };
                let (Some(meta), Some(wire)) =
                    (ctx.carried(&port.network_id), ctx.wire(&port.network_id))
                else {
                    return;
                };
                let (this_net, from_tunnel) = matches(meta);
                if let Some(ofport) = ctx.ofport(id) {
                    let local = Instructions::apply(vec![output(ofport)]);
                    out.push(flow(owner, FLOOD, 110, from_tunnel, local.clone()));
                    out.push(flow(owner, FLOOD, 100, this_net.clone(), local));
                }
                if let Wire::Tunnel(vni) = wire
                    && let Some(chassis) = ctx.remote_chassis(port)
                    && let Some(tunnel) = ctx.tunnel()
                {
                    let mut actions = Vec::new();
                    to_tunnel(tunnel, vni, chassis.tunnel_ip, &mut actions);
                    out.push(flow(
                        owner,
                        FLOOD,
                        100,
                        this_net,
                        Instructions::apply(actions),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// Where a contribution goes in the merged flow: local outputs by port number, then tunnels by
/// the remote chassis' address, then anything else.
fn order(actions: &[Action]) -> (u8, u128) {
    match actions {
        [Action::Output { port, .. }] => (0, u128::from(*port)),
        [
            Action::SetField {
                field: Field::TunDst,
                value,
                ..
            },
            ..,
        ] => (1, *value),
        _ => (2, 0),
    }
}

/// A distinct contribution and how many owners give it.
type Counted = (Vec<Action>, usize);

/// The contributions to one flood flow, merged as they come and go: each distinct port part
/// once (several ports on one remote chassis give one tunnel output), counted, in [`order`];
/// and the network's part, which makes the flow exist (two networks with one identity: the
/// first network's).
#[derive(Debug, Clone, Default)]
pub(crate) struct Collected {
    bases: BTreeMap<Owner, Vec<Action>>,
    parts: BTreeMap<(u8, u128), Vec<Counted>>,
}

impl Collected {
    /// Adds one owner's contribution; returns whether the merged flow may have changed.
    pub(crate) fn add(&mut self, owner: &Owner, actions: &[Action]) -> bool {
        if matches!(owner, Owner::Network(_)) {
            self.bases.insert(owner.clone(), actions.to_vec());
            return true;
        }
        let same = self.parts.entry(order(actions)).or_default();
        if let Some(part) = same.iter_mut().find(|(a, _)| a == actions) {
            part.1 += 1;
            return false;
        }
        same.push((actions.to_vec(), 1));
        // One place per contribution whatever the order they came in (never two in practice).
        same.sort_by_cached_key(|(a, _)| format!("{a:?}"));
        true
    }

    /// Takes one owner's contribution away; returns whether the merged flow may have changed.
    pub(crate) fn remove(&mut self, owner: &Owner, actions: &[Action]) -> bool {
        if matches!(owner, Owner::Network(_)) {
            return self.bases.remove(owner).is_some();
        }
        let key = order(actions);
        let Some(same) = self.parts.get_mut(&key) else {
            return false;
        };
        let Some(i) = same.iter().position(|(a, _)| a == actions) else {
            return false;
        };
        same[i].1 -= 1;
        if same[i].1 > 0 {
            return false;
        }
        same.remove(i);
        if same.is_empty() {
            self.parts.remove(&key);
        }
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bases.is_empty() && self.parts.is_empty()
    }

    /// The merged flow of `(table, priority, match)`, if the network gives it.
    pub(crate) fn flow(&self, table: u8, priority: u16, m: Match) -> Option<Flow> {
        let (owner, last) = self.bases.iter().next()?;
        let actions: Vec<Action> = self
            .parts
            .values()
            .flatten()
            .flat_map(|(a, _)| a.iter().cloned())
            .chain(last.iter().cloned())
            .collect();
        Some(flow(
            owner,
            table,
            priority,
            m,
            Instructions::apply(actions),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn tunnel(ip: Ipv4Addr) -> Vec<Action> {
        let mut a = Vec::new();
        to_tunnel(1, 5, ip, &mut a);
        a
    }

    #[test]
    fn contributions_merge_in_one_order_and_count() {
        let net = Owner::Network("n".into());
        let (p1, p2, p3) = (
            Owner::Port("p1".into()),
            Owner::Port("p2".into()),
            Owner::Port("p3".into()),
        );
        let far = tunnel(Ipv4Addr::new(192, 168, 0, 9));
        let near = tunnel(Ipv4Addr::new(192, 168, 0, 2));
        let mut c = Collected::default();
        assert!(c.add(&p1, &far));
        assert!(
            c.flow(FLOOD, 100, Match::new()).is_none(),
            "no network, no flow"
        );
        assert!(c.add(&net, &[output(40)]));
        assert!(
            !c.add(&p2, &far),
            "a second port on one chassis changes nothing"
        );
        assert!(c.add(&p3, &[output(7)]));
        assert!(c.add(&p2, &near));
        let f = c.flow(FLOOD, 100, Match::new()).unwrap();
        let want: Vec<Action> = std::iter::once(output(7))
            .chain(near.clone())
            .chain(far.clone())
            .chain([output(40)])
            .collect();
        assert_eq!(f.instructions.apply, want);
        assert_eq!(f.cookie, net.cookie());
        assert!(!c.remove(&p1, &far));
        assert!(c.remove(&p2, &far));
        assert!(c.remove(&p2, &near));
        assert!(c.remove(&p3, &[output(7)]));
        assert!(c.remove(&net, &[output(40)]));
        assert!(c.is_empty());
    }
}
