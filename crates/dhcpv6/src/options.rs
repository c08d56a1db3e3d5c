//! DHCPv6 options (RFC 8415 section 21): codes, reading a type-length-value list (2-byte code
//! and length) and writing one option.

use crate::Dhcpv6Error;

pub const CLIENT_ID: u16 = 1;
pub const SERVER_ID: u16 = 2;
pub const IA_NA: u16 = 3;
pub const IA_TA: u16 = 4;
pub const IAADDR: u16 = 5;
pub const ORO: u16 = 6;
pub const STATUS_CODE: u16 = 13;
pub const RAPID_COMMIT: u16 = 14;
/// Recursive DNS servers (RFC 3646).
pub const DNS_SERVERS: u16 = 23;
/// Domain search list (RFC 3646).
pub const DOMAIN_LIST: u16 = 24;
pub const IA_PD: u16 = 25;

/// The options of `bytes` as (code, value), in order. Never panics.
pub fn parse(mut bytes: &[u8]) -> Result<Vec<(u16, &[u8])>, Dhcpv6Error> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = bytes.get(..4).ok_or(Dhcpv6Error::TruncatedOption(None))?;
        let code = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = bytes
            .get(4..4 + len)
            .ok_or(Dhcpv6Error::TruncatedOption(Some(code)))?;
        out.push((code, value));
        bytes = &bytes[4 + len..];
    }
    Ok(out)
}

/// Appends option `code` with `value`; a value over 65535 bytes cannot be expressed and is cut
/// there instead of panicking.
pub fn put(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let mut bytes = Vec::new();
        put(&mut bytes, CLIENT_ID, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
        put(&mut bytes, RAPID_COMMIT, &[]);
        assert_eq!(
            parse(&bytes),
            Ok(vec![
                (CLIENT_ID, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6][..]),
                (RAPID_COMMIT, &[][..])
            ])
        );
    }

    #[test]
    fn truncation_is_an_error() {
        assert_eq!(parse(&[0, 1, 0]), Err(Dhcpv6Error::TruncatedOption(None)));
        assert_eq!(
            parse(&[0, 1, 0, 3, 1, 2]),
            Err(Dhcpv6Error::TruncatedOption(Some(1)))
        );
    }
}
