//! What creating, changing and deleting each SFC object means, with networking-sfc's checks, in
//! its order, and its errors:
//! - a port pair's ports must be ones the caller sees (404 `PortPairPortNotFound`), each with a
//!   `device_id` (400 `PortPairIngressNoHost` / `PortPairEgressNoHost`), the same one (400
//!   `PortPairIngressEgressDifferentHost`); an (ingress, egress) pair is used once (400
//!   `PortPairIngressEgressInUse`), but a port may be in several pairs;
//! - a group's pairs share one correlation (400 `InconsistentCorrelations`) and are in no other group
//!   (409 `PortPairInUse`); a tap group has at most one pair; `group_id` is the lowest free;
//! - a flow classifier's port ranges need TCP or UDP and min ≤ max, its prefixes its ethertype; it
//!   may not overlap another classifier of the caller's (400 `FlowClassifierInConflict`: same
//!   ethertype, overlapping protocol, prefixes, port ranges and logical ports, a missing value
//!   overlapping everything);
//! - a chain's groups may not be exactly another chain's (409 `InvalidPortPairGroups`) nor two taps
//!   in a row; its classifiers are in no other chain (409 `FlowClassifierInUse`) and overlap no
//!   other chain's (400 `PortChainFlowClassifierInConflict`, the logical ports left out); on
//!   create, its pairs' correlations are null or the chain's; `chain_id` is given or the lowest
//!   free, and unique (400 `PortChainChainIdInConflict`);
//! - a pair in a group, a group or classifier in a chain are not deleted (409 `...InUse`).
//!
//! What the caller does not see (another project's, for non-admins) is looked up as absent, and
//! the conflict checks look at the caller's objects (all, for admins), as networking-sfc's queries
//! do. Unique values are claims (`/sfc/port-pair/<ingress>/<egress>`, `/sfc/group-id/<n>`,
//! `/sfc/chain-id/<n>`). Limitation: the overlap checks read lists without pinning them, so two
//! concurrent creates of overlapping classifiers or chains may both succeed.

use std::collections::BTreeSet;

use ipnet::IpNet;
use model::ResourceDef;
use model::resources::PORT;
use model::sfc::{FLOW_CLASSIFIER, MAX_CHAIN_ID, PORT_CHAIN, PORT_PAIR, PORT_PAIR_GROUP};
use model::validate::echo;
use serde_json::{Value, json};

use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::repo::{Obj, Plan, Stored, str_field};
use crate::resources::Deletion;

fn is(def: &ResourceDef, other: &ResourceDef) -> bool {
    std::ptr::eq(def, other)
}

/// 400 `InvalidInput`-like error of networking-sfc's own type.
fn invalid(kind: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad(kind, message)
}

fn in_use(kind: &str, message: impl Into<String>) -> ApiError {
    ApiError::conflict(kind, message)
}

