//! The trace's I/O: the topology from the server's sync snapshot, the chassis' VIFs and tunnel
//! port from its OVSDB, and the flows `br-int` really holds over OpenFlow.

use std::time::Duration;

use openflow::conn::Connection;
use openflow::message::FlowStatsRequest;
use ovsdb::{Atom, Client, ClientOptions, Endpoint, Operation};

use crate::inventory::Inventory;
use crate::local::Local;
use crate::{Error, FlowSet};

/// How long any one of the trace's requests may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The whole topology (every network, subnet, port and chassis) from `server`'s sync API.
pub async fn snapshot(server: &str) -> Result<Inventory, Error> {
    let url = format!(
        "{}/wyvern/v1/sync/snapshot?all=1",
        server.trim_end_matches('/')
    );
    let fail = |why: String| Error::Server(format!("{url}: {why}"));
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(format!("no answer ({e})")))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| fail(format!("answered {status} with no JSON ({e})")))?;
    if !status.is_success() {
        return Err(fail(format!("answered {status}: {body}")));
    }
    Inventory::from_snapshot(&body)
}

/// The VIFs (`external_ids:iface-id` with a valid OpenFlow port), the tunnel port named
/// `tunnel_port` (with its `options:local_ip`) and the patches to the physical networks (as the
/// agent's recorded bridge mappings name them) of the Open vSwitch at `endpoint`.
pub async fn local(endpoint: &str, chassis: &str, tunnel_port: &str) -> Result<Local, Error> {
    let fail = |why: String| Error::Ovsdb {
        endpoint: endpoint.to_string(),
        why,
    };
    let ep: Endpoint = endpoint
        .parse()
        .map_err(|e: ovsdb::Error| fail(e.to_string()))?;
    let opts = ClientOptions {
        request_timeout: TIMEOUT,
        ..ClientOptions::default()
    };
    let client = tokio::time::timeout(TIMEOUT, Client::connect(&ep, opts))
        .await
        .map_err(|_| fail("no answer".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let select = Operation::Select {
        table: "Interface".into(),
        conditions: vec![],
        columns: Some(vec![
            "name".into(),
            "ofport".into(),
            "external_ids".into(),
            "options".into(),
        ]),
    };
    let mappings = Operation::Select {
        table: "Open_vSwitch".into(),
        conditions: vec![],
        columns: Some(vec!["external_ids".into()]),
    };
    let res = client
        .transact("Open_vSwitch", &[select, mappings])
        .await
        .map_err(|e| fail(e.to_string()))?;
    let rows = res.first().and_then(|r| r.rows.clone()).unwrap_or_default();
    // The agent records its bridge mappings: the patch `int-<bridge>` reaches that physnet.
    let mappings: Vec<chassis::BridgeMapping> = res
        .get(1)
        .and_then(|r| r.rows.as_ref())
        .and_then(|rows| rows.first())
        .and_then(|row| row.get("external_ids"))
        .and_then(|v| v.map_get(&Atom::from(chassis::BRIDGE_MAPPINGS_KEY)))
        .and_then(|a| a.as_str())
        .and_then(|m| chassis::BridgeMapping::parse_list(m).ok())
        .unwrap_or_default();
    let mut out = Local {
        chassis: chassis.to_string(),
        origin: format!("from OVSDB at {endpoint}"),
        ..Local::default()
    };
    for row in &rows {
        let Some(ofport) = row
            .get("ofport")
            .and_then(|v| v.as_atom())
            .and_then(|a| a.as_integer())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| (1..0xff00).contains(p))
        else {
            continue;
        };
        let name = row
            .get("name")
            .and_then(|v| v.as_atom())
            .and_then(|a| a.as_str())
            .unwrap_or_default();
        let iface_id = row
            .get("external_ids")
            .and_then(|v| v.map_get(&Atom::from("iface-id")))
            .and_then(|a| a.as_str());
        let subport = row
            .get("external_ids")
            .and_then(|v| v.map_get(&Atom::from(pipeline::trunks::SUBPORT_KEY)))
            .and_then(|a| a.as_str());
        if let Some(id) = iface_id {
            out.vifs.insert(id.to_string(), ofport);
        } else if let Some(id) = subport {
            out.inner.insert(id.to_string(), ofport);
        } else if let Some(m) = mappings.iter().find(|m| m.int_patch() == name) {
            out.patches.insert(m.physnet.clone(), ofport);
        } else if name == tunnel_port {
            out.tunnel = Some(ofport);
            out.tunnel_ip = row
                .get("options")
                .and_then(|v| v.map_get(&Atom::from("local_ip")))
                .and_then(|a| a.as_str())
                .and_then(|ip| ip.parse().ok());
        }
    }
    Ok(out)
}

/// The OpenFlow target of `bridge`'s management socket in `rundir`.
pub fn mgmt_target(rundir: &std::path::Path, bridge: &str) -> String {
    format!("unix:{}/{bridge}.mgmt", rundir.display())
}

/// Every flow and group `target` (a bridge's OpenFlow socket) holds.
pub async fn switch_flows(target: &str) -> Result<FlowSet, Error> {
    let fail = |why: String| Error::Switch {
        target: target.to_string(),
        why,
    };
    let (conn, _events, _features) = Connection::connect(target, TIMEOUT)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let stats = conn
        .dump_flows(FlowStatsRequest::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let groups = conn.dump_groups().await.map_err(|e| fail(e.to_string()))?;
    let flows: Vec<openflow::Flow> = stats.into_iter().map(|s| s.flow).collect();
    Ok(FlowSet {
        origin: format!(
            "{} flows and {} groups read from the switch at {target} (what is installed)",
            flows.len(),
            groups.len()
        ),
        flows,
        groups,
        remarks: vec![],
    })
}
