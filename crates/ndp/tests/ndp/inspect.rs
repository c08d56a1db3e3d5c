//! An independent decoder of the frames the crate builds (panics on anything unexpected).

use frame_check::{Ethernet, Ipv6};

/// An ICMPv6 frame.
pub struct Icmp {
    pub eth: Ethernet,
    pub ip: Ipv6,
    pub message: Vec<u8>,
    pub checksum_ok: bool,
}

impl Icmp {
    pub fn parse(frame: &[u8]) -> Self {
        let (eth, ip, message) = Ipv6::parse(frame, 58);
        Self {
            eth,
            ip,
            checksum_ok: ip.checksum(58, message) == 0,
            message: message.to_vec(),
        }
    }

    /// The options after the fixed part of `fixed` bytes, as (type, whole option).
    pub fn options(&self, fixed: usize) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = fixed;
        while at < self.message.len() {
            let len = usize::from(self.message[at + 1]) * 8;
            assert!(len > 0, "zero-length option");
            out.push((self.message[at], self.message[at..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, self.message.len(), "options fill the message");
        out
    }
}
