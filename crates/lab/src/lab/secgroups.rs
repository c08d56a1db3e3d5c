//! A lab's security groups and address groups: made as their project, brought back in line with
//! the file on every `up`. A group's rules are what the file lists, plus Neutron's two allow-all
//! egress rules unless it says `default_rules = false`; rules cannot change in Neutron, so a rule
//! that differs is deleted and the wanted one created. An address group's addresses are added
//! and removed (`add_addresses`, `remove_addresses`). A VM's port gets the groups it names (the
//! project's `default` group when it names none, as Neutron does), or none with port security
//! off. Groups the file no longer has are deleted once no VM's port uses them.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::Lab;
use crate::neutron::{Neutron, text};
use crate::state::GroupState;
use crate::topology::{
    AddressGroupSpec, DEFAULT_GROUP, Direction, Ethertype, Protocol, RuleSpec, SecurityGroupSpec,
    Topology, VmSpec, project_of,
};
use crate::{Error, Result};

/// What makes a rule the rule it is, in the API's canonical form: protocol numbers (ICMP under
/// IPv6 is 58), no port range for 1-65535, prefixes as network addresses, groups by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RuleKey {
    direction: Direction,
    ethertype: Ethertype,
    protocol: Option<u8>,
    port_range: (Option<u16>, Option<u16>),
    remote_ip_prefix: Option<IpNet>,
    remote_group_id: Option<String>,
    remote_address_group_id: Option<String>,
}

impl RuleKey {
    fn new(
        direction: Direction,
        ethertype: Ethertype,
        protocol: Option<u8>,
        port_range: (Option<u16>, Option<u16>),
    ) -> RuleKey {
        let protocol = match (ethertype, protocol) {
            (Ethertype::IPv6, Some(1)) => Some(58),
            (_, p) => p,
        };
        let port_range = match port_range {
            (Some(1), Some(65535)) => (None, None),
            r => r,
        };
        RuleKey {
            direction,
            ethertype,
            protocol,
            port_range,
            remote_ip_prefix: None,
            remote_group_id: None,
            remote_address_group_id: None,
        }
    }

    /// A rule as the API shows it; `None` for one the lab cannot read (deleted, as every rule
    /// the file does not want).
    fn from_api(rule: &Value) -> Option<RuleKey> {
        let direction = match text(rule, "direction") {
            "ingress" => Direction::Ingress,
            "egress" => Direction::Egress,
            _ => return None,
        };
        let ethertype = match text(rule, "ethertype") {
            "IPv6" => Ethertype::IPv6,
            _ => Ethertype::IPv4,
        };
        let protocol = match rule.get("protocol").and_then(Value::as_str) {
            None => None,
            Some(p) => Some(Protocol::Name(p.to_owned()).number()?),
        };
        let port = |k: &str| {
            rule.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u16::try_from(v).ok())
        };
        let id = |k: &str| rule.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut key = RuleKey::new(
            direction,
            ethertype,
            protocol,
            (port("port_range_min"), port("port_range_max")),
        );
        key.remote_ip_prefix = rule
            .get("remote_ip_prefix")
            .and_then(Value::as_str)
            .and_then(|p| p.parse::<IpNet>().ok())
            .map(|p| p.trunc());
        key.remote_group_id = id("remote_group_id");
        key.remote_address_group_id = id("remote_address_group_id");
        Some(key)
    }

    /// The attributes that create this rule in group `group`.
    fn attrs(&self, group: &str) -> Value {
        let mut a = json!({
            "security_group_id": group,
            "direction": match self.direction {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            },
            "ethertype": match self.ethertype {
                Ethertype::IPv4 => "IPv4",
                Ethertype::IPv6 => "IPv6",
            },
        });
        if let Some(p) = self.protocol {
            // By name where it has one, as people write rules (and the API shows them).
            let name = model::validate::PROTOCOLS
                .iter()
                .find(|(_, n)| *n == p)
                .map_or_else(|| p.to_string(), |(name, _)| (*name).to_owned());
            a["protocol"] = name.into();
        }
        if let Some(p) = self.port_range.0 {
            a["port_range_min"] = p.into();
        }
        if let Some(p) = self.port_range.1 {
            a["port_range_max"] = p.into();
        }
        if let Some(p) = self.remote_ip_prefix {
            a["remote_ip_prefix"] = p.to_string().into();
        }
        if let Some(g) = &self.remote_group_id {
            a["remote_group_id"] = g.clone().into();
        }
        if let Some(g) = &self.remote_address_group_id {
            a["remote_address_group_id"] = g.clone().into();
        }
        a
    }
}

