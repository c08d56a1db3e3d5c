//! A minimal EndpointSlice controller, as kube-controller-manager's (`Config::endpoint_controller`).
//!
//! After every write that touched pods, services or namespaces, [`reconcile`] makes the
//! EndpointSlices match: for each Service with a non-empty `spec.selector` (not `ExternalName`),
//! the pods of its namespace that the selector matches and that have an IPv4 `status.podIP` (and
//! are neither `Succeeded` nor `Failed`) become `endpoints` (`addresses: [podIP]`,
//! `conditions.ready`/`serving` from the pod's `Ready` condition — or `true` with
//! `publishNotReadyAddresses` — `terminating: false`, `nodeName`, `targetRef`). `ports` are the
//! service's ports with `targetPort` resolved: a number as is, a name against the pod's container
//! ports (a pod on which a named port does not resolve lacks that port, as the real controller
//! does). Pods are grouped into one slice per distinct port list; a service without endpoints keeps
//! one empty placeholder slice (no endpoints, no ports), as the real controller's. Slices are named
//! `<service>-<5 random characters>` (`generateName`), carry the service's labels plus
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//! endpointslice-controller.k8s.io`, and an owner reference to the service; they are updated in
//! place (no event when nothing changed), and deleted with the service or when its selector goes.
//! Slices without the managed-by label are left alone. The v1 `Endpoints` objects are not
//! maintained.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::resources;
use crate::store::Store;

/// The `kubernetes.io/service-name` label.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that says which controller manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Its value for the EndpointSlice controller.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Whether a change of `plural` may change what the slices should be.
pub fn relevant(plural: &str) -> bool {
    matches!(plural, "pods" | "services" | "namespaces")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The IPv4 address of a pod, if it has one.
fn pod_ipv4(pod: &Value) -> Option<String> {
    let is_v4 = |s: &str| s.parse::<std::net::Ipv4Addr>().is_ok();
    if let Some(ip) = str_at(pod, "/status/podIP").filter(|ip| is_v4(ip)) {
        return Some(ip.to_string());
    }
    pod.pointer("/status/podIPs")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|p| p.get("ip").and_then(Value::as_str))
        .find(|ip| is_v4(ip))
        .map(str::to_string)
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// The container port of `pod` named `name` with `protocol`.
fn named_port(pod: &Value, name: &str, protocol: &str) -> Option<i64> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .find(|p| {
            p.get("name").and_then(Value::as_str) == Some(name)
                && p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == protocol
        })
        .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
}

/// The slice ports of `service` for `pod` (`None`: without a pod, numeric target ports only).
fn slice_ports(service: &Value, pod: Option<&Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for port in service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        let number = match port.get("targetPort") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => match s.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => pod.and_then(|p| named_port(p, s, protocol)),
            },
            _ => port.get("port").and_then(Value::as_i64),
        };
        let Some(number) = number else { continue };
        out.push(json!({
            "name": port.get("name").and_then(Value::as_str).unwrap_or(""),
            "port": number,
            "protocol": protocol,
        }));
    }
    out
}

/// The slices (their `ports` and `endpoints`) that `service` should have.
fn desired(service: &Value, pods: &[&Value]) -> Vec<(Vec<Value>, Vec<Value>)> {
    let Some(selector) = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    let not_ready_too = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for pod in pods {
        let labels = pod.pointer("/metadata/labels");
        let selected = selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)).and_then(Value::as_str) == v.as_str());
        if !selected || matches!(str_at(pod, "/status/phase"), Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let ready = not_ready_too || pod_ready(pod);
        let mut endpoint = json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "targetRef": {
                "kind": "Pod",
                "namespace": str_at(pod, "/metadata/namespace").unwrap_or(""),
                "name": str_at(pod, "/metadata/name").unwrap_or(""),
                "uid": str_at(pod, "/metadata/uid").unwrap_or(""),
            },
        });
        if let Some(node) = str_at(pod, "/spec/nodeName").filter(|n| !n.is_empty()) {
            endpoint["nodeName"] = json!(node);
        }
        let ports = slice_ports(service, Some(pod));
        let key = serde_json::to_string(&ports).unwrap_or_default();
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    if groups.is_empty() {
        return vec![(Vec::new(), Vec::new())];
    }
    groups.into_values().collect()
}

/// A write [`reconcile`] decided on, made once the store is no longer borrowed.
enum Write {
    Update {
        ns: String,
        name: String,
        slice: Value,
    },
    Create {
        ns: String,
        slice: Value,
    },
    Delete {
        ns: String,
        name: String,
    },
}

