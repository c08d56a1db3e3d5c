//! The attribute maps of the OpenStack Load Balancer (Octavia v2) resources Wyvern serves under
//! `/v2.0/lbaas/`: load balancers, listeners, pools, members and health monitors.
//!
//! They use the same [`ResourceDef`] as Neutron's resources, with Octavia's standard attributes
//! ([`STANDARD`]: no `revision_number`) and Octavia's own checks: every validator here accepts exactly
//! the values of its [`Shape`] ([`conform`]), and a refusal says why in Octavia's (WSME's) words,
//! e.g. "Value should be UUID format". The API shows every attribute Octavia shows; those Wyvern does
//! not implement (TLS, L7, QoS, flavors, availability zones) are read-only with Octavia's defaults.
//! Attributes that name a parent on create (`loadbalancer_id`, `listener_id`, `pool_id`) are not
//! shown by Octavia: the API keeps them as internal fields (see `api::lbaas`).

use serde_json::Value;

use crate::resources::{Attr, Default, ResourceDef, attr, create_only, rw};
use crate::shape::{Format, Shape};
use crate::validate::{Refusal, Validator, is_uuid, parse_cidr, parse_ip};

use self::Default::{Computed, Json, Required};

/// Why `value` is not of `shape`, in Octavia's words; `Ok` when it is.
pub fn conform(shape: &Shape, value: &Value) -> Result<(), String> {
    let fail = |why: &str| Err(why.to_string());
    match (shape, value) {
        (Shape::Any, _) => Ok(()),
        (Shape::OrNull(_), Value::Null) => Ok(()),
        (Shape::OrNull(inner), _) => conform(inner, value),
        (Shape::Boolean, Value::Bool(_)) => Ok(()),
        (Shape::Boolean, _) => Err(format!(
            "Value not an unambiguous boolean: {}",
            python_str(value)
        )),
        (Shape::Text(max), Value::String(s)) => match max {
            Some(max) if s.chars().count() > *max => Err(format!(
                "Value should have a maximum character requirement of {max}"
            )),
            _ => Ok(()),
        },
        (Shape::Text(_), _) => fail("Value should be string"),
        (Shape::Formatted(format), _) => {
            let text = value.as_str().unwrap_or_default();
            let (ok, name) = match format {
                Format::Uuid => (is_uuid(text), "UUID"),
                Format::IpAddress => (parse_ip(text).is_some(), "IPv4 or IPv6"),
                Format::Cidr => (parse_cidr(text).is_some(), "IPv4 or IPv6 CIDR"),
                Format::MacAddress => (crate::validate::is_mac(text), "MAC"),
            };
            if ok && value.is_string() {
                Ok(())
            } else {
                Err(format!("Value should be {name} format"))
            }
        }
        (Shape::OneOf(names), Value::String(s)) if names.contains(&s.as_str()) => Ok(()),
        (Shape::OneOf(names), _) => Err(format!("Value should be one of: {}", names.join(", "))),
        (Shape::Integer { min, max }, Value::Number(n)) if n.is_i64() => {
            let n = n.as_i64().unwrap_or_default();
            match (min, max) {
                (Some(min), _) if n < *min => {
                    Err(format!("Value should be greater or equal to {min}"))
                }
                (_, Some(max)) if n > *max => {
                    Err(format!("Value should be lower or equal to {max}"))
                }
                _ => Ok(()),
            }
        }
        (Shape::Integer { .. }, _) => Err(format!(
            "Wrong type. Expected '<class 'int'>', got '<class '{}'>'",
            python_type(value)
        )),
        (Shape::IntegerOneOf(values), Value::Number(n))
            if n.as_i64().is_some_and(|n| values.contains(&n)) =>
        {
            Ok(())
        }
        (Shape::IntegerOneOf(values), _) => Err(format!(
            "Value should be one of: {}",
            values
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (Shape::Either(shapes), _) => shapes
            .iter()
            .map(|s| conform(s, value))
            .find(Result::is_ok)
            .unwrap_or_else(|| conform(&shapes[0], value)),
        (Shape::ListOf(item), Value::Array(items)) => {
            items.iter().try_for_each(|i| conform(item, i))
        }
        (Shape::Dict, Value::Object(_)) => Ok(()),
        (Shape::Object(fields), Value::Object(map)) => {
            for (key, v) in map {
                match fields.iter().find(|(name, _)| name == key) {
                    None => return Err(format!("Unknown attribute {key}")),
                    Some(_) if v.is_null() => {}
                    Some((_, shape)) => conform(shape, v)?,
                }
            }
            Ok(())
        }
        (Shape::ListOf(_) | Shape::Dict | Shape::Object(_), _) => Err(format!(
            "Wrong type. Expected '<class '{}'>', got '<class '{}'>'",
            if matches!(shape, Shape::ListOf(_)) {
                "list"
            } else {
                "dict"
            },
            python_type(value)
        )),
    }
}

/// A JSON value as Python's `str()` shows it in Octavia's messages (`None`, `True`, `5`, `abc`).
pub fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => crate::validate::echo(s).into_owned(),
        other => crate::validate::echo(&other.to_string()).into_owned(),
    }
}

fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// A validator that accepts exactly the values of `$shape`, refusing with [`conform`]'s reason.
macro_rules! shaped {
    ($shape:expr) => {
        Validator {
            check: {
                fn check(v: &Value) -> Result<Value, Refusal> {
                    conform(&$shape, v)
                        .map(|()| v.clone())
                        .map_err(Refusal::Invalid)
                }
                check
            },
            shape: $shape,
        }
    };
}

/// Shown, never given: computed by the API, or a feature Wyvern does not implement, at Octavia's
/// default.
const fn shown(name: &'static str, default: Default) -> Attr {
    attr(name, false, false, default, crate::validate::ANY)
}

const TEXT: Validator = shaped!(Shape::Text(Some(255)));
const BOOLEAN: Validator = shaped!(Shape::Boolean);
const UUID: Validator = shaped!(Shape::UUID);
const UUID_OR_NULL: Validator = shaped!(Shape::OrNull(&Shape::UUID));
const IP_OR_NULL: Validator = shaped!(Shape::OrNull(&Shape::IP_ADDRESS));
const TAGS: Validator = shaped!(Shape::ListOf(&Shape::Text(Some(255))));
const PORT: Shape = Shape::Integer {
    min: Some(1),
    max: Some(65535),
};
const PORT_NUMBER: Validator = shaped!(PORT);
const RETRIES: Validator = shaped!(Shape::Integer {
    min: Some(1),
    max: Some(10),
});
const SECONDS: Validator = shaped!(Shape::Integer {
    min: Some(0),
    max: None
});
const TIMEOUT_MS: Validator = shaped!(Shape::Integer {
    min: Some(0),
    max: Some(31_536_000_000)
});

/// Listener protocols Octavia knows; Wyvern serves [`SERVED_LISTENER_PROTOCOLS`].
pub const LISTENER_PROTOCOLS: &[&str] = &[
    "TCP",
    "HTTP",
    "HTTPS",
    "SCTP",
    "TERMINATED_HTTPS",
    "PROMETHEUS",
    "UDP",
];
/// The listener protocols Wyvern serves; HTTP is balanced at L4, as TCP.
pub const SERVED_LISTENER_PROTOCOLS: &[&str] = &["TCP", "UDP", "HTTP"];
/// Pool protocols Octavia knows.
pub const POOL_PROTOCOLS: &[&str] = &["TCP", "HTTP", "HTTPS", "PROXY", "PROXYV2", "UDP", "SCTP"];
/// Pool algorithms Octavia knows; Wyvern serves [`SERVED_ALGORITHMS`].
pub const ALGORITHMS: &[&str] = &[
    "ROUND_ROBIN",
    "LEAST_CONNECTIONS",
    "SOURCE_IP",
    "SOURCE_IP_PORT",
];
pub const SERVED_ALGORITHMS: &[&str] = &["ROUND_ROBIN", "SOURCE_IP", "LEAST_CONNECTIONS"];
/// Session persistence types Octavia knows; Wyvern serves `SOURCE_IP`.
pub const PERSISTENCE_TYPES: &[&str] = &["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"];
/// Health monitor types Octavia knows; Wyvern serves [`SERVED_MONITOR_TYPES`].
pub const MONITOR_TYPES: &[&str] = &[
    "HTTP",
    "HTTPS",
    "PING",
    "TCP",
    "TLS-HELLO",
    "UDP-CONNECT",
    "SCTP",
];
pub const SERVED_MONITOR_TYPES: &[&str] = &["PING", "TCP", "HTTP"];
pub const HTTP_METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

const PERSISTENCE: Validator = shaped!(Shape::OrNull(&Shape::Object(&[
    ("type", Shape::OneOf(PERSISTENCE_TYPES)),
    ("cookie_name", Shape::Text(Some(255))),
    (
        "persistence_timeout",
        Shape::Integer {
            min: Some(0),
            max: None
        }
    ),
    ("persistence_granularity", Shape::IP_ADDRESS),
])));