impl std::fmt::Display for RuleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:?}", self.direction, self.ethertype)?;
        match self.protocol {
            Some(p) => write!(f, " proto {p}")?,
            None => write!(f, " any")?,
        }
        match self.port_range {
            (Some(a), Some(b)) if a == b => write!(f, " {a}")?,
            (Some(a), Some(b)) => write!(f, " {a}-{b}")?,
            (Some(a), None) => write!(f, " type {a}")?,
            _ => {}
        }
        if let Some(p) = self.remote_ip_prefix {
            write!(f, " {p}")?;
        }
        if let Some(g) = &self.remote_group_id {
            write!(f, " group {g}")?;
        }
        if let Some(g) = &self.remote_address_group_id {
            write!(f, " address group {g}")?;
        }
        Ok(())
    }
}

/// A host address or prefix of an address group, as the API shows it.
fn prefix(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(|p| p.trunc())
}

fn addresses_of(group: &Value) -> BTreeSet<IpNet> {
    group
        .get("addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| prefix(a.as_str()?))
        .collect()
}

fn address_list(set: &BTreeSet<IpNet>) -> Value {
    set.iter().map(IpNet::to_string).collect()
}

/// The id of `project`'s `default` group (`None`: the admin project's); the server makes it
/// when the project first lists its groups.
async fn default_group(api: &Neutron, project: Option<&str>) -> Result<String> {
    let owner = project.unwrap_or("admin");
    api.list_as("security_groups", &format!("name={DEFAULT_GROUP}"), project)
        .await?
        .iter()
        .find(|g| text(g, "project_id") == owner)
        .map(|g| text(g, "id").to_owned())
        .ok_or_else(|| Error::NotFound(format!("project {owner} has no default security group")))
}

impl Lab {
    /// The API id of the lab's security group `name` (`default`: `project`'s own).
    async fn group_id(&self, api: &Neutron, name: &str, project: Option<&str>) -> Result<String> {
        if name == DEFAULT_GROUP {
            return default_group(api, project).await;
        }
        self.state
            .security_groups
            .get(name)
            .map(|g| g.id.clone())
            .ok_or_else(|| Error::NotFound(format!("security group {name} was not made")))
    }

    /// The security groups VM `vm`'s port (of `project`) should have, by id, sorted.
    pub(super) async fn port_groups(
        &self,
        api: &Neutron,
        vm: &VmSpec,
        project: Option<&str>,
    ) -> Result<Vec<String>> {
        if !vm.port_security {
            return Ok(Vec::new());
        }
        let names = vm
            .security_groups
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_GROUP.to_owned()]);
        let mut ids = Vec::new();
        for n in &names {
            ids.push(self.group_id(api, n, project).await?);
        }
        ids.sort();
        Ok(ids)
    }

    /// Brings the address groups and the security groups (then their rules, which may name
    /// other groups) in line with `topo`. Runs before the VMs' ports are made.
    pub(super) async fn ensure_groups(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for a in &topo.address_groups {
            self.ensure_address_group(api, a, changes).await?;
        }
        for g in &topo.security_groups {
            self.ensure_security_group(api, g, changes).await?;
        }
        for g in &topo.security_groups {
            self.ensure_rules(api, g, changes).await?;
        }
        Ok(())
    }

    /// Deletes the groups the file no longer has: security groups first (the server deletes the
    /// rules of other groups that name them), then address groups. Runs after the VMs' ports
    /// left them.
    pub(super) async fn remove_groups(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for (name, g) in self.state.security_groups.clone() {
            if !topo.security_groups.iter().any(|s| s.name == name) {
                api.delete("security_groups", &g.id).await?;
                self.state.security_groups.remove(&name);
                self.changed(changes, &format!("security group {name}"), "deleted");
            }
        }
        for (name, g) in self.state.address_groups.clone() {
            if !topo.address_groups.iter().any(|s| s.name == name) {
                api.delete("address_groups", &g.id).await?;
                self.state.address_groups.remove(&name);
                self.changed(changes, &format!("address group {name}"), "deleted");
            }
        }
        Ok(())
    }

    async fn ensure_address_group(
        &mut self,
        api: &Neutron,
        spec: &AddressGroupSpec,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let what = format!("address group {}", spec.name);
        let want: BTreeSet<IpNet> = spec.addresses.iter().copied().collect();
        let known = self
            .state
            .address_groups
            .get(&spec.name)
            .map(|g| g.id.as_str());
        let owner = project_of(&spec.project);
        let found = api
            .find("address_groups", "address_group", known, &spec.name, owner)
            .await?;
        let id = match found {
            None => {
                let attrs = json!({ "name": spec.name, "addresses": address_list(&want) });
                let g = api
                    .create(
                        "address_groups",
                        "address_group",
                        spec.project.as_deref(),
                        attrs,
                    )
                    .await?;
                self.changed(changes, &what, &format!("created ({})", text(&g, "id")));
                text(&g, "id").to_owned()
            }
            Some(g) => {
                let id = text(&g, "id").to_owned();
                let have = addresses_of(&g);
                for (action, set) in [
                    ("remove_addresses", have.difference(&want)),
                    ("add_addresses", want.difference(&have)),
                ] {
                    let set: BTreeSet<IpNet> = set.copied().collect();
                    if !set.is_empty() {
                        let body = json!({ "addresses": address_list(&set) });
                        api.act("address_groups", &id, action, body).await?;
                        let status = format!("{action} {}", address_list(&set));
                        self.changed(changes, &what, &status);
                    }
                }
                id
            }
        };
        self.state.address_groups.insert(
            spec.name.clone(),
            GroupState {
                id,
                project: spec.project.clone(),
            },
        );
        Ok(())
    }

    async fn ensure_security_group(
        &mut self,
        api: &Neutron,
        spec: &SecurityGroupSpec,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let what = format!("security group {}", spec.name);
        let known = self
            .state
            .security_groups
            .get(&spec.name)
            .map(|g| g.id.as_str());
        let owner = project_of(&spec.project);
        let found = api
            .find(
                "security_groups",
                "security_group",
                known,
                &spec.name,
                owner,
            )
            .await?;
        let group = match found {
            None => {
                let attrs = json!({ "name": spec.name, "stateful": spec.stateful });
                let g = api
                    .create(
                        "security_groups",
                        "security_group",
                        spec.project.as_deref(),
                        attrs,
                    )
                    .await?;
                self.changed(changes, &what, &format!("created ({})", text(&g, "id")));
                g
            }
            Some(g) if g.get("stateful").and_then(Value::as_bool) != Some(spec.stateful) => {
                let id = text(&g, "id").to_owned();
                let body = json!({ "stateful": spec.stateful });
                let g = api
                    .update("security_groups", "security_group", &id, body)
                    .await?;
                self.changed(
                    changes,
                    &what,
                    &format!("stateful set to {}", spec.stateful),
                );
                g
            }
            Some(g) => g,
        };
        self.state.security_groups.insert(
            spec.name.clone(),
            GroupState {
                id: text(&group, "id").to_owned(),
                project: spec.project.clone(),
            },
        );
        Ok(())
    }

    /// The rules group `spec` should have.
    async fn wanted_rules(
        &self,
        api: &Neutron,
        spec: &SecurityGroupSpec,
    ) -> Result<BTreeSet<RuleKey>> {
        let mut want = BTreeSet::new();
        if spec.default_rules {
            for e in [Ethertype::IPv4, Ethertype::IPv6] {
                want.insert(RuleKey::new(Direction::Egress, e, None, (None, None)));
            }
        }
        for r in &spec.rules {
            want.insert(self.rule_key(api, spec, r).await?);
        }
        Ok(want)
    }

    async fn rule_key(
        &self,
        api: &Neutron,
        spec: &SecurityGroupSpec,
        r: &RuleSpec,
    ) -> Result<RuleKey> {
        let protocol = r.protocol.as_ref().and_then(Protocol::number);
        let mut key = RuleKey::new(
            r.direction,
            r.ethertype,
            protocol,
            (r.port_range_min, r.port_range_max),
        );
        key.remote_ip_prefix = r.remote_ip_prefix;
        if let Some(g) = &r.remote_group {
            key.remote_group_id = Some(self.group_id(api, g, spec.project.as_deref()).await?);
        }
        if let Some(a) = &r.remote_address_group {
            let id = self
                .state
                .address_groups
                .get(a)
                .map(|g| g.id.clone())
                .ok_or_else(|| Error::NotFound(format!("address group {a} was not made")))?;
            key.remote_address_group_id = Some(id);
        }
        Ok(key)
    }

    async fn ensure_rules(
        &mut self,
        api: &Neutron,
        spec: &SecurityGroupSpec,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let what = format!("security group {}", spec.name);
        let id = self
            .group_id(api, &spec.name, spec.project.as_deref())
            .await?;
        let want = self.wanted_rules(api, spec).await?;
        let have = api
            .list("security_group_rules", &format!("security_group_id={id}"))
            .await?;
        let mut kept = BTreeSet::new();
        let mut changed = false;
        for rule in &have {
            match RuleKey::from_api(rule) {
                Some(k) if want.contains(&k) && kept.insert(k.clone()) => {}
                k => {
                    api.delete("security_group_rules", text(rule, "id")).await?;
                    let label = k.map_or_else(|| text(rule, "id").to_owned(), |k| k.to_string());
                    self.changed(changes, &what, &format!("rule removed ({label})"));
                    changed = true;
                }
            }
        }
        for k in want.difference(&kept) {
            api.create(
                "security_group_rules",
                "security_group_rule",
                spec.project.as_deref(),
                k.attrs(&id),
            )
            .await?;
            self.changed(changes, &what, &format!("rule added ({k})"));
            changed = true;
        }
        if !changed {
            self.say(&what, &format!("ok ({id}, {} rules)", want.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_compare_in_the_apis_canonical_form() {
        // ICMP under IPv6 is ICMPv6 (the API says `ipv6-icmp`); 1-65535 is no range at all.
        let file = RuleKey::new(
            Direction::Ingress,
            Ethertype::IPv6,
            Protocol::Name("icmp".into()).number(),
            (None, None),
        );
        let shown = json!({ "direction": "ingress", "ethertype": "IPv6", "protocol": "ipv6-icmp",
                            "port_range_min": null, "remote_group_id": null });
        assert_eq!(RuleKey::from_api(&shown), Some(file));
        let all_ports = RuleKey::new(
            Direction::Egress,
            Ethertype::IPv4,
            Some(6),
            (Some(1), Some(65535)),
        );
        assert_eq!(all_ports.port_range, (None, None));

        // What the lab creates reads back as the same rule, by name or by number, with the
        // prefix as the API normalizes it.
        let mut web = RuleKey::new(
            Direction::Ingress,
            Ethertype::IPv4,
            Some(6),
            (Some(80), Some(80)),
        );
        web.remote_ip_prefix = Some("10.0.0.0/24".parse().unwrap());
        let mut attrs = web.attrs("g1");
        assert_eq!(
            (&attrs["security_group_id"], &attrs["protocol"]),
            (&json!("g1"), &json!("tcp"))
        );
        assert_eq!(RuleKey::from_api(&attrs), Some(web.clone()));
        attrs["protocol"] = "6".into();
        attrs["remote_ip_prefix"] = "10.0.0.7/24".into();
        assert_eq!(RuleKey::from_api(&attrs), Some(web.clone()));
        attrs["remote_group_id"] = "g2".into();
        assert_ne!(RuleKey::from_api(&attrs), Some(web));
        assert_eq!(RuleKey::from_api(&json!({ "direction": "sideways" })), None);

        // Address groups: host addresses and prefixes alike.
        let g = json!({ "addresses": ["10.9.0.0/24", "10.9.1.5", "10.9.1.6/32"] });
        let shown: Vec<String> = addresses_of(&g).iter().map(IpNet::to_string).collect();
        assert_eq!(shown, ["10.9.0.0/24", "10.9.1.5/32", "10.9.1.6/32"]);
    }
}
