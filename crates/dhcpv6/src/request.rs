//! Parsing a client's DHCPv6 message out of the Ethernet frame the switch sent to the agent.

use std::net::Ipv6Addr;

use crate::options::{self, CLIENT_ID, IA_NA, IA_PD, IA_TA, IAADDR, ORO, RAPID_COMMIT, SERVER_ID};
use crate::{CLIENT_PORT, Dhcpv6Error, Ia, IaKind, MessageType, Request, SERVER_PORT};

const UDP_HEADER_LEN: usize = 8;
/// msg-type and transaction-id.
const MESSAGE_HEADER_LEN: usize = 4;
/// RFC 8415 section 11.1: a DUID is a 2-byte type and at most 128 bytes more; one with nothing
/// after the type identifies nothing.
const DUID_LEN: std::ops::RangeInclusive<usize> = 3..=130;
const RELAY_FORW: u8 = 12;
const RELAY_REPL: u8 = 13;

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn bad_length(code: u16, len: usize) -> Dhcpv6Error {
    Dhcpv6Error::BadOptionLength { code, len }
}

/// An identity association option's fixed part length and kind.
fn ia_layout(code: u16) -> Option<(IaKind, usize)> {
    match code {
        IA_NA => Some((IaKind::Na, 12)),
        IA_TA => Some((IaKind::Ta, 4)),
        IA_PD => Some((IaKind::Pd, 12)),
        _ => None,
    }
}

/// An IA option: its IAID and the addresses of its IAADDR options (other options inside it are
/// skipped).
fn parse_ia(code: u16, kind: IaKind, fixed: usize, value: &[u8]) -> Result<Ia, Dhcpv6Error> {
    if value.len() < fixed {
        return Err(bad_length(code, value.len()));
    }
    let mut addresses = Vec::new();
    if kind != IaKind::Pd {
        for (inner, body) in options::parse(&value[fixed..])? {
            if inner == IAADDR {
                // Address, preferred and valid lifetimes, then options.
                let octets: [u8; 16] = body
                    .get(..16)
                    .filter(|_| body.len() >= 24)
                    .and_then(|a| a.try_into().ok())
                    .ok_or(bad_length(IAADDR, body.len()))?;
                addresses.push(Ipv6Addr::from(octets));
            }
        }
    }
    Ok(Ia {
        kind,
        iaid: be32(value),
        addresses,
    })
}

/// Parses a client frame: Ethernet II (one 802.1Q tag is skipped), IPv6 without extension
/// headers from a unicast address, UDP 546 -> 547 (checksum not checked: a guest's checksum
/// offload may leave it unfinished), a DHCPv6 client or server message (relayed messages are
/// refused). Option 1 and 2 (DUIDs) must be 3 to 130 bytes; the first of each counts. Server
/// message types are returned as parsed; [`crate::answer`] ignores them. Never panics.
pub fn parse_request(frame: &[u8]) -> Result<Request, Dhcpv6Error> {
    let packet = ndp::parse_ipv6(frame)?;
    if packet.next_header != ndp::NEXT_HEADER_UDP {
        return Err(Dhcpv6Error::NotUdp(packet.next_header));
    }
    if packet.src.is_unspecified() || packet.src.is_multicast() {
        return Err(Dhcpv6Error::BadSource(packet.src));
    }
    let udp = packet.payload;
    if udp.len() < UDP_HEADER_LEN {
        return Err(Dhcpv6Error::TooShort("UDP header"));
    }
    let be16 = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
    let (src, dst) = (be16(0), be16(2));
    if (src, dst) != (CLIENT_PORT, SERVER_PORT) {
        return Err(Dhcpv6Error::WrongPorts { src, dst });
    }
    let udp_len = usize::from(be16(4));
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return Err(Dhcpv6Error::BadUdpLength(udp_len));
    }
    let msg = &udp[UDP_HEADER_LEN..udp_len];
    if msg.len() < MESSAGE_HEADER_LEN {
        return Err(Dhcpv6Error::TooShort("DHCPv6 message"));
    }
    let kind = match msg[0] {
        RELAY_FORW | RELAY_REPL => return Err(Dhcpv6Error::Relayed(msg[0])),
        code => MessageType::from_code(code).ok_or(Dhcpv6Error::UnknownMessageType(code))?,
    };

    let mut request = Request {
        kind,
        transaction_id: be32(&[0, msg[1], msg[2], msg[3]]),
        eth_src: packet.eth_src,
        vlan_tci: packet.vlan_tci,
        src: packet.src,
        client_id: None,
        server_id: None,
        ias: Vec::new(),
        rapid_commit: false,
        requested_options: Vec::new(),
    };
    for (code, value) in options::parse(&msg[MESSAGE_HEADER_LEN..])? {
        match code {
            CLIENT_ID | SERVER_ID => {
                if !DUID_LEN.contains(&value.len()) {
                    return Err(bad_length(code, value.len()));
                }
                let slot = if code == CLIENT_ID {
                    &mut request.client_id
                } else {
                    &mut request.server_id
                };
                slot.get_or_insert_with(|| value.to_vec());
            }
            ORO => {
                let codes = value.chunks_exact(2);
                if !codes.remainder().is_empty() {
                    return Err(bad_length(code, value.len()));
                }
                request.requested_options =
                    codes.map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            }
            RAPID_COMMIT => request.rapid_commit = true,
            _ => {
                if let Some((kind, fixed)) = ia_layout(code) {
                    request.ias.push(parse_ia(code, kind, fixed, value)?);
                }
            }
        }
    }
    Ok(request)
}
