//! What creating, changing and deleting each load-balancing object means, as plans of store writes.
//!
//! Parents list their children as Octavia shows them (`listeners`, `pools` of a load balancer,
//! `members` and `healthmonitor_id` of a pool, ...), so a child's create or delete also writes its
//! parent: the parent is pinned, and concurrent changes of one load balancer's tree are serialised
//! by the store's conditions. Each call reads afresh and plans again after losing a race.
//!
//! A load balancer's VIP is a port on its subnet, made as Octavia makes it (device owner `Octavia`,
//! name `octavia-lb-<id>`, device id `lb-<id>`, administratively down: the load balancer, not the
//! port, answers for the address), or the port the client named (`vip_port_id`), which is then
//! neither changed nor deleted with the load balancer.

use model::ResourceDef;
use model::lbaas::{
    HEALTHMONITOR, LISTENER, LOADBALANCER, MEMBER, POOL, SERVED_ALGORITHMS,
    SERVED_LISTENER_PROTOCOLS, SERVED_MONITOR_TYPES,
};
use model::resources::{NETWORK, PORT, SUBNET};
use model::validate::echo;
use serde_json::{Value, json};

use super::{bad, not_found, now, validation};
use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::repo::{Obj, Plan, Stored, str_field};
use crate::resources::{plan_internal_port, release_port};

/// The device owner Octavia gives VIP ports.
pub const VIP_OWNER: &str = "Octavia";

/// The ids of a list of `{"id": ...}` references.
pub fn ids(obj: &Obj, field: &str) -> Vec<String> {
    obj.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("id").and_then(Value::as_str))
        .map(String::from)
        .collect()
}

/// The objects of kind `def` that `parent` lists in `field`, in id order.
pub async fn children(
    api: &Api,
    parent: &Obj,
    field: &str,
    def: &ResourceDef,
) -> ApiResult<Vec<Stored>> {
    let ids = ids(parent, field);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut found = api.db.load_many(def, &ids).await?;
    found.sort_by(|a, b| a.id().cmp(b.id()));
    Ok(found)
}

/// Adds (`add`) or removes the reference to `id` in the list `field` of `obj`.
fn link(obj: &mut Obj, field: &str, id: &str, add: bool) {
    let mut refs: Vec<Value> = ids(obj, field)
        .into_iter()
        .filter(|r| r != id)
        .map(|r| json!({"id": r}))
        .collect();
    if add {
        refs.push(json!({"id": id}));
    }
    obj.insert(field.into(), Value::Array(refs));
}

/// Writes `obj`, a changed copy of `read`, with a new update time.
fn write(plan: &mut Plan, def: &ResourceDef, read: &Stored, mut obj: Obj) {
    obj.insert("updated_at".into(), now().into());
    plan.put_raw(def, read, &obj);
}

/// Loads, changes and writes (pinned) the object `id`, already written by this plan if it was.
async fn change(
    api: &Api,
    plan: &mut Plan,
    def: &ResourceDef,
    id: &str,
    edit: impl FnOnce(&mut Obj),
) -> ApiResult<()> {
    let stored = api.db.require(def, id).await?;
    let mut obj = plan.written(def, id).unwrap_or_else(|| stored.obj.clone());
    edit(&mut obj);
    write(plan, def, &stored, obj);
    Ok(())
}

/// 400: the provider does not do what was asked (Octavia's `UnsupportedOptionError`).
fn unsupported(option: &str) -> ApiError {
    bad(format!(
        "Provider 'amphora' does not support a requested option: {option}"
    ))
}

/// The parent of a new child: visible to the caller, or 404.
async fn parent(api: &Api, ctx: &Ctx, def: &ResourceDef, id: &str) -> ApiResult<Stored> {
    api.octavia_visible(ctx, def, id).await
}

/// Names a new child's load balancer and VIP network in its internal fields.
fn adopt(obj: &mut Obj, lb: &Obj) {
    obj.insert("_loadbalancer_id".into(), json!(str_field(lb, "id")));
    obj.insert(
        "_vip_network_id".into(),
        json!(str_field(lb, "vip_network_id")),
    );
}

/// Gives a new child of a pool the pool's load balancer and VIP network, and the pool.
fn inherit(obj: &mut Obj, pool: &Obj) {
    for field in ["_loadbalancer_id", "_vip_network_id"] {
        obj.insert(field.into(), json!(str_field(pool, field)));
    }
    obj.insert("_pool_id".into(), json!(str_field(pool, "id")));
}

