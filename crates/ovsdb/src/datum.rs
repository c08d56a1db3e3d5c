//! OVSDB values (RFC 7047 section 5.1): atoms, sets, maps and rows, with their JSON forms.
//!
//! Every value is held in one canonical form so that two encodings of the same value compare
//! equal: a bare atom is a one-element set, sets are sorted and free of duplicates, maps are
//! sorted by key with unique keys.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::{Error, Result};

/// One atomic value.
#[derive(Debug, Clone)]
pub enum Atom {
    /// `integer`: a 64-bit signed integer.
    Integer(i64),
    /// `real`: a finite double.
    Real(f64),
    /// `boolean`.
    Boolean(bool),
    /// `string`.
    String(String),
    /// `uuid`: a row reference.
    Uuid(Uuid),
    /// `named-uuid`: a reference to a row inserted earlier in the same transaction.
    NamedUuid(String),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    /// Parses an atom from its JSON form.
    pub fn from_json(j: &Json) -> Result<Atom> {
        match j {
            Json::Bool(b) => Ok(Atom::Boolean(*b)),
            Json::String(s) => Ok(Atom::String(s.clone())),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Atom::Integer(i))
                } else if n.is_u64() {
                    Err(Error::protocol(format!("integer {n} out of range")))
                } else {
                    match n.as_f64() {
                        Some(f) if f.is_finite() => Ok(Atom::Real(f)),
                        _ => Err(Error::protocol(format!("number {n} out of range"))),
                    }
                }
            }
            Json::Array(a) => match (a.first().and_then(Json::as_str), a.get(1), a.len()) {
                (Some("uuid"), Some(Json::String(u)), 2) => Uuid::parse_str(u)
                    .map(Atom::Uuid)
                    .map_err(|e| Error::protocol(format!("bad uuid {u:?}: {e}"))),
                (Some("named-uuid"), Some(Json::String(n)), 2) => Ok(Atom::NamedUuid(n.clone())),
                _ => Err(Error::protocol(format!(
                    "expected an atom, got {}",
                    abbreviate(j)
                ))),
            },
            _ => Err(Error::protocol(format!(
                "expected an atom, got {}",
                abbreviate(j)
            ))),
        }
    }

    /// The JSON form of the atom.
    pub fn to_json(&self) -> Json {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(f) => json!(f),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    /// The string, if this is a string atom.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer atom.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean atom.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The UUID, if this is a UUID atom.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Integer(i) => write!(f, "{i}"),
            Atom::Real(r) => write!(f, "{r}"),
            Atom::Boolean(b) => write!(f, "{b}"),
            Atom::String(s) => write!(f, "{s:?}"),
            Atom::Uuid(u) => write!(f, "{u}"),
            Atom::NamedUuid(n) => write!(f, "@{n}"),
        }
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::String(s.to_owned())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Atom {
        Atom::String(s)
    }
}

impl From<i64> for Atom {
    fn from(i: i64) -> Atom {
        Atom::Integer(i)
    }
}

impl From<bool> for Atom {
    fn from(b: bool) -> Atom {
        Atom::Boolean(b)
    }
}

impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Atom {
        Atom::Uuid(u)
    }
}

/// A column value: a set of atoms (a scalar is a set of one) or a map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// A set, sorted and without duplicates.
    Set(Vec<Atom>),
    /// A map, sorted by key, keys unique.
    Map(Vec<(Atom, Atom)>),
}

impl Value {
    /// A single atom (a one-element set).
    pub fn atom(a: impl Into<Atom>) -> Value {
        Value::Set(vec![a.into()])
    }

    /// A set of atoms (sorted, duplicates removed).
    pub fn set<A: Into<Atom>>(items: impl IntoIterator<Item = A>) -> Value {
        let mut v: Vec<Atom> = items.into_iter().map(Into::into).collect();
        v.sort();
        v.dedup();
        Value::Set(v)
    }

    /// The empty set.
    pub fn empty() -> Value {
        Value::Set(Vec::new())
    }

    /// A map (sorted; of duplicate keys the last wins).
    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Value {
        let m: BTreeMap<Atom, Atom> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Value::Map(m.into_iter().collect())
    }

