//! The topology file's service function chaining (networking-sfc's API, made by the lab under
//! `/v2.0/sfc/`): service-function VMs (`sf = { ... }` on a `[[vm]]`: a second port, the two
//! joined by a bridge inside the VM, a bump in the wire) and port chains (`[[port_chain]]`: port
//! pair groups of those VMs' port pairs, flow classifiers of the lab's VMs).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Ethertype, Topology, VmSpec, check_api_name, check_prefix};
use crate::{Error, Result};

/// A VM's `sf = { network = "net1", mpls = false }`: the VM is a service function. Its port
/// (named after it, on the VM's `network`) is the port pair's ingress; a second port
/// `<vm>-egress` on `network` here (default: the VM's) its egress. Neither has port security
/// (a service function forwards others' packets); inside the VM both interfaces (`eth0`,
/// `eth1`) are ports of a Linux bridge (`br0`) without addresses, so frames pass unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfSpec {
    /// The egress port's network; default: the VM's own.
    pub network: Option<String>,
    /// Whether the service function is MPLS-aware (its port pair's correlation `mpls`): it
    /// returns labelled frames unchanged (the bridge forwards them as any frame). Default: it
    /// is not (correlation none).
    #[serde(default)]
    pub mpls: bool,
}

/// A chain's `chain_parameters.correlation`: how its packets carry the chain's position between
/// the service functions. networking-sfc knows `mpls` (its default) and `nsh`, never none: port
/// pairs of service functions unaware of it (correlation none, `sf.mpls = false`) are served
/// plain frames in either (the datapath strips and restores the encapsulation for them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correlation {
    /// MPLS (the default).
    #[default]
    Mpls,
    /// NSH.
    Nsh,
}

impl Correlation {
    /// The API's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Correlation::Mpls => "mpls",
            Correlation::Nsh => "nsh",
        }
    }
}

/// `[[port_chain]]`: a port chain with its port pair groups and flow classifiers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortChainSpec {
    /// Name (unique among chains); also the name of its groups (`<chain>-<n>`, n from 1) and
    /// classifiers (`<chain>-fc<n>`).
    pub name: String,
    /// Its port pair groups in order, each the service-function VMs whose port pairs it
    /// balances over (`[["fw"], ["ids1", "ids2"]]`).
    pub groups: Vec<Vec<String>>,
    /// Its flow classifiers: the traffic that goes through the chain.
    #[serde(default)]
    pub classifiers: Vec<ClassifierSpec>,
    /// Whether the chain also carries the reverse traffic (`chain_parameters.symmetric`).
    #[serde(default)]
    pub symmetric: bool,
    /// `chain_parameters.correlation`: `mpls` (the default) or `nsh`.
    #[serde(default)]
    pub correlation: Correlation,
}

/// A flow classifier (`classifiers = [{ source_vm = "a", protocol = "tcp", ... }]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// The VM whose port the traffic comes from (`logical_source_port`).
    pub source_vm: String,
    /// The VM whose port the traffic goes to (`logical_destination_port`); default: any.
    pub destination_vm: Option<String>,
    /// `IPv4` (the default) or `IPv6`.
    #[serde(default)]
    pub ethertype: Ethertype,
    /// `tcp`, `udp` or `icmp`; default: any.
    pub protocol: Option<String>,
    /// The lowest destination port (1-65535; TCP and UDP); default: any.
    pub destination_port: Option<u16>,
    /// The highest destination port; default: `destination_port`.
    pub destination_port_max: Option<u16>,
    /// `source_ip_prefix`; default: any.
    pub source_prefix: Option<IpNet>,
    /// `destination_ip_prefix`; default: any.
    pub destination_prefix: Option<IpNet>,
}

impl ClassifierSpec {
    /// The destination port range, if it has one.
    pub fn destination_ports(&self) -> Option<(u16, u16)> {
        let min = self.destination_port?;
        Some((min, self.destination_port_max.unwrap_or(min)))
    }

