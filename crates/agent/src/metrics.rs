//! The agent's Prometheus metrics, served as text on `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counters and gauges the agent updates as it works.
#[derive(Debug, Default)]
pub struct Metrics {
    pub flows_desired: AtomicU64,
    pub flows_installed: AtomicU64,
    pub flow_mods_sent: AtomicU64,
    pub nb_revision: AtomicU64,
    pub in_sync: AtomicU64,
    pub local_vifs: AtomicU64,
    pub resyncs: AtomicU64,
    pub sync_snapshots: AtomicU64,
    pub sync_resumes: AtomicU64,
    pub server_failovers: AtomicU64,
}

impl Metrics {
    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, chassis: &str) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 10] = [
            (
                "wyvern_agent_flows_desired",
                "gauge",
                "Flows the pipeline wants on br-int.",
                &self.flows_desired,
            ),
            (
                "wyvern_agent_flows_installed",
                "gauge",
                "Flows the agent knows br-int holds.",
                &self.flows_installed,
            ),
            (
                "wyvern_agent_flow_mods_sent_total",
                "counter",
                "Flow-mods sent to br-int.",
                &self.flow_mods_sent,
            ),
            (
                "wyvern_agent_nb_revision",
                "gauge",
                "Last northbound revision applied.",
                &self.nb_revision,
            ),
            (
                "wyvern_agent_in_sync",
                "gauge",
                "1 when br-int holds the desired flows.",
                &self.in_sync,
            ),
            (
                "wyvern_agent_local_vifs",
                "gauge",
                "Local VIFs with an iface-id.",
                &self.local_vifs,
            ),
            (
                "wyvern_agent_resyncs_total",
                "counter",
                "Full comparisons with br-int (after each connection, refused bundle or failed comparison).",
                &self.resyncs,
            ),
            (
                "wyvern_agent_sync_snapshots_total",
                "counter",
                "Northbound snapshots taken.",
                &self.sync_snapshots,
            ),
            (
                "wyvern_agent_sync_resumes_total",
                "counter",
                "Northbound watches resumed.",
                &self.sync_resumes,
            ),
            (
                "wyvern_agent_server_failovers_total",
                "counter",
                "Moves from a failing server to another.",
                &self.server_failovers,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{chassis=\"{chassis}\"}} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` forever (any other path: 404).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, chassis: String) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, chassis) = (metrics.clone(), chassis.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics") {
                ("200 OK", metrics.render(&chassis))
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
