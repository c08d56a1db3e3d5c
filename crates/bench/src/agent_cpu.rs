//! `wyvern-bench agent-cpu`: the CPU one agent spends on the first slice's workload, measured in
//! process, without Open vSwitch (issue 17: the agent's work should grow with the change, not
//! with the network).
//!
//! The pipeline of chassis `c1` is fed what its agent gets while ports are created spread over
//! three chassis and `networks` networks: the chassis, the tunnel port, the networks and their
//! subnets, then, one port at a time as the sync stream delivers them, each port created bound
//! to its chassis (status `DOWN`), its VIF if it is local (`Input::Vif`), and its status
//! `ACTIVE` once bound. Besides the pipeline, each delta goes through what the agent does with
//! it short of the switch: the reconciler's bookkeeping (removes whose identity is re-added are
//! dropped, the set of installed identities updated) and the encoding of every flow-mod; and
//! each event recomputes what the agent follows ([`pipeline::model::Topology::needs`]), as the
//! agent's loop does after every batch. The reconciler itself needs a live OpenFlow connection, so its steps
//! are reproduced here rather than called.
//!
//! "Restart" is a fresh pipeline fed the final state as a restarted agent gets it (the snapshot,
//! then its VIFs, then what it follows), and the comparison with a switch holding exactly the
//! desired flows (those of the bulk's pipeline, which the bulk's bookkeeping shows installed);
//! `full` is [`pipeline::Pipeline::full`] on the final state.

use std::time::Instant;

use openflow::flow::FlowKey;
use openflow::{Flow, FlowMod, Message};
use pipeline::{Delta, FastMap, FastSet, Input, Pipeline};
use serde_json::{Value, json};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
const LOCAL: &str = "c1";
const TUNNEL: u32 = 1;

fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn network_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn port_id(i: usize) -> String {
    format!("11111111-0000-4000-8000-{i:012x}")
}

fn port_value(i: usize, networks: usize, active: bool) -> (String, Value) {
    let net = i % networks;
    let k = i / networks;
    let id = port_id(i);
    let mac = format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    let ip = format!("10.{net}.{}.{}", k / 250, k % 250 + 2);
    let host = CHASSIS[i % CHASSIS.len()];
    let value = json!({
        "id": id, "name": format!("p{i}"), "network_id": network_id(net), "mac_address": mac,
        "fixed_ips": [{"subnet_id": format!("s{net}"), "ip_address": ip}],
        "port_security_enabled": true, "admin_state_up": true, "security_groups": [],
        "allowed_address_pairs": [], "extra_dhcp_opts": [],
        "binding:host_id": host, "binding:vif_type": "ovs",
        "device_owner": "compute:nova", "device_id": format!("vm-p{i}"),
        "status": if active { "ACTIVE" } else { "DOWN" },
    });
    (format!("{}{id}", nb_keys::PORTS), value)
}

/// The chassis, networks and subnets (what precedes the ports).
fn base(networks: usize) -> Vec<Input> {
    let mut out = Vec::new();
    for (c, id) in CHASSIS.iter().enumerate() {
        out.push(Input::Object(
            format!("{}{id}", nb_keys::CHASSIS),
            Some(
                json!({"id": id, "tunnel_ip": format!("192.168.50.{}", c + 1),
                "gateway": false, "physnets": []}),
            ),
        ));
        out.push(Input::Object(
            format!("{}{id}", nb_keys::CHASSIS_UP),
            Some(json!("up")),
        ));
    }
    for n in 0..networks {
        let id = network_id(n);
        out.push(Input::Object(
            format!("{}{id}", nb_keys::NETWORKS),
            Some(
                json!({"id": id, "name": format!("net{n}"), "admin_state_up": true,
                "provider:network_type": "vxlan", "provider:segmentation_id": 1000 + n,
                "mtu": 1450}),
            ),
        ));
        out.push(Input::Object(
            format!("{}s{n}", nb_keys::SUBNETS),
            Some(
                json!({"id": format!("s{n}"), "network_id": id, "ip_version": 4,
                "cidr": format!("10.{n}.0.0/16"), "gateway_ip": format!("10.{n}.0.1"),
                "enable_dhcp": true}),
            ),
        ));
    }
    out
}

/// What the agent does with a delta short of the switch (see `agent::Reconciler::apply`).
#[derive(Default)]
struct Switch {
    /// The identities of the installed flows (the reconciler keeps a 64-bit hash of each, see
    /// `agent::Reconciler`).
    installed: FastSet<FlowKey>,
    flow_mods: u64,
    bytes: u64,
}