    /// Parses a value from its JSON form.
    pub fn from_json(j: &Json) -> Result<Value> {
        if let Json::Array(a) = j
            && a.len() == 2
        {
            match (a[0].as_str(), &a[1]) {
                (Some("set"), Json::Array(items)) => {
                    let atoms = items
                        .iter()
                        .map(Atom::from_json)
                        .collect::<Result<Vec<_>>>()?;
                    return Ok(Value::set(atoms));
                }
                (Some("map"), Json::Array(pairs)) => {
                    let mut m = BTreeMap::new();
                    for p in pairs {
                        match p.as_array().map(Vec::as_slice) {
                            Some([k, v]) => {
                                if m.insert(Atom::from_json(k)?, Atom::from_json(v)?).is_some() {
                                    return Err(Error::protocol("duplicate key in map"));
                                }
                            }
                            _ => {
                                return Err(Error::protocol(format!(
                                    "map entry must be [key, value], got {}",
                                    abbreviate(p)
                                )));
                            }
                        }
                    }
                    return Ok(Value::Map(m.into_iter().collect()));
                }
                (Some("set" | "map"), other) => {
                    return Err(Error::protocol(format!(
                        "set/map body must be an array, got {}",
                        abbreviate(other)
                    )));
                }
                _ => {}
            }
        }
        Atom::from_json(j).map(|a| Value::Set(vec![a]))
    }

    /// The JSON form; a one-element set is written as the bare atom.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Set(v) if v.len() == 1 => v[0].to_json(),
            Value::Set(v) => json!(["set", v.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Value::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// The only element of a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Set(v) if v.len() == 1 => Some(&v[0]),
            _ => None,
        }
    }

    /// The elements, if this is a set.
    pub fn as_set(&self) -> Option<&[Atom]> {
        match self {
            Value::Set(v) => Some(v),
            Value::Map(_) => None,
        }
    }

    /// The pairs, if this is a map. An empty set also reads as an empty map.
    pub fn as_map(&self) -> Option<&[(Atom, Atom)]> {
        match self {
            Value::Map(m) => Some(m),
            Value::Set(v) if v.is_empty() => Some(&[]),
            Value::Set(_) => None,
        }
    }

