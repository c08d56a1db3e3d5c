//! Secondary indexes: the objects whose field has a value, found without reading their collection.
//!
//! An index is declared once, in [`ALL`]: a collection, a name, and the values an object is found
//! under (a field, the ids in a list field, or a value derived from the object). For each of its
//! values an object has one key `/idx/<collection>/<index>/<value>/<id>` with an empty value (`%`
//! and `/` in the value percent-encoded, so that one value's keys never fall under another's
//! prefix); [`Db::find`](crate::repo::Db::find) reads the keys under
//! `/idx/<collection>/<index>/<value>/` and loads those objects. Empty values are not indexed.
//!
//! Consistency: every write of an object goes through a [`Plan`](crate::repo::Plan), which writes and
//! deletes the object's index keys in the same transaction, computed from the object as it was read
//! (its key pinned at that revision, or required absent for a create) and as it is written. The
//! transaction applies both or neither, so the keys cannot disagree with the objects whatever calls
//! race. Objects stored before an index existed (or by a server that did not keep it) get their keys
//! from [`rebuild`], which the server runs at start-up before it accepts a connection.

use std::collections::{BTreeMap, BTreeSet};

use model::ResourceDef;
use model::resources::{FLOATING_IP, PORT, SECURITY_GROUP_RULE};
use serde_json::Value;
use store::{Revision, Store, StoreError, Txn, TxnOutcome};

use crate::error::ApiResult;
use crate::query::Query;
use crate::repo::{Attempts, Obj, STEP_BUDGET, decode, obj_key, str_field};

/// One index of a collection.
pub struct Index {
    pub def: &'static ResourceDef,
    /// Names the index in its keys.
    pub name: &'static str,
    /// The values an object is found under.
    values: for<'a> fn(&'a Obj) -> Vec<&'a str>,
}

/// Ports by `device_id` (a router's interface and gateway ports, a floating IP's port, a chassis'
/// SNAT addresses).
pub static PORTS_BY_DEVICE: Index = Index {
    def: &PORT,
    name: "device_id",
    values: |p| vec![str_field(p, "device_id")],
};

/// Ports by `network_id`.
pub static PORTS_BY_NETWORK: Index = Index {
    def: &PORT,
    name: "network_id",
    values: |p| vec![str_field(p, "network_id")],
};

/// Ports by each of their `security_groups`.
pub static PORTS_BY_SECURITY_GROUP: Index = Index {
    def: &PORT,
    name: "security_groups",
    values: |p| strings(p.get("security_groups")),
};

