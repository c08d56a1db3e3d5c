//! Load balancers as the datapath sees them: the Octavia objects (load balancer, listener, pool,
//! member, health monitor) decoded from the northbound store's JSON, with only what flows,
//! groups and health checks are made from.

use std::net::IpAddr;

use serde_json::Value;

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn id_of(v: &Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn up(v: &Value) -> bool {
    v.get("admin_state_up") != Some(&Value::Bool(false))
}

fn number<T: TryFrom<u64>>(v: &Value, k: &str) -> Option<T> {
    v.get(k)
        .and_then(Value::as_u64)
        .and_then(|n| T::try_from(n).ok())
}

/// A load balancer: its VIP, an address on a network that it answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub id: String,
    pub name: String,
    pub vip: IpAddr,
    pub vip_network_id: String,
    pub vip_subnet_id: Option<String>,
    /// The VIP port (its MAC answers for the VIP).
    pub vip_port_id: Option<String>,
    pub admin_up: bool,
}

/// A listener: connections to the VIP on a protocol and port, balanced over its default pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub id: String,
    pub name: String,
    pub loadbalancer_id: String,
    /// IP protocol number: TCP (6; HTTP listeners are balanced at L4) or UDP (17).
    pub protocol: u8,
    pub port: u16,
    pub default_pool_id: Option<String>,
    pub admin_up: bool,
}

/// A pool: members and how one is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    pub name: String,
    /// Each client address sticks to one member (`lb_algorithm` `SOURCE_IP`, or
    /// `session_persistence` of type `SOURCE_IP`); otherwise each connection is placed on its
    /// own.
    pub source_ip: bool,
    pub healthmonitor_id: Option<String>,
    pub admin_up: bool,
}

/// A pool member: an address and port that connections are sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub pool_id: String,
    pub loadbalancer_id: String,
    pub address: IpAddr,
    pub port: u16,
    pub subnet_id: Option<String>,
    /// Relative share of new connections (0: none).
    pub weight: u16,
    /// Only used while no other member is available.
    pub backup: bool,
    pub admin_up: bool,
    /// What the member's health check last found (`None`: nothing reported yet).
    pub health: Option<Health>,
}

/// A health check's verdict on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Online,
    Error,
}

impl Health {
    /// As Octavia shows it in `operating_status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Online => "ONLINE",
            Health::Error => "ERROR",
        }
    }
}

/// A health monitor: how a pool's members are probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMonitor {
    pub id: String,
    pub pool_id: String,
    pub kind: MonitorKind,
    /// Seconds between probes.
    pub delay: u32,
    /// Seconds a probe may take.
    pub timeout: u32,
    /// Successes in a row that make a member healthy.
    pub max_retries: u32,
    /// Failures in a row that make a member unhealthy.
    pub max_retries_down: u32,
    pub http_method: String,
    pub url_path: String,
    /// Status codes that count as healthy: single codes and ranges (`200`, `200-204`, `200,202`).
    pub expected_codes: Vec<(u16, u16)>,
    pub admin_up: bool,
}

/// What a health monitor sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorKind {
    /// ICMP echo.
    Ping,
    /// A TCP handshake.
    Tcp,
    /// An HTTP request over TCP; the status code decides.
    Http,
}

impl LoadBalancer {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: id_of(v, "id")?,
            name: str_of(v, "name").to_string(),
            vip: str_of(v, "vip_address").parse().ok()?,
            vip_network_id: id_of(v, "vip_network_id")?,
            vip_subnet_id: id_of(v, "vip_subnet_id"),
            vip_port_id: id_of(v, "vip_port_id"),
            admin_up: up(v),
        })
    }
}

impl Listener {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: id_of(v, "id")?,
            name: str_of(v, "name").to_string(),
            loadbalancer_id: id_of(v, "_loadbalancer_id")?,
            protocol: match str_of(v, "protocol") {
                "TCP" | "HTTP" => 6,
                "UDP" => 17,
                _ => return None,
            },
            port: number(v, "protocol_port").filter(|p| *p != 0)?,
            default_pool_id: id_of(v, "default_pool_id"),
            admin_up: up(v),
        })
    }
}

impl Pool {
    pub fn from_json(v: &Value) -> Option<Self> {
        let persistence = v
            .get("session_persistence")
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str);
        Some(Self {
            id: id_of(v, "id")?,
            name: str_of(v, "name").to_string(),
            source_ip: str_of(v, "lb_algorithm") == "SOURCE_IP" || persistence == Some("SOURCE_IP"),
            healthmonitor_id: id_of(v, "healthmonitor_id"),
            admin_up: up(v),
        })
    }
}

