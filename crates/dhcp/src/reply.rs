//! The server side: which message answers a request (RFC 2131 section 4.3) and the reply frame.

use crate::options::{self, put};
use crate::wire::{self, Framing};
use crate::{BROADCAST_FLAG, ExtraAction, Ipv4Addr, Ipv4Net, Lease, MessageType, Request, bootp};

/// What to answer, for a server that owns exactly this one binding:
///
/// * DISCOVER -> OFFER.
/// * REQUEST whose server identifier is ours (SELECTING) or absent (INIT-REBOOT, RENEWING,
///   REBINDING) -> ACK if the address it asks for (option 50, or `ciaddr` without option 50) is
///   `lease.ip`, NAK otherwise (also when it names no address at all).
/// * REQUEST whose server identifier is another server's -> nothing (the client chose that one).
/// * INFORM -> ACK (without an address or lease times).
/// * DECLINE, RELEASE and server message types -> nothing.
pub fn answer(req: &Request, lease: &Lease) -> Option<MessageType> {
    match req.kind {
        MessageType::Discover => Some(MessageType::Offer),
        MessageType::Request => {
            if req.server_id.is_some_and(|id| id != lease.server_ip) {
                return None;
            }
            let wanted = req.requested_ip.unwrap_or(req.ciaddr);
            Some(if wanted == lease.ip {
                MessageType::Ack
            } else {
                MessageType::Nak
            })
        }
        MessageType::Inform => Some(MessageType::Ack),
        _ => None,
    }
}

