//! Converging the node's OVS configuration (bridges, tunnel and patch ports) in one
//! transaction, and plugging VIFs the way the compute service does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ovsdb::tables::{Bridge, Interface, OpenVSwitch, Port, Table, select};
use ovsdb::{Atom, Client, Condition, Mutation, Mutator, Operation, Row, Uuid, Value};

use crate::config::check_ifname;
use crate::{ChassisConfig, Error, Result};

const DB: &str = "Open_vSwitch";
/// `Port.external_ids` key marking ports the agent owns; the value is the port's role.
const ROLE_KEY: &str = "wyvern-role";
const ROLE_TUNNEL: &str = "tunnel";
const ROLE_PATCH: &str = "patch";
/// `Open_vSwitch.external_ids` key holding the bridge mappings, as `physnet:bridge,...`.
pub const BRIDGE_MAPPINGS_KEY: &str = "wyvern-bridge-mappings";

/// What [`ensure`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnsureReport {
    /// Bridges created.
    pub created_bridges: Vec<String>,
    /// Bridges whose settings were corrected.
    pub updated_bridges: Vec<String>,
    /// Ports added.
    pub added_ports: Vec<String>,
    /// Ports whose type or options were corrected.
    pub updated_ports: Vec<String>,
    /// Ports removed.
    pub removed_ports: Vec<String>,
    /// Configuration sequence number to pass to [`wait_applied`] (`None`: nothing changed).
    pub cfg_seq: Option<i64>,
}

