//! The chassis' own state on the server: its registration with a liveness lease kept alive by
//! heartbeats, and the binding reports of its VIFs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nb_sync::Backoff;

use crate::AgentConfig;
use crate::server::Server;

/// How often the agent renews its chassis lease.
const HEARTBEAT: Duration = Duration::from_secs(3);

/// Keeps the chassis registered and its lease alive, forever. The heartbeats also carry the data
/// plane of the other chassis as this chassis' BFD sees it (`data_plane`), whenever it changed
/// since the server last took it (at once on a change; after a new registration with the next
/// heartbeat).
pub async fn keep_registered(
    server: Server,
    cfg: AgentConfig,
    mut data_plane: tokio::sync::watch::Receiver<BTreeMap<String, bool>>,
) {
    let encap = cfg.encap.ovs_type();
    let physnets: Vec<&str> = cfg
        .bridge_mappings
        .iter()
        .map(|m| m.physnet.as_str())
        .collect();
    let mut lease = None;
    let mut backoff = Backoff::default();
    // What the server holds of the data plane (`None`: nothing yet, or a new lease).
    let mut reported: Option<BTreeMap<String, bool>> = None;
    let mut watching = true;
    loop {
        let mut failed = false;
        let peers = data_plane.borrow_and_update().clone();
        let report = (reported.as_ref() != Some(&peers)).then_some(&peers);
        lease = match lease {
            None => match server
                .register(&cfg.chassis, cfg.tunnel_ip, encap, &physnets, cfg.gateway)
                .await
            {
                Ok(l) => {
                    reported = None;
                    Some(l)
                }
                Err(e) => {
                    tracing::warn!("registration failed: {e}");
                    None
                }
            },
            Some(l) => match server.heartbeat_with(&cfg.chassis, l, report).await {
                Ok(true) => {
                    if report.is_some() {
                        reported = Some(peers.clone());
                    }
                    Some(l)
                }
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!("heartbeat failed: {e}");
                    failed = true;
                    Some(l)
                }
            },
        };
        let pause = if lease.is_some() && !failed {
            backoff.reset();
            HEARTBEAT
        } else {
            // Another server (the failed one was left) is tried soon, but not by every agent at once.
            backoff.delay()
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            changed = data_plane.changed(), if watching && lease.is_some() && !failed => {
                watching = changed.is_ok();
                // A burst of changes (a chassis' sessions going down together) is one report.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Most VIFs one binding report carries.
const BATCH: usize = 500;

/// Reports VIF bindings to the server in the background, many ports per request: one request at a
/// time carries every port whose state changed since the last (up to [`BATCH`]), so a burst of
/// VIFs (thousands plugged at once) costs a few requests and store transactions, not one each.
/// For each port the last state wins (a port that comes and goes quickly ends up DOWN, never
/// ACTIVE); a failed report is sent again, after a backoff, until the server takes it.
#[derive(Clone)]
pub struct Bindings {
    server: Server,
    chassis: String,
    state: Arc<std::sync::Mutex<BindingState>>,
}

#[derive(Default)]
struct BindingState {
    /// The state each port should be reported in, for the ports not reported so yet.
    wanted: BTreeMap<String, bool>,
    /// Whether the reporting task runs.
    delivering: bool,
}

impl Bindings {
    pub fn new(server: Server, chassis: String) -> Self {
        Self {
            server,
            chassis,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BindingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn report(&self, port: String, up: bool) {
        let start = {
            let mut st = self.lock();
            st.wanted.insert(port, up);
            !std::mem::replace(&mut st.delivering, true)
        };
        if start {
            tokio::spawn(self.clone().deliver());
        }
    }

    /// Reports what is wanted until nothing is left.
    async fn deliver(self) {
        let mut backoff = Backoff::default();
        loop {
            let batch: Vec<(String, bool)> = {
                let mut st = self.lock();
                if st.wanted.is_empty() {
                    st.delivering = false;
                    return;
                }
                st.wanted
                    .iter()
                    .take(BATCH)
                    .map(|(p, up)| (p.clone(), *up))
                    .collect()
            };
            match self.server.bind_many(&self.chassis, &batch).await {
                Ok(()) => {
                    backoff.reset();
                    let mut st = self.lock();
                    for (port, up) in &batch {
                        // Reported as wanted, unless it changed meanwhile (then again).
                        if st.wanted.get(port) == Some(up) {
                            st.wanted.remove(port);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("binding report of {} ports failed ({e})", batch.len());
                    tokio::time::sleep(backoff.delay()).await;
                }
            }
        }
    }
}