impl Switch {
    fn apply(&mut self, delta: Delta) {
        let (removed, adds) = delta.into_parts();
        let keys: FastSet<FlowKey> = adds.iter().map(Flow::key).collect();
        let removes: Vec<Flow> = removed
            .into_iter()
            .filter(|f| !keys.contains(&f.key()))
            .collect();
        for f in &removes {
            self.bytes += Message::FlowMod(FlowMod::delete_strict(f)).encode(0).len() as u64;
        }
        for f in &adds {
            self.bytes += Message::FlowMod(FlowMod::add(f.clone())).encode(0).len() as u64;
        }
        self.flow_mods += (removes.len() + adds.len()) as u64;
        for f in removes {
            self.installed.remove(&f.key());
        }
        self.installed.extend(keys);
    }
}

struct Times {
    pipeline: f64,
    agent: f64,
    follow: f64,
}

fn follow(p: &Pipeline, vifs: &[String], vif_networks: &[String]) -> usize {
    let needs = p.topology().needs(
        LOCAL,
        vifs.iter().map(String::as_str),
        vif_networks.iter().map(String::as_str),
    );
    needs.networks.len()
}

/// When the agent recomputes what it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Follow {
    /// After every event (as the agent's loop does after every batch).
    Always,
    /// Only when the pipeline's `needs_epoch` or the VIF list changed.
    Gated,
    /// Never (the pipeline and the reconciler alone).
    Never,
}

