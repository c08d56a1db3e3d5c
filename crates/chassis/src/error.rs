//! Errors of the chassis plumbing.

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to OVSDB failed.
    #[error(transparent)]
    Ovsdb(#[from] ovsdb::Error),
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// vswitchd did not apply the configuration in time.
    #[error("ovs-vswitchd did not apply configuration {0} in time")]
    NotApplied(i64),
}
