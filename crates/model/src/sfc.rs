//! The attribute maps of service function chaining, networking-sfc's API under `/v2.0/sfc/`: port
//! pairs, port pair groups, flow classifiers and port chains, with networking-sfc's defaults,
//! converters and refusals (a value its converter refuses is its own error type, such as
//! `FlowClassifierInvalidProtocol`; one its validator refuses is `HTTPBadRequest`).
//!
//! The objects have no standard attributes besides `id`, `tenant_id` and `project_id`: no
//! timestamps, `revision_number` or tags (networking-sfc's tables have none).

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::resources::{Attr, Default, ResourceDef, computed, create_only, rw};
use crate::shape::Shape;
use crate::validate::{self as v, Refusal, Validator, echo};

use self::Default::{Computed, Json, Required};

/// The attributes every SFC object has.
pub const STANDARD: &[Attr] = &[
    computed("id"),
    create_only("tenant_id", Computed, v::PROJECT_ID),
    create_only("project_id", Computed, v::PROJECT_ID),
];

/// The largest `chain_id`.
pub const MAX_CHAIN_ID: i64 = 65535;
/// The fields a port pair group's load balancing may hash on.
pub const LB_FIELDS: &[&str] = &[
    "eth_src", "eth_dst", "ip_src", "ip_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst",
];
/// The keys of a port pair group's `ingress_n_tuple` / `egress_n_tuple`.
pub const N_TUPLE_KEYS: &[&str] = &[
    "source_ip_prefix",
    "destination_ip_prefix",
    "source_port_range_min",
    "source_port_range_max",
    "destination_port_range_min",
    "destination_port_range_max",
];
/// A flow classifier's protocols.
pub const PROTOCOLS: &[&str] = &["tcp", "udp", "icmp"];

fn bad(why: String) -> Refusal {
    Refusal::Invalid(why)
}

/// A Python `repr` of a string, as networking-sfc's messages quote values.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => echo(s).into_owned(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => echo(&other.to_string()).into_owned(),
    }
}

/// `name` and `description` of a flow classifier: a string of at most 255 characters; `null`
/// is `""`.
pub fn text_or_null(value: &Value) -> Result<Value, Refusal> {
    if value.is_null() {
        return Ok(json!(""));
    }
    v::name(value)
}

/// Checks that a dictionary has only `allowed` keys (neutron-lib's `type:dict` with key specs).
fn only_keys(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), Refusal> {
    let mut unexpected: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if unexpected.is_empty() {
        return Ok(());
    }
    unexpected.sort_unstable();
    Err(bad(format!(
        "Unexpected keys supplied: {}",
        echo(&unexpected.join(", "))
    )))
}

fn not_a_dict(value: &Value) -> Refusal {
    bad(format!("'{}' is not a dictionary", show(value)))
}

/// `service_function_parameters`: `null` or `{}` is `{"correlation": null, "weight": 1}`; a
/// dictionary is kept as given (networking-sfc fills in no missing key), with `correlation`
/// `null`, `mpls` or `nsh` and a non-negative integer `weight`.
pub fn sf_parameters(value: &Value) -> Result<Value, Refusal> {
    let map = match value {
        Value::Null => return Ok(json!({"correlation": null, "weight": 1})),
        Value::Object(map) if map.is_empty() => {
            return Ok(json!({"correlation": null, "weight": 1}));
        }
        Value::Object(map) => map,
        other => return Err(not_a_dict(other)),
    };
    only_keys(map, &["correlation", "weight"])?;
    let mut out = map.clone();
    if let Some(correlation) = map.get("correlation") {
        match correlation {
            Value::Null => {}
            Value::String(s) if s == "mpls" || s == "nsh" => {}
            other => return Err(bad(format!("{} is not in valid_values", show(other)))),
        }
    }
    if let Some(weight) = map.get("weight") {
        let weight = v::int(weight)?;
        if weight.as_i64().is_some_and(|w| w < 0) {
            return Err(bad(format!("'{}' should be non-negative", show(&weight))));
        }
        out.insert("weight".into(), weight);
    }
    Ok(Value::Object(out))
}

