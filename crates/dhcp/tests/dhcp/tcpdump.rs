//! Golden check: tcpdump decodes a built OFFER (written to a pcap file) without complaints.

use std::process::Command;

use dhcp::{MessageType, build_reply, parse_request};

use crate::builder::{Client, lease};

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

/// What `tcpdump -nn -vv` prints for `frame`, or None when tcpdump cannot be run. (`-vv`, not
/// `-v`: tcpdump 4.99 verifies UDP checksums only from `-vv` on.)
fn tcpdump(frame: &[u8]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frame.pcap");
    std::fs::write(&path, pcap(frame)).unwrap();
    let output = match Command::new("tcpdump")
        .args(["-nn", "-vv", "-r"])
        .arg(&path)
        .output()
    {
        Ok(output) => output,
        Err(err) => {
            eprintln!("note: tcpdump not runnable ({err}); golden check skipped");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "tcpdump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{text}");
    Some(text)
}

#[test]
fn tcpdump_decodes_the_offer() {
    let mut client = Client::new(1, 0xabcd_0001).option(61, &[1, 2, 3, 4, 5, 6, 7]);
    client.flags = 0x8000;
    let req = parse_request(&client.frame()).unwrap();
    let mut lease = lease();
    lease.routes = vec![(
        "10.1.0.0/16".parse().unwrap(),
        dhcp::Ipv4Addr::new(10, 0, 0, 254),
    )];
    let frame = build_reply(&req, MessageType::Offer, &lease);
    let Some(text) = tcpdump(&frame) else { return };
    for expected in [
        "DHCP-Message (53), length 1: Offer",
        "Subnet-Mask (1), length 4: 255.255.255.0",
        "10.0.0.2.67 > 255.255.255.255.68",
        "Your-IP 10.0.0.5",
        "(10.1.0.0/16:10.0.0.254),(default:10.0.0.1)",
        "[udp sum ok]",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    for complaint in ["bad cksum", "[bad udp cksum"] {
        assert!(!text.contains(complaint), "{complaint:?} in:\n{text}");
    }

    // The absence of complaints means something: tcpdump does notice broken checksums.
    let mut bad_udp = frame.clone();
    bad_udp[14 + 20 + 8 + 4] ^= 0xff; // a byte of the xid
    let Some(text) = tcpdump(&bad_udp) else {
        return;
    };
    assert!(text.contains("[bad udp cksum"), "{text}");
    let mut bad_ip = frame;
    bad_ip[14 + 8] ^= 0x01; // the TTL
    let Some(text) = tcpdump(&bad_ip) else { return };
    assert!(text.contains("bad cksum"), "{text}");
}

#[test]
fn tcpdump_decodes_network_boot_extras() {
    let req = parse_request(&Client::new(1, 7).frame()).unwrap();
    let mut lease = lease();
    lease.extra = [
        ("server-ip-address", "192.0.2.9"),
        ("tftp-server", "192.0.2.9"),
        ("bootfile-name", "pxelinux.0"),
        ("domain-search", "eng.example.org,example.org"),
        ("dns-server", ""),
    ]
    .iter()
    .map(|(name, value)| dhcp::ExtraOption::parse(name, value).unwrap())
    .collect();
    let frame = build_reply(&req, MessageType::Offer, &lease);
    let Some(text) = tcpdump(&frame) else { return };
    for expected in [
        "Server-IP 192.0.2.9",
        "sname \"192.0.2.9\"",
        "file \"pxelinux.0\"",
        "TFTP (66), length 9: \"192.0.2.9\"",
        "BF (67), length 10: \"pxelinux.0\"",
        // This tcpdump does not decode the domain search list (3 + 1 + 7 + 1 + 3 + 1 + 1 bytes
        // for the first name, 13 for the second).
        "(119), length 30",
        "[udp sum ok]",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert!(!text.contains("Domain-Name-Server"), "{text}");
}
