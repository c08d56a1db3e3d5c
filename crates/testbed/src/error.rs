//! Error type of the test bed.

use std::io;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while building or tearing down a topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command could not be started at all.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why it could not be started.
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A file system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A name or argument is not acceptable (too long, wrong characters, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Something did not become ready in time.
    #[error("timed out: {0}")]
    Timeout(String),
}
