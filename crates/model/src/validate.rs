//! Validators and normalisers for attribute values, with Neutron's wording for rejected input.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// A validator takes the value a client sent and returns the value to store, or the reason it is bad.
pub type Validator = fn(&Value) -> Result<Value, String>;

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn any(v: &Value) -> Result<Value, String> {
    Ok(v.clone())
}

fn string_max(v: &Value, max: usize) -> Result<Value, String> {
    match v {
        Value::String(s) if s.chars().count() > max => {
            Err(format!("'{s}' exceeds maximum length of {max}"))
        }
        Value::String(_) => Ok(v.clone()),
        other => Err(format!("'{}' is not a valid string", show(other))),
    }
}

pub fn name(v: &Value) -> Result<Value, String> {
    string_max(v, 255)
}

pub fn description(v: &Value) -> Result<Value, String> {
    string_max(v, 255)
}

pub fn project_id(v: &Value) -> Result<Value, String> {
    string_max(v, 255)
}

pub fn boolean(v: &Value) -> Result<Value, String> {
    match v {
        Value::Bool(_) => Ok(v.clone()),
        Value::String(s) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(Value::Bool(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") || s == "0" => Ok(Value::Bool(false)),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(Value::Bool(true)),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(Value::Bool(false)),
        other => Err(format!("'{}' cannot be converted to boolean", show(other))),
    }
}

/// True when `s` is a UUID in its canonical hyphenated form (any case).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

pub fn uuid(v: &Value) -> Result<Value, String> {
    match v {
        Value::String(s) if is_uuid(s) => Ok(v.clone()),
        other => Err(format!("'{}' is not a valid UUID", show(other))),
    }
}

pub fn uuid_or_null(v: &Value) -> Result<Value, String> {
    if v.is_null() {
        Ok(Value::Null)
    } else {
        uuid(v)
    }
}

pub fn uuid_list(v: &Value) -> Result<Value, String> {
    match v {
        Value::Array(items) => {
            for i in items {
                uuid(i)?;
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = items.iter().find(|i| !seen.insert(i.as_str())) {
                return Err(format!("Duplicate items in the list: '{}'", show(dup)));
            }
            Ok(v.clone())
        }
        other => Err(format!("'{}' is not a list", show(other))),
    }
}

pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

pub fn ip(v: &Value) -> Result<Value, String> {
    match v {
        Value::String(s) => match parse_ip(s) {
            Some(ip) => Ok(Value::String(ip.to_string())),
            None => Err(format!("'{s}' is not a valid IP address")),
        },
        other => Err(format!("'{}' is not a valid IP address", show(other))),
    }
}

pub fn ip_or_null(v: &Value) -> Result<Value, String> {
    if v.is_null() { Ok(Value::Null) } else { ip(v) }
}

/// Parses a CIDR, also accepting a bare address (a host prefix).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| parse_ip(s).map(IpNet::from))
}

pub fn cidr(v: &Value) -> Result<Value, String> {
    match v {
        Value::String(s) => match s.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => Ok(Value::String(net.to_string())),
            Ok(net) => Err(format!(
                "'{s}' isn't a recognized IP subnet cidr, '{}' is recommended",
                net.trunc()
            )),
            Err(_) => Err(format!("'{s}' is not a valid IP subnet")),
        },
        other => Err(format!("'{}' is not a valid IP subnet", show(other))),
    }
}

/// Like [`cidr`] but also takes a bare address or a prefix with host bits (normalised to the network).
pub fn prefix_or_null(v: &Value) -> Result<Value, String> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::String(s) => match parse_cidr(s) {
            Some(net) => Ok(Value::String(net.to_string())),
            None => Err(format!("'{s}' is not a valid IP subnet")),
        },
        other => Err(format!("'{}' is not a valid IP subnet", show(other))),
    }
}

pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

pub fn mac(v: &Value) -> Result<Value, String> {
    match v {
        Value::String(s) if is_mac(s) && s != "00:00:00:00:00:00" => {
            Ok(Value::String(s.to_ascii_lowercase()))
        }
        other => Err(format!("'{}' is not a valid MAC address", show(other))),
    }
}

pub fn dict(v: &Value) -> Result<Value, String> {
    match v {
        Value::Object(_) => Ok(v.clone()),
        other => Err(format!("'{}' is not a dictionary", show(other))),
    }
}

pub fn dict_or_null(v: &Value) -> Result<Value, String> {
    if v.is_null() {
        Ok(Value::Null)
    } else {
        dict(v)
    }
}

pub fn list(v: &Value) -> Result<Value, String> {
    match v {
        Value::Array(_) => Ok(v.clone()),
        other => Err(format!("'{}' is not a list", show(other))),
    }
}

pub fn string_list(v: &Value) -> Result<Value, String> {
    match v {
        Value::Array(items) => {
            for i in items {
                name(i)?;
            }
            Ok(v.clone())
        }
        other => Err(format!("'{}' is not a list", show(other))),
    }
}

pub fn ip_list(v: &Value) -> Result<Value, String> {
    match v {
        Value::Array(items) => Ok(Value::Array(
            items.iter().map(ip).collect::<Result<Vec<_>, _>>()?,
        )),
        other => Err(format!("'{}' is not a list", show(other))),
    }
}

/// A non-negative integer (Neutron accepts numeric strings too).
pub fn int_or_null(v: &Value) -> Result<Value, String> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Number(n) if n.is_i64() => Ok(v.clone()),
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("'{s}' is not an integer")),
        other => Err(format!("'{}' is not an integer", show(other))),
    }
}

