//! The stream of local VIF events, derived from an OVSDB monitor of the `Interface` table.
//!
//! An interface is a VIF once it has `external_ids:iface-id` and vswitchd has given it a
//! valid OpenFlow port number. Its MAC is `external_ids:attached-mac` if set, else
//! `mac_in_use`. Because the monitor is a [`Replica`], reconnects to OVSDB produce exactly
//! the VIF changes that happened meanwhile.
//!
//! `admin_state`, `link_state` and `mac_in_use` are ephemeral: a restarted `ovsdb-server`
//! has them empty until vswitchd writes them again. An empty value therefore means
//! "unknown" and keeps the last reported one, so a database restart causes no flapping.

use std::collections::{BTreeMap, VecDeque};

use ovsdb::tables::{Interface, Table};
use ovsdb::{
    Endpoint, MonitorRequest, Replica, ReplicaEvent, ReplicaOptions, ReplicaSpec, Row, RowChange,
    Uuid,
};

/// A local VIF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    /// `Interface` row.
    pub uuid: Uuid,
    /// Logical port (`external_ids:iface-id`).
    pub iface_id: String,
    /// Interface name.
    pub name: String,
    /// OpenFlow port number.
    pub ofport: u32,
    /// MAC address, if known.
    pub mac: Option<String>,
    /// Administrative state is up.
    pub admin_up: bool,
    /// Link is up.
    pub link_up: bool,
}

impl Vif {
    /// The VIF an `Interface` row describes, if it is one; unknown (empty) ephemeral
    /// columns keep their values from `prev`.
    fn observe(uuid: Uuid, row: &Row, prev: Option<&Vif>) -> Option<Vif> {
        let i = match Interface::from_row(uuid, row) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("ignoring malformed Interface row {uuid}: {e}");
                return None;
            }
        };
        let iface_id = i.external_ids.get("iface-id")?.clone();
        let ofport = u32::try_from(i.ofport?)
            .ok()
            .filter(|p| (1..0xff00).contains(p))?;
        let prev = prev.filter(|p| p.iface_id == iface_id);
        let up = |state: Option<String>, old: Option<bool>| match state {
            Some(s) => s == "up",
            None => old.unwrap_or(false),
        };
        Some(Vif {
            uuid,
            ofport,
            mac: i
                .external_ids
                .get("attached-mac")
                .cloned()
                .or(i.mac_in_use)
                .or_else(|| prev.and_then(|p| p.mac.clone())),
            admin_up: up(i.admin_state, prev.map(|p| p.admin_up)),
            link_up: up(i.link_state, prev.map(|p| p.link_up)),
            name: i.name,
            iface_id,
        })
    }
}

/// A change of a local VIF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VifEvent {
    /// A VIF appeared (or got its ofport).
    Added(Vif),
    /// Its ofport, MAC, name, admin or link state changed.
    Changed {
        /// Before.
        old: Vif,
        /// After.
        new: Vif,
    },
    /// The VIF is gone (port removed, iface-id removed or changed, ofport lost).
    Removed(Vif),
    /// The events so far describe every VIF as the database has them (after each (re)connection):
    /// a consumer may now act on the complete set.
    Synced,
}

/// The VIFs reported so far; turns row changes into VIF events.
#[derive(Debug, Default)]
struct VifTable {
    known: BTreeMap<Uuid, Vif>,
}

impl VifTable {
    fn apply(&mut self, c: &RowChange) -> Vec<VifEvent> {
        let old = self.known.get(&c.uuid).cloned();
        let new = c
            .new
            .as_ref()
            .and_then(|r| Vif::observe(c.uuid, r, old.as_ref()));
        match &new {
            Some(v) => self.known.insert(c.uuid, v.clone()),
            None => self.known.remove(&c.uuid),
        };
        match (old, new) {
            (None, None) => vec![],
            (None, Some(n)) => vec![VifEvent::Added(n)],
            (Some(o), None) => vec![VifEvent::Removed(o)],
            (Some(o), Some(n)) if o.iface_id != n.iface_id => {
                vec![VifEvent::Removed(o), VifEvent::Added(n)]
            }
            (Some(o), Some(n)) if o != n => vec![VifEvent::Changed { old: o, new: n }],
            _ => vec![],
        }
    }
}

/// Watches the local VIFs. Dropping it stops the monitor.
#[derive(Debug)]
pub struct VifWatcher {
    replica: Replica,
    table: VifTable,
    queue: VecDeque<VifEvent>,
}

impl VifWatcher {
    /// Starts watching the OVSDB server at `endpoint`.
    pub fn spawn(endpoint: Endpoint, opts: ReplicaOptions) -> VifWatcher {
        let columns = [
            "name",
            "ofport",
            "mac_in_use",
            "admin_state",
            "link_state",
            "external_ids",
        ];
        let mut tables = BTreeMap::new();
        tables.insert(
            Interface::NAME.to_owned(),
            MonitorRequest::columns(&columns),
        );
        let spec = ReplicaSpec {
            db: "Open_vSwitch".into(),
            tables,
        };
        VifWatcher {
            replica: Replica::spawn(endpoint, spec, opts),
            table: VifTable::default(),
            queue: VecDeque::new(),
        }
    }

