//! Neutron's quotas: which resources a project's quota limits, Neutron's default limits, and the
//! values a limit may take.
//!
//! A limit counts the objects of one kind that belong to a project (`router_route` instead limits
//! the routes of each router). The list is Neutron 29's (`neutron/conf/quota.py`) for the resources
//! Wyvern serves: subnet pools, RBAC policies and the quotas of Neutron's service plugins (trunks,
//! SFC) have no objects here and are not listed.

use serde_json::Value;

use crate::resources::{
    FLOATING_IP, NETWORK, PORT, ROUTER, ResourceDef, SECURITY_GROUP, SECURITY_GROUP_RULE, SUBNET,
};
use crate::validate::{self, Refusal};

/// One resource a quota limits.
#[derive(Debug)]
pub struct QuotaResource {
    /// The name in quota bodies (`security_group_rule`).
    pub name: &'static str,
    /// Neutron's default limit (`[QUOTAS] quota_<name>`); [`UNLIMITED`] for none.
    pub default: i64,
    /// The kind of object the limit counts per project; `None` for `router_route`, a limit on each
    /// router's routes.
    pub counts: Option<&'static ResourceDef>,
}

/// The limit that limits nothing (any negative value means that to Neutron; it accepts only -1).
pub const UNLIMITED: i64 = -1;

/// The largest limit (Neutron's `DB_INTEGER_MAX_VALUE`).
pub const MAX_LIMIT: i64 = i32::MAX as i64;

const fn counting(name: &'static str, default: i64, def: &'static ResourceDef) -> QuotaResource {
    QuotaResource {
        name,
        default,
        counts: Some(def),
    }
}

/// Every quota resource, in the order Neutron shows them.
pub static ALL: &[QuotaResource] = &[
    counting("network", 100, &NETWORK),
    counting("subnet", 100, &SUBNET),
    counting("port", 500, &PORT),
    QuotaResource {
        name: "router_route",
        default: 30,
        counts: None,
    },
    counting("router", 10, &ROUTER),
    counting("floatingip", 50, &FLOATING_IP),
    counting("security_group", 10, &SECURITY_GROUP),
    counting("security_group_rule", 100, &SECURITY_GROUP_RULE),
];

/// The quota resource called `name`.
pub fn by_name(name: &str) -> Option<&'static QuotaResource> {
    ALL.iter().find(|r| r.name == name)
}

/// The quota resource that counts objects of `def`, if any does.
pub fn counting_objects_of(def: &ResourceDef) -> Option<&'static QuotaResource> {
    ALL.iter()
        .find(|r| r.counts.is_some_and(|c| std::ptr::eq(c, def)))
}

/// A limit as a client gives it: an integer (numeric strings accepted, as Neutron converts them)
/// from -1 to [`MAX_LIMIT`].
pub fn limit(v: &Value) -> Result<i64, Refusal> {
    let n = validate::int(v)?.as_i64().unwrap_or_default();
    if n < UNLIMITED {
        return Err(Refusal::Invalid(format!(
            "'{n}' is too small - must be at least '{UNLIMITED}'"
        )));
    }
    if n > MAX_LIMIT {
        return Err(Refusal::Invalid(format!(
            "'{n}' is too large - must be no larger than '{MAX_LIMIT}'"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn limits_are_integers_from_minus_one_to_the_largest_int32() {
        assert_eq!(limit(&json!(-1)), Ok(-1));
        assert_eq!(limit(&json!("7")), Ok(7));
        assert_eq!(limit(&json!(2147483647)), Ok(MAX_LIMIT));
        assert!(matches!(limit(&json!(-2)), Err(Refusal::Invalid(_))));
        assert!(matches!(
            limit(&json!(2147483648_i64)),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            limit(&json!("abc")),
            Err(Refusal::Unconvertible(_))
        ));
        assert!(matches!(
            limit(&json!(null)),
            Err(Refusal::Unconvertible(_))
        ));
    }

    #[test]
    fn every_counted_kind_is_named_after_its_objects() {
        for r in ALL {
            if let Some(def) = r.counts {
                assert_eq!(def.singular, r.name);
                assert_eq!(counting_objects_of(def).map(|c| c.name), Some(r.name));
            }
        }
    }
}
