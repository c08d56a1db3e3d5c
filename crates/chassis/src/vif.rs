//! The stream of local VIF events, derived from an OVSDB monitor of the `Interface` table and,
//! when the owner has an OpenFlow connection to the bridge, from its port announcements.
//!
//! An interface is a VIF once it has `external_ids:iface-id` and an OpenFlow port number. The
//! number comes from the switch's own `PORT_STATUS` announcements when the owner passes them on
//! ([`VifWatcher::port_announced`]), else from the `ofport` column. On a loaded userspace bridge
//! vswitchd announces a new port several milliseconds before it writes `ofport` back to the
//! database (it first finishes reconfiguring every other port), so the announcement is what
//! lets flows for a new VIF go in early. Its MAC is `external_ids:attached-mac` if set, else
//! `mac_in_use`. Because the monitor is a [`Replica`], reconnects to OVSDB produce exactly the
//! VIF changes that happened meanwhile.
//!
//! `admin_state`, `link_state` and `mac_in_use` are ephemeral: a restarted `ovsdb-server`
//! has them empty until vswitchd writes them again. An empty value therefore means
//! "unknown" and keeps the last reported one, so a database restart causes no flapping.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ovsdb::tables::{Interface, Table};
use ovsdb::{
    Endpoint, MonitorRequest, Replica, ReplicaEvent, ReplicaOptions, ReplicaReader, ReplicaSpec,
    Row, RowChange, Uuid,
};
use tokio::sync::mpsc;

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

/// An `Interface` row with an iface-id, as the database has it; its OpenFlow port may not be
/// known yet.
#[derive(Debug, Clone)]
struct Candidate {
    vif: Vif,
    /// The `ofport` column, if valid.
    db_ofport: Option<u32>,
}

/// A usable OpenFlow port number for a VIF (not `-1`, not a reserved port).
fn valid_ofport(p: i64) -> Option<u32> {
    u32::try_from(p).ok().filter(|p| (1..0xff00).contains(p))
}