impl Member {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: id_of(v, "id")?,
            name: str_of(v, "name").to_string(),
            pool_id: id_of(v, "_pool_id")?,
            loadbalancer_id: id_of(v, "_loadbalancer_id")?,
            address: str_of(v, "address").parse().ok()?,
            port: number(v, "protocol_port").filter(|p| *p != 0)?,
            subnet_id: id_of(v, "subnet_id"),
            weight: match v.get("weight") {
                None | Some(Value::Null) => 1,
                Some(_) => number(v, "weight")?,
            },
            backup: v.get("backup") == Some(&Value::Bool(true)),
            admin_up: up(v),
            health: match str_of(v, "_health") {
                "ONLINE" => Some(Health::Online),
                "ERROR" => Some(Health::Error),
                _ => None,
            },
        })
    }
}

/// `expected_codes` as ranges; `None` if malformed.
pub fn parse_codes(s: &str) -> Option<Vec<(u16, u16)>> {
    s.split(',')
        .map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((lo, hi)) => Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)),
                None => {
                    let c = part.parse().ok()?;
                    Some((c, c))
                }
            }
        })
        .collect()
}

impl HealthMonitor {
    pub fn from_json(v: &Value) -> Option<Self> {
        let codes = match str_of(v, "expected_codes") {
            "" => "200",
            c => c,
        };
        Some(Self {
            id: id_of(v, "id")?,
            pool_id: id_of(v, "_pool_id")?,
            kind: match str_of(v, "type") {
                "PING" => MonitorKind::Ping,
                "TCP" => MonitorKind::Tcp,
                "HTTP" => MonitorKind::Http,
                _ => return None,
            },
            delay: number(v, "delay").filter(|d| *d > 0)?,
            timeout: number(v, "timeout").filter(|t| *t > 0)?,
            max_retries: number(v, "max_retries").filter(|r| *r > 0)?,
            max_retries_down: number(v, "max_retries_down")
                .filter(|r| *r > 0)
                .unwrap_or(3),
            http_method: match str_of(v, "http_method") {
                "" => "GET".to_string(),
                m => m.to_string(),
            },
            url_path: match str_of(v, "url_path") {
                "" => "/".to_string(),
                p => p.to_string(),
            },
            expected_codes: parse_codes(codes)?,
            admin_up: up(v),
        })
    }

    /// Whether an HTTP status code counts as healthy.
    pub fn expects(&self, code: u16) -> bool {
        self.expected_codes
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_what_the_api_stores() {
        let lb = LoadBalancer::from_json(&json!({"id": "l", "vip_address": "10.0.0.9",
            "vip_network_id": "n", "vip_subnet_id": "s", "vip_port_id": "p"}))
        .unwrap();
        assert_eq!(lb.vip, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert!(lb.admin_up);
        let l = Listener::from_json(&json!({"id": "x", "_loadbalancer_id": "l",
            "protocol": "HTTP", "protocol_port": 80, "default_pool_id": null}))
        .unwrap();
        assert_eq!((l.protocol, l.port, l.default_pool_id), (6, 80, None));
        assert!(
            Listener::from_json(&json!({"id": "x", "_loadbalancer_id": "l",
            "protocol": "HTTPS", "protocol_port": 443}))
            .is_none()
        );
        let p = Pool::from_json(&json!({"id": "p", "lb_algorithm": "ROUND_ROBIN",
            "session_persistence": {"type": "SOURCE_IP"}}))
        .unwrap();
        assert!(p.source_ip);
        let m = Member::from_json(
            &json!({"id": "m", "_pool_id": "p", "_loadbalancer_id": "l", "address": "10.0.1.5",
            "protocol_port": 8080, "weight": 0, "_health": "ERROR"}),
        )
        .unwrap();
        assert_eq!((m.weight, m.health), (0, Some(Health::Error)));
        let h = HealthMonitor::from_json(&json!({"id": "h", "_pool_id": "p", "type": "HTTP",
            "delay": 2, "timeout": 1, "max_retries": 2, "expected_codes": "200-204,302"}))
        .unwrap();
        assert!(h.expects(204) && h.expects(302) && !h.expects(301));
        assert_eq!((h.max_retries_down, h.url_path.as_str()), (3, "/"));
        assert_eq!(parse_codes("2x"), None);
    }
}
