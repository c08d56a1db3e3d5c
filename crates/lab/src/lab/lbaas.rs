//! A lab's load balancers, made through the server's Octavia v2 API (`/v2.0/lbaas/...`) as their
//! project (an admin's as admin), after the VMs are wired (a member is a VM's first address, on
//! its subnet): the load balancer with its VIP on the file's subnet (at the file's address), one
//! listener per `[[load_balancer.listener]]` with its own pool (the listener's default pool),
//! the pool's members and health monitor. `up` finds them again by the id it recorded or by name
//! and project, and changes only what differs: a pool's algorithm and persistence are updated,
//! members and monitors that differ are replaced, listeners the file no longer has go with their
//! pools. A load balancer whose VIP, VIP subnet or project is not the file's is deleted (with
//! `cascade=true`, its VIP port too) and made again; those the file no longer has, and those
//! whose VIP subnet `up` is about to replace, are deleted first thing (a VIP port on a subnet
//! would stop its replacement). `down` needs nothing of them: the server goes with its store.

use serde_json::{Value, json};

use super::Lab;
use super::attrs::same_subnet;
use crate::neutron::{Neutron, text};
use crate::state::{ListenerState, LoadBalancerState};
use crate::topology::{ListenerSpec, LoadBalancerSpec, MonitorSpec, Topology};
use crate::{Error, Result};

const LOADBALANCERS: &str = "lbaas/loadbalancers";
const LISTENERS: &str = "lbaas/listeners";
const POOLS: &str = "lbaas/pools";
const MONITORS: &str = "lbaas/healthmonitors";

/// The members of pool `pool`.
fn members(pool: &str) -> String {
    format!("{POOLS}/{pool}/members")
}

/// A member as the lab wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    vm: String,
    address: String,
    subnet_id: String,
    port: u16,
    weight: u16,
    backup: bool,
}

impl Member {
    /// Whether the API's member `m` is this one exactly.
    fn is(&self, m: &Value) -> bool {
        text(m, "address") == self.address
            && text(m, "subnet_id") == self.subnet_id
            && m.get("protocol_port").and_then(Value::as_u64) == Some(u64::from(self.port))
            && m.get("weight").and_then(Value::as_u64) == Some(u64::from(self.weight))
            && m.get("backup").and_then(Value::as_bool) == Some(self.backup)
    }

    fn label(&self) -> String {
        format!("{} {}:{}", self.vm, self.address, self.port)
    }
}

/// The body that creates health monitor `mon` on pool `pool`.
fn monitor_attrs(mon: &MonitorSpec, pool: &str) -> Value {
    let mut attrs = json!({
        "pool_id": pool,
        "type": mon.kind.as_str(),
        "delay": mon.delay,
        "timeout": mon.timeout,
        "max_retries": mon.max_retries,
        "max_retries_down": mon.max_retries_down.unwrap_or(3),
    });
    if let Some(p) = &mon.url_path {
        attrs["url_path"] = p.as_str().into();
    }
    if let Some(c) = &mon.expected_codes {
        attrs["expected_codes"] = c.as_str().into();
    }
    attrs
}

/// Whether the API's health monitor `have` is what `mon` asks for (the server's defaults for
/// what it leaves out).
fn same_monitor(have: &Value, mon: &MonitorSpec) -> bool {
    let want = monitor_attrs(mon, "");
    let num = |key: &str| have.get(key) == want.get(key);
    let http = |key: &str, default: &str| {
        let want = want.get(key).and_then(Value::as_str).unwrap_or(default);
        text(have, key) == want
    };
    text(have, "type") == mon.kind.as_str()
        && ["delay", "timeout", "max_retries", "max_retries_down"]
            .into_iter()
            .all(num)
        && (mon.kind.as_str() != "HTTP" || (http("url_path", "/") && http("expected_codes", "200")))
}

/// The pool settings (`lb_algorithm`, `session_persistence`) listener `l` asks for.
fn pool_settings(l: &ListenerSpec) -> (String, Value) {
    let persistence = l
        .persistence
        .map_or(Value::Null, |p| json!({ "type": p.as_str() }));
    (l.algorithm.as_str().to_owned(), persistence)
}

/// The name the lab gives listener `l` of load balancer `lb` and its pool: `web-http-80`.
fn listener_name(lb: &str, l: &ListenerSpec) -> String {
    format!("{lb}-{}-{}", l.protocol.as_str().to_lowercase(), l.port)
}

