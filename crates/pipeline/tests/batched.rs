//! A large batch of inputs (a snapshot at start) is computed once, in chunks, each chunk's slots
//! shared out over the machine's cores: the result equals the same inputs applied one at a time.

mod common;

use std::collections::BTreeSet;

use pipeline::{Input, Pipeline};
use serde_json::json;

const CHASSIS: [&str; 3] = ["ch1", "ch2", "ch3"];
const NETWORKS: usize = 4;
/// Ports: 7 slots each, well above the count from which the computation is shared out, and more
/// than one chunk of it (16 384 slots).
const PORTS: usize = 2400;

fn network_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn inputs() -> Vec<Input> {
    let obj = |k: String, v: serde_json::Value| Input::Object(k, Some(v));
    let mut out = vec![Input::Tunnel(Some(1000))];
    for (i, c) in CHASSIS.iter().enumerate() {
        out.push(obj(
            format!("/chassis/{c}"),
            json!({"id": c, "tunnel_ip": format!("192.168.9.{}", i + 1)}),
        ));
        out.push(obj(format!("/chassis-up/{c}"), json!({"lease": 1})));
    }
    for n in 0..NETWORKS {
        let id = network_id(n);
        out.push(obj(
            format!("/r/networks/{id}"),
            json!({"id": id, "provider:network_type": "geneve", "provider:segmentation_id": 100 + n}),
        ));
        out.push(obj(
            format!("/r/subnets/s{n}"),
            json!({"id": format!("s{n}"), "network_id": id, "cidr": format!("10.{n}.0.0/16"),
                "enable_dhcp": n % 2 == 0, "gateway_ip": format!("10.{n}.0.1"), "ip_version": 4}),
        ));
    }
    for i in 0..PORTS {
        let id = format!("11111111-0000-4000-8000-{i:012x}");
        let n = i % NETWORKS;
        let host = CHASSIS[i % CHASSIS.len()];
        out.push(obj(
            format!("/r/ports/{id}"),
            json!({"id": id, "network_id": network_id(n),
                "mac_address": format!("fa:16:3e:00:{:02x}:{:02x}", i >> 8, i & 0xff),
                "fixed_ips": [{"subnet_id": format!("s{n}"), "ip_address": format!("10.{n}.{}.{}", i / 200, i % 200 + 2)}],
                "port_security_enabled": i % 5 != 0, "binding:host_id": host, "status": "ACTIVE",
                "admin_state_up": true, "security_groups": [common::OPEN_GROUP],
                "device_owner": "compute:nova"}),
        ));
        if host == "ch1" {
            out.push(Input::Vif(id, Some(10 + i as u32)));
        }
    }
    out
}

fn flows(p: &Pipeline) -> BTreeSet<String> {
    p.flows().map(|f| format!("{f:?}")).collect()
}

#[test]
fn a_large_batch_equals_its_inputs_one_at_a_time() {
    let mut batched = Pipeline::new("ch1");
    common::add_open_group(&mut batched);
    batched.apply_all(inputs());
    let mut single = Pipeline::new("ch1");
    common::add_open_group(&mut single);
    for input in inputs() {
        single.apply(input);
    }
    assert!(
        single.flow_count() > 3 * PORTS,
        "{} flows",
        single.flow_count()
    );
    assert_eq!(batched.flow_count(), single.flow_count());
    assert_eq!(flows(&batched), flows(&single));
    let groups = |p: &Pipeline| p.groups().cloned().collect::<Vec<_>>();
    assert_eq!(groups(&batched), groups(&single));
}
