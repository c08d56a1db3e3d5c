//! Typed rows of the `Open_vSwitch` database tables the agent uses: `Open_vSwitch`,
//! `Bridge`, `Port`, `Interface` and `Controller`.
//!
//! Columns missing from a row (not monitored or not selected) take their empty value; a
//! column of the wrong type is an error.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::{Atom, Condition, Error, Operation, Result, Row, Value};

/// A table with a typed row.
pub trait Table: Sized {
    /// Table name.
    const NAME: &'static str;
    /// Columns the typed row reads (useful as a monitor's column list).
    const COLUMNS: &'static [&'static str];
    /// Reads the typed row.
    fn from_row(uuid: Uuid, row: &Row) -> Result<Self>;
}

/// The select of the columns `T` reads, `_uuid` and `extra`, of the rows meeting `conditions`:
/// a bridge with thousands of VIFs has thousands of `Interface` rows, whose statistics and status
/// columns make most of their size.
pub fn select<T: Table>(conditions: Vec<Condition>, extra: &[&str]) -> Operation {
    Operation::Select {
        table: T::NAME.into(),
        conditions,
        columns: Some(
            std::iter::once("_uuid")
                .chain(T::COLUMNS.iter().copied())
                .chain(extra.iter().copied())
                .map(str::to_owned)
                .collect(),
        ),
    }
}

fn wrong(table: &str, col: &str, want: &str, v: &Value) -> Error {
    Error::Schema(format!("{table}.{col}: expected {want}, got {v}"))
}

fn atoms<'a>(t: &str, row: &'a Row, col: &str) -> Result<&'a [Atom]> {
    match row.get(col) {
        None => Ok(&[]),
        Some(v) => v.as_set().ok_or_else(|| wrong(t, col, "a set", v)),
    }
}

fn opt_atom<'a>(t: &str, row: &'a Row, col: &str) -> Result<Option<&'a Atom>> {
    match atoms(t, row, col)? {
        [] => Ok(None),
        [a] => Ok(Some(a)),
        _ => Err(wrong(
            t,
            col,
            "at most one value",
            row.get(col).unwrap_or(&Value::empty()),
        )),
    }
}

fn opt_string(t: &str, row: &Row, col: &str) -> Result<Option<String>> {
    opt_atom(t, row, col)?
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong(t, col, "a string", &Value::atom(a.clone())))
        })
        .transpose()
}

fn string(t: &str, row: &Row, col: &str) -> Result<String> {
    Ok(opt_string(t, row, col)?.unwrap_or_default())
}

fn opt_integer(t: &str, row: &Row, col: &str) -> Result<Option<i64>> {
    opt_atom(t, row, col)?
        .map(|a| {
            a.as_integer()
                .ok_or_else(|| wrong(t, col, "an integer", &Value::atom(a.clone())))
        })
        .transpose()
}

fn opt_bool(t: &str, row: &Row, col: &str) -> Result<Option<bool>> {
    opt_atom(t, row, col)?
        .map(|a| {
            a.as_bool()
                .ok_or_else(|| wrong(t, col, "a boolean", &Value::atom(a.clone())))
        })
        .transpose()
}

fn strings(t: &str, row: &Row, col: &str) -> Result<Vec<String>> {
    atoms(t, row, col)?
        .iter()
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong(t, col, "strings", &Value::atom(a.clone())))
        })
        .collect()
}

fn uuids(t: &str, row: &Row, col: &str) -> Result<Vec<Uuid>> {
    atoms(t, row, col)?
        .iter()
        .map(|a| {
            a.as_uuid()
                .ok_or_else(|| wrong(t, col, "uuids", &Value::atom(a.clone())))
        })
        .collect()
}

/// A `string`→`string` map column.
pub fn string_map(t: &str, row: &Row, col: &str) -> Result<BTreeMap<String, String>> {
    let Some(v) = row.get(col) else {
        return Ok(BTreeMap::new());
    };
    let m = v.as_map().ok_or_else(|| wrong(t, col, "a map", v))?;
    m.iter()
        .map(|(k, val)| match (k.as_str(), val.as_str()) {
            (Some(k), Some(val)) => Ok((k.to_owned(), val.to_owned())),
            _ => Err(wrong(t, col, "a string map", v)),
        })
        .collect()
}

