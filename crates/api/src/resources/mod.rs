//! Resource semantics: what creating, changing and deleting each kind of object means.
//!
//! The generic request flow in `lib.rs` calls the dispatch functions here, which hand over to one module
//! per resource. Each `plan_*` function reads what it needs, adds its writes and conditions to the
//! [`Plan`], and returns the object as it will be after the commit.

mod address_groups;
mod floatingips;
mod ipam;
mod networks;
mod ports;
mod routers;
pub(crate) mod security_groups;
mod subnets;

use std::collections::HashSet;

use model::ResourceDef;
use model::resources::{NETWORK, PORT, SECURITY_GROUP, SUBNET};
use serde_json::Value;

use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::repo::{Obj, Plan, Stored, str_field};
use crate::{Api, input};

fn is(def: &ResourceDef, other: &ResourceDef) -> bool {
    std::ptr::eq(def, other)
}

/// Whether a network is visible to everybody (shared or external).
fn public_network(net: &Obj) -> bool {
    net.get("shared") == Some(&Value::Bool(true))
        || net.get("router:external") == Some(&Value::Bool(true))
}

/// Which objects of a kind a caller may see, with what it takes to decide that for a list.
pub struct Visibility {
    /// For subnets: networks visible to everybody.
    public_networks: HashSet<String>,
}

impl Visibility {
    pub async fn load(api: &Api, ctx: &Ctx, def: &ResourceDef) -> ApiResult<Self> {
        let mut public_networks = HashSet::new();
        if !ctx.is_admin && is(def, &SUBNET) {
            for n in api.db.list(&NETWORK).await? {
                if public_network(&n.obj) {
                    public_networks.insert(n.id().to_string());
                }
            }
        }
        Ok(Self { public_networks })
    }

    pub fn allows(&self, ctx: &Ctx, obj: &Obj) -> bool {
        ctx.owns(obj)
            || public_network(obj)
            || self.public_networks.contains(str_field(obj, "network_id"))
    }
}

/// Whether the caller may see one object.
pub async fn can_see(api: &Api, ctx: &Ctx, def: &ResourceDef, obj: &Obj) -> ApiResult<bool> {
    if ctx.owns(obj) {
        return Ok(true);
    }
    if is(def, &NETWORK) {
        return Ok(public_network(obj));
    }
    if is(def, &SUBNET) {
        let net = api.db.load(&NETWORK, str_field(obj, "network_id")).await?;
        return Ok(net.is_some_and(|n| public_network(&n.obj)));
    }
    Ok(false)
}

/// Changing (`action` "update") or deleting needs ownership, and a role that may write; seeing a
/// shared object is not enough.
pub fn check_owner(ctx: &Ctx, def: &ResourceDef, obj: &Obj, action: &str) -> ApiResult<()> {
    if ctx.owns(obj) && !ctx.read_only {
        Ok(())
    } else {
        Err(ApiError::policy(&format!("{action}_{}", def.singular)))
    }
}

/// Refuses a list of more than `max` items before any item is looked at: an oversized list costs
/// nothing to refuse, however long it is.
pub(crate) fn check_count(
    items: Option<&Value>,
    max: usize,
    refusal: impl FnOnce() -> ApiError,
) -> ApiResult<()> {
    match items.and_then(Value::as_array) {
        Some(list) if list.len() > max => Err(refusal()),
        _ => Ok(()),
    }
}

/// Fails with 403 `PolicyNotAuthorized` for `rule` unless the caller is admin.
fn admin_only(ctx: &Ctx, rule: &str) -> ApiResult<()> {
    if ctx.is_admin {
        Ok(())
    } else {
        Err(ApiError::policy(rule))
    }
}

pub async fn before_list(api: &Api, ctx: &Ctx, def: &ResourceDef) -> ApiResult<()> {
    if is(def, &SECURITY_GROUP) {
        security_groups::ensure_default(api, &ctx.project_id).await?;
    }
    Ok(())
}

/// Before objects are created: the projects' `default` groups, as Neutron makes them before a
/// network, a port or a group of a project that has none.
pub async fn before_create(
    api: &Api,
    _ctx: &Ctx,
    def: &ResourceDef,
    items: &[Obj],
) -> ApiResult<()> {
    if is(def, &NETWORK) || is(def, &PORT) || is(def, &SECURITY_GROUP) {
        let projects: HashSet<&str> = items.iter().map(|o| str_field(o, "project_id")).collect();
        for p in projects {
            security_groups::ensure_default(api, p).await?;
        }
    }
    Ok(())
}

