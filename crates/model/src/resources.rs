//! The attribute maps of the Neutron resources Wyvern serves.

use serde_json::Value;

use crate::shape::Shape;
use crate::validate::{self as v, Validator};

/// Where an attribute's value comes from when a create request leaves it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// The client must give it.
    Required,
    /// This JSON literal.
    Json(&'static str),
    /// The resource handler fills it in (possibly from other attributes).
    Computed,
}

impl Default {
    /// The value of a [`Default::Json`] default; `None` for the others.
    pub fn value(&self) -> Option<Value> {
        match self {
            Default::Json(literal) => serde_json::from_str(literal).ok(),
            Default::Required | Default::Computed => None,
        }
    }
}

/// One attribute of a resource.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub name: &'static str,
    /// May be given on create.
    pub post: bool,
    /// May be changed on update.
    pub put: bool,
    pub default: Default,
    pub validate: Validator,
}

/// An action on one object, `PUT /v2.0/<path>/<id>/<name>` (Neutron's `member_actions`).
#[derive(Debug)]
pub struct Action {
    pub name: &'static str,
    /// The shape of the request body.
    pub body: Shape,
}

/// A resource kind as the API exposes it.
#[derive(Debug)]
pub struct ResourceDef {
    /// `network`: the key of a single object in request and response bodies.
    pub singular: &'static str,
    /// `security_groups`: the key of a list in request and response bodies.
    pub collection: &'static str,
    /// `security-groups`: the URL segment.
    pub path: &'static str,
    /// Prefix of the `NeutronError` type when an id is unknown, e.g. `Network` → `NetworkNotFound`.
    pub error_name: &'static str,
    /// The attributes every object of the kind has: [`STANDARD`] for Neutron's resources.
    pub standard: &'static [Attr],
    /// The resource-specific attributes; the standard ones come on top.
    pub attrs: &'static [Attr],
    /// Whether objects carry `tags`.
    pub taggable: bool,
    /// Whether objects carry `description`.
    pub described: bool,
    /// The actions on its objects.
    pub actions: &'static [Action],
}

pub(crate) const fn attr(
    name: &'static str,
    post: bool,
    put: bool,
    default: Default,
    validate: Validator,
) -> Attr {
    Attr {
        name,
        post,
        put,
        default,
        validate,
    }
}
/// Settable on create and update.
pub(crate) const fn rw(name: &'static str, default: Default, validate: Validator) -> Attr {
    attr(name, true, true, default, validate)
}
/// Settable on create only.
pub(crate) const fn create_only(name: &'static str, default: Default, validate: Validator) -> Attr {
    attr(name, true, false, default, validate)
}
/// Read-only, computed by the server.
pub(crate) const fn computed(name: &'static str) -> Attr {
    attr(name, false, false, Default::Computed, v::ANY)
}

use self::Default::{Computed, Json, Required};

/// Attributes every resource has.
pub const STANDARD: &[Attr] = &[
    computed("id"),
    create_only("tenant_id", Computed, v::PROJECT_ID),
    create_only("project_id", Computed, v::PROJECT_ID),
    computed("created_at"),
    computed("updated_at"),
    computed("revision_number"),
];
/// The `description` attribute, on resources that have one.
pub const DESCRIPTION: Attr = rw("description", Json("\"\""), v::DESCRIPTION);
/// The `tags` attribute: shown on every taggable object, changed only through the tags sub-resource
/// (as in Neutron, a create body may not carry tags, but a port's: [`PORT_TAGS`]).
pub const TAGS: Attr = attr("tags", false, false, Json("[]"), v::STRING_LIST);
/// A port's `tags`: also given in its create body, single or bulk, stored with the port (Neutron's
/// `tag-ports-during-bulk-creation`, validated as Neutron's `type:list_of_unique_strings` of at
/// most 255 characters).
pub const PORT_TAGS: Attr = attr("tags", true, false, Json("[]"), v::UNIQUE_STRING_LIST);

