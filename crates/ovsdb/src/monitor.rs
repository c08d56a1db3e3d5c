//! Monitors: requests, the `update`/`update2`/`update3` table-update formats, and a local
//! replica of monitored rows that turns updates into row changes.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::datum::abbreviate;
use crate::ops::Condition;
use crate::schema::ColumnKind;
use crate::{DatabaseSchema, Error, Result, Row, Value};

/// The monitor method and with it the notification format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MonitorKind {
    /// `monitor` (RFC 7047): `update` notifications with full rows.
    Monitor,
    /// `monitor_cond`: `update2` notifications with differences, conditions allowed.
    MonitorCond,
    /// `monitor_cond_since`: `update3` notifications that carry the transaction id, so a
    /// reconnecting client receives only what it missed.
    MonitorCondSince,
}

impl MonitorKind {
    /// The JSON-RPC method name.
    pub fn method(self) -> &'static str {
        match self {
            MonitorKind::Monitor => "monitor",
            MonitorKind::MonitorCond => "monitor_cond",
            MonitorKind::MonitorCondSince => "monitor_cond_since",
        }
    }
}

/// What to monitor in one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorRequest {
    /// Columns to report (`None`: all).
    pub columns: Option<Vec<String>>,
    /// Only rows matching all conditions (`monitor_cond` and later; `None`: all rows).
    pub conditions: Option<Vec<Condition>>,
}

impl MonitorRequest {
    /// All rows, the given columns.
    pub fn columns(cols: &[&str]) -> MonitorRequest {
        MonitorRequest {
            columns: Some(cols.iter().map(|c| (*c).to_owned()).collect()),
            conditions: None,
        }
    }

    pub(crate) fn to_json(&self, kind: MonitorKind) -> Json {
        let mut j =
            json!({"select": {"initial": true, "insert": true, "delete": true, "modify": true}});
        if let Some(c) = &self.columns {
            j["columns"] = json!(c);
        }
        if kind != MonitorKind::Monitor
            && let Some(c) = &self.conditions
        {
            j["where"] = Json::Array(c.iter().map(Condition::to_json).collect());
        }
        j
    }
}

/// What happened to one row according to a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    /// The row is new (or part of the initial contents): all monitored columns.
    Insert(Row),
    /// The row is gone.
    Delete,
    /// `update2` modify: per column, the new value (scalars) or the difference (sets, maps).
    Modify(Row),
    /// `update` modify: all monitored columns with their new values.
    Replace(Row),
}

/// Parsed table updates: `(table, row uuid, op)` in the server's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableUpdates(pub Vec<(String, Uuid, RowOp)>);

impl TableUpdates {
    /// Parses `table-updates` (`v2 == false`, RFC 7047) or `table-updates2`.
    pub fn parse(j: &Json, v2: bool) -> Result<TableUpdates> {
        let tables = j.as_object().ok_or_else(|| {
            Error::protocol(format!(
                "table updates must be an object, got {}",
                abbreviate(j)
            ))
        })?;
        let mut out = Vec::new();
        for (table, rows) in tables {
            let rows = rows
                .as_object()
                .ok_or_else(|| Error::protocol(format!("updates of {table} must be an object")))?;
            for (uuid, u) in rows {
                let uuid = Uuid::parse_str(uuid)
                    .map_err(|_| Error::protocol(format!("row uuid {uuid:?}")))?;
                let u = u
                    .as_object()
                    .ok_or_else(|| Error::protocol(format!("row update {}", abbreviate(u))))?;
                let op = if v2 {
                    match u.iter().next() {
                        Some((k, row)) if u.len() == 1 => match k.as_str() {
                            "initial" | "insert" => RowOp::Insert(Row::from_json(row)?),
                            "modify" => RowOp::Modify(Row::from_json(row)?),
                            "delete" => RowOp::Delete,
                            other => {
                                return Err(Error::protocol(format!("row update kind {other:?}")));
                            }
                        },
                        _ => return Err(Error::protocol("row update2 needs exactly one member")),
                    }
                } else {
                    let get = |k: &str| match u.get(k) {
                        None | Some(Json::Null) => Ok(None),
                        Some(r) => Row::from_json(r).map(Some),
                    };
                    match (get("old")?, get("new")?) {
                        (_, None) => RowOp::Delete,
                        (None, Some(new)) => RowOp::Insert(new),
                        (Some(_), Some(new)) => RowOp::Replace(new),
                    }
                };
                out.push((table.clone(), uuid, op));
            }
        }
        Ok(TableUpdates(out))
    }
}

