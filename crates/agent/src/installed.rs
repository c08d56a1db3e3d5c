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

use std::collections::BTreeMap;
use std::time::Duration;

use ovsdb::{
    Atom, Client, ClientOptions, Condition, Endpoint, MonitorRequest, Mutation, Operation, Replica,
    ReplicaEvent, ReplicaOptions, ReplicaSpec, Uuid, Value,
};
use tokio::sync::watch;

use crate::Agent;
use crate::switch::Switch;

/// The `external_ids` key.
pub const KEY: &str = "wyvern-installed";
/// How long before a failed transaction is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The rows that should carry the key, by row, with the `iface-id` each was installed for;
/// `None` until the agent's first resync (nothing is written before).
pub type Wanted = Option<BTreeMap<Uuid, String>>;

/// Which local VIFs are installed, and which wait for a bundle's acknowledgement.
pub struct Installed {
    /// VIFs whose flows are complete, with their row and the bundle (its sequence number)
    /// that must be acknowledged before they count as installed.
    pending: BTreeMap<String, (Uuid, u64)>,
    /// VIFs whose flows are in the switch, with their row.
    installed: BTreeMap<String, Uuid>,
    /// What the served and complete VIFs were last computed from (see [`Installed::update`]).
    stamp: Option<Stamp>,
    /// `installed` changed since it was last published.
    unpublished: bool,
    wanted: watch::Sender<Wanted>,
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
    /// Starts the task that keeps the rows' keys as wanted ([`keep_marked`]).
    pub fn start(endpoint: Endpoint) -> Installed {
        let (wanted, rx) = watch::channel(None);
        tokio::spawn(keep_marked(endpoint, rx));
        Installed {
            pending: BTreeMap::new(),
            installed: BTreeMap::new(),
            stamp: None,
            unpublished: true,
            wanted,
        }
    }

    /// Brings the installed set up to date after the loop sent its bundle: VIFs whose flows
    /// became complete wait for the bundle sent last (it carried the change, or came after the
    /// one that did), those whose bundle was acknowledged are installed, those no longer
    /// complete are not. Publishes the rows to mark once the switch was synchronised once.
    ///
    /// The local VIFs are looked at only when something that decides serving or completeness
    /// changed; otherwise only pending VIFs move. The rows are published only when the
    /// installed set changed.
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
                self.installed.insert(iface, row);
                self.unpublished = true;
            }
        }
        if sw.resyncs_done == 0 || !self.unpublished {
            return;
        }
        self.unpublished = false;
        let want: BTreeMap<Uuid, String> = self
            .installed
            .iter()
            .map(|(i, row)| (*row, i.clone()))
            .collect();
        self.wanted.send_if_modified(|held| {
            if held.as_ref() == Some(&want) {
                return false;
            }
            *held = Some(want);
            true
        });
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
        let before = self.installed.len();
        self.installed
            .retain(|i, row| served.get(i.as_str()) == Some(row));
        self.unpublished |= self.installed.len() != before;
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
    want: &BTreeMap<Uuid, String>,
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

/// Keeps the key on exactly the rows `wanted` names, from its first value on: follows the
/// `Interface` rows' `external_ids` and writes, in one transaction, whatever differs.
async fn keep_marked(endpoint: Endpoint, mut wanted: watch::Receiver<Wanted>) {
    let mut tables = BTreeMap::new();
    tables.insert(
        "Interface".to_owned(),
        MonitorRequest::columns(&["external_ids"]),
    );
    let spec = ReplicaSpec {
        db: "Open_vSwitch".into(),
        tables,
    };
    let mut replica = Replica::spawn(endpoint.clone(), spec, ReplicaOptions::default());
    let mut client: Option<Client> = None;
    // The replica holds the database's rows (after its first snapshot, until a disconnection).
    let mut current = false;
    let mut failed = false;
    loop {
        tokio::select! {
            event = replica.next() => match event {
                None => return,
                // The snapshot's rows come with the next event.
                Some(ReplicaEvent::Connected { .. }) => {}
                Some(ReplicaEvent::Changes(_)) => current = true,
                Some(ReplicaEvent::Disconnected(_)) => current = false,
            },
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(RETRY), if failed => {}
        }
        failed = false;
        if !current {
            continue;
        }
        let ops = {
            let want = wanted.borrow_and_update();
            let Some(want) = want.as_ref() else { continue };
            replica.read(|cache| {
                marking(
                    cache
                        .table("Interface")
                        .map(|(u, row)| (u, row.get("external_ids"))),
                    want,
                )
            })
        };
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
        let want = BTreeMap::from([(a, "p1".into()), (b, "p2".into()), (d, "p4".into())]);
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
}
