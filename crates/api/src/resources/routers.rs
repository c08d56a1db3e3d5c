//! Routers: the external gateway (and its port), extra routes, interfaces on subnets, the SNAT mode,
//! and router numbers.
//!
//! Every router has a number (`_nat_id`, internal: hidden from the API, read by the datapath), 1 to
//! 16 383, unique in the deployment (claimed as `/seg/router/<n>`): on the gateway chassis of a
//! router with centralized SNAT it is the router's conntrack zone (`0xC000 | n`) and its transit
//! tunnel id (`0xFFC000 | n`, among the VNIs no network gets, see `networks`).

use ipnet::IpNet;
use model::resources::{NETWORK, PORT, ROUTER, SUBNET};
use model::validate::echo;
use serde_json::{Value, json};

use super::ipam::{NumberSpace, subnet_cidr};
use super::plan_internal_port;
use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::index::{FLOATING_IPS_BY_ROUTER, PORTS_BY_DEVICE};
use crate::quota;
use crate::repo::{Attempts, Obj, Plan, Stored, str_field};

/// The quota on the extra routes of each router.
const ROUTE_QUOTA: &str = "router_route";

/// The device owner of a router's interface ports.
pub const INTERFACE_OWNER: &str = "network:router_interface";
const GATEWAY_OWNER: &str = "network:router_gateway";

/// The highest router number (14 bits: zone `0xC000 | n`, transit id `0xFFC000 | n`).
pub const MAX_ROUTER_NUMBER: u64 = 0x3fff;

/// Routers' numbers.
const ROUTER_NUMBERS: NumberSpace = NumberSpace {
    cursor: "seg:router",
    claims: "/seg/router/",
    first: 1,
    last: MAX_ROUTER_NUMBER,
};

/// The stored field that holds a router's number.
const NUMBER: &str = "_nat_id";

/// A router's number, if it has one.
fn number(router: &Obj) -> Option<u64> {
    router
        .get(NUMBER)
        .and_then(Value::as_u64)
        .filter(|n| (ROUTER_NUMBERS.first..=ROUTER_NUMBERS.last).contains(n))
}

/// Gives a router that has no number (a new one, or one stored before routers had numbers) the next
/// free one, claimed in `plan`; 409 `NoRouterNumberAvailable` when all are taken.
async fn ensure_number(api: &Api, router: &mut Obj, plan: &mut Plan) -> ApiResult<()> {
    if number(router).is_some() {
        return Ok(());
    }
    let n = ROUTER_NUMBERS.next_free(api, plan).await?.ok_or_else(|| {
        ApiError::conflict(
            "NoRouterNumberAvailable",
            format!(
                "Unable to complete operation on router {}. No router number is available: all {} are in use.",
                str_field(router, "id"),
                ROUTER_NUMBERS.last
            ),
        )
    })?;
    plan.claim(ROUTER_NUMBERS.key(n), str_field(router, "id"));
    router.insert(NUMBER.into(), n.into());
    Ok(())
}

/// Gives a router stored before routers had a SNAT mode the default one.
fn default_snat_mode(router: &mut Obj) {
    if !router.contains_key("snat_mode")
        && let Some(default) = ROUTER.attr("snat_mode").and_then(|a| a.default.value())
    {
        router.insert("snat_mode".into(), default);
    }
}

/// Prepares a router for an answer to `ctx`: the default SNAT mode on a router stored before it had
/// one; `distributed` and `ha` only for admins.
pub fn present(ctx: &Ctx, router: &mut Obj) {
    default_snat_mode(router);
    if !ctx.is_admin {
        router.remove("distributed");
        router.remove("ha");
    }
}

/// Completes a router about to be written: a number, and the SNAT mode of a router stored before it
/// had one.
async fn complete(api: &Api, router: &mut Obj, plan: &mut Plan) -> ApiResult<()> {
    ensure_number(api, router, plan).await?;
    default_snat_mode(router);
    Ok(())
}

fn bad_router(message: impl std::fmt::Display) -> ApiError {
    ApiError::bad("BadRequest", format!("Bad router request: {message}."))
}

/// The router's interface ports.
async fn interfaces(api: &Api, router: &str) -> ApiResult<Vec<Stored>> {
    let mut ports = api.db.find(&PORTS_BY_DEVICE, router).await?;
    ports.retain(|p| str_field(&p.obj, "device_owner") == INTERFACE_OWNER);
    Ok(ports)
}

