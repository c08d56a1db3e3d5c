//! A small connection tracker: enough of OVS' conntrack for pipelines to see `+new` on a
//! connection's first packet, `+est+rpl` for the reply direction of a committed connection,
//! `+est` in the original direction once a reply went through conntrack (as in OVS, where
//! `est` means "packets seen in both directions": before any reply, original-direction packets
//! of a committed connection are still `+new`), `ct_mark`/`ct_label` stored by
//! `ct(commit,exec(...))`, and NAT.
//!
//! Model: a connection is keyed by zone, IP protocol, addresses and ports in the original
//! direction, and has a reply key (the original one reversed, translated for NAT): a packet
//! belongs to it when its own key is one of the two. TCP, UDP and SCTP use their ports;
//! ICMP/ICMPv6 echo requests and replies use their identifier as both ports, so that a reply
//! belongs to its request's connection; other ICMP messages use (type, code) as ports. A TCP
//! packet with no connection is `+inv` unless it is a SYN without ACK/RST/FIN (what the
//! userspace datapath's TCP checker accepts as a new connection). Non-IP packets are
//! `+trk+inv`. Connections never expire; TCP state beyond "exists" is not tracked; ICMP errors
//! are not related to the connection of the packet they quote.
//!
//! NAT, as the userspace datapath (`lib/conntrack.c`) does it:
//!
//! * A connection committed by a `ct` with `nat(src=…)` or `nat(dst=…)` keeps a binding: its
//!   reply key is the translated tuple reversed (a reply to a source-translated connection is
//!   addressed to the translated source), so replies find the connection. The packet that
//!   commits it is translated. A bare `nat` commits no binding.
//! * Later packets of the connection are translated only by a `ct` with `nat` in its zone (a
//!   `ct` without `nat` translates nothing; `nat(src=…)`/`nat(dst=…)` on an existing connection
//!   act as a bare `nat`): the original direction as committed, the reply direction reversed
//!   (a reply to a source-translated connection has its destination translated back). A
//!   translated packet gets `+snat` or `+dnat`. A packet already translated in the zone (its
//!   `ct_state` has one of them, in the same `ct_zone`) is looked up by its reversed key and
//!   not translated again.
//! * The translated address: the original one when the range is absent or all-zero (then only
//!   a port collision is resolved), else the range's only address, or one chosen by a hash of
//!   the connection — ours, deterministic; OVS hashes with a random basis unless `persistent`.
//!   A range of the other address family is refused (undefined in OVS).
//! * Ports (TCP, UDP, SCTP, and the ICMP — not ICMPv6 — echo identifier on both sides): the
//!   reply key must not be any connection's key or reply key in the zone. Source NAT without a
//!   port range, and destination NAT, keep the source port if they can, otherwise take the
//!   next free one (wrapping) in its class: 1–511, 600–1023 or 1024–65535. With a port range,
//!   source NAT starts at a hashed offset in it; destination NAT picks the destination port
//!   that way, then falls back to changing the source port. OVS tries at most 128 ports in
//!   order, then restarts at random points; we try the whole range in order. Other protocols
//!   keep their ports. When no tuple is free the connection is not committed (OVS: "Unable to
//!   NAT due to tuple space exhaustion").
//! * With [`Conntrack::force_state`], a committed connection is found in its original
//!   direction only, so only that direction is translated.
//!
//! [`Conntrack::force_state`] makes every IP packet take a given state instead, whatever the
//! table holds (as `ofproto/trace --ct-next` does): to see what the flows do to a packet of an
//! established connection, a reply, or an invalid one without sending the packets before it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use openflow::Field;
use openflow::action::{Nat, NatAddr};
use openflow::matching::eth_type;

use crate::packet::{Packet, ip_proto, tcp_flags};
use crate::sim::fnv1a;

/// `ct_state` bits.
pub mod ct_state {
    /// Start of a new connection.
    pub const NEW: u32 = 0x01;
    /// Part of an established connection.
    pub const EST: u32 = 0x02;
    /// Related to an established connection.
    pub const REL: u32 = 0x04;
    /// Reply direction.
    pub const RPL: u32 = 0x08;
    /// Invalid.
    pub const INV: u32 = 0x10;
    /// Tracked.
    pub const TRK: u32 = 0x20;
    /// Source address/port translated.
    pub const SNAT: u32 = 0x40;
    /// Destination address/port translated.
    pub const DNAT: u32 = 0x80;
}

