//! Networks: provider segments (allocation of tunnel ids), MTU, sharing, and deletion rules.

use model::resources::{NETWORK, SUBNET};
use serde_json::{Value, json};

use super::ipam::NumberSpace;
use super::{Deletion, admin_only, two_phase_delete};
use crate::Api;
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::index::PORTS_BY_NETWORK;
use crate::repo::{Attempts, Obj, Plan, STEP_BUDGET, Stored, ipam_prefix, str_field};

/// The first of the top 16 384 VNIs (0xFFC000), which are routers' transit tunnel ids
/// (`0xFFC000 | n` for router number n, see `routers`): never a network's, allocated or requested.
const FIRST_TRANSIT_VNI: u64 = (1 << 24) - 1 - super::routers::MAX_ROUTER_NUMBER;
/// The tunnel id of chained traffic between chassis (service function chaining, the datapath's
/// `pipeline::tables::SFC_VNI`): just below the transit ids, never a network's either.
const CHAINING_VNI: u64 = FIRST_TRANSIT_VNI - 1;
/// Largest tunnel id a network may have.
const MAX_NETWORK_VNI: u64 = CHAINING_VNI - 1;
/// Networks' tunnel ids (VXLAN and Geneve share them).
const TUNNEL_IDS: NumberSpace = NumberSpace {
    cursor: "seg:tunnel",
    claims: "/seg/tunnel/",
    first: 1,
    last: MAX_NETWORK_VNI,
};
/// The network type of networks created without provider attributes.
const TENANT_NETWORK_TYPE: &str = "vxlan";
/// Underlay MTU assumed for all chassis.
const UNDERLAY_MTU: i64 = 1500;
/// Encapsulation overhead of a VXLAN or Geneve (without options) packet over IPv4.
const TUNNEL_OVERHEAD: i64 = 50;

fn is_tunnel(kind: &str) -> bool {
    kind == "vxlan" || kind == "geneve"
}

fn max_mtu(kind: &str) -> i64 {
    if is_tunnel(kind) {
        UNDERLAY_MTU - TUNNEL_OVERHEAD
    } else {
        UNDERLAY_MTU
    }
}

/// The claim key of a segment.
fn segment_key(kind: &str, physnet: &str, id: Option<i64>) -> String {
    match (kind, id) {
        (k, Some(id)) if is_tunnel(k) => TUNNEL_IDS.key(id as u64),
        ("vlan", Some(id)) => format!("/seg/vlan/{physnet}/{id}"),
        _ => format!("/seg/{kind}/{physnet}"),
    }
}

/// The claim key of a network's segment, if it has one.
pub fn network_segment_key(net: &Obj) -> Option<String> {
    let kind = str_field(net, "provider:network_type");
    let id = net.get("provider:segmentation_id").and_then(Value::as_i64);
    match kind {
        "local" | "" => None,
        _ => Some(segment_key(
            kind,
            str_field(net, "provider:physical_network"),
            id,
        )),
    }
}

