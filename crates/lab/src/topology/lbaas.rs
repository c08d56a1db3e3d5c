//! The topology file's load balancers (`[[load_balancer]]`, made through the server's Octavia
//! v2 API) and the VMs' tiny servers (`serve`) that let a lab show load balancing without
//! further tools.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{
    NetworkSpec, SubnetSpec, Topology, VmSpec, check_api_name, host_address_problem, project_of,
};
use crate::{Error, Result};

/// `[[load_balancer]]`: a load balancer with its VIP on a subnet, its listeners, each with a
/// pool of VMs and optionally a health monitor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// Name (unique among load balancers).
    pub name: String,
    /// The VIP's network: the VIP is on the subnet holding `vip`, else on the network's first
    /// IPv4 subnet (in the file's order), else its first. One of `network` and `subnet`.
    pub network: Option<String>,
    /// The VIP's subnet by name. One of `network` and `subnet`.
    pub subnet: Option<String>,
    /// The VIP address; default: allocated by the server.
    pub vip: Option<IpAddr>,
    /// Project that owns it (and its listeners, pools, members, monitors); default: the VIP
    /// network's.
    pub project: Option<String>,
    /// Its listeners (each with its own pool).
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerSpec>,
}

/// A listener's (and its pool's) protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LbProtocol {
    TCP,
    UDP,
    /// Balanced at L4 like TCP (see the server's documentation).
    HTTP,
}

impl LbProtocol {
    /// The API's name of the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            LbProtocol::TCP => "TCP",
            LbProtocol::UDP => "UDP",
            LbProtocol::HTTP => "HTTP",
        }
    }

    /// The transport: two listeners of one load balancer may not share a transport's port
    /// (TCP and HTTP are both TCP, as the server says).
    fn transport(self) -> &'static str {
        match self {
            LbProtocol::UDP => "UDP",
            LbProtocol::TCP | LbProtocol::HTTP => "TCP",
        }
    }
}

/// A pool's `lb_algorithm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbAlgorithm {
    #[default]
    RoundRobin,
    SourceIp,
    LeastConnections,
}

impl LbAlgorithm {
    /// The API's name of the algorithm.
    pub fn as_str(self) -> &'static str {
        match self {
            LbAlgorithm::RoundRobin => "ROUND_ROBIN",
            LbAlgorithm::SourceIp => "SOURCE_IP",
            LbAlgorithm::LeastConnections => "LEAST_CONNECTIONS",
        }
    }
}

/// A pool's session persistence (the server serves `SOURCE_IP` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Persistence {
    SourceIp,
}

impl Persistence {
    /// The API's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Persistence::SourceIp => "SOURCE_IP",
        }
    }
}

/// `[[load_balancer.listener]]`: a listener and its pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// `TCP`, `UDP` or `HTTP` (the listener's and the pool's).
    pub protocol: LbProtocol,
    /// The port it listens on (1-65535).
    pub port: u16,
    /// The pool's algorithm; default `ROUND_ROBIN`.
    #[serde(default)]
    pub algorithm: LbAlgorithm,
    /// The pool's session persistence; default none.
    pub persistence: Option<Persistence>,
    /// The pool's members.
    #[serde(default)]
    pub members: Vec<MemberSpec>,
    /// The pool's health monitor; default none.
    pub monitor: Option<MonitorSpec>,
}

/// A pool member: a VM (its first address, on its subnet) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// The VM.
    pub vm: String,
    /// The port on the VM (1-65535).
    pub port: u16,
    /// Its weight (0-256); default 1.
    pub weight: Option<u16>,
    /// Whether it only serves when no other member is healthy.
    #[serde(default)]
    pub backup: bool,
}

/// A health monitor's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorType {
    PING,
    TCP,
    HTTP,
}

impl MonitorType {
    /// The API's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorType::PING => "PING",
            MonitorType::TCP => "TCP",
            MonitorType::HTTP => "HTTP",
        }
    }
}

