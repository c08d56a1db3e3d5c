//! The incremental pipeline always equals a full recomputation, whatever the order of changes, and
//! never holds two flows with the same identity (table, priority, match). Every app and every kind
//! of owner take part: networks, subnets, ports (VM ports and router interfaces), routers with
//! extra routes, chassis, VIFs and the tunnel. Each app's flows stay in the tables the table map
//! gives it. A second oracle feeds a fresh pipeline only each input's final value, in another
//! order. Inputs reuse MACs and addresses across ports (two claims on one MAC or address on a
//! network must leave neither port with clashing flows), move chassis between tunnel addresses,
//! mix VXLAN, Geneve, VLAN and flat networks (external or not, on physical networks the chassis
//! reaches or not), and bring security groups (stateful or not), rules with every kind of remote
//! and address groups, routers with gateways and floating IPs, and load balancers (listeners,
//! pools with and without source-IP persistence and monitors, members on any subnet with every
//! weight, backup flag and health): the groups, too, equal a full recomputation and what the
//! deltas built. Trunks name parents and subports among the ports (two trunks on one port, one
//! VLAN id twice), and their subports' inner ends take numbers the VIFs and the tunnel use too.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use openflow::message::Group;
use openflow::{Action, Field, Flow};
use pipeline::apps::APPS;
use pipeline::tables::{
    REG_CT_ZONE, REG_FROM_TUNNEL, REG_NEXT_HOP, REG_NEXT_HOP6, REG_OUT_PORT, REG_SCRATCH, Register,
};
use pipeline::{Input, Pipeline};
use proptest::prelude::*;
use serde_json::json;

const NETS: [&str; 4] = [
    "11111111-0000-4000-8000-000000000001",
    "11111111-0000-4000-8000-000000000002",
    "11111111-0000-4000-8000-000000000003",
    "11111111-0000-4000-8000-000000000004",
];
/// Ports, fewer MACs than ports, and few host numbers: reuse is frequent.
const PORTS: usize = 10;
const MACS: usize = 3;
const CHASSIS: [&str; 3] = ["ch1", "ch2", "ch3"];
const GROUPS: [&str; 2] = [
    "66666666-0000-4000-8000-000000000001",
    "67666666-0000-4000-8000-000000000002",
];
const ADDRESS_GROUP: &str = "77777777-0000-4000-8000-000000000001";
const ROUTERS: [&str; 2] = [
    "44444444-0000-4000-8000-000000000001",
    "44444444-0000-4000-8000-000000000002",
];

const LBS: [&str; 2] = [
    "aaaaaaaa-0000-4000-8000-000000000001",
    "aaaaaaab-0000-4000-8000-000000000002",
];
const LISTENERS: [&str; 3] = [
    "bbbbbbbb-0000-4000-8000-000000000001",
    "bbbbbbbc-0000-4000-8000-000000000002",
    "bbbbbbbd-0000-4000-8000-000000000003",
];
const POOLS: [&str; 2] = [
    "cccccccc-0000-4000-8000-000000000001",
    "cccccccd-0000-4000-8000-000000000002",
];
const MONITORS: [&str; 2] = [
    "eeeeeeee-0000-4000-8000-000000000001",
    "eeeeeeef-0000-4000-8000-000000000002",
];

