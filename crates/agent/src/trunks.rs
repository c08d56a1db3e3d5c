//! Trunk subports' ports on `br-int`, kept in OVSDB as desired state.
//!
//! Every subport of a trunk whose parent port is a local VIF gets a patch-port pair with both
//! ends on `br-int` (see the pipeline's `trunks` app): the outer end (`spt` + the first 11
//! characters of the subport's id) is the subport's own VIF (`external_ids:iface-id`,
//! `attached-mac`), the inner end (`spi` + 11 characters) names the subport, the trunk's parent
//! and the VLAN id for the agent ([`pipeline::trunks::SUBPORT_KEY`] and its neighbours). The
//! agent learns the outer end like any VIF, and the inner end's OpenFlow port from its own
//! monitor ([`watch_inner`]).
//!
//! [`desired`] says which pairs the topology and the local VIFs call for; [`converge`] brings
//! OVSDB there in one transaction: it creates the missing pairs, removes those no trunk wants
//! any more (a subport removed, a trunk deleted, the parent's VIF gone) and corrects, in place,
//! the attributes that may change (the subport's MAC, the parent and VLAN id the inner end
//! names). A pair that is already right is left alone, so an agent restart adopts the pairs it
//! finds: no port is re-created, no OpenFlow port renumbered, no flow removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ovsdb::tables::{Bridge, Interface, Port, Table, select};
use ovsdb::{
    Atom, Client, Condition, Endpoint, MonitorRequest, Mutation, Mutator, Operation, Row, Uuid,
    Value,
};
use pipeline::model::{Topology, mac_octets};
use pipeline::trunks::{PARENT_KEY, SUBPORT_KEY, VLAN_KEY, inner_port_name, outer_port_name};

use crate::AgentError;
use crate::switch_db::{DB, InterfaceFollower, RowEvent, map_value, ovsdb_error};

/// One subport's patch pair, as wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub subport: String,
    /// The trunk's parent port.
    pub parent: String,
    pub vlan: u16,
    /// The subport's MAC (`attached-mac` of the outer end), once the topology has the port.
    pub mac: Option<String>,
}

impl Pair {
    fn outer(&self) -> String {
        outer_port_name(&self.subport)
    }

    fn inner(&self) -> String {
        inner_port_name(&self.subport)
    }