/// The ids in a list attribute.
fn ids(obj: &Obj, name: &str) -> Vec<String> {
    obj.get(name)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

fn set_ids(obj: &mut Obj, name: &str, ids: &[String]) {
    obj.insert(name.into(), json!(ids));
}

fn networks(objs: &[&Obj]) -> Vec<String> {
    let set: BTreeSet<String> = objs.iter().flat_map(|o| ids(o, "_network_ids")).collect();
    set.into_iter().collect()
}

/// An object as this plan leaves it, if it writes it, or as stored.
fn current(plan: &Plan, def: &ResourceDef, mut stored: Stored) -> Stored {
    if let Some(obj) = plan.written(def, stored.id()) {
        stored.obj = obj;
    }
    stored
}

/// An object the caller sees (its own, or any for admins), as this plan leaves it.
async fn seen(
    api: &Api,
    ctx: &Ctx,
    plan: &Plan,
    def: &ResourceDef,
    id: &str,
) -> ApiResult<Option<Stored>> {
    Ok(api
        .db
        .load(def, id)
        .await?
        .map(|s| current(plan, def, s))
        .filter(|s| ctx.owns(&s.obj)))
}

/// Every object of a kind the caller sees.
async fn all_seen(api: &Api, ctx: &Ctx, plan: &Plan, def: &ResourceDef) -> ApiResult<Vec<Stored>> {
    Ok(api
        .db
        .list(def)
        .await?
        .into_iter()
        .map(|s| current(plan, def, s))
        .filter(|s| ctx.owns(&s.obj))
        .collect())
}

fn pair_claim(ingress: &str, egress: &str) -> String {
    format!("/sfc/port-pair/{ingress}/{egress}")
}
fn group_id_claim(n: i64) -> String {
    format!("/sfc/group-id/{n}")
}
fn chain_id_claim(n: i64) -> String {
    format!("/sfc/chain-id/{n}")
}

pub async fn plan_create(
    api: &Api,
    ctx: &Ctx,
    def: &ResourceDef,
    obj: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let obj = with_defaults(def, obj)?;
    if is(def, &PORT_PAIR) {
        create_pair(api, ctx, obj, plan).await
    } else if is(def, &PORT_PAIR_GROUP) {
        create_group(api, ctx, obj, plan).await
    } else if is(def, &FLOW_CLASSIFIER) {
        create_classifier(api, ctx, obj, plan).await
    } else {
        create_chain(api, ctx, obj, plan).await
    }
}

/// Runs the converters on the `null` defaults of what a create left out, as networking-sfc
/// converts its defaults (`null` parameters become their defaults, a `null` ethertype `IPv4`).
fn with_defaults(def: &ResourceDef, mut obj: Obj) -> ApiResult<Obj> {
    for attr in def.all_attrs().filter(|a| a.post) {
        if let Some(value) = obj.get_mut(attr.name)
            && value.is_null()
        {
            *value =
                (attr.validate.check)(value).map_err(|r| crate::input::invalid(attr.name, r))?;
        }
    }
    Ok(obj)
}

pub async fn plan_update(
    api: &Api,
    ctx: &Ctx,
    def: &ResourceDef,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let mut obj = stored.obj.clone();
    if is(def, &PORT_PAIR_GROUP) && changes.contains_key("port_pairs") {
        let wanted = ids(&changes, "port_pairs");
        set_group_pairs(api, ctx, &stored, &mut obj, &wanted, plan).await?;
    }
    if is(def, &PORT_CHAIN) {
        if changes.contains_key("flow_classifiers") {
            let wanted = ids(&changes, "flow_classifiers");
            set_chain_classifiers(api, ctx, &mut obj, &wanted, plan).await?;
        }
        if changes.contains_key("port_pair_groups") {
            let wanted = ids(&changes, "port_pair_groups");
            set_chain_groups(api, ctx, &mut obj, &wanted, plan).await?;
        }
        obj.insert(
            "_network_ids".into(),
            json!(chain_networks(api, plan, &obj).await?),
        );
    }
    for (k, v) in changes {
        if !(k == "port_pairs" || k == "flow_classifiers" || k == "port_pair_groups") {
            obj.insert(k, v);
        }
    }
    plan.put_raw(def, &stored, &obj);
    Ok(obj)
}

pub async fn plan_delete(
    api: &Api,
    def: &ResourceDef,
    stored: Stored,
    plan: &mut Plan,
) -> ApiResult<Deletion> {
    let id = stored.id().to_string();
    if is(def, &PORT_PAIR) {
        if stored.obj.get("_group").is_some_and(|g| !g.is_null()) {
            return Err(in_use("PortPairInUse", format!("Port Pair {id} in use.")));
        }
        plan.release(pair_claim(
            str_field(&stored.obj, "ingress"),
            str_field(&stored.obj, "egress"),
        ));
    } else if is(def, &PORT_PAIR_GROUP) {
        if !ids(&stored.obj, "_chains").is_empty() {
            return Err(in_use(
                "PortPairGroupInUse",
                format!("Port Pair Group {id} in use."),
            ));
        }
        for pair in api
            .db
            .load_many(&PORT_PAIR, &ids_ref(&ids(&stored.obj, "port_pairs")))
            .await?
        {
            let mut obj = pair.obj.clone();
            obj.remove("_group");
            plan.put_raw(&PORT_PAIR, &pair, &obj);
        }
        if let Some(n) = stored.obj.get("group_id").and_then(Value::as_i64) {
            plan.release(group_id_claim(n));
        }
    } else if is(def, &FLOW_CLASSIFIER) {
        if stored.obj.get("_chain").is_some_and(|c| !c.is_null()) {
            return Err(in_use(
                "FlowClassifierInUse",
                format!("Flow Classifier {id} in use."),
            ));
        }
    } else {
        let mut obj = stored.obj.clone();
        set_chain_classifiers_unchecked(api, &mut obj, &[], plan).await?;
        set_chain_groups_unchecked(api, &mut obj, &[], plan).await?;
        if let Some(n) = stored.obj.get("chain_id").and_then(Value::as_i64) {
            plan.release(chain_id_claim(n));
        }
    }
    plan.delete(def, &stored);
    Ok(Deletion::Planned)
}

fn ids_ref(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

// ---- port pairs ----

async fn create_pair(api: &Api, ctx: &Ctx, mut obj: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let ingress = str_field(&obj, "ingress").to_string();
    let egress = str_field(&obj, "egress").to_string();
    let in_use = |other: &str| {
        invalid(
            "PortPairIngressEgressInUse",
            format!(
                "Port Pair with ingress port {ingress} and egress port {egress} is already used \
                 by another Port Pair {other}."
            ),
        )
    };
    let pairs = all_seen(api, ctx, plan, &PORT_PAIR).await?;
    if let Some(other) = pairs
        .iter()
        .find(|p| str_field(&p.obj, "ingress") == ingress && str_field(&p.obj, "egress") == egress)
    {
        return Err(in_use(other.id()));
    }
    let port = async |id: &str| -> ApiResult<Obj> {
        match api.db.load(&PORT, id).await? {
            Some(p) if ctx.owns(&p.obj) => Ok(p.obj),
            _ => Err(ApiError::not_found(
                "PortPairPortNotFound",
                format!("Port Pair port {} not found.", echo(id)),
            )),
        }
    };
    let ingress_port = port(&ingress).await?;
    let egress_port = port(&egress).await?;
    let device = |p: &Obj| str_field(p, "device_id").to_string();
    if device(&ingress_port).is_empty() {
        return Err(invalid(
            "PortPairIngressNoHost",
            format!("Port Pair ingress port {ingress} does not belong to a host."),
        ));
    }
    if device(&egress_port).is_empty() {
        return Err(invalid(
            "PortPairEgressNoHost",
            format!("Port Pair egress port {egress} does not belong to a host."),
        ));
    }
    if device(&ingress_port) != device(&egress_port) {
        return Err(invalid(
            "PortPairIngressEgressDifferentHost",
            format!(
                "Port Pair ingress port {ingress} and egress port {egress} not in the same host."
            ),
        ));
    }
    if !plan.claim(pair_claim(&ingress, &egress), str_field(&obj, "id"))
        || api.db.exists(&pair_claim(&ingress, &egress)).await?
    {
        // Another pair of the same ports, in this request or another project's.
        return Err(in_use(""));
    }
    let nets: BTreeSet<&str> = [&ingress_port, &egress_port]
        .iter()
        .map(|p| str_field(p, "network_id"))
        .collect();
    obj.insert("_network_ids".into(), json!(nets));
    plan.create(&PORT_PAIR, &obj);
    Ok(obj)
}

// ---- port pair groups ----

/// The correlation of a pair (a pair whose parameters lack it has none).
fn correlation(pair: &Obj) -> Value {
    pair.get("service_function_parameters")
        .and_then(|p| p.get("correlation"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The pairs `wanted` for group `group` (the caller's), checked as networking-sfc checks them.
async fn group_pairs(
    api: &Api,
    ctx: &Ctx,
    plan: &Plan,
    group: &str,
    wanted: &[String],
) -> ApiResult<Vec<Stored>> {
    let mut pairs = Vec::with_capacity(wanted.len());
    for id in wanted {
        match seen(api, ctx, plan, &PORT_PAIR, id).await? {
            Some(p) => pairs.push(p),
            None => {
                return Err(ApiError::not_found(
                    "PortPairNotFound",
                    format!("Port Pair {} not found.", echo(id)),
                ));
            }
        }
    }
    let first = pairs.first().map(|p| correlation(&p.obj));
    for pair in &pairs {
        if Some(correlation(&pair.obj)) != first {
            return Err(invalid(
                "InconsistentCorrelations",
                "Port Pair Group attempted creation included Port Pairs with inconsistent \
                 correlation types.",
            ));
        }
        let owner = str_field(&pair.obj, "_group");
        if !owner.is_empty() && owner != group {
            return Err(in_use(
                "PortPairInUse",
                format!("Port Pair {} in use.", pair.id()),
            ));
        }
    }
    Ok(pairs)
}

fn tap_with_pairs(tap: bool, pairs: usize) -> ApiResult<()> {
    if tap && pairs > 1 {
        return Err(invalid(
            "MultiplePortPairsInTapPPGNotSupported",
            "Multiple port pairs in Tap port-pair-group is not allowed.",
        ));
    }
    Ok(())
}

async fn create_group(api: &Api, ctx: &Ctx, mut obj: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let id = str_field(&obj, "id").to_string();
    let wanted = ids(&obj, "port_pairs");
    let pairs = group_pairs(api, ctx, plan, &id, &wanted).await?;
    tap_with_pairs(obj.get("tap_enabled") == Some(&json!(true)), pairs.len())?;
    let taken: BTreeSet<i64> = api
        .db
        .list(&PORT_PAIR_GROUP)
        .await?
        .iter()
        .filter_map(|g| g.obj.get("group_id").and_then(Value::as_i64))
        .collect();
    let group_id = (1..)
        .find(|n| !taken.contains(n) && !plan.is_claimed(&group_id_claim(*n)))
        .unwrap_or(1);
    plan.claim(group_id_claim(group_id), &id);
    obj.insert("group_id".into(), json!(group_id));
    for pair in &pairs {
        let mut p = pair.obj.clone();
        p.insert("_group".into(), json!(id));
        plan.put_raw(&PORT_PAIR, pair, &p);
    }
    obj.insert("port_pairs".into(), json!(wanted));
    let objs: Vec<&Obj> = pairs.iter().map(|p| &p.obj).collect();
    obj.insert("_network_ids".into(), json!(networks(&objs)));
    obj.insert("_chains".into(), json!([]));
    plan.create(&PORT_PAIR_GROUP, &obj);
    Ok(obj)
}

/// Gives a group (`stored`, changed into `obj`) the pairs `wanted`, and its chains its new networks.
async fn set_group_pairs(
    api: &Api,
    ctx: &Ctx,
    stored: &Stored,
    obj: &mut Obj,
    wanted: &[String],
    plan: &mut Plan,
) -> ApiResult<()> {
    let id = stored.id().to_string();
    let pairs = group_pairs(api, ctx, plan, &id, wanted).await?;
    tap_with_pairs(obj.get("tap_enabled") == Some(&json!(true)), pairs.len())?;
    let old = ids(&stored.obj, "port_pairs");
    for gone in api
        .db
        .load_many(&PORT_PAIR, &ids_ref(&old))
        .await?
        .into_iter()
        .filter(|p| !wanted.iter().any(|w| w == p.id()))
    {
        let gone = current(plan, &PORT_PAIR, gone);
        let mut p = gone.obj.clone();
        p.remove("_group");
        plan.put_raw(&PORT_PAIR, &gone, &p);
    }
    for pair in pairs.iter().filter(|p| !old.iter().any(|o| o == p.id())) {
        let mut p = pair.obj.clone();
        p.insert("_group".into(), json!(id));
        plan.put_raw(&PORT_PAIR, pair, &p);
    }
    set_ids(obj, "port_pairs", wanted);
    let objs: Vec<&Obj> = pairs.iter().map(|p| &p.obj).collect();
    let nets = networks(&objs);
    if nets != ids(&stored.obj, "_network_ids") {
        obj.insert("_network_ids".into(), json!(nets));
        // The group's chains touch other networks now.
        let chains = ids(&stored.obj, "_chains");
        for chain in api.db.load_many(&PORT_CHAIN, &ids_ref(&chains)).await? {
            let chain = current(plan, &PORT_CHAIN, chain);
            let mut c = chain.obj.clone();
            let mut groups = Vec::new();
            for g in ids(&c, "port_pair_groups") {
                if g == id {
                    groups.push(obj.clone());
                } else if let Some(s) = api.db.load(&PORT_PAIR_GROUP, &g).await? {
                    groups.push(current(plan, &PORT_PAIR_GROUP, s).obj);
                }
            }
            let fcs = api
                .db
                .load_many(&FLOW_CLASSIFIER, &ids_ref(&ids(&c, "flow_classifiers")))
                .await?;
            let mut all: Vec<&Obj> = groups.iter().collect();
            all.extend(fcs.iter().map(|f| &f.obj));
            c.insert("_network_ids".into(), json!(networks(&all)));
            plan.put_raw(&PORT_CHAIN, &chain, &c);
        }
    }
    Ok(())
}

// ---- flow classifiers ----

fn int(obj: &Obj, name: &str) -> Option<i64> {
    obj.get(name).and_then(Value::as_i64)
}

fn check_range(min: Option<i64>, max: Option<i64>, protocol: &str) -> ApiResult<()> {
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(invalid(
            "FlowClassifierInvalidPortRange",
            format!(
                "Invalid IP protocol port range. min_port_range={min} must be lesser or equal \
                 to max_port_range={max}."
            ),
        ));
    }
    if (min.is_some() || max.is_some()) && protocol != "tcp" && protocol != "udp" {
        return Err(invalid(
            "FlowClassifierProtocolRequiredWithPorts",
            "IP protocol must be TCP or UDP, if port range is given.",
        ));
    }
    Ok(())
}

fn prefix(obj: &Obj, name: &str) -> Option<IpNet> {
    obj.get(name)
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<IpNet>().ok())
}

fn check_prefix(obj: &Obj, name: &str) -> ApiResult<()> {
    let ethertype = str_field(obj, "ethertype");
    match prefix(obj, name) {
        Some(net) if (ethertype == "IPv4") != matches!(net, IpNet::V4(_)) => Err(invalid(
            "FlowClassifierIpPrefixFormatConflictWithEthertype",
            format!(
                "IP prefix {} format conflicts with ethertype {ethertype}.",
                str_field(obj, name)
            ),
        )),
        _ => Ok(()),
    }
}

fn either_missing_or<T: PartialEq>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> bool) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => f(a, b),
        _ => true,
    }
}

fn port_ranges_overlap(a: &Obj, b: &Obj, min: &str, max: &str) -> bool {
    let first = either_missing_or(int(a, min), int(b, max), |lo, hi| lo <= hi);
    let second = either_missing_or(int(a, max), int(b, min), |hi, lo| lo <= hi);
    first && second
}

fn prefixes_overlap(a: &Obj, b: &Obj, name: &str) -> bool {
    either_missing_or(prefix(a, name), prefix(b, name), |x, y| {
        let (x, y) = (x.trunc(), y.trunc());
        x.contains(&y.network()) || y.contains(&x.network())
    })
}

fn text(obj: &Obj, name: &str) -> Option<String> {
    obj.get(name).and_then(Value::as_str).map(String::from)
}

/// networking-sfc's `flowclassifier_basic_conflict`: the classifiers can match one packet,
/// logical ports left out.
fn basic_conflict(a: &Obj, b: &Obj) -> bool {
    str_field(a, "ethertype") == str_field(b, "ethertype")
        && either_missing_or(text(a, "protocol"), text(b, "protocol"), |x, y| x == y)
        && prefixes_overlap(a, b, "source_ip_prefix")
        && prefixes_overlap(a, b, "destination_ip_prefix")
        && port_ranges_overlap(a, b, "source_port_range_min", "source_port_range_max")
        && port_ranges_overlap(
            a,
            b,
            "destination_port_range_min",
            "destination_port_range_max",
        )
}

/// Whether two classifiers conflict, logical ports included.
fn conflict(a: &Obj, b: &Obj) -> bool {
    let same_port = |name: &str| either_missing_or(text(a, name), text(b, name), |x, y| x == y);
    basic_conflict(a, b)
        && same_port("logical_source_port")
        && same_port("logical_destination_port")
}

async fn create_classifier(api: &Api, ctx: &Ctx, mut obj: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let protocol = str_field(&obj, "protocol").to_string();
    check_range(
        int(&obj, "source_port_range_min"),
        int(&obj, "source_port_range_max"),
        &protocol,
    )?;
    check_range(
        int(&obj, "destination_port_range_min"),
        int(&obj, "destination_port_range_max"),
        &protocol,
    )?;
    check_prefix(&obj, "source_ip_prefix")?;
    check_prefix(&obj, "destination_ip_prefix")?;
    let mut nets = BTreeSet::new();
    for name in ["logical_source_port", "logical_destination_port"] {
        let Some(id) = text(&obj, name) else {
            continue;
        };
        match api.db.load(&PORT, &id).await? {
            Some(p) if ctx.owns(&p.obj) => {
                nets.insert(str_field(&p.obj, "network_id").to_string());
            }
            _ => {
                return Err(ApiError::not_found(
                    "FlowClassifierPortNotFound",
                    format!("Flow Classifier Neutron Port {} not found.", echo(&id)),
                ));
            }
        }
    }
    let others = all_seen(api, ctx, plan, &FLOW_CLASSIFIER).await?;
    if let Some(other) = others.iter().find(|o| conflict(&obj, &o.obj)) {
        return Err(invalid(
            "FlowClassifierInConflict",
            format!(
                "Flow Classifier conflicts with another Flow Classifier {}.",
                other.id()
            ),
        ));
    }
    obj.insert("_network_ids".into(), json!(nets));
    plan.create(&FLOW_CLASSIFIER, &obj);
    Ok(obj)
}

// ---- port chains ----

/// The groups `wanted` for chain `chain`, checked as networking-sfc checks them.
async fn chain_groups(
    api: &Api,
    ctx: &Ctx,
    plan: &Plan,
    chain: &str,
    wanted: &[String],
) -> ApiResult<Vec<Stored>> {
    let mut groups = Vec::with_capacity(wanted.len());
    let mut previous_tap = false;
    for id in wanted {
        let Some(group) = seen(api, ctx, plan, &PORT_PAIR_GROUP, id).await? else {
            return Err(ApiError::not_found(
                "PortPairGroupNotFound",
                format!("Port Pair Group {} not found.", echo(id)),
            ));
        };
        let tap = group.obj.get("tap_enabled") == Some(&json!(true));
        if previous_tap && tap {
            return Err(invalid(
                "ConsecutiveTapPPGNotSupported",
                "Consecutive Tap PPG in port-chain is not supported now.",
            ));
        }
        previous_tap = tap;
        groups.push(group);
    }
    for other in all_seen(api, ctx, plan, &PORT_CHAIN).await? {
        if other.id() != chain && ids(&other.obj, "port_pair_groups") == wanted {
            let listed: Vec<String> = wanted.iter().map(|g| format!("'{g}'")).collect();
            return Err(in_use(
                "InvalidPortPairGroups",
                format!(
                    "Port Pair Group(s) [{}] in use by Port Chain {}.",
                    listed.join(", "),
                    other.id()
                ),
            ));
        }
    }
    Ok(groups)
}

/// The classifiers `wanted` for chain `chain`, checked as networking-sfc checks them.
async fn chain_classifiers(
    api: &Api,
    ctx: &Ctx,
    plan: &Plan,
    chain: &str,
    wanted: &[String],
) -> ApiResult<Vec<Stored>> {
    let mut fcs = Vec::with_capacity(wanted.len());
    for id in wanted {
        let Some(fc) = seen(api, ctx, plan, &FLOW_CLASSIFIER, id).await? else {
            return Err(ApiError::not_found(
                "FlowClassifierNotFound",
                format!("Flow Classifier {} not found.", echo(id)),
            ));
        };
        fcs.push(fc);
    }
    for fc in &fcs {
        let owner = str_field(&fc.obj, "_chain");
        if !owner.is_empty() && owner != chain {
            return Err(in_use(
                "FlowClassifierInUse",
                format!("Flow Classifier {} in use.", fc.id()),
            ));
        }
    }
    for other in all_seen(api, ctx, plan, &PORT_CHAIN).await? {
        if other.id() == chain {
            continue;
        }
        let theirs = api
            .db
            .load_many(
                &FLOW_CLASSIFIER,
                &ids_ref(&ids(&other.obj, "flow_classifiers")),
            )
            .await?;
        for their in &theirs {
            if let Some(fc) = fcs.iter().find(|fc| basic_conflict(&their.obj, &fc.obj)) {
                return Err(invalid(
                    "PortChainFlowClassifierInConflict",
                    format!(
                        "Flow Classifier {} conflicts with Flow Classifier {} in port chain {}.",
                        fc.id(),
                        their.id(),
                        other.id()
                    ),
                ));
            }
        }
    }
    Ok(fcs)
}

async fn create_chain(api: &Api, ctx: &Ctx, mut obj: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let id = str_field(&obj, "id").to_string();
    let wanted_groups = ids(&obj, "port_pair_groups");
    let groups = chain_groups(api, ctx, plan, &id, &wanted_groups).await?;
    let chain_correlation = obj
        .get("chain_parameters")
        .and_then(|p| p.get("correlation"))
        .cloned()
        .unwrap_or(Value::Null);
    for group in &groups {
        let pairs = api
            .db
            .load_many(&PORT_PAIR, &ids_ref(&ids(&group.obj, "port_pairs")))
            .await?;
        if pairs.iter().any(|p| {
            let c = correlation(&p.obj);
            !c.is_null() && c != chain_correlation
        }) {
            return Err(invalid(
                "PortChainInconsistentCorrelations",
                format!(
                    "Port Chain attempted creation included a Port Pair Group ({}) with a \
                     different protocol used as correlation type.",
                    group.id()
                ),
            ));
        }
    }
    let wanted_fcs = ids(&obj, "flow_classifiers");
    chain_classifiers(api, ctx, plan, &id, &wanted_fcs).await?;
    let assigned: Vec<(i64, String)> = api
        .db
        .list(&PORT_CHAIN)
        .await?
        .iter()
        .filter_map(|c| Some((int(&c.obj, "chain_id")?, c.id().to_string())))
        .collect();
    let taken = |n: i64| {
        assigned
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, c)| c.clone())
            .or_else(|| {
                plan.is_claimed(&chain_id_claim(n))
                    .then(|| String::from("in this request"))
            })
    };
    let chain_id = match int(&obj, "chain_id").unwrap_or(0) {
        0 => (1..MAX_CHAIN_ID)
            .find(|n| taken(*n).is_none())
            .ok_or_else(|| {
                invalid(
                    "PortChainUnavailableChainId",
                    format!("Port Chain {id} no available chain id."),
                )
            })?,
        n => {
            if let Some(other) = taken(n) {
                return Err(invalid(
                    "PortChainChainIdInConflict",
                    format!("Chain id {n} conflicts with Chain id in port chain {other}."),
                ));
            }
            n
        }
    };
    plan.claim(chain_id_claim(chain_id), &id);
    obj.insert("chain_id".into(), json!(chain_id));
    obj.insert("port_pair_groups".into(), json!([]));
    obj.insert("flow_classifiers".into(), json!([]));
    set_chain_groups_unchecked(api, &mut obj, &wanted_groups, plan).await?;
    set_chain_classifiers_unchecked(api, &mut obj, &wanted_fcs, plan).await?;
    obj.insert(
        "_network_ids".into(),
        json!(chain_networks(api, plan, &obj).await?),
    );
    plan.create(&PORT_CHAIN, &obj);
    Ok(obj)
}