/// `port_pair_group_parameters`: `null` or `{}` is `{"lb_fields": [], "ppg_n_tuple_mapping":
/// {"ingress_n_tuple": {}, "egress_n_tuple": {}}}`; missing keys get those defaults. The n-tuple
/// mappings may name only [`N_TUPLE_KEYS`] (`PPGParametersInvalidNTupleMappingParameter`); their
/// values are kept as given, unchecked, as networking-sfc keeps them.
pub fn ppg_parameters(value: &Value) -> Result<Value, Refusal> {
    let default_mapping = json!({"ingress_n_tuple": {}, "egress_n_tuple": {}});
    let map = match value {
        Value::Null => return Ok(json!({"lb_fields": [], "ppg_n_tuple_mapping": default_mapping})),
        Value::Object(map) if map.is_empty() => {
            return Ok(json!({"lb_fields": [], "ppg_n_tuple_mapping": default_mapping}));
        }
        Value::Object(map) => map,
        other => return Err(not_a_dict(other)),
    };
    let mut out = map.clone();
    out.entry("lb_fields").or_insert_with(|| json!([]));
    let mapping = out
        .entry("ppg_n_tuple_mapping")
        .or_insert_with(|| default_mapping.clone());
    if mapping.is_null() {
        *mapping = json!({});
    }
    match &*mapping {
        Value::Object(tuples) => {
            for tuple in tuples.values() {
                let keys: Vec<&String> = match tuple {
                    Value::Object(t) => t.keys().collect(),
                    Value::Null => vec![],
                    other => return Err(not_a_dict(other)),
                };
                if let Some(key) = keys.iter().find(|k| !N_TUPLE_KEYS.contains(&k.as_str())) {
                    return Err(Refusal::Typed(
                        400,
                        "PPGParametersInvalidNTupleMappingParameter",
                        format!(
                            "Invalid Port Pair Group N-Tuple Mapping parameters: Unknow key {}.. \
                             Supported PPG classifier N-Tuple Mapping parameters are \
                             {{'source_ip_prefix': None, 'destination_ip_prefix': None, \
                             'source_port_range_min': None, 'source_port_range_max': None, \
                             'destination_port_range_min': None, \
                             'destination_port_range_max': None}}.",
                            echo(key)
                        ),
                    ));
                }
            }
        }
        other => return Err(not_a_dict(other)),
    }
    only_keys(map, &["lb_fields", "ppg_n_tuple_mapping"])?;
    match &out["lb_fields"] {
        Value::Array(fields) => {
            let illegal: Vec<String> = fields
                .iter()
                .filter(|f| !f.as_str().is_some_and(|f| LB_FIELDS.contains(&f)))
                .map(show)
                .collect();
            if !illegal.is_empty() {
                return Err(bad(format!(
                    "Illegal values in a list: {}",
                    echo(&illegal.join(", "))
                )));
            }
        }
        other => return Err(bad(format!("'{}' is not a list", show(other)))),
    }
    Ok(Value::Object(out))
}

/// A list of UUIDs, `null` being `[]` (a single UUID is a list of one, as networking-sfc converts).
pub fn uuid_list_or_null(value: &Value) -> Result<Value, Refusal> {
    match value {
        Value::Null => Ok(json!([])),
        Value::String(_) => v::uuid_list(&json!([value])),
        other => v::uuid_list(other),
    }
}

/// A port chain's `port_pair_groups`: a non-empty list of UUIDs (an empty one is
/// `PortPairGroupNotSpecified`).
pub fn port_pair_groups(value: &Value) -> Result<Value, Refusal> {
    let empty = match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if empty {
        return Err(Refusal::Typed(
            400,
            "PortPairGroupNotSpecified",
            "Port Pair Group is not specified in Port Chain.".into(),
        ));
    }
    uuid_list_or_null(value)
}

