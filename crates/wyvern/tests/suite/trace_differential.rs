//! Our simulator against Open vSwitch's own tracer. A routed lab (3 chassis; project alpha's
//! router r1 joins web and the dual-stack app network and has an extra route through gw1;
//! project beta has the same CIDRs and router r2) and, once every agent has programmed br-int,
//! a few hundred packets — hand-picked and random, from every VM and from the tunnel with each
//! network's VNI — each traced twice on its chassis: by `flowsim` over the flows read from the
//! switch (as `wyvern trace --from-switch` reads them) and by `ovs-appctl ofproto/trace br-int`
//! run through `wyvern lab exec`'s environment. The verdicts must agree: the tables visited with
//! the cookie of each flow hit, each output (port; Ethernet addresses, TTL, IP addresses, ARP
//! fields and ICMP type as the packet leaves; tunnel destination and VNI), each packet to the
//! controller (reason, controller id, the flow's cookie, userdata), and so whether the packet
//! was dropped. Some packets are built as `wyvern trace` builds them (ARP probes, replies and
//! gratuitous ARP, DHCP, the gateway's MAC, multicast, VLAN tags, from the tunnel), so the
//! packets the command line sends are checked too; tunnel outputs' source address as well. A mismatch fails the test with both traces; `TRACE_DIFF_SEED` repeats a run's
//! random packets.
//!
//! Conntrack (the security groups' stages) gives every packet `trk,new` in both tracers
//! (`--ct-next` for ofproto/trace, a forced state for the simulator).
//!
//! Open vSwitch's verdict is read from its datapath actions (ports mapped back to OpenFlow
//! ports with `dpif/show`) and the OpenFlow part of its trace (tables, userdata). br-int holds no
//! groups (checked): the select groups, whose bucket OVS leaves to the datapath's hash, are not
//! part of this comparison.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use chassis::Encap;
use flowsim::packet::{ip_proto, tcp_flags};
use flowsim::{FlowTables, Mac, Packet, Trace, Tunnel};
use lab::{Lab, LabOptions, Topology};
use openflow::Field;
use testbed::PHY_BRIDGE;
use trace::request::mac_of;
use trace::{ArpKind, DhcpKind, FlowSet, FromTunnel, Inventory, Local, Probe, Request, fetch};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
/// Random packets on top of the hand-picked ones.
const RANDOM: usize = 120;

fn topology(name: &str) -> Topology {
    let text = format!(
        "name = \"{name}\"\n[underlay]\ncidr = \"172.31.49.0/24\"\n\
         [[chassis]]\nname = \"c1\"\n[[chassis]]\nname = \"c2\"\n[[chassis]]\nname = \"c3\"\n\
         [[network]]\nname = \"web\"\nproject = \"alpha\"\n\
         [[network.subnet]]\nname = \"web-v4\"\ncidr = \"10.1.0.0/24\"\ngateway = \"10.1.0.1\"\n\
         [[network]]\nname = \"app\"\nproject = \"alpha\"\n\
         [[network.subnet]]\nname = \"app-v4\"\ncidr = \"10.2.0.0/24\"\ngateway = \"10.2.0.1\"\n\
         [[network.subnet]]\nname = \"app-v6\"\ncidr = \"fd00:2::/64\"\ngateway = \"fd00:2::1\"\n\
         [[network]]\nname = \"bweb\"\nproject = \"beta\"\n\
         [[network.subnet]]\nname = \"bweb-v4\"\ncidr = \"10.1.0.0/24\"\ngateway = \"10.1.0.1\"\n\
         [[network]]\nname = \"bdb\"\nproject = \"beta\"\n\
         [[network.subnet]]\nname = \"bdb-v4\"\ncidr = \"10.3.0.0/24\"\ngateway = \"10.3.0.1\"\n\
         [[router]]\nname = \"r1\"\nproject = \"alpha\"\n\
         interfaces = [\"web-v4\", \"app-v4\", \"app-v6\"]\n\
         routes = [{{ destination = \"192.168.50.0/24\", nexthop = \"10.2.0.20\" }}]\n\
         [[router]]\nname = \"r2\"\nproject = \"beta\"\ninterfaces = [\"bweb-v4\", \"bdb-v4\"]\n\
         [[vm]]\nname = \"web1\"\nnetwork = \"web\"\nchassis = \"c1\"\nip = \"10.1.0.11\"\n\
         [[vm]]\nname = \"web2\"\nnetwork = \"web\"\nchassis = \"c2\"\nip = \"10.1.0.12\"\n\
         [[vm]]\nname = \"app1\"\nnetwork = \"app\"\nchassis = \"c2\"\nip = \"10.2.0.11\"\n\
         [[vm]]\nname = \"gw1\"\nnetwork = \"app\"\nchassis = \"c3\"\nip = \"10.2.0.20\"\n\
         forwarding = true\nextra_addresses = [\"192.168.50.1/24\"]\n\
         [[vm]]\nname = \"bweb1\"\nnetwork = \"bweb\"\nchassis = \"c3\"\nip = \"10.1.0.11\"\n\
         [[vm]]\nname = \"bdb1\"\nnetwork = \"bdb\"\nchassis = \"c1\"\nip = \"10.3.0.21\"\n"
    );
    Topology::parse(&text, Path::new("trace_differential.toml")).expect("valid topology")
}

