//! Address groups: named sets of CIDRs that security group rules refer to
//! (`remote_address_group_id`), with Neutron's `add_addresses` and `remove_addresses` actions.
//!
//! Addresses are kept normalised (`10.0.0.1/24` is `10.0.0.0/24`, a bare address a host prefix),
//! each once, in the order they were added. A group that a rule refers to cannot be deleted (409
//! `AddressGroupInUse`); a rule that names a group pins it, and the delete is two-phase (see
//! [`super::two_phase_delete`]), so that a rule cannot come to refer to a deleted group.

use std::collections::HashSet;

use model::resources::ADDRESS_GROUP;
use model::validate::{echo, parse_cidr};
use serde_json::{Value, json};

use super::{Deletion, check_owner, two_phase_delete};
use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::index::RULES_BY_ADDRESS_GROUP;
use crate::repo::{Attempts, Obj, Plan, Stored};

/// The addresses of a request, normalised, each once, in the order given. `refuse` words the
/// error for one that is not an address or CIDR.
fn normalize(addresses: &[Value], refuse: impl Fn(&Value) -> ApiError) -> ApiResult<Vec<String>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in addresses {
        let net = item
            .as_str()
            .and_then(parse_cidr)
            .ok_or_else(|| refuse(item))?;
        let normalized = net.trunc().to_string();
        if seen.insert(normalized.clone()) {
            out.push(normalized);
        }
    }
    Ok(out)
}

/// The addresses an object holds.
fn held(obj: &Obj) -> Vec<String> {
    obj.get("addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

pub fn plan_create(mut group: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let given = group.get("addresses").and_then(Value::as_array);
    // The attribute map's validator has checked every entry already.
    let addresses = normalize(given.map_or(&[][..], Vec::as_slice), |item| {
        ApiError::bad_request(format!(
            "Invalid input for addresses. Reason: '{item}' is not a valid IP subnet."
        ))
    })?;
    group.insert("addresses".into(), json!(addresses));
    plan.create(&ADDRESS_GROUP, &group);
    Ok(group)
}

pub async fn plan_delete(api: &Api, stored: Stored) -> ApiResult<Deletion> {
    two_phase_delete(api, &ADDRESS_GROUP, &stored, async |marked: &mut Stored| {
        let id = marked.id().to_string();
        let mut attempts = Attempts::new();
        loop {
            attempts.begin()?;
            let rules = api.db.find(&RULES_BY_ADDRESS_GROUP, &id).await?;
            if !rules.is_empty() {
                return Err(ApiError::conflict(
                    "AddressGroupInUse",
                    format!("Address group {id} is in use on one or more security group rules."),
                ));
            }
            let mut plan = Plan::default();
            plan.delete(&ADDRESS_GROUP, marked);
            if api.db.commit(plan).await? {
                return Ok(());
            }
        }
    })
    .await
}

/// Which action: `add_addresses` or `remove_addresses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Remove,
}

/// `PUT /v2.0/address-groups/<id>/add_addresses` or `remove_addresses` with
/// `{"addresses": [...]}`: adding an address the group has is refused (400
/// `AddressesAlreadyExist`), as is removing one it lacks (404 `AddressesNotFound`), naming all
/// such addresses. Answers the group as Neutron answers an action: with `shared` and
/// `standard_attr_id`.
pub async fn change_addresses(
    api: &Api,
    ctx: &Ctx,
    id: &str,
    change: Change,
    body: Value,
) -> ApiResult<Value> {
    let Some(given) = body.get("addresses").and_then(Value::as_array) else {
        return Err(ApiError::bad_request(
            "Invalid input for addresses. Reason: not a list.",
        ));
    };
    let requested = normalize(given, |item| {
        let shown = item.as_str().map_or_else(|| item.to_string(), String::from);
        ApiError::bad(
            "AddrFormatError",
            format!("invalid IPNetwork {}", echo(&shown)),
        )
    })?;
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        let stored = api.visible(ctx, &ADDRESS_GROUP, id).await?;
        check_owner(ctx, &ADDRESS_GROUP, &stored.obj, "update")?;
        let mut addresses = held(&stored.obj);
        let holds: HashSet<&String> = addresses.iter().collect();
        let (present, absent): (Vec<&String>, Vec<&String>) =
            requested.iter().partition(|a| holds.contains(a));
        let list = |a: &[&String]| {
            let quoted: Vec<String> = a.iter().map(|a| format!("'{a}'")).collect();
            format!("[{}]", quoted.join(", "))
        };
        match change {
            Change::Add if !present.is_empty() => {
                return Err(ApiError::bad(
                    "AddressesAlreadyExist",
                    format!(
                        "Addresses {} already exist in the address group {id}.",
                        list(&present)
                    ),
                ));
            }
            Change::Remove if !absent.is_empty() => {
                return Err(ApiError::not_found(
                    "AddressesNotFound",
                    format!(
                        "Addresses {} not found in the address group {id}.",
                        list(&absent)
                    ),
                ));
            }
            Change::Add => addresses.extend(absent.into_iter().cloned()),
            Change::Remove => {
                let removed: HashSet<&String> = present.into_iter().collect();
                addresses.retain(|a| !removed.contains(a));
            }
        }
        let standard_attr_id = stored.standard_attr_id();
        let mut group = stored.obj.clone();
        if !requested.is_empty() {
            group.insert("addresses".into(), json!(addresses));
            // Neutron keeps each address in a row of its own that revises the group: one revision
            // per address added or removed (the update below makes the last).
            let revision = group.get("revision_number").and_then(Value::as_u64);
            let more = requested.len() as u64 - 1;
            group.insert(
                "revision_number".into(),
                (revision.unwrap_or(0) + more).into(),
            );
            let mut plan = Plan::default();
            plan.update(&ADDRESS_GROUP, &stored, &mut group);
            if !api.db.commit(plan).await? {
                continue;
            }
        }
        group.insert("shared".into(), Value::Bool(false));
        group.insert("standard_attr_id".into(), standard_attr_id.into());
        return Ok(json!({"address_group": crate::query::render(group, &[])}));
    }
}

/// A rule's `remote_address_group_id`: the group must exist and be the caller's (else 404
/// `AddressGroupNotFound`, as for a group that does not exist); the plan pins it.
pub async fn check_remote(api: &Api, ctx: &Ctx, id: &str, plan: &mut Plan) -> ApiResult<()> {
    match api.db.load(&ADDRESS_GROUP, id).await? {
        Some(group) if ctx.owns(&group.obj) => {
            plan.pin_obj(&ADDRESS_GROUP, &group);
            Ok(())
        }
        _ => Err(ApiError::object_not_found(
            ADDRESS_GROUP.error_name,
            ADDRESS_GROUP.singular,
            id,
        )),
    }
}