pub static NETWORK: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "network",
    collection: "networks",
    path: "networks",
    error_name: "Network",
    taggable: true,
    described: true,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), v::NAME),
        rw("admin_state_up", Json("true"), v::BOOLEAN),
        computed("status"),
        computed("subnets"),
        rw("shared", Json("false"), v::BOOLEAN),
        rw("mtu", Computed, v::MTU_OR_NULL),
        rw("router:external", Json("false"), v::BOOLEAN),
        rw("port_security_enabled", Json("true"), v::BOOLEAN),
        create_only("provider:network_type", Computed, v::NETWORK_TYPE),
        create_only("provider:physical_network", Computed, v::PHYSICAL_NETWORK),
        create_only("provider:segmentation_id", Computed, v::INT_OR_NULL),
        create_only("availability_zone_hints", Json("[]"), v::STRING_LIST),
        computed("availability_zones"),
        computed("ipv4_address_scope"),
        computed("ipv6_address_scope"),
        computed("is_default"),
    ],
};

pub static SUBNET: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "subnet",
    collection: "subnets",
    path: "subnets",
    error_name: "Subnet",
    taggable: true,
    described: true,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), v::NAME),
        create_only("network_id", Required, v::UUID),
        create_only("ip_version", Required, v::IP_VERSION),
        create_only("cidr", Computed, v::CIDR),
        create_only("subnetpool_id", Computed, v::UUID_OR_NULL),
        rw("gateway_ip", Computed, v::IP_OR_NULL),
        rw("allocation_pools", Computed, v::ALLOCATION_POOLS),
        rw("dns_nameservers", Json("[]"), v::NAMESERVERS),
        rw("host_routes", Json("[]"), v::ROUTES),
        rw("enable_dhcp", Json("true"), v::BOOLEAN),
        create_only("ipv6_ra_mode", Json("null"), v::IPV6_MODE),
        create_only("ipv6_address_mode", Json("null"), v::IPV6_MODE),
        rw("service_types", Json("[]"), v::STRING_LIST),
        computed("router:external"),
    ],
};

pub static PORT: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "port",
    collection: "ports",
    path: "ports",
    error_name: "Port",
    taggable: true,
    described: true,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), v::NAME),
        create_only("network_id", Required, v::UUID),
        rw("admin_state_up", Json("true"), v::BOOLEAN),
        rw("mac_address", Computed, v::MAC),
        rw("fixed_ips", Computed, v::FIXED_IPS),
        rw("device_id", Json("\"\""), v::NAME),
        rw("device_owner", Json("\"\""), v::NAME),
        computed("status"),
        rw("allowed_address_pairs", Json("[]"), v::ADDRESS_PAIRS),
        rw("extra_dhcp_opts", Json("[]"), v::DHCP_OPTIONS),
        rw("security_groups", Computed, v::UUID_LIST),
        rw("port_security_enabled", Computed, v::BOOLEAN),
        rw("binding:host_id", Json("\"\""), v::NAME),
        rw("binding:profile", Json("{}"), v::DICT_OR_NULL),
        rw("binding:vnic_type", Json("\"normal\""), v::VNIC_TYPE),
        computed("binding:vif_type"),
        computed("binding:vif_details"),
    ],
};

pub static SECURITY_GROUP: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "security_group",
    collection: "security_groups",
    path: "security-groups",
    error_name: "SecurityGroup",
    taggable: true,
    described: true,
    actions: &[],
    attrs: &[
        rw("name", Json("\"\""), v::GROUP_NAME),
        rw("stateful", Json("true"), v::BOOLEAN),
        computed("shared"),
        computed("security_group_rules"),
    ],
};

