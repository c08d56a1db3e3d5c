//! `external_ids:wyvern-installed=true` on the `Interface` row of each local VIF whose flows are
//! in the switch — what OVN's `ovn-installed` is to ovn-controller: a CNI plugin (or anything
//! else plugging a VIF) waits for it before it reports the interface ready, so that a pod's
//! first packets do not meet a switch that has no flows for it yet.
//!
//! **When it is set.** A VIF's flows are *complete* once the pipeline has everything it computes
//! for the port: the port is in the topology and bound to this VIF's OpenFlow port, its network
//! is in the topology, with port security each of its security groups is too, and no change of
//! the followed topics is awaiting its answer (routers behind the network and remote groups come
//! that way). The delta that made them complete goes out in some bundle; once the switch has
//! acknowledged that bundle (or a later one: bundles are applied in order), or a resync has sent
//! the whole pipeline, the VIF is *installed* and the key is written: one OVSDB transaction for
//! every row that needs it at that moment, none for a row that has it already.
//!
//! **Cost.** The work grows with the change, not with the chassis' VIFs: the loop sends the
//! writer what changed in the installed set ([`Mark`]), and the writer looks only at the rows
//! that changed, in the database or in what it wants (every row after a (re)connection, the
//! first wanted set, or a failed write).
//!
//! **When it is removed.** When the row stops being served: the VIF leaves (`iface-id` removed
//! or changed to another port, interface deleted, OpenFlow port lost), or its port or the
//! port's network leaves the topology (deleted in the API). Completeness is asked only of VIFs
//! still to be marked: a change of topics for another VIF's sake never takes a key away. An
//! `iface-id` changed to
//! another port removes the key until the new port's flows are installed. An administratively
//! down port keeps it: the key says the agent's flows for the port are in the switch (for such
//! a port, the ones that drop its traffic), not that the port forwards.
//!
//! **Restarts.** Nothing is written before the agent's first resync with the switch, which comes
//! only after the complete local VIF set and topology are known (see the crate doc): then every
//! VIF served before the restart is installed at once, so its key stays as it was — no flap —
//! and keys on rows that are no longer served (port deleted while the agent was down) go. While
//! the switch is disconnected, keys stay (the switch keeps its flows); VIFs that appear
//! meanwhile wait for the resync after the reconnection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chassis::RowsEvent;
use ovsdb::{
    Atom, Client, ClientOptions, Condition, Endpoint, Mutation, Operation, ReplicaReader, Uuid,
    Value,
};
use tokio::sync::mpsc;

use crate::Agent;
use crate::switch::Switch;

/// The `external_ids` key.
pub const KEY: &str = "wyvern-installed";
/// How long before a failed transaction is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The `Interface` rows as the VIF watcher shares them, and their events.
pub type SharedRows = (ReplicaReader, mpsc::UnboundedReceiver<RowsEvent>);

/// What changed in the rows that should carry the key (with the `iface-id` each was installed
/// for), as the loop tells the writer: nothing before the agent's first resync, then the whole
/// set once, then each change.
#[derive(Debug)]
enum Mark {
    /// The rows to mark, all of them; the rest are to be unmarked.
    All(HashMap<Uuid, String>),
    /// This row is to carry the key for this `iface-id`.
    Set(Uuid, String),
    /// This row is not to carry the key for this `iface-id` (any more): a row since wanted for
    /// another `iface-id` stays wanted.
    Clear(Uuid, String),
}

/// Which local VIFs are installed, and which wait for a bundle's acknowledgement.
pub struct Installed {
    /// VIFs whose flows are complete, with their row and the bundle (its sequence number)
    /// that must be acknowledged before they count as installed.
    pending: BTreeMap<String, (Uuid, u64)>,
    /// VIFs whose flows are in the switch, with their row.
    installed: BTreeMap<String, Uuid>,
    /// What the served and complete VIFs were last computed from (see [`Installed::update`]).
    stamp: Option<Stamp>,
    /// The writer has been given the installed set (after the first resync); from then on it
    /// is told every change.
    published: bool,
    writer: mpsc::UnboundedSender<Mark>,
}

