//! Announcements of router interfaces whose MAC or addresses are new to the VMs next to them: a
//! gratuitous ARP for each IPv4 address and an unsolicited neighbour advertisement (router,
//! override) for each IPv6 address and the link-local one, sent to every local VIF on the
//! interface's network, as Neutron's L3 agent does when it plugs an interface. A VM then replaces
//! the MAC it cached for its gateway at once (an interface added again is a new port with a new
//! MAC), instead of when its cache entry expires.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use pipeline::model::{Mac, Port, Topology, link_local, mac_octets};

/// What was announced for each router interface on a network with local VIFs.
#[derive(Default)]
pub struct Announcer {
    announced: BTreeMap<String, (Mac, Vec<IpAddr>)>,
}

/// A gratuitous ARP request: `ip` is at `mac`, broadcast.
fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
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
}

#[cfg(test)]
mod tests {
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
}
