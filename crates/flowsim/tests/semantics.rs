//! One test per simulated semantic: lookup (priority, masks, prerequisites, conjunctions),
//! instructions, resubmit, outputs, conntrack, groups, TTL, VLAN/MPLS, tunnels, rendering.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowsim::conntrack::ct_state;
use flowsim::packet::tcp_flags;
use flowsim::{DropReason, Error, FlowTables, Mac, Packet, Simulator, Tunnel, trace};
use openflow::field::port;
use openflow::message::{Bucket, Group, GroupType};
use openflow::{Action, Field, Flow};

fn mac(s: &str) -> Mac {
    s.parse().expect("test MAC")
}
fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}
fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("test IPv4")
}
fn flows(text: &[&str]) -> Vec<Flow> {
    text.iter()
        .map(|t| t.parse().unwrap_or_else(|e| panic!("{t}: {e}")))
        .collect()
}
fn tables(text: &[&str]) -> FlowTables {
    FlowTables::new(flows(text), []).expect("valid tables")
}
fn group(id: u32, ty: GroupType, buckets: &[&str]) -> Group {
    Group {
        group_id: id,
        group_type: ty,
        buckets: buckets
            .iter()
            .map(|b| Bucket::new(openflow::text::parse_actions(b).expect("bucket")))
            .collect(),
    }
}
fn icmp(src: &str, dst: &str) -> Packet {
    Packet::echo_request(
        mac("00:00:00:00:00:01"),
        mac("00:00:00:00:00:02"),
        ip(src),
        ip(dst),
    )
}
fn syn(src: &str, dst: &str, sport: u16, dport: u16, flags: u16) -> Packet {
    Packet::tcp(
        mac("00:00:00:00:00:01"),
        mac("00:00:00:00:00:02"),
        ip(src),
        ip(dst),
        sport,
        dport,
        flags,
    )
}

#[test]
fn highest_priority_wins() {
    let t = tables(&[
        "priority=10,ip actions=output:2",
        "priority=20,ip,nw_dst=10.0.0.2 actions=output:3",
        "priority=5 actions=output:4",
    ]);
    assert_eq!(
        trace(&t, 1, icmp("10.0.0.1", "10.0.0.2")).verdict.ports(),
        [3]
    );
    assert_eq!(
        trace(&t, 1, icmp("10.0.0.1", "10.0.0.9")).verdict.ports(),
        [2]
    );
    let arp = Packet::arp_request(mac("00:00:00:00:00:01"), v4("10.0.0.1"), v4("10.0.0.2"));
    assert_eq!(trace(&t, 1, arp).verdict.ports(), [4]);
}

#[test]
fn masked_matches() {
    let t = tables(&[
        "priority=10,ip,nw_dst=10.0.0.0/24 actions=output:2",
        "priority=10,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:3",
        "priority=10,reg0=0x10/0xf0 actions=output:4",
    ]);
    assert_eq!(
        trace(&t, 1, icmp("10.0.1.1", "10.0.0.77")).verdict.ports(),
        [2]
    );
    assert!(trace(&t, 1, icmp("10.0.0.1", "10.0.1.2")).verdict.is_drop());
    let bcast = Packet::ethernet(mac("00:00:00:00:00:01"), Mac::BROADCAST, 0x88b5);
    assert_eq!(trace(&t, 1, bcast.clone()).verdict.ports(), [3]);
    let marked = bcast
        .with(Field::EthDst, 0x0200_0000_0001)
        .with(Field::Reg(0), 0x1f);
    assert_eq!(trace(&t, 1, marked).verdict.ports(), [4]);
}

#[test]
fn absent_fields_never_match() {
    let t = tables(&[
        "priority=10,ip,nw_src=10.0.0.1 actions=output:2",
        "priority=10,tcp,tp_dst=80 actions=output:3",
        "priority=10,icmp6,icmp_type=135,nd_target=fe80::2 actions=output:4",
    ]);
    // Same address in ARP is arp_spa, not nw_src.
    let arp = Packet::arp_request(mac("00:00:00:00:00:01"), v4("10.0.0.1"), v4("10.0.0.2"));
    assert_eq!(
        trace(&t, 1, arp).verdict.drop,
        Some(DropReason::TableMiss { table: 0 })
    );
    let udp = Packet::udp(
        mac("00:00:00:00:00:01"),
        mac("00:00:00:00:00:02"),
        ip("10.9.0.1"),
        ip("10.9.0.2"),
        5,
        80,
    );
    assert!(trace(&t, 1, udp).verdict.is_drop());
    let tcp = syn("10.9.0.1", "10.9.0.2", 5, 80, tcp_flags::SYN);
    assert_eq!(trace(&t, 1, tcp).verdict.ports(), [3]);
    let ns = Packet::neighbor_solicitation(
        mac("00:00:00:00:00:01"),
        "fe80::1".parse().expect("v6"),
        "fe80::2".parse().expect("v6"),
    );
    assert_eq!(ns.get(Field::NdSll), Some(mac("00:00:00:00:00:01").value()));
    assert_eq!(ns.get(Field::NdTll), None);
    assert_eq!(trace(&t, 1, ns).verdict.ports(), [4]);
}

