//! Subnets: CIDR, gateway and pool validation, IPv6 modes, and deletion rules.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use model::resources::{NETWORK, PORT, SUBNET};
use serde_json::{Value, json};

use super::ipam::{default_pools, host_range, to_u128};
use super::{Deletion, check_count, two_phase_delete};
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::repo::{Attempts, Obj, Plan, Stored, ipam_prefix, str_field};
use crate::{Api, input};

/// Checks the gateway and pools of a subnet against its CIDR and each other.
fn check_gateway_and_pools(net: &IpNet, subnet: &Obj) -> ApiResult<()> {
    let gateway = match subnet.get("gateway_ip").and_then(Value::as_str) {
        Some(gw) => {
            let ip: IpAddr = gw
                .parse()
                .map_err(|_| ApiError::invalid_input(format!("Gateway IP {gw} is not valid")))?;
            if ip.is_ipv4() != net.addr().is_ipv4() {
                return Err(ApiError::invalid_input(
                    "Gateway IP version inconsistent with allocation pool version".to_string(),
                ));
            }
            if net.contains(&ip)
                && matches!(net, IpNet::V4(n) if n.prefix_len() < 31)
                && (ip == net.network() || ip == net.broadcast())
            {
                return Err(ApiError::invalid_input(format!(
                    "Gateway is not valid on subnet {net}"
                )));
            }
            Some(ip)
        }
        None => None,
    };
    let pools = subnet
        .get("allocation_pools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ranges: Vec<(u128, u128, String)> = Vec::new();
    for p in &pools {
        let (Some(s), Some(e)) = (
            p.get("start").and_then(Value::as_str),
            p.get("end").and_then(Value::as_str),
        ) else {
            return Err(ApiError::bad_request(
                "Invalid input for allocation_pools. Reason: Invalid data format for IP pool.",
            ));
        };
        if p.as_object().is_some_and(|o| o.len() != 2) {
            return Err(ApiError::bad_request(
                "Invalid input for allocation_pools. Reason: Invalid data format for IP pool.",
            ));
        }
        let pool_text = format!("{s}-{e}");
        let bad = || {
            ApiError::bad(
                "InvalidAllocationPool",
                format!("The allocation pool {pool_text} is not valid."),
            )
        };
        let (s, e): (IpAddr, IpAddr) =
            (s.parse().map_err(|_| bad())?, e.parse().map_err(|_| bad())?);
        // Pools stay within the host range: not an IPv4 network or broadcast address, not the IPv6
        // subnet-router anycast address.
        let usable = |ip: &IpAddr| {
            ip.is_ipv4() == net.addr().is_ipv4()
                && host_range(net).is_some_and(|(lo, hi)| (lo..=hi).contains(&to_u128(*ip)))
        };
        if !usable(&s) || !usable(&e) {
            return Err(ApiError::bad(
                "OutOfBoundsAllocationPool",
                format!("The allocation pool {pool_text} spans beyond the subnet cidr {net}."),
            ));
        }
        let (s, e) = (to_u128(s), to_u128(e));
        if s > e {
            return Err(bad());
        }
        ranges.push((s, e, pool_text));
    }
    // Sorted by start, two pools overlap only if some neighbours do: n log n, however many pools.
    let mut sorted: Vec<&(u128, u128, String)> = ranges.iter().collect();
    sorted.sort_unstable_by_key(|(s, e, _)| (*s, *e));
    if let Some(pair) = sorted.windows(2).find(|pair| pair[1].0 <= pair[0].1) {
        return Err(ApiError::conflict(
            "OverlappingAllocationPools",
            format!(
                "Found overlapping allocation pools: {} and {} for subnet {net}.",
                pair[0].2, pair[1].2
            ),
        ));
    }
    if let Some(gw) = gateway {
        let g = to_u128(gw);
        if let Some((_, _, pool)) = ranges.iter().find(|(s, e, _)| *s <= g && g <= *e) {
            return Err(ApiError::conflict(
                "GatewayConflictWithAllocationPools",
                format!("Gateway ip {gw} conflicts with allocation pool {pool}"),
            ));
        }
    }
    Ok(())
}

/// Most DNS servers a subnet may have (Neutron's `max_dns_nameservers`).
const MAX_DNS_NAMESERVERS: usize = 5;
/// Most host routes a subnet may have (Neutron's `max_subnet_host_routes`).
const MAX_HOST_ROUTES: usize = 20;

/// Checks (and normalises) the host routes and DNS servers of a subnet. `subnet_name` names it in the
/// errors for too many: its id, or "new subnet" on create (as Neutron does). The counts are checked
/// before the items.
fn check_routes_and_dns(net: &IpNet, subnet: &mut Obj, subnet_name: &str) -> ApiResult<()> {
    let exhausted = |kind: &str, what: &str, max: usize| {
        ApiError::bad(
            kind,
            format!(
                "Unable to complete operation for {subnet_name}. The number of {what} exceeds the limit {max}."
            ),
        )
    };
    check_count(subnet.get("dns_nameservers"), MAX_DNS_NAMESERVERS, || {
        exhausted(
            "DNSNameServersExhausted",
            "DNS nameservers",
            MAX_DNS_NAMESERVERS,
        )
    })?;
    check_count(subnet.get("host_routes"), MAX_HOST_ROUTES, || {
        exhausted("HostRoutesExhausted", "host routes", MAX_HOST_ROUTES)
    })?;
    if let Some(routes) = subnet.get("host_routes") {
        model::validate::host_routes(routes).map_err(|r| input::invalid("host_routes", r))?;
    }
    let v4 = net.addr().is_ipv4();
    for r in subnet
        .get("host_routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let dest = r
            .get("destination")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<IpNet>().ok());
        let hop = r
            .get("nexthop")
            .and_then(Value::as_str)
            .and_then(|h| h.parse::<IpAddr>().ok());
        match (dest, hop) {
            (Some(d), Some(h)) if d.addr().is_ipv4() == v4 && h.is_ipv4() == v4 => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for host_routes. Reason: Invalid data format for hostroute: '{r}'."
                )));
            }
        }
    }
    let dns = match subnet.get("dns_nameservers") {
        Some(d) => model::validate::ip_list(d).map_err(|r| input::invalid("dns_nameservers", r))?,
        None => Value::Array(vec![]),
    };
    let mut seen = HashSet::new();
    for d in dns
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !seen.insert(d) {
            return Err(ApiError::bad_request(format!(
                "Invalid input for dns_nameservers. Reason: Duplicate nameserver '{d}'."
            )));
        }
    }
    subnet.insert("dns_nameservers".into(), dns);
    Ok(())
}