pub static SECURITY_GROUP_RULE: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "security_group_rule",
    collection: "security_group_rules",
    path: "security-group-rules",
    error_name: "SecurityGroupRule",
    taggable: false,
    described: true,
    actions: &[],
    attrs: &[
        create_only("security_group_id", Required, v::UUID),
        create_only("direction", Required, v::DIRECTION),
        create_only("ethertype", Json("\"IPv4\""), v::ETHERTYPE),
        create_only("protocol", Json("null"), v::PROTOCOL),
        create_only("port_range_min", Json("null"), v::PORT_NUMBER_OR_NULL),
        create_only("port_range_max", Json("null"), v::PORT_NUMBER_OR_NULL),
        create_only("remote_ip_prefix", Json("null"), v::PREFIX_OR_NULL),
        create_only("remote_group_id", Json("null"), v::UUID_OR_NULL),
        // Neutron does not validate it: an unknown value is an address group not found (404).
        create_only("remote_address_group_id", Json("null"), v::STRING_OR_NULL),
        computed("normalized_cidr"),
        computed("belongs_to_default_sg"),
    ],
};

/// The body of `add_addresses` and `remove_addresses`.
const ADDRESSES: Shape = Shape::Object(&[("addresses", Shape::ListOf(&Shape::CIDR))]);

/// An address group: a named set of CIDRs that security group rules refer to
/// (`remote_address_group_id`). Its addresses change through the `add_addresses` and
/// `remove_addresses` actions only.
pub static ADDRESS_GROUP: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "address_group",
    collection: "address_groups",
    path: "address-groups",
    error_name: "AddressGroup",
    taggable: false,
    described: true,
    actions: &[
        Action {
            name: "add_addresses",
            body: ADDRESSES,
        },
        Action {
            name: "remove_addresses",
            body: ADDRESSES,
        },
    ],
    attrs: &[
        rw("name", Json("\"\""), v::NAME),
        create_only("addresses", Json("[]"), v::SUBNET_LIST),
    ],
};

/// The body of `add_router_interface` and `remove_router_interface`: a subnet or a port.
const INTERFACE: Shape = Shape::Object(&[("subnet_id", Shape::UUID), ("port_id", Shape::UUID)]);

pub static ROUTER: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "router",
    collection: "routers",
    path: "routers",
    error_name: "Router",
    taggable: true,
    described: true,
    actions: &[
        Action {
            name: "add_router_interface",
            body: INTERFACE,
        },
        Action {
            name: "remove_router_interface",
            body: INTERFACE,
        },
    ],
    attrs: &[
        rw("name", Json("\"\""), v::NAME),
        rw("admin_state_up", Json("true"), v::BOOLEAN),
        computed("status"),
        rw("external_gateway_info", Json("null"), v::GATEWAY_INFO),
        rw("routes", Json("[]"), v::ROUTES),
        create_only("availability_zone_hints", Json("[]"), v::STRING_LIST),
        computed("availability_zones"),
        create_only("flavor_id", Json("null"), v::UUID_OR_NULL),
        computed("distributed"),
        computed("ha"),
        // Wyvern's `snat-mode` extension: how ports without a floating IP reach the outside.
        rw("snat_mode", Json("\"distributed\""), v::SNAT_MODE),
    ],
};

pub static FLOATING_IP: ResourceDef = ResourceDef {
    standard: STANDARD,
    singular: "floatingip",
    collection: "floatingips",
    path: "floatingips",
    error_name: "FloatingIP",
    taggable: true,
    described: true,
    actions: &[],
    attrs: &[
        create_only("floating_network_id", Required, v::UUID),
        create_only("floating_ip_address", Computed, v::IP),
        create_only("subnet_id", Json("null"), v::UUID_OR_NULL),
        rw("port_id", Json("null"), v::UUID_OR_NULL),
        rw("fixed_ip_address", Json("null"), v::IP_OR_NULL),
        computed("router_id"),
        computed("status"),
        computed("port_details"),
    ],
};

/// Every resource served, for lookups by URL segment.
pub static ALL: &[&ResourceDef] = &[
    &NETWORK,
    &SUBNET,
    &PORT,
    &SECURITY_GROUP,
    &SECURITY_GROUP_RULE,
    &ADDRESS_GROUP,
    &ROUTER,
    &FLOATING_IP,
    &crate::trunks::TRUNK,
];