#[test]
fn conjunctive_matches() {
    let t = tables(&[
        "priority=100,ip,nw_src=10.0.0.1 actions=conjunction(7,1/2)",
        "priority=100,ip,nw_src=10.0.0.3 actions=conjunction(7,1/2)",
        "priority=100,tcp,tp_dst=22 actions=conjunction(7,2/2)",
        "priority=100,tcp,tp_dst=80 actions=conjunction(7,2/2)",
        "priority=100,conj_id=7,ip actions=output:7",
        "priority=50,ip actions=output:2",
        "priority=200,tcp,tp_dst=22,nw_dst=10.0.0.99 actions=output:9",
    ]);
    let hit = trace(&t, 1, syn("10.0.0.3", "10.0.0.2", 1000, 80, tcp_flags::SYN));
    assert_eq!(hit.verdict.ports(), [7]);
    assert_eq!(hit.passes[0].root.conjunction, Some(7));
    // One clause only: the ordinary flow.
    let one = trace(
        &t,
        1,
        syn("10.0.0.3", "10.0.0.2", 1000, 443, tcp_flags::SYN),
    );
    assert_eq!(one.verdict.ports(), [2]);
    let other = trace(&t, 1, syn("10.0.0.2", "10.0.0.2", 1000, 22, tcp_flags::SYN));
    assert_eq!(other.verdict.ports(), [2]);
    // A higher-priority ordinary flow beats the conjunction.
    let high = trace(
        &t,
        1,
        syn("10.0.0.1", "10.0.0.99", 1000, 22, tcp_flags::SYN),
    );
    assert_eq!(high.verdict.ports(), [9]);
}

#[test]
fn resubmit_nests_then_continues_and_restores_in_port() {
    let t = tables(&[
        "table=0, priority=10,in_port=1 actions=resubmit(5,1),output:3",
        "table=1, priority=10,in_port=5 actions=load:0x2a->NXM_NX_REG1[],output:2",
        "table=1, priority=5 actions=output:8",
    ]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [2, 3]);
    assert_eq!(tr.path(), [(0, Some(0)), (1, Some(0))]);
    // The register write persists after the resubmit, in_port comes back to 1.
    let after = &tr.verdict.outputs[1].packet;
    assert_eq!(after.get(Field::Reg(1)), Some(0x2a));
    assert_eq!(after.in_port(), 1);
    assert_eq!(tr.verdict.outputs[0].packet.in_port(), 5);
}

#[test]
fn resubmit_depth_limit_drops_the_whole_packet() {
    let t = tables(&["priority=10 actions=output:2,resubmit(,0)"]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.drop, Some(DropReason::ResubmitDepth));
    assert!(tr.verdict.outputs.is_empty());
    assert_eq!(tr.steps().len(), flowsim::MAX_DEPTH + 1);
    assert!(tr.to_string().contains("deeper than 64"));
}

#[test]
fn resubmit_to_an_earlier_table() {
    let t = tables(&[
        "table=0, priority=10,reg0=0x1 actions=output:3",
        "table=0, priority=5 actions=resubmit(,1),output:4",
        "table=1, priority=5 actions=load:0x1->NXM_NX_REG0[],resubmit(,0)",
    ]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [3, 4], "{tr}");
    assert_eq!(tr.path(), [(0, Some(0)), (1, Some(0)), (0, Some(0))]);
}

#[test]
fn resubmits_and_gotos_to_later_tables_do_not_nest() {
    // 200 tables in a chain, alternately by resubmit and goto_table: far more than 64 levels
    // of nested lookups, but none to an earlier table (OVS 2.6 and later count only those).
    let text: Vec<String> = (0..200u8)
        .map(|t| match t {
            199 => format!("table={t}, priority=1 actions=output:2"),
            t if t % 2 == 0 => format!("table={t}, priority=1 actions=resubmit(,{})", t + 1),
            t => format!("table={t}, priority=1 actions=goto_table:{}", t + 1),
        })
        .collect();
    let refs: Vec<&str> = text.iter().map(String::as_str).collect();
    let tr = trace(&tables(&refs), 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [2], "{tr}");
    assert_eq!(tr.steps().len(), 200);
}