/// Builds the whole reply frame: Ethernet II (re-tagged like the request), IPv4 from
/// `lease.server_ip` with a correct header checksum, UDP 67 -> 68 with a correct checksum, and a
/// BOOTREPLY padded to at least 300 bytes.
///
/// `yiaddr` is `lease.ip` (0 for an INFORM's ACK and for a NAK). The reply goes to
/// 255.255.255.255 and Ethernet broadcast for a NAK; otherwise to `ciaddr` if the client has one
/// (INFORM, RENEWING); otherwise broadcast when the request has the broadcast flag, else to
/// `yiaddr` at the client's `chaddr`.
///
/// Options, in this order: 53, 54; unless NAK: 51, 58, 59 (not for INFORM), 1, 28, 3, 6, 15,
/// 12, 26, 121 (with the default route via `lease.router` added when `lease.routes` has none),
/// as changed by `lease.extra`; then the client identifier (61) echoed whenever the request had
/// one, and 255. Unless NAK, an extra `server-ip-address` goes in `siaddr`, and the boot file
/// name (67) and TFTP server name (66) the reply ends up with are also written to the `file`
/// and `sname` fields when they fit, for PXE clients that read only those.
pub fn build_reply(req: &Request, kind: MessageType, lease: &Lease) -> Vec<u8> {
    let inform = req.kind == MessageType::Inform;
    let nak = kind == MessageType::Nak;
    let yiaddr = if inform || nak {
        Ipv4Addr::UNSPECIFIED
    } else {
        lease.ip
    };
    // RFC 2131 section 4.1: a NAK is broadcast; a client with an address gets unicast there;
    // else the broadcast flag decides.
    let ip_dst = if nak {
        Ipv4Addr::BROADCAST
    } else if !req.ciaddr.is_unspecified() {
        req.ciaddr
    } else if req.flags & BROADCAST_FLAG != 0 {
        Ipv4Addr::BROADCAST
    } else if !yiaddr.is_unspecified() {
        yiaddr
    } else {
        Ipv4Addr::BROADCAST
    };
    let framing = Framing {
        eth_dst: if ip_dst == Ipv4Addr::BROADCAST {
            [0xff; 6]
        } else {
            req.chaddr
        },
        eth_src: lease.server_mac,
        vlan_tci: req.vlan_tci,
        ip_src: lease.server_ip,
        ip_dst,
    };

    let mut msg = vec![0; bootp::OPTIONS];
    msg[bootp::OP] = bootp::OP_REPLY;
    msg[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
    msg[bootp::HLEN] = bootp::HLEN_ETHERNET;
    msg[bootp::XID].copy_from_slice(&req.xid.to_be_bytes());
    msg[bootp::FLAGS].copy_from_slice(&req.flags.to_be_bytes());
    // RFC 2131 table 3: ciaddr is echoed in an ACK only.
    if kind == MessageType::Ack {
        msg[bootp::CIADDR].copy_from_slice(&req.ciaddr.octets());
    }
    msg[bootp::YIADDR].copy_from_slice(&yiaddr.octets());
    msg[bootp::GIADDR].copy_from_slice(&req.giaddr.octets());
    msg[bootp::CHADDR].copy_from_slice(&req.chaddr);
    msg[bootp::COOKIE].copy_from_slice(&bootp::MAGIC_COOKIE);

    put(&mut msg, options::MESSAGE_TYPE, &[kind.code()]);
    put(&mut msg, options::SERVER_ID, &lease.server_ip.octets());
    if !nak {
        let (config, next_server) = configuration(lease, !inform, req.ipxe);
        msg[bootp::SIADDR].copy_from_slice(&next_server.octets());
        for (code, field) in [
            (options::BOOTFILE_NAME, bootp::FILE),
            (options::TFTP_SERVER, bootp::SNAME),
        ] {
            // The field is a NUL-terminated string.
            if let Some((_, name)) = config
                .iter()
                .find(|(c, v)| *c == code && v.len() < field.len() && !v.contains(&0))
            {
                msg[field.start..field.start + name.len()].copy_from_slice(name);
            }
        }
        for (code, value) in &config {
            put(&mut msg, *code, value);
        }
    }
    if let Some(id) = &req.client_id {
        put(&mut msg, options::CLIENT_ID, id);
    }
    msg.push(options::END);
    if msg.len() < bootp::MIN_LEN {
        msg.resize(bootp::MIN_LEN, options::PAD);
    }
    wire::build_frame(&framing, &msg)
}

/// A text option's value: cut to one option's worth (255 bytes); empty text is left out, since
/// the text options have a minimum length of 1.
fn text(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    (!bytes.is_empty()).then(|| bytes[..bytes.len().min(usize::from(u8::MAX))].to_vec())
}

/// The configuration options 51, 58, 59 (when `lease_times`), 1, 28, 3, 6, 15, 12, 26 and 121
/// as `lease.extra` changes them (the extra options conditional on the `ipxe` tag apply when it
/// is `ipxe`), and `siaddr`.
fn configuration(lease: &Lease, lease_times: bool, ipxe: bool) -> (Vec<(u8, Vec<u8>)>, Ipv4Addr) {
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    if lease_times {
        let secs = u64::from(lease.lease_secs);
        // Both are below lease_secs, so they fit in u32.
        let t1 = (secs / 2) as u32;
        let t2 = (secs * 7 / 8) as u32;
        out.push((options::LEASE_TIME, lease.lease_secs.to_be_bytes().to_vec()));
        out.push((options::RENEWAL_TIME, t1.to_be_bytes().to_vec()));
        out.push((options::REBINDING_TIME, t2.to_be_bytes().to_vec()));
    }
    out.push((
        options::SUBNET_MASK,
        lease.subnet.netmask().octets().to_vec(),
    ));
    out.push((
        options::BROADCAST_ADDRESS,
        lease.subnet.broadcast().octets().to_vec(),
    ));
    if let Some(router) = lease.router {
        out.push((options::ROUTER, router.octets().to_vec()));
    }
    if !lease.dns.is_empty() {
        out.push((
            options::DNS_SERVERS,
            lease.dns.iter().flat_map(|ip| ip.octets()).collect(),
        ));
    }
    if let Some(domain) = lease.domain.as_deref().and_then(text) {
        out.push((options::DOMAIN_NAME, domain));
    }
    if let Some(hostname) = lease.hostname.as_deref().and_then(text) {
        out.push((options::HOSTNAME, hostname));
    }
    if let Some(mtu) = lease.mtu {
        out.push((options::INTERFACE_MTU, mtu.to_be_bytes().to_vec()));
    }
    if !lease.routes.is_empty() {
        // Clients that get option 121 ignore option 3 (RFC 3442), so the default route goes in too.
        let extra = lease
            .router
            .filter(|_| lease.routes.iter().all(|(dest, _)| dest.prefix_len() != 0))
            .map(|router| (Ipv4Net::default(), router));
        out.push((
            options::CLASSLESS_ROUTES,
            options::classless_routes(lease.routes.iter().chain(extra.as_ref())),
        ));
    }

    let mut next_server = Ipv4Addr::UNSPECIFIED;
    let unconditional = lease.extra.iter().filter(|e| e.ipxe.is_none());
    let tagged = lease.extra.iter().filter(|e| e.ipxe == Some(ipxe));
    for extra in unconditional.chain(tagged) {
        match &extra.action {
            ExtraAction::NextServer(ip) => next_server = *ip,
            ExtraAction::Omit(code) => out.retain(|(c, _)| c != code),
            ExtraAction::Set(code, _) if !lease_times && LEASE_TIMES.contains(code) => {}
            ExtraAction::Set(code, value) => match out.iter_mut().find(|(c, _)| c == code) {
                Some(slot) => slot.1.clone_from(value),
                None => out.push((*code, value.clone())),
            },
        }
    }
    (out, next_server)
}

/// The options an INFORM's ACK must not carry (RFC 2131 section 4.3.5).
const LEASE_TIMES: [u8; 3] = [
    options::LEASE_TIME,
    options::RENEWAL_TIME,
    options::REBINDING_TIME,
];