/// The resource served under a URL segment (`security-groups`).
pub fn resource_by_path(path: &str) -> Option<&'static ResourceDef> {
    ALL.iter().copied().find(|r| r.path == path)
}

impl ResourceDef {
    /// All attributes of this resource, standard ones included.
    pub fn all_attrs(&self) -> impl Iterator<Item = &Attr> {
        self.standard
            .iter()
            .chain(self.described.then_some(&DESCRIPTION))
            .chain(self.taggable.then_some(self.tags_attr()))
            .chain(self.attrs.iter())
    }

    /// Its `tags` attribute (if taggable): [`PORT_TAGS`] for ports, else [`TAGS`].
    fn tags_attr(&self) -> &'static Attr {
        if std::ptr::eq(self, &PORT) {
            &PORT_TAGS
        } else {
            &TAGS
        }
    }

    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.all_attrs().find(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::shape::Format;

    /// Values of `shape`: one per enumerated value and per alternative.
    fn samples(shape: &Shape) -> Vec<Value> {
        match shape {
            Shape::Any => vec![Value::Null],
            Shape::Boolean => vec![json!(true), json!(false)],
            Shape::Text(_) => vec![json!("x")],
            Shape::Formatted(Format::Uuid) => vec![json!("6f1b0c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f")],
            Shape::Formatted(Format::IpAddress) => vec![json!("10.0.0.1"), json!("2001:db8::1")],
            Shape::Formatted(Format::Cidr) => vec![json!("10.0.0.0/24"), json!("2001:db8::/64")],
            Shape::Formatted(Format::MacAddress) => vec![json!("fa:16:3e:00:00:01")],
            Shape::OneOf(names) => names.iter().map(|n| json!(n)).collect(),
            Shape::Integer { min, max } => [*min, *max, Some(min.unwrap_or(0))]
                .into_iter()
                .flatten()
                .map(|n| json!(n))
                .collect(),
            Shape::IntegerOneOf(values) => values.iter().map(|n| json!(n)).collect(),
            Shape::Either(shapes) => shapes.iter().flat_map(samples).collect(),
            Shape::ListOf(item) => samples(item).into_iter().map(|v| json!([v])).collect(),
            Shape::Dict => vec![json!({})],
            Shape::Object(fields) => {
                let first = |shape| samples(shape).swap_remove(0);
                let obj: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(name, shape)| (name.to_string(), first(shape)))
                    .collect();
                vec![Value::Object(obj)]
            }
            Shape::OrNull(shape) => [Value::Null].into_iter().chain(samples(shape)).collect(),
        }
    }

    /// Values just outside `shape`, where its check alone decides (not the items of a list, whose
    /// checks the resource handlers make).
    fn outside(shape: &Shape) -> Vec<Value> {
        match shape {
            Shape::Text(Some(max)) => vec![json!("x".repeat(max + 1))],
            Shape::OneOf(_) => vec![json!("no-such-value")],
            Shape::Integer { min, max } => [min.map(|n| n - 1), max.map(|n| n + 1)]
                .into_iter()
                .flatten()
                .map(|n| json!(n))
                .collect(),
            Shape::IntegerOneOf(_) => vec![json!(5)],
            Shape::Formatted(_) => vec![json!("no-such-value")],
            Shape::OrNull(shape) => outside(shape),
            _ => vec![],
        }
    }

    /// What a description of the API says of an attribute is what its check accepts.
    #[test]
    fn shapes_agree_with_checks() {
        for def in ALL.iter().chain(crate::lbaas::ALL) {
            for attr in def.all_attrs() {
                let Validator { check, shape } = attr.validate;
                for value in samples(&shape) {
                    assert!(
                        check(&value).is_ok(),
                        "{}.{}: {value}",
                        def.singular,
                        attr.name
                    );
                }
                for value in outside(&shape) {
                    assert!(
                        check(&value).is_err(),
                        "{}.{}: {value}",
                        def.singular,
                        attr.name
                    );
                }
            }
            for action in def.actions {
                assert!(matches!(action.body, Shape::Object(_)), "{}", action.name);
            }
        }
    }
}