#[test]
fn learn_adds_a_flow_the_next_packet_matches() {
    // Neighbour learning: ARP senders become flows setting the MAC of their address (the next
    // hop in reg2) in table 5, looked up before output.
    let t = tables(&[
        "table=0, priority=10,arp actions=learn(table=5,priority=100,idle_timeout=300,cookie=0x77,NXM_NX_REG2[]=NXM_OF_ARP_SPA[],load:NXM_NX_ARP_SHA[]->NXM_OF_ETH_DST[]),move:NXM_OF_ARP_SPA[]->NXM_NX_REG2[],resubmit(,5),output:3",
        "table=0, priority=10,ip actions=move:NXM_OF_IP_DST[]->NXM_NX_REG2[],resubmit(,5),output:2",
    ]);
    let mut sim = Simulator::new(&t);
    let to_vm = icmp("10.0.0.1", "10.0.0.9");
    let before = sim.trace(1, to_vm.clone());
    assert_eq!(before.path(), [(0, Some(0)), (5, None)]);

    let vm = mac("00:00:00:00:00:09");
    let arp = sim.trace(4, Packet::arp_request(vm, v4("10.0.0.9"), v4("10.0.0.1")));
    // Not in the tables for the rest of the pass that learned it.
    assert_eq!(arp.path(), [(0, Some(0)), (5, None)], "{arp}");
    assert!(
        arp.to_string().contains(
            "learned, in the tables from the next pass on: cookie=0x77, table=5, idle_timeout=300, priority=100,reg2=0xa000009 actions=set_field:00:00:00:00:00:09->eth_dst"
        ),
        "{arp}"
    );
    let learned = sim.tables().flows(5);
    assert_eq!(learned.len(), 1);
    assert_eq!(
        (
            learned[0].cookie,
            learned[0].priority,
            learned[0].idle_timeout
        ),
        (0x77, 100, 300)
    );

    let after = sim.trace(1, to_vm.clone());
    assert_eq!(after.path(), [(0, Some(0)), (5, Some(0x77))], "{after}");
    assert_eq!(
        after.verdict.outputs[0].packet.get(Field::EthDst),
        Some(vm.value())
    );

    // Learning again with the same match replaces the flow (a strict modify-or-add).
    let moved = mac("00:00:00:00:00:0a");
    sim.trace(
        4,
        Packet::arp_request(moved, v4("10.0.0.9"), v4("10.0.0.1")),
    );
    assert_eq!(sim.tables().flows(5).len(), 1);
    let after = sim.trace(1, to_vm);
    assert_eq!(
        after.verdict.outputs[0].packet.get(Field::EthDst),
        Some(moved.value())
    );
    // The tables given are untouched.
    assert!(t.flows(5).is_empty());
}

#[test]
fn learn_output_spec_learns_mac_locations() {
    let t = tables(&[
        "table=0, priority=10 actions=learn(table=10,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:OXM_OF_IN_PORT[]),resubmit(,10)",
        "table=10, priority=0 actions=FLOOD",
    ]);
    let mut sim = Simulator::new(&t);
    let (a, b) = (mac("00:00:00:00:00:0a"), mac("00:00:00:00:00:0b"));
    let frame = |src, dst| Packet::ethernet(src, dst, 0x88b5);
    assert_eq!(sim.trace(1, frame(a, b)).verdict.ports(), [port::FLOOD]);
    assert_eq!(sim.trace(2, frame(b, a)).verdict.ports(), [1]);
    assert_eq!(sim.trace(1, frame(a, b)).verdict.ports(), [2]);
    let text = sim.tables().flows(10)[0].to_string();
    assert!(
        text.contains("dl_dst=00:00:00:00:00:0a actions=output:1"),
        "{text}"
    );
}

