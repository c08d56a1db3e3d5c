//! Trunks: Neutron's `trunk` and `trunk-details` extensions (VLAN-aware VMs), `/v2.0/trunks` with
//! the member actions `add_subports`, `remove_subports` (PUT) and `get_subports` (GET), served by
//! the generic Neutron flow of `lib.rs` (attribute map `model::trunks::TRUNK`), with the trunk
//! plugin's checks, in its order, and its errors (`neutron/services/trunk/rules.py`, `plugin.py`):
//! - the parent port is no subport (409 `TrunkPortInUse`), in no other trunk (409
//!   `ParentPortInUse`), one the caller sees (404 `PortNotFound`) and not bound to a host (409
//!   `ParentPortInUse`: Neutron's openvswitch driver cannot trunk a bound port);
//! - each subport is not the parent (409 `ParentPortInUse`), its network's MTU is not above the
//!   parent's (409 `SubPortMtuGreaterThanTrunkPortMtu`), its segmentation is given (400
//!   `InvalidInput`), `vlan` with an id from 1 to 4094 (or `inherit`: its network's type and id,
//!   which must then be VLAN), it is in no trunk (409 `TrunkPortInUse` / `ParentPortInUse`), seen
//!   (404 `PortNotFound`) and has no `device_id` (409 `PortInUse`); a trunk's VLAN ids are unique
//!   (409 `DuplicateSubPort`);
//! - a disabled trunk (`admin_state_up` false) is not changed by the actions nor deleted (409
//!   `TrunkDisabled`); a trunk whose parent port is bound is not deleted (409 `TrunkInUse`);
//! - a port that is a subport or a parent is not deleted (409 `PortInUseAsSubPort`,
//!   `PortInUseAsTrunkParent`).
//!
//! The objects live under `/r/trunks/<id>`, with the networks of their parent and subports in
//! `_network_ids` (the sync kind `nb_keys::Kind::Trunk`: a network topic wants the trunks touching
//! it). The links are kept on the ports, in internal fields written in the same transaction as the
//! trunk: the parent port holds the trunk as the datapath needs it (`_trunk`, a
//! `model::trunks::Trunk`), each subport its trunk, parent and VLAN (`_subport`, a
//! `model::trunks::SubPortOf`). Every check above reads the ports concerned and the plan writes
//! (so pins) them, so two calls that would put one port in two trunks cannot both commit. As a deployed
//! Neutron does once its driver wired the trunk, a subport shows `device_owner: trunk:subport` and
//! is bound where its parent is (`binding:host_id` follows the parent's), until it leaves the trunk.
//! The parent port shows `trunk_details` (`trunk_id`, its `sub_ports` with their MAC addresses).

use model::resources::{NETWORK, PORT};
use model::trunks::{
    INHERIT, MAX_VLAN, MIN_VLAN, SUBPORT_OWNER, SubPort, SubPortOf, TRUNK, Trunk, VLAN,
    check_sub_ports, py_repr,
};
use model::validate::echo;
use serde_json::{Map, Value, json};

use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::query::Query;
use crate::repo::{Attempts, Obj, Plan, Stored, now, str_field};

/// Whether `def` is the trunk resource.
pub fn is_trunk(def: &model::ResourceDef) -> bool {
    std::ptr::eq(def, &TRUNK)
}

/// The trunk plugin's filters: any attribute but `sub_ports`; anything else is 400 `InvalidInput`
/// ("'x' is not supported for filtering"), as Neutron's filter validation answers for trunks.
pub fn validate_filters(q: &Query) -> ApiResult<()> {
    for (name, _) in &q.0 {
        let known = TRUNK.attr(name).is_some() && !model::trunks::NOT_FILTERS.contains(&&**name);
        if !crate::query::CONTROL.contains(&name.as_str()) && !known {
            return Err(ApiError::invalid_input(format!(
                "'{}' is not supported for filtering",
                echo(name)
            )));
        }
    }
    Ok(())
}

fn port_not_found(id: &str) -> ApiError {
    ApiError::object_not_found("Port", "port", id)
}

fn trunk_port_in_use(port: &str) -> ApiError {
    ApiError::conflict(
        "TrunkPortInUse",
        format!("Port {port} is in use by another trunk."),
    )
}

