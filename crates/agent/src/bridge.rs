//! The chassis' Open vSwitch plumbing at start-up: `br-int` and the tunnel port, through OVSDB.

use std::time::Duration;

use chassis::ChassisConfig;
use ovsdb::{Client, ClientOptions, Endpoint, Operation};

use crate::{AgentConfig, AgentError};

async fn tunnel_ofport(client: &Client, name: &str) -> Result<Option<u32>, AgentError> {
    let select = Operation::Select {
        table: "Interface".into(),
        conditions: vec![ovsdb::Condition::eq("name", ovsdb::Value::atom(name))],
        columns: Some(vec!["ofport".into()]),
    };
    let res = client
        .transact("Open_vSwitch", &[select])
        .await
        .map_err(|e| AgentError::Ovsdb(e.to_string()))?;
    Ok(res
        .first()
        .and_then(|r| r.rows.as_ref())
        .and_then(|rows| rows.first())
        .and_then(|row| row.get("ofport"))
        .and_then(|v| v.as_atom())
        .and_then(|a| a.as_integer())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| (1..0xff00).contains(p)))
}

/// Sets up the bridge and tunnel port; returns the tunnel's OpenFlow port.
pub async fn plumb(cfg: &AgentConfig) -> Result<u32, AgentError> {
    let endpoint: Endpoint = cfg
        .ovsdb
        .parse()
        .map_err(|e: ovsdb::Error| AgentError::Config(e.to_string()))?;
    let client = Client::connect(&endpoint, ClientOptions::default())
        .await
        .map_err(|e| AgentError::Ovsdb(e.to_string()))?;
    let chassis_cfg = ChassisConfig {
        integration_bridge: cfg.bridge.clone(),
        datapath_type: cfg.datapath_type.clone(),
        encaps: vec![cfg.encap],
        local_ip: Some(cfg.tunnel_ip),
        ..ChassisConfig::default()
    };
    let report = chassis::ensure(&client, &chassis_cfg)
        .await
        .map_err(|e| AgentError::Ovsdb(e.to_string()))?;
    if let Some(seq) = report.cfg_seq {
        chassis::wait_applied(&client, seq, Duration::from_secs(10))
            .await
            .map_err(|e| AgentError::Ovsdb(e.to_string()))?;
    }
    for _ in 0..200 {
        if let Some(p) = tunnel_ofport(&client, cfg.encap.port_name()).await? {
            return Ok(p);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(AgentError::Ovsdb(
        "the tunnel port got no OpenFlow port".into(),
    ))
}