/// A connection's identity in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Conntrack zone.
    pub zone: u16,
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (see the module docs for ICMP).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl ConnKey {
    /// The key of the packet's own direction in `zone`, if it is IP.
    pub fn of(packet: &Packet, zone: u16) -> Option<ConnKey> {
        let (src, dst) = match packet.eth_type() {
            eth_type::IPV4 => (
                IpAddr::from(Ipv4Addr::from(packet.get(Field::Ipv4Src)? as u32)),
                IpAddr::from(Ipv4Addr::from(packet.get(Field::Ipv4Dst)? as u32)),
            ),
            eth_type::IPV6 => (
                IpAddr::from(Ipv6Addr::from(packet.get(Field::Ipv6Src)?)),
                IpAddr::from(Ipv6Addr::from(packet.get(Field::Ipv6Dst)?)),
            ),
            _ => return None,
        };
        let proto = packet.get(Field::IpProto)? as u8;
        let get16 = |f: Field| packet.get(f).unwrap_or(0) as u16;
        let (sport, dport) = match (proto, packet.icmp_id()) {
            (ip_proto::ICMP | ip_proto::ICMPV6, Some(id)) => (id, id),
            (ip_proto::TCP, _) => (get16(Field::TcpSrc), get16(Field::TcpDst)),
            (ip_proto::UDP, _) => (get16(Field::UdpSrc), get16(Field::UdpDst)),
            (ip_proto::SCTP, _) => (get16(Field::SctpSrc), get16(Field::SctpDst)),
            (ip_proto::ICMP, None) => (get16(Field::IcmpType), get16(Field::IcmpCode)),
            (ip_proto::ICMPV6, None) => (get16(Field::Icmpv6Type), get16(Field::Icmpv6Code)),
            _ => (0, 0),
        };
        Some(ConnKey {
            zone,
            proto,
            src,
            dst,
            sport,
            dport,
        })
    }

    /// The same connection seen from the other end.
    pub fn reverse(&self) -> ConnKey {
        ConnKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }
}

impl fmt::Display for ConnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |a: IpAddr, p: u16| match a {
            IpAddr::V4(a) => format!("{a}:{p}"),
            IpAddr::V6(a) => format!("[{a}]:{p}"),
        };
        write!(
            f,
            "proto {} {} -> {} zone {}",
            self.proto,
            ep(self.src, self.sport),
            ep(self.dst, self.dport),
            self.zone
        )
    }
}

/// `ct_tp_src`/`ct_tp_dst` of a packet keyed `key` starting a connection: its ports, or for
/// ICMP and ICMPv6 its type and code (what OVS reports).
pub(crate) fn orig_tp(packet: &Packet, key: &ConnKey) -> (u16, u16) {
    let get16 = |f: Field| packet.get(f).unwrap_or(0) as u16;
    match key.proto {
        ip_proto::ICMP => (get16(Field::IcmpType), get16(Field::IcmpCode)),
        ip_proto::ICMPV6 => (get16(Field::Icmpv6Type), get16(Field::Icmpv6Code)),
        _ => (key.sport, key.dport),
    }
}

/// What a connection's NAT binding translates in its original direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// The source address and port (`nat(src=…)`).
    Src,
    /// The destination address and port (`nat(dst=…)`).
    Dst,
}

impl NatKind {
    /// The `ct_state` bit of a packet translated this way.
    pub fn state(self) -> u32 {
        match self {
            NatKind::Src => ct_state::SNAT,
            NatKind::Dst => ct_state::DNAT,
        }
    }

    /// The translation of the other direction.
    pub fn reverse(self) -> NatKind {
        match self {
            NatKind::Src => NatKind::Dst,
            NatKind::Dst => NatKind::Src,
        }
    }
}

/// A committed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Original-direction key.
    pub key: ConnKey,
    /// Reply-direction key: `key` reversed, translated when `nat` is set.
    pub reply: ConnKey,
    /// The NAT binding, if any.
    pub nat: Option<NatKind>,
    /// `ct_tp_src` and `ct_tp_dst`: the original direction's ports, or the ICMP type and code
    /// of the packet that started the connection.
    pub tp: (u16, u16),
    /// `ct_mark`.
    pub mark: u32,
    /// `ct_label`.
    pub label: u128,
    /// Whether a reply-direction packet went through conntrack.
    pub replied: bool,
}

/// The connection table.
#[derive(Clone, Debug, Default)]
pub struct Conntrack {
    conns: Vec<Connection>,
    /// The state every IP packet takes instead of its own ([`Conntrack::force_state`]).
    forced: Option<u32>,
}

/// What conntrack says about a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Classification {
    /// `ct_state` bits.
    pub state: u32,
    /// The packet's key, if IP.
    pub key: Option<ConnKey>,
    /// Index of its connection, if committed.
    pub conn: Option<usize>,
    /// Whether the packet is in its connection's reply direction.
    pub reply: bool,
}