pub async fn create(
    api: &Api,
    ctx: &Ctx,
    def: &ResourceDef,
    obj: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let obj = match def.collection {
        "loadbalancers" => create_loadbalancer(api, ctx, obj, plan).await?,
        "listeners" => create_listener(api, ctx, obj, plan).await?,
        "pools" => create_pool(api, ctx, obj, plan).await?,
        "members" => create_member(api, ctx, obj, plan).await?,
        _ => create_monitor(api, ctx, obj, plan).await?,
    };
    plan.create(def, &obj);
    Ok(obj)
}

async fn create_loadbalancer(api: &Api, ctx: &Ctx, mut lb: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let provider = str_field(&lb, "provider");
    if provider != "amphora" && provider != "octavia" {
        return Err(bad(format!(
            "Provider '{}' is not enabled.",
            echo(provider)
        )));
    }
    let id = str_field(&lb, "id").to_string();
    let (port_id, subnet_id, network_id) = (
        str_field(&lb, "vip_port_id").to_string(),
        str_field(&lb, "vip_subnet_id").to_string(),
        str_field(&lb, "vip_network_id").to_string(),
    );
    let port = if !port_id.is_empty() {
        let port = api
            .db
            .load(&PORT, &port_id)
            .await?
            .filter(|p| ctx.owns(&p.obj))
            .ok_or_else(|| bad(format!("Port {port_id} not found.")))?;
        plan.pin_obj(&PORT, &port);
        port.obj
    } else {
        let subnet = if !subnet_id.is_empty() {
            visible_subnet(api, ctx, &subnet_id).await?
        } else if !network_id.is_empty() {
            network_subnet(api, ctx, &network_id).await?
        } else {
            return Err(validation(
                "VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
            ));
        };
        if !network_id.is_empty() && str_field(&subnet.obj, "network_id") != network_id {
            return Err(validation(format!(
                "vip_subnet_id {subnet_id} is not in vip_network_id {network_id}."
            )));
        }
        let mut fixed_ip = json!({"subnet_id": subnet.id()});
        if let Some(address) = lb.get("vip_address") {
            fixed_ip["ip_address"] = address.clone();
        }
        // In its project's default group: the VIP is then a member of it, which the members'
        // default rules admit — health checks and hairpinned connections come from the VIP.
        let project = str_field(&lb, "project_id").to_string();
        crate::resources::security_groups::ensure_default(api, &project).await?;
        let groups: Vec<String> =
            crate::resources::security_groups::default_group_id(api, &project)
                .await?
                .into_iter()
                .collect();
        let body = json!({
            "network_id": str_field(&subnet.obj, "network_id"),
            "fixed_ips": [fixed_ip],
            "name": format!("octavia-lb-{id}"),
            "device_owner": VIP_OWNER,
            "device_id": format!("lb-{id}"),
            "admin_state_up": false,
            "project_id": project,
            "security_groups": groups,
        });
        lb.insert("_vip_port_owned".into(), json!(true));
        plan_internal_port(api, body.as_object().cloned().unwrap_or_default(), plan).await?
    };
    let fixed = port
        .get("fixed_ips")
        .and_then(Value::as_array)
        .and_then(|ips| {
            ips.iter()
                .find(|ip| subnet_id.is_empty() || ip["subnet_id"] == json!(subnet_id))
        })
        .cloned()
        .ok_or_else(|| validation(format!("Port {port_id} has no address for the VIP.")))?;
    lb.insert("vip_port_id".into(), json!(str_field(&port, "id")));
    lb.insert(
        "vip_network_id".into(),
        json!(str_field(&port, "network_id")),
    );
    lb.insert("vip_subnet_id".into(), fixed["subnet_id"].clone());
    lb.insert("vip_address".into(), fixed["ip_address"].clone());
    Ok(lb)
}

/// A subnet the caller may use, or 400 (Octavia's `InvalidSubresource`).
async fn visible_subnet(api: &Api, ctx: &Ctx, id: &str) -> ApiResult<Stored> {
    let subnet = api.db.load(&SUBNET, id).await?;
    match subnet {
        Some(s) if crate::resources::can_see(api, ctx, &SUBNET, &s.obj).await? => Ok(s),
        _ => Err(bad(format!("Subnet {} not found.", echo(id)))),
    }
}