fn one(ports: usize, networks: usize, mode: Follow) -> Value {
    // The bulk, one port at a time.
    let mut p = Pipeline::new(LOCAL);
    // The switch holds the fixed flows from the start (the agent's first comparison sends them).
    let mut sw = Switch {
        installed: p.flows().map(Flow::key).collect(),
        ..Switch::default()
    };
    let mut t = Times {
        pipeline: 0.0,
        agent: 0.0,
        follow: 0.0,
    };
    let mut vifs: Vec<String> = Vec::new();
    let mut vif_networks: Vec<String> = Vec::new();
    let mut events = 0u64;
    let followed_at = std::cell::Cell::new(None);
    let step = |p: &mut Pipeline,
                sw: &mut Switch,
                t: &mut Times,
                input: Input,
                vifs: &[String],
                vif_networks: &[String]| {
        let c0 = cpu_now();
        let delta = p.apply(input);
        let c1 = cpu_now();
        sw.apply(delta);
        let c2 = cpu_now();
        let at = Some((p.needs_epoch(), vifs.len()));
        if mode == Follow::Always || (mode == Follow::Gated && followed_at.get() != at) {
            followed_at.set(at);
            std::hint::black_box(follow(p, vifs, vif_networks));
        }
        let c3 = cpu_now();
        t.pipeline += c1 - c0;
        t.agent += c2 - c1;
        t.follow += c3 - c2;
    };
    let wall = Instant::now();
    step(
        &mut p,
        &mut sw,
        &mut t,
        Input::Tunnel(Some(TUNNEL)),
        &[],
        &[],
    );
    for input in base(networks) {
        step(&mut p, &mut sw, &mut t, input, &vifs, &vif_networks);
        events += 1;
    }
    let base_cpu = t.pipeline + t.agent + t.follow;
    let mut local = 0u32;
    for i in 0..ports {
        let (key, v) = port_value(i, networks, false);
        step(
            &mut p,
            &mut sw,
            &mut t,
            Input::Object(key, Some(v)),
            &vifs,
            &vif_networks,
        );
        if CHASSIS[i % CHASSIS.len()] == LOCAL {
            local += 1;
            vifs.push(port_id(i));
            vif_networks.push(network_id(i % networks));
            step(
                &mut p,
                &mut sw,
                &mut t,
                Input::Vif(port_id(i), Some(TUNNEL + local)),
                &vifs,
                &vif_networks,
            );
            events += 1;
        }
        let (key, v) = port_value(i, networks, true);
        step(
            &mut p,
            &mut sw,
            &mut t,
            Input::Object(key, Some(v)),
            &vifs,
            &vif_networks,
        );
        events += 2;
    }
    let bulk_wall = wall.elapsed().as_secs_f64();
    let bulk_cpu = t.pipeline + t.agent + t.follow - base_cpu;
    let flows = p.flow_count();
    let mut by_table: std::collections::BTreeMap<String, usize> = Default::default();
    for f in p.flows() {
        *by_table.entry(f.table.to_string()).or_default() += 1;
    }
    let rss_bulk = rss_mib();
    assert_eq!(
        sw.installed.len(),
        flows,
        "installed flows differ from desired"
    );

    // `full()` on the final state.
    let c0 = cpu_now();
    let (full, _) = p.full();
    let full_cpu = cpu_now() - c0;
    assert_eq!(full.len(), flows, "full recomputation differs");
    drop(full);

    // A restarted agent: the snapshot (final values), its VIFs, what it follows, the comparison;
    // the snapshot applied one object at a time (as the agent's loop does) or in one batch
    // (`Pipeline::apply_all`).
    let restart = |batched: bool| {
        let c0 = cpu_now();
        let wall = Instant::now();
        let mut r = Pipeline::new(LOCAL);
        r.apply(Input::Tunnel(Some(TUNNEL)));
        let snapshot = base(networks).into_iter().chain((0..ports).map(|i| {
            let (key, v) = port_value(i, networks, true);
            Input::Object(key, Some(v))
        }));
        let mut delta = Delta::default();
        if batched {
            delta.extend(r.apply_all(snapshot));
        } else {
            for input in snapshot {
                delta.extend(r.apply(input));
            }
        }
        for (n, iface) in vifs.iter().enumerate() {
            delta.extend(r.apply(Input::Vif(iface.clone(), Some(TUNNEL + 1 + n as u32))));
        }
        std::hint::black_box(follow(&r, &vifs, &vif_networks));
        drop(delta);
        // The switch holds the bulk pipeline's flows (the bulk's bookkeeping checked that).
        let held: FastMap<FlowKey, &Flow> = p.flows().map(|f| (f.key(), f)).collect();
        let desired: FastMap<FlowKey, &Flow> = r.flows().map(|f| (f.key(), f)).collect();
        let adds = desired
            .iter()
            .filter(|(k, f)| held.get(*k) != Some(*f))
            .count();
        let removes = held.keys().filter(|k| !desired.contains_key(*k)).count();
        drop(held);
        drop(desired);
        let cpu = cpu_now() - c0;
        let wall = wall.elapsed().as_secs_f64();
        let rss = rss_mib();
        assert_eq!((adds, removes), (0, 0), "a restart would send flow-mods");
        (cpu, wall, rss)
    };
    let (restart_cpu, restart_wall, rss_restart) = restart(false);
    let (batched_cpu, batched_wall, _) = restart(true);

    json!({
        "ports": ports, "networks": networks, "follow": format!("{mode:?}"), "events": events, "flows": flows, "flows_by_table": by_table,
        "flow_mods": sw.flow_mods, "flow_mod_mib": sw.bytes as f64 / 1048576.0,
        "bulk": {
            "cpu_s": bulk_cpu, "wall_s": bulk_wall,
            "per_port_us": bulk_cpu / ports as f64 * 1e6,
            "pipeline_s": t.pipeline, "agent_s": t.agent, "follow_s": t.follow,
        },
        "restart": {"cpu_s": restart_cpu, "wall_s": restart_wall},
        "restart_batched": {"cpu_s": batched_cpu, "wall_s": batched_wall},
        "full_s": full_cpu,
        "rss_mib": {"after_bulk": rss_bulk, "after_restart": rss_restart},
    })
}

pub fn run(ports: &[usize], networks: &[usize], follow: Follow) -> Value {
    let mut runs = Vec::new();
    for &n in networks {
        for &k in ports {
            eprintln!("agent-cpu: {k} ports over {n} networks");
            runs.push(one(k, n, follow));
        }
    }
    let ratio = |n: usize| -> Option<f64> {
        let of = |k: usize| {
            runs.iter()
                .find(|r| r["networks"] == n && r["ports"] == k)
                .and_then(|r| r["bulk"]["per_port_us"].as_f64())
        };
        let (lo, hi) = (ports.iter().min()?, ports.iter().max()?);
        Some(of(*hi)? / of(*lo)?)
    };
    json!({
        "runs": runs,
        "per_port_ratio_max_over_min_ports": networks.iter()
            .map(|n| (n.to_string(), json!(ratio(*n))))
            .collect::<serde_json::Map<_, _>>(),
    })
}
