//! What the plugin asks Wyvern's Neutron API: the pod's port (by tag), its network's MTU, its
//! subnets' prefix lengths, gateways, host routes and DNS servers, and — nested — the VLAN id
//! of the trunk subport (from its trunk's `sub_ports`).
//!
//! The port is found with `GET /v2.0/ports?tags=<tag>`, polled every [`POLL`] until it exists
//! or the configured wait is over (the controller creating it may lag the kubelet), which is
//! then a "try again later". Exactly one port may carry the tag. A server that does not answer,
//! or answers 5xx or 429, is "try again later" too; any other refusal is an API error.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{Auth, Config};
use crate::error::{Error, Result};

/// How often the port is looked for while it does not exist yet.
pub const POLL: Duration = Duration::from_millis(200);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the API.
#[derive(Debug, Clone)]
pub struct Neutron {
    base: String,
    http: reqwest::Client,
    headers: Vec<(&'static str, String)>,
}

/// One address of the port with what its subnet says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The address.
    pub ip: IpAddr,
    /// Its subnet's prefix length.
    pub prefix: u8,
    /// Its subnet's gateway.
    pub gateway: Option<IpAddr>,
}

impl Address {
    /// `ADDR/PREFIX`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }
}

/// A route for the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix.
    pub dst: String,
    /// Next hop.
    pub via: Option<IpAddr>,
}

/// Everything the plugin needs to attach the pod to its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The port's id (the OVS `iface-id`).
    pub port_id: String,
    /// The port's MAC.
    pub mac: String,
    /// The network's MTU, if it has one.
    pub mtu: Option<u32>,
    /// The fixed IPs, IPv4 first.
    pub addresses: Vec<Address>,
    /// Default routes (one per family, via the first subnet with a gateway) and the subnets'
    /// host routes.
    pub routes: Vec<RouteSpec>,
    /// The subnets' DNS servers, without duplicates.
    pub nameservers: Vec<String>,
    /// Nested mode: the subport's VLAN id.
    pub vlan: Option<u16>,
}

