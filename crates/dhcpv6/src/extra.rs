//! A port's `extra_dhcp_opts` for DHCPv6 (`ip_version` 6): dnsmasq's `option6:` names and
//! numbers mapped to option codes and encodings, values read the way dnsmasq reads them
//! (addresses may be written `[2001:db8::1]`, as Neutron writes them). An empty value sends no
//! such option. A number that is not a known option's is encoded by the look of its value: IPv6
//! addresses, `xx:xx` hex bytes, a decimal integer, else text. Tags are refused: none is set
//! for DHCPv6 clients.

use std::net::Ipv6Addr;

use dhcp::dnsmasq::{hex_bytes, minimal_int, parts, split_tags};
use dhcp::encode_domain_names;

/// One of a port's extra DHCPv6 options, resolved to what it changes in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraOption {
    /// Send option `code` with this value, in place of the server's own if it sends it.
    Set(u16, Vec<u8>),
    /// Send no option `code`.
    Omit(u16),
}

/// Why an extra DHCPv6 option cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExtraOptionError {
    #[error("unknown DHCPv6 option {0:?}")]
    UnknownName(String),
    #[error("option {0} is the server's to set")]
    Reserved(u16),
    #[error("unsupported tag {0:?}")]
    UnsupportedTag(String),
    #[error("bad value {value:?} for option {code}: {why}")]
    BadValue {
        code: u16,
        value: String,
        why: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Addrs,
    Domains,
    Text,
    U32,
    /// NTP server (RFC 5908): address or FQDN suboptions.
    Ntp,
    Guess,
}

/// dnsmasq's DHCPv6 option names (`dnsmasq --help dhcp6`) with codes and encodings.
const NAMES: &[(&str, u16, Kind)] = &[
    ("sip-server-domain", 21, Kind::Domains),
    ("sip-server", 22, Kind::Addrs),
    ("dns-server", 23, Kind::Addrs),
    ("domain-search", 24, Kind::Domains),
    ("nis-server", 27, Kind::Addrs),
    ("nis+-server", 28, Kind::Addrs),
    ("nis-domain", 29, Kind::Domains),
    ("nis+-domain", 30, Kind::Domains),
    ("sntp-server", 31, Kind::Addrs),
    ("information-refresh-time", 32, Kind::U32),
    ("ntp-server", 56, Kind::Ntp),
    ("bootfile-url", 59, Kind::Text),
];

/// Options that run the protocol: client and server identifiers, IAs and their addresses and
/// prefixes, option request, preference, elapsed time, relay message, authentication, server
/// unicast, status code, rapid commit, interface id, reconfiguration.
const RESERVED: &[u16] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 18, 19, 20, 25, 26,
];

/// An address as dnsmasq takes it, with or without brackets.
fn addr(text: &str) -> Option<Ipv6Addr> {
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse().ok()
}

fn addrs(value: &str) -> Option<Vec<u8>> {
    parts(value)
        .map(|p| addr(p).map(|a| a.octets()))
        .collect::<Option<Vec<_>>>()
        .map(|list| list.concat())
}

fn encode(kind: Kind, value: &str) -> Result<Vec<u8>, &'static str> {
    Ok(match kind {
        Kind::Addrs => addrs(value).ok_or("not a list of IPv6 addresses")?,
        Kind::Domains => encode_domain_names(parts(value)).ok_or("not a list of domain names")?,
        Kind::Text => value.as_bytes().to_vec(),
        Kind::U32 => value
            .parse::<u32>()
            .map_err(|_| "not a 32-bit unsigned number")?
            .to_be_bytes()
            .to_vec(),
        Kind::Ntp => {
            let mut out = Vec::new();
            for server in parts(value) {
                // Suboption 1: server address; 3: server FQDN.
                let (sub, body) = match addr(server) {
                    Some(a) => (1u16, a.octets().to_vec()),
                    None => (
                        3,
                        encode_domain_names([server]).ok_or("not addresses or names")?,
                    ),
                };
                out.extend_from_slice(&sub.to_be_bytes());
                out.extend_from_slice(&(body.len() as u16).to_be_bytes());
                out.extend_from_slice(&body);
            }
            out
        }
        Kind::Guess => addrs(value)
            .or_else(|| hex_bytes(value))
            .or_else(|| minimal_int(value))
            .unwrap_or_else(|| value.as_bytes().to_vec()),
    })
}

