//! Rendering of whole messages the way `ovs-ofctl ofp-print` shows them.
//!
//! The first line carries the message name, version and xid; bodies follow OVS's layout for
//! the messages this crate models. Packet payloads are rendered as OVS's hex dump.

use std::fmt::Write;

use crate::action::format_actions;
use crate::field::port_name;
use crate::flow::NO_BUFFER;
use crate::message::{
    Bucket, BundleCtrl, Group, Message, MeterMod, MultipartReply, MultipartRequest, PacketIn2, Port,
};

/// OVS-style hex dump (16 bytes a line, offset, `-` after the 8th byte, ASCII column).
pub fn hex_dump(buf: &[u8]) -> String {
    let mut s = String::new();
    for (line, chunk) in buf.chunks(16).enumerate() {
        let _ = write!(s, "{:08x}  ", line * 16);
        for i in 0..16 {
            match chunk.get(i) {
                Some(b) => {
                    let _ = write!(s, "{b:02x}{}", if i == 7 { '-' } else { ' ' });
                }
                None => s.push_str("   "),
            }
        }
        s.push('|');
        for i in 0..16 {
            s.push(match chunk.get(i) {
                Some(&c) if (32..127).contains(&c) => c as char,
                Some(_) => '.',
                None => ' ',
            });
        }
        s.push_str("|\n");
    }
    s
}

fn name(msg: &Message) -> &'static str {
    match msg {
        Message::Hello(_) => "OFPT_HELLO",
        Message::Error(_) => "OFPT_ERROR",
        Message::EchoRequest(_) => "OFPT_ECHO_REQUEST",
        Message::EchoReply(_) => "OFPT_ECHO_REPLY",
        Message::FeaturesRequest => "OFPT_FEATURES_REQUEST",
        Message::FeaturesReply(_) => "OFPT_FEATURES_REPLY",
        Message::GetConfigRequest => "OFPT_GET_CONFIG_REQUEST",
        Message::GetConfigReply(_) => "OFPT_GET_CONFIG_REPLY",
        Message::SetConfig(_) => "OFPT_SET_CONFIG",
        Message::SetAsync(_) => "OFPT_SET_ASYNC",
        Message::RoleRequest(_) => "OFPT_ROLE_REQUEST",
        Message::RoleReply(_) => "OFPT_ROLE_REPLY",
        Message::BarrierRequest => "OFPT_BARRIER_REQUEST",
        Message::BarrierReply => "OFPT_BARRIER_REPLY",
        Message::FlowMod(_) => "OFPT_FLOW_MOD",
        Message::GroupMod(_) => "OFPT_GROUP_MOD",
        Message::MeterMod(_) => "OFPT_METER_MOD",
        Message::PacketIn(_) => "OFPT_PACKET_IN",
        Message::PacketIn2(_) => "NXT_PACKET_IN2",
        Message::Resume(_) => "NXT_RESUME",
        Message::SetPacketInFormat(_) => "NXT_SET_PACKET_IN_FORMAT",
        Message::TlvTableMod(_) => "NXT_TLV_TABLE_MOD",
        Message::PacketOut(_) => "OFPT_PACKET_OUT",
        Message::PortStatus(_) => "OFPT_PORT_STATUS",
        Message::FlowRemoved(_) => "OFPT_FLOW_REMOVED",
        Message::MultipartRequest(_, r) => match r {
            MultipartRequest::Flow(_) => "OFPST_FLOW request",
            MultipartRequest::Aggregate(_) => "OFPST_AGGREGATE request",
            MultipartRequest::GroupDesc => "OFPST_GROUP_DESC request",
            MultipartRequest::PortDesc => "OFPST_PORT_DESC request",
        },
        Message::MultipartReply(_, r) => match r {
            MultipartReply::Flow(_) => "OFPST_FLOW reply",
            MultipartReply::Aggregate { .. } => "OFPST_AGGREGATE reply",
            MultipartReply::GroupDesc(_) => "OFPST_GROUP_DESC reply",
            MultipartReply::PortDesc(_) => "OFPST_PORT_DESC reply",
        },
        Message::BundleCtrl(_) => "ONFT_BUNDLE_CONTROL",
        Message::BundleAdd(..) => "ONFT_BUNDLE_ADD_MESSAGE",
    }
}

