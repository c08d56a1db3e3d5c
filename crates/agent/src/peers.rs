//! Data-plane liveness of the other chassis: BFD *monitor* ports on `br-int` towards the chassis
//! this one watches ([`desired`]: its neighbours on a ring of all chassis, and the gateways),
//! and what their sessions say (issue 17; measurements in `docs/research/bfd-on-userspace-ovs.md`).
//! What an agent's sessions say goes to the server with its heartbeats and from there to every
//! agent, which follows its own sessions where it has them and the watchers' reports elsewhere
//! ([`pipeline::model::Topology::reachable`]).
//!
//! BFD cannot run on the flow-based tunnel port (`remote_ip=flow`: Open vSwitch's BFD packets
//! have no tunnel destination), so every watched chassis with an IPv4 tunnel address gets a port
//! of the chassis' encapsulation with `options:remote_ip=<its address>` and `options:key=0`,
//! named `wyb-` + 8 hex digits of a hash of its id ([`port_name`]), marked with
//! `external_ids:wyvern-peer=<chassis id>`. It carries BFD only: data keeps going out of and
//! coming in through the flow-based port, because an exact `key=0` port only matches packets
//! with VNI 0, which no network uses (the API gives networks 1 and up; transit and chaining
//! VNIs are at the top of the range), so `tnl_find` hands every data packet to the flow-based
//! port. BFD packets have VNI 0 and are consumed by the switch before the OpenFlow tables
//! (`check_tnl_key=true`: only VNI 0 counts as BFD). No flow is needed for these ports.
//!
//! [`desired`] says which ports the topology's registered chassis call for; [`converge`] brings
//! OVSDB there in one transaction (missing ports created, ports of chassis gone removed, changed
//! addresses or settings corrected in place), leaving right ones alone: an agent restart adopts
//! the ports and their running sessions. [`watch_bfd`] follows the ports' `bfd_status` and
//! reports each chassis' data plane ([`verdict`]): up (`forwarding=true`), down after having
//! been up (`forwarding=false` with a nonzero `flap_count`, which Open vSwitch keeps across agent
//! restarts), or unknown (a new session that never came up). The pipeline turns that into
//! whether flows go towards the chassis ([`pipeline::model::Topology::reachable`]).
//!
//! A verdict of *down* counts only once it has lasted [`HOLD_DOWN`] ([`HoldDown`]): a switch
//! whose main loop stalls (thousands of ports and flows being added on a loaded machine) misses
//! BFD deadlines and brings sessions down for a moment; the slice bench at 5 000 ports saw such
//! flaps last 20–250 ms, and each one withdrew and re-added every flow towards the chassis.
//!
//! Timers: `min_rx=min_tx=300` ms, `mult=3`: a cut underlay is seen in about 0.65–0.85 s, plus the
//! hold-down (the 3 s budget of the issue leaves room for the flow update), at a third of the CPU of 100 ms sessions
//! (about 0.07 % of a core per session per switch). Open vSwitch's defaults (1000/100/3) detect
//! only after 2.2–3.0 s. A chassis that does not watch the failed one learns it from the
//! watchers' reports: their heartbeat (at most 0.2 s after the verdict), the store, the sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chassis::Encap;
use ovsdb::tables::{Bridge, Interface, Port, Table, select, string_map};
use ovsdb::{
    Atom, Client, Condition, Endpoint, MonitorRequest, Mutation, Mutator, Operation, Row, Uuid,
    Value,
};
use pipeline::model::Topology;

use crate::AgentError;
use crate::switch_db::{DB, InterfaceFollower, RowEvent, map_value, ovsdb_error};

/// Prefix of the monitor ports' names.
pub const PORT_PREFIX: &str = "wyb-";
/// `Interface.external_ids` key naming the chassis a monitor port watches.
pub const PEER_KEY: &str = "wyvern-peer";
/// BFD transmit and receive interval, in milliseconds.
pub const BFD_INTERVAL_MS: u32 = 300;
/// Missed BFD packets before a session is declared down.
pub const BFD_MULT: u32 = 3;
/// How long a chassis' data plane must stay down before flows towards it are withdrawn.
pub const HOLD_DOWN: Duration = Duration::from_secs(1);

/// 32-bit FNV-1a of a chassis id: stable across versions and machines.
fn id_hash(chassis: &str) -> u32 {
    chassis.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The monitor port's name for `chassis`: `wyb-` and 8 hex digits of a hash of its id (12
/// characters, within the 15 of a Linux interface name).
pub fn port_name(chassis: &str) -> String {
    format!("{PORT_PREFIX}{:08x}", id_hash(chassis))
}

/// One monitor port, as wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    pub chassis: String,
    pub remote_ip: Ipv4Addr,
}

