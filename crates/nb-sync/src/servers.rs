//! The servers an agent may talk to, and the one it uses: every server of a deployment on one etcd
//! serves the same store, so any of them can answer any call and resume any watch (revisions are the
//! store's).
//!
//! A [`Servers`] is shared by everything an agent sends (its replica's snapshots and watch,
//! registration and heartbeats, binding reports, lookups), so they all move together: whoever sees
//! the server in use fail (connection refused, timeout, broken watch, 5xx) reports it with
//! [`Servers::failed`], and everyone moves to another server, picked at random among the others so
//! that the agents of a dead server spread over the survivors. Reports about a server that is no
//! longer in use change nothing (several callers noticing one failure move once). Retries wait a
//! [`Backoff`]: short and jittered at first (a hundred agents do not arrive at once), growing while
//! every server keeps failing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// First retry after a failure: within this (jittered).
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between retries while every server fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A list of equivalent servers, one of them in use (cheap to clone: clones share the choice).
#[derive(Clone, Debug)]
pub struct Servers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    urls: Vec<String>,
    current: AtomicUsize,
    failovers: AtomicU64,
}

impl Servers {
    /// Servers from a comma-separated list of base URLs (`http://h1:9696,http://h2:9696`), the
    /// first one in use. An empty list counts as the one server `http://127.0.0.1:9696`.
    pub fn parse(list: &str) -> Self {
        let mut urls: Vec<String> = list
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            urls.push("http://127.0.0.1:9696".into());
        }
        Self {
            inner: Arc::new(Inner {
                urls,
                current: AtomicUsize::new(0),
                failovers: AtomicU64::new(0),
            }),
        }
    }

    /// The base URL of the server in use.
    pub fn current(&self) -> String {
        let i = self.inner.current.load(Ordering::Acquire);
        self.inner.urls[i % self.inner.urls.len()].clone()
    }

    /// Every server, in the order given.
    pub fn all(&self) -> &[String] {
        &self.inner.urls
    }

    /// Reports that `url` failed: if it is still the server in use, another one is used from now on.
    pub fn failed(&self, url: &str) {
        let n = self.inner.urls.len();
        let i = self.inner.current.load(Ordering::Acquire);
        if n < 2 || self.inner.urls[i % n] != url {
            return;
        }
        let next = (i + 1 + fastrand::usize(..n - 1)) % n;
        if self
            .inner
            .current
            .compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.inner.failovers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                failed = url,
                now = self.inner.urls[next],
                "server failed; moving to another"
            );
        }
    }

    /// How many times the server in use changed.
    pub fn failovers(&self) -> u64 {
        self.inner.failovers.load(Ordering::Relaxed)
    }
}

/// Jittered exponential backoff: the n-th consecutive failure waits a random time in
/// [d/2, d] with d = 100 ms · 2^n up to 2 s, the first one anything up to 100 ms.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// How long to wait before the next attempt, counting one more failure.
    pub fn delay(&mut self) -> Duration {
        let n = self.failures;
        self.failures = self.failures.saturating_add(1);
        if n == 0 {
            return FIRST_RETRY.mul_f64(fastrand::f64());
        }
        let ceiling = FIRST_RETRY.saturating_mul(1 << n.min(10)).min(MAX_BACKOFF);
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// An attempt succeeded: the next failure starts over.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_move_once_and_never_back_to_the_failed_server() {
        let servers = Servers::parse("http://a:1/, http://b:2,,http://c:3");
        assert_eq!(servers.all(), ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(servers.current(), "http://a:1");
        servers.failed("http://a:1");
        let now = servers.current();
        assert_ne!(now, "http://a:1");
        // A late report about the old server changes nothing.
        servers.failed("http://a:1");
        assert_eq!(servers.current(), now);
        assert_eq!(servers.failovers(), 1);
        let single = Servers::parse("http://only:1");
        single.failed("http://only:1");
        assert_eq!(single.current(), "http://only:1");
        assert_eq!(single.failovers(), 0);
    }

    #[test]
    fn backoff_is_short_first_then_grows_to_a_bound() {
        let mut b = Backoff::default();
        assert!(b.delay() <= FIRST_RETRY);
        let waits: Vec<Duration> = (0..12).map(|_| b.delay()).collect();
        assert!(waits[0] >= FIRST_RETRY && waits[0] <= FIRST_RETRY * 2);
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF));
        assert!(waits[11] >= MAX_BACKOFF / 2);
        b.reset();
        assert!(b.delay() <= FIRST_RETRY);
    }
}