pub fn int(v: &Value) -> Result<Value, String> {
    if v.is_null() {
        return Err("'None' is not an integer".into());
    }
    int_or_null(v)
}

pub fn ip_version(v: &Value) -> Result<Value, String> {
    match int(v)?.as_i64() {
        Some(n @ (4 | 6)) => Ok(Value::from(n)),
        _ => Err(format!("'{}' is not in [4, 6]", show(v))),
    }
}

fn one_of(v: &Value, allowed: &[&str]) -> Result<Value, String> {
    match v {
        Value::String(s) if allowed.contains(&s.as_str()) => Ok(v.clone()),
        other => Err(format!("'{}' is not in {:?}", show(other), allowed)),
    }
}

fn one_of_or_null(v: &Value, allowed: &[&str]) -> Result<Value, String> {
    if v.is_null() {
        Ok(Value::Null)
    } else {
        one_of(v, allowed)
    }
}

pub fn ipv6_mode(v: &Value) -> Result<Value, String> {
    one_of_or_null(v, &["dhcpv6-stateful", "dhcpv6-stateless", "slaac"])
}

pub fn direction(v: &Value) -> Result<Value, String> {
    one_of(v, &["ingress", "egress"])
}

pub fn ethertype(v: &Value) -> Result<Value, String> {
    match v {
        Value::String(s) if s.eq_ignore_ascii_case("ipv4") => Ok("IPv4".into()),
        Value::String(s) if s.eq_ignore_ascii_case("ipv6") => Ok("IPv6".into()),
        other => Err(format!("'{}' is not in ['IPv4', 'IPv6']", show(other))),
    }
}

pub fn vnic_type(v: &Value) -> Result<Value, String> {
    one_of(
        v,
        &[
            "normal",
            "direct",
            "macvtap",
            "baremetal",
            "direct-physical",
            "virtio-forwarder",
            "smart-nic",
            "vdpa",
            "remote-managed",
        ],
    )
}

pub fn network_type(v: &Value) -> Result<Value, String> {
    one_of_or_null(v, &["flat", "vlan", "vxlan", "geneve", "local"])
}

/// IP protocols Neutron accepts by name, with their numbers.
pub const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("icmp", 1),
    ("icmpv6", 58),
    ("igmp", 2),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// A rule's protocol: a name from [`PROTOCOLS`], "any", or a number 0-255 (kept as given).
pub fn protocol(v: &Value) -> Result<Value, String> {
    let bad = || {
        let names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
        format!(
            "IP protocol {} is not supported. Only protocol values {:?} and integer representations [0 to 255] are supported.",
            show(v),
            names
        )
    };
    match v {
        Value::Null => Ok(Value::Null),
        Value::String(s) if s == "any" => Ok(Value::Null),
        Value::String(s) if PROTOCOLS.iter().any(|(n, _)| n == &s.to_ascii_lowercase()) => {
            Ok(Value::String(s.to_ascii_lowercase()))
        }
        Value::String(s) => match s.parse::<u16>() {
            Ok(n) if n <= 255 => Ok(v.clone()),
            _ => Err(bad()),
        },
        Value::Number(n) if n.as_u64().is_some_and(|n| n <= 255) => {
            Ok(Value::String(n.to_string()))
        }
        _ => Err(bad()),
    }
}

pub fn port_number_or_null(v: &Value) -> Result<Value, String> {
    match int_or_null(v)? {
        Value::Null => Ok(Value::Null),
        n if n.as_i64().is_some_and(|p| (0..=65535).contains(&p)) => Ok(n),
        _ => Err(format!("Invalid port '{}'", show(v))),
    }
}

pub fn mtu_or_null(v: &Value) -> Result<Value, String> {
    match int_or_null(v)? {
        Value::Null => Ok(Value::Null),
        n if n.as_i64().is_some_and(|m| m >= 68) => Ok(n),
        _ => Err(format!(
            "'{}' is too small - must be at least '68'",
            show(v)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn booleans_accept_neutron_spellings() {
        assert_eq!(boolean(&json!("True")), Ok(json!(true)));
        assert_eq!(boolean(&json!(0)), Ok(json!(false)));
        assert!(boolean(&json!("yes please")).is_err());
    }

    #[test]
    fn cidrs_must_be_networks() {
        assert_eq!(cidr(&json!("10.0.0.0/24")), Ok(json!("10.0.0.0/24")));
        assert!(
            cidr(&json!("10.0.0.1/24"))
                .unwrap_err()
                .contains("10.0.0.0/24")
        );
        assert!(cidr(&json!("10.0.0.0/33")).is_err());
        assert_eq!(cidr(&json!("2001:DB8::/64")), Ok(json!("2001:db8::/64")));
    }

    #[test]
    fn protocols_by_name_and_number() {
        assert_eq!(protocol(&json!("TCP")), Ok(json!("tcp")));
        assert_eq!(protocol(&json!(17)), Ok(json!("17")));
        assert_eq!(protocol(&json!("any")), Ok(Value::Null));
        assert!(protocol(&json!("bogus")).is_err());
        assert!(protocol(&json!(256)).is_err());
    }

    #[test]
    fn macs_and_uuids() {
        assert_eq!(
            mac(&json!("FA:16:3E:00:00:01")),
            Ok(json!("fa:16:3e:00:00:01"))
        );
        assert!(mac(&json!("fa:16:3e:00:00")).is_err());
        assert!(is_uuid("6f1b0c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f"));
        assert!(!is_uuid("6f1b0c1e2a3b4c5d8e9f0a1b2c3d4e5f"));
    }
}
