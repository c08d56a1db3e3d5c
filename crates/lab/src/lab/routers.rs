//! A lab's routers: made as their project, joined to the subnets the file names (an interface
//! at each subnet's gateway address, `add_router_interface` by subnet), given the file's extra
//! routes and external gateway (set by an admin, as `enable_snat` and `gateway_ips` need), and
//! brought back in line with the file on every `up`: an interface, a route or a gateway the file
//! no longer has goes, a router the file no longer has is deleted.
//!
//! Other gateway addresses need a new gateway port, which the server makes only after the old
//! one is gone (it refuses addresses the old one still holds, and to take away a gateway that
//! floating IPs use): the lab's floating IPs through the router are disassociated, the gateway
//! removed and set again; the floating IPs are associated again later in the same `up`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::Lab;
use crate::neutron::{Neutron, text};
use crate::state::{RouterGatewayState, RouterState};
use crate::topology::{RouteSpec, RouterSpec, Topology, describe_routes};
use crate::{Error, Result};

/// `device_owner` of a router's interface ports.
pub(super) const INTERFACE_OWNER: &str = "network:router_interface";

/// Router `id`'s interfaces: (subnet id, port id), one per subnet.
async fn interfaces(api: &Neutron, id: &str) -> Result<Vec<(String, String)>> {
    let ports = api.list("ports", &format!("device_id={id}")).await?;
    Ok(ports
        .iter()
        .filter(|p| text(p, "device_owner") == INTERFACE_OWNER)
        .flat_map(|p| {
            let port = text(p, "id").to_owned();
            p.get("fixed_ips")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(move |f| (text(f, "subnet_id").to_owned(), port.clone()))
        })
        .collect())
}

/// A router's extra routes as the API shows them (destinations as network addresses).
fn routes_of(router: &Value) -> BTreeSet<RouteSpec> {
    router
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(RouteSpec {
                destination: text(r, "destination").parse::<IpNet>().ok()?.trunc(),
                nexthop: text(r, "nexthop").parse().ok()?,
            })
        })
        .collect()
}

/// The addresses of a router's gateway as the API shows it (`external_gateway_info`).
fn gateway_addresses(info: Option<&Value>) -> impl Iterator<Item = IpAddr> + '_ {
    info.and_then(|g| g.get("external_fixed_ips"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| text(f, "ip_address").parse().ok())
}

async fn set_routes(api: &Neutron, id: &str, routes: &BTreeSet<RouteSpec>) -> Result<()> {
    let list: Vec<Value> = routes
        .iter()
        .map(|r| json!({ "destination": r.destination.to_string(), "nexthop": r.nexthop.to_string() }))
        .collect();
    api.update("routers", "router", id, json!({ "routes": list }))
        .await?;
    Ok(())
}

async fn remove_interface(api: &Neutron, id: &str, port: &str) -> Result<()> {
    api.act(
        "routers",
        id,
        "remove_router_interface",
        json!({ "port_id": port }),
    )
    .await?;
    Ok(())
}

/// Takes router `id`'s interface `port` on subnets `cidrs` off, the extra routes through them
/// first (the server refuses to remove an interface a route goes through).
pub(super) async fn detach(api: &Neutron, id: &str, port: &str, cidrs: &[IpNet]) -> Result<()> {
    if let Some(router) = api.show("routers", "router", id).await? {
        let routes = routes_of(&router);
        let staying: BTreeSet<RouteSpec> = routes
            .iter()
            .filter(|r| !cidrs.iter().any(|c| c.contains(&r.nexthop)))
            .copied()
            .collect();
        if staying != routes {
            set_routes(api, id, &staying).await?;
        }
    }
    remove_interface(api, id, port).await
}

/// Takes router `id`'s routes and interfaces off (the server refuses to delete a router with
/// interfaces, or an interface a route goes through) and deletes it; a missing router is no
/// error.
async fn delete_router(api: &Neutron, id: &str) -> Result<()> {
    let Some(router) = api.show("routers", "router", id).await? else {
        return Ok(());
    };
    if !routes_of(&router).is_empty() {
        set_routes(api, id, &BTreeSet::new()).await?;
    }
    let ports: BTreeSet<String> = interfaces(api, id)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    for port in ports {
        remove_interface(api, id, &port).await?;
    }
    api.delete("routers", id).await
}