/// A pool's health monitor (`monitor = { ... }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// `PING`, `TCP` or `HTTP`.
    #[serde(rename = "type")]
    pub kind: MonitorType,
    /// Seconds between checks.
    pub delay: u32,
    /// Seconds a check may take.
    pub timeout: u32,
    /// Checks that must pass before a member is up (1-10).
    pub max_retries: u8,
    /// Checks that must fail before a member is down (1-10); default 3.
    pub max_retries_down: Option<u8>,
    /// HTTP only: the path asked for; default `/`.
    pub url_path: Option<String>,
    /// HTTP only: the status codes that pass (`200`, `200,202`, `200-204`); default `200`.
    pub expected_codes: Option<String>,
}

/// A VM's tiny server's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServeProtocol {
    /// Answers every HTTP request with 200 and the VM's name and a newline.
    Http,
    /// Answers every datagram with the VM's name and a newline.
    Udp,
}

impl ServeProtocol {
    /// The name in the file (and on the server's command line).
    pub fn as_str(self) -> &'static str {
        match self {
            ServeProtocol::Http => "http",
            ServeProtocol::Udp => "udp",
        }
    }
}

/// One of a VM's tiny servers (`serve = [{ protocol = "http", port = 8080 }]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSpec {
    /// `http` or `udp`.
    pub protocol: ServeProtocol,
    /// The port (1-65535), on every address of the VM.
    pub port: u16,
}

impl std::fmt::Display for ServeSpec {
    /// `http:8080`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.protocol.as_str(), self.port)
    }
}

/// Checks a VM's `serve`: ports 1-65535, each (protocol, port) once.
pub(super) fn validate_serve(v: &VmSpec) -> Result<()> {
    for (i, s) in v.serve.iter().enumerate() {
        if s.port == 0 {
            return Err(Error::Topology(format!(
                "vm {}: serve {s}: port 0 outside 1..=65535",
                v.name
            )));
        }
        if v.serve[..i].contains(s) {
            return Err(Error::Topology(format!(
                "vm {}: serve {s} listed twice",
                v.name
            )));
        }
    }
    Ok(())
}

/// Highest member weight.
const WEIGHT_MAX: u16 = 256;
/// Highest `max_retries` and `max_retries_down`.
const RETRIES_MAX: u8 = 10;

impl Topology {
    /// The VIP subnet of load balancer `lb` with its network and name: `subnet`, or on
    /// `network` the subnet holding `vip`, else the first IPv4 one, else the first (checked by
    /// [`Topology::validate`]).
    pub fn vip_subnet(&self, lb: &LoadBalancerSpec) -> Option<(&NetworkSpec, &SubnetSpec, String)> {
        if let Some(name) = &lb.subnet {
            let (n, s) = self.subnet(name)?;
            return Some((n, s, name.clone()));
        }
        let net = self.network(lb.network.as_deref()?)?;
        let by_vip = lb
            .vip
            .and_then(|ip| net.subnets.iter().position(|s| s.cidr.contains(&ip)));
        let i = by_vip
            .or_else(|| net.subnets.iter().position(|s| s.cidr.addr().is_ipv4()))
            .or_else(|| (!net.subnets.is_empty()).then_some(0))?;
        Some((net, &net.subnets[i], self.subnet_name(net, i)))
    }

    /// The project load balancer `lb` belongs to: its own, else its VIP network's (`None`:
    /// admin).
    pub fn lb_project<'a>(&'a self, lb: &'a LoadBalancerSpec) -> Option<&'a str> {
        lb.project.as_deref().or_else(|| {
            self.vip_subnet(lb)
                .and_then(|(n, _, _)| n.project.as_deref())
        })
    }

    pub(super) fn validate_load_balancers(&self) -> Result<()> {
        let mut names = BTreeSet::new();
        for lb in &self.load_balancers {
            check_api_name("load balancer", &lb.name)?;
            if !names.insert(lb.name.as_str()) {
                return Err(Error::Topology(format!(
                    "load balancer {} defined twice",
                    lb.name
                )));
            }
            self.validate_load_balancer(lb)
                .map_err(|why| Error::Topology(format!("load balancer {}: {why}", lb.name)))?;
        }
        Ok(())
    }

