//! Test support for the crates that build and parse frames (a dev-dependency only): writes a
//! frame as a pcap file and decodes it with tcpdump, an independent Internet checksum, Ethernet
//! and IPv6 framing written and read without the code under test, the lookup of a single option,
//! and the way the fuzz tests break valid frames. Readers panic on anything unexpected.

use std::fmt::Display;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::process::Command;

use proptest::collection::vec;
use proptest::prelude::{Strategy, any};
use proptest::sample::Index;

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV6_HEADER_LEN: usize = 40;

/// The Internet checksum (RFC 1071) of the concatenated parts, an odd last byte padded with 0.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = (u32::from(pair[0]) << 8) | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The big-endian 16-bit number at `at`.
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The big-endian 32-bit number at `at`.
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The IPv6 address in the first 16 bytes.
pub fn ipv6_addr(b: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap())
}

/// An Ethernet II header with at most one 802.1Q tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ethernet {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// The tag control information of the 802.1Q tag, if the frame has one.
    pub vlan_tci: Option<u16>,
}

impl Ethernet {
    /// Reads the header of `frame`: the header, the ethertype and what follows.
    pub fn parse(frame: &[u8]) -> (Self, u16, &[u8]) {
        let (vlan_tci, rest) = if be16(frame, 12) == ETHERTYPE_VLAN {
            (Some(be16(frame, 14)), &frame[16..])
        } else {
            (None, &frame[12..])
        };
        let eth = Self {
            dst: frame[0..6].try_into().unwrap(),
            src: frame[6..12].try_into().unwrap(),
            vlan_tci,
        };
        (eth, be16(rest, 0), &rest[2..])
    }

    /// The frame of this header, `ethertype` and `payload`.
    pub fn frame(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = self.dst.to_vec();
        frame.extend_from_slice(&self.src);
        if let Some(tci) = self.vlan_tci {
            frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }
}

/// What varies in the IPv6 headers of the tests: version 6, traffic class and flow label 0, no
/// extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
}

impl Ipv6 {
    /// Reads an Ethernet frame holding an IPv6 packet of `next_header`: the Ethernet and IPv6
    /// headers and the payload.
    pub fn parse(frame: &[u8], next_header: u8) -> (Ethernet, Self, &[u8]) {
        let (eth, ethertype, ip) = Ethernet::parse(frame);
        assert_eq!(ethertype, ETHERTYPE_IPV6, "ethertype");
        assert_eq!(&ip[0..4], &[0x60, 0, 0, 0], "version 6, class and label 0");
        let len = usize::from(be16(ip, 4));
        assert_eq!(
            len,
            ip.len() - IPV6_HEADER_LEN,
            "payload length covers the rest of the frame"
        );
        assert_eq!(ip[6], next_header, "next header");
        let header = Self {
            src: ipv6_addr(&ip[8..24]),
            dst: ipv6_addr(&ip[24..40]),
            hop_limit: ip[7],
        };
        (eth, header, &ip[IPV6_HEADER_LEN..])
    }

    /// The checksum of an upper-layer `message` of `next_header` sent with this header (the
    /// pseudo-header included): the value to write into a message whose checksum field is 0, and
    /// 0 for a message that carries a correct one.
    pub fn checksum(&self, next_header: u8, message: &[u8]) -> u16 {
        let mut pseudo = self.src.octets().to_vec();
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next_header]);
        checksum(&[&pseudo, message])
    }

    /// The Ethernet frame of `eth`, this header and `payload` of `next_header`.
    pub fn frame(&self, eth: &Ethernet, next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x60, 0, 0, 0];
        packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        packet.extend_from_slice(&[next_header, self.hop_limit]);
        packet.extend_from_slice(&self.src.octets());
        packet.extend_from_slice(&self.dst.octets());
        packet.extend_from_slice(payload);
        eth.frame(ETHERTYPE_IPV6, &packet)
    }
}

/// The value of the only option `code` among (code, value) `options`; panics when there are more.
pub fn only<C: PartialEq + Display>(options: &[(C, Vec<u8>)], code: C) -> Option<&[u8]> {
    let mut found = options.iter().filter(|(c, _)| *c == code);
    let value = found.next().map(|(_, v)| v.as_slice());
    assert!(
        found.next().is_none(),
        "option {code} appears more than once"
    );
    value
}