/// Attributes every Octavia object has.
pub const STANDARD: &[Attr] = &[
    shown("id", Computed),
    create_only("project_id", Computed, shaped!(Shape::Text(Some(255)))),
    shown("tenant_id", Computed),
    shown("created_at", Computed),
    shown("updated_at", Json("null")),
    shown("provisioning_status", Computed),
    shown("operating_status", Computed),
];

pub static LOADBALANCER: ResourceDef = ResourceDef {
    singular: "loadbalancer",
    collection: "loadbalancers",
    path: "loadbalancers",
    error_name: "Load Balancer",
    standard: STANDARD,
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), TEXT),
        rw("description", Json("\"\""), TEXT),
        rw("admin_state_up", Json("true"), BOOLEAN),
        rw("tags", Json("[]"), TAGS),
        create_only("vip_subnet_id", Computed, UUID_OR_NULL),
        create_only("vip_network_id", Computed, UUID_OR_NULL),
        create_only("vip_port_id", Computed, UUID_OR_NULL),
        create_only("vip_address", Computed, IP_OR_NULL),
        create_only("provider", Json("\"amphora\""), TEXT),
        shown("vip_qos_policy_id", Json("null")),
        shown("vip_sg_ids", Json("[]")),
        shown("additional_vips", Json("[]")),
        shown("vip_vnic_type", Json("\"normal\"")),
        shown("flavor_id", Json("null")),
        shown("availability_zone", Json("null")),
        shown("listeners", Json("[]")),
        shown("pools", Json("[]")),
    ],
};

pub static LISTENER: ResourceDef = ResourceDef {
    singular: "listener",
    collection: "listeners",
    path: "listeners",
    error_name: "Listener",
    standard: STANDARD,
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), TEXT),
        rw("description", Json("\"\""), TEXT),
        rw("admin_state_up", Json("true"), BOOLEAN),
        rw("tags", Json("[]"), TAGS),
        create_only("loadbalancer_id", Required, UUID),
        create_only(
            "protocol",
            Required,
            shaped!(Shape::OneOf(LISTENER_PROTOCOLS)),
        ),
        create_only("protocol_port", Required, PORT_NUMBER),
        rw(
            "connection_limit",
            Json("-1"),
            shaped!(Shape::Integer {
                min: Some(-1),
                max: None
            }),
        ),
        rw("default_pool_id", Json("null"), UUID_OR_NULL),
        rw("timeout_client_data", Json("50000"), TIMEOUT_MS),
        rw("timeout_member_connect", Json("5000"), TIMEOUT_MS),
        rw("timeout_member_data", Json("50000"), TIMEOUT_MS),
        rw("timeout_tcp_inspect", Json("0"), TIMEOUT_MS),
        shown("loadbalancers", Json("[]")),
        shown("default_tls_container_ref", Json("null")),
        shown("sni_container_refs", Json("[]")),
        shown("l7policies", Json("[]")),
        shown("insert_headers", Json("{}")),
        shown("client_ca_tls_container_ref", Json("null")),
        shown("client_authentication", Json("\"NONE\"")),
        shown("client_crl_container_ref", Json("null")),
        shown("allowed_cidrs", Json("null")),
        shown("tls_ciphers", Json("null")),
        shown("tls_versions", Json("null")),
        shown("alpn_protocols", Json("null")),
        shown("hsts_max_age", Json("null")),
        shown("hsts_include_subdomains", Json("false")),
        shown("hsts_preload", Json("false")),
    ],
};

pub static POOL: ResourceDef = ResourceDef {
    singular: "pool",
    collection: "pools",
    path: "pools",
    error_name: "Pool",
    standard: STANDARD,
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), TEXT),
        rw("description", Json("\"\""), TEXT),
        rw("admin_state_up", Json("true"), BOOLEAN),
        rw("tags", Json("[]"), TAGS),
        create_only("loadbalancer_id", Json("null"), UUID_OR_NULL),
        create_only("listener_id", Json("null"), UUID_OR_NULL),
        create_only("protocol", Required, shaped!(Shape::OneOf(POOL_PROTOCOLS))),
        rw("lb_algorithm", Required, shaped!(Shape::OneOf(ALGORITHMS))),
        rw("session_persistence", Json("null"), PERSISTENCE),
        shown("loadbalancers", Json("[]")),
        shown("listeners", Json("[]")),
        shown("members", Json("[]")),
        shown("healthmonitor_id", Json("null")),
        shown("tls_container_ref", Json("null")),
        shown("ca_tls_container_ref", Json("null")),
        shown("crl_container_ref", Json("null")),
        shown("tls_enabled", Json("false")),
        shown("tls_ciphers", Json("null")),
        shown("tls_versions", Json("null")),
        shown("alpn_protocols", Json("null")),
    ],
};

