//! Validators and normalisers for attribute values, with Neutron's wording for rejected input.
//!
//! Neutron reports a refused value in one of three ways, depending on which part of its attribute map
//! refused it: a *validator* gives `HTTPBadRequest` "Invalid input for <attr>. Reason: ...", a
//! *converter* gives `InvalidInput` "Invalid input for operation: ...", and some converters raise an
//! error type of their own (`SecurityGroupRuleInvalidProtocol`, ...). [`Refusal`] keeps that distinction
//! so the API can answer with the same type.
//!
//! The attribute maps use the [`Validator`]s at the end of this module: each pairs a check with the
//! [`Shape`] of the values it accepts, which the API's description shows.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::shape::Shape;

/// Why a value was refused, and how Neutron reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A validator refused the value (`HTTPBadRequest`, "Invalid input for <attr>. Reason: ...").
    Invalid(String),
    /// The value could not be converted (`InvalidInput`, "Invalid input for operation: ...").
    Unconvertible(String),
    /// An error with a type of its own: HTTP status, Neutron type name, message.
    Typed(u16, &'static str, String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Invalid(why) | Refusal::Unconvertible(why) | Refusal::Typed(_, _, why) => {
                f.write_str(why)
            }
        }
    }
}

/// A check takes the value a client sent and returns the value to store, or why it is refused.
pub type Check = fn(&Value) -> Result<Value, Refusal>;

/// The validator of an attribute: its check, and the [`Shape`] of the values the check accepts. The
/// attribute maps use the validators at the end of this module.
#[derive(Debug, Clone, Copy)]
pub struct Validator {
    pub check: Check,
    pub shape: Shape,
}

const fn validator(check: Check, shape: Shape) -> Validator {
    Validator { check, shape }
}

fn invalid(why: String) -> Refusal {
    Refusal::Invalid(why)
}

/// Most characters of a client's value that an error message quotes.
pub const MAX_ECHO: usize = 100;

/// `text` cut to at most `max` characters, `...` marking a cut: what an error message may quote of
/// a value, however long the value is.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((end, _)) => Cow::Owned(format!("{}...", &text[..end])),
        None => Cow::Borrowed(text),
    }
}

/// A client's value as an error message quotes it: at most [`MAX_ECHO`] characters.
pub fn echo(text: &str) -> Cow<'_, str> {
    clip(text, MAX_ECHO)
}

/// A JSON value as an error message quotes it (strings without their quotes), see [`echo`].
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => echo(s).into_owned(),
        other => echo(&other.to_string()).into_owned(),
    }
}

pub fn any(v: &Value) -> Result<Value, Refusal> {
    Ok(v.clone())
}

fn string_max(v: &Value, max: usize) -> Result<Value, Refusal> {
    match v {
        Value::String(s) if s.chars().count() > max => Err(invalid(format!(
            "'{}' exceeds maximum length of {max}",
            echo(s)
        ))),
        Value::String(_) => Ok(v.clone()),
        other => Err(invalid(format!("'{}' is not a valid string", show(other)))),
    }
}

pub fn name(v: &Value) -> Result<Value, Refusal> {
    string_max(v, 255)
}

/// A security group's name: any name but `default`, which only the group Wyvern creates per project
/// may have.
pub fn group_name(v: &Value) -> Result<Value, Refusal> {
    let name = string_max(v, 255)?;
    if name
        .as_str()
        .is_some_and(|n| n.eq_ignore_ascii_case("default"))
    {
        return Err(Refusal::Typed(
            409,
            "SecurityGroupDefaultAlreadyExists",
            "Default security group already exists.".into(),
        ));
    }
    Ok(name)
}

pub fn description(v: &Value) -> Result<Value, Refusal> {
    string_max(v, 255)
}

pub fn project_id(v: &Value) -> Result<Value, Refusal> {
    string_max(v, 255)
}