/// Whatever, changed, may change which VIFs are served or complete.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    revision: u64,
    vifs: u64,
    awaiting_topics: bool,
    in_sync: bool,
    resyncs: u64,
}

impl Installed {
    /// Starts the task that keeps the rows' keys as wanted ([`keep_marked`]), reading the rows
    /// the VIF watcher shares ([`chassis::VifWatcher::share_rows`]) and writing through
    /// `endpoint`.
    pub fn start(endpoint: Endpoint, rows: SharedRows) -> Installed {
        let (writer, rx) = mpsc::unbounded_channel();
        tokio::spawn(keep_marked(endpoint, rows, rx));
        Installed {
            pending: BTreeMap::new(),
            installed: BTreeMap::new(),
            stamp: None,
            published: false,
            writer,
        }
    }

    /// Tells the writer, once it has the installed set, that `row` is (or is no longer) to be
    /// marked for `iface`.
    fn tell(&self, mark: Mark) {
        if self.published {
            // The writer ends only with the runtime.
            let _ = self.writer.send(mark);
        }
    }

    /// Brings the installed set up to date after the loop sent its bundle: VIFs whose flows
    /// became complete wait for the bundle sent last (it carried the change, or came after the
    /// one that did), those whose bundle was acknowledged are installed, those no longer
    /// complete are not. Gives the writer the rows to mark once the switch was synchronised
    /// once, then each change.
    ///
    /// The local VIFs are looked at only when something that decides serving or completeness
    /// changed; otherwise only pending VIFs move.
    pub fn update(&mut self, agent: &Agent, sw: &Switch) {
        let stamp = Stamp {
            revision: agent.revision,
            vifs: agent.vif_changes,
            awaiting_topics: agent.awaiting_topics,
            in_sync: sw.in_sync,
            resyncs: sw.resyncs_done,
        };
        if self.stamp.as_ref() != Some(&stamp) {
            self.stamp = Some(stamp);
            self.serve(agent, sw);
        }
        // Pending VIFs are few (those whose bundle is on its way): looked at every time.
        let acked = sw.acked_bundles;
        let done: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (_, seq))| *seq <= acked)
            .map(|(i, _)| i.clone())
            .collect();
        for iface in done {
            if let Some((row, _)) = self.pending.remove(&iface) {
                self.tell(Mark::Set(row, iface.clone()));
                self.installed.insert(iface, row);
            }
        }
        if sw.resyncs_done > 0 && !self.published {
            self.published = true;
            let all = self
                .installed
                .iter()
                .map(|(i, row)| (*row, i.clone()))
                .collect();
            let _ = self.writer.send(Mark::All(all));
        }
    }

    /// Drops the VIFs no longer served and makes those whose flows became complete wait for
    /// the bundle sent last.
    fn serve(&mut self, agent: &Agent, sw: &Switch) {
        // Served VIFs, with their rows (a VIF that moved to another row starts again). Only
        // serving decides whether a VIF stays installed: a change of topics elsewhere (another
        // VIF's network followed) must not take keys away.
        let mut served = BTreeMap::new();
        for (iface, (ofport, _)) in &agent.vifs {
            if let Some(row) = agent.vif_rows.get(iface)
                && agent.served(iface, *ofport)
            {
                served.insert(iface.as_str(), *row);
            }
        }
        let gone: Vec<(String, Uuid)> = self
            .installed
            .iter()
            .filter(|(i, row)| served.get(i.as_str()) != Some(*row))
            .map(|(i, row)| (i.clone(), *row))
            .collect();
        for (iface, row) in gone {
            self.installed.remove(&iface);
            self.tell(Mark::Clear(row, iface));
        }
        self.pending
            .retain(|i, (row, _)| served.get(i.as_str()) == Some(row));
        if sw.in_sync {
            // Out of sync nothing is sent: the resync after the reconnection is what counts.
            for (iface, row) in served {
                if !self.installed.contains_key(iface)
                    && !self.pending.contains_key(iface)
                    && agent.flows_complete(iface)
                {
                    self.pending
                        .insert(iface.to_owned(), (row, sw.sent_bundles));
                }
            }
        }
    }
}