/// A pool member. Its `operating_status` is the health its pool's monitor found, which agents will
/// report (see `api::lbaas`, the member's internal `_health` field).
pub static MEMBER: ResourceDef = ResourceDef {
    singular: "member",
    collection: "members",
    path: "members",
    error_name: "Member",
    standard: STANDARD,
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), TEXT),
        rw("admin_state_up", Json("true"), BOOLEAN),
        rw("tags", Json("[]"), TAGS),
        create_only("address", Required, shaped!(Shape::IP_ADDRESS)),
        create_only("protocol_port", Required, PORT_NUMBER),
        create_only("subnet_id", Json("null"), UUID_OR_NULL),
        rw(
            "weight",
            Json("1"),
            shaped!(Shape::Integer {
                min: Some(0),
                max: Some(256)
            }),
        ),
        rw("backup", Json("false"), BOOLEAN),
        rw("monitor_address", Json("null"), IP_OR_NULL),
        rw("monitor_port", Json("null"), shaped!(Shape::OrNull(&PORT))),
        shown("vnic_type", Json("\"normal\"")),
    ],
};

pub static HEALTHMONITOR: ResourceDef = ResourceDef {
    singular: "healthmonitor",
    collection: "healthmonitors",
    path: "healthmonitors",
    error_name: "Health Monitor",
    standard: STANDARD,
    taggable: false,
    described: false,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), TEXT),
        rw("admin_state_up", Json("true"), BOOLEAN),
        rw("tags", Json("[]"), TAGS),
        create_only("pool_id", Required, UUID),
        create_only("type", Required, shaped!(Shape::OneOf(MONITOR_TYPES))),
        rw("delay", Required, SECONDS),
        rw("timeout", Required, SECONDS),
        rw("max_retries", Required, RETRIES),
        rw("max_retries_down", Json("3"), RETRIES),
        // HTTP monitors only: GET, "/" and "200" when not given; null for the other types.
        rw(
            "http_method",
            Computed,
            shaped!(Shape::OrNull(&Shape::OneOf(HTTP_METHODS))),
        ),
        rw(
            "url_path",
            Computed,
            shaped!(Shape::OrNull(&Shape::Text(Some(2048)))),
        ),
        rw(
            "expected_codes",
            Computed,
            shaped!(Shape::OrNull(&Shape::Text(Some(64)))),
        ),
        shown("pools", Json("[]")),
        shown("http_version", Json("null")),
        shown("domain_name", Json("null")),
    ],
};

/// Every Octavia resource served.
pub static ALL: &[&ResourceDef] = &[&LOADBALANCER, &LISTENER, &POOL, &MEMBER, &HEALTHMONITOR];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn refusals_use_octavias_words() {
        let protocol = LISTENER.attr("protocol").unwrap().validate.shape;
        assert_eq!(
            conform(&protocol, &json!("FOO")).unwrap_err(),
            "Value should be one of: TCP, HTTP, HTTPS, SCTP, TERMINATED_HTTPS, PROMETHEUS, UDP"
        );
        let weight = MEMBER.attr("weight").unwrap().validate.shape;
        assert_eq!(
            conform(&weight, &json!(300)).unwrap_err(),
            "Value should be lower or equal to 256"
        );
        assert_eq!(
            conform(&weight, &json!("x")).unwrap_err(),
            "Wrong type. Expected '<class 'int'>', got '<class 'str'>'"
        );
        let subnet = LOADBALANCER.attr("vip_subnet_id").unwrap().validate.shape;
        assert!(conform(&subnet, &Value::Null).is_ok());
        assert_eq!(
            conform(&subnet, &json!("abc")).unwrap_err(),
            "Value should be UUID format"
        );
        let persistence = POOL.attr("session_persistence").unwrap().validate.shape;
        assert!(
            conform(
                &persistence,
                &json!({"type": "SOURCE_IP", "cookie_name": null})
            )
            .is_ok()
        );
        assert_eq!(
            conform(&persistence, &json!({"kind": 1})).unwrap_err(),
            "Unknown attribute kind"
        );
    }
}