pub fn boolean(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Bool(_) => Ok(v.clone()),
        Value::String(s) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(Value::Bool(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") || s == "0" => Ok(Value::Bool(false)),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(Value::Bool(true)),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(Value::Bool(false)),
        other => Err(Refusal::Unconvertible(format!(
            "'{}' cannot be converted to boolean",
            show(other)
        ))),
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

pub fn uuid(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::String(s) if is_uuid(s) => Ok(v.clone()),
        other => Err(invalid(format!("'{}' is not a valid UUID", show(other)))),
    }
}

pub fn uuid_or_null(v: &Value) -> Result<Value, Refusal> {
    if v.is_null() {
        Ok(Value::Null)
    } else {
        uuid(v)
    }
}

pub fn uuid_list(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Array(items) => {
            for i in items {
                uuid(i)?;
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = items.iter().find(|i| !seen.insert(i.as_str())) {
                return Err(invalid(format!(
                    "Duplicate items in the list: '{}'",
                    show(dup)
                )));
            }
            Ok(v.clone())
        }
        other => Err(invalid(format!("'{}' is not a list", show(other)))),
    }
}

pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

pub fn ip(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::String(s) => match parse_ip(s) {
            Some(ip) => Ok(Value::String(ip.to_string())),
            None => Err(invalid(format!("'{}' is not a valid IP address", echo(s)))),
        },
        other => Err(invalid(format!(
            "'{}' is not a valid IP address",
            show(other)
        ))),
    }
}

pub fn ip_or_null(v: &Value) -> Result<Value, Refusal> {
    if v.is_null() { Ok(Value::Null) } else { ip(v) }
}

/// Parses a CIDR, also accepting a bare address (a host prefix).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| parse_ip(s).map(IpNet::from))
}

pub fn cidr(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::String(s) => match s.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => Ok(Value::String(net.to_string())),
            Ok(net) => Err(invalid(format!(
                "'{}' isn't a recognized IP subnet cidr, '{}' is recommended",
                echo(s),
                net.trunc()
            ))),
            Err(_) => Err(Refusal::Unconvertible(format!(
                "{} is not in a CIDR format",
                echo(s)
            ))),
        },
        other => Err(Refusal::Unconvertible(format!(
            "{} is not in a CIDR format",
            show(other)
        ))),
    }
}

fn invalid_cidr(text: &str) -> Refusal {
    Refusal::Typed(
        400,
        "InvalidCIDR",
        format!("Invalid input for operation: {text} is not a valid CIDR."),
    )
}

/// Like [`cidr`] but also takes a bare address or a prefix with host bits (normalised to the network).
pub fn prefix_or_null(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::String(s) => match parse_cidr(s) {
            Some(net) => Ok(Value::String(net.to_string())),
            None => Err(invalid_cidr(&echo(s))),
        },
        other => Err(invalid_cidr(&show(other))),
    }
}

pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// A MAC address a port may have: well-formed, not all zeros and not a group address (broadcast and
/// every other multicast address have the least significant bit of the first octet set).
fn is_port_mac(s: &str) -> bool {
    is_mac(s)
        && s != "00:00:00:00:00:00"
        && u8::from_str_radix(&s[..2], 16).is_ok_and(|first| first & 1 == 0)
}

/// A port's MAC address (also an address pair's): Neutron refuses the zero and broadcast addresses;
/// Wyvern refuses every multicast address the same way.
pub fn mac(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::String(s) if is_port_mac(s) => Ok(Value::String(s.to_ascii_lowercase())),
        other => Err(invalid(format!(
            "'{}' is not a valid MAC address",
            show(other)
        ))),
    }
}

pub fn dict(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Object(_) => Ok(v.clone()),
        other => Err(invalid(format!("'{}' is not a dictionary", show(other)))),
    }
}

pub fn dict_or_null(v: &Value) -> Result<Value, Refusal> {
    if v.is_null() {
        Ok(Value::Null)
    } else {
        dict(v)
    }
}

pub fn list(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Array(_) => Ok(v.clone()),
        other => Err(invalid(format!("'{}' is not a list", show(other)))),
    }
}

/// A string, or null.
pub fn string_or_null(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Null | Value::String(_) => Ok(v.clone()),
        other => Err(invalid(format!("'{}' is not a valid string", show(other)))),
    }
}