async fn set_chain_groups(
    api: &Api,
    ctx: &Ctx,
    obj: &mut Obj,
    wanted: &[String],
    plan: &mut Plan,
) -> ApiResult<()> {
    chain_groups(api, ctx, plan, str_field(obj, "id"), wanted).await?;
    set_chain_groups_unchecked(api, obj, wanted, plan).await
}

/// Gives a chain the groups `wanted` (in order), and each group that joins or leaves it its
/// `_chains`.
async fn set_chain_groups_unchecked(
    api: &Api,
    obj: &mut Obj,
    wanted: &[String],
    plan: &mut Plan,
) -> ApiResult<()> {
    relink(
        api,
        obj,
        "port_pair_groups",
        &PORT_PAIR_GROUP,
        wanted,
        plan,
        |g, chain, joins| {
            let mut chains = ids(g, "_chains");
            chains.retain(|c| c != chain);
            if joins {
                chains.push(chain.to_string());
            }
            set_ids(g, "_chains", &chains);
        },
    )
    .await
}

async fn set_chain_classifiers(
    api: &Api,
    ctx: &Ctx,
    obj: &mut Obj,
    wanted: &[String],
    plan: &mut Plan,
) -> ApiResult<()> {
    chain_classifiers(api, ctx, plan, str_field(obj, "id"), wanted).await?;
    set_chain_classifiers_unchecked(api, obj, wanted, plan).await
}