/// How many chassis on each side of a chassis on the ring it runs BFD sessions with (when
/// there are that many).
pub const RING_NEIGHBOURS: usize = 2;

/// The monitor ports wanted, by port name: towards this chassis' *neighbours*, the
/// [`RING_NEIGHBOURS`] chassis after it and the [`RING_NEIGHBOURS`] before it on the ring of
/// registered chassis (their ids ordered by [`id_hash`]), and towards every gateway chassis
/// (a gateway chassis: towards every chassis, as OVN's gateways do); only chassis with an IPv4
/// tunnel address other than ours, when ours is IPv4. Of chassis whose port names or addresses
/// would clash, the first only (Open vSwitch refuses two ports of one address and key). Both
/// ends of a BFD session need a monitor port towards each other, which these rules give.
///
/// Every chassis learns the data plane of the chassis it has no session with from what their
/// neighbours report (the agent's heartbeats carry its verdicts; a majority of down reports
/// counts, [`pipeline::model::DOWN_QUORUM`]). So a deployment runs 2 × [`RING_NEIGHBOURS`]
/// sessions per chassis plus the gateways', not one per pair of chassis that share a network: a
/// full mesh of 100 chassis on one network cost this machine's 100 userspace switches 1.2 cores
/// at idle, and each chassis joining it a reconfiguration of every other switch. Up to
/// 2 × [`RING_NEIGHBOURS`] + 1 chassis it is the full mesh.
pub fn desired(topo: &Topology, local_ip: IpAddr) -> BTreeMap<String, Monitor> {
    let mut out = BTreeMap::new();
    let IpAddr::V4(local_ip) = local_ip else {
        return out;
    };
    let me = topo.local.chassis.as_str();
    let usable = |c: &&pipeline::model::Chassis| {
        c.id != me && c.tunnel_ip != local_ip && !c.tunnel_ip.is_unspecified()
    };
    let mut ring: Vec<(u32, &pipeline::model::Chassis)> = topo
        .chassis
        .values()
        .filter(usable)
        .map(|c| (id_hash(&c.id), c))
        .collect();
    ring.sort_by(|(h, c), (g, d)| (h, &c.id).cmp(&(g, &d.id)));
    // Where this chassis is (or would be) on the ring: the chassis after it, the ones before.
    let at = ring.partition_point(|(h, c)| (*h, c.id.as_str()) < (id_hash(me), me));
    let n = ring.len();
    let after = RING_NEIGHBOURS.min(n);
    let before = RING_NEIGHBOURS.min(n - after);
    let neighbours = (0..after)
        .map(|i| &ring[(at + i) % n])
        .chain((1..=before).map(|i| &ring[(at + n - i) % n]));
    let gateway_here = topo.chassis.get(me).is_some_and(|c| c.gateway);
    let gateways = ring.iter().filter(|(_, c)| gateway_here || c.gateway);
    let mut addresses = BTreeSet::new();
    for (_, c) in neighbours.chain(gateways) {
        let name = port_name(&c.id);
        if out.get(&name).is_some_and(|m: &Monitor| m.chassis == c.id) {
            continue;
        }
        if out.contains_key(&name) || !addresses.insert(c.tunnel_ip) {
            tracing::warn!(
                chassis = c.id,
                "monitor port name or address taken: no BFD towards it"
            );
            continue;
        }
        out.insert(
            name,
            Monitor {
                chassis: c.id.clone(),
                remote_ip: c.tunnel_ip,
            },
        );
    }
    out
}

/// The data plane a monitor port's `bfd_status` shows: `Some(true)` forwarding, `Some(false)`
/// not forwarding after having been (a nonzero `flap_count`), `None` not known (no session, or
/// one that never came up since the port, or the switch, was made).
pub fn verdict(bfd_status: &BTreeMap<String, String>) -> Option<bool> {
    match bfd_status.get("forwarding").map(String::as_str) {
        Some("true") => Some(true),
        Some("false")
            if bfd_status
                .get("flap_count")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 0) =>
        {
            Some(false)
        }
        _ => None,
    }
}

/// The columns a monitor port's interface should have.
struct Wanted {
    kind: &'static str,
    options: BTreeMap<String, String>,
    bfd: BTreeMap<String, String>,
    external_ids: BTreeMap<String, String>,
}