/// Names of the fixed-layout message types, by type number ("" = name depends on the body).
const TYPE_NAMES: [&str; 30] = [
    "OFPT_HELLO",
    "OFPT_ERROR",
    "OFPT_ECHO_REQUEST",
    "OFPT_ECHO_REPLY",
    "",
    "OFPT_FEATURES_REQUEST",
    "OFPT_FEATURES_REPLY",
    "OFPT_GET_CONFIG_REQUEST",
    "OFPT_GET_CONFIG_REPLY",
    "OFPT_SET_CONFIG",
    "OFPT_PACKET_IN",
    "OFPT_FLOW_REMOVED",
    "OFPT_PORT_STATUS",
    "OFPT_PACKET_OUT",
    "OFPT_FLOW_MOD",
    "OFPT_GROUP_MOD",
    "OFPT_PORT_MOD",
    "OFPT_TABLE_MOD",
    "",
    "",
    "OFPT_BARRIER_REQUEST",
    "OFPT_BARRIER_REPLY",
    "OFPT_QUEUE_GET_CONFIG_REQUEST",
    "OFPT_QUEUE_GET_CONFIG_REPLY",
    "OFPT_ROLE_REQUEST",
    "OFPT_ROLE_REPLY",
    "OFPT_GET_ASYNC_REQUEST",
    "OFPT_GET_ASYNC_REPLY",
    "OFPT_SET_ASYNC",
    "OFPT_METER_MOD",
];

const ROLES: [&str; 4] = ["nochange", "equal", "primary", "secondary"];
const FRAGS: [&str; 4] = ["normal", "drop", "reassemble", "nx-match"];
const CAPS: [(u32, &str); 7] = [
    (1, "FLOW_STATS"),
    (2, "TABLE_STATS"),
    (4, "PORT_STATS"),
    (8, "GROUP_STATS"),
    (0x20, "IP_REASM"),
    (0x40, "QUEUE_STATS"),
    (0x100, "PORT_BLOCKED"),
];

fn async_line(s: &mut String, label: &str, mask: u32, names: &[&str]) {
    let on: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    let _ = writeln!(
        s,
        "{label:>16}: {}",
        if on.is_empty() {
            "(off)".to_string()
        } else {
            on.join(" ")
        }
    );
}

/// The bucket list of a group as `ovs-ofctl` prints it.
fn format_buckets(s: &mut String, g: &Group) {
    for b in &g.buckets {
        s.push_str(",bucket=");
        format_bucket(s, g, b);
    }
}

fn format_bucket(s: &mut String, g: &Group, b: &Bucket) {
    if g.group_type == crate::message::GroupType::Select || b.weight != 0 {
        let _ = write!(s, "weight:{},", b.weight);
    }
    if b.watch_port != crate::field::port::ANY {
        let _ = write!(s, "watch_port:{},", port_name(b.watch_port));
    }
    if b.watch_group != crate::flow::ANY_GROUP {
        let _ = write!(s, "watch_group:{},", b.watch_group);
    }
    s.push_str("actions=");
    if b.actions.is_empty() {
        s.push_str("drop");
    } else {
        let _ = format_actions(&b.actions, s);
    }
}

/// A group as `ovs-ofctl dump-groups` prints it (`group_id=1,type=all,bucket=...`).
pub fn format_group(g: &Group) -> String {
    let mut s = format!("group_id={},type={}", g.group_id, g.group_type.name());
    format_buckets(&mut s, g);
    s
}

fn format_meter(s: &mut String, m: &MeterMod) {
    let cmd = ["ADD", "MOD", "DEL"]
        .get(usize::from(m.command))
        .copied()
        .unwrap_or("???");
    let _ = write!(s, " {cmd} meter={}", m.meter_id);
    for (bit, n) in [(1, "kbps"), (2, "pktps"), (4, "burst"), (8, "stats")] {
        if m.flags & bit != 0 {
            let _ = write!(s, " {n}");
        }
    }
    if !m.bands.is_empty() {
        s.push_str(" bands=");
        for b in &m.bands {
            match b.dscp_remark {
                None => s.push_str("\ntype=drop"),
                Some(_) => s.push_str("\ntype=dscp_remark"),
            }
            let _ = write!(s, " rate={}", b.rate);
            if m.flags & 4 != 0 {
                let _ = write!(s, " burst_size={}", b.burst_size);
            }
            if let Some(p) = b.dscp_remark {
                let _ = write!(s, " prec_level={p}");
            }
        }
    }
}