/// A list of distinct CIDRs (`10.0.0.1/24` is fine, a bare address is not); null is the empty
/// list. Values are kept as given (address groups normalise them).
pub fn subnet_list(v: &Value) -> Result<Value, Refusal> {
    let items = match v {
        Value::Null => return Ok(Value::Array(vec![])),
        Value::Array(items) => items,
        other => return Err(invalid(format!("'{}' is not a list", show(other)))),
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = items.iter().find(|i| !seen.insert(i.to_string())) {
        return Err(invalid(format!(
            "Duplicate items in the list: '{}'",
            show(dup)
        )));
    }
    for item in items {
        let cidr = item.as_str().filter(|s| s.contains('/'));
        if cidr.and_then(|s| s.parse::<IpNet>().ok()).is_none() {
            return Err(invalid(format!(
                "'{}' is not a valid IP subnet",
                show(item)
            )));
        }
    }
    Ok(v.clone())
}

pub fn string_list(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Array(items) => {
            for i in items {
                name(i)?;
            }
            Ok(v.clone())
        }
        other => Err(invalid(format!("'{}' is not a list", show(other)))),
    }
}

/// Neutron's `type:list_of_unique_strings` with strings of at most 255 characters (a port's
/// `tags` in a create body, `tag-ports-during-bulk-creation`): a list, no item twice (all the
/// repeated items named, as Neutron names them), every item a string within the length.
pub fn unique_string_list(v: &Value) -> Result<Value, Refusal> {
    let Value::Array(items) = v else {
        return Err(invalid(format!("'{}' is not a list", show(v))));
    };
    let mut seen = std::collections::HashSet::new();
    let mut dups: Vec<&Value> = Vec::new();
    for i in items {
        if !seen.insert(i.to_string()) && !dups.contains(&i) {
            dups.push(i);
        }
    }
    if !dups.is_empty() {
        let named: Vec<String> = dups.iter().map(|d| show(d)).collect();
        return Err(invalid(format!(
            "Duplicate items in the list: '{}'",
            named.join(", ")
        )));
    }
    for i in items {
        string_max(i, 255)?;
    }
    Ok(v.clone())
}

/// A physical network name (`provider:physical_network`): a string of at most 64 characters.
pub fn physical_network(v: &Value) -> Result<Value, Refusal> {
    string_max(v, 64)
}

/// A route destination: a CIDR written with its prefix length, without host bits, not loopback.
fn route_cidr(v: &Value) -> Result<(), Refusal> {
    let text = show(v);
    let not_valid = || invalid(format!("'{text}' is not a valid CIDR"));
    let Value::String(s) = v else {
        return Err(not_valid());
    };
    let net: IpNet = s.parse().map_err(|_| not_valid())?;
    if net.trunc() != net {
        return Err(not_valid());
    }
    if net.addr().is_loopback() {
        return Err(invalid(format!("'{text}' is not a routable CIDR")));
    }
    Ok(())
}

/// A list of routes (a subnet's `host_routes`, a router's `routes`): dictionaries with exactly
/// `destination` (a CIDR without host bits) and `nexthop` (an address), no route twice. Linear in the
/// number of routes; callers limit their number before calling this.
pub fn host_routes(v: &Value) -> Result<Value, Refusal> {
    let Value::Array(routes) = v else {
        return Err(invalid(format!(
            "Invalid data format for hostroute: '{}'",
            show(v)
        )));
    };
    let mut seen = std::collections::HashSet::new();
    for route in routes {
        let Value::Object(r) = route else {
            return Err(invalid(format!(
                "Invalid input. '{}' must be a dictionary with keys: ['destination', 'nexthop']",
                show(route)
            )));
        };
        let (Some(dest), Some(hop), 2) = (r.get("destination"), r.get("nexthop"), r.len()) else {
            let provided: Vec<String> = r.keys().map(|k| format!("'{}'", echo(k))).collect();
            return Err(invalid(format!(
                "Validation of dictionary's keys failed. Expected keys: {{'destination', 'nexthop'}} Provided keys: {{{}}}",
                provided.join(", ")
            )));
        };
        route_cidr(dest)?;
        ip(hop)?;
        let (dest, hop) = (show(dest), show(hop));
        if !seen.insert((dest.clone(), hop.clone())) {
            return Err(invalid(format!(
                "Duplicate hostroute '{{'destination': '{dest}', 'nexthop': '{hop}'}}'"
            )));
        }
    }
    Ok(v.clone())
}

