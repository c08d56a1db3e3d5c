//! The security groups' part of a trace in API terms: for each direction the packet went
//! through (egress from its port, ingress to the port it is delivered to), the connection
//! state conntrack gave it and what decided — the rule (its id, group and direction) whose
//! conjunction admitted it and whether the connection was committed in the port's zone, no
//! rule of the port's groups, or the state alone (a reply or related packet passes, an invalid
//! one or one of a connection no longer allowed drops), or a bypass (DHCP, neighbour
//! discovery). Read from the flows the trace hit in the stages of
//! [`pipeline::apps::security_groups`] and their owners.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowsim::conntrack::ct_state;
use flowsim::{Packet, Step, Trace};
use openflow::{Action, Field, Flow};
use pipeline::cookie::Owner;
use pipeline::model::{Remote, SgRule};
use pipeline::tables::{ACL_EGRESS, ACL_EGRESS_STATE, ACL_INGRESS, ACL_INGRESS_STATE, REG_CT_ZONE};

use crate::inventory::{Inventory, short};
use crate::local::Local;

/// One sentence per security group stage the packet went through, in order.
pub fn security(inv: &Inventory, local: &Local, trace: &Trace) -> Vec<String> {
    let mut lines = Vec::new();
    // The filtered port of the current direction, from its flow in the entry stage.
    let mut port: Option<String> = None;
    for step in trace.steps() {
        let Some(side) = side(step.table) else {
            continue;
        };
        let owner = step.flow.as_ref().and_then(|f| inv.owner_of(f.cookie));
        if matches!(step.table, ACL_EGRESS | ACL_INGRESS) {
            port = match owner {
                Some(Owner::Port(id)) => Some(id.to_string()),
                _ => None,
            };
            if let Some(what) = step.flow.as_ref().and_then(|f| bypass(f, trace)) {
                lines.push(format!("{side}: bypasses the security groups: {what}"));
            }
            continue;
        }
        let label = port
            .as_deref()
            .and_then(|id| inv.topology.ports.get(id))
            .map_or_else(|| "the port".to_string(), |p| inv.port_label(p));
        lines.push(decision(inv, local, side, &label, step, trace));
    }
    lines
}

/// The direction of a security group stage, if `table` is one.
fn side(table: u8) -> Option<&'static str> {
    match table {
        ACL_EGRESS | ACL_EGRESS_STATE => Some("egress"),
        ACL_INGRESS | ACL_INGRESS_STATE => Some("ingress"),
        _ => None,
    }
}

/// The packet as the pass that begins with `step` saw it (a recirculation after `ct`), if one
/// does: conntrack's fields are set in it.
fn pass_packet<'t>(trace: &'t Trace, step: &Step) -> Option<&'t Packet> {
    trace
        .passes
        .iter()
        .find(|p| std::ptr::eq(&p.root, step))
        .map(|p| &p.packet)
}

/// What a bypass flow of the entry stage let through, if `flow` is one.
fn bypass(flow: &Flow, trace: &Trace) -> Option<&'static str> {
    // The stage's miss (priority 0) continues too: for packets no filtered port sent.
    if !Owner::Static.owns(flow.cookie)
        || flow.priority == 0
        || flow.instructions.goto_table.is_none()
    {
        return None;
    }
    let p = &trace.packet;
    let udp = (p.get(Field::UdpSrc), p.get(Field::UdpDst));
    Some(match (udp, p.get(Field::Icmpv6Type)) {
        ((Some(67 | 68), Some(67 | 68)), _) => "DHCP",
        ((Some(546 | 547), Some(546 | 547)), _) => "DHCPv6",
        (_, Some(133)) => "router solicitation",
        (_, Some(134)) => "router advertisement",
        (_, Some(135)) => "neighbour solicitation",
        (_, Some(136)) => "neighbour advertisement",
        _ => return None,
    })
}