/// One chassis as both tracers see it.
struct Switch {
    name: String,
    local: Local,
    tables: FlowTables,
    tunnel_ip: Ipv4Addr,
    /// OpenFlow port of each datapath port of br-int.
    ofport: HashMap<u32, u32>,
}

/// What became of a packet, in terms both tracers can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// Tables visited in order, with the cookie of the flow hit (`None`: table miss).
    tables: Vec<(u8, Option<u64>)>,
    outputs: Vec<Out>,
    controller: Vec<ToController>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    port: u32,
    headers: Headers,
    /// Tunnel source, destination and VNI.
    tunnel: Option<(Ipv4Addr, Ipv4Addr, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ToController {
    reason: u8,
    controller_id: u16,
    cookie: u64,
    userdata: Vec<u8>,
}

/// The header fields a flow may rewrite, as the packet leaves: the value of each that the
/// packet carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Headers(BTreeMap<Field, u128>);

/// The fields of [`Headers`] by the datapath's name of them (`set(eth(src=…))`).
const REWRITABLE: [(&str, &str, Field); 17] = [
    ("eth", "src", Field::EthSrc),
    ("eth", "dst", Field::EthDst),
    ("ipv4", "src", Field::Ipv4Src),
    ("ipv4", "dst", Field::Ipv4Dst),
    ("ipv4", "ttl", Field::IpTtl),
    ("ipv6", "src", Field::Ipv6Src),
    ("ipv6", "dst", Field::Ipv6Dst),
    ("ipv6", "hlimit", Field::IpTtl),
    ("arp", "op", Field::ArpOp),
    ("arp", "sip", Field::ArpSpa),
    ("arp", "tip", Field::ArpTpa),
    ("arp", "sha", Field::ArpSha),
    ("arp", "tha", Field::ArpTha),
    ("icmp", "type", Field::IcmpType),
    ("icmp", "code", Field::IcmpCode),
    ("icmpv6", "type", Field::Icmpv6Type),
    ("icmpv6", "code", Field::Icmpv6Code),
];

impl Headers {
    fn of(p: &Packet) -> Headers {
        Headers(
            REWRITABLE
                .iter()
                .filter_map(|(_, _, f)| Some((*f, p.get(*f)?)))
                .collect(),
        )
    }

    /// Applies a datapath `set(eth(...))`, `set(ipv4(...))`, `set(arp(...))`, ….
    fn set(&mut self, key: &str, attrs: &str) -> Result<(), String> {
        for kv in split_top(attrs) {
            let (k, v) = kv
                .split_once('=')
                .ok_or(format!("bad set attribute {kv:?}"))?;
            let field = REWRITABLE
                .iter()
                .find(|(a, b, _)| *a == key && *b == k)
                .map(|(_, _, f)| *f)
                .ok_or(format!("unexpected datapath set {key}({kv})"))?;
            // A masked set prints `value/mask`: the flows here only ever write whole fields.
            let v = v.split('/').next().unwrap_or(v);
            let (value, _) = field
                .parse_value(v)
                .map_err(|e| format!("bad value in {key}({kv}): {e}"))?;
            self.0.insert(field, value);
        }
        Ok(())
    }
}

/// Splits at the commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// `name(inner)` → `(name, inner)`.
fn call(s: &str) -> Option<(&str, &str)> {
    let (name, rest) = s.split_once('(')?;
    Some((name, rest.strip_suffix(')')?))
}

/// The value of `key=` inside `s` (up to the next `,` or `)`).
fn attr<'s>(s: &'s str, key: &str) -> Option<&'s str> {
    let at = s
        .match_indices(key)
        .find(|(i, _)| *i == 0 || matches!(s.as_bytes()[i - 1], b'(' | b','))
        .map(|(i, _)| i + key.len())?;
    let rest = s[at..].strip_prefix('=')?;
    Some(&rest[..rest.find([',', ')']).unwrap_or(rest.len())])
}

