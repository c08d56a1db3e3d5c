//! Usage counters: how many objects of each counted kind a project holds, kept in the transactions
//! that create and delete them, and the quota check that rides on the same transaction.
//!
//! A plan counts what it creates and deletes as it goes ([`Ledger`], filled by `Plan::create` and
//! `Plan::delete`); just before it commits, [`Ledger::settle`] reads the counters of each project
//! and resource it changes, checks the limits of the resources the call enforces, and adds the
//! counters' new values to the transaction, each conditional on the counter's revision as read. The
//! object writes and the counters commit together or not at all, so the counters always equal the
//! objects, and a limit cannot be passed by calls that race, on one server or on several.
//!
//! *Contention.* One counter per project and resource would make every create of a project conflict
//! with every other. So the usage is split over [`SHARDS`] counters, and a limit L over as many
//! shares (L / 8 each, the remainder to the first ones). A create that finds every counter within
//! its share adds to counters with room, pinning only those: creates that touch different counters
//! commit side by side, and the sum cannot pass L because no counter passes its share. A change
//! that would take a counter past its share (counters left over a lowered limit, or objects the
//! server makes on its own behalf, which are counted but never refused) rewrites all the counters,
//! so that every concurrent change that read them is planned again; so does a counter change racing
//! with a limit change, since increments pin the project's limits key. Losing a race on a counter
//! only re-reads the counters ([`crate::repo::Db::commit_at`]), not the whole call. Deletes take from
//! the counters furthest over their share, then the fullest, and delete counters that reach 0.
//!
//! *Size.* A change adds at most [`SHARDS`] writes and [`SHARDS`] + 1 conditions per project and
//! resource (usually one or two writes), within etcd's 128 operations per transaction.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use model::ResourceDef;
use model::quotas;
use store::{KeyValue, Revision, Store, StoreError, Txn, TxnOutcome};

use super::{Defaults, ProjectLimits, exceeds, limit_of, limits_key, over_quota};
use crate::error::ApiResult;
use crate::index::escape;
use crate::repo::{Attempts, Db, Obj, STEP_BUDGET, decode, str_field};

/// How many counters hold a project's usage of one resource.
pub const SHARDS: usize = 8;

/// The prefix of every usage counter.
const USAGE_PREFIX: &str = "/quota/used/";

/// The prefix of a project's counters (`escaped`: the project id as [`escape`] writes it).
fn project_prefix(escaped: &str) -> String {
    format!("{USAGE_PREFIX}{escaped}/")
}

fn counter_key(escaped: &str, resource: &str, n: usize) -> String {
    format!("{}{resource}/{n}", project_prefix(escaped))
}

/// The objects a plan creates (positive) and deletes (negative), by project and quota resource,
/// and the resources whose increase the call checks against the limits.
#[derive(Debug, Default)]
pub struct Ledger {
    changes: BTreeMap<(String, &'static str), i64>,
    enforced: BTreeSet<&'static str>,
}

impl Ledger {
    /// Counts `delta` objects like `obj` (of kind `def`) for its project, if a quota counts them.
    /// Objects of no project (the server's own: router gateways, floating IP ports) count for none.
    pub fn count(&mut self, def: &ResourceDef, obj: &Obj, delta: i64) {
        let project = str_field(obj, "project_id");
        if let Some(resource) = quotas::counting_objects_of(def)
            && !project.is_empty()
        {
            *self
                .changes
                .entry((project.to_string(), resource.name))
                .or_default() += delta;
        }
    }

    /// Checks the plan's new objects of kind `def` against their projects' limits.
    pub fn enforce(&mut self, def: &ResourceDef) {
        if let Some(resource) = quotas::counting_objects_of(def) {
            self.enforced.insert(resource.name);
        }
    }

    /// Adds the counts and checks of another plan's ledger.
    pub fn absorb(&mut self, other: Ledger) {
        for (key, delta) in other.changes {
            *self.changes.entry(key).or_default() += delta;
        }
        self.enforced.extend(other.enforced);
    }

