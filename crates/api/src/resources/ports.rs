//! Ports: MAC and fixed IP allocation, security groups, port security, allowed address pairs and
//! binding, and Neutron's default policy on the attributes clients may set.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use model::resources::{FLOATING_IP, NETWORK, PORT, ROUTER, SECURITY_GROUP, SUBNET};
use model::validate::{echo, parse_cidr};
use serde_json::{Value, json};

use super::ipam::{claim_any, claim_specific, eui64, subnet_cidr};
use super::security_groups::default_group_id;
use super::subnets::{ids_on, is_auto_address};
use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::index::FLOATING_IPS_BY_PORT;
use crate::repo::{Obj, Plan, Stored, ipam_key, mac_key, str_field};

/// Device owners of ports that routers and floating IPs own. Only the router and floating IP APIs
/// make such ports: the port API may not create them, make a port one, move one to another device or
/// delete one.
const SERVICE_OWNERS: &[&str] = &[
    "network:router_interface",
    "network:router_gateway",
    "network:floatingip",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
    crate::snat::SNAT_OWNER,
];

/// Who asks for a port: a client of the port API, whose request Neutron's policy governs, or the
/// server itself, for a router or a floating IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    Client,
    Service,
}

/// The attributes of a prepared create body that the client set explicitly: as in Neutron, policy
/// ignores attributes left at (or set to) their default.
fn explicit(port: &Obj) -> Obj {
    port.iter()
        .filter(|(name, value)| {
            !PORT
                .attr(name)
                .is_some_and(|a| a.default.value().as_ref() == Some(*value))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Neutron's default policy on the port attributes a client sets (`action` "create" or "update";
/// `given` the attributes the request sets, `stored` the port before an update), with Wyvern's rule
/// that router and floating IP ports are the router and floating IP APIs' alone ([`SERVICE_OWNERS`]).
async fn authorize(
    api: &Api,
    ctx: &Ctx,
    action: &str,
    network: &Obj,
    given: &Obj,
    stored: Option<&Obj>,
) -> ApiResult<()> {
    let refuse = |attr: &str| Err(ApiError::policy(&format!("{action}_port:{attr}")));
    let network_owner = ctx.owns(network);
    let changes = |attr: &str| {
        given
            .get(attr)
            .is_some_and(|v| stored.and_then(|s| s.get(attr)) != Some(v))
    };
    if let Some(owner) = given.get("device_owner").and_then(Value::as_str) {
        if owner.starts_with("network:") && !network_owner {
            return refuse("device_owner");
        }
        if SERVICE_OWNERS.contains(&owner) {
            // Neutron's L3 plugin: a device id naming another project's router.
            let device = given
                .get("device_id")
                .or_else(|| stored.and_then(|s| s.get("device_id")))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !ctx.is_admin
                && !device.is_empty()
                && let Some(router) = api.db.load(&ROUTER, device).await?
                && !ctx.owns(&router.obj)
            {
                return Err(ApiError::conflict(
                    "DeviceIDNotOwnedByTenant",
                    format!(
                        "The following device_id {device} is not owned by your project or matches another project router."
                    ),
                ));
            }
            if changes("device_owner") {
                return refuse("device_owner");
            }
        }
    }
    if stored.is_some_and(|s| SERVICE_OWNERS.contains(&str_field(s, "device_owner")))
        && (changes("device_owner") || changes("device_id"))
    {
        return refuse("device_owner");
    }
    // A chassis' SNAT address stays bound to its chassis.
    if stored.is_some_and(|s| str_field(s, "device_owner") == crate::snat::SNAT_OWNER)
        && changes("binding:host_id")
    {
        return refuse("binding:host_id");
    }
    // A MAC address is chosen at creation by the network's owner, and changed only by admins.
    let may_choose_mac = if stored.is_none() {
        network_owner
    } else {
        ctx.is_admin
    };
    if given.contains_key("mac_address") && !may_choose_mac {
        return refuse("mac_address");
    }
    if let Some(ips) = given.get("fixed_ips").and_then(Value::as_array)
        && !network_owner
    {
        if ips
            .iter()
            .any(|i| i.get("ip_address").is_some_and(|a| !a.is_null()))
        {
            return refuse("fixed_ips:ip_address");
        }
        if network.get("shared") != Some(&Value::Bool(true)) {
            return refuse("fixed_ips:subnet_id");
        }
    }
    for attr in ["port_security_enabled", "allowed_address_pairs"] {
        if given.contains_key(attr) && !network_owner {
            return refuse(attr);
        }
    }
    for attr in ["binding:host_id", "binding:profile"] {
        if given.contains_key(attr) && !ctx.is_admin {
            return refuse(attr);
        }
    }
    Ok(())
}

fn random_mac() -> String {
    format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        fastrand::u8(..),
        fastrand::u8(..),
        fastrand::u8(..)
    )
}

async fn claim_mac(
    api: &Api,
    plan: &mut Plan,
    network: &str,
    mac: Option<&str>,
    port: &str,
) -> ApiResult<String> {
    if let Some(mac) = mac {
        let key = mac_key(network, mac);
        if plan.is_claimed(&key) || api.db.exists(&key).await? {
            return Err(ApiError::conflict(
                "MacAddressInUse",
                format!(
                    "Unable to complete operation for network {network}. The mac address {mac} is in use."
                ),
            ));
        }
        plan.claim(key, port);
        return Ok(mac.to_string());
    }
    for _ in 0..16 {
        let mac = random_mac();
        let key = mac_key(network, &mac);
        if !plan.is_claimed(&key) && !api.db.exists(&key).await? {
            plan.claim(key, port);
            return Ok(mac);
        }
    }
    Err(ApiError::conflict(
        "MacAddressGenerationFailure",
        format!("Unable to generate unique mac on network {network}."),
    ))
}

/// One requested fixed IP, as given by the client.
struct Wanted {
    subnet_id: Option<String>,
    ip: Option<String>,
}

fn parse_fixed_ips(value: &Value) -> ApiResult<Vec<Wanted>> {
    let bad =
        |why: &str| ApiError::bad_request(format!("Invalid input for fixed_ips. Reason: {why}."));
    let items = value.as_array().ok_or_else(|| bad("not a list"))?;
    items
        .iter()
        .map(|i| {
            let o = i
                .as_object()
                .ok_or_else(|| bad("each entry must be a dictionary"))?;
            if let Some(k) = o.keys().find(|k| *k != "subnet_id" && *k != "ip_address") {
                return Err(bad(&format!("unrecognized key '{}'", echo(k))));
            }
            let subnet_id = match o.get("subnet_id") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    model::validate::uuid(v)
                        .map_err(|r| bad(&r.to_string()))?
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            };
            let ip = match o.get("ip_address") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    model::validate::ip(v)
                        .map_err(|r| bad(&r.to_string()))?
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            };
            if subnet_id.is_none() && ip.is_none() {
                return Err(bad("an entry needs subnet_id or ip_address"));
            }
            Ok(Wanted { subnet_id, ip })
        })
        .collect()
}

