//! Router advertisements built in software, as Neutron's L3 agent has radvd send them from a
//! router interface: for the IPv6 subnets of a port's network that have an `ipv6_ra_mode`, with
//! the flags, prefix options, DNS servers, MTU and lifetimes of `ndp::neutron`. The agent of the
//! chassis a port is on sends them to that port only: unsolicited ones every
//! [`ndp::neutron::unsolicited_interval`], and answers to the port's router solicitations.
//!
//! The router lifetime is Neutron's when one of the advertised subnets has a gateway, and 0
//! (hosts use the prefixes but no default route through the sender) when none has.
//!
//! Not wired into the agent's event loop yet: the caller picks the router interface MAC the
//! advertisements come from and calls [`unsolicited`] on a timer and [`answer`] for a punted
//! router solicitation.

use std::net::IpAddr;

use ipnet::IpNet;
use ndp::neutron::{self, RaMode, RaSubnet};
use pipeline::model::{Port, Topology};

/// What `port`'s network advertises; `None` when none of its IPv6 subnets has an
/// `ipv6_ra_mode`.
fn advertisement(topo: &Topology, port: &Port) -> Option<ndp::RouterAdvertisement> {
    let mut subnets = Vec::new();
    let mut default_router = false;
    for s in topo
        .subnets
        .values()
        .filter(|s| s.network_id == port.network_id)
    {
        let IpNet::V6(prefix) = s.cidr else { continue };
        let Some(mode) = s
            .ipv6_ra_mode
            .as_deref()
            .and_then(|m| m.parse::<RaMode>().ok())
        else {
            continue;
        };
        default_router |= s.gateway.is_some();
        subnets.push(RaSubnet {
            prefix,
            mode,
            dns: s
                .dns
                .iter()
                .filter_map(|d| match d {
                    IpAddr::V6(v6) if !v6.is_unspecified() => Some(*v6),
                    _ => None,
                })
                .collect(),
        });
    }
    if subnets.is_empty() {
        return None;
    }
    let mtu = topo
        .networks
        .get(&port.network_id)
        .and_then(|n| n.mtu)
        .map(u32::from);
    Some(neutron::advertisement(&subnets, mtu, default_router))
}

/// The unsolicited router advertisement for `port` (to all-nodes, from `router_mac` and its
/// link-local address), if its network advertises anything.
pub(crate) fn unsolicited(topo: &Topology, port: &Port, router_mac: [u8; 6]) -> Option<Vec<u8>> {
    Some(advertisement(topo, port)?.frame(router_mac, None))
}

