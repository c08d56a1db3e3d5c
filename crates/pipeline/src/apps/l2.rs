//! L2 lookup (table [`L2`]): a frame for a port's MAC goes to its local VIF (through the ingress
//! security groups: the port in `reg4`, then [`DELIVER`] outputs it), or, if it did not
//! come from a tunnel or a physical network, sent through the tunnel with the network's VNI to
//! the chassis the port is bound to (if that chassis is up), or, on a provider network, onto the
//! physical network (tagged with its VLAN id) when the port is bound to another chassis. Anything else on a network goes to flooding. A MAC two ports
//! claim on one network gets no flow (the frame is flooded) until only one claims it.

use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match, Subfield};

use super::{App, OwnerKind, Spec, flow, goto, to_physical, to_tunnel};
use crate::cookie::Owner;
use crate::deps::{Ctx, Wire};
use crate::model::Kind;
use crate::tables::{DELIVER, FLOOD, L2, LB_REPLY, REG_FROM_TUNNEL, REG_OUT_PORT, Register};

pub struct L2Lookup;

static SPEC: Spec = Spec {
    name: "l2",
    tables: &[L2, DELIVER],
    reads: &[Register::Metadata, Register::FromTunnel, Register::OutPort],
    writes: &[Register::OutPort],
    owners: &[OwnerKind::Port, OwnerKind::Network],
    inputs: &[Kind::Network, Kind::Port, Kind::Chassis, Kind::ChassisUp],
};

impl App for L2Lookup {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// The last stage: out of the local port the lookup chose.
    fn fixed(&self) -> Vec<Flow> {
        let out = Action::OutputReg {
            src: Subfield::whole(Field::Reg(REG_OUT_PORT)),
            max_len: 0,
        };
        vec![flow(
            &Owner::Static,
            DELIVER,
            10,
            Match::new(),
            Instructions::apply(vec![out]),
        )]
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::Port(id) => {
                let Some(port) = ctx.port(id).filter(|p| p.admin_up) else {
                    return;
                };
                let (Some(meta), Some(wire)) =
                    (ctx.carried(&port.network_id), ctx.wire(&port.network_id))
                else {
                    return;
                };
                if !ctx.sole_mac(port) {
                    return;
                }
                let dst = Match::new()
                    .with(Field::Metadata, meta.into())
                    .with(Field::EthDst, port.mac.into());
                if let Some(ofport) = ctx.ofport(id) {
                    // Delivered through the ingress security groups.
                    let mut deliver = goto(LB_REPLY);
                    deliver.apply = vec![set_field(
                        Field::Reg(REG_OUT_PORT),
                        ofport.into(),
                        0xffff_ffff,
                    )];
                    out.push(flow(owner, L2, 100, dst, deliver));
                } else {
                    let mut actions = Vec::new();
                    match wire {
                        Wire::Tunnel(vni) => {
                            if let Some(chassis) = ctx.remote_chassis(port)
                                && let Some(tunnel) = ctx.tunnel()
                            {
                                to_tunnel(tunnel, vni, chassis.tunnel_ip, &mut actions);
                            }
                        }
                        // The physical network carries it, whether that chassis is up or not.
                        Wire::Physical { patch, vlan } => {
                            let elsewhere =
                                port.host.as_deref().is_some_and(|h| h != ctx.chassis_id());
                            if elsewhere {
                                to_physical(patch, vlan, &mut actions);
                            }
                        }
                    }
                    if !actions.is_empty() {
                        let m = dst.with(Field::Reg(REG_FROM_TUNNEL), 0);
                        out.push(flow(owner, L2, 100, m, Instructions::apply(actions)));
                    }
                }
            }
            Owner::Network(id) => {
                if let Some(meta) = ctx.carried(id) {
                    let m = Match::new().with(Field::Metadata, meta.into());
                    out.push(flow(owner, L2, 10, m, goto(FLOOD)));
                }
            }
            _ => {}
        }
    }
}