/// `chain_parameters`: `null` or `{}` is `{"correlation": "mpls", "symmetric": false}`; missing
/// keys get those defaults; `correlation` is `mpls` or `nsh`, `symmetric` a boolean.
pub fn chain_parameters(value: &Value) -> Result<Value, Refusal> {
    let map = match value {
        Value::Null => return Ok(json!({"correlation": "mpls", "symmetric": false})),
        Value::Object(map) if map.is_empty() => {
            return Ok(json!({"correlation": "mpls", "symmetric": false}));
        }
        Value::Object(map) => map,
        other => return Err(not_a_dict(other)),
    };
    let mut out = map.clone();
    out.entry("correlation").or_insert_with(|| json!("mpls"));
    out.entry("symmetric").or_insert_with(|| json!(false));
    only_keys(&out, &["correlation", "symmetric"])?;
    match &out["correlation"] {
        Value::String(s) if s == "mpls" || s == "nsh" => {}
        other => return Err(bad(format!("{} is not in valid_values", show(other)))),
    }
    let symmetric = v::boolean(&out["symmetric"])?;
    out.insert("symmetric".into(), symmetric);
    Ok(Value::Object(out))
}

/// `chain_id`: an integer from 0 (allocate one) to [`MAX_CHAIN_ID`].
pub fn chain_id(value: &Value) -> Result<Value, Refusal> {
    let id = v::int(value)?;
    match id.as_i64() {
        Some(n) if n < 0 => Err(bad(format!("'{n}' is too small - must be at least '0'"))),
        Some(n) if n > MAX_CHAIN_ID => Err(bad(format!(
            "'{n}' is too large - must be no larger than '{MAX_CHAIN_ID}'"
        ))),
        _ => Ok(id),
    }
}

/// A flow classifier's `ethertype`: `IPv4` (also for `null`) or `IPv6`, in any case.
pub fn ethertype(value: &Value) -> Result<Value, Refusal> {
    match value {
        Value::Null => Ok(json!("IPv4")),
        Value::String(s) if s.eq_ignore_ascii_case("ipv4") => Ok(json!("IPv4")),
        Value::String(s) if s.eq_ignore_ascii_case("ipv6") => Ok(json!("IPv6")),
        other => Err(Refusal::Typed(
            400,
            "FlowClassifierInvalidEthertype",
            format!(
                "Flow Classifier does not support ethertype {}. Supported ethertype values are \
                 ['IPv4', 'IPv6'].",
                show(other)
            ),
        )),
    }
}

/// A flow classifier's `protocol`: `null`, or `tcp`, `udp`, `icmp` in any case (kept in lower case).
pub fn protocol(value: &Value) -> Result<Value, Refusal> {
    match value {
        Value::Null => Ok(Value::Null),
        Value::String(s) if PROTOCOLS.contains(&s.to_ascii_lowercase().as_str()) => {
            Ok(json!(s.to_ascii_lowercase()))
        }
        other => Err(Refusal::Typed(
            400,
            "FlowClassifierInvalidProtocol",
            format!(
                "Flow Classifier does not support protocol {}. Supported protocol values are \
                 ['tcp', 'udp', 'icmp'].",
                show(other)
            ),
        )),
    }
}

/// A flow classifier's port range bound: `null`, or 0 to 65535 (numeric strings too).
pub fn port_value(value: &Value) -> Result<Value, Refusal> {
    let refuse = || {
        Refusal::Typed(
            400,
            "FlowClassifierInvalidPortValue",
            format!("Flow Classifier has invalid port value {}.", show(value)),
        )
    };
    let n = match value {
        Value::Null => return Ok(Value::Null),
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64)),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(refuse)?;
    if (0..=65535).contains(&n) {
        Ok(json!(n))
    } else {
        Err(refuse())
    }
}

/// An IP prefix as neutron-lib's `type:subnet_or_none` takes it: `null`, or an address with a
/// prefix length (host bits allowed), kept as given.
pub fn subnet_or_null(value: &Value) -> Result<Value, Refusal> {
    let s = match value {
        Value::Null => return Ok(Value::Null),
        Value::String(s) => s,
        other => return Err(bad(format!("'{}' is not a valid IP subnet", show(other)))),
    };
    if let Ok(net) = s.parse::<IpNet>() {
        if matches!(net, IpNet::V4(_)) && net.to_string() != *s {
            return Err(bad(format!(
                "'{}' isn't a recognized IP subnet cidr, '{}' is recommended",
                echo(s),
                net.trunc()
            )));
        }
        return Ok(value.clone());
    }
    match v::parse_ip(s) {
        Some(ip) => Err(bad(format!(
            "'{}' isn't a recognized IP subnet cidr, '{}' is recommended",
            echo(s),
            IpNet::from(ip)
        ))),
        None => Err(bad(format!("'{}' is not a valid IP subnet", echo(s)))),
    }
}