/// Which answer objects are shown in; Neutron shows some attributes only in some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The answer to a create.
    Created,
    /// The answer to a show or an update.
    Shown,
    /// An element of a list.
    Listed,
}

/// Prepares objects for an answer to `ctx`: fills in attributes that live in other objects (a
/// security group's rules) and leaves out what Neutron shows only to admins or only in some answers.
pub async fn present(
    api: &Api,
    ctx: &Ctx,
    def: &ResourceDef,
    answer: Answer,
    items: &mut [Obj],
) -> ApiResult<()> {
    match def.collection {
        "security_groups" => security_groups::expand(api, answer, items).await?,
        "networks" => {
            for net in items.iter_mut() {
                networks::present(ctx, answer, net);
            }
        }
        "ports" => {
            crate::trunks::present_ports(api, items).await?;
            if !ctx.is_admin {
                items.iter_mut().for_each(ports::hide_binding);
            }
        }
        "routers" => items
            .iter_mut()
            .for_each(|router| routers::present(ctx, router)),
        _ => {}
    }
    Ok(())
}

pub async fn plan_create(
    api: &Api,
    ctx: &Ctx,
    def: &ResourceDef,
    obj: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    match def.collection {
        "networks" => networks::plan_create(api, ctx, obj, plan).await,
        "subnets" => subnets::plan_create(api, ctx, obj, plan).await,
        "ports" => ports::plan_create(api, ctx, ports::Requester::Client, obj, plan).await,
        "security_groups" => security_groups::plan_create(api, obj, plan).await,
        "security_group_rules" => security_groups::plan_create_rule(api, ctx, obj, plan).await,
        "address_groups" => address_groups::plan_create(obj, plan),
        "routers" => routers::plan_create(api, ctx, obj, plan).await,
        "floatingips" => floatingips::plan_create(api, ctx, obj, plan).await,
        "trunks" => crate::trunks::plan_create(api, ctx, obj, plan).await,
        _ if crate::sfc::is_sfc(def) => {
            crate::sfc::plans::plan_create(api, ctx, def, obj, plan).await
        }
        _ => Err(ApiError::bad_request("unsupported resource")),
    }
}

pub async fn plan_update(
    api: &Api,
    ctx: &Ctx,
    def: &ResourceDef,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    match def.collection {
        "networks" => networks::plan_update(api, ctx, stored, changes, plan).await,
        "subnets" => subnets::plan_update(api, stored, changes, plan).await,
        "ports" => ports::plan_update(api, ctx, stored, changes, plan).await,
        "routers" => routers::plan_update(api, ctx, stored, changes, plan).await,
        "security_groups" => security_groups::plan_update(api, stored, changes, plan).await,
        "floatingips" => floatingips::plan_update(api, ctx, stored, changes, plan).await,
        "trunks" => crate::trunks::plan_update(api, stored, changes, plan).await,
        _ if crate::sfc::is_sfc(def) => {
            crate::sfc::plans::plan_update(api, ctx, def, stored, changes, plan).await
        }
        _ => Ok(apply_changes(def, stored, changes, plan)),
    }
}

/// How a delete went.
pub enum Deletion {
    /// The writes are in the plan; the caller commits it.
    Planned,
    /// Already committed (deletes that guard against concurrent references commit in phases).
    Done,
    /// The object changed meanwhile; the caller starts again.
    Retry,
}

pub async fn plan_delete(
    api: &Api,
    ctx: &Ctx,
    def: &ResourceDef,
    stored: Stored,
    plan: &mut Plan,
) -> ApiResult<Deletion> {
    match def.collection {
        "networks" => networks::plan_delete(api, stored).await,
        "subnets" => subnets::plan_delete(api, stored).await,
        "security_groups" => security_groups::plan_delete(api, ctx, stored).await,
        "address_groups" => address_groups::plan_delete(api, stored).await,
        "ports" => ports::plan_delete(api, stored, plan)
            .await
            .map(|()| Deletion::Planned),
        "security_group_rules" => security_groups::plan_delete_rule(api, stored, plan)
            .await
            .map(|()| Deletion::Planned),
        "routers" => routers::plan_delete(api, stored, plan)
            .await
            .map(|()| Deletion::Planned),
        "floatingips" => floatingips::plan_delete(api, stored, plan)
            .await
            .map(|()| Deletion::Planned),
        "trunks" => crate::trunks::plan_delete(api, stored, plan)
            .await
            .map(|()| Deletion::Planned),
        _ if crate::sfc::is_sfc(def) => {
            crate::sfc::plans::plan_delete(api, def, stored, plan).await
        }
        _ => Err(ApiError::bad_request("unsupported resource")),
    }
}