fn hex_u64(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// The simulator's verdict.
fn ours(t: &Trace) -> Outcome {
    Outcome {
        tables: t
            .steps()
            .iter()
            .map(|s| (s.table, s.flow.as_ref().map(|f| f.cookie)))
            .collect(),
        outputs: t
            .verdict
            .outputs
            .iter()
            .map(|o| Out {
                port: o.port,
                headers: Headers::of(&o.packet),
                tunnel: o.tunnel.as_ref().map(|t| (t.src, t.dst, t.id)),
            })
            .collect(),
        controller: t
            .verdict
            .controller
            .iter()
            .map(|c| ToController {
                reason: c.reason,
                controller_id: c.controller_id,
                cookie: c.cookie,
                userdata: c.userdata.clone(),
            })
            .collect(),
    }
}

/// Open vSwitch's verdict, from `ofproto/trace`'s text for `packet` on `sw`.
fn theirs(text: &str, packet: &Packet, sw: &Switch) -> Result<Outcome, String> {
    let mut tables = Vec::new();
    let mut userdata = Vec::new();
    // Only br-int's part. A tunnel output goes on through br-phy, whose one flow (table 0,
    // NORMAL) OVS prints after a `bridge("br-phy")` line, not indented under the output.
    let mut in_br_phy = false;
    // One line per pass: a packet recirculated after conntrack shows its actions in each.
    let mut datapath = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("Datapath actions: ") {
            datapath.push(rest);
            continue;
        }
        if l.starts_with("bridge(\"") {
            in_br_phy = l == format!("bridge(\"{PHY_BRIDGE}\")");
            continue;
        }
        if let Some((n, rest)) = l.split_once(". ")
            && let Ok(table) = n.parse::<u8>()
        {
            if std::mem::take(&mut in_br_phy) {
                continue;
            }
            let cookie = if rest.starts_with("No match") {
                None
            } else {
                Some(match rest.rsplit_once(", cookie ") {
                    Some((_, c)) => hex_u64(c).ok_or(format!("bad cookie in {l:?}"))?,
                    None => 0,
                })
            };
            tables.push((table, cookie));
        } else if l.starts_with("controller(") {
            let data = attr(l, "userdata").unwrap_or("");
            userdata.push(
                data.split('.')
                    .filter(|b| !b.is_empty())
                    .map(|b| u8::from_str_radix(b, 16).map_err(|_| format!("bad userdata {l:?}")))
                    .collect::<Result<Vec<u8>, String>>()?,
            );
        }
    }
    if datapath.is_empty() {
        return Err("no datapath actions".into());
    }
    let mut outcome = Outcome {
        tables,
        outputs: Vec::new(),
        controller: Vec::new(),
    };
    let mut userdata = userdata.into_iter();
    // Header rewrites of one pass carry over into the next.
    let mut headers = Headers::of(packet);
    for pass in datapath {
        headers = datapath_actions(pass, headers, sw, &mut outcome, &mut userdata)?;
    }
    Ok(outcome)
}

fn datapath_actions(
    actions: &str,
    mut headers: Headers,
    sw: &Switch,
    out: &mut Outcome,
    userdata: &mut impl Iterator<Item = Vec<u8>>,
) -> Result<Headers, String> {
    let ofport = |dp: &str| {
        dp.parse::<u32>()
            .ok()
            .and_then(|d| sw.ofport.get(&d).copied())
            .ok_or(format!("datapath port {dp} is not on br-int"))
    };
    for a in split_top(actions) {
        // Conntrack and the recirculation after it: ofproto/trace follows it with `--ct-next`.
        if a == "drop" || a.starts_with("ct(") || a == "ct" || a.starts_with("recirc(") {
            continue;
        }
        if a.bytes().all(|b| b.is_ascii_digit()) {
            out.outputs.push(Out {
                port: ofport(a)?,
                headers: headers.clone(),
                tunnel: None,
            });
            continue;
        }
        let (name, inner) = call(a).ok_or(format!("unexpected datapath action {a:?}"))?;
        match name {
            "set" => {
                let (key, attrs) = call(inner).ok_or(format!("bad set {a:?}"))?;
                headers.set(key, attrs)?;
            }
            "clone" => {
                datapath_actions(inner, headers.clone(), sw, out, userdata)?;
            }
            "userspace" if inner.contains("controller(") => {
                let num = |k: &str| attr(inner, k).ok_or(format!("no {k} in {a:?}"));
                let reason: u8 = num("reason")?.parse().map_err(|e| format!("{e}"))?;
                out.controller.push(ToController {
                    reason,
                    controller_id: num("controller_id")?.parse().map_err(|e| format!("{e}"))?,
                    cookie: hex_u64(num("rule_cookie")?).ok_or("bad rule_cookie")?,
                    // Only explicit controller actions carry userdata (and print it).
                    userdata: if reason == openflow::action::reason::ACTION {
                        userdata
                            .next()
                            .ok_or("more packet-ins than controller actions")?
                    } else {
                        Vec::new()
                    },
                });
            }
            "tnl_push" => {
                let port = inner
                    .strip_prefix("tnl_port(")
                    .and_then(|r| r.split(')').next())
                    .ok_or(format!("no tnl_port in {a:?}"))?;
                let header = inner
                    .split_once("ipv4(")
                    .map(|(_, h)| h)
                    .ok_or(format!("no outer IPv4 in {a:?}"))?;
                let address = |key: &str| {
                    attr(header, key)
                        .and_then(|d| d.parse().ok())
                        .ok_or(format!("no tunnel {key} in {a:?}"))
                };
                let (src, dst) = (address("src")?, address("dst")?);
                let vni = attr(inner, "vni")
                    .and_then(hex_u64)
                    .ok_or(format!("no VNI in {a:?}"))?;
                out.outputs.push(Out {
                    port: ofport(port)?,
                    headers: headers.clone(),
                    tunnel: Some((src, dst, vni)),
                });
                // What follows in this list is the underlay's (the encapsulated packet's way
                // out of br-phy); more of the overlay's actions would have come in a `clone`.
                return Ok(headers);
            }
            _ => return Err(format!("unexpected datapath action {a:?}")),
        }
    }
    Ok(headers)
}

