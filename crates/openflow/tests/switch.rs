//! Against a real ovs-vswitchd (userspace datapath, private namespace): install ≥300 flows and
//! 20 groups covering every match and action kind through one bundle, read them back with
//! `ovs-ofctl` and with our own flow-stats request, and compare with what was sent; packet-out
//! of an ARP reaches a port; a `controller` flow produces a packet-in (and packet-in2) we decode.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::ovs::Switch;
use openflow::action::{Action, Controller};
use openflow::conn::{ConnError, Connection, Event, Events};
use openflow::field::{Field, port};
use openflow::flow::{Flow, FlowMod, NO_BUFFER};
use openflow::matching::Match;
use openflow::message::*;
use openflow::print::format_group;

const TIMEOUT: Duration = Duration::from_secs(20);

/// ≥ 300 distinct flows: every case × 14 values of reg12 (no prerequisites), distinct priorities.
fn flows() -> Vec<Flow> {
    let mut out = Vec::new();
    let cases = common::cases::FLOWS
        .iter()
        .chain(common::cases::SWITCH_ONLY);
    for (i, text) in cases.enumerate() {
        let base: Flow = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        for k in 0..14u16 {
            let mut f = base.clone();
            f.match_.set(Field::Reg(12), u128::from(k) + 1, u128::MAX);
            f.priority = 1000 + (i as u16) * 20 + k;
            f.cookie = (i as u64) << 8 | u64::from(k);
            out.push(f);
        }
    }
    out
}

/// 20 groups of all four types.
fn groups() -> Vec<Group> {
    (1..=20u32)
        .map(|id| {
            let out = |p: u32| Action::Output {
                port: p,
                max_len: 0,
            };
            let (group_type, buckets) = match id % 4 {
                0 => (
                    GroupType::All,
                    vec![
                        Bucket::new(vec![out(1)]),
                        Bucket::new(vec![Action::DecTtl, out(2)]),
                    ],
                ),
                1 => (
                    GroupType::Select,
                    vec![
                        Bucket {
                            weight: 100,
                            ..Bucket::new(vec![
                                Action::SetField {
                                    field: Field::EthDst,
                                    value: 0x0a0000000001,
                                    mask: Field::EthDst.full_mask(),
                                },
                                out(1),
                            ])
                        },
                        Bucket {
                            weight: 50 + id as u16,
                            ..Bucket::new(vec![out(2)])
                        },
                    ],
                ),
                2 => (
                    GroupType::Indirect,
                    vec![Bucket::new(vec![Action::PushVlan(0x8100), out(id % 2 + 1)])],
                ),
                _ => (
                    GroupType::FastFailover,
                    vec![
                        Bucket {
                            watch_port: 1,
                            ..Bucket::new(vec![out(1)])
                        },
                        Bucket {
                            watch_port: 2,
                            ..Bucket::new(vec![out(2)])
                        },
                    ],
                ),
            };
            Group {
                group_id: id,
                group_type,
                buckets,
            }
        })
        .collect()
}

