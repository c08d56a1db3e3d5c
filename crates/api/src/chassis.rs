//! Chassis state, the only thing agents write: registration with a liveness lease, heartbeats, and
//! the binding of ports to the chassis where their VIF appeared (with the status of the port's
//! floating IPs).
//!
//! `/chassis/<id>` holds what a chassis is (tunnel IP, encapsulations, external IP, the physical
//! networks it reaches, whether it may be a gateway chassis); `/chassis-up/<id>` is written with a
//! store lease that the agent's heartbeats keep alive. When an agent stops, its lease runs out and
//! the `chassis-up` key disappears; the other chassis keep sending to it as long as BFD between
//! the switches says its data plane is up (they withdraw their flows towards a chassis whose BFD
//! session went down, or that has neither a lease nor a session that ever came up).
//!
//! Heartbeats may carry the data plane of the chassis the agent watches as its BFD sees it
//! (`peers: {"<chassis>": "up" | "down"}`), stored in `/chassis-peers/<id>` under the same lease
//! and synced to every agent: a chassis without a session of its own towards another follows
//! what that chassis' watchers report. `GET /wyvern/v1/chassis` shows each chassis with its agent
//! (`up` while the lease lasts) and its data plane as its watchers see it.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use model::resources::{FLOATING_IP, PORT};
use model::validate::echo;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{StoreError, Txn};

use crate::Api;
use crate::error::{ApiError, ApiResult};
use crate::index::FLOATING_IPS_BY_PORT;
use crate::limits::RequestBody;
use crate::repo::{Attempts, Obj, Plan, now, str_field};

/// How long a chassis counts as up after its last heartbeat.
pub const CHASSIS_TTL: Duration = Duration::from_secs(10);

/// What an agent says about its chassis when it registers.
#[derive(Debug, Deserialize)]
struct Registration {
    tunnel_ip: std::net::IpAddr,
    #[serde(default = "default_encaps")]
    encaps: Vec<String>,
    #[serde(default)]
    external_ip: Option<std::net::IpAddr>,
    #[serde(default)]
    hostname: Option<String>,
    /// The physical networks it reaches (its agent's bridge mappings).
    #[serde(default)]
    physnets: Vec<String>,
    /// Whether it may host centralized router gateways.
    #[serde(default)]
    gateway: bool,
}

/// Most physical networks a chassis may name.
const MAX_PHYSNETS: usize = 64;

fn default_encaps() -> Vec<String> {
    vec!["geneve".into()]
}

pub(crate) fn reply(result: ApiResult<Value>) -> Response {
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn admin(api: &Api, headers: &HeaderMap) -> ApiResult<()> {
    if api.ctx(headers).await?.is_admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "chassis state is written by agents (admin)",
        ))
    }
}

/// An agent's request body, once the caller is known to be allowed to write chassis state.
async fn agent_body<T: serde::de::DeserializeOwned>(
    api: &Api,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> ApiResult<T> {
    admin(api, headers).await?;
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Malformed {what}: {e}")))
}

pub(crate) fn valid_chassis_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid chassis id {:?}",
            echo(id)
        )))
    }
}

/// `PUT /wyvern/v1/chassis/<id>`: registers (or re-registers) a chassis; answers its lease.
pub async fn register(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let reg: Registration = agent_body(&api, &headers, &body, "chassis registration").await?;
            valid_chassis_id(&id)?;
            if reg.encaps.iter().any(|e| e != "geneve" && e != "vxlan") {
                return Err(ApiError::bad_request("encaps must be geneve and/or vxlan"));
            }
            if reg.physnets.len() > MAX_PHYSNETS
                || reg
                    .physnets
                    .iter()
                    .any(|p| p.is_empty() || p.len() > 64 || p.contains(','))
            {
                return Err(ApiError::bad_request(format!(
                    "physnets must be at most {MAX_PHYSNETS} names of 1 to 64 characters without commas"
                )));
            }
            let info = json!({
                "id": id, "tunnel_ip": reg.tunnel_ip, "encaps": reg.encaps,
                "external_ip": reg.external_ip, "hostname": reg.hostname, "registered_at": now(),
                "physnets": reg.physnets, "gateway": reg.gateway,
            });
            let store = &api.db.store;
            let lease = store.lease_grant(CHASSIS_TTL).await?;
            let txn = Txn::new()
                .put(
                    nb_keys::Kind::Chassis.key(&id),
                    serde_json::to_vec(&info).unwrap_or_default(),
                )
                .put_leased(
                    nb_keys::Kind::ChassisUp.key(&id),
                    json!({"lease": lease}).to_string().into_bytes(),
                    lease,
                );
            store.txn(txn).await?;
            Ok(json!({"chassis": info, "lease": lease, "ttl_seconds": CHASSIS_TTL.as_secs()}))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct Heartbeat {
    lease: store::LeaseId,
    /// The data plane of other chassis as this one's BFD sees it, when it changed.
    #[serde(default)]
    peers: Option<std::collections::BTreeMap<String, String>>,
}

/// Most peers a heartbeat may report on.
const MAX_PEERS: usize = 10_000;

/// Where the data plane a chassis reports about its peers is kept (synced to every agent).
fn peers_key(id: &str) -> String {
    nb_keys::Kind::ChassisPeers.key(id)
}

/// `POST /wyvern/v1/chassis/<id>/heartbeat`: keeps the chassis up; 404 when its lease already ran
/// out (the agent then registers again).
pub async fn heartbeat(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let hb: Heartbeat = agent_body(&api, &headers, &body, "heartbeat").await?;
            if let Some(peers) = &hb.peers {
                valid_chassis_id(&id)?;
                if peers.len() > MAX_PEERS
                    || peers
                        .iter()
                        .any(|(c, s)| valid_chassis_id(c).is_err() || (s != "up" && s != "down"))
                {
                    return Err(ApiError::bad_request(format!(
                        "peers must map at most {MAX_PEERS} chassis ids to \"up\" or \"down\""
                    )));
                }
            }
            match api.db.store.lease_keep_alive(hb.lease).await {
                Ok(ttl) => {
                    if let Some(peers) = &hb.peers {
                        let txn = Txn::new().put_leased(
                            peers_key(&id),
                            json!(peers).to_string().into_bytes(),
                            hb.lease,
                        );
                        api.db.store.txn(txn).await?;
                    }
                    Ok(json!({"chassis": id, "ttl_seconds": ttl.as_secs()}))
                }
                Err(StoreError::LeaseNotFound(_)) => Err(ApiError::not_found(
                    "ChassisLeaseNotFound",
                    format!(
                        "The lease of chassis {} has ended; register again.",
                        echo(&id)
                    ),
                )),
                Err(e) => Err(e.into()),
            }
        }
        .await,
    )
}

