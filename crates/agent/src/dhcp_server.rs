//! The distributed DHCP server: the pipeline sends DHCP requests from ports on networks with an
//! IPv4 subnet that has DHCP enabled to the agent of the chassis the port is on, which answers with
//! the port's fixed address and its subnet's settings — what Neutron's DHCP agent (dnsmasq) would
//! hand out, with no DHCP port and no central server.
//!
//! As Neutron's DHCP agent does: on-link routes (option 121, next hop 0.0.0.0) to the network's other
//! IPv4 subnets; a host route to 0.0.0.0/0 is dropped when the subnet has a gateway (option 3 says
//! it); a DNS server 0.0.0.0 means "send none". Where Neutron differs because dnsmasq is a server of
//! its own: with no DNS servers configured none are sent (there is no resolver to point at).
//!
//! Choices where Neutron leaves room: the server identifier (and the reply's source address) is the
//! subnet's gateway, or its last host address when it has none
//! ([`Subnet::dhcp_server_ip`](pipeline::model::Subnet::dhcp_server_ip)); the pipeline answers ARP
//! for it when no port holds it; replies come from a fixed, locally administered MAC. A request whose
//! client hardware address is not the port's MAC, or that came through a relay, gets no answer
//! (dnsmasq keys its hosts by MAC too).
//!
//! The port's `extra_dhcp_opts` with `ip_version` 4 add to or override what is sent, read as
//! dnsmasq reads them ([`dhcp::ExtraOption`]); one that cannot be used (unknown name, bad value,
//! a tag other than `ipxe`) is skipped.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use pipeline::model::{DHCP_SERVER_MAC, Port, Topology, mac_octets};

/// Lease time: Neutron's default `dhcp_lease_duration`.
pub const LEASE_SECS: u32 = 86_400;
/// Domain name: Neutron's default `dns_domain`.
pub const DOMAIN: &str = "openstacklocal";

/// The lease `port` gets: its first IPv4 address on a subnet with DHCP enabled.
pub fn lease_for(topo: &Topology, port: &Port) -> Option<dhcp::Lease> {
    let (ip, subnet) = port.ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some((*v4, topo.dhcp_subnet(&port.network_id, *ip)?)),
        IpAddr::V6(_) => None,
    })?;
    let IpNet::V4(cidr) = subnet.cidr else {
        return None;
    };
    let v4 = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    };
    let router = subnet.gateway.as_ref().and_then(v4);
    let mut routes: Vec<(Ipv4Net, Ipv4Addr)> = subnet
        .host_routes
        .iter()
        .filter_map(|(dst, via)| match dst {
            IpNet::V4(dst) => Some((*dst, v4(via)?)),
            IpNet::V6(_) => None,
        })
        .filter(|(dst, _)| router.is_none() || dst.prefix_len() != 0)
        .collect();
    // The network's other IPv4 subnets are on-link.
    routes.extend(
        topo.subnets
            .values()
            .filter(|s| s.network_id == port.network_id && s.id != subnet.id)
            .filter_map(|s| match s.cidr {
                IpNet::V4(other) => Some((other, Ipv4Addr::UNSPECIFIED)),
                IpNet::V6(_) => None,
            }),
    );
    Some(dhcp::Lease {
        ip,
        subnet: cidr,
        router,
        dns: subnet
            .dns
            .iter()
            .filter_map(v4)
            .filter(|d| !d.is_unspecified())
            .collect(),
        routes,
        mtu: topo.networks.get(&port.network_id).and_then(|n| n.mtu),
        lease_secs: LEASE_SECS,
        hostname: Some(format!("host-{}", ip.to_string().replace('.', "-"))),
        domain: Some(DOMAIN.to_owned()),
        extra: extra_options(port),
        server_ip: subnet.dhcp_server_ip()?,
        server_mac: mac_octets(DHCP_SERVER_MAC),
    })
}

