//! Security groups and their rules, including each project's `default` group.

use std::collections::{HashMap, HashSet};

use model::resources::{SECURITY_GROUP, SECURITY_GROUP_RULE};
use model::validate::{PROTOCOLS, parse_cidr};
use serde_json::{Value, json};

use super::{Answer, Deletion, two_phase_delete};
use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::index::{PORTS_BY_SECURITY_GROUP, RULES_BY_GROUP, RULES_BY_REMOTE_GROUP};
use crate::repo::{Attempts, Obj, Plan, Stored, new_id, now, str_field};

fn default_key(project: &str) -> String {
    format!("/default-sg/{project}")
}

/// The id of a project's default group, if it exists.
pub async fn default_group_id(api: &Api, project: &str) -> ApiResult<Option<String>> {
    Ok(api
        .db
        .store
        .get(&default_key(project))
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

fn new_rule(sg: &Obj, direction: &str, ethertype: &str, remote_group: Option<&str>) -> Obj {
    let ts = now();
    let project = str_field(sg, "project_id");
    let rule = json!({
        "id": new_id(), "tenant_id": project, "project_id": project,
        "security_group_id": str_field(sg, "id"), "direction": direction, "ethertype": ethertype,
        "protocol": null, "port_range_min": null, "port_range_max": null,
        "remote_ip_prefix": null, "remote_group_id": remote_group, "remote_address_group_id": null,
        "normalized_cidr": null, "belongs_to_default_sg": sg.contains_key("_default"),
        "description": "", "created_at": ts, "updated_at": ts, "revision_number": 0,
    });
    rule.as_object().cloned().unwrap_or_default()
}

/// Creates the project's `default` group if it does not exist yet.
pub async fn ensure_default(api: &Api, project: &str) -> ApiResult<()> {
    if project.is_empty() || default_group_id(api, project).await?.is_some() {
        return Ok(());
    }
    let admin = Ctx {
        project_id: project.to_string(),
        is_admin: true,
        read_only: false,
    };
    let body = json!({"description": "Default security group"});
    let mut sg = crate::input::prepare_create(
        &SECURITY_GROUP,
        &admin,
        body.as_object().cloned().unwrap_or_default(),
    )?;
    // The one group that may be called `default` (the API refuses the name).
    sg.insert("name".into(), "default".into());
    sg.insert("_default".into(), Value::Bool(true));
    sg.insert("shared".into(), Value::Bool(false));
    let id = str_field(&sg, "id").to_string();
    let mut plan = Plan::default();
    plan.claim(default_key(project), &id);
    plan.create(&SECURITY_GROUP, &sg);
    for ethertype in ["IPv4", "IPv6"] {
        plan.create(
            &SECURITY_GROUP_RULE,
            &new_rule(&sg, "egress", ethertype, None),
        );
        plan.create(
            &SECURITY_GROUP_RULE,
            &new_rule(&sg, "ingress", ethertype, Some(&id)),
        );
    }
    // Losing the race means another request created it: fine either way.
    api.db.commit(plan).await?;
    Ok(())
}

/// Fills in `security_group_rules`, each rule shown as Neutron shows rules inside a group: read back
/// (show, update, list) they carry `standard_attr_id` and `tags`, and in a list
/// `belongs_to_default_sg` is null. A list, which reads every group, reads every rule; one group
/// (created, shown, updated) reads its own rules.
pub async fn expand(api: &Api, answer: Answer, groups: &mut [Obj]) -> ApiResult<()> {
    let rules = if answer == Answer::Listed {
        api.db.list(&SECURITY_GROUP_RULE).await?
    } else {
        let ids = groups.iter().map(|g| str_field(g, "id"));
        let found = ids.map(|id| api.db.find(&RULES_BY_GROUP, id));
        futures::future::try_join_all(found)
            .await?
            .into_iter()
            .flatten()
            .collect()
    };
    let mut by_group: HashMap<String, Vec<Value>> = HashMap::new();
    for rule in rules {
        let sg = str_field(&rule.obj, "security_group_id").to_string();
        let standard_attr_id = rule.standard_attr_id();
        let mut obj = rule.obj;
        if answer != Answer::Created {
            obj.insert("standard_attr_id".into(), standard_attr_id.into());
            obj.insert("tags".into(), json!([]));
        }
        if answer == Answer::Listed {
            obj.insert("belongs_to_default_sg".into(), Value::Null);
        }
        by_group
            .entry(sg)
            .or_default()
            .push(crate::query::render(obj, &[]));
    }
    for g in groups {
        let rules = by_group.remove(str_field(g, "id")).unwrap_or_default();
        g.insert("security_group_rules".into(), Value::Array(rules));
    }
    Ok(())
}

/// A new group with its egress rules, which count against the project's rule quota (checked, as
/// Neutron checks its default rules' number before it creates a group).
pub async fn plan_create(_api: &Api, mut sg: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    sg.insert("shared".into(), Value::Bool(false));
    plan.enforce_quota(&SECURITY_GROUP_RULE);
    plan.create(&SECURITY_GROUP, &sg);
    for ethertype in ["IPv4", "IPv6"] {
        plan.create(
            &SECURITY_GROUP_RULE,
            &new_rule(&sg, "egress", ethertype, None),
        );
    }
    Ok(sg)
}

/// Whether any port is in group `id`.
async fn in_use(api: &Api, id: &str) -> ApiResult<bool> {
    api.db.any(&PORTS_BY_SECURITY_GROUP, id).await
}

fn group_in_use(id: &str) -> ApiError {
    ApiError::conflict("SecurityGroupInUse", format!("Security Group {id} in use."))
}

/// Changes a group; the project's `default` group keeps its name (other attributes may change),
/// and a group that ports use keeps its `stateful` (409 `SecurityGroupInUse`, as Neutron).
pub async fn plan_update(
    api: &Api,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    if let Some(stateful) = changes.get("stateful")
        && stored.obj.get("stateful") != Some(stateful)
        && in_use(api, stored.id()).await?
    {
        return Err(group_in_use(stored.id()));
    }
    if stored.obj.contains_key("_default") && changes.contains_key("name") {
        return Err(ApiError::conflict(
            "SecurityGroupCannotUpdateDefault",
            "Updating default security group not allowed.",
        ));
    }
    Ok(super::apply_changes(&SECURITY_GROUP, stored, changes, plan))
}

pub async fn plan_delete(api: &Api, ctx: &Ctx, stored: Stored) -> ApiResult<Deletion> {
    if stored.obj.contains_key("_default") && !ctx.is_admin {
        return Err(ApiError::conflict(
            "SecurityGroupCannotRemoveDefault",
            "Insufficient rights for removing default security group.",
        ));
    }
    two_phase_delete(
        api,
        &SECURITY_GROUP,
        &stored,
        async |marked: &mut Stored| finish_delete(api, marked).await,
    )
    .await
}

/// Deletes a group marked for deletion with its rules (and the rules of other groups that refer to
/// it), unless ports still use it.
async fn finish_delete(api: &Api, marked: &Stored) -> ApiResult<()> {
    let id = marked.id().to_string();
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        if in_use(api, &id).await? {
            return Err(group_in_use(&id));
        }
        let mut plan = Plan::default();
        let mut rules = api.db.find(&RULES_BY_GROUP, &id).await?;
        rules.extend(api.db.find(&RULES_BY_REMOTE_GROUP, &id).await?);
        // A rule of the group that refers to the group itself is found twice.
        let mut deleted = HashSet::new();
        for rule in rules {
            if deleted.insert(rule.id().to_string()) {
                plan.delete(&SECURITY_GROUP_RULE, &rule);
            }
        }
        if marked.obj.contains_key("_default") {
            plan.release(default_key(str_field(&marked.obj, "project_id")));
        }
        plan.delete(&SECURITY_GROUP, marked);
        if api.db.commit(plan).await? {
            return Ok(());
        }
    }
}

fn protocol_number(p: &str) -> Option<u8> {
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == p)
        .map(|(_, n)| *n)
        .or_else(|| p.parse().ok())
}

