//! The outer end of a pod's veth on an Open vSwitch bridge, through the workspace's OVSDB
//! client: one transaction adds the `Interface` and `Port` rows (named after the link) and
//! links the port into the bridge. On the integration bridge (host mode) the port is a VIF, as
//! os-vif plugs a VM's — `external_ids:iface-id` (the Neutron port, which is how the Wyvern
//! agent learns its VIFs), `attached-mac`, `iface-status=active`; on the bridge of a VM's own
//! Open vSwitch (nested mode, `"vlan": "ovs"`) it is an access port, `tag=<VLAN id>`, with no
//! Neutron identity ([`PortKind`]). Either way it carries [`OWNER_KEY`] =
//! `<CNI_CONTAINERID>/<CNI_IFNAME>`, by which `DEL` finds the port again with nothing else to go
//! on (no `prevResult`, the namespace and the Neutron port both gone).
//!
//! A VIF is ready for traffic once the Wyvern agent has installed its flows and marked the
//! `Interface` `external_ids:` [`INSTALLED_KEY`]`=true` (as ovn-controller marks
//! `ovn-installed`): [`Ovs::await_installed`] waits for that inside `ovsdb-server`, with one
//! `wait` operation — no polling.

use std::time::Duration;

use ovsdb::{
    Atom, Client, ClientOptions, Condition, Endpoint, Mutation, Operation, Row, Value, WaitUntil,
};

use crate::error::{Error, Result};

/// The database.
const DB: &str = "Open_vSwitch";
/// `external_ids` key naming the CNI attachment a port belongs to.
pub const OWNER_KEY: &str = "wyvern-cni-owner";
/// How long connecting and each transaction may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// `external_ids` key the Wyvern agent sets to `true` once a VIF's flows are in the switch.
pub const INSTALLED_KEY: &str = "wyvern-installed";

/// What a plugged port is on its bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind<'a> {
    /// The VIF of Neutron port `port_id` with `mac` (the integration bridge).
    Vif {
        /// The Neutron port's id (`iface-id`).
        port_id: &'a str,
        /// Its MAC (`attached-mac`).
        mac: &'a str,
    },
    /// An access port of VLAN `tag` (a VM's bridge whose trunk port carries the VLANs).
    Access {
        /// The VLAN id.
        tag: u16,
    },
}

/// A connection to an OVSDB (the chassis', or in nested mode the VM's).
pub struct Ovs {
    client: Client,
}

/// An interface this plugin plugged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugged {
    /// Its name (the host end of the veth).
    pub name: String,
    /// `external_ids:iface-id`.
    pub iface_id: String,
    /// `external_ids:` [`OWNER_KEY`] (empty on interfaces others plugged).
    pub owner: String,
    /// The `error` column, if vswitchd could not open it.
    pub error: Option<String>,
}

impl Ovs {
    /// Connects to `endpoint` (`unix:PATH`, `tcp:HOST:PORT`). A database that does not answer
    /// is a transient condition.
    pub async fn connect(endpoint: &str) -> Result<Ovs> {
        Self::connect_waiting(endpoint, Duration::ZERO).await
    }

    /// Like [`Ovs::connect`], for a connection that also waits up to `wait` inside the database
    /// ([`Ovs::await_installed`]).
    pub async fn connect_waiting(endpoint: &str, wait: Duration) -> Result<Ovs> {
        let ep: Endpoint = endpoint
            .parse()
            .map_err(|e| Error::Config(format!("ovsdb {endpoint:?}: {e}")))?;
        let opts = ClientOptions {
            request_timeout: TIMEOUT + wait,
            ..ClientOptions::default()
        };
        let client = tokio::time::timeout(TIMEOUT, Client::connect(&ep, opts))
            .await
            .map_err(|_| Error::TryAgain(format!("OVSDB {endpoint} did not answer")))?
            .map_err(|e| Error::TryAgain(format!("OVSDB {endpoint}: {e}")))?;
        Ok(Ovs { client })
    }

    /// Adds interface `name` to `bridge` as `kind`, recorded as `owner`'s.
    pub async fn plug(
        &self,
        bridge: &str,
        name: &str,
        kind: PortKind<'_>,
        owner: &str,
    ) -> Result<()> {
        let mut port = Row::new()
            .with("name", Value::atom(name))
            .with("interfaces", Value::atom(Atom::NamedUuid("iface".into())));
        let ids = match kind {
            PortKind::Vif { port_id, mac } => Value::map([
                ("iface-id", port_id),
                ("iface-status", "active"),
                ("attached-mac", mac),
                (OWNER_KEY, owner),
            ]),
            PortKind::Access { tag } => {
                port.set("tag", Value::atom(i64::from(tag)));
                Value::map([(OWNER_KEY, owner)])
            }
        };
        let ops = [
            Operation::Insert {
                table: "Interface".into(),
                row: Row::new()
                    .with("name", Value::atom(name))
                    .with("external_ids", ids),
                uuid_name: Some("iface".into()),
            },
            Operation::Insert {
                table: "Port".into(),
                row: port,
                uuid_name: Some("port".into()),
            },
            Operation::Mutate {
                table: "Bridge".into(),
                conditions: vec![named(bridge)],
                mutations: vec![Mutation::insert(
                    "ports",
                    Value::atom(Atom::NamedUuid("port".into())),
                )],
            },
        ];
        let r = self.client.transact(DB, &ops).await?;
        if r.get(2).and_then(|x| x.count) != Some(1) {
            // Nothing refers to the new rows: the database dropped them again.
            return Err(Error::Datapath(format!(
                "Open vSwitch has no bridge {bridge:?}"
            )));
        }
        Ok(())
    }

