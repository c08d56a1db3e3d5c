//! Golden tests: every message, match field and action kind we encode is decoded by
//! `ovs-ofctl ofp-print` into exactly the text our printer produces.

mod common;

use openflow::action::{Action, Controller};
use openflow::field::{Field, port};
use openflow::flow::{ANY_GROUP, Flow, FlowMod, FlowModCommand, Instructions, NO_BUFFER};
use openflow::matching::Match;
use openflow::message::*;
use openflow::print::ofp_print;

/// Encodes, checks decode(encode) and compares our rendering with ovs-ofctl's (whole text, or
/// only the first `lines` lines for messages whose tail is a packet dissection).
fn check(xid: u32, msg: &Message, lines: Option<usize>, failures: &mut Vec<String>) {
    let bytes = msg.encode(xid);
    let (dx, dm) = Message::decode(&bytes).unwrap_or_else(|e| panic!("decode {msg:?}: {e}"));
    assert_eq!((dx, &dm), (xid, msg), "round trip");
    let theirs = common::ofp_print(&bytes);
    let ours = ofp_print(xid, msg);
    let cut = |s: &str| match lines {
        Some(n) => s.lines().take(n).collect::<Vec<_>>().join("\n"),
        None => s.to_string(),
    };
    if cut(&theirs) != cut(&ours) {
        failures.push(format!(
            "ovs-ofctl: {}\nours:      {}\n",
            cut(&theirs),
            cut(&ours)
        ));
    }
}

fn report(failures: Vec<String>, n: usize) {
    for f in &failures {
        println!("{f}");
    }
    println!("{} of {n} golden cases match", n - failures.len());
    assert!(failures.is_empty(), "{} golden mismatches", failures.len());
}

#[test]
fn flow_mods_match_ofctl() {
    common::require_ofctl("flow_mods_match_ofctl");
    let mut failures = Vec::new();
    let mut n = 0;
    for (i, text) in common::cases::FLOWS.iter().enumerate() {
        let flow: Flow = text.parse().unwrap_or_else(|e| panic!("parse {text}: {e}"));
        if &flow.to_string() != text {
            failures.push(format!("not canonical:\nin:  {text}\nout: {flow}\n"));
        }
        for (cmd, mask) in [
            (FlowModCommand::Add, 0),
            (FlowModCommand::DeleteStrict, 0),
            (FlowModCommand::Modify, 0xff),
        ] {
            let fm = FlowMod {
                command: cmd,
                cookie_mask: mask,
                ..FlowMod::add(flow.clone())
            };
            n += 1;
            check(i as u32 + 1, &Message::FlowMod(fm), None, &mut failures);
        }
    }
    let del = FlowMod {
        out_port: 5,
        out_group: 7,
        ..FlowMod::delete_cookie(openflow::flow::ALL_TABLES, 0x10, 0xff)
    };
    n += 1;
    check(99, &Message::FlowMod(del), None, &mut failures);
    report(failures, n);
}