    /// The next VIF event. Returns `None` only if the monitor stopped.
    pub async fn next(&mut self) -> Option<VifEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            match self.replica.next().await? {
                ReplicaEvent::Changes(changes) => {
                    for c in &changes {
                        let evs = self.table.apply(c);
                        self.queue.extend(evs);
                    }
                }
                ReplicaEvent::Connected { kind, resumed } => {
                    tracing::debug!(?kind, resumed, "VIF monitor connected");
                    // The replica's cache already holds the server's state: report it now, then
                    // say the set is complete. The `Changes` that follow find nothing new.
                    let cache = self.replica.snapshot();
                    let rows: BTreeMap<Uuid, Row> = cache
                        .table(Interface::NAME)
                        .map(|(u, r)| (*u, r.clone()))
                        .collect();
                    let gone: Vec<Uuid> = self
                        .table
                        .known
                        .keys()
                        .filter(|u| !rows.contains_key(u))
                        .copied()
                        .collect();
                    let changes = rows
                        .into_iter()
                        .map(|(uuid, row)| (uuid, Some(row)))
                        .chain(gone.into_iter().map(|uuid| (uuid, None)));
                    for (uuid, new) in changes {
                        let change = RowChange {
                            table: Interface::NAME.to_owned(),
                            uuid,
                            old: None,
                            new,
                        };
                        let evs = self.table.apply(&change);
                        self.queue.extend(evs);
                    }
                    self.queue.push_back(VifEvent::Synced);
                }
                ReplicaEvent::Disconnected(why) => {
                    tracing::info!("VIF monitor lost OVSDB: {why}");
                }
            }
        }
    }

    /// The VIFs reported so far, by iface-id.
    pub fn vifs(&self) -> BTreeMap<String, Vif> {
        self.table
            .known
            .values()
            .map(|v| (v.iface_id.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovsdb::Value;

    fn row(iface_id: Option<&str>, ofport: i64, link: &str) -> Row {
        let mut ids = vec![("attached-mac", "02:00:00:00:00:01")];
        if let Some(i) = iface_id {
            ids.push(("iface-id", i));
        }
        Row::new()
            .with("name", Value::atom("tap1"))
            .with("ofport", Value::atom(ofport))
            .with("link_state", Value::atom(link))
            .with("admin_state", Value::atom("up"))
            .with("external_ids", Value::map(ids))
    }

    fn change(new: Option<Row>) -> RowChange {
        RowChange {
            table: "Interface".into(),
            uuid: Uuid::nil(),
            old: None,
            new,
        }
    }

    #[test]
    fn row_changes_become_vif_events() {
        let mut t = VifTable::default();
        let up = row(Some("p1"), 5, "up");
        let ev = t.apply(&change(Some(up.clone())));
        assert!(
            matches!(&ev[..], [VifEvent::Added(v)] if v.ofport == 5 && v.link_up && v.mac.as_deref() == Some("02:00:00:00:00:01"))
        );
        let down = row(Some("p1"), 5, "down");
        assert!(
            matches!(&t.apply(&change(Some(down)))[..], [VifEvent::Changed { new, .. }] if !new.link_up)
        );
        // Ephemeral columns emptied (ovsdb-server restart): no event, state kept.
        let mut unknown = row(Some("p1"), 5, "x");
        unknown.set("link_state", Value::empty());
        unknown.set("admin_state", Value::empty());
        assert!(t.apply(&change(Some(unknown))).is_empty());
        assert!(!t.known[&Uuid::nil()].link_up && t.known[&Uuid::nil()].admin_up);
        let moved = t.apply(&change(Some(row(Some("p2"), 5, "down"))));
        assert!(
            matches!(&moved[..], [VifEvent::Removed(_), VifEvent::Added(v)] if v.iface_id == "p2")
        );
        assert!(
            matches!(
                &t.apply(&change(Some(row(None, 5, "up"))))[..],
                [VifEvent::Removed(_)]
            ),
            "iface-id gone"
        );
        assert!(
            t.apply(&change(Some(row(Some("p1"), -1, "up")))).is_empty(),
            "no ofport"
        );
        let bad = Row::new()
            .with("ofport", Value::atom("x"))
            .with("external_ids", Value::map([("iface-id", "p")]));
        assert!(t.apply(&change(Some(bad))).is_empty());
        t.apply(&change(Some(up)));
        assert!(matches!(
            &t.apply(&change(None))[..],
            [VifEvent::Removed(_)]
        ));
        assert!(t.known.is_empty());
    }
}