/// `l7_parameters`: `null` is `{}`; networking-sfc supports no L7 parameter, so any key is
/// `FlowClassifierInvalidL7Parameter`.
pub fn l7_parameters(value: &Value) -> Result<Value, Refusal> {
    match value {
        Value::Null => Ok(json!({})),
        Value::Object(map) => match map.keys().next() {
            None => Ok(json!({})),
            Some(key) => Err(Refusal::Typed(
                400,
                "FlowClassifierInvalidL7Parameter",
                format!(
                    "Invalid Flow Classifier parameters: Unknown key {}.. Supported flow \
                     classifier parameters are {{}}.",
                    echo(key)
                ),
            )),
        },
        other => Err(not_a_dict(other)),
    }
}

const SF_PARAMETERS_SHAPE: Shape = Shape::OrNull(&Shape::Object(&[
    (
        "correlation",
        Shape::OrNull(&Shape::OneOf(&["mpls", "nsh"])),
    ),
    (
        "weight",
        Shape::Integer {
            min: Some(0),
            max: None,
        },
    ),
]));
const PPG_PARAMETERS_SHAPE: Shape = Shape::OrNull(&Shape::Object(&[
    ("lb_fields", Shape::ListOf(&Shape::OneOf(LB_FIELDS))),
    ("ppg_n_tuple_mapping", Shape::Dict),
]));
const CHAIN_PARAMETERS_SHAPE: Shape = Shape::OrNull(&Shape::Object(&[
    ("correlation", Shape::OneOf(&["mpls", "nsh"])),
    ("symmetric", Shape::Boolean),
]));
const PORT: Shape = Shape::Integer {
    min: Some(0),
    max: Some(65535),
};

pub const TEXT_OR_NULL: Validator = Validator {
    check: text_or_null,
    shape: Shape::OrNull(&Shape::Text(Some(255))),
};
pub const SF_PARAMETERS: Validator = Validator {
    check: sf_parameters,
    shape: SF_PARAMETERS_SHAPE,
};
pub const PPG_PARAMETERS: Validator = Validator {
    check: ppg_parameters,
    shape: PPG_PARAMETERS_SHAPE,
};
pub const CHAIN_PARAMETERS: Validator = Validator {
    check: chain_parameters,
    shape: CHAIN_PARAMETERS_SHAPE,
};
pub const UUID_LIST_OR_NULL: Validator = Validator {
    check: uuid_list_or_null,
    shape: Shape::OrNull(&Shape::ListOf(&Shape::UUID)),
};
pub const PORT_PAIR_GROUPS: Validator = Validator {
    check: port_pair_groups,
    shape: Shape::ListOf(&Shape::UUID),
};
pub const CHAIN_ID: Validator = Validator {
    check: chain_id,
    shape: Shape::Integer {
        min: Some(0),
        max: Some(MAX_CHAIN_ID),
    },
};
pub const ETHERTYPE: Validator = Validator {
    check: ethertype,
    shape: Shape::OrNull(&Shape::OneOf(&["IPv4", "IPv6"])),
};
pub const PROTOCOL: Validator = Validator {
    check: protocol,
    shape: Shape::OrNull(&Shape::OneOf(PROTOCOLS)),
};
pub const PORT_VALUE: Validator = Validator {
    check: port_value,
    shape: Shape::OrNull(&PORT),
};
pub const SUBNET_OR_NULL: Validator = Validator {
    check: subnet_or_null,
    shape: Shape::OrNull(&Shape::CIDR),
};
pub const L7_PARAMETERS: Validator = Validator {
    check: l7_parameters,
    shape: Shape::OrNull(&Shape::Object(&[])),
};

pub static PORT_PAIR: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "port_pair",
    collection: "port_pairs",
    path: "sfc/port_pairs",
    error_name: "PortPair",
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), v::NAME),
        rw("description", Json("\"\""), v::DESCRIPTION),
        create_only("ingress", Required, v::UUID),
        create_only("egress", Required, v::UUID),
        create_only("service_function_parameters", Json("null"), SF_PARAMETERS),
    ],
};

