//! The Neutron tags the controller puts on what it creates, and how it reads them back.
//!
//! Every object: `k8s-cluster:<cluster>` and `k8s-kind:<kind>`; then its identity — a pod's port
//! `k8s-pod-uid:<uid>` and `k8s-pod:<namespace>:<name>` (the CNI plugin's contract), objects of a
//! Kubernetes object `k8s-uid:<uid>`, a membership group `k8s-peer:<id>`, a namespace's network
//! `k8s-namespace:<name>`. Neutron tags may not contain `/` or `,` (nor be longer than 255).

use serde_json::Value;

/// Kinds (`k8s-kind:<kind>`).
pub const POD_NETWORK: &str = "pod-network";
/// The pod subnet.
pub const POD_SUBNET: &str = "pod-subnet";
/// The service network.
pub const SERVICE_NETWORK: &str = "service-network";
/// The service subnet.
pub const SERVICE_SUBNET: &str = "service-subnet";
/// The router.
pub const ROUTER: &str = "router";
/// A pod's port.
pub const POD: &str = "pod";
/// A policy's security group.
pub const POLICY: &str = "networkpolicy";
/// A membership group.
pub const PEER: &str = "peer";
/// The allow-all-ingress group.
pub const ALLOW_INGRESS: &str = "allow-ingress";
/// The allow-all-egress group.
pub const ALLOW_EGRESS: &str = "allow-egress";
/// A service's load-balancer objects.
pub const SERVICE: &str = "service";
/// A trunk the controller created for a node.
pub const TRUNK: &str = "trunk";

/// Whether `tag` is a valid Neutron tag.
pub fn check(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.chars().count() > 255 || tag.contains('/') || tag.contains(',') {
        Err(format!("{tag:?} is not a valid Neutron tag"))
    } else {
        Ok(())
    }
}

/// `k8s-cluster:<name>`.
pub fn cluster(name: &str) -> String {
    format!("k8s-cluster:{name}")
}

/// `k8s-kind:<kind>`.
pub fn kind(kind: &str) -> String {
    format!("k8s-kind:{kind}")
}

/// `k8s-uid:<uid>`.
pub fn uid(uid: &str) -> String {
    format!("k8s-uid:{uid}")
}

/// `k8s-pod-uid:<uid>`.
pub fn pod_uid(uid: &str) -> String {
    format!("k8s-pod-uid:{uid}")
}

/// `k8s-pod:<namespace>:<name>`.
pub fn pod(namespace: &str, name: &str) -> String {
    format!("k8s-pod:{namespace}:{name}")
}

/// `k8s-peer:<id>`.
pub fn peer(id: &str) -> String {
    format!("k8s-peer:{id}")
}

/// `k8s-namespace:<name>`.
pub fn namespace(name: &str) -> String {
    format!("k8s-namespace:{name}")
}

/// The description the controller gives what it creates, so that an object created but not yet
/// tagged (the API takes tags only after the create) is recognised as its own half-made object.
pub fn marker(cluster: &str) -> String {
    format!("wyvern-k8s:{cluster}")
}

/// An object's tags.
pub fn of(obj: &Value) -> Vec<String> {
    obj.get("tags")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The value of the first tag `<prefix>:<value>` of an object.
pub fn value<'a>(tags: &'a [String], prefix: &str) -> Option<&'a str> {
    tags.iter().find_map(|t| {
        t.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_valid_and_read_back() {
        let t = vec![cluster("c1"), pod("default", "web-0"), uid("u-1")];
        for tag in &t {
            check(tag).unwrap();
        }
        assert_eq!(value(&t, "k8s-cluster"), Some("c1"));
        assert_eq!(value(&t, "k8s-pod"), Some("default:web-0"));
        assert_eq!(value(&t, "k8s-uid"), Some("u-1"));
        assert_eq!(value(&t, "k8s-kind"), None);
        assert!(check("a/b").is_err());
        assert!(check("a,b").is_err());
    }
}