/// Protocol numbers whose rules may have port ranges (TCP, UDP, DCCP, SCTP, UDP-Lite).
const PORT_PROTOCOLS: &[u8] = &[6, 17, 33, 132, 136];

/// Port ranges are checked against the protocol: ports for TCP-like protocols, type/code for ICMP.
fn check_ports(rule: &Obj) -> ApiResult<()> {
    let min = rule.get("port_range_min").and_then(Value::as_i64);
    let max = rule.get("port_range_max").and_then(Value::as_i64);
    if min.is_none() && max.is_none() {
        return Ok(());
    }
    let Some(proto) = rule.get("protocol").and_then(Value::as_str) else {
        return Err(ApiError::bad(
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        ));
    };
    match protocol_number(proto) {
        Some(p) if PORT_PROTOCOLS.contains(&p) => {
            if min == Some(0) || max == Some(0) {
                return Err(ApiError::bad(
                    "SecurityGroupInvalidPortValue",
                    "Invalid value for port 0",
                ));
            }
            match (min, max) {
                (Some(a), Some(b)) if a <= b => Ok(()),
                _ => Err(ApiError::bad(
                    "SecurityGroupInvalidPortRange",
                    "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                )),
            }
        }
        Some(1 | 58) => {
            for (name, v) in [("type", min), ("code", max)] {
                if v.is_some_and(|v| !(0..=255).contains(&v)) {
                    return Err(ApiError::bad(
                        "SecurityGroupInvalidIcmpValue",
                        format!(
                            "Invalid value for ICMP {name} (port_range_{}) {}. It must be 0 to 255.",
                            if name == "type" { "min" } else { "max" },
                            v.unwrap_or_default()
                        ),
                    ));
                }
            }
            if min.is_none() && max.is_some() {
                return Err(ApiError::bad(
                    "SecurityGroupMissingIcmpType",
                    format!(
                        "ICMP code (port-range-max) {} is provided but ICMP type (port-range-min) is missing.",
                        max.unwrap_or_default()
                    ),
                ));
            }
            Ok(())
        }
        _ => Err(ApiError::bad(
            "SecurityGroupInvalidProtocolForPort",
            format!(
                "Invalid protocol {proto} for port range, only supported for TCP, UDP, UDPLITE, SCTP and DCCP."
            ),
        )),
    }
}

/// Neutron's canonical forms: ICMP under IPv6 is `ipv6-icmp`, and the whole port range 1-65535 is
/// no range at all.
fn canonicalize(rule: &mut Obj) {
    if str_field(rule, "ethertype") == "IPv6" {
        let canonical = match str_field(rule, "protocol") {
            "icmp" | "icmpv6" => Some("ipv6-icmp"),
            "1" => Some("58"),
            _ => None,
        };
        if let Some(p) = canonical {
            rule.insert("protocol".into(), p.into());
        }
    }
    let min = rule.get("port_range_min").and_then(Value::as_i64);
    let max = rule.get("port_range_max").and_then(Value::as_i64);
    if (min, max) == (Some(1), Some(65535)) {
        rule.insert("port_range_min".into(), Value::Null);
        rule.insert("port_range_max".into(), Value::Null);
    }
}

/// Protocols that only exist over IPv6.
const IPV6_ONLY_PROTOCOLS: &[u8] = &[41, 43, 44, 58, 59, 60];

/// The checks Neutron makes on a rule's own attributes, in Neutron's order; fills in
/// `normalized_cidr`.
fn check_rule(rule: &mut Obj) -> ApiResult<()> {
    canonicalize(rule);
    check_ports(rule)?;
    let ethertype = str_field(rule, "ethertype").to_string();
    let normalized = match rule.get("remote_ip_prefix").and_then(Value::as_str) {
        Some(prefix) => {
            let net = parse_cidr(prefix).ok_or_else(|| {
                ApiError::bad(
                    "InvalidCIDR",
                    format!("Invalid input for operation: {prefix} is not a valid CIDR."),
                )
            })?;
            if net.addr().is_ipv4() != (ethertype == "IPv4") {
                return Err(ApiError::bad(
                    "SecurityGroupRuleParameterConflict",
                    format!("Conflicting value ethertype {ethertype} for CIDR {prefix}"),
                ));
            }
            Value::String(net.trunc().to_string())
        }
        None => Value::Null,
    };
    rule.insert("normalized_cidr".into(), normalized);
    let proto = str_field(rule, "protocol");
    if ethertype == "IPv4"
        && protocol_number(proto).is_some_and(|p| IPV6_ONLY_PROTOCOLS.contains(&p))
        && proto != "icmpv6"
    {
        return Err(ApiError::bad(
            "SecurityGroupEthertypeConflictWithProtocol",
            format!("Invalid ethertype {ethertype} for protocol {proto}."),
        ));
    }
    let remotes = [
        "remote_ip_prefix",
        "remote_group_id",
        "remote_address_group_id",
    ]
    .iter()
    .filter(|k| rule.get(**k).is_some_and(|v| !v.is_null()))
    .count();
    if remotes > 1 {
        return Err(ApiError::bad(
            // Neutron's spelling.
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided.",
        ));
    }
    Ok(())
}

/// The fields that make two rules the same rule.
fn rule_identity(rule: &Obj) -> Vec<Value> {
    let norm = |v: Option<&Value>| v.cloned().unwrap_or(Value::Null);
    let proto = rule
        .get("protocol")
        .and_then(Value::as_str)
        .and_then(protocol_number)
        .map(Value::from)
        .unwrap_or(Value::Null);
    vec![
        norm(rule.get("direction")),
        norm(rule.get("ethertype")),
        proto,
        norm(rule.get("port_range_min")),
        norm(rule.get("port_range_max")),
        norm(rule.get("normalized_cidr")),
        norm(rule.get("remote_group_id")),
        norm(rule.get("remote_address_group_id")),
    ]
}

pub async fn plan_create_rule(
    api: &Api,
    ctx: &Ctx,
    mut rule: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let sg_id = str_field(&rule, "security_group_id").to_string();
    let sg = api.db.load(&SECURITY_GROUP, &sg_id).await?;
    // Policy first: rules go only into the caller's own groups.
    if sg.as_ref().is_some_and(|sg| !ctx.owns(&sg.obj)) {
        return Err(ApiError::policy("create_security_group_rule"));
    }
    check_rule(&mut rule)?;
    if let Some(remote) = rule.get("remote_group_id").and_then(Value::as_str) {
        // Another project's group is answered as if it did not exist.
        let group = api.db.load(&SECURITY_GROUP, remote).await?;
        match group.filter(|r| ctx.owns(&r.obj)) {
            Some(r) if r.id() != sg_id => plan.pin_obj(&SECURITY_GROUP, &r),
            Some(_) => {}
            None => {
                return Err(ApiError::not_found(
                    "SecurityGroupNotFound",
                    format!("Security group {remote} does not exist"),
                ));
            }
        }
    }
    if let Some(remote) = rule.get("remote_address_group_id").and_then(Value::as_str) {
        super::address_groups::check_remote(api, ctx, remote, plan).await?;
    }
    let Some(sg) = sg else {
        return Err(ApiError::not_found(
            "SecurityGroupNotFound",
            format!("Security group {sg_id} does not exist"),
        ));
    };
    // Rules belong to their group's project.
    let project = str_field(&sg.obj, "project_id").to_string();
    rule.insert("tenant_id".into(), project.clone().into());
    rule.insert("project_id".into(), project.into());
    rule.insert(
        "belongs_to_default_sg".into(),
        Value::Bool(sg.obj.contains_key("_default")),
    );
    let identity = rule_identity(&rule);
    for other in api.db.find(&RULES_BY_GROUP, &sg_id).await? {
        if rule_identity(&other.obj) == identity {
            return Err(ApiError::conflict(
                "SecurityGroupRuleExists",
                format!(
                    "Security group rule already exists. Rule id is {}.",
                    other.id()
                ),
            ));
        }
    }
    plan.update(&SECURITY_GROUP, &sg, &mut sg.obj.clone());
    plan.create(&SECURITY_GROUP_RULE, &rule);
    Ok(rule)
}

pub async fn plan_delete_rule(api: &Api, stored: Stored, plan: &mut Plan) -> ApiResult<()> {
    if let Some(sg) = api
        .db
        .load(&SECURITY_GROUP, str_field(&stored.obj, "security_group_id"))
        .await?
    {
        plan.update(&SECURITY_GROUP, &sg, &mut sg.obj.clone());
    }
    plan.delete(&SECURITY_GROUP_RULE, &stored);
    Ok(())
}