/// What the state stage decided for the packet.
fn decision(
    inv: &Inventory,
    local: &Local,
    side: &str,
    label: &str,
    step: &Step,
    trace: &Trace,
) -> String {
    let packet = pass_packet(trace, step);
    let state = packet.and_then(|p| p.get(Field::CtState));
    let flow = step.flow.as_ref();
    let owner = flow.and_then(|f| inv.owner_of(f.cookie));
    if let (Some(Owner::SgRule(id)), Some(f)) = (owner, flow) {
        let rule = match inv.topology.rules.get(&*id) {
            Some(r) => rule_label(inv, r),
            None => format!("rule {} (no longer in the server's topology)", short(&id)),
        };
        let committed = f.instructions.apply.iter().any(|a| match a {
            Action::Ct(ct) => ct.commit,
            _ => false,
        });
        let zone = packet
            .and_then(|p| p.get(Field::Reg(REG_CT_ZONE)))
            .and_then(|z| local.vif_at(z as u32))
            .and_then(|id| inv.topology.ports.get(id))
            .map_or_else(|| label.to_string(), |p| inv.port_label(p));
        let state = match state {
            None => "a stateless group: not tracked, every packet needs a rule".to_string(),
            Some(s) if s & u128::from(ct_state::EST) != 0 => {
                "an established connection, whose packets the rules admit again".to_string()
            }
            Some(_) => "new connection".to_string(),
        };
        let commit = if committed {
            format!(", committed in {zone}'s zone")
        } else {
            String::new()
        };
        return format!("{side}: {rule} admits it: {state}{commit}");
    }
    let has = |bits: u32| state.is_some_and(|s| s & u128::from(bits) == u128::from(bits));
    let matched = flow.filter(|f| Owner::Static.owns(f.cookie) && !f.instructions.is_drop());
    let priority = flow
        .filter(|f| Owner::Static.owns(f.cookie))
        .map(|f| f.priority);
    let what = describe(&trace.packet);
    match priority {
        Some(200) if has(ct_state::INV) => {
            format!("{side}: invalid for conntrack in {label}'s zone ({what}): dropped")
        }
        Some(190) => format!(
            "{side}: its connection is marked as no longer allowed (a rule that admitted it was \
             removed, or its peer left a remote group): dropped"
        ),
        Some(180) if matched.is_some() => {
            format!("{side}: a reply of a tracked connection: passes")
        }
        Some(170) if matched.is_some() => {
            format!("{side}: related to a tracked connection (an ICMP error): passes")
        }
        Some(50) => format!(
            "{side}: an established connection that no rule of {label}'s groups admits any more \
             ({what}): marked as no longer allowed in conntrack, and dropped"
        ),
        _ => format!("{side}: no rule of {label}'s groups admits {what}: dropped"),
    }
}

/// `security group web (3f2a…) rule 7c1d… (ingress, tcp 22 from 10.0.0.0/24)`.
fn rule_label(inv: &Inventory, r: &SgRule) -> String {
    let direction = if r.ingress { "ingress" } else { "egress" };
    let family = if r.ipv6 { "IPv6 " } else { "" };
    let ports = match (r.port_min, r.port_max) {
        (Some(lo), Some(hi)) if lo != hi => format!(" {lo}-{hi}"),
        (Some(lo), _) => format!(" {lo}"),
        _ => String::new(),
    };
    let what = match r.protocol {
        None if r.ipv6 => "IPv6, any".to_string(),
        None => "any".to_string(),
        Some(p @ (1 | 58)) => {
            let icmp = if p == 1 { "icmp" } else { "icmpv6" };
            match (r.port_min, r.port_max) {
                (Some(t), Some(c)) => format!("{icmp} type {t} code {c}"),
                (Some(t), None) => format!("{icmp} type {t}"),
                _ => icmp.to_string(),
            }
        }
        Some(6) => format!("{family}tcp{ports}"),
        Some(17) => format!("{family}udp{ports}"),
        Some(132) => format!("{family}sctp{ports}"),
        Some(p) => format!("{family}protocol {p}"),
    };
    let towards = if r.ingress { "from" } else { "to" };
    let remote = match &r.remote {
        Remote::Any => String::new(),
        Remote::Prefix(p) => format!(" {towards} {p}"),
        Remote::Group(g) => format!(" {towards} the members of {}", group_label(inv, g)),
        Remote::AddressGroup(a) => format!(" {towards} address group {}", short(a)),
    };
    format!(
        "{} rule {} ({direction}, {what}{remote})",
        group_label(inv, &r.group),
        short(&r.id)
    )
}

/// `security group web (3f2a…)`.
fn group_label(inv: &Inventory, id: &str) -> String {
    match inv.topology.security_groups.get(id) {
        Some(g) if !g.name.is_empty() => format!("security group {} ({})", g.name, short(id)),
        _ => format!("security group {}", short(id)),
    }
}

/// `tcp 10.0.0.11 → 10.0.0.12:22`, `icmp 10.0.0.11 → 10.0.0.12 (type 8)`.
fn describe(p: &Packet) -> String {
    let v4 = |f| p.get(f).map(|v| IpAddr::V4(Ipv4Addr::from(v as u32)));
    let v6 = |f| p.get(f).map(|v| IpAddr::V6(Ipv6Addr::from(v)));
    let (Some(src), Some(dst)) = (
        v4(Field::Ipv4Src).or_else(|| v6(Field::Ipv6Src)),
        v4(Field::Ipv4Dst).or_else(|| v6(Field::Ipv6Dst)),
    ) else {
        return "this packet".into();
    };
    let to_port = |name: &str, port: Option<u128>| match (dst, port) {
        (IpAddr::V6(d), Some(n)) => format!("{name} {src} → [{d}]:{n}"),
        (d, Some(n)) => format!("{name} {src} → {d}:{n}"),
        (d, None) => format!("{name} {src} → {d}"),
    };
    match p.get(Field::IpProto) {
        Some(6) => to_port("tcp", p.get(Field::TcpDst)),
        Some(17) => to_port("udp", p.get(Field::UdpDst)),
        Some(132) => to_port("sctp", p.get(Field::SctpDst)),
        Some(1) => format!(
            "icmp {src} → {dst} (type {})",
            p.get(Field::IcmpType).unwrap_or_default()
        ),
        Some(58) => format!(
            "icmpv6 {src} → {dst} (type {})",
            p.get(Field::Icmpv6Type).unwrap_or_default()
        ),
        Some(n) => format!("protocol {n} {src} → {dst}"),
        None => format!("{src} → {dst}"),
    }
}
