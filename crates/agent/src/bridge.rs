//! The chassis' Open vSwitch plumbing at start-up: `br-int`, the tunnel port and the patches to
//! the provider bridges of the physical networks, through OVSDB.

use std::time::Duration;

use chassis::ChassisConfig;
use ovsdb::{Client, ClientOptions, Endpoint, Operation};

use crate::{AgentConfig, AgentError};

async fn ofport_of(client: &Client, name: &str) -> Result<Option<u32>, AgentError> {
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

/// The OpenFlow ports of the plumbing.
pub struct Plumbed {
    pub tunnel: u32,
    /// The patch port to each physical network's bridge, by physical network.
    pub patches: Vec<(String, u32)>,
}

/// Waits (up to 10 s) for the interface `name` to get its OpenFlow port.
async fn await_ofport(client: &Client, name: &str) -> Result<u32, AgentError> {
    for _ in 0..200 {
        if let Some(p) = ofport_of(client, name).await? {
            return Ok(p);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(AgentError::Ovsdb(format!("{name} got no OpenFlow port")))
}

/// Sets up the bridges, the tunnel port and the patches; returns their OpenFlow ports.
pub async fn plumb(cfg: &AgentConfig) -> Result<Plumbed, AgentError> {
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
        bridge_mappings: cfg.bridge_mappings.clone(),
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
    let tunnel = await_ofport(&client, cfg.encap.port_name()).await?;
    let mut patches = Vec::new();
    for m in &cfg.bridge_mappings {
        patches.push((
            m.physnet.clone(),
            await_ofport(&client, &m.int_patch()).await?,
        ));
    }
    Ok(Plumbed { tunnel, patches })
}