#[test]
fn write_actions_run_at_the_end_with_the_final_packet() {
    let t = tables(&[
        "table=0, priority=10 actions=write_actions(output:3,set_field:10.0.0.9->ip_dst),goto_table:1",
        "table=1, priority=10 actions=set_field:7->reg0,output:2,write_actions(output:4)",
    ]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    // output:2 is applied at once; the action set's output (replaced by 4) runs last, after
    // the set_field from the action set.
    assert_eq!(tr.verdict.ports(), [2, 4]);
    let last = &tr.verdict.outputs[1].packet;
    assert_eq!(
        last.get(Field::Ipv4Dst),
        Some(u32::from(v4("10.0.0.9")).into())
    );
    assert_eq!(
        tr.verdict.outputs[0].packet.get(Field::Ipv4Dst),
        Some(u32::from(v4("10.0.0.2")).into())
    );

    let cleared = tables(&[
        "table=0, priority=10 actions=write_actions(output:3),goto_table:1",
        "table=1, priority=10 actions=clear_actions",
    ]);
    let tr = trace(&cleared, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.drop, Some(DropReason::NoOutput));

    let g = FlowTables::new(
        flows(&["priority=10 actions=write_actions(output:3,group:1)"]),
        [group(1, GroupType::Indirect, &["output:5"])],
    )
    .expect("tables");
    assert_eq!(
        trace(&g, 1, icmp("10.0.0.1", "10.0.0.2")).verdict.ports(),
        [5]
    );
}

#[test]
fn write_metadata_is_masked() {
    let t = tables(&[
        "table=0, priority=10 actions=write_metadata:0x12/0xff,goto_table:1",
        "table=1, priority=10,metadata=0x12/0xff actions=output:2",
    ]);
    let p = icmp("10.0.0.1", "10.0.0.2").with(Field::Metadata, 0xab00);
    let tr = trace(&t, 1, p);
    assert_eq!(tr.verdict.ports(), [2]);
    assert_eq!(
        tr.verdict.outputs[0].packet.get(Field::Metadata),
        Some(0xab12)
    );
}

#[test]
fn output_to_in_port_is_dropped_unless_in_port() {
    let t = tables(&["priority=10 actions=output:1"]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(
        tr.verdict.drop,
        Some(DropReason::OutputToInPort { port: 1 })
    );
    let t = tables(&["priority=10 actions=IN_PORT"]);
    assert_eq!(
        trace(&t, 1, icmp("10.0.0.1", "10.0.0.2")).verdict.ports(),
        [1]
    );
    let t = tables(&["priority=10 actions=LOCAL,CONTROLLER:65535"]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [port::LOCAL]);
    assert_eq!(tr.verdict.controller.len(), 1);
    assert_eq!(tr.verdict.controller[0].reason, 1);
}

#[test]
fn conntrack_new_then_established_after_commit() {
    let t = tables(&[
        "table=0, priority=10,ip,ct_state=-trk actions=ct(table=1,zone=5)",
        "table=1, priority=20,ct_state=+trk+new,ip,nw_src=10.0.0.1 actions=ct(commit,zone=5,exec(set_field:0x7->ct_mark)),output:2",
        "table=1, priority=10,ct_state=+trk+est-rpl,ct_mark=0x7 actions=output:3",
        "table=1, priority=10,ct_state=+trk+est+rpl actions=output:4",
        "table=1, priority=5,ct_state=+trk+new actions=drop",
    ]);
    let mut sim = Simulator::new(&t);
    let first = sim.trace(1, syn("10.0.0.1", "10.0.0.2", 1000, 22, tcp_flags::SYN));
    assert_eq!(first.verdict.ports(), [2], "{first}");
    assert_eq!(first.passes.len(), 2);
    assert_eq!(sim.conntrack().connections().len(), 1);
    // Committed but no reply yet: still +new in the original direction (OVS' `est` needs
    // packets in both directions); committing again changes nothing.
    let again = sim.trace(1, syn("10.0.0.1", "10.0.0.2", 1000, 22, tcp_flags::SYN));
    assert_eq!(again.verdict.ports(), [2], "{again}");
    assert_eq!(sim.conntrack().connections().len(), 1);
    let reply = sim.trace(2, syn("10.0.0.2", "10.0.0.1", 22, 1000, tcp_flags::ACK));
    assert_eq!(reply.verdict.ports(), [4], "{reply}");
    let est = sim.trace(1, syn("10.0.0.1", "10.0.0.2", 1000, 22, tcp_flags::ACK));
    assert_eq!(est.verdict.ports(), [3], "{est}");
    assert_eq!(sim.conntrack().connections()[0].mark, 7);
    // An unrelated connection from an address the pipeline does not commit is dropped.
    let other = sim.trace(1, syn("10.0.0.3", "10.0.0.2", 1000, 22, tcp_flags::SYN));
    assert!(other.verdict.is_drop());
    // A TCP packet without SYN and without a connection is invalid: no flow matches.
    let stray = sim.trace(1, syn("10.0.0.8", "10.0.0.2", 1, 2, tcp_flags::ACK));
    assert_eq!(stray.verdict.drop, Some(DropReason::TableMiss { table: 1 }));
    // Zones separate connections.
    let fresh = trace(&t, 1, syn("10.0.0.1", "10.0.0.2", 1000, 22, tcp_flags::ACK));
    assert!(fresh.verdict.is_drop());
}

#[test]
fn a_forced_conntrack_state_replaces_the_packets_own() {
    let t = tables(&[
        "table=0, priority=10,ip,ct_state=-trk actions=ct(table=1,zone=5)",
        "table=1, priority=20,ct_state=+trk+est+rpl actions=output:4",
        "table=1, priority=10,ct_state=+trk+new actions=ct(commit,zone=5),output:2",
    ]);
    let mut sim = Simulator::new(&t);
    // A reply with no connection at all (and no SYN, which alone would be invalid).
    sim.conntrack_mut()
        .force_state(Some(ct_state::EST | ct_state::RPL));
    let reply = sim.trace(2, syn("10.0.0.2", "10.0.0.1", 22, 1000, tcp_flags::ACK));
    assert_eq!(reply.verdict.ports(), [4], "{reply}");
    // A TCP packet without SYN taken as new, as `ofproto/trace --ct-next trk,new` does.
    sim.conntrack_mut().force_state(Some(ct_state::NEW));
    let new = sim.trace(1, syn("10.0.0.1", "10.0.0.2", 1000, 22, tcp_flags::ACK));
    assert_eq!(new.verdict.ports(), [2], "{new}");
    assert_eq!(sim.conntrack().connections().len(), 1);
    sim.conntrack_mut().force_state(None);
    let own = sim.trace(1, syn("10.0.0.8", "10.0.0.2", 1, 2, tcp_flags::ACK));
    assert!(own.verdict.is_drop(), "{own}");
}

#[test]
fn ct_fork_original_continues_untracked_and_ct_clear() {
    let t = tables(&[
        "table=0, priority=10,icmp actions=ct(table=1),ct_clear,output:5",
        "table=1, priority=10,ct_state=+trk+new,ct_nw_src=10.0.0.1 actions=output:6",
    ]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [5, 6]);
    assert_eq!(tr.verdict.outputs[0].packet.get(Field::CtState), Some(0));
    assert_eq!(tr.verdict.outputs[1].packet.get(Field::CtState), Some(0x21));
}

#[test]
fn groups_all_select_indirect_fast_failover() {
    let gs = [
        group(
            1,
            GroupType::All,
            &["set_field:9->reg0,output:2", "output:3"],
        ),
        Group {
            buckets: group(2, GroupType::Select, &["output:4", "output:5", "output:6"])
                .buckets
                .into_iter()
                .map(|b| Bucket { weight: 1, ..b })
                .collect(),
            ..group(2, GroupType::Select, &[])
        },
        group(5, GroupType::Select, &["output:4", "output:5", "output:6"]),
        group(3, GroupType::Indirect, &["output:7"]),
        Group {
            group_id: 4,
            group_type: GroupType::FastFailover,
            buckets: vec![
                Bucket {
                    watch_port: 10,
                    ..Bucket::new(vec![Action::Output {
                        port: 10,
                        max_len: 0,
                    }])
                },
                Bucket {
                    watch_port: 11,
                    ..Bucket::new(vec![Action::Output {
                        port: 11,
                        max_len: 0,
                    }])
                },
            ],
        },
    ];
    let fl = flows(&[
        "priority=10,reg1=1 actions=group:1,output:8",
        "priority=10,reg1=2 actions=group:2",
        "priority=10,reg1=3 actions=group:3",
        "priority=10,reg1=4 actions=group:4",
        "priority=10,reg1=5 actions=group:5",
    ]);
    let t = FlowTables::new(fl.clone(), gs.clone()).expect("tables");
    let p = |r: u128| icmp("10.0.0.1", "10.0.0.2").with(Field::Reg(1), r);
    let all = trace(&t, 1, p(1));
    assert_eq!(all.verdict.ports(), [2, 3, 8]);
    // Bucket changes stay in the bucket.
    assert_eq!(all.verdict.outputs[0].packet.get(Field::Reg(0)), Some(9));
    assert_eq!(all.verdict.outputs[2].packet.get(Field::Reg(0)), Some(0));
    // Select: deterministic per 5-tuple, always one bucket.
    let a = trace(&t, 1, p(2)).verdict.ports();
    assert_eq!(a.len(), 1);
    assert_eq!(trace(&t, 1, p(2)).verdict.ports(), a);
    let spread: std::collections::BTreeSet<u32> = (0..64)
        .map(|i| {
            let pkt =
                syn("10.0.0.1", "10.0.0.2", 1000 + i, 80, tcp_flags::SYN).with(Field::Reg(1), 2);
            trace(&t, 1, pkt).verdict.ports()[0]
        })
        .collect();
    assert_eq!(spread.len(), 3, "{spread:?}");
    // Every weight 0 (Bucket::new's default): OVS always picks the last live bucket.
    assert_eq!(trace(&t, 1, p(5)).verdict.ports(), [6]);
    assert_eq!(trace(&t, 1, p(3)).verdict.ports(), [7]);
    assert_eq!(trace(&t, 1, p(4)).verdict.ports(), [10]);
    let down = FlowTables::new(fl.clone(), gs.clone())
        .expect("tables")
        .with_port_down(10);
    assert_eq!(trace(&down, 1, p(4)).verdict.ports(), [11]);
    let dead = FlowTables::new(fl, gs)
        .expect("tables")
        .with_port_down(10)
        .with_port_down(11);
    assert_eq!(
        trace(&dead, 1, p(4)).verdict.drop,
        Some(DropReason::NoLiveBucket { group: 4 })
    );
}

#[test]
fn dec_ttl_decrements_or_stops_the_action_list() {
    let t = tables(&[
        "table=0, priority=10 actions=resubmit(,1),output:3",
        "table=1, priority=10 actions=dec_ttl,output:2",
    ]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [2, 3]);
    assert_eq!(tr.verdict.outputs[0].packet.get(Field::IpTtl), Some(63));
    // TTL 1: to the controller with reason invalid_ttl (as OVS does); the resubmitted list
    // stops, the caller continues.
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2").with(Field::IpTtl, 1));
    assert_eq!(tr.verdict.ports(), [3]);
    let c = &tr.verdict.controller;
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].reason, c[0].controller_id, c[0].table), (2, 0, 1));
    assert!(c[0].userdata.is_empty());
    assert_eq!(c[0].packet.get(Field::IpTtl), Some(1));
    let only = tables(&["priority=10 actions=dec_ttl,output:2"]);
    let tr = trace(&only, 1, icmp("10.0.0.1", "10.0.0.2").with(Field::IpTtl, 0));
    assert_eq!(tr.verdict.drop, None);
    assert!(tr.verdict.outputs.is_empty());
    assert_eq!(tr.verdict.controller[0].reason, 2);
    // Not IP: nothing to decrement.
    let arp = Packet::arp_request(mac("00:00:00:00:00:01"), v4("10.0.0.1"), v4("10.0.0.2"));
    assert_eq!(trace(&only, 1, arp).verdict.ports(), [2]);
}