async fn next_packet_in(ev: &mut Events) -> Message {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match ev.recv().await {
                Some(Event::Message(_, m @ (Message::PacketIn(_) | Message::PacketIn2(_)))) => {
                    return m;
                }
                Some(_) => {}
                None => panic!("connection gone"),
            }
        }
    })
    .await
    .expect("packet-in in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_read_back_and_packets() {
    common::ovs::require("install_read_back_and_packets");
    let sw = Switch::start(2).expect("switch");
    let (conn, mut ev, features) = Connection::connect(&sw.target(), TIMEOUT)
        .await
        .expect("connect");
    assert_eq!(features.datapath_id, 1);
    // Geneve option (class 0xffff, type 0, 4 bytes) as tun_metadata0.
    let tlv = TlvTableMod {
        command: 0,
        mappings: vec![TlvMapping {
            class: 0xffff,
            ty: 0,
            len: 4,
            index: 0,
        }],
    };
    conn.send(&Message::TlvTableMod(tlv)).await.unwrap();
    conn.barrier().await.expect("tlv map");

    // Meter used by the meter instruction, then groups and flows in one bundle.
    let meter = MeterMod {
        command: 0,
        flags: meter_flags::KBPS,
        meter_id: 5,
        bands: vec![MeterBand {
            dscp_remark: None,
            rate: 1000,
            burst_size: 0,
        }],
    };
    conn.send(&Message::MeterMod(meter)).await.unwrap();
    conn.barrier().await.expect("meter");
    let groups = groups();
    let flows = flows();
    assert!(flows.len() >= 300, "{} flows", flows.len());
    let mut msgs: Vec<Message> = groups
        .iter()
        .map(|g| {
            Message::GroupMod(GroupMod {
                command: GroupModCommand::Add,
                group: g.clone(),
            })
        })
        .collect();
    msgs.extend(
        flows
            .iter()
            .map(|f| Message::FlowMod(FlowMod::add(f.clone()))),
    );
    conn.bundle(&msgs)
        .await
        .unwrap_or_else(|e| panic!("bundle: {e}"));

    // Our own flow-stats request.
    let stats = conn
        .dump_flows(FlowStatsRequest::default())
        .await
        .expect("dump flows");
    let got: HashSet<Flow> = stats.into_iter().map(|s| s.flow).collect();
    let want: HashSet<Flow> = flows.iter().cloned().collect();
    for f in want.difference(&got) {
        println!("sent, not read back: {f}");
    }
    for f in got.difference(&want) {
        println!("read back, not sent: {f}");
    }
    assert!(
        got == want,
        "flows read back with our flow-stats request differ (see above)"
    );

    // ovs-ofctl dump-flows, compared textually.
    let text = sw
        .ofctl(&["--no-stats", "dump-flows", "BR"])
        .expect("dump-flows");
    let theirs: HashSet<String> = text
        .lines()
        .filter(|l| !l.starts_with("OFPST"))
        .map(str::to_string)
        .collect();
    let ours: HashSet<String> = flows.iter().map(|f| f.to_string()).collect();
    for l in ours.difference(&theirs) {
        println!("ours only:   {l}");
    }
    for l in theirs.difference(&ours) {
        println!("ofctl only:  {l}");
    }
    assert!(
        theirs == ours,
        "ovs-ofctl dump-flows text differs (see above)"
    );

    // Groups: our group-desc request and ovs-ofctl dump-groups.
    let mut gd = conn.dump_groups().await.expect("dump groups");
    gd.sort_by_key(|g| g.group_id);
    assert_eq!(gd, groups, "groups read back");
    let text = sw.ofctl(&["dump-groups", "BR"]).expect("dump-groups");
    let theirs: HashSet<String> = text.lines().skip(1).map(|l| l.trim().to_string()).collect();
    let ours: HashSet<String> = groups.iter().map(format_group).collect();
    for l in ours.symmetric_difference(&theirs) {
        println!("group text differs: {l}");
    }
    assert!(
        theirs == ours,
        "ovs-ofctl dump-groups text differs (see above)"
    );
    println!(
        "installed and verified {} flows and {} groups",
        flows.len(),
        groups.len()
    );

    // Errors come back with the request that caused them.
    let bad = Flow::new(0, 5, Match::new().with(Field::Ipv4Src, 0x0a000001), vec![]);
    conn.send(&Message::FlowMod(FlowMod::add(bad.clone())))
        .await
        .unwrap();
    match conn.barrier().await {
        Err(ConnError::Rejected(errs)) => {
            assert_eq!(errs[0].error.name(), "OFPBMC_BAD_PREREQ");
            assert_eq!(
                errs[0].request,
                Some(Message::FlowMod(FlowMod::add(bad.clone())))
            );
        }
        r => panic!("expected a rejected flow, got {r:?}"),
    }
    // A bundle with a message the switch refuses names the culprit. (Open vSwitch refuses a
    // message that is invalid on its own as it is added, and still commits the rest; the
    // agent resynchronises after any refusal.)
    let good = Flow::new(
        0,
        6,
        Match::new().with(Field::Reg(1), 99),
        vec![Action::Output {
            port: 1,
            max_len: 0,
        }],
    );
    let msgs = [
        Message::FlowMod(FlowMod::add(good.clone())),
        Message::FlowMod(FlowMod::add(bad.clone())),
    ];
    match conn.bundle(&msgs).await {
        Err(ConnError::Rejected(errs)) => {
            assert!(
                errs.iter().any(|e| e.request == Some(msgs[1].clone())),
                "{errs:?}"
            );
        }
        r => panic!("expected a rejected bundle, got {r:?}"),
    }
    let filter = FlowStatsRequest {
        match_: Match::new().with(Field::Reg(1), 99),
        ..Default::default()
    };
    let clear = Message::FlowMod(FlowMod::delete_strict(&good));
    conn.bundle([&clear]).await.expect("cleared");
    // A bundle that fails as a whole at commit (a flow refers to a group that does not
    // exist) installs nothing.
    let dangling = Flow::new(
        0,
        7,
        Match::new().with(Field::Reg(2), 7),
        vec![Action::Group(0xdead)],
    );
    let doomed = [
        Message::FlowMod(FlowMod::add(good.clone())),
        Message::FlowMod(FlowMod::add(dangling)),
    ];
    let rejected_xids = |r: &Result<(), ConnError>| match r {
        Err(ConnError::Rejected(errs)) => {
            assert!(
                errs.iter().any(|e| e.request == Some(doomed[1].clone())),
                "{errs:?}"
            );
            errs.iter().map(|e| e.xid).collect::<HashSet<u32>>()
        }
        r => panic!("expected a rejected bundle, got {r:?}"),
    };
    rejected_xids(&conn.bundle(&doomed).await);
    assert!(
        conn.dump_flows(filter.clone()).await.unwrap().is_empty(),
        "atomic bundle left nothing behind"
    );
    // Bundles in flight together: each gets its own outcome, errors go to the one that caused
    // them, and the switch applies them in order.
    let first = conn.bundle_send(&doomed).await.expect("first bundle sent");
    // A refused message outside any bundle, sent in between, belongs to neither.
    let loose = Message::FlowMod(FlowMod::add(bad.clone()));
    conn.send(&loose).await.unwrap();
    let fine = [Message::FlowMod(FlowMod::add(good.clone()))];
    let second = conn.bundle_send(&fine).await.expect("second bundle sent");
    let third = conn.bundle_send(&doomed).await.expect("third bundle sent");
    let (r1, r2, r3) = tokio::join!(first.confirmed(), second.confirmed(), third.confirmed());
    assert!(
        rejected_xids(&r1).is_disjoint(&rejected_xids(&r3)),
        "each bundle has its own errors"
    );
    assert_eq!(r2, Ok(()), "the good bundle between two bad ones");
    match conn.barrier().await {
        Err(ConnError::Rejected(errs)) => assert_eq!(errs.len(), 1, "{errs:?}"),
        r => panic!("the loose refusal comes with the next barrier, got {r:?}"),
    }
    assert_eq!(
        conn.dump_flows(filter).await.unwrap().len(),
        1,
        "only the good bundle's flow"
    );

    // Packet-out of an ARP arrives at p1 (captured on its peer v1).
    let cap = sw.capture_arp("v1", "packet-out");
    let po = PacketOut {
        buffer_id: NO_BUFFER,
        in_port: port::CONTROLLER,
        actions: vec![Action::Output {
            port: 1,
            max_len: 0,
        }],
        data: common::arp_frame(),
    };
    conn.send(&Message::PacketOut(po)).await.unwrap();
    conn.barrier().await.expect("packet-out");
    let seen = cap.wait(TIMEOUT);
    assert!(seen.contains("ARP"), "ARP seen on v1: {seen:?}");

    // A controller flow produces a packet-in: packet-out through the tables with in_port=2.
    let trap = Flow::new(
        0,
        65000,
        Match::new()
            .with(Field::InPort, 2)
            .with(Field::EthType, 0x0806),
        vec![Action::Output {
            port: port::CONTROLLER,
            max_len: 0xffff,
        }],
    )
    .cookie(0xabc);
    conn.send(&Message::FlowMod(FlowMod::add(trap)))
        .await
        .unwrap();
    conn.barrier().await.expect("trap flow");
    let inject = PacketOut {
        buffer_id: NO_BUFFER,
        in_port: 2,
        actions: vec![Action::Output {
            port: port::TABLE,
            max_len: 0,
        }],
        data: common::arp_frame(),
    };
    conn.send(&Message::PacketOut(inject.clone()))
        .await
        .unwrap();
    match next_packet_in(&mut ev).await {
        Message::PacketIn(p) => {
            assert_eq!(p.data, common::arp_frame());
            assert_eq!(p.cookie, 0xabc);
            assert_eq!(p.match_.exact(Field::InPort), Some(2));
        }
        m => panic!("expected a packet-in, got {m:?}"),
    }

    // Packet-in2 with userdata.
    conn.send(&Message::SetPacketInFormat(2)).await.unwrap();
    let ctl = Controller {
        userdata: vec![0xde, 0xad],
        ..Controller::default()
    };
    let trap2 = Flow::new(
        0,
        65001,
        Match::new()
            .with(Field::InPort, 2)
            .with(Field::EthType, 0x0806),
        vec![Action::Controller(ctl)],
    )
    .cookie(0xdef);
    conn.send(&Message::FlowMod(FlowMod::add(trap2)))
        .await
        .unwrap();
    conn.barrier().await.expect("trap2 flow");
    conn.send(&Message::PacketOut(inject)).await.unwrap();
    match next_packet_in(&mut ev).await {
        Message::PacketIn2(p) => {
            assert_eq!(p.packet, common::arp_frame());
            assert_eq!(p.cookie, 0xdef);
            assert_eq!(p.userdata.as_deref(), Some(&[0xde, 0xad][..]));
            assert_eq!(p.metadata.exact(Field::InPort), Some(2));
        }
        m => panic!("expected a packet-in2, got {m:?}"),
    }

    // controller(pause): the packet-in2 carries a continuation; resuming it finishes the
    // pipeline (output to p1).
    let ctl = Controller {
        pause: true,
        ..Controller::default()
    };
    let pause = Flow::new(
        0,
        65010,
        Match::new()
            .with(Field::InPort, 2)
            .with(Field::EthType, 0x0806),
        vec![
            Action::Controller(ctl),
            Action::Output {
                port: 1,
                max_len: 0,
            },
        ],
    );
    conn.send(&Message::FlowMod(FlowMod::add(pause)))
        .await
        .unwrap();
    conn.barrier().await.expect("pause flow");
    let inject = PacketOut {
        buffer_id: NO_BUFFER,
        in_port: 2,
        actions: vec![Action::Output {
            port: port::TABLE,
            max_len: 0,
        }],
        data: common::arp_frame(),
    };
    conn.send(&Message::PacketOut(inject)).await.unwrap();
    let paused = match next_packet_in(&mut ev).await {
        Message::PacketIn2(p) => p,
        m => panic!("expected a packet-in2, got {m:?}"),
    };
    assert!(
        paused.continuation.is_some(),
        "paused packet-in2 has a continuation"
    );
    let cap = sw.capture_arp("v1", "resume");
    conn.send(&Message::Resume(paused)).await.unwrap();
    conn.barrier().await.expect("resume accepted");
    let seen = cap.wait(TIMEOUT);
    assert!(seen.contains("ARP"), "resumed packet reached v1: {seen:?}");
}