fn parent_port_in_use(port: &str) -> ApiError {
    ApiError::conflict(
        "ParentPortInUse",
        format!("Port {port} is currently in use and is not eligible for use as a parent port."),
    )
}

fn disabled(trunk: &str) -> ApiError {
    ApiError::conflict(
        "TrunkDisabled",
        format!("Trunk {trunk} is currently disabled."),
    )
}

/// A port as this plan leaves it, if it writes it, or as stored (`None`: no such port).
async fn port_now(api: &Api, plan: &Plan, id: &str) -> ApiResult<Option<Stored>> {
    Ok(api.db.load(&PORT, id).await?.map(|mut s| {
        if let Some(obj) = plan.written(&PORT, id) {
            s.obj = obj;
        }
        s
    }))
}

fn is_bound(port: &Obj) -> bool {
    !str_field(port, "binding:host_id").is_empty()
}

/// The trunk plugin's `TrunkPortValidator` for a port that is to be a parent (`parent`) or a
/// subport: in no trunk, seen by the caller; a parent not bound, a subport without a device.
async fn check_port(
    api: &Api,
    ctx: &Ctx,
    plan: &Plan,
    id: &str,
    parent: bool,
) -> ApiResult<Stored> {
    let port = port_now(api, plan, id).await?;
    if let Some(port) = &port {
        if port.obj.get("_subport").is_some_and(|s| !s.is_null()) {
            return Err(trunk_port_in_use(id));
        }
        if port.obj.get("_trunk").is_some_and(|t| !t.is_null()) && ctx.owns(&port.obj) {
            return Err(parent_port_in_use(id));
        }
    }
    let port = port
        .filter(|p| ctx.owns(&p.obj))
        .ok_or_else(|| port_not_found(id))?;
    if parent {
        if is_bound(&port.obj) {
            return Err(parent_port_in_use(id));
        }
    } else {
        let device = str_field(&port.obj, "device_id");
        if !device.is_empty() {
            return Err(ApiError::conflict(
                "PortInUse",
                format!(
                    "Unable to complete operation on port {id} for network {}. Port already has an \
                     attached device {device}.",
                    str_field(&port.obj, "network_id")
                ),
            ));
        }
    }
    Ok(port)
}

/// The MTU of a port's network (`None` when unknown).
async fn network_mtu(api: &Api, port: &Obj) -> ApiResult<Option<(Obj, i64)>> {
    let Some(net) = api.db.load(&NETWORK, str_field(port, "network_id")).await? else {
        return Ok(None);
    };
    let mtu = net.obj.get("mtu").and_then(Value::as_i64);
    Ok(mtu.map(|m| (net.obj, m)))
}