#[test]
fn vlan_and_mpls_push_pop() {
    let t = tables(&[
        "table=0, priority=10,vlan_tci=0x1000/0x1000 actions=pop_vlan,goto_table:1",
        "table=0, priority=5 actions=push_vlan:0x8100,set_field:4196->vlan_vid,output:2",
        "table=1, priority=10,ip actions=push_mpls:0x8847,set_field:100->mpls_label,goto_table:2",
        "table=2, priority=10,ip actions=output:9",
        "table=2, priority=5,mpls,mpls_label=100 actions=output:3,pop_mpls:0x0800,goto_table:3",
        "table=3, priority=10,ip,nw_dst=10.0.0.2 actions=output:4",
    ]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [2], "{tr}");
    assert_eq!(
        tr.verdict.outputs[0].packet.get(Field::VlanVid),
        Some(0x1064)
    );
    let tagged = icmp("10.0.0.1", "10.0.0.2").with_vlan(100, 3);
    let tr = trace(&t, 1, tagged);
    assert_eq!(tr.verdict.ports(), [3, 4], "{tr}");
    let mpls_out = &tr.verdict.outputs[0].packet;
    assert_eq!(mpls_out.get(Field::Ipv4Dst), None);
    assert_eq!(mpls_out.mpls()[0].ttl, 64);
    assert_eq!(tr.verdict.outputs[1].packet.vlans(), &[]);
}