    /// For people: `a -> b tcp 80`, `a -> any udp 53-54`.
    pub fn label(&self) -> String {
        let mut s = format!(
            "{} -> {}",
            self.source_vm,
            self.destination_vm.as_deref().unwrap_or("any")
        );
        if self.ethertype == Ethertype::IPv6 {
            s.push_str(" IPv6");
        }
        if let Some(p) = &self.protocol {
            s.push(' ');
            s.push_str(p);
        }
        match self.destination_ports() {
            Some((a, b)) if a == b => s.push_str(&format!(" {a}")),
            Some((a, b)) => s.push_str(&format!(" {a}-{b}")),
            None => {}
        }
        for (what, p) in [
            ("from", self.source_prefix),
            ("to", self.destination_prefix),
        ] {
            if let Some(p) = p {
                s.push_str(&format!(" {what} {p}"));
            }
        }
        s
    }
}

/// The flow classifiers' protocols (networking-sfc's).
const PROTOCOLS: [&str; 3] = ["tcp", "udp", "icmp"];

impl VmSpec {
    /// The network of a service-function VM's egress port (`None`: not a service function).
    pub fn egress_network(&self) -> Option<&str> {
        let sf = self.sf.as_ref()?;
        Some(sf.network.as_deref().unwrap_or(&self.network))
    }
}

/// The name of a service-function VM's egress port (its ingress port has the VM's name).
pub fn egress_port_name(vm: &str) -> String {
    format!("{vm}-egress")
}

/// Checks a VM's `sf`: the egress network exists and has a subnet; nothing that needs port
/// security or addresses inside the VM (the bridge has none); its egress port's name is no
/// other VM's.
pub(super) fn validate_sf(t: &Topology, v: &VmSpec) -> Result<()> {
    let Some(egress) = v.egress_network() else {
        return Ok(());
    };
    let bad = |why: String| Err(Error::Topology(format!("vm {}: sf: {why}", v.name)));
    match t.network(egress) {
        None => return bad(format!("no network {egress}")),
        Some(n) if n.subnets.is_empty() => return bad(format!("network {egress} has no subnet")),
        Some(_) => {}
    }
    let port = egress_port_name(&v.name);
    if t.vms.iter().any(|o| o.name == port) {
        return bad(format!(
            "its egress port would be called {port}, like vm {port}'s port"
        ));
    }
    let unfit = [
        (v.security_groups.is_some(), "security_groups"),
        (!v.extra_addresses.is_empty(), "extra_addresses"),
        (!v.serve.is_empty(), "serve"),
        (v.forwarding, "forwarding"),
    ];
    if let Some((_, key)) = unfit.iter().find(|(set, _)| *set) {
        return bad(format!(
            "a service function has no {key} (its ports have no port security, its bridge no \
             address)"
        ));
    }
    Ok(())
}

impl Topology {
    /// The service-function VM `name`, if it is one.
    pub fn service_function(&self, name: &str) -> Option<&VmSpec> {
        self.vms.iter().find(|v| v.name == name && v.sf.is_some())
    }