/// br-int's datapath ports and their OpenFlow numbers, from `dpif/show`. The agent's BFD
/// monitor ports (`wyb-…`, one per peer) share the tunnel's datapath port but carry no data:
/// a tunnel's datapath port is the flow-based tunnel port's.
fn ofports(dpif: &str) -> HashMap<u32, u32> {
    let mut bridge = "";
    let mut map = HashMap::new();
    for line in dpif.lines() {
        let indent = line.len() - line.trim_start().len();
        let l = line.trim();
        if indent == 2 && l.ends_with(':') {
            bridge = l.trim_end_matches(':');
        } else if indent == 4
            && bridge == "br-int"
            && !l.starts_with("wyb-")
            && let Some((of, dp)) = l
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.trim_end_matches(':').split_once('/'))
            && let (Ok(of), Ok(dp)) = (of.parse(), dp.parse())
        {
            map.insert(dp, of);
        }
    }
    map
}

/// A small deterministic generator (xorshift64*), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

/// One packet to trace on one chassis.
struct Case {
    chassis: usize,
    in_port: u32,
    packet: Packet,
    what: String,
}

const UNKNOWN_MAC: Mac = Mac([0x02, 0, 0, 0, 0x99, 0x99]);
const MCAST_MAC: Mac = Mac([0x01, 0, 0x5e, 0, 0, 0xfb]);

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The link-local address of a MAC (EUI-64).
fn link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    let iid = [m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
    Ipv6Addr::from((0xfe80_u128 << 112) | u128::from(u64::from_be_bytes(iid)))
}