fn port_id(i: usize) -> String {
    format!("22222222-0000-4000-8000-{i:012}")
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        // Overlay and provider (VLAN, flat) networks, some external.
        (0..4usize, any::<bool>(), 0..4usize, any::<bool>(), any::<bool>()).prop_map(|(n, up, kind, external, delete)| {
            let key = format!("/r/networks/{}", NETS[n]);
            let (kind, physnet) = [("geneve", None), ("vxlan", None), ("vlan", Some("physnet1")), ("flat", Some("physnet2"))][kind];
            let value = json!({"id": NETS[n], "provider:network_type": kind,
                "provider:physical_network": physnet, "router:external": external,
                "provider:segmentation_id": if kind == "flat" { json!(null) } else { json!(n + 100) }, "admin_state_up": up});
            Input::Object(key, (!delete).then_some(value))
        }),
        // Floating IPs (their own ports among the ports) forwarding to ports through routers.
        (0..2usize, 0..PORTS, 0..PORTS, 0..3usize, 1..5usize, any::<bool>()).prop_map(|(f, own, target, router, h, delete)| {
            let id = format!("99999999-0000-4000-8000-00000000000{f}");
            let (port, fixed, router) = match router {
                0 | 1 => (json!(port_id(target)), json!(format!("10.0.0.{h}")), json!(ROUTERS[router])),
                _ => (json!(null), json!(null), json!(null)),
            };
            let value = json!({"id": id, "floating_ip_address": format!("172.24.4.{}", 10 + f),
                "floating_network_id": NETS[3], "_port": port_id(own), "port_id": port,
                "fixed_ip_address": fixed, "router_id": router});
            Input::Object(format!("/r/floatingips/{id}"), (!delete).then_some(value))
        }),
        (0..PORTS, 0..4usize, 0..4usize, 0..4usize, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), 0..7usize, (0..MACS, 1..5usize))
            .prop_map(|(p, n, host, ips, secure, active, up, delete, router, (mac, h))| {
                let id = port_id(p);
                let fixed: Vec<_> = (0..ips)
                    .map(|k| if k == 2 { json!({"ip_address": format!("2001:db8::{h}")}) } else { json!({"ip_address": format!("10.0.{k}.{h}")}) })
                    .collect();
                // Some ports are router interfaces (of one of two routers, or of an unknown one).
                let (owner, device) = match router {
                    0 | 1 => ("network:router_interface", ROUTERS[router].to_string()),
                    2 => ("network:router_interface", "55555555-0000-4000-8000-000000000009".to_string()),
                    // A chassis' SNAT address (on the external network or not).
                    3 => ("network:floatingip_agent_gateway", CHASSIS[host % 3].to_string()),
                    4 => ("network:router_gateway", ROUTERS[host % 2].to_string()),
                    // A load balancer's VIP port (floating IPs may forward to it).
                    6 => ("Octavia", format!("lb-{}", LBS[host % 2])),
                    _ => ("compute:nova", String::new()),
                };
                let value = json!({"id": id, "network_id": NETS[n], "mac_address": format!("fa:16:3e:00:00:0{mac}"),
                    "fixed_ips": fixed, "port_security_enabled": secure, "admin_state_up": up,
                    "binding:host_id": if host == 3 { "" } else { CHASSIS[host] },
                    "device_owner": owner, "device_id": device,
                    "security_groups": GROUPS.iter().enumerate().filter(|(i, _)| (h >> i) & 1 == 1).map(|(_, g)| *g).collect::<Vec<_>>(),
                    "status": if active { "ACTIVE" } else { "DOWN" },
                    "allowed_address_pairs": if p == 1 { json!([{"ip_address": "10.9.0.0/24"}]) } else { json!([]) }});
                Input::Object(format!("/r/ports/{id}"), (!delete).then_some(value))
            }),
        // Routers with extra routes through addresses the ports may hold.
        (0..2usize, any::<bool>(), 0..4usize, any::<bool>()).prop_map(|(r, up, n, delete)| {
            let routes: Vec<_> = (0..n)
                .map(|k| json!({"destination": format!("192.168.{k}.0/24"), "nexthop": format!("10.0.{}.{}", k % 2, k + 1)}))
                .chain((n == 3).then(|| json!({"destination": "2001:db8:9::/64", "nexthop": "2001:db8::2"})))
                .collect();
            // A gateway on the fourth network (external or not, carried or not), with an IPv6
            // address too for some (routed through the chassis hosting the gateway).
            let gateway_ips: Vec<_> = std::iter::once(json!({"ip_address": format!("172.24.4.{}", r + 2)}))
                .chain((r == 1 || n == 3).then(|| json!({"ip_address": format!("2001:db8::{}", r + 5)})))
                .collect();
            let gateway = (n % 2 == 1).then(|| json!({"network_id": NETS[3], "enable_snat": true,
                "external_fixed_ips": gateway_ips}));
            let routes: Vec<_> = routes.into_iter().chain((r == 1).then(|| json!({"destination": "198.51.100.0/24", "nexthop": "172.24.4.1"}))).collect();
            let value = json!({"id": ROUTERS[r], "name": format!("r{r}"), "admin_state_up": up, "routes": routes,
                "external_gateway_info": gateway, "_nat_id": r + 1,
                "snat_mode": if n >= 2 { "centralized" } else { "distributed" }});
            Input::Object(format!("/r/routers/{}", ROUTERS[r]), (!delete).then_some(value))
        }),
        // Security groups (stateful or not), their rules with every kind of remote, and an
        // address group.
        (0..2usize, any::<bool>(), any::<bool>()).prop_map(|(g, stateful, delete)| {
            let value = json!({"id": GROUPS[g], "name": format!("g{g}"), "stateful": stateful});
            Input::Object(format!("/r/security_groups/{}", GROUPS[g]), (!delete).then_some(value))
        }),
        (0..6usize, 0..2usize, any::<bool>(), any::<bool>(), 0..4usize, 0..4usize, any::<bool>())
            .prop_map(|(r, g, ingress, v6, proto, remote, delete)| {
                let id = format!("8{r}888888-0000-4000-8000-000000000001");
                let (protocol, lo, hi) = match proto {
                    0 => (json!(null), json!(null), json!(null)),
                    1 => (json!("tcp"), json!(8000 + r), json!(8010 + r)),
                    2 => (json!(if v6 { "icmpv6" } else { "icmp" }), json!(8), json!(0)),
                    _ => (json!("udp"), json!(53), json!(53)),
                };
                let mut value = json!({"id": id, "security_group_id": GROUPS[g],
                    "direction": if ingress { "ingress" } else { "egress" },
                    "ethertype": if v6 { "IPv6" } else { "IPv4" },
                    "protocol": protocol, "port_range_min": lo, "port_range_max": hi});
                match remote {
                    1 => value["remote_ip_prefix"] = json!(if v6 { "2001:db8::/64" } else { "10.0.0.0/16" }),
                    2 => value["remote_group_id"] = json!(GROUPS[1 - g]),
                    3 => value["remote_address_group_id"] = json!(ADDRESS_GROUP),
                    _ => {}
                }
                Input::Object(format!("/r/security_group_rules/{id}"), (!delete).then_some(value))
            }),
        (0..3usize, any::<bool>()).prop_map(|(n, delete)| {
            let addresses: Vec<_> = ["10.0.1.0/24", "2001:db8::/64", "10.0.0.3/32"][..=n].to_vec();
            let value = json!({"id": ADDRESS_GROUP, "addresses": addresses});
            Input::Object(format!("/r/address_groups/{ADDRESS_GROUP}"), (!delete).then_some(value))
        }),
        // Load balancers on two networks, their VIPs held by ports or not.
        (0..2usize, 0..2usize, 0..PORTS, 1..5usize, any::<bool>(), any::<bool>()).prop_map(|(l, n, port, h, up, delete)| {
            let value = json!({"id": LBS[l], "vip_address": format!("10.0.{n}.{h}"), "vip_network_id": NETS[n],
                "vip_subnet_id": format!("33333333-0000-4000-8000-00000000000{n}"), "vip_port_id": port_id(port),
                "admin_state_up": up});
            Input::Object(format!("/r/loadbalancers/{}", LBS[l]), (!delete).then_some(value))
        }),
        (0..3usize, 0..2usize, 0..3usize, any::<bool>(), any::<bool>()).prop_map(|(l, lb, pool, udp, delete)| {
            let value = json!({"id": LISTENERS[l], "_loadbalancer_id": LBS[lb], "protocol": if udp { "UDP" } else { "HTTP" },
                "protocol_port": 80 + l, "default_pool_id": POOLS.get(pool), "admin_state_up": l != 2 || lb == 0});
            Input::Object(format!("/r/listeners/{}", LISTENERS[l]), (!delete).then_some(value))
        }),
        (0..2usize, any::<bool>(), 0..3usize, any::<bool>()).prop_map(|(p, source_ip, monitor, delete)| {
            let value = json!({"id": POOLS[p], "lb_algorithm": if source_ip { "SOURCE_IP" } else { "ROUND_ROBIN" },
                "healthmonitor_id": MONITORS.get(monitor), "admin_state_up": true});
            Input::Object(format!("/r/pools/{}", POOLS[p]), (!delete).then_some(value))
        }),
        (0..2usize, 0..2usize, any::<bool>(), any::<bool>()).prop_map(|(h, pool, up, delete)| {
            let value = json!({"id": MONITORS[h], "_pool_id": POOLS[pool], "type": (["TCP", "HTTP"][h]),
                "delay": 1, "timeout": 1, "max_retries": 2, "admin_state_up": up});
            Input::Object(format!("/r/healthmonitors/{}", MONITORS[h]), (!delete).then_some(value))
        }),
        (0..5usize, 0..2usize, 0..3usize, 1..5usize, 0..3u16, any::<bool>(), 0..3usize, any::<bool>(), any::<bool>())
            .prop_map(|(m, pool, s, h, weight, backup, health, up, delete)| {
                let id = format!("dddddddd-0000-4000-8000-00000000000{m}");
                let value = json!({"id": id, "_pool_id": POOLS[pool], "_loadbalancer_id": LBS[pool],
                    "address": format!("10.0.{s}.{h}"), "protocol_port": 8080,
                    "subnet_id": (s < 2).then(|| format!("33333333-0000-4000-8000-00000000000{s}")),
                    "weight": weight, "backup": backup, "admin_state_up": up,
                    "_health": (["", "ONLINE", "ERROR"][health])});
                Input::Object(format!("/r/members/{id}"), (!delete).then_some(value))
            }),
        // Service function chains: pairs of ports (SF-aware or not), groups of them, classifiers
        // from ports, chains (symmetric or not) over the groups.
        (0..3usize, 0..PORTS, 0..PORTS, any::<bool>(), any::<bool>()).prop_map(|(i, a, b, mpls, delete)| {
            let id = format!("9a000000-0000-4000-8000-00000000000{i}");
            let value = json!({"id": id, "ingress": port_id(a), "egress": port_id(b),
                "service_function_parameters": {"correlation": if mpls { json!("mpls") } else { json!(null) }, "weight": 1}});
            Input::Object(format!("/r/port_pairs/{id}"), (!delete).then_some(value))
        }),
        (0..2usize, 0..4usize, any::<bool>()).prop_map(|(g, pairs, delete)| {
            let id = format!("9b000000-0000-4000-8000-00000000000{g}");
            let pairs: Vec<String> = (0..pairs).map(|i| format!("9a000000-0000-4000-8000-00000000000{}", (g + i) % 3)).collect();
            Input::Object(format!("/r/port_pair_groups/{id}"), (!delete).then_some(json!({"id": id, "port_pairs": pairs})))
        }),
        (0..2usize, 0..PORTS, 0..PORTS, any::<bool>(), any::<bool>()).prop_map(|(f, src, dst, v6, delete)| {
            let id = format!("9c000000-0000-4000-8000-00000000000{f}");
            let value = json!({"id": id, "ethertype": if v6 { "IPv6" } else { "IPv4" }, "protocol": "tcp",
                "destination_port_range_min": 80 + f, "destination_port_range_max": 90,
                "logical_source_port": port_id(src), "logical_destination_port": port_id(dst)});
            Input::Object(format!("/r/flow_classifiers/{id}"), (!delete).then_some(value))
        }),
        (0..2usize, 0..3usize, any::<bool>(), any::<bool>()).prop_map(|(c, groups, symmetric, delete)| {
            let id = format!("9d000000-0000-4000-8000-00000000000{c}");
            let groups: Vec<String> = (0..groups).map(|g| format!("9b000000-0000-4000-8000-00000000000{}", (c + g) % 2)).collect();
            let value = json!({"id": id, "chain_id": c + 1, "port_pair_groups": groups,
                "flow_classifiers": [format!("9c000000-0000-4000-8000-00000000000{c}")],
                "chain_parameters": {"correlation": "mpls", "symmetric": symmetric}});
            Input::Object(format!("/r/port_chains/{id}"), (!delete).then_some(value))
        }),
        // Malformed values are ignored, never taken for deletions.
        (0..PORTS).prop_map(|p| Input::Object(format!("/r/ports/{}", port_id(p)), Some(json!({"id": port_id(p), "mac_address": "bad"})))),
        // Subnets move between networks and switch DHCP on and off.
        (0..4usize, 0..4usize, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(s, n, dhcp, v6, delete)| {
            let id = format!("33333333-0000-4000-8000-00000000000{s}");
            let (cidr, gateway) = match (s, v6) {
                (_, true) => ("2001:db8::/64".to_string(), json!(null)),
                (3, false) => ("172.24.4.0/24".to_string(), json!("172.24.4.1")),
                _ => (format!("10.0.{s}.0/24"), json!(format!("10.0.{s}.1"))),
            };
            let value = json!({"id": id, "network_id": NETS[n], "cidr": cidr, "enable_dhcp": dhcp,
                "gateway_ip": gateway});
            Input::Object(format!("/r/subnets/{id}"), (!delete).then_some(value))
        }),
        // Chassis move between tunnel addresses over time.
        (0..3usize, 1..3usize, any::<bool>()).prop_map(|(c, net, delete)| {
            // Gateway chassis and the physical networks they reach change too (elections).
            let value = json!({"id": CHASSIS[c], "tunnel_ip": format!("192.168.5{net}.{}", c + 1),
                "gateway": net == 2, "physnets": if c == 2 { json!(["physnet1"]) } else { json!(["physnet1", "physnet2"]) }});
            Input::Object(format!("/chassis/{}", CHASSIS[c]), (!delete).then_some(value))
        }),
        (0..3usize, any::<bool>()).prop_map(|(c, delete)| {
            Input::Object(format!("/chassis-up/{}", CHASSIS[c]), (!delete).then_some(json!("up")))
        }),
        // What watchers report of the chassis' data plane (the reporters among them and beyond).
        (0..5usize, prop::collection::btree_map(0..3usize, any::<bool>(), 0..3), any::<bool>()).prop_map(|(w, verdicts, delete)| {
            let reporter = ["ch1", "ch2", "ch3", "w4", "w5"][w];
            let value: serde_json::Map<String, serde_json::Value> = verdicts.iter()
                .map(|(c, up)| (CHASSIS[*c].to_string(), json!(if *up { "up" } else { "down" }))).collect();
            Input::Object(format!("/chassis-peers/{reporter}"), (!delete).then_some(serde_json::Value::Object(value)))
        }),
        // The data plane of chassis as BFD sees it (up, down, not known), with or without a lease.
        (0..3usize, prop::option::of(any::<bool>())).prop_map(|(c, state)| Input::PeerDataPlane(CHASSIS[c].to_string(), state)),
        // VIF and tunnel numbers overlap: claims on one number by two VIFs, or by a VIF and
        // the tunnel, must leave no flows behind either.
        (0..PORTS, prop::option::of(1u32..7)).prop_map(|(p, ofport)| Input::Vif(port_id(p), ofport)),
        prop::option::of(1u32..4).prop_map(Input::Tunnel),
        (0..2usize, prop::option::of(20u32..22)).prop_map(|(n, ofport)| Input::Patch(["physnet1", "physnet2"][n].to_string(), ofport)),
        // Trunks: a parent and subports among the ports (VLAN ids and ports named twice too),
        // and their subports' inner ends, numbered among the VIFs.
        (0..2usize, 0..PORTS, prop::collection::vec((0..PORTS, 100u16..103), 0..3), any::<bool>()).prop_map(|(t, parent, subs, delete)| {
            let id = format!("7a000000-0000-4000-8000-00000000000{t}");
            let subs: Vec<_> = subs.iter().map(|(p, v)| json!({"port_id": port_id(*p), "segmentation_type": "vlan", "segmentation_id": v})).collect();
            let value = json!({"id": id, "port_id": port_id(parent), "sub_ports": subs});
            Input::Object(format!("/r/trunks/{id}"), (!delete).then_some(value))
        }),
        (0..PORTS, prop::option::of(1u32..9)).prop_map(|(p, ofport)| Input::Inner(port_id(p), ofport)),
    ]
}

