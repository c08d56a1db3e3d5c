//! Background work on the switch's database that several features share: keeping rows of
//! OVSDB at a wanted state without the event loop ever waiting on OVSDB ([`keep_converged`]),
//! and following one reading of `Interface` rows as per-key change events
//! ([`InterfaceFollower`]). The trunks' patch pairs and the BFD monitor ports use both.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use ovsdb::tables::{Interface, Table};
use ovsdb::{
    Client, Endpoint, MonitorRequest, Replica, ReplicaEvent, ReplicaOptions, ReplicaSpec, Row,
    RowChange, Uuid, Value,
};
use tokio::sync::watch;

use crate::AgentError;

/// The switch's database.
pub const DB: &str = "Open_vSwitch";

/// How long after a failed convergence it is tried again, on a new connection.
const RETRY: Duration = Duration::from_secs(1);

/// An OVSDB failure as the agent reports it.
pub fn ovsdb_error(e: impl std::fmt::Display) -> AgentError {
    AgentError::Ovsdb(e.to_string())
}

/// A string map as an OVSDB map value.
pub fn map_value(m: &BTreeMap<String, String>) -> Value {
    Value::map(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Connects to OVSDB at `endpoint`.
pub async fn connect(endpoint: &Endpoint) -> Result<Client, AgentError> {
    Client::connect(endpoint, ovsdb::ClientOptions::default())
        .await
        .map_err(ovsdb_error)
}

/// Keeps OVSDB at the latest value of `wanted`, in the background: `converge` is called with
/// each new value (it answers whether it wrote anything); a failure is retried every second, on
/// a new connection. `what` names the rows in the log.
pub fn keep_converged<V, F, Fut>(
    endpoint: Endpoint,
    what: &'static str,
    mut wanted: watch::Receiver<BTreeMap<String, V>>,
    converge: F,
) where
    V: Clone + Send + Sync + 'static,
    F: Fn(Client, BTreeMap<String, V>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<bool, AgentError>> + Send,
{
    tokio::spawn(async move {
        let mut client: Option<Client> = None;
        loop {
            let want = wanted.borrow_and_update().clone();
            let count = want.len();
            let connected = match client.take() {
                Some(c) => Ok(c),
                None => connect(&endpoint).await,
            };
            let outcome = match connected {
                Ok(c) => {
                    let outcome = converge(c.clone(), want).await;
                    client = Some(c);
                    outcome
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(true) => tracing::info!(count, "{what} converged"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("{what}: {e}; retrying");
                    client = None;
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
            if wanted.changed().await.is_err() {
                return;
            }
        }
    });
}

/// A change of what an [`InterfaceFollower`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowEvent<V> {
    /// The reading for this key (`None`: no row gives one any more).
    Changed(String, Option<V>),
    /// The events so far describe every row the database has (after each connection).
    Synced,
}

/// Reads one `Interface` row: its key and value, or `None` for a row that gives none.
pub type Reading<V> = fn(&Uuid, &Row) -> Option<(String, V)>;

/// Follows some columns of the `Interface` rows through a reading of each row, and reports
/// each key's reading as it changes. Dropping it stops it.
pub struct InterfaceFollower<V> {
    replica: Replica,
    readings: Readings<V>,
    queue: VecDeque<RowEvent<V>>,
    what: &'static str,
}

impl<V: Clone + PartialEq> InterfaceFollower<V> {
    /// Starts following the `Interface` rows and columns that `request` selects through
    /// `reading`; `what` names the follower in the log.
    pub fn spawn(
        endpoint: Endpoint,
        request: MonitorRequest,
        reading: Reading<V>,
        what: &'static str,
    ) -> InterfaceFollower<V> {
        let spec = ReplicaSpec {
            db: DB.into(),
            tables: BTreeMap::from([(Interface::NAME.to_owned(), request)]),
        };
        InterfaceFollower {
            replica: Replica::spawn(endpoint, spec, ReplicaOptions::default()),
            readings: Readings::new(reading),
            queue: VecDeque::new(),
            what,
        }
    }

    /// The next event; `None` only if the follower stopped.
    pub async fn next(&mut self) -> Option<RowEvent<V>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            match self.replica.next().await? {
                ReplicaEvent::Changes(changes) => {
                    let events = self.readings.changes(&changes);
                    self.queue.extend(events);
                }
                // The replica's rows are the server's now: read them all once.
                ReplicaEvent::Connected { .. } => {
                    let readings = &mut self.readings;
                    let events = self
                        .replica
                        .read(|cache| readings.reread(cache.table(Interface::NAME)));
                    self.queue.extend(events);
                    self.queue.push_back(RowEvent::Synced);
                }
                ReplicaEvent::Disconnected(why) => {
                    tracing::info!("{} lost OVSDB: {why}", self.what);
                }
            }
        }
    }
}

/// Each key's reading, kept up to date row by row: the work per database change follows the
/// rows it touched, not the size of the table.
struct Readings<V> {
    reading: Reading<V>,
    /// Which key each row gave.
    keys: HashMap<Uuid, String>,
    /// Each key's reading, with the row that gave it.
    current: BTreeMap<String, (Uuid, V)>,
    /// What was reported for each key.
    reported: BTreeMap<String, V>,
}

impl<V: Clone + PartialEq> Readings<V> {
    fn new(reading: Reading<V>) -> Readings<V> {
        Readings {
            reading,
            keys: HashMap::new(),
            current: BTreeMap::new(),
            reported: BTreeMap::new(),
        }
    }

    /// Takes in the rows `changes` touched; the events for the keys whose reading changed.
    fn changes(&mut self, changes: &[RowChange]) -> Vec<RowEvent<V>> {
        let mut touched = BTreeSet::new();
        for c in changes.iter().filter(|c| c.table == Interface::NAME) {
            let reading = c.new.as_ref().and_then(|row| (self.reading)(&c.uuid, row));
            self.set(c.uuid, reading, &mut touched);
        }
        self.report(touched)
    }

    /// Reads all of `rows` afresh (after a connection); the events for the keys whose reading
    /// changed.
    fn reread<'a>(&mut self, rows: impl Iterator<Item = (&'a Uuid, &'a Row)>) -> Vec<RowEvent<V>> {
        let mut touched: BTreeSet<String> = self.reported.keys().cloned().collect();
        self.keys.clear();
        self.current.clear();
        for (uuid, row) in rows {
            let reading = (self.reading)(uuid, row);
            self.set(*uuid, reading, &mut touched);
        }
        self.report(touched)
    }

    /// Records `reading` as row `uuid`'s, adding the keys it affects to `touched`.
    fn set(&mut self, uuid: Uuid, reading: Option<(String, V)>, touched: &mut BTreeSet<String>) {
        if let Some(old) = self.keys.remove(&uuid) {
            // Another row may have taken the key over within the same update.
            if self.current.get(&old).is_some_and(|(row, _)| *row == uuid) {
                self.current.remove(&old);
            }
            touched.insert(old);
        }
        if let Some((key, value)) = reading {
            self.keys.insert(uuid, key.clone());
            self.current.insert(key.clone(), (uuid, value));
            touched.insert(key);
        }
    }

    /// The events for those of `keys` whose reading differs from the one reported.
    fn report(&mut self, keys: BTreeSet<String>) -> Vec<RowEvent<V>> {
        let mut events = Vec::new();
        for key in keys {
            let now = self.current.get(&key).map(|(_, v)| v.clone());
            if self.reported.get(&key) == now.as_ref() {
                continue;
            }
            match &now {
                Some(v) => self.reported.insert(key.clone(), v.clone()),
                None => self.reported.remove(&key),
            };
            events.push(RowEvent::Changed(key, now));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows named `key=value` read as that key and value; other rows give nothing.
    fn reading(_: &Uuid, row: &Row) -> Option<(String, u32)> {
        let name = row.get("name")?.as_atom()?.as_str()?;
        let (k, v) = name.split_once('=')?;
        Some((k.to_owned(), v.parse().ok()?))
    }

    fn row(name: &str) -> Row {
        Row::new().with("name", Value::atom(name))
    }

    fn change(uuid: u128, old: Option<&str>, new: Option<&str>) -> RowChange {
        RowChange {
            table: Interface::NAME.into(),
            uuid: Uuid::from_u128(uuid),
            old: old.map(row),
            new: new.map(row),
        }
    }

    fn changed(key: &str, v: Option<u32>) -> RowEvent<u32> {
        RowEvent::Changed(key.into(), v)
    }

    #[test]
    fn each_key_is_reported_when_its_reading_changes() {
        let mut r = Readings::new(reading);
        let events = r.changes(&[
            change(1, None, Some("a=1")),
            change(2, None, Some("b=2")),
            change(3, None, Some("unrelated")),
        ]);
        assert_eq!(events, vec![changed("a", Some(1)), changed("b", Some(2))]);
        // A change that keeps the reading (another column) reports nothing.
        assert_eq!(r.changes(&[change(1, Some("a=1"), Some("a=1"))]), vec![]);
        assert_eq!(
            r.changes(&[change(1, Some("a=1"), Some("a=5"))]),
            vec![changed("a", Some(5))]
        );
        // A row that stops giving a reading, a deleted row.
        assert_eq!(
            r.changes(&[
                change(1, Some("a=5"), Some("unrelated")),
                change(2, Some("b=2"), None)
            ]),
            vec![changed("a", None), changed("b", None)]
        );
        // Changes of other tables are not this follower's.
        let mut other = change(4, None, Some("c=1"));
        other.table = "Port".into();
        assert_eq!(r.changes(&[other]), vec![]);
    }

    #[test]
    fn a_key_moving_to_another_row_within_one_update_stays() {
        for deleted_first in [true, false] {
            let mut r = Readings::new(reading);
            r.changes(&[change(1, None, Some("a=1"))]);
            let (gone, made) = (change(1, Some("a=1"), None), change(2, None, Some("a=1")));
            let update = if deleted_first {
                [gone, made]
            } else {
                [made, gone]
            };
            assert_eq!(r.changes(&update), vec![], "deleted first: {deleted_first}");
            // The new row is the one that counts now.
            assert_eq!(
                r.changes(&[change(2, Some("a=1"), Some("a=3"))]),
                vec![changed("a", Some(3))]
            );
        }
    }

    #[test]
    fn a_reread_reports_only_the_difference() {
        let mut r = Readings::new(reading);
        r.changes(&[change(1, None, Some("a=1")), change(2, None, Some("b=2"))]);
        let rows = [
            (Uuid::from_u128(1), row("a=1")),
            (Uuid::from_u128(7), row("c=3")),
        ];
        let events = r.reread(rows.iter().map(|(u, row)| (u, row)));
        assert_eq!(events, vec![changed("b", None), changed("c", Some(3))]);
        // The rows read are the ones followed from now on.
        assert_eq!(
            r.changes(&[change(7, Some("c=3"), None)]),
            vec![changed("c", None)]
        );
    }
}
