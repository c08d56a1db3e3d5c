//! A port's `extra_dhcp_opts` for DHCPv4: the option names and numbers Neutron passes to dnsmasq
//! (`opt_name`, optionally behind `tag:...,` and `option:`), mapped to option codes and wire
//! encodings the way dnsmasq reads their values.
//!
//! Values: addresses, routes and domain lists are comma-separated; text is taken whole. An
//! empty value sends no such option (dnsmasq's meaning: `router` with no value sends no router).
//! A number that is not a known option's is encoded by the look of its value, as dnsmasq does:
//! IPv4 addresses, `xx:xx` hex bytes, a decimal integer (1, 2 or 4 bytes as needed), else text.
//! `server-ip-address` is not an option but the `siaddr` field (the next server for network
//! boot). The one tag the server knows is dnsmasq's `ipxe` (set by Neutron for clients whose
//! request carries option 175); options behind other tags are refused.

use std::net::Ipv4Addr;

use crate::Ipv4Net;
use crate::dns::encode_domain_names;
use crate::dnsmasq::{hex_bytes, minimal_int, parts, split_tags};
use crate::options;

/// One of a port's extra DHCP options, resolved to what it changes in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraOption {
    /// `Some(true)`: only for iPXE clients (`tag:ipxe`); `Some(false)`: only for the others
    /// (`tag:!ipxe`); `None`: for every client.
    pub ipxe: Option<bool>,
    pub action: ExtraAction,
}

/// What an extra option does to a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraAction {
    /// Send option `code` with this value, in place of the server's own one if it sends it.
    Set(u8, Vec<u8>),
    /// Send no option `code`.
    Omit(u8),
    /// Put this address in `siaddr`.
    NextServer(Ipv4Addr),
}

/// Why an extra DHCP option cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExtraOptionError {
    #[error("unknown DHCP option {0:?}")]
    UnknownName(String),
    #[error("option {0} is the server's to set")]
    Reserved(u8),
    #[error("unsupported tag {0:?} (only ipxe and !ipxe)")]
    UnsupportedTag(String),
    #[error("bad value {value:?} for option {code}: {why}")]
    BadValue {
        code: u8,
        value: String,
        why: &'static str,
    },
}

/// How a value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Addr,
    Addrs,
    Text,
    U8,
    U16,
    U32,
    I32,
    Bool,
    Domains,
    ClasslessRoutes,
    StaticRoutes,
    Sip,
    /// A number without a known encoding: guessed from the value.
    Guess,
}

/// dnsmasq's option names (`dnsmasq --help dhcp`) with their codes and encodings.
const NAMES: &[(&str, u8, Kind)] = &[
    ("netmask", 1, Kind::Addr),
    ("time-offset", 2, Kind::I32),
    ("router", 3, Kind::Addrs),
    ("dns-server", 6, Kind::Addrs),
    ("log-server", 7, Kind::Addrs),
    ("lpr-server", 9, Kind::Addrs),
    ("hostname", 12, Kind::Text),
    ("boot-file-size", 13, Kind::U16),
    ("domain-name", 15, Kind::Text),
    ("swap-server", 16, Kind::Addr),
    ("root-path", 17, Kind::Text),
    ("extension-path", 18, Kind::Text),
    ("ip-forward-enable", 19, Kind::Bool),
    ("non-local-source-routing", 20, Kind::Bool),
    ("max-datagram-reassembly", 22, Kind::U16),
    ("default-ttl", 23, Kind::U8),
    ("mtu", 26, Kind::U16),
    ("all-subnets-local", 27, Kind::Bool),
    ("broadcast", 28, Kind::Addr),
    ("router-discovery", 31, Kind::Bool),
    ("router-solicitation", 32, Kind::Addr),
    ("static-route", 33, Kind::StaticRoutes),
    ("trailer-encapsulation", 34, Kind::Bool),
    ("arp-timeout", 35, Kind::U32),
    ("ethernet-encap", 36, Kind::Bool),
    ("tcp-ttl", 37, Kind::U8),
    ("tcp-keepalive", 38, Kind::U32),
    ("nis-domain", 40, Kind::Text),
    ("nis-server", 41, Kind::Addrs),
    ("ntp-server", 42, Kind::Addrs),
    ("netbios-ns", 44, Kind::Addrs),
    ("netbios-dd", 45, Kind::Addrs),
    ("netbios-nodetype", 46, Kind::U8),
    ("netbios-scope", 47, Kind::Text),
    ("x-windows-fs", 48, Kind::Addrs),
    ("x-windows-dm", 49, Kind::Addrs),
    ("lease-time", 51, Kind::U32),
    ("T1", 58, Kind::U32),
    ("T2", 59, Kind::U32),
    ("nis+-domain", 64, Kind::Text),
    ("nis+-server", 65, Kind::Addrs),
    ("tftp-server", 66, Kind::Text),
    ("bootfile-name", 67, Kind::Text),
    ("mobile-ip-home", 68, Kind::Addrs),
    ("smtp-server", 69, Kind::Addrs),
    ("pop3-server", 70, Kind::Addrs),
    ("nntp-server", 71, Kind::Addrs),
    ("irc-server", 74, Kind::Addrs),
    ("posix-timezone", 100, Kind::Text),
    ("tzdb-timezone", 101, Kind::Text),
    ("domain-search", 119, Kind::Domains),
    ("sip-server", 120, Kind::Sip),
    ("classless-static-route", 121, Kind::ClasslessRoutes),
    ("tftp-server-address", 150, Kind::Addrs),
];

