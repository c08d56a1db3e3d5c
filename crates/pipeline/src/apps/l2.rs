//! L2 lookup (table [`L2`]): a frame for a port's MAC is output to its local VIF, or, if it did not
//! come from a tunnel, sent through the tunnel with the network's VNI to the chassis the port is
//! bound to (if that chassis is up). Anything else on a network goes to flooding. A MAC two ports
//! claim on one network gets no flow (the frame is flooded) until only one claims it.

use openflow::{Field, Flow, Instructions, Match};

use super::{App, OwnerKind, Spec, flow, goto, output, to_tunnel};
use crate::cookie::Owner;
use crate::deps::Ctx;
use crate::model::Kind;
use crate::tables::{FLOOD, L2, REG_FROM_TUNNEL, Register};

pub struct L2Lookup;

static SPEC: Spec = Spec {
    name: "l2",
    tables: &[L2],
    reads: &[Register::Metadata, Register::FromTunnel],
    writes: &[],
    owners: &[OwnerKind::Port, OwnerKind::Network],
    inputs: &[Kind::Network, Kind::Port, Kind::Chassis, Kind::ChassisUp],
};

impl App for L2Lookup {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::Port(id) => {
                let Some(port) = ctx.port(id).filter(|p| p.admin_up) else {
                    return;
                };
                let Some(vni) = ctx.carried(&port.network_id) else {
                    return;
                };
                if !ctx.sole_mac(port) {
                    return;
                }
                let dst = Match::new()
                    .with(Field::Metadata, vni.into())
                    .with(Field::EthDst, port.mac.into());
                if let Some(ofport) = ctx.ofport(id) {
                    let deliver = Instructions::apply(vec![output(ofport)]);
                    out.push(flow(owner, L2, 100, dst, deliver));
                } else if let Some(chassis) = ctx.remote_chassis(port)
                    && let Some(tunnel) = ctx.tunnel()
                {
                    let mut actions = Vec::new();
                    to_tunnel(tunnel, vni, chassis.tunnel_ip, &mut actions);
                    let m = dst.with(Field::Reg(REG_FROM_TUNNEL), 0);
                    out.push(flow(owner, L2, 100, m, Instructions::apply(actions)));
                }
            }
            Owner::Network(id) => {
                if let Some(vni) = ctx.carried(id) {
                    let m = Match::new().with(Field::Metadata, vni.into());
                    out.push(flow(owner, L2, 10, m, goto(FLOOD)));
                }
            }
            _ => {}
        }
    }
}
