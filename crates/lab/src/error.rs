//! Error type of the lab.

use std::io;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while bringing a lab up, inspecting it or tearing it down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology file could not be parsed.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        source: Box<toml::de::Error>,
    },
    /// The topology is not acceptable (bad name, unknown reference, address outside its
    /// subnet, ...).
    #[error("invalid topology: {0}")]
    Topology(String),
    /// A file system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The lab's state file is unreadable.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// Building namespaces, links or OVS daemons failed.
    #[error(transparent)]
    Testbed(#[from] testbed::Error),
    /// Configuring a chassis' Open vSwitch failed.
    #[error(transparent)]
    Chassis(#[from] chassis::Error),
    /// Talking to a chassis' OVSDB failed.
    #[error(transparent)]
    Ovsdb(#[from] ovsdb::Error),
    /// An HTTP request to the server failed.
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered a request with an error.
    #[error("{method} {url}: {status}: {body}")]
    Api {
        /// Request method.
        method: String,
        /// Request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The server (or an agent) did not start.
    #[error("{0}")]
    Start(String),
    /// No such lab, host or chassis.
    #[error("{0}")]
    NotFound(String),
}