/// The answer to a router solicitation `frame` from `port`: the advertisement, unicast to the
/// solicitor (to all-nodes when it has no address yet). `None` for an invalid solicitation or
/// when the network advertises nothing.
pub(crate) fn answer(
    topo: &Topology,
    port: &Port,
    router_mac: [u8; 6],
    frame: &[u8],
) -> Option<Vec<u8>> {
    let rs = ndp::parse_router_solicitation(frame).ok()?;
    Some(advertisement(topo, port)?.frame(router_mac, Some(&rs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::model::mac_octets;
    use pipeline::{Input, Pipeline};
    use serde_json::{Value, json};

    const NET: &str = "11111111-0000-4000-8000-000000000001";
    const PORT: &str = "22222222-0000-4000-8000-000000000001";
    const ROUTER_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc];

    fn pipeline(subnets: &[Value]) -> Pipeline {
        let mut p = Pipeline::new("ch1");
        let obj = |k: String, v: Value| Input::Object(k, Some(v));
        p.apply(obj(
            format!("/r/networks/{NET}"),
            json!({"id": NET, "provider:network_type": "vxlan", "provider:segmentation_id": 7, "mtu": 1442}),
        ));
        for s in subnets {
            p.apply(obj(
                format!("/r/subnets/{}", s["id"].as_str().unwrap()),
                s.clone(),
            ));
        }
        p.apply(obj(
            format!("/r/ports/{PORT}"),
            json!({"id": PORT, "network_id": NET, "mac_address": "fa:16:3e:00:00:05",
                "fixed_ips": [{"ip_address": "2001:db8:1:0:f816:3eff:fe00:5"}]}),
        ));
        p
    }

    fn v6(id: &str, cidr: &str, mode: Option<&str>, gateway: Option<&str>, dns: &[&str]) -> Value {
        json!({"id": id, "network_id": NET, "cidr": cidr, "ip_version": 6,
            "ipv6_ra_mode": mode, "ipv6_address_mode": mode, "gateway_ip": gateway,
            "dns_nameservers": dns})
    }

    /// The ICMPv6 message of a frame (untagged), after checking its checksum.
    fn icmp(frame: &[u8]) -> (ndp::Ipv6Packet<'_>, &[u8]) {
        let packet = ndp::parse_ipv6(frame).unwrap();
        assert_eq!(
            ndp::checksum::upper_layer_checksum(&packet.src, &packet.dst, 58, packet.payload),
            0,
            "ICMPv6 checksum"
        );
        let message = packet.payload;
        (packet, message)
    }

    /// (type, whole option) of an advertisement's options.
    fn options(message: &[u8]) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        let mut at = 16;
        while at < message.len() {
            let len = usize::from(message[at + 1]) * 8;
            out.push((message[at], &message[at..at + len]));
            at += len;
        }
        out
    }

    #[test]
    fn subnets_with_a_mode_are_advertised() {
        let p = pipeline(&[
            v6(
                "s1",
                "2001:db8:1::/64",
                Some("slaac"),
                Some("2001:db8:1::1"),
                &["2001:db8::53", "::"],
            ),
            v6(
                "s2",
                "2001:db8:2::/64",
                Some("dhcpv6-stateful"),
                Some("2001:db8:2::1"),
                &[],
            ),
            v6("s3", "2001:db8:3::/64", None, Some("2001:db8:3::1"), &[]),
            json!({"id": "s4", "network_id": NET, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1"}),
        ]);
        let topo = p.topology();
        let frame = unsolicited(topo, &topo.ports[PORT], ROUTER_MAC).expect("an advertisement");
        assert_eq!(&frame[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&frame[6..12], &ROUTER_MAC);
        let (packet, m) = icmp(&frame);
        assert_eq!(packet.src, ndp::link_local(ROUTER_MAC));
        assert_eq!(packet.dst, ndp::ALL_NODES);
        assert_eq!(packet.hop_limit, 255);
        assert_eq!(m[0], 134);
        assert_eq!(m[5], 0x80, "managed (a stateful subnet), not other");
        assert_eq!(u16::from_be_bytes([m[6], m[7]]), 300, "a default router");
        let opts = options(m);
        let kinds: Vec<u8> = opts.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [1, 5, 3, 3, 25],
            "no prefix for the subnet without a mode"
        );
        assert_eq!(
            &opts[1].1[4..8],
            &1442u32.to_be_bytes(),
            "the network's MTU"
        );
        assert_eq!(opts[2].1[3], 0xc0, "slaac: on-link and autonomous");
        assert_eq!(&opts[2].1[16..24], &[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0]);
        assert_eq!(opts[3].1[3], 0x80, "stateful: on-link only");
        assert_eq!(opts[4].1.len(), 24, "one DNS server: :: means none");
    }

    #[test]
    fn stateless_sets_other_and_no_gateway_means_no_default_router() {
        let p = pipeline(&[v6(
            "s1",
            "2001:db8:1::/64",
            Some("dhcpv6-stateless"),
            None,
            &[],
        )]);
        let topo = p.topology();
        let frame = unsolicited(topo, &topo.ports[PORT], ROUTER_MAC).unwrap();
        let (_, m) = icmp(&frame);
        assert_eq!(m[5], 0x40, "other configuration");
        assert_eq!(&m[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(options(m)[2].1[3], 0xc0);
    }

    #[test]
    fn nothing_without_a_mode() {
        let p = pipeline(&[v6(
            "s1",
            "2001:db8:1::/64",
            None,
            Some("2001:db8:1::1"),
            &[],
        )]);
        let topo = p.topology();
        assert_eq!(unsolicited(topo, &topo.ports[PORT], ROUTER_MAC), None);
    }

    #[test]
    fn a_solicitation_gets_a_unicast_answer() {
        let p = pipeline(&[v6(
            "s1",
            "2001:db8:1::/64",
            Some("slaac"),
            Some("2001:db8:1::1"),
            &[],
        )]);
        let topo = p.topology();
        let port = &topo.ports[PORT];
        let vm_mac = mac_octets(port.mac);
        let vm_ll = ndp::link_local(vm_mac);
        let mut rs = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        rs.extend_from_slice(&vm_mac);
        let framing = ndp::Ipv6Framing {
            eth_dst: ndp::multicast_mac(ndp::ALL_ROUTERS),
            eth_src: vm_mac,
            vlan_tci: None,
            src: vm_ll,
            dst: ndp::ALL_ROUTERS,
            hop_limit: 255,
        };
        let solicitation = ndp::build_icmpv6(&framing, rs);
        let frame = answer(topo, port, ROUTER_MAC, &solicitation).expect("an answer");
        assert_eq!(&frame[0..6], &vm_mac);
        let (packet, m) = icmp(&frame);
        assert_eq!(packet.dst, vm_ll);
        assert_eq!(m[0], 134);

        let mut forwarded = solicitation.clone();
        forwarded[21] = 254; // hop limit
        assert_eq!(answer(topo, port, ROUTER_MAC, &forwarded), None);
        assert_eq!(answer(topo, port, ROUTER_MAC, &solicitation[..40]), None);
    }
}
