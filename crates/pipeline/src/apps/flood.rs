//! Flooding (table [`FLOOD`]): broadcast, multicast and unknown unicast go to every local VIF of
//! the network and, for packets sent on this chassis, through the tunnel to every other chassis
//! (that is up) with ports bound on the network, or onto the physical network of a provider
//! network; packets that came from a tunnel or a physical network go to local VIFs only.

use std::net::Ipv4Addr;

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
    owners: &[OwnerKind::Network],
    inputs: &[Kind::Network, Kind::Port, Kind::Chassis, Kind::ChassisUp],
};

impl App for Flood {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        let Owner::Network(id) = owner else {
            return;
        };
        let (Some(meta), Some(wire)) = (ctx.carried(id), ctx.wire(id)) else {
            return;
        };
        let mut local: Vec<u32> = Vec::new();
        let mut remotes: Vec<Ipv4Addr> = Vec::new();
        let tunnelled = matches!(wire, Wire::Tunnel(_));
        for p in ctx.ports_on(id).filter(|p| p.admin_up) {
            local.extend(ctx.ofport(&p.id));
            if tunnelled {
                remotes.extend(ctx.remote_chassis(p).map(|c| c.tunnel_ip));
            }
        }
        local.sort_unstable();
        remotes.sort_unstable();
        remotes.dedup();
        let local: Vec<Action> = local.into_iter().map(output).collect();
        let this_net = Match::new().with(Field::Metadata, meta.into());
        let from_tunnel = this_net.clone().with(Field::Reg(REG_FROM_TUNNEL), 1);
        out.push(flow(
            owner,
            FLOOD,
            110,
            from_tunnel,
            Instructions::apply(local.clone()),
        ));
        let mut all = local;
        match wire {
            Wire::Tunnel(vni) => {
                if let Some(tunnel) = ctx.tunnel() {
                    for ip in remotes {
                        to_tunnel(tunnel, vni, ip, &mut all);
                    }
                }
            }
            Wire::Physical { patch, vlan } => to_physical(patch, vlan, &mut all),
        }
        out.push(flow(owner, FLOOD, 100, this_net, Instructions::apply(all)));
    }
}
