//! Golden check: tcpdump decodes built replies (written to a pcap file) as intended, with a UDP
//! checksum it verifies.

use std::process::Command;

use dhcpv6::{answer, build_reply, parse_request};

use crate::builder::{Client, server};

/// A classic pcap file (microsecond timestamps, LINKTYPE_ETHERNET) holding one frame.
fn pcap(frame: &[u8]) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&0i32.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&65_535u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    let len = (frame.len() as u32).to_le_bytes();
    file.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&len);
    file.extend_from_slice(&len);
    file.extend_from_slice(frame);
    file
}

/// What `tcpdump -nn -vv` prints for `frame`, or None when tcpdump cannot be run.
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

fn frame(client: Client, stateful: bool) -> Vec<u8> {
    let req = parse_request(&client.frame()).unwrap();
    let server = server(stateful);
    build_reply(&req, &answer(&req, &server).unwrap(), &server)
}

#[test]
fn tcpdump_decodes_an_advertise() {
    let reply = frame(Client::new(1, 0xabcdef).ia_na(7, &[]), true);
    let Some(text) = tcpdump(&reply) else { return };
    for expected in [
        "fe80::77:79ff:fe76:1.547 > fe80::f816:3eff:fe12:3456.546",
        "[udp sum ok]",
        "dhcp6 advertise (xid=abcdef",
        "(client-ID hwaddr/time type 1 time 706427981 fa163e123456)",
        "(server-ID hwaddr type 1 027779760001)",
        "(IA_NA IAID:7 T1:43200 T2:69120 (IA_ADDR 2001:db8::5 pltime:86400 vltime:86400))",
        "(DNS-server 2001:db8::53 2001:db8::54)",
        "(DNS-search-list openstacklocal.)",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert!(!text.contains("bad"), "{text}");

    let mut broken = reply;
    let last = broken.len() - 1;
    broken[last] ^= 0xff;
    let Some(text) = tcpdump(&broken) else { return };
    assert!(text.contains("bad udp cksum"), "{text}");
}

#[test]
fn tcpdump_decodes_a_stateless_reply() {
    let reply = frame(Client::new(11, 0x10), false);
    let Some(text) = tcpdump(&reply) else { return };
    for expected in [
        "[udp sum ok]",
        "dhcp6 reply (xid=10 (client-ID",
        "(server-ID hwaddr type 1 027779760001) (DNS-server 2001:db8::53 2001:db8::54) \
         (DNS-search-list openstacklocal.))",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}
