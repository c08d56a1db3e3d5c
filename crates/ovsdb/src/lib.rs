//! OVSDB client (RFC 7047) for Wyvern: how the chassis agent reads and changes Open vSwitch's
//! configuration database.
//!
//! * [`Client`]: JSON-RPC over unix sockets or TCP: `list_dbs`, `get_schema`, `transact`
//!   (every operation of [`Operation`], `named-uuid` references), `monitor`, `monitor_cond`,
//!   `monitor_cond_since` (notifications `update`, `update2`, `update3`), `monitor_cancel`,
//!   `lock`/`steal`/`unlock`, and `echo` in both directions.
//! * [`Value`], [`Atom`], [`Row`]: OVSDB data in one canonical form; [`DatabaseSchema`].
//! * [`tables`]: typed rows for `Open_vSwitch`, `Bridge`, `Port`, `Interface`, `Controller`.
//! * [`Replica`]: a monitor that reconnects and re-monitors on its own and reports exactly
//!   the difference between what it knew and the server's state afterwards.
//!
//! Input from the server is untrusted: messages are size-bounded, bad JSON closes the
//! connection with an error, values of the wrong shape are errors; nothing panics.

mod client;
mod datum;
mod error;
mod framing;
mod monitor;
mod ops;
mod replica;
mod schema;
pub mod tables;

pub use client::{Client, ClientOptions, Endpoint, Monitor, Notification};
pub use datum::{Atom, Row, Value};
pub use error::{Error, Result};
pub use monitor::{Cache, MonitorKind, MonitorRequest, RowChange, RowOp, TableUpdates};
pub use ops::{Condition, Function, Mutation, Mutator, OpResult, Operation, WaitUntil};
pub use replica::{Replica, ReplicaEvent, ReplicaOptions, ReplicaReader, ReplicaSpec};
pub use schema::{ColumnKind, ColumnType, DatabaseSchema, TableSchema};
pub use uuid::Uuid;