    /// The counters the plan changes: (project, resource, change).
    fn changed(&self) -> impl Iterator<Item = (&str, &'static str, i64)> {
        self.changes
            .iter()
            .filter(|(_, delta)| **delta != 0)
            .map(|((project, resource), delta)| (project.as_str(), *resource, *delta))
    }

    pub fn is_empty(&self) -> bool {
        self.changed().next().is_none()
    }

    /// The most conditions (and writes) [`Ledger::settle`] adds to the plan's transaction.
    pub fn size(&self) -> usize {
        self.changed().count() * (SHARDS + 1)
    }

    /// Reads the counters the plan changes and adds their new values to `txn`, each on condition
    /// that the counter is still as read (increments also on the project's limits as read).
    /// Fails with 409 `OverQuota` when an enforced resource would pass its project's limit.
    pub async fn settle(&self, db: &Db, txn: &mut Txn) -> ApiResult<()> {
        let store = db.store.as_ref();
        let mut limits: BTreeMap<&str, ProjectLimits> = BTreeMap::new();
        let mut pinned = BTreeSet::new();
        let mut over = BTreeSet::new();
        for (project, resource, delta) in self.changed() {
            if !limits.contains_key(project) {
                limits.insert(project, ProjectLimits::read(store, project).await?);
            }
            let own = &limits[project];
            let limit = own.of(&db.quotas, resource);
            let escaped = escape(project);
            let counters = Counters::read(store, &escaped, resource).await?;
            if delta > 0 {
                if pinned.insert(project) {
                    txn.compares
                        .push(store::Compare::ModRevision(limits_key(project), own.rev));
                }
                if self.enforced.contains(resource) && exceeds(limit, counters.total(), delta) {
                    over.insert(resource);
                    continue;
                }
            }
            let change = rewrite(
                &counters.values,
                &shares(limit),
                delta,
                fastrand::usize(..SHARDS),
            );
            counters.write(&escaped, resource, &change, txn);
        }
        if over.is_empty() {
            Ok(())
        } else {
            Err(over_quota(over))
        }
    }
}

/// One project's counters of one resource, as read.
#[derive(Debug, Clone, Default)]
pub(super) struct Counters {
    values: [i64; SHARDS],
    /// Each counter's revision (0: absent).
    revs: [Revision; SHARDS],
}

impl Counters {
    /// The counters of every resource of one project among `kvs` (keys under `prefix`).
    fn collect(prefix: &str, kvs: &[KeyValue]) -> BTreeMap<String, Counters> {
        let mut out: BTreeMap<String, Counters> = BTreeMap::new();
        for kv in kvs {
            let Some((resource, n)) = kv.key.strip_prefix(prefix).and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let Some(n) = n.parse::<usize>().ok().filter(|n| *n < SHARDS) else {
                continue;
            };
            let counters = out.entry(resource.to_string()).or_default();
            counters.values[n] = std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or_default()
                .max(0);
            counters.revs[n] = kv.mod_revision;
        }
        out
    }

    /// The counters of one resource of a project.
    async fn read(store: &dyn Store, escaped: &str, resource: &str) -> ApiResult<Self> {
        let prefix = project_prefix(escaped);
        let (kvs, _) = store.range(&format!("{prefix}{resource}/")).await?;
        Ok(Self::collect(&prefix, &kvs)
            .remove(resource)
            .unwrap_or_default())
    }

    /// The counters of every resource of a project (resources with none are left out).
    pub(super) async fn read_project(
        store: &dyn Store,
        project: &str,
    ) -> ApiResult<BTreeMap<String, Counters>> {
        let prefix = project_prefix(&escape(project));
        let (kvs, _) = store.range(&prefix).await?;
        Ok(Self::collect(&prefix, &kvs))
    }

