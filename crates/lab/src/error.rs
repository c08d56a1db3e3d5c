//! Error type of the lab.
//!
//! Every message is whole: it says what failed and why, each cause once (other crates' errors
//! often repeat their cause in their own message, see [`chain`]). No error of the lab exposes a
//! [`source`](std::error::Error::source): a printer that follows the chain (`wyvern`'s `{:#}`)
//! would print every cause a second time.

use std::io;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while bringing a lab up, inspecting it or tearing it down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology file could not be parsed.
    #[error("{path}: {}", chain(.error))]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        error: Box<toml::de::Error>,
    },
    /// The topology is not acceptable (bad name, unknown reference, address outside its
    /// subnet, ...).
    #[error("invalid topology: {0}")]
    Topology(String),
    /// A file system operation failed.
    #[error("{what}: {}", chain(.error))]
    Io {
        /// What was attempted.
        what: String,
        /// The underlying error.
        error: io::Error,
    },
    /// The lab's state file is unreadable.
    #[error("state file {path}: {}", chain(.error))]
    State {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        error: serde_json::Error,
    },
    /// Building namespaces, links or OVS daemons failed.
    #[error("{}", chain(.0))]
    Testbed(testbed::Error),
    /// Configuring a chassis' Open vSwitch failed.
    #[error("{}", chain(.0))]
    Chassis(chassis::Error),
    /// Talking to a chassis' OVSDB failed.
    #[error("{}", chain(.0))]
    Ovsdb(ovsdb::Error),
    /// An HTTP request to the server failed.
    #[error("HTTP request failed: {}", chain(.0))]
    Http(reqwest::Error),
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
    /// `wyvern lab up` of a lab that runs from another topology file (without `--replace`).
    #[error(
        "lab {lab} runs from {running}, and {given} is another file with the same lab name: \
         `wyvern lab up --replace {given}` takes lab {lab} down and brings it up from that file"
    )]
    OtherFile {
        /// The lab.
        lab: String,
        /// The file it was brought up from.
        running: PathBuf,
        /// The file given now.
        given: PathBuf,
    },
}

/// Wraps the errors of the crates the lab builds on (their causes go into the message).
macro_rules! wrap {
    ($($variant:ident($from:ty)),* $(,)?) => {
        $(impl From<$from> for Error {
            fn from(e: $from) -> Error {
                Error::$variant(e)
            }
        })*
    };
}

wrap!(
    Testbed(testbed::Error),
    Chassis(chassis::Error),
    Ovsdb(ovsdb::Error),
    Http(reqwest::Error),
);

/// `error`'s message followed by each of its causes that the message so far does not contain.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_whole_and_say_each_cause_once() {
        let e = Error::Io {
            what: "read x.toml".into(),
            error: io::Error::from(io::ErrorKind::NotFound),
        };
        let text = e.to_string();
        assert_eq!(text, "read x.toml: entity not found");
        assert!(std::error::Error::source(&e).is_none());
        // A wrapped error that repeats its cause in its own message: the cause once.
        let inner = testbed::Error::Io {
            what: "mkdir /x".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let text = Error::from(inner).to_string();
        assert_eq!(text.matches("permission denied").count(), 1, "{text}");
    }
}