/// Every other message kind.
pub fn sample_messages() -> Vec<(Message, Option<usize>)> {
    let group = |t: GroupType, buckets: Vec<Bucket>| Group {
        group_id: 7,
        group_type: t,
        buckets,
    };
    let b = |w: u16, p: u32| Bucket {
        weight: w,
        ..Bucket::new(vec![Action::Output {
            port: p,
            max_len: 0,
        }])
    };
    let ff = Bucket {
        watch_port: 3,
        watch_group: ANY_GROUP,
        ..Bucket::new(vec![Action::Output {
            port: 3,
            max_len: 0,
        }])
    };
    let port = Port {
        port_no: 1,
        hw_addr: [0, 1, 2, 3, 4, 5],
        name: "p1".into(),
        config: 0,
        state: 4,
        curr: 0,
        advertised: 0,
        supported: 0,
        peer: 0,
        curr_speed: 0,
        max_speed: 0,
    };
    let flow = Flow::new(
        2,
        10,
        Match::new().with(Field::InPort, 1),
        vec![Action::Output {
            port: 2,
            max_len: 0,
        }],
    );
    vec![
        (Message::Hello(Some(1 << 4)), None),
        (Message::Hello(Some((1 << 4) | (1 << 1))), None),
        (Message::EchoRequest(vec![]), None),
        (Message::EchoRequest(vec![1, 2, 3]), None),
        (Message::EchoReply(b"hello, world!!!!!!".to_vec()), None),
        (Message::FeaturesRequest, None),
        (
            Message::FeaturesReply(Features {
                datapath_id: 1,
                n_buffers: 256,
                n_tables: 254,
                auxiliary_id: 0,
                capabilities: 0x47,
            }),
            None,
        ),
        (Message::GetConfigRequest, None),
        (
            Message::GetConfigReply(SwitchConfig {
                flags: 0,
                miss_send_len: 0xffff,
            }),
            None,
        ),
        (
            Message::SetConfig(SwitchConfig {
                flags: 1,
                miss_send_len: 128,
            }),
            None,
        ),
        (
            Message::SetAsync(AsyncConfig {
                packet_in_mask: [1, 2],
                port_status_mask: [3, 4],
                flow_removed_mask: [5, 6],
            }),
            None,
        ),
        (
            Message::RoleRequest(Role {
                role: 2,
                generation_id: 5,
            }),
            None,
        ),
        (
            Message::RoleReply(Role {
                role: 3,
                generation_id: 9,
            }),
            None,
        ),
        (Message::BarrierRequest, None),
        (Message::BarrierReply, None),
        (
            Message::GroupMod(GroupMod {
                command: GroupModCommand::Add,
                group: group(GroupType::All, vec![b(0, 1), b(0, 2)]),
            }),
            None,
        ),
        (
            Message::GroupMod(GroupMod {
                command: GroupModCommand::Modify,
                group: group(GroupType::Select, vec![b(100, 1), b(50, 2)]),
            }),
            None,
        ),
        (
            Message::GroupMod(GroupMod {
                command: GroupModCommand::Add,
                group: group(GroupType::Indirect, vec![b(0, 1)]),
            }),
            None,
        ),
        (
            Message::GroupMod(GroupMod {
                command: GroupModCommand::Add,
                group: group(GroupType::FastFailover, vec![ff]),
            }),
            None,
        ),
        (
            Message::GroupMod(GroupMod {
                command: GroupModCommand::Delete,
                group: group(GroupType::All, vec![]),
            }),
            None,
        ),
        (
            Message::MeterMod(MeterMod {
                command: 0,
                flags: 1 | 4 | 8,
                meter_id: 5,
                bands: vec![MeterBand {
                    dscp_remark: None,
                    rate: 1000,
                    burst_size: 100,
                }],
            }),
            None,
        ),
        (
            Message::MeterMod(MeterMod {
                command: 1,
                flags: 2,
                meter_id: 6,
                bands: vec![MeterBand {
                    dscp_remark: Some(1),
                    rate: 10,
                    burst_size: 0,
                }],
            }),
            None,
        ),
        (
            Message::PacketOut(PacketOut {
                buffer_id: NO_BUFFER,
                in_port: port::CONTROLLER,
                actions: vec![Action::Output {
                    port: 1,
                    max_len: 0,
                }],
                data: common::arp_frame(),
            }),
            Some(1),
        ),
        (
            Message::PacketIn(PacketIn {
                buffer_id: NO_BUFFER,
                total_len: 42,
                reason: 1,
                table_id: 3,
                cookie: 5,
                match_: Match::new().with(Field::InPort, 1).with(Field::Reg(0), 7),
                data: common::arp_frame(),
            }),
            Some(1),
        ),
        (
            Message::PacketIn2(PacketIn2 {
                packet: common::arp_frame(),
                full_len: None,
                buffer_id: None,
                table_id: 3,
                cookie: 5,
                reason: 1,
                metadata: Match::new().with(Field::InPort, 1),
                userdata: Some(vec![1, 2, 3]),
                continuation: None,
            }),
            Some(1),
        ),
        (
            Message::Resume(PacketIn2 {
                packet: common::arp_frame(),
                full_len: None,
                buffer_id: None,
                table_id: 0,
                cookie: 0,
                reason: 1,
                metadata: Match::new().with(Field::InPort, 2),
                userdata: None,
                continuation: None,
            }),
            Some(1),
        ),
        (
            Message::PacketIn(PacketIn {
                buffer_id: 0x100,
                total_len: 60,
                reason: 0,
                table_id: 0,
                cookie: 0,
                match_: Match::new().with(Field::InPort, 7),
                data: common::arp_frame(),
            }),
            Some(1),
        ),
        (
            Message::PacketIn(PacketIn {
                buffer_id: NO_BUFFER,
                total_len: 42,
                reason: 0,
                table_id: 9,
                cookie: u64::MAX,
                match_: Match::new().with(Field::InPort, 7),
                data: common::arp_frame(),
            }),
            Some(1),
        ),
        (
            Message::TlvTableMod(TlvTableMod {
                command: 0,
                mappings: vec![
                    TlvMapping {
                        class: 0xffff,
                        ty: 0,
                        len: 4,
                        index: 0,
                    },
                    TlvMapping {
                        class: 0x102,
                        ty: 0x80,
                        len: 4,
                        index: 7,
                    },
                ],
            }),
            None,
        ),
        (
            Message::TlvTableMod(TlvTableMod {
                command: 2,
                mappings: vec![],
            }),
            None,
        ),
        (Message::SetPacketInFormat(2), None),
        (Message::SetPacketInFormat(0), None),
        (
            Message::FlowRemoved(FlowRemoved {
                cookie: 5,
                priority: 100,
                reason: 0,
                table_id: 3,
                duration_sec: 12,
                duration_nsec: 345_000_000,
                idle_timeout: 10,
                hard_timeout: 0,
                packet_count: 7,
                byte_count: 700,
                match_: Match::new()
                    .with(Field::EthType, 0x800)
                    .with(Field::Ipv4Src, 0x0a000001),
            }),
            None,
        ),
        (
            Message::PortStatus(PortStatus {
                reason: 0,
                port: port.clone(),
            }),
            None,
        ),
        (
            Message::MultipartRequest(0, MultipartRequest::Flow(FlowStatsRequest::default())),
            None,
        ),
        (
            Message::MultipartRequest(
                0,
                MultipartRequest::Aggregate(FlowStatsRequest {
                    table: 3,
                    match_: Match::new().with(Field::EthType, 0x800),
                    ..Default::default()
                }),
            ),
            None,
        ),
        (
            Message::MultipartRequest(0, MultipartRequest::GroupDesc),
            None,
        ),
        (
            Message::MultipartRequest(0, MultipartRequest::PortDesc),
            None,
        ),
        (
            Message::MultipartReply(
                0,
                MultipartReply::Flow(vec![
                    FlowStats {
                        flow: flow.clone(),
                        duration_sec: 1,
                        duration_nsec: 0,
                        packet_count: 2,
                        byte_count: 3,
                    },
                    FlowStats {
                        flow: common::cases::FLOWS[1].parse().expect("case"),
                        duration_sec: 3,
                        duration_nsec: 512_345_678,
                        packet_count: 1 << 40,
                        byte_count: 7,
                    },
                ]),
            ),
            None,
        ),
        (
            Message::MultipartReply(
                0,
                MultipartReply::Aggregate {
                    packet_count: 1,
                    byte_count: 2,
                    flow_count: 3,
                },
            ),
            None,
        ),
        (
            Message::MultipartReply(
                0,
                MultipartReply::GroupDesc(vec![group(GroupType::Select, vec![b(10, 1)])]),
            ),
            None,
        ),
        (
            Message::MultipartReply(0, MultipartReply::PortDesc(vec![port])),
            None,
        ),
        (
            Message::BundleCtrl(BundleCtrl {
                bundle_id: 1,
                ctrl_type: bundle_ctrl::OPEN_REQUEST,
                flags: bundle_ctrl::ATOMIC,
            }),
            None,
        ),
        (
            Message::BundleCtrl(BundleCtrl {
                bundle_id: 1,
                ctrl_type: bundle_ctrl::COMMIT_REQUEST,
                flags: 3,
            }),
            None,
        ),
        (
            Message::BundleCtrl(BundleCtrl {
                bundle_id: 2,
                ctrl_type: bundle_ctrl::DISCARD_REQUEST,
                flags: 0,
            }),
            None,
        ),
        (
            Message::BundleAdd(
                1,
                bundle_ctrl::ATOMIC,
                Box::new(Message::FlowMod(FlowMod::add(flow))),
            ),
            None,
        ),
        (
            Message::Error(ErrorMsg {
                ty: 4,
                code: 9,
                experimenter: None,
                data: Message::BarrierRequest.encode(3),
            }),
            None,
        ),
        (
            Message::Error(ErrorMsg {
                ty: 0xffff,
                code: 2313,
                experimenter: Some(0x4f4e4600),
                data: Message::BarrierRequest.encode(3),
            }),
            None,
        ),
        (
            Message::Error(ErrorMsg {
                ty: 5,
                code: 1,
                experimenter: None,
                data: Message::FlowMod(FlowMod::add(
                    common::cases::FLOWS[0].parse().expect("case"),
                ))
                .encode(9)[..64]
                    .to_vec(),
            }),
            None,
        ),
        (
            Message::FlowMod(FlowMod::add(
                Flow::new(0, 1, Match::new(), vec![]).instructions(Instructions::apply(vec![
                    Action::Controller(Controller {
                        id: 3,
                        ..Controller::default()
                    }),
                ])),
            )),
            None,
        ),
    ]
}

#[test]
fn messages_match_ofctl() {
    common::require_ofctl("messages_match_ofctl");
    let mut failures = Vec::new();
    let msgs = sample_messages();
    for (i, (m, lines)) in msgs.iter().enumerate() {
        check(0x100 + i as u32, m, *lines, &mut failures);
    }
    report(failures, msgs.len());
}