/// The subnet of a network that a VIP on the network takes: its first IPv4 subnet, else its first.
async fn network_subnet(api: &Api, ctx: &Ctx, id: &str) -> ApiResult<Stored> {
    let network = api.db.load(&NETWORK, id).await?;
    match network {
        Some(n) if crate::resources::can_see(api, ctx, &NETWORK, &n.obj).await? => {}
        _ => return Err(bad(format!("Network {} not found.", echo(id)))),
    }
    let mut subnets: Vec<Stored> = api
        .db
        .list(&SUBNET)
        .await?
        .into_iter()
        .filter(|s| str_field(&s.obj, "network_id") == id)
        .collect();
    subnets.sort_by_key(|s| s.obj.get("ip_version") != Some(&json!(4)));
    subnets
        .into_iter()
        .next()
        .ok_or_else(|| validation("Supplied network does not contain a subnet."))
}

/// Which transport a listener protocol uses: listeners on one load balancer may not share one.
fn transport(protocol: &str) -> &str {
    if protocol == "UDP" { "UDP" } else { "TCP" }
}

async fn create_listener(
    api: &Api,
    ctx: &Ctx,
    mut listener: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let lb_id = listener
        .remove("loadbalancer_id")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let lb = parent(api, ctx, &LOADBALANCER, &lb_id).await?;
    let protocol = str_field(&listener, "protocol").to_string();
    if !SERVED_LISTENER_PROTOCOLS.contains(&protocol.as_str()) {
        return Err(unsupported(&format!(
            "Wyvern serves TCP, UDP and HTTP listeners, not {protocol}"
        )));
    }
    let port = listener.get("protocol_port").cloned().unwrap_or_default();
    for other in children(api, &lb.obj, "listeners", &LISTENER).await? {
        let theirs = str_field(&other.obj, "protocol");
        if other.obj.get("protocol_port") == Some(&port)
            && transport(theirs) == transport(&protocol)
        {
            return Err(ApiError::conflict(
                "",
                format!(
                    "Another Listener on this Load Balancer is already using protocol {theirs} and protocol_port {port}"
                ),
            ));
        }
    }
    adopt(&mut listener, &lb.obj);
    listener.insert("loadbalancers".into(), json!([{"id": lb.id()}]));
    let id = str_field(&listener, "id").to_string();
    if let Some(pool_id) = listener.get("default_pool_id").and_then(Value::as_str) {
        let pool = default_pool(api, &lb, &protocol, pool_id).await?;
        change(api, plan, &POOL, pool.id(), |p| {
            link(p, "listeners", &id, true)
        })
        .await?;
    }
    change(api, plan, &LOADBALANCER, lb.id(), |o| {
        link(o, "listeners", &id, true)
    })
    .await?;
    Ok(listener)
}

/// Pools of listeners of each protocol (Octavia's `VALID_LISTENER_POOL_PROTOCOL_MAP`, for the
/// listener protocols Wyvern serves).
fn pool_fits(listener: &str, pool: &str) -> bool {
    match listener {
        "TCP" => ["TCP", "HTTP", "HTTPS", "PROXY", "PROXYV2"].contains(&pool),
        "HTTP" => ["HTTP", "PROXY", "PROXYV2"].contains(&pool),
        _ => listener == pool,
    }
}

fn check_fit(listener: &str, pool: &str) -> ApiResult<()> {
    if pool_fits(listener, pool) {
        Ok(())
    } else {
        Err(validation(format!(
            "The pool protocol '{pool}' is invalid while the listener protocol is '{listener}'."
        )))
    }
}

/// The pool a listener of `protocol` on `lb` may take as its default pool.
async fn default_pool(api: &Api, lb: &Stored, protocol: &str, id: &str) -> ApiResult<Stored> {
    let pool = api
        .db
        .load(&POOL, id)
        .await?
        .filter(|p| str_field(&p.obj, "_loadbalancer_id") == lb.id())
        .ok_or_else(|| not_found(&POOL, id))?;
    check_fit(protocol, str_field(&pool.obj, "protocol"))?;
    Ok(pool)
}

/// What Wyvern serves of a pool's algorithm and session persistence; fills in the persistence's
/// unset fields as Octavia shows them.
fn check_pool(pool: &mut Obj) -> ApiResult<()> {
    let algorithm = str_field(pool, "lb_algorithm");
    if !SERVED_ALGORITHMS.contains(&algorithm) {
        return Err(unsupported(&format!(
            "Wyvern does not serve the {algorithm} algorithm"
        )));
    }
    if let Some(Value::Object(persistence)) = pool.get_mut("session_persistence") {
        let kind = persistence.get("type").cloned().unwrap_or_default();
        if kind != json!("SOURCE_IP") {
            return Err(unsupported(&format!(
                "Wyvern serves session persistence SOURCE_IP only, not {kind}"
            )));
        }
        for field in [
            "cookie_name",
            "persistence_timeout",
            "persistence_granularity",
        ] {
            persistence.entry(field).or_insert(Value::Null);
        }
    }
    Ok(())
}