impl Lab {
    /// Brings every router in line with `topo` and deletes those it no longer has. Runs after
    /// the networks are made and before the ones the file dropped are deleted (their router
    /// interfaces go here first).
    pub(super) async fn ensure_routers(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for r in &topo.routers {
            self.ensure_router(api, topo, r, changes).await?;
        }
        for (name, r) in self.state.routers.clone() {
            if !topo.routers.iter().any(|x| x.name == name) {
                delete_router(api, &r.id).await?;
                self.state.routers.remove(&name);
                self.changed(changes, &format!("router {name}"), "deleted");
            }
        }
        Ok(())
    }

    /// The API id of the lab's subnet `name`.
    pub(super) fn subnet_id(&self, name: &str) -> Result<String> {
        self.state
            .networks
            .values()
            .flat_map(|n| &n.subnets)
            .find(|s| s.name == name)
            .map(|s| s.id.clone())
            .ok_or_else(|| Error::NotFound(format!("subnet {name} was not made")))
    }

    /// The lab's name of the subnet with API id `id` (the id itself for a subnet of no network
    /// of the lab's).
    fn subnet_label(&self, id: &str) -> String {
        self.state
            .networks
            .values()
            .flat_map(|n| &n.subnets)
            .find(|s| s.id == id)
            .map_or_else(|| id.to_owned(), |s| s.name.clone())
    }

    async fn ensure_router(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        spec: &RouterSpec,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let what = format!("router {}", spec.name);
        let before = changes.len();
        let owner = spec.project.as_deref().unwrap_or("admin");
        let known = self.state.routers.get(&spec.name).map(|r| r.id.as_str());
        let router = match api
            .find("routers", "router", known, &spec.name, owner)
            .await?
        {
            Some(r) => r,
            None => {
                let attrs = json!({ "name": spec.name });
                let r = api
                    .create("routers", "router", spec.project.as_deref(), attrs)
                    .await?;
                self.changed(changes, &what, &format!("created ({})", text(&r, "id")));
                r
            }
        };
        let id = text(&router, "id").to_owned();
        let wanted = spec
            .interfaces
            .iter()
            .map(|name| Ok((name.clone(), self.subnet_id(name)?)))
            .collect::<Result<Vec<(String, String)>>>()?;
        let attached = interfaces(api, &id).await?;
        let have_routes = routes_of(&router);
        let want_routes: BTreeSet<RouteSpec> = spec.routes.iter().copied().collect();
        // The server refuses to remove an interface a route goes through: first only the
        // routes that stay (their next hops are on interfaces that stay, see the validation).
        let staying: BTreeSet<RouteSpec> =
            have_routes.intersection(&want_routes).copied().collect();
        if staying != have_routes {
            set_routes(api, &id, &staying).await?;
        }
        let mut removed = BTreeSet::new();
        for (sid, port) in &attached {
            if !wanted.iter().any(|(_, w)| w == sid) && removed.insert(port) {
                remove_interface(api, &id, port).await?;
                let status = format!("interface on {} removed", self.subnet_label(sid));
                self.changed(changes, &what, &status);
            }
        }
        for (name, sid) in &wanted {
            if !attached
                .iter()
                .any(|(s, p)| s == sid && !removed.contains(p))
            {
                api.act(
                    "routers",
                    &id,
                    "add_router_interface",
                    json!({ "subnet_id": sid }),
                )
                .await?;
                self.changed(changes, &what, &format!("interface on {name} added"));
            }
        }
        if want_routes != staying {
            set_routes(api, &id, &want_routes).await?;
        }
        if want_routes != have_routes {
            let status = format!("routes set ({})", describe_routes(&want_routes));
            self.changed(changes, &what, &status);
        }
        let gateway = self
            .ensure_gateway(api, topo, spec, &router, changes)
            .await?;
        if changes.len() == before {
            self.say(&what, &format!("ok ({id})"));
        }
        self.state.routers.insert(
            spec.name.clone(),
            RouterState {
                id,
                project: spec.project.clone(),
                interfaces: spec.interfaces.clone(),
                routes: want_routes.into_iter().collect(),
                gateway,
            },
        );
        Ok(())
    }