/// The operations that make the `Interface` rows `rows` (uuid, `external_ids`) carry the key
/// exactly where `want` says.
fn marking<'a>(
    rows: impl Iterator<Item = (&'a Uuid, Option<&'a Value>)>,
    want: &HashMap<Uuid, String>,
) -> Vec<Operation> {
    let key = Atom::from(KEY);
    let mut ops = Vec::new();
    for (uuid, ids) in rows {
        let get = |k: &Atom| ids.and_then(|ids| ids.map_get(k)).and_then(Atom::as_str);
        let marked = get(&key);
        let iface = get(&Atom::from("iface-id"));
        let should = iface.is_some() && want.get(uuid).map(String::as_str) == iface;
        if should && marked != Some("true") {
            let iface = iface.unwrap_or_default();
            ops.push(Operation::Mutate {
                table: "Interface".into(),
                // Only while the row is still this port's VIF.
                conditions: vec![
                    Condition::uuid(*uuid),
                    Condition::includes("external_ids", Value::map([("iface-id", iface)])),
                ],
                mutations: vec![
                    Mutation::delete("external_ids", Value::set([KEY])),
                    Mutation::insert("external_ids", Value::map([(KEY, "true")])),
                ],
            });
        } else if !should && marked.is_some() {
            ops.push(Operation::Mutate {
                table: "Interface".into(),
                conditions: vec![Condition::uuid(*uuid)],
                mutations: vec![Mutation::delete("external_ids", Value::set([KEY]))],
            });
        }
    }
    ops
}

/// What the writer wants and which rows it must look at again.
#[derive(Debug, Default)]
struct Writer {
    /// The rows to mark, with their `iface-id`; `None` until the loop's first set.
    want: Option<HashMap<Uuid, String>>,
    /// Rows that changed (in the database or in `want`) since they were last looked at.
    dirty: BTreeSet<Uuid>,
    /// Every row is to be looked at (a (re)connection, the first set, a failed write).
    all_dirty: bool,
}

impl Writer {
    fn take(&mut self, mark: Mark) {
        match mark {
            Mark::All(all) => {
                self.want = Some(all);
                self.all_dirty = true;
            }
            Mark::Set(row, iface) => {
                self.want.get_or_insert_default().insert(row, iface);
                self.dirty.insert(row);
            }
            Mark::Clear(row, iface) => {
                let want = self.want.get_or_insert_default();
                if want.get(&row) == Some(&iface) {
                    want.remove(&row);
                }
                self.dirty.insert(row);
            }
        }
    }

    /// The rows to look at now, which are then no longer dirty: none before the first wanted
    /// set.
    fn look(&mut self) -> Option<Look> {
        self.want.as_ref()?;
        if std::mem::take(&mut self.all_dirty) {
            self.dirty.clear();
            Some(Look::All)
        } else {
            Some(Look::Rows(std::mem::take(&mut self.dirty)))
        }
    }

    /// The operations that bring the rows to look at in `cache` to what is wanted.
    fn operations(&mut self, cache: &ovsdb::Cache) -> Vec<Operation> {
        let Some(look) = self.look() else {
            return Vec::new();
        };
        let Some(want) = &self.want else {
            return Vec::new();
        };
        match look {
            Look::All => marking(
                cache
                    .table("Interface")
                    .map(|(u, row)| (u, row.get("external_ids"))),
                want,
            ),
            Look::Rows(rows) => marking(
                rows.iter().filter_map(|u| {
                    let row = cache.row("Interface", u)?;
                    Some((u, row.get("external_ids")))
                }),
                want,
            ),
        }
    }
}

/// The rows a look covers.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    All,
    Rows(BTreeSet<Uuid>),
}

