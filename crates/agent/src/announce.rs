//! Announcements of router interfaces whose MAC or addresses are new to the VMs next to them: a
//! gratuitous ARP for each IPv4 address and an unsolicited neighbour advertisement (router,
//! override) for each IPv6 address and the link-local one, sent to every local VIF on the
//! interface's network, as Neutron's L3 agent does when it plugs an interface. A VM then replaces
//! the MAC it cached for its gateway at once (an interface added again is a new port with a new
//! MAC), instead of when its cache entry expires.
//!
//! On physical networks: a gratuitous ARP for each address that starts being served here — a
//! floating IP (its port's VIF is here, or it was just associated), the chassis' own SNAT
//! address, a router gateway this chassis now hosts (a gateway chassis took over; for its IPv6
//! addresses and its link-local one, an unsolicited neighbour advertisement) — out of the
//! network's patch port, so that the physical network's switches and neighbours learn where it is
//! now within a packet (repeated a few times, backing off: a switch may briefly learn the old
//! place again from traffic it forwarded just before).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use pipeline::Pipeline;
use pipeline::cookie::Owner;
use pipeline::model::{Mac, Port, Topology, link_local, mac_octets};

/// What was announced for each router interface on a network with local VIFs, and for each
/// floating IP served here.
#[derive(Default)]
pub struct Announcer {
    announced: BTreeMap<String, (Mac, Vec<IpAddr>)>,
    outside: BTreeMap<String, Outside>,
}

/// An address announced on a physical network: what was announced, how often, and when next.
struct Outside {
    state: (Mac, IpAddr, u32),
    sent: u32,
    next: Instant,
}

/// Gratuitous ARPs per address that starts being served here, the first at once, then after
/// [`REPEAT_AFTER`], doubling: switches that learn from cached flows' statistics (Open vSwitch
/// does) may put the old place back once, shortly after the first.
const ANNOUNCEMENTS: u32 = 4;
const REPEAT_AFTER: Duration = Duration::from_millis(200);

/// A broadcast ARP request from `mac` (`ip`) for `target`.
pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A gratuitous ARP request: `ip` is at `mac`, broadcast.
fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    arp_request(mac, ip, ip)
}

/// `frame` with an 802.1Q tag for `vlan` (unchanged without one).
pub fn tagged(mut frame: Vec<u8>, vlan: Option<u16>) -> Vec<u8> {
    if let Some(vid) = vlan
        && frame.len() >= 12
    {
        let [hi, lo] = (vid & 0x0fff).to_be_bytes();
        frame.splice(12..12, [0x81, 0x00, hi, lo]);
    }
    frame
}

/// The sender address of an untagged ARP frame.
pub fn arp_sender(frame: &[u8]) -> Option<Ipv4Addr> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
        return None;
    }
    let ip: [u8; 4] = frame[28..32].try_into().ok()?;
    Some(Ipv4Addr::from(ip))
}

/// The source MAC and IPv4 address of an untagged IPv4 frame.
pub fn ipv4_source(frame: &[u8]) -> Option<([u8; 6], Ipv4Addr)> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let mac: [u8; 6] = frame[6..12].try_into().ok()?;
    let ip: [u8; 4] = frame[26..30].try_into().ok()?;
    Some((mac, Ipv4Addr::from(ip)))
}

/// The frames announcing a router interface.
fn frames(rif: &Port) -> Vec<Vec<u8>> {
    let mac = mac_octets(rif.mac);
    let mut out: Vec<Vec<u8>> = rif
        .ips
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => gratuitous_arp(mac, *v4),
            IpAddr::V6(v6) => ndp::unsolicited_advertisement(*v6, mac, true),
        })
        .collect();
    if rif.ips.iter().any(IpAddr::is_ipv6) {
        out.push(ndp::unsolicited_advertisement(
            link_local(rif.mac),
            mac,
            true,
        ));
    }
    out
}