fn port_subnets(port: &Obj) -> Vec<String> {
    port.get("fixed_ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i.get("subnet_id")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Neutron's default policy: only admins choose the gateway's addresses (`action` "create" or
/// "update").
fn authorize_gateway(ctx: &Ctx, action: &str, info: &Value) -> ApiResult<()> {
    if info.get("external_fixed_ips").is_some() {
        super::admin_only(
            ctx,
            &format!("{action}_router:external_gateway_info:external_fixed_ips"),
        )?;
    }
    Ok(())
}

/// Plans the gateway described by `info` for `router`; returns the `external_gateway_info` to show.
async fn plan_gateway(
    api: &Api,
    ctx: &Ctx,
    router: &mut Obj,
    info: &Value,
    plan: &mut Plan,
) -> ApiResult<Value> {
    let info = info
        .as_object()
        .ok_or_else(|| bad_router("external_gateway_info must be a dictionary"))?;
    if let Some(k) = info.keys().find(|k| {
        !matches!(
            k.as_str(),
            "network_id" | "enable_snat" | "external_fixed_ips" | "qos_policy_id"
        )
    }) {
        return Err(ApiError::bad_request(format!(
            "Invalid input for external_gateway_info. Reason: Unexpected key '{}'.",
            echo(k)
        )));
    }
    let net_id = info
        .get("network_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad_request(
                "Invalid input for external_gateway_info. Reason: network_id is required.",
            )
        })?;
    let network = api.visible(ctx, &NETWORK, net_id).await?;
    if network.obj.get("router:external") != Some(&Value::Bool(true)) {
        return Err(bad_router(format!(
            "Network {net_id} is not a valid external network"
        )));
    }
    let enable_snat = match info.get("enable_snat") {
        None | Some(Value::Null) => true,
        Some(v) => model::validate::boolean(v)
            .map_err(|r| ApiError::bad_request(r.to_string()))?
            .as_bool()
            .unwrap_or(true),
    };
    let mut body = json!({
        "network_id": net_id, "device_owner": GATEWAY_OWNER, "device_id": str_field(router, "id"),
        "tenant_id": "", "port_security_enabled": false,
    });
    if let Some(ips) = info.get("external_fixed_ips") {
        body["fixed_ips"] = ips.clone();
    }
    let port = plan_internal_port(api, body.as_object().cloned().unwrap_or_default(), plan).await?;
    router.insert("_gw_port".into(), json!(str_field(&port, "id")));
    Ok(
        json!({"network_id": net_id, "enable_snat": enable_snat, "external_fixed_ips": port.get("fixed_ips").cloned().unwrap_or(json!([]))}),
    )
}