impl Neutron {
    /// A client for `config`'s API with its authentication (reads the token file).
    pub fn new(config: &Config) -> Result<Neutron> {
        let headers = match &config.auth {
            Auth::TokenFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    Error::Io(format!("reading token_file {}: {e}", path.display()))
                })?;
                let token = token.trim().to_owned();
                if token.is_empty() {
                    return Err(Error::Config(format!(
                        "token_file {} is empty",
                        path.display()
                    )));
                }
                vec![("X-Auth-Token", token)]
            }
            Auth::Headers { project, roles } => {
                let mut h = Vec::new();
                if let Some(p) = project {
                    h.push(("X-Project-Id", p.clone()));
                }
                if let Some(r) = roles {
                    h.push(("X-Roles", r.clone()));
                }
                h
            }
        };
        Neutron::with_headers(&config.api_url, headers)
    }

    /// A client for the API at `base` sending `headers` with every request.
    pub fn with_headers(base: &str, headers: Vec<(&'static str, String)>) -> Result<Neutron> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Api(format!("HTTP client: {e}")))?;
        Ok(Neutron {
            base: base.trim_end_matches('/').to_owned(),
            http,
            headers,
        })
    }

    /// `GET /v2.0/<path>`, the JSON body.
    async fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}/v2.0/{path}", self.base);
        let mut req = self.http.get(&url);
        for (k, v) in &self.headers {
            req = req.header(*k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::TryAgain(format!("GET {url}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::TryAgain(format!("GET {url}: reading the body: {e}")))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Error::TryAgain(format!("GET {url}: {status}: {text}")));
        }
        if !status.is_success() {
            return Err(Error::Api(format!("GET {url}: {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| Error::Api(format!("GET {url}: not JSON: {e}")))
    }

    /// `GET /v2.0/<collection>/<id>`, the object.
    async fn show(&self, collection: &str, singular: &str, id: &str) -> Result<Value> {
        let v = self.get(&format!("{collection}/{}", encode(id))).await?;
        v.get(singular)
            .cloned()
            .filter(Value::is_object)
            .ok_or_else(|| Error::Api(format!("{collection}/{id}: no {singular:?} object")))
    }

    /// The ports carrying `tag`.
    pub async fn ports_tagged(&self, tag: &str) -> Result<Vec<Value>> {
        let v = self.get(&format!("ports?tags={}", encode(tag))).await?;
        v.get("ports")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| Error::Api("ports: no \"ports\" list".into()))
    }

    /// The one port carrying `tag`, waiting up to `wait` for it to appear.
    pub async fn wait_port(&self, tag: &str, wait: Duration) -> Result<Value> {
        let end = Instant::now() + wait;
        loop {
            if let Some(port) = self.find_port(tag).await? {
                return Ok(port);
            }
            if Instant::now() >= end {
                return Err(Error::TryAgain(format!(
                    "no port tagged {tag:?} after {:.1}s",
                    wait.as_secs_f64()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The port carrying `tag` now, if one does (no waiting); more than one is an error.
    pub async fn find_port(&self, tag: &str) -> Result<Option<Value>> {
        let mut ports = self.ports_tagged(tag).await?;
        match ports.len() {
            0 => Ok(None),
            1 => Ok(Some(ports.remove(0))),
            n => Err(Error::AmbiguousPort {
                tag: tag.to_owned(),
                count: n,
                ids: ports
                    .iter()
                    .map(|p| text(p, "id"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Everything about `port` the plugin applies; `nested` also looks up its VLAN id.
    pub async fn attachment(&self, port: &Value, nested: bool) -> Result<Attachment> {
        let port_id = text(port, "id").to_owned();
        let mac = text(port, "mac_address").to_owned();
        if port_id.is_empty() || mac.is_empty() {
            return Err(Error::Api(format!("port without id or MAC: {port}")));
        }
        let network_id = text(port, "network_id");
        let network = self.show("networks", "network", network_id).await?;
        let mtu = network
            .get("mtu")
            .and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok())
            .filter(|m| *m > 0);
        let mut addresses = Vec::new();
        let mut subnets: Vec<Value> = Vec::new();
        for fixed in port
            .get("fixed_ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let subnet_id = text(fixed, "subnet_id");
            let ip: IpAddr = text(fixed, "ip_address")
                .parse()
                .map_err(|e| Error::Api(format!("port {port_id}: fixed IP {fixed}: {e}")))?;
            let subnet = match subnets.iter().find(|s| text(s, "id") == subnet_id) {
                Some(s) => s.clone(),
                None => {
                    let s = self.show("subnets", "subnet", subnet_id).await?;
                    subnets.push(s.clone());
                    s
                }
            };
            let prefix = text(&subnet, "cidr")
                .split_once('/')
                .and_then(|(_, p)| p.parse::<u8>().ok())
                .ok_or_else(|| Error::Api(format!("subnet {subnet_id}: bad cidr")))?;
            let gateway = text(&subnet, "gateway_ip").parse().ok();
            addresses.push(Address {
                ip,
                prefix,
                gateway,
            });
        }
        addresses.sort_by_key(|a| a.ip.is_ipv6());
        let (routes, nameservers) = routes_and_dns(&addresses, &subnets);
        let vlan = if nested {
            Some(self.subport_vlan(port).await?)
        } else {
            None
        };
        Ok(Attachment {
            port_id,
            mac,
            mtu,
            addresses,
            routes,
            nameservers,
            vlan,
        })
    }

    /// The VLAN id of `port` as a subport of its trunk. The trunk is the one its `device_id`
    /// names when that is a trunk holding the port; otherwise (Neutron, and Wyvern, set no
    /// `device_id` on subports, only `device_owner` `trunk:subport`) the trunk among those the
    /// caller sees (`GET /v2.0/trunks`) whose `sub_ports` hold it.
    pub async fn subport_vlan(&self, port: &Value) -> Result<u16> {
        let id = text(port, "id");
        let named = text(port, "device_id");
        let mut trunk = None;
        if text(port, "device_owner") == "trunk:subport" && !named.is_empty() {
            match self.show("trunks", "trunk", named).await {
                Ok(t) if subport_of(&t, id).is_some() => trunk = Some(t),
                Ok(_) | Err(Error::Api(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if trunk.is_none() {
            let all = self.get("trunks").await?;
            trunk = all
                .get("trunks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|t| subport_of(t, id).is_some())
                .cloned();
        }
        let trunk = trunk.ok_or_else(|| {
            Error::Api(format!(
                "nested mode: port {id} is a subport of no trunk (device_owner {:?})",
                text(port, "device_owner")
            ))
        })?;
        let trunk_id = text(&trunk, "id");
        let sub = subport_of(&trunk, id).expect("found by its subport");
        if text(sub, "segmentation_type") != "vlan" {
            return Err(Error::Api(format!(
                "subport {id} of trunk {trunk_id}: segmentation_type {:?} (only vlan)",
                text(sub, "segmentation_type")
            )));
        }
        sub.get("segmentation_id")
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok())
            .filter(|v| (1..=4094).contains(v))
            .ok_or_else(|| {
                Error::Api(format!(
                    "subport {id} of trunk {trunk_id}: bad segmentation_id {}",
                    sub.get("segmentation_id").unwrap_or(&Value::Null)
                ))
            })
    }
}

/// The entry of `trunk`'s `sub_ports` for port `id`.
fn subport_of<'a>(trunk: &'a Value, id: &str) -> Option<&'a Value> {
    trunk
        .get("sub_ports")
        .and_then(Value::as_array)?
        .iter()
        .find(|s| text(s, "port_id") == id)
}

/// Default routes (per family: via the gateway of the first address whose subnet has one,
/// unless a host route is a default route already) and host routes, plus DNS servers.
fn routes_and_dns(addresses: &[Address], subnets: &[Value]) -> (Vec<RouteSpec>, Vec<String>) {
    let mut host_routes = Vec::new();
    let mut nameservers: Vec<String> = Vec::new();
    for s in subnets {
        for r in s
            .get("host_routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let route = RouteSpec {
                dst: text(r, "destination").to_owned(),
                via: text(r, "nexthop").parse().ok(),
            };
            if !route.dst.is_empty() && !host_routes.contains(&route) {
                host_routes.push(route);
            }
        }
        for ns in s
            .get("dns_nameservers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !nameservers.iter().any(|n| n == ns) {
                nameservers.push(ns.to_owned());
            }
        }
    }
    let mut routes = Vec::new();
    for (v6, default) in [(false, "0.0.0.0/0"), (true, "::/0")] {
        if host_routes.iter().any(|r| r.dst == default) {
            continue;
        }
        if let Some(gw) = addresses
            .iter()
            .filter(|a| a.ip.is_ipv6() == v6)
            .find_map(|a| a.gateway)
        {
            routes.push(RouteSpec {
                dst: default.to_owned(),
                via: Some(gw),
            });
        }
    }
    routes.extend(host_routes);
    (routes, nameservers)
}

/// `v[key]` as a string ("" if absent).
pub(crate) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Percent-encodes a query or path component (everything but RFC 3986's unreserved
/// characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn components_are_encoded() {
        assert_eq!(encode("k8s-pod:default:web-0"), "k8s-pod%3Adefault%3Aweb-0");
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
    }

    fn addr(ip: &str, prefix: u8, gw: Option<&str>) -> Address {
        Address {
            ip: ip.parse().unwrap(),
            prefix,
            gateway: gw.map(|g| g.parse().unwrap()),
        }
    }

    #[test]
    fn routes_follow_gateways_and_host_routes() {
        let addresses = [
            addr("10.0.0.5", 24, Some("10.0.0.1")),
            addr("10.0.9.5", 24, Some("10.0.9.1")),
            addr("fd00::5", 64, Some("fd00::1")),
        ];
        let subnets = [
            json!({"id": "s1", "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}],
                   "dns_nameservers": ["10.0.0.2", "10.0.0.3"]}),
            json!({"id": "s2", "host_routes": [], "dns_nameservers": ["10.0.0.3"]}),
            json!({"id": "s3"}),
        ];
        let (routes, dns) = routes_and_dns(&addresses, &subnets);
        let shown: Vec<String> = routes
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.via.map(|v| v.to_string())))
            .collect();
        assert_eq!(
            shown,
            [
                "0.0.0.0/0 Some(\"10.0.0.1\")",
                "::/0 Some(\"fd00::1\")",
                "192.168.0.0/16 Some(\"10.0.0.254\")"
            ]
        );
        assert_eq!(dns, ["10.0.0.2", "10.0.0.3"]);
        // A host route that is a default route replaces ours.
        let subnets =
            [json!({"host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.0.9"}]})];
        let (routes, _) = routes_and_dns(&addresses[..1], &subnets);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].via, Some("10.0.0.9".parse().unwrap()));
        // No gateway, no default route.
        let (routes, _) = routes_and_dns(&[addr("10.0.0.5", 24, None)], &[]);
        assert!(routes.is_empty());
    }
}