/// Device owners of router interface ports, which get no automatic (SLAAC) addresses.
const ROUTER_INTERFACE_OWNERS: &[&str] = &[
    "network:router_interface",
    "network:router_interface_distributed",
    "network:router_centralized_snat",
];

/// Whether `addr` may be a fixed IP on `net` (not an IPv4 network or broadcast address).
fn usable_on(net: &IpNet, addr: &IpAddr) -> bool {
    let reserved = matches!(net, IpNet::V4(n) if n.prefix_len() < 31)
        && (*addr == net.network() || *addr == net.broadcast());
    net.contains(addr) && !reserved
}

/// The subnet a requested fixed IP goes to, with Neutron's errors for a wrong one.
async fn subnet_for<'a>(
    api: &Api,
    ctx: &Ctx,
    subnets: &'a [Stored],
    network_id: &str,
    w: &Wanted,
) -> ApiResult<&'a Stored> {
    let addr = match &w.ip {
        Some(ip) => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| ApiError::invalid_input(format!("{ip} is not a valid IP address")))?,
        ),
        None => None,
    };
    if let Some(sid) = &w.subnet_id {
        let Some(subnet) = subnets.iter().find(|s| s.id() == sid) else {
            // A subnet that does not exist (or that the caller cannot see) is 404; one on another
            // network is bad input.
            api.visible(ctx, &SUBNET, sid).await?;
            return Err(ApiError::invalid_input(format!(
                "Failed to create port on network {network_id}, because fixed_ips included invalid subnet {sid}"
            )));
        };
        if let Some(addr) = addr
            && !subnet_cidr(&subnet.obj).is_some_and(|n| usable_on(&n, &addr))
        {
            return Err(ApiError::bad(
                "InvalidIpForSubnet",
                format!("IP address {addr} is not a valid IP for the specified subnet."),
            ));
        }
        return Ok(subnet);
    }
    let addr = addr
        .ok_or_else(|| ApiError::invalid_input("IP allocation requires subnet_id or ip_address"))?;
    subnets
        .iter()
        .find(|s| subnet_cidr(&s.obj).is_some_and(|n| usable_on(&n, &addr)))
        .ok_or_else(|| {
            ApiError::bad(
                "InvalidIpForNetwork",
                format!(
                    "IP address {addr} is not a valid IP for any of the subnets on the specified network."
                ),
            )
        })
}