    /// Looks `key` up in a map value.
    pub fn map_get(&self, key: &Atom) -> Option<&Atom> {
        let m = self.as_map()?;
        m.binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &m[i].1)
    }

    /// Applies an `update2` "modify" difference to this set or map (the extension documented
    /// in ovsdb-server(7)): set elements in `diff` are toggled; map keys absent here are
    /// added, keys with the same value removed, keys with another value replaced. (Columns
    /// holding at most one atom are not diffed: the server sends their new value.)
    pub fn apply_diff(&self, diff: &Value) -> Result<Value> {
        match (self, diff) {
            (Value::Set(old), Value::Set(d)) => {
                let mut out = old.clone();
                for a in d {
                    match out.binary_search(a) {
                        Ok(i) => {
                            out.remove(i);
                        }
                        Err(i) => out.insert(i, a.clone()),
                    }
                }
                Ok(Value::Set(out))
            }
            (old, Value::Map(d)) if old.as_map().is_some() => {
                let mut m: BTreeMap<Atom, Atom> =
                    old.as_map().unwrap_or_default().iter().cloned().collect();
                for (k, v) in d {
                    match m.get(k) {
                        Some(cur) if cur == v => {
                            m.remove(k);
                        }
                        _ => {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                }
                Ok(Value::Map(m.into_iter().collect()))
            }
            (Value::Map(_), Value::Set(d)) if d.is_empty() => Ok(self.clone()),
            _ => Err(Error::protocol("diff does not match the column's kind")),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// A row: column name to value. Only the columns that were asked for are present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row(pub BTreeMap<String, Value>);

impl Row {
    /// An empty row.
    pub fn new() -> Row {
        Row::default()
    }

    /// Builder: sets `column` to `value`.
    pub fn with(mut self, column: &str, value: Value) -> Row {
        self.0.insert(column.to_owned(), value);
        self
    }

    /// Parses a row (a JSON object of column values).
    pub fn from_json(j: &Json) -> Result<Row> {
        let obj = j.as_object().ok_or_else(|| {
            Error::protocol(format!("row must be an object, got {}", abbreviate(j)))
        })?;
        obj.iter()
            .map(|(k, v)| Value::from_json(v).map(|v| (k.clone(), v)))
            .collect::<Result<_>>()
            .map(Row)
    }

    /// The JSON object form.
    pub fn to_json(&self) -> Json {
        Json::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// The value of `column`, if present.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.get(column)
    }

    /// Sets `column` to `value`.
    pub fn set(&mut self, column: &str, value: Value) {
        self.0.insert(column.to_owned(), value);
    }
}

/// At most about 80 characters of a JSON value, for error messages.
pub(crate) fn abbreviate(j: &Json) -> String {
    let s = j.to_string();
    if s.len() <= 80 {
        s
    } else {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_is_canonical() {
        let u = "5e0b1c3a-9f6e-4b8a-8d3c-2a4b6c8d0e1f";
        let cases = [
            (json!(5), json!(5)),
            (json!(["set", [3, 1, 3]]), json!(["set", [1, 3]])),
            (json!(["set", ["x"]]), json!("x")),
            (json!(["uuid", u]), json!(["uuid", u])),
            (
                json!(["map", [["b", 1], ["a", 2]]]),
                json!(["map", [["a", 2], ["b", 1]]]),
            ),
            (json!(["set", []]), json!(["set", []])),
            (json!(1.5), json!(1.5)),
        ];
        for (input, want) in cases {
            assert_eq!(Value::from_json(&input).unwrap().to_json(), want, "{input}");
        }
        assert_eq!(
            Value::from_json(&json!(["set", ["x"]])).unwrap(),
            Value::from_json(&json!("x")).unwrap()
        );
    }

    #[test]
    fn hostile_values_are_errors() {
        for bad in [
            json!(null),
            json!({"a": 1}),
            json!(["uuid", "not-a-uuid"]),
            json!(["uuid", 5]),
            json!(["set", 5]),
            json!(["map", [[1]]]),
            json!(["map", [["k", 1], ["k", 2]]]),
            json!(["set", [[1, 2]]]),
            json!(18446744073709551615u64),
            json!(["bogus", []]),
        ] {
            assert!(Value::from_json(&bad).is_err(), "{bad}");
        }
        let huge: Json = serde_json::from_str("1e400").unwrap_or(json!(1e300));
        let _ = Value::from_json(&huge);
    }

    #[test]
    fn diffs_apply_like_ovsdb_server() {
        let s = Value::set([1i64, 2]);
        assert_eq!(
            s.apply_diff(&Value::set([2i64, 3])).unwrap(),
            Value::set([1i64, 3])
        );
        let m = Value::map([("a", "1"), ("b", "2"), ("c", "3")]);
        let d = Value::map([("a", "1"), ("b", "9"), ("d", "4")]);
        assert_eq!(
            m.apply_diff(&d).unwrap(),
            Value::map([("b", "9"), ("c", "3"), ("d", "4")])
        );
        assert_eq!(
            Value::empty()
                .apply_diff(&Value::map([("k", "v")]))
                .unwrap(),
            Value::map([("k", "v")])
        );
        assert!(s.apply_diff(&d).is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use crate::framing::Rng;
    use crate::{DatabaseSchema, Row, TableUpdates, Value};
    use serde_json::{Value as Json, json};

    fn random_json(rng: &mut Rng, depth: usize) -> Json {
        let words = [
            "set",
            "map",
            "uuid",
            "named-uuid",
            "insert",
            "modify",
            "delete",
            "initial",
            "old",
            "new",
            "type",
            "key",
            "value",
            "min",
            "max",
            "unlimited",
            "name",
            "tables",
            "columns",
            "T",
            "5e0b1c3a-9f6e-4b8a-8d3c-2a4b6c8d0e1f",
            "string",
            "integer",
        ];
        match if depth > 4 {
            rng.below(4)
        } else {
            rng.below(7)
        } {
            0 => json!(rng.next_u64() as i64),
            1 => json!(words[rng.below(words.len())]),
            2 => json!(rng.below(2) == 0),
            3 => Json::Null,
            4 | 5 => Json::Array(
                (0..rng.below(4))
                    .map(|_| random_json(rng, depth + 1))
                    .collect(),
            ),
            _ => Json::Object(
                (0..rng.below(4))
                    .map(|_| {
                        (
                            words[rng.below(words.len())].to_owned(),
                            random_json(rng, depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_json_never_panics_any_parser() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let schema = DatabaseSchema::from_json(&json!({"name": "d", "tables": {"T": {"columns": {
            "name": {"type": "string"},
            "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
            "set": {"type": {"key": "integer", "min": 0, "max": "unlimited"}}}}}}))
        .unwrap();
        for _ in 0..20_000 {
            let j = random_json(&mut rng, 0);
            let _ = Value::from_json(&j);
            let _ = Row::from_json(&j);
            let _ = DatabaseSchema::from_json(&j);
            for v2 in [false, true] {
                if let Ok(u) = TableUpdates::parse(&j, v2) {
                    let mut c = crate::Cache::new();
                    let _ = c.apply(&schema, &u);
                    let _ = c.apply(&schema, &u);
                }
            }
            let _ = crate::ops::parse_results(&j, rng.below(3));
            let _ = crate::ops::rpc_error(&j);
        }
    }
}
