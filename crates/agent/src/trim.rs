//! Giving freed memory back to the system once a burst of work is over.
//!
//! The agent's work comes in bursts (a snapshot at start, thousands of ports created at once), and
//! each burst builds and drops large temporary structures: deltas of tens of thousands of flows,
//! the bundles encoding them, decoded snapshots. glibc's allocator keeps what they freed in its
//! heap for reuse and returns only a free stretch at the very top of it, so after a burst the
//! process holds far more than it uses. [`Trimmer`] waits until the agent has been quiet for
//! [`QUIET`] after at least [`WORTH_IT`] flow changes, then asks the allocator to return every
//! free page (`malloc_trim(0)`, which also releases free pages inside the heap). With another
//! allocator than glibc's it does nothing. [`one_arena`] keeps every thread on that one heap.

use std::time::{Duration, Instant};

/// How long the agent must have been without flow changes before it trims.
pub const QUIET: Duration = Duration::from_secs(2);
/// Flow changes (added, removed, groups) since the last trim that make one worth its cost (it
/// walks the whole heap: a few milliseconds at 10 000 ports).
pub const WORTH_IT: usize = 2_000;

/// Counts the work since the last trim and says when the next one is due.
#[derive(Debug, Default)]
pub struct Trimmer {
    changes: usize,
    due: Option<Instant>,
}

impl Trimmer {
    /// Notes `changes` flow changes just handed to the switch.
    pub fn worked(&mut self, changes: usize, now: Instant) {
        if changes == 0 {
            return;
        }
        self.changes = self.changes.saturating_add(changes);
        if self.changes >= WORTH_IT {
            self.due = Some(now + QUIET);
        }
    }

    /// When the next trim is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Trims if due at `now`; returns whether it did.
    pub fn trim_if_due(&mut self, now: Instant) -> bool {
        if self.due.is_none_or(|at| at > now) {
            return false;
        }
        self.due = None;
        self.changes = 0;
        release_free_memory();
        true
    }
}

/// Makes every thread allocate from the one heap the trims return pages of: the pipeline computes
/// a large batch on scoped threads (a snapshot at start), and with glibc's default each of those
/// would keep an arena of its own, whose free stretches between what other threads still hold stay
/// resident.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn one_arena() {
    // SAFETY: mallopt only sets one of the allocator's parameters, under the allocator's lock like
    // any malloc call; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn one_arena() {}

/// Returns the allocator's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    let before = resident_mib();
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists; it takes the
    // allocator's locks like any malloc call.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::info!(
        released = released != 0,
        resident_mib_before = before,
        resident_mib_after = resident_mib(),
        "free memory returned to the system"
    );
}

/// The process' resident size in MiB (`/proc/self/statm`), if readable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page / (1024 * 1024))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_comes_once_the_agent_was_quiet_after_enough_work() {
        let start = Instant::now();
        let mut t = Trimmer::default();
        t.worked(WORTH_IT - 1, start);
        assert_eq!(t.due(), None, "too little work");
        t.worked(1, start);
        assert_eq!(t.due(), Some(start + QUIET));
        // More work pushes it back.
        let later = start + Duration::from_secs(1);
        t.worked(5, later);
        assert_eq!(t.due(), Some(later + QUIET));
        assert!(!t.trim_if_due(start + QUIET), "not quiet long enough");
        assert!(t.trim_if_due(later + QUIET));
        // Counted from zero again.
        assert_eq!(t.due(), None);
        t.worked(WORTH_IT - 1, later);
        assert_eq!(t.due(), None);
        assert!(!t.trim_if_due(later + QUIET * 2));
    }
}