#[test]
fn tunnels_in_and_out() {
    let t = FlowTables::new(
        flows(&[
            "table=0, priority=10,in_port=7,tun_id=0x64,tun_metadata0=0x5 actions=output:1",
            "table=0, priority=10,in_port=1 actions=set_field:0x65->tun_id,set_field:192.168.0.3->tun_dst,set_field:0x9->tun_metadata0,output:7",
        ]),
        [],
    )
    .expect("tables")
    .with_tunnel_port(7);
    let rx = Tunnel::new(100, v4("192.168.0.2"), v4("192.168.0.1")).with_metadata(0, 5);
    let tr = trace(&t, 7, icmp("10.0.0.1", "10.0.0.2").with_tunnel(&rx));
    assert_eq!(tr.verdict.ports(), [1]);
    assert_eq!(tr.verdict.outputs[0].tunnel, None);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    let out = &tr.verdict.outputs[0];
    assert_eq!(out.port, 7);
    assert_eq!(
        out.tunnel,
        Some(Tunnel::new(0x65, v4("0.0.0.0"), v4("192.168.0.3")).with_metadata(0, 9))
    );
    assert!(tr.to_string().contains("tun_id=0x65"), "{tr}");
    // A port with `local_ip` sends from it, whatever the flow set.
    let t = t.with_tunnel_local_ip(7, v4("192.168.0.1"));
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(
        tr.verdict.outputs[0].tunnel.as_ref().map(|t| t.src),
        Some(v4("192.168.0.1"))
    );
    assert!(tr.to_string().contains("tun_src=192.168.0.1"), "{tr}");
}