    /// Waits up to `timeout` until interface `name` carries [`INSTALLED_KEY`]`=true` (the agent
    /// installed the flows of its port `iface_id`): a `wait` operation, which ovsdb-server
    /// holds until the row matches or the time is up. Not in time (no agent, or one that
    /// cannot serve the port yet) is a transient condition: try again later.
    pub async fn await_installed(
        &self,
        name: &str,
        iface_id: &str,
        timeout: Duration,
    ) -> Result<()> {
        let wait = Operation::Wait {
            table: "Interface".into(),
            conditions: vec![
                named(name),
                Condition::includes(
                    "external_ids",
                    Value::map([("iface-id", iface_id), (INSTALLED_KEY, "true")]),
                ),
            ],
            columns: vec!["name".into()],
            until: WaitUntil::Equal,
            rows: vec![Row::new().with("name", Value::atom(name))],
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        };
        match self.client.transact(DB, &[wait]).await {
            Ok(_) => Ok(()),
            Err(ovsdb::Error::Transaction { error, .. }) if error == "timed out" => {
                Err(Error::TryAgain(format!(
                    "the Wyvern agent did not install the flows of port {iface_id} ({name}) \
                     within {timeout:?} (no {INSTALLED_KEY}=true)"
                )))
            }
            Err(ovsdb::Error::Timeout(_)) => Err(Error::TryAgain(format!(
                "OVSDB did not answer while waiting for {INSTALLED_KEY} on {name}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The interfaces recorded as `owner`'s.
    pub async fn owned_by(&self, owner: &str) -> Result<Vec<Plugged>> {
        self.select(Condition::includes(
            "external_ids",
            Value::map([(OWNER_KEY, owner)]),
        ))
        .await
    }

    /// The interface called `name`, if any.
    pub async fn interface(&self, name: &str) -> Result<Option<Plugged>> {
        Ok(self.select(named(name)).await?.into_iter().next())
    }

    /// The `tag` (VLAN id) of port `name`; `None` if it has none or there is no such port.
    pub async fn tag(&self, name: &str) -> Result<Option<u16>> {
        // An optional column: a set of zero or one integer.
        Ok(self
            .rows("Port", named(name), &["tag"])
            .await?
            .first()
            .and_then(|row| row.get("tag"))
            .and_then(Value::as_set)
            .and_then(<[Atom]>::first)
            .and_then(Atom::as_integer)
            .and_then(|t| u16::try_from(t).ok()))
    }

    async fn select(&self, cond: Condition) -> Result<Vec<Plugged>> {
        let rows = self
            .rows("Interface", cond, &["name", "external_ids", "error"])
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let name = row
                    .get("name")
                    .and_then(Value::as_atom)
                    .and_then(Atom::as_str)
                    .unwrap_or("")
                    .to_owned();
                let id = |key: &str| {
                    row.get("external_ids")
                        .and_then(|ids| ids.map_get(&Atom::from(key)))
                        .and_then(Atom::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                // An optional column: a set of zero or one string.
                let error = row
                    .get("error")
                    .and_then(Value::as_set)
                    .and_then(<[Atom]>::first)
                    .and_then(Atom::as_str)
                    .map(str::to_owned);
                Plugged {
                    name,
                    iface_id: id("iface-id"),
                    owner: id(OWNER_KEY),
                    error,
                }
            })
            .collect())
    }

    /// Removes port `name` from whichever bridge holds it (its rows are then dropped); a
    /// missing port is no error.
    pub async fn unplug(&self, name: &str) -> Result<()> {
        let uuids: Vec<_> = self
            .rows("Port", named(name), &["_uuid"])
            .await?
            .iter()
            .filter_map(|row| {
                row.get("_uuid")
                    .and_then(Value::as_atom)
                    .and_then(Atom::as_uuid)
            })
            .collect();
        for uuid in uuids {
            self.client
                .transact(
                    DB,
                    &[Operation::Mutate {
                        table: "Bridge".into(),
                        conditions: vec![Condition::includes("ports", Value::atom(uuid))],
                        mutations: vec![Mutation::delete("ports", Value::atom(uuid))],
                    }],
                )
                .await?;
        }
        Ok(())
    }

    /// `columns` of the rows of `table` that match `cond`.
    async fn rows(&self, table: &str, cond: Condition, columns: &[&str]) -> Result<Vec<Row>> {
        let r = self
            .client
            .transact(
                DB,
                &[Operation::Select {
                    table: table.into(),
                    conditions: vec![cond],
                    columns: Some(columns.iter().map(|&c| c.into()).collect()),
                }],
            )
            .await?;
        Ok(r.into_iter()
            .next()
            .and_then(|x| x.rows)
            .unwrap_or_default())
    }
}

/// The rows called `name`.
fn named(name: &str) -> Condition {
    Condition::eq("name", Value::atom(name))
}
