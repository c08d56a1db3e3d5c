//! The distributed DHCPv6 server: like the DHCPv4 one ([`crate::dhcp_server`]), the agent of the
//! chassis a port is on answers the port's DHCPv6 messages itself, with what Neutron's dnsmasq
//! hands out on subnets whose `ipv6_address_mode` is `dhcpv6-stateful` (the port's fixed address
//! there, for a day) or `dhcpv6-stateless` (configuration only): the subnets' IPv6 DNS servers
//! (`::` means none) and the search domain `openstacklocal.`, changed by the port's
//! `extra_dhcp_opts` with `ip_version` 6. Subnets with DHCP disabled, and SLAAC ones, are not
//! served.
//!
//! Replies come from the fixed MAC of the DHCPv4 server and its link-local address, with a DUID
//! made of that MAC. A message whose Ethernet source is not the port's MAC gets no answer.
//!
//! Not wired into the agent's event loop yet: the caller calls [`reply`] for a DHCPv6 message
//! (UDP 546 -> 547) punted from a port.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use pipeline::model::{DHCP_SERVER_MAC, Port, Topology, mac_octets};

use crate::dhcp_server::{DOMAIN, LEASE_SECS};

const STATEFUL: &str = "dhcpv6-stateful";
const STATELESS: &str = "dhcpv6-stateless";

/// The port's usable IPv6 extra DHCP options, in order.
fn extra_options(port: &Port) -> Vec<dhcpv6::ExtraOption> {
    port.extra_dhcp_opts
        .iter()
        .filter(|o| o.ip_version == 6)
        .filter_map(|o| match dhcpv6::ExtraOption::parse(&o.name, &o.value) {
            Ok(extra) => Some(extra),
            Err(e) => {
                tracing::debug!(port = %port.id, option = %o.name, "extra DHCPv6 option skipped: {e}");
                None
            }
        })
        .collect()
}

/// What the server knows for `port`: `None` when none of its IPv6 addresses is on a subnet of
/// its network served by DHCPv6.
pub(crate) fn server_for(topo: &Topology, port: &Port) -> Option<dhcpv6::Server> {
    let served: Vec<_> = port
        .ips
        .iter()
        .filter_map(|ip| {
            let IpAddr::V6(address) = ip else { return None };
            let subnet = topo.subnets.values().find(|s| {
                s.network_id == port.network_id
                    && s.enable_dhcp
                    && s.cidr.contains(ip)
                    && matches!(s.ipv6_address_mode.as_deref(), Some(STATEFUL | STATELESS))
            })?;
            Some((*address, subnet))
        })
        .collect();
    if served.is_empty() {
        return None;
    }
    let binding = served.iter().find_map(|(address, s)| {
        let IpNet::V6(prefix) = s.cidr else {
            return None;
        };
        (s.ipv6_address_mode.as_deref() == Some(STATEFUL)).then_some(dhcpv6::Binding {
            address: *address,
            prefix,
            preferred_lifetime: LEASE_SECS,
            valid_lifetime: LEASE_SECS,
        })
    });
    let mut dns: Vec<Ipv6Addr> = Vec::new();
    for (_, s) in &served {
        for d in &s.dns {
            if let IpAddr::V6(d) = d
                && !d.is_unspecified()
                && !dns.contains(d)
            {
                dns.push(*d);
            }
        }
    }
    Some(dhcpv6::Server {
        mac: mac_octets(DHCP_SERVER_MAC),
        binding,
        dns,
        domain_search: vec![format!("{DOMAIN}.")],
        extra: extra_options(port),
    })
}