/// The registers a flow writes.
fn written(f: &Flow) -> Vec<Register> {
    let reg = |field: Field| match field {
        Field::Reg(n) if n == REG_FROM_TUNNEL => Some(Register::FromTunnel),
        Field::Reg(n) if REG_SCRATCH.contains(&n) => Some(Register::Scratch),
        Field::Reg(n) if n == REG_CT_ZONE => Some(Register::CtZone),
        Field::Reg(n) if n == REG_OUT_PORT => Some(Register::OutPort),
        Field::Reg(n) if n == REG_NEXT_HOP => Some(Register::NextHop),
        Field::Reg(n) if REG_NEXT_HOP6.contains(&n) => Some(Register::NextHop6),
        Field::Metadata => Some(Register::Metadata),
        _ => None,
    };
    let mut out: Vec<Register> = f
        .instructions
        .apply
        .iter()
        .filter_map(|a| match a {
            Action::SetField { field, .. } => reg(*field),
            Action::Move { dst, .. } => reg(dst.field),
            _ => None,
        })
        .collect();
    if f.instructions.write_metadata().is_some() {
        out.push(Register::Metadata);
    }
    out
}

/// The second oracle: each input's final value, fed to a fresh pipeline in key order.
#[derive(Default)]
struct Finals {
    objects: BTreeMap<String, serde_json::Value>,
    vifs: BTreeMap<String, u32>,
    inner: BTreeMap<String, u32>,
    tunnel: Option<u32>,
    patches: BTreeMap<String, u32>,
    data_plane: BTreeMap<String, bool>,
}