/// Microsoft's classless static route option (same encoding as 121), which Neutron sends too.
const MS_CLASSLESS_ROUTES: u8 = 249;
/// dnsmasq's pseudo-option for `siaddr`.
const SERVER_IP_ADDRESS: &str = "server-ip-address";

/// Options that run the protocol (and pad and end): never taken from a port.
const RESERVED: &[u8] = &[
    options::PAD,
    options::REQUESTED_IP,
    options::OVERLOAD,
    options::MESSAGE_TYPE,
    options::SERVER_ID,
    55, // parameter request list
    57, // maximum message size
    options::CLIENT_ID,
    82, // relay agent information
    options::END,
];

/// The `ipxe` condition of a list of tags.
fn ipxe_condition(tags: &[&str]) -> Result<Option<bool>, ExtraOptionError> {
    let mut ipxe = None;
    for tag in tags {
        let want = match *tag {
            "ipxe" => true,
            "!ipxe" => false,
            other => return Err(ExtraOptionError::UnsupportedTag(other.to_owned())),
        };
        if ipxe.is_some_and(|w| w != want) {
            return Err(ExtraOptionError::UnsupportedTag(tags.join(",")));
        }
        ipxe = Some(want);
    }
    Ok(ipxe)
}

fn addrs(value: &str) -> Option<Vec<u8>> {
    parts(value)
        .map(|p| p.parse::<Ipv4Addr>().ok().map(|a| a.octets()))
        .collect::<Option<Vec<_>>>()
        .map(|list| list.concat())
}

fn encode(kind: Kind, value: &str) -> Result<Vec<u8>, &'static str> {
    let int = |v: &str| v.parse::<u64>().map_err(|_| "not a number");
    Ok(match kind {
        Kind::Addr => value
            .parse::<Ipv4Addr>()
            .map_err(|_| "not an IPv4 address")?
            .octets()
            .to_vec(),
        Kind::Addrs => addrs(value).ok_or("not a list of IPv4 addresses")?,
        Kind::Text => value.as_bytes().to_vec(),
        Kind::U8 => vec![u8::try_from(int(value)?).map_err(|_| "over 255")?],
        Kind::U16 => u16::try_from(int(value)?)
            .map_err(|_| "over 65535")?
            .to_be_bytes()
            .to_vec(),
        Kind::U32 => u32::try_from(int(value)?)
            .map_err(|_| "over 2^32 - 1")?
            .to_be_bytes()
            .to_vec(),
        Kind::I32 => value
            .parse::<i32>()
            .map_err(|_| "not a 32-bit integer")?
            .to_be_bytes()
            .to_vec(),
        Kind::Bool => match value {
            "0" | "false" => vec![0],
            "1" | "true" => vec![1],
            _ => return Err("not 0 or 1"),
        },
        Kind::Domains => encode_domain_names(parts(value)).ok_or("not a list of domain names")?,
        Kind::ClasslessRoutes => {
            let list: Vec<&str> = parts(value).collect();
            let pairs = list.chunks_exact(2);
            if !pairs.remainder().is_empty() {
                return Err("not destination/length,router pairs");
            }
            let routes = pairs
                .map(|pair| {
                    Some((
                        pair[0].parse::<Ipv4Net>().ok()?.trunc(),
                        pair[1].parse().ok()?,
                    ))
                })
                .collect::<Option<Vec<(Ipv4Net, Ipv4Addr)>>>()
                .ok_or("not destination/length,router pairs")?;
            options::classless_routes(&routes)
        }
        Kind::StaticRoutes => {
            let bytes = addrs(value).ok_or("not destination,router address pairs")?;
            if !bytes.chunks_exact(8).remainder().is_empty() {
                return Err("not destination,router address pairs");
            }
            bytes
        }
        Kind::Sip => match addrs(value) {
            Some(list) => [vec![1], list].concat(),
            None => [
                vec![0],
                encode_domain_names(parts(value)).ok_or("not addresses or domain names")?,
            ]
            .concat(),
        },
        Kind::Guess => addrs(value)
            .or_else(|| hex_bytes(value))
            .or_else(|| minimal_int(value))
            .unwrap_or_else(|| value.as_bytes().to_vec()),
    })
}