/// Removes the columns of `row` that hold their default value; unknown columns are errors.
fn strip_defaults(schema: &DatabaseSchema, table: &str, mut row: Row) -> Result<Row> {
    let mut keep = BTreeMap::new();
    for (col, v) in std::mem::take(&mut row.0) {
        // `_uuid` and `_version` are not in the schema and never default.
        if col.starts_with('_') || !schema.column(table, &col)?.is_default(&v) {
            keep.insert(col, v);
        }
    }
    Ok(Row(keep))
}

/// A change of one row as seen by the client: `old` is `None` for a new row, `new` is `None`
/// for a deleted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    /// Table.
    pub table: String,
    /// Row.
    pub uuid: Uuid,
    /// Monitored columns before.
    pub old: Option<Row>,
    /// Monitored columns after.
    pub new: Option<Row>,
}

/// The monitored rows, by table and UUID. Columns holding their default value are left out
/// of the rows (as `update2` does), so rows compare equal whichever way they arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cache {
    tables: BTreeMap<String, BTreeMap<Uuid, Row>>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Cache {
        Cache::default()
    }

    /// The rows of `table`.
    pub fn table(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables.get(table).into_iter().flatten()
    }

    /// One row.
    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table)?.get(uuid)
    }

    /// A cache holding exactly the rows inserted by `updates` (an initial snapshot).
    pub fn from_snapshot(schema: &DatabaseSchema, updates: &TableUpdates) -> Result<Cache> {
        let mut c = Cache::new();
        c.apply(schema, updates)?;
        Ok(c)
    }

    /// Applies `updates`; returns the resulting changes (no-op updates give none).
    /// On error the cache is unchanged.
    pub fn apply(
        &mut self,
        schema: &DatabaseSchema,
        updates: &TableUpdates,
    ) -> Result<Vec<RowChange>> {
        let mut next = self.clone();
        let mut touched: Vec<(String, Uuid, Option<Row>)> = Vec::new();
        for (table, uuid, op) in &updates.0 {
            let rows = next.tables.entry(table.clone()).or_default();
            let old = rows.get(uuid).cloned();
            if !touched.iter().any(|(t, u, _)| t == table && u == uuid) {
                touched.push((table.clone(), *uuid, old.clone()));
            }
            match op {
                // Both carry every monitored column.
                RowOp::Insert(r) | RowOp::Replace(r) => {
                    rows.insert(*uuid, strip_defaults(schema, table, r.clone())?);
                }
                RowOp::Delete => {
                    rows.remove(uuid);
                }
                RowOp::Modify(diff) => {
                    let mut row = old.ok_or_else(|| {
                        Error::protocol(format!("modify of unknown row {table} {uuid}"))
                    })?;
                    for (col, d) in &diff.0 {
                        let new = match schema.column_kind(table, col)? {
                            ColumnKind::Scalar => d.clone(),
                            ColumnKind::Set => {
                                row.get(col).unwrap_or(&Value::empty()).apply_diff(d)?
                            }
                            ColumnKind::Map => row
                                .get(col)
                                .unwrap_or(&Value::Map(Vec::new()))
                                .apply_diff(d)?,
                        };
                        row.set(col, new);
                    }
                    rows.insert(*uuid, strip_defaults(schema, table, row)?);
                }
            }
        }
        let changes = touched
            .into_iter()
            .filter_map(|(table, uuid, old)| {
                let new = next.row(&table, &uuid).cloned();
                (old != new).then_some(RowChange {
                    table,
                    uuid,
                    old,
                    new,
                })
            })
            .collect();
        next.tables.retain(|_, rows| !rows.is_empty());
        *self = next;
        Ok(changes)
    }

    /// The changes that turn `self` into `other` (inserts, modifications, deletions).
    pub fn diff(&self, other: &Cache) -> Vec<RowChange> {
        let empty = BTreeMap::new();
        let mut names: Vec<&String> = self.tables.keys().chain(other.tables.keys()).collect();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for t in names {
            let a = self.tables.get(t).unwrap_or(&empty);
            let b = other.tables.get(t).unwrap_or(&empty);
            let mut uuids: Vec<&Uuid> = a.keys().chain(b.keys()).collect();
            uuids.sort();
            uuids.dedup();
            for u in uuids {
                let (old, new) = (a.get(u), b.get(u));
                if old != new {
                    out.push(RowChange {
                        table: t.clone(),
                        uuid: *u,
                        old: old.cloned(),
                        new: new.cloned(),
                    });
                }
            }
        }
        out
    }
}
