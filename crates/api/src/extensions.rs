//! `/v2.0/extensions`: the API extensions Wyvern implements, so that clients can discover them
//! (Neutron's, and Wyvern's own: `snat-mode`); and `/v2.0/availability_zones`, which the
//! `availability_zone` extension adds.

use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use axum::http::StatusCode;

/// (alias, name, description) of every Neutron extension we implement.
const NEUTRON_EXTENSIONS: &[(&str, &str, &str)] = &[
    ("address-group", "Address group", "Support address group"),
    (
        "allowed-address-pairs",
        "Allowed Address Pairs",
        "Provides allowed address pairs",
    ),
    (
        "availability_zone",
        "Availability Zone",
        "The availability zone extension.",
    ),
    (
        "binding",
        "Port Binding",
        "Expose port bindings of a virtual port to external application",
    ),
    (
        "empty-string-filtering",
        "Empty String Filtering Extension",
        "Allow filtering by attributes with empty string value",
    ),
    (
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
    ),
    (
        "extra_dhcp_opt",
        "Neutron Extra DHCP options",
        "Extra options configuration for DHCP. For example PXE boot options to DHCP clients can be specified (e.g. tftp-server, server-ip-address, bootfile-name)",
    ),
    (
        "extraroute",
        "Neutron Extra Route",
        "Extra routes configuration for L3 router",
    ),
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
    ),
    (
        "filter-validation",
        "Filter parameters validation",
        "Provides validation on filter parameters.",
    ),
    (
        "fip-port-details",
        "Floating IP Port Details Extension",
        "Add port_details attribute to Floating IP resource",
    ),
    (
        "net-mtu",
        "Network MTU",
        "Provides MTU attribute for a network resource.",
    ),
    (
        "net-mtu-writable",
        "Network MTU (writable)",
        "Provides a writable MTU attribute for a network resource.",
    ),
    (
        "network_availability_zone",
        "Network Availability Zone",
        "Availability zone support for network.",
    ),
    (
        "pagination",
        "Pagination support",
        "Extension that indicates that pagination is enabled.",
    ),
    ("port-security", "Port Security", "Provides port security"),
    (
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
    ),
    (
        "provider",
        "Provider Network",
        "Expose mapping of virtual networks to physical networks",
    ),
    (
        "quota-check-limit",
        "Quota engine limit check",
        "Support for checking the resource usage before applying a new quota limit",
    ),
    (
        "quota-check-limit-default",
        "Quota engine limit check by default",
        "By default, the Neutron quota engine checks the resource usage before applying a new quota limit",
    ),
    (
        "quota_details",
        "Quota details management support",
        "Expose functions for quotas usage statistics per project",
    ),
    (
        "quotas",
        "Quota management support",
        "Expose functions for quotas management per project",
    ),
    (
        "revision-if-match",
        "If-Match constraints based on revision_number",
        "Extension indicating that If-Match based on revision_number is supported.",
    ),
    (
        "router",
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.",
    ),
    (
        "router_availability_zone",
        "Router Availability Zone",
        "Availability zone support for router.",
    ),
    (
        "security-group",
        "security-group",
        "The security groups extension.",
    ),
    (
        "security-groups-normalized-cidr",
        "Normalized CIDR field for security group rules",
        "Add new field with normalized remote_ip_prefix cidr in SG rule",
    ),
    (
        "security-groups-remote-address-group",
        "Remote address group id field for security group rules",
        "Add new field of remote address group id in SG rules",
    ),
    (
        "security-groups-rules-belongs-to-default-sg",
        "Security group rules belongs to the default security group",
        "Flag to determine if the security group rule belongs to the default security group",
    ),
    (
        "sorting",
        "Sorting support",
        "Extension that indicates that sorting is enabled.",
    ),
    (
        "subnet-external-network",
        "Subnet External Network",
        "Informs if the subnet is associated to an external network",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
    ),
    (
        "standard-attr-tag",
        "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip",
        "Enables to set tag on resources with standard attribute.",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.",
    ),
    (
        "stateful-security-group",
        "Stateful security group",
        "Indicates if the security group is stateful or not",
    ),
];

/// The `updated` date Wyvern shows for Neutron's extensions.
const NEUTRON_UPDATED: &str = "2013-01-01T10:00:00-00:00";