impl ExtraOption {
    /// The option a port's `opt_name` and `opt_value` (an `extra_dhcp_opts` entry with
    /// `ip_version` 6) stand for.
    pub fn parse(opt_name: &str, opt_value: &str) -> Result<Self, ExtraOptionError> {
        let (tags, name) = split_tags(opt_name);
        if !tags.is_empty() {
            return Err(ExtraOptionError::UnsupportedTag(tags.join(",")));
        }
        let name = name.strip_prefix("option6:").unwrap_or(name);
        let (code, kind) = match name.parse::<u16>() {
            Ok(code) => (
                code,
                NAMES
                    .iter()
                    .find(|(_, c, _)| *c == code)
                    .map_or(Kind::Guess, |(_, _, k)| *k),
            ),
            Err(_) => NAMES
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, c, k)| (*c, *k))
                .ok_or_else(|| ExtraOptionError::UnknownName(name.to_owned()))?,
        };
        if RESERVED.contains(&code) {
            return Err(ExtraOptionError::Reserved(code));
        }
        let value = opt_value.trim();
        if value.is_empty() {
            return Ok(Self::Omit(code));
        }
        let bytes = encode(kind, value).map_err(|why| ExtraOptionError::BadValue {
            code,
            value: value.to_owned(),
            why,
        })?;
        Ok(Self::Set(code, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            ExtraOption::parse("dns-server", "[2001:db8::53], 2001:db8::54"),
            Ok(ExtraOption::Set(
                23,
                [ip("2001:db8::53").octets(), ip("2001:db8::54").octets()].concat()
            ))
        );
        assert_eq!(
            ExtraOption::parse("option6:domain-search", "example.org"),
            Ok(ExtraOption::Set(24, b"\x07example\x03org\x00".to_vec()))
        );
        assert_eq!(
            ExtraOption::parse("23", "2001:db8::53"),
            Ok(ExtraOption::Set(23, ip("2001:db8::53").octets().to_vec()))
        );
        assert_eq!(
            ExtraOption::parse("bootfile-url", "tftp://[2001:db8::9]/boot.efi"),
            Ok(ExtraOption::Set(
                59,
                b"tftp://[2001:db8::9]/boot.efi".to_vec()
            ))
        );
        assert_eq!(
            ExtraOption::parse("information-refresh-time", "3600"),
            Ok(ExtraOption::Set(32, 3600u32.to_be_bytes().to_vec()))
        );
        let mut ntp = vec![0, 1, 0, 16];
        ntp.extend_from_slice(&ip("2001:db8::123").octets());
        ntp.extend_from_slice(&[0, 3, 0, 13]);
        ntp.extend_from_slice(b"\x03ntp\x07example\x00");
        assert_eq!(
            ExtraOption::parse("ntp-server", "2001:db8::123,ntp.example"),
            Ok(ExtraOption::Set(56, ntp))
        );
        assert_eq!(
            ExtraOption::parse("dns-server", ""),
            Ok(ExtraOption::Omit(23))
        );
        assert_eq!(
            ExtraOption::parse("300", "01:02"),
            Ok(ExtraOption::Set(300, vec![1, 2]))
        );
        assert_eq!(
            ExtraOption::parse("301", "2001:db8::1"),
            Ok(ExtraOption::Set(301, ip("2001:db8::1").octets().to_vec()))
        );
        assert_eq!(
            ExtraOption::parse("302", "some text"),
            Ok(ExtraOption::Set(302, b"some text".to_vec()))
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            ExtraOption::parse("router", "2001:db8::1"),
            Err(ExtraOptionError::UnknownName("router".to_owned()))
        );
        assert_eq!(
            ExtraOption::parse("2", "00:03"),
            Err(ExtraOptionError::Reserved(2))
        );
        assert_eq!(
            ExtraOption::parse("tag:ipxe,59", "x"),
            Err(ExtraOptionError::UnsupportedTag("ipxe".to_owned()))
        );
        for (name, value) in [
            ("dns-server", "10.0.0.1"),
            ("dns-server", "[2001:db8::1"),
            ("domain-search", "a..b"),
            ("information-refresh-time", "-1"),
        ] {
            assert!(
                matches!(
                    ExtraOption::parse(name, value),
                    Err(ExtraOptionError::BadValue { .. })
                ),
                "{name}={value}"
            );
        }
    }
}
