//! Parsing a client's DHCP message out of the Ethernet frame the switch sent to the agent.

use std::ops::Range;

use crate::bootp;
use crate::options::{self, Options};
use crate::{DhcpError, Ipv4Addr, MessageType, Request, wire};

/// A fixed-size field of a message at least [`bootp::OPTIONS`] bytes long.
fn field<const N: usize>(msg: &[u8], range: Range<usize>) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&msg[range]);
    out
}

/// Parses a client frame: Ethernet II (one 802.1Q tag is skipped), IPv4 (options allowed; header
/// checksum verified; fragments refused), UDP 68 -> 67 (checksum ignored), a BOOTREQUEST for
/// Ethernet hardware addresses with the magic cookie and a DHCP message type.
///
/// Server message types (OFFER, ACK, NAK) in a BOOTREQUEST are returned as parsed; [`crate::answer`]
/// ignores them. Returns an error for anything else and never panics.
pub fn parse_request(frame: &[u8]) -> Result<Request, DhcpError> {
    let dgram = wire::parse_frame(frame)?;
    let msg = dgram.payload;
    if msg.len() < bootp::OPTIONS {
        return Err(DhcpError::TooShort("BOOTP message"));
    }
    if msg[bootp::OP] != bootp::OP_REQUEST {
        return Err(DhcpError::NotBootRequest(msg[bootp::OP]));
    }
    let (htype, hlen) = (msg[bootp::HTYPE], msg[bootp::HLEN]);
    if (htype, hlen) != (bootp::HTYPE_ETHERNET, bootp::HLEN_ETHERNET) {
        return Err(DhcpError::UnsupportedHardware { htype, hlen });
    }
    let cookie = field(msg, bootp::COOKIE);
    if cookie != bootp::MAGIC_COOKIE {
        return Err(DhcpError::BadMagicCookie(cookie));
    }

    let opts = Options::parse(
        &msg[bootp::OPTIONS..],
        &msg[bootp::SNAME],
        &msg[bootp::FILE],
    )?;
    let kind = match opts.get(options::MESSAGE_TYPE).as_deref() {
        None => return Err(DhcpError::NoMessageType),
        Some(&[code]) => MessageType::from_code(code).ok_or(DhcpError::UnknownMessageType(code))?,
        Some(other) => {
            return Err(DhcpError::BadOptionLength {
                code: options::MESSAGE_TYPE,
                len: other.len(),
            });
        }
    };
    let client_id = opts.get(options::CLIENT_ID);
    // RFC 2132 section 9.14: the client identifier is at least 2 bytes (type and identifier).
    if let Some(id) = client_id.as_ref().filter(|id| id.len() < 2) {
        return Err(DhcpError::BadOptionLength {
            code: options::CLIENT_ID,
            len: id.len(),
        });
    }

    Ok(Request {
        kind,
        xid: u32::from_be_bytes(field(msg, bootp::XID)),
        flags: u16::from_be_bytes(field(msg, bootp::FLAGS)),
        ciaddr: Ipv4Addr::from(field::<4>(msg, bootp::CIADDR)),
        giaddr: Ipv4Addr::from(field::<4>(msg, bootp::GIADDR)),
        chaddr: field(msg, bootp::CHADDR),
        eth_src: dgram.eth_src,
        vlan_tci: dgram.vlan_tci,
        requested_ip: opts.ipv4(options::REQUESTED_IP)?,
        server_id: opts.ipv4(options::SERVER_ID)?,
        client_id,
        ipxe: opts.get(options::IPXE).is_some(),
    })
}