/// Keeps the key on exactly the rows the loop wants marked, from its first set on: reads the
/// `Interface` rows' `external_ids` where the VIF watcher reads them (`rows`, their changes
/// coming as `events`; a monitor of its own would hold a second copy of every row) and writes,
/// in one transaction, whatever differs among the rows that changed.
async fn keep_marked(
    endpoint: Endpoint,
    (rows, mut events): SharedRows,
    mut marks: mpsc::UnboundedReceiver<Mark>,
) {
    let mut client: Option<Client> = None;
    // The rows are the database's (after a connection, until a disconnection).
    let mut current = false;
    let mut failed = false;
    let mut writer = Writer::default();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => return,
                Some(RowsEvent::Connected) => {
                    current = true;
                    writer.all_dirty = true;
                }
                Some(RowsEvent::Changed(changed)) => writer.dirty.extend(changed),
                Some(RowsEvent::Disconnected) => current = false,
            },
            mark = marks.recv() => match mark {
                None => return,
                Some(mark) => {
                    writer.take(mark);
                    // Whatever else the loop said meanwhile goes into the same look.
                    while let Ok(mark) = marks.try_recv() {
                        writer.take(mark);
                    }
                }
            },
            () = tokio::time::sleep(RETRY), if failed => {}
        }
        failed = false;
        if !current {
            continue;
        }
        let ops = rows.read(|cache| writer.operations(cache));
        if ops.is_empty() {
            continue;
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = Client::connect(&endpoint, ClientOptions::default())
                .await
                .ok();
        }
        let Some(c) = &client else {
            failed = true;
            writer.all_dirty = true;
            continue;
        };
        match c.transact("Open_vSwitch", &ops).await {
            Ok(_) => tracing::debug!(rows = ops.len(), "{KEY} updated"),
            Err(e) => {
                tracing::warn!("updating {KEY}: {e}");
                if c.is_closed() {
                    client = None;
                }
                failed = true;
                writer.all_dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pairs: &[(&str, &str)]) -> Value {
        Value::map(pairs.iter().copied())
    }

    #[test]
    fn only_rows_that_differ_are_written() {
        let (a, b, c, d) = (
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            Uuid::from_u128(4),
        );
        let rows = [
            // Installed, marked: nothing to do.
            (a, ids(&[("iface-id", "p1"), (KEY, "true")])),
            // Installed, not marked yet.
            (b, ids(&[("iface-id", "p2")])),
            // Marked, not served any more.
            (c, ids(&[("iface-id", "p3"), (KEY, "true")])),
            // Its iface-id changed to a port not installed: the key goes.
            (d, ids(&[("iface-id", "p9"), (KEY, "true")])),
        ];
        let want = HashMap::from([(a, "p1".into()), (b, "p2".into()), (d, "p4".into())]);
        let ops = marking(rows.iter().map(|(u, v)| (u, Some(v))), &want);
        let targets: Vec<(Uuid, usize)> = ops
            .iter()
            .map(|op| match op {
                Operation::Mutate {
                    conditions,
                    mutations,
                    ..
                } => (
                    conditions[0].value.as_atom().unwrap().as_uuid().unwrap(),
                    mutations.len(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(targets, [(b, 2), (c, 1), (d, 1)]);
    }

    #[test]
    fn the_writer_looks_only_at_rows_that_changed() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut w = Writer::default();
        // Nothing before the loop's first set, whatever changed in the database.
        w.dirty.insert(a);
        w.all_dirty = true;
        assert_eq!(w.look(), None);
        w.take(Mark::All(HashMap::from([(a, "p1".into())])));
        assert_eq!(w.look(), Some(Look::All));
        // Then only what changed since: in what is wanted, and rows the database changed.
        assert_eq!(w.look(), Some(Look::Rows(BTreeSet::new())));
        w.take(Mark::Set(b, "p2".into()));
        w.take(Mark::Clear(a, "p1".into()));
        w.dirty.insert(c);
        assert_eq!(w.look(), Some(Look::Rows(BTreeSet::from([a, b, c]))));
        assert_eq!(w.want, Some(HashMap::from([(b, "p2".into())])));
        // A row wanted for another iface-id since is not cleared for the old one.
        w.take(Mark::Set(c, "p4".into()));
        w.take(Mark::Clear(c, "p3".into()));
        assert_eq!(
            w.want.as_ref().and_then(|m| m.get(&c)),
            Some(&"p4".to_owned())
        );
        assert_eq!(w.look(), Some(Look::Rows(BTreeSet::from([c]))));
        // A (re)connection or a failed write: every row again.
        w.all_dirty = true;
        w.dirty.insert(a);
        assert_eq!(w.look(), Some(Look::All));
        assert_eq!(w.look(), Some(Look::Rows(BTreeSet::new())));
    }
}