async fn create_pool(api: &Api, ctx: &Ctx, mut pool: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let named = |pool: &mut Obj, field: &str| {
        pool.remove(field)
            .and_then(|v| v.as_str().map(String::from))
    };
    let listener_id = named(&mut pool, "listener_id");
    let lb_id = named(&mut pool, "loadbalancer_id");
    let protocol = str_field(&pool, "protocol").to_string();
    if !SERVED_LISTENER_PROTOCOLS.contains(&protocol.as_str()) {
        return Err(unsupported(&format!(
            "Wyvern serves TCP, UDP and HTTP pools, not {protocol}"
        )));
    }
    check_pool(&mut pool)?;
    let id = str_field(&pool, "id").to_string();
    let listener = match &listener_id {
        Some(l) => Some(parent(api, ctx, &LISTENER, l).await?),
        None => None,
    };
    let lb_id = match (&listener, lb_id) {
        (Some(l), Some(lb)) if str_field(&l.obj, "_loadbalancer_id") != lb => {
            return Err(validation(format!(
                "Listener {} is not on Load Balancer {lb}.",
                l.id()
            )));
        }
        (Some(l), _) => str_field(&l.obj, "_loadbalancer_id").to_string(),
        (None, Some(lb)) => lb,
        (None, None) => {
            return Err(validation(
                "Must provide at least one of: loadbalancer_id, listener_id",
            ));
        }
    };
    let lb = parent(api, ctx, &LOADBALANCER, &lb_id).await?;
    adopt(&mut pool, &lb.obj);
    pool.insert("loadbalancers".into(), json!([{"id": lb.id()}]));
    pool.insert("listeners".into(), json!([]));
    if let Some(listener) = listener {
        check_fit(str_field(&listener.obj, "protocol"), &protocol)?;
        if !str_field(&listener.obj, "default_pool_id").is_empty() {
            return Err(ApiError::conflict(
                "",
                "This listener already has a default pool",
            ));
        }
        link(&mut pool, "listeners", listener.id(), true);
        change(api, plan, &LISTENER, listener.id(), |l| {
            l.insert("default_pool_id".into(), json!(id));
        })
        .await?;
    }
    change(api, plan, &LOADBALANCER, lb.id(), |o| {
        link(o, "pools", &id, true)
    })
    .await?;
    Ok(pool)
}

async fn create_member(api: &Api, ctx: &Ctx, mut member: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let pool_id = str_field(&member, "_pool_id").to_string();
    let pool = parent(api, ctx, &POOL, &pool_id).await?;
    if let Some(subnet) = member.get("subnet_id").and_then(Value::as_str) {
        visible_subnet(api, ctx, subnet).await?;
    }
    let (address, port) = (
        member.get("address").cloned().unwrap_or_default(),
        member.get("protocol_port").cloned().unwrap_or_default(),
    );
    for other in children(api, &pool.obj, "members", &MEMBER).await? {
        if other.obj.get("address") == Some(&address)
            && other.obj.get("protocol_port") == Some(&port)
        {
            return Err(ApiError::conflict(
                "",
                format!(
                    "Another member on this pool is already using ip {} on protocol_port {port}",
                    address.as_str().unwrap_or_default()
                ),
            ));
        }
    }
    inherit(&mut member, &pool.obj);
    let id = str_field(&member, "id").to_string();
    change(api, plan, &POOL, pool.id(), |p| {
        link(p, "members", &id, true)
    })
    .await?;
    Ok(member)
}

/// An HTTP monitor's defaults; other monitors have no HTTP attributes.
fn monitor_defaults(monitor: &mut Obj) {
    let http = str_field(monitor, "type") == "HTTP";
    for (field, default) in [
        ("http_method", "GET"),
        ("url_path", "/"),
        ("expected_codes", "200"),
    ] {
        let value = if http { json!(default) } else { Value::Null };
        monitor.entry(field).or_insert(value);
    }
}

async fn create_monitor(api: &Api, ctx: &Ctx, mut monitor: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let pool_id = monitor
        .remove("pool_id")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let pool = parent(api, ctx, &POOL, &pool_id).await?;
    let kind = str_field(&monitor, "type");
    if !SERVED_MONITOR_TYPES.contains(&kind) {
        return Err(unsupported(&format!(
            "Wyvern serves PING, TCP and HTTP health monitors, not {kind}"
        )));
    }
    if !str_field(&pool.obj, "healthmonitor_id").is_empty() {
        return Err(ApiError::conflict(
            "",
            "This pool already has a health monitor",
        ));
    }
    monitor_defaults(&mut monitor);
    inherit(&mut monitor, &pool.obj);
    monitor.insert("pools".into(), json!([{"id": pool.id()}]));
    let id = str_field(&monitor, "id").to_string();
    change(api, plan, &POOL, pool.id(), |p| {
        p.insert("healthmonitor_id".into(), json!(id));
    })
    .await?;
    Ok(monitor)
}

