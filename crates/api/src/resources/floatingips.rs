//! Floating IPs: addresses on external networks, and their association with ports behind routers.
//!
//! A floating IP's `status` is ACTIVE while it is associated with a port whose status is ACTIVE (the
//! port's VIF is up on a chassis, which then serves the address), DOWN otherwise. It follows
//! associations here and the port's status in the binding reports of agents (`chassis::bind`, in the
//! transaction that changes the port).

use model::resources::{FLOATING_IP, NETWORK, PORT, ROUTER, SUBNET};
use serde_json::{Value, json};

use super::plan_internal_port;
use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::index::{FLOATING_IPS_BY_PORT, ROUTER_INTERFACES_BY_SUBNET};
use crate::repo::{Obj, Plan, Stored, str_field};

fn bad_fip(message: impl std::fmt::Display) -> ApiError {
    ApiError::bad("BadRequest", format!("Bad floatingip request: {message}."))
}

/// Clears a floating IP's association.
pub fn disassociate(fip: &mut Obj) {
    for k in ["port_id", "fixed_ip_address", "router_id", "port_details"] {
        fip.insert(k.into(), Value::Null);
    }
    fip.insert("status".into(), "DOWN".into());
}

/// Shows on `fip`, associated with `port`, the port's state: `status` ACTIVE when the port is
/// ACTIVE, else DOWN, and `port_details`.
pub fn follow_port(fip: &mut Obj, port: &Obj) {
    let active = str_field(port, "status") == "ACTIVE";
    fip.insert(
        "status".into(),
        if active { "ACTIVE" } else { "DOWN" }.into(),
    );
    fip.insert(
        "port_details".into(),
        json!({
            "name": port.get("name"), "network_id": port.get("network_id"),
            "mac_address": port.get("mac_address"), "admin_state_up": port.get("admin_state_up"),
            "status": port.get("status"), "device_id": port.get("device_id"),
            "device_owner": port.get("device_owner"),
        }),
    );
}