pub async fn plan_create(api: &Api, ctx: &Ctx, mut net: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let id = str_field(&net, "id").to_string();
    for attr in [
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
    ] {
        if net.contains_key(attr) {
            admin_only(ctx, &format!("create_network:{attr}"))?;
        }
    }
    for attr in ["shared", "router:external"] {
        if net.get(attr) == Some(&Value::Bool(true)) {
            admin_only(ctx, &format!("create_network:{attr}"))?;
        }
    }
    let kind = net
        .get("provider:network_type")
        .and_then(Value::as_str)
        .unwrap_or(TENANT_NETWORK_TYPE)
        .to_string();
    let physnet = net
        .get("provider:physical_network")
        .and_then(Value::as_str)
        .map(str::to_string);
    // A negative id is refused below as out of range, never taken for "allocate one".
    let seg = net.get("provider:segmentation_id").and_then(Value::as_i64);
    let allocated = is_tunnel(&kind) && seg.is_none();
    let seg = match kind.as_str() {
        k if is_tunnel(k) => {
            if physnet.is_some() {
                return Err(ApiError::invalid_input(format!(
                    "provider:physical_network specified for {k} network"
                )));
            }
            match seg {
                Some(s) if !(1..=MAX_NETWORK_VNI as i64).contains(&s) => {
                    return Err(ApiError::invalid_input(format!(
                        "{k} network segmentation_id {s} out of range 1-{MAX_NETWORK_VNI} (the \
                         VNIs above carry chained traffic and router transits)"
                    )));
                }
                Some(s) => s,
                None => TUNNEL_IDS.next_free(api, plan).await?.ok_or_else(|| {
                    ApiError::conflict(
                        "NoNetworkAvailable",
                        "Unable to create the network. No tenant network is available for allocation.",
                    )
                })? as i64,
            }
            .into()
        }
        "flat" | "vlan" => {
            if physnet.is_none() {
                return Err(ApiError::invalid_input(format!(
                    "physical_network required for {kind} provider network"
                )));
            }
            match (kind.as_str(), seg) {
                ("flat", Some(_)) => {
                    return Err(ApiError::invalid_input(
                        "segmentation_id specified for flat provider network",
                    ));
                }
                ("vlan", None) => {
                    return Err(ApiError::invalid_input(
                        "segmentation_id required for VLAN provider network",
                    ));
                }
                ("vlan", Some(s)) if !(1..=4094).contains(&s) => {
                    return Err(ApiError::invalid_input(
                        "segmentation_id out of range (1 through 4094)".to_string(),
                    ));
                }
                _ => seg,
            }
        }
        _ => None,
    };
    let physnet_text = physnet.clone().unwrap_or_default();
    if kind != "local" {
        let key = segment_key(&kind, &physnet_text, seg);
        // An allocated id was free when the allocator looked; should another call claim it first,
        // this plan's claim fails at commit and the call is planned again with the next id.
        let taken = !allocated && api.db.exists(&key).await?;
        if taken || !plan.claim(key, &id) {
            return Err(match kind.as_str() {
                "flat" => ApiError::conflict(
                    "FlatNetworkInUse",
                    format!(
                        "Unable to create the flat network. Physical network {physnet_text} is in use."
                    ),
                ),
                "vlan" => ApiError::conflict(
                    "VlanIdInUse",
                    format!(
                        "Unable to create the network. The VLAN {} on physical network {physnet_text} is in use.",
                        seg.unwrap_or_default()
                    ),
                ),
                _ => ApiError::conflict(
                    "TunnelIdInUse",
                    format!(
                        "Unable to create the network. The tunnel ID {} is in use.",
                        seg.unwrap_or_default()
                    ),
                ),
            });
        }
    }
    let max = max_mtu(&kind);
    let mtu = match net.get("mtu").and_then(Value::as_i64) {
        Some(m) if m > max => {
            return Err(ApiError::invalid_input(format!(
                "Requested MTU is too big, maximum is {max}"
            )));
        }
        Some(m) => m,
        None => max,
    };
    net.insert("mtu".into(), mtu.into());
    net.insert("provider:network_type".into(), kind.into());
    net.insert("provider:physical_network".into(), json!(physnet));
    net.insert("provider:segmentation_id".into(), json!(seg));
    net.insert("status".into(), "ACTIVE".into());
    net.insert("subnets".into(), json!([]));
    net.insert("availability_zones".into(), json!([]));
    net.insert("ipv4_address_scope".into(), Value::Null);
    net.insert("ipv6_address_scope".into(), Value::Null);
    net.insert("is_default".into(), Value::Bool(false));
    // Neutron shows a new network at revision 1: adding its segment after the create bumps it.
    net.insert("revision_number".into(), 1.into());
    plan.create(&NETWORK, &net);
    Ok(net)
}

pub async fn plan_update(
    api: &Api,
    ctx: &Ctx,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    for attr in ["shared", "router:external"] {
        if changes.contains_key(attr) && changes.get(attr) != stored.obj.get(attr) {
            admin_only(ctx, &format!("update_network:{attr}"))?;
        }
    }
    let kind = str_field(&stored.obj, "provider:network_type").to_string();
    if let Some(m) = changes.get("mtu").and_then(Value::as_i64) {
        let max = max_mtu(&kind);
        if m > max {
            return Err(ApiError::invalid_input(format!(
                "Requested MTU is too big, maximum is {max}"
            )));
        }
    }
    // Subnets show their network's `router:external`.
    if let Some(external) = changes.get("router:external")
        && stored.obj.get("router:external") != Some(external)
    {
        let ids = super::subnets::ids_on(&stored.obj);
        for subnet in api.db.load_many(&SUBNET, &ids).await? {
            let mut changed = subnet.obj.clone();
            changed.insert("router:external".into(), external.clone());
            plan.update(&SUBNET, &subnet, &mut changed);
        }
    }
    let mut net = stored.obj.clone();
    for (k, v) in changes {
        if k == "mtu" && v.is_null() {
            net.insert(k, max_mtu(&kind).into());
        } else {
            net.insert(k, v);
        }
    }
    // An update that changes nothing keeps the revision, as in Neutron.
    if net == stored.obj {
        plan.pin_obj(&NETWORK, &stored);
    } else {
        plan.update(&NETWORK, &stored, &mut net);
    }
    Ok(net)
}

