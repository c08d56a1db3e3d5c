//! OpenFlow 1.3 with the Nicira and ONF extensions Open vSwitch speaks.
//!
//! * [`field`], [`matching`]: match fields (OXM/NXM) and the canonical [`Match`].
//! * [`action`], [`flow`]: actions, instructions, [`Flow`] and [`FlowMod`].
//! * [`message`]: every message the controller needs, with a codec that never panics.
//! * [`text`] and the `Display` impls: `ovs-ofctl` syntax, printed and parsed.
//! * [`print`]: `ovs-ofctl ofp-print` rendering of whole messages.
//! * [`conn`]: an async switch connection (version negotiation, echo, xid-matched requests,
//!   barriers, multipart reassembly, bundles, reconnect with backoff, async message stream).
//!
//! See `README.md` in the crate for the data model and its canonical forms.

pub mod action;
pub mod conn;
pub mod error;
pub mod errors;
pub mod field;
pub mod flow;
mod lexer;
pub mod matching;
pub mod message;
pub mod ofp;
pub mod print;
pub mod text;
mod wire;

pub use action::{Action, Ct, CtZone, Learn, LearnSpec, LearnSrc, Nat, NatAddr, Subfield};
pub use error::{DecodeError, ParseError};
pub use field::Field;
pub use flow::{Flow, FlowMod, FlowModCommand, Instructions};
pub use matching::Match;
pub use message::Message;
