//! Unique, short names for namespaces, links and run directories.

use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace, link and run directory the test bed creates.
///
/// `scripts/check-leftovers` and [`crate::leftovers`] look for exactly this prefix.
pub const PREFIX: &str = "wyt";

/// Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
pub(crate) const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Returns a name that no other call in any running process returns:
/// [`PREFIX`], the pid in hex, `kind` and a per-process counter in hex (e.g. `wyt1f2ac3`).
///
/// The result is at most 13 bytes for the first 256 names of a process, leaving room for a
/// one-letter suffix within the 15-byte interface name limit.
pub fn unique_name(kind: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{:x}{kind}{n:x}", std::process::id())
}

/// Checks that `name` can be used as a network interface name.
pub(crate) fn check_ifname(name: &str) -> crate::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Invalid(format!(
            "interface name {name:?} (at most {IFNAME_MAX} of [A-Za-z0-9._-])"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_short() {
        let a = unique_name('c');
        let b = unique_name('c');
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert!(a.len() < IFNAME_MAX, "{a}");
        check_ifname(&format!("{a}p")).unwrap();
        assert!(check_ifname("this-name-is-far-too-long").is_err());
        assert!(check_ifname("bad name").is_err());
    }
}