    fn validate_load_balancer(&self, lb: &LoadBalancerSpec) -> std::result::Result<(), String> {
        if let Some(p) = &lb.project {
            check_api_name("project", p).map_err(|e| e.to_string())?;
        }
        match (&lb.network, &lb.subnet) {
            (Some(_), Some(_)) => return Err("network and subnet: name one of them".into()),
            (None, None) => return Err("needs a network or a subnet (for its VIP)".into()),
            (Some(n), None) => match self.network(n) {
                None => return Err(format!("no network {n}")),
                Some(net) if net.subnets.is_empty() => {
                    return Err(format!("network {n} has no subnet"));
                }
                Some(_) => {}
            },
            (None, Some(s)) => {
                if self.subnet(s).is_none() {
                    return Err(format!("no subnet {s}"));
                }
            }
        }
        let Some((net, subnet, subnet_name)) = self.vip_subnet(lb) else {
            return Err("no subnet for the VIP".into());
        };
        let project = self.lb_project(lb);
        let admin = matches!(project, None | Some("admin"));
        // A project sees its own networks; an admin all.
        let visible = |n: &NetworkSpec| admin || n.project.as_deref() == project;
        if !visible(net) {
            return Err(format!(
                "network {} belongs to project {}, the load balancer to {}",
                net.name,
                project_of(&net.project),
                project.unwrap_or("admin")
            ));
        }
        if let Some(ip) = lb.vip {
            if !subnet.cidr.contains(&ip) {
                return Err(match &lb.subnet {
                    Some(_) => {
                        format!("vip {ip} is outside subnet {subnet_name} ({})", subnet.cidr)
                    }
                    None => format!("vip {ip} is in no subnet of {}", net.name),
                });
            }
            if subnet.is_auto_address() {
                return Err(format!(
                    "vip {ip} is on {}, whose addresses come from router advertisements",
                    subnet.cidr
                ));
            }
            if let Some(why) = host_address_problem(subnet.cidr, ip) {
                return Err(format!("vip {why}"));
            }
        }
        for (i, l) in lb.listeners.iter().enumerate() {
            let what = format!("listener {} {}", l.protocol.as_str(), l.port);
            self.validate_listener(l, &visible)
                .map_err(|why| format!("{what}: {why}"))?;
            if let Some(o) = lb.listeners[..i]
                .iter()
                .find(|o| o.port == l.port && o.protocol.transport() == l.protocol.transport())
            {
                return Err(format!(
                    "{what}: port {} is taken by listener {} {} ({} and {} share a transport)",
                    l.port,
                    o.protocol.as_str(),
                    o.port,
                    o.protocol.as_str(),
                    l.protocol.as_str()
                ));
            }
        }
        Ok(())
    }