fn wanted(m: &Monitor, kind: &'static str, local_ip: IpAddr) -> Wanted {
    let pairs =
        |kv: &[(&str, String)]| kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Wanted {
        kind,
        options: pairs(&[
            ("remote_ip", m.remote_ip.to_string()),
            ("local_ip", local_ip.to_string()),
            ("key", "0".into()),
        ]),
        bfd: pairs(&[
            ("enable", "true".into()),
            ("min_rx", BFD_INTERVAL_MS.to_string()),
            ("min_tx", BFD_INTERVAL_MS.to_string()),
            ("mult", BFD_MULT.to_string()),
            ("decay_min_rx", "0".into()),
            ("check_tnl_key", "true".into()),
        ]),
        external_ids: pairs(&[(PEER_KEY, m.chassis.clone())]),
    }
}

/// What the database holds of the bridge's ports (the interfaces with their raw rows, for the
/// `bfd` column the typed row lacks).
struct Held {
    bridge: Uuid,
    ports: BTreeMap<String, Port>,
    ifaces: BTreeMap<Uuid, (Interface, Row)>,
}

impl Held {
    async fn read(client: &Client, bridge: &str) -> Result<Held, AgentError> {
        let res = client
            .transact(
                DB,
                &[
                    select::<Bridge>(vec![Condition::eq("name", Value::atom(bridge))], &[]),
                    select::<Port>(vec![], &[]),
                    select::<Interface>(vec![], &["bfd"]),
                ],
            )
            .await
            .map_err(ovsdb_error)?;
        let rows = |i: usize| -> Vec<(Uuid, Row)> {
            res.get(i)
                .and_then(|r| r.rows.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|row| {
                    let uuid = row.get("_uuid")?.as_atom()?.as_uuid()?;
                    Some((uuid, row.clone()))
                })
                .collect()
        };
        let (uuid, row) = rows(0)
            .into_iter()
            .next()
            .ok_or_else(|| ovsdb_error(format!("no bridge {bridge}")))?;
        let bridge = Bridge::from_row(uuid, &row).map_err(ovsdb_error)?;
        let ports = rows(1)
            .into_iter()
            .filter(|(u, _)| bridge.ports.contains(u))
            .map(|(u, r)| Port::from_row(u, &r).map(|p| (p.name.clone(), p)))
            .collect::<Result<_, _>>()
            .map_err(ovsdb_error)?;
        let ifaces = rows(2)
            .into_iter()
            .map(|(u, r)| Interface::from_row(u, &r).map(|i| (u, (i, r))))
            .collect::<Result<_, _>>()
            .map_err(ovsdb_error)?;
        Ok(Held {
            bridge: bridge.uuid,
            ports,
            ifaces,
        })
    }

    /// The single interface of the bridge's port `name`.
    fn iface(&self, name: &str) -> Option<&(Interface, Row)> {
        let [iface] = self.ports.get(name)?.interfaces.as_slice() else {
            return None;
        };
        self.ifaces.get(iface)
    }
}

