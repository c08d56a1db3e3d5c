//! Trunks (Neutron's `trunk` and `trunk-details` extensions, "VLAN-aware VMs"): a trunk joins a
//! parent port, which a VM's NIC plugs into, and subports, each another port whose traffic the VM
//! sends and receives on the parent tagged with the subport's VLAN id.
//!
//! [`TRUNK`] is the attribute map, as neutron-lib's; [`sub_ports`] is neutron-lib's
//! `type:subports` validator (the checks the API layer makes on a create's `sub_ports`). [`Trunk`]
//! and [`SubPort`] are a trunk as its parent port carries it, in `_trunk` (see
//! [`Trunk::of_port`]), and each subport carries its trunk, parent and VLAN in `_subport` (see
//! [`SubPortOf::of_port`]); the API server writes both in the trunk's transaction. (The pipeline
//! decodes the synced `/r/trunks/<id>` itself, `pipeline::trunks`.)

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resources::{Action, Default, ResourceDef, STANDARD, computed, create_only, rw};
use crate::shape::Shape;
use crate::validate::{self as v, Refusal, Validator, echo};

use self::Default::{Json, Required};

/// The device owner Neutron gives a trunk's subports.
pub const SUBPORT_OWNER: &str = "trunk:subport";
/// The VLAN segmentation type, the one Neutron's openvswitch and OVN drivers support.
pub const VLAN: &str = "vlan";
/// A subport whose segmentation is its network's (`segmentation_type: inherit`).
pub const INHERIT: &str = "inherit";
/// The lowest and highest VLAN id of a subport.
pub const MIN_VLAN: i64 = 1;
pub const MAX_VLAN: i64 = 4094;

/// One subport as a request names it.
const SUB_PORT_SHAPE: Shape = Shape::Object(&[
    ("port_id", Shape::UUID),
    ("segmentation_type", Shape::OneOf(&[VLAN, INHERIT])),
    (
        "segmentation_id",
        Shape::Integer {
            min: Some(MIN_VLAN),
            max: Some(MAX_VLAN),
        },
    ),
]);

/// The body of `add_subports` and `remove_subports`.
const SUB_PORTS_BODY: Shape = Shape::Object(&[("sub_ports", Shape::ListOf(&SUB_PORT_SHAPE))]);

/// A Python `repr` of a JSON value, as Neutron's messages quote request values.
pub fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{s}'"),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A value as Neutron's `%s` shows it (strings without quotes).
fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// neutron-lib's `validate_subports`: a list of dictionaries, each with a valid and unique
/// `port_id`, and no two with the same segmentation (type and id). A dictionary with a
/// `port_id` only is let through (the trunk plugin then refuses it as missing its segmentation),
/// and, as in neutron-lib, the first subport with `segmentation_type: inherit` ends the checks.
/// `None` when the list is fine, else why not (the message neutron-lib gives).
pub fn check_sub_ports(data: &Value) -> Option<String> {
    let Value::Array(items) = data else {
        return Some(format!(
            "Invalid data format for subports: '{}' is not a list",
            echo(&py_str(data))
        ));
    };
    let mut ports = HashSet::new();
    let mut segmentations: HashMap<String, HashSet<String>> = HashMap::new();
    for item in items {
        let Value::Object(sub) = item else {
            return Some(format!(
                "Invalid data format for subport: '{}' is not a dict",
                echo(&py_str(item))
            ));
        };
        let Some(port) = sub.get("port_id") else {
            return Some("A valid port UUID must be specified".into());
        };
        if v::uuid(port).is_err() {
            return Some(format!(
                "Invalid UUID for subport: '{}'",
                echo(&py_str(port))
            ));
        }
        let port = port.as_str().unwrap_or_default();
        if !ports.insert(port.to_string()) {
            return Some(format!("Non unique UUID for subport: '{port}'"));
        }
        let kind = sub.get("segmentation_type");
        if kind.and_then(Value::as_str) == Some(INHERIT) {
            return None;
        }
        let id = sub.get("segmentation_id").filter(|i| !i.is_null());
        let kind_missing = !kind.is_some_and(truthy);
        if (kind_missing || id.is_none()) && sub.len() > 1 {
            return Some(format!(
                "Invalid subport details '{}': missing segmentation information. Must specify \
                 both segmentation_id and segmentation_type",
                echo(&py_repr(item))
            ));
        }
        let kind_key = kind.map(Value::to_string).unwrap_or_default();
        if let Some(id) = id {
            let ids = segmentations.entry(kind_key).or_default();
            if !ids.insert(id.to_string()) {
                return Some(format!(
                    "Segmentation ID '{}' for '{port}' is not unique",
                    echo(&py_str(id))
                ));
            }
        }
    }
    None
}

/// Python's truth of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `sub_ports` on create: [`check_sub_ports`] (400 `HTTPBadRequest`, "Invalid input for
/// sub_ports. Reason: ..."); the trunk plugin's own checks follow in the API server.
pub fn sub_ports(value: &Value) -> Result<Value, Refusal> {
    match check_sub_ports(value) {
        None => Ok(value.clone()),
        Some(why) => Err(Refusal::Invalid(why)),
    }
}