impl ExtraOption {
    /// The option a port's `opt_name` and `opt_value` (an `extra_dhcp_opts` entry with
    /// `ip_version` 4) stand for.
    pub fn parse(opt_name: &str, opt_value: &str) -> Result<Self, ExtraOptionError> {
        let (tags, name) = split_tags(opt_name);
        let ipxe = ipxe_condition(&tags)?;
        let name = name.strip_prefix("option:").unwrap_or(name);
        let value = opt_value.trim();
        if name.eq_ignore_ascii_case(SERVER_IP_ADDRESS) {
            let ip = value.parse().map_err(|_| ExtraOptionError::BadValue {
                code: 0,
                value: value.to_owned(),
                why: "server-ip-address is not an IPv4 address",
            })?;
            return Ok(Self {
                ipxe,
                action: ExtraAction::NextServer(ip),
            });
        }
        let (code, kind) = if let Ok(code) = name.parse::<u8>() {
            let kind = NAMES
                .iter()
                .find(|(_, c, _)| *c == code)
                .map(|(_, _, k)| *k)
                .unwrap_or(if code == MS_CLASSLESS_ROUTES {
                    Kind::ClasslessRoutes
                } else {
                    Kind::Guess
                });
            (code, kind)
        } else {
            NAMES
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, c, k)| (*c, *k))
                .ok_or_else(|| ExtraOptionError::UnknownName(name.to_owned()))?
        };
        if RESERVED.contains(&code) {
            return Err(ExtraOptionError::Reserved(code));
        }
        let action = if value.is_empty() {
            ExtraAction::Omit(code)
        } else {
            let bytes = encode(kind, value).map_err(|why| ExtraOptionError::BadValue {
                code,
                value: value.to_owned(),
                why,
            })?;
            ExtraAction::Set(code, bytes)
        };
        Ok(Self { ipxe, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> (u8, Vec<u8>) {
        match ExtraOption::parse(name, value) {
            Ok(ExtraOption {
                ipxe: None,
                action: ExtraAction::Set(code, bytes),
            }) => (code, bytes),
            other => panic!("{name}={value}: {other:?}"),
        }
    }

    #[test]
    fn names_used_with_neutron() {
        assert_eq!(set("router", "10.0.0.1"), (3, vec![10, 0, 0, 1]));
        assert_eq!(
            set("dns-server", "10.0.0.53, 8.8.8.8"),
            (6, vec![10, 0, 0, 53, 8, 8, 8, 8])
        );
        assert_eq!(
            set("domain-name", "example.org"),
            (15, b"example.org".to_vec())
        );
        assert_eq!(
            set("domain-search", "eng.example.org,example.org"),
            (
                119,
                b"\x03eng\x07example\x03org\x00\x07example\x03org\x00".to_vec()
            )
        );
        assert_eq!(set("ntp-server", "192.0.2.1"), (42, vec![192, 0, 2, 1]));
        assert_eq!(set("tftp-server", "192.0.2.9"), (66, b"192.0.2.9".to_vec()));
        assert_eq!(
            set("bootfile-name", "pxelinux.0"),
            (67, b"pxelinux.0".to_vec())
        );
        assert_eq!(set("mtu", "9000"), (26, vec![0x23, 0x28]));
        assert_eq!(
            set(
                "classless-static-route",
                "10.1.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1"
            ),
            (121, vec![16, 10, 1, 10, 0, 0, 254, 0, 10, 0, 0, 1])
        );
        assert_eq!(
            set("tftp-server-address", "192.0.2.9"),
            (150, vec![192, 0, 2, 9])
        );
        assert_eq!(
            set("static-route", "10.9.0.0,10.0.0.1"),
            (33, vec![10, 9, 0, 0, 10, 0, 0, 1])
        );
        assert_eq!(
            set("time-offset", "-3600"),
            (2, (-3600i32).to_be_bytes().to_vec())
        );
        assert_eq!(set("ip-forward-enable", "1"), (19, vec![1]));
        assert_eq!(set("sip-server", "192.0.2.5"), (120, vec![1, 192, 0, 2, 5]));
        assert_eq!(
            set("sip-server", "sip.example.org"),
            (120, b"\x00\x03sip\x07example\x03org\x00".to_vec())
        );
        assert_eq!(
            ExtraOption::parse("server-ip-address", "192.0.2.9"),
            Ok(ExtraOption {
                ipxe: None,
                action: ExtraAction::NextServer(Ipv4Addr::new(192, 0, 2, 9))
            })
        );
    }

    #[test]
    fn numbers_and_prefixes() {
        assert_eq!(set("67", "undionly.kpxe"), (67, b"undionly.kpxe".to_vec()));
        assert_eq!(set("option:router", "10.0.0.1"), (3, vec![10, 0, 0, 1]));
        assert_eq!(set("ROUTER", "10.0.0.1"), (3, vec![10, 0, 0, 1]));
        assert_eq!(set("249", "10.1.0.0/16,10.0.0.254").0, 249);
        // Unknown numbers: the value's look decides.
        assert_eq!(set("210", "/tftpboot/"), (210, b"/tftpboot/".to_vec()));
        assert_eq!(
            set("224", "192.0.2.1,192.0.2.2"),
            (224, vec![192, 0, 2, 1, 192, 0, 2, 2])
        );
        assert_eq!(set("225", "01:02:ff"), (225, vec![1, 2, 0xff]));
        assert_eq!(set("226", "7"), (226, vec![7]));
        assert_eq!(set("227", "1000"), (227, vec![3, 0xe8]));
        assert_eq!(
            set("228", "100000"),
            (228, 100_000u32.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn an_empty_value_omits_the_option() {
        assert_eq!(
            ExtraOption::parse("router", ""),
            Ok(ExtraOption {
                ipxe: None,
                action: ExtraAction::Omit(3)
            })
        );
        assert_eq!(
            ExtraOption::parse("6", " ").map(|o| o.action),
            Ok(ExtraAction::Omit(6))
        );
    }

    #[test]
    fn ipxe_tags() {
        assert_eq!(
            ExtraOption::parse("tag:ipxe,67", "http://192.0.2.9/boot.ipxe"),
            Ok(ExtraOption {
                ipxe: Some(true),
                action: ExtraAction::Set(67, b"http://192.0.2.9/boot.ipxe".to_vec())
            })
        );
        assert_eq!(
            ExtraOption::parse("tag:!ipxe,bootfile-name", "undionly.kpxe").map(|o| o.ipxe),
            Ok(Some(false))
        );
        assert_eq!(
            ExtraOption::parse("tag:foo,67", "x"),
            Err(ExtraOptionError::UnsupportedTag("foo".to_owned()))
        );
        assert!(ExtraOption::parse("tag:ipxe,tag:!ipxe,67", "x").is_err());
    }

    #[test]
    fn unknown_reserved_and_bad_are_errors() {
        assert_eq!(
            ExtraOption::parse("no-such-option", "1"),
            Err(ExtraOptionError::UnknownName("no-such-option".to_owned()))
        );
        assert_eq!(
            ExtraOption::parse("53", "1"),
            Err(ExtraOptionError::Reserved(53))
        );
        assert_eq!(
            ExtraOption::parse("255", "1"),
            Err(ExtraOptionError::Reserved(255))
        );
        assert_eq!(
            ExtraOption::parse("256", "1"),
            Err(ExtraOptionError::UnknownName("256".to_owned()))
        );
        for (name, value) in [
            ("router", "10.0.0"),
            ("dns-server", "10.0.0.1,2001:db8::1"),
            ("mtu", "70000"),
            ("mtu", "-1"),
            ("default-ttl", "256"),
            ("ip-forward-enable", "yes please"),
            ("domain-search", "a..b"),
            ("classless-static-route", "10.1.0.0/16"),
            ("classless-static-route", "10.1.0.0/33,10.0.0.1"),
            ("static-route", "10.0.0.1"),
            ("server-ip-address", "tftp.example.org"),
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
