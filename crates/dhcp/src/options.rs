//! DHCP options (RFC 2132): reading a message's options, including option overload (52) into the
//! `file` and `sname` fields and RFC 3396 concatenation of repeated options, and writing them
//! (values over 255 bytes are split into consecutive instances, RFC 3396), including the RFC 3442
//! classless static route encoding.

use crate::{DhcpError, Ipv4Addr, Ipv4Net};

pub const PAD: u8 = 0;
pub const SUBNET_MASK: u8 = 1;
pub const ROUTER: u8 = 3;
pub const DNS_SERVERS: u8 = 6;
pub const HOSTNAME: u8 = 12;
pub const DOMAIN_NAME: u8 = 15;
pub const INTERFACE_MTU: u8 = 26;
pub const BROADCAST_ADDRESS: u8 = 28;
pub const REQUESTED_IP: u8 = 50;
pub const LEASE_TIME: u8 = 51;
pub const OVERLOAD: u8 = 52;
pub const MESSAGE_TYPE: u8 = 53;
pub const SERVER_ID: u8 = 54;
pub const RENEWAL_TIME: u8 = 58;
pub const REBINDING_TIME: u8 = 59;
pub const CLIENT_ID: u8 = 61;
pub const TFTP_SERVER: u8 = 66;
pub const BOOTFILE_NAME: u8 = 67;
pub const CLASSLESS_ROUTES: u8 = 121;
/// iPXE's encapsulated options; its presence is dnsmasq's `ipxe` tag.
pub const IPXE: u8 = 175;
pub const END: u8 = 255;

/// The options of a received message, in the order they were read.
pub struct Options<'a> {
    entries: Vec<(u8, &'a [u8])>,
}

impl<'a> Options<'a> {
    /// Reads the `options` field, then (as option 52 in it says) the `file` and the `sname` field,
    /// in that order (RFC 2131 section 4.1). Each field ends at option 255 or at its last byte.
    pub fn parse(options: &'a [u8], sname: &'a [u8], file: &'a [u8]) -> Result<Self, DhcpError> {
        let mut parsed = Self {
            entries: Vec::new(),
        };
        parsed.scan(options)?;
        if let Some(value) = parsed.get(OVERLOAD) {
            let overloaded: &[&[u8]] = match value[..] {
                [1] => &[file],
                [2] => &[sname],
                [3] => &[file, sname],
                [other] => return Err(DhcpError::BadOverload(other)),
                _ => {
                    return Err(DhcpError::BadOptionLength {
                        code: OVERLOAD,
                        len: value.len(),
                    });
                }
            };
            for field in overloaded {
                parsed.scan(field)?;
            }
        }
        Ok(parsed)
    }

    fn scan(&mut self, field: &'a [u8]) -> Result<(), DhcpError> {
        let mut at = 0;
        while let Some(&code) = field.get(at) {
            match code {
                PAD => at += 1,
                END => break,
                _ => {
                    let len = *field.get(at + 1).ok_or(DhcpError::TruncatedOption(code))?;
                    let start = at + 2;
                    let end = start + usize::from(len);
                    let value = field
                        .get(start..end)
                        .ok_or(DhcpError::TruncatedOption(code))?;
                    self.entries.push((code, value));
                    at = end;
                }
            }
        }
        Ok(())
    }

    /// The value of option `code`; several instances are concatenated (RFC 3396).
    pub fn get(&self, code: u8) -> Option<Vec<u8>> {
        let mut found = self.entries.iter().filter(|(c, _)| *c == code).peekable();
        found.peek()?;
        Some(found.flat_map(|(_, value)| value.iter().copied()).collect())
    }

    /// The value of an option that holds one IPv4 address.
    pub fn ipv4(&self, code: u8) -> Result<Option<Ipv4Addr>, DhcpError> {
        self.get(code)
            .map(|value| {
                <[u8; 4]>::try_from(value.as_slice())
                    .map(Ipv4Addr::from)
                    .map_err(|_| DhcpError::BadOptionLength {
                        code,
                        len: value.len(),
                    })
            })
            .transpose()
    }
}

/// Appends option `code` with `value`, split into instances of at most 255 bytes (RFC 3396).
pub fn put(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    if value.is_empty() {
        out.extend_from_slice(&[code, 0]);
    }
    for chunk in value.chunks(usize::from(u8::MAX)) {
        out.push(code);
        out.push(chunk.len() as u8); // chunks() keeps this at most 255
        out.extend_from_slice(chunk);
    }
}

/// The RFC 3442 encoding of classless static routes: per route the prefix length, the
/// significant octets of the destination (prefix length / 8, rounded up), then the router.
pub fn classless_routes<'r>(routes: impl IntoIterator<Item = &'r (Ipv4Net, Ipv4Addr)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (dest, router) in routes {
        let width = dest.prefix_len();
        out.push(width);
        out.extend_from_slice(&dest.network().octets()[..usize::from(width.div_ceil(8))]);
        out.extend_from_slice(&router.octets());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_reads_file_then_sname() {
        let options = [OVERLOAD, 1, 3, MESSAGE_TYPE, 1, 1, END];
        let mut sname = [0u8; 64];
        sname[..6].copy_from_slice(&[CLIENT_ID, 2, 1, 2, END, 9]);
        let mut file = [0u8; 128];
        file[..5].copy_from_slice(&[PAD, CLIENT_ID, 2, 7, 8]);
        let parsed = Options::parse(&options, &sname, &file).unwrap();
        assert_eq!(parsed.get(CLIENT_ID), Some(vec![7, 8, 1, 2]));
        assert_eq!(parsed.get(MESSAGE_TYPE), Some(vec![1]));
    }

    #[test]
    fn overload_is_ignored_unless_announced() {
        let sname = [CLIENT_ID, 1, 1, END];
        let parsed = Options::parse(&[END], &sname, &[]).unwrap();
        assert_eq!(parsed.get(CLIENT_ID), None);
    }

    #[test]
    fn bad_overload_and_truncation_are_errors() {
        assert_eq!(
            Options::parse(&[OVERLOAD, 1, 4], &[], &[]).err(),
            Some(DhcpError::BadOverload(4))
        );
        assert_eq!(
            Options::parse(&[OVERLOAD, 1, 1], &[], &[CLIENT_ID, 3, 1]).err(),
            Some(DhcpError::TruncatedOption(CLIENT_ID))
        );
        assert_eq!(
            Options::parse(&[HOSTNAME], &[], &[]).err(),
            Some(DhcpError::TruncatedOption(HOSTNAME))
        );
    }

    #[test]
    fn long_values_are_split() {
        let mut out = Vec::new();
        put(&mut out, CLIENT_ID, &[7; 300]);
        assert_eq!(out.len(), 2 + 255 + 2 + 45);
        assert_eq!(&out[..2], &[CLIENT_ID, 255]);
        assert_eq!(&out[257..259], &[CLIENT_ID, 45]);
        let parsed = Options::parse(&out, &[], &[]).unwrap();
        assert_eq!(parsed.get(CLIENT_ID), Some(vec![7; 300]));
    }
}
