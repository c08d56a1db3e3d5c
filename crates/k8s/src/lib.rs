//! The Kubernetes controller (`wyvern k8s`): keeps Wyvern's Neutron objects in line with a
//! Kubernetes cluster.
//!
//! It watches namespaces, nodes, pods, services, endpoint slices and network policies with
//! kube-runtime's watcher (list, then watch from the list's resourceVersion; a 410 re-lists; the
//! reflector's stores replace their contents atomically at the end of a list) and reconciles
//! level-triggered: each pass computes the wanted Neutron state from the stores and diffs it
//! against what the API has (listed at start, after any failed write and every `--resync`, and
//! otherwise kept up to date by the controller's own writes), then applies the differences.
//!
//! * Pods → ports on the pod network — the controller's own, one per namespace, or an existing
//!   network it shares with VMs and never owns (`--pod-network`) — (tags `k8s-pod-uid:<uid>`, `k8s-pod:<ns>:<name>`, device
//!   owner `compute:kubernetes`, bound to the node's chassis), described back to the pod in the
//!   annotation `wyvern.io/port`; in nested mode subports of the node VM's trunk.
//! * Services → load balancers (VIP = cluster IP), listeners, pools, members from the slices.
//! * NetworkPolicies → security groups (one per policy, membership groups per peer selector,
//!   allow-all groups for directions no policy selects a pod for).
//!
//! Every object it creates carries `k8s-cluster:<name>` and an owner tag; after the initial lists
//! the objects whose owner is gone are deleted, and nothing without the cluster tag ever is.
//! See `docs/architecture.md`, "Kubernetes (`crates/k8s`)".

mod controller;
pub mod neutron;
pub mod policy;
mod reconcile;
pub mod selector;
pub mod service;
pub mod tags;

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use controller::run;

/// Controller failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Neutron request failed (`status` is `None` when no answer came).
    #[error("{what}: {}{body}", status.map(|s| format!("{s} ")).unwrap_or_default())]
    Neutron {
        /// The request.
        what: String,
        /// The HTTP status.
        status: Option<u16>,
        /// The answer's body, or the transport error.
        body: String,
    },
    /// A Kubernetes request failed.
    #[error("kubernetes: {0}")]
    Kube(String),
    /// An object that cannot be mapped (it is skipped).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A bad configuration.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The HTTP status of a Neutron refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Neutron { status, .. } => *status,
            _ => None,
        }
    }
}

/// How the controller authenticates to the Neutron API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `X-Auth-Token` (a Keystone or static token for an admin of the project).
    Token(String),
    /// No-auth headers: `X-Project-Id: <project>`, `X-Roles: admin`.
    Project(String),
}

/// The controller's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Wyvern's API, `http://HOST:PORT`.
    pub api_url: String,
    /// Authentication.
    pub auth: Auth,
    /// The project whose quotas `unlimited_quotas` raises (with [`Auth::Project`], that one).
    pub project_id: Option<String>,
    /// The cluster's name, in every object's `k8s-cluster:<name>` tag.
    pub cluster_name: String,
    /// Pod addresses.
    pub pod_cidr: IpNet,
    /// Service cluster IPs (the API server's `--service-cluster-ip-range`).
    pub service_cidr: IpNet,
    /// A network and subnet per namespace, carved from `pod_cidr`.
    pub network_per_namespace: bool,
    /// The prefix length of a namespace's subnet.
    pub namespace_prefix_len: u8,
    /// An existing network (name or id) for the pods instead of the controller's own: the
    /// controller creates ports on it and plugs its router into its IPv4 subnet, but never
    /// tags, changes or deletes it (`pod_cidr` is then the subnet's).
    pub pod_network: Option<String>,
    /// The subnet (name or id) of `pod_network` to use, when it has several IPv4 subnets.
    pub pod_subnet: Option<String>,
    /// How often the Neutron state is listed again, whatever happened.
    pub resync: Duration,
    /// Raise the project's Neutron quotas (networks, subnets, ports, security groups and
    /// rules) to unlimited at start.
    pub unlimited_quotas: bool,
}

impl Config {
    /// A configuration with the defaults, for the API at `api_url` acting in `project`.
    pub fn new(api_url: &str, project: &str) -> Config {
        Config {
            api_url: api_url.to_string(),
            auth: Auth::Project(project.to_string()),
            project_id: Some(project.to_string()),
            cluster_name: "kubernetes".into(),
            pod_cidr: "10.244.0.0/16".parse().expect("a CIDR"),
            service_cidr: "10.96.0.0/16".parse().expect("a CIDR"),
            network_per_namespace: false,
            namespace_prefix_len: 24,
            pod_network: None,
            pod_subnet: None,
            resync: Duration::from_secs(300),
            unlimited_quotas: false,
        }
    }
}

