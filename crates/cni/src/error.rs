//! The plugin's errors and the CNI error code each one is reported with.
//!
//! Codes 1–99 are the specification's ("well-known"); the plugin uses only those it defines
//! (1, 2, 3, 4, 5, 6, 7 and 11). Failures that are Wyvern's own get codes from 100 up, which
//! the specification leaves to plugins: [`API_FAILED`], [`AMBIGUOUS_PORT`], [`DATAPATH_FAILED`],
//! [`CHECK_FAILED`].

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Well-known code: the configuration's `cniVersion` is not one this plugin speaks.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Well-known code: a configuration field the plugin does not support (the message names it).
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Well-known code: the container (its network namespace) is unknown or gone.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Well-known code: a required environment variable is missing or malformed (named in the
/// message).
pub const INVALID_ENVIRONMENT: u32 = 4;
/// Well-known code: reading input (stdin, the token file) failed.
pub const IO_FAILURE: u32 = 5;
/// Well-known code: the input is not decodable (not JSON).
pub const DECODE_FAILURE: u32 = 6;
/// Well-known code: the network configuration is invalid.
pub const INVALID_CONFIG: u32 = 7;
/// Well-known code: a transient condition; the runtime should try again later.
pub const TRY_AGAIN_LATER: u32 = 11;
/// Plugin code: the Neutron API refused a request (4xx) or answered nonsense.
pub const API_FAILED: u32 = 100;
/// Plugin code: more than one port carries the pod's tag.
pub const AMBIGUOUS_PORT: u32 = 101;
/// Plugin code: changing links, addresses, routes or Open vSwitch failed.
pub const DATAPATH_FAILED: u32 = 102;
/// Plugin code: `CHECK` found the attachment not as `ADD` left it.
pub const CHECK_FAILED: u32 = 103;

/// What can go wrong, each with its CNI code ([`Error::code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration asks for a spec version this plugin does not implement.
    #[error("incompatible CNI version {0:?} (supported: {supported})", supported = crate::spec::SUPPORTED_VERSIONS.join(", "))]
    IncompatibleVersion(String),
    /// The command needs a newer spec version than the configuration names.
    #[error("{command} is not defined by CNI version {version}")]
    CommandTooNew {
        /// The command.
        command: String,
        /// The configuration's version.
        version: String,
    },
    /// A field this plugin refuses rather than silently ignores.
    #[error("unsupported field {field:?} = {value}: {why}")]
    UnsupportedField {
        /// Its key.
        field: String,
        /// Its value, as JSON.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// The network namespace does not exist.
    #[error("network namespace {0} does not exist")]
    UnknownContainer(String),
    /// An environment variable is missing or malformed.
    #[error("invalid environment variable {name}: {why}")]
    Environment {
        /// The variable.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// Reading input failed.
    #[error("I/O failure: {0}")]
    Io(String),
    /// The input is not JSON.
    #[error("cannot decode {what}: {why}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The parser's complaint.
        why: String,
    },
    /// The network configuration is invalid.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// Something that should clear up: the pod's port is not there yet, the API or OVSDB did
    /// not answer.
    #[error("try again later: {0}")]
    TryAgain(String),
    /// The Neutron API refused a request or answered something unusable.
    #[error("Neutron API: {0}")]
    Api(String),
    /// More than one port is tagged for the pod.
    #[error("{count} ports carry tag {tag:?} (exactly one must): {ids}")]
    AmbiguousPort {
        /// The tag.
        tag: String,
        /// How many ports carry it.
        count: usize,
        /// Their ids.
        ids: String,
    },
    /// A command (`ip`), a system call on a link or an OVSDB transaction failed.
    #[error("{0}")]
    Datapath(String),
    /// `CHECK` found a difference.
    #[error("check failed: {0}")]
    Check(String),
}

impl Error {
    /// The CNI error code this error is reported with.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion(_) | Error::CommandTooNew { .. } => INCOMPATIBLE_VERSION,
            Error::UnsupportedField { .. } => UNSUPPORTED_FIELD,
            Error::UnknownContainer(_) => UNKNOWN_CONTAINER,
            Error::Environment { .. } => INVALID_ENVIRONMENT,
            Error::Io(_) => IO_FAILURE,
            Error::Decode { .. } => DECODE_FAILURE,
            Error::Config(_) => INVALID_CONFIG,
            Error::TryAgain(_) => TRY_AGAIN_LATER,
            Error::Api(_) => API_FAILED,
            Error::AmbiguousPort { .. } => AMBIGUOUS_PORT,
            Error::Datapath(_) => DATAPATH_FAILED,
            Error::Check(_) => CHECK_FAILED,
        }
    }

    /// A short summary for the error document's `msg` (the whole text goes to `details`).
    pub fn summary(&self) -> &'static str {
        match self {
            Error::IncompatibleVersion(_) | Error::CommandTooNew { .. } => {
                "incompatible CNI version"
            }
            Error::UnsupportedField { .. } => "unsupported field in network configuration",
            Error::UnknownContainer(_) => "container unknown or does not exist",
            Error::Environment { .. } => "invalid environment variables",
            Error::Io(_) => "I/O failure",
            Error::Decode { .. } => "failed to decode content",
            Error::Config(_) => "invalid network configuration",
            Error::TryAgain(_) => "try again later",
            Error::Api(_) => "Neutron API request failed",
            Error::AmbiguousPort { .. } => "more than one port for the pod",
            Error::Datapath(_) => "configuring the datapath failed",
            Error::Check(_) => "attachment is not as added",
        }
    }

    /// A missing or malformed environment variable.
    pub(crate) fn env(name: &str, why: impl Into<String>) -> Error {
        Error::Environment {
            name: name.to_owned(),
            why: why.into(),
        }
    }
}

impl From<ovsdb::Error> for Error {
    fn from(e: ovsdb::Error) -> Error {
        Error::Datapath(format!("OVSDB: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_specification() {
        assert_eq!(Error::IncompatibleVersion("9.9.9".into()).code(), 1);
        let unsupported = Error::UnsupportedField {
            field: "ipam".into(),
            value: "{}".into(),
            why: "Neutron allocates".into(),
        };
        assert_eq!(unsupported.code(), 2);
        assert!(unsupported.to_string().contains("\"ipam\""));
        assert_eq!(Error::UnknownContainer("/x".into()).code(), 3);
        assert_eq!(Error::env("CNI_IFNAME", "missing").code(), 4);
        assert!(
            Error::env("CNI_IFNAME", "missing")
                .to_string()
                .contains("CNI_IFNAME")
        );
        assert_eq!(Error::Io("stdin".into()).code(), 5);
        let decode = Error::Decode {
            what: "stdin".into(),
            why: "eof".into(),
        };
        assert_eq!(decode.code(), 6);
        assert_eq!(Error::Config("x".into()).code(), 7);
        assert_eq!(Error::TryAgain("x".into()).code(), 11);
        for e in [
            Error::Api("x".into()),
            Error::Datapath("x".into()),
            Error::Check("x".into()),
        ] {
            assert!(e.code() >= 100, "{e}");
        }
    }
}