/// Associates `fip` with `port_id` (at `fixed_ip`, or the port's first IPv4 address) through the
/// router that connects the port's subnet to the floating network.
async fn associate(
    api: &Api,
    ctx: &Ctx,
    fip: &mut Obj,
    port_id: &str,
    fixed_ip: Option<&str>,
    plan: &mut Plan,
) -> ApiResult<()> {
    let port = match api.db.load(&PORT, port_id).await? {
        Some(p) if ctx.owns(&p.obj) => p,
        _ => return Err(ApiError::object_not_found("Port", "port", port_id)),
    };
    // The port is written back unchanged (same revision number) rather than only pinned: a binding
    // report changing its status concurrently, which pins the port, is then planned again and finds
    // this floating IP to update.
    plan.put_raw(&PORT, &port, &port.obj);
    let ips: Vec<(String, String)> = port
        .obj
        .get("fixed_ips")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|i| {
                    Some((
                        i.get("subnet_id")?.as_str()?.to_string(),
                        i.get("ip_address")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let (subnet, ip) = match fixed_ip {
        Some(want) => ips
            .iter()
            .find(|(_, ip)| ip == want)
            .cloned()
            .ok_or_else(|| bad_fip(format!("Port {port_id} does not have fixed ip {want}")))?,
        None => ips
            .iter()
            .find(|(_, ip)| ip.parse::<std::net::Ipv4Addr>().is_ok())
            .cloned()
            .ok_or_else(|| bad_fip(format!("No IPv4 address found on port {port_id}")))?,
    };
    let net = str_field(fip, "floating_network_id").to_string();
    let id = str_field(fip, "id").to_string();
    for other in api.db.find(&FLOATING_IPS_BY_PORT, port_id).await? {
        if other.id() != id
            && str_field(&other.obj, "fixed_ip_address") == ip
            && str_field(&other.obj, "floating_network_id") == net
        {
            return Err(ApiError::conflict(
                "FloatingIPPortAlreadyAssociated",
                format!(
                    "Cannot associate floating IP {} ({id}) with port {port_id} using fixed IP {ip}, as that fixed IP already has a floating IP on external network {net}.",
                    str_field(fip, "floating_ip_address")
                ),
            ));
        }
    }
    // As Neutron finds it: of the routers with an interface on the port's subnet, one with its
    // gateway on the floating network (the lowest id, should there be several).
    let mut router: Option<Stored> = None;
    for interface in api.db.find(&ROUTER_INTERFACES_BY_SUBNET, &subnet).await? {
        let Some(r) = api
            .db
            .load(&ROUTER, str_field(&interface.obj, "device_id"))
            .await?
        else {
            continue;
        };
        let gw_net = r
            .obj
            .get("external_gateway_info")
            .and_then(|g| g.get("network_id"))
            .and_then(Value::as_str);
        if gw_net == Some(net.as_str()) && router.as_ref().is_none_or(|best| r.id() < best.id()) {
            router = Some(r);
        }
    }
    let Some(router) = router else {
        return Err(ApiError::not_found(
            "ExternalGatewayForFloatingIPNotFound",
            format!(
                "External network {net} is not reachable from subnet {subnet}.  Therefore, cannot associate Port {port_id} with a Floating IP."
            ),
        ));
    };
    plan.pin_obj(&ROUTER, &router);
    fip.insert("port_id".into(), port_id.into());
    fip.insert("fixed_ip_address".into(), ip.into());
    fip.insert("router_id".into(), router.id().into());
    follow_port(fip, &port.obj);
    Ok(())
}

pub async fn plan_create(api: &Api, ctx: &Ctx, mut fip: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    // Neutron's default policy: only admins choose the address.
    if fip.get("floating_ip_address").is_some_and(|a| !a.is_null()) {
        super::admin_only(ctx, "create_floatingip:floating_ip_address")?;
    }
    let net_id = str_field(&fip, "floating_network_id").to_string();
    let network = api.visible(ctx, &NETWORK, &net_id).await?;
    if network.obj.get("router:external") != Some(&Value::Bool(true)) {
        return Err(bad_fip(format!(
            "Network {net_id} is not a valid external network"
        )));
    }
    let id = str_field(&fip, "id").to_string();
    let mut fixed = serde_json::Map::new();
    if let Some(s) = fip.get("subnet_id").and_then(Value::as_str) {
        // The port is the server's own; the subnet is the caller's reference.
        api.visible(ctx, &SUBNET, s).await?;
        fixed.insert("subnet_id".into(), s.into());
    }
    if let Some(a) = fip.get("floating_ip_address").and_then(Value::as_str) {
        fixed.insert("ip_address".into(), a.into());
    }
    let mut body = json!({"network_id": net_id, "device_owner": "network:floatingip", "device_id": id, "tenant_id": "", "port_security_enabled": false});
    if !fixed.is_empty() {
        body["fixed_ips"] = json!([fixed]);
    }
    let port = plan_internal_port(api, body.as_object().cloned().unwrap_or_default(), plan).await?;
    let address = super::ipv4_address(&port)
        .ok_or_else(|| bad_fip(format!("Network {net_id} does not contain any IPv4 subnet")))?;
    fip.remove("subnet_id");
    fip.insert("floating_ip_address".into(), address.into());
    fip.insert("_port".into(), json!(str_field(&port, "id")));
    // The association asked for, read before the fields are reset.
    let port_id = fip.get("port_id").and_then(Value::as_str).map(String::from);
    let fixed_ip = fip
        .get("fixed_ip_address")
        .and_then(Value::as_str)
        .map(String::from);
    disassociate(&mut fip);
    if let Some(port_id) = port_id {
        associate(api, ctx, &mut fip, &port_id, fixed_ip.as_deref(), plan).await?;
    }
    plan.create(&FLOATING_IP, &fip);
    Ok(fip)
}

pub async fn plan_update(
    api: &Api,
    ctx: &Ctx,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let mut fip = stored.obj.clone();
    if let Some(d) = changes.get("description") {
        fip.insert("description".into(), d.clone());
    }
    if changes.contains_key("port_id") || changes.contains_key("fixed_ip_address") {
        let port_id = match changes.get("port_id") {
            Some(v) => v.as_str().map(String::from),
            None => fip.get("port_id").and_then(Value::as_str).map(String::from),
        };
        let fixed = changes
            .get("fixed_ip_address")
            .and_then(Value::as_str)
            .map(String::from);
        disassociate(&mut fip);
        if let Some(port_id) = port_id {
            associate(api, ctx, &mut fip, &port_id, fixed.as_deref(), plan).await?;
        }
    }
    plan.update(&FLOATING_IP, &stored, &mut fip);
    Ok(fip)
}

pub async fn plan_delete(api: &Api, stored: Stored, plan: &mut Plan) -> ApiResult<()> {
    if let Some(port) = api.db.load(&PORT, str_field(&stored.obj, "_port")).await? {
        super::release_port(plan, &port);
    }
    plan.delete(&FLOATING_IP, &stored);
    Ok(())
}