#[test]
fn ipv6_neighbor_advertisement_fields() {
    let na = Packet::neighbor_advertisement(
        mac("00:00:00:00:00:02"),
        mac("00:00:00:00:00:01"),
        "fe80::2".parse().expect("v6"),
        "fe80::1".parse().expect("v6"),
        "fe80::2".parse().expect("v6"),
        mac("00:00:00:00:00:02"),
    );
    let t = tables(&["priority=10,icmp6,icmp_type=136,nd_tll=00:00:00:00:00:02 actions=output:2"]);
    assert_eq!(trace(&t, 1, na.clone()).verdict.ports(), [2]);
    assert_eq!(
        na.get(Field::NdTarget),
        Some(u128::from("fe80::2".parse::<Ipv6Addr>().expect("v6")))
    );
}

#[test]
fn bad_tables_are_refused() {
    let back = FlowTables::new(flows(&["table=3, priority=1 actions=goto_table:2"]), []);
    assert!(matches!(back, Err(Error::BadFlow { .. })));
    let dup = FlowTables::new(
        flows(&[
            "priority=1,ip actions=output:1",
            "priority=1,ip actions=output:2",
        ]),
        [],
    );
    assert!(matches!(dup, Err(Error::DuplicateFlow(_))));
    let missing = FlowTables::new(flows(&["priority=1 actions=group:9"]), []);
    assert!(matches!(missing, Err(Error::MissingGroup { group: 9, .. })));
    let conj = FlowTables::new(
        flows(&["priority=1 actions=conjunction(1,1/2),output:1"]),
        [],
    );
    assert!(matches!(conj, Err(Error::BadFlow { .. })));
    // A connection's original tuple only with a tracked, valid connection (as OVS 3.1 refuses).
    let tuple = |state: &str| {
        FlowTables::new(
            flows(&[&format!(
                "priority=1,ip,ct_state={state},ct_nw_dst=10.0.0.1 actions=drop"
            )]),
            [],
        )
    };
    assert!(matches!(tuple("+trk"), Err(Error::BadFlow { .. })));
    for ok in ["+trk-inv", "+new+trk", "+trk+dnat"] {
        assert!(tuple(ok).is_ok(), "{ok}");
    }
    assert!("00:11".parse::<Mac>().is_err());
}