/// The reply to a DHCPv6 client frame that came from `port`, if there is one to give.
pub(crate) fn reply(topo: &Topology, port: &Port, frame: &[u8]) -> Option<Vec<u8>> {
    let req = dhcpv6::parse_request(frame).ok()?;
    if req.eth_src != mac_octets(port.mac) {
        return None;
    }
    let server = server_for(topo, port)?;
    let answer = dhcpv6::answer(&req, &server)?;
    Some(dhcpv6::build_reply(&req, &answer, &server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::{Input, Pipeline};
    use serde_json::{Value, json};

    const NET: &str = "11111111-0000-4000-8000-000000000001";
    const PORT: &str = "22222222-0000-4000-8000-000000000001";
    const PORT_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 5];

    fn pipeline(subnets: &[Value], ips: &[&str], extra: Value) -> Pipeline {
        let mut p = Pipeline::new("ch1");
        let obj = |k: String, v: Value| Input::Object(k, Some(v));
        p.apply(obj(
            format!("/r/networks/{NET}"),
            json!({"id": NET, "provider:network_type": "vxlan", "provider:segmentation_id": 7}),
        ));
        for s in subnets {
            p.apply(obj(
                format!("/r/subnets/{}", s["id"].as_str().unwrap()),
                s.clone(),
            ));
        }
        let fixed: Vec<Value> = ips.iter().map(|ip| json!({"ip_address": ip})).collect();
        p.apply(obj(
            format!("/r/ports/{PORT}"),
            json!({"id": PORT, "network_id": NET, "mac_address": "fa:16:3e:00:00:05",
                "fixed_ips": fixed, "extra_dhcp_opts": extra}),
        ));
        p
    }

    fn v6(id: &str, cidr: &str, mode: Option<&str>, dns: &[&str]) -> Value {
        json!({"id": id, "network_id": NET, "cidr": cidr, "ip_version": 6,
            "ipv6_ra_mode": mode, "ipv6_address_mode": mode, "dns_nameservers": dns})
    }

    fn ip(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    /// A client frame of message type `kind` with a client identifier and, for Solicit,
    /// Request and Renew, an IA_NA (and the server identifier where it belongs).
    fn client(kind: u8, eth_src: [u8; 6]) -> Vec<u8> {
        let mut msg = vec![kind, 0x12, 0x34, 0x56];
        let mut opt = |code: u16, value: &[u8]| {
            msg.extend_from_slice(&code.to_be_bytes());
            msg.extend_from_slice(&(value.len() as u16).to_be_bytes());
            msg.extend_from_slice(value);
        };
        opt(1, &[0, 3, 0, 1, 0xfa, 0x16, 0x3e, 0, 0, 5]);
        if matches!(kind, 3 | 5) {
            opt(2, &[0, 3, 0, 1, 0x02, 0x77, 0x79, 0x76, 0x00, 0x01]);
        }
        if matches!(kind, 1 | 3 | 5) {
            opt(3, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        let mut udp = [546u16.to_be_bytes(), 547u16.to_be_bytes()].concat();
        udp.extend_from_slice(&((8 + msg.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&msg);
        let framing = ndp::Ipv6Framing {
            eth_dst: [0x33, 0x33, 0, 1, 0, 2],
            eth_src,
            vlan_tci: None,
            src: ndp::link_local(eth_src),
            dst: ip("ff02::1:2"),
            hop_limit: 1,
        };
        ndp::build_ipv6(&framing, 17, &udp)
    }

    /// The options of a reply frame (untagged), after checking its UDP checksum.
    fn reply_options(frame: &[u8]) -> (u8, Vec<(u16, Vec<u8>)>) {
        let packet = ndp::parse_ipv6(frame).unwrap();
        assert_eq!(packet.src, ndp::link_local(mac_octets(DHCP_SERVER_MAC)));
        assert_eq!(
            ndp::checksum::upper_layer_checksum(&packet.src, &packet.dst, 17, packet.payload),
            0,
            "UDP checksum"
        );
        let msg = &packet.payload[8..];
        let mut out = Vec::new();
        let mut at = 4;
        while at < msg.len() {
            let code = u16::from_be_bytes([msg[at], msg[at + 1]]);
            let len = usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]));
            out.push((code, msg[at + 4..at + 4 + len].to_vec()));
            at += 4 + len;
        }
        (msg[0], out)
    }

    #[test]
    fn stateful_subnets_bind_the_ports_address() {
        let p = pipeline(
            &[
                v6(
                    "s1",
                    "2001:db8:1::/64",
                    Some("dhcpv6-stateful"),
                    &["2001:db8::53", "::"],
                ),
                v6("s2", "2001:db8:2::/64", Some("slaac"), &["2001:db8::99"]),
            ],
            &["2001:db8:1::10", "2001:db8:2:0:f816:3eff:fe00:5"],
            json!([]),
        );
        let topo = p.topology();
        let server = server_for(topo, &topo.ports[PORT]).expect("served");
        assert_eq!(
            server.binding,
            Some(dhcpv6::Binding {
                address: ip("2001:db8:1::10"),
                prefix: "2001:db8:1::/64".parse().unwrap(),
                preferred_lifetime: 86_400,
                valid_lifetime: 86_400,
            })
        );
        assert_eq!(
            server.dns,
            vec![ip("2001:db8::53")],
            "slaac subnet not served; :: is none"
        );
        assert_eq!(server.domain_search, vec!["openstacklocal.".to_owned()]);
        assert_eq!(server.mac, [0x02, 0x77, 0x79, 0x76, 0x00, 0x01]);

        let frame = reply(topo, &topo.ports[PORT], &client(1, PORT_MAC)).expect("an advertise");
        assert_eq!(&frame[0..6], &PORT_MAC);
        let (kind, options) = reply_options(&frame);
        assert_eq!(kind, 2);
        let ia = &options.iter().find(|(c, _)| *c == 3).expect("an IA_NA").1;
        assert_eq!(
            &ia[16..32],
            &ip("2001:db8:1::10").octets(),
            "the bound address"
        );
    }

    #[test]
    fn stateless_subnets_give_configuration_only() {
        let p = pipeline(
            &[v6(
                "s1",
                "2001:db8:1::/64",
                Some("dhcpv6-stateless"),
                &["2001:db8::53"],
            )],
            &["2001:db8:1:0:f816:3eff:fe00:5"],
            json!([{"opt_name": "domain-search", "opt_value": "example.org", "ip_version": 6},
                   {"opt_name": "bootfile-name", "opt_value": "x", "ip_version": 6},
                   {"opt_name": "dns-server", "opt_value": "10.0.0.1", "ip_version": 4}]),
        );
        let topo = p.topology();
        let port = &topo.ports[PORT];
        let server = server_for(topo, port).expect("served");
        assert_eq!(server.binding, None);
        assert_eq!(
            server.extra,
            vec![dhcpv6::ExtraOption::parse("domain-search", "example.org").unwrap()],
            "IPv6 ones that can be used"
        );
        let (kind, options) = reply_options(&reply(topo, port, &client(11, PORT_MAC)).unwrap());
        assert_eq!(kind, 7);
        let codes: Vec<u16> = options.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, [1, 2, 23, 24]);
        assert_eq!(
            options[3].1, b"\x07example\x03org\x00",
            "the port's search domain"
        );
        // A Solicit's IA gets NoAddrsAvail.
        let (_, options) = reply_options(&reply(topo, port, &client(1, PORT_MAC)).unwrap());
        let ia = &options.iter().find(|(c, _)| *c == 3).unwrap().1;
        assert_eq!(&ia[12..18], &[0, 13, 0, 24, 0, 2]);
    }

    #[test]
    fn not_served() {
        // SLAAC, DHCP disabled, no IPv6 address, another MAC.
        let slaac = pipeline(
            &[v6("s1", "2001:db8:1::/64", Some("slaac"), &[])],
            &["2001:db8:1::10"],
            json!([]),
        );
        let topo = slaac.topology();
        assert!(server_for(topo, &topo.ports[PORT]).is_none());
        let mut disabled = v6("s1", "2001:db8:1::/64", Some("dhcpv6-stateful"), &[]);
        disabled["enable_dhcp"] = json!(false);
        let p = pipeline(&[disabled], &["2001:db8:1::10"], json!([]));
        assert!(server_for(p.topology(), &p.topology().ports[PORT]).is_none());
        let p = pipeline(
            &[v6("s1", "2001:db8:1::/64", Some("dhcpv6-stateful"), &[])],
            &["10.0.0.5"],
            json!([]),
        );
        assert!(server_for(p.topology(), &p.topology().ports[PORT]).is_none());
        let p = pipeline(
            &[v6("s1", "2001:db8:1::/64", Some("dhcpv6-stateful"), &[])],
            &["2001:db8:1::10"],
            json!([]),
        );
        let topo = p.topology();
        assert!(reply(topo, &topo.ports[PORT], &client(1, PORT_MAC)).is_some());
        assert!(reply(topo, &topo.ports[PORT], &client(1, [2, 0, 0, 0, 0, 9])).is_none());
        assert!(reply(topo, &topo.ports[PORT], &[0; 60]).is_none());
    }
}