impl Announcer {
    /// The announcements due now for the networks in `local` (those with local VIFs), by
    /// network: router interfaces that are new there, or whose MAC or addresses changed.
    pub fn due(
        &mut self,
        topo: &Topology,
        local: &BTreeSet<&str>,
    ) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        let mut current = BTreeMap::new();
        for net in local {
            for rif in topo.interfaces_on(net).filter(|p| p.admin_up) {
                let state = (rif.mac, rif.ips.clone());
                if self.announced.get(&rif.id) != Some(&state) {
                    out.entry(rif.network_id.clone())
                        .or_default()
                        .extend(frames(rif));
                }
                current.insert(rif.id.clone(), state);
            }
        }
        self.announced = current;
        out
    }

    /// When the next repeated announcement is due, if one is.
    pub fn next_due(&self) -> Option<Instant> {
        self.outside
            .values()
            .filter(|o| o.sent < ANNOUNCEMENTS)
            .map(|o| o.next)
            .min()
    }

    /// The gratuitous ARPs (unsolicited advertisements for IPv6) due now for the addresses this
    /// chassis answers for on physical networks — floating IPs it serves (the pipeline gave
    /// them flows), its own SNAT addresses, and the gateway addresses of the routers whose
    /// gateway it hosts — that are new here or
    /// changed: the port to send each from and the frame.
    pub fn due_outside(&mut self, pipeline: &Pipeline) -> Vec<(u32, Vec<u8>)> {
        let topo = pipeline.topology();
        let mut served: Vec<(&str, &str, Mac, IpAddr)> = Vec::new();
        for fip in topo.floating_ips.values() {
            let own = fip.own_port.as_ref().and_then(|p| topo.ports.get(p));
            if let Some(port) = own
                && pipeline.has_flows(&Owner::FloatingIp(fip.id.as_str().into()))
            {
                served.push((&fip.id, &fip.network_id, port.mac, fip.address.into()));
            }
        }
        for net in topo.networks.values().filter(|n| n.external) {
            if let Some(port) = topo.snat_port(&net.id, &topo.local.chassis) {
                served.extend(v4s(port).map(|ip| {
                    (
                        port.id.as_str(),
                        port.network_id.as_str(),
                        port.mac,
                        ip.into(),
                    )
                }));
            }
        }
        for router in topo.routers.values() {
            if topo
                .gateway_host(&router.id)
                .is_some_and(|c| c.id == topo.local.chassis)
                && let Some(port) = topo.gateway_port(&router.id)
            {
                let link = port
                    .ips
                    .iter()
                    .any(IpAddr::is_ipv6)
                    .then(|| IpAddr::V6(link_local(port.mac)));
                served.extend(
                    port.ips
                        .iter()
                        .copied()
                        .chain(link)
                        .map(|ip| (port.id.as_str(), port.network_id.as_str(), port.mac, ip)),
                );
            }
        }
        let now = Instant::now();
        let mut out = Vec::new();
        let mut current = BTreeMap::new();
        for (id, network, mac, address) in served {
            let Some((patch, vlan)) = topo.physical_port(network) else {
                continue;
            };
            let state = (mac, address, patch);
            let key = format!("{id} {address}");
            let mut entry = match self.outside.remove(&key) {
                Some(o) if o.state == state => o,
                _ => Outside {
                    state,
                    sent: 0,
                    next: now,
                },
            };
            if entry.sent < ANNOUNCEMENTS && entry.next <= now {
                let frame = match address {
                    IpAddr::V4(v4) => gratuitous_arp(mac_octets(mac), v4),
                    IpAddr::V6(v6) => ndp::unsolicited_advertisement(v6, mac_octets(mac), true),
                };
                out.push((patch, tagged(frame, vlan)));
                entry.next = now + REPEAT_AFTER * (1 << entry.sent);
                entry.sent += 1;
            }
            current.insert(key, entry);
        }
        self.outside = current;
        out
    }
}

