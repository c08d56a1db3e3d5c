//! Trunk ports (VLAN-aware VMs), in table [`INGRESS`] above the classifier's flows.
//!
//! Every subport of a trunk whose parent is a local VIF has a port of its own on `br-int`: the
//! agent makes a patch-port pair for it, whose outer end carries the subport's
//! `external_ids:iface-id` (so it is the subport's VIF, served by every other app exactly as any
//! local VIF: port security, security groups in its own conntrack zone, L2 delivery, DHCP,
//! routing, load balancing) and whose inner end is this app's. A frame from the parent's VIF
//! tagged with a subport's VLAN id loses its tag and goes out of the inner end, so that it comes
//! back in from the outer end as the subport's own traffic; a frame out of the subport's port
//! comes back in at the inner end, gets the tag and leaves through the parent's VIF. A tagged
//! frame from the parent with a VLAN id no subport has is dropped; untagged frames are the
//! parent's, left to the classifier. One trunk per port (parent or subport) is the API's rule:
//! a port two trunks name (a passing state of the replica) gets no trunk flows until one lets
//! go, as two ports claiming one MAC.

use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match};

use super::{App, OwnerKind, Spec, VLAN_PRESENT, flow, output};
use crate::cookie::Owner;
use crate::deps::Ctx;
use crate::model::Kind;
use crate::tables::INGRESS;

pub struct Trunks;

/// A subport's frames, both ways.
const SUBPORT_PRIORITY: u16 = 150;
/// Tagged frames from the parent with a VLAN id no subport has.
const UNKNOWN_VLAN_PRIORITY: u16 = 140;

static SPEC: Spec = Spec {
    name: "trunks",
    tables: &[INGRESS],
    reads: &[],
    writes: &[],
    owners: &[OwnerKind::Trunk],
    inputs: &[Kind::Trunk, Kind::Port],
};

impl App for Trunks {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        let Owner::Trunk(id) = owner else { return };
        let Some(trunk) = ctx.trunk(id) else { return };
        if !ctx.sole_trunk(&trunk.parent, id) || ctx.port(&trunk.parent).is_none() {
            return;
        }
        let Some(parent) = ctx.ofport(&trunk.parent) else {
            return;
        };
        let from_parent = Match::new().with(Field::InPort, parent.into());
        let tagged = from_parent.clone().with_masked(
            Field::VlanVid,
            VLAN_PRESENT.into(),
            VLAN_PRESENT.into(),
        );
        out.push(flow(
            owner,
            INGRESS,
            UNKNOWN_VLAN_PRIORITY,
            tagged,
            Instructions::default(),
        ));
        for sub in trunk.distinct_subports() {
            if !ctx.sole_trunk(&sub.port_id, id) {
                continue;
            }
            let Some(inner) = ctx.inner_port(&sub.port_id) else {
                continue;
            };
            if inner == parent {
                continue;
            }
            let tag = u128::from(VLAN_PRESENT | sub.vlan);
            let on_vlan = from_parent.clone().with(Field::VlanVid, tag);
            let untag = vec![Action::PopVlan, output(inner)];
            out.push(flow(
                owner,
                INGRESS,
                SUBPORT_PRIORITY,
                on_vlan,
                Instructions::apply(untag),
            ));
            let back = Match::new().with(Field::InPort, inner.into());
            let retag = vec![
                Action::PushVlan(0x8100),
                set_field(Field::VlanVid, tag, 0x1fff),
                output(parent),
            ];
            out.push(flow(
                owner,
                INGRESS,
                SUBPORT_PRIORITY,
                back,
                Instructions::apply(retag),
            ));
        }
    }
}
