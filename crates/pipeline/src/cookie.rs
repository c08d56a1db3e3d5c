//! Flow cookies that name the API object a flow belongs to.
//!
//! The top byte says what kind of object owns the flow, the low 56 bits are the first 56 bits of the
//! object's UUID (any other id is hashed), so `trace`, logs and `ovs-ofctl dump-flows` can be mapped
//! back to API objects.

/// What produced a flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The fixed part of the pipeline.
    Static,
    Network(String),
    Port(String),
}

const KIND_SHIFT: u32 = 56;
const ID_MASK: u64 = (1 << KIND_SHIFT) - 1;

fn id_bits(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| *c != '-').take(14).collect();
    match u64::from_str_radix(&hex, 16) {
        Ok(v) if hex.len() == 14 => v,
        _ => {
            // FNV-1a for ids that are not UUIDs.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in id.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            h & ID_MASK
        }
    }
}

impl Owner {
    fn kind(&self) -> u64 {
        match self {
            Owner::Static => 0x01,
            Owner::Network(_) => 0x02,
            Owner::Port(_) => 0x03,
        }
    }

    pub fn cookie(&self) -> u64 {
        let id = match self {
            Owner::Static => 0,
            Owner::Network(id) | Owner::Port(id) => id_bits(id),
        };
        (self.kind() << KIND_SHIFT) | id
    }

    /// Whether `cookie` belongs to this owner.
    pub fn owns(&self, cookie: u64) -> bool {
        self.cookie() == cookie
    }

    /// Whether a cookie is one of ours at all (anything else on the bridge is foreign).
    pub fn is_ours(cookie: u64) -> bool {
        matches!(cookie >> KIND_SHIFT, 0x01..=0x03)
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