/// Why a connection with NAT could not be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NatError {
    /// The address range is of the other family.
    Family,
    /// Every candidate tuple is some connection's already.
    Exhausted,
}

impl fmt::Display for NatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatError::Family => "NAT address range of the other address family",
            NatError::Exhausted => "NAT found no free tuple",
        })
    }
}

/// The range of source ports a colliding port `p` moves within (OVS' classes).
fn port_class(p: u16) -> (u16, u16) {
    match p {
        0..512 => (1, 511),
        512..1024 => (600, 1023),
        _ => (1024, 65535),
    }
}

/// `min + hash % (max - min + 1)`.
fn in_range(min: u16, max: u16, hash: u64) -> u16 {
    min + (hash % (u64::from(max - min) + 1)) as u16
}

/// The ports OVS tries from `first` (which may lie outside the range): `first`, then on
/// upwards, wrapping from `max` to `min`, each port of the range once.
fn ports_from(first: u16, min: u16, max: u16) -> impl Iterator<Item = u16> {
    let inside = move |p: u16| (min..=max).contains(&p);
    let n = usize::from(max - min) + if inside(first) { 1 } else { 2 };
    std::iter::successors(Some(first), move |&p| {
        Some(if p == max || !inside(p) { min } else { p + 1 })
    })
    .take(n)
}

/// The translated address for a connection from `orig` (`None`: keep it).
fn nat_address(
    range: Option<NatAddr>,
    orig: IpAddr,
    hash: u64,
) -> Result<Option<IpAddr>, NatError> {
    // Offsets beyond 32 bits are not used (OVS caps IPv6 ranges the same way).
    let pick = |min: u128, max: u128| {
        let span = max.saturating_sub(min).min(0xffff_fffe) + 1;
        min + u128::from(hash) % span
    };
    Ok(match (range, orig) {
        (None, _) => None,
        (Some(NatAddr::V4(min, _)), IpAddr::V4(_)) if min.is_unspecified() => None,
        (Some(NatAddr::V6(min, _)), IpAddr::V6(_)) if min.is_unspecified() => None,
        (Some(NatAddr::V4(min, max)), IpAddr::V4(_)) => {
            let v = pick(u32::from(min).into(), u32::from(max.unwrap_or(min)).into());
            Some(IpAddr::V4(Ipv4Addr::from(v as u32)))
        }
        (Some(NatAddr::V6(min, max)), IpAddr::V6(_)) => {
            let v = pick(min.into(), max.unwrap_or(min).into());
            Some(IpAddr::V6(Ipv6Addr::from(v)))
        }
        _ => return Err(NatError::Family),
    })
}

/// A hash of the connection, for the choices OVS makes by hash.
fn key_hash(k: &ConnKey) -> u64 {
    let addr = |a: IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    fnv1a(
        0,
        [
            addr(k.src),
            addr(k.dst),
            u128::from(k.sport),
            u128::from(k.dport),
            u128::from(k.proto),
            u128::from(k.zone),
        ],
    )
}

impl Conntrack {
    /// An empty table.
    pub fn new() -> Conntrack {
        Conntrack::default()
    }

    /// The committed connections.
    pub fn connections(&self) -> &[Connection] {
        &self.conns
    }

    /// Makes every IP packet `+trk` with the `ct_state` bits `state` (`None`: their own state
    /// again). Its connection, for `ct_mark`, `ct_label`, NAT and commits, is the one with the
    /// packet's key in its original direction, if committed; a reply is not looked up.
    pub fn force_state(&mut self, state: Option<u32>) {
        self.forced = state;
    }

    /// Forgets every connection.
    pub fn clear(&mut self) {
        self.conns.clear();
    }

    /// The connection `key` belongs to, and whether `key` is its reply direction.
    fn find(&self, key: &ConnKey) -> Option<(usize, bool)> {
        self.conns.iter().enumerate().find_map(|(i, c)| {
            if c.key == *key {
                Some((i, false))
            } else {
                (c.reply == *key).then_some((i, true))
            }
        })
    }