/// Gives a chain the classifiers `wanted`, and each classifier that joins or leaves it its `_chain`.
async fn set_chain_classifiers_unchecked(
    api: &Api,
    obj: &mut Obj,
    wanted: &[String],
    plan: &mut Plan,
) -> ApiResult<()> {
    relink(
        api,
        obj,
        "flow_classifiers",
        &FLOW_CLASSIFIER,
        wanted,
        plan,
        |f, chain, joins| {
            if joins {
                f.insert("_chain".into(), json!(chain));
            } else {
                f.remove("_chain");
            }
        },
    )
    .await
}

/// Sets a chain's list `field` (objects of `def`) to `wanted`, and lets `link` update the back
/// reference of each object that joins (`true`) or leaves (`false`) the chain.
async fn relink(
    api: &Api,
    obj: &mut Obj,
    field: &str,
    def: &'static ResourceDef,
    wanted: &[String],
    plan: &mut Plan,
    link: impl Fn(&mut Obj, &str, bool),
) -> ApiResult<()> {
    let id = str_field(obj, "id").to_string();
    let old = ids(obj, field);
    let changed: BTreeSet<&String> = old
        .iter()
        .filter(|x| !wanted.contains(x))
        .chain(wanted.iter().filter(|x| !old.contains(x)))
        .collect();
    for stored in api
        .db
        .load_many(def, &changed.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .await?
    {
        let stored = current(plan, def, stored);
        let mut o = stored.obj.clone();
        link(&mut o, &id, wanted.iter().any(|w| w == stored.id()));
        plan.put_raw(def, &stored, &o);
    }
    set_ids(obj, field, wanted);
    Ok(())
}

/// The networks a chain touches: its groups' and classifiers'.
async fn chain_networks(api: &Api, plan: &Plan, obj: &Obj) -> ApiResult<Vec<String>> {
    let mut objs = Vec::new();
    for g in api
        .db
        .load_many(&PORT_PAIR_GROUP, &ids_ref(&ids(obj, "port_pair_groups")))
        .await?
    {
        objs.push(current(plan, &PORT_PAIR_GROUP, g).obj);
    }
    for f in api
        .db
        .load_many(&FLOW_CLASSIFIER, &ids_ref(&ids(obj, "flow_classifiers")))
        .await?
    {
        objs.push(f.obj);
    }
    Ok(networks(&objs.iter().collect::<Vec<_>>()))
}