async fn wait_connected(ev: &mut Events) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(Event::Connected(_)) = ev.recv().await {
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_bridge_is_recreated() {
    common::ovs::require("reconnects_after_the_bridge_is_recreated");
    let sw = Switch::start(0).expect("switch");
    let (conn, mut ev) = Connection::start(&sw.target()).expect("start");
    wait_connected(&mut ev).await.expect("first connect");
    conn.barrier().await.expect("barrier");
    // A new port is announced with a port-status message.
    sw.vsctl(&[
        "add-port",
        "br0",
        "int0",
        "--",
        "set",
        "interface",
        "int0",
        "type=internal",
    ])
    .unwrap();
    let added = tokio::time::timeout(TIMEOUT, async {
        loop {
            match ev.recv().await {
                Some(Event::Message(_, Message::PortStatus(ps))) if ps.port.name == "int0" => {
                    return ps;
                }
                Some(_) => {}
                None => panic!("connection gone"),
            }
        }
    })
    .await
    .expect("port-status in time");
    assert_eq!(added.reason, 0, "OFPPR_ADD");
    // Deleting and re-adding the bridge drops the management connection.
    sw.vsctl(&["del-br", "br0"]).unwrap();
    sw.vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
        "protocols=OpenFlow13",
        "fail_mode=secure",
    ])
    .unwrap();
    wait_connected(&mut ev).await.expect("reconnect");
    conn.barrier().await.expect("barrier after reconnect");
}
