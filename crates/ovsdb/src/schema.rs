//! Database schemas (RFC 7047 section 3.2), as far as the client needs them: tables, columns
//! and each column's kind, which decides how `update2` differences apply.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::datum::abbreviate;
use crate::{Atom, Error, Result, Value};

/// How values of a column look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// At most one atom (`max` = 1, no value type): a scalar or an optional value.
    /// `update2` sends such a column's new value, not a difference.
    Scalar,
    /// A set that can hold more than one atom; `update2` sends the symmetric difference.
    Set,
    /// A map.
    Map,
}

/// One column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// Atomic type of the key (`integer`, `string`, `uuid`, ...).
    pub key: String,
    /// Atomic type of the value, for maps.
    pub value: Option<String>,
    /// Minimum number of elements.
    pub min: u64,
    /// Maximum number of elements (`None`: unlimited).
    pub max: Option<u64>,
    /// Referenced table, for UUID keys.
    pub ref_table: Option<String>,
}

impl ColumnType {
    /// Set, map or scalar.
    pub fn kind(&self) -> ColumnKind {
        if self.value.is_some() {
            ColumnKind::Map
        } else if self.max == Some(1) {
            ColumnKind::Scalar
        } else {
            ColumnKind::Set
        }
    }

    /// True if `v` is this column's default value (empty set or map; for a mandatory
    /// scalar 0, 0.0, false, "" or the all-zero UUID). `update2` leaves such columns out
    /// of inserted rows.
    pub fn is_default(&self, v: &Value) -> bool {
        match v {
            Value::Map(m) => m.is_empty(),
            Value::Set(s) if s.is_empty() => true,
            Value::Set(s) if s.len() == 1 && self.kind() == ColumnKind::Scalar && self.min == 1 => {
                match &s[0] {
                    Atom::Integer(i) => *i == 0,
                    Atom::Real(r) => *r == 0.0,
                    Atom::Boolean(b) => !*b,
                    Atom::String(s) => s.is_empty(),
                    Atom::Uuid(u) => u.is_nil(),
                    Atom::NamedUuid(_) => false,
                }
            }
            Value::Set(_) => false,
        }
    }

    fn from_json(j: &Json) -> Result<ColumnType> {
        fn base(j: &Json) -> Result<(String, Option<String>)> {
            match j {
                Json::String(s) => Ok((s.clone(), None)),
                Json::Object(o) => {
                    let t = o
                        .get("type")
                        .and_then(Json::as_str)
                        .ok_or_else(|| Error::Schema(format!("base type {}", abbreviate(j))))?;
                    let r = o.get("refTable").and_then(Json::as_str).map(str::to_owned);
                    Ok((t.to_owned(), r))
                }
                _ => Err(Error::Schema(format!("base type {}", abbreviate(j)))),
            }
        }
        match j {
            Json::String(_) => {
                let (key, ref_table) = base(j)?;
                Ok(ColumnType {
                    key,
                    value: None,
                    min: 1,
                    max: Some(1),
                    ref_table,
                })
            }
            Json::Object(o) => {
                let (key, ref_table) = base(
                    o.get("key")
                        .ok_or_else(|| Error::Schema("column type without key".into()))?,
                )?;
                let value = o.get("value").map(base).transpose()?.map(|v| v.0);
                let min = match o.get("min") {
                    None => 1,
                    Some(m) => m
                        .as_u64()
                        .ok_or_else(|| Error::Schema(format!("min {m}")))?,
                };
                let max = match o.get("max") {
                    None => Some(1),
                    Some(Json::String(s)) if s == "unlimited" => None,
                    Some(m) => Some(
                        m.as_u64()
                            .ok_or_else(|| Error::Schema(format!("max {m}")))?,
                    ),
                };
                Ok(ColumnType {
                    key,
                    value,
                    min,
                    max,
                    ref_table,
                })
            }
            _ => Err(Error::Schema(format!("column type {}", abbreviate(j)))),
        }
    }
}

/// One table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Columns by name (without the implicit `_uuid` and `_version`).
    pub columns: BTreeMap<String, ColumnType>,
    /// Root tables keep unreferenced rows.
    pub is_root: bool,
}

/// A database schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSchema {
    /// Database name.
    pub name: String,
    /// Schema version.
    pub version: String,
    /// Tables by name.
    pub tables: BTreeMap<String, TableSchema>,
}

impl DatabaseSchema {
    /// Parses the reply of `get_schema`.
    pub fn from_json(j: &Json) -> Result<DatabaseSchema> {
        let name = j
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| Error::Schema("schema without name".into()))?
            .to_owned();
        let version = j
            .get("version")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let tables_j = j
            .get("tables")
            .and_then(Json::as_object)
            .ok_or_else(|| Error::Schema("schema without tables".into()))?;
        let mut tables = BTreeMap::new();
        for (tname, t) in tables_j {
            let cols = t
                .get("columns")
                .and_then(Json::as_object)
                .ok_or_else(|| Error::Schema(format!("table {tname} without columns")))?;
            let mut columns = BTreeMap::new();
            for (cname, c) in cols {
                let ty = c
                    .get("type")
                    .ok_or_else(|| Error::Schema(format!("column {tname}.{cname} without type")))?;
                columns.insert(cname.clone(), ColumnType::from_json(ty)?);
            }
            let is_root = t.get("isRoot").and_then(Json::as_bool).unwrap_or(false);
            tables.insert(tname.clone(), TableSchema { columns, is_root });
        }
        Ok(DatabaseSchema {
            name,
            version,
            tables,
        })
    }

    /// The type of `table.column`.
    pub fn column(&self, table: &str, column: &str) -> Result<&ColumnType> {
        self.tables
            .get(table)
            .ok_or_else(|| Error::Schema(format!("no table {table}")))?
            .columns
            .get(column)
            .ok_or_else(|| Error::Schema(format!("no column {table}.{column}")))
    }

    /// The kind of `table.column`.
    pub fn column_kind(&self, table: &str, column: &str) -> Result<ColumnKind> {
        self.column(table, column).map(ColumnType::kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_column_kinds() {
        let s = DatabaseSchema::from_json(&json!({
            "name": "db", "version": "1.0.0",
            "tables": {"T": {"isRoot": true, "columns": {
                "name": {"type": "string"},
                "ofport": {"type": {"key": "integer", "min": 0, "max": 1}},
                "ports": {"type": {"key": {"type": "uuid", "refTable": "P"}, "min": 0, "max": "unlimited"}},
                "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
            }}}
        }))
        .unwrap();
        assert_eq!(s.column_kind("T", "name").unwrap(), ColumnKind::Scalar);
        assert_eq!(s.column_kind("T", "ofport").unwrap(), ColumnKind::Scalar);
        assert_eq!(s.column_kind("T", "ports").unwrap(), ColumnKind::Set);
        assert_eq!(s.column_kind("T", "ids").unwrap(), ColumnKind::Map);
        assert!(s.column_kind("T", "nope").is_err());
        let name = s.column("T", "name").unwrap();
        assert!(name.is_default(&Value::atom("")) && !name.is_default(&Value::atom("x")));
        let ofport = s.column("T", "ofport").unwrap();
        assert!(ofport.is_default(&Value::empty()) && !ofport.is_default(&Value::atom(0i64)));
        assert!(
            s.column("T", "ids")
                .unwrap()
                .is_default(&Value::Map(vec![]))
        );
        assert!(DatabaseSchema::from_json(&json!({"name": 1})).is_err());
    }
}