/// Every packet of the run: hand-picked ones from each VM and from the tunnel, then random ones.
fn cases(inv: &Inventory, switches: &[Switch], rng: &mut Rng) -> Vec<Case> {
    let topo = &inv.topology;
    let mut out = Vec::new();
    let all_ips: Vec<IpAddr> = topo
        .ports
        .values()
        .flat_map(|p| p.ips.iter().copied())
        .chain(
            [
                "10.1.0.99",
                "10.2.0.99",
                "10.3.0.99",
                "8.8.8.8",
                "192.168.50.1",
                "fd00:2::99",
                "fd00:9::1",
            ]
            .map(addr),
        )
        .collect();
    for (ci, sw) in switches.iter().enumerate() {
        for (port_id, &in_port) in &sw.local.vifs {
            let p = &topo.ports[port_id];
            let name = inv.port_label(p);
            let mac = mac_of(p.mac);
            let peers: Vec<_> = topo
                .ports
                .values()
                .filter(|q| q.network_id == p.network_id && q.id != p.id)
                .collect();
            let gw_mac = |family_v4: bool| {
                peers
                    .iter()
                    .find(|q| {
                        q.router().is_some() && q.ips.iter().any(|i| i.is_ipv4() == family_v4)
                    })
                    .map_or(Mac::BROADCAST, |q| mac_of(q.mac))
            };
            // The MAC a VM would send to for `dst`.
            let dst_mac = |dst: IpAddr| {
                if let Some(q) = peers.iter().find(|q| q.ips.contains(&dst)) {
                    mac_of(q.mac)
                } else if inv.subnet_of(&p.network_id, dst).is_some() {
                    Mac::BROADCAST
                } else {
                    gw_mac(dst.is_ipv4())
                }
            };
            let mut add = |packet: Packet, what: String| {
                out.push(Case {
                    chassis: ci,
                    in_port,
                    packet,
                    what: format!("from {name}: {what}"),
                })
            };
            let own4 = p.ips.iter().copied().find(IpAddr::is_ipv4);
            let own6 = p.ips.iter().copied().find(IpAddr::is_ipv6);
            if let Some(IpAddr::V4(s)) = own4 {
                let mut targets: Vec<Ipv4Addr> = peers
                    .iter()
                    .flat_map(|q| q.ips.iter())
                    .filter_map(|i| match i {
                        IpAddr::V4(a) => Some(*a),
                        _ => None,
                    })
                    .collect();
                targets.extend(["10.1.0.99", "8.8.8.8"].map(|a| a.parse::<Ipv4Addr>().unwrap()));
                targets.push(s);
                for t in targets {
                    add(
                        Packet::arp_request(mac, s, t),
                        format!("ARP request for {t}"),
                    );
                }
                if let Some(q) = peers.iter().find(|q| q.router().is_none())
                    && let Some(IpAddr::V4(t)) = q.ips.first()
                {
                    add(
                        Packet::arp_reply(mac, s, mac_of(q.mac), *t),
                        format!("ARP reply to {t}"),
                    );
                    add(
                        Packet::arp_request(mac, Ipv4Addr::UNSPECIFIED, *t),
                        format!("ARP probe for {t}"),
                    );
                    add(
                        Packet::arp_request(mac, Ipv4Addr::new(10, 9, 9, 9), *t),
                        format!("ARP request for {t} from a spoofed address"),
                    );
                }
                add(
                    Packet::udp(
                        mac,
                        Mac::BROADCAST,
                        addr("0.0.0.0"),
                        addr("255.255.255.255"),
                        68,
                        67,
                    )
                    .with(Field::IpTtl, 128),
                    "DHCP discover".into(),
                );
                for (dmac, label) in [
                    (Mac::BROADCAST, "broadcast"),
                    (MCAST_MAC, "multicast"),
                    (UNKNOWN_MAC, "unknown"),
                ] {
                    add(
                        Packet::udp(mac, dmac, IpAddr::V4(s), addr("224.0.0.251"), 5353, 5353),
                        format!("UDP to the {label} MAC"),
                    );
                }
            }
            let own_ips: Vec<IpAddr> = own4.into_iter().chain(own6).collect();
            for &src in &own_ips {
                let dsts: Vec<IpAddr> = all_ips
                    .iter()
                    .copied()
                    .filter(|d| d.is_ipv4() == src.is_ipv4() && *d != src)
                    .collect();
                for &dst in &dsts {
                    let dm = dst_mac(dst);
                    add(
                        Packet::echo_request(mac, dm, src, dst),
                        format!("echo request to {dst}"),
                    );
                    add(
                        Packet::tcp(mac, dm, src, dst, 33000, 22, tcp_flags::SYN),
                        format!("TCP SYN to {dst}"),
                    );
                    if inv.subnet_of(&p.network_id, dst).is_none() {
                        for ttl in [1, 2] {
                            add(
                                Packet::udp(mac, dm, src, dst, 33000, 33434)
                                    .with(Field::IpTtl, ttl),
                                format!("UDP to {dst} with TTL {ttl}"),
                            );
                        }
                    }
                }
                let other = if src.is_ipv4() {
                    addr("10.9.9.9")
                } else {
                    addr("fd00:2::999")
                };
                let dst = dsts[0];
                add(
                    Packet::echo_request(mac, dst_mac(dst), other, dst),
                    format!("echo request to {dst} from spoofed {other}"),
                );
                add(
                    Packet::echo_request(UNKNOWN_MAC, dst_mac(dst), src, dst),
                    format!("echo request to {dst} from spoofed MAC"),
                );
            }
            if let Some(IpAddr::V6(s)) = own6 {
                let ll = link_local(mac);
                let mut targets: Vec<Ipv6Addr> = peers
                    .iter()
                    .flat_map(|q| q.ips.iter())
                    .filter_map(|i| match i {
                        IpAddr::V6(a) => Some(*a),
                        _ => None,
                    })
                    .collect();
                targets.extend(peers.iter().map(|q| link_local(mac_of(q.mac))));
                targets.push("fd00:2::99".parse().unwrap());
                for t in targets {
                    add(
                        Packet::neighbor_solicitation(mac, s, t),
                        format!("neighbour solicitation for {t}"),
                    );
                    add(
                        Packet::neighbor_solicitation(mac, ll, t),
                        format!("neighbour solicitation for {t} from {ll}"),
                    );
                }
                add(
                    Packet::neighbor_solicitation(mac, Ipv6Addr::UNSPECIFIED, s),
                    "duplicate address detection".into(),
                );
                add(
                    Packet::neighbor_advertisement(
                        mac,
                        Mac([0x33, 0x33, 0, 0, 0, 1]),
                        ll,
                        "ff02::1".parse().unwrap(),
                        s,
                        mac,
                    ),
                    "unsolicited neighbour advertisement".into(),
                );
                let all_routers: IpAddr = addr("ff02::2");
                add(
                    Packet::ip(
                        mac,
                        Mac([0x33, 0x33, 0, 0, 0, 2]),
                        IpAddr::V6(ll),
                        all_routers,
                        ip_proto::ICMPV6,
                    )
                    .with(Field::IpTtl, 255)
                    .with(Field::Icmpv6Type, 133)
                    .with(Field::Icmpv6Code, 0),
                    "router solicitation".into(),
                );
                add(
                    Packet::udp(
                        mac,
                        Mac([0x33, 0x33, 0, 1, 0, 2]),
                        IpAddr::V6(ll),
                        addr("ff02::1:2"),
                        546,
                        547,
                    ),
                    "DHCPv6 solicit".into(),
                );
            }
        }
        // From the tunnel, with each network's VNI (and one no network has).
        let peer_ip = switches[(ci + 1) % switches.len()].tunnel_ip;
        let tunnel_port = sw.local.tunnel.expect("a tunnel port");
        for net in topo.networks.values() {
            let Some(vni) = net.vni else { continue };
            for vni in [u64::from(vni), 0xabcd] {
                let tun = Tunnel::new(vni, peer_ip, sw.tunnel_ip);
                let on_net: Vec<_> = topo
                    .ports
                    .values()
                    .filter(|q| q.network_id == net.id)
                    .collect();
                let src = on_net
                    .iter()
                    .find(|q| q.host.as_deref() != Some(sw.name.as_str()))
                    .copied()
                    .unwrap_or(on_net[0]);
                let smac = mac_of(src.mac);
                let sip = src.ips.first().copied().unwrap_or(addr("10.9.9.9"));
                let mut dmacs: Vec<(Mac, String)> = on_net
                    .iter()
                    .map(|q| (mac_of(q.mac), inv.port_label(q)))
                    .collect();
                dmacs.push((Mac::BROADCAST, "broadcast".into()));
                dmacs.push((UNKNOWN_MAC, "an unknown MAC".into()));
                for (dm, label) in dmacs {
                    let dst = if sip.is_ipv4() {
                        addr("10.1.0.77")
                    } else {
                        addr("fd00:2::77")
                    };
                    out.push(Case {
                        chassis: ci,
                        in_port: tunnel_port,
                        packet: Packet::echo_request(smac, dm, sip, dst).with_tunnel(&tun),
                        what: format!("from the tunnel, VNI {vni:#x}, to {label}"),
                    });
                }
                if let IpAddr::V4(s) = sip {
                    out.push(Case {
                        chassis: ci,
                        in_port: tunnel_port,
                        packet: Packet::arp_request(smac, s, "10.1.0.12".parse().unwrap())
                            .with_tunnel(&tun),
                        what: format!("from the tunnel, VNI {vni:#x}: ARP request"),
                    });
                }
            }
        }
    }
    out.extend(as_the_cli_builds_them(inv, switches));
    // Random packets: any VM, any address, any destination MAC, protocol and TTL.
    let sources: Vec<(usize, &String, u32)> = switches
        .iter()
        .enumerate()
        .flat_map(|(ci, sw)| sw.local.vifs.iter().map(move |(id, p)| (ci, id, *p)))
        .collect();
    let macs: Vec<Mac> = topo
        .ports
        .values()
        .map(|p| mac_of(p.mac))
        .chain([Mac::BROADCAST, MCAST_MAC, UNKNOWN_MAC])
        .collect();
    for _ in 0..RANDOM {
        let &(ci, id, in_port) = rng.pick(&sources);
        let p = &topo.ports[id];
        let dst = *rng.pick(&all_ips);
        let own = p.ips.iter().copied().find(|i| i.is_ipv4() == dst.is_ipv4());
        let src = match (own, rng.next() % 8) {
            (Some(s), 1..) => s,
            _ if dst.is_ipv4() => addr("10.2.0.77"),
            _ => addr("fd00:2::77"),
        };
        let smac = if rng.next().is_multiple_of(8) {
            UNKNOWN_MAC
        } else {
            mac_of(p.mac)
        };
        let dmac = *rng.pick(&macs);
        let ttl = *rng.pick(&[1u128, 2, 3, 64, 255]);
        let (packet, what) = match (rng.next() % 4, src, dst) {
            (0, IpAddr::V4(s), IpAddr::V4(d)) => (Packet::arp_request(smac, s, d), "ARP request"),
            (1, ..) => (
                Packet::tcp(smac, dmac, src, dst, 40000, 80, tcp_flags::SYN),
                "TCP SYN",
            ),
            (2, ..) => (Packet::udp(smac, dmac, src, dst, 40000, 53), "UDP"),
            _ => (Packet::echo_request(smac, dmac, src, dst), "echo request"),
        };
        let packet = if packet.get(Field::IpTtl).is_some() {
            packet.with(Field::IpTtl, ttl)
        } else {
            packet
        };
        out.push(Case {
            chassis: ci,
            in_port,
            what: format!(
                "random: {what} from {} {src} {smac} to {dst} {dmac}",
                inv.port_label(p)
            ),
            packet,
        });
    }
    out
}

