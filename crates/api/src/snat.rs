//! Chassis SNAT addresses: each chassis' own address on an external network, through which its
//! local ports without a floating IP reach the outside (distributed SNAT). The server allocates it
//! when the chassis' agent first needs it, as a port on the external network
//! (`network:floatingip_agent_gateway`, bound to the chassis, as Neutron's DVR names the per-host
//! port of an external network); the agent then receives it with the network's topic.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use model::resources::NETWORK;
use model::validate::echo;
use serde_json::{Value, json};

use crate::Api;
use crate::chassis::{admin, reply, valid_chassis_id};
use crate::error::ApiError;
use crate::index::PORTS_BY_DEVICE;
use crate::repo::{Attempts, Plan, str_field};

/// `device_owner` of a chassis' SNAT address.
pub const SNAT_OWNER: &str = "network:floatingip_agent_gateway";

/// The claim that makes a chassis' SNAT address on a network unique; the port's `device_id` (and
/// `binding:host_id`, which the port API may not change) is the chassis.
pub fn claim_key(network: &str, chassis: &str) -> String {
    format!("/snat/{network}/{chassis}")
}

/// `PUT /wyvern/v1/chassis/<id>/snat/<network>`: the chassis' SNAT address port on an external
/// network, allocated on first use (at most one per chassis and network, also with several
/// servers: the allocation claims [`claim_key`]). The port has an IPv4 address (else 409
/// `IpAddressGenerationFailure`); it goes with its network when the network is deleted.
pub async fn address(
    State(api): State<Api>,
    Path((chassis, network)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            admin(&api, &headers).await?;
            valid_chassis_id(&chassis)?;
            let mut attempts = Attempts::new();
            loop {
                attempts.begin()?;
                // Read again on every attempt: a plan that lost a race may have lost it to a
                // change of the network (the port create pins it).
                let net = api.db.load(&NETWORK, &network).await?.ok_or_else(|| {
                    ApiError::object_not_found("Network", "network", &echo(&network))
                })?;
                if net.obj.get("router:external") != Some(&Value::Bool(true)) {
                    return Err(ApiError::bad_request(format!(
                        "Network {} is not an external network",
                        echo(&network)
                    )));
                }
                // The chassis' ports (its SNAT addresses: one per external network).
                let held = api
                    .db
                    .find(&PORTS_BY_DEVICE, &chassis)
                    .await?
                    .into_iter()
                    .find(|p| {
                        str_field(&p.obj, "device_owner") == SNAT_OWNER
                            && str_field(&p.obj, "network_id") == network
                    });
                if let Some(port) = held {
                    return Ok(json!({"port": crate::query::render(port.obj, &[])}));
                }
                let mut plan = Plan::default();
                plan.claim(claim_key(&network, &chassis), &chassis);
                let body = json!({"network_id": network, "device_owner": SNAT_OWNER,
                    "device_id": chassis, "binding:host_id": chassis, "tenant_id": "",
                    "port_security_enabled": false, "name": format!("snat-{chassis}")});
                let port = crate::resources::plan_internal_port(
                    &api,
                    body.as_object().cloned().unwrap_or_default(),
                    &mut plan,
                )
                .await?;
                if crate::resources::ipv4_address(&port).is_none() {
                    return Err(ApiError::conflict(
                        "IpAddressGenerationFailure",
                        format!(
                            "No IPv4 address is available on network {network} for the SNAT address of chassis {chassis}."
                        ),
                    ));
                }
                if api.db.commit(plan).await? {
                    return Ok(json!({"port": crate::query::render(port, &[])}));
                }
            }
        }
        .await,
    )
}
