//! Benchmark: encode and decode throughput of flow-mods, and the time to install 100 000 flows
//! into a real userspace Open vSwitch through one bundle. Prints one JSON object.
//!
//! `cargo run --release -p openflow --example bench` (the install part needs root and OVS;
//! `BENCH_FLOWS=N` changes the number of flows).

#[allow(dead_code)]
#[path = "../tests/common/ovs.rs"]
mod ovs;

use std::time::{Duration, Instant};

use openflow::action::Action;
use openflow::conn::Connection;
use openflow::field::Field;
use openflow::flow::{Flow, FlowMod};
use openflow::matching::Match;
use openflow::message::{FlowStatsRequest, Message, MultipartReply, MultipartRequest};

/// A realistic pipeline flow: IPv4 destination + register match, a few rewrites, resubmit.
fn flow(i: u32) -> Flow {
    let m = Match::new()
        .with(Field::EthType, 0x0800)
        .with(Field::Reg(6), u128::from(i % 4096))
        .with_masked(Field::Ipv4Dst, u128::from(0x0a00_0000 | i), 0xffff_ffff)
        .with(Field::InPort, u128::from(1 + i % 2));
    let actions = vec![
        Action::SetField {
            field: Field::EthDst,
            value: 0x0200_0000_0000 | u128::from(i),
            mask: Field::EthDst.full_mask(),
        },
        Action::RegLoad {
            dst: openflow::Subfield::whole(Field::Reg(7)),
            value: u64::from(i),
        },
        Action::DecTtl,
        Action::Resubmit {
            port: openflow::field::port::IN_PORT,
            table: Some(10),
            ct: false,
        },
    ];
    Flow::new(0, 100, m, actions).cookie(u64::from(i))
}

fn main() {
    let n: u32 = std::env::var("BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let msgs: Vec<Message> = (0..n)
        .map(|i| Message::FlowMod(FlowMod::add(flow(i))))
        .collect();

    // Encode: every message into one reused buffer, several rounds.
    let rounds = 10;
    let mut buf = Vec::with_capacity(1 << 20);
    let t = Instant::now();
    let mut bytes = 0usize;
    for r in 0..rounds {
        for (i, m) in msgs.iter().enumerate() {
            buf.clear();
            m.encode_into((r * n + i as u32) as u32, &mut buf);
            bytes += buf.len();
        }
    }
    let enc = t.elapsed();
    let encode_rate = f64::from(n * rounds) / enc.as_secs_f64();

    // Decode.
    let encoded: Vec<Vec<u8>> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| m.encode(i as u32))
        .collect();
    let t = Instant::now();
    let mut ok = 0usize;
    for _ in 0..rounds {
        for e in &encoded {
            ok += usize::from(Message::decode(e).is_ok());
        }
    }
    let dec = t.elapsed();
    assert_eq!(ok, (n * rounds) as usize);
    let decode_rate = f64::from(n * rounds) / dec.as_secs_f64();

    let install = if ovs::available() {
        Some(install(&msgs, n))
    } else {
        None
    };
    let (secs, verified) = install.unwrap_or((f64::NAN, 0));
    println!(
        "{{\"flows\": {n}, \"encode_flow_mods_per_s\": {encode_rate:.0}, \"decode_flow_mods_per_s\": {decode_rate:.0}, \"avg_flow_mod_bytes\": {}, \"install_seconds\": {}, \"installed_flows_verified\": {verified}}}",
        bytes / (n * rounds) as usize,
        if secs.is_nan() {
            "null".to_string()
        } else {
            format!("{secs:.3}")
        }
    );
}

/// Installs the flows through one bundle into a fresh switch; returns seconds and flow count.
fn install(msgs: &[Message], n: u32) -> (f64, u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sw = ovs::Switch::start(2).expect("switch");
    rt.block_on(async {
        let (conn, _ev, _) = Connection::connect(&sw.target(), Duration::from_secs(20))
            .await
            .expect("connect");
        let t = Instant::now();
        conn.bundle(msgs).await.expect("bundle");
        let secs = t.elapsed().as_secs_f64();
        let flows = match conn
            .multipart(MultipartRequest::Aggregate(FlowStatsRequest::default()))
            .await
            .expect("aggregate")
        {
            MultipartReply::Aggregate { flow_count, .. } => flow_count,
            r => panic!("unexpected {r:?}"),
        };
        assert_eq!(flows, n, "all flows installed");
        (secs, flows)
    })
}
