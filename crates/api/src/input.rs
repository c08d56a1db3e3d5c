//! Request bodies checked against a resource's attribute map: unknown and read-only attributes,
//! value validation, and defaults.

use axum::http::StatusCode;
use std::borrow::Cow;

use model::validate::{Refusal, echo};
use model::{Default, ResourceDef};
use serde_json::{Map, Value};

use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::repo::{Obj, new_id, now};

/// The objects of a create body: `{"network": {...}}` or a bulk `{"networks": [...]}`.
pub fn create_items(def: &ResourceDef, body: &Value) -> ApiResult<(Vec<Obj>, bool)> {
    let Some(map) = body.as_object() else {
        return Err(ApiError::bad_request("Body contains invalid data"));
    };
    if let Some(list) = map.get(def.collection) {
        let items = list
            .as_array()
            .ok_or_else(|| ApiError::bad_request("Body contains invalid data"))?;
        if items.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Resources required: {} is empty",
                def.collection
            )));
        }
        let objs = items
            .iter()
            .map(|i| {
                i.as_object()
                    .cloned()
                    .ok_or_else(|| ApiError::bad_request("Body contains invalid data"))
            })
            .collect::<ApiResult<_>>()?;
        return Ok((objs, true));
    }
    match map.get(def.singular) {
        Some(Value::Object(o)) => Ok((vec![o.clone()], false)),
        _ => Err(ApiError::bad_request(format!(
            "Unable to find '{}' in request body",
            def.singular
        ))),
    }
}

/// The single object of an update body `{"network": {...}}`.
pub fn update_item(def: &ResourceDef, body: &Value) -> ApiResult<Obj> {
    match body.get(def.singular) {
        Some(Value::Object(o)) => Ok(o.clone()),
        _ => Err(ApiError::bad_request(format!(
            "Unable to find '{}' in request body",
            def.singular
        ))),
    }
}

/// The error for a refused attribute value, typed as Neutron types it.
pub(crate) fn invalid(attr: &str, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Invalid(reason) => {
            ApiError::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
        }
        Refusal::Unconvertible(reason) => ApiError::invalid_input(reason),
        Refusal::Typed(status, kind, message) => ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            kind,
            message,
        ),
    }
}

fn unknown(def: &ResourceDef, given: &Obj) -> ApiResult<()> {
    let unknown: Vec<Cow<str>> = given
        .keys()
        .filter(|k| def.attr(k).is_none())
        .map(|k| echo(k))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )))
    }
}

/// A create body made complete: validated values, defaults, id, project and timestamps. Attributes
/// whose default is [`Default::Computed`] are left out for the resource handler to fill in.
pub fn prepare_create(def: &ResourceDef, ctx: &Ctx, given: Obj) -> ApiResult<Obj> {
    unknown(def, &given)?;
    let mut obj = Map::new();
    for attr in def.all_attrs() {
        match given.get(attr.name) {
            Some(_) if !attr.post => {
                return Err(ApiError::bad_request(format!(
                    "Attribute '{}' not allowed in POST",
                    attr.name
                )));
            }
            Some(v) => {
                let v = (attr.validate.check)(v).map_err(|r| invalid(attr.name, r))?;
                obj.insert(attr.name.to_string(), v);
            }
            None => match attr.default {
                Default::Required => {
                    return Err(ApiError::bad_request(format!(
                        "Failed to parse request. Required attribute '{}' not specified",
                        attr.name
                    )));
                }
                Default::Json(_) => {
                    let v = attr.default.value().unwrap_or(Value::Null);
                    obj.insert(attr.name.to_string(), v);
                }
                Default::Computed => {}
            },
        }
    }
    let project = match (obj.get("project_id"), obj.get("tenant_id")) {
        (Some(p), Some(t)) if p != t => {
            return Err(ApiError::bad_request(
                "'project_id' and 'tenant_id' do not match",
            ));
        }
        (Some(Value::String(p)), _) | (_, Some(Value::String(p))) => p.clone(),
        _ => ctx.project_id.clone(),
    };
    if project != ctx.project_id && !ctx.is_admin {
        return Err(ApiError::bad_request(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges",
        ));
    }
    obj.insert("id".into(), new_id().into());
    obj.insert("tenant_id".into(), project.clone().into());
    obj.insert("project_id".into(), project.into());
    // Resources without Neutron's standard attributes (networking-sfc's) have no timestamps.
    if def.attr("created_at").is_some() {
        let ts = now();
        obj.insert("created_at".into(), ts.clone().into());
        obj.insert("updated_at".into(), ts.into());
        obj.insert("revision_number".into(), 0.into());
    }
    Ok(obj)
}

/// An update body checked: every attribute known, updatable and valid.
pub fn prepare_update(def: &ResourceDef, given: Obj) -> ApiResult<Obj> {
    unknown(def, &given)?;
    let mut out = Map::new();
    for (name, v) in given {
        let attr = def.attr(&name).expect("checked above");
        if !attr.put {
            return Err(ApiError::bad_request(format!(
                "Cannot update read-only attribute {name}"
            )));
        }
        let v = (attr.validate.check)(&v).map_err(|r| invalid(&name, r))?;
        out.insert(name, v);
    }
    Ok(out)
}