impl Lab {
    /// Deletes (with cascade) the load balancers the lab made that `topo` no longer has, and
    /// those whose VIP subnet is about to be replaced.
    pub(super) async fn remove_load_balancers(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for (name, lb) in self.state.load_balancers.clone() {
            let why = match topo.load_balancers.iter().find(|l| l.name == name) {
                None => Some("not in the file".to_owned()),
                Some(spec) => self.vip_subnet_replaced(api, topo, spec, &lb).await?,
            };
            if let Some(why) = why {
                api.delete_with(LOADBALANCERS, &lb.id, "cascade=true")
                    .await?;
                self.state.load_balancers.remove(&name);
                let what = format!("load balancer {name}");
                self.changed(changes, &what, &format!("deleted ({why})"));
            }
        }
        Ok(())
    }

    /// Why load balancer `lb` must go before the subnets are brought in line, if it must: its
    /// VIP subnet is replaced (another CIDR or IPv6 modes).
    async fn vip_subnet_replaced(
        &self,
        api: &Neutron,
        topo: &Topology,
        spec: &LoadBalancerSpec,
        lb: &LoadBalancerState,
    ) -> Result<Option<String>> {
        let Some((_, subnet, name)) = topo.vip_subnet(spec) else {
            return Ok(None);
        };
        if name != lb.subnet {
            return Ok(None);
        }
        let Ok(id) = self.subnet_id(&name) else {
            return Ok(None);
        };
        Ok(match api.show("subnets", "subnet", &id).await? {
            Some(have) if !same_subnet(&have, subnet) => {
                Some(format!("its VIP subnet {name} is replaced"))
            }
            _ => None,
        })
    }

    /// Makes every load balancer of `topo` what the file says (after the VMs are wired).
    pub(super) async fn ensure_load_balancers(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for spec in &topo.load_balancers {
            let made = self.ensure_load_balancer(api, topo, spec, changes).await?;
            self.state.load_balancers.insert(spec.name.clone(), made);
        }
        Ok(())
    }

    async fn ensure_load_balancer(
        &self,
        api: &Neutron,
        topo: &Topology,
        spec: &LoadBalancerSpec,
        changes: &mut Vec<String>,
    ) -> Result<LoadBalancerState> {
        let what = format!("load balancer {}", spec.name);
        let before = changes.len();
        let (net, _, subnet_name) = topo
            .vip_subnet(spec)
            .ok_or_else(|| Error::NotFound(format!("{what}: no VIP subnet")))?;
        let subnet_id = self.subnet_id(&subnet_name)?;
        let project = topo.lb_project(spec).map(str::to_owned);
        let owner = project.as_deref().unwrap_or("admin");
        // An admin's objects are made as admin.
        let caller = project.as_deref().filter(|p| *p != "admin");
        let known = self
            .state
            .load_balancers
            .get(&spec.name)
            .map(|l| l.id.as_str());
        let mut found = api
            .find(LOADBALANCERS, "loadbalancer", known, &spec.name, owner)
            .await?;
        if let Some(lb) = &found {
            let why = if text(lb, "vip_subnet_id") != subnet_id {
                Some(format!("its VIP moves to subnet {subnet_name}"))
            } else if let Some(ip) = spec.vip
                && text(lb, "vip_address") != ip.to_string()
            {
                Some(format!("the file wants VIP {ip}"))
            } else if text(lb, "project_id") != owner {
                Some(format!("it moves to project {owner}"))
            } else {
                None
            };
            if let Some(why) = why {
                api.delete_with(LOADBALANCERS, text(lb, "id"), "cascade=true")
                    .await?;
                self.changed(changes, &what, &format!("deleted ({why})"));
                found = None;
            }
        }
        let lb = match found {
            Some(lb) => lb,
            None => {
                let mut attrs = json!({ "name": spec.name, "vip_subnet_id": subnet_id });
                if let Some(ip) = spec.vip {
                    attrs["vip_address"] = ip.to_string().into();
                }
                let lb = api
                    .create(LOADBALANCERS, "loadbalancer", caller, attrs)
                    .await?;
                let status = format!(
                    "created (VIP {} on {subnet_name}, {})",
                    text(&lb, "vip_address"),
                    text(&lb, "id")
                );
                self.changed(changes, &what, &status);
                lb
            }
        };
        let id = text(&lb, "id").to_owned();
        // Listeners the file no longer has go with their pools; so do pools without a
        // listener (left by an `up` that failed half way).
        let existing = api
            .list(LISTENERS, &format!("loadbalancer_id={id}"))
            .await?;
        let mut kept = Vec::new();
        for l in existing {
            let wanted = spec.listeners.iter().any(|s| {
                text(&l, "protocol") == s.protocol.as_str()
                    && l.get("protocol_port").and_then(Value::as_u64) == Some(u64::from(s.port))
            });
            if wanted {
                kept.push(l);
                continue;
            }
            let pool = text(&l, "default_pool_id");
            if !pool.is_empty() {
                api.delete(POOLS, pool).await?;
            }
            api.delete(LISTENERS, text(&l, "id")).await?;
            let status = format!(
                "listener {} {} deleted",
                text(&l, "protocol"),
                l.get("protocol_port").unwrap_or(&Value::Null)
            );
            self.changed(changes, &what, &status);
        }
        for p in api.list(POOLS, &format!("loadbalancer_id={id}")).await? {
            let orphan = p
                .get("listeners")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if orphan {
                api.delete(POOLS, text(&p, "id")).await?;
                let status = format!("pool {} without a listener deleted", text(&p, "id"));
                self.changed(changes, &what, &status);
            }
        }
        let mut listeners = Vec::new();
        for l in &spec.listeners {
            let have = kept.iter().find(|k| {
                text(k, "protocol") == l.protocol.as_str()
                    && k.get("protocol_port").and_then(Value::as_u64) == Some(u64::from(l.port))
            });
            let made = self
                .ensure_listener(api, spec, &id, l, have, caller, changes)
                .await?;
            listeners.push(made);
        }
        let vip = text(&lb, "vip_address").to_owned();
        if changes.len() == before {
            self.say(&what, &format!("ok (VIP {vip}, {id})"));
        }
        Ok(LoadBalancerState {
            id,
            project,
            vip,
            network: net.name.clone(),
            subnet: subnet_name,
            listeners,
        })
    }