/// (alias, name, description, updated) of Neutron's tag extensions, with neutron-lib's dates.
const TAG_EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "tag-creation",
        "Tag creation extension",
        "Allow to create multiple tags for a resource",
        "2024-23-07T10:00:00-00:00",
    ),
    (
        "tag-ports-during-bulk-creation",
        "Tag Ports During Bulk Creation",
        "Allow to tag ports during bulk creation",
        "2019-12-29T19:00:00-00:00",
    ),
];

/// (alias, name, description, updated) of Wyvern's own extensions.
const WYVERN_EXTENSIONS: &[(&str, &str, &str, &str)] = &[(
    "snat-mode",
    "Router SNAT mode",
    "Adds the snat_mode attribute to routers: how ports without a floating IP reach the outside. \
     distributed (the default): each chassis translates its own ports' connections to its own \
     address on the external network; centralized: through the router's gateway address, on one \
     gateway chassis.",
    "2026-12-06T00:00:00-00:00",
)];

/// (alias, name, description, updated) of networking-sfc's extensions, as it announces them.
const SFC_EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "flow_classifier",
        "Flow Classifier",
        "Flow Classifier Extension.",
        "2015-10-05T10:00:00-00:00",
    ),
    (
        "sfc",
        "Service Function Chaining",
        "Service Function Chain extension.",
        "2015-10-05T10:00:00-00:00",
    ),
    (
        "networking-sfc-tap",
        "Networking SFC Passive Tap Service Function support",
        "Extension for Passive TAP Service Function support",
        "2017-10-20T10:00:00-00:00",
    ),
];

/// (alias, name, description, updated) of Neutron's trunk service plugin's extensions, with its dates.
const TRUNK_EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "trunk",
        "Trunk Extension",
        "Provides support for trunk ports",
        "2016-01-01T10:00:00-00:00",
    ),
    (
        "trunk-details",
        "Trunk port details",
        "Expose trunk port details",
        "2016-01-01T10:00:00-00:00",
    ),
];

/// Every extension, as `/v2.0/extensions` shows it.
fn extensions() -> impl Iterator<Item = Value> {
    let neutron = NEUTRON_EXTENSIONS
        .iter()
        .map(|&(alias, name, description)| (alias, name, description, NEUTRON_UPDATED));
    neutron
        .chain(TAG_EXTENSIONS.iter().copied())
        .chain(TRUNK_EXTENSIONS.iter().copied())
        .chain(SFC_EXTENSIONS.iter().copied())
        .chain(WYVERN_EXTENSIONS.iter().copied())
        .map(|(alias, name, description, updated)| {
            json!({"alias": alias, "name": name, "description": description,
                "updated": updated, "links": []})
        })
}

/// The alias of every extension.
pub fn aliases() -> impl Iterator<Item = &'static str> {
    let neutron = NEUTRON_EXTENSIONS.iter().map(|e| e.0);
    neutron
        .chain(TAG_EXTENSIONS.iter().map(|e| e.0))
        .chain(TRUNK_EXTENSIONS.iter().map(|e| e.0))
        .chain(SFC_EXTENSIONS.iter().map(|e| e.0))
        .chain(WYVERN_EXTENSIONS.iter().map(|e| e.0))
}

pub async fn list() -> Response {
    let all: Vec<Value> = extensions().collect();
    axum::Json(json!({ "extensions": all })).into_response()
}

pub async fn show(Path(alias): Path<String>) -> Response {
    match extensions().find(|e| e["alias"] == alias.as_str()) {
        Some(extension) => axum::Json(json!({ "extension": extension })).into_response(),
        // Neutron answers this one from its WSGI layer, not with a `NeutronError` body.
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "message": format!(
                    "The resource could not be found.<br /><br />\nExtension with alias {} does not exist\n\n",
                    model::validate::echo(&alias)
                ),
                "code": "404 Not Found",
                "title": "Not Found",
            })),
        )
            .into_response(),
    }
}

/// The one availability zone Wyvern has: networks and routers are all in `nova`.
const ZONE: &str = "nova";

/// `GET /v2.0/availability_zones`: the zone once per resource kind, as Neutron lists it; attribute
/// filters and `fields=` apply.
pub async fn availability_zones(RawQuery(q): RawQuery) -> Response {
    let q = crate::query::Query::parse(q.as_deref());
    let zones: Vec<Value> = ["network", "router"]
        .into_iter()
        .filter_map(|resource| {
            let zone = json!({"name": ZONE, "resource": resource, "state": "available"});
            let zone = zone.as_object()?.clone();
            crate::query::passes(&q, &zone).then(|| crate::query::render(zone, &q.fields()))
        })
        .collect();
    axum::Json(json!({ "availability_zones": zones })).into_response()
}