    fn validate_listener(
        &self,
        l: &ListenerSpec,
        visible: &dyn Fn(&NetworkSpec) -> bool,
    ) -> std::result::Result<(), String> {
        if l.port == 0 {
            return Err("port 0 outside 1..=65535".into());
        }
        for (i, m) in l.members.iter().enumerate() {
            let Some(vm) = self.vms.iter().find(|v| v.name == m.vm) else {
                return Err(format!("member: no vm {}", m.vm));
            };
            if m.port == 0 {
                return Err(format!("member {}: port 0 outside 1..=65535", m.vm));
            }
            if let Some(w) = m.weight
                && w > WEIGHT_MAX
            {
                return Err(format!(
                    "member {}: weight {w} outside 0..={WEIGHT_MAX}",
                    m.vm
                ));
            }
            if l.members[..i]
                .iter()
                .any(|o| o.vm == m.vm && o.port == m.port)
            {
                return Err(format!("member {} port {} listed twice", m.vm, m.port));
            }
            if let Some(net) = self.network(&vm.network)
                && !visible(net)
            {
                return Err(format!(
                    "member {}: its network {} belongs to project {}, which the load \
                     balancer's project cannot use",
                    m.vm,
                    net.name,
                    project_of(&net.project)
                ));
            }
        }
        if let Some(mon) = &l.monitor {
            let retries = |key: &str, n: u8| {
                if (1..=RETRIES_MAX).contains(&n) {
                    Ok(())
                } else {
                    Err(format!("monitor: {key} {n} outside 1..={RETRIES_MAX}"))
                }
            };
            retries("max_retries", mon.max_retries)?;
            if let Some(n) = mon.max_retries_down {
                retries("max_retries_down", n)?;
            }
            let http = mon.kind == MonitorType::HTTP;
            for (key, set) in [
                ("url_path", mon.url_path.is_some()),
                ("expected_codes", mon.expected_codes.is_some()),
            ] {
                if set && !http {
                    return Err(format!(
                        "monitor: {key} is for HTTP monitors, not {}",
                        mon.kind.as_str()
                    ));
                }
            }
            if let Some(p) = &mon.url_path
                && !p.starts_with('/')
            {
                return Err(format!("monitor: url_path {p:?} does not start with /"));
            }
            if let Some(c) = &mon.expected_codes {
                let code = |s: &str| s.len() == 3 && s.parse::<u16>().is_ok_and(|n| n >= 100);
                let ok = c.split(',').all(|part| match part.split_once('-') {
                    Some((a, b)) => code(a) && code(b) && a < b,
                    None => code(part),
                });
                if !ok {
                    return Err(format!(
                        "monitor: expected_codes {c:?}: a code (200), a list (200,202) or a \
                         range (200-204)"
                    ));
                }
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

    const LB: &str = r#"
name = "t3"
[[chassis]]
name = "c1"
[[network]]
name = "net1"
project = "alpha"
[[network.subnet]]
cidr = "fd00:9::/64"
[[network.subnet]]
name = "net1-v4"
cidr = "10.0.0.0/24"
[[network.subnet]]
name = "net1-b"
cidr = "10.0.1.0/24"
[[network]]
name = "other"
project = "beta"
[[network.subnet]]
cidr = "10.9.0.0/24"
[[vm]]
name = "web1"
network = "net1"
chassis = "c1"
ip = "10.0.0.11"
serve = [{ protocol = "http", port = 8080 }, { protocol = "udp", port = 5353 }]
[[vm]]
name = "web2"
network = "net1"
chassis = "c1"
serve = [{ protocol = "http", port = 8080 }]
[[vm]]
name = "b1"
network = "other"
chassis = "c1"
[[load_balancer]]
name = "web"
network = "net1"
vip = "10.0.0.100"
[[load_balancer.listener]]
protocol = "HTTP"
port = 80
persistence = "SOURCE_IP"
members = [{ vm = "web1", port = 8080, weight = 2 }, { vm = "web2", port = 8080, backup = true }]
monitor = { type = "HTTP", delay = 1, timeout = 1, max_retries = 2, max_retries_down = 2, url_path = "/", expected_codes = "200-204" }
[[load_balancer.listener]]
protocol = "UDP"
port = 80
algorithm = "SOURCE_IP"
members = [{ vm = "web1", port = 5353 }]
[[load_balancer]]
name = "plain"
subnet = "net1-b"
"#;

    #[test]
    fn parses_load_balancers_and_servers() {
        let t = parse(LB).unwrap();
        let web = &t.load_balancers[0];
        assert_eq!(web.vip, Some("10.0.0.100".parse().unwrap()));
        // The VIP network's project, and the subnet holding the VIP.
        assert_eq!(t.lb_project(web), Some("alpha"));
        let (net, subnet, name) = t.vip_subnet(web).unwrap();
        assert_eq!((net.name.as_str(), name.as_str()), ("net1", "net1-v4"));
        assert_eq!(subnet.cidr.to_string(), "10.0.0.0/24");
        let http = &web.listeners[0];
        assert_eq!(http.protocol, LbProtocol::HTTP);
        assert_eq!(http.algorithm, LbAlgorithm::RoundRobin);
        assert_eq!(http.persistence, Some(Persistence::SourceIp));
        assert_eq!(
            http.members[0],
            MemberSpec {
                vm: "web1".into(),
                port: 8080,
                weight: Some(2),
                backup: false
            }
        );
        assert!(http.members[1].backup && http.members[1].weight.is_none());
        let mon = http.monitor.as_ref().unwrap();
        assert_eq!(
            (mon.kind, mon.delay, mon.max_retries_down),
            (MonitorType::HTTP, 1, Some(2))
        );
        // UDP and HTTP do not share a transport: both may listen on port 80.
        let udp = &web.listeners[1];
        assert_eq!(
            (udp.protocol, udp.algorithm, udp.monitor.as_ref()),
            (LbProtocol::UDP, LbAlgorithm::SourceIp, None)
        );
        // Without a VIP, the network's first IPv4 subnet in the file's order (not the IPv6
        // one before it); a subnet by name.
        let no_vip = LB.replacen("vip = \"10.0.0.100\"\n", "", 1);
        let t2 = parse(&no_vip).unwrap();
        assert_eq!(t2.vip_subnet(&t2.load_balancers[0]).unwrap().2, "net1-v4");
        let other_subnet = LB.replacen("\"10.0.0.100\"", "\"10.0.1.100\"", 1);
        let t3 = parse(&other_subnet).unwrap();
        assert_eq!(t3.vip_subnet(&t3.load_balancers[0]).unwrap().2, "net1-b");
        let plain = &t.load_balancers[1];
        assert_eq!(t.vip_subnet(plain).unwrap().2, "net1-b");
        assert!(plain.listeners.is_empty());
        // The VMs' servers.
        let serve: Vec<String> = t.vms[0].serve.iter().map(ToString::to_string).collect();
        assert_eq!(serve, ["http:8080", "udp:5353"]);
        assert!(t.vms[2].serve.is_empty());
    }

    #[test]
    fn rejects_bad_load_balancers_and_servers() {
        for (from, to, why) in [
            // Names, the VIP's network or subnet, the VIP, the project.
            (
                "name = \"plain\"",
                "name = \"web\"",
                "load balancer web defined twice",
            ),
            ("name = \"plain\"", "name = \"p l\"", "load balancer name"),
            (
                "subnet = \"net1-b\"",
                "subnet = \"net1-b\"\nnetwork = \"net1\"",
                "load balancer plain: network and subnet: name one of them",
            ),
            (
                "subnet = \"net1-b\"\n",
                "",
                "load balancer plain: needs a network or a subnet",
            ),
            (
                "subnet = \"net1-b\"",
                "subnet = \"net1-z\"",
                "load balancer plain: no subnet net1-z",
            ),
            (
                "network = \"net1\"\nvip",
                "network = \"net2\"\nvip",
                "load balancer web: no network net2",
            ),
            (
                "vip = \"10.0.0.100\"",
                "vip = \"10.5.0.100\"",
                "load balancer web: vip 10.5.0.100 is in no subnet of net1",
            ),
            (
                "subnet = \"net1-b\"",
                "subnet = \"net1-b\"\nvip = \"10.0.0.7\"",
                "load balancer plain: vip 10.0.0.7 is outside subnet net1-b (10.0.1.0/24)",
            ),
            (
                "vip = \"10.0.0.100\"",
                "vip = \"10.0.0.255\"",
                "vip 10.0.0.255 is the broadcast address of 10.0.0.0/24",
            ),
            (
                "vip = \"10.0.0.100\"",
                "vip = \"10.0.0.11\"",
                "the VIP of load balancer web: 10.0.0.11 is taken by vm web1 on network net1",
            ),
            (
                "vip = \"10.0.0.100\"",
                "vip = \"10.0.0.1\"",
                "is taken by the gateway of subnet net1-v4",
            ),
            (
                "subnet = \"net1-b\"",
                "subnet = \"net1-b\"\nproject = \"beta\"",
                "load balancer plain: network net1 belongs to project alpha, the load balancer \
                 to beta",
            ),
            (
                "subnet = \"net1-b\"",
                "subnet = \"net1-b\"\nproject = \"b c\"",
                "project name",
            ),
            (
                "subnet = \"net1-b\"",
                "subnet = \"net1-b\"\ncolor = \"red\"",
                "unknown field",
            ),
            // Listeners: protocols, ports, one per transport and port.
            (
                "protocol = \"HTTP\"",
                "protocol = \"HTTPS\"",
                "unknown variant `HTTPS`",
            ),
            (
                "port = 80\npersistence",
                "port = 0\npersistence",
                "load balancer web: listener HTTP 0: port 0 outside 1..=65535",
            ),
            (
                "port = 80\npersistence",
                "port = 65536\npersistence",
                "65536",
            ),
            (
                "protocol = \"UDP\"",
                "protocol = \"TCP\"",
                "listener TCP 80: port 80 is taken by listener HTTP 80 (HTTP and TCP share a \
                 transport)",
            ),
            (
                "algorithm = \"SOURCE_IP\"",
                "algorithm = \"SOURCE_IP_PORT\"",
                "unknown variant `SOURCE_IP_PORT`",
            ),
            (
                "persistence = \"SOURCE_IP\"",
                "persistence = \"HTTP_COOKIE\"",
                "unknown variant `HTTP_COOKIE`",
            ),
            (
                "port = 80\npersistence",
                "port = 80\nmembers_ = []\npersistence",
                "unknown field",
            ),
            // Members: VMs that exist, ports, weights, once, on a network the project may use.
            (
                "{ vm = \"web1\", port = 5353 }",
                "{ vm = \"web9\", port = 5353 }",
                "load balancer web: listener UDP 80: member: no vm web9",
            ),
            (
                "{ vm = \"web1\", port = 5353 }",
                "{ vm = \"web1\", port = 0 }",
                "listener UDP 80: member web1: port 0 outside 1..=65535",
            ),
            (
                "weight = 2",
                "weight = 257",
                "member web1: weight 257 outside 0..=256",
            ),
            (
                "{ vm = \"web1\", port = 5353 }",
                "{ vm = \"web1\", port = 5353 }, { vm = \"web1\", port = 5353 }",
                "member web1 port 5353 listed twice",
            ),
            (
                "{ vm = \"web1\", port = 5353 }",
                "{ vm = \"b1\", port = 5353 }",
                "member b1: its network other belongs to project beta",
            ),
            (
                "{ vm = \"web1\", port = 5353 }",
                "{ vm = \"web1\", prot = 5353 }",
                "unknown field `prot`",
            ),
            // Monitors.
            (
                "type = \"HTTP\"",
                "type = \"UDP-CONNECT\"",
                "unknown variant",
            ),
            (
                "type = \"HTTP\"",
                "type = \"TCP\"",
                "monitor: url_path is for HTTP monitors, not TCP",
            ),
            (
                "max_retries = 2,",
                "max_retries = 11,",
                "max_retries 11 outside 1..=10",
            ),
            (
                "max_retries_down = 2",
                "max_retries_down = 0",
                "max_retries_down 0 outside 1..=10",
            ),
            (
                "url_path = \"/\"",
                "url_path = \"health\"",
                "url_path \"health\" does not start with /",
            ),
            ("\"200-204\"", "\"2xx\"", "expected_codes \"2xx\""),
            ("timeout = 1,", "", "missing field `timeout`"),
            // The VMs' servers.
            (
                "{ protocol = \"udp\", port = 5353 }",
                "{ protocol = \"tcp\", port = 5353 }",
                "unknown variant `tcp`",
            ),
            (
                "{ protocol = \"udp\", port = 5353 }",
                "{ protocol = \"http\", port = 8080 }",
                "vm web1: serve http:8080 listed twice",
            ),
            (
                "[{ protocol = \"http\", port = 8080 }]",
                "[{ protocol = \"http\", port = 0 }]",
                "vm web2: serve http:0: port 0 outside 1..=65535",
            ),
        ] {
            assert!(LB.contains(from), "{from}");
            let bad = LB.replacen(from, to, 1);
            match parse(&bad) {
                Ok(_) => panic!("accepted {to}"),
                Err(e) => assert!(e.to_string().contains(why), "{to}: {e}"),
            }
        }
        // An admin's load balancer may use any project's network and members.
        let admin = LB.replacen(
            "subnet = \"net1-b\"",
            "subnet = \"net1-b\"\nproject = \"admin\"\n[[load_balancer.listener]]\n\
             protocol = \"TCP\"\nport = 22\nmembers = [{ vm = \"b1\", port = 22 }]",
            1,
        );
        parse(&admin).unwrap();
    }
}