/// Resolves and claims the fixed IPs of `port` (its id, network, MAC and device owner are set) on the
/// subnets of `network` (only those: the work does not grow with other networks' subnets). `keep`
/// are addresses the port already holds (on update), which are kept without a new claim.
///
/// As in Neutron, every port except a router interface also gets an address on each SLAAC or
/// DHCPv6-stateless subnet of its network, whether or not the request lists fixed IPs; on update an
/// automatic address the request does not mention is kept.
async fn allocate_fixed_ips(
    api: &Api,
    ctx: &Ctx,
    plan: &mut Plan,
    network: &Obj,
    port: &Obj,
    wanted: Option<Vec<Wanted>>,
    keep: &[(String, String)],
) -> ApiResult<Vec<Value>> {
    let network_id = str_field(port, "network_id");
    let port_id = str_field(port, "id");
    let mac = str_field(port, "mac_address");
    let device_owner = str_field(port, "device_owner");
    let mut subnets = api.db.load_many(&SUBNET, &ids_on(network)).await?;
    subnets.sort_by(|a, b| {
        str_field(&a.obj, "created_at")
            .cmp(str_field(&b.obj, "created_at"))
            .then(a.id().cmp(b.id()))
    });
    let router_interface = ROUTER_INTERFACE_OWNERS.contains(&device_owner);
    let mut out = Vec::new();
    let mut used_subnets: Vec<&Stored> = Vec::new();
    match wanted {
        Some(wanted) => {
            if !wanted.is_empty() && subnets.is_empty() {
                return Err(ApiError::invalid_input(
                    "IP allocation requires subnets for network",
                ));
            }
            for w in &wanted {
                let subnet = subnet_for(api, ctx, &subnets, network_id, w).await?;
                let sid = subnet.id().to_string();
                let auto = is_auto_address(&subnet.obj) && !router_interface;
                let ip = match &w.ip {
                    Some(ip) => {
                        if auto && eui64_of(&subnet.obj, mac).as_deref() != Some(ip.as_str()) {
                            return Err(ApiError::bad(
                                "AllocationOnAutoAddressSubnet",
                                format!(
                                    "IPv6 address {ip} cannot be directly assigned to a port on subnet {sid} as the subnet is configured for automatic addresses"
                                ),
                            ));
                        }
                        if !keep.iter().any(|(s, i)| *s == sid && i == ip) {
                            claim_specific(api, plan, &sid, ip, port_id).await?;
                        }
                        ip.clone()
                    }
                    // The automatic address comes below, with those of unlisted subnets.
                    None if auto => continue,
                    None => match keep.iter().find(|(s, _)| *s == sid) {
                        Some((_, ip)) => ip.clone(),
                        None => claim_any(api, plan, &subnet.obj, port_id)
                            .await?
                            .ok_or_else(|| exhausted(network_id))?,
                    },
                };
                used_subnets.push(subnet);
                out.push(json!({"subnet_id": sid, "ip_address": ip}));
            }
        }
        None => {
            // One address from the first IPv4 subnet with room and one from the first stateful
            // IPv6 subnet with room.
            let mut exhausted_any = false;
            for v6 in [false, true] {
                let candidates = subnets.iter().filter(|s| {
                    (s.obj.get("ip_version").and_then(Value::as_u64) == Some(6)) == v6
                        && !is_auto_address(&s.obj)
                });
                for subnet in candidates {
                    match claim_any(api, plan, &subnet.obj, port_id).await? {
                        Some(ip) => {
                            used_subnets.push(subnet);
                            out.push(json!({"subnet_id": subnet.id(), "ip_address": ip}));
                            break;
                        }
                        None => exhausted_any = true,
                    }
                }
            }
            if exhausted_any && out.is_empty() {
                return Err(exhausted(network_id));
            }
        }
    }
    if !router_interface {
        for subnet in subnets.iter().filter(|s| is_auto_address(&s.obj)) {
            let sid = subnet.id();
            if used_subnets.iter().any(|u| u.id() == sid) {
                continue;
            }
            let ip = match keep.iter().find(|(s, _)| s == sid) {
                Some((_, ip)) => ip.clone(),
                None => auto_address(api, plan, &subnet.obj, mac, port_id).await?,
            };
            used_subnets.push(subnet);
            out.push(json!({"subnet_id": sid, "ip_address": ip}));
        }
    }
    for s in used_subnets {
        plan.pin_obj(&SUBNET, s);
    }
    Ok(out)
}