/// How the fuzz tests break a valid frame: some bytes changed, then the frame cut short or
/// extended.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// Bytes to set, at positions drawn from the part of the frame that may change.
    pub changes: Vec<(Index, u8)>,
    /// Where to cut the frame when there is no tail.
    pub cut: Index,
    /// Bytes to append (and then nothing is cut).
    pub tail: Vec<u8>,
}

/// Mutations with a number of changed bytes in `changes` and a tail length in `tail`.
pub fn mutations(changes: Range<usize>, tail: Range<usize>) -> impl Strategy<Value = Mutation> {
    (
        vec((any::<Index>(), any::<u8>()), changes),
        any::<Index>(),
        vec(any::<u8>(), tail),
    )
        .prop_map(|(changes, cut, tail)| Mutation { changes, cut, tail })
}

impl Mutation {
    /// Applies the mutation to `frame`, changing bytes at positions from `first` on only.
    pub fn apply(&self, frame: &mut Vec<u8>, first: usize) {
        for (at, byte) in &self.changes {
            let at = first + at.index(frame.len() - first);
            frame[at] = *byte;
        }
        if self.tail.is_empty() {
            frame.truncate(self.cut.index(frame.len() + 1));
        } else {
            frame.extend_from_slice(&self.tail);
        }
    }
}

/// A classic pcap file (microsecond timestamps, LINKTYPE_ETHERNET) holding one frame.
fn pcap(frame: &[u8]) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic
    file.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    file.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    file.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
    file.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    let len = (frame.len() as u32).to_le_bytes();
    file.extend_from_slice(&1_700_000_000u32.to_le_bytes()); // seconds
    file.extend_from_slice(&0u32.to_le_bytes()); // microseconds
    file.extend_from_slice(&len); // captured
    file.extend_from_slice(&len); // on the wire
    file.extend_from_slice(frame);
    file
}

/// What `tcpdump -nn -vv -e` prints for `frame` (written to a pcap file); panics when tcpdump
/// cannot be run. (`-vv`, not `-v`: tcpdump 4.99 verifies UDP checksums only from `-vv` on.)
pub fn tcpdump(frame: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frame.pcap");
    std::fs::write(&path, pcap(frame)).unwrap();
    let output = match Command::new("tcpdump")
        .args(["-nn", "-vv", "-e", "-r"])
        .arg(&path)
        .output()
    {
        Ok(output) => output,
        // CI installs tcpdump (scripts/install-deps): a missing one fails, never skips unseen.
        Err(err) => panic!("tcpdump not runnable ({err}); scripts/install-deps installs it"),
    };
    assert!(
        output.status.success(),
        "tcpdump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{text}");
    text
}

/// Asserts that tcpdump's `text` holds each of `expected` and no complaint (nothing "bad").
pub fn check(text: &str, expected: &[&str]) {
    for e in expected {
        assert!(text.contains(e), "no {e:?} in:\n{text}");
    }
    assert!(!text.contains("bad"), "a complaint in:\n{text}");
}