    /// Makes listener `l` of load balancer `lb_id` (`have`: as the API shows it, if it exists)
    /// with its pool, members and monitor what the file says.
    #[allow(clippy::too_many_arguments)]
    async fn ensure_listener(
        &self,
        api: &Neutron,
        spec: &LoadBalancerSpec,
        lb_id: &str,
        l: &ListenerSpec,
        have: Option<&Value>,
        caller: Option<&str>,
        changes: &mut Vec<String>,
    ) -> Result<ListenerState> {
        let what = format!(
            "load balancer {} listener {} {}",
            spec.name,
            l.protocol.as_str(),
            l.port
        );
        let name = listener_name(&spec.name, l);
        let listener = match have {
            Some(v) => v.clone(),
            None => {
                let attrs = json!({
                    "name": name,
                    "loadbalancer_id": lb_id,
                    "protocol": l.protocol.as_str(),
                    "protocol_port": l.port,
                });
                let v = api.create(LISTENERS, "listener", caller, attrs).await?;
                self.changed(changes, &what, &format!("created ({})", text(&v, "id")));
                v
            }
        };
        let listener_id = text(&listener, "id").to_owned();
        let (algorithm, persistence) = pool_settings(l);
        let pool_id = text(&listener, "default_pool_id").to_owned();
        let shown = if pool_id.is_empty() {
            None
        } else {
            api.show(POOLS, "pool", &pool_id).await?
        };
        let pool = match shown {
            Some(p) => {
                let mut update = serde_json::Map::new();
                if text(&p, "lb_algorithm") != algorithm {
                    update.insert("lb_algorithm".into(), algorithm.clone().into());
                }
                let have_type = p.get("session_persistence").and_then(|s| s.get("type"));
                if have_type != persistence.get("type") {
                    update.insert("session_persistence".into(), persistence.clone());
                }
                if update.is_empty() {
                    p
                } else {
                    let keys: Vec<String> = update.keys().cloned().collect();
                    let p = api
                        .update(POOLS, "pool", &pool_id, Value::Object(update))
                        .await?;
                    let status = format!("pool updated ({})", keys.join(", "));
                    self.changed(changes, &what, &status);
                    p
                }
            }
            None => {
                let mut attrs = json!({
                    "name": name,
                    "listener_id": listener_id,
                    "protocol": l.protocol.as_str(),
                    "lb_algorithm": algorithm,
                });
                if !persistence.is_null() {
                    attrs["session_persistence"] = persistence;
                }
                let p = api.create(POOLS, "pool", caller, attrs).await?;
                let status = format!("pool created ({algorithm}, {})", text(&p, "id"));
                self.changed(changes, &what, &status);
                p
            }
        };
        let pool_id = text(&pool, "id").to_owned();
        let wanted = self.wanted_members(l)?;
        let have = api.list(&members(&pool_id), "").await?;
        // Members that differ go first: the server refuses a second member on an address and
        // port.
        let mut kept = Vec::new();
        for m in have {
            if wanted.iter().any(|w| w.is(&m)) {
                kept.push(m);
            } else {
                api.delete(&members(&pool_id), text(&m, "id")).await?;
                let status = format!(
                    "member {}:{} removed",
                    text(&m, "address"),
                    m.get("protocol_port").unwrap_or(&Value::Null)
                );
                self.changed(changes, &what, &status);
            }
        }
        for w in &wanted {
            if kept.iter().any(|m| w.is(m)) {
                continue;
            }
            let attrs = json!({
                "name": w.vm,
                "address": w.address,
                "protocol_port": w.port,
                "subnet_id": w.subnet_id,
                "weight": w.weight,
                "backup": w.backup,
            });
            api.create(&members(&pool_id), "member", caller, attrs)
                .await?;
            self.changed(changes, &what, &format!("member {} added", w.label()));
        }
        let monitor_id = text(&pool, "healthmonitor_id").to_owned();
        let have_monitor = if monitor_id.is_empty() {
            None
        } else {
            api.show(MONITORS, "healthmonitor", &monitor_id).await?
        };
        match (&l.monitor, have_monitor) {
            (Some(want), Some(have)) if same_monitor(&have, want) => {}
            (want, have) => {
                if let Some(h) = have {
                    api.delete(MONITORS, text(&h, "id")).await?;
                    self.changed(changes, &what, "health monitor deleted");
                }
                if let Some(want) = want {
                    api.create(
                        MONITORS,
                        "healthmonitor",
                        caller,
                        monitor_attrs(want, &pool_id),
                    )
                    .await?;
                    let status = format!("{} health monitor created", want.kind.as_str());
                    self.changed(changes, &what, &status);
                }
            }
        }
        Ok(ListenerState {
            id: listener_id,
            protocol: l.protocol,
            port: l.port,
            pool: pool_id,
            members: wanted.iter().map(Member::label).collect(),
            monitor: l.monitor.as_ref().map(|m| m.kind),
        })
    }