/// Packets as `wyvern trace` builds them ([`trace::request::build`]): from each VM, gratuitous
/// ARP, an ARP probe and reply, DHCP request and renewal, to an off-subnet address (the
/// gateway's MAC), to a multicast group, VLAN-tagged, to an unknown MAC; and from the tunnel,
/// each VM's packet to every VM of its network on another chassis.
fn as_the_cli_builds_them(inv: &Inventory, switches: &[Switch]) -> Vec<Case> {
    let mut out = Vec::new();
    for (ci, sw) in switches.iter().enumerate() {
        for id in sw.local.vifs.keys() {
            let p = &inv.topology.ports[id];
            let peer = inv
                .topology
                .ports_on(&p.network_id)
                .find(|q| q.id != p.id && q.router().is_none())
                .map(|q| q.id.clone());
            let mut requests = vec![
                Request::new(id, None, Probe::Arp(ArpKind::Gratuitous)),
                Request::new(id, None, Probe::Arp(ArpKind::Probe)),
                Request::new(id, None, Probe::Dhcp(DhcpKind::Request)),
                Request::new(id, None, Probe::Dhcp(DhcpKind::Renew)),
                Request::new(id, Some("8.8.8.8"), Probe::Echo),
                Request::new(id, Some("224.0.0.251"), Probe::Udp(5353)),
                Request {
                    vlan: Some(10),
                    ..Request::new(id, Some("8.8.8.8"), Probe::Tcp(443))
                },
            ];
            if let Some(q) = &peer {
                requests.extend([
                    Request::new(id, Some(q), Probe::Arp(ArpKind::Reply)),
                    Request {
                        dst_mac: Some(UNKNOWN_MAC),
                        ..Request::new(id, Some(q), Probe::Echo)
                    },
                ]);
            }
            // From the tunnel: the packets of this network's VMs elsewhere to this one.
            for q in inv.topology.ports_on(&p.network_id).filter(|q| {
                q.router().is_none() && q.host.is_some() && q.host.as_deref() != Some(&sw.name)
            }) {
                requests.push(Request {
                    tunnel: Some(FromTunnel::default()),
                    ..Request::new(&q.id, Some(id), Probe::Tcp(22))
                });
            }
            for req in requests {
                // A renewal needs a subnet with DHCP, a packet from the tunnel a VNI.
                let Ok(built) = trace::request::build(inv, &req) else {
                    continue;
                };
                let (in_port, packet) = built.enter(inv, &sw.local).expect("enters br-int");
                out.push(Case {
                    chassis: ci,
                    in_port,
                    packet,
                    what: format!(
                        "as `wyvern trace` builds it: {}{}",
                        trace::request::describe(inv, &built),
                        if req.tunnel.is_some() {
                            ", from the tunnel"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
    }
    out
}

impl fmt::Display for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}={}", k.name(), k.format_value(*v, k.full_mask())))
            .collect();
        f.write_str(&fields.join(","))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|(t, c)| match c {
                Some(c) => format!("{t} (cookie {c:#x})"),
                None => format!("{t} (miss)"),
            })
            .collect();
        writeln!(f, "    tables: {}", tables.join(", "))?;
        for o in &self.outputs {
            let tunnel = o
                .tunnel
                .map(|(src, dst, vni)| {
                    format!(" over the tunnel from {src} to {dst} with VNI {vni:#x}")
                })
                .unwrap_or_default();
            writeln!(f, "    output to port {}{tunnel}: {}", o.port, o.headers)?;
        }
        for c in &self.controller {
            writeln!(
                f,
                "    to controller {} (reason {}, cookie {:#x}, userdata {:02x?})",
                c.controller_id, c.reason, c.cookie, c.userdata
            )?;
        }
        if self.outputs.is_empty() && self.controller.is_empty() {
            writeln!(f, "    drop")?;
        }
        Ok(())
    }
}

/// The packet in `ofproto/trace`'s flow syntax: the packet's own text, but `tcp_flags` as a
/// number (OVS reads `+syn` as a mask) and a VLAN tag as `dl_vlan` and `dl_vlan_pcp`.
fn flow_text(p: &Packet) -> String {
    let mut text = p.to_string();
    for t in p.vlans() {
        text = text.replace(
            &format!("vlan(vid={},pcp={})", t.vid, t.pcp),
            &format!("dl_vlan={},dl_vlan_pcp={}", t.vid, t.pcp),
        );
    }
    let parts: Vec<String> = text
        .split(',')
        .map(
            |part| match (part.starts_with("tcp_flags="), p.get(Field::TcpFlags)) {
                (true, Some(f)) => format!("tcp_flags={f:#x}"),
                _ => part.to_string(),
            },
        )
        .collect();
    parts.join(",")
}

/// `ovs-appctl ofproto/trace br-int` on chassis `chassis`, and its output as text. A tunnel
/// output whose peer's underlay MAC vswitchd does not know yet goes nowhere while vswitchd asks
/// for it: then once more, after the answer.
fn ofproto_trace(lab: &Lab, chassis: &str, packet: &Packet) -> (std::process::Output, String) {
    let flow = flow_text(packet);
    let mut tries = 0;
    loop {
        let out = lab
            .exec(
                chassis,
                &[
                    "ovs-appctl",
                    "ofproto/trace",
                    "br-int",
                    &flow,
                    // The egress and the ingress security groups' conntrack.
                    "--ct-next",
                    "trk,new",
                    "--ct-next",
                    "trk,new",
                ],
            )
            .expect("ovs-appctl ofproto/trace");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        tries += 1;
        if !text.contains("neighbor cache miss") || tries == 20 {
            return (out, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads chassis `name`'s flows (as `wyvern trace --from-switch` does) and port numbers; `None`
/// until br-int holds exactly the flows the pipeline computes.
async fn switch(lab: &Lab, inv: &Inventory, name: &str) -> Option<Switch> {
    let state = &lab.state().chassis[name];
    let encap: Encap = lab.state().encap.parse().unwrap_or(Encap::Geneve);
    let ovsdb = format!("unix:{}", state.rundir.join("db.sock").display());
    let local = fetch::local(&ovsdb, name, encap.port_name()).await.ok()?;
    let flows: FlowSet = fetch::switch_flows(&fetch::mgmt_target(&state.rundir, "br-int"))
        .await
        .ok()?;
    let held: HashSet<_> = flows.flows.iter().collect();
    let computed = trace::compute_flows(inv, &local);
    if held != computed.iter().collect()
        || local.vifs.len()
            != lab
                .state()
                .vms
                .values()
                .filter(|v| v.chassis == name)
                .count()
    {
        return None;
    }
    assert!(
        flows.groups.is_empty(),
        "br-int holds groups: compare the possible buckets of select groups too"
    );
    let dpif = String::from_utf8_lossy(
        &lab.exec(name, &["ovs-appctl", "dpif/show"])
            .expect("ovs-appctl dpif/show")
            .stdout,
    )
    .into_owned();
    Some(Switch {
        name: name.to_string(),
        tables: trace::tables(&flows, &local).expect("flows the simulator takes"),
        local,
        tunnel_ip: state.tunnel_ip,
        ofport: ofports(&dpif),
    })
}

#[test]
fn simulator_agrees_with_ofproto_trace() {
    let _alone = crate::support::alone();
    let name = format!("td{}", std::process::id() % 100_000);
    let opts = LabOptions {
        wyvern: env!("CARGO_BIN_EXE_wyvern").into(),
        progress: false,
    };
    // Dropping the lab tears it down, also when an assertion fails.
    let lab = Lab::up(&topology(&name), &opts).expect("lab up");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (inv, switches) = loop {
        let inv = rt
            .block_on(fetch::snapshot(&lab.server_url()))
            .expect("server snapshot");
        let switches: Option<Vec<Switch>> = CHASSIS
            .iter()
            .map(|c| rt.block_on(switch(&lab, &inv, c)))
            .collect();
        match switches {
            Some(s) => break (inv, s),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => panic!("the agents did not program br-int as computed within 30 s"),
        }
    };
    // `ovs-appctl` as `wyvern lab exec c1 -- ovs-appctl ...` runs it: a plain command in the
    // chassis' namespace with its OVS_RUNDIR.
    let seed = std::env::var("TRACE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (u64::from(std::process::id()) * 0x9e37_79b9) | 1);
    eprintln!("random packets from seed {seed} (TRACE_DIFF_SEED={seed} repeats them)");
    let cases = cases(&inv, &switches, &mut Rng(seed));
    let mut mismatches = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for case in &cases {
        let sw = &switches[case.chassis];
        let packet = case.packet.clone().with(Field::InPort, case.in_port.into());
        // Every `ct` gives the packet `trk,new`, as `--ct-next` tells ofproto/trace.
        let mut simulator = flowsim::Simulator::new(&sw.tables);
        simulator
            .conntrack_mut()
            .force_state(Some(flowsim::conntrack::ct_state::NEW));
        let sim = simulator.trace(case.in_port, case.packet.clone());
        let (out, text) = ofproto_trace(&lab, &sw.name, &packet);
        let mine = ours(&sim);
        let verdict = match theirs(&text, &packet, sw) {
            Err(e) => Err(format!(
                "cannot read OVS' trace ({e}); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Ok(o) if o == mine => Ok(()),
            Ok(o) => Err(format!("Open vSwitch:\n{o}  simulator:\n{mine}")),
        };
        let kind = match (&sim.verdict.outputs[..], &sim.verdict.controller[..]) {
            ([], []) => "dropped",
            ([], _) => "to the controller",
            (o, _) if o.iter().any(|o| o.tunnel.is_some()) => "tunnelled",
            _ => "delivered or answered",
        };
        *kinds.entry(kind).or_default() += 1;
        if let Err(e) = verdict {
            mismatches.push(format!(
                "=== {} on {}: {packet}\n{e}\n--- ovs-appctl ofproto/trace:\n{text}\n--- flowsim:\n{sim}",
                case.what, sw.name
            ));
        }
    }
    eprintln!(
        "{} packets compared ({kinds:?}), {} mismatches",
        cases.len(),
        mismatches.len()
    );
    assert!(cases.len() >= 200, "only {} packets", cases.len());
    assert!(
        mismatches.is_empty(),
        "{} of {} packets traced differently:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
    lab.down().expect("lab down");
}
