//! What Neutron advertises on a router interface (the radvd configuration its L3 agent writes,
//! `neutron/agent/linux/ra.py`, with radvd's and Neutron's defaults), and the timers of an
//! advertising interface (RFC 4861 sections 6.2.4 to 6.2.6).
//!
//! Per subnet `ipv6_ra_mode`: `slaac` and `dhcpv6-stateless` prefixes are advertised on-link and
//! autonomous (A=1), `dhcpv6-stateful` ones on-link only (A=0). The O flag is set when any subnet
//! is `dhcpv6-stateless`, the M flag when any is `dhcpv6-stateful`. The DNS servers of `slaac`
//! subnets (at most 3) go in a recursive DNS server option; the MTU option is sent when the
//! network's MTU is at least the IPv6 minimum, 1280.

use std::net::Ipv6Addr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv6Net;

use crate::{PrefixInformation, RecursiveDnsServers, RouterAdvertisement};

/// Neutron's `min_rtr_adv_interval` default.
pub const MIN_RTR_ADV_INTERVAL: Duration = Duration::from_secs(30);
/// Neutron's `max_rtr_adv_interval` default.
pub const MAX_RTR_ADV_INTERVAL: Duration = Duration::from_secs(100);
/// radvd's `AdvDefaultLifetime` default: 3 × `MaxRtrAdvInterval`.
pub const ROUTER_LIFETIME_SECS: u16 = 300;
/// radvd's `AdvValidLifetime` default (one day).
pub const VALID_LIFETIME_SECS: u32 = 86_400;
/// radvd's `AdvPreferredLifetime` default (four hours).
pub const PREFERRED_LIFETIME_SECS: u32 = 14_400;
/// radvd's `AdvRDNSSLifetime` default: 2 × `MaxRtrAdvInterval`.
pub const RDNSS_LIFETIME_SECS: u32 = 200;
/// radvd's `AdvCurHopLimit` default.
pub const CUR_HOP_LIMIT: u8 = 64;
/// radvd takes at most this many servers per RDNSS line; Neutron cuts the list there.
pub const MAX_RDNSS_SERVERS: usize = 3;
/// The IPv6 minimum link MTU; Neutron advertises no smaller MTU.
pub const IPV6_MIN_MTU: u32 = 1280;
/// RFC 4861 section 10: the first few unsolicited advertisements come faster.
pub const MAX_INITIAL_RTR_ADVERTISEMENTS: u32 = 3;
pub const MAX_INITIAL_RTR_ADVERT_INTERVAL: Duration = Duration::from_secs(16);
/// RFC 4861 section 10: multicast answers to solicitations are at least this far apart.
pub const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// RFC 4861 section 10: the longest delay of an answer to a solicitation.
pub const MAX_RA_DELAY_TIME: Duration = Duration::from_millis(500);

/// A subnet's `ipv6_ra_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaMode {
    Slaac,
    Dhcpv6Stateless,
    Dhcpv6Stateful,
}

/// The Neutron name is none of `slaac`, `dhcpv6-stateless`, `dhcpv6-stateful`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown IPv6 mode {0:?}")]
pub struct UnknownMode(pub String);

impl FromStr for RaMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "slaac" => Ok(Self::Slaac),
            "dhcpv6-stateless" => Ok(Self::Dhcpv6Stateless),
            "dhcpv6-stateful" => Ok(Self::Dhcpv6Stateful),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// A subnet to advertise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaSubnet {
    pub prefix: Ipv6Net,
    pub mode: RaMode,
    /// The subnet's DNS servers (sent for `slaac` subnets only, as Neutron does).
    pub dns: Vec<Ipv6Addr>,
}

/// The advertisement Neutron's radvd sends for a router interface on `subnets`, on a network
/// with `mtu`. `default_router` false sends router lifetime 0 (hosts do not route through the
/// sender), for networks where no router owns the gateway.
pub fn advertisement(
    subnets: &[RaSubnet],
    mtu: Option<u32>,
    default_router: bool,
) -> RouterAdvertisement {
    let has = |mode| subnets.iter().any(|s| s.mode == mode);
    let servers: Vec<Ipv6Addr> = subnets
        .iter()
        .filter(|s| s.mode == RaMode::Slaac)
        .flat_map(|s| s.dns.iter().copied())
        .take(MAX_RDNSS_SERVERS)
        .collect();
    RouterAdvertisement {
        cur_hop_limit: CUR_HOP_LIMIT,
        managed: has(RaMode::Dhcpv6Stateful),
        other_config: has(RaMode::Dhcpv6Stateless),
        router_lifetime: if default_router {
            ROUTER_LIFETIME_SECS
        } else {
            0
        },
        reachable_time: 0,
        retrans_timer: 0,
        mtu: mtu.filter(|m| *m >= IPV6_MIN_MTU),
        prefixes: subnets
            .iter()
            .map(|s| PrefixInformation {
                prefix: s.prefix.trunc(),
                on_link: true,
                autonomous: s.mode != RaMode::Dhcpv6Stateful,
                valid_lifetime: VALID_LIFETIME_SECS,
                preferred_lifetime: PREFERRED_LIFETIME_SECS,
            })
            .collect(),
        dns: (!servers.is_empty()).then_some(RecursiveDnsServers {
            lifetime: RDNSS_LIFETIME_SECS,
            servers,
        }),
    }
}