impl EnsureReport {
    /// True if nothing had to change.
    pub fn is_noop(&self) -> bool {
        self.cfg_seq.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct WantPort {
    name: String,
    kind: &'static str,
    options: BTreeMap<String, String>,
    role: &'static str,
}

struct State {
    root: OpenVSwitch,
    bridges: BTreeMap<String, Bridge>,
    ports: BTreeMap<Uuid, Port>,
    ifaces: BTreeMap<Uuid, Interface>,
}

impl State {
    async fn read(client: &Client) -> Result<State> {
        let r = client
            .transact(
                DB,
                &[
                    select::<OpenVSwitch>(vec![], &[]),
                    select::<Bridge>(vec![], &[]),
                    select::<Port>(vec![], &[]),
                    select::<Interface>(vec![], &[]),
                ],
            )
            .await?;
        fn rows<T: Table>(r: &ovsdb::OpResult) -> Result<Vec<T>> {
            r.rows
                .iter()
                .flatten()
                .map(|row| {
                    let uuid = row
                        .get("_uuid")
                        .and_then(Value::as_atom)
                        .and_then(Atom::as_uuid)
                        .ok_or_else(|| ovsdb::Error::Protocol("row without _uuid".into()))?;
                    Ok(T::from_row(uuid, row)?)
                })
                .collect()
        }
        let root = rows::<OpenVSwitch>(&r[0])?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config("the Open_vSwitch table is empty".into()))?;
        Ok(State {
            root,
            bridges: rows::<Bridge>(&r[1])?
                .into_iter()
                .map(|b| (b.name.clone(), b))
                .collect(),
            ports: rows::<Port>(&r[2])?
                .into_iter()
                .map(|p| (p.uuid, p))
                .collect(),
            ifaces: rows::<Interface>(&r[3])?
                .into_iter()
                .map(|i| (i.uuid, i))
                .collect(),
        })
    }

    fn iface_of(&self, port: &Port) -> Option<&Interface> {
        port.interfaces.first().and_then(|u| self.ifaces.get(u))
    }
}

fn tunnel_ports(cfg: &ChassisConfig) -> Vec<WantPort> {
    cfg.encaps
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|e| {
            let mut options: BTreeMap<String, String> = [("remote_ip", "flow"), ("key", "flow")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            if let Some(ip) = cfg.local_ip {
                options.insert("local_ip".into(), ip.to_string());
            }
            WantPort {
                name: e.port_name().to_owned(),
                kind: e.ovs_type(),
                options,
                role: ROLE_TUNNEL,
            }
        })
        .collect()
}

fn patch(name: String, peer: String) -> WantPort {
    WantPort {
        name,
        kind: "patch",
        options: [("peer".to_owned(), peer)].into_iter().collect(),
        role: ROLE_PATCH,
    }
}

/// Desired owned ports per bridge (the integration bridge first).
fn desired(cfg: &ChassisConfig) -> Vec<(String, Vec<WantPort>)> {
    let mut int_ports = tunnel_ports(cfg);
    let mut out = Vec::new();
    for m in &cfg.bridge_mappings {
        int_ports.push(patch(m.int_patch(), m.phy_patch()));
        out.push((m.bridge.clone(), vec![patch(m.phy_patch(), m.int_patch())]));
    }
    out.insert(0, (cfg.integration_bridge.clone(), int_ports));
    out
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::map(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn strings(v: &[String]) -> Value {
    Value::set(v.iter().map(String::as_str))
}

struct Tx {
    ops: Vec<Operation>,
    names: usize,
}

impl Tx {
    fn name(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }

    /// Inserts interface and port rows; returns the port's named-uuid.
    fn insert_port(&mut self, name: &str, kind: &str, options: Value, external_ids: Value) -> Atom {
        let i = self.name("iface");
        let p = self.name("port");
        self.ops.push(Operation::Insert {
            table: Interface::NAME.into(),
            row: Row::new()
                .with("name", Value::atom(name))
                .with("type", Value::atom(kind))
                .with("options", options),
            uuid_name: Some(i.clone()),
        });
        self.ops.push(Operation::Insert {
            table: Port::NAME.into(),
            row: Row::new()
                .with("name", Value::atom(name))
                .with("interfaces", Value::atom(Atom::NamedUuid(i)))
                .with("external_ids", external_ids),
            uuid_name: Some(p.clone()),
        });
        Atom::NamedUuid(p)
    }

    fn mutate_ports(&mut self, bridge: Uuid, mutator: Mutator, ports: Vec<Atom>) {
        if !ports.is_empty() {
            self.ops.push(Operation::Mutate {
                table: Bridge::NAME.into(),
                conditions: vec![Condition::uuid(bridge)],
                mutations: vec![Mutation {
                    column: "ports".into(),
                    mutator,
                    value: Value::set(ports),
                }],
            });
        }
    }
}

/// Brings the chassis' bridges and ports to `cfg` in one transaction; safe to call again
/// (a second call with the same `cfg` changes nothing). Afterwards, [`wait_applied`] with
/// the report's `cfg_seq` waits until vswitchd has acted on it.
pub async fn ensure(client: &Client, cfg: &ChassisConfig) -> Result<EnsureReport> {
    cfg.validate()?;
    let st = State::read(client).await?;
    let mut rep = EnsureReport::default();
    let mut tx = Tx {
        ops: Vec::new(),
        names: 0,
    };
    let want = desired(cfg);
    let protocols = strings(&cfg.protocols);
    let bridge_settings = |b: &Bridge| {
        b.datapath_type == cfg.datapath_type
            && b.fail_mode.as_deref() == Some("secure")
            && b.protocols.iter().collect::<BTreeSet<_>>() == cfg.protocols.iter().collect()
            && b.other_config.get("disable-in-band").map(String::as_str) == Some("true")
    };
    let mut new_bridges = Vec::new();
    for (i, (bname, ports)) in want.iter().enumerate() {
        let is_int = i == 0;
        let Some(br) = st.bridges.get(bname) else {
            // A new bridge: its local port, its owned ports, then the bridge row.
            let mut members = vec![tx.insert_port(
                bname,
                "internal",
                Value::map::<&str, &str>([]),
                Value::map::<&str, &str>([]),
            )];
            for p in ports {
                members.push(tx.insert_port(
                    &p.name,
                    p.kind,
                    string_map(&p.options),
                    Value::map([(ROLE_KEY, p.role)]),
                ));
                rep.added_ports.push(p.name.clone());
            }
            let b = tx.name("bridge");
            tx.ops.push(Operation::Insert {
                table: Bridge::NAME.into(),
                row: Row::new()
                    .with("name", Value::atom(bname.as_str()))
                    .with("ports", Value::set(members))
                    .with("datapath_type", Value::atom(cfg.datapath_type.as_str()))
                    .with("fail_mode", Value::atom("secure"))
                    .with("protocols", protocols.clone())
                    .with("other_config", Value::map([("disable-in-band", "true")])),
                uuid_name: Some(b.clone()),
            });
            new_bridges.push(Atom::NamedUuid(b));
            rep.created_bridges.push(bname.clone());
            continue;
        };
        if is_int && !bridge_settings(br) {
            tx.ops.push(Operation::Update {
                table: Bridge::NAME.into(),
                conditions: vec![Condition::uuid(br.uuid)],
                row: Row::new()
                    .with("datapath_type", Value::atom(cfg.datapath_type.as_str()))
                    .with("fail_mode", Value::atom("secure"))
                    .with("protocols", protocols.clone()),
            });
            tx.ops.push(Operation::Mutate {
                table: Bridge::NAME.into(),
                conditions: vec![Condition::uuid(br.uuid)],
                mutations: vec![
                    Mutation::delete("other_config", Value::set(["disable-in-band"])),
                    Mutation::insert("other_config", Value::map([("disable-in-band", "true")])),
                ],
            });
            rep.updated_bridges.push(bname.clone());
        }
        let mut add = Vec::new();
        for p in ports {
            let existing = st.ports.values().find(|x| x.name == p.name);
            match existing {
                None => {
                    add.push(tx.insert_port(
                        &p.name,
                        p.kind,
                        string_map(&p.options),
                        Value::map([(ROLE_KEY, p.role)]),
                    ));
                    rep.added_ports.push(p.name.clone());
                }
                Some(port) if !br.ports.contains(&port.uuid) => {
                    return Err(Error::Config(format!(
                        "port {} exists on another bridge than {bname}",
                        p.name
                    )));
                }
                Some(port) => {
                    let iface = st.iface_of(port);
                    let same = iface.is_some_and(|i| i.kind == p.kind && i.options == p.options)
                        && port.external_ids.get(ROLE_KEY).map(String::as_str) == Some(p.role);
                    if !same {
                        if let Some(i) = iface {
                            tx.ops.push(Operation::Update {
                                table: Interface::NAME.into(),
                                conditions: vec![Condition::uuid(i.uuid)],
                                row: Row::new()
                                    .with("type", Value::atom(p.kind))
                                    .with("options", string_map(&p.options)),
                            });
                        }
                        tx.ops.push(Operation::Mutate {
                            table: Port::NAME.into(),
                            conditions: vec![Condition::uuid(port.uuid)],
                            mutations: vec![
                                Mutation::delete("external_ids", Value::set([ROLE_KEY])),
                                Mutation::insert("external_ids", Value::map([(ROLE_KEY, p.role)])),
                            ],
                        });
                        rep.updated_ports.push(p.name.clone());
                    }
                }
            }
        }
        tx.mutate_ports(br.uuid, Mutator::Insert, add);
    }
    // Owned ports nobody wants any more, on any bridge.
    for br in st.bridges.values() {
        let wanted: BTreeSet<&str> = want
            .iter()
            .filter(|(b, _)| *b == br.name)
            .flat_map(|(_, ps)| ps.iter().map(|p| p.name.as_str()))
            .collect();
        let stale: Vec<&Port> = br
            .ports
            .iter()
            .filter_map(|u| st.ports.get(u))
            .filter(|p| p.external_ids.contains_key(ROLE_KEY) && !wanted.contains(p.name.as_str()))
            .collect();
        rep.removed_ports
            .extend(stale.iter().map(|p| p.name.clone()));
        tx.mutate_ports(
            br.uuid,
            Mutator::Delete,
            stale.iter().map(|p| Atom::Uuid(p.uuid)).collect(),
        );
    }
    if !new_bridges.is_empty() {
        tx.ops.push(Operation::Mutate {
            table: OpenVSwitch::NAME.into(),
            conditions: vec![Condition::uuid(st.root.uuid)],
            mutations: vec![Mutation::insert("bridges", Value::set(new_bridges))],
        });
    }
    // The mappings, recorded for tools that read the chassis (`wyvern trace`).
    let mappings = cfg
        .bridge_mappings
        .iter()
        .map(|m| format!("{}:{}", m.physnet, m.bridge))
        .collect::<Vec<_>>()
        .join(",");
    if st
        .root
        .external_ids
        .get(BRIDGE_MAPPINGS_KEY)
        .map(String::as_str)
        != Some(mappings.as_str())
    {
        tx.ops.push(Operation::Mutate {
            table: OpenVSwitch::NAME.into(),
            conditions: vec![Condition::uuid(st.root.uuid)],
            mutations: vec![
                Mutation::delete("external_ids", Value::set([BRIDGE_MAPPINGS_KEY])),
                Mutation::insert(
                    "external_ids",
                    Value::map([(BRIDGE_MAPPINGS_KEY, mappings.as_str())]),
                ),
            ],
        });
    }
    if tx.ops.is_empty() {
        return Ok(rep);
    }
    rep.cfg_seq = Some(commit(client, tx.ops, st.root.uuid).await?);
    Ok(rep)
}

/// Runs `ops`, bumping `next_cfg` so vswitchd reports when it has applied them; returns the
/// new `next_cfg`.
async fn commit(client: &Client, mut ops: Vec<Operation>, root: Uuid) -> Result<i64> {
    ops.push(Operation::Mutate {
        table: OpenVSwitch::NAME.into(),
        conditions: vec![Condition::uuid(root)],
        mutations: vec![Mutation {
            column: "next_cfg".into(),
            mutator: Mutator::Add,
            value: Value::atom(1i64),
        }],
    });
    ops.push(Operation::Select {
        table: OpenVSwitch::NAME.into(),
        conditions: vec![Condition::uuid(root)],
        columns: Some(vec!["next_cfg".into()]),
    });
    let r = client.transact(DB, &ops).await?;
    r.last()
        .and_then(|r| r.rows.as_ref())
        .and_then(|rows| rows.first())
        .and_then(|row| row.get("next_cfg"))
        .and_then(Value::as_atom)
        .and_then(Atom::as_integer)
        .ok_or_else(|| ovsdb::Error::Protocol("next_cfg missing".into()).into())
}

/// Waits until vswitchd has applied configuration `seq` (its `cur_cfg` reached it).
pub async fn wait_applied(client: &Client, seq: i64, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        let r = client
            .transact(
                DB,
                &[Operation::Select {
                    table: OpenVSwitch::NAME.into(),
                    conditions: vec![],
                    columns: Some(vec!["cur_cfg".into()]),
                }],
            )
            .await?;
        let cur = r[0]
            .rows
            .iter()
            .flatten()
            .next()
            .and_then(|row| row.get("cur_cfg"))
            .and_then(Value::as_atom)
            .and_then(Atom::as_integer);
        if cur.is_some_and(|c| c >= seq) {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(Error::NotApplied(seq));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Adds interface `ifname` (an existing network device) to `bridge` as the VIF of logical
/// port `iface_id`, as Nova / os-vif do: `external_ids:iface-id`, `attached-mac` and
/// `iface-status=active`.
pub async fn plug_vif(
    client: &Client,
    bridge: &str,
    ifname: &str,
    iface_id: &str,
    mac: Option<&str>,
) -> Result<()> {
    check_ifname(ifname)?;
    let mut ids = vec![("iface-id", iface_id), ("iface-status", "active")];
    if let Some(m) = mac {
        ids.push(("attached-mac", m));
    }
    let mut tx = Tx {
        ops: Vec::new(),
        names: 0,
    };
    let i = tx.name("iface");
    tx.ops.push(Operation::Insert {
        table: Interface::NAME.into(),
        row: Row::new()
            .with("name", Value::atom(ifname))
            .with("external_ids", Value::map(ids)),
        uuid_name: Some(i.clone()),
    });
    tx.ops.push(Operation::Insert {
        table: Port::NAME.into(),
        row: Row::new()
            .with("name", Value::atom(ifname))
            .with("interfaces", Value::atom(Atom::NamedUuid(i))),
        uuid_name: Some("port".into()),
    });
    tx.ops.push(Operation::Mutate {
        table: Bridge::NAME.into(),
        conditions: vec![Condition::eq("name", Value::atom(bridge))],
        mutations: vec![Mutation::insert(
            "ports",
            Value::atom(Atom::NamedUuid("port".into())),
        )],
    });
    let r = client.transact(DB, &tx.ops).await?;
    if r[2].count != Some(1) {
        // Nothing references the new rows, so the server has already dropped them.
        return Err(Error::Config(format!("no bridge {bridge}")));
    }
    Ok(())
}

/// Removes port `ifname` from `bridge` (its rows are garbage-collected).
pub async fn unplug_vif(client: &Client, bridge: &str, ifname: &str) -> Result<()> {
    let r = client
        .transact(
            DB,
            &[Operation::Select {
                table: Port::NAME.into(),
                conditions: vec![Condition::eq("name", Value::atom(ifname))],
                columns: Some(vec!["_uuid".into()]),
            }],
        )
        .await?;
    let Some(uuid) = r[0]
        .rows
        .iter()
        .flatten()
        .next()
        .and_then(|row| row.get("_uuid"))
        .and_then(Value::as_atom)
        .and_then(Atom::as_uuid)
    else {
        return Ok(());
    };
    client
        .transact(
            DB,
            &[Operation::Mutate {
                table: Bridge::NAME.into(),
                conditions: vec![Condition::eq("name", Value::atom(bridge))],
                mutations: vec![Mutation::delete("ports", Value::atom(uuid))],
            }],
        )
        .await?;
    Ok(())
}
