//! Transaction operations (RFC 7047 section 5.2) and their results.

use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::datum::abbreviate;
use crate::{Error, Result, Row, Value};

/// Comparison of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `includes`
    Includes,
    /// `excludes`
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// `[column, function, value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Column (also `_uuid`).
    pub column: String,
    /// Comparison.
    pub function: Function,
    /// Operand.
    pub value: Value,
}

impl Condition {
    /// `column == value`.
    pub fn eq(column: &str, value: Value) -> Condition {
        Condition {
            column: column.to_owned(),
            function: Function::Eq,
            value,
        }
    }

    /// `_uuid == uuid`.
    pub fn uuid(uuid: Uuid) -> Condition {
        Condition::eq("_uuid", Value::atom(uuid))
    }

    /// `column includes value`.
    pub fn includes(column: &str, value: Value) -> Condition {
        Condition {
            column: column.to_owned(),
            function: Function::Includes,
            value,
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Json {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// Mutator of a mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    /// `+=`
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
    /// `%=`
    Mod,
    /// `insert`
    Insert,
    /// `delete`
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// Column.
    pub column: String,
    /// Mutator.
    pub mutator: Mutator,
    /// Operand.
    pub value: Value,
}

impl Mutation {
    /// `[column, "insert", value]`.
    pub fn insert(column: &str, value: Value) -> Mutation {
        Mutation {
            column: column.to_owned(),
            mutator: Mutator::Insert,
            value,
        }
    }

    /// `[column, "delete", value]`.
    pub fn delete(column: &str, value: Value) -> Mutation {
        Mutation {
            column: column.to_owned(),
            mutator: Mutator::Delete,
            value,
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Json {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// `until` of a wait operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    /// Wait until the selected rows equal the given rows.
    Equal,
    /// Wait until they differ.
    NotEqual,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Insert `row`; `uuid_name` lets later operations refer to it as `named-uuid`.
    Insert {
        /// Table.
        table: String,
        /// Column values.
        row: Row,
        /// Name for `named-uuid` references.
        uuid_name: Option<String>,
    },
    /// Select rows.
    Select {
        /// Table.
        table: String,
        /// Conditions (all must hold).
        conditions: Vec<Condition>,
        /// Columns to return (all if `None`).
        columns: Option<Vec<String>>,
    },
    /// Update the given columns of matching rows.
    Update {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// New values.
        row: Row,
    },
    /// Mutate matching rows.
    Mutate {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Mutations.
        mutations: Vec<Mutation>,
    },
    /// Delete matching rows.
    Delete {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
    },
    /// Wait until the selected columns of matching rows are (not) `rows`.
    Wait {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Columns compared.
        columns: Vec<String>,
        /// Equal or not equal.
        until: WaitUntil,
        /// Expected rows.
        rows: Vec<Row>,
        /// Milliseconds to wait (`None`: forever; 0: check once).
        timeout_ms: Option<u64>,
    },
    /// Commit; `durable` asks for the change to be on disk before the reply.
    Commit {
        /// Durability.
        durable: bool,
    },
    /// Abort the transaction (always fails).
    Abort,
    /// A comment for the server's log.
    Comment(String),
    /// Fail unless this client owns `lock`.
    Assert {
        /// Lock name.
        lock: String,
    },
}

fn conds(c: &[Condition]) -> Json {
    Json::Array(c.iter().map(Condition::to_json).collect())
}

impl Operation {
    /// The JSON form.
    pub fn to_json(&self) -> Json {
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                let mut j = json!({"op": "insert", "table": table, "row": row.to_json()});
                if let Some(n) = uuid_name {
                    j["uuid-name"] = json!(n);
                }
                j
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                let mut j = json!({"op": "select", "table": table, "where": conds(conditions)});
                if let Some(c) = columns {
                    j["columns"] = json!(c);
                }
                j
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                json!({"op": "update", "table": table, "where": conds(conditions), "row": row.to_json()})
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => json!({
                "op": "mutate", "table": table, "where": conds(conditions),
                "mutations": mutations.iter().map(Mutation::to_json).collect::<Vec<_>>()
            }),
            Operation::Delete { table, conditions } => {
                json!({"op": "delete", "table": table, "where": conds(conditions)})
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                let mut j = json!({
                    "op": "wait", "table": table, "where": conds(conditions), "columns": columns,
                    "until": if *until == WaitUntil::Equal { "==" } else { "!=" },
                    "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>()
                });
                if let Some(t) = timeout_ms {
                    j["timeout"] = json!(t);
                }
                j
            }
            Operation::Commit { durable } => json!({"op": "commit", "durable": durable}),
            Operation::Abort => json!({"op": "abort"}),
            Operation::Comment(c) => json!({"op": "comment", "comment": c}),
            Operation::Assert { lock } => json!({"op": "assert", "lock": lock}),
        }
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpResult {
    /// UUID of the inserted row (insert).
    pub uuid: Option<Uuid>,
    /// Selected rows (select).
    pub rows: Option<Vec<Row>>,
    /// Number of rows touched (update, mutate, delete).
    pub count: Option<u64>,
}

fn error_member(o: &serde_json::Map<String, Json>) -> Option<(String, Option<String>)> {
    match o.get("error") {
        None | Some(Json::Null) => None,
        Some(e) => Some((
            e.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| abbreviate(e)),
            o.get("details").and_then(Json::as_str).map(str::to_owned),
        )),
    }
}

/// Parses the result array of `transact` into exactly `n_ops` results; the first failed
/// operation becomes [`Error::Transaction`].
pub(crate) fn parse_results(j: &Json, n_ops: usize) -> Result<Vec<OpResult>> {
    let arr = j
        .as_array()
        .ok_or_else(|| Error::protocol(format!("transact result {}", abbreviate(j))))?;
    if arr.len() < n_ops {
        return Err(Error::protocol(format!(
            "transact returned {} results for {n_ops} operations",
            arr.len()
        )));
    }
    let mut out = Vec::with_capacity(n_ops);
    for (index, r) in arr.iter().enumerate() {
        let o = match r {
            // An operation after a failed one is not executed: its result is null.
            Json::Null => {
                if index < n_ops {
                    out.push(OpResult::default());
                }
                continue;
            }
            Json::Object(o) => o,
            other => {
                return Err(Error::protocol(format!(
                    "operation result {}",
                    abbreviate(other)
                )));
            }
        };
        if let Some((error, details)) = error_member(o) {
            return Err(Error::Transaction {
                index,
                error,
                details,
            });
        }
        if index >= n_ops {
            continue;
        }
        let uuid = match o.get("uuid") {
            None => None,
            Some(u) => Some(
                crate::Atom::from_json(u)?
                    .as_uuid()
                    .ok_or_else(|| Error::protocol("insert result uuid"))?,
            ),
        };
        let rows = match o.get("rows") {
            None => None,
            Some(Json::Array(rows)) => {
                Some(rows.iter().map(Row::from_json).collect::<Result<_>>()?)
            }
            Some(other) => return Err(Error::protocol(format!("rows {}", abbreviate(other)))),
        };
        let count = match o.get("count") {
            None => None,
            Some(c) => Some(
                c.as_u64()
                    .ok_or_else(|| Error::protocol(format!("count {c}")))?,
            ),
        };
        out.push(OpResult { uuid, rows, count });
    }
    Ok(out)
}

/// Error reply of a JSON-RPC request: the `error` and `details` members.
pub(crate) fn rpc_error(j: &Json) -> Error {
    match j {
        Json::Object(o) => match error_member(o) {
            Some((error, details)) => Error::Server { error, details },
            None => Error::Server {
                error: abbreviate(j),
                details: None,
            },
        },
        Json::String(s) => Error::Server {
            error: s.clone(),
            details: None,
        },
        other => Error::Server {
            error: abbreviate(other),
            details: None,
        },
    }
}