pub async fn update(
    api: &Api,
    def: &ResourceDef,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<()> {
    let mut obj = stored.obj.clone();
    let old_default = str_field(&obj, "default_pool_id").to_string();
    obj.extend(changes);
    match def.collection {
        "pools" => check_pool(&mut obj)?,
        "listeners" => {
            let new_default = str_field(&obj, "default_pool_id").to_string();
            if new_default != old_default {
                let id = stored.id().to_string();
                if !new_default.is_empty() {
                    let lb = api
                        .db
                        .require(&LOADBALANCER, str_field(&obj, "_loadbalancer_id"))
                        .await?;
                    let pool =
                        default_pool(api, &lb, str_field(&obj, "protocol"), &new_default).await?;
                    change(api, plan, &POOL, pool.id(), |p| {
                        link(p, "listeners", &id, true)
                    })
                    .await?;
                }
                if !old_default.is_empty() {
                    change(api, plan, &POOL, &old_default, |p| {
                        link(p, "listeners", &id, false)
                    })
                    .await?;
                }
            }
        }
        _ => {}
    }
    write(plan, def, &stored, obj);
    Ok(())
}

pub async fn delete(
    api: &Api,
    def: &ResourceDef,
    stored: Stored,
    cascade: bool,
    plan: &mut Plan,
) -> ApiResult<()> {
    let id = stored.id().to_string();
    let lb_id = str_field(&stored.obj, "_loadbalancer_id").to_string();
    match def.collection {
        "loadbalancers" => {
            let has_children =
                !ids(&stored.obj, "listeners").is_empty() || !ids(&stored.obj, "pools").is_empty();
            if has_children && !cascade {
                return Err(validation(format!(
                    "Cannot delete Load Balancer {id} - it has children"
                )));
            }
            for listener in children(api, &stored.obj, "listeners", &LISTENER).await? {
                plan.delete(&LISTENER, &listener);
            }
            for pool in children(api, &stored.obj, "pools", &POOL).await? {
                delete_pool_children(api, &pool, plan).await?;
                plan.delete(&POOL, &pool);
            }
            if stored.obj.get("_vip_port_owned") == Some(&Value::Bool(true))
                && let Some(port) = api
                    .db
                    .load(&PORT, str_field(&stored.obj, "vip_port_id"))
                    .await?
            {
                release_port(plan, &port);
            }
        }
        "listeners" => {
            let default = str_field(&stored.obj, "default_pool_id");
            if !default.is_empty() {
                change(api, plan, &POOL, default, |p| {
                    link(p, "listeners", &id, false)
                })
                .await?;
            }
            change(api, plan, &LOADBALANCER, &lb_id, |o| {
                link(o, "listeners", &id, false)
            })
            .await?;
        }
        "pools" => {
            delete_pool_children(api, &stored, plan).await?;
            for listener in ids(&stored.obj, "listeners") {
                change(api, plan, &LISTENER, &listener, |l| {
                    l.insert("default_pool_id".into(), Value::Null);
                })
                .await?;
            }
            change(api, plan, &LOADBALANCER, &lb_id, |o| {
                link(o, "pools", &id, false)
            })
            .await?;
        }
        "members" => {
            let pool = str_field(&stored.obj, "_pool_id");
            change(api, plan, &POOL, pool, |p| link(p, "members", &id, false)).await?;
        }
        _ => {
            let pool = str_field(&stored.obj, "_pool_id");
            change(api, plan, &POOL, pool, |p| {
                p.insert("healthmonitor_id".into(), Value::Null);
            })
            .await?;
        }
    }
    plan.delete(def, &stored);
    Ok(())
}

/// Plans the deletion of a pool's members and health monitor (Octavia deletes them with the pool).
async fn delete_pool_children(api: &Api, pool: &Stored, plan: &mut Plan) -> ApiResult<()> {
    for member in children(api, &pool.obj, "members", &MEMBER).await? {
        plan.delete(&MEMBER, &member);
    }
    if let Some(monitor) = api
        .db
        .load(&HEALTHMONITOR, str_field(&pool.obj, "healthmonitor_id"))
        .await?
    {
        plan.delete(&HEALTHMONITOR, &monitor);
    }
    Ok(())
}
