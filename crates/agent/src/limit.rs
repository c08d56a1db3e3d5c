//! Per-port rate limits for answers the agent builds in software (neighbour advertisements, DHCP):
//! a VM that floods requests gets a bounded share of the agent's time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Ports tracked before the ones that went quiet are forgotten.
const MAX_TRACKED: usize = 4096;

/// At most `limit` answers per port per second.
pub struct RateLimit {
    limit: u32,
    windows: HashMap<String, (Instant, u32)>,
}

impl RateLimit {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: HashMap::new(),
        }
    }

    /// Whether one more answer for `port` is allowed now.
    pub fn allow(&mut self, port: &str) -> bool {
        let now = Instant::now();
        if self.windows.len() >= MAX_TRACKED {
            // Ports that asked nothing for a second start afresh anyway: forget them.
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let (start, count) = self.windows.entry(port.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_per_port() {
        let mut rl = RateLimit::new(2);
        assert!(rl.allow("a") && rl.allow("a") && !rl.allow("a"));
        assert!(rl.allow("b"));
    }
}