    /// Classifies the packet in `zone` (a reply marks its connection as replied). `natted`: the
    /// packet was translated in this zone already, so its key is the translated one.
    pub(crate) fn classify(&mut self, packet: &Packet, zone: u16, natted: bool) -> Classification {
        use ct_state::*;
        let Some(key) = ConnKey::of(packet, zone) else {
            return Classification {
                state: TRK | INV,
                key: None,
                conn: None,
                reply: false,
            };
        };
        if let Some(forced) = self.forced {
            return Classification {
                state: TRK | forced,
                key: Some(key),
                conn: self.conns.iter().position(|c| c.key == key),
                reply: false,
            };
        }
        let probe = if natted { key.reverse() } else { key };
        if let Some((i, found_reply)) = self.find(&probe) {
            let reply = found_reply != natted;
            let c = &mut self.conns[i];
            let state = if reply {
                c.replied = true;
                TRK | EST | RPL
            } else {
                TRK | if c.replied { EST } else { NEW }
            };
            return Classification {
                state,
                key: Some(key),
                conn: Some(i),
                reply,
            };
        }
        let flags = packet.get(Field::TcpFlags).unwrap_or(0) as u16;
        let tcp_start = flags & tcp_flags::SYN != 0
            && flags & (tcp_flags::ACK | tcp_flags::RST | tcp_flags::FIN) == 0;
        let state = if key.proto == ip_proto::TCP && !tcp_start {
            TRK | INV
        } else {
            TRK | NEW
        };
        Classification {
            state,
            key: Some(key),
            conn: None,
            reply: false,
        }
    }

    /// Commits a new connection of `packet` (whose key is `key`), with the binding of
    /// `nat(src=…)`/`nat(dst=…)` if given; returns its index.
    pub(crate) fn commit(
        &mut self,
        key: ConnKey,
        nat: Option<&Nat>,
        packet: &Packet,
    ) -> Result<usize, NatError> {
        let binding = nat.and_then(|n| n.src.map(|src| (n, src)));
        let (reply, nat) = match binding {
            None => (key.reverse(), None),
            Some((n, src)) => {
                let kind = if src { NatKind::Src } else { NatKind::Dst };
                (self.nat_reply(&key, n, kind, packet)?, Some(kind))
            }
        };
        self.conns.push(Connection {
            key,
            reply,
            nat,
            tp: orig_tp(packet, &key),
            mark: 0,
            label: 0,
            replied: false,
        });
        Ok(self.conns.len() - 1)
    }

    /// The reply key of a new connection `key` translated by `nat` (see the module docs).
    fn nat_reply(
        &self,
        key: &ConnKey,
        nat: &Nat,
        kind: NatKind,
        packet: &Packet,
    ) -> Result<ConnKey, NatError> {
        let hash = key_hash(key);
        let mut reply = key.reverse();
        if let Some(addr) = nat_address(nat.addr, key.src, hash)? {
            match kind {
                NatKind::Src => reply.dst = addr,
                NatKind::Dst => reply.src = addr,
            }
        }
        let icmp = key.proto == ip_proto::ICMP && packet.icmp_id().is_some();
        if !(icmp || matches!(key.proto, ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP)) {
            return match self.find(&reply) {
                None => Ok(reply),
                Some(_) => Err(NatError::Exhausted),
            };
        }
        let range = nat.ports.map(|(min, max)| {
            let max = max.unwrap_or(min);
            (min.min(max), min.max(max))
        });
        if let (NatKind::Dst, Some((min, max))) = (kind, range) {
            let first = in_range(min, max, hash);
            for p in ports_from(first, min, max) {
                reply.sport = p;
                if self.find(&reply).is_none() {
                    return Ok(reply);
                }
            }
            reply.sport = first;
        }
        let (first, min, max) = match (kind, range) {
            (NatKind::Src, Some((min, max))) => (in_range(min, max, hash), min, max),
            _ => {
                let (min, max) = port_class(key.sport);
                (key.sport, min, max)
            }
        };
        for p in ports_from(first, min, max) {
            reply.dport = p;
            if icmp {
                reply.sport = p;
            }
            if self.find(&reply).is_none() {
                return Ok(reply);
            }
        }
        Err(NatError::Exhausted)
    }

    /// Translates `packet`, of connection `i` in the direction `reply`, by the connection's
    /// binding; returns how (`None`: the connection has no binding).
    pub(crate) fn translate(&self, i: usize, reply: bool, packet: &mut Packet) -> Option<NatKind> {
        let c = self.conns.get(i)?;
        let kind = c.nat?;
        // The packet becomes the other direction's key reversed.
        let (to, kind) = if reply {
            (c.key.reverse(), kind.reverse())
        } else {
            (c.reply.reverse(), kind)
        };
        match kind {
            NatKind::Src => packet.set_address(true, to.src),
            NatKind::Dst => packet.set_address(false, to.dst),
        }
        packet.set_ports(to.sport, to.dport);
        Some(kind)
    }

    /// Removes connection `i` (`ct(force)` on a reply-direction packet).
    pub(crate) fn remove(&mut self, i: usize) {
        self.conns.remove(i);
    }

    /// Connection `i`, mutable.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Connection> {
        self.conns.get_mut(i)
    }

    /// Connection `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&Connection> {
        self.conns.get(i)
    }
}