async fn remove_gateway(api: &Api, router: &mut Obj, plan: &mut Plan) -> ApiResult<()> {
    let id = str_field(router, "id").to_string();
    if api.db.any(&FLOATING_IPS_BY_ROUTER, &id).await? {
        let net = router
            .get("external_gateway_info")
            .and_then(|g| g.get("network_id"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(ApiError::conflict(
            "RouterExternalGatewayInUseByFloatingIp",
            format!(
                "Gateway cannot be updated for router {id}, since a gateway to external network {net} is required by one or more floating IPs."
            ),
        ));
    }
    if let Some(port_id) = router
        .remove("_gw_port")
        .and_then(|v| v.as_str().map(String::from))
        && let Some(port) = api.db.load(&PORT, &port_id).await?
    {
        super::release_port(plan, &port);
    }
    router.insert("external_gateway_info".into(), Value::Null);
    Ok(())
}

/// Checks a router's new extra routes: at most its project's `router_route` quota (counted before
/// any route is looked at), each valid, each next hop on a subnet the router has an interface on.
async fn check_routes(api: &Api, router: &Obj, routes: &Value) -> ApiResult<()> {
    let project = str_field(router, "project_id");
    let store = api.db.store.as_ref();
    let limit = quota::limit_of(store, &api.db.quotas, project, ROUTE_QUOTA).await?;
    if let Ok(max) = usize::try_from(limit) {
        super::check_count(Some(routes), max, || quota::over_quota([ROUTE_QUOTA]))?;
    }
    let list = routes
        .as_array()
        .ok_or_else(|| ApiError::bad_request("Invalid input for routes. Reason: not a list."))?;
    model::validate::host_routes(routes).map_err(|r| crate::input::invalid("routes", r))?;
    let mut connected: Vec<IpNet> = Vec::new();
    for port in interfaces(api, str_field(router, "id")).await? {
        for sid in port_subnets(&port.obj) {
            if let Some(s) = api.db.load(&SUBNET, &sid).await? {
                connected.extend(subnet_cidr(&s.obj));
            }
        }
    }
    for r in list {
        let dest = r
            .get("destination")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<IpNet>().ok());
        let hop = r
            .get("nexthop")
            .and_then(Value::as_str)
            .and_then(|h| h.parse::<std::net::IpAddr>().ok());
        let (Some(_), Some(hop)) = (dest, hop) else {
            return Err(ApiError::bad_request(format!(
                "Invalid input for routes. Reason: Invalid data format for hostroute: '{r}'."
            )));
        };
        if !connected.iter().any(|n| n.contains(&hop)) {
            return Err(ApiError::bad(
                "InvalidRoutes",
                format!("Invalid format for routes: {r}, the nexthop is not connected with router"),
            ));
        }
    }
    Ok(())
}

pub async fn plan_create(api: &Api, ctx: &Ctx, mut router: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    router.insert("status".into(), "ACTIVE".into());
    router.insert("availability_zones".into(), json!([]));
    router.insert("distributed".into(), Value::Bool(false));
    router.insert("ha".into(), Value::Bool(false));
    if router
        .get("routes")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty())
    {
        return Err(ApiError::bad(
            "InvalidRoutes",
            "Invalid format for routes: routes cannot be set on a router without interfaces",
        ));
    }
    if let Some(info) = router
        .get("external_gateway_info")
        .cloned()
        .filter(|i| !i.is_null())
    {
        authorize_gateway(ctx, "create", &info)?;
        let shown = plan_gateway(api, ctx, &mut router, &info, plan).await?;
        router.insert("external_gateway_info".into(), shown);
    }
    complete(api, &mut router, plan).await?;
    plan.create(&ROUTER, &router);
    Ok(router)
}

pub async fn plan_update(
    api: &Api,
    ctx: &Ctx,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    if let Some(info) = changes.get("external_gateway_info") {
        authorize_gateway(ctx, "update", info)?;
    }
    let mut router = stored.obj.clone();
    if let Some(routes) = changes.get("routes") {
        check_routes(api, &router, routes).await?;
    }
    for (k, v) in &changes {
        if k != "external_gateway_info" {
            router.insert(k.clone(), v.clone());
        }
    }
    if let Some(info) = changes.get("external_gateway_info") {
        let current_net = router
            .get("external_gateway_info")
            .and_then(|g| g.get("network_id"))
            .cloned();
        // Neutron revises the router once more when it removes a gateway (its port goes first).
        let had_gateway = current_net.is_some();
        let removed = |router: &mut Obj| {
            if had_gateway {
                let revision = router.get("revision_number").and_then(Value::as_u64);
                router.insert("revision_number".into(), (revision.unwrap_or(0) + 1).into());
            }
        };
        match info {
            Value::Null => {
                remove_gateway(api, &mut router, plan).await?;
                removed(&mut router);
            }
            Value::Object(o) if o.is_empty() => {
                remove_gateway(api, &mut router, plan).await?;
                removed(&mut router);
            }
            Value::Object(o)
                if o.get("network_id") == current_net.as_ref()
                    && !o.contains_key("external_fixed_ips") =>
            {
                if let Some(snat) = o.get("enable_snat") {
                    let snat = model::validate::boolean(snat)
                        .map_err(|r| ApiError::bad_request(r.to_string()))?;
                    if let Some(Value::Object(g)) = router.get_mut("external_gateway_info") {
                        g.insert("enable_snat".into(), snat);
                    }
                }
            }
            _ => {
                if current_net.is_some() {
                    remove_gateway(api, &mut router, plan).await?;
                }
                let shown = plan_gateway(api, ctx, &mut router, info, plan).await?;
                router.insert("external_gateway_info".into(), shown);
            }
        }
    }
    complete(api, &mut router, plan).await?;
    plan.update(&ROUTER, &stored, &mut router);
    Ok(router)
}

