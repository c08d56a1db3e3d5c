//! Objects in the store: keys, loading, and [`Plan`], the set of conditional writes one API call makes.
//!
//! Layout: `/r/<collection>/<id>` holds an object as the API shows it (plus internal fields whose names
//! start with `_`); `/ipam/<subnet>/<ip>`, `/mac/<network>/<mac>`, `/seg/<type>/<physnet>/<id>`,
//! `/seg/router/<n>`, `/snat/<network>/<chassis>` and `/default-sg/<project>` are claims that make
//! allocations unique; `/idx/...` are the keys of secondary indexes (see [`crate::index`]) and
//! `/quota/used/...` the quotas' usage counters (see [`crate::quota`]), which a plan keeps in step
//! with the objects it writes. A call reads what it needs,
//! builds a plan whose conditions pin every key it read or claims, and commits it; a conflict means
//! another call got there first, and the whole call is planned again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use model::ResourceDef;
use serde_json::{Map, Value};
use store::{Revision, Store, StoreError, Txn, TxnOutcome};

use crate::error::{ApiError, ApiResult};
use crate::index::{self, Index};
use crate::quota::{self, Ledger};

/// A JSON object as the API shows it.
pub type Obj = Map<String, Value>;

/// An object and the store revision it was read at.
#[derive(Debug, Clone)]
pub struct Stored {
    pub obj: Obj,
    pub rev: Revision,
    /// The revision that created the object: unique and fixed for its lifetime (Neutron's
    /// `standard_attr_id` plays that role).
    pub created: Revision,
}

impl Stored {
    pub fn id(&self) -> &str {
        str_field(&self.obj, "id")
    }

    /// Neutron's `standard_attr_id`: unique among all objects and fixed for the object's lifetime.
    /// Objects created by one commit share `created`; their place among its creations (`_seq`, see
    /// [`Plan::create`]) tells them apart.
    pub fn standard_attr_id(&self) -> u64 {
        let seq = self.obj.get("_seq").and_then(Value::as_u64).unwrap_or(0);
        self.created * SEQ_PER_COMMIT + seq
    }
}

/// The room for the creations of one commit in [`Stored::standard_attr_id`].
const SEQ_PER_COMMIT: u64 = 1 << 16;

/// A string field of an object, or "" when absent or not a string.
pub fn str_field<'a>(obj: &'a Obj, name: &str) -> &'a str {
    obj.get(name).and_then(Value::as_str).unwrap_or_default()
}

pub fn obj_key(def: &ResourceDef, id: &str) -> String {
    format!("/r/{}/{}", def.collection, id)
}

pub fn ipam_key(subnet: &str, ip: &str) -> String {
    format!("/ipam/{subnet}/{ip}")
}

pub fn ipam_prefix(subnet: &str) -> String {
    format!("/ipam/{subnet}/")
}

pub fn mac_key(network: &str, mac: &str) -> String {
    format!("/mac/{network}/{mac}")
}

/// The current time in Neutron's timestamp format.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// How often a call is planned again after losing a race, before giving up with 409.
const MAX_ATTEMPTS: usize = 64;

/// The most conditions or writes of a transaction that is split into steps: etcd refuses
/// transactions with more than 128 of either (its default `--max-txn-ops`).
pub const STEP_BUDGET: usize = 100;

/// Read access to the store in terms of objects, and the commit of plans.
#[derive(Clone)]
pub struct Db {
    pub store: Arc<dyn Store>,
    /// The default quota limits, which the commit of a plan that creates objects checks.
    pub quotas: Arc<quota::Defaults>,
}

impl Db {
    pub async fn load(&self, def: &ResourceDef, id: &str) -> ApiResult<Option<Stored>> {
        let Some(kv) = self.store.get(&obj_key(def, id)).await? else {
            return Ok(None);
        };
        let obj = decode(&kv.value)?;
        if obj.contains_key("_deleting") {
            return Ok(None);
        }
        Ok(Some(Stored {
            obj,
            rev: kv.mod_revision,
            created: kv.create_revision,
        }))
    }

    /// The object, or `<Kind>NotFound`.
    pub async fn require(&self, def: &ResourceDef, id: &str) -> ApiResult<Stored> {
        self.load(def, id)
            .await?
            .ok_or_else(|| ApiError::object_not_found(def.error_name, def.singular, id))
    }

