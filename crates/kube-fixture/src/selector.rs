//! Label selectors (`labelSelector`) and field selectors (`fieldSelector`) as the API server
//! parses and applies them.

use std::collections::BTreeSet;

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key` (the label exists).
    Exists(String),
    /// `!key`.
    NotExists(String),
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, BTreeSet<String>),
    /// `key!=value`, `key notin (a,b)` (also true where the label is missing).
    NotIn(String, BTreeSet<String>),
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_key(key: &str) -> Result<String, String> {
    if valid_key(key) {
        Ok(key.to_string())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn value_set(list: &str) -> Result<BTreeSet<String>, String> {
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesized list, got {list:?}"))?;
    let mut set = BTreeSet::new();
    for v in inner.split(',') {
        let v = v.trim();
        if !valid_value(v) {
            return Err(format!("invalid label value {v:?}"));
        }
        set.insert(v.to_string());
    }
    Ok(set)
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter (an empty string selects everything).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s)? {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("empty requirement in {s:?}"));
            }
            if let Some(key) = part.strip_prefix('!') {
                reqs.push(LabelRequirement::NotExists(check_key(key.trim())?));
            } else if let Some((key, value)) = part.split_once("!=") {
                let value = value.trim();
                if !valid_value(value) {
                    return Err(format!("invalid label value {value:?}"));
                }
                reqs.push(LabelRequirement::NotIn(
                    check_key(key.trim())?,
                    BTreeSet::from([value.to_string()]),
                ));
            } else if let Some((key, value)) = part.split_once('=') {
                let value = value.strip_prefix('=').unwrap_or(value).trim();
                if !valid_value(value) {
                    return Err(format!("invalid label value {value:?}"));
                }
                reqs.push(LabelRequirement::In(
                    check_key(key.trim())?,
                    BTreeSet::from([value.to_string()]),
                ));
            } else if let Some((key, list)) = split_word(part, "notin") {
                reqs.push(LabelRequirement::NotIn(check_key(key)?, value_set(list)?));
            } else if let Some((key, list)) = split_word(part, "in") {
                reqs.push(LabelRequirement::In(check_key(key)?, value_set(list)?));
            } else {
                reqs.push(LabelRequirement::Exists(check_key(part)?));
            }
        }
        Ok(Self(reqs))
    }

    /// Whether an object with `labels` (a JSON map, or null) is selected.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `key in (...)` → (`key`, `(...)`) for the operator word `op`.
fn split_word<'a>(part: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let paren = part.find('(')?;
    let head = part[..paren].trim_end();
    let key = head.strip_suffix(op)?;
    if !key.ends_with(char::is_whitespace) {
        return None;
    }
    Some((key.trim(), &part[paren..]))
}

/// One requirement of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path (`metadata.name`).
    pub field: String,
    /// The value compared against.
    pub value: String,
    /// `!=` rather than `=`/`==`.
    pub negated: bool,
}

/// A parsed field selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

/// The fields every type can be selected by.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The extra fields of each type (as the real server's field label conversion allows them).
fn extra_fields(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "namespaces" => &["status.phase"],
        "nodes" => &["spec.unschedulable"],
        "services" => &["spec.clusterIP", "spec.type"],
        "endpointslices" => &["addressType"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `fieldSelector` for objects of type `plural`; an unsupported field is an error
    /// (the real server answers `field label not supported: ...`).
    pub fn parse(s: &str, plural: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in s.split(',') {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !COMMON_FIELDS.contains(&field) && !extra_fields(plural).contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push(FieldRequirement {
                field: field.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self(reqs))
    }

    /// Whether `object` is selected (a missing field counts as the empty string).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|r| {
            let mut v = object;
            for step in r.field.split('.') {
                v = v.get(step).unwrap_or(&Value::Null);
            }
            let actual = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == r.value) != r.negated
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Whether `object` is selected by both.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object.pointer("/metadata/labels")) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Option<Value> {
        Some(v)
    }

    #[test]
    fn equality_and_sets() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(l.as_ref());
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("tier notin (back)"));
        assert!(m("missing notin (back)"));
        assert!(!m("missing in (back)"));
        assert!(m("app"));
        assert!(!m("!app"));
        assert!(m("!missing"));
        assert!(m("app in (web),tier=front,!missing"));
        assert!(!m("app in (web),tier=back"));
        assert!(!LabelSelector::parse("app").unwrap().matches(None));
        assert!(LabelSelector::parse("!app").unwrap().matches(None));
    }

    #[test]
    fn keys_with_prefixes_and_odd_spacing() {
        let l = labels(json!({"kubernetes.io/metadata.name": "kube-system"}));
        let s =
            LabelSelector::parse("kubernetes.io/metadata.name in (kube-system,default)").unwrap();
        assert!(s.matches(l.as_ref()));
        let s = LabelSelector::parse(" kubernetes.io/metadata.name = kube-system ").unwrap();
        assert!(s.matches(l.as_ref()));
        // A key that merely ends in "in" is an existence test, not an operator.
        let s = LabelSelector::parse("login").unwrap();
        assert_eq!(s.0, vec![LabelRequirement::Exists("login".into())]);
    }

    #[test]
    fn malformed_label_selectors() {
        for bad in [
            "app in (web",
            "app in web",
            "=web",
            "app=we b",
            ",",
            "a=b,,c=d",
            "!",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}});
        let m = |s: &str| FieldSelector::parse(s, "pods").unwrap().matches(&pod);
        assert!(m("metadata.name=p"));
        assert!(m("metadata.name==p,metadata.namespace=ns"));
        assert!(!m("metadata.name!=p"));
        assert!(m("spec.nodeName=n1"));
        assert!(m("spec.nodeName!="));
        assert!(!m("status.phase=Running"));
        assert!(m("status.phase="));
        assert!(FieldSelector::parse("spec.nodeName=x", "services").is_err());
        assert!(FieldSelector::parse("metadata.labels=x", "pods").is_err());
        assert!(FieldSelector::parse("nonsense", "pods").is_err());
    }
}