    pub(super) fn validate_port_chains(&self) -> Result<()> {
        let mut names = BTreeSet::new();
        // Each service function's port pair is in one group only: by VM, the chain and group.
        let mut placed: BTreeMap<&str, (String, usize)> = BTreeMap::new();
        for c in &self.port_chains {
            check_api_name("port chain", &c.name)?;
            if !names.insert(c.name.as_str()) {
                return Err(Error::Topology(format!(
                    "port chain {} defined twice",
                    c.name
                )));
            }
            let bad = |why: String| Error::Topology(format!("port chain {}: {why}", c.name));
            if c.groups.is_empty() {
                return Err(bad("needs at least one group (groups = [[\"sf1\"]])".into()));
            }
            for (i, g) in c.groups.iter().enumerate() {
                let n = i + 1;
                if g.is_empty() {
                    return Err(bad(format!("group {n} is empty")));
                }
                for name in g {
                    let Some(vm) = self.vms.iter().find(|v| &v.name == name) else {
                        return Err(bad(format!("group {n}: no vm {name}")));
                    };
                    let Some(sf) = &vm.sf else {
                        return Err(bad(format!(
                            "group {n}: vm {name} is not a service function (give it sf = {{}})"
                        )));
                    };
                    if let Some((chain, m)) = placed.get(name.as_str()) {
                        return Err(bad(format!(
                            "group {n}: vm {name}'s port pair is in group {m} of port chain \
                             {chain} already (a port pair is in one group only)"
                        )));
                    }
                    placed.insert(name, (c.name.clone(), n));
                    if sf.mpls && c.correlation != Correlation::Mpls {
                        return Err(bad(format!(
                            "group {n}: vm {name} is MPLS-aware (sf.mpls), the chain's \
                             correlation is {} (a chain's port pairs have its correlation or \
                             none)",
                            c.correlation.as_str()
                        )));
                    }
                }
                let mpls: BTreeSet<bool> = g
                    .iter()
                    .filter_map(|name| self.service_function(name))
                    .filter_map(|v| v.sf.as_ref().map(|s| s.mpls))
                    .collect();
                if mpls.len() > 1 {
                    return Err(bad(format!(
                        "group {n} mixes MPLS-aware and unaware service functions (a group's \
                         port pairs share a correlation)"
                    )));
                }
            }
            for (i, f) in c.classifiers.iter().enumerate() {
                self.validate_classifier(f)
                    .map_err(|why| bad(format!("classifier {} ({}): {why}", i + 1, f.label())))?;
                if c.classifiers[..i].contains(f) {
                    return Err(bad(format!(
                        "classifier {} ({}) listed twice",
                        i + 1,
                        f.label()
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_classifier(&self, f: &ClassifierSpec) -> std::result::Result<(), String> {
        for (key, vm) in [
            ("source_vm", Some(&f.source_vm)),
            ("destination_vm", f.destination_vm.as_ref()),
        ] {
            let Some(vm) = vm else { continue };
            match self.vms.iter().find(|v| &v.name == vm) {
                None => return Err(format!("{key}: no vm {vm}")),
                Some(v) if v.sf.is_some() => {
                    return Err(format!(
                        "{key}: vm {vm} is a service function (its ports carry the chain)"
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(p) = &f.protocol
            && !PROTOCOLS.contains(&p.as_str())
        {
            return Err(format!("protocol {p:?}: tcp, udp or icmp"));
        }
        if f.destination_port_max.is_some() && f.destination_port.is_none() {
            return Err("destination_port_max needs destination_port".into());
        }
        if let Some((min, max)) = f.destination_ports() {
            if !matches!(f.protocol.as_deref(), Some("tcp" | "udp")) {
                return Err("a destination port needs protocol tcp or udp".into());
            }
            if min == 0 || max == 0 {
                return Err("destination port 0 outside 1..=65535".into());
            }
            if min > max {
                return Err(format!(
                    "destination_port {min} above destination_port_max {max}"
                ));
            }
        }
        for (key, p) in [
            ("source_prefix", f.source_prefix),
            ("destination_prefix", f.destination_prefix),
        ] {
            if let Some(p) = p {
                if p.addr().is_ipv4() != (f.ethertype == Ethertype::IPv4) {
                    return Err(format!("{key} {p} is not {:?}", f.ethertype));
                }
                check_prefix(key, p)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(s: &str) -> Result<Topology> {
        Topology::parse(s, Path::new("t.toml"))
    }

    const SFC: &str = r#"
name = "t4"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
[[network]]
name = "net1"
[[network.subnet]]
cidr = "10.0.0.0/24"
[[network]]
name = "net2"
[[network.subnet]]
cidr = "10.1.0.0/24"
[[vm]]
name = "a"
network = "net1"
chassis = "c1"
[[vm]]
name = "b"
network = "net1"
chassis = "c2"
serve = [{ protocol = "http", port = 8080 }]
[[vm]]
name = "fw"
network = "net1"
chassis = "c2"
sf = {}
[[vm]]
name = "ids1"
network = "net1"
chassis = "c1"
sf = { network = "net2", mpls = true }
[[vm]]
name = "ids2"
network = "net1"
chassis = "c2"
sf = { mpls = true }
[[port_chain]]
name = "web"
groups = [["fw"], ["ids1", "ids2"]]
classifiers = [
  { source_vm = "a", destination_vm = "b", protocol = "tcp", destination_port = 80 },
  { source_vm = "a", protocol = "tcp", destination_port = 8080, destination_port_max = 8090, destination_prefix = "10.0.0.0/24" },
]
correlation = "mpls"
symmetric = true
[[port_chain]]
name = "empty"
groups = [["plain"]]
[[vm]]
name = "plain"
network = "net2"
chassis = "c1"
sf = {}
"#;

    fn good() -> String {
        SFC.to_owned()
    }

    #[test]
    fn parses_service_functions_and_chains() {
        let t = parse(&good()).unwrap();
        let fw = t.service_function("fw").unwrap();
        assert_eq!(fw.egress_network(), Some("net1"));
        assert!(!fw.sf.as_ref().unwrap().mpls);
        let ids1 = t.service_function("ids1").unwrap();
        assert_eq!(ids1.egress_network(), Some("net2"));
        assert!(ids1.sf.as_ref().unwrap().mpls);
        assert!(t.service_function("a").is_none());
        assert_eq!(t.vms[0].egress_network(), None);
        assert_eq!(egress_port_name("fw"), "fw-egress");
        let web = &t.port_chains[0];
        assert_eq!(web.groups, [vec!["fw"], vec!["ids1", "ids2"]]);
        assert_eq!(web.correlation, Correlation::Mpls);
        assert!(web.symmetric);
        let (f1, f2) = (&web.classifiers[0], &web.classifiers[1]);
        assert_eq!(f1.destination_ports(), Some((80, 80)));
        assert_eq!(f1.ethertype, Ethertype::IPv4);
        assert_eq!(f1.label(), "a -> b tcp 80");
        assert_eq!(f2.destination_ports(), Some((8080, 8090)));
        assert_eq!(f2.label(), "a -> any tcp 8080-8090 to 10.0.0.0/24");
        let empty = &t.port_chains[1];
        assert!(empty.classifiers.is_empty() && !empty.symmetric);
        // networking-sfc's default: MPLS.
        assert_eq!(empty.correlation, Correlation::Mpls);
        // An MPLS-aware service function in an NSH chain is refused, as the server would.
        let nsh = good().replacen("correlation = \"mpls\"", "correlation = \"nsh\"", 1);
        let err = parse(&nsh).unwrap_err().to_string();
        assert!(
            err.contains(
                "port chain web: group 2: vm ids1 is MPLS-aware (sf.mpls), the chain's \
                          correlation is nsh"
            ),
            "{err}"
        );
        let plain = parse(&good().replacen("[\"ids1\", \"ids2\"]", "[\"plain\"]", 1));
        let plain = plain.unwrap_err().to_string();
        assert!(
            plain.contains("vm plain's port pair is in group 2"),
            "{plain}"
        );
    }

    #[test]
    fn rejects_bad_service_functions_and_chains() {
        let good = good();
        for (from, to, why) in [
            // Service-function VMs.
            (
                "sf = { network = \"net2\", mpls = true }",
                "sf = { network = \"net9\", mpls = true }",
                "vm ids1: sf: no network net9",
            ),
            (
                "sf = { mpls = true }",
                "sf = { mpls = true, ingress = \"net1\" }",
                "unknown field `ingress`",
            ),
            (
                "chassis = \"c2\"\nsf = {}",
                "chassis = \"c2\"\nsf = {}\nserve = [{ protocol = \"http\", port = 80 }]",
                "vm fw: sf: a service function has no serve",
            ),
            (
                "chassis = \"c2\"\nsf = {}",
                "chassis = \"c2\"\nsf = {}\nsecurity_groups = []",
                "vm fw: sf: a service function has no security_groups",
            ),
            (
                "chassis = \"c2\"\nsf = {}",
                "chassis = \"c2\"\nsf = {}\nforwarding = true",
                "a service function has no forwarding",
            ),
            (
                "name = \"b\"",
                "name = \"fw-egress\"",
                "vm fw: sf: its egress port would be called fw-egress",
            ),
            // Chains: names, groups of service functions, each pair in one group.
            (
                "name = \"empty\"",
                "name = \"web\"",
                "port chain web defined twice",
            ),
            ("name = \"empty\"", "name = \"e e\"", "port chain name"),
            (
                "groups = [[\"plain\"]]",
                "groups = []",
                "port chain empty: needs at least one group",
            ),
            (
                "groups = [[\"plain\"]]",
                "groups = [[\"plain\"], []]",
                "port chain empty: group 2 is empty",
            ),
            (
                "groups = [[\"plain\"]]",
                "groups = [[\"nope\"]]",
                "port chain empty: group 1: no vm nope",
            ),
            (
                "groups = [[\"plain\"]]",
                "groups = [[\"a\"]]",
                "port chain empty: group 1: vm a is not a service function",
            ),
            (
                "groups = [[\"plain\"]]",
                "groups = [[\"fw\"]]",
                "port chain empty: group 1: vm fw's port pair is in group 1 of port chain web \
                 already",
            ),
            (
                "[\"ids1\", \"ids2\"]",
                "[\"ids1\", \"ids1\"]",
                "vm ids1's port pair is in group 2 of port chain web already",
            ),
            (
                "[[\"fw\"], [\"ids1\", \"ids2\"]]",
                "[[\"fw\", \"ids1\"], [\"ids2\"]]",
                "port chain web: group 1 mixes MPLS-aware and unaware",
            ),
            (
                "correlation = \"mpls\"",
                "correlation = \"none\"",
                "unknown variant `none`, expected `mpls` or `nsh`",
            ),
            // Classifiers.
            (
                "source_vm = \"a\", destination_vm",
                "source_vm = \"x\", destination_vm",
                "port chain web: classifier 1 (x -> b tcp 80): source_vm: no vm x",
            ),
            (
                "destination_vm = \"b\"",
                "destination_vm = \"fw\"",
                "destination_vm: vm fw is a service function",
            ),
            (
                "protocol = \"tcp\", destination_port = 80",
                "protocol = \"sctp\", destination_port = 80",
                "protocol \"sctp\": tcp, udp or icmp",
            ),
            (
                "protocol = \"tcp\", destination_port = 80",
                "destination_port = 80",
                "a destination port needs protocol tcp or udp",
            ),
            (
                "destination_port = 80 }",
                "destination_port = 0 }",
                "classifier 1 (a -> b tcp 0): destination port 0 outside 1..=65535",
            ),
            (
                "destination_port = 80 }",
                "destination_port = 65536 }",
                "65536",
            ),
            (
                "destination_port_max = 8090",
                "destination_port_max = 8000",
                "destination_port 8080 above destination_port_max 8000",
            ),
            (
                "destination_port = 8080, ",
                "",
                "destination_port_max needs destination_port",
            ),
            (
                "\"10.0.0.0/24\" }",
                "\"fd00::/64\" }",
                "destination_prefix fd00::/64 is not IPv4",
            ),
            (
                "\"10.0.0.0/24\" }",
                "\"10.0.0.1/24\" }",
                "not a network address",
            ),
            (
                "destination_port = 80 }",
                "destination_port = 80 },\n  { source_vm = \"a\", destination_vm = \"b\", \
                 protocol = \"tcp\", destination_port = 80 }",
                "port chain web: classifier 2 (a -> b tcp 80) listed twice",
            ),
            (
                "destination_port = 80 }",
                "destination_port = 80, port = 1 }",
                "unknown field `port`",
            ),
        ] {
            assert!(good.contains(from), "{from}");
            let bad = good.replacen(from, to, 1);
            match parse(&bad) {
                Ok(_) => panic!("accepted {to}"),
                Err(e) => assert!(e.to_string().contains(why), "{to}: {e}"),
            }
        }
        // A file without chains or service functions has none.
        let plain = parse(&good[..good.find("[[vm]]\nname = \"fw\"").unwrap()]).unwrap();
        assert!(plain.port_chains.is_empty() && plain.vms.iter().all(|v| v.sf.is_none()));
    }
}