/// Brings the monitor ports on `bridge` to `want` in one transaction (ports of encapsulation
/// `kind`, `geneve` or `vxlan`, from `local_ip`); returns whether it changed anything. Safe to
/// call again: ports already right are not touched.
pub async fn converge(
    client: &Client,
    bridge: &str,
    kind: &'static str,
    local_ip: IpAddr,
    want: &BTreeMap<String, Monitor>,
) -> Result<bool, AgentError> {
    let held = Held::read(client, bridge).await?;
    let mut ops = Vec::new();
    let mut add: Vec<Atom> = Vec::new();
    let mut remove: BTreeSet<Uuid> = BTreeSet::new();
    for (n, (name, m)) in want.iter().enumerate() {
        let w = wanted(m, kind, local_ip);
        match held.iface(name) {
            Some((iface, row)) if iface.external_ids.get(PEER_KEY) == Some(&m.chassis) => {
                let bfd = string_map(Interface::NAME, row, "bfd").unwrap_or_default();
                if iface.kind != w.kind || iface.options != w.options || bfd != w.bfd {
                    ops.push(Operation::Update {
                        table: Interface::NAME.into(),
                        conditions: vec![Condition::uuid(iface.uuid)],
                        row: Row::new()
                            .with("type", Value::atom(w.kind))
                            .with("options", map_value(&w.options))
                            .with("bfd", map_value(&w.bfd)),
                    });
                }
                continue;
            }
            // Not ours, or another chassis' (a clash of names): replaced.
            Some(_) => {
                remove.extend(held.ports.get(name.as_str()).map(|p| p.uuid));
            }
            None => {
                remove.extend(held.ports.get(name.as_str()).map(|p| p.uuid));
            }
        }
        let (i, p) = (format!("iface{n}"), format!("port{n}"));
        ops.push(Operation::Insert {
            table: Interface::NAME.into(),
            row: Row::new()
                .with("name", Value::atom(name.as_str()))
                .with("type", Value::atom(w.kind))
                .with("options", map_value(&w.options))
                .with("bfd", map_value(&w.bfd))
                .with("external_ids", map_value(&w.external_ids)),
            uuid_name: Some(i.clone()),
        });
        ops.push(Operation::Insert {
            table: Port::NAME.into(),
            row: Row::new()
                .with("name", Value::atom(name.as_str()))
                .with("interfaces", Value::atom(Atom::NamedUuid(i))),
            uuid_name: Some(p.clone()),
        });
        add.push(Atom::NamedUuid(p));
    }
    // Monitor ports of chassis no longer wanted.
    for port in held.ports.values() {
        let ours = port.interfaces.iter().any(|u| {
            held.ifaces
                .get(u)
                .is_some_and(|(i, _)| i.external_ids.contains_key(PEER_KEY))
        });
        if ours && !want.contains_key(&port.name) {
            remove.insert(port.uuid);
        }
    }
    let bridge_ports = |mutator, ports: Vec<Atom>| Operation::Mutate {
        table: Bridge::NAME.into(),
        conditions: vec![Condition::uuid(held.bridge)],
        mutations: vec![Mutation {
            column: "ports".into(),
            mutator,
            value: Value::set(ports),
        }],
    };
    if !remove.is_empty() {
        let gone = remove.iter().map(|u| Atom::Uuid(*u)).collect();
        ops.push(bridge_ports(Mutator::Delete, gone));
    }
    if !add.is_empty() {
        ops.push(bridge_ports(Mutator::Insert, add));
    }
    if ops.is_empty() {
        return Ok(false);
    }
    client.transact(DB, &ops).await.map_err(ovsdb_error)?;
    Ok(true)
}

/// Starts following the monitor ports' BFD verdicts.
pub fn watch_bfd(endpoint: Endpoint) -> InterfaceFollower<bool> {
    // Only tunnel ports: the switch's VIFs, thousands of them, are none of this follower's
    // business, and neither the server nor the agent should copy every change of theirs here.
    let tunnels = [Encap::Geneve, Encap::Vxlan]
        .map(|encap| Condition::eq("type", Value::atom(encap.ovs_type())))
        .to_vec();
    InterfaceFollower::spawn(
        endpoint,
        MonitorRequest::columns(&["name", "external_ids", "bfd_status"]).rows_where(tunnels),
        peer_verdict,
        "BFD monitor",
    )
}

/// The chassis a monitor port (an `Interface` row) watches, with its known verdict.
fn peer_verdict(_: &Uuid, row: &Row) -> Option<(String, bool)> {
    let name = row.get("name")?.as_atom()?.as_str()?;
    let ids = string_map(Interface::NAME, row, "external_ids").ok()?;
    let chassis = ids.get(PEER_KEY)?;
    if name != port_name(chassis) {
        return None;
    }
    let status = string_map(Interface::NAME, row, "bfd_status").ok()?;
    Some((chassis.clone(), verdict(&status)?))
}

/// Waits (up to `timeout`) for `watcher`'s first full report, passing each event to `report`:
/// the first comparison with the switch then knows the data plane of the chassis whose ports an
/// earlier agent left running.
pub async fn await_synced(
    watcher: &mut InterfaceFollower<bool>,
    timeout: Duration,
    mut report: impl FnMut(RowEvent<bool>),
) {
    let _ = tokio::time::timeout(timeout, async {
        while let Some(event) = watcher.next().await {
            let done = event == RowEvent::Synced;
            report(event);
            if done {
                return;
            }
        }
    })
    .await;
}

/// Holds verdicts of *down* back until they have lasted [`HOLD_DOWN`]: a session that comes
/// back up meanwhile was a stall, not a dead chassis. Verdicts of *up* and *not known* pass at
/// once (and cancel a held *down*).
#[derive(Debug, Default)]
pub struct HoldDown {
    /// Chassis whose data plane went down, and when that counts.
    held: BTreeMap<String, Instant>,
}

