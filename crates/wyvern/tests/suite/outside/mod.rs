//! What the end-to-end tests of the outside world share (provider networks, floating IPs, SNAT):
//! captures of echo requests on external hosts and segments, the chassis' SNAT addresses, ports
//! becoming ACTIVE.

use std::thread;
use std::time::{Duration, Instant};

use lab::Lab;
use serde_json::Value;

use crate::support::{Outcome, api, reply_ttl};

/// The ICMP (or ICMPv6) echo requests for `to` that cross `iface` in `host` (tagged or not)
/// while `from` pings it, once an answer came: (source address, frame) each.
pub fn echo_requests(
    lab: &Lab,
    host: &str,
    iface: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, String)>, String> {
    let filter = [
        "icmp", "or", "icmp6", "or", "(", "vlan", "and", "(", "icmp", "or", "icmp6", ")", ")",
    ];
    let cap = lab::Capture::start(lab.name(), host, iface, &filter).map_err(|e| e.to_string())?;
    let answered = reply_ttl(lab, from, to);
    let frames = cap.stop();
    answered?;
    let requests = [
        format!(" > {to}: ICMP echo request"),
        format!(" > {to}: ICMP6, echo request"),
    ];
    let seen: Vec<(String, String)> = frames
        .iter()
        .filter_map(|f| {
            let request = requests.iter().find(|r| f.contains(r.as_str()))?;
            let source = f.split(request.as_str()).next()?.rsplit(' ').next()?;
            Some((source.to_owned(), f.clone()))
        })
        .collect();
    if seen.is_empty() {
        Err(format!(
            "no echo request for {to} on {iface} in {host}; it saw {frames:?}"
        ))
    } else {
        Ok(seen)
    }
}

/// `from` reaches `to` (an external host's address, on interface `eth0` of `host`), which
/// sees its echo requests come from one of `sources` only.
pub fn reaches_from(lab: &Lab, from: &str, host: &str, to: &str, sources: &[String]) -> Outcome {
    let seen = echo_requests(lab, host, "eth0", from, to)?;
    if seen.iter().all(|(source, _)| sources.contains(source)) {
        Ok(())
    } else {
        Err(format!("want them from {sources:?}; saw {seen:?}"))
    }
}

/// `chassis`' own SNAT address on the lab's external network `network` (distributed SNAT: a
/// `network:floatingip_agent_gateway` port bound to it), if it has one.
pub fn chassis_snat_address(lab: &Lab, network: &str, chassis: &str) -> Option<String> {
    let id = &lab.state().networks.get(network)?.id;
    let query = format!("ports?network_id={id}&device_owner=network:floatingip_agent_gateway");
    let (_, body) = api(lab, reqwest::Method::GET, &query, &Value::Null);
    let ports: Value = serde_json::from_str(&body).unwrap_or_default();
    ports["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["binding:host_id"] == chassis)
        .flat_map(|p| p["fixed_ips"].as_array().cloned().unwrap_or_default())
        .find_map(|f| f["ip_address"].as_str().map(str::to_owned))
}

/// Every VM's port is ACTIVE (its agent bound it), within 20 s.
pub fn ports_active(lab: &Lab, vms: &[&str]) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let down: Vec<String> = vms
            .iter()
            .filter_map(|vm| {
                let port = lab.port_id(vm)?;
                let (_, body) = api(
                    lab,
                    reqwest::Method::GET,
                    &format!("ports/{port}"),
                    &Value::Null,
                );
                let p: Value = serde_json::from_str(&body).unwrap_or_default();
                let status = p["port"]["status"].as_str().unwrap_or("?").to_owned();
                (status != "ACTIVE").then(|| format!("{vm}: {status}"))
            })
            .collect();
        if down.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not ACTIVE after 20 s: {down:?}"));
        }
        thread::sleep(Duration::from_millis(250));
    }
}