    /// The usage: the sum of the counters.
    pub(super) fn total(&self) -> i64 {
        self.values.iter().sum()
    }

    /// Each counter's key and revision as read (0: absent), for a plan to pin.
    pub(super) fn pins<'a>(
        &'a self,
        project: &str,
        resource: &'a str,
    ) -> impl Iterator<Item = (String, Revision)> + 'a {
        let escaped = escape(project);
        (0..SHARDS).map(move |n| (counter_key(&escaped, resource, n), self.revs[n]))
    }

    /// Adds `change` to `txn`, each rewritten counter on condition that it is as read. A partial
    /// rewrite deletes counters that reach 0, and a release also the other counters left at 0; a
    /// full one writes every counter, 0 included, so that each counter's revision changes.
    fn write(&self, escaped: &str, resource: &str, change: &Rewrite, txn: &mut Txn) {
        let mut rewritten = [false; SHARDS];
        for &(n, value) in &change.values {
            rewritten[n] = true;
            let key = counter_key(escaped, resource, n);
            txn.compares
                .push(store::Compare::ModRevision(key.clone(), self.revs[n]));
            txn.ops.push(if value == 0 && !change.full {
                store::Op::Delete(key)
            } else {
                store::Op::Put(key, value.to_string().into_bytes())
            });
        }
        if change.release {
            for n in
                (0..SHARDS).filter(|&n| !rewritten[n] && self.revs[n] != 0 && self.values[n] == 0)
            {
                let key = counter_key(escaped, resource, n);
                txn.compares
                    .push(store::Compare::ModRevision(key.clone(), self.revs[n]));
                txn.ops.push(store::Op::Delete(key));
            }
        }
    }
}

/// Each counter's share of `limit` (negative: unlimited).
fn shares(limit: i64) -> [i64; SHARDS] {
    let mut out = [i64::MAX; SHARDS];
    if limit >= 0 {
        let (each, rest) = (limit / SHARDS as i64, limit % SHARDS as i64);
        for (n, share) in out.iter_mut().enumerate() {
            *share = each + i64::from((n as i64) < rest);
        }
    }
    out
}

/// `total` spread over the counters: each filled up to its share in turn, what is left over on the
/// first.
fn spread(total: i64, shares: &[i64; SHARDS]) -> [i64; SHARDS] {
    let mut left = total;
    let mut out = [0; SHARDS];
    for (value, share) in out.iter_mut().zip(shares) {
        *value = left.min(*share);
        left -= *value;
    }
    out[0] += left;
    out
}

/// The counters a change rewrites, with their new values.
#[derive(Debug, PartialEq, Eq)]
struct Rewrite {
    values: Vec<(usize, i64)>,
    /// Every counter is rewritten.
    full: bool,
    /// The change takes objects away.
    release: bool,
}

/// How counters holding `values`, with `shares`, change for `delta` more (or fewer) objects.
/// Increments go to counters with room, starting at counter `start`; when they do not fit (a counter
/// over its share, or too little room left), every counter is rewritten with the new sum
/// [`spread`]. Decrements take from the counters furthest over their share, then the fullest, and
/// stop at 0.
fn rewrite(values: &[i64; SHARDS], shares: &[i64; SHARDS], delta: i64, start: usize) -> Rewrite {
    let room = |n: usize| shares[n].saturating_sub(values[n]);
    if delta < 0 {
        let mut order: Vec<usize> = (0..SHARDS).collect();
        order.sort_by_key(|&n| Reverse((values[n].saturating_sub(shares[n]), values[n])));
        let mut left = -delta;
        let mut out = Vec::new();
        for n in order {
            let take = values[n].min(left);
            if take > 0 {
                out.push((n, values[n] - take));
                left -= take;
            }
        }
        return Rewrite {
            values: out,
            full: false,
            release: true,
        };
    }
    let within = (0..SHARDS).all(|n| room(n) >= 0);
    let free = (0..SHARDS).fold(0_i64, |sum, n| sum.saturating_add(room(n).max(0)));
    if within && free >= delta {
        let mut left = delta;
        let mut out = Vec::new();
        for n in (0..SHARDS).map(|k| (start + k) % SHARDS) {
            let take = room(n).min(left);
            if take > 0 {
                out.push((n, values[n] + take));
                left -= take;
            }
        }
        return Rewrite {
            values: out,
            full: false,
            release: false,
        };
    }
    let total: i64 = values.iter().sum();
    Rewrite {
        values: spread(total + delta, shares)
            .into_iter()
            .enumerate()
            .collect(),
        full: true,
        release: false,
    }
}