pub async fn plan_delete(api: &Api, stored: Stored, plan: &mut Plan) -> ApiResult<()> {
    if !interfaces(api, stored.id()).await?.is_empty() {
        return Err(ApiError::conflict(
            "RouterInUse",
            format!("Router {} still has ports", stored.id()),
        ));
    }
    let mut router = stored.obj.clone();
    remove_gateway(api, &mut router, plan).await?;
    if let Some(n) = number(&router) {
        plan.release(ROUTER_NUMBERS.key(n));
    }
    plan.delete(&ROUTER, &stored);
    Ok(())
}

fn interface_info(router: &Obj, port: &Obj) -> Value {
    let subnets = port_subnets(port);
    json!({
        "id": str_field(router, "id"),
        "project_id": str_field(router, "project_id"), "port_id": str_field(port, "id"),
        "network_id": str_field(port, "network_id"), "subnet_id": subnets.first(),
        "subnet_ids": subnets,
    })
}

fn interface_body(body: &Value) -> ApiResult<(Option<String>, Option<String>)> {
    let o = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("Body contains invalid data"))?;
    let get = |k: &str| o.get(k).and_then(Value::as_str).map(String::from);
    let (subnet, port) = (get("subnet_id"), get("port_id"));
    match (&subnet, &port) {
        (None, None) => Err(bad_router("Either subnet_id or port_id must be specified")),
        (Some(_), Some(_)) => Err(bad_router("Cannot specify both subnet-id and port-id")),
        _ => Ok((subnet, port)),
    }
}

/// `PUT /v2.0/routers/<id>/add_router_interface`.
pub async fn add_interface(api: &Api, ctx: &Ctx, id: &str, body: Value) -> ApiResult<Value> {
    let (subnet_id, port_id) = interface_body(&body)?;
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        let router = api.visible(ctx, &ROUTER, id).await?;
        super::check_owner(ctx, &ROUTER, &router.obj, "update")?;
        let mut plan = Plan::default();
        plan.pin_obj(&ROUTER, &router);
        // Subnets already on the router, to refuse duplicates and overlaps.
        let mut attached: Vec<(String, Option<IpNet>)> = Vec::new();
        for p in interfaces(api, id).await? {
            for sid in port_subnets(&p.obj) {
                let cidr = api
                    .db
                    .load(&SUBNET, &sid)
                    .await?
                    .and_then(|s| subnet_cidr(&s.obj));
                attached.push((sid, cidr));
            }
        }
        let check_subnet = |subnet: &Stored| -> ApiResult<()> {
            let cidr = subnet_cidr(&subnet.obj);
            for (sid, other) in &attached {
                if sid == subnet.id() {
                    return Err(bad_router(format!(
                        "Router already has a port on subnet {sid}"
                    )));
                }
                if let (Some(a), Some(b)) = (cidr, other)
                    && (a.contains(&b.network()) || b.contains(&a.network()))
                {
                    return Err(bad_router(format!(
                        "Cidr {a} of subnet {} overlaps with cidr {b} of subnet {sid}",
                        subnet.id()
                    )));
                }
            }
            Ok(())
        };
        let port = match (&subnet_id, &port_id) {
            (Some(sid), _) => {
                let subnet = api.visible(ctx, &SUBNET, sid).await?;
                let Some(gw) = subnet.obj.get("gateway_ip").and_then(Value::as_str) else {
                    return Err(bad_router(
                        "Subnet for router interface must have a gateway IP",
                    ));
                };
                check_subnet(&subnet)?;
                let body = json!({
                    "network_id": str_field(&subnet.obj, "network_id"),
                    "fixed_ips": [{"subnet_id": sid, "ip_address": gw}],
                    "device_owner": INTERFACE_OWNER, "device_id": id,
                    "tenant_id": str_field(&router.obj, "project_id"),
                    "port_security_enabled": false,
                });
                plan_internal_port(
                    api,
                    body.as_object().cloned().unwrap_or_default(),
                    &mut plan,
                )
                .await?
            }
            (None, Some(pid)) => {
                let port = api.visible(ctx, &PORT, pid).await?;
                let device = str_field(&port.obj, "device_id");
                if !device.is_empty() {
                    return Err(ApiError::conflict(
                        "PortInUse",
                        format!(
                            "Unable to complete operation on port {pid} for network {}. Port already has an attached device {device}.",
                            str_field(&port.obj, "network_id")
                        ),
                    ));
                }
                let subnets = port_subnets(&port.obj);
                if subnets.is_empty() {
                    return Err(bad_router("Router port must have at least one fixed IP"));
                }
                for sid in &subnets {
                    if let Some(s) = api.db.load(&SUBNET, sid).await? {
                        check_subnet(&s)?;
                    }
                }
                let mut attached = port.obj.clone();
                attached.insert("device_owner".into(), INTERFACE_OWNER.into());
                attached.insert("device_id".into(), id.into());
                plan.update(&PORT, &port, &mut attached);
                attached
            }
            (None, None) => unreachable!("interface_body requires one"),
        };
        let mut r = router.obj.clone();
        complete(api, &mut r, &mut plan).await?;
        plan.update(&ROUTER, &router, &mut r);
        if api.db.commit(plan).await? {
            return Ok(interface_info(&r, &port));
        }
    }
}