fn check_ipv6_modes(net: &IpNet, subnet: &Obj, version: u64) -> ApiResult<()> {
    let ra = subnet.get("ipv6_ra_mode").and_then(Value::as_str);
    let addr = subnet.get("ipv6_address_mode").and_then(Value::as_str);
    if version == 4 && (ra.is_some() || addr.is_some()) {
        return Err(ApiError::invalid_input(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when ip_version is 4",
        ));
    }
    if let (Some(r), Some(a)) = (ra, addr)
        && r != a
    {
        return Err(ApiError::invalid_input(format!(
            "ipv6_ra_mode set to '{r}' with ipv6_address_mode set to '{a}' is not valid. If both attributes are set, they must be the same value"
        )));
    }
    if subnet.get("enable_dhcp") == Some(&Value::Bool(false)) && (ra.is_some() || addr.is_some()) {
        return Err(ApiError::invalid_input(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False",
        ));
    }
    // Addresses are EUI-64 interface ids, which take the last 64 bits.
    if is_auto_address(subnet) && net.prefix_len() != 64 {
        return Err(ApiError::invalid_input(format!(
            "Invalid CIDR {net} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
        )));
    }
    Ok(())
}

/// Refuses the CIDRs Neutron refuses for a new subnet: the IPv6 network `::`, an IPv4 network
/// starting at 0.0.0.0 with DHCP, and any /0.
fn check_cidr(net: &IpNet, subnet: &Obj) -> ApiResult<()> {
    let unspecified = net.network().is_unspecified();
    if unspecified && matches!(net, IpNet::V6(_)) {
        return Err(ApiError::invalid_input("IPv6 subnet '::' is not supported"));
    }
    if unspecified && subnet.get("enable_dhcp") != Some(&Value::Bool(false)) {
        return Err(ApiError::invalid_input(
            "First IP '0.0.0.0' of network is not supported if enable_dhcp is True.",
        ));
    }
    if net.prefix_len() == 0 {
        return Err(ApiError::invalid_input(
            "0 is not allowed as CIDR prefix length",
        ));
    }
    Ok(())
}

