//! Quotas: how many objects of each kind a project may hold (Neutron's `quotas` and `quota_details`
//! extensions), enforced in the same store transaction as the writes that create the objects.
//!
//! Layout: `/quota/limits/<project>` holds a project's own limits, those an admin set (Neutron's
//! quota rows: `GET /v2.0/quotas` lists the projects that have one); every other limit is the
//! server's default ([`Defaults`], Neutron's by default). A project's usage of a resource is the sum
//! of [`usage::SHARDS`] counters `/quota/used/<project>/<resource>/<n>`, kept by every plan that
//! creates or deletes objects of a counted kind (see [`usage`]). Project ids in keys are escaped as
//! index values are ([`crate::index::escape`]).

mod http;
pub(crate) mod usage;

use std::collections::BTreeMap;

use model::quotas::{self, UNLIMITED};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use store::{Revision, Store};

use crate::error::{ApiError, ApiResult};
use crate::index::escape;

pub(crate) use http::{action, create, delete, list, show, update};
pub(crate) use usage::{Ledger, precheck, recount};

/// The prefix of every quota key.
const PREFIX: &str = "/quota/";
/// The prefix of the keys of projects' own limits.
const LIMITS_PREFIX: &str = "/quota/limits/";

/// Whether `key` is a quota key (a project's limits or a usage counter).
pub(crate) fn is_quota_key(key: &str) -> bool {
    key.starts_with(PREFIX)
}

fn limits_key(project: &str) -> String {
    format!("{LIMITS_PREFIX}{}", escape(project))
}

/// The default limits (`"quotas"` in the server's configuration file, Neutron's `[QUOTAS]
/// quota_<resource>` options): `{"port": 1000, "floatingip": -1}`; a resource left out has
/// Neutron's default, -1 is unlimited. All servers on one store should have the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults(BTreeMap<&'static str, i64>);

impl Default for Defaults {
    fn default() -> Self {
        Self(quotas::ALL.iter().map(|r| (r.name, r.default)).collect())
    }
}

impl Defaults {
    /// No limit on anything (tests and benchmarks that make more objects than Neutron allows).
    pub fn unlimited() -> Self {
        Self(quotas::ALL.iter().map(|r| (r.name, UNLIMITED)).collect())
    }

    /// The default limit of the quota resource called `resource`.
    fn of(&self, resource: &str) -> i64 {
        self.0.get(resource).copied().unwrap_or(UNLIMITED)
    }
}

impl<'de> Deserialize<'de> for Defaults {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let given = BTreeMap::<String, Value>::deserialize(deserializer)?;
        let mut defaults = Self::default();
        for (name, value) in given {
            let resource = quotas::by_name(&name)
                .ok_or_else(|| serde::de::Error::custom(format!("no quota resource {name:?}")))?;
            let limit = quotas::limit(&value)
                .map_err(|why| serde::de::Error::custom(format!("quota {name}: {why}")))?;
            defaults.0.insert(resource.name, limit);
        }
        Ok(defaults)
    }
}

/// A project's own limits as stored, and the revision of their key (0: none set).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProjectLimits {
    set: BTreeMap<String, i64>,
    rev: Revision,
}

impl ProjectLimits {
    async fn read(store: &dyn Store, project: &str) -> ApiResult<Self> {
        let Some(kv) = store.get(&limits_key(project)).await? else {
            return Ok(Self::default());
        };
        let stored: StoredLimits = serde_json::from_slice(&kv.value).map_err(|e| {
            ApiError::internal(format!("corrupt quota limits of project {project}: {e}"))
        })?;
        Ok(Self {
            set: stored.limits,
            rev: kv.mod_revision,
        })
    }

    /// The limit of `resource`: the project's own, or the default.
    fn of(&self, defaults: &Defaults, resource: &str) -> i64 {
        self.set
            .get(resource)
            .copied()
            .unwrap_or_else(|| defaults.of(resource))
    }

    /// Every limit, as Neutron shows a project's quota.
    fn shown(&self, defaults: &Defaults) -> Map<String, Value> {
        quotas::ALL
            .iter()
            .map(|r| (r.name.to_string(), self.of(defaults, r.name).into()))
            .collect()
    }
}

/// The value of a `/quota/limits/<project>` key.
#[derive(Debug, serde::Serialize, Deserialize)]
struct StoredLimits {
    project_id: String,
    limits: BTreeMap<String, i64>,
}

/// The limit of `resource` for `project`: its own or the default.
pub(crate) async fn limit_of(
    store: &dyn Store,
    defaults: &Defaults,
    project: &str,
    resource: &str,
) -> ApiResult<i64> {
    Ok(ProjectLimits::read(store, project)
        .await?
        .of(defaults, resource))
}

/// Neutron's 409 `OverQuota` for `resources` (sorted), e.g. "Quota exceeded for resources:
/// ['network']."
pub(crate) fn over_quota<'a>(resources: impl IntoIterator<Item = &'a str>) -> ApiError {
    let mut names: Vec<&str> = resources.into_iter().collect();
    names.sort_unstable();
    let listed: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    ApiError::conflict(
        "OverQuota",
        format!("Quota exceeded for resources: [{}].", listed.join(", ")),
    )
}

/// Whether `delta` more objects than the `used` ones would pass `limit` (negative: unlimited).
fn exceeds(limit: i64, used: i64, delta: i64) -> bool {
    limit >= 0 && used + delta > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_defaults_replace_neutrons_one_by_one() {
        let defaults: Defaults =
            serde_json::from_str(r#"{"port": 1000, "floatingip": "-1"}"#).expect("valid defaults");
        assert_eq!(
            (
                defaults.of("port"),
                defaults.of("floatingip"),
                defaults.of("network")
            ),
            (1000, UNLIMITED, 100)
        );
        for wrong in [r#"{"ports": 1}"#, r#"{"port": -2}"#, r#"{"port": "many"}"#] {
            assert!(serde_json::from_str::<Defaults>(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn over_quota_names_the_resources_as_neutron_does() {
        let error = over_quota(["security_group_rule", "security_group"]);
        assert_eq!(
            (
                error.status.as_u16(),
                error.kind.as_str(),
                error.message.as_str()
            ),
            (
                409,
                "OverQuota",
                "Quota exceeded for resources: ['security_group', 'security_group_rule']."
            )
        );
    }
}
