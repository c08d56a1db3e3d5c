//! Answers to new connections that a load-balancer listener cannot take (no member available),
//! as a host without a listening socket answers: a TCP reset (RFC 9293 3.10.7.1), or for UDP an
//! ICMP port unreachable ([`icmp::port_unreachable`]). They come from the packet's destination
//! (the VIP and the listener's port), MACs swapped. IPv4 only: other frames get no answer.

use std::net::{IpAddr, Ipv4Addr};

use ndp::checksum::internet_checksum as checksum;

use crate::icmp;

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TTL: u8 = 64;

/// TCP flags.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// An IPv4 packet read from a frame: its source, destination, protocol, and its payload (the
/// Ethernet padding left out).
struct Ipv4<'a> {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload: &'a [u8],
}

fn ipv4(frame: &[u8]) -> Option<Ipv4<'_>> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(ETH_HLEN..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
    // Version 4, a whole header, not a later fragment (no transport header to answer).
    let fragment_offset = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?) & 0x1fff;
    if ip[0] >> 4 != 4 || ihl < IPV4_HLEN || total < ihl || fragment_offset != 0 {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv4Addr> {
        Some(Ipv4Addr::from(
            <[u8; 4]>::try_from(ip.get(at..at + 4)?).ok()?,
        ))
    };
    Some(Ipv4 {
        src: addr(12)?,
        dst: addr(16)?,
        protocol: ip[9],
        payload: ip.get(ihl..total)?,
    })
}

/// Where a frame goes: its destination address, IP protocol and destination port (TCP or UDP
/// over IPv4).
pub fn destination(frame: &[u8]) -> Option<(IpAddr, u8, u16)> {
    let ip = ipv4(frame)?;
    if !matches!(ip.protocol, IPPROTO_TCP | IPPROTO_UDP) {
        return None;
    }
    let port = u16::from_be_bytes(ip.payload.get(2..4)?.try_into().ok()?);
    Some((IpAddr::V4(ip.dst), ip.protocol, port))
}

/// The refusal of `frame` (a TCP segment or a UDP datagram over IPv4), from its destination:
/// `None` for anything else, for a TCP reset (never answered), and for a packet from an address
/// that cannot be answered (unspecified, broadcast, multicast, or a group MAC).
pub fn answer(frame: &[u8]) -> Option<Vec<u8>> {
    let ip = ipv4(frame)?;
    let src_mac = frame.get(6..12)?;
    if src_mac[0] & 1 != 0
        || ip.src.is_unspecified()
        || ip.src.is_broadcast()
        || ip.src.is_multicast()
        || ip.dst.is_multicast()
        || ip.dst.is_broadcast()
    {
        return None;
    }
    match ip.protocol {
        IPPROTO_TCP => reset(frame, &ip),
        IPPROTO_UDP => {
            let mac = icmp::destination_mac(frame)?;
            icmp::port_unreachable(frame, mac, IpAddr::V4(ip.dst))
        }
        _ => None,
    }
}

/// The reset answering a TCP segment for which there is no connection (RFC 9293 3.10.7.1):
/// a segment with ACK gets `<SEQ=SEG.ACK><CTL=RST>`, any other (a SYN)
/// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, SYN and FIN counting one each in SEG.LEN.
fn reset(frame: &[u8], ip: &Ipv4<'_>) -> Option<Vec<u8>> {
    let tcp = ip.payload;
    let data_offset = usize::from(*tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    if data_offset < TCP_HLEN || tcp.len() < data_offset || flags & RST != 0 {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes(tcp[at..at + 4].try_into().unwrap());
    let (seq, ack, answer_flags) = if flags & ACK != 0 {
        (word(8), 0, RST)
    } else {
        let len = (tcp.len() - data_offset) as u32
            + u32::from(flags & SYN != 0)
            + u32::from(flags & FIN != 0);
        (0, word(4).wrapping_add(len), RST | ACK)
    };
    let mut out = Vec::with_capacity(ETH_HLEN + IPV4_HLEN + TCP_HLEN);
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&[0x08, 0x00]);
    // Don't fragment, as hosts send their resets.
    let mut header = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, TTL, IPPROTO_TCP, 0, 0];
    header[2..4].copy_from_slice(&((IPV4_HLEN + TCP_HLEN) as u16).to_be_bytes());
    header.extend_from_slice(&ip.dst.octets());
    header.extend_from_slice(&ip.src.octets());
    let sum = checksum(&[&header]);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut segment = Vec::with_capacity(TCP_HLEN);
    segment.extend_from_slice(&tcp[2..4]);
    segment.extend_from_slice(&tcp[0..2]);
    segment.extend_from_slice(&seq.to_be_bytes());
    segment.extend_from_slice(&ack.to_be_bytes());
    segment.extend_from_slice(&[(TCP_HLEN as u8 / 4) << 4, answer_flags, 0, 0, 0, 0, 0, 0]);
    let pseudo = [0, IPPROTO_TCP, 0, TCP_HLEN as u8];
    let sum = checksum(&[&ip.dst.octets(), &ip.src.octets(), &pseudo, &segment]);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&segment);
    Some(out)
}