fn exhausted(network_id: &str) -> ApiError {
    ApiError::conflict(
        "IpAddressGenerationFailure",
        format!("No more IP addresses available on network {network_id}."),
    )
}

/// The EUI-64 address of `mac` on an automatic-address subnet.
fn eui64_of(subnet: &Obj, mac: &str) -> Option<String> {
    subnet_cidr(subnet).and_then(|n| eui64(&n, mac))
}

/// Claims the EUI-64 address of `mac` on an automatic-address subnet.
async fn auto_address(
    api: &Api,
    plan: &mut Plan,
    subnet: &Obj,
    mac: &str,
    port: &str,
) -> ApiResult<String> {
    let sid = str_field(subnet, "id");
    let ip = eui64_of(subnet, mac).ok_or_else(|| {
        ApiError::invalid_input(format!("subnet {sid} cannot assign SLAAC addresses"))
    })?;
    claim_specific(api, plan, sid, &ip, port).await?;
    Ok(ip)
}

/// Most allowed address pairs a port may have (Neutron's `max_allowed_address_pair`).
const MAX_ADDRESS_PAIRS: usize = 10;

fn normalize_pairs(pairs: &Value, mac: &str) -> ApiResult<Value> {
    let bad = |why: String| {
        ApiError::bad_request(format!(
            "Invalid input for allowed_address_pairs. Reason: {why}."
        ))
    };
    super::check_count(Some(pairs), MAX_ADDRESS_PAIRS, || {
        ApiError::bad(
            "AllowedAddressPairExhausted",
            format!("The number of allowed address pair exceeds the maximum {MAX_ADDRESS_PAIRS}."),
        )
    })?;
    let list = pairs.as_array().ok_or_else(|| bad("not a list".into()))?;
    let mut out: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in list {
        let o = p
            .as_object()
            .ok_or_else(|| bad("each pair must be a dictionary".into()))?;
        if let Some(k) = o.keys().find(|k| *k != "ip_address" && *k != "mac_address") {
            return Err(bad(format!("Unrecognized attribute(s) '{}'", echo(k))));
        }
        let ip = o
            .get("ip_address")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("AllowedAddressPair must contain ip_address".into()))?;
        let net = parse_cidr(ip)
            .ok_or_else(|| bad(format!("'{}' is not a valid IP address", echo(ip))))?;
        let ip_text = if net.prefix_len() == net.max_prefix_len() && !ip.contains('/') {
            net.addr().to_string()
        } else {
            net.to_string()
        };
        let pair_mac = match o.get("mac_address") {
            None | Some(Value::Null) => mac.to_string(),
            Some(m) => model::validate::mac(m)
                .map_err(|r| bad(r.to_string()))?
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        if !seen.insert((ip_text.clone(), pair_mac.clone())) {
            return Err(bad("Duplicate address pair in the list".into()));
        }
        out.push(json!({"ip_address": ip_text, "mac_address": pair_mac}));
    }
    Ok(Value::Array(out))
}