pub fn ip_list(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Array(items) => Ok(Value::Array(
            items.iter().map(ip).collect::<Result<Vec<_>, _>>()?,
        )),
        other => Err(invalid(format!("'{}' is not a list", show(other)))),
    }
}

/// A non-negative integer (Neutron accepts numeric strings too).
pub fn int_or_null(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Number(n) if n.is_i64() => Ok(v.clone()),
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| Refusal::Unconvertible(format!("'{}' is not an integer", echo(s)))),
        other => Err(Refusal::Unconvertible(format!(
            "'{}' is not an integer",
            show(other)
        ))),
    }
}

pub fn int(v: &Value) -> Result<Value, Refusal> {
    if v.is_null() {
        return Err(Refusal::Unconvertible("'None' is not an integer".into()));
    }
    int_or_null(v)
}

pub fn ip_version(v: &Value) -> Result<Value, Refusal> {
    match int(v)?.as_i64() {
        Some(n @ (4 | 6)) => Ok(Value::from(n)),
        _ => Err(invalid(format!("{} is not in valid_values", show(v)))),
    }
}

fn one_of(v: &Value, allowed: &[&str]) -> Result<Value, Refusal> {
    match v {
        Value::String(s) if allowed.contains(&s.as_str()) => Ok(v.clone()),
        other => Err(invalid(format!("{} is not in valid_values", show(other)))),
    }
}

fn one_of_or_null(v: &Value, allowed: &[&str]) -> Result<Value, Refusal> {
    if v.is_null() {
        Ok(Value::Null)
    } else {
        one_of(v, allowed)
    }
}

/// A subnet's IPv6 modes (`ipv6_ra_mode`, `ipv6_address_mode`).
pub const IPV6_MODES: &[&str] = &["dhcpv6-stateful", "dhcpv6-stateless", "slaac"];

pub fn ipv6_mode(v: &Value) -> Result<Value, Refusal> {
    one_of_or_null(v, IPV6_MODES)
}

/// A security group rule's directions.
pub const DIRECTIONS: &[&str] = &["ingress", "egress"];

pub fn direction(v: &Value) -> Result<Value, Refusal> {
    one_of(v, DIRECTIONS)
}

/// A security group rule's ethertypes, as shown (any case is accepted).
pub const ETHERTYPES: &[&str] = &["IPv4", "IPv6"];

pub fn ethertype(v: &Value) -> Result<Value, Refusal> {
    match v {
        Value::String(s) if s.eq_ignore_ascii_case("ipv4") => Ok("IPv4".into()),
        Value::String(s) if s.eq_ignore_ascii_case("ipv6") => Ok("IPv6".into()),
        other => Err(Refusal::Typed(
            400,
            "SecurityGroupRuleInvalidEtherType",
            format!(
                "Security group rule for ethertype '{}' not supported. Allowed values are ['IPv4', 'IPv6'].",
                show(other)
            ),
        )),
    }
}

/// A port's VNIC types (`binding:vnic_type`).
pub const VNIC_TYPES: &[&str] = &[
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "remote-managed",
];

pub fn vnic_type(v: &Value) -> Result<Value, Refusal> {
    one_of(v, VNIC_TYPES)
}

/// A router's SNAT modes, see [`snat_mode`].
pub const SNAT_MODES: &[&str] = &["distributed", "centralized"];

/// A router's SNAT mode (Wyvern's `snat-mode` extension): `distributed`, every chassis translating
/// its own ports' connections to its own address, or `centralized`, through the router's gateway
/// address on one gateway chassis.
pub fn snat_mode(v: &Value) -> Result<Value, Refusal> {
    one_of(v, SNAT_MODES)
}

/// The provider network types Wyvern supports.
pub const NETWORK_TYPES: &[&str] = &["flat", "vlan", "vxlan", "geneve", "local"];

