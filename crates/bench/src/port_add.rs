//! Open vSwitch's own share of "one port added → its flows installed", with no Wyvern part
//! in the way: one chassis (userspace datapath) whose `br-int` already holds `existing` VIFs;
//! for each sample a VIF is inserted into OVSDB the way a plugger does it, and a controller
//! installs one flow for the new port as soon as it learns the port's OpenFlow number —
//! either from the OpenFlow `PORT_STATUS` message or from the `ofport` column in OVSDB. It
//! times both signals and the barrier that confirms the flow.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chassis::{VifEvent, VifWatcher};
use openflow::conn::{Connection, Event};
use openflow::flow::FlowMod;
use openflow::message::Message;
use ovsdb::{Atom, Client, ClientOptions, Endpoint, Operation, ReplicaOptions, Row};
use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts};

use crate::slice::{BR_INT, stats_json};

/// How long one sample may take before the bench gives up.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between samples, so that vswitchd is idle when each starts.
const SAMPLE_GAP: Duration = Duration::from_millis(300);

/// Which signal the controller reacts to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    PortStatus,
    OvsdbOfport,
}

/// The bench's parameters.
pub struct Params {
    pub existing: usize,
    pub samples: usize,
}

pub async fn run(p: Params) -> anyhow::Result<Value> {
    let chassis = Chassis::start("port-add", &ChassisOpts::default())?;
    chassis.add_bridge(BR_INT)?;
    let endpoint: Endpoint = chassis.db_endpoint().parse()?;
    let db = Client::connect(&endpoint, ClientOptions::default()).await?;
    eprintln!("[port-add] plugging {} existing VIFs", p.existing);
    for chunk in (0..p.existing).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<Operation> = chunk
            .iter()
            .flat_map(|i| plug_ops(&format!("old{i}"), &[("iface-id", &format!("old-{i}"))]))
            .collect();
        db.transact("Open_vSwitch", &ops).await?;
    }
    let mgmt = format!("unix:{}", chassis.mgmt_socket(BR_INT).display());
    let (of, mut events) = Connection::start(&mgmt)?;
    let mut vifs = VifWatcher::spawn(endpoint, ReplicaOptions::default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < p.existing {
        if Instant::now() > deadline {
            bail!(
                "only {seen} of {} existing VIFs got an OpenFlow port",
                p.existing
            );
        }
        if let Ok(Some(VifEvent::Added(_))) =
            tokio::time::timeout(Duration::from_secs(1), vifs.next()).await
        {
            seen += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut out = serde_json::Map::new();
    for (signal, name, prefix) in [
        (Signal::PortStatus, "react_to_port_status", "ps"),
        (Signal::OvsdbOfport, "react_to_ovsdb_ofport", "db"),
    ] {
        eprintln!("[port-add] {} samples, {name}", p.samples);
        let (mut ps, mut dbp, mut flow, mut idle) = (vec![], vec![], vec![], vec![]);
        for s in 0..p.samples {
            tokio::time::sleep(SAMPLE_GAP).await;
            let t = Instant::now();
            of.barrier().await?;
            idle.push(t.elapsed());
            let tag = format!("{prefix}{s}");
            let r = sample(&db, &of, &mut events, &mut vifs, &tag, signal).await?;
            ps.push(r.port_status);
            dbp.push(r.ovsdb_ofport);
            flow.push(r.flow_confirmed);
        }
        out.insert(
            name.into(),
            json!({
                "port_status_ms": stats_json(ps),
                "ovsdb_ofport_ms": stats_json(dbp),
                "flow_confirmed_ms": stats_json(flow),
                "barrier_idle_ms": stats_json(idle),
            }),
        );
    }
    drop(chassis);
    Ok(json!({
        "bench": "ovs-port-add",
        "existing_vifs": p.existing,
        "samples": p.samples,
        "note": "ms from the OVSDB insert of the VIF (Interface + Port + Bridge.ports, one transaction)",
        "results": out,
    }))
}

struct SampleTimes {
    port_status: Duration,
    ovsdb_ofport: Duration,
    flow_confirmed: Duration,
}

/// One VIF plugged; the flow goes in on `signal`.
async fn sample(
    db: &Client,
    of: &Connection,
    events: &mut openflow::conn::Events,
    vifs: &mut VifWatcher,
    tag: &str,
    signal: Signal,
) -> anyhow::Result<SampleTimes> {
    let ifname = tag;
    let t0 = Instant::now();
    let iface_id = format!("port-{tag}");
    db.transact(
        "Open_vSwitch",
        &plug_ops(ifname, &[("iface-id", &iface_id)]),
    )
    .await?;
    let (mut port_status, mut ovsdb_ofport, mut flow) = (None, None, None);
    let install = |ofport: u32| {
        let of = of.clone();
        let flow = openflow::text::parse_flow(&format!(
            "table=30,priority=100,in_port={ofport},actions=drop"
        ));
        tokio::spawn(async move {
            of.send(&Message::FlowMod(FlowMod::add(flow?))).await?;
            of.barrier().await?;
            anyhow::Ok(t0.elapsed())
        })
    };
    let mut pending = None;
    while port_status.is_none() || ovsdb_ofport.is_none() || flow.is_none() {
        if t0.elapsed() > SAMPLE_TIMEOUT {
            bail!("{ifname}: no port after {SAMPLE_TIMEOUT:?}");
        }
        tokio::select! {
            e = events.recv() => match e.ok_or_else(|| anyhow!("OpenFlow connection gone"))? {
                Event::Message(_, Message::PortStatus(st)) if st.reason == openflow::message::port_reason::ADD && st.port.name == ifname => {
                    port_status = Some(t0.elapsed());
                    if signal == Signal::PortStatus {
                        pending = Some(install(st.port.port_no));
                    }
                }
                _ => {}
            },
            v = vifs.next() => match v.context("VIF monitor gone")? {
                VifEvent::Added(v) if v.name == ifname => {
                    ovsdb_ofport = Some(t0.elapsed());
                    if signal == Signal::OvsdbOfport {
                        pending = Some(install(v.ofport));
                    }
                }
                _ => {}
            },
            r = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                pending = None;
                flow = Some(r??);
            }
        }
    }
    Ok(SampleTimes {
        port_status: port_status.unwrap_or_default(),
        ovsdb_ofport: ovsdb_ofport.unwrap_or_default(),
        flow_confirmed: flow.unwrap_or_default(),
    })
}

/// The OVSDB operations that plug a VIF named `ifname` with these `external_ids` into
/// `br-int`, as an OVS internal port (one transaction; the last operation adds it to the
/// bridge).
pub fn plug_ops(ifname: &str, external_ids: &[(&str, &str)]) -> Vec<Operation> {
    let ids = external_ids.iter().copied();
    // Named uuids are identifiers: letters, digits and underscores.
    let id: String = ifname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let (iface, port) = (format!("i_{id}"), format!("p_{id}"));
    vec![
        Operation::Insert {
            table: "Interface".into(),
            row: Row::new()
                .with("name", ovsdb::Value::atom(ifname))
                .with("type", ovsdb::Value::atom("internal"))
                .with("external_ids", ovsdb::Value::map(ids)),
            uuid_name: Some(iface.clone()),
        },
        Operation::Insert {
            table: "Port".into(),
            row: Row::new()
                .with("name", ovsdb::Value::atom(ifname))
                .with("interfaces", ovsdb::Value::atom(Atom::NamedUuid(iface))),
            uuid_name: Some(port.clone()),
        },
        Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![ovsdb::Condition::eq("name", ovsdb::Value::atom(BR_INT))],
            mutations: vec![ovsdb::Mutation::insert(
                "ports",
                ovsdb::Value::atom(Atom::NamedUuid(port)),
            )],
        },
    ]
}
