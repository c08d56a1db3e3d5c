//! A small connection tracker: enough of OVS' conntrack for pipelines to see `+new` on a
//! connection's first packet, `+est+rpl` for the reply direction of a committed connection,
//! `+est` in the original direction once a reply went through conntrack (as in OVS, where
//! `est` means "packets seen in both directions": before any reply, original-direction packets
//! of a committed connection are still `+new`), and `ct_mark`/`ct_label` stored by
//! `ct(commit,exec(...))`.
//!
//! Model: a connection is keyed by zone, IP protocol, addresses and ports in the original
//! direction. TCP, UDP and SCTP use their ports; ICMP/ICMPv6 echo requests and replies use
//! ports 0/0 so that a reply belongs to its request's connection; other ICMP messages use
//! (type, code) as ports. A TCP packet with no connection is `+inv` unless it is a SYN
//! without ACK/RST/FIN (what the userspace datapath's TCP checker accepts as a new
//! connection). Non-IP packets are `+trk+inv`. Connections never expire; TCP state beyond
//! "exists" is not tracked; NAT is not performed.
//!
//! [`Conntrack::force_state`] makes every IP packet take a given state instead, whatever the
//! table holds (as `ofproto/trace --ct-next` does): to see what the flows do to a packet of an
//! established connection, a reply, or an invalid one without sending the packets before it.

use std::net::IpAddr;

use openflow::Field;
use openflow::matching::eth_type;

use crate::packet::{Packet, ip_proto, tcp_flags};

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
}

/// A connection's identity in its original direction.
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
                IpAddr::from(std::net::Ipv4Addr::from(packet.get(Field::Ipv4Src)? as u32)),
                IpAddr::from(std::net::Ipv4Addr::from(packet.get(Field::Ipv4Dst)? as u32)),
            ),
            eth_type::IPV6 => (
                IpAddr::from(std::net::Ipv6Addr::from(packet.get(Field::Ipv6Src)?)),
                IpAddr::from(std::net::Ipv6Addr::from(packet.get(Field::Ipv6Dst)?)),
            ),
            _ => return None,
        };
        let proto = packet.get(Field::IpProto)? as u8;
        let get16 = |f: Field| packet.get(f).unwrap_or(0) as u16;
        let (sport, dport) = match proto {
            ip_proto::TCP => (get16(Field::TcpSrc), get16(Field::TcpDst)),
            ip_proto::UDP => (get16(Field::UdpSrc), get16(Field::UdpDst)),
            ip_proto::SCTP => (get16(Field::SctpSrc), get16(Field::SctpDst)),
            ip_proto::ICMP => icmp_ports(get16(Field::IcmpType), get16(Field::IcmpCode), &[0, 8]),
            ip_proto::ICMPV6 => icmp_ports(
                get16(Field::Icmpv6Type),
                get16(Field::Icmpv6Code),
                &[128, 129],
            ),
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

fn icmp_ports(ty: u16, code: u16, echo: &[u16]) -> (u16, u16) {
    if echo.contains(&ty) {
        (0, 0)
    } else {
        (ty, code)
    }
}

/// A committed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Original-direction key.
    pub key: ConnKey,
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
    /// again). Its connection, for `ct_mark`, `ct_label` and commits, is the one with the
    /// packet's key in its original direction, if committed; a reply is not looked up.
    pub fn force_state(&mut self, state: Option<u32>) {
        self.forced = state;
    }

    /// Forgets every connection.
    pub fn clear(&mut self) {
        self.conns.clear();
    }

    /// Classifies the packet in `zone` (a reply marks its connection as replied).
    pub(crate) fn classify(&mut self, packet: &Packet, zone: u16) -> Classification {
        use ct_state::*;
        let Some(key) = ConnKey::of(packet, zone) else {
            return Classification {
                state: TRK | INV,
                key: None,
                conn: None,
            };
        };
        if let Some(forced) = self.forced {
            return Classification {
                state: TRK | forced,
                key: Some(key),
                conn: self.conns.iter().position(|c| c.key == key),
            };
        }
        if let Some(i) = self.conns.iter().position(|c| c.key == key) {
            return Classification {
                state: TRK | if self.conns[i].replied { EST } else { NEW },
                key: Some(key),
                conn: Some(i),
            };
        }
        let rev = key.reverse();
        if let Some(i) = self.conns.iter().position(|c| c.key == rev) {
            self.conns[i].replied = true;
            return Classification {
                state: TRK | EST | RPL,
                key: Some(key),
                conn: Some(i),
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
        }
    }

    /// Commits: returns the connection's index (adding it when new).
    pub(crate) fn commit(&mut self, key: ConnKey) -> usize {
        self.conns.push(Connection {
            key,
            mark: 0,
            label: 0,
            replied: false,
        });
        self.conns.len() - 1
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