fn normalize_dhcp_opts(opts: &Value) -> ApiResult<Value> {
    let bad = |why: &str| {
        ApiError::bad_request(format!("Invalid input for extra_dhcp_opts. Reason: {why}."))
    };
    let list = opts.as_array().ok_or_else(|| bad("not a list"))?;
    let mut out = Vec::new();
    for o in list {
        let m = o
            .as_object()
            .ok_or_else(|| bad("each option must be a dictionary"))?;
        if let Some(k) = m
            .keys()
            .find(|k| !matches!(k.as_str(), "opt_name" | "opt_value" | "ip_version"))
        {
            return Err(bad(&format!("unrecognized key '{}'", echo(k))));
        }
        let name = m
            .get("opt_name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("opt_name is required"))?;
        let version = match m.get("ip_version") {
            None | Some(Value::Null) => 4,
            Some(v) => model::validate::ip_version(v)
                .map_err(|r| bad(&r.to_string()))?
                .as_i64()
                .unwrap_or(4),
        };
        out.push(json!({"opt_name": name, "opt_value": m.get("opt_value").cloned().unwrap_or(Value::Null), "ip_version": version}));
    }
    Ok(Value::Array(out))
}

/// The ids in a port's (or a request's) `security_groups`.
fn group_ids(port: &Obj) -> Vec<&str> {
    port.get("security_groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Security groups, port security and address pairs must agree, in Neutron's order: without port
/// security, address pairs are refused (409 `AddressPairAndPortSecurityRequired`), groups in the
/// request too (400 `PortSecurityAndIPRequiredForSecurityGroups`), and groups the port keeps from
/// before (409 `PortSecurityPortHasSecurityGroup`). `requested` is the request body (on create,
/// the port itself). Then every group must exist and be the caller's or the port project's (else
/// 404), and all be stateful or all stateless (409 `SecurityGroupConflict`).
async fn check_security(
    api: &Api,
    ctx: &Ctx,
    port: &Obj,
    requested: &Obj,
    plan: &mut Plan,
) -> ApiResult<()> {
    let secure = port.get("port_security_enabled") != Some(&Value::Bool(false));
    let groups = group_ids(port);
    if !secure {
        let pairs = port
            .get("allowed_address_pairs")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty());
        if pairs {
            return Err(ApiError::conflict(
                "AddressPairAndPortSecurityRequired",
                "Port Security must be enabled in order to have allowed address pairs on a port.",
            ));
        }
        if !group_ids(requested).is_empty() {
            return Err(ApiError::bad(
                "PortSecurityAndIPRequiredForSecurityGroups",
                "Port security must be enabled and port must have an IP address in order to use security groups.",
            ));
        }
        if !groups.is_empty() {
            return Err(ApiError::conflict(
                "PortSecurityPortHasSecurityGroup",
                "Port has security group associated. Cannot disable port security or IP address until security group is removed.",
            ));
        }
    }
    let mut stateful = HashSet::new();
    for g in groups {
        let sg = api.db.load(&SECURITY_GROUP, g).await?;
        match sg {
            Some(sg)
                if ctx.owns(&sg.obj)
                    || str_field(&sg.obj, "project_id") == str_field(port, "project_id") =>
            {
                stateful.insert(sg.obj.get("stateful") != Some(&Value::Bool(false)));
                plan.pin_obj(&SECURITY_GROUP, &sg)
            }
            _ => {
                return Err(ApiError::not_found(
                    "SecurityGroupNotFound",
                    format!("Security group {g} does not exist"),
                ));
            }
        }
    }
    if stateful.len() > 1 {
        return Err(ApiError::conflict(
            "SecurityGroupConflict",
            "Error Cannot apply both stateful and stateless security groups on the same port at the same time while attempting the operation.",
        ));
    }
    Ok(())
}

/// Leaves out the binding details Neutron shows only to admins (`binding:vnic_type` stays).
pub fn hide_binding(port: &mut Obj) {
    for attr in [
        "binding:host_id",
        "binding:profile",
        "binding:vif_type",
        "binding:vif_details",
    ] {
        port.remove(attr);
    }
}

/// A port's `binding:vif_type` and `binding:vif_details` as its `binding:host_id` makes them.
pub(crate) fn set_binding(port: &mut Obj) {
    if str_field(port, "binding:host_id").is_empty() {
        port.insert("binding:vif_type".into(), "unbound".into());
        port.insert("binding:vif_details".into(), json!({}));
    } else {
        port.insert("binding:vif_type".into(), "ovs".into());
        port.insert(
            "binding:vif_details".into(),
            json!({"port_filter": true, "connectivity": "l2", "bridge_name": "br-int", "datapath_type": "netdev"}),
        );
    }
    if port.get("binding:profile").is_some_and(Value::is_null) {
        port.insert("binding:profile".into(), json!({}));
    }
}

pub async fn plan_create(
    api: &Api,
    ctx: &Ctx,
    requester: Requester,
    mut port: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let id = str_field(&port, "id").to_string();
    let network_id = str_field(&port, "network_id").to_string();
    let network = api.visible(ctx, &NETWORK, &network_id).await?;
    if requester == Requester::Client {
        authorize(api, ctx, "create", &network.obj, &explicit(&port), None).await?;
    }
    plan.pin_obj(&NETWORK, &network);
    let mac = claim_mac(
        api,
        plan,
        &network_id,
        port.get("mac_address").and_then(Value::as_str),
        &id,
    )
    .await?;
    port.insert("mac_address".into(), mac.clone().into());
    let wanted = port.get("fixed_ips").map(parse_fixed_ips).transpose()?;
    let ips = allocate_fixed_ips(api, ctx, plan, &network.obj, &port, wanted, &[]).await?;
    port.insert("fixed_ips".into(), Value::Array(ips));
    if !port.contains_key("port_security_enabled") {
        let secure = network
            .obj
            .get("port_security_enabled")
            .cloned()
            .unwrap_or(Value::Bool(true));
        port.insert("port_security_enabled".into(), secure);
    }
    let secure = port.get("port_security_enabled") == Some(&Value::Bool(true));
    if !port.contains_key("security_groups") {
        let groups = if secure && !str_field(&port, "device_owner").starts_with("network:") {
            default_group_id(api, str_field(&port, "project_id"))
                .await?
                .into_iter()
                .collect()
        } else {
            vec![]
        };
        port.insert("security_groups".into(), json!(groups));
    }
    let pairs = normalize_pairs(
        port.get("allowed_address_pairs").unwrap_or(&json!([])),
        &mac,
    )?;
    port.insert("allowed_address_pairs".into(), pairs);
    let opts = normalize_dhcp_opts(port.get("extra_dhcp_opts").unwrap_or(&json!([])))?;
    port.insert("extra_dhcp_opts".into(), opts);
    check_security(api, ctx, &port, &port, plan).await?;
    port.insert("status".into(), "DOWN".into());
    set_binding(&mut port);
    plan.create(&PORT, &port);
    Ok(port)
}

fn held_ips(port: &Obj) -> Vec<(String, String)> {
    port.get("fixed_ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .map(|i| {
                    (
                        i.get("subnet_id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        i.get("ip_address")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn plan_update(
    api: &Api,
    ctx: &Ctx,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let id = stored.id().to_string();
    let network_id = str_field(&stored.obj, "network_id").to_string();
    let old_mac = str_field(&stored.obj, "mac_address").to_string();
    let network = api
        .db
        .load(&NETWORK, &network_id)
        .await?
        .map(|n| n.obj)
        .unwrap_or_default();
    authorize(api, ctx, "update", &network, &changes, Some(&stored.obj)).await?;
    let mut port = stored.obj.clone();
    port.extend(changes.clone());
    if let Some(mac) = changes.get("mac_address").and_then(Value::as_str)
        && mac != old_mac
    {
        claim_mac(api, plan, &network_id, Some(mac), &id).await?;
        plan.release(mac_key(&network_id, &old_mac));
    }
    let mac = str_field(&port, "mac_address").to_string();
    if let Some(fixed) = changes.get("fixed_ips") {
        let held = held_ips(&stored.obj);
        let wanted = Some(parse_fixed_ips(fixed)?);
        let ips = allocate_fixed_ips(api, ctx, plan, &network, &port, wanted, &held).await?;
        port.insert("fixed_ips".into(), Value::Array(ips));
        let now_held = held_ips(&port);
        for (s, ip) in held {
            if !now_held.contains(&(s.clone(), ip.clone())) {
                plan.release(ipam_key(&s, &ip));
            }
        }
    }
    if changes.contains_key("allowed_address_pairs") || changes.contains_key("mac_address") {
        let pairs = normalize_pairs(
            port.get("allowed_address_pairs").unwrap_or(&json!([])),
            &mac,
        )?;
        port.insert("allowed_address_pairs".into(), pairs);
    }
    if let Some(opts) = changes.get("extra_dhcp_opts") {
        port.insert("extra_dhcp_opts".into(), normalize_dhcp_opts(opts)?);
    }
    // Turning port security off while groups remain is refused (as Neutron does) unless the same
    // request clears the groups.
    check_security(api, ctx, &port, &changes, plan).await?;
    set_binding(&mut port);
    plan.update(&PORT, &stored, &mut port);
    crate::trunks::follow_parent(api, plan, &stored.obj, &port).await?;
    Ok(port)
}

/// A port's first IPv4 address.
pub fn ipv4_address(port: &Obj) -> Option<String> {
    held_ips(port)
        .into_iter()
        .map(|(_, ip)| ip)
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
}

/// Releases a port's addresses, MAC (and, for a chassis' SNAT address, its claim) and deletes it
/// (no checks).
pub fn release_port(plan: &mut Plan, port: &Stored) {
    for (s, ip) in held_ips(&port.obj) {
        plan.release(ipam_key(&s, &ip));
    }
    let network = str_field(&port.obj, "network_id");
    plan.release(mac_key(network, str_field(&port.obj, "mac_address")));
    if str_field(&port.obj, "device_owner") == crate::snat::SNAT_OWNER {
        plan.release(crate::snat::claim_key(
            network,
            str_field(&port.obj, "device_id"),
        ));
    }
    plan.delete(&PORT, port);
}

pub async fn plan_delete(api: &Api, stored: Stored, plan: &mut Plan) -> ApiResult<()> {
    crate::trunks::check_port_delete(&stored.obj)?;
    let owner = str_field(&stored.obj, "device_owner");
    if SERVICE_OWNERS.contains(&owner) {
        return Err(ApiError::conflict(
            "ServicePortInUse",
            format!(
                "Port {} cannot be deleted directly via the port API: has device owner {owner}.",
                stored.id()
            ),
        ));
    }
    for fip in api.db.find(&FLOATING_IPS_BY_PORT, stored.id()).await? {
        let mut obj = fip.obj.clone();
        super::floatingips::disassociate(&mut obj);
        plan.update(&FLOATING_IP, &fip, &mut obj);
    }
    release_port(plan, &stored);
    Ok(())
}