/// `GET /wyvern/v1/chassis` (admin): every registered chassis as registered, with `agent`
/// (`up` while its lease lasts, else `down`) and `data_plane` as the other chassis' BFD sees it:
/// `up` or `down` when every peer that knows agrees, `partial` when they disagree, `unknown` when
/// none knows; `data_plane_peers` counts them (`{"up": n, "down": m}`).
pub async fn list(State(api): State<Api>, headers: HeaderMap) -> Response {
    reply(
        async {
            admin(&api, &headers).await?;
            let store = &api.db.store;
            let (registered, _) = store.range(&nb_keys::Kind::Chassis.key("")).await?;
            let (up, _) = store.range(&nb_keys::Kind::ChassisUp.key("")).await?;
            let (reports, _) = store.range(&peers_key("")).await?;
            let tail = |key: &str| key.rsplit('/').next().unwrap_or_default().to_string();
            let up: std::collections::BTreeSet<String> =
                up.iter().map(|kv| tail(&kv.key)).collect();
            // (up, down) counts of peers' verdicts, by chassis.
            let mut seen: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
            for kv in &reports {
                let reporter = tail(&kv.key);
                let map: std::collections::BTreeMap<String, String> =
                    serde_json::from_slice(&kv.value).unwrap_or_default();
                for (c, state) in map.into_iter().filter(|(c, _)| *c != reporter) {
                    let n = seen.entry(c).or_default();
                    if state == "up" {
                        n.0 += 1;
                    } else {
                        n.1 += 1;
                    }
                }
            }
            let chassis: Vec<Value> = registered
                .iter()
                .filter_map(|kv| {
                    let mut v: Value = serde_json::from_slice(&kv.value).ok()?;
                    let id = tail(&kv.key);
                    let (n_up, n_down) = seen.get(&id).copied().unwrap_or_default();
                    let data_plane = match (n_up, n_down) {
                        (0, 0) => "unknown",
                        (_, 0) => "up",
                        (0, _) => "down",
                        _ => "partial",
                    };
                    let obj = v.as_object_mut()?;
                    obj.insert(
                        "agent".into(),
                        json!(if up.contains(&id) { "up" } else { "down" }),
                    );
                    obj.insert("data_plane".into(), json!(data_plane));
                    obj.insert(
                        "data_plane_peers".into(),
                        json!({"up": n_up, "down": n_down}),
                    );
                    Some(v)
                })
                .collect();
            Ok(json!({ "chassis": chassis }))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct Binding {
    chassis: String,
    up: bool,
}

/// What reporting port `port_id`'s VIF on (`up`) or off `chassis` makes of it: the port as it
/// then is, with the plan of the writes (`None`: nothing changes); `None` when the port does not
/// exist. A port is bound where its VIF last appeared; a late "gone" report from a chassis the
/// port has already left changes nothing. The subports of a trunk whose parent it is follow it,
/// and its floating IPs show its new status.
async fn plan_binding(
    api: &Api,
    port_id: &str,
    chassis: &str,
    up: bool,
) -> ApiResult<Option<(Obj, Option<Plan>)>> {
    let Some(stored) = api.db.load(&PORT, port_id).await? else {
        return Ok(None);
    };
    let mut port = stored.obj.clone();
    let host = str_field(&port, "binding:host_id").to_string();
    if up {
        port.insert("binding:host_id".into(), chassis.into());
        port.insert("status".into(), "ACTIVE".into());
        port.insert("binding:vif_type".into(), "ovs".into());
        port.insert(
            "binding:vif_details".into(),
            json!({"port_filter": true, "connectivity": "l2", "bridge_name": "br-int", "datapath_type": "netdev"}),
        );
    } else if host == chassis {
        port.insert("status".into(), "DOWN".into());
    }
    if port == stored.obj {
        return Ok(Some((port, None)));
    }
    let mut plan = Plan::default();
    plan.update(&PORT, &stored, &mut port);
    crate::trunks::follow_parent(api, &mut plan, &stored.obj, &port).await?;
    for fip in api.db.find(&FLOATING_IPS_BY_PORT, port_id).await? {
        let mut shown = fip.obj.clone();
        crate::resources::follow_port(&mut shown, &port);
        if shown != fip.obj {
            plan.update(&FLOATING_IP, &fip, &mut shown);
        }
    }
    Ok(Some((port, Some(plan))))
}

/// `PUT /wyvern/v1/ports/<id>/binding`: the VIF of a port appeared on (`up`) or left (`!up`) a
/// chassis ([`plan_binding`]).
pub async fn bind(
    State(api): State<Api>,
    Path(port_id): Path<String>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let b: Binding = agent_body(&api, &headers, &body, "binding").await?;
            valid_chassis_id(&b.chassis)?;
            let mut attempts = Attempts::new();
            loop {
                attempts.begin()?;
                let (port, plan) = plan_binding(&api, &port_id, &b.chassis, b.up)
                    .await?
                    .ok_or_else(|| {
                        ApiError::object_not_found(PORT.error_name, PORT.singular, &port_id)
                    })?;
                let done = match plan {
                    None => true,
                    Some(plan) => api.db.commit(plan).await?,
                };
                if done {
                    return Ok(json!({"port": crate::query::render(port, &[])}));
                }
            }
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct Bindings {
    bindings: Vec<PortBinding>,
}

#[derive(Debug, Deserialize)]
struct PortBinding {
    port_id: String,
    up: bool,
}

/// Most bindings one request may report.
pub const MAX_BINDINGS: usize = 1000;
/// Most ports whose writes go into one commit.
const BINDINGS_PER_COMMIT: usize = 200;

/// `POST /wyvern/v1/chassis/<id>/bindings`: many VIFs of the chassis appeared or left at once
/// (`{"bindings": [{"port_id", "up"}, ...]}`, at most [`MAX_BINDINGS`]; a port named twice: the
/// last report counts), each as `PUT .../binding` would take it, in few commits (up to
/// [`BINDINGS_PER_COMMIT`] ports each) instead of one per port: a chassis plugging thousands of
/// VIFs reported them one request and one store transaction each, and its ports showed ACTIVE
/// seconds after their flows were in (the slice bench at 5 000 ports). Answers each port's
/// status, `{"port_id", "status"}`, or `{"port_id", "found": false}` for a port that does not
/// exist (deleted meanwhile: nothing to report).
pub async fn bind_many(
    State(api): State<Api>,
    Path(chassis): Path<String>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let b: Bindings = agent_body(&api, &headers, &body, "bindings").await?;
            valid_chassis_id(&chassis)?;
            if b.bindings.len() > MAX_BINDINGS {
                return Err(ApiError::bad_request(format!(
                    "at most {MAX_BINDINGS} bindings per request"
                )));
            }
            let mut last: std::collections::HashMap<&str, bool> = Default::default();
            let mut pending: std::collections::VecDeque<(String, bool)> = Default::default();
            for pb in &b.bindings {
                if last.insert(&pb.port_id, pb.up).is_none() {
                    pending.push_back((pb.port_id.clone(), pb.up));
                }
            }
            for (id, up) in &mut pending {
                *up = last[id.as_str()];
            }
            let mut answers = Vec::with_capacity(pending.len());
            while !pending.is_empty() {
                let n = pending.len().min(BINDINGS_PER_COMMIT);
                let chunk: Vec<(String, bool)> = pending.drain(..n).collect();
                let mut attempts = Attempts::new();
                loop {
                    attempts.begin()?;
                    let mut plan = Plan::default();
                    let mut writes = false;
                    let mut shown = Vec::with_capacity(chunk.len());
                    let mut later = Vec::new();
                    for (port_id, up) in &chunk {
                        match plan_binding(&api, port_id, &chassis, *up).await? {
                            None => shown.push(json!({"port_id": port_id, "found": false})),
                            // Two ports whose writes meet (a trunk's parent and its subport):
                            // the second in a later commit, planned on what the first wrote.
                            Some((_, Some(p))) if plan.overlaps(&p) => {
                                later.push((port_id.clone(), *up));
                            }
                            Some((port, p)) => {
                                if let Some(p) = p {
                                    plan.absorb(p);
                                    writes = true;
                                }
                                let status = port.get("status").cloned().unwrap_or(Value::Null);
                                shown.push(json!({"port_id": port_id, "status": status}));
                            }
                        }
                    }
                    if !writes || api.db.commit(plan).await? {
                        answers.extend(shown);
                        pending.extend(later);
                        break;
                    }
                }
            }
            Ok(json!({ "bindings": answers }))
        }
        .await,
    )
}
