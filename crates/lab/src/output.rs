//! What `wyvern lab` prints. Progress lines and warnings are best effort: when their reader is
//! gone (`wyvern lab up FILE | head -1`) they are dropped and the work goes on, so that `up`
//! never stops half way and leaves a lab without its state file. What a command was asked to
//! show (`status`) ends quietly at a closed pipe, as `cat` into `head` does. Neither panics, as
//! `println!` would.

use std::fmt;
use std::io::{self, Write};

use crate::{Error, Result};

/// Prints a progress line on stdout, if anyone reads it.
pub(crate) fn progress(line: fmt::Arguments) {
    // Nobody reading is no error: the line is for people.
    let _ = writeln!(io::stdout(), "{line}");
}

/// Prints a warning line on stderr, if anyone reads it.
pub(crate) fn warning(line: fmt::Arguments) {
    // As for progress lines.
    let _ = writeln!(io::stderr(), "{line}");
}

/// Prints `text` on stdout; false if the reader is gone (a closed pipe), which ends the
/// command quietly.
pub(crate) fn show(text: &str) -> Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(Error::Io {
            what: "write to stdout".into(),
            error,
        }),
    }
}