/// The ids in a network's `subnets`, which every subnet create and delete keeps up to date.
pub fn ids_on(network: &Obj) -> Vec<&str> {
    network
        .get("subnets")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether ports get an address on this subnet without asking (SLAAC and stateless DHCPv6).
pub fn is_auto_address(subnet: &Obj) -> bool {
    matches!(
        str_field(subnet, "ipv6_address_mode"),
        "slaac" | "dhcpv6-stateless"
    ) || (str_field(subnet, "ipv6_address_mode").is_empty()
        && matches!(
            str_field(subnet, "ipv6_ra_mode"),
            "slaac" | "dhcpv6-stateless"
        ))
}

pub async fn plan_create(api: &Api, ctx: &Ctx, mut subnet: Obj, plan: &mut Plan) -> ApiResult<Obj> {
    let network_id = str_field(&subnet, "network_id").to_string();
    // Only the network's owner may add subnets: another project's network, even one it cannot see,
    // is refused by policy, as in Neutron.
    let read = api.db.require(&NETWORK, &network_id).await?;
    if !ctx.owns(&read.obj) {
        return Err(ApiError::policy("create_subnet"));
    }
    // Earlier items of a bulk request added their subnets to the network.
    let mut network = plan
        .written(&NETWORK, &network_id)
        .unwrap_or_else(|| read.obj.clone());
    let version = subnet
        .get("ip_version")
        .and_then(Value::as_u64)
        .unwrap_or(4);
    let Some(cidr_text) = subnet
        .get("cidr")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(ApiError::bad(
            "BadRequest",
            "Bad subnets request: a subnetpool must be specified in the absence of a cidr.",
        ));
    };
    let net: IpNet = cidr_text
        .parse()
        .map_err(|_| ApiError::invalid_input(format!("'{cidr_text}' is not a valid IP subnet")))?;
    if (version == 4) != net.addr().is_ipv4() {
        return Err(ApiError::invalid_input(format!(
            "cidr '{cidr_text}' does not match the ip_version '{version}'"
        )));
    }
    check_ipv6_modes(&net, &subnet, version)?;
    check_cidr(&net, &subnet)?;
    // The network's other subnets, those of earlier items of a bulk request included. No pin on
    // them is needed: every subnet create or delete also writes the network, which this plan updates
    // (and so pins) below.
    let ids = ids_on(&network);
    let mut others: Vec<Obj> = ids
        .iter()
        .filter_map(|id| plan.written(&SUBNET, id))
        .collect();
    others.extend(
        api.db
            .load_many(&SUBNET, &ids)
            .await?
            .into_iter()
            .map(|s| s.obj),
    );
    for other in &others {
        if let Ok(o) = str_field(other, "cidr").parse::<IpNet>()
            && (o.contains(&net.network()) || net.contains(&o.network()))
        {
            return Err(ApiError::invalid_input(format!(
                "Requested subnet with cidr: {cidr_text} for network: {network_id} overlaps with another subnet"
            )));
        }
    }
    if !subnet.contains_key("gateway_ip") {
        // IPv4: the first host address; IPv6: the subnet-router anycast address (the network address).
        let gw = match net {
            IpNet::V4(_) => host_range(&net).map(|(s, _)| super::ipam::from_u128(s, false)),
            IpNet::V6(_) => Some(net.network()),
        };
        subnet.insert("gateway_ip".into(), json!(gw.map(|g| g.to_string())));
    }
    if !subnet.contains_key("allocation_pools") {
        let gw = subnet
            .get("gateway_ip")
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok());
        subnet.insert(
            "allocation_pools".into(),
            Value::Array(default_pools(&net, gw)),
        );
    }
    check_gateway_and_pools(&net, &subnet)?;
    check_routes_and_dns(&net, &mut subnet, "new subnet")?;
    subnet.insert("subnetpool_id".into(), Value::Null);
    subnet.insert(
        "router:external".into(),
        network
            .get("router:external")
            .cloned()
            .unwrap_or(Value::Bool(false)),
    );
    let id = str_field(&subnet, "id").to_string();
    let subnets = network.entry("subnets").or_insert_with(|| json!([]));
    if let Value::Array(list) = subnets {
        list.push(Value::String(id));
    }
    plan.update(&NETWORK, &read, &mut network);
    plan.create(&SUBNET, &subnet);
    Ok(subnet)
}

