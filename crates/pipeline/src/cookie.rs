//! Flow cookies that name the API object a flow belongs to.
//!
//! The top byte says what kind of object owns the flow, the low 56 bits are the first 56 bits of the
//! object's UUID (any other id is hashed), so `trace`, logs and `ovs-ofctl dump-flows` can be mapped
//! back to API objects.

use std::sync::Arc;

/// What produced a flow: the API object whose existence and attributes the flow expresses.
/// Every kind has its own cookie kind byte. Kind `0x0f` marks flows the switch learned itself (`learn` actions): they
/// are the switch's state, never the agent's to remove.
///
/// The id is shared, not copied, when an owner is cloned: a port's owner names each of its
/// slots in the pipeline (one per app that computes flows for ports) and its cookie's entry;
/// as a `String` each was a copy of the id with its own 48 bytes of heap (issue 17).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The fixed part of the pipeline (table misses).
    Static,
    Network(Arc<str>),
    Port(Arc<str>),
    Router(Arc<str>),
    /// A router interface (the id is its port's).
    RouterInterface(Arc<str>),
    /// A security group rule.
    SgRule(Arc<str>),
    FloatingIp(Arc<str>),
    /// A load balancer (its VIP's address).
    LoadBalancer(Arc<str>),
    /// A load-balancer listener (its VIP flows and member group).
    Listener(Arc<str>),
    /// A pool member (its health check's answers).
    Member(Arc<str>),
    /// A service function chain (its classification and steering).
    PortChain(Arc<str>),
    /// A trunk (its subports' VLANs on the parent's VIF).
    Trunk(Arc<str>),
}

/// The cookie of flows added by the switch's `learn` actions (learned neighbours).
pub const LEARNED: u64 = 0x0f << KIND_SHIFT;

/// Whether a flow with `cookie` was learned by the switch (see [`LEARNED`]).
pub fn is_learned(cookie: u64) -> bool {
    cookie >> KIND_SHIFT == LEARNED >> KIND_SHIFT
}

const KIND_SHIFT: u32 = 56;
const ID_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn id_bits(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| *c != '-').take(14).collect();
    match u64::from_str_radix(&hex, 16) {
        Ok(v) if hex.len() == 14 => v,
        // A hash for ids that are not UUIDs.
        _ => fnv1a(id) & ID_MASK,
    }
}

impl Owner {
    fn kind(&self) -> u64 {
        match self {
            Owner::Static => 0x01,
            Owner::Network(_) => 0x02,
            Owner::Port(_) => 0x03,
            Owner::Router(_) => 0x04,
            Owner::RouterInterface(_) => 0x05,
            Owner::SgRule(_) => 0x06,
            Owner::FloatingIp(_) => 0x07,
            Owner::LoadBalancer(_) => 0x08,
            Owner::Listener(_) => 0x09,
            Owner::Member(_) => 0x0a,
            Owner::PortChain(_) => 0x0b,
            Owner::Trunk(_) => 0x0c,
        }
    }

    /// The owner's id (empty for [`Owner::Static`]).
    pub fn id(&self) -> &str {
        match self {
            Owner::Static => "",
            Owner::Network(id)
            | Owner::Port(id)
            | Owner::Router(id)
            | Owner::RouterInterface(id)
            | Owner::SgRule(id)
            | Owner::FloatingIp(id)
            | Owner::LoadBalancer(id)
            | Owner::Listener(id)
            | Owner::Member(id)
            | Owner::PortChain(id)
            | Owner::Trunk(id) => id,
        }
    }

    /// What kind of object the owner is, in words.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Owner::Static => "pipeline",
            Owner::Network(_) => "network",
            Owner::Port(_) => "port",
            Owner::Router(_) => "router",
            Owner::RouterInterface(_) => "router interface",
            Owner::SgRule(_) => "security group rule",
            Owner::FloatingIp(_) => "floating IP",
            Owner::LoadBalancer(_) => "load balancer",
            Owner::Listener(_) => "listener",
            Owner::Member(_) => "pool member",
            Owner::PortChain(_) => "port chain",
            Owner::Trunk(_) => "trunk",
        }
    }

    pub fn cookie(&self) -> u64 {
        (self.kind() << KIND_SHIFT) | self.id_bits()
    }

    /// The low 56 bits of the cookie: the id's first 56 bits (or a hash of another id).
    pub fn id_bits(&self) -> u64 {
        match self {
            Owner::Static => 0,
            _ => id_bits(self.id()),
        }
    }

    /// Whether `cookie` belongs to this owner.
    pub fn owns(&self, cookie: u64) -> bool {
        self.cookie() == cookie
    }

    /// Whether a cookie is one of ours at all (anything else on the bridge is foreign).
    pub fn is_ours(cookie: u64) -> bool {
        matches!(cookie >> KIND_SHIFT, 0x01..=0x0c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_name_their_owner() {
        let p = Owner::Port("3f2a51c0-1234-4abc-8def-0123456789ab".into());
        assert_eq!(p.cookie(), 0x033f_2a51_c012_344a);
        assert!(p.owns(p.cookie()));
        assert!(!Owner::Network("3f2a51c0-1234-4abc-8def-0123456789ab".into()).owns(p.cookie()));
        assert!(Owner::is_ours(Owner::Static.cookie()));
        assert!(!Owner::is_ours(0));
    }
}