/// A provider network type Wyvern supports (the ML2 type drivers answer `InvalidInput` for others).
pub fn network_type(v: &Value) -> Result<Value, Refusal> {
    one_of_or_null(v, NETWORK_TYPES).map_err(|_| {
        Refusal::Unconvertible(format!("network_type value '{}' not supported", show(v)))
    })
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
pub fn protocol(v: &Value) -> Result<Value, Refusal> {
    let bad = || {
        let names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
        Refusal::Typed(
            400,
            "SecurityGroupRuleInvalidProtocol",
            format!(
                "Security group rule protocol {} not supported. Only protocol values {:?} and integer representations [0 to 255] are supported.",
                show(v),
                names
            ),
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

/// A security group rule's port (or ICMP type/code): 0-65535, numeric strings accepted.
pub fn port_number_or_null(v: &Value) -> Result<Value, Refusal> {
    let bad = || {
        Refusal::Typed(
            400,
            "SecurityGroupInvalidPortValue",
            format!("Invalid value for port {}", show(v)),
        )
    };
    match int_or_null(v).map_err(|_| bad())? {
        Value::Null => Ok(Value::Null),
        n if n.as_i64().is_some_and(|p| (0..=65535).contains(&p)) => Ok(n),
        _ => Err(bad()),
    }
}

pub fn mtu_or_null(v: &Value) -> Result<Value, Refusal> {
    match int_or_null(v)? {
        Value::Null => Ok(Value::Null),
        n if n.as_i64().is_some_and(|m| m >= 68) => Ok(n),
        _ => Err(invalid(format!(
            "'{}' is too small - must be at least '68'",
            show(v)
        ))),
    }
}

/// The names of [`PROTOCOLS`].
const PROTOCOL_NAMES: [&str; PROTOCOLS.len()] = {
    let mut names = [""; PROTOCOLS.len()];
    let mut i = 0;
    while i < PROTOCOLS.len() {
        names[i] = PROTOCOLS[i].0;
        i += 1;
    }
    names
};

// The validators of the attribute maps.

/// One of a port's `fixed_ips`.
const FIXED_IP_SHAPE: Shape = Shape::Object(&[
    ("subnet_id", Shape::UUID),
    ("ip_address", Shape::IP_ADDRESS),
]);

pub const ANY: Validator = validator(any, Shape::Any);
pub const NAME: Validator = validator(name, Shape::Text(Some(255)));
pub const GROUP_NAME: Validator = validator(group_name, Shape::Text(Some(255)));
pub const DESCRIPTION: Validator = validator(description, Shape::Text(Some(255)));
pub const PROJECT_ID: Validator = validator(project_id, Shape::Text(Some(255)));
pub const PHYSICAL_NETWORK: Validator = validator(physical_network, Shape::Text(Some(64)));
pub const STRING_OR_NULL: Validator = validator(string_or_null, Shape::OrNull(&Shape::Text(None)));
pub const STRING_LIST: Validator = validator(string_list, Shape::ListOf(&Shape::Text(Some(255))));
pub const UNIQUE_STRING_LIST: Validator =
    validator(unique_string_list, Shape::ListOf(&Shape::Text(Some(255))));
pub const BOOLEAN: Validator = validator(boolean, Shape::Boolean);
pub const UUID: Validator = validator(uuid, Shape::UUID);
pub const UUID_OR_NULL: Validator = validator(uuid_or_null, Shape::OrNull(&Shape::UUID));
pub const UUID_LIST: Validator = validator(uuid_list, Shape::ListOf(&Shape::UUID));
pub const IP: Validator = validator(ip, Shape::IP_ADDRESS);
pub const IP_OR_NULL: Validator = validator(ip_or_null, Shape::OrNull(&Shape::IP_ADDRESS));
pub const CIDR: Validator = validator(cidr, Shape::CIDR);
pub const PREFIX_OR_NULL: Validator = validator(prefix_or_null, Shape::OrNull(&Shape::CIDR));
pub const SUBNET_LIST: Validator = validator(subnet_list, Shape::ListOf(&Shape::CIDR));
pub const MAC: Validator = validator(mac, Shape::MAC_ADDRESS);
pub const DICT_OR_NULL: Validator = validator(dict_or_null, Shape::OrNull(&Shape::Dict));
pub const INT_OR_NULL: Validator = validator(
    int_or_null,
    Shape::OrNull(&Shape::Integer {
        min: None,
        max: None,
    }),
);
pub const MTU_OR_NULL: Validator = validator(
    mtu_or_null,
    Shape::OrNull(&Shape::Integer {
        min: Some(68),
        max: None,
    }),
);
pub const PORT_NUMBER_OR_NULL: Validator = validator(
    port_number_or_null,
    Shape::OrNull(&Shape::Integer {
        min: Some(0),
        max: Some(65535),
    }),
);
pub const IP_VERSION: Validator = validator(ip_version, Shape::IntegerOneOf(&[4, 6]));
pub const IPV6_MODE: Validator = validator(ipv6_mode, Shape::OrNull(&Shape::OneOf(IPV6_MODES)));
pub const DIRECTION: Validator = validator(direction, Shape::OneOf(DIRECTIONS));
pub const ETHERTYPE: Validator = validator(ethertype, Shape::OneOf(ETHERTYPES));
pub const VNIC_TYPE: Validator = validator(vnic_type, Shape::OneOf(VNIC_TYPES));
pub const SNAT_MODE: Validator = validator(snat_mode, Shape::OneOf(SNAT_MODES));
pub const NETWORK_TYPE: Validator =
    validator(network_type, Shape::OrNull(&Shape::OneOf(NETWORK_TYPES)));
pub const PROTOCOL: Validator = validator(
    protocol,
    Shape::OrNull(&Shape::Either(&[
        Shape::OneOf(&PROTOCOL_NAMES),
        Shape::Integer {
            min: Some(0),
            max: Some(255),
        },
    ])),
);

// Lists whose items the resource handlers check: their validators check only that they are lists,
// their shapes tell what the items look like.

/// A port's `fixed_ips`.
pub const FIXED_IPS: Validator = validator(list, Shape::ListOf(&FIXED_IP_SHAPE));
/// A subnet's `allocation_pools`.
pub const ALLOCATION_POOLS: Validator = validator(
    list,
    Shape::ListOf(&Shape::Object(&[
        ("start", Shape::IP_ADDRESS),
        ("end", Shape::IP_ADDRESS),
    ])),
);
/// A subnet's `host_routes` and a router's `routes`.
pub const ROUTES: Validator = validator(
    list,
    Shape::ListOf(&Shape::Object(&[
        ("destination", Shape::CIDR),
        ("nexthop", Shape::IP_ADDRESS),
    ])),
);
/// A subnet's `dns_nameservers`.
pub const NAMESERVERS: Validator = validator(list, Shape::ListOf(&Shape::IP_ADDRESS));
/// A port's `allowed_address_pairs`.
pub const ADDRESS_PAIRS: Validator = validator(
    list,
    Shape::ListOf(&Shape::Object(&[
        (
            "ip_address",
            Shape::Either(&[Shape::IP_ADDRESS, Shape::CIDR]),
        ),
        ("mac_address", Shape::MAC_ADDRESS),
    ])),
);
/// A port's `extra_dhcp_opts`.
pub const DHCP_OPTIONS: Validator = validator(
    list,
    Shape::ListOf(&Shape::Object(&[
        ("opt_name", Shape::Text(Some(255))),
        ("opt_value", Shape::OrNull(&Shape::Text(Some(255)))),
        ("ip_version", Shape::IntegerOneOf(&[4, 6])),
    ])),
);
/// A router's `external_gateway_info`.
pub const GATEWAY_INFO: Validator = validator(
    dict_or_null,
    Shape::OrNull(&Shape::Object(&[
        ("network_id", Shape::UUID),
        ("enable_snat", Shape::Boolean),
        ("external_fixed_ips", Shape::ListOf(&FIXED_IP_SHAPE)),
    ])),
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoted_values_are_cut() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc...");
        assert_eq!(clip("ééééé", 2), "éé...");
        let long = "x".repeat(100_000);
        let refusal = name(&json!(long)).unwrap_err().to_string();
        assert!(refusal.len() < 200, "{refusal}");
        assert!(
            refusal.ends_with("exceeds maximum length of 255"),
            "{refusal}"
        );
        let refusal = uuid(&json!([long])).unwrap_err().to_string();
        assert!(refusal.len() < 200, "{refusal}");
    }

    #[test]
    fn snat_modes() {
        assert_eq!(snat_mode(&json!("centralized")), Ok(json!("centralized")));
        assert_eq!(snat_mode(&json!("distributed")), Ok(json!("distributed")));
        for bad in [json!("Centralized"), json!(null), json!(1)] {
            assert!(
                matches!(snat_mode(&bad), Err(Refusal::Invalid(r)) if r.ends_with("is not in valid_values")),
                "{bad}"
            );
        }
    }

    #[test]
    fn booleans_accept_neutron_spellings() {
        assert_eq!(boolean(&json!("True")), Ok(json!(true)));
        assert_eq!(boolean(&json!(0)), Ok(json!(false)));
        assert!(matches!(
            boolean(&json!("yes please")),
            Err(Refusal::Unconvertible(_))
        ));
    }

    #[test]
    fn cidrs_must_be_networks() {
        assert_eq!(cidr(&json!("10.0.0.0/24")), Ok(json!("10.0.0.0/24")));
        assert!(
            cidr(&json!("10.0.0.1/24"))
                .unwrap_err()
                .to_string()
                .contains("10.0.0.0/24")
        );
        assert!(matches!(
            cidr(&json!("10.0.0.0/33")),
            Err(Refusal::Unconvertible(_))
        ));
        assert_eq!(cidr(&json!("2001:DB8::/64")), Ok(json!("2001:db8::/64")));
    }

    #[test]
    fn subnet_lists_need_distinct_prefixes() {
        let ok = json!(["10.0.0.1/24", "2001:DB8::/48"]);
        assert_eq!(subnet_list(&ok), Ok(ok.clone()));
        assert_eq!(subnet_list(&Value::Null), Ok(json!([])));
        for (bad, why) in [
            (json!("10.0.0.0/8"), "is not a list"),
            (json!(["10.0.0.0/8", "10.0.0.0/8"]), "Duplicate items"),
            (json!(["10.1.2.3"]), "not a valid IP subnet"),
            (json!(["10.0.0.0/33"]), "not a valid IP subnet"),
            (json!([7]), "not a valid IP subnet"),
        ] {
            let refusal = subnet_list(&bad).unwrap_err();
            assert!(
                matches!(&refusal, Refusal::Invalid(r) if r.contains(why)),
                "{bad}: {refusal}"
            );
        }
    }

    #[test]
    fn protocols_by_name_and_number() {
        assert_eq!(protocol(&json!("TCP")), Ok(json!("tcp")));
        assert_eq!(protocol(&json!(17)), Ok(json!("17")));
        assert_eq!(protocol(&json!("any")), Ok(Value::Null));
        assert!(protocol(&json!("bogus")).is_err());
        assert!(matches!(
            protocol(&json!(256)),
            Err(Refusal::Typed(400, "SecurityGroupRuleInvalidProtocol", _))
        ));
        assert!(matches!(
            group_name(&json!("Default")),
            Err(Refusal::Typed(409, ..))
        ));
    }

    #[test]
    fn host_routes_are_exact_and_unique() {
        let route = json!({"destination": "10.1.0.0/16", "nexthop": "10.0.0.1"});
        assert!(host_routes(&json!([route])).is_ok());
        assert!(host_routes(&json!([route, route])).is_err());
        let host_bits = json!([{"destination": "10.1.0.1/16", "nexthop": "10.0.0.1"}]);
        assert!(host_routes(&host_bits).is_err());
        let extra = json!([{"destination": "10.1.0.0/16", "nexthop": "10.0.0.1", "x": 1}]);
        assert!(host_routes(&extra).is_err());
        assert!(physical_network(&json!(5)).is_err());
    }

    #[test]
    fn macs_and_uuids() {
        assert_eq!(
            mac(&json!("FA:16:3E:00:00:01")),
            Ok(json!("fa:16:3e:00:00:01"))
        );
        assert!(mac(&json!("fa:16:3e:00:00")).is_err());
        for group in [
            "ff:ff:ff:ff:ff:ff",
            "FF:FF:FF:FF:FF:FF",
            "01:00:5e:00:00:01",
            "33:33:00:00:00:01",
        ] {
            assert_eq!(
                mac(&json!(group)),
                Err(Refusal::Invalid(format!(
                    "'{group}' is not a valid MAC address"
                )))
            );
        }
        assert!(mac(&json!("00:00:00:00:00:00")).is_err());
        assert!(is_uuid("6f1b0c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f"));
        assert!(!is_uuid("6f1b0c1e2a3b4c5d8e9f0a1b2c3d4e5f"));
    }
}
