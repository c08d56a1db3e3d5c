//! `wyvern-cni`: a CNI plugin (spec 1.0.0, also 0.3.0–0.4.0) that attaches a container or pod
//! to the Neutron port Wyvern's API holds for it, so that the Wyvern agent of the chassis
//! programs its traffic like a VM's.
//!
//! # Configuration
//!
//! The network configuration (stdin) has the spec's keys (`cniVersion`, `name`, `type`,
//! `runtimeConfig`, `prevResult`, `args` — the last two read, the others passed by) and
//! these of its own:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `api_url` | Wyvern's Neutron API, `http://HOST:PORT` | required |
//! | `token_file` | a file holding an `X-Auth-Token` (Keystone, or a static token the server maps) | none |
//! | `project_id`, `roles` | without a token: `X-Project-Id` / `X-Roles` (roles a string or a list) | none: the no-auth server treats the plugin as admin |
//! | `bridge` | the integration bridge | `br-int` |
//! | `ovsdb` | the chassis' OVSDB | `unix:/var/run/openvswitch/db.sock` |
//! | `mode` | `host` (on a chassis) or `nested` (in a VM whose port is a trunk) | `host` |
//! | `vlan` | nested: how the pod's frames get their VLAN tag, `kernel` (a VLAN interface on `trunk_interface`) or `ovs` (an access port on the VM's own Open vSwitch); refused in host mode | `kernel` |
//! | `trunk_interface` | nested, `vlan` `kernel`: the VM's interface carrying the trunk | required then |
//! | `vm_bridge` | nested, `vlan` `ovs`: the VM's bridge whose trunk port carries the VLANs | `br-trunk` |
//! | `vm_ovsdb` | nested, `vlan` `ovs`: the VM's OVSDB, e.g. `unix:<rundir>/db.sock` | `unix:/var/run/openvswitch/db.sock` |
//! | `port_wait` | seconds `ADD` waits for the pod's port | 10 |
//! | `install_wait` | host mode: seconds `ADD` waits, after plugging, for the agent to mark the interface `wyvern-installed=true`; 0: no wait (no Wyvern agent on the host) | 10 |
//! | `pod_namespace` | the namespace assumed when `CNI_ARGS` has no `K8S_POD_NAMESPACE` | none |
//!
//! An `ipam` section is refused (code 2): Neutron assigns the addresses.
//!
//! # Finding the port
//!
//! By Neutron tag: with `K8S_POD_UID` in `CNI_ARGS`, the port tagged `k8s-pod-uid:<uid>`;
//! otherwise the one tagged `k8s-pod:<namespace>:<name>` (`K8S_POD_NAMESPACE`,
//! `K8S_POD_NAME`). Wyvern's Kubernetes controller creates ports with exactly these tags.
//! `ADD` polls until the port exists, up to `port_wait`, then answers code 11 ("try again
//! later"); more than one port with the tag is an error. Podman's CNI backend passes only
//! `K8S_POD_NAME` (the container's name) besides `IgnoreUnknown`, hence `pod_namespace`.
//!
//! # Host mode
//!
//! A veth pair: the host end `tap<first 11 characters of the port id>` (Neutron's name for a
//! VIF), the other end created directly in `CNI_NETNS` as `CNI_IFNAME` with the port's MAC, the
//! network's MTU (both ends), the port's fixed IPs with their subnets' prefix lengths (IPv6
//! ones with `nodad`), a default route per family via the subnet's gateway plus the subnets'
//! `host_routes`, TX checksum offload off (TCP through the userspace datapath needs it), up.
//! The host end joins the bridge with `external_ids` `iface-id`, `attached-mac`,
//! `iface-status=active`, and [`ovs::OWNER_KEY`] naming the attachment. The result lists both
//! interfaces, the addresses (on the container's), routes, and the subnets'
//! `dns_nameservers`. All of it takes two processes (two `ip -batch -`; the rest from a thread
//! in the pod's namespace, see [`link`]).
//!
//! Then `ADD` waits, up to `install_wait`, until the chassis' Wyvern agent marks the interface
//! `external_ids:wyvern-installed=true` — the port's flows are in the switch, as
//! `ovn-installed` says for OVN — with one OVSDB `wait` operation ([`ovs::Ovs::await_installed`]).
//! A pod reported ready before that could send its first ARP into a switch without its flows
//! and wait for the kernel's retry a second later. Not marked in time: `ADD` removes what it
//! made and answers code 11 (try again later; the kubelet retries `ADD`). `install_wait: 0`
//! skips the wait, for hosts without a Wyvern agent. Nested mode never waits: no agent runs in
//! the VM, and the subport's flows are on the parent's chassis since it joined the trunk.
//!
//! # Nested mode
//!
//! The port is a trunk subport; its VLAN id is its `segmentation_id` in its trunk's
//! `sub_ports`: the trunk `device_id` names (`GET /v2.0/trunks/<id>`) if it holds the port,
//! else the one among `GET /v2.0/trunks` that does (Neutron and Wyvern leave a subport's
//! `device_id` empty; its `device_owner` is `trunk:subport`). The plugin runs in the VM; how
//! the pod's frames get that tag is `vlan`:
//!
//! * `kernel`: a VLAN interface on `trunk_interface` (in the plugin's namespace: the VM's),
//!   moved into `CNI_NETNS` and configured there as above. No Open vSwitch is involved.
//! * `ovs`: for VMs whose tagging is done by an Open vSwitch of their own (a bridge
//!   `vm_bridge` whose trunk port is the VM's NIC; also where the kernel has no 802.1Q
//!   support). Host mode's veth pair, the pod's end configured exactly as there; the VM's end
//!   (`tap…`, named as in host mode) joins `vm_bridge` through `vm_ovsdb` in one transaction as
//!   an access port, `tag=<VLAN id>`, with [`ovs::OWNER_KEY`] but no `iface-id` (this is no
//!   Wyvern chassis' `br-int`). `DEL`, `CHECK` (which compares the `tag` with the subport's
//!   VLAN id instead of the `iface-id`) and a failed `ADD`'s removal are host mode's.
//!
//! # DEL, CHECK, errors
//!
//! `DEL` is idempotent (a missing namespace, port, link or OVS port is success) and needs
//! neither the API nor `prevResult` (the OVS port is found by its owner key, in the OVSDB of the
//! mode). `CHECK` compares with `prevResult`. A failed `ADD`
//! removes what it made. Every failure is an error document on stdout
//! ([`spec::ErrorDoc`]) with a non-zero exit; codes in [`error`].
//!
//! The entry point is [`run`]; the binary only gathers the environment and stdin and prints.