/// neutron-lib's `convert_to_int` of a segmentation id: an integer, or a string of one.
fn to_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The trunk plugin's `SubPortsValidator` (after the basic checks of [`check_sub_ports`]): each
/// subport of a request, in order, for the trunk whose parent is `parent`. Returns the subports
/// with their segmentation resolved (`inherit`) and the ports as read.
async fn check_sub_ports_of(
    api: &Api,
    ctx: &Ctx,
    plan: &Plan,
    parent: &Obj,
    requested: &[Value],
) -> ApiResult<Vec<(SubPort, Stored)>> {
    let parent_id = str_field(parent, "id");
    let parent_mtu = network_mtu(api, parent).await?.map(|(_, m)| m);
    let mut out = Vec::with_capacity(requested.len());
    for item in requested {
        let mut sub = item.as_object().cloned().unwrap_or_default();
        let port_id = str_field(&sub, "port_id").to_string();
        // What the caller sees of the port: its network's MTU and, for `inherit`, segmentation.
        let seen = port_now(api, plan, &port_id)
            .await?
            .filter(|p| ctx.owns(&p.obj));
        let net = match &seen {
            Some(p) => network_mtu(api, &p.obj).await?,
            None => None,
        };
        if str_field(&sub, "segmentation_type") == INHERIT
            && let Some((net, _)) = &net
        {
            sub.insert(
                "segmentation_type".into(),
                net.get("provider:network_type")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            sub.insert(
                "segmentation_id".into(),
                net.get("provider:segmentation_id")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
        }
        if port_id == parent_id {
            return Err(parent_port_in_use(&port_id));
        }
        if let (Some(trunk_mtu), Some((_, mtu))) = (parent_mtu, &net)
            && *mtu > trunk_mtu
        {
            return Err(ApiError::conflict(
                "SubPortMtuGreaterThanTrunkPortMtu",
                format!(
                    "MTU {mtu} of subport {port_id} cannot be greater than MTU {trunk_mtu} of \
                     trunk {parent_id}."
                ),
            ));
        }
        let (Some(kind), Some(raw_id)) = (sub.get("segmentation_type"), sub.get("segmentation_id"))
        else {
            return Err(ApiError::invalid_input(format!(
                "Invalid subport details '{}': missing segmentation information. Must specify \
                 both segmentation_id and segmentation_type",
                echo(&py_repr(&Value::Object(sub.clone())))
            )));
        };
        let Some(seg_id) = to_int(raw_id) else {
            return Err(ApiError::invalid_input(format!(
                "Invalid subport details: segmentation_id '{}' is not an integer",
                echo(py_repr(raw_id).trim_matches('\''))
            )));
        };
        let kind = kind.as_str().unwrap_or_default();
        if kind != VLAN {
            return Err(ApiError::invalid_input(format!(
                "Unknown segmentation_type '{}'",
                echo(kind)
            )));
        }
        if !(MIN_VLAN..=MAX_VLAN).contains(&seg_id) {
            return Err(ApiError::invalid_input(format!(
                "Segmentation ID '{seg_id}' is not in range"
            )));
        }
        let port = check_port(api, ctx, plan, &port_id, false).await?;
        out.push((
            SubPort {
                port_id,
                segmentation_type: VLAN.into(),
                segmentation_id: seg_id as u16,
            },
            port,
        ));
    }
    Ok(out)
}

/// The networks a trunk touches, its parent's and its subports', for sync (`_network_ids`: a
/// network topic wants the trunks on it, see `nb_keys::Topics::wants`).
async fn set_network_ids(api: &Api, plan: &Plan, trunk: &mut Obj, parent: &Obj) -> ApiResult<()> {
    let mut nets = std::collections::BTreeSet::new();
    nets.insert(str_field(parent, "network_id").to_string());
    for sub in sub_ports_of(trunk) {
        if let Some(port) = port_now(api, plan, &sub.port_id).await? {
            nets.insert(str_field(&port.obj, "network_id").to_string());
        }
    }
    nets.remove("");
    trunk.insert("_network_ids".into(), json!(nets));
    Ok(())
}

fn sub_ports_of(trunk: &Obj) -> Vec<SubPort> {
    trunk
        .get("sub_ports")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn set_sub_ports(trunk: &mut Obj, subs: &[SubPort]) {
    trunk.insert("sub_ports".into(), json!(subs));
}

/// The parent port's `_trunk`, as the trunk is now.
fn datapath_trunk(trunk: &Obj) -> Value {
    Trunk {
        id: str_field(trunk, "id").into(),
        port_id: str_field(trunk, "port_id").into(),
        admin_state_up: trunk.get("admin_state_up") != Some(&Value::Bool(false)),
        sub_ports: sub_ports_of(trunk),
    }
    .to_json()
}

/// Writes the parent port with the trunk as it now is (`None`: the trunk is gone). The port's
/// revision number stays while the trunk changes (Neutron keeps a trunk in tables of its own) and
/// goes up when the trunk is deleted, as Neutron's does.
fn write_parent(plan: &mut Plan, parent: &Stored, trunk: Option<&Obj>) {
    let mut port = parent.obj.clone();
    match trunk {
        Some(t) => {
            port.insert("_trunk".into(), datapath_trunk(t));
            plan.put_raw(&PORT, parent, &port);
        }
        None => {
            port.remove("_trunk");
            plan.update(&PORT, parent, &mut port);
        }
    }
}

/// Makes `port` a subport of `trunk` (whose parent is `parent`): its trunk link, the device owner
/// and the parent's host.
fn join(plan: &mut Plan, port: &Stored, sub: &SubPort, trunk_id: &str, parent: &Obj) {
    let mut obj = port.obj.clone();
    obj.insert(
        "_subport".into(),
        SubPortOf {
            trunk_id: trunk_id.into(),
            parent_port_id: str_field(parent, "id").into(),
            segmentation_type: sub.segmentation_type.clone(),
            segmentation_id: sub.segmentation_id,
        }
        .to_json(),
    );
    obj.insert("device_owner".into(), SUBPORT_OWNER.into());
    obj.insert(
        "binding:host_id".into(),
        str_field(parent, "binding:host_id").into(),
    );
    crate::resources::set_binding(&mut obj);
    plan.update(&PORT, port, &mut obj);
}

/// Takes `port` out of its trunk: no trunk link, and the device owner and host the trunk gave it
/// cleared.
fn leave(plan: &mut Plan, port: &Stored) {
    let mut obj = port.obj.clone();
    obj.remove("_subport");
    if str_field(&obj, "device_owner") == SUBPORT_OWNER {
        obj.insert("device_owner".into(), "".into());
        obj.insert("binding:host_id".into(), "".into());
        crate::resources::set_binding(&mut obj);
    }
    plan.update(&PORT, port, &mut obj);
}

pub async fn plan_create(api: &Api, ctx: &Ctx, mut obj: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let id = str_field(&obj, "id").to_string();
    let parent_id = str_field(&obj, "port_id").to_string();
    let parent = check_port(api, ctx, plan, &parent_id, true).await?;
    let requested = obj
        .get("sub_ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let subs = check_sub_ports_of(api, ctx, plan, &parent.obj, &requested).await?;
    let mut all = Vec::with_capacity(subs.len());
    for (sub, _) in &subs {
        add_unique(&mut all, sub, &id)?;
    }
    obj.insert("status".into(), "DOWN".into());
    set_sub_ports(&mut obj, &all);
    for (sub, port) in &subs {
        join(plan, port, sub, &id, &parent.obj);
    }
    set_network_ids(api, plan, &mut obj, &parent.obj).await?;
    write_parent(plan, &parent, Some(&obj));
    plan.create(&TRUNK, &obj);
    Ok(obj)
}

pub async fn plan_update(
    api: &Api,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let mut obj = stored.obj.clone();
    obj.extend(changes);
    plan.update(&TRUNK, &stored, &mut obj);
    if obj.get("admin_state_up") != stored.obj.get("admin_state_up") {
        let parent = api.db.require(&PORT, str_field(&obj, "port_id")).await?;
        write_parent(plan, &parent, Some(&obj));
    }
    Ok(obj)
}

pub async fn plan_delete(api: &Api, stored: Stored, plan: &mut Plan) -> ApiResult<()> {
    let id = stored.id().to_string();
    if stored.obj.get("admin_state_up") == Some(&Value::Bool(false)) {
        return Err(disabled(&id));
    }
    let parent = api
        .db
        .load(&PORT, str_field(&stored.obj, "port_id"))
        .await?;
    if let Some(parent) = &parent {
        if is_bound(&parent.obj) {
            return Err(ApiError::conflict(
                "TrunkInUse",
                format!("Trunk {id} is currently in use."),
            ));
        }
        write_parent(plan, parent, None);
    }
    for sub in sub_ports_of(&stored.obj) {
        if let Some(port) = api.db.load(&PORT, &sub.port_id).await? {
            leave(plan, &port);
        }
    }
    plan.delete(&TRUNK, &stored);
    Ok(())
}

/// The trunk for a member action: one the caller sees, else 404 `TrunkNotFound`.
async fn trunk_for(api: &Api, ctx: &Ctx, id: &str) -> ApiResult<Stored> {
    api.visible(ctx, &TRUNK, id).await
}

/// `GET /v2.0/trunks/<id>/get_subports`.
pub async fn get_subports(api: &Api, ctx: &Ctx, id: &str) -> ApiResult<Value> {
    let trunk = trunk_for(api, ctx, id).await?;
    Ok(json!({"sub_ports": trunk.obj.get("sub_ports").cloned().unwrap_or(json!([]))}))
}

/// The `sub_ports` of an action's body, checked as neutron-lib's `validate_subports` (400
/// `InvalidInput`).
fn requested_sub_ports(body: &Value) -> ApiResult<Vec<Value>> {
    let list = body.get("sub_ports").cloned().unwrap_or(Value::Null);
    if let Some(why) = check_sub_ports(&list) {
        return Err(ApiError::invalid_input(why));
    }
    Ok(list.as_array().cloned().unwrap_or_default())
}

/// `PUT /v2.0/trunks/<id>/add_subports` and `.../remove_subports`: the trunk as it then is, not
/// wrapped in `{"trunk": ...}` (as Neutron answers).
pub async fn action(api: &Api, ctx: &Ctx, id: &str, action: &str, body: Value) -> ApiResult<Value> {
    let add = match action {
        "add_subports" => true,
        "remove_subports" => false,
        _ => {
            return Err(ApiError::no_such_resource());
        }
    };
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        let stored = trunk_for(api, ctx, id).await?;
        if ctx.read_only {
            return Err(ApiError::policy(action));
        }
        let mut plan = Plan::default();
        let obj = if add {
            plan_add(api, ctx, &stored, &body, &mut plan).await?
        } else {
            plan_remove(api, &stored, &body, &mut plan).await?
        };
        if api.db.commit(plan).await? {
            return Ok(crate::query::render(obj, &[]));
        }
    }
}

/// Adds subports; Neutron's order: the request's checks, then the trunk's state, then the
/// uniqueness of the VLAN ids on the trunk.
async fn plan_add(
    api: &Api,
    ctx: &Ctx,
    stored: &Stored,
    body: &Value,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let id = stored.id().to_string();
    let requested = requested_sub_ports(body)?;
    let parent = api
        .db
        .require(&PORT, str_field(&stored.obj, "port_id"))
        .await?;
    let subs = check_sub_ports_of(api, ctx, plan, &parent.obj, &requested).await?;
    if stored.obj.get("admin_state_up") == Some(&Value::Bool(false)) {
        return Err(disabled(&id));
    }
    if str_field(&stored.obj, "status") == "ERROR" {
        return Err(ApiError::conflict(
            "TrunkInErrorState",
            format!(
                "Trunk {id} is in error state. Attempt to resolve the error condition before \
                 proceeding."
            ),
        ));
    }
    let mut all = sub_ports_of(&stored.obj);
    for (sub, port) in &subs {
        add_unique(&mut all, sub, &id)?;
        join(plan, port, sub, &id, &parent.obj);
    }
    rewrite(api, plan, stored, &parent, &all).await
}

/// Adds `sub` to `all`, the subports of trunk `trunk_id`, unless its port or its segmentation
/// is there already: 409 `DuplicateSubPort`, as Neutron answers when its subports' unique keys
/// (the port; the trunk and segmentation) refuse a row. neutron-lib's validator stops at the
/// first `inherit` and an `inherit` is resolved only later, so a request can still name a port
/// or a VLAN twice here.
fn add_unique(all: &mut Vec<SubPort>, sub: &SubPort, trunk_id: &str) -> ApiResult<()> {
    if all.iter().any(|s| {
        s.port_id == sub.port_id
            || (s.segmentation_type == sub.segmentation_type
                && s.segmentation_id == sub.segmentation_id)
    }) {
        return Err(ApiError::conflict(
            "DuplicateSubPort",
            format!(
                "segmentation_type {} and segmentation_id {} already in use on trunk {trunk_id}.",
                sub.segmentation_type, sub.segmentation_id
            ),
        ));
    }
    all.push(sub.clone());
    Ok(())
}

/// Writes the trunk with these subports, `DOWN` (Neutron keeps its `revision_number`: the
/// subports are rows of their own), and its parent port.
async fn rewrite(
    api: &Api,
    plan: &mut Plan,
    stored: &Stored,
    parent: &Stored,
    subs: &[SubPort],
) -> ApiResult<Obj> {
    let mut obj = stored.obj.clone();
    set_sub_ports(&mut obj, subs);
    obj.insert("status".into(), "DOWN".into());
    obj.insert("updated_at".into(), now().into());
    set_network_ids(api, plan, &mut obj, &parent.obj).await?;
    plan.put_raw(&TRUNK, stored, &obj);
    write_parent(plan, parent, Some(&obj));
    Ok(obj)
}

async fn plan_remove(api: &Api, stored: &Stored, body: &Value, plan: &mut Plan) -> ApiResult<Obj> {
    let id = stored.id().to_string();
    if stored.obj.get("admin_state_up") == Some(&Value::Bool(false)) {
        return Err(disabled(&id));
    }
    let requested = requested_sub_ports(body)?;
    let mut remaining = sub_ports_of(&stored.obj);
    for item in &requested {
        let port_id = item
            .get("port_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(at) = remaining.iter().position(|s| s.port_id == port_id) else {
            return Err(ApiError::not_found(
                "SubPortNotFound",
                format!("SubPort {port_id} on trunk {id} could not be found."),
            ));
        };
        remaining.remove(at);
        if let Some(port) = api.db.load(&PORT, port_id).await? {
            leave(plan, &port);
        }
    }
    let parent = api
        .db
        .require(&PORT, str_field(&stored.obj, "port_id"))
        .await?;
    rewrite(api, plan, stored, &parent, &remaining).await
}

/// A port is not deleted while it is a subport or a parent (Neutron checks in this order).
pub fn check_port_delete(port: &Obj) -> ApiResult<()> {
    let id = str_field(port, "id");
    let value = Value::Object(port.clone());
    if let Some(sub) = SubPortOf::of_port(&value) {
        return Err(ApiError::conflict(
            "PortInUseAsSubPort",
            format!(
                "Port {id} is currently a subport for trunk {}.",
                sub.trunk_id
            ),
        ));
    }
    if let Some(trunk) = Trunk::of_port(&value) {
        return Err(ApiError::conflict(
            "PortInUseAsTrunkParent",
            format!(
                "Port {id} is currently a parent port for trunk {}.",
                trunk.id
            ),
        ));
    }
    Ok(())
}

/// After a change of a parent port's host (`binding:host_id`, by an update or a binding report),
/// its subports follow it to the new host, in the same plan.
pub async fn follow_parent(api: &Api, plan: &mut Plan, before: &Obj, after: &Obj) -> ApiResult<()> {
    let host = str_field(after, "binding:host_id");
    if host == str_field(before, "binding:host_id") {
        return Ok(());
    }
    let Some(trunk) = Trunk::of_port(&Value::Object(after.clone())) else {
        return Ok(());
    };
    let ids: Vec<&str> = trunk.sub_ports.iter().map(|s| s.port_id.as_str()).collect();
    for port in api.db.load_many(&PORT, &ids).await? {
        if str_field(&port.obj, "binding:host_id") == host {
            continue;
        }
        let mut obj = port.obj.clone();
        obj.insert("binding:host_id".into(), host.into());
        crate::resources::set_binding(&mut obj);
        plan.update(&PORT, &port, &mut obj);
    }
    Ok(())
}

/// `trunk_details` of the parent ports among `ports`: the trunk's id and subports, each with its
/// port's MAC address (read for all, as Neutron reads them with an admin context).
pub async fn present_ports(api: &Api, ports: &mut [Obj]) -> ApiResult<()> {
    for port in ports.iter_mut() {
        let Some(trunk) = port
            .get("_trunk")
            .and_then(|t| serde_json::from_value::<Trunk>(t.clone()).ok())
        else {
            continue;
        };
        let ids: Vec<&str> = trunk.sub_ports.iter().map(|s| s.port_id.as_str()).collect();
        let macs: Map<String, Value> = api
            .db
            .load_many(&PORT, &ids)
            .await?
            .into_iter()
            .map(|p| {
                let mac = p.obj.get("mac_address").cloned().unwrap_or(Value::Null);
                (p.id().to_string(), mac)
            })
            .collect();
        let subs: Vec<Value> = trunk
            .sub_ports
            .iter()
            .map(|s| {
                json!({"segmentation_id": s.segmentation_id,
                    "segmentation_type": s.segmentation_type, "port_id": s.port_id,
                    "mac_address": macs.get(&s.port_id).cloned().unwrap_or(Value::Null)})
            })
            .collect();
        port.insert(
            "trunk_details".into(),
            json!({"trunk_id": trunk.id, "sub_ports": subs}),
        );
    }
    Ok(())
}
