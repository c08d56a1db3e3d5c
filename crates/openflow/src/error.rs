//! Error types of the crate: wire decoding, flow-text parsing and connection failures.

use thiserror::Error;

/// A message, match or action could not be decoded from bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before a structure was complete.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A length field is inconsistent with its container or with the minimum size.
    #[error("bad length {len} in {what}")]
    BadLength { what: &'static str, len: usize },
    /// The OpenFlow version is not 1.3 (0x04).
    #[error("unsupported OpenFlow version {0:#04x}")]
    BadVersion(u8),
    /// An unknown type/subtype/experimenter at the given place.
    #[error("unknown {what} {value:#x}")]
    Unknown { what: &'static str, value: u64 },
    /// A value is outside the range the model accepts.
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// A flow, match or action text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{msg} (in {text:?})")]
pub struct ParseError {
    /// What went wrong.
    pub msg: String,
    /// The piece of text that caused it.
    pub text: String,
}

impl ParseError {
    pub(crate) fn new(msg: impl Into<String>, text: &str) -> Self {
        ParseError {
            msg: msg.into(),
            text: text.to_string(),
        }
    }
}

/// Shorthand for building a [`DecodeError::Invalid`].
pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        what,
        detail: detail.into(),
    }
}