pub static PORT_PAIR_GROUP: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "port_pair_group",
    collection: "port_pair_groups",
    path: "sfc/port_pair_groups",
    error_name: "PortPairGroup",
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        computed("group_id"),
        rw("name", Json("\"\""), v::NAME),
        rw("description", Json("\"\""), v::DESCRIPTION),
        rw("port_pairs", Json("null"), UUID_LIST_OR_NULL),
        create_only("port_pair_group_parameters", Json("null"), PPG_PARAMETERS),
        create_only("tap_enabled", Json("false"), v::BOOLEAN),
    ],
};

pub static FLOW_CLASSIFIER: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "flow_classifier",
    collection: "flow_classifiers",
    path: "sfc/flow_classifiers",
    error_name: "FlowClassifier",
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        rw("name", Json("null"), TEXT_OR_NULL),
        rw("description", Json("null"), TEXT_OR_NULL),
        create_only("ethertype", Json("null"), ETHERTYPE),
        create_only("protocol", Json("null"), PROTOCOL),
        create_only("source_port_range_min", Json("null"), PORT_VALUE),
        create_only("source_port_range_max", Json("null"), PORT_VALUE),
        create_only("destination_port_range_min", Json("null"), PORT_VALUE),
        create_only("destination_port_range_max", Json("null"), PORT_VALUE),
        create_only("source_ip_prefix", Json("null"), SUBNET_OR_NULL),
        create_only("destination_ip_prefix", Json("null"), SUBNET_OR_NULL),
        create_only("logical_source_port", Json("null"), v::UUID_OR_NULL),
        create_only("logical_destination_port", Json("null"), v::UUID_OR_NULL),
        create_only("l7_parameters", Json("null"), L7_PARAMETERS),
    ],
};

pub static PORT_CHAIN: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "port_chain",
    collection: "port_chains",
    path: "sfc/port_chains",
    error_name: "PortChain",
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        create_only("chain_id", Json("0"), CHAIN_ID),
        rw("name", Json("\"\""), v::NAME),
        rw("description", Json("\"\""), v::DESCRIPTION),
        rw("port_pair_groups", Required, PORT_PAIR_GROUPS),
        rw("flow_classifiers", Json("null"), UUID_LIST_OR_NULL),
        create_only("chain_parameters", Json("null"), CHAIN_PARAMETERS),
    ],
};

/// Every SFC resource, for lookups by URL segment.
pub static ALL: &[&ResourceDef] = &[&PORT_PAIR, &PORT_PAIR_GROUP, &FLOW_CLASSIFIER, &PORT_CHAIN];

/// The SFC resource served under a URL path (`sfc/port_pairs`).
pub fn resource_by_path(path: &str) -> Option<&'static ResourceDef> {
    ALL.iter().copied().find(|r| r.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_get_networking_sfcs_defaults() {
        assert_eq!(
            sf_parameters(&Value::Null),
            Ok(json!({"correlation": null, "weight": 1}))
        );
        assert_eq!(
            sf_parameters(&json!({"weight": "3"})),
            Ok(json!({"weight": 3}))
        );
        assert!(sf_parameters(&json!({"weight": -1})).is_err());
        assert_eq!(
            chain_parameters(&json!({"symmetric": "true"})),
            Ok(json!({"correlation": "mpls", "symmetric": true}))
        );
        assert_eq!(
            ppg_parameters(&json!({"lb_fields": ["ip_src"]})),
            Ok(json!({"lb_fields": ["ip_src"],
                "ppg_n_tuple_mapping": {"ingress_n_tuple": {}, "egress_n_tuple": {}}}))
        );
        assert!(ppg_parameters(&json!({"lb_fields": ["ip_tos"]})).is_err());
    }

    #[test]
    fn classifier_values_are_normalised() {
        assert_eq!(protocol(&json!("TCP")), Ok(json!("tcp")));
        assert_eq!(ethertype(&json!("ipv6")), Ok(json!("IPv6")));
        assert_eq!(port_value(&json!("53")), Ok(json!(53)));
        assert!(port_value(&json!(70000)).is_err());
        assert_eq!(
            subnet_or_null(&json!("10.0.0.1/24")),
            Ok(json!("10.0.0.1/24"))
        );
        assert!(subnet_or_null(&json!("10.0.0.300/24")).is_err());
        assert!(subnet_or_null(&json!("10.0.0.1")).is_err());
    }
}