/// `PUT /v2.0/<collection>/<id>/<action>`.
pub async fn action(
    api: &Api,
    ctx: &Ctx,
    def: &ResourceDef,
    id: &str,
    action: &str,
    body: Value,
) -> ApiResult<Value> {
    match (def.collection, action) {
        ("routers", "add_router_interface") => routers::add_interface(api, ctx, id, body).await,
        ("routers", "remove_router_interface") => {
            routers::remove_interface(api, ctx, id, body).await
        }
        ("address_groups", "add_addresses") => {
            address_groups::change_addresses(api, ctx, id, address_groups::Change::Add, body).await
        }
        ("address_groups", "remove_addresses") => {
            let change = address_groups::Change::Remove;
            address_groups::change_addresses(api, ctx, id, change, body).await
        }
        ("trunks", _) => crate::trunks::action(api, ctx, id, action, body).await,
        _ => Err(ApiError::no_such_resource()),
    }
}

/// Applies validated changes to an object and plans the write.
fn apply_changes(def: &ResourceDef, stored: Stored, changes: Obj, plan: &mut Plan) -> Obj {
    let mut obj = stored.obj.clone();
    obj.extend(changes);
    plan.update(def, &stored, &mut obj);
    obj
}

/// First phase of deleting an object that others may be referring to concurrently: marks it as being
/// deleted (it disappears from reads, and every plan that pinned it fails), so that a check for
/// references made after this is final. `None`: the object changed meanwhile.
async fn mark_deleting(api: &Api, def: &ResourceDef, stored: &Stored) -> ApiResult<Option<Stored>> {
    let mut marked = stored.obj.clone();
    marked.insert("_deleting".into(), Value::Bool(true));
    let mut plan = Plan::default();
    plan.put_raw(def, stored, &marked);
    Ok(api.db.commit_at(plan).await?.map(|rev| Stored {
        obj: marked,
        rev,
        created: stored.created,
    }))
}

/// A two-phase delete: marks the object ([`mark_deleting`]), then lets `finish` check references and
/// commit the deletion (`finish` keeps the marked object up to date if it commits in steps). Should
/// `finish` fail (the object is in use, or the store failed), the mark is removed again: a failed
/// delete leaves the object as it was, or as the steps that did commit left it.
async fn two_phase_delete(
    api: &Api,
    def: &ResourceDef,
    stored: &Stored,
    finish: impl AsyncFnOnce(&mut Stored) -> ApiResult<()>,
) -> ApiResult<Deletion> {
    let Some(mut marked) = mark_deleting(api, def, stored).await? else {
        return Ok(Deletion::Retry);
    };
    match finish(&mut marked).await {
        Ok(()) => Ok(Deletion::Done),
        Err(e) => {
            unmark_deleting(api, def, &marked).await?;
            Err(e)
        }
    }
}

/// Undoes [`mark_deleting`] when the object turned out to be in use or the deletion failed.
async fn unmark_deleting(api: &Api, def: &ResourceDef, marked: &Stored) -> ApiResult<()> {
    let mut obj = marked.obj.clone();
    obj.remove("_deleting");
    let mut plan = Plan::default();
    plan.put_raw(def, marked, &obj);
    api.db.commit(plan).await?;
    Ok(())
}

/// Creates a port on the server's own behalf (router and floating IP ports), planned into `plan`.
pub(crate) async fn plan_internal_port(api: &Api, body: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let admin = Ctx {
        project_id: String::new(),
        is_admin: true,
        read_only: false,
    };
    let obj = input::prepare_create(&PORT, &admin, body)?;
    ports::plan_create(api, &admin, ports::Requester::Service, obj, plan).await
}

pub(crate) use self::floatingips::follow_port;
pub(crate) use self::ipam::Cursors;
pub(crate) use self::ports::{ipv4_address, release_port, set_binding};
pub(crate) use self::routers::INTERFACE_OWNER;
