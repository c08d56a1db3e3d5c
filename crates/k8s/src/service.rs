//! Service + EndpointSlices → load balancer, the pure part.
//!
//! A Service with a cluster IP (types `ClusterIP`, `NodePort`, `LoadBalancer`; headless and
//! `ExternalName` services have none) is a load balancer whose VIP is the cluster IP; each TCP or
//! UDP service port a listener with one pool (`ROUND_ROBIN`, `SOURCE_IP` persistence for
//! `sessionAffinity: ClientIP`) whose members are the ready endpoints of the service's slices,
//! on the slice port of the same name and protocol. SCTP ports are skipped (the load-balancer
//! API has no SCTP listener).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::policy::Family;

/// The label that ties a slice to its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl LbProtocol {
    /// The load-balancer API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LbProtocol::Tcp => "TCP",
            LbProtocol::Udp => "UDP",
        }
    }

    /// From the API's name.
    pub fn parse(s: &str) -> Option<LbProtocol> {
        match s {
            "TCP" => Some(LbProtocol::Tcp),
            "UDP" => Some(LbProtocol::Udp),
            _ => None,
        }
    }
}

/// One listener with its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The service port's name (may be empty).
    pub name: String,
    /// `SOURCE_IP` session persistence.
    pub source_ip: bool,
    /// Members: address and port.
    pub members: BTreeSet<(IpAddr, u16)>,
}

/// A service's load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbSpec {
    /// `<namespace>/<name>`.
    pub name: String,
    /// The cluster IP.
    pub vip: IpAddr,
    /// Listeners by protocol and port.
    pub listeners: BTreeMap<(LbProtocol, u16), ListenerSpec>,
    /// What was skipped, for the log.
    pub skipped: Vec<String>,
}

/// The load balancer `svc` needs given its slices (`slices` may hold any; those not labelled
/// for this service are ignored). `None`: the service has no cluster IP to balance.
pub fn map_service(svc: &Service, slices: &[&EndpointSlice]) -> Option<LbSpec> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let vip: IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let mine: Vec<&EndpointSlice> = slices
        .iter()
        .copied()
        .filter(|s| {
            s.metadata.namespace.as_deref().unwrap_or_default() == ns
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == name)
        })
        .collect();
    let source_ip = spec.session_affinity.as_deref() == Some("ClientIP");
    let mut out = LbSpec {
        name: format!("{ns}/{name}"),
        vip,
        listeners: BTreeMap::new(),
        skipped: Vec::new(),
    };
    for port in spec.ports.iter().flatten() {
        let proto_name = port.protocol.as_deref().unwrap_or("TCP");
        let Some(proto) = LbProtocol::parse(proto_name) else {
            out.skipped.push(format!(
                "port {} ({proto_name}) skipped: the load-balancer API has no {proto_name} listener",
                port.port
            ));
            continue;
        };
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let mut members = BTreeSet::new();
        for slice in &mine {
            let Some(target) = slice.ports.iter().flatten().find(|p| {
                p.name.clone().unwrap_or_default() == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == proto_name
            }) else {
                continue;
            };
            let Some(target) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for ep in &slice.endpoints {
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for addr in &ep.addresses {
                    // FQDN slices and addresses of the other family cannot be members.
                    match addr.parse::<IpAddr>() {
                        Ok(ip) if Family::of_ip(&ip) == Family::of_ip(&vip) => {
                            members.insert((ip, target));
                        }
                        _ => {}
                    }
                }
            }
        }
        out.listeners.insert(
            (proto, number),
            ListenerSpec {
                name: port_name,
                source_ip,
                members,
            },
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ports_become_listeners_with_ready_members() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "sessionAffinity": "ClientIP", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "s", "port": 9, "protocol": "SCTP"}]}}));
        let a = slice(json!({"metadata": {"name": "web-a", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"]},
                {"addresses": ["10.244.0.7"], "conditions": {"ready": false}}]}));
        let other = slice(json!({"metadata": {"name": "x", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "other"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 1}],
            "endpoints": [{"addresses": ["10.244.0.9"]}]}));
        let lb = map_service(&s, &[&a, &other]).unwrap();
        assert_eq!(lb.vip, "10.96.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(lb.name, "default/web");
        assert_eq!(lb.listeners.len(), 2);
        assert_eq!(lb.skipped.len(), 1);
        let http = &lb.listeners[&(LbProtocol::Tcp, 80)];
        assert!(http.source_ip);
        let members: Vec<String> = http
            .members
            .iter()
            .map(|(a, p)| format!("{a}:{p}"))
            .collect();
        assert_eq!(members, ["10.244.0.5:8080", "10.244.0.6:8080"]);
        let dns = &lb.listeners[&(LbProtocol::Udp, 53)];
        assert_eq!(dns.members.len(), 2);
        assert!(dns.members.iter().all(|(_, p)| *p == 5353));
    }

    #[test]
    fn unnamed_port_matches_unnamed_slice_port() {
        let s = svc(json!({"metadata": {"name": "one", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}}));
        let a = slice(json!({"metadata": {"name": "one-a", "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "one"}},
            "addressType": "IPv4", "ports": [{"port": 8000}],
            "endpoints": [{"addresses": ["10.244.1.2"]}]}));
        // Same name in another namespace: not ours.
        let b = slice(json!({"metadata": {"name": "one-b", "namespace": "other",
                "labels": {"kubernetes.io/service-name": "one"}},
            "addressType": "IPv4", "ports": [{"port": 8000}],
            "endpoints": [{"addresses": ["10.244.1.3"]}]}));
        let lb = map_service(&s, &[&a, &b]).unwrap();
        let l = &lb.listeners[&(LbProtocol::Tcp, 80)];
        assert!(!l.source_ip);
        assert_eq!(l.members.len(), 1);
    }

    #[test]
    fn headless_and_external_name_are_skipped() {
        let headless = svc(json!({"metadata": {"name": "h", "namespace": "d"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        assert!(map_service(&headless, &[]).is_none());
        let ext = svc(json!({"metadata": {"name": "e", "namespace": "d"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        assert!(map_service(&ext, &[]).is_none());
        let np = svc(json!({"metadata": {"name": "n", "namespace": "d"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.12", "ports": [{"port": 80, "nodePort": 30080}]}}));
        assert!(map_service(&np, &[]).is_some());
    }
}
