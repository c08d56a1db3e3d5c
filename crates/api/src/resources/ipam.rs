//! IP address management: allocation pools, and claiming addresses for ports; and the number spaces
//! (tunnel ids, router numbers) allocated the same way.
//!
//! An allocated address is a claim key `/ipam/<subnet>/<ip>` owned by a port. Free addresses are handed
//! out in order: each subnet has an in-memory cursor, and every caller takes the next candidate from it
//! under a lock, so concurrent callers try different addresses instead of racing for the same one. The
//! cursor is only a hint (the claim key decides); after a restart, or when it runs past the end of the
//! pools, the allocator scans the claimed set for the first free address. A [`NumberSpace`] (claims
//! `<prefix><n>`) works alike, with one cursor for the whole space.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::Api;
use crate::error::{ApiError, ApiResult};
use crate::repo::{Obj, Plan, ipam_key, ipam_prefix, str_field};

/// Candidates tried from the cursor before scanning for a free address.
const PROBES: usize = 32;

/// Allocation cursors (the next number to try), per subnet and per segment id space.
#[derive(Default)]
pub struct Cursors(std::sync::Mutex<std::collections::HashMap<String, u128>>);

impl Cursors {
    /// The next candidate in the pools at or after the cursor, advancing the cursor past it.
    pub fn take(&self, subnet: &str, pools: &[(u128, u128)]) -> Option<u128> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = map.get(subnet).copied().unwrap_or(pools.first()?.0);
        let next = pools
            .iter()
            .find_map(|(s, e)| if at <= *e { Some(at.max(*s)) } else { None })?;
        Self::advance(&mut map, subnet, next);
        Some(next)
    }
    /// Moves the cursor of a subnet past `taken` (after a scan found the first free address).
    pub fn set_past(&self, subnet: &str, taken: u128) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::advance(&mut map, subnet, taken);
    }
    /// Puts the cursor after `taken`; past the very last address (`ffff:...:ffff`) there is no next
    /// number, and the cursor starts over at the first pool instead of wrapping to `::`.
    fn advance(map: &mut std::collections::HashMap<String, u128>, subnet: &str, taken: u128) {
        match taken.checked_add(1) {
            Some(next) => map.insert(subnet.to_string(), next),
            None => map.remove(subnet),
        };
    }
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

pub fn subnet_cidr(subnet: &Obj) -> Option<IpNet> {
    str_field(subnet, "cidr").parse().ok()
}

