//! PATCH bodies: JSON merge patch (RFC 7386), a strategic merge patch that merges lists by the
//! merge keys of the built-in types, and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// Applies a JSON merge patch (RFC 7386): maps merge recursively, `null` removes a key, anything
/// else (lists included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The merge key of the list field `field` in the built-in types (as their `patchMergeKey`
/// tags), for lists of objects that a strategic merge patch merges element by element.
fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "readinessGates"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "podIPs" | "hostIPs" => "ip",
        "conditions" => "type",
        "taints" => "key",
        "addresses" => "type",
        "ownerReferences" => "uid",
        "tolerations" => return None,
        // Service ports merge by port, container ports by containerPort.
        "ports" => {
            if elements.iter().any(|e| e.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    };
    Some(key)
}

/// Applies a strategic merge patch: like [`merge_patch`], except that lists of objects with a
/// known merge key are merged element by element (an element with `"$patch": "delete"` removes
/// its match), `$setElementOrder/<field>` orders them, `$retainKeys` keeps only the given keys,
/// `$deleteFromPrimitiveList/<field>` removes scalars, and `"$patch": "replace"` replaces a map.
/// Lists without a known merge key are replaced, as the real server does for atomic lists.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        return;
    };
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        map.retain(|k, _| keep.contains(&k.as_str()) || patch.contains_key(k));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
                && let (Some(Value::Array(list)), Value::Array(gone)) = (map.get_mut(field), value)
            {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if value.is_null() {
            map.remove(key);
            continue;
        }
        let slot = map.entry(key.clone()).or_insert(Value::Null);
        match (slot, value) {
            (Value::Array(old), Value::Array(new)) => {
                if let Some(mk) = merge_key(key, new).or_else(|| merge_key(key, old)) {
                    merge_list(old, new, mk);
                    if let Some(Value::Array(order)) = patch.get(&format!("$setElementOrder/{key}"))
                    {
                        order_list(old, order, mk);
                    }
                } else {
                    *old = new.clone();
                }
            }
            (slot, value) if value.is_object() && slot.is_object() => {
                strategic_merge_patch(slot, value)
            }
            (slot, value) => {
                let mut v = value.clone();
                strip_directives(&mut v);
                *slot = v;
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn merge_list(old: &mut Vec<Value>, new: &[Value], mk: &str) {
    for element in new {
        let key = element.get(mk).cloned();
        let delete = element.get("$patch").and_then(Value::as_str) == Some("delete");
        let position = key
            .as_ref()
            .and_then(|k| old.iter().position(|o| o.get(mk) == Some(k)));
        match (position, delete) {
            (Some(i), true) => {
                old.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge_patch(&mut old[i], element),
            (None, false) => {
                let mut e = element.clone();
                strip_directives(&mut e);
                old.push(e);
            }
        }
    }
}

fn order_list(list: &mut [Value], order: &[Value], mk: &str) {
    let rank = |v: &Value| {
        order
            .iter()
            .position(|o| o.get(mk).is_some() && o.get(mk) == v.get(mk))
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

/// Applies a JSON patch (RFC 6902: add, remove, replace, move, copy, test).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("{name} without value"))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or(format!("{name} without from"))
        };
        match name {
            "add" => add(target, path, value()?)?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                let slot = target
                    .pointer_mut(path)
                    .ok_or(format!("replace: no {path}"))?;
                *slot = value()?;
            }
            "move" => {
                let v = remove(target, from()?)?;
                add(target, path, v)?;
            }
            "copy" => {
                let v = target
                    .pointer(from()?)
                    .cloned()
                    .ok_or(format!("copy: no {path}"))?;
                add(target, path, v)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or(format!("invalid path {path:?}"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("bad index {last}"))?
            };
            if i > a.len() {
                return Err(format!("index {i} out of range"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("add: no parent for {path}")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or(format!("remove: no {path}")),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("bad index {last}"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(format!("remove: no {path}"))
            }
        }
        _ => Err(format!("remove: no {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge_patch(&mut t, &patch);
            assert_eq!(t, want, "{target} + {patch}");
        }
    }

    #[test]
    fn labels_and_status() {
        let mut pod = json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}, "status": {"phase": "Pending"}});
        merge_patch(
            &mut pod,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "status": {"phase": "Running", "podIP": "10.0.0.5"}}),
        );
        assert_eq!(pod["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(
            pod["status"],
            json!({"phase": "Running", "podIP": "10.0.0.5"})
        );
    }

    #[test]
    fn strategic_merges_lists_by_key() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}
        ], "tolerations": [{"key": "x"}]}});
        strategic_merge_patch(
            &mut pod,
            &json!({"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
                "containers": [{"name": "a", "image": "a:2"}, {"name": "c", "image": "c:1"}],
                "tolerations": [{"key": "y"}]
            }}),
        );
        assert_eq!(
            pod["spec"]["containers"],
            json!([
                {"name": "b", "image": "b:1"},
                {"name": "a", "image": "a:2", "ports": [{"containerPort": 80}]},
                {"name": "c", "image": "c:1"}
            ])
        );
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "y"}]));
        strategic_merge_patch(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
        );
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 2);
        // Maps behave as in a merge patch.
        strategic_merge_patch(&mut pod, &json!({"metadata": {"labels": {"x": "1"}}}));
        strategic_merge_patch(
            &mut pod,
            &json!({"metadata": {"labels": {"x": null, "y": "2"}}}),
        );
        assert_eq!(pod["metadata"]["labels"], json!({"y": "2"}));
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        json_patch(
            &mut v,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "replace", "path": "/list/0", "value": 9},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "test", "path": "/list/2", "value": 3},
            ]),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"labels": {"b": "2"}}, "list": [9, 2, 3]})
        );
        assert!(
            json_patch(
                &mut v,
                &json!([{"op": "test", "path": "/list/0", "value": 1}])
            )
            .is_err()
        );
        assert!(json_patch(&mut v, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