/// Refuses to remove an interface on `subnets` while one of the router's extra routes has its next
/// hop there.
async fn check_not_routed_through(router: &Obj, api: &Api, subnets: &[String]) -> ApiResult<()> {
    let routes = router.get("routes").and_then(Value::as_array);
    let hops: Vec<std::net::IpAddr> = routes
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("nexthop")?.as_str()?.parse().ok())
        .collect();
    if hops.is_empty() {
        return Ok(());
    }
    for sid in subnets {
        let Some(subnet) = api.db.load(&SUBNET, sid).await? else {
            continue;
        };
        if subnet_cidr(&subnet.obj).is_some_and(|n| hops.iter().any(|h| n.contains(h))) {
            return Err(ApiError::conflict(
                "RouterInterfaceInUseByRoute",
                format!(
                    "Router interface for subnet {sid} on router {} cannot be deleted, as it is required by one or more routes.",
                    str_field(router, "id")
                ),
            ));
        }
    }
    Ok(())
}

/// `PUT /v2.0/routers/<id>/remove_router_interface`.
pub async fn remove_interface(api: &Api, ctx: &Ctx, id: &str, body: Value) -> ApiResult<Value> {
    let (subnet_id, port_id) = interface_body(&body)?;
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        let router = api.visible(ctx, &ROUTER, id).await?;
        super::check_owner(ctx, &ROUTER, &router.obj, "update")?;
        let ports = interfaces(api, id).await?;
        let port = match (&subnet_id, &port_id) {
            (Some(sid), _) => ports
                .into_iter()
                .find(|p| port_subnets(&p.obj).contains(sid))
                .ok_or_else(|| {
                    ApiError::not_found(
                        "RouterInterfaceNotFoundForSubnet",
                        format!("Router {id} has no interface on subnet {sid}"),
                    )
                })?,
            (None, Some(pid)) => ports.into_iter().find(|p| p.id() == pid).ok_or_else(|| {
                ApiError::not_found(
                    "RouterInterfaceNotFound",
                    format!("Router {id} does not have an interface with id {pid}"),
                )
            })?,
            (None, None) => unreachable!("interface_body requires one"),
        };
        let subnets = port_subnets(&port.obj);
        for fip in api.db.find(&FLOATING_IPS_BY_ROUTER, id).await? {
            let fixed = str_field(&fip.obj, "fixed_ip_address");
            let Some(inner) = api.db.load(&PORT, str_field(&fip.obj, "port_id")).await? else {
                continue;
            };
            let uses = inner
                .obj
                .get("fixed_ips")
                .and_then(Value::as_array)
                .is_some_and(|ips| {
                    ips.iter().any(|i| {
                        i.get("ip_address").and_then(Value::as_str) == Some(fixed)
                            && i.get("subnet_id")
                                .and_then(Value::as_str)
                                .is_some_and(|s| subnets.iter().any(|x| x == s))
                    })
                });
            if uses {
                return Err(ApiError::conflict(
                    "RouterInterfaceInUseByFloatingIP",
                    format!(
                        "Router interface for subnet {} on router {id} cannot be deleted, as it is required by one or more floating IPs.",
                        subnets.first().cloned().unwrap_or_default()
                    ),
                ));
            }
        }
        check_not_routed_through(&router.obj, api, &subnets).await?;
        let mut plan = Plan::default();
        super::release_port(&mut plan, &port);
        let mut r = router.obj.clone();
        complete(api, &mut r, &mut plan).await?;
        plan.update(&ROUTER, &router, &mut r);
        if api.db.commit(plan).await? {
            return Ok(interface_info(&r, &port.obj));
        }
    }
}