    /// Every object of a kind, in id order.
    pub async fn list(&self, def: &ResourceDef) -> ApiResult<Vec<Stored>> {
        let (kvs, _) = self.store.range(&format!("/r/{}/", def.collection)).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let obj = decode(&kv.value)?;
            if !obj.contains_key("_deleting") {
                out.push(Stored {
                    obj,
                    rev: kv.mod_revision,
                    created: kv.create_revision,
                });
            }
        }
        Ok(out)
    }

    /// The objects of a kind with these ids, those that exist (read concurrently).
    pub async fn load_many(&self, def: &ResourceDef, ids: &[&str]) -> ApiResult<Vec<Stored>> {
        let loaded = futures::future::try_join_all(ids.iter().map(|id| self.load(def, id))).await?;
        Ok(loaded.into_iter().flatten().collect())
    }

    /// The objects `index` finds under `value`, in id order: reads their index keys and the objects,
    /// nothing else. Nothing is found under "" (empty values are not indexed).
    pub async fn find(&self, index: &Index, value: &str) -> ApiResult<Vec<Stored>> {
        let ids = self.indexed_ids(index, value).await?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut found = self.load_many(index.def, &ids).await?;
        found.retain(|s| index.holds(&s.obj, value));
        Ok(found)
    }

    /// Whether `index` finds anything under `value`: reads the index keys and the objects up to the
    /// first one that exists.
    pub async fn any(&self, index: &Index, value: &str) -> ApiResult<bool> {
        for id in self.indexed_ids(index, value).await? {
            if let Some(found) = self.load(index.def, &id).await?
                && index.holds(&found.obj, value)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The ids of the objects under `value` in `index`, in order.
    async fn indexed_ids(&self, index: &Index, value: &str) -> ApiResult<Vec<String>> {
        if value.is_empty() {
            return Ok(vec![]);
        }
        let prefix = index.prefix(value);
        let (kvs, _) = self.store.range(&prefix).await?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix).map(String::from))
            .collect())
    }

    /// Whether any key exists under `prefix`, and which values they hold.
    pub async fn values_under(&self, prefix: &str) -> ApiResult<Vec<(String, String)>> {
        let (kvs, _) = self.store.range(prefix).await?;
        Ok(kvs
            .into_iter()
            .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
            .collect())
    }

    pub async fn exists(&self, key: &str) -> ApiResult<bool> {
        Ok(self.store.get(key).await?.is_some())
    }

    /// Commits a plan; `false` when a condition failed and the call must be planned again.
    pub async fn commit(&self, plan: Plan) -> ApiResult<bool> {
        Ok(self.commit_at(plan).await?.is_some())
    }

    /// Commits a plan; the revision it was committed at, or `None` after a conflict.
    ///
    /// The usage counters of what the plan creates and deletes are read and added now
    /// ([`Ledger::settle`], which also checks the quotas the plan enforces). A conflict on a counter
    /// or a project's limits means only that another call counted first: the counters are read
    /// again and the plan sent again, without planning the whole call again.
    pub async fn commit_at(&self, plan: Plan) -> ApiResult<Option<Revision>> {
        let (planned, ledger) = plan.into_parts();
        if ledger.is_empty() {
            return Ok(self.send(planned).await?.ok());
        }
        for _ in 0..MAX_ATTEMPTS {
            let mut txn = planned.clone();
            ledger.settle(self, &mut txn).await?;
            match self.send(txn).await? {
                Ok(rev) => return Ok(Some(rev)),
                Err(key) if quota::is_quota_key(&key) => continue,
                Err(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Sends one transaction: the revision it was committed at, or the key of the condition that
    /// failed ("" when it is not known which).
    async fn send(&self, txn: Txn) -> ApiResult<Result<Revision, String>> {
        let witness = txn.ops.iter().find_map(|op| match op {
            store::Op::Put(k, v) | store::Op::PutLeased(k, v, _) => Some((k.clone(), v.clone())),
            store::Op::Delete(_) => None,
        });
        match self.store.txn(txn).await {
            Ok(TxnOutcome::Committed(rev)) => Ok(Ok(rev)),
            Ok(TxnOutcome::Conflict(key)) => {
                tracing::debug!("conflict on {key}; planning again");
                Ok(Err(key))
            }
            // The connection broke after the transaction went out (etcd leader change): read back
            // one value it writes. Ours there: it committed, answer success (a retry by the client
            // would create a duplicate). Otherwise nothing was written: plan again.
            Err(StoreError::OutcomeUnknown(why)) => match witness {
                Some((key, value)) => match self.store.get(&key).await? {
                    Some(kv) if kv.value == value => Ok(Ok(kv.mod_revision)),
                    _ => {
                        tracing::debug!("transaction outcome unknown ({why}); not applied");
                        Ok(Err(String::new()))
                    }
                },
                None => Err(StoreError::OutcomeUnknown(why).into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// Counts attempts of an optimistic call.
#[derive(Default)]
pub struct Attempts(usize);

impl Attempts {
    pub fn new() -> Self {
        Self::default()
    }
    /// Call before each attempt: fails once the call has lost too many races.
    pub fn begin(&mut self) -> ApiResult<()> {
        self.0 += 1;
        if self.0 > MAX_ATTEMPTS {
            return Err(ApiError::conflict(
                "Conflict",
                "The request lost too many races with concurrent changes; try again.",
            ));
        }
        Ok(())
    }
}

pub fn decode(bytes: &[u8]) -> ApiResult<Obj> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("corrupt object in store: {e}")))
}

fn encode(obj: &Obj) -> Vec<u8> {
    serde_json::to_vec(obj).unwrap_or_default()
}

/// The conditional writes of one call.
///
/// An object is written at most once: writing it again (a bulk request whose items all change their
/// network or group) replaces the earlier write, and [`Plan::written`] shows later items the object
/// as the earlier ones left it.
///
/// Every write of an object names the object as it was read (a [`Stored`], pinned at its revision),
/// so that the plan also writes and deletes the object's index keys: those of the object as first
/// read that the object as last written lacks are deleted, the new ones written, in the same
/// transaction (see [`crate::index`]).
#[derive(Default)]
pub struct Plan {
    txn: Txn,
    claimed: HashSet<String>,
    /// Conditions already in the plan, so that objects that many items of a bulk request rely on
    /// (their network, subnet, security group) are pinned once.
    pinned: HashSet<(String, Revision)>,
    /// The write of each object the plan writes, by key: its index in `txn.ops`.
    writes: HashMap<String, usize>,
    /// The index keys of each indexed object the plan writes or deletes, by the object's key.
    indexed: HashMap<String, IndexKeys>,
    /// The objects the plan creates and deletes, for the quotas' usage counters.
    quota: Ledger,
    /// The place of each object the plan creates among its creations, by key (`_seq`).
    seqs: HashMap<String, u64>,
}

/// An object's index keys as it was read (none when the plan creates it), and as the plan leaves
/// it (none when the plan deletes it).
struct IndexKeys {
    read: BTreeSet<String>,
    written: BTreeSet<String>,
}

impl Plan {
    /// Claims a unique key for `owner`. `false` when this plan already claimed it.
    pub fn claim(&mut self, key: String, owner: &str) -> bool {
        if !self.claimed.insert(key.clone()) {
            return false;
        }
        self.txn
            .compares
            .push(store::Compare::ModRevision(key.clone(), 0));
        self.txn
            .ops
            .push(store::Op::Put(key, owner.as_bytes().to_vec()));
        true
    }
    pub fn is_claimed(&self, key: &str) -> bool {
        self.claimed.contains(key)
    }
    /// Whether `other` writes an object that this plan writes too.
    pub fn overlaps(&self, other: &Plan) -> bool {
        other.writes.keys().any(|k| self.writes.contains_key(k))
    }
    /// The larger of the plan's condition and write counts, index keys and (at most) usage
    /// counters included (etcd limits both per transaction).
    pub fn size(&self) -> usize {
        self.txn
            .compares
            .len()
            .max(self.txn.ops.len() + self.index_ops().count())
            + self.quota.size()
    }
    /// Checks the objects of kind `def` that this plan creates against their projects' quotas (at
    /// commit: 409 `OverQuota` when they do not fit). Other objects the plan creates are counted
    /// but not checked, as Neutron counts what it makes on its own behalf.
    pub fn enforce_quota(&mut self, def: &ResourceDef) {
        self.quota.enforce(def);
    }
    /// The writes and deletes of index keys that the plan's object writes call for.
    fn index_ops(&self) -> impl Iterator<Item = store::Op> + '_ {
        self.indexed.values().flat_map(|keys| {
            let gone = keys.read.difference(&keys.written);
            let new = keys.written.difference(&keys.read);
            gone.map(|k| store::Op::Delete(k.clone()))
                .chain(new.map(|k| store::Op::Put(k.clone(), Vec::new())))
        })
    }
    /// The transaction to commit (the plan's conditions and writes, then its index keys), and the
    /// objects it creates and deletes, whose counters are added at commit.
    fn into_parts(self) -> (Txn, Ledger) {
        let index_ops: Vec<store::Op> = self.index_ops().collect();
        let mut txn = self.txn;
        txn.ops.extend(index_ops);
        (txn, self.quota)
    }
    /// Notes the index keys of an object the plan writes (`written`) or deletes (`None`); `read` is
    /// the object as read, `None` for a new one. The keys as read are those of the first write.
    fn reindex(&mut self, def: &ResourceDef, key: &str, read: Option<&Obj>, written: Option<&Obj>) {
        if !index::covers(def) {
            return;
        }
        let written = written.map(|o| index::keys(def, o)).unwrap_or_default();
        match self.indexed.get_mut(key) {
            Some(keys) => keys.written = written,
            None => {
                let read = read.map(|o| index::keys(def, o)).unwrap_or_default();
                self.indexed
                    .insert(key.to_string(), IndexKeys { read, written });
            }
        }
    }
    /// Adds the conditions, claims and writes of `other` (planned separately, writing other objects)
    /// to this plan.
    pub fn absorb(&mut self, other: Plan) {
        for compare in other.txn.compares {
            let store::Compare::ModRevision(key, rev) = &compare;
            if self.pinned.contains(&(key.clone(), *rev)) {
                continue;
            }
            self.txn.compares.push(compare);
        }
        self.pinned.extend(other.pinned);
        self.claimed.extend(other.claimed);
        let offset = self.txn.ops.len();
        self.writes
            .extend(other.writes.into_iter().map(|(k, i)| (k, i + offset)));
        self.txn.ops.extend(other.txn.ops);
        for (key, keys) in other.indexed {
            match self.indexed.get_mut(&key) {
                Some(mine) => mine.written = keys.written,
                None => {
                    self.indexed.insert(key, keys);
                }
            }
        }
        self.quota.absorb(other.quota);
    }
    /// The object as this plan writes it, if it does.
    pub fn written(&self, def: &ResourceDef, id: &str) -> Option<Obj> {
        match &self.txn.ops[*self.writes.get(&obj_key(def, id))?] {
            store::Op::Put(_, value) | store::Op::PutLeased(_, value, _) => decode(value).ok(),
            store::Op::Delete(_) => None,
        }
    }
    /// Writes `obj` under `key`, in place of an earlier write of the same key.
    fn write(&mut self, key: String, obj: &Obj) {
        let op = match self.seqs.get(&key) {
            Some(&seq) if seq > 0 => {
                let mut obj = obj.clone();
                obj.insert("_seq".into(), seq.into());
                store::Op::Put(key.clone(), encode(&obj))
            }
            _ => store::Op::Put(key.clone(), encode(obj)),
        };
        match self.writes.get(&key) {
            Some(&i) => self.txn.ops[i] = op,
            None => {
                self.writes.insert(key, self.txn.ops.len());
                self.txn.ops.push(op);
            }
        }
    }
    /// Requires `key` to still be at `rev` when the plan commits.
    pub fn pin(&mut self, key: String, rev: Revision) {
        if self.pinned.insert((key.clone(), rev)) {
            self.txn
                .compares
                .push(store::Compare::ModRevision(key, rev));
        }
    }
    pub fn pin_obj(&mut self, def: &ResourceDef, stored: &Stored) {
        self.pin(obj_key(def, stored.id()), stored.rev);
    }
    /// Writes `value` under `key`, a record that is not an object (a project's quota limits), on
    /// condition that `key` is still at `rev` (0: absent).
    pub fn put_key(&mut self, key: String, rev: Revision, value: Vec<u8>) {
        self.pin(key.clone(), rev);
        self.txn.ops.push(store::Op::Put(key, value));
    }
    pub fn release(&mut self, key: String) {
        self.claimed.remove(&key);
        self.txn.ops.push(store::Op::Delete(key));
    }
    /// Writes a new object (its key must be free).
    pub fn create(&mut self, def: &ResourceDef, obj: &Obj) {
        let key = obj_key(def, str_field(obj, "id"));
        self.txn
            .compares
            .push(store::Compare::ModRevision(key.clone(), 0));
        self.reindex(def, &key, None, Some(obj));
        self.quota.count(def, obj, 1);
        let seq = self.seqs.len() as u64;
        self.seqs.entry(key.clone()).or_insert(seq);
        self.write(key, obj);
    }
    /// Writes `obj`, a changed copy of the object as `read`; bumps its revision number and update
    /// time.
    pub fn update(&mut self, def: &ResourceDef, read: &Stored, obj: &mut Obj) {
        touch(obj);
        self.put_raw(def, read, obj);
    }
    /// Writes `obj`, a copy of the object as `read`, exactly as given (internal markers).
    pub fn put_raw(&mut self, def: &ResourceDef, read: &Stored, obj: &Obj) {
        let key = obj_key(def, str_field(obj, "id"));
        self.pin(key.clone(), read.rev);
        self.reindex(def, &key, Some(&read.obj), Some(obj));
        self.write(key, obj);
    }
    pub fn delete(&mut self, def: &ResourceDef, stored: &Stored) {
        let key = obj_key(def, stored.id());
        self.pin(key.clone(), stored.rev);
        self.reindex(def, &key, Some(&stored.obj), None);
        self.quota.count(def, &stored.obj, -1);
        self.writes.remove(&key);
        self.txn.ops.push(store::Op::Delete(key));
    }
}

/// Marks an object changed: next revision number, new update time.
pub fn touch(obj: &mut Obj) {
    let next = obj
        .get("revision_number")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + 1;
    obj.insert("revision_number".into(), next.into());
    obj.insert("updated_at".into(), now().into());
}
