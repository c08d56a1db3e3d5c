//! The northbound store: a revisioned key-value store with transactions and watches.
//!
//! The server keeps every API object under a key; every committed transaction gets the next revision
//! of the whole store (as etcd does), and a watcher can follow all changes under a key prefix from any
//! revision that has not been compacted away. Two backends implement [`Store`]: [`embedded`] (a single
//! redb file, zero set-up, the default) and [`etcd`] (several servers, HA).

pub mod embedded;
pub mod etcd;
mod shared;
mod types;

pub use shared::{SharedWatch, SharedWatchStatus};
pub use types::*;

use std::sync::Arc;

/// Opens a store from its command-line spelling: `embedded:PATH` or
/// `etcd://HOST:PORT[,HOST:PORT...][/KEY-PREFIX]` (see [`etcd::EtcdOptions::parse`]).
///
/// The etcd backend connects lazily, on its first request, so this never blocks.
pub fn open(spec: &str) -> Result<Arc<dyn Store>, StoreError> {
    match spec.split_once(':') {
        Some(("embedded", path)) if !path.is_empty() => {
            Ok(Arc::new(embedded::EmbeddedStore::open(path)?))
        }
        Some(("etcd", _)) => Ok(Arc::new(etcd::EtcdStore::new(etcd::EtcdOptions::parse(
            spec,
        )?))),
        _ => Err(StoreError::BadSpec(spec.to_string())),
    }
}
