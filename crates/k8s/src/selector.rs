//! Label selectors in a canonical form: sorted, so that two selectors that say the same thing
//! compare (and hash) equal — the identity of a membership security group is its selector.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::Error;

/// A selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// The label is one of the values.
    In,
    /// The label is absent or none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// A label selector (`matchLabels` and `matchExpressions`, ANDed); the empty selector selects
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    exprs: BTreeSet<(String, Op, BTreeSet<String>)>,
}

impl Selector {
    /// The selector that selects everything.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// The canonical form of a Kubernetes selector; an unknown operator (or `In`/`NotIn`
    /// without values, `Exists` with some) is an error, as the API server's validation says.
    pub fn parse(sel: &LabelSelector) -> Result<Selector, Error> {
        let mut out = Selector {
            labels: sel.match_labels.clone().unwrap_or_default(),
            exprs: BTreeSet::new(),
        };
        for e in sel.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let op = match e.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(Error::Invalid(format!(
                        "selector operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
                    )));
                }
            };
            let needs_values = matches!(op, Op::In | Op::NotIn);
            if needs_values == values.is_empty() {
                return Err(Error::Invalid(format!(
                    "selector operator {op:?} on {:?} {} values",
                    e.key,
                    if needs_values { "needs" } else { "takes no" }
                )));
            }
            out.exprs.insert((e.key.clone(), op, values));
        }
        Ok(out)
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op, values)| {
                let v = labels.get(k);
                match op {
                    Op::In => v.is_some_and(|v| values.contains(v)),
                    Op::NotIn => v.is_none_or(|v| !values.contains(v)),
                    Op::Exists => v.is_some(),
                    Op::DoesNotExist => v.is_none(),
                }
            })
    }

    /// Whether this is the selector that selects everything.
    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.exprs.is_empty()
    }
}

impl fmt::Display for Selector {
    /// The label-selector syntax (`a=b,c in (d,e),!f`); `*` for everything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_everything() {
            return f.write_str("*");
        }
        let mut parts: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (k, op, values) in &self.exprs {
            let vals = values.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match op {
                Op::In => format!("{k} in ({vals})"),
                Op::NotIn => format!("{k} notin ({vals})"),
                Op::Exists => k.clone(),
                Op::DoesNotExist => format!("!{k}"),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(v: serde_json::Value) -> Result<Selector, Error> {
        Selector::parse(&serde_json::from_value(v).unwrap())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let s = sel(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "x")])));
        assert!(s.matches(&labels(&[
            ("app", "web"),
            ("tier", "b"),
            ("team", "x"),
            ("env", "dev")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("team", "x")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("team", "x"),
            ("env", "prod")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("team", "x"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "a"), ("team", "x")])));
        assert_eq!(
            s.to_string(),
            "app=web,env notin (prod),!legacy,team,tier in (a,b)"
        );
    }

    #[test]
    fn empty_selects_everything_and_order_does_not_matter() {
        let all = sel(serde_json::json!({})).unwrap();
        assert!(all.is_everything());
        assert!(all.matches(&labels(&[])));
        let a = sel(serde_json::json!({"matchExpressions": [
            {"key": "x", "operator": "In", "values": ["2", "1"]},
            {"key": "y", "operator": "Exists"}]}))
        .unwrap();
        let b = sel(serde_json::json!({"matchExpressions": [
            {"key": "y", "operator": "Exists"},
            {"key": "x", "operator": "In", "values": ["1", "2"]}]}))
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn invalid_selectors_are_errors() {
        assert!(
            sel(serde_json::json!({"matchExpressions": [{"key": "x", "operator": "Near"}]}))
                .is_err()
        );
        assert!(
            sel(serde_json::json!({"matchExpressions": [{"key": "x", "operator": "In"}]})).is_err()
        );
        assert!(
            sel(serde_json::json!({"matchExpressions": [{"key": "x", "operator": "Exists", "values": ["a"]}]}))
                .is_err()
        );
    }
}
