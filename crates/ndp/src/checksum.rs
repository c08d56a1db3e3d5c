//! The Internet checksum (RFC 1071) and the IPv6 upper-layer checksum over the pseudo-header
//! (RFC 8200 section 8.1), used for ICMPv6 here and for UDP by the DHCPv6 crate.

use std::net::Ipv6Addr;

/// The Internet checksum of the concatenation of `parts` (parts of any length, odd ones
/// included). Over data that contains its own correct checksum, the result is 0.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut high = true;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        sum += if high {
            u64::from(*byte) << 8
        } else {
            u64::from(*byte)
        };
        high = !high;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above leaves at most 16 bits.
    !(sum as u16)
}

/// The checksum of an upper-layer message (ICMPv6, UDP) of protocol `next_header` between `src`
/// and `dst`: the Internet checksum over the IPv6 pseudo-header and `message`. Over a message
/// that contains its own correct checksum, the result is 0.
pub fn upper_layer_checksum(
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    next_header: u8,
    message: &[u8],
) -> u16 {
    let len = u32::try_from(message.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    internet_checksum(&[
        &src.octets(),
        &dst.octets(),
        &len,
        &[0, 0, 0, next_header],
        message,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc1071_example() {
        // RFC 1071 section 3: the ones' complement sum of these bytes is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&[&data]), !0xddf2);
        assert_eq!(internet_checksum(&[&data[..2], &data[2..]]), !0xddf2);
        // Parts of odd length continue where the previous one stopped.
        assert_eq!(
            internet_checksum(&[&data[..3], &data[3..5], &data[5..]]),
            !0xddf2
        );
        assert_eq!(internet_checksum(&[&[0xab]]), !0xab00);
        assert_eq!(internet_checksum(&[]), 0xffff);
    }

    #[test]
    fn a_message_with_its_checksum_sums_to_zero() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "ff02::2".parse().unwrap();
        let mut message = vec![133, 0, 0, 0, 0, 0, 0, 0, 1];
        let sum = upper_layer_checksum(&src, &dst, 58, &message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(upper_layer_checksum(&src, &dst, 58, &message), 0);
        // Another protocol number or address gives another sum.
        assert_ne!(upper_layer_checksum(&src, &dst, 17, &message), 0);
        assert_ne!(upper_layer_checksum(&dst, &dst, 58, &message), 0);
    }
}
