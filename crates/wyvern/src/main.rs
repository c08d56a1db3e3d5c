//! The `wyvern` command: one binary with a subcommand per role (`server`, and later `agent`, `lab`,
//! `trace`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wyvern",
    version,
    about = "Wyvern, a distributed SDN controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Neutron-compatible northbound API.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9696")]
        listen: String,
        /// Northbound store: `embedded:PATH` (default) or `etcd://HOST:PORT[,HOST:PORT...]`.
        #[arg(long, default_value = "embedded:wyvern.redb")]
        store: String,
        /// Server configuration file (JSON): `{"auth": {"tokens": {"TOKEN": {"project_id": "...",
        /// "roles": ["admin"]}}}}`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Server {
            listen,
            store,
            config,
        } => run_server(&listen, &store, config.as_deref()),
    }
}

fn run_server(listen: &str, store: &str, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config: api::ApiConfig = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => api::ApiConfig::default(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = store::open(store).with_context(|| format!("opening store {store}"))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        tracing::info!(
            "serving the Neutron API on http://{}",
            listener.local_addr()?
        );
        api::serve(listener, store, config).await?;
        Ok(())
    })
}