/// The port's usable IPv4 extra DHCP options, in order.
fn extra_options(port: &Port) -> Vec<dhcp::ExtraOption> {
    port.extra_dhcp_opts
        .iter()
        .filter(|o| o.ip_version == 4)
        .filter_map(|o| match dhcp::ExtraOption::parse(&o.name, &o.value) {
            Ok(extra) => Some(extra),
            Err(e) => {
                tracing::debug!(port = %port.id, option = %o.name, "extra DHCP option skipped: {e}");
                None
            }
        })
        .collect()
}

/// The reply to a DHCP client frame that came from `port`, if there is one to give.
pub fn reply(topo: &Topology, port: &Port, frame: &[u8]) -> Option<Vec<u8>> {
    let req = dhcp::parse_request(frame).ok()?;
    if req.chaddr != mac_octets(port.mac) || !req.giaddr.is_unspecified() {
        return None;
    }
    let lease = lease_for(topo, port)?;
    let kind = dhcp::answer(&req, &lease)?;
    Some(dhcp::build_reply(&req, kind, &lease))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::{Input, Pipeline};
    use serde_json::json;

    const NET: &str = "11111111-0000-4000-8000-000000000001";
    const PORT: &str = "22222222-0000-4000-8000-000000000001";

    fn pipeline(subnet: serde_json::Value) -> Pipeline {
        let mut p = Pipeline::new("ch1");
        let obj = |k: String, v: serde_json::Value| Input::Object(k, Some(v));
        p.apply(obj(
            format!("/r/networks/{NET}"),
            json!({"id": NET, "provider:network_type": "vxlan", "provider:segmentation_id": 7, "mtu": 1442}),
        ));
        p.apply(obj("/r/subnets/s1".into(), subnet));
        p.apply(obj(
            format!("/r/ports/{PORT}"),
            json!({"id": PORT, "network_id": NET, "mac_address": "fa:16:3e:00:00:05",
                "fixed_ips": [{"ip_address": "2001:db8::5"}, {"ip_address": "10.0.0.5"}]}),
        ));
        p
    }

    #[test]
    fn the_lease_carries_the_port_address_and_subnet_settings() {
        let p = pipeline(json!({"id": "s1", "network_id": NET, "cidr": "10.0.0.0/24",
            "gateway_ip": "10.0.0.1", "dns_nameservers": ["10.0.0.53", "2001:db8::53"],
            "host_routes": [{"destination": "10.1.0.0/16", "nexthop": "10.0.0.254"}]}));
        let topo = p.topology();
        let lease = lease_for(topo, &topo.ports[PORT]).expect("a lease");
        assert_eq!(lease.ip, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(lease.subnet, "10.0.0.0/24".parse().unwrap());
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(lease.server_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 0, 53)]);
        assert_eq!(
            lease.routes,
            vec![("10.1.0.0/16".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 254))]
        );
        assert_eq!(lease.mtu, Some(1442));
        assert_eq!(lease.hostname.as_deref(), Some("host-10-0-0-5"));
    }

    #[test]
    fn no_lease_without_dhcp_and_a_server_address_without_gateway() {
        let p = pipeline(json!({"id": "s1", "network_id": NET, "cidr": "10.0.0.0/24",
            "enable_dhcp": false, "gateway_ip": "10.0.0.1"}));
        assert!(lease_for(p.topology(), &p.topology().ports[PORT]).is_none());
        let p = pipeline(json!({"id": "s1", "network_id": NET, "cidr": "10.0.0.0/24",
            "gateway_ip": null}));
        let lease = lease_for(p.topology(), &p.topology().ports[PORT]).expect("a lease");
        assert_eq!(lease.router, None);
        assert_eq!(lease.server_ip, Ipv4Addr::new(10, 0, 0, 254));
    }

    #[test]
    fn routes_and_dns_as_neutron_gives_them() {
        let mut p = pipeline(json!({"id": "s1", "network_id": NET, "cidr": "10.0.0.0/24",
            "gateway_ip": "10.0.0.1", "dns_nameservers": ["0.0.0.0"],
            "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.0.9"},
                            {"destination": "10.1.0.0/16", "nexthop": "10.0.0.254"}]}));
        p.apply(Input::Object(
            "/r/subnets/s2".into(),
            Some(json!({"id": "s2", "network_id": NET, "cidr": "10.9.0.0/24", "gateway_ip": null})),
        ));
        let topo = p.topology();
        let lease = lease_for(topo, &topo.ports[PORT]).expect("a lease");
        assert!(lease.dns.is_empty(), "0.0.0.0 means none");
        assert_eq!(
            lease.routes,
            vec![
                ("10.1.0.0/16".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 254)),
                ("10.9.0.0/24".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
            ],
            "the default host route gives way to the gateway; the other subnet is on-link"
        );
    }

    #[test]
    fn the_ports_ipv4_extra_options_go_in_the_lease_and_the_reply() {
        let mut p = pipeline(json!({"id": "s1", "network_id": NET, "cidr": "10.0.0.0/24",
            "gateway_ip": "10.0.0.1"}));
        p.apply(Input::Object(
            format!("/r/ports/{PORT}"),
            Some(
                json!({"id": PORT, "network_id": NET, "mac_address": "fa:16:3e:00:00:05",
                "fixed_ips": [{"ip_address": "10.0.0.5"}],
                "extra_dhcp_opts": [
                    {"opt_name": "bootfile-name", "opt_value": "pxelinux.0", "ip_version": 4},
                    {"opt_name": "server-ip-address", "opt_value": "10.0.0.9", "ip_version": 4},
                    {"opt_name": "router", "opt_value": "", "ip_version": 4},
                    {"opt_name": "dns-server", "opt_value": "[2001:db8::1]", "ip_version": 6},
                    {"opt_name": "no-such-option", "opt_value": "1", "ip_version": 4},
                    {"opt_name": "mtu", "opt_value": "not a number", "ip_version": 4},
                    {"opt_name": "ntp-server", "opt_value": null, "ip_version": 4}]}),
            ),
        ));
        let topo = p.topology();
        let port = &topo.ports[PORT];
        assert_eq!(port.extra_dhcp_opts.len(), 6, "the null value is left out");
        let lease = lease_for(topo, port).expect("a lease");
        let parse = |n: &str, v: &str| dhcp::ExtraOption::parse(n, v).unwrap();
        assert_eq!(
            lease.extra,
            vec![
                parse("bootfile-name", "pxelinux.0"),
                parse("server-ip-address", "10.0.0.9"),
                parse("router", ""),
            ],
            "IPv4 ones that can be used, in order"
        );

        // A DISCOVER from the port gets them.
        let discover = {
            let mut msg = vec![1, 1, 6, 0, 0, 0, 0, 1];
            msg.resize(28, 0);
            msg.extend_from_slice(&mac_octets(port.mac));
            msg.resize(236, 0);
            msg.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 255]);
            let mut udp = [68u16.to_be_bytes(), 67u16.to_be_bytes()].concat();
            udp.extend_from_slice(&((8 + msg.len()) as u16).to_be_bytes());
            udp.extend_from_slice(&[0, 0]);
            udp.extend_from_slice(&msg);
            let mut ip = vec![
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
            ];
            ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
            let sum = ndp::checksum::internet_checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            let mut frame = vec![0xff; 6];
            frame.extend_from_slice(&mac_octets(port.mac));
            frame.extend_from_slice(&[0x08, 0x00]);
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&udp);
            frame
        };
        let offer = reply(topo, port, &discover).expect("an offer");
        let bootp = &offer[14 + 20 + 8..];
        assert_eq!(&bootp[20..24], &[10, 0, 0, 9], "siaddr");
        assert_eq!(&bootp[108..118], b"pxelinux.0", "file");
        let mut options = Vec::new();
        let mut at = 240;
        while bootp[at] != 255 {
            let len = usize::from(bootp[at + 1]);
            options.push((bootp[at], bootp[at + 2..at + 2 + len].to_vec()));
            at += 2 + len;
        }
        assert!(options.contains(&(67, b"pxelinux.0".to_vec())));
        assert!(
            options.iter().all(|(code, _)| *code != 3),
            "no router option"
        );
    }
}