    /// The members listener `l` asks for: each VM's first address (IPv4 first) on its subnet.
    fn wanted_members(&self, l: &ListenerSpec) -> Result<Vec<Member>> {
        l.members
            .iter()
            .map(|m| {
                let missing = || Error::NotFound(format!("vm {} was not made", m.vm));
                let vm = self.state.vms.get(&m.vm).ok_or_else(missing)?;
                let first = vm.addresses.first().ok_or_else(missing)?;
                let address = first.split('/').next().unwrap_or(first).to_owned();
                let ip: std::net::IpAddr = address
                    .parse()
                    .map_err(|_| Error::NotFound(format!("vm {}: address {first}", m.vm)))?;
                let subnet_id = self
                    .state
                    .networks
                    .get(&vm.network)
                    .into_iter()
                    .flat_map(|n| &n.subnets)
                    .find(|s| {
                        s.cidr
                            .parse::<ipnet::IpNet>()
                            .is_ok_and(|c| c.contains(&ip))
                    })
                    .map(|s| s.id.clone())
                    .ok_or_else(|| {
                        Error::NotFound(format!("vm {}: no subnet holds {address}", m.vm))
                    })?;
                Ok(Member {
                    vm: m.vm.clone(),
                    address,
                    subnet_id,
                    port: m.port,
                    weight: m.weight.unwrap_or(1),
                    backup: m.backup,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::MonitorType;

    #[test]
    fn monitors_compare_with_the_servers_defaults() {
        let mon = MonitorSpec {
            kind: MonitorType::HTTP,
            delay: 1,
            timeout: 1,
            max_retries: 2,
            max_retries_down: None,
            url_path: None,
            expected_codes: None,
        };
        let shown = json!({"id": "m", "type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 2,
            "max_retries_down": 3, "http_method": "GET", "url_path": "/", "expected_codes": "200"});
        assert!(same_monitor(&shown, &mon));
        let other = MonitorSpec {
            url_path: Some("/health".into()),
            ..mon.clone()
        };
        assert!(!same_monitor(&shown, &other));
        let tcp = MonitorSpec {
            kind: MonitorType::TCP,
            ..mon.clone()
        };
        assert!(!same_monitor(&shown, &tcp));
        let attrs = monitor_attrs(&other, "p1");
        assert_eq!(attrs["pool_id"], "p1");
        assert_eq!(attrs["max_retries_down"], 3);
        assert_eq!(attrs["url_path"], "/health");
        assert!(attrs.get("expected_codes").is_none());
    }

    #[test]
    fn members_compare_exactly() {
        let m = Member {
            vm: "web1".into(),
            address: "10.0.0.11".into(),
            subnet_id: "s1".into(),
            port: 8080,
            weight: 1,
            backup: false,
        };
        let shown = json!({"address": "10.0.0.11", "subnet_id": "s1", "protocol_port": 8080,
            "weight": 1, "backup": false});
        assert!(m.is(&shown));
        let heavier = Member {
            weight: 2,
            ..m.clone()
        };
        assert!(!heavier.is(&shown));
        assert_eq!(m.label(), "web1 10.0.0.11:8080");
    }
}
