//! The server side: which message answers a client's (RFC 8415 sections 16 and 18.3), and the
//! reply frame.

use std::net::Ipv6Addr;

use crate::options::{self, put};
use crate::{
    AddressLease, Answer, Binding, CLIENT_PORT, ExtraOption, Ia, IaAnswer, IaKind, MessageType,
    Request, SERVER_PORT, Server, StatusCode,
};

/// Hop limit of replies.
const HOP_LIMIT: u8 = 64;
/// Lifetimes meaning "forever" (RFC 8415 section 7.7).
const INFINITY: u32 = u32::MAX;

/// T1 and T2 for a preferred lifetime: 0.5 and 0.8 of it (RFC 8415 section 21.4).
fn renewal_times(preferred: u32) -> (u32, u32) {
    if preferred == INFINITY {
        return (INFINITY, INFINITY);
    }
    let p = u64::from(preferred);
    // Both are below `preferred`, so they fit.
    ((p / 2) as u32, (p * 4 / 5) as u32)
}

fn lease(binding: &Binding) -> AddressLease {
    AddressLease {
        address: binding.address,
        preferred_lifetime: binding.preferred_lifetime,
        valid_lifetime: binding.valid_lifetime,
    }
}

/// An IA carrying only a status code.
fn ia_status(ia: &Ia, status: StatusCode) -> IaAnswer {
    IaAnswer {
        kind: ia.kind,
        iaid: ia.iaid,
        t1: 0,
        t2: 0,
        addresses: Vec::new(),
        status: Some(status),
    }
}

/// The answer for one IA of a Solicit, Request, Renew or Rebind: an IA_NA gets the bound
/// address (and, unless `offer`, the other addresses the client holds in it, with lifetimes 0
/// so it stops using them); without a binding `none` says why not. IA_TA and IA_PD are not
/// served: NoBinding when `none` is, else NoAddrsAvail or NoPrefixAvail.
fn assign(ia: &Ia, binding: Option<&Binding>, none: StatusCode, offer: bool) -> IaAnswer {
    match (ia.kind, binding) {
        (IaKind::Na, Some(b)) => {
            let (t1, t2) = renewal_times(b.preferred_lifetime);
            let mut addresses = vec![lease(b)];
            if !offer {
                addresses.extend(ia.addresses.iter().filter(|a| **a != b.address).map(|a| {
                    AddressLease {
                        address: *a,
                        preferred_lifetime: 0,
                        valid_lifetime: 0,
                    }
                }));
            }
            IaAnswer {
                kind: IaKind::Na,
                iaid: ia.iaid,
                t1,
                t2,
                addresses,
                status: None,
            }
        }
        (IaKind::Na, None) => ia_status(ia, none),
        (IaKind::Ta | IaKind::Pd, _) if none == StatusCode::NoBinding => ia_status(ia, none),
        (IaKind::Ta, _) => ia_status(ia, StatusCode::NoAddrsAvail),
        (IaKind::Pd, _) => ia_status(ia, StatusCode::NoPrefixAvail),
    }
}

fn reply(status: Option<StatusCode>, ias: Vec<IaAnswer>, configuration: bool) -> Answer {
    Answer {
        kind: MessageType::Reply,
        rapid_commit: false,
        status,
        ias,
        configuration,
    }
}

/// What to answer, for a server owning `server.binding` (the same for every IA_NA of the
/// client: the port has one address on the subnet) or nothing:
///
/// * Solicit (with a Client Identifier and no Server Identifier) -> Advertise with each IA_NA
///   holding the bound address, or NoAddrsAvail without a binding; with Rapid Commit and a
///   binding for an IA_NA -> a committed Reply instead.
/// * Request, Renew (Server Identifier ours) and Rebind (none) -> Reply with the bound address
///   in each IA_NA and the client's other addresses there at lifetime 0. Without a binding:
///   NoAddrsAvail (Request), NoBinding (Renew), no answer (Rebind: another server may know).
/// * Confirm (no Server Identifier) -> Reply Success when every address in the client's IAs is
///   on the binding's prefix, NotOnLink otherwise; no answer without addresses or a binding.
/// * Release, Decline (Server Identifier ours) -> Reply Success (the binding is the port's fixed
///   address and stays); IAs the server has no binding for get NoBinding.
/// * Information-request (no IA; a Server Identifier, if any, ours) -> Reply with the
///   configuration only.
/// * Messages without a Client Identifier (except Information-request), with another server's
///   identifier, and server message types -> nothing.
///
/// Advertise and every Reply but those to Confirm, Release and Decline carry the configuration.
pub fn answer(req: &Request, server: &Server) -> Option<Answer> {
    let duid = server.duid();
    let ours = req.server_id.as_deref() == Some(duid.as_slice());
    let binding = server.binding.as_ref();
    if req.client_id.is_none() && req.kind != MessageType::InformationRequest {
        return None;
    }
    match req.kind {
        MessageType::Solicit if req.server_id.is_none() => {
            let commit = req.rapid_commit
                && binding.is_some()
                && req.ias.iter().any(|ia| ia.kind == IaKind::Na);
            let ias = req
                .ias
                .iter()
                .map(|ia| assign(ia, binding, StatusCode::NoAddrsAvail, !commit))
                .collect();
            Some(Answer {
                kind: if commit {
                    MessageType::Reply
                } else {
                    MessageType::Advertise
                },
                rapid_commit: commit,
                status: None,
                ias,
                configuration: true,
            })
        }
        MessageType::Request | MessageType::Renew if ours => {
            let none = if req.kind == MessageType::Request {
                StatusCode::NoAddrsAvail
            } else {
                StatusCode::NoBinding
            };
            let ias = req
                .ias
                .iter()
                .map(|ia| assign(ia, binding, none, false))
                .collect();
            Some(reply(None, ias, true))
        }
        MessageType::Rebind if req.server_id.is_none() && binding.is_some() => {
            let ias = req
                .ias
                .iter()
                .map(|ia| assign(ia, binding, StatusCode::NoBinding, false))
                .collect();
            Some(reply(None, ias, true))
        }
        MessageType::Confirm if req.server_id.is_none() => {
            let binding = binding?;
            let mut addresses = req.ias.iter().flat_map(|ia| &ia.addresses).peekable();
            addresses.peek()?;
            let status = if addresses.all(|a| binding.prefix.contains(a)) {
                StatusCode::Success
            } else {
                StatusCode::NotOnLink
            };
            Some(reply(Some(status), Vec::new(), false))
        }
        MessageType::Release | MessageType::Decline if ours => {
            let ias = req
                .ias
                .iter()
                .filter(|ia| ia.kind != IaKind::Na || binding.is_none())
                .map(|ia| ia_status(ia, StatusCode::NoBinding))
                .collect();
            Some(reply(Some(StatusCode::Success), ias, false))
        }
        MessageType::InformationRequest
            if req.ias.is_empty() && (ours || req.server_id.is_none()) =>
        {
            Some(reply(None, Vec::new(), true))
        }
        _ => None,
    }
}

