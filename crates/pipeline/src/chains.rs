//! Service function chains as the datapath sees them: networking-sfc's port pairs, port pair
//! groups, flow classifiers and port chains decoded from the northbound store's JSON, with only
//! what steering flows are made from.

use ipnet::IpNet;
use serde_json::Value;

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn id_of(v: &Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn ids(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|s| Some(s.as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn port(v: &Value, k: &str) -> Option<u16> {
    v.get(k)
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

/// A service function's two ports: traffic goes in at `ingress` and comes back at `egress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPair {
    pub id: String,
    pub name: String,
    pub ingress: String,
    pub egress: String,
    /// The function reads and returns an MPLS label (`correlation` `mpls`).
    pub mpls: bool,
    pub weight: u16,
}

/// Port pairs that share a hop's traffic, one connection on one pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPairGroup {
    pub id: String,
    pub name: String,
    pub port_pairs: Vec<String>,
}

/// What traffic a chain takes: from a port (the only source the datapath classifies at), to
/// addresses and transport ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowClassifier {
    pub id: String,
    pub name: String,
    pub ipv6: bool,
    /// IP protocol number, if one.
    pub protocol: Option<u8>,
    pub source_prefix: Option<IpNet>,
    pub destination_prefix: Option<IpNet>,
    pub source_ports: Option<(u16, u16)>,
    pub destination_ports: Option<(u16, u16)>,
    pub source_port_id: Option<String>,
    pub destination_port_id: Option<String>,
}

/// A chain: its groups in order and the classifiers of its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortChain {
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
    pub classifiers: Vec<String>,
    /// `chain_id`: the number its labels carry.
    pub number: u32,
    /// Replies pass the functions in reverse order (`chain_parameters.symmetric`).
    pub symmetric: bool,
}

impl PortPair {
    pub fn from_json(v: &Value) -> Option<Self> {
        let params = v.get("service_function_parameters");
        let param = |k: &str| params.and_then(|p| p.get(k));
        Some(Self {
            id: id_of(v, "id")?,
            name: str_of(v, "name").to_string(),
            ingress: id_of(v, "ingress")?,
            egress: id_of(v, "egress")?,
            mpls: param("correlation").and_then(Value::as_str) == Some("mpls"),
            weight: param("weight")
                .and_then(Value::as_u64)
                .and_then(|w| u16::try_from(w).ok())
                .unwrap_or(1),
        })
    }
}

impl PortPairGroup {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: id_of(v, "id")?,
            name: str_of(v, "name").to_string(),
            port_pairs: ids(v, "port_pairs"),
        })
    }
}

impl FlowClassifier {
    pub fn from_json(v: &Value) -> Option<Self> {
        let prefix = |k: &str| -> Option<Option<IpNet>> {
            match v.get(k) {
                None | Some(Value::Null) => Some(None),
                Some(p) => Some(Some(p.as_str()?.parse::<IpNet>().ok()?.trunc())),
            }
        };
        let range = |lo: &str, hi: &str| match (port(v, lo), port(v, hi)) {
            (Some(l), Some(h)) => Some((l, h)),
            (Some(l), None) => Some((l, l)),
            (None, Some(h)) => Some((0, h)),
            (None, None) => None,
        };
        let protocol = match v.get("protocol") {
            None | Some(Value::Null) => None,
            Some(p) => Some(match p.as_str()?.to_ascii_lowercase().as_str() {
                "tcp" => 6,
                "udp" => 17,
                "icmp" => 1,
                "icmpv6" | "ipv6-icmp" => 58,
                n => n.parse().ok()?,
            }),
        };
        Some(Self {
            id: id_of(v, "id")?,
            name: str_of(v, "name").to_string(),
            ipv6: str_of(v, "ethertype") == "IPv6",
            protocol,
            source_prefix: prefix("source_ip_prefix")?,
            destination_prefix: prefix("destination_ip_prefix")?,
            source_ports: range("source_port_range_min", "source_port_range_max"),
            destination_ports: range("destination_port_range_min", "destination_port_range_max"),
            source_port_id: id_of(v, "logical_source_port"),
            destination_port_id: id_of(v, "logical_destination_port"),
        })
    }
}

impl PortChain {
    pub fn from_json(v: &Value) -> Option<Self> {
        let params = v.get("chain_parameters");
        Some(Self {
            id: id_of(v, "id")?,
            name: str_of(v, "name").to_string(),
            groups: ids(v, "port_pair_groups"),
            classifiers: ids(v, "flow_classifiers"),
            number: v
                .get("chain_id")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())?,
            symmetric: params
                .and_then(|p| p.get("symmetric"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_what_the_api_stores() {
        let pair = PortPair::from_json(&json!({"id": "p", "ingress": "i", "egress": "e",
            "service_function_parameters": {"correlation": "mpls", "weight": 2}}))
        .unwrap();
        assert!(pair.mpls);
        assert_eq!(pair.weight, 2);
        let fc = FlowClassifier::from_json(&json!({"id": "f", "ethertype": "IPv4",
            "protocol": "tcp", "destination_port_range_min": 80, "destination_port_range_max": 80,
            "source_ip_prefix": "10.0.0.5/24", "logical_source_port": "a"}))
        .unwrap();
        assert_eq!(fc.protocol, Some(6));
        assert_eq!(fc.destination_ports, Some((80, 80)));
        assert_eq!(fc.source_prefix, Some("10.0.0.0/24".parse().unwrap()));
        let chain = PortChain::from_json(&json!({"id": "c", "chain_id": 3,
            "port_pair_groups": ["g1", "g2"], "flow_classifiers": ["f"],
            "chain_parameters": {"correlation": "mpls", "symmetric": true}}))
        .unwrap();
        assert_eq!((chain.number, chain.symmetric), (3, true));
        assert_eq!(chain.groups, ["g1", "g2"]);
    }
}