    /// Gives `router` (as the API showed it) the external gateway `spec` asks for, or none;
    /// returns the gateway it has then.
    async fn ensure_gateway(
        &self,
        api: &Neutron,
        topo: &Topology,
        spec: &RouterSpec,
        router: &Value,
        changes: &mut Vec<String>,
    ) -> Result<Option<RouterGatewayState>> {
        let what = format!("router {}", spec.name);
        let id = text(router, "id");
        let have = router
            .get("external_gateway_info")
            .filter(|g| g.is_object())
            .cloned();
        let Some(network) = &spec.gateway else {
            if have.is_some() {
                let none = json!({ "external_gateway_info": null });
                api.update("routers", "router", id, none).await?;
                self.changed(changes, &what, "gateway removed");
            }
            return Ok(None);
        };
        let net_id = self
            .state
            .networks
            .get(network)
            .map(|n| n.id.clone())
            .ok_or_else(|| Error::NotFound(format!("network {network} was not made")))?;
        let enable_snat = spec.enable_snat.unwrap_or(true);
        let same_network = have
            .as_ref()
            .is_some_and(|g| text(g, "network_id") == net_id);
        let snat_kept = have
            .as_ref()
            .and_then(|g| g.get("enable_snat"))
            .and_then(Value::as_bool)
            == Some(enable_snat);
        // Addresses on SLAAC subnets come with every port: only the others are the file's.
        let automatic: Vec<IpNet> = topo
            .network(network)
            .into_iter()
            .flat_map(|n| &n.subnets)
            .filter(|s| s.is_auto_address())
            .map(|s| s.cidr)
            .collect();
        let fixed: BTreeSet<IpAddr> = gateway_addresses(have.as_ref())
            .filter(|ip| !automatic.iter().any(|c| c.contains(ip)))
            .collect();
        let want_ips: BTreeSet<IpAddr> = spec.gateway_ips.iter().copied().collect();
        let new_ips = !want_ips.is_empty() && (!same_network || fixed != want_ips);
        let info = if same_network && snat_kept && !new_ips {
            have
        } else {
            let mut gateway = json!({ "network_id": net_id, "enable_snat": enable_snat });
            let snat = if enable_snat { "on" } else { "off" };
            let mut status = format!("gateway on {network} set (snat {snat}");
            if new_ips {
                if same_network {
                    self.remove_gateway_port(api, id, &what, changes).await?;
                }
                let ips: Vec<String> = want_ips.iter().map(IpAddr::to_string).collect();
                gateway["external_fixed_ips"] =
                    ips.iter().map(|ip| json!({ "ip_address": ip })).collect();
                status = format!("{status}, at {}", ips.join(" "));
            }
            let body = json!({ "external_gateway_info": gateway });
            let r = api.update("routers", "router", id, body).await?;
            self.changed(changes, &what, &format!("{status})"));
            r.get("external_gateway_info").cloned()
        };
        if let Some(mode) = spec.snat_mode
            && router.get("snat_mode").and_then(Value::as_str) != Some(mode.as_str())
        {
            let body = json!({ "snat_mode": mode.as_str() });
            api.update("routers", "router", id, body).await?;
            self.changed(changes, &what, &format!("snat {}", mode.as_str()));
        }
        Ok(Some(RouterGatewayState {
            network: network.clone(),
            enable_snat,
            addresses: gateway_addresses(info.as_ref()).collect(),
        }))
    }

    /// Takes router `id`'s gateway away so that a new one can be set: the lab's floating IPs
    /// through the router are disassociated first (see the module documentation).
    async fn remove_gateway_port(
        &self,
        api: &Neutron,
        id: &str,
        what: &str,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for fip in api.list("floatingips", &format!("router_id={id}")).await? {
            let fip_id = text(&fip, "id");
            if self.state.floating_ips.iter().any(|f| f.id == fip_id) {
                let body = json!({ "port_id": null });
                api.update("floatingips", "floatingip", fip_id, body)
                    .await?;
                let address = text(&fip, "floating_ip_address");
                let status = format!("disassociated ({what}'s gateway is replaced)");
                self.changed(changes, &format!("floating ip {address}"), &status);
            }
        }
        let none = json!({ "external_gateway_info": null });
        api.update("routers", "router", id, none).await?;
        self.changed(changes, what, "gateway removed (new addresses)");
        Ok(())
    }
}