/// Leaves out what Neutron does not show: `provider:*` to non-admins, and `is_default` except on
/// external networks and in the answer to a create.
pub fn present(ctx: &Ctx, answer: super::Answer, net: &mut Obj) {
    if !ctx.is_admin {
        for attr in [
            "provider:network_type",
            "provider:physical_network",
            "provider:segmentation_id",
        ] {
            net.remove(attr);
        }
    }
    if answer != super::Answer::Created && net.get("router:external") != Some(&Value::Bool(true)) {
        net.remove("is_default");
    }
}

/// Ports that do not keep a network from being deleted (they go with it): DHCP ports and, as in
/// Neutron, the per-chassis ports of an external network (chassis' SNAT addresses).
fn removable_with_network(port: &Obj) -> bool {
    matches!(
        str_field(port, "device_owner"),
        "network:dhcp" | crate::snat::SNAT_OWNER
    )
}

pub async fn plan_delete(api: &Api, stored: Stored) -> ApiResult<Deletion> {
    two_phase_delete(api, &NETWORK, &stored, async |marked: &mut Stored| {
        finish_delete(api, marked).await
    })
    .await
}

/// Deletes a network marked for deletion with its subnets, unless ports are still on it.
///
/// Usually one transaction. A network with more subnets than fit in one goes in steps, each a state
/// the API could have reached anyway: some DHCP ports or subnets gone (and out of the network's
/// `subnets`), the network still marked; the last step deletes the network. `marked` follows the steps,
/// so that a failure unmarks the network as the committed steps left it.
async fn finish_delete(api: &Api, marked: &mut Stored) -> ApiResult<()> {
    let id = marked.id().to_string();
    let mut attempts = Attempts::new();
    'plan: loop {
        attempts.begin()?;
        let ports = api.db.find(&PORTS_BY_NETWORK, &id).await?;
        if ports.iter().any(|p| !removable_with_network(&p.obj)) {
            return Err(ApiError::conflict(
                "NetworkInUse",
                format!(
                    "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
                ),
            ));
        }
        // Each unit is a port or a subnet whose removal leaves a consistent state.
        let mut units: Vec<(Plan, Option<String>)> = Vec::new();
        for port in &ports {
            let mut unit = Plan::default();
            super::release_port(&mut unit, port);
            units.push((unit, None));
        }
        let subnets = api
            .db
            .load_many(&SUBNET, &super::subnets::ids_on(&marked.obj))
            .await?;
        for subnet in subnets {
            let mut unit = Plan::default();
            for (key, _) in api.db.values_under(&ipam_prefix(subnet.id())).await? {
                unit.release(key);
            }
            unit.delete(&SUBNET, &subnet);
            units.push((unit, Some(subnet.id().to_string())));
        }
        let mut units = units.into_iter().peekable();
        loop {
            let mut step = Plan::default();
            let mut removed: Vec<String> = Vec::new();
            while let Some((unit, _)) = units.peek() {
                // Room for the network's own condition and write.
                if step.size() > 0 && step.size() + unit.size() + 1 > STEP_BUDGET {
                    break;
                }
                let Some((unit, subnet)) = units.next() else {
                    break;
                };
                step.absorb(unit);
                removed.extend(subnet);
            }
            if units.peek().is_none() {
                if let Some(key) = network_segment_key(&marked.obj) {
                    step.release(key);
                }
                step.delete(&NETWORK, marked);
                if api.db.commit(step).await? {
                    return Ok(());
                }
                continue 'plan;
            }
            let mut net = marked.obj.clone();
            if let Some(Value::Array(list)) = net.get_mut("subnets") {
                list.retain(|s| !removed.iter().any(|r| s.as_str() == Some(r)));
            }
            step.put_raw(&NETWORK, marked, &net);
            match api.db.commit_at(step).await? {
                Some(rev) => {
                    marked.obj = net;
                    marked.rev = rev;
                }
                None => continue 'plan,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use model::resources::NETWORK;

    use super::*;
    use crate::ApiConfig;

    /// Allocated tunnel ids stay below the router transit ids: after the last network VNI the
    /// allocator starts over at the lowest free id. (Only the cursor can be moved there: the API
    /// would need 16 million networks.)
    #[tokio::test]
    async fn allocated_tunnel_ids_skip_the_transit_ids() {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("embedded:{}", dir.path().join("wyvern.redb").display());
        let api = Api::new(store::open(&spec).unwrap(), ApiConfig::default());
        let admin = Ctx {
            project_id: "admin".into(),
            is_admin: true,
            read_only: false,
        };
        api.ipam_cursors.set_past(TUNNEL_IDS.cursor, 0xff_bffd);
        let mut vnis = Vec::new();
        for _ in 0..2 {
            let body = json!({"network": {"name": "n"}});
            let answer = api.create(&admin, &NETWORK, body).await.unwrap();
            vnis.push(answer["network"]["provider:segmentation_id"].clone());
        }
        assert_eq!(vnis, vec![json!(0xff_bffe), json!(1)]);
    }
}