/// A port's IPv4 addresses.
fn v4s(port: &Port) -> impl Iterator<Item = Ipv4Addr> + '_ {
    port.ips.iter().filter_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use pipeline::{Input, Pipeline};
    use serde_json::json;

    fn pipeline_with(mac: &str) -> Pipeline {
        let mut p = Pipeline::new("ch1");
        p.apply(Input::Object(
            "/r/ports/rif".into(),
            Some(json!({"id": "rif", "network_id": "n1", "mac_address": mac,
                "fixed_ips": [{"ip_address": "10.0.0.1"}, {"ip_address": "2001:db8::1"}],
                "device_owner": "network:router_interface", "device_id": "r1"})),
        ));
        p
    }

    #[test]
    fn a_new_or_changed_interface_is_announced_once() {
        let mut a = Announcer::default();
        let local = BTreeSet::from(["n1"]);
        let p = pipeline_with("fa:16:3e:00:00:01");
        let due = a.due(p.topology(), &local);
        let frames = &due["n1"];
        assert_eq!(
            frames.len(),
            3,
            "GARP, NA for the address and the link-local one"
        );
        let garp = &frames[0];
        assert_eq!(&garp[0..6], &[0xff; 6]);
        assert_eq!(&garp[28..32], &[10, 0, 0, 1], "sender IP");
        assert_eq!(&garp[38..42], &[10, 0, 0, 1], "target IP");
        assert!(a.due(p.topology(), &local).is_empty(), "announced once");
        let p = pipeline_with("fa:16:3e:00:00:02");
        assert_eq!(a.due(p.topology(), &local)["n1"].len(), 3, "a new MAC");
        assert!(a.due(p.topology(), &BTreeSet::new()).is_empty());
    }

    #[test]
    fn an_address_served_on_a_physical_network_is_announced_tagged_and_repeated() {
        let ext = "eeeeeeee-0000-4000-8000-0000000000e1";
        let mut p = Pipeline::new("ch1");
        p.apply(Input::Object(
            format!("/r/networks/{ext}"),
            Some(json!({"id": ext, "provider:network_type": "vlan",
                "provider:physical_network": "physnet1", "provider:segmentation_id": 40,
                "router:external": true})),
        ));
        p.apply(Input::Patch("physnet1".into(), Some(30)));
        p.apply(Input::Object(
            "/r/ports/snat1".into(),
            Some(
                json!({"id": "snat1", "network_id": ext, "mac_address": "fa:16:3e:00:06:01",
                "fixed_ips": [{"ip_address": "172.24.4.101"}], "binding:host_id": "ch1",
                "device_owner": "network:floatingip_agent_gateway", "device_id": "ch1"}),
            ),
        ));
        let mut a = Announcer::default();
        let due = a.due_outside(&p);
        assert_eq!(due.len(), 1, "this chassis' own SNAT address");
        let (port, frame) = &due[0];
        assert_eq!(*port, 30, "out of the patch");
        assert_eq!(
            &frame[12..16],
            &[0x81, 0x00, 0, 40],
            "tagged with the VLAN id"
        );
        assert_eq!(&frame[32..36], &[172, 24, 4, 101], "sender IP");
        assert!(a.due_outside(&p).is_empty(), "not again at once");
        let next = a.next_due().expect("repeats are due");
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        assert_eq!(a.due_outside(&p).len(), 1, "repeated");
        // Another chassis' SNAT address is not this one's to announce.
        let mut q = Pipeline::new("ch2");
        q.apply(Input::Object(
            format!("/r/networks/{ext}"),
            Some(json!({"id": ext, "provider:network_type": "vlan",
                "provider:physical_network": "physnet1", "provider:segmentation_id": 40,
                "router:external": true})),
        ));
        q.apply(Input::Patch("physnet1".into(), Some(30)));
        q.apply(Input::Object(
            "/r/ports/snat1".into(),
            p.topology().ports.get("snat1").map(|_| {
                json!({"id": "snat1", "network_id": ext, "mac_address": "fa:16:3e:00:06:01",
                    "fixed_ips": [{"ip_address": "172.24.4.101"}], "binding:host_id": "ch1",
                    "device_owner": "network:floatingip_agent_gateway", "device_id": "ch1"})
            }),
        ));
        assert!(q.topology().ports.contains_key("snat1"));
        assert!(Announcer::default().due_outside(&q).is_empty());
    }

    #[test]
    fn the_chassis_hosting_a_gateway_announces_its_ipv6_addresses_by_advertisement() {
        let ext = "eeeeeeee-0000-4000-8000-0000000000e1";
        let mut p = Pipeline::new("ch1");
        p.apply(Input::Object(
            format!("/r/networks/{ext}"),
            Some(json!({"id": ext, "provider:network_type": "flat",
                "provider:physical_network": "physnet1", "router:external": true})),
        ));
        p.apply(Input::Patch("physnet1".into(), Some(30)));
        p.apply(Input::Object(
            "/chassis/ch1".into(),
            Some(
                json!({"id": "ch1", "tunnel_ip": "192.168.9.1", "gateway": true,
                "physnets": ["physnet1"]}),
            ),
        ));
        p.apply(Input::Object(
            "/chassis-up/ch1".into(),
            Some(json!({"lease": 1})),
        ));
        p.apply(Input::Object(
            "/r/routers/r1".into(),
            Some(
                json!({"id": "r1", "name": "r1", "admin_state_up": true, "routes": [],
                "_nat_id": 1, "external_gateway_info": {"network_id": ext, "enable_snat": true,
                "external_fixed_ips": [{"ip_address": "172.24.4.2"},
                    {"ip_address": "2001:db8:ee::2"}]}}),
            ),
        ));
        p.apply(Input::Object(
            "/r/ports/gw1".into(),
            Some(
                json!({"id": "gw1", "network_id": ext, "mac_address": "fa:16:3e:00:03:02",
                "fixed_ips": [{"ip_address": "172.24.4.2"}, {"ip_address": "2001:db8:ee::2"}],
                "device_owner": "network:router_gateway", "device_id": "r1"}),
            ),
        ));
        let due = Announcer::default().due_outside(&p);
        let mac = [0xfa, 0x16, 0x3e, 0, 3, 2];
        let mut advertised: Vec<Ipv6Addr> = due
            .iter()
            .filter_map(|(_, f)| ndp::parse_neighbor_advertisement(f).ok())
            .inspect(|na| assert_eq!(na.target_mac, Some(mac)))
            .map(|na| na.target)
            .collect();
        advertised.sort();
        let mut want = vec!["2001:db8:ee::2".parse().unwrap(), ndp::link_local(mac)];
        want.sort();
        assert_eq!(advertised, want);
        assert_eq!(due.len(), 3, "and a gratuitous ARP for 172.24.4.2");
        assert!(due.iter().all(|(port, _)| *port == 30));
    }
}