pub const SUB_PORTS: Validator = Validator {
    check: sub_ports,
    shape: Shape::ListOf(&SUB_PORT_SHAPE),
};

/// `/v2.0/trunks`: Neutron's standard attributes (timestamps, `revision_number`, tags,
/// `description`) and the trunk's own. `sub_ports` is set on create and then changed only through
/// the `add_subports` and `remove_subports` actions.
pub static TRUNK: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "trunk",
    collection: "trunks",
    path: "trunks",
    error_name: "Trunk",
    taggable: true,
    described: true,
    actions: &[
        Action {
            name: "add_subports",
            body: SUB_PORTS_BODY,
        },
        Action {
            name: "remove_subports",
            body: SUB_PORTS_BODY,
        },
    ],
    attrs: &[
        rw("name", Json("\"\""), v::NAME),
        rw("admin_state_up", Json("true"), v::BOOLEAN),
        create_only("port_id", Required, v::UUID),
        computed("status"),
        create_only("sub_ports", Json("[]"), SUB_PORTS),
    ],
};

/// The attributes a list of trunks may not be filtered on (Neutron's `is_filter` is off for them).
pub const NOT_FILTERS: &[&str] = &["sub_ports"];

/// One subport of a trunk: the port, and the VLAN its traffic carries on the parent port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubPort {
    pub port_id: String,
    pub segmentation_type: String,
    pub segmentation_id: u16,
}

/// A trunk as its parent port carries it (the internal field `_trunk`). The API server writes it
/// in the same transaction as every change of the trunk, so whoever has the parent port (an
/// agent: its network's or its chassis' topic) has its trunk, as of the same revision; the API
/// server reads it for the port's `trunk_details` and to refuse the port's deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trunk {
    pub id: String,
    /// The parent port.
    pub port_id: String,
    /// A disabled trunk keeps its subports; whether its VLANs pass is the datapath's decision
    /// (Neutron's openvswitch agent keeps wiring them).
    pub admin_state_up: bool,
    pub sub_ports: Vec<SubPort>,
}

impl Trunk {
    /// The trunk whose parent `port` (a port object as synced) is, if it is one.
    pub fn of_port(port: &Value) -> Option<Trunk> {
        serde_json::from_value(port.get("_trunk")?.clone()).ok()
    }

    /// The value of a parent port's `_trunk`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// What a subport carries of its trunk, in its internal field `_subport`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubPortOf {
    pub trunk_id: String,
    /// The trunk's parent port.
    pub parent_port_id: String,
    pub segmentation_type: String,
    pub segmentation_id: u16,
}

impl SubPortOf {
    /// The trunk `port` (a port object as synced) is a subport of, if it is one.
    pub fn of_port(port: &Value) -> Option<SubPortOf> {
        serde_json::from_value(port.get("_subport")?.clone()).ok()
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const P1: &str = "6f1b0c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f";
    const P2: &str = "6f1b0c1e-2a3b-4c5d-8e9f-0a1b2c3d4e60";

    #[test]
    fn sub_ports_are_checked_as_neutron_lib_does() {
        let sub = |p: &str, id: i64| json!({"port_id": p, "segmentation_type": "vlan", "segmentation_id": id});
        assert_eq!(check_sub_ports(&json!([sub(P1, 1), sub(P2, 2)])), None);
        assert!(
            check_sub_ports(&json!("x"))
                .unwrap()
                .contains("is not a list")
        );
        assert!(
            check_sub_ports(&json!([sub(P1, 1), sub(P1, 2)]))
                .unwrap()
                .contains("Non unique UUID")
        );
        assert!(
            check_sub_ports(&json!([sub(P1, 7), sub(P2, 7)]))
                .unwrap()
                .contains("is not unique")
        );
        assert!(
            check_sub_ports(&json!([{"port_id": "nope"}]))
                .unwrap()
                .contains("Invalid UUID")
        );
        // A port id alone passes here; the plugin refuses it later.
        assert_eq!(check_sub_ports(&json!([{ "port_id": P1 }])), None);
        assert!(
            check_sub_ports(&json!([{"port_id": P1, "segmentation_type": "vlan"}]))
                .unwrap()
                .contains("missing segmentation")
        );
        // The first `inherit` ends the checks, as in neutron-lib.
        assert_eq!(
            check_sub_ports(&json!([{"port_id": P1, "segmentation_type": "inherit"}, sub(P1, 1)])),
            None
        );
    }

    #[test]
    fn the_trunk_of_a_parent_port() {
        let trunk = Trunk {
            id: "t".into(),
            port_id: "p".into(),
            admin_state_up: true,
            sub_ports: vec![SubPort {
                port_id: "s".into(),
                segmentation_type: "vlan".into(),
                segmentation_id: 100,
            }],
        };
        let port = json!({"id": "p", "_trunk": trunk.to_json()});
        assert_eq!(Trunk::of_port(&port), Some(trunk));
        assert_eq!(Trunk::of_port(&json!({"id": "q"})), None);
    }
}