/// Neutron's check before a create is planned: 409 `OverQuota` when the new objects of kind `def`
/// would take a project past its limit. (The check that counts is the one at commit; this one
/// answers as Neutron does, quota before the create's own checks, and spares the planning.)
pub async fn precheck(db: &Db, def: &ResourceDef, items: &[Obj]) -> ApiResult<()> {
    let Some(resource) = quotas::counting_objects_of(def) else {
        return Ok(());
    };
    let mut per_project: BTreeMap<&str, i64> = BTreeMap::new();
    for item in items {
        let project = str_field(item, "project_id");
        if !project.is_empty() {
            *per_project.entry(project).or_default() += 1;
        }
    }
    let store = db.store.as_ref();
    for (project, delta) in per_project {
        let limit = limit_of(store, &db.quotas, project, resource.name).await?;
        if limit >= 0 {
            let used = Counters::read(store, &escape(project), resource.name)
                .await?
                .total();
            if exceeds(limit, used, delta) {
                return Err(over_quota([resource.name]));
            }
        }
    }
    Ok(())
}

/// Makes the counters agree with the objects, writing only where they disagree (on a consistent
/// store: nothing). The server runs it at start-up, before it serves: a store written before quotas
/// existed gets its counters then. Reads every counter, then every object of the counted kinds; each
/// fix rewrites all counters of its project and resource on condition that none changed since they
/// were read (a create or delete committed in between changes one), and a fix that loses such a
/// race is planned again from fresh reads.
pub async fn recount(store: &dyn Store, defaults: &Defaults) -> ApiResult<()> {
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        let (kvs, _) = store.range(USAGE_PREFIX).await?;
        // (escaped project, resource) → counters.
        let mut counted: BTreeMap<(String, String), Counters> = BTreeMap::new();
        let mut by_project: BTreeMap<String, Vec<KeyValue>> = BTreeMap::new();
        for kv in kvs {
            if let Some((escaped, _)) = kv.key[USAGE_PREFIX.len()..].split_once('/') {
                by_project.entry(escaped.to_string()).or_default().push(kv);
            }
        }
        for (escaped, kvs) in by_project {
            for (resource, counters) in Counters::collect(&project_prefix(&escaped), &kvs) {
                counted.insert((escaped.clone(), resource), counters);
            }
        }
        // (escaped project, resource) → (project, objects).
        let mut held: BTreeMap<(String, String), (String, i64)> = BTreeMap::new();
        for resource in quotas::ALL {
            let Some(def) = resource.counts else {
                continue;
            };
            let (objects, _) = store.range(&format!("/r/{}/", def.collection)).await?;
            for kv in objects {
                let obj = decode(&kv.value)?;
                let project = str_field(&obj, "project_id");
                if !project.is_empty() {
                    let key = (escape(project), resource.name.to_string());
                    held.entry(key)
                        .or_insert_with(|| (project.to_string(), 0))
                        .1 += 1;
                }
            }
        }
        let mut fixes = Vec::new();
        let keys: BTreeSet<&(String, String)> = counted.keys().chain(held.keys()).collect();
        for key in keys {
            let counters = counted.get(key).cloned().unwrap_or_default();
            let (project, objects) = held.get(key).cloned().unwrap_or_default();
            if counters.total() == objects {
                continue;
            }
            let (escaped, resource) = key;
            let mut fix = Txn::new();
            for (n, rev) in counters.revs.iter().enumerate() {
                let key = counter_key(escaped, resource, n);
                fix.compares
                    .push(store::Compare::ModRevision(key.clone(), *rev));
                if objects > 0 {
                    continue;
                }
                if *rev != 0 {
                    fix.ops.push(store::Op::Delete(key));
                }
            }
            if objects > 0 {
                let limit = limit_of(store, defaults, &project, resource).await?;
                for (n, value) in spread(objects, &shares(limit)).into_iter().enumerate() {
                    let key = counter_key(escaped, resource, n);
                    fix.ops
                        .push(store::Op::Put(key, value.to_string().into_bytes()));
                }
            }
            fixes.push(fix);
        }
        if fixes.is_empty() {
            return Ok(());
        }
        tracing::info!("recounting the quota usage of {} resources", fixes.len());
        let mut all_applied = true;
        let mut batch = Txn::new();
        let mut fixes = fixes.into_iter().peekable();
        while let Some(fix) = fixes.next() {
            batch.compares.extend(fix.compares);
            batch.ops.extend(fix.ops);
            let full = fixes
                .peek()
                .is_none_or(|next| batch.compares.len() + next.compares.len() > STEP_BUDGET);
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
    use model::quotas::UNLIMITED;

    use super::*;

    /// Whatever the counters hold and whatever changes, a rewrite keeps the sum exact; increments
    /// that fit touch only counters with room and keep each within its share, and any change that
    /// leaves a counter over its share rewrites every counter.
    #[test]
    fn rewrites_keep_the_sum_and_the_shares() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let limit = match rng.u8(..4) {
                0 => UNLIMITED,
                _ => rng.i64(0..40),
            };
            let shares = shares(limit);
            let mut values = [0; SHARDS];
            for v in &mut values {
                *v = rng.i64(0..8);
            }
            let delta = rng.i64(-12..12);
            if delta == 0 {
                continue;
            }
            let change = rewrite(&values, &shares, delta, rng.usize(..SHARDS));
            let mut after = values;
            for &(n, v) in &change.values {
                assert!(v >= 0);
                after[n] = v;
            }
            let before: i64 = values.iter().sum();
            let sum: i64 = after.iter().sum();
            assert_eq!(
                sum,
                (before + delta).max(0),
                "{values:?} {delta}: {change:?}"
            );
            if delta < 0 {
                assert!(!change.full);
                continue;
            }
            if (0..SHARDS).any(|n| after[n] > shares[n]) {
                assert!(
                    change.full,
                    "{values:?} + {delta}, shares {shares:?}: {change:?}"
                );
            }
            if change.full && limit >= 0 && sum <= limit {
                assert!((0..SHARDS).all(|n| after[n] <= shares[n]), "{after:?}");
            }
            if !change.full {
                assert!(change.values.iter().all(|&(n, v)| v > values[n]));
            }
        }
    }

    #[test]
    fn shares_split_a_limit_evenly() {
        assert_eq!(shares(10), [2, 2, 1, 1, 1, 1, 1, 1]);
        assert_eq!(shares(0), [0; SHARDS]);
        assert_eq!(shares(UNLIMITED), [i64::MAX; SHARDS]);
        assert_eq!(spread(12, &shares(10)), [4, 2, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn increments_with_room_touch_one_counter() {
        let change = rewrite(&[0; SHARDS], &shares(500), 1, 3);
        assert_eq!(change.values, vec![(3, 1)]);
        assert!(!change.full);
        let change = rewrite(&[3, 0, 0, 0, 0, 0, 0, 0], &shares(UNLIMITED), 2, 0);
        assert_eq!(change.values, vec![(0, 5)]);
    }
}