impl Finals {
    fn record(&mut self, input: &Input) {
        match input {
            Input::Object(key, Some(v)) => {
                // A malformed value changes nothing.
                let decodes = nb_keys::parse(key)
                    .and_then(|(kind, id)| pipeline::model::Object::decode(kind, id, v))
                    .is_some();
                if decodes {
                    self.objects.insert(key.clone(), v.clone());
                }
            }
            Input::Object(key, None) => {
                self.objects.remove(key);
            }
            Input::Vif(id, Some(o)) => {
                self.vifs.insert(id.clone(), *o);
            }
            Input::Vif(id, None) => {
                self.vifs.remove(id);
            }
            Input::Inner(id, Some(o)) => {
                self.inner.insert(id.clone(), *o);
            }
            Input::Inner(id, None) => {
                self.inner.remove(id);
            }
            Input::Tunnel(t) => self.tunnel = *t,
            Input::Patch(physnet, Some(o)) => {
                self.patches.insert(physnet.clone(), *o);
            }
            Input::Patch(physnet, None) => {
                self.patches.remove(physnet);
            }
            Input::PeerDataPlane(c, Some(up)) => {
                self.data_plane.insert(c.clone(), *up);
            }
            Input::PeerDataPlane(c, None) => {
                self.data_plane.remove(c);
            }
        }
    }

