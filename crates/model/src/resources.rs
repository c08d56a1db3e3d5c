//! The attribute maps of the Neutron resources Wyvern serves.

use serde_json::Value;

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
    /// The resource-specific attributes; the standard ones ([`STANDARD`]) come on top.
    pub attrs: &'static [Attr],
    /// Whether objects carry `tags`.
    pub taggable: bool,
    /// Whether objects carry `description`.
    pub described: bool,
}

const fn attr(
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
const fn rw(name: &'static str, default: Default, validate: Validator) -> Attr {
    attr(name, true, true, default, validate)
}
/// Settable on create only.
const fn create_only(name: &'static str, default: Default, validate: Validator) -> Attr {
    attr(name, true, false, default, validate)
}
/// Read-only, computed by the server.
const fn computed(name: &'static str) -> Attr {
    attr(name, false, false, Default::Computed, v::any)
}

use self::Default::{Computed, Json, Required};

/// Attributes every resource has.
pub const STANDARD: &[Attr] = &[
    computed("id"),
    create_only("tenant_id", Computed, v::project_id),
    create_only("project_id", Computed, v::project_id),
    computed("created_at"),
    computed("updated_at"),
    computed("revision_number"),
];
/// The `description` attribute, on resources that have one.
pub const DESCRIPTION: Attr = rw("description", Json("\"\""), v::description);
/// The `tags` attribute: shown on every taggable object, changed only through the tags sub-resource (as
/// in a Neutron without `tag-ports-during-bulk-creation`, a create body may not carry tags).
pub const TAGS: Attr = attr("tags", false, false, Json("[]"), v::string_list);

pub static NETWORK: ResourceDef = ResourceDef {
    singular: "network",
    collection: "networks",
    path: "networks",
    error_name: "Network",
    taggable: true,
    described: true,
    attrs: &[
        rw("name", Json("\"\""), v::name),
        rw("admin_state_up", Json("true"), v::boolean),
        computed("status"),
        computed("subnets"),
        rw("shared", Json("false"), v::boolean),
        rw("mtu", Computed, v::mtu_or_null),
        rw("router:external", Json("false"), v::boolean),
        rw("port_security_enabled", Json("true"), v::boolean),
        create_only("provider:network_type", Computed, v::network_type),
        create_only("provider:physical_network", Computed, v::physical_network),
        create_only("provider:segmentation_id", Computed, v::int_or_null),
        create_only("availability_zone_hints", Json("[]"), v::string_list),
        computed("availability_zones"),
        computed("ipv4_address_scope"),
        computed("ipv6_address_scope"),
        computed("is_default"),
    ],
};

pub static SUBNET: ResourceDef = ResourceDef {
    singular: "subnet",
    collection: "subnets",
    path: "subnets",
    error_name: "Subnet",
    taggable: true,
    described: true,
    attrs: &[
        rw("name", Json("\"\""), v::name),
        create_only("network_id", Required, v::uuid),
        create_only("ip_version", Required, v::ip_version),
        create_only("cidr", Computed, v::cidr),
        create_only("subnetpool_id", Computed, v::uuid_or_null),
        rw("gateway_ip", Computed, v::ip_or_null),
        rw("allocation_pools", Computed, v::list),
        rw("dns_nameservers", Json("[]"), v::list),
        rw("host_routes", Json("[]"), v::list),
        rw("enable_dhcp", Json("true"), v::boolean),
        create_only("ipv6_ra_mode", Json("null"), v::ipv6_mode),
        create_only("ipv6_address_mode", Json("null"), v::ipv6_mode),
        rw("service_types", Json("[]"), v::string_list),
        computed("router:external"),
    ],
};

pub static PORT: ResourceDef = ResourceDef {
    singular: "port",
    collection: "ports",
    path: "ports",
    error_name: "Port",
    taggable: true,
    described: true,
    attrs: &[
        rw("name", Json("\"\""), v::name),
        create_only("network_id", Required, v::uuid),
        rw("admin_state_up", Json("true"), v::boolean),
        rw("mac_address", Computed, v::mac),
        rw("fixed_ips", Computed, v::list),
        rw("device_id", Json("\"\""), v::name),
        rw("device_owner", Json("\"\""), v::name),
        computed("status"),
        rw("allowed_address_pairs", Json("[]"), v::list),
        rw("extra_dhcp_opts", Json("[]"), v::list),
        rw("security_groups", Computed, v::uuid_list),
        rw("port_security_enabled", Computed, v::boolean),
        rw("binding:host_id", Json("\"\""), v::name),
        rw("binding:profile", Json("{}"), v::dict_or_null),
        rw("binding:vnic_type", Json("\"normal\""), v::vnic_type),
        computed("binding:vif_type"),
        computed("binding:vif_details"),
    ],
};

pub static SECURITY_GROUP: ResourceDef = ResourceDef {
    singular: "security_group",
    collection: "security_groups",
    path: "security-groups",
    error_name: "SecurityGroup",
    taggable: true,
    described: true,
    attrs: &[
        rw("name", Json("\"\""), v::group_name),
        rw("stateful", Json("true"), v::boolean),
        computed("shared"),
        computed("security_group_rules"),
    ],
};

pub static SECURITY_GROUP_RULE: ResourceDef = ResourceDef {
    singular: "security_group_rule",
    collection: "security_group_rules",
    path: "security-group-rules",
    error_name: "SecurityGroupRule",
    taggable: false,
    described: true,
    attrs: &[
        create_only("security_group_id", Required, v::uuid),
        create_only("direction", Required, v::direction),
        create_only("ethertype", Json("\"IPv4\""), v::ethertype),
        create_only("protocol", Json("null"), v::protocol),
        create_only("port_range_min", Json("null"), v::port_number_or_null),
        create_only("port_range_max", Json("null"), v::port_number_or_null),
        create_only("remote_ip_prefix", Json("null"), v::prefix_or_null),
        create_only("remote_group_id", Json("null"), v::uuid_or_null),
        // Neutron does not validate it: an unknown value is an address group not found (404).
        create_only("remote_address_group_id", Json("null"), v::string_or_null),
        computed("normalized_cidr"),
        computed("belongs_to_default_sg"),
    ],
};

/// An address group: a named set of CIDRs that security group rules refer to
/// (`remote_address_group_id`). Its addresses change through the `add_addresses` and
/// `remove_addresses` actions only.
pub static ADDRESS_GROUP: ResourceDef = ResourceDef {
    singular: "address_group",
    collection: "address_groups",
    path: "address-groups",
    error_name: "AddressGroup",
    taggable: false,
    described: true,
    attrs: &[
        rw("name", Json("\"\""), v::name),
        create_only("addresses", Json("[]"), v::subnet_list),
    ],
};

pub static ROUTER: ResourceDef = ResourceDef {
    singular: "router",
    collection: "routers",
    path: "routers",
    error_name: "Router",
    taggable: true,
    described: true,
    attrs: &[
        rw("name", Json("\"\""), v::name),
        rw("admin_state_up", Json("true"), v::boolean),
        computed("status"),
        rw("external_gateway_info", Json("null"), v::dict_or_null),
        rw("routes", Json("[]"), v::list),
        create_only("availability_zone_hints", Json("[]"), v::string_list),
        computed("availability_zones"),
        create_only("flavor_id", Json("null"), v::uuid_or_null),
        computed("distributed"),
        computed("ha"),
        // Wyvern's `snat-mode` extension: how ports without a floating IP reach the outside.
        rw("snat_mode", Json("\"distributed\""), v::snat_mode),
    ],
};

pub static FLOATING_IP: ResourceDef = ResourceDef {
    singular: "floatingip",
    collection: "floatingips",
    path: "floatingips",
    error_name: "FloatingIP",
    taggable: true,
    described: true,
    attrs: &[
        create_only("floating_network_id", Required, v::uuid),
        create_only("floating_ip_address", Computed, v::ip),
        create_only("subnet_id", Json("null"), v::uuid_or_null),
        rw("port_id", Json("null"), v::uuid_or_null),
        rw("fixed_ip_address", Json("null"), v::ip_or_null),
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
];

/// The resource served under a URL segment (`security-groups`).
pub fn resource_by_path(path: &str) -> Option<&'static ResourceDef> {
    ALL.iter().copied().find(|r| r.path == path)
}

impl ResourceDef {
    /// All attributes of this resource, standard ones included.
    pub fn all_attrs(&self) -> impl Iterator<Item = &Attr> {
        STANDARD
            .iter()
            .chain(self.described.then_some(&DESCRIPTION))
            .chain(self.taggable.then_some(&TAGS))
            .chain(self.attrs.iter())
    }

    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.all_attrs().find(|a| a.name == name)
    }
}