const PORT_CONFIG: [(u32, &str); 4] = [
    (1, "PORT_DOWN"),
    (4, "NO_RECV"),
    (0x20, "NO_FWD"),
    (0x40, "NO_PACKET_IN"),
];
const PORT_STATE: [(u32, &str); 3] = [(1, "LINK_DOWN"), (2, "BLOCKED"), (4, "LIVE")];
const PORT_FEATURES: [(u32, &str); 16] = [
    (1, "10MB-HD"),
    (2, "10MB-FD"),
    (4, "100MB-HD"),
    (8, "100MB-FD"),
    (0x10, "1GB-HD"),
    (0x20, "1GB-FD"),
    (0x40, "10GB-FD"),
    (0x80, "40GB-FD"),
    (0x100, "100GB-FD"),
    (0x200, "1TB-FD"),
    (0x400, "OTHER"),
    (0x800, "COPPER"),
    (0x1000, "FIBER"),
    (0x2000, "AUTO_NEG"),
    (0x4000, "PAUSE"),
    (0x8000, "PAUSE_ASYM"),
];

fn bit_names(v: u32, names: &[(u32, &str)]) -> String {
    let on: Vec<&str> = names
        .iter()
        .filter(|(b, _)| v & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if on.is_empty() {
        "0".to_string()
    } else {
        on.join(" ")
    }
}

/// A port as `ovs-ofctl` shows it in port-status and port-desc replies.
fn format_port(s: &mut String, p: &Port) {
    let h = p.hw_addr;
    let _ = write!(
        s,
        " {}({}): addr:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        port_name(p.port_no),
        p.name,
        h[0],
        h[1],
        h[2],
        h[3],
        h[4],
        h[5]
    );
    let _ = write!(
        s,
        "\n     config:     {}",
        bit_names(p.config, &PORT_CONFIG)
    );
    let _ = write!(s, "\n     state:      {}", bit_names(p.state, &PORT_STATE));
    for (label, v) in [
        ("current:    ", p.curr),
        ("advertised: ", p.advertised),
        ("supported:  ", p.supported),
        ("peer:       ", p.peer),
    ] {
        if v != 0 {
            let _ = write!(s, "\n     {label}{}", bit_names(v, &PORT_FEATURES));
        }
    }
    let _ = write!(
        s,
        "\n     speed: {} Mbps now, {} Mbps max",
        p.curr_speed / 1000,
        p.max_speed / 1000
    );
}

fn bundle_flags(flags: u16) -> String {
    let f: Vec<&str> = [(1, "atomic"), (2, "ordered")]
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if f.is_empty() {
        "0".to_string()
    } else {
        f.join(" ")
    }
}

/// The first line of a packet-in (standard ones are shown through the packet-in2 view).
fn format_pin_line(s: &mut String, p: &PacketIn2) {
    if p.table_id != 0 {
        let _ = write!(s, " table_id={}", p.table_id);
    }
    if p.cookie != u64::MAX {
        let _ = write!(s, " cookie={:#x}", p.cookie);
    }
    let total = p.full_len.map_or(p.packet.len(), |l| l as usize);
    let reason = crate::action::reason::NAMES
        .get(usize::from(p.reason))
        .copied()
        .unwrap_or("?");
    let _ = write!(
        s,
        " total_len={total} {} (via {reason}) data_len={}",
        p.metadata,
        p.packet.len()
    );
    match p.buffer_id {
        Some(b) if b != NO_BUFFER => {
            let _ = write!(s, " buffer={b:#010x}");
        }
        _ => s.push_str(" (unbuffered)"),
    }
}

fn format_bundle(s: &mut String, b: &BundleCtrl) {
    const TYPES: [&str; 8] = [
        "OPEN_REQUEST",
        "OPEN_REPLY",
        "CLOSE_REQUEST",
        "CLOSE_REPLY",
        "COMMIT_REQUEST",
        "COMMIT_REPLY",
        "DISCARD_REQUEST",
        "DISCARD_REPLY",
    ];
    let ty = TYPES
        .get(usize::from(b.ctrl_type))
        .copied()
        .unwrap_or("???");
    let _ = write!(s, "\n bundle_id={:#x} type={ty}", b.bundle_id);
    let _ = write!(s, " flags={}", bundle_flags(b.flags));
}

/// Renders a message like `ovs-ofctl ofp-print` (trailing newline trimmed).
pub fn ofp_print(xid: u32, msg: &Message) -> String {
    let mut s = format!("{} (OF1.3) (xid={xid:#x}):", name(msg));
    match msg {
        Message::Hello(Some(b)) => {
            let v: Vec<String> = (0..32)
                .filter(|i| b & (1 << i) != 0)
                .map(|i| format!("{i:#04x}"))
                .collect();
            let _ = write!(s, "\n version bitmap: {}", v.join(", "));
        }
        Message::Error(e) => {
            let _ = writeln!(s, " {}", e.name());
            // The failed request: decoded when complete, else a (truncated) hex dump.
            match (Message::decode(&e.data), crate::message::frame_len(&e.data)) {
                (Ok((x, m)), _) => s.push_str(&ofp_print(x, &m)),
                (Err(_), Some(full)) if full > e.data.len() => {
                    let name = TYPE_NAMES
                        .get(usize::from(e.data[1]))
                        .filter(|n| !n.is_empty());
                    if let (Some(n), true) = (name, e.data.len() >= 8) {
                        let xid = u32::from_be_bytes([e.data[4], e.data[5], e.data[6], e.data[7]]);
                        let _ = writeln!(s, "{n} (OF1.3) (xid={xid:#x}):");
                    }
                    let _ = writeln!(s, "(***truncated to {} bytes from {full}***)", e.data.len());
                    s.push_str(&hex_dump(&e.data));
                }
                (Err(_), _) => s.push_str(&hex_dump(&e.data)),
            }
        }
        Message::EchoRequest(d) | Message::EchoReply(d) => {
            let _ = write!(s, " {} bytes of payload\n{}", d.len(), hex_dump(d));
        }
        Message::FeaturesReply(f) => {
            let _ = write!(
                s,
                " dpid:{:016x}\nn_tables:{}, n_buffers:{}",
                f.datapath_id, f.n_tables, f.n_buffers
            );
            if f.auxiliary_id != 0 {
                let _ = write!(s, ", auxiliary_id:{}", f.auxiliary_id);
            }
            s.push_str("\ncapabilities:");
            for (bit, n) in CAPS {
                if f.capabilities & bit != 0 {
                    let _ = write!(s, " {n}");
                }
            }
        }
        Message::GetConfigReply(c) | Message::SetConfig(c) => {
            let frags = FRAGS.get(usize::from(c.flags & 3)).copied().unwrap_or("?");
            let _ = write!(s, " frags={frags} miss_send_len={}", c.miss_send_len);
        }
        Message::SetAsync(a) => {
            for (i, label) in ["primary", "secondary"].iter().enumerate() {
                let _ = write!(s, "\n {label}:\n");
                async_line(
                    &mut s,
                    "PACKET_IN",
                    a.packet_in_mask[i],
                    &["no_match", "action", "invalid_ttl"],
                );
                async_line(
                    &mut s,
                    "PORT_STATUS",
                    a.port_status_mask[i],
                    &["add", "delete", "modify"],
                );
                async_line(
                    &mut s,
                    "FLOW_REMOVED",
                    a.flow_removed_mask[i],
                    &["idle", "hard", "delete", "group_delete"],
                );
                async_line(&mut s, "ROLE_STATUS", 0, &[]);
                async_line(&mut s, "TABLE_STATUS", 0, &[]);
                async_line(&mut s, "REQUESTFORWARD", 0, &[]);
            }
        }
        Message::RoleRequest(r) | Message::RoleReply(r) => {
            let role = ROLES.get(r.role as usize).copied().unwrap_or("?");
            let _ = write!(s, " role={role}");
            if r.role != 0 {
                let _ = write!(s, " generation_id={}", r.generation_id);
            }
        }
        Message::FlowMod(fm) => {
            let _ = write!(s, " {}", fm.ofp_print());
        }
        Message::GroupMod(gm) => {
            let cmd = ["ADD", "MOD", "DEL"][gm.command as usize];
            let _ = write!(
                s,
                "\n {cmd} group_id={},type={}",
                gm.group.group_id,
                gm.group.group_type.name()
            );
            format_buckets(&mut s, &gm.group);
        }
        Message::MeterMod(m) => format_meter(&mut s, m),
        Message::PacketOut(p) => {
            let _ = write!(s, " in_port={} actions=", port_name(p.in_port));
            if p.actions.is_empty() {
                s.push_str("drop");
            } else {
                let _ = format_actions(&p.actions, &mut s);
            }
            if p.buffer_id != NO_BUFFER {
                let _ = write!(s, " buffer={:#010x}", p.buffer_id);
            } else {
                let _ = write!(s, " data_len={}", p.data.len());
            }
        }
        Message::TlvTableMod(t) => {
            let cmd = ["ADD", "DEL", "CLEAR"]
                .get(usize::from(t.command))
                .copied()
                .unwrap_or("???");
            let _ = write!(s, "\n {cmd}");
            if !t.mappings.is_empty() || t.command != 2 {
                s.push_str(" mapping table:\n  class  type  length  match field\n ------  ----  ------  --------------");
                for m in &t.mappings {
                    let ty = if m.ty == 0 {
                        "0".to_string()
                    } else {
                        format!("{:#x}", m.ty)
                    };
                    let _ = write!(
                        s,
                        "\n {:#6x}  {ty:>4}  {:6}  tun_metadata{}",
                        m.class, m.len, m.index
                    );
                }
            }
        }
        Message::FlowRemoved(f) => {
            const REASONS: [&str; 6] = [
                "idle",
                "hard",
                "delete",
                "group_delete",
                "meter_delete",
                "eviction",
            ];
            let mut t = Vec::new();
            if f.priority != crate::flow::DEFAULT_PRIORITY {
                t.push(format!("priority={}", f.priority));
            }
            f.match_.format_tokens(&mut t);
            let reason = REASONS.get(usize::from(f.reason)).copied().unwrap_or("?");
            let _ = write!(s, " {} reason={reason}", t.join(","));
            if f.table_id != 255 {
                let _ = write!(s, " table_id={}", f.table_id);
            }
            if f.cookie != 0 {
                let _ = write!(s, " cookie:{:#x}", f.cookie);
            }
            let _ = write!(
                s,
                " duration{} idle{}",
                crate::flow::format_duration(f.duration_sec, f.duration_nsec),
                f.idle_timeout
            );
            if f.hard_timeout != 0 {
                let _ = write!(s, " hard{}", f.hard_timeout);
            }
            let _ = write!(s, " pkts{} bytes{}", f.packet_count, f.byte_count);
        }
        Message::PortStatus(p) => {
            let r = ["ADD", "DEL", "MOD"]
                .get(usize::from(p.reason))
                .copied()
                .unwrap_or("???");
            let _ = write!(s, " {r}:");
            format_port(&mut s, &p.port);
        }
        Message::MultipartReply(
            _,
            MultipartReply::Aggregate {
                packet_count,
                byte_count,
                flow_count,
            },
        ) => {
            let _ = write!(
                s,
                " packet_count={packet_count} byte_count={byte_count} flow_count={flow_count}"
            );
        }
        Message::MultipartReply(_, MultipartReply::PortDesc(ports)) => {
            for p in ports {
                s.push('\n');
                format_port(&mut s, p);
            }
        }
        Message::MultipartReply(_, MultipartReply::GroupDesc(groups)) => {
            for g in groups {
                let _ = write!(s, "\n {}", format_group(g));
            }
        }
        Message::MultipartReply(_, MultipartReply::Flow(stats)) => {
            for st in stats {
                let c = crate::flow::FlowCounters {
                    duration_sec: st.duration_sec,
                    duration_nsec: st.duration_nsec,
                    packet_count: st.packet_count,
                    byte_count: st.byte_count,
                };
                let _ = write!(s, "\n{}", st.flow.format_line(Some(&c)));
            }
        }
        Message::MultipartRequest(
            _,
            MultipartRequest::Flow(r) | MultipartRequest::Aggregate(r),
        ) => {
            if r.table != crate::flow::ALL_TABLES {
                let _ = write!(s, " table={}", r.table);
            }
            if r.out_port != crate::field::port::ANY {
                let _ = write!(s, " out_port={}", port_name(r.out_port));
            }
            let _ = write!(s, " {}", r.match_);
        }
        Message::MultipartRequest(_, MultipartRequest::GroupDesc) => s.push_str(" group_id=ALL"),
        Message::MultipartRequest(_, MultipartRequest::PortDesc) => s.push_str(" port=ANY"),
        Message::SetPacketInFormat(f) => {
            let name = ["standard", "nxt_packet_in", "nxt_packet_in2"]
                .get(*f as usize)
                .copied()
                .unwrap_or("?");
            let _ = write!(s, " format={name}");
        }
        Message::PacketIn(p) => {
            let view = PacketIn2 {
                packet: p.data.clone(),
                full_len: Some(u32::from(p.total_len)),
                buffer_id: Some(p.buffer_id),
                table_id: p.table_id,
                cookie: p.cookie,
                reason: p.reason,
                metadata: p.match_.clone(),
                userdata: None,
                continuation: None,
            };
            format_pin_line(&mut s, &view);
        }
        Message::PacketIn2(p) | Message::Resume(p) => format_pin_line(&mut s, p),
        Message::BundleCtrl(b) => format_bundle(&mut s, b),
        Message::BundleAdd(id, flags, inner) => {
            let _ = write!(
                s,
                "\n bundle_id={id:#x} flags={}\n{}",
                bundle_flags(*flags),
                ofp_print(xid, inner)
            );
        }
        _ => {}
    }
    s.trim_end().to_string()
}