pub async fn plan_update(
    api: &Api,
    stored: Stored,
    changes: Obj,
    plan: &mut Plan,
) -> ApiResult<Obj> {
    let id = stored.id().to_string();
    let mut subnet = stored.obj.clone();
    subnet.extend(changes);
    let net: IpNet = str_field(&subnet, "cidr")
        .parse()
        .map_err(|_| ApiError::invalid_input("subnet has no valid cidr"))?;
    check_gateway_and_pools(&net, &subnet)?;
    check_routes_and_dns(&net, &mut subnet, &id)?;
    let version = subnet
        .get("ip_version")
        .and_then(Value::as_u64)
        .unwrap_or(4);
    check_ipv6_modes(&net, &subnet, version)?;
    if subnet != stored.obj {
        // A changed subnet revises its network, as in Neutron (`Subnet.revises_on_change`).
        let network = api
            .db
            .require(&NETWORK, str_field(&stored.obj, "network_id"))
            .await?;
        let mut revised = network.obj.clone();
        plan.update(&NETWORK, &network, &mut revised);
    }
    plan.update(&SUBNET, &stored, &mut subnet);
    Ok(subnet)
}

pub async fn plan_delete(api: &Api, stored: Stored) -> ApiResult<Deletion> {
    two_phase_delete(api, &SUBNET, &stored, async |marked: &mut Stored| {
        finish_delete(api, marked).await
    })
    .await
}

/// Deletes a subnet marked for deletion, unless ports still have addresses on it.
async fn finish_delete(api: &Api, marked: &Stored) -> ApiResult<()> {
    let id = marked.id().to_string();
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        let allocations = api.db.values_under(&ipam_prefix(&id)).await?;
        let mut in_use = false;
        for (_, port_id) in &allocations {
            let port = api.db.load(&PORT, port_id).await?;
            if port.is_some_and(|p| str_field(&p.obj, "device_owner") != "network:dhcp") {
                in_use = true;
            }
        }
        if in_use {
            return Err(ApiError::conflict(
                "SubnetInUse",
                format!(
                    "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                ),
            ));
        }
        let mut plan = Plan::default();
        for (key, _) in allocations {
            plan.release(key);
        }
        let network_id = str_field(&marked.obj, "network_id").to_string();
        if let Some(network) = api.db.load(&NETWORK, &network_id).await? {
            let mut net = network.obj.clone();
            if let Some(Value::Array(list)) = net.get_mut("subnets") {
                list.retain(|s| s.as_str() != Some(&id));
            }
            plan.update(&NETWORK, &network, &mut net);
        }
        plan.delete(&SUBNET, marked);
        if api.db.commit(plan).await? {
            return Ok(());
        }
    }
}