    /// The outer end's `external_ids`.
    fn outer_ids(&self) -> BTreeMap<String, String> {
        let mut ids: BTreeMap<String, String> = [
            ("iface-id", self.subport.clone()),
            ("iface-status", "active".into()),
            (SUBPORT_KEY, self.subport.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(mac) = &self.mac {
            ids.insert("attached-mac".into(), mac.clone());
        }
        ids
    }

    /// The inner end's `external_ids`.
    fn inner_ids(&self) -> BTreeMap<String, String> {
        [
            (SUBPORT_KEY, self.subport.clone()),
            (PARENT_KEY, self.parent.clone()),
            (VLAN_KEY, self.vlan.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The pairs wanted, by subport: one per subport of a trunk whose parent `is_local` (has a VIF
/// here), served as the pipeline serves it (one trunk naming the port, a distinct VLAN id);
/// of subports whose port names would clash (the same first 11 characters), the first only.
pub fn desired(topo: &Topology, is_local: impl Fn(&str) -> bool) -> BTreeMap<String, Pair> {
    let mut out = BTreeMap::new();
    let mut names = BTreeSet::new();
    for trunk in topo.trunks.values().filter(|t| is_local(&t.parent)) {
        let sole = |port: &str| topo.trunks_naming(port).count() == 1;
        if !sole(&trunk.parent) {
            continue;
        }
        for sub in trunk.distinct_subports().filter(|s| sole(&s.port_id)) {
            if !names.insert(outer_port_name(&sub.port_id)) {
                tracing::warn!(
                    subport = sub.port_id,
                    "another subport's port has the same name: not served here"
                );
                continue;
            }
            let mac = topo.ports.get(&sub.port_id).map(|p| {
                let o = mac_octets(p.mac);
                format!(
                    "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    o[0], o[1], o[2], o[3], o[4], o[5]
                )
            });
            out.insert(
                sub.port_id.clone(),
                Pair {
                    subport: sub.port_id.clone(),
                    parent: trunk.parent.clone(),
                    vlan: sub.vlan,
                    mac,
                },
            );
        }
    }
    out
}

/// What the database holds of the bridge and its ports.
struct Held {
    bridge: Bridge,
    ports: BTreeMap<String, Port>,
    ifaces: BTreeMap<Uuid, Interface>,
}

impl Held {
    async fn read(client: &Client, bridge: &str) -> Result<Held, AgentError> {
        let res = client
            .transact(
                DB,
                &[
                    select::<Bridge>(vec![Condition::eq("name", Value::atom(bridge))], &[]),
                    select::<Port>(vec![], &[]),
                    select::<Interface>(vec![], &[]),
                ],
            )
            .await
            .map_err(ovsdb_error)?;
        fn rows<T: Table>(r: Option<&ovsdb::OpResult>) -> Result<Vec<T>, AgentError> {
            r.and_then(|r| r.rows.as_ref())
                .into_iter()
                .flatten()
                .map(|row| {
                    let uuid = row
                        .get("_uuid")
                        .and_then(Value::as_atom)
                        .and_then(Atom::as_uuid)
                        .ok_or_else(|| ovsdb_error("row without _uuid"))?;
                    T::from_row(uuid, row).map_err(ovsdb_error)
                })
                .collect()
        }
        let bridge = rows::<Bridge>(res.first())?
            .into_iter()
            .next()
            .ok_or_else(|| ovsdb_error(format!("no bridge {bridge}")))?;
        let ports = rows::<Port>(res.get(1))?
            .into_iter()
            .filter(|p| bridge.ports.contains(&p.uuid))
            .map(|p| (p.name.clone(), p))
            .collect();
        let ifaces = rows::<Interface>(res.get(2))?
            .into_iter()
            .map(|i| (i.uuid, i))
            .collect();
        Ok(Held {
            bridge,
            ports,
            ifaces,
        })
    }

    /// The interface of the bridge's port `name`, with the port.
    fn end(&self, name: &str) -> Option<(&Port, &Interface)> {
        let port = self.ports.get(name)?;
        let [iface] = port.interfaces.as_slice() else {
            return None;
        };
        Some((port, self.ifaces.get(iface)?))
    }

    /// The ports of pairs (either end), by the subport they name.
    fn pair_ports(&self) -> impl Iterator<Item = (&str, &Port)> {
        self.ports.values().filter_map(|p| {
            let subport = p
                .interfaces
                .iter()
                .filter_map(|i| self.ifaces.get(i))
                .find_map(|i| i.external_ids.get(SUBPORT_KEY))?;
            Some((subport.as_str(), p))
        })
    }
}

/// The state of the end `name` of the pair that should be a patch to `peer` with our
/// `external_ids` `ids`: `None` when it is missing or not that patch of that subport (it is
/// replaced), else right or to be corrected in place (our keys differ from `ids`).
fn end_state(
    held: &Held,
    name: &str,
    peer: &str,
    ids: &BTreeMap<String, String>,
) -> Option<EndState> {
    let (_, iface) = held.end(name)?;
    if iface.kind != "patch" || iface.options.get("peer").map(String::as_str) != Some(peer) {
        return None;
    }
    let ours = |k: &str| {
        k == "iface-id"
            || k == "attached-mac"
            || k == "iface-status"
            || k == SUBPORT_KEY
            || k == PARENT_KEY
            || k == VLAN_KEY
    };
    let same = ids
        .iter()
        .all(|(k, v)| iface.external_ids.get(k) == Some(v))
        && iface
            .external_ids
            .keys()
            .filter(|k| ours(k))
            .all(|k| ids.contains_key(k));
    // The subport an end names is its identity: another one's end is replaced, not edited.
    if iface.external_ids.get(SUBPORT_KEY) != ids.get(SUBPORT_KEY) {
        return None;
    }
    Some(if same {
        EndState::Right
    } else {
        EndState::Edit(iface.uuid)
    })
}

enum EndState {
    Right,
    /// Right but for some `external_ids`: corrected in place.
    Edit(Uuid),
}

/// Brings the pairs on `bridge` to `want` in one transaction; returns whether it changed
/// anything. Safe to call again: pairs already right are not touched.
pub async fn converge(
    client: &Client,
    bridge: &str,
    want: &BTreeMap<String, Pair>,
) -> Result<bool, AgentError> {
    let held = Held::read(client, bridge).await?;
    converge_from(client, want, &held).await
}

/// The bridge's ports and interfaces, read while the agent starts ([`read_ahead`]).
pub struct ReadAhead(tokio::task::JoinHandle<Result<(Client, Held), AgentError>>);

/// Starts reading the bridge's ports and interfaces for the first [`converge_ahead`], so that
/// the read (3 333 ports and their interfaces took 0.25-0.4 s at 10 000 ports) overlaps the wait
/// for the topology.
pub fn read_ahead(endpoint: Endpoint, bridge: String) -> ReadAhead {
    ReadAhead(tokio::spawn(async move {
        let client = crate::switch_db::connect(&endpoint).await?;
        let held = Held::read(&client, &bridge).await?;
        Ok((client, held))
    }))
}

/// [`converge`] from what was read ahead. Only this agent makes or removes pairs, so what was
/// read of them still holds; the transaction only adds and removes its own ports (mutations of
/// the bridge's set), so ports plugged meanwhile stay. Should the database have changed under a
/// pair's name anyway (the transaction fails), it reads again and converges from that.
pub async fn converge_ahead(
    ahead: ReadAhead,
    endpoint: &Endpoint,
    bridge: &str,
    want: &BTreeMap<String, Pair>,
) -> Result<bool, AgentError> {
    let read = ahead
        .0
        .await
        .map_err(|e| AgentError::Ovsdb(format!("reading the bridge's ports: {e}")))
        .and_then(|r| r);
    if let Ok((client, held)) = &read {
        match converge_from(client, want, held).await {
            Ok(wrote) => return Ok(wrote),
            Err(e) => {
                tracing::info!(error = %e, "subports' pairs changed since read; reading again")
            }
        }
    }
    let client = crate::switch_db::connect(endpoint).await?;
    converge(&client, bridge, want).await
}

/// Brings the pairs to `want` from `held`, what the database holds.
async fn converge_from(
    client: &Client,
    want: &BTreeMap<String, Pair>,
    held: &Held,
) -> Result<bool, AgentError> {
    let mut ops = Vec::new();
    let mut add: Vec<Atom> = Vec::new();
    let mut remove: BTreeSet<Uuid> = BTreeSet::new();
    let mut names = 0;
    for pair in want.values() {
        let (outer, inner) = (pair.outer(), pair.inner());
        let (outer_ids, inner_ids) = (pair.outer_ids(), pair.inner_ids());
        let ends = (
            end_state(held, &outer, &inner, &outer_ids),
            end_state(held, &inner, &outer, &inner_ids),
        );
        if let (Some(o), Some(i)) = ends {
            for (state, ids) in [(o, &outer_ids), (i, &inner_ids)] {
                if let EndState::Edit(uuid) = state {
                    ops.push(Operation::Update {
                        table: Interface::NAME.into(),
                        conditions: vec![Condition::uuid(uuid)],
                        row: Row::new().with("external_ids", map_value(ids)),
                    });
                }
            }
            continue;
        }
        // Missing or wrong: whatever holds the names goes, a fresh pair comes.
        for name in [&outer, &inner] {
            if let Some(p) = held.ports.get(name.as_str()) {
                remove.insert(p.uuid);
            }
        }
        for (name, peer, ids) in [(&outer, &inner, &outer_ids), (&inner, &outer, &inner_ids)] {
            names += 1;
            let (i, p) = (format!("iface{names}"), format!("port{names}"));
            ops.push(Operation::Insert {
                table: Interface::NAME.into(),
                row: Row::new()
                    .with("name", Value::atom(name.as_str()))
                    .with("type", Value::atom("patch"))
                    .with("options", Value::map([("peer", peer.as_str())]))
                    .with("external_ids", map_value(ids)),
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
    }
    for (subport, port) in held.pair_ports() {
        if !want.contains_key(subport) {
            remove.insert(port.uuid);
        }
    }
    let bridge_ports = |mutator, ports: Vec<Atom>| Operation::Mutate {
        table: Bridge::NAME.into(),
        conditions: vec![Condition::uuid(held.bridge.uuid)],
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

/// Starts following the inner ends' OpenFlow ports (the `ofport` column of `Interface` rows
/// that name a subport and are not its VIF).
pub fn watch_inner(endpoint: Endpoint) -> InterfaceFollower<u32> {
    // Only patch ports: the inner ends are patches, the VIFs none of this follower's business.
    let patches = vec![Condition::eq("type", Value::atom("patch"))];
    InterfaceFollower::spawn(
        endpoint,
        MonitorRequest::columns(&["name", "ofport", "external_ids"]).rows_where(patches),
        inner_port,
        "inner port monitor",
    )
}

/// The subport whose inner end an `Interface` row is, with its valid OpenFlow port.
fn inner_port(uuid: &Uuid, row: &Row) -> Option<(String, u32)> {
    let i = Interface::from_row(*uuid, row).ok()?;
    if i.external_ids.contains_key("iface-id") {
        return None;
    }
    let subport = i.external_ids.get(SUBPORT_KEY)?;
    let ofport = u32::try_from(i.ofport?)
        .ok()
        .filter(|p| (1..0xff00).contains(p))?;
    (i.name == inner_port_name(subport)).then(|| (subport.clone(), ofport))
}

/// Waits (up to `timeout`) until `watcher` has reported the inner ends of every pair in `want`,
/// passing each event it reports to `report`.
pub async fn await_inner(
    watcher: &mut InterfaceFollower<u32>,
    want: &BTreeMap<String, Pair>,
    timeout: Duration,
    mut report: impl FnMut(RowEvent<u32>),
) {
    let mut synced = false;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let done =
        |synced: bool, seen: &BTreeSet<String>| synced && want.keys().all(|s| seen.contains(s));
    let _ = tokio::time::timeout(timeout, async {
        while !done(synced, &seen) {
            let Some(event) = watcher.next().await else {
                return;
            };
            match &event {
                RowEvent::Synced => synced = true,
                RowEvent::Changed(s, Some(_)) => {
                    seen.insert(s.clone());
                }
                RowEvent::Changed(s, None) => {
                    seen.remove(s);
                }
            }
            report(event);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn topo(objects: &[(&str, serde_json::Value)]) -> Topology {
        let mut t = Topology::default();
        for (key, v) in objects {
            let (kind, id) = nb_keys::parse(key).unwrap();
            t.put(pipeline::model::Object::decode(kind, id, v).unwrap());
        }
        t
    }

    fn trunk(id: &str, parent: &str, subs: &[(&str, u16)]) -> serde_json::Value {
        let subs: Vec<_> = subs
            .iter()
            .map(|(p, v)| json!({"port_id": p, "segmentation_type": "vlan", "segmentation_id": v}))
            .collect();
        json!({"id": id, "port_id": parent, "sub_ports": subs})
    }

    #[test]
    fn pairs_for_local_parents_only() {
        let t = topo(&[
            (
                "/r/trunks/t1",
                trunk("t1", "p1", &[("s1", 101), ("s2", 102)]),
            ),
            ("/r/trunks/t2", trunk("t2", "p2", &[("s3", 103)])),
            (
                "/r/ports/s1",
                json!({"id": "s1", "network_id": "n2", "mac_address": "fa:16:3e:00:00:01"}),
            ),
        ]);
        let want = desired(&t, |p| p == "p1");
        assert_eq!(want.keys().collect::<Vec<_>>(), ["s1", "s2"]);
        assert_eq!(want["s1"].mac.as_deref(), Some("fa:16:3e:00:00:01"));
        assert_eq!((want["s2"].vlan, want["s2"].mac.as_ref()), (102, None));
        assert_eq!(want["s1"].outer_ids()["iface-id"], "s1");
        assert_eq!(want["s1"].inner_ids()[VLAN_KEY], "101");
        assert!(!want["s1"].inner_ids().contains_key("iface-id"));
        assert!(desired(&t, |_| false).is_empty());
    }

    #[test]
    fn clashing_names_and_trunks_are_not_served() {
        let t = topo(&[
            (
                "/r/trunks/t1",
                trunk(
                    "t1",
                    "p1",
                    &[("aaaaaaaaaaa-1", 101), ("aaaaaaaaaaa-2", 102), ("b", 103)],
                ),
            ),
            // A second trunk naming b: neither trunk serves it.
            ("/r/trunks/t2", trunk("t2", "p2", &[("b", 104)])),
        ]);
        let want = desired(&t, |_| true);
        assert_eq!(want.keys().collect::<Vec<_>>(), ["aaaaaaaaaaa-1"]);
    }

    #[test]
    fn only_inner_ends_with_a_port_are_reported() {
        let row = |name: &str, ofport: i64, ids: &[(&str, &str)]| {
            Row::new()
                .with("name", Value::atom(name))
                .with("ofport", Value::atom(ofport))
                .with("external_ids", Value::map(ids.iter().copied()))
        };
        let rows = [
            (Uuid::from_u128(1), row("spis1", 7, &[(SUBPORT_KEY, "s1")])),
            (
                Uuid::from_u128(2),
                row("spts1", 8, &[(SUBPORT_KEY, "s1"), ("iface-id", "s1")]),
            ),
            (Uuid::from_u128(3), row("spis2", -1, &[(SUBPORT_KEY, "s2")])),
            (Uuid::from_u128(4), row("tap1", 9, &[("iface-id", "p1")])),
            (Uuid::from_u128(5), row("other", 10, &[(SUBPORT_KEY, "s3")])),
        ];
        let got: BTreeMap<String, u32> =
            rows.iter().filter_map(|(u, r)| inner_port(u, r)).collect();
        assert_eq!(got, BTreeMap::from([("s1".to_string(), 7)]));
    }
}
