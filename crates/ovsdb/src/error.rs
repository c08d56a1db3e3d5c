//! Errors of the OVSDB client.

use std::io;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong talking to an OVSDB server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The server sent bytes that are not JSON. The connection is closed.
    #[error("malformed JSON from server: {0}")]
    Json(String),
    /// One message exceeded the configured limit. The connection is closed.
    #[error("message larger than {limit} bytes")]
    MessageTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Valid JSON that does not follow RFC 7047 (wrong types, missing members, ...).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server answered a request with an error.
    #[error("server error {error}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Server {
        /// The `error` member.
        error: String,
        /// The `details` member, if any.
        details: Option<String>,
    },
    /// Operation `index` of a transaction failed (`index` may equal the number of operations
    /// when the commit itself failed).
    #[error("transaction failed at operation {index}: {error}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Transaction {
        /// Index of the failing operation.
        index: usize,
        /// The `error` member.
        error: String,
        /// The `details` member, if any.
        details: Option<String>,
    },
    /// The connection is closed (by the server, by an error, or because the client was dropped).
    #[error("connection closed: {0}")]
    Disconnected(String),
    /// The server did not answer in time.
    #[error("request {0} timed out")]
    Timeout(String),
    /// An address like `unix:/path` or `tcp:IP:PORT` could not be parsed.
    #[error("bad endpoint {0:?}")]
    Endpoint(String),
    /// A value does not fit the schema (unknown table or column, wrong type).
    #[error("schema: {0}")]
    Schema(String),
}

impl Error {
    /// Shorthand for [`Error::Protocol`].
    pub(crate) fn protocol(msg: impl Into<String>) -> Error {
        Error::Protocol(msg.into())
    }
}