/// The wait before unsolicited advertisement number `sent + 1` (RFC 4861 section 6.2.4):
/// uniformly between [`MIN_RTR_ADV_INTERVAL`] and [`MAX_RTR_ADV_INTERVAL`] at `unit_random`
/// (from 0 to 1, clamped), and at most [`MAX_INITIAL_RTR_ADVERT_INTERVAL`] while fewer than
/// [`MAX_INITIAL_RTR_ADVERTISEMENTS`] were sent.
pub fn unsolicited_interval(sent: u32, unit_random: f64) -> Duration {
    let spread = MAX_RTR_ADV_INTERVAL - MIN_RTR_ADV_INTERVAL;
    let unit = if unit_random.is_nan() {
        0.0
    } else {
        unit_random.clamp(0.0, 1.0)
    };
    let interval = MIN_RTR_ADV_INTERVAL + spread.mul_f64(unit);
    if sent < MAX_INITIAL_RTR_ADVERTISEMENTS {
        interval.min(MAX_INITIAL_RTR_ADVERT_INTERVAL)
    } else {
        interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(prefix: &str, mode: RaMode, dns: &[&str]) -> RaSubnet {
        RaSubnet {
            prefix: prefix.parse().unwrap(),
            mode,
            dns: dns.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn modes_parse_from_neutron_names() {
        assert_eq!("slaac".parse(), Ok(RaMode::Slaac));
        assert_eq!("dhcpv6-stateless".parse(), Ok(RaMode::Dhcpv6Stateless));
        assert_eq!("dhcpv6-stateful".parse(), Ok(RaMode::Dhcpv6Stateful));
        assert_eq!(
            "SLAAC".parse::<RaMode>(),
            Err(UnknownMode("SLAAC".to_owned()))
        );
    }

    #[test]
    fn flags_per_mode() {
        let cases = [
            (RaMode::Slaac, false, false, true),
            (RaMode::Dhcpv6Stateless, false, true, true),
            (RaMode::Dhcpv6Stateful, true, false, false),
        ];
        for (mode, managed, other, autonomous) in cases {
            let ra = advertisement(&[subnet("2001:db8::/64", mode, &[])], None, true);
            assert_eq!((ra.managed, ra.other_config), (managed, other), "{mode:?}");
            assert_eq!(
                ra.prefixes,
                vec![PrefixInformation {
                    prefix: "2001:db8::/64".parse().unwrap(),
                    on_link: true,
                    autonomous,
                    valid_lifetime: 86_400,
                    preferred_lifetime: 14_400,
                }],
                "{mode:?}"
            );
            assert_eq!(ra.cur_hop_limit, 64);
            assert_eq!(ra.router_lifetime, 300);
            assert_eq!((ra.reachable_time, ra.retrans_timer), (0, 0));
        }
    }

    #[test]
    fn mixed_modes_dns_and_mtu() {
        let ra = advertisement(
            &[
                subnet(
                    "2001:db8:1::/64",
                    RaMode::Slaac,
                    &["2001:db8::53", "2001:db8::54"],
                ),
                subnet(
                    "2001:db8:2::1/64",
                    RaMode::Dhcpv6Stateful,
                    &["2001:db8::99"],
                ),
                subnet(
                    "2001:db8:3::/64",
                    RaMode::Slaac,
                    &["2001:db8::55", "2001:db8::56"],
                ),
            ],
            Some(1442),
            false,
        );
        assert!(ra.managed && !ra.other_config);
        assert_eq!(ra.router_lifetime, 0, "not a default router");
        assert_eq!(ra.mtu, Some(1442));
        assert_eq!(
            ra.prefixes[1].prefix,
            "2001:db8:2::/64".parse::<Ipv6Net>().unwrap(),
            "sent as its network"
        );
        assert_eq!(
            ra.dns,
            Some(RecursiveDnsServers {
                lifetime: 200,
                servers: ["2001:db8::53", "2001:db8::54", "2001:db8::55"]
                    .iter()
                    .map(|s| s.parse().unwrap())
                    .collect(),
            }),
            "slaac subnets' servers only, at most three"
        );
        let small = advertisement(
            &[subnet("2001:db8::/64", RaMode::Slaac, &[])],
            Some(1279),
            true,
        );
        assert_eq!(small.mtu, None, "below the IPv6 minimum");
        assert_eq!(small.dns, None);
    }

    #[test]
    fn unsolicited_intervals() {
        assert_eq!(unsolicited_interval(5, 0.0), Duration::from_secs(30));
        assert_eq!(unsolicited_interval(5, 1.0), Duration::from_secs(100));
        assert_eq!(unsolicited_interval(5, 0.5), Duration::from_secs(65));
        assert_eq!(unsolicited_interval(5, 7.0), Duration::from_secs(100));
        assert_eq!(unsolicited_interval(5, f64::NAN), Duration::from_secs(30));
        assert_eq!(unsolicited_interval(0, 0.5), Duration::from_secs(16));
        assert_eq!(unsolicited_interval(2, 0.0), Duration::from_secs(16));
        assert_eq!(unsolicited_interval(3, 0.0), Duration::from_secs(30));
    }
}