fn put_status(out: &mut Vec<u8>, status: StatusCode) {
    let mut value = status.code().to_be_bytes().to_vec();
    value.extend_from_slice(status.message().as_bytes());
    put(out, options::STATUS_CODE, &value);
}

fn put_ia(out: &mut Vec<u8>, ia: &IaAnswer) {
    let mut value = ia.iaid.to_be_bytes().to_vec();
    let code = match ia.kind {
        IaKind::Na => options::IA_NA,
        IaKind::Ta => options::IA_TA,
        IaKind::Pd => options::IA_PD,
    };
    if ia.kind != IaKind::Ta {
        value.extend_from_slice(&ia.t1.to_be_bytes());
        value.extend_from_slice(&ia.t2.to_be_bytes());
    }
    for a in &ia.addresses {
        let mut addr = a.address.octets().to_vec();
        addr.extend_from_slice(&a.preferred_lifetime.to_be_bytes());
        addr.extend_from_slice(&a.valid_lifetime.to_be_bytes());
        put(&mut value, options::IAADDR, &addr);
    }
    if let Some(status) = ia.status {
        put_status(&mut value, status);
    }
    put(out, code, &value);
}

/// The configuration options: 23 and 24 as `server` gives them, as its extra options change
/// them.
fn configuration(server: &Server) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    if !server.dns.is_empty() {
        out.push((
            options::DNS_SERVERS,
            server.dns.iter().flat_map(Ipv6Addr::octets).collect(),
        ));
    }
    if let Some(list) = dhcp::encode_domain_names(server.domain_search.iter().map(String::as_str))
        .filter(|l| !l.is_empty())
    {
        out.push((options::DOMAIN_LIST, list));
    }
    for extra in &server.extra {
        match extra {
            ExtraOption::Omit(code) => out.retain(|(c, _)| c != code),
            ExtraOption::Set(code, value) => match out.iter_mut().find(|(c, _)| c == code) {
                Some(slot) => slot.1.clone_from(value),
                None => out.push((*code, value.clone())),
            },
        }
    }
    out
}

/// Builds the whole reply frame: Ethernet II from `server.mac` to the client's Ethernet source
/// (re-tagged like the request), IPv6 from the link-local address of `server.mac` to the
/// client's address, UDP 547 -> 546 with a correct checksum, and the message: type, the
/// client's transaction id, then Client Identifier (echoed when the client sent one), Server
/// Identifier, Rapid Commit, Status Code, the IAs, and (when `answer.configuration`) options 23,
/// 24 and the extra options.
pub fn build_reply(req: &Request, answer: &Answer, server: &Server) -> Vec<u8> {
    let mut msg = vec![answer.kind.code()];
    msg.extend_from_slice(&req.transaction_id.to_be_bytes()[1..]);
    if let Some(id) = &req.client_id {
        put(&mut msg, options::CLIENT_ID, id);
    }
    put(&mut msg, options::SERVER_ID, &server.duid());
    if answer.rapid_commit {
        put(&mut msg, options::RAPID_COMMIT, &[]);
    }
    if let Some(status) = answer.status {
        put_status(&mut msg, status);
    }
    for ia in &answer.ias {
        put_ia(&mut msg, ia);
    }
    if answer.configuration {
        for (code, value) in configuration(server) {
            put(&mut msg, code, &value);
        }
    }

    let framing = ndp::Ipv6Framing {
        eth_dst: req.eth_src,
        eth_src: server.mac,
        vlan_tci: req.vlan_tci,
        src: ndp::link_local(server.mac),
        dst: req.src,
        hop_limit: HOP_LIMIT,
    };
    let udp_len = u16::try_from(8 + msg.len()).unwrap_or(u16::MAX);
    let mut udp = Vec::with_capacity(8 + msg.len());
    udp.extend_from_slice(&SERVER_PORT.to_be_bytes());
    udp.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&msg);
    // 0 would mean "no checksum", which IPv6 forbids; its ones' complement twin is sent instead.
    let sum = match ndp::checksum::upper_layer_checksum(
        &framing.src,
        &framing.dst,
        ndp::NEXT_HEADER_UDP,
        &udp,
    ) {
        0 => 0xffff,
        sum => sum,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    ndp::build_ipv6(&framing, ndp::NEXT_HEADER_UDP, &udp)
}