/// The pools of a subnet as inclusive numeric ranges.
pub fn pools(subnet: &Obj) -> Vec<(u128, u128)> {
    subnet
        .get("allocation_pools")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let s: IpAddr = p.get("start")?.as_str()?.parse().ok()?;
                    let e: IpAddr = p.get("end")?.as_str()?.parse().ok()?;
                    Some((to_u128(s), to_u128(e)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The usable host range of a CIDR: IPv4 leaves out the network and broadcast addresses (for prefixes
/// up to /30), IPv6 the subnet-router anycast address (a /128 has none). No sum passes the last
/// address (`ffff:...:ffff/128` is a CIDR too).
pub fn host_range(net: &IpNet) -> Option<(u128, u128)> {
    let first = to_u128(net.network());
    let last = to_u128(net.broadcast());
    match net {
        IpNet::V4(n) if n.prefix_len() >= 31 => Some((first, last)),
        IpNet::V4(_) if last - first > 1 => Some((first + 1, last - 1)),
        IpNet::V6(_) if last > first => Some((first + 1, last)),
        _ => None,
    }
}

/// Default pools: the host range without the gateway.
pub fn default_pools(net: &IpNet, gateway: Option<IpAddr>) -> Vec<Value> {
    let v6 = matches!(net, IpNet::V6(_));
    let Some((start, end)) = host_range(net) else {
        return vec![];
    };
    let mut ranges = vec![(start, end)];
    if let Some(gw) = gateway.map(to_u128) {
        ranges = ranges
            .into_iter()
            .flat_map(|(s, e)| {
                if gw < s || gw > e {
                    vec![(s, e)]
                } else {
                    let mut out = vec![];
                    if gw > s {
                        out.push((s, gw - 1));
                    }
                    if gw < e {
                        out.push((gw + 1, e));
                    }
                    out
                }
            })
            .collect();
    }
    ranges
        .into_iter()
        .map(|(s, e)| json!({"start": from_u128(s, v6).to_string(), "end": from_u128(e, v6).to_string()}))
        .collect()
}

/// Claims `ip` on `subnet` for `port`, or fails with `IpAddressAlreadyAllocated`.
pub async fn claim_specific(
    api: &Api,
    plan: &mut Plan,
    subnet_id: &str,
    ip: &str,
    port: &str,
) -> ApiResult<()> {
    let key = ipam_key(subnet_id, ip);
    if plan.is_claimed(&key) || api.db.exists(&key).await? {
        return Err(ApiError::conflict(
            "IpAddressAlreadyAllocated",
            format!("IP address {ip} already allocated in subnet {subnet_id}"),
        ));
    }
    plan.claim(key, port);
    Ok(())
}

/// Claims any free address from the subnet's pools; `None` when the pools are exhausted.
pub async fn claim_any(
    api: &Api,
    plan: &mut Plan,
    subnet: &Obj,
    port: &str,
) -> ApiResult<Option<String>> {
    let subnet_id = str_field(subnet, "id");
    let v6 = subnet.get("ip_version").and_then(Value::as_u64) == Some(6);
    let pools = pools(subnet);
    for _ in 0..PROBES {
        let Some(n) = api.ipam_cursors.take(subnet_id, &pools) else {
            break;
        };
        let ip = from_u128(n, v6).to_string();
        let key = ipam_key(subnet_id, &ip);
        if !plan.is_claimed(&key) && !api.db.exists(&key).await? {
            plan.claim(key, port);
            return Ok(Some(ip));
        }
    }
    let used: HashSet<String> = api
        .db
        .values_under(&ipam_prefix(subnet_id))
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // An inclusive range ends at the last address even when that is `ffff:...:ffff`.
    for n in pools.into_iter().flat_map(|(s, e)| s..=e) {
        let ip = from_u128(n, v6).to_string();
        let key = ipam_key(subnet_id, &ip);
        if !used.contains(&key) && !plan.is_claimed(&key) {
            plan.claim(key, port);
            api.ipam_cursors.set_past(subnet_id, n);
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// A range of numbers handed out in order, each claimed as `<claims><n>`: networks' tunnel ids,
/// routers' numbers.
pub struct NumberSpace {
    /// The name of its allocation cursor.
    pub cursor: &'static str,
    /// The prefix of its claim keys (`/seg/tunnel/`).
    pub claims: &'static str,
    pub first: u64,
    pub last: u64,
}

impl NumberSpace {
    /// The claim key of `n`.
    pub fn key(&self, n: u64) -> String {
        format!("{}{n}", self.claims)
    }

    /// The next number that neither the store nor `plan` has claimed, from the cursor, or by a
    /// scan of the claims when the cursor ran past the end; `None` when every number is taken. The
    /// caller claims it: should another call claim it first, that plan fails at commit and the call
    /// is planned again with the next number.
    pub async fn next_free(&self, api: &Api, plan: &Plan) -> ApiResult<Option<u64>> {
        let range = [(u128::from(self.first), u128::from(self.last))];
        for _ in 0..PROBES {
            let Some(n) = api.ipam_cursors.take(self.cursor, &range) else {
                break;
            };
            let key = self.key(n as u64);
            if !plan.is_claimed(&key) && !api.db.exists(&key).await? {
                return Ok(Some(n as u64));
            }
        }
        let used: HashSet<u64> = api
            .db
            .values_under(self.claims)
            .await?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(self.claims)?.parse().ok())
            .collect();
        let free =
            (self.first..=self.last).find(|n| !used.contains(n) && !plan.is_claimed(&self.key(*n)));
        if let Some(n) = free {
            api.ipam_cursors.set_past(self.cursor, u128::from(n));
        }
        Ok(free)
    }
}

/// The SLAAC (EUI-64) address of a MAC in an IPv6 /64.
pub fn eui64(net: &IpNet, mac: &str) -> Option<String> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if bytes.len() != 6 || net.prefix_len() != 64 {
        return None;
    }
    let iid = [
        bytes[0] ^ 0x02,
        bytes[1],
        bytes[2],
        0xff,
        0xfe,
        bytes[3],
        bytes[4],
        bytes[5],
    ];
    let prefix = to_u128(net.network());
    let addr = prefix | u64::from_be_bytes(iid) as u128;
    Some(from_u128(addr, true).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pools_skip_gateway_and_broadcast() {
        let net: IpNet = "10.0.0.0/24".parse().unwrap();
        let pools = default_pools(&net, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            pools,
            vec![json!({"start": "10.0.0.2", "end": "10.0.0.254"})]
        );
        let pools = default_pools(&net, Some("10.0.0.100".parse().unwrap()));
        assert_eq!(pools.len(), 2);
        let v6: IpNet = "2001:db8::/64".parse().unwrap();
        let pools = default_pools(&v6, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            pools,
            vec![json!({"start": "2001:db8::2", "end": "2001:db8::ffff:ffff:ffff:ffff"})]
        );
    }

    #[test]
    fn host_ranges_end_at_the_last_address() {
        let range = |cidr: &str| host_range(&cidr.parse().unwrap());
        assert_eq!(range("10.0.0.0/30"), Some((0x0a00_0001, 0x0a00_0002)));
        assert_eq!(range("10.0.0.4/31"), Some((0x0a00_0004, 0x0a00_0005)));
        assert_eq!(
            range("255.255.255.255/32"),
            Some((0xffff_ffff, 0xffff_ffff))
        );
        assert_eq!(
            range("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"),
            Some((u128::MAX, u128::MAX))
        );
        assert_eq!(range("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), None);
        assert_eq!(range("2001:db8::1/128"), None);
    }

    #[test]
    fn eui64_addresses() {
        let net: IpNet = "2001:db8::/64".parse().unwrap();
        assert_eq!(
            eui64(&net, "fa:16:3e:11:22:33").as_deref(),
            Some("2001:db8::f816:3eff:fe11:2233")
        );
    }
}