impl Candidate {
    /// The candidate an `Interface` row describes, if it has an iface-id; unknown (empty)
    /// ephemeral columns keep their values from `prev`.
    fn observe(uuid: Uuid, row: &Row, prev: Option<&Candidate>) -> Option<Candidate> {
        let i = match Interface::from_row(uuid, row) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("ignoring malformed Interface row {uuid}: {e}");
                return None;
            }
        };
        let iface_id = i.external_ids.get("iface-id")?.clone();
        let prev = prev.map(|c| &c.vif).filter(|p| p.iface_id == iface_id);
        let up = |state: Option<String>, old: Option<bool>| match state {
            Some(s) => s == "up",
            None => old.unwrap_or(false),
        };
        Some(Candidate {
            db_ofport: i.ofport.and_then(valid_ofport),
            vif: Vif {
                uuid,
                ofport: 0,
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
            },
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

/// The VIFs reported so far; turns row changes and port announcements into VIF events.
#[derive(Debug, Default)]
struct VifTable {
    /// Interface rows with an iface-id.
    candidates: BTreeMap<Uuid, Candidate>,
    /// The candidates by the name the switch announces them under.
    by_name: BTreeMap<String, BTreeSet<Uuid>>,
    /// The switch's ports by name, as its OpenFlow announcements say: a complete view kept
    /// up to date by the owner, or `None` while it has none (the database decides then).
    announced: Option<BTreeMap<String, u32>>,
    /// The VIFs reported.
    known: BTreeMap<Uuid, Vif>,
}

/// The name OpenFlow gives a port: at most 15 bytes (the 16-byte field ends with a NUL).
fn openflow_name(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

impl VifTable {
    /// The VIF candidate `uuid` is now, if any.
    fn current(&self, uuid: &Uuid) -> Option<Vif> {
        let c = self.candidates.get(uuid)?;
        let ofport = match &self.announced {
            Some(ports) => ports.get(openflow_name(&c.vif.name)).copied(),
            None => c.db_ofport,
        }?;
        Some(Vif {
            ofport,
            ..c.vif.clone()
        })
    }

    /// Reports the difference between what was reported for `uuid` and what it is now.
    fn refresh(&mut self, uuid: Uuid) -> Vec<VifEvent> {
        let old = self.known.get(&uuid).cloned();
        let new = self.current(&uuid);
        match &new {
            Some(v) => self.known.insert(uuid, v.clone()),
            None => self.known.remove(&uuid),
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

    fn apply(&mut self, c: &RowChange) -> Vec<VifEvent> {
        let prev = self.candidates.get(&c.uuid);
        let new = c
            .new
            .as_ref()
            .and_then(|r| Candidate::observe(c.uuid, r, prev));
        if let Some(old) = self.candidates.remove(&c.uuid) {
            let name = openflow_name(&old.vif.name);
            if let Some(set) = self.by_name.get_mut(name) {
                set.remove(&c.uuid);
                if set.is_empty() {
                    self.by_name.remove(name);
                }
            }
        }
        if let Some(cand) = new {
            self.by_name
                .entry(openflow_name(&cand.vif.name).to_owned())
                .or_default()
                .insert(c.uuid);
            self.candidates.insert(c.uuid, cand);
        }
        self.refresh(c.uuid)
    }

    /// Replaces the switch's view (`None`: no view) and reports what that changes.
    fn set_view(&mut self, view: Option<BTreeMap<String, u32>>) -> Vec<VifEvent> {
        self.announced = view;
        let uuids: Vec<Uuid> = self.candidates.keys().copied().collect();
        uuids.into_iter().flat_map(|u| self.refresh(u)).collect()
    }

    /// One port of the switch's view changed (`None`: deleted); reports what that changes.
    /// Without a view there is nothing to change.
    fn set_port(&mut self, name: &str, ofport: Option<u32>) -> Vec<VifEvent> {
        let Some(ports) = &mut self.announced else {
            return vec![];
        };
        match ofport {
            Some(p) => ports.insert(name.to_owned(), p),
            None => ports.remove(name),
        };
        let uuids: Vec<Uuid> = self
            .by_name
            .get(name)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        uuids.into_iter().flat_map(|u| self.refresh(u)).collect()
    }
}

/// What happened to the `Interface` rows a [`VifWatcher`] reads, as another reader of the same
/// rows learns it ([`VifWatcher::share_rows`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowsEvent {
    /// The rows are the server's, after a (re)connection: look at all of them.
    Connected,
    /// These rows changed (inserted, modified or deleted).
    Changed(Vec<Uuid>),
    /// The connection broke: the rows are stale until the next [`RowsEvent::Connected`].
    Disconnected,
}

/// Watches the local VIFs. Dropping it stops the monitor.
#[derive(Debug)]
pub struct VifWatcher {
    replica: Replica,
    table: VifTable,
    queue: VecDeque<VifEvent>,
    /// Where the row events go for the other reader of the rows, if any.
    shared: Option<mpsc::UnboundedSender<RowsEvent>>,
    /// The replica's rows are the server's (connected, its snapshot taken in).
    current: bool,
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
            shared: None,
            current: false,
        }
    }

    /// Shares the rows this watcher reads (every `Interface` row; `name`, `ofport`,
    /// `external_ids` among their columns) with another reader, which then needs no monitor of
    /// its own: a reader of them, and their events as the watcher's [`next`](Self::next) takes
    /// them in (starting with [`RowsEvent::Connected`] when the rows are already the server's).
    /// A second call replaces the first reader's events.
    pub fn share_rows(&mut self) -> (ReplicaReader, mpsc::UnboundedReceiver<RowsEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared = Some(tx);
        if self.current {
            self.tell(RowsEvent::Connected);
        }
        (self.replica.reader(), rx)
    }

    fn tell(&mut self, event: RowsEvent) {
        if let Some(tx) = &self.shared
            && tx.send(event).is_err()
        {
            self.shared = None;
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
                    self.tell(RowsEvent::Changed(changes.iter().map(|c| c.uuid).collect()));
                }
                ReplicaEvent::Connected { kind, resumed } => {
                    tracing::debug!(?kind, resumed, "VIF monitor connected");
                    self.current = true;
                    self.tell(RowsEvent::Connected);
                    // The replica's cache already holds the server's state: report it now, then
                    // say the set is complete. The `Changes` that follow find nothing new.
                    let cache = self.replica.snapshot();
                    let rows: BTreeMap<Uuid, Row> = cache
                        .table(Interface::NAME)
                        .map(|(u, r)| (*u, r.clone()))
                        .collect();
                    let gone: Vec<Uuid> = self
                        .table
                        .candidates
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
                    self.current = false;
                    self.tell(RowsEvent::Disconnected);
                }
            }
        }
    }

    /// The switch's complete list of ports (after each OpenFlow (re)connection): from now on
    /// the switch's announcements, not the `ofport` column, give the VIFs' port numbers. The
    /// VIF events this causes come out of [`next`](Self::next).
    pub fn ports_listed(&mut self, ports: impl IntoIterator<Item = (String, u32)>) {
        let listed = ports
            .into_iter()
            .filter_map(|(name, no)| Some((name, valid_ofport(no.into())?)))
            .collect();
        let evs = self.table.set_view(Some(listed));
        self.queue.extend(evs);
    }

    /// The switch announced port `name` (`PORT_STATUS`): its number, or `None` when deleted.
    /// Ignored until [`ports_listed`](Self::ports_listed) gave the complete view.
    pub fn port_announced(&mut self, name: &str, ofport: Option<u32>) {
        let ofport = ofport.and_then(|p| valid_ofport(p.into()));
        let evs = self.table.set_port(name, ofport);
        self.queue.extend(evs);
    }

    /// The owner lost its OpenFlow view of the switch: the `ofport` column decides again.
    pub fn ports_unknown(&mut self) {
        let evs = self.table.set_view(None);
        self.queue.extend(evs);
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

    #[test]
    fn announced_ports_take_precedence_over_the_ofport_column() {
        let mut t = VifTable::default();
        // Not yet numbered in the database: no VIF.
        assert!(t.apply(&change(Some(row(Some("p1"), -1, "up")))).is_empty());
        // Announcements before the switch's complete view are ignored.
        assert!(t.set_port("tap1", Some(4)).is_empty());
        // The switch's view, once complete, numbers it.
        let ev = t.set_view(Some(BTreeMap::from([("tap1".to_owned(), 7)])));
        assert!(matches!(&ev[..], [VifEvent::Added(v)] if v.ofport == 7 && v.iface_id == "p1"));
        // The database catching up (with whatever number) changes nothing while the view lasts.
        assert!(t.apply(&change(Some(row(Some("p1"), 9, "up")))).is_empty());
        // Other ports come and go without touching it.
        assert!(t.set_port("tap2", Some(8)).is_empty());
        // Deleted on the switch: gone, even though the database still numbers it.
        let ev = t.set_port("tap1", None);
        assert!(matches!(&ev[..], [VifEvent::Removed(v)] if v.ofport == 7));
        // Re-added under another number.
        let ev = t.set_port("tap1", Some(12));
        assert!(matches!(&ev[..], [VifEvent::Added(v)] if v.ofport == 12));
        // Without a view the column decides again.
        let ev = t.set_view(None);
        assert!(
            matches!(&ev[..], [VifEvent::Changed { old, new }] if old.ofport == 12 && new.ofport == 9)
        );
        // A view without tap1 removes it; a port without an iface-id row is no VIF.
        let ev = t.set_view(Some(BTreeMap::from([("other".to_owned(), 3)])));
        assert!(matches!(&ev[..], [VifEvent::Removed(v)] if v.iface_id == "p1"));
        assert!(t.known.is_empty());
    }

    #[test]
    fn long_interface_names_match_their_openflow_names() {
        let mut t = VifTable::default();
        let long = "a-very-long-interface-name";
        let mut r = row(Some("p1"), 5, "up");
        r.set("name", Value::atom(long));
        t.apply(&change(Some(r)));
        let ev = t.set_view(Some(BTreeMap::from([(openflow_name(long).to_owned(), 6)])));
        assert_eq!(openflow_name(long).len(), 15);
        assert!(matches!(&ev[..], [VifEvent::Changed { new, .. }] if new.ofport == 6));
        assert_eq!(
            openflow_name("é".repeat(8).as_str()).len(),
            14,
            "cut at a char boundary"
        );
        // Renamed: found under its new name only.
        let mut renamed = row(Some("p1"), 5, "up");
        renamed.set("name", Value::atom("tap9"));
        let ev = t.apply(&change(Some(renamed)));
        assert!(matches!(&ev[..], [VifEvent::Removed(_)]));
        assert!(!t.by_name.contains_key(openflow_name(long)));
        let ev = t.set_port("tap9", Some(11));
        assert!(matches!(&ev[..], [VifEvent::Added(v)] if v.ofport == 11 && v.name == "tap9"));
    }
}