impl HoldDown {
    /// Takes BFD's verdict on `chassis` at `now`; returns it if it counts now (`None`: held).
    pub fn verdict(
        &mut self,
        chassis: &str,
        state: Option<bool>,
        now: Instant,
    ) -> Option<Option<bool>> {
        if state == Some(false) {
            self.held
                .entry(chassis.to_owned())
                .or_insert(now + HOLD_DOWN);
            None
        } else {
            self.held.remove(chassis);
            Some(state)
        }
    }

    /// When the next held verdict counts.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.values().min().copied()
    }

    /// The chassis whose *down* has lasted long enough at `now` (no longer held).
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(c, _)| c.clone())
            .collect();
        for c in &due {
            self.held.remove(c);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn verdict_from_bfd_status() {
        let up = status(&[("forwarding", "true"), ("state", "up"), ("flap_count", "1")]);
        assert_eq!(verdict(&up), Some(true));
        let down = status(&[
            ("forwarding", "false"),
            ("state", "down"),
            ("flap_count", "2"),
        ]);
        assert_eq!(verdict(&down), Some(false));
        // Never up since the port was made: not known (the lease decides).
        let new = status(&[
            ("forwarding", "false"),
            ("state", "down"),
            ("flap_count", "0"),
        ]);
        assert_eq!(verdict(&new), None);
        assert_eq!(verdict(&status(&[("forwarding", "false")])), None);
        assert_eq!(verdict(&BTreeMap::new()), None);
    }

    #[test]
    fn names_fit_an_interface_name() {
        let n = port_name("a-rather-long-chassis-name.example.org");
        assert!(n.starts_with(PORT_PREFIX) && n.len() == 12, "{n}");
        assert_eq!(n, port_name("a-rather-long-chassis-name.example.org"));
        assert_ne!(port_name("ch1"), port_name("ch2"));
    }

    fn put(t: &mut Topology, kind: pipeline::model::Kind, id: &str, v: serde_json::Value) {
        t.put(pipeline::model::Object::decode(kind, id, &v).unwrap());
    }

    fn monitored(want: &BTreeMap<String, Monitor>) -> BTreeSet<&str> {
        want.values().map(|m| m.chassis.as_str()).collect()
    }

    /// A topology of registered chassis `(id, tunnel address, gateway)` seen from `local`.
    fn registered(local: &str, chassis: &[(&str, &str, bool)]) -> Topology {
        let mut t = Topology::default();
        t.local.chassis = local.into();
        for (id, ip, gateway) in chassis {
            let v = json!({"id": id, "tunnel_ip": ip, "gateway": gateway});
            put(&mut t, pipeline::model::Kind::Chassis, id, v);
        }
        t
    }

    #[test]
    fn sessions_pair_up_with_the_neighbours_on_the_ring() {
        for n in [1usize, 2, 3, 4, 5, 8, 20, 100] {
            let chassis: Vec<(String, String)> = (1..=n)
                .map(|i| (format!("c{i}"), format!("10.{}.{}.1", i / 200, i % 200)))
                .collect();
            let list: Vec<(&str, &str, bool)> = chassis
                .iter()
                .map(|(id, ip)| (id.as_str(), ip.as_str(), false))
                .collect();
            let sessions = (2 * RING_NEIGHBOURS).min(n - 1);
            let mut wanted = BTreeSet::new();
            for (id, ip) in &chassis {
                let want = desired(&registered(id, &list), ip.parse().unwrap());
                assert_eq!(want.len(), sessions, "{id} of {n}");
                assert!(
                    !monitored(&want).contains(id.as_str()),
                    "{id} watches itself"
                );
                for m in want.values() {
                    assert_eq!(want[&port_name(&m.chassis)], *m);
                    wanted.insert((id.clone(), m.chassis.clone()));
                }
            }
            // Each session has both ends (BFD needs them), so every chassis is watched by as
            // many as it watches.
            for (a, b) in &wanted {
                assert!(
                    wanted.contains(&(b.clone(), a.clone())),
                    "{a} -> {b} of {n}"
                );
            }
        }
    }

    #[test]
    fn gateways_are_watched_by_all_and_clashes_are_left_out() {
        let mut list = vec![("ch1", "192.168.50.1", false)];
        let ids: Vec<String> = (2..=9).map(|i| format!("ch{i}")).collect();
        let ips: Vec<String> = (2..=9).map(|i| format!("192.168.50.{i}")).collect();
        list.extend(
            ids.iter()
                .zip(&ips)
                .map(|(i, a)| (i.as_str(), a.as_str(), false)),
        );
        list.push(("gw", "192.168.50.99", true));
        let t = registered("ch1", &list);
        let want = desired(&t, "192.168.50.1".parse().unwrap());
        assert!(monitored(&want).contains("gw"), "{want:?}");
        assert_eq!(want.len(), 2 * RING_NEIGHBOURS + 1, "{want:?}");
        assert_eq!(
            want[&port_name("gw")].remote_ip,
            Ipv4Addr::new(192, 168, 50, 99)
        );
        // A chassis claiming our address, or one unregistered, is never watched; a second
        // chassis on an address already watched neither.
        let mut clash = list.clone();
        clash.push(("twin", "192.168.50.1", false));
        let want = desired(&registered("ch1", &clash), "192.168.50.1".parse().unwrap());
        assert!(!monitored(&want).contains("twin"));
        let all: Vec<(&str, &str, bool)> = list
            .iter()
            .map(|&(id, _, gw)| (id, "192.168.50.7", gw))
            .collect();
        let want = desired(&registered("x", &all), "192.168.50.1".parse().unwrap());
        assert_eq!(want.len(), 1, "one address: one port {want:?}");
        assert!(desired(&t, "2001:db8::1".parse().unwrap()).is_empty());
        // The gateway has a session with every chassis (each has one with it).
        let want = desired(&registered("gw", &list), "192.168.50.99".parse().unwrap());
        assert_eq!(want.len(), list.len() - 1, "{want:?}");
    }

    #[test]
    fn a_down_counts_once_it_lasted_the_hold_down() {
        let t0 = Instant::now();
        let mut h = HoldDown::default();
        assert_eq!(h.verdict("c2", Some(true), t0), Some(Some(true)));
        // A flap: down, up again within the hold-down: nothing counts but the up.
        assert_eq!(h.verdict("c2", Some(false), t0), None);
        assert_eq!(h.next_due(), Some(t0 + HOLD_DOWN));
        assert!(h.due(t0 + HOLD_DOWN / 2).is_empty());
        assert_eq!(
            h.verdict("c2", Some(true), t0 + HOLD_DOWN / 2),
            Some(Some(true))
        );
        assert!(
            h.due(t0 + HOLD_DOWN * 2).is_empty(),
            "the flap was forgotten"
        );
        // A real failure: down and staying down counts after the hold-down, from its start
        // (a repeated down does not push it back).
        let t1 = t0 + HOLD_DOWN * 3;
        assert_eq!(h.verdict("c3", Some(false), t1), None);
        assert_eq!(h.verdict("c3", Some(false), t1 + HOLD_DOWN / 2), None);
        assert!(h.due(t1 + HOLD_DOWN / 2).is_empty());
        assert_eq!(h.due(t1 + HOLD_DOWN), vec!["c3".to_string()]);
        assert_eq!(h.next_due(), None);
        // Not known (its port gone) passes at once and cancels a held down.
        assert_eq!(h.verdict("c4", Some(false), t1), None);
        assert_eq!(h.verdict("c4", None, t1), Some(None));
        assert!(h.due(t1 + HOLD_DOWN * 2).is_empty());
    }

    #[test]
    fn verdicts_only_from_monitor_ports() {
        let row = |name: &str, ids: &[(&str, &str)], st: &[(&str, &str)]| {
            Row::new()
                .with("name", Value::atom(name))
                .with("external_ids", Value::map(ids.iter().copied()))
                .with("bfd_status", Value::map(st.iter().copied()))
        };
        let p2 = port_name("ch2");
        let p3 = port_name("ch3");
        let rows = [
            (
                Uuid::from_u128(1),
                row(&p2, &[(PEER_KEY, "ch2")], &[("forwarding", "true")]),
            ),
            (
                Uuid::from_u128(2),
                row(
                    &p3,
                    &[(PEER_KEY, "ch3")],
                    &[("forwarding", "false"), ("flap_count", "0")],
                ),
            ),
            // Names another chassis than its name says: ignored.
            (
                Uuid::from_u128(3),
                row(
                    "wyb-00000000",
                    &[(PEER_KEY, "ch4")],
                    &[("forwarding", "true")],
                ),
            ),
            (Uuid::from_u128(4), row("tap1", &[("iface-id", "p1")], &[])),
        ];
        let got: BTreeMap<String, bool> = rows
            .iter()
            .filter_map(|(u, r)| peer_verdict(u, r))
            .collect();
        assert_eq!(got, BTreeMap::from([("ch2".to_string(), true)]));
    }
}