/// `wyvern k8s` options.
#[derive(Debug, clap::Args)]
pub struct K8sArgs {
    /// Kubeconfig of the cluster (default: `$KUBECONFIG`, `~/.kube/config`, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Wyvern's API.
    #[arg(long, default_value = "http://127.0.0.1:9696")]
    pub api_url: String,
    /// A file holding a token for the API (`X-Auth-Token`); else the no-auth headers
    /// `X-Project-Id: <--project-id>`, `X-Roles: admin`.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The project the controller creates its objects in.
    #[arg(long, default_value = "kubernetes")]
    pub project_id: String,
    /// The cluster's name (tag `k8s-cluster:<name>` on everything the controller makes).
    #[arg(long, default_value = "kubernetes")]
    pub cluster_name: String,
    /// Pod addresses.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub pod_cidr: IpNet,
    /// Service cluster IPs (as the API server's `--service-cluster-ip-range`).
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cidr: IpNet,
    /// A network and subnet per namespace, carved from --pod-cidr.
    #[arg(long)]
    pub network_per_namespace: bool,
    /// Prefix length of a namespace's subnet (with --network-per-namespace).
    #[arg(long, default_value_t = 24)]
    pub namespace_prefix_length: u8,
    /// Put the pods on this existing network (name or id) and its IPv4 subnet instead of a
    /// network of the controller's own (--pod-cidr is then ignored): VMs on it share it with
    /// the pods. The controller plugs its router into the subnet (at the subnet's gateway
    /// address if no port holds it) but never tags, changes or deletes the network.
    #[arg(long, conflicts_with = "network_per_namespace")]
    pub pod_network: Option<String>,
    /// The subnet of --pod-network (name or id), when it has several IPv4 subnets.
    #[arg(long, requires = "pod_network")]
    pub pod_subnet: Option<String>,
    /// List the Neutron state again this often, whatever happened.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// Raise the project's network, subnet, port, security group and rule quotas to unlimited.
    #[arg(long)]
    pub unlimited_quotas: bool,
}

impl K8sArgs {
    /// The configuration these options say (reads the token file).
    pub fn config(&self) -> Result<Config, Error> {
        let auth = match &self.token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
                Auth::Token(token.trim().to_string())
            }
            None => Auth::Project(self.project_id.clone()),
        };
        let config = Config {
            api_url: self.api_url.clone(),
            auth,
            project_id: Some(self.project_id.clone()),
            cluster_name: self.cluster_name.clone(),
            pod_cidr: self.pod_cidr.trunc(),
            service_cidr: self.service_cidr.trunc(),
            network_per_namespace: self.network_per_namespace,
            namespace_prefix_len: self.namespace_prefix_length,
            pod_network: self.pod_network.clone(),
            pod_subnet: self.pod_subnet.clone(),
            resync: self.resync,
            unlimited_quotas: self.unlimited_quotas,
        };
        config.check()?;
        Ok(config)
    }
}

impl Config {
    /// Refuses what cannot work.
    pub fn check(&self) -> Result<(), Error> {
        tags::check(&format!("k8s-cluster:{}", self.cluster_name))
            .map_err(|e| Error::Config(format!("--cluster-name: {e}")))?;
        if self.network_per_namespace && self.pod_network.is_some() {
            return Err(Error::Config(
                "--pod-network and --network-per-namespace exclude each other".into(),
            ));
        }
        if self.pod_subnet.is_some() && self.pod_network.is_none() {
            return Err(Error::Config("--pod-subnet needs --pod-network".into()));
        }
        if self.network_per_namespace
            && (self.namespace_prefix_len < self.pod_cidr.prefix_len()
                || self.namespace_prefix_len > self.pod_cidr.max_prefix_len() - 2)
        {
            return Err(Error::Config(format!(
                "--namespace-prefix-length {} does not fit --pod-cidr {}",
                self.namespace_prefix_len, self.pod_cidr
            )));
        }
        // With --pod-network the subnet's CIDR is checked when it is found.
        if self.pod_network.is_none()
            && (self.pod_cidr.contains(&self.service_cidr)
                || self.service_cidr.contains(&self.pod_cidr))
        {
            return Err(Error::Config(
                "--pod-cidr and --service-cidr overlap".into(),
            ));
        }
        Ok(())
    }
}

/// Runs the controller as `wyvern k8s` does, until interrupted (SIGINT/SIGTERM).
pub fn run_cli(args: &K8sArgs) -> Result<(), Error> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("tokio runtime: {e}")))?;
    runtime.block_on(async {
        let kube_config = match &args.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| Error::Config(format!("kubeconfig: {e}")))?,
        };
        let client = kube::Client::try_from(kube_config).map_err(|e| Error::Kube(e.to_string()))?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::Config(format!("signals: {e}")))?;
        tokio::select! {
            r = run(config, client) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::K8sArgs;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: K8sArgs,
    }

    #[test]
    fn pod_network_excludes_network_per_namespace() {
        let e = Cli::try_parse_from(["k8s", "--pod-network", "pods", "--network-per-namespace"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--pod-network") && e.contains("--network-per-namespace"),
            "{e}"
        );
        assert!(Cli::try_parse_from(["k8s", "--pod-subnet", "s"]).is_err());
        let c = Cli::try_parse_from(["k8s", "--pod-network", "pods", "--pod-subnet", "s"])
            .unwrap()
            .args
            .config()
            .unwrap();
        assert_eq!(c.pod_network.as_deref(), Some("pods"));
        assert_eq!(c.pod_subnet.as_deref(), Some("s"));
        // The library refuses the pair too.
        let mut c = c;
        c.network_per_namespace = true;
        assert!(c.check().is_err());
    }
}
