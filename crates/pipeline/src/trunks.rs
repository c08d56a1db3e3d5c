//! Trunks (Neutron's trunk extension: VLAN-aware VMs) as the datapath sees them: a parent port
//! and its subports, each with the VLAN id that carries it on the parent's VIF, decoded from the
//! northbound store's JSON (the trunk as the API shows it).

use serde_json::Value;

/// A subport of a trunk: frames on the parent's VIF tagged with `vlan` are its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subport {
    pub port_id: String,
    /// The VLAN id (1 to 4094).
    pub vlan: u16,
}

/// A trunk: its parent port and its subports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub id: String,
    pub name: String,
    /// The parent port (`port_id`): untagged frames on its VIF are its own.
    pub parent: String,
    /// The subports whose segmentation is a VLAN with a valid id (others have no datapath),
    /// in the order the API lists them.
    pub subports: Vec<Subport>,
}

impl Trunk {
    /// The trunk in Neutron's shape (`{id, name, port_id, sub_ports: [{port_id,
    /// segmentation_type, segmentation_id}]}`); `None` without an id or a parent.
    pub fn from_json(v: &Value) -> Option<Self> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
        let (id, parent) = (text("id"), text("port_id"));
        if id.is_empty() || parent.is_empty() {
            return None;
        }
        let subports = v
            .get("sub_ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let port_id = s.get("port_id")?.as_str().filter(|p| !p.is_empty())?;
                let kind = s.get("segmentation_type").and_then(Value::as_str);
                if kind.is_some_and(|k| k != "vlan") {
                    return None;
                }
                let vlan = s.get("segmentation_id")?.as_u64()?;
                let vlan = u16::try_from(vlan)
                    .ok()
                    .filter(|v| (1..=4094).contains(v))?;
                Some(Subport {
                    port_id: port_id.to_string(),
                    vlan,
                })
            })
            .collect();
        Some(Trunk {
            id: id.to_string(),
            name: text("name").to_string(),
            parent: parent.to_string(),
            subports,
        })
    }

    /// Every port the trunk names: its parent, then its subports.
    pub fn ports(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.parent.as_str())
            .chain(self.subports.iter().map(|s| s.port_id.as_str()))
    }

    /// The subports the datapath can serve: those whose VLAN id and port appear once in the
    /// trunk and that are not its parent (the API refuses the rest; a replica never holds them
    /// for long, and they get no flows meanwhile).
    pub fn distinct_subports(&self) -> impl Iterator<Item = &Subport> {
        self.subports.iter().filter(|s| {
            s.port_id != self.parent
                && self.subports.iter().filter(|o| o.vlan == s.vlan).count() == 1
                && self
                    .subports
                    .iter()
                    .filter(|o| o.port_id == s.port_id)
                    .count()
                    == 1
        })
    }

    /// The subport carried on `vlan`, if one of [`Trunk::distinct_subports`] is.
    pub fn subport_on(&self, vlan: u16) -> Option<&Subport> {
        self.distinct_subports().find(|s| s.vlan == vlan)
    }
}

/// `external_ids` key, on both ends of a subport's patch pair (`Interface` rows), naming the
/// subport; the outer end also has `iface-id` (the subport's VIF), the inner end has not.
pub const SUBPORT_KEY: &str = "wyvern-subport";
/// `external_ids` key of the inner end: the trunk's parent port.
pub const PARENT_KEY: &str = "wyvern-trunk-parent";
/// `external_ids` key of the inner end: the subport's VLAN id.
pub const VLAN_KEY: &str = "wyvern-vlan";

/// The name of the port that is `subport`'s own on `br-int` (`spt` + the first 11 characters of
/// its id; `external_ids:iface-id` names the subport), the outer end of its patch pair.
pub fn outer_port_name(subport: &str) -> String {
    format!("spt{}", prefix(subport))
}

/// The name of the inner end of `subport`'s patch pair (`spi` + the first 11 characters of its
/// id), the port the trunk's flows send its frames to and receive them from.
pub fn inner_port_name(subport: &str) -> String {
    format!("spi{}", prefix(subport))
}

fn prefix(id: &str) -> String {
    id.chars().take(11).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decodes_neutrons_shape() {
        let t = Trunk::from_json(&json!({
            "id": "t1", "name": "trunk", "port_id": "p0", "admin_state_up": true,
            "status": "ACTIVE", "_network_ids": ["n1", "n2"],
            "sub_ports": [
                {"port_id": "s1", "segmentation_type": "vlan", "segmentation_id": 101},
                {"port_id": "s2", "segmentation_type": "inherit", "segmentation_id": 5},
                {"port_id": "s3", "segmentation_type": "vlan", "segmentation_id": 4095},
                {"port_id": "s4", "segmentation_type": "vlan", "segmentation_id": 102},
            ],
        }))
        .unwrap();
        assert_eq!(t.parent, "p0");
        let vlans: Vec<(&str, u16)> = t
            .subports
            .iter()
            .map(|s| (s.port_id.as_str(), s.vlan))
            .collect();
        assert_eq!(vlans, [("s1", 101), ("s4", 102)]);
        assert_eq!(t.ports().collect::<Vec<_>>(), ["p0", "s1", "s4"]);
        assert_eq!(t.subport_on(102).map(|s| s.port_id.as_str()), Some("s4"));
        assert!(Trunk::from_json(&json!({"id": "t1"})).is_none());
        assert!(Trunk::from_json(&json!({"port_id": "p"})).is_none());
    }

    #[test]
    fn clashing_subports_are_not_served() {
        let t = Trunk::from_json(&json!({"id": "t", "port_id": "p", "sub_ports": [
            {"port_id": "a", "segmentation_type": "vlan", "segmentation_id": 10},
            {"port_id": "b", "segmentation_type": "vlan", "segmentation_id": 10},
            {"port_id": "c", "segmentation_type": "vlan", "segmentation_id": 11},
            {"port_id": "c", "segmentation_type": "vlan", "segmentation_id": 12},
            {"port_id": "p", "segmentation_type": "vlan", "segmentation_id": 13},
            {"port_id": "d", "segmentation_type": "vlan", "segmentation_id": 14},
        ]}))
        .unwrap();
        let served: Vec<&str> = t.distinct_subports().map(|s| s.port_id.as_str()).collect();
        assert_eq!(served, ["d"]);
    }

    #[test]
    fn port_names_fit_openflow() {
        let id = "3f2a51c0-1234-4abc-8def-0123456789ab";
        assert_eq!(outer_port_name(id), "spt3f2a51c0-12");
        assert_eq!(inner_port_name(id), "spi3f2a51c0-12");
        assert!(outer_port_name(id).len() <= 15);
    }
}