/// Router interface ports by the subnets of their fixed IPs: the routers a subnet is attached to.
pub static ROUTER_INTERFACES_BY_SUBNET: Index = Index {
    def: &PORT,
    name: "router_interface_subnet",
    values: |p| {
        if str_field(p, "device_owner") != crate::resources::INTERFACE_OWNER {
            return vec![];
        }
        p.get("fixed_ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.get("subnet_id")?.as_str())
            .collect()
    },
};

/// Floating IPs by the port they are associated with.
pub static FLOATING_IPS_BY_PORT: Index = Index {
    def: &FLOATING_IP,
    name: "port_id",
    values: |f| vec![str_field(f, "port_id")],
};

/// Floating IPs by the router they are associated through.
pub static FLOATING_IPS_BY_ROUTER: Index = Index {
    def: &FLOATING_IP,
    name: "router_id",
    values: |f| vec![str_field(f, "router_id")],
};

/// Security group rules by their group.
pub static RULES_BY_GROUP: Index = Index {
    def: &SECURITY_GROUP_RULE,
    name: "security_group_id",
    values: |r| vec![str_field(r, "security_group_id")],
};

/// Security group rules by the group they allow traffic from.
pub static RULES_BY_REMOTE_GROUP: Index = Index {
    def: &SECURITY_GROUP_RULE,
    name: "remote_group_id",
    values: |r| vec![str_field(r, "remote_group_id")],
};

/// Security group rules by the address group they allow traffic from.
pub static RULES_BY_ADDRESS_GROUP: Index = Index {
    def: &SECURITY_GROUP_RULE,
    name: "remote_address_group_id",
    values: |r| vec![str_field(r, "remote_address_group_id")],
};

/// Every index.
pub static ALL: [&Index; 9] = [
    &PORTS_BY_DEVICE,
    &PORTS_BY_NETWORK,
    &PORTS_BY_SECURITY_GROUP,
    &ROUTER_INTERFACES_BY_SUBNET,
    &FLOATING_IPS_BY_PORT,
    &FLOATING_IPS_BY_ROUTER,
    &RULES_BY_GROUP,
    &RULES_BY_REMOTE_GROUP,
    &RULES_BY_ADDRESS_GROUP,
];

/// The indexes that answer a list's filter on the attribute they are named after: each finds an
/// object under `v` exactly when the object passes the filter `<name>=v` (a string attribute equal
/// to `v`, or a list attribute holding it), for any `v` but the empty value and the spellings of
/// null (`None`, `null`), which also match objects without the attribute.
static FILTERS: [&Index; 8] = [
    &PORTS_BY_DEVICE,
    &PORTS_BY_NETWORK,
    &PORTS_BY_SECURITY_GROUP,
    &FLOATING_IPS_BY_PORT,
    &FLOATING_IPS_BY_ROUTER,
    &RULES_BY_GROUP,
    &RULES_BY_REMOTE_GROUP,
    &RULES_BY_ADDRESS_GROUP,
];

/// An index that finds every object of kind `def` that can pass the filters of `q`, and the
/// values to look up in it (those of the filter, without repeats): a list reads those objects
/// instead of the whole collection, and still applies every filter to them.
pub fn answering<'q>(def: &ResourceDef, q: &'q Query) -> Option<(&'static Index, Vec<&'q str>)> {
    FILTERS
        .iter()
        .copied()
        .filter(|i| i.def.collection == def.collection)
        .find_map(|index| {
            let mut values: Vec<&str> = q.all(index.name).collect();
            if values.is_empty() || values.iter().any(|v| matches!(*v, "" | "None" | "null")) {
                return None;
            }
            values.sort_unstable();
            values.dedup();
            Some((index, values))
        })
}

/// The strings in a list field.
fn strings(list: Option<&Value>) -> Vec<&str> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// A value as it appears in a key: `%` and `/` percent-encoded (also a project id in the quotas'
/// keys).
pub(crate) fn escape(value: &str) -> String {
    value.replace('%', "%25").replace('/', "%2F")
}

impl Index {
    /// Whether `obj` is found under `value`.
    pub fn holds(&self, obj: &Obj, value: &str) -> bool {
        !value.is_empty() && (self.values)(obj).contains(&value)
    }

    /// The prefix of the keys of the objects found under `value`.
    pub fn prefix(&self, value: &str) -> String {
        format!(
            "/idx/{}/{}/{}/",
            self.def.collection,
            self.name,
            escape(value)
        )
    }
}

/// The indexes of a kind of object.
fn of(def: &ResourceDef) -> impl Iterator<Item = &'static Index> + '_ {
    ALL.iter()
        .copied()
        .filter(move |i| i.def.collection == def.collection)
}

/// Whether objects of this kind are indexed.
pub fn covers(def: &ResourceDef) -> bool {
    of(def).next().is_some()
}

/// The index keys of an object.
pub fn keys(def: &ResourceDef, obj: &Obj) -> BTreeSet<String> {
    let id = str_field(obj, "id");
    of(def)
        .flat_map(|index| {
            (index.values)(obj)
                .into_iter()
                .filter(|v| !v.is_empty())
                .map(move |v| format!("{}{id}", index.prefix(v)))
        })
        .collect()
}

/// An object whose index keys disagree with it: the keys it lacks and the keys it should not have,
/// to be fixed on condition that the object is still at `revision` (0: absent).
#[derive(Debug)]
pub struct Repair {
    pub object: String,
    pub revision: Revision,
    pub missing: Vec<String>,
    pub stale: Vec<String>,
}