pub mod config;
pub mod error;
pub mod link;
pub mod neutron;
pub mod ovs;
pub mod plugin;
pub mod spec;

use config::{Command, Config, Env};
pub use error::{Error, Result};
use spec::{ErrorDoc, PREFERRED_VERSION, VersionInfo};

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The document for stdout (empty after a successful `DEL` or `CHECK`).
    pub stdout: String,
    /// True for a zero exit status.
    pub success: bool,
}

/// Runs one invocation: `var` reads the environment, `stdin` is what was read from standard
/// input (or why it could not be).
pub fn run(var: &dyn Fn(&str) -> Option<String>, stdin: std::io::Result<Vec<u8>>) -> Outcome {
    // Errors before the configuration's version is known are answered in ours.
    let mut version = PREFERRED_VERSION;
    match invoke(var, stdin, &mut version) {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(e) => {
            eprintln!("wyvern-cni: {e}");
            let doc = ErrorDoc::new(&e, version);
            Outcome {
                stdout: serde_json::to_string(&doc).unwrap_or_default(),
                success: false,
            }
        }
    }
}

fn invoke(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: std::io::Result<Vec<u8>>,
    version: &mut &'static str,
) -> Result<String> {
    let command = var("CNI_COMMAND")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::env("CNI_COMMAND", "missing"))?;
    let command = Command::parse(&command)?;
    let stdin = stdin.map_err(|e| Error::Io(format!("reading stdin: {e}")))?;
    if command == Command::Version {
        // Input, if any, names the version the runtime would like the answer in.
        let asked: Option<String> = serde_json::from_slice::<serde_json::Value>(&stdin)
            .ok()
            .and_then(|d| config::version_of(&d).map(str::to_owned));
        return to_json(&VersionInfo::new(asked.as_deref()));
    }
    let doc = config::decode(&stdin)?;
    if let Some(v) = config::version_of(&doc).and_then(|v| spec::negotiate(v).ok()) {
        *version = v;
    }
    let env = Env::parse(command, var)?;
    let cfg = Config::from_json(&doc)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("starting the async runtime: {e}")))?;
    runtime.block_on(async {
        match command {
            Command::Add => to_json(&plugin::add(&cfg, &env).await?),
            Command::Del => plugin::del(&cfg, &env).await.map(|()| String::new()),
            Command::Check => plugin::check(&cfg, &env).await.map(|()| String::new()),
            Command::Version => unreachable!("answered above"),
        }
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Io(format!("encoding the answer: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn invoke_with(pairs: &[(&str, &str)], stdin: &str) -> (Value, bool) {
        let var = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        let out = run(&var, Ok(stdin.as_bytes().to_vec()));
        let doc = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out.stdout).unwrap()
        };
        (doc, out.success)
    }

    #[test]
    fn version_answers_with_or_without_input() {
        let (doc, ok) = invoke_with(&[("CNI_COMMAND", "VERSION")], "");
        assert!(ok);
        assert_eq!(doc["cniVersion"], "1.0.0");
        assert_eq!(doc["supportedVersions"][3], "1.0.0");
        let (doc, ok) = invoke_with(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert!(ok);
        assert_eq!(doc["cniVersion"], "0.4.0");
    }

    #[test]
    fn bad_invocations_are_error_documents() {
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/nonexistent/netns"),
            ("CNI_IFNAME", "eth0"),
        ];
        let good = r#"{"cniVersion":"0.4.0","name":"n","type":"wyvern-cni","api_url":"http://127.0.0.1:9"}"#;
        // (environment, stdin, expected code, expected cniVersion of the error)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u64, &'a str);
        let cases: Vec<Case> = vec![
            (vec![], good, 4, "1.0.0"),
            (vec![("CNI_COMMAND", "STATUS")], good, 4, "1.0.0"),
            (env.to_vec(), "{oops", 6, "1.0.0"),
            (env[..3].to_vec(), good, 4, "0.4.0"),
            (
                env.to_vec(),
                r#"{"cniVersion":"0.2.0","api_url":"http://x:1"}"#,
                1,
                "1.0.0",
            ),
            (
                env.to_vec(),
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                7,
                "1.0.0",
            ),
            (env.to_vec(), good, 3, "0.4.0"),
        ];
        for (pairs, stdin, code, version) in cases {
            let (doc, ok) = invoke_with(&pairs, stdin);
            assert!(!ok, "{pairs:?} {stdin}");
            assert_eq!(doc["code"], code, "{pairs:?} {stdin}: {doc}");
            assert_eq!(doc["cniVersion"], version, "{doc}");
            assert!(
                doc["msg"].is_string() && doc["details"].is_string(),
                "{doc}"
            );
        }
        let var = |k: &str| (k == "CNI_COMMAND").then(|| "ADD".to_owned());
        let out = run(&var, Err(std::io::Error::other("broken pipe")));
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(doc["code"], 5);
        assert_eq!(json!(doc["msg"]), json!("I/O failure"), "{doc}");
    }

    #[test]
    fn check_needs_a_version_that_has_it() {
        let env = [
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/nonexistent/netns"),
            ("CNI_IFNAME", "eth0"),
        ];
        let (doc, ok) = invoke_with(
            &env,
            r#"{"cniVersion":"0.3.1","name":"n","api_url":"http://127.0.0.1:9"}"#,
        );
        assert!(!ok);
        assert_eq!(doc["code"], 1);
        let (doc, _) = invoke_with(
            &env,
            r#"{"cniVersion":"1.0.0","name":"n","api_url":"http://127.0.0.1:9"}"#,
        );
        assert_eq!(doc["code"], 7, "{doc}");
        assert!(doc["details"].as_str().unwrap().contains("prevResult"));
    }
}
