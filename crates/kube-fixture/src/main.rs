//! `wyvern-kube-apiserver`: the in-memory Kubernetes API server of `kube-fixture` as a process
//! of its own, for `wyvern lab`. Prints its URL (`http://ADDR`) on the first line of stdout and
//! serves until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube_fixture::{Config, KubeApi};

/// Serves an in-memory Kubernetes API (test support; no authentication, plain HTTP).
#[derive(Debug, Parser)]
#[command(name = "wyvern-kube-apiserver")]
struct Args {
    /// Address to listen on (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Range that Service cluster IPs come from (its first host address is the `kubernetes` service's).
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: ipnet::IpNet,
    /// How often watches that allow bookmarks get one.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    bookmark_interval: Duration,
    /// Run the built-in EndpointSlice controller (`--endpoint-controller=false` to leave
    /// EndpointSlices to the clients).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    endpoint_controller: bool,
    /// Also write a kubeconfig for the server to this file.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // On stderr, so that a log with nothing else still shows the process got this far.
    eprintln!(
        "wyvern-kube-apiserver: pid {}, starting",
        std::process::id()
    );
    let api = KubeApi::start_with(Config {
        listen: args.listen,
        service_cidr: args.service_cidr,
        bookmark_interval: args.bookmark_interval,
        endpoint_controller: args.endpoint_controller,
        ..Config::default()
    })?;
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, api.kubeconfig())?;
    }
    println!("{}", api.url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let signal = tokio::select! {
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }?;
        eprintln!("wyvern-kube-apiserver: {signal}, stopping");
        Ok::<_, std::io::Error>(())
    })?;
    drop(api);
    Ok(())
}