/// Makes the EndpointSlices match the services and pods (see the module's documentation). The
/// store is read in place (nothing cloned but what is written), as this runs after every write
/// to pods, services or namespaces.
pub fn reconcile(store: &mut Store) {
    let writes = plan(store);
    let slices = resources::find("discovery.k8s.io", "v1", "endpointslices").expect("slices");
    for w in writes {
        // A write refused here (a conflict with a concurrent change) is redone by the next
        // reconciliation, which follows that change.
        let _ = match w {
            Write::Update { ns, name, slice } => {
                store.update(slices, &ns, &name, slice, false).map(drop)
            }
            Write::Create { ns, slice } => store.create(slices, &ns, slice).map(drop),
            Write::Delete { ns, name } => store.delete(slices, &ns, &name, None).map(drop),
        };
    }
}

/// The writes that make the slices match.
fn plan(store: &Store) -> Vec<Write> {
    let services = resources::find("", "v1", "services").expect("services");
    let pods = resources::find("", "v1", "pods").expect("pods");
    let slices = resources::find("discovery.k8s.io", "v1", "endpointslices").expect("slices");
    let mut pods_by_ns: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for pod in store.current(pods) {
        pods_by_ns
            .entry(str_at(pod, "/metadata/namespace").unwrap_or(""))
            .or_default()
            .push(pod);
    }
    // The managed slices by (namespace, service name), in name order (lists are sorted).
    let mut existing: BTreeMap<(&str, &str), Vec<&Value>> = BTreeMap::new();
    for slice in store.current(slices) {
        let labels = slice.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        if label(MANAGED_BY_LABEL) != Some(MANAGED_BY) {
            continue;
        }
        let Some(service) = label(SERVICE_NAME_LABEL) else {
            continue;
        };
        let ns = str_at(slice, "/metadata/namespace").unwrap_or("");
        existing.entry((ns, service)).or_default().push(slice);
    }
    let mut writes = Vec::new();
    for service in store.current(services) {
        let ns = str_at(service, "/metadata/namespace").unwrap_or("");
        let name = str_at(service, "/metadata/name").unwrap_or("");
        let want = if str_at(service, "/spec/type") == Some("ExternalName") {
            Vec::new()
        } else {
            desired(service, pods_by_ns.get(ns).map_or(&[][..], Vec::as_slice))
        };
        let have = existing.remove(&(ns, name)).unwrap_or_default();
        let mut labels = service
            .pointer("/metadata/labels")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        labels[SERVICE_NAME_LABEL] = json!(name);
        labels[MANAGED_BY_LABEL] = json!(MANAGED_BY);
        let owner = json!([{
            "apiVersion": "v1",
            "kind": "Service",
            "name": name,
            "uid": str_at(service, "/metadata/uid").unwrap_or(""),
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
        let mut have = have.into_iter();
        for (ports, endpoints) in want {
            match have.next() {
                Some(before) => {
                    let mut slice = before.clone();
                    slice["addressType"] = json!("IPv4");
                    slice["ports"] = json!(ports);
                    slice["endpoints"] = json!(endpoints);
                    slice["metadata"]["labels"] = labels.clone();
                    slice["metadata"]["ownerReferences"] = owner.clone();
                    if slice != *before {
                        let slice_name = str_at(&slice, "/metadata/name").unwrap_or("").to_string();
                        if let Some(m) = slice["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                        writes.push(Write::Update {
                            ns: ns.to_string(),
                            name: slice_name,
                            slice,
                        });
                    }
                }
                None => writes.push(Write::Create {
                    ns: ns.to_string(),
                    slice: json!({
                        "apiVersion": "discovery.k8s.io/v1",
                        "kind": "EndpointSlice",
                        "metadata": {
                            "generateName": format!("{name}-"),
                            "namespace": ns,
                            "labels": labels,
                            "ownerReferences": owner,
                        },
                        "addressType": "IPv4",
                        "ports": ports,
                        "endpoints": endpoints,
                    }),
                }),
            }
        }
        for extra in have {
            writes.push(Write::Delete {
                ns: ns.to_string(),
                name: str_at(extra, "/metadata/name").unwrap_or("").to_string(),
            });
        }
    }
    // Slices of services that are gone.
    for ((ns, _), stale) in existing {
        for slice in stale {
            writes.push(Write::Delete {
                ns: ns.to_string(),
                name: str_at(slice, "/metadata/name").unwrap_or("").to_string(),
            });
        }
    }
    writes
}