#[test]
fn display_names_owners_and_verdict() {
    let t = tables(&[
        "cookie=0x11, table=0, priority=10,in_port=1 actions=load:0x1->NXM_NX_REG6[],resubmit(,1)",
        "cookie=0x22, table=1, priority=10,reg6=0x1 actions=learn(table=2,NXM_OF_ETH_SRC[]),output:2",
    ]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    let text = tr
        .display(|c| (c == 0x11).then(|| "port 3f2a (vm1) port security".to_string()))
        .to_string();
    for want in [
        "table 0: cookie=0x11, priority=10,in_port=1 actions=load:0x1->NXM_NX_REG6[],resubmit(,1)",
        "owner: port 3f2a (vm1) port security",
        "reg6=0x1",
        "table 1: cookie=0x22",
        "learned, in the tables from the next pass on: table=2, dl_src=00:00:00:00:00:01 actions=drop",
        "output to port 2:",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let miss = trace(&t, 2, icmp("10.0.0.1", "10.0.0.2")).to_string();
    assert!(miss.contains("table 0: no match"), "{miss}");
    assert!(miss.contains("drop: no flow matched in table 0"), "{miss}");
}

#[test]
fn ct_zone_from_register_non_ip_invalid_and_recirculation_limit() {
    let t = tables(&[
        "table=0, priority=10,ct_state=-trk actions=load:0x9->NXM_NX_REG13[0..15],ct(table=1,zone=NXM_NX_REG13[0..15])",
        "table=1, priority=10,ct_state=+trk+inv actions=output:3",
        "table=1, priority=10,ct_state=+trk+new,ct_zone=9 actions=output:2",
    ]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [2], "{tr}");
    let arp = Packet::arp_request(mac("00:00:00:00:00:01"), v4("10.0.0.1"), v4("10.0.0.2"));
    assert_eq!(trace(&t, 1, arp).verdict.ports(), [3]);

    let looping = tables(&["priority=10 actions=ct(table=0)"]);
    let tr = trace(&looping, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.passes.len(), flowsim::MAX_RECIRCULATIONS + 1);
    assert_eq!(tr.verdict.drop, Some(DropReason::RecirculationDepth));
}

#[test]
fn too_many_resubmits_drop_the_whole_packet() {
    let text: Vec<String> = (0..14u8)
        .map(|t| {
            format!(
                "table={t}, priority=1 actions=output:2,resubmit(,{n}),resubmit(,{n})",
                n = t + 1
            )
        })
        .collect();
    let refs: Vec<&str> = text.iter().map(String::as_str).collect();
    let tr = trace(&tables(&refs), 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.drop, Some(DropReason::TooManyResubmits));
    assert!(tr.verdict.outputs.is_empty());
}

#[test]
fn controller_actions_give_controller_packets() {
    let t = tables(&["cookie=0x5, priority=10 actions=controller(userdata=01.02,pause),output:2"]);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert!(tr.verdict.outputs.is_empty(), "paused before output:2");
    let c = &tr.verdict.controller[0];
    assert_eq!(
        (c.userdata.as_slice(), c.pause, c.cookie),
        (&[1u8, 2][..], true, 0x5)
    );
    assert!(tr.verdict.drop.is_none());
    assert!(
        tr.to_string()
            .contains("to controller (reason action, userdata 01.02, paused")
    );
}

#[test]
fn conntrack_icmpv6_echo_reply_is_established_reply() {
    let t = tables(&[
        "table=0, priority=10,ipv6,ct_state=-trk actions=ct(table=1)",
        "table=1, priority=10,ct_state=+trk+new actions=ct(commit),output:2",
        "table=1, priority=10,ct_state=+trk+est+rpl,ct_ipv6_src=fd00::1 actions=output:1",
    ]);
    let mut sim = Simulator::new(&t);
    let req = icmp("fd00::1", "fd00::2");
    assert_eq!(sim.trace(1, req).verdict.ports(), [2]);
    let reply = Packet::echo_reply(
        mac("00:00:00:00:00:02"),
        mac("00:00:00:00:00:01"),
        ip("fd00::2"),
        ip("fd00::1"),
    );
    let tr = sim.trace(2, reply);
    assert_eq!(tr.verdict.ports(), [1], "{tr}");
    sim.conntrack_mut().clear();
    assert!(sim.conntrack().connections().is_empty());
}

#[test]
fn a_patch_port_leads_back_in_at_its_peer_with_what_ovs_resets_reset() {
    // 5 and 6 are a patch pair on this bridge. From port 1: registers, metadata and a tunnel
    // id set, a tag popped, an action set written, conntrack run, then out to 5.
    let t = tables(&[
        "table=0,priority=10,in_port=1,dl_vlan=7 actions=pop_vlan,load:0x2a->NXM_NX_REG3[],set_field:99->tun_id,write_metadata:0x5,goto_table:1",
        "table=1,priority=10,ip actions=write_actions(output:4),ct(zone=3,table=2)",
        "table=2,priority=10,ct_state=+trk actions=output:5,output:3",
        // In again at 6: everything reset, a fresh action set; it leaves tagged to 2.
        "table=0,priority=10,in_port=6,reg3=0,metadata=0,tun_id=0,ct_state=-trk,vlan_tci=0/0x1fff actions=push_vlan:0x8100,set_field:4196->vlan_vid,write_actions(output:2)",
        "table=0,priority=5,in_port=6 actions=output:9",
    ])
    .with_patch_pair(5, 6);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2").with_vlan(7, 0));
    // The first pass ends with its action set (output:4); after the recirculation the peer's
    // part sends to 2, tagged 100, from its own action set, then the caller goes on with its
    // packet (untagged) to 3.
    assert_eq!(tr.verdict.ports(), [4, 2, 3], "{tr}");
    assert_eq!(tr.verdict.outputs[1].packet.vlans()[0].vid, 100, "{tr}");
    assert!(tr.verdict.outputs[2].packet.vlans().is_empty(), "{tr}");
    let shown = tr.to_string();
    assert!(shown.contains("patch port 5 to its peer 6"), "{shown}");
    assert!(
        tr.steps().iter().any(|s| s.table == 0
            && s.flow
                .as_ref()
                .is_some_and(|f| f.priority == 10 && f.instructions.apply.len() == 2)),
        "{shown}"
    );
    // Output to the patch port the packet came in at is skipped, as for any port.
    let t = tables(&["table=0,priority=10,in_port=5 actions=output:5"]).with_patch_pair(5, 6);
    let tr = trace(&t, 5, icmp("10.0.0.1", "10.0.0.2"));
    assert!(tr.verdict.is_drop(), "{tr}");
    // A pair that outputs to itself forever runs out of depth, as OVS' translation does.
    let t = tables(&[
        "table=0,priority=10,in_port=5 actions=output:6",
        "table=0,priority=10,in_port=6 actions=output:5",
    ])
    .with_patch_pair(5, 6);
    let tr = trace(&t, 5, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.drop, Some(DropReason::ResubmitDepth), "{tr}");
    // An error in the peer's part ends that part only ("out bridge errors do not propagate
    // back"): the caller's outputs, before and after, stand.
    let t = tables(&[
        "table=0,priority=10,in_port=1 actions=output:2,output:5,output:3",
        "table=0,priority=10,in_port=6 actions=resubmit(,0)",
    ])
    .with_patch_pair(5, 6);
    let tr = trace(&t, 1, icmp("10.0.0.1", "10.0.0.2"));
    assert_eq!(tr.verdict.ports(), [2, 3], "{tr}");
    assert!(tr.to_string().contains("the peer's part failed"), "{tr}");
}