impl Repair {
    fn txn(&self, txn: &mut Txn) {
        txn.compares.push(store::Compare::ModRevision(
            self.object.clone(),
            self.revision,
        ));
        for key in &self.missing {
            txn.ops.push(store::Op::Put(key.clone(), Vec::new()));
        }
        for key in &self.stale {
            txn.ops.push(store::Op::Delete(key.clone()));
        }
    }
}

/// Where the index keys of `store` disagree with its objects: empty when they agree. Reads every
/// object of the indexed kinds (also those being deleted, which keep their keys) and every index key.
pub async fn repairs(store: &dyn Store) -> ApiResult<Vec<Repair>> {
    let kinds: BTreeMap<&str, &ResourceDef> =
        ALL.iter().map(|i| (i.def.collection, i.def)).collect();
    let mut out = Vec::new();
    for def in kinds.into_values() {
        let index_prefix = format!("/idx/{}/", def.collection);
        let (held, _) = store.range(&index_prefix).await?;
        // Each key's object: `<index>/<value>/<id>` after the prefix (names and values hold no `/`).
        let mut by_object: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for kv in held {
            let id = kv.key[index_prefix.len()..]
                .splitn(3, '/')
                .nth(2)
                .unwrap_or_default()
                .to_string();
            by_object.entry(id).or_default().insert(kv.key);
        }
        let (objects, _) = store.range(&format!("/r/{}/", def.collection)).await?;
        for kv in objects {
            let obj = decode(&kv.value)?;
            let want = keys(def, &obj);
            let have = by_object.remove(str_field(&obj, "id")).unwrap_or_default();
            if want != have {
                out.push(Repair {
                    object: kv.key,
                    revision: kv.mod_revision,
                    missing: want.difference(&have).cloned().collect(),
                    stale: have.difference(&want).cloned().collect(),
                });
            }
        }
        for (id, have) in by_object {
            out.push(Repair {
                object: obj_key(def, &id),
                revision: 0,
                missing: vec![],
                stale: have.into_iter().collect(),
            });
        }
    }
    Ok(out)
}

/// Makes the indexes agree with the objects, writing only where they disagree (on a consistent store:
/// nothing). The server runs it at start-up, before it serves: the index keys of objects stored
/// before an index existed are written then. Each fix is conditional on its object being unchanged
/// since it was read, so that calls of other servers may run meanwhile; a fix that loses such a race
/// is planned again from fresh reads.
pub async fn rebuild(store: &dyn Store) -> ApiResult<()> {
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        let repairs = repairs(store).await?;
        if repairs.is_empty() {
            return Ok(());
        }
        tracing::info!("writing the index keys of {} objects", repairs.len());
        let mut all_applied = true;
        let mut batch = Txn::new();
        let mut repairs = repairs.into_iter().peekable();
        while let Some(repair) = repairs.next() {
            repair.txn(&mut batch);
            let full = repairs.peek().is_none_or(|next| {
                batch.ops.len() + next.missing.len() + next.stale.len() > STEP_BUDGET
                    || batch.compares.len() + 1 > STEP_BUDGET
            });
            if full {
                match store.txn(std::mem::take(&mut batch)).await {
                    Ok(TxnOutcome::Committed(_)) => {}
                    Ok(TxnOutcome::Conflict(_)) | Err(StoreError::OutcomeUnknown(_)) => {
                        all_applied = false;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if all_applied {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Values with `/` or `%` in them have keys of their own: no value's keys fall under another
    /// value's prefix, and empty values have no keys.
    #[test]
    fn values_never_share_a_prefix() {
        let port = |device: &str| {
            let port = json!({"id": "p1", "device_id": device, "network_id": ""});
            port.as_object().cloned().unwrap()
        };
        assert!(keys(&PORT, &port("")).is_empty());
        let values = ["a", "a/b", "a%2Fb", "a/", "%"];
        for a in values {
            let prefix = PORTS_BY_DEVICE.prefix(a);
            for b in values {
                let keys = keys(&PORT, &port(b));
                assert_eq!(keys.len(), 1);
                let under = keys.iter().all(|k| k.starts_with(&prefix));
                assert_eq!(under, a == b, "{keys:?} and the prefix {prefix}");
            }
        }
    }
}