    fn pipeline(&self) -> Pipeline {
        let mut fresh = Pipeline::new("ch1");
        for (k, v) in self.objects.iter().rev() {
            fresh.apply(Input::Object(k.clone(), Some(v.clone())));
        }
        for (id, o) in &self.vifs {
            fresh.apply(Input::Vif(id.clone(), Some(*o)));
        }
        for (id, o) in &self.inner {
            fresh.apply(Input::Inner(id.clone(), Some(*o)));
        }
        fresh.apply(Input::Tunnel(self.tunnel));
        for (physnet, o) in &self.patches {
            fresh.apply(Input::Patch(physnet.clone(), Some(*o)));
        }
        for (c, up) in self.data_plane.iter().rev() {
            fresh.apply(Input::PeerDataPlane(c.clone(), Some(*up)));
        }
        fresh
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn incremental_equals_full(inputs in prop::collection::vec(input(), 1..60)) {
        let mut pipeline = Pipeline::new("ch1");
        let mut installed: HashSet<openflow::Flow> = pipeline.flows().cloned().collect();
        let mut groups: BTreeMap<u32, Group> = BTreeMap::new();
        let mut finals = Finals::default();
        // A quiet twin: the same flows, no deltas.
        let mut quiet = Pipeline::new("ch1");
        quiet.set_quiet(true);
        for i in inputs {
            finals.record(&i);
            prop_assert!(quiet.apply(i.clone()).is_empty(), "a quiet pipeline gave a delta");
            let delta = pipeline.apply(i);
            // The deltas, applied to what a switch holds, give the desired set too.
            for f in delta.removed() {
                prop_assert!(installed.remove(f), "removed a flow that was not installed: {f}");
            }
            for f in delta.added() {
                prop_assert!(installed.insert(f.clone()), "added a flow twice: {f}");
            }
            for (id, g) in delta.groups() {
                match g {
                    Some(g) => groups.insert(id, g.clone()),
                    None => groups.remove(&id),
                };
            }
            for (app, owner, f) in pipeline.flows_by_app() {
                prop_assert!(pipeline::tables::writes(app, f.table), "{app} ({owner:?}) wrote into table {}", f.table);
                let spec = APPS.iter().map(|a| a.spec()).find(|s| s.name == app).expect("a registered app");
                for reg in written(f) {
                    prop_assert!(spec.writes.contains(&reg), "{app} writes {reg:?} undeclared: {f}");
                }
            }
            for (app, owner, deps) in pipeline.dependencies() {
                let spec = APPS.iter().map(|a| a.spec()).find(|s| s.name == app).expect("a registered app");
                for kind in deps.iter().filter_map(|d| d.kind()) {
                    // A chassis is its registration and its liveness.
                    let declared = spec.inputs.contains(&kind)
                        || (kind == pipeline::model::Kind::Chassis && spec.inputs.contains(&pipeline::model::Kind::ChassisUp));
                    prop_assert!(declared, "{app} ({owner:?}) reads {kind:?} undeclared");
                }
            }
            let incremental: HashSet<openflow::Flow> = pipeline.flows().cloned().collect();
            prop_assert_eq!(pipeline.flow_count(), pipeline.flows().count(), "the kept count");
            let desired: BTreeMap<u32, Group> = pipeline.groups().map(|g| (g.group_id, g.clone())).collect();
            let (full, full_groups) = pipeline.full();
            prop_assert_eq!(&incremental, &full);
            prop_assert_eq!(&desired, &full_groups);
            prop_assert_eq!(&incremental, &installed);
            prop_assert_eq!(&desired, &groups, "the deltas' groups differ");
            let fresh = finals.pipeline();
            let fresh_flows: HashSet<Flow> = fresh.flows().cloned().collect();
            prop_assert_eq!(&incremental, &fresh_flows, "a fresh pipeline fed the final values differs");
            let quiet_flows: HashSet<Flow> = quiet.flows().cloned().collect();
            prop_assert_eq!(&incremental, &quiet_flows, "the quiet pipeline's flows differ");
            let quiet_groups: BTreeMap<u32, Group> = quiet.groups().map(|g| (g.group_id, g.clone())).collect();
            prop_assert_eq!(&desired, &quiet_groups, "the quiet pipeline's groups differ");
            let fresh_groups: BTreeMap<u32, Group> = fresh.groups().map(|g| (g.group_id, g.clone())).collect();
            prop_assert_eq!(&desired, &fresh_groups, "a fresh pipeline's groups differ");
            // Every group a flow sends to exists.
            for f in &incremental {
                for a in &f.instructions.apply {
                    if let Action::Group(id) = a {
                        prop_assert!(desired.contains_key(id), "{f} sends to missing group {id}");
                    }
                }
            }
            let keys: HashSet<_> = incremental.iter().map(|f| f.key()).collect();
            prop_assert_eq!(keys.len(), incremental.len(), "two flows share table, priority and match");
        }
    }

    /// While `needs_epoch` stays, what the chassis follows stays.
    #[test]
    fn needs_change_only_with_the_epoch(inputs in prop::collection::vec(input(), 1..80)) {
        let mut pipeline = Pipeline::new("ch1");
        let mut vifs: BTreeSet<String> = BTreeSet::new();
        let needs = |p: &Pipeline, vifs: &BTreeSet<String>| {
            p.topology().needs("ch1", vifs.iter().map(String::as_str), std::iter::empty())
        };
        let mut before = needs(&pipeline, &vifs);
        for i in inputs {
            let epoch = pipeline.needs_epoch();
            if let Input::Vif(id, ofport) = &i {
                match ofport {
                    Some(_) => vifs.insert(id.clone()),
                    None => vifs.remove(id),
                };
            }
            pipeline.apply(i.clone());
            let after = needs(&pipeline, &vifs);
            if pipeline.needs_epoch() == epoch {
                prop_assert_eq!(&after, &before, "{:?} changed what is followed, epoch unchanged", i);
            }
            before = after;
        }
    }

    /// Inputs applied in batches (`apply_all`: each affected pair recomputed once) give what
    /// they give one at a time, and the batches' deltas take a switch there.
    #[test]
    fn batches_equal_one_at_a_time(inputs in prop::collection::vec(input(), 1..60), size in 1usize..12) {
        let mut single = Pipeline::new("ch1");
        let mut batched = Pipeline::new("ch1");
        let mut installed: HashSet<openflow::Flow> = batched.flows().cloned().collect();
        let mut groups: BTreeMap<u32, Group> = BTreeMap::new();
        for batch in inputs.chunks(size) {
            for i in batch {
                single.apply(i.clone());
            }
            let delta = batched.apply_all(batch.iter().cloned());
            for f in delta.removed() {
                prop_assert!(installed.remove(f), "removed a flow that was not installed: {f}");
            }
            for f in delta.added() {
                prop_assert!(installed.insert(f.clone()), "added a flow twice: {f}");
            }
            for (id, g) in delta.groups() {
                match g {
                    Some(g) => groups.insert(id, g.clone()),
                    None => groups.remove(&id),
                };
            }
            let want: HashSet<openflow::Flow> = single.flows().cloned().collect();
            let got: HashSet<openflow::Flow> = batched.flows().cloned().collect();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(&installed, &want);
            let want_groups: BTreeMap<u32, Group> = single.groups().map(|g| (g.group_id, g.clone())).collect();
            prop_assert_eq!(&groups, &want_groups);
            prop_assert_eq!(batched.flow_count(), single.flow_count());
        }
    }
}

/// A case the property test found (two router interfaces of one router on one network with
/// the same MAC, one of them down, a floating IP through the router, a VIF): the pipeline kept
/// incrementally must equal the one computed in full.
#[test]
fn router_interfaces_sharing_a_mac_with_a_floating_ip() {
    let port = |id: &str, up: bool| {
        Input::Object(
            format!("/r/ports/{id}"),
            Some(json!({
                "admin_state_up": up, "allowed_address_pairs": [],
                "binding:host_id": "ch1", "device_id": "44444444-0000-4000-8000-000000000001",
                "device_owner": "network:router_interface", "fixed_ips": [], "id": id,
                "mac_address": "fa:16:3e:00:00:00",
                "network_id": "11111111-0000-4000-8000-000000000001",
                "port_security_enabled": false,
                "security_groups": ["66666666-0000-4000-8000-000000000001"], "status": "DOWN",
            })),
        )
    };
    let inputs = vec![
        Input::Object(
            "/r/routers/44444444-0000-4000-8000-000000000001".into(),
            Some(json!({
                "_nat_id": 1, "admin_state_up": true,
                "external_gateway_info": {"enable_snat": true,
                    "external_fixed_ips": [{"ip_address": "172.24.4.2"}],
                    "network_id": "11111111-0000-4000-8000-000000000004"},
                "id": "44444444-0000-4000-8000-000000000001", "name": "r0",
                "routes": [{"destination": "192.168.0.0/24", "nexthop": "10.0.0.1"}],
                "snat_mode": "distributed",
            })),
        ),
        Input::Object(
            "/r/floatingips/99999999-0000-4000-8000-000000000000".into(),
            Some(json!({
                "_port": "22222222-0000-4000-8000-000000000009",
                "fixed_ip_address": "10.0.0.1", "floating_ip_address": "172.24.4.10",
                "floating_network_id": "11111111-0000-4000-8000-000000000004",
                "id": "99999999-0000-4000-8000-000000000000",
                "port_id": "22222222-0000-4000-8000-000000000003",
                "router_id": "44444444-0000-4000-8000-000000000001",
            })),
        ),
        Input::Patch("physnet2".into(), Some(20)),
        Input::Object(
            "/r/networks/11111111-0000-4000-8000-000000000004".into(),
            Some(json!({
                "admin_state_up": true, "id": "11111111-0000-4000-8000-000000000004",
                "provider:network_type": "flat", "provider:physical_network": "physnet2",
                "provider:segmentation_id": null, "router:external": true,
            })),
        ),
        port("22222222-0000-4000-8000-000000000003", true),
        port("22222222-0000-4000-8000-000000000009", false),
        Input::Vif("22222222-0000-4000-8000-000000000003".into(), Some(1)),
    ];
    let mut pipeline = Pipeline::new("ch1");
    for (step, i) in inputs.into_iter().enumerate() {
        pipeline.apply(i);
        let incremental: BTreeSet<String> = pipeline.flows().map(|f| f.to_string()).collect();
        let full: BTreeSet<String> = pipeline.full().0.iter().map(|f| f.to_string()).collect();
        let only_incremental: Vec<_> = incremental.difference(&full).collect();
        let only_full: Vec<_> = full.difference(&incremental).collect();
        assert!(
            only_incremental.is_empty() && only_full.is_empty(),
            "after input {step}: kept only: {only_incremental:#?}\nfull only: {only_full:#?}"
        );
    }
}
