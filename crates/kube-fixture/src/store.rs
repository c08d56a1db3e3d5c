//! The object store: every object by (resource, namespace, name), one global resourceVersion
//! counter (as etcd's revision), the retained event history that watches are served from, and the
//! per-type rules applied on writes (defaults, cluster IP allocation, the status subresource).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::resources::{self, ResourceType};
use crate::status::ApiError;

/// The kind of a change, as watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

/// One change in the history.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The resource type's plural name.
    pub plural: &'static str,
    /// The object's namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for a deletion: its last state, with the deletion's RV).
    pub object: Value,
    /// The object before the change (`None` for a creation).
    pub prev: Option<Value>,
}

type Key = (&'static str, String, String);

/// Namespaces the real API server refuses to delete.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The node port range of a default cluster.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// The state of the server.
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// Watches and reads from a resourceVersion older than this are answered 410 Expired.
    compacted: u64,
    history_limit: usize,
    service_cidr: IpNet,
    cluster_ips: BTreeSet<IpAddr>,
    node_ports: BTreeSet<u16>,
}

/// Now, as the API server writes timestamps (`2024-05-01T10:00:00Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")?
        .get(field)?
        .as_str()
        .map(str::to_string)
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is a map")
}

/// Kubernetes' DNS subdomain rule for object names (and RFC 1123 labels for namespaces).
fn valid_name(name: &str, label: bool) -> bool {
    let max = if label { 63 } else { 253 };
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (b == b'.' && !label)
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// A write's outcome.
pub struct Written {
    /// The object as stored (unchanged, with its old resourceVersion, if the write changed nothing).
    pub object: Value,
}

impl Store {
    /// A store holding what a new cluster holds: namespaces `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease`, and the `kubernetes` service in `default` on the
    /// first host address of `service_cidr`.
    pub fn new(service_cidr: IpNet, history_limit: usize) -> Self {
        let mut store = Self {
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            compacted: 0,
            history_limit: history_limit.max(1),
            service_cidr,
            cluster_ips: BTreeSet::new(),
            node_ports: BTreeSet::new(),
        };
        let ns = resources::find("", "v1", "namespaces").expect("namespaces");
        for name in SYSTEM_NAMESPACES {
            store
                .create(ns, "", json!({"metadata": {"name": name}}))
                .expect("create a system namespace");
        }
        let svc = resources::find("", "v1", "services").expect("services");
        let first = store.nth_address(1).map(|ip| ip.to_string());
        store
            .create(
                svc,
                "default",
                json!({
                    "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"clusterIP": first, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
                }),
            )
            .expect("create the kubernetes service");
        store
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion still served from history.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Drops the whole event history: a watch or an exact read from any earlier resourceVersion
    /// is now answered 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// The retained events after `rv` (callers check [`Store::compacted`] first).
    pub fn events_after(&self, rv: u64) -> Vec<Arc<Event>> {
        let start = self.history.partition_point(|e| e.rv <= rv);
        self.history.range(start..).cloned().collect()
    }

    /// One object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(rt.plural, ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt.group, rt.plural, name))
    }

    /// The objects of type `rt` now, in key order (namespace, name), borrowed.
    pub fn current<'a>(&'a self, rt: &ResourceType) -> impl Iterator<Item = &'a Value> + 'a {
        let plural = rt.plural;
        self.objects
            .range((plural, String::new(), String::new())..)
            .take_while(move |((p, _, _), _)| *p == plural)
            .map(|(_, v)| v)
    }

    /// The objects of type `rt` (in namespace `ns`, or all) as they were at resourceVersion
    /// `at` (now if `None`), in key order, with the resourceVersion they are served at.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        at: Option<u64>,
    ) -> Result<(u64, Vec<Value>), ApiError> {
        let at = at.unwrap_or(self.rv);
        if at < self.compacted {
            return Err(ApiError::expired(format!(
                "too old resource version: {at} ({})",
                self.compacted
            )));
        }
        if at > self.rv {
            return Err(ApiError::too_large_resource_version(at, self.rv));
        }
        let in_scope = |plural: &str, namespace: &str| {
            plural == rt.plural && ns.is_none_or(|n| n == namespace)
        };
        let mut objects: BTreeMap<(String, String), Value> = self
            .objects
            .range((rt.plural, String::new(), String::new())..)
            .take_while(|((p, _, _), _)| *p == rt.plural)
            .filter(|((p, n, _), _)| in_scope(p, n))
            .map(|((_, n, name), v)| ((n.clone(), name.clone()), v.clone()))
            .collect();
        // Undo the changes after `at`, newest first.
        for event in self.history.iter().rev().take_while(|e| e.rv > at) {
            if !in_scope(event.plural, &event.namespace) {
                continue;
            }
            let name = meta(&event.object, "name").unwrap_or_default();
            let key = (event.namespace.clone(), name);
            match &event.prev {
                Some(prev) => {
                    objects.insert(key, prev.clone());
                }
                None => {
                    objects.remove(&key);
                }
            }
        }
        Ok((at, objects.into_values().collect()))
    }

    /// Records a change under a new resourceVersion.
    fn commit(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        kind: EventType,
        object: Option<Value>,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let key = (rt.plural, ns.to_string(), name.to_string());
        let mut stored = match (object, &prev) {
            (Some(o), _) => o,
            (None, Some(p)) => p.clone(),
            (None, None) => unreachable!("a change without an object"),
        };
        metadata_mut(&mut stored).insert("resourceVersion".into(), json!(self.rv.to_string()));
        if kind == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, stored.clone());
        }
        self.history.push_back(Arc::new(Event {
            rv: self.rv,
            plural: rt.plural,
            namespace: ns.to_string(),
            kind,
            object: stored.clone(),
            prev,
        }));
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        stored
    }

    /// Creates an object of type `rt` in namespace `ns` (empty for cluster-scoped types).
    pub fn create(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        check_type(rt, &obj)?;
        let meta_ns = meta(&obj, "namespace").unwrap_or_default();
        if rt.namespaced && !meta_ns.is_empty() && meta_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut name = meta(&obj, "name").unwrap_or_default();
        if name.is_empty() {
            let Some(prefix) = meta(&obj, "generateName").filter(|p| !p.is_empty()) else {
                return Err(ApiError::invalid(
                    rt.kind,
                    "",
                    rt.group,
                    rt.plural,
                    &["metadata.name: Required value: name or generateName is required".into()],
                ));
            };
            let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].into();
            name = format!("{prefix}{suffix}");
        }
        if !valid_name(&name, rt.plural == "namespaces") {
            return Err(ApiError::invalid(
                rt.kind,
                &name,
                rt.group,
                rt.plural,
                &[format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                )],
            ));
        }
        if meta(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if rt.namespaced {
            let nss = resources::find("", "v1", "namespaces").expect("namespaces");
            let namespace = self.get(nss, "", ns)?;
            if namespace.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::forbidden(
                    rt.group,
                    rt.plural,
                    &name,
                    &format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ),
                ));
            }
        }
        let scope = if rt.namespaced { ns } else { "" };
        if self
            .objects
            .contains_key(&(rt.plural, scope.to_string(), name.clone()))
        {
            return Err(ApiError::already_exists(rt.group, rt.plural, &name));
        }
        {
            let m = metadata_mut(&mut obj);
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.insert("generation".into(), json!(1));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        self.defaults_on_create(rt, &name, &mut obj)?;
        Ok(self.commit(rt, scope, &name, EventType::Added, Some(obj), None))
    }

    fn defaults_on_create(
        &mut self,
        rt: &ResourceType,
        name: &str,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        match rt.plural {
            "namespaces" => {
                let m = metadata_mut(obj);
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                labels["kubernetes.io/metadata.name"] = json!(name);
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            "pods" => {
                if !obj.get("spec").is_some_and(Value::is_object) {
                    obj["spec"] = json!({});
                }
                let spec = &mut obj["spec"];
                for (field, value) in [
                    ("restartPolicy", json!("Always")),
                    ("dnsPolicy", json!("ClusterFirst")),
                    ("schedulerName", json!("default-scheduler")),
                    ("terminationGracePeriodSeconds", json!(30)),
                ] {
                    if spec.get(field).is_none() {
                        spec[field] = value;
                    }
                }
                if !obj.get("status").is_some_and(Value::is_object) {
                    obj["status"] = json!({});
                }
                if obj["status"].get("phase").is_none() {
                    obj["status"]["phase"] = json!("Pending");
                }
            }
            "services" => self.service_on_create(rt, name, obj)?,
            _ => {}
        }
        Ok(())
    }

    fn service_on_create(
        &mut self,
        rt: &ResourceType,
        name: &str,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        let spec = &mut obj["spec"];
        let kind = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        spec["type"] = json!(kind);
        let invalid =
            |cause: String| ApiError::invalid(rt.kind, name, rt.group, rt.plural, &[cause]);
        if !matches!(
            kind.as_str(),
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        ) {
            return Err(invalid(format!(
                "spec.type: Unsupported value: \"{kind}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            )));
        }
        if spec.get("sessionAffinity").is_none() {
            spec["sessionAffinity"] = json!("None");
        }
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for port in ports.iter_mut() {
                if port.get("protocol").is_none() {
                    port["protocol"] = json!("TCP");
                }
                if port.get("targetPort").is_none()
                    && let Some(p) = port.get("port").cloned()
                {
                    port["targetPort"] = p;
                }
            }
        }
        if kind == "ExternalName" {
            return Ok(());
        }
        if spec.get("internalTrafficPolicy").is_none() {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        let requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = if requested.is_empty() {
            self.allocate_ip().ok_or_else(|| {
                ApiError::internal(format!(
                    "failed to allocate a serviceIP: range is full ({})",
                    self.service_cidr
                ))
            })?
        } else if requested == "None" {
            "None".to_string()
        } else {
            let parsed: IpAddr = requested.parse().map_err(|_| {
                invalid(format!(
                    "spec.clusterIPs[0]: Invalid value: \"{requested}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                ))
            })?;
            if !self.service_cidr.contains(&parsed)
                || parsed == self.service_cidr.network()
                || (parsed.is_ipv4() && parsed == self.service_cidr.broadcast())
            {
                return Err(invalid(format!(
                    "spec.clusterIPs: Invalid value: [\"{requested}\"]: failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}",
                    self.service_cidr
                )));
            }
            if !self.cluster_ips.insert(parsed) {
                return Err(invalid(format!(
                    "spec.clusterIPs: Invalid value: [\"{requested}\"]: failed to allocate IP {requested}: provided IP is already allocated"
                )));
            }
            parsed.to_string()
        };
        let family = if self.service_cidr.addr().is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        spec["ipFamilies"] = json!([family]);
        spec["ipFamilyPolicy"] = json!("SingleStack");
        if kind == "NodePort" || kind == "LoadBalancer" {
            if spec.get("externalTrafficPolicy").is_none() {
                spec["externalTrafficPolicy"] = json!("Cluster");
            }
            let mut ports = spec.get("ports").cloned().unwrap_or(json!([]));
            if let Value::Array(ports) = &mut ports {
                for port in ports.iter_mut() {
                    match port.get("nodePort").and_then(Value::as_u64) {
                        Some(p) => {
                            self.node_ports.insert(u16::try_from(p).unwrap_or(0));
                        }
                        None => {
                            let free = NODE_PORTS.clone().find(|p| !self.node_ports.contains(p));
                            if let Some(p) = free {
                                self.node_ports.insert(p);
                                port["nodePort"] = json!(p);
                            }
                        }
                    }
                }
            }
            spec["ports"] = ports;
        }
        if obj.get("status").is_none() {
            obj["status"] = json!({"loadBalancer": {}});
        }
        Ok(())
    }

    /// The `n`th address of the service CIDR.
    fn nth_address(&self, n: u128) -> Option<IpAddr> {
        match self.service_cidr {
            IpNet::V4(net) => {
                let base = u128::from(u32::from(net.network()));
                let size = 1u128 << (32 - net.prefix_len());
                (n < size).then(|| IpAddr::from(std::net::Ipv4Addr::from((base + n) as u32)))
            }
            IpNet::V6(net) => {
                let base = u128::from(net.network());
                let bits = 128 - u32::from(net.prefix_len());
                let size = if bits >= 128 {
                    u128::MAX
                } else {
                    1u128 << bits
                };
                (n < size).then(|| IpAddr::from(std::net::Ipv6Addr::from(base + n)))
            }
        }
    }

    /// The lowest free address of the service CIDR (neither the network nor the broadcast address).
    fn allocate_ip(&mut self) -> Option<String> {
        let mut n = 1u128;
        while let Some(ip) = self.nth_address(n) {
            if ip.is_ipv4() && ip == self.service_cidr.broadcast() {
                return None;
            }
            if self.cluster_ips.insert(ip) {
                return Some(ip.to_string());
            }
            n += 1;
        }
        None
    }

    fn release_service(&mut self, svc: &Value) {
        if let Some(ip) = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<IpAddr>().ok())
        {
            self.cluster_ips.remove(&ip);
        }
        if let Some(Value::Array(ports)) = svc.pointer("/spec/ports") {
            for p in ports {
                if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
                    self.node_ports.remove(&u16::try_from(np).unwrap_or(0));
                }
            }
        }
    }

    /// Replaces an object (PUT), or only its status if `status` (the status subresource).
    pub fn update(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        status: bool,
    ) -> Result<Written, ApiError> {
        let scope = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, scope, name)?;
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        check_type(rt, &obj)?;
        let body_name = meta(&obj, "name").unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta(&obj, "namespace").unwrap_or_default();
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old_rv = meta(&old, "resourceVersion").unwrap_or_default();
        if let Some(rv) = meta(&obj, "resourceVersion").filter(|rv| !rv.is_empty())
            && rv != old_rv
        {
            return Err(ApiError::conflict(
                rt.group,
                rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if let Some(uid) = meta(&obj, "uid").filter(|u| !u.is_empty())
            && Some(&uid) != meta(&old, "uid").as_ref()
        {
            return Err(ApiError::conflict(
                rt.group,
                rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        let mut new = if status {
            let mut new = old.clone();
            match obj.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new
        } else {
            if rt.status {
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            obj
        };
        {
            // What the server owns is kept from the stored object.
            let old_meta = old["metadata"].clone();
            let m = metadata_mut(&mut new);
            for field in [
                "uid",
                "creationTimestamp",
                "generation",
                "namespace",
                "deletionTimestamp",
            ] {
                match old_meta.get(field) {
                    Some(v) => m.insert(field.into(), v.clone()),
                    None => m.remove(field),
                };
            }
            m.insert("resourceVersion".into(), json!(old_rv));
        }
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        match rt.plural {
            "namespaces" => {
                new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
                let labels = metadata_mut(&mut new)
                    .entry("labels")
                    .or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
            "services" if !status => service_on_update(rt, name, &old, &mut new)?,
            _ => {}
        }
        if new == old {
            return Ok(Written { object: old });
        }
        if !status && spec_part(&new) != spec_part(&old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        let object = self.commit(rt, scope, name, EventType::Modified, Some(new), Some(old));
        Ok(Written { object })
    }

    /// Deletes an object (a namespace together with everything in it), checking the optional
    /// `preconditions` (`resourceVersion`, `uid`) of the DeleteOptions.
    pub fn delete(
        &mut self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
        preconditions: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let scope = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, scope, name)?;
        if let Some(pre) = preconditions {
            for field in ["resourceVersion", "uid"] {
                if let Some(want) = pre.get(field).and_then(Value::as_str)
                    && Some(want.to_string()) != meta(&old, field)
                {
                    let label = if field == "uid" {
                        "UID"
                    } else {
                        "ResourceVersion"
                    };
                    return Err(ApiError::conflict(
                        rt.group,
                        rt.plural,
                        name,
                        &format!(
                            "Precondition failed: {label} in precondition: {want}, {label} in object meta: {}",
                            meta(&old, field).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        if rt.plural == "namespaces" {
            if SYSTEM_NAMESPACES.contains(&name) {
                return Err(ApiError::forbidden(
                    rt.group,
                    rt.plural,
                    name,
                    "this namespace may not be deleted",
                ));
            }
            let contents: Vec<Key> = self
                .objects
                .keys()
                .filter(|(_, n, _)| n == name)
                .cloned()
                .collect();
            for (plural, n, obj_name) in contents {
                let t = resources::RESOURCES
                    .iter()
                    .find(|r| r.plural == plural)
                    .expect("a known type");
                self.delete(t, &n, &obj_name, None)?;
            }
        }
        if rt.plural == "services" {
            self.release_service(&old);
        }
        let mut last = old.clone();
        if rt.plural == "namespaces" {
            metadata_mut(&mut last).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            last["status"] = json!({"phase": "Terminating"});
        }
        Ok(self.commit(rt, scope, name, EventType::Deleted, Some(last), Some(old)))
    }
}

/// Everything but `metadata` and `status`, whose change bumps `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Checks the `apiVersion` and `kind` of a request body, where given.
fn check_type(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str)
        && v != rt.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && k != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

/// A Service's cluster IP (and node ports) cannot change; an update that leaves them out keeps
/// the allocated ones, as the real server does.
fn service_on_update(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    for field in [
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "type",
        "sessionAffinity",
        "internalTrafficPolicy",
    ] {
        let given = new["spec"]
            .get(field)
            .filter(|v| !v.is_null() && **v != json!(""));
        let stored = old.pointer(&format!("/spec/{field}"));
        match (given, stored) {
            (None, Some(s)) => new["spec"][field] = s.clone(),
            (Some(g), Some(s)) if g != s && field.starts_with("clusterIP") => {
                return Err(ApiError::invalid(
                    rt.kind,
                    name,
                    rt.group,
                    rt.plural,
                    &[format!(
                        "spec.{field}: Invalid value: {g}: field is immutable"
                    )],
                ));
            }
            _ => {}
        }
    }
    if let (Some(Value::Array(new_ports)), Some(Value::Array(old_ports))) =
        (new["spec"].get_mut("ports"), old.pointer("/spec/ports"))
    {
        for port in new_ports.iter_mut() {
            if port.get("protocol").is_none() {
                port["protocol"] = json!("TCP");
            }
            if port.get("targetPort").is_none()
                && let Some(p) = port.get("port").cloned()
            {
                port["targetPort"] = p;
            }
            if port.get("nodePort").is_none()
                && let Some(np) = old_ports
                    .iter()
                    .find(|o| o.get("port") == port.get("port"))
                    .and_then(|o| o.get("nodePort"))
            {
                port["nodePort"] = np.clone();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(plural: &str) -> &'static ResourceType {
        resources::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .unwrap()
    }

    #[test]
    fn snapshot_undoes_later_changes() {
        let mut s = Store::new("10.96.0.0/16".parse().unwrap(), 100);
        let pods = rt("pods");
        s.create(pods, "default", json!({"metadata": {"name": "a"}}))
            .unwrap();
        let at = s.rv();
        s.create(pods, "default", json!({"metadata": {"name": "b"}}))
            .unwrap();
        let mut a = s.get(pods, "default", "a").unwrap();
        a["metadata"]["labels"] = json!({"x": "1"});
        s.update(pods, "default", "a", a, false).unwrap();
        s.delete(pods, "default", "a", None).unwrap();
        let (_, then) = s.list(pods, Some("default"), Some(at)).unwrap();
        assert_eq!(then.len(), 1);
        assert_eq!(then[0]["metadata"]["name"], "a");
        assert!(then[0]["metadata"].get("labels").is_none());
        let (_, now) = s.list(pods, None, None).unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0]["metadata"]["name"], "b");
        s.compact();
        assert_eq!(s.list(pods, None, Some(at)).unwrap_err().code, 410);
    }

    #[test]
    fn cluster_ips_are_allocated_in_order_and_released() {
        let mut s = Store::new("10.96.0.0/29".parse().unwrap(), 100);
        let svc = rt("services");
        let k = s.get(svc, "default", "kubernetes").unwrap();
        assert_eq!(k["spec"]["clusterIP"], "10.96.0.1");
        let ips: Vec<String> = (0..5)
            .map(|i| {
                let o = s
                    .create(svc, "default", json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}}))
                    .unwrap();
                o["spec"]["clusterIP"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            ips,
            [
                "10.96.0.2",
                "10.96.0.3",
                "10.96.0.4",
                "10.96.0.5",
                "10.96.0.6"
            ]
        );
        // .7 is the broadcast address: the range is full.
        let full = s
            .create(svc, "default", json!({"metadata": {"name": "s9"}}))
            .unwrap_err();
        assert_eq!(full.code, 500);
        s.delete(svc, "default", "s2", None).unwrap();
        let o = s
            .create(svc, "default", json!({"metadata": {"name": "s9"}}))
            .unwrap();
        assert_eq!(o["spec"]["clusterIP"], "10.96.0.4");
        let headless = s
            .create(
                svc,
                "default",
                json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}),
            )
            .unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }
}