/// Asserts that tcpdump reports `complaint` for `frame` (broken on purpose): what makes the
/// absence of complaints in [`check`] mean something.
pub fn check_complaint(frame: &[u8], complaint: &str) {
    let text = tcpdump(frame);
    assert!(text.contains(complaint), "no {complaint:?} in:\n{text}");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{prop_assert, prop_assert_eq};

    use super::*;

    #[test]
    fn checksum_of_an_ipv4_header() {
        // A well-known example header whose checksum is b861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&header]), 0xb861);
        assert_eq!(
            checksum(&[&header[..5], &header[5..]]),
            0xb861,
            "parts joined"
        );
        header[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert_eq!(checksum(&[&header]), 0, "verifies");
        assert_eq!(checksum(&[&[0xab]]), !0xab00, "odd length padded");
    }

    #[test]
    fn ipv6_frames_read_back_as_written() {
        let eth = Ethernet {
            dst: [0x33, 0x33, 0, 0, 0, 1],
            src: [2, 0, 0, 0, 0, 1],
            vlan_tci: Some(0x2005),
        };
        let ip = Ipv6 {
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1".parse().unwrap(),
            hop_limit: 255,
        };
        let mut message = vec![128, 0, 0, 0, 1, 2, 3];
        let sum = ip.checksum(58, &message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
        let frame = ip.frame(&eth, 58, &message);
        assert_eq!(frame.len(), 18 + 40 + message.len());
        assert_eq!(Ipv6::parse(&frame, 58), (eth, ip, &message[..]));
        assert_eq!(ip.checksum(58, &message), 0);
        assert_ne!(ip.checksum(17, &message), 0, "the pseudo-header counts");

        let untagged = Ethernet {
            vlan_tci: None,
            ..eth
        };
        let frame = untagged.frame(0x0800, &[1, 2]);
        assert_eq!(Ethernet::parse(&frame), (untagged, 0x0800, &[1, 2][..]));
    }

    #[test]
    #[should_panic(expected = "next header")]
    fn another_next_header_is_refused() {
        let ip = Ipv6 {
            src: Ipv6Addr::LOCALHOST,
            dst: Ipv6Addr::LOCALHOST,
            hop_limit: 1,
        };
        let eth = Ethernet {
            dst: [0; 6],
            src: [0; 6],
            vlan_tci: None,
        };
        Ipv6::parse(&ip.frame(&eth, 17, &[0; 8]), 58);
    }

    #[test]
    #[should_panic(expected = "appears more than once")]
    fn only_refuses_repeated_options() {
        let options = [(1u8, vec![1]), (2, vec![]), (1, vec![2])];
        assert_eq!(only(&options, 2), Some(&[][..]));
        assert_eq!(only(&options, 3), None);
        only(&options, 1);
    }

    proptest::proptest! {
        #[test]
        fn mutations_change_only_from_first_then_cut_or_extend(
            first in 0usize..10,
            mutation in mutations(0..8, 0..4),
        ) {
            let original: Vec<u8> = (100..110).collect();
            let mut frame = original.clone();
            mutation.apply(&mut frame, first);
            let values: Vec<u8> = mutation.changes.iter().map(|(_, byte)| *byte).collect();
            for (at, byte) in frame.iter().take(10).enumerate() {
                let changed = *byte != original[at];
                prop_assert!(!changed || (at >= first && values.contains(byte)));
            }
            if mutation.tail.is_empty() {
                prop_assert!(frame.len() <= 10);
            } else {
                prop_assert_eq!(&frame[10..], &mutation.tail[..]);
            }
        }
    }

    #[test]
    fn tcpdump_verifies_and_complains() {
        let eth = Ethernet {
            dst: [0x33, 0x33, 0, 0, 0, 1],
            src: [2, 0, 0, 0, 0, 1],
            vlan_tci: None,
        };
        let ip = Ipv6 {
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1".parse().unwrap(),
            hop_limit: 1,
        };
        let mut udp = vec![0x30, 0x39, 0x30, 0x3a, 0, 9, 0, 0, 7];
        let sum = ip.checksum(17, &udp);
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        let good = ip.frame(&eth, 17, &udp);
        let text = tcpdump(&good);
        check(&text, &["fe80::1.12345 > ff02::1.12346", "[udp sum ok]"]);
        let mut broken = good.clone();
        *broken.last_mut().unwrap() ^= 0xff;
        check_complaint(&broken, "bad udp cksum");
        let quiet = std::panic::catch_unwind(|| check_complaint(&good, "bad udp cksum"));
        assert!(quiet.is_err(), "a complaint wanted about a correct frame");
    }

    #[test]
    #[should_panic(expected = "a complaint")]
    fn check_refuses_complaints() {
        check("[udp sum ok] x", &["sum ok"]);
        check("[bad udp cksum 0x1234]", &[]);
    }

    #[test]
    #[should_panic(expected = "no \"sum ok\"")]
    fn check_wants_everything_expected() {
        check("[udp sum ok] x", &["udp", "x"]);
        check("[udp cksum]", &["udp", "sum ok"]);
    }
}