/// The `Open_vSwitch` (root) table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenVSwitch {
    /// Row UUID.
    pub uuid: Uuid,
    /// Bridges.
    pub bridges: Vec<Uuid>,
    /// `external_ids` (e.g. `system-id`).
    pub external_ids: BTreeMap<String, String>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
    /// Configuration sequence number requested.
    pub next_cfg: i64,
    /// Configuration sequence number vswitchd has applied.
    pub cur_cfg: i64,
    /// OVS version as reported by vswitchd.
    pub ovs_version: Option<String>,
    /// Datapath types vswitchd supports.
    pub datapath_types: Vec<String>,
    /// Interface types vswitchd supports.
    pub iface_types: Vec<String>,
}

impl Table for OpenVSwitch {
    const NAME: &'static str = "Open_vSwitch";
    const COLUMNS: &'static [&'static str] = &[
        "bridges",
        "external_ids",
        "other_config",
        "next_cfg",
        "cur_cfg",
        "ovs_version",
        "datapath_types",
        "iface_types",
    ];

    fn from_row(uuid: Uuid, row: &Row) -> Result<Self> {
        let t = Self::NAME;
        Ok(OpenVSwitch {
            uuid,
            bridges: uuids(t, row, "bridges")?,
            external_ids: string_map(t, row, "external_ids")?,
            other_config: string_map(t, row, "other_config")?,
            next_cfg: opt_integer(t, row, "next_cfg")?.unwrap_or_default(),
            cur_cfg: opt_integer(t, row, "cur_cfg")?.unwrap_or_default(),
            ovs_version: opt_string(t, row, "ovs_version")?,
            datapath_types: strings(t, row, "datapath_types")?,
            iface_types: strings(t, row, "iface_types")?,
        })
    }
}

/// The `Bridge` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Row UUID.
    pub uuid: Uuid,
    /// Name.
    pub name: String,
    /// Ports.
    pub ports: Vec<Uuid>,
    /// Controllers.
    pub controller: Vec<Uuid>,
    /// `datapath_type` (`netdev` for the userspace datapath; empty means `system`).
    pub datapath_type: String,
    /// `fail_mode` (`secure` or `standalone`).
    pub fail_mode: Option<String>,
    /// Allowed OpenFlow versions.
    pub protocols: Vec<String>,
    /// Datapath ID (hex) as reported by vswitchd.
    pub datapath_id: Option<String>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl Table for Bridge {
    const NAME: &'static str = "Bridge";
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "ports",
        "controller",
        "datapath_type",
        "fail_mode",
        "protocols",
        "datapath_id",
        "external_ids",
        "other_config",
    ];

    fn from_row(uuid: Uuid, row: &Row) -> Result<Self> {
        let t = Self::NAME;
        Ok(Bridge {
            uuid,
            name: string(t, row, "name")?,
            ports: uuids(t, row, "ports")?,
            controller: uuids(t, row, "controller")?,
            datapath_type: string(t, row, "datapath_type")?,
            fail_mode: opt_string(t, row, "fail_mode")?,
            protocols: strings(t, row, "protocols")?,
            datapath_id: opt_string(t, row, "datapath_id")?,
            external_ids: string_map(t, row, "external_ids")?,
            other_config: string_map(t, row, "other_config")?,
        })
    }
}

/// The `Port` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Row UUID.
    pub uuid: Uuid,
    /// Name.
    pub name: String,
    /// Interfaces (one, except for bonds).
    pub interfaces: Vec<Uuid>,
    /// VLAN tag of an access port.
    pub tag: Option<i64>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl Table for Port {
    const NAME: &'static str = "Port";
    const COLUMNS: &'static [&'static str] =
        &["name", "interfaces", "tag", "external_ids", "other_config"];

    fn from_row(uuid: Uuid, row: &Row) -> Result<Self> {
        let t = Self::NAME;
        Ok(Port {
            uuid,
            name: string(t, row, "name")?,
            interfaces: uuids(t, row, "interfaces")?,
            tag: opt_integer(t, row, "tag")?,
            external_ids: string_map(t, row, "external_ids")?,
            other_config: string_map(t, row, "other_config")?,
        })
    }
}

