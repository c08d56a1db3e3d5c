//! Monitors: requests, the `update`/`update2`/`update3` table-update formats, and a local
//! replica of monitored rows that turns updates into row changes.

use std::collections::{BTreeMap, HashSet};

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
    /// Only rows matching *any* of these clauses (`monitor_cond` and later, whose `where` is a
    /// disjunction; `None`: all rows).
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

    /// Only the rows that match at least one of `any` (a server without `monitor_cond` cannot
    /// be asked this).
    pub fn rows_where(mut self, any: Vec<Condition>) -> MonitorRequest {
        self.conditions = Some(any);
        self
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
    ///
    /// The rows are changed in place, the first old value of each touched row kept aside: the
    /// cost follows the size of the update, not of the cache (an agent's replicas of a switch
    /// with thousands of interfaces see one small update per port).
    pub fn apply(
        &mut self,
        schema: &DatabaseSchema,
        updates: &TableUpdates,
    ) -> Result<Vec<RowChange>> {
        let mut touched: Vec<(String, Uuid, Option<Row>)> = Vec::new();
        if let Err(e) = self.apply_rows(schema, updates, &mut touched) {
            for (table, uuid, old) in touched {
                let rows = self.tables.entry(table).or_default();
                match old {
                    Some(row) => rows.insert(uuid, row),
                    None => rows.remove(&uuid),
                };
            }
            self.tables.retain(|_, rows| !rows.is_empty());
            return Err(e);
        }
        let changes = touched
            .into_iter()
            .filter_map(|(table, uuid, old)| {
                let new = self.row(&table, &uuid).cloned();
                (old != new).then_some(RowChange {
                    table,
                    uuid,
                    old,
                    new,
                })
            })
            .collect();
        self.tables.retain(|_, rows| !rows.is_empty());
        Ok(changes)
    }

    /// Applies `updates` in place, recording in `touched` each row's value before its first
    /// change (in the order first touched).
    fn apply_rows(
        &mut self,
        schema: &DatabaseSchema,
        updates: &TableUpdates,
        touched: &mut Vec<(String, Uuid, Option<Row>)>,
    ) -> Result<()> {
        let mut seen: HashSet<(&str, Uuid)> = HashSet::new();
        for (table, uuid, op) in &updates.0 {
            let rows = self.tables.entry(table.clone()).or_default();
            if seen.insert((table.as_str(), *uuid)) {
                touched.push((table.clone(), *uuid, rows.get(uuid).cloned()));
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
                    let Some(row) = rows.get_mut(uuid) else {
                        return Err(Error::protocol(format!(
                            "modify of unknown row {table} {uuid}"
                        )));
                    };
                    let mut next = row.clone();
                    for (col, d) in &diff.0 {
                        let new = match schema.column_kind(table, col)? {
                            ColumnKind::Scalar => d.clone(),
                            ColumnKind::Set => {
                                next.get(col).unwrap_or(&Value::empty()).apply_diff(d)?
                            }
                            ColumnKind::Map => next
                                .get(col)
                                .unwrap_or(&Value::Map(Vec::new()))
                                .apply_diff(d)?,
                        };
                        next.set(col, new);
                    }
                    *row = strip_defaults(schema, table, next)?;
                }
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({"name": "d", "tables": {"T": {"columns": {
            "name": {"type": "string"},
            "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}}}}}))
        .unwrap()
    }

    fn row(name: &str, ids: &[(&str, &str)]) -> Row {
        Row::new()
            .with("name", Value::atom(name))
            .with("ids", Value::map(ids.iter().copied()))
    }

    fn update(ops: Vec<(u128, RowOp)>) -> TableUpdates {
        TableUpdates(
            ops.into_iter()
                .map(|(u, op)| ("T".to_owned(), Uuid::from_u128(u), op))
                .collect(),
        )
    }

    #[test]
    fn changes_report_each_touched_row_once_with_its_first_and_last_value() {
        let s = schema();
        let mut c = Cache::new();
        c.apply(
            &s,
            &update(vec![(1, RowOp::Insert(row("a", &[("k", "1")])))]),
        )
        .unwrap();
        let modify = Row::new().with("ids", Value::map([("k", "2")]));
        let changes = c
            .apply(
                &s,
                &update(vec![
                    (1, RowOp::Modify(modify)),
                    (2, RowOp::Insert(row("b", &[]))),
                    (1, RowOp::Replace(row("a", &[("k", "3")]))),
                    (3, RowOp::Insert(row("c", &[]))),
                    (3, RowOp::Delete),
                ]),
            )
            .unwrap();
        assert_eq!(
            changes,
            vec![
                RowChange {
                    table: "T".into(),
                    uuid: Uuid::from_u128(1),
                    old: Some(row("a", &[("k", "1")])),
                    new: Some(row("a", &[("k", "3")])),
                },
                RowChange {
                    table: "T".into(),
                    uuid: Uuid::from_u128(2),
                    old: None,
                    new: Some(strip_defaults(&s, "T", row("b", &[])).unwrap()),
                },
            ],
            "row 3 came and went within the update: no change"
        );
        assert_eq!(c.table("T").count(), 2);
    }

    #[test]
    fn a_failing_update_leaves_the_cache_as_it_was() {
        let s = schema();
        let mut c = Cache::new();
        c.apply(
            &s,
            &update(vec![
                (1, RowOp::Insert(row("a", &[("k", "1")]))),
                (2, RowOp::Insert(row("b", &[]))),
            ]),
        )
        .unwrap();
        let before = c.clone();
        let err = c.apply(
            &s,
            &update(vec![
                (3, RowOp::Insert(row("c", &[]))),
                (1, RowOp::Replace(row("a", &[("k", "9")]))),
                (2, RowOp::Delete),
                (7, RowOp::Modify(Row::new().with("name", Value::atom("x")))),
            ]),
        );
        assert!(err.is_err(), "a modify of an unknown row is refused");
        assert_eq!(c, before);
        // An update into a table the cache did not hold leaves no empty table behind either.
        let other = TableUpdates(vec![
            ("U".to_owned(), Uuid::from_u128(8), RowOp::Delete),
            (
                "T".to_owned(),
                Uuid::from_u128(9),
                RowOp::Modify(Row::new()),
            ),
        ]);
        assert!(c.apply(&s, &other).is_err());
        assert_eq!(c, before);
    }
}