#[cfg(test)]
mod tests {
    use frame_check::{be16, be32, check, checksum, tcpdump};

    use super::*;

    const CLIENT_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0xc1];
    const VIP_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 0x99];
    const CLIENT: [u8; 4] = [10, 0, 1, 11];
    const VIP: [u8; 4] = [10, 0, 1, 100];

    /// A frame from the client to the VIP carrying `transport` (protocol `protocol`), padded
    /// to Ethernet's 60 bytes, with a valid IP header checksum.
    fn frame(protocol: u8, transport: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&VIP_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 63, protocol, 0, 0];
        ip[2..4].copy_from_slice(&((IPV4_HLEN + transport.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&CLIENT);
        ip.extend_from_slice(&VIP);
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(transport);
        f.resize(f.len().max(60), 0);
        f
    }

    /// A TCP segment 40000 → 80 with `flags`, sequence number `seq`, ack `ack` and `payload`
    /// (the client's checksum is left zero: nothing here reads it).
    fn tcp(flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&40000u16.to_be_bytes());
        t.extend_from_slice(&80u16.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }

    fn udp() -> Vec<u8> {
        let payload = b"query";
        let mut u = Vec::new();
        u.extend_from_slice(&40001u16.to_be_bytes());
        u.extend_from_slice(&53u16.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// Checks the Ethernet and IPv4 headers of an answer to the client from the VIP; returns
    /// the IP payload.
    fn from_vip(answer: &[u8], protocol: u8) -> &[u8] {
        assert_eq!(&answer[0..6], &CLIENT_MAC, "to the client's MAC");
        assert_eq!(&answer[6..12], &VIP_MAC, "from the MAC it was sent to");
        assert_eq!(be16(answer, 12), 0x0800);
        let ip = &answer[ETH_HLEN..];
        assert_eq!(ip[0], 0x45);
        assert_eq!(usize::from(be16(ip, 2)), ip.len(), "total length");
        assert_eq!(ip[8], 64, "TTL");
        assert_eq!(ip[9], protocol);
        assert_eq!(checksum(&[&ip[..IPV4_HLEN]]), 0, "IP header checksum");
        assert_eq!(&ip[12..16], &VIP, "from the VIP");
        assert_eq!(&ip[16..20], &CLIENT, "to the client");
        &ip[IPV4_HLEN..]
    }

    fn tcp_checksum(segment: &[u8]) -> u16 {
        let len = (segment.len() as u16).to_be_bytes();
        checksum(&[&VIP, &CLIENT, &[0, IPPROTO_TCP], &len, segment])
    }

    #[test]
    fn a_syn_is_reset_from_the_vip() {
        let syn = frame(IPPROTO_TCP, &tcp(SYN, 0x1234_5678, 0, &[]));
        assert_eq!(
            destination(&syn),
            Some((IpAddr::V4(VIP.into()), IPPROTO_TCP, 80))
        );
        let answer = answer(&syn).expect("a reset");
        let segment = from_vip(&answer, IPPROTO_TCP);
        assert_eq!(segment.len(), TCP_HLEN);
        assert_eq!(be16(segment, 0), 80, "from the listener's port");
        assert_eq!(be16(segment, 2), 40000, "to the client's");
        assert_eq!(be32(segment, 4), 0, "seq");
        assert_eq!(be32(segment, 8), 0x1234_5679, "ack: the SYN's seq + 1");
        assert_eq!(segment[12] >> 4, 5, "data offset");
        assert_eq!(segment[13], RST | ACK);
        assert_eq!(tcp_checksum(segment), 0, "TCP checksum");
        check(
            &tcpdump(&answer),
            &[
                "10.0.1.100.80 > 10.0.1.11.40000",
                "Flags [R.]",
                "ack 305419897",
                "ttl 64",
                "cksum 0x",
            ],
        );
    }

    #[test]
    fn a_syn_with_data_is_acknowledged_with_its_data() {
        let syn = frame(IPPROTO_TCP, &tcp(SYN, 0xffff_fffe, 0, b"hello"));
        let answer = answer(&syn).expect("a reset");
        let segment = from_vip(&answer, IPPROTO_TCP);
        assert_eq!(be32(segment, 8), 4, "seq + 1 + 5, wrapped");
        assert_eq!(tcp_checksum(segment), 0);
    }

    #[test]
    fn a_segment_with_ack_is_reset_at_its_ack() {
        let segment = frame(IPPROTO_TCP, &tcp(ACK, 7, 0xabcd_0001, &[]));
        let answer = answer(&segment).expect("a reset");
        let segment = from_vip(&answer, IPPROTO_TCP);
        assert_eq!(be32(segment, 4), 0xabcd_0001, "seq: the segment's ack");
        assert_eq!(segment[13], RST);
        assert_eq!(tcp_checksum(segment), 0);
    }

    #[test]
    fn a_reset_is_not_answered() {
        assert!(answer(&frame(IPPROTO_TCP, &tcp(RST | ACK, 1, 1, &[]))).is_none());
        assert!(answer(&frame(IPPROTO_TCP, &tcp(RST, 1, 0, &[]))).is_none());
    }

    #[test]
    fn a_udp_datagram_gets_port_unreachable_from_the_vip() {
        let datagram = frame(IPPROTO_UDP, &udp());
        assert_eq!(
            destination(&datagram),
            Some((IpAddr::V4(VIP.into()), IPPROTO_UDP, 53))
        );
        let answer = answer(&datagram).expect("port unreachable");
        let icmp = from_vip(&answer, 1);
        assert_eq!((icmp[0], icmp[1]), (3, 3), "port unreachable");
        assert_eq!(checksum(&[icmp]), 0, "ICMP checksum");
        let quoted = &icmp[8..];
        let original_len = IPV4_HLEN + udp().len();
        assert_eq!(
            quoted,
            &datagram[ETH_HLEN..ETH_HLEN + original_len],
            "the datagram quoted, without the Ethernet padding"
        );
        check(
            &tcpdump(&answer),
            &[
                "10.0.1.100 > 10.0.1.11",
                "udp port 53 unreachable",
                "ttl 64",
            ],
        );
    }

    /// A chassis with client C1 (port 10) and a TCP listener on VIP:80 whose pool has no
    /// member; the cookie of the flow that sends new connections to the agent.
    fn no_member() -> (pipeline::Pipeline, u64) {
        use pipeline::{Input, Pipeline};
        use serde_json::json;
        const NET: &str = "aaaaaaaa-0000-4000-8000-0000000000a1";
        const SUBNET: &str = "5aaaaaaa-0000-4000-8000-0000000000a1";
        const LB: &str = "1b000000-0000-4000-8000-0000000000b1";
        const C1: &str = "c1000000-0000-4000-8000-0000000000c1";
        let mut p = Pipeline::new("ch1");
        let mut put = |key: String, v: serde_json::Value| {
            p.apply(Input::Object(key, Some(v)));
        };
        put(
            format!("/r/networks/{NET}"),
            json!({"id": NET, "provider:network_type": "vxlan", "provider:segmentation_id": 100}),
        );
        put(
            format!("/r/subnets/{SUBNET}"),
            json!({"id": SUBNET, "network_id": NET, "cidr": "10.0.1.0/24"}),
        );
        put(
            format!("/r/ports/{C1}"),
            json!({"id": C1, "network_id": NET, "mac_address": "fa:16:3e:00:00:c1",
                "fixed_ips": [{"ip_address": "10.0.1.11"}], "binding:host_id": "ch1",
                "admin_state_up": true, "device_owner": "compute:nova",
                "port_security_enabled": false}),
        );
        put(
            format!("/r/loadbalancers/{LB}"),
            json!({"id": LB, "name": "web", "vip_address": "10.0.1.100",
                "vip_network_id": NET, "vip_subnet_id": SUBNET, "admin_state_up": true}),
        );
        put(
            "/r/listeners/1e000000-0000-4000-8000-0000000000b1".into(),
            json!({"id": "1e000000-0000-4000-8000-0000000000b1", "_loadbalancer_id": LB,
                "protocol": "TCP", "protocol_port": 80, "admin_state_up": true}),
        );
        p.apply(Input::Vif(C1.into(), Some(10)));
        let punt = pipeline::apps::Punt::Reject.action();
        let cookie = p
            .flows()
            .find(|f| f.instructions.apply.contains(&punt))
            .expect("a flow sending new connections to the agent")
            .cookie;
        (p, cookie)
    }

    #[test]
    fn the_handler_resets_a_connection_to_a_listener_without_members() {
        use crate::punt::{Handlers, Punted, Reply};
        use pipeline::apps::Punt;
        let (p, cookie) = no_member();
        let mut handlers = Handlers::default();
        let syn = frame(IPPROTO_TCP, &tcp(SYN, 0x1234_5678, 0, &[]));
        let punted = |frame| Punted {
            reason: Punt::Reject,
            cookie,
            in_port: 10,
            metadata: None,
            next_hop: None,
            frame,
        };
        let Reply(frames) = handlers.answer(&p, &punted(&syn)).expect("a reset");
        assert_eq!(frames.len(), 1);
        let (actions, reset) = &frames[0];
        assert_eq!(
            actions,
            &vec![openflow::Action::Output {
                port: 10,
                max_len: 0
            }],
            "back out of the port it came in on"
        );
        assert_eq!(reset, &answer(&syn).unwrap());
        // Only connections to the listener the cookie names are refused.
        let mut other_port = syn.clone();
        other_port[ETH_HLEN + IPV4_HLEN + 3] = 81;
        assert!(handlers.answer(&p, &punted(&other_port)).is_none());
        assert!(
            handlers
                .answer(
                    &p,
                    &Punted {
                        cookie: 0,
                        ..punted(&syn)
                    }
                )
                .is_none()
        );
        // Rate-limited as ICMP errors are: 100 per port and second.
        let answered = (0..200)
            .filter(|_| handlers.answer(&p, &punted(&syn)).is_some())
            .count();
        assert_eq!(answered, 99, "one of the 100 was answered above");
    }

    #[test]
    fn other_frames_get_no_answer() {
        let mut v6 = frame(IPPROTO_UDP, &udp());
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(answer(&v6).is_none() && destination(&v6).is_none());
        let icmp_echo = frame(1, &[8, 0, 0, 0, 0, 1, 0, 1]);
        assert!(answer(&icmp_echo).is_none() && destination(&icmp_echo).is_none());
        let mut later_fragment = frame(IPPROTO_UDP, &udp());
        later_fragment[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&[0, 10]);
        assert!(answer(&later_fragment).is_none());
        let mut broadcast_source = frame(IPPROTO_UDP, &udp());
        broadcast_source[ETH_HLEN + 12..ETH_HLEN + 16].copy_from_slice(&[255; 4]);
        assert!(answer(&broadcast_source).is_none());
        let truncated = frame(IPPROTO_TCP, &tcp(SYN, 1, 0, &[]));
        assert!(answer(&truncated[..ETH_HLEN + IPV4_HLEN + 10]).is_none());
    }
}