/// The `Interface` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Row UUID.
    pub uuid: Uuid,
    /// Name.
    pub name: String,
    /// `type` (empty for a system port, `internal`, `patch`, `geneve`, `vxlan`, ...).
    pub kind: String,
    /// Assigned OpenFlow port number (-1 on error; `None` before vswitchd has set it).
    pub ofport: Option<i64>,
    /// Requested OpenFlow port number.
    pub ofport_request: Option<i64>,
    /// MAC address in use.
    pub mac_in_use: Option<String>,
    /// `up` or `down`.
    pub admin_state: Option<String>,
    /// `up` or `down`.
    pub link_state: Option<String>,
    /// MTU in use.
    pub mtu: Option<i64>,
    /// Why the interface could not be set up.
    pub error: Option<String>,
    /// `options` (tunnel and patch settings).
    pub options: BTreeMap<String, String>,
    /// `external_ids` (`iface-id`, `attached-mac`, ...).
    pub external_ids: BTreeMap<String, String>,
}

impl Table for Interface {
    const NAME: &'static str = "Interface";
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "type",
        "ofport",
        "ofport_request",
        "mac_in_use",
        "admin_state",
        "link_state",
        "mtu",
        "error",
        "options",
        "external_ids",
    ];

    fn from_row(uuid: Uuid, row: &Row) -> Result<Self> {
        let t = Self::NAME;
        Ok(Interface {
            uuid,
            name: string(t, row, "name")?,
            kind: string(t, row, "type")?,
            ofport: opt_integer(t, row, "ofport")?,
            ofport_request: opt_integer(t, row, "ofport_request")?,
            mac_in_use: opt_string(t, row, "mac_in_use")?,
            admin_state: opt_string(t, row, "admin_state")?,
            link_state: opt_string(t, row, "link_state")?,
            mtu: opt_integer(t, row, "mtu")?,
            error: opt_string(t, row, "error")?,
            options: string_map(t, row, "options")?,
            external_ids: string_map(t, row, "external_ids")?,
        })
    }
}

/// The `Controller` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// Row UUID.
    pub uuid: Uuid,
    /// Target, e.g. `tcp:127.0.0.1:6653`.
    pub target: String,
    /// Whether vswitchd is connected to it.
    pub is_connected: bool,
    /// Role (`master`, `slave`, `other`).
    pub role: Option<String>,
    /// `in-band` or `out-of-band`.
    pub connection_mode: Option<String>,
    /// Inactivity probe interval in ms.
    pub inactivity_probe: Option<i64>,
    /// Maximum reconnect backoff in ms.
    pub max_backoff: Option<i64>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

impl Table for Controller {
    const NAME: &'static str = "Controller";
    const COLUMNS: &'static [&'static str] = &[
        "target",
        "is_connected",
        "role",
        "connection_mode",
        "inactivity_probe",
        "max_backoff",
        "external_ids",
    ];

    fn from_row(uuid: Uuid, row: &Row) -> Result<Self> {
        let t = Self::NAME;
        Ok(Controller {
            uuid,
            target: string(t, row, "target")?,
            is_connected: opt_bool(t, row, "is_connected")?.unwrap_or(false),
            role: opt_string(t, row, "role")?,
            connection_mode: opt_string(t, row, "connection_mode")?,
            inactivity_probe: opt_integer(t, row, "inactivity_probe")?,
            max_backoff: opt_integer(t, row, "max_backoff")?,
            external_ids: string_map(t, row, "external_ids")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_interface_and_wrong_types() {
        let u = Uuid::nil();
        let row = Row::new()
            .with("name", Value::atom("vm1"))
            .with("ofport", Value::atom(7i64))
            .with("external_ids", Value::map([("iface-id", "p1")]));
        let i = Interface::from_row(u, &row).unwrap();
        assert_eq!(i.ofport, Some(7));
        assert_eq!(i.external_ids["iface-id"], "p1");
        assert_eq!(i.link_state, None);
        let bad = row.clone().with("ofport", Value::atom("seven"));
        assert!(Interface::from_row(u, &bad).is_err());
        let bad = row.with("external_ids", Value::atom(1i64));
        assert!(Interface::from_row(u, &bad).is_err());
        assert!(Bridge::from_row(u, &Row::new().with("name", Value::set([1i64, 2]))).is_err());
    }
}
