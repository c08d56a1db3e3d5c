//! The plugin's input: the environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`) and the network configuration on stdin.
//!
//! Every check here maps to a well-known code: a missing or malformed variable is 4, input
//! that is not JSON 6, a `cniVersion` the plugin does not speak 1, a configuration that is
//! JSON but wrong 7, an `ipam` section 2 (Neutron allocates the addresses; a second allocator
//! would silently disagree with it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::spec::{self, Success};

/// The bridge VIFs are plugged into unless the configuration says otherwise.
pub const DEFAULT_BRIDGE: &str = "br-int";
/// The OVSDB remote unless the configuration says otherwise.
pub const DEFAULT_OVSDB: &str = "unix:/var/run/openvswitch/db.sock";
/// The VM's bridge of nested mode's `"vlan": "ovs"` unless the configuration says otherwise.
pub const DEFAULT_VM_BRIDGE: &str = "br-trunk";
/// How long `ADD` waits for the pod's port unless the configuration says otherwise.
pub const DEFAULT_PORT_WAIT: Duration = Duration::from_secs(10);
/// How long host mode's `ADD` waits for the agent to install the pod's flows unless the
/// configuration says otherwise.
pub const DEFAULT_INSTALL_WAIT: Duration = Duration::from_secs(10);
/// Linux's longest interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Verify the attachment.
    Check,
    /// Report the supported versions.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Command> {
        match s {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "VERSION" => Ok(Command::Version),
            other => Err(Error::env(
                "CNI_COMMAND",
                format!("unknown command {other:?} (ADD, DEL, CHECK or VERSION)"),
            )),
        }
    }

    /// Its name as the environment spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

/// The environment of an `ADD`, `DEL` or `CHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// The command.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: required for `ADD` and `CHECK`, optional for `DEL`.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH` (unused: this plugin delegates to none).
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads the environment of `command` through `var`.
    pub fn parse(command: Command, var: &dyn Fn(&str) -> Option<String>) -> Result<Env> {
        let required = |name: &str| {
            var(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::env(name, "missing"))
        };
        let container_id = required("CNI_CONTAINERID")?;
        check_container_id(&container_id)?;
        let ifname = required("CNI_IFNAME")?;
        check_ifname(&ifname).map_err(|why| Error::env("CNI_IFNAME", why))?;
        let netns = match command {
            Command::Del => var("CNI_NETNS").filter(|v| !v.is_empty()),
            _ => Some(required("CNI_NETNS")?),
        }
        .map(PathBuf::from);
        let args = parse_args(&var("CNI_ARGS").unwrap_or_default())?;
        let path = var("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The key under which this attachment's Open vSwitch port is recorded
    /// (`<container id>/<ifname>`).
    pub fn owner(&self) -> String {
        format!("{}/{}", self.container_id, self.ifname)
    }
}

/// Checks a container id as the spec describes it: an alphanumeric first character, then
/// alphanumerics, `_`, `.` and `-`.
fn check_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(Error::env(
            "CNI_CONTAINERID",
            format!("{id:?} is not a container id"),
        ))
    }
}

/// Checks an interface name: not empty, not `.` or `..`, at most [`IFNAME_MAX`] bytes, no
/// `/`, `:` or whitespace.
pub fn check_ifname(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= IFNAME_MAX
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an interface name (1 to {IFNAME_MAX} bytes, no '/', ':' or spaces)"
        ))
    }
}

/// Parses `CNI_ARGS`: `KEY=VALUE` pairs separated by `;` (empty pairs are skipped; a value
/// may itself contain `=`).
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::env("CNI_ARGS", format!("{pair:?} is not KEY=VALUE")))?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Where the plugin puts the pod's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// On a chassis: a veth pair, its host end plugged into the bridge.
    Host,
    /// Inside a VM whose port is a trunk, tagging the pod's frames with its subport's VLAN id.
    Nested(Tagging),
}

/// How nested mode tags the pod's frames (`vlan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tagging {
    /// `"kernel"`: a kernel VLAN interface on `trunk_interface`.
    Kernel {
        /// The VM's interface carrying the trunk.
        trunk_interface: String,
    },
    /// `"ovs"`: a veth pair whose VM end is an access port (`tag=<vid>`) on the VM's own
    /// Open vSwitch bridge, whose trunk port carries the VLANs.
    Ovs {
        /// `vm_bridge`.
        bridge: String,
        /// `vm_ovsdb`: the VM's OVSDB remote.
        ovsdb: String,
    },
}

/// An Open vSwitch bridge the outer end of the pod's veth is plugged into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vswitch<'a> {
    /// Its OVSDB remote.
    pub ovsdb: &'a str,
    /// The bridge.
    pub bridge: &'a str,
}

/// How the plugin authenticates to the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A token (Keystone or a static one the server maps), from `token_file`.
    TokenFile(PathBuf),
    /// No authentication: `X-Project-Id` and `X-Roles` headers, if given (none: the server
    /// treats the request as admin).
    Headers {
        /// `project_id`.
        project: Option<String>,
        /// `roles`, joined with commas.
        roles: Option<String>,
    },
}

/// The network configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The spec version the runtime speaks (one of [`spec::SUPPORTED_VERSIONS`]).
    pub cni_version: &'static str,
    /// `name`.
    pub name: String,
    /// Wyvern's Neutron API, `http://HOST:PORT` (no trailing slash).
    pub api_url: String,
    /// Authentication.
    pub auth: Auth,
    /// The integration bridge (host mode).
    pub bridge: String,
    /// The OVSDB remote (host mode), `unix:PATH` or `tcp:HOST:PORT`.
    pub ovsdb: String,
    /// Host or nested (and how nested tags).
    pub mode: Mode,
    /// How long `ADD` waits for the pod's port to appear.
    pub port_wait: Duration,
    /// How long host mode's `ADD` waits, after plugging, for the Wyvern agent to mark the
    /// interface `external_ids:wyvern-installed=true` (its flows are in the switch); zero: no
    /// wait, for a runtime without a Wyvern agent on the host.
    pub install_wait: Duration,
    /// The pod namespace assumed when `CNI_ARGS` has no `K8S_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// The previous plugin's result (chained `ADD`) or the result of the `ADD` (`CHECK`, `DEL`).
    pub prev_result: Option<Success>,
}

/// The configuration as JSON gives it; unknown keys are ignored, as the spec wants.
#[derive(Debug, Deserialize)]
struct Raw {
    name: Option<String>,
    api_url: Option<String>,
    token_file: Option<PathBuf>,
    project_id: Option<String>,
    roles: Option<Roles>,
    bridge: Option<String>,
    ovsdb: Option<String>,
    mode: Option<String>,
    trunk_interface: Option<String>,
    vlan: Option<String>,
    vm_bridge: Option<String>,
    vm_ovsdb: Option<String>,
    port_wait: Option<f64>,
    install_wait: Option<f64>,
    pod_namespace: Option<String>,
    ipam: Option<Value>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
}

/// `roles`: `"member,reader"` or `["member", "reader"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Roles {
    One(String),
    Many(Vec<String>),
}

/// The `cniVersion` of a configuration document, if it has one (read before anything else,
/// so that even errors can be answered in the runtime's version).
pub fn version_of(doc: &Value) -> Option<&str> {
    doc.get("cniVersion").and_then(Value::as_str)
}

/// Decodes stdin as JSON.
pub fn decode(stdin: &[u8]) -> Result<Value> {
    serde_json::from_slice(stdin).map_err(|e| Error::Decode {
        what: "the network configuration on stdin".into(),
        why: e.to_string(),
    })
}

impl Config {
    /// Validates a decoded configuration document.
    pub fn from_json(doc: &Value) -> Result<Config> {
        if !doc.is_object() {
            return Err(Error::Config("not a JSON object".into()));
        }
        let version = version_of(doc).ok_or_else(|| {
            Error::IncompatibleVersion("none (a configuration without cniVersion)".into())
        })?;
        let cni_version = spec::negotiate(version)?;
        let raw: Raw =
            serde_json::from_value(doc.clone()).map_err(|e| Error::Config(e.to_string()))?;
        let api_url = check_url(raw.api_url)?;
        if let Some(ipam) = raw.ipam {
            return Err(Error::UnsupportedField {
                field: "ipam".into(),
                value: ipam.to_string(),
                why: "Neutron assigns the port's addresses; remove the ipam section".into(),
            });
        }
        let name = raw.name.unwrap_or_default();
        let roles = raw.roles.map(|r| match r {
            Roles::One(s) => s,
            Roles::Many(v) => v.join(","),
        });
        let auth = match (raw.token_file, raw.project_id, roles) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(Error::Config(
                    "token_file excludes project_id and roles (the token says who asks)".into(),
                ));
            }
            (Some(f), None, None) => Auth::TokenFile(f),
            (None, project, roles) => Auth::Headers { project, roles },
        };
        let bridge = bridge_of("bridge", raw.bridge, DEFAULT_BRIDGE)?;
        let ovsdb = endpoint_of("ovsdb", raw.ovsdb)?;
        let mode = match raw.mode.as_deref() {
            None | Some("host") => {
                if let Some(v) = raw.vlan {
                    return Err(Error::Config(format!(
                        "vlan {v:?} is for mode \"nested\" only"
                    )));
                }
                Mode::Host
            }
            Some("nested") => Mode::Nested(tagging(
                raw.vlan.as_deref(),
                raw.trunk_interface,
                raw.vm_bridge,
                raw.vm_ovsdb,
            )?),
            Some(other) => {
                return Err(Error::Config(format!(
                    "mode {other:?} (\"host\" or \"nested\")"
                )));
            }
        };
        let seconds = |key: &str, v: Option<f64>, default: Duration| match v {
            None => Ok(default),
            Some(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => {
                Ok(Duration::from_secs_f64(s))
            }
            Some(s) => Err(Error::Config(format!("{key} {s} (seconds, 0 to 3600)"))),
        };
        let port_wait = seconds("port_wait", raw.port_wait, DEFAULT_PORT_WAIT)?;
        let install_wait = seconds("install_wait", raw.install_wait, DEFAULT_INSTALL_WAIT)?;
        let prev_result = raw
            .prev_result
            .map(serde_json::from_value::<Success>)
            .transpose()
            .map_err(|e| Error::Config(format!("prevResult: {e}")))?;
        Ok(Config {
            cni_version,
            name,
            api_url,
            auth,
            bridge,
            ovsdb,
            mode,
            port_wait,
            install_wait,
            pod_namespace: raw.pod_namespace.filter(|s| !s.is_empty()),
            prev_result,
        })
    }
}

impl Config {
    /// Where the outer end of the pod's veth is plugged in: host mode's integration bridge, or
    /// the VM's bridge of nested mode with `"vlan": "ovs"`; none for kernel VLAN interfaces.
    pub fn vswitch(&self) -> Option<Vswitch<'_>> {
        match &self.mode {
            Mode::Host => Some(Vswitch {
                ovsdb: &self.ovsdb,
                bridge: &self.bridge,
            }),
            Mode::Nested(Tagging::Ovs { bridge, ovsdb }) => Some(Vswitch { ovsdb, bridge }),
            Mode::Nested(Tagging::Kernel { .. }) => None,
        }
    }
}

/// Nested mode's `vlan` with the keys it needs: `trunk_interface` for `kernel` (the default),
/// `vm_bridge` and `vm_ovsdb` for `ovs`.
fn tagging(
    vlan: Option<&str>,
    trunk_interface: Option<String>,
    vm_bridge: Option<String>,
    vm_ovsdb: Option<String>,
) -> Result<Tagging> {
    match vlan {
        None | Some("kernel") => {
            let t = trunk_interface.ok_or_else(|| {
                Error::Config(
                    "mode \"nested\" needs trunk_interface (the VM's interface carrying the \
                     trunk)"
                        .into(),
                )
            })?;
            check_ifname(&t).map_err(|why| Error::Config(format!("trunk_interface: {why}")))?;
            Ok(Tagging::Kernel { trunk_interface: t })
        }
        Some("ovs") => Ok(Tagging::Ovs {
            bridge: bridge_of("vm_bridge", vm_bridge, DEFAULT_VM_BRIDGE)?,
            ovsdb: endpoint_of("vm_ovsdb", vm_ovsdb)?,
        }),
        Some(other) => Err(Error::Config(format!(
            "vlan {other:?} (\"kernel\" or \"ovs\")"
        ))),
    }
}

/// A bridge name under `key`, `default` if not given; not empty.
fn bridge_of(key: &str, given: Option<String>, default: &str) -> Result<String> {
    let bridge = given.unwrap_or_else(|| default.to_owned());
    if bridge.is_empty() {
        return Err(Error::Config(format!("{key} is empty")));
    }
    Ok(bridge)
}

/// An OVSDB remote under `key` ([`DEFAULT_OVSDB`] if not given), checked.
fn endpoint_of(key: &str, given: Option<String>) -> Result<String> {
    let remote = given.unwrap_or_else(|| DEFAULT_OVSDB.to_owned());
    remote
        .parse::<ovsdb::Endpoint>()
        .map_err(|e| Error::Config(format!("{key} {remote:?}: {e}")))?;
    Ok(remote)
}

/// `api_url` must be there and be `http://` (this build's HTTP client has no TLS).
fn check_url(url: Option<String>) -> Result<String> {
    let url = url.ok_or_else(|| Error::Config("api_url is missing".into()))?;
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| Error::Config(format!("api_url {url:?}: {e}")))?;
    if parsed.scheme() != "http" || parsed.host_str().is_none() {
        return Err(Error::Config(format!(
            "api_url {url:?}: an http://HOST:PORT URL (no TLS in this build)"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Which pod the plugin attaches, from `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pod {
    /// `K8S_POD_UID`.
    Uid(String),
    /// `K8S_POD_NAMESPACE` (or the configuration's `pod_namespace`) and `K8S_POD_NAME`.
    Name {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
}

impl Pod {
    /// Picks the pod out of `CNI_ARGS`: its UID if given, else namespace and name.
    pub fn from_args(args: &BTreeMap<String, String>, default_ns: Option<&str>) -> Result<Pod> {
        let get = |k: &str| args.get(k).filter(|v| !v.is_empty()).cloned();
        if let Some(uid) = get("K8S_POD_UID") {
            return Ok(Pod::Uid(uid));
        }
        let namespace = get("K8S_POD_NAMESPACE").or_else(|| default_ns.map(str::to_owned));
        match (namespace, get("K8S_POD_NAME")) {
            (Some(namespace), Some(name)) => Ok(Pod::Name { namespace, name }),
            _ => Err(Error::env(
                "CNI_ARGS",
                "needs K8S_POD_UID, or K8S_POD_NAME with K8S_POD_NAMESPACE (or pod_namespace in \
                 the configuration)",
            )),
        }
    }

    /// The Neutron tag of the pod's port.
    pub fn tag(&self) -> String {
        match self {
            Pod::Uid(uid) => format!("k8s-pod-uid:{uid}"),
            Pod::Name { namespace, name } => format!("k8s-pod:{namespace}:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const FULL: [(&str, &str); 5] = [
        ("CNI_CONTAINERID", "c0ffee-01_a.b"),
        ("CNI_NETNS", "/var/run/netns/pod1"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c0ffee",
        ),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn environment_is_read() {
        let env = Env::parse(Command::Add, &env_of(&FULL)).unwrap();
        assert_eq!(env.container_id, "c0ffee-01_a.b");
        assert_eq!(env.netns, Some(PathBuf::from("/var/run/netns/pod1")));
        assert_eq!(env.ifname, "eth0");
        assert_eq!(env.args["K8S_POD_NAME"], "web-0");
        assert_eq!(env.path.len(), 2);
        assert_eq!(env.owner(), "c0ffee-01_a.b/eth0");
        let pod = Pod::from_args(&env.args, None).unwrap();
        assert_eq!(pod.tag(), "k8s-pod:default:web-0");
    }

    #[test]
    fn missing_or_bad_variables_are_code_4_and_named() {
        for (drop, cmd) in [
            ("CNI_CONTAINERID", Command::Add),
            ("CNI_IFNAME", Command::Del),
            ("CNI_NETNS", Command::Add),
            ("CNI_NETNS", Command::Check),
        ] {
            let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != drop).collect();
            let e = Env::parse(cmd, &env_of(&pairs)).unwrap_err();
            assert_eq!(e.code(), 4);
            assert!(e.to_string().contains(drop), "{e}");
        }
        // DEL without a namespace is fine.
        let pairs: Vec<_> = FULL
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert_eq!(
            Env::parse(Command::Del, &env_of(&pairs)).unwrap().netns,
            None
        );
        for (key, bad) in [
            ("CNI_IFNAME", "much-too-long-name0"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "a:b"),
            ("CNI_IFNAME", "a b"),
            ("CNI_IFNAME", ".."),
            ("CNI_CONTAINERID", "-leading-dash"),
            ("CNI_CONTAINERID", "semi;colon"),
            ("CNI_ARGS", "K8S_POD_NAME"),
            ("CNI_ARGS", "=value"),
        ] {
            let mut pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != key).collect();
            pairs.push((key, bad));
            let e = Env::parse(Command::Add, &env_of(&pairs)).unwrap_err();
            assert_eq!(e.code(), 4, "{key}={bad}");
            assert!(e.to_string().contains(key), "{e}");
        }
        assert_eq!(Command::parse("ADD").unwrap(), Command::Add);
        assert_eq!(Command::parse("GC").unwrap_err().code(), 4);
        assert_eq!(Command::parse("add").unwrap_err().code(), 4);
    }

    #[test]
    fn cni_args_are_pairs() {
        let a = parse_args("FOO=BAR;ABC=123;;X=a=b").unwrap();
        assert_eq!(a["FOO"], "BAR");
        assert_eq!(a["ABC"], "123");
        assert_eq!(a["X"], "a=b");
        assert!(parse_args("").unwrap().is_empty());
    }

    #[test]
    fn the_pod_comes_from_its_uid_or_its_name() {
        let a = parse_args("K8S_POD_UID=8f1c;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=n").unwrap();
        assert_eq!(Pod::from_args(&a, None).unwrap().tag(), "k8s-pod-uid:8f1c");
        // What podman's CNI backend passes: the container's name only.
        let a = parse_args("IgnoreUnknown=1;K8S_POD_NAME=box").unwrap();
        assert_eq!(Pod::from_args(&a, None).unwrap_err().code(), 4);
        assert_eq!(
            Pod::from_args(&a, Some("podman")).unwrap().tag(),
            "k8s-pod:podman:box"
        );
        assert!(Pod::from_args(&parse_args("K8S_POD_NAMESPACE=x").unwrap(), None).is_err());
    }

    fn conf(extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": "pods",
            "type": "wyvern-cni",
            "api_url": "http://127.0.0.1:9696/"
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn minimal_configuration_takes_the_defaults() {
        let c = Config::from_json(&conf(json!({}))).unwrap();
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.name, "pods");
        assert_eq!(c.api_url, "http://127.0.0.1:9696");
        assert_eq!(c.bridge, "br-int");
        assert_eq!(c.ovsdb, "unix:/var/run/openvswitch/db.sock");
        assert_eq!(c.mode, Mode::Host);
        assert_eq!(
            c.vswitch(),
            Some(Vswitch {
                ovsdb: DEFAULT_OVSDB,
                bridge: DEFAULT_BRIDGE
            })
        );
        assert_eq!(c.port_wait, Duration::from_secs(10));
        assert_eq!(c.install_wait, Duration::from_secs(10));
        assert_eq!(
            c.auth,
            Auth::Headers {
                project: None,
                roles: None
            }
        );
        assert_eq!(c.prev_result, None);
    }

    #[test]
    fn every_key_is_read() {
        let c = Config::from_json(&conf(json!({
            "project_id": "p1", "roles": ["member", "reader"], "bridge": "br-pods",
            "ovsdb": "tcp:127.0.0.1:6640", "mode": "nested", "trunk_interface": "eth0",
            "port_wait": 0.5, "install_wait": 0, "pod_namespace": "podman",
            "runtimeConfig": {"portMappings": []}, "args": {"cni": {"x": 1}},
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                           "ips": [{"address": "10.1.0.5/16", "interface": 0}]}
        })))
        .unwrap();
        assert_eq!(
            c.auth,
            Auth::Headers {
                project: Some("p1".into()),
                roles: Some("member,reader".into())
            }
        );
        assert_eq!(c.bridge, "br-pods");
        assert_eq!(
            c.mode,
            Mode::Nested(Tagging::Kernel {
                trunk_interface: "eth0".into()
            })
        );
        assert_eq!(c.vswitch(), None);
        assert_eq!(c.port_wait, Duration::from_millis(500));
        assert_eq!(c.install_wait, Duration::ZERO);
        assert_eq!(c.pod_namespace.as_deref(), Some("podman"));
        assert_eq!(c.prev_result.unwrap().ips[0].address, "10.1.0.5/16");
        let o = Config::from_json(&conf(json!({
            "mode": "nested", "vlan": "ovs", "vm_ovsdb": "unix:/run/vm/db.sock",
            "vm_bridge": "br-vlans", "bridge": "br-pods"
        })))
        .unwrap();
        assert_eq!(
            o.vswitch(),
            Some(Vswitch {
                ovsdb: "unix:/run/vm/db.sock",
                bridge: "br-vlans"
            })
        );
        // The defaults: the VM's br-trunk on the usual socket; no trunk_interface needed.
        let o = Config::from_json(&conf(json!({"mode": "nested", "vlan": "ovs"}))).unwrap();
        assert_eq!(
            o.mode,
            Mode::Nested(Tagging::Ovs {
                bridge: "br-trunk".into(),
                ovsdb: DEFAULT_OVSDB.into()
            })
        );
        let k = Config::from_json(&conf(json!({
            "mode": "nested", "vlan": "kernel", "trunk_interface": "ens3"
        })))
        .unwrap();
        assert_eq!(
            k.mode,
            Mode::Nested(Tagging::Kernel {
                trunk_interface: "ens3".into()
            })
        );
        let t = Config::from_json(&conf(json!({"token_file": "/etc/wyvern/token"}))).unwrap();
        assert_eq!(t.auth, Auth::TokenFile("/etc/wyvern/token".into()));
    }

    #[test]
    fn the_specs_example_configurations_are_judged() {
        // The spec's examples are plugin configurations for other plugins (a bridge with
        // host-local IPAM, an ovs plugin with DHCP, macvlan): as our own configuration each
        // lacks api_url (7); with it, their ipam section is refused by name (2).
        let examples = [
            json!({"cniVersion": "1.0.0", "name": "dbnet", "type": "bridge", "bridge": "cni0",
                   "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1"},
                   "dns": {"nameservers": ["10.1.0.1"]}}),
            json!({"cniVersion": "1.0.0", "name": "pci", "type": "ovs", "bridge": "ovs0",
                   "vxlanID": 42, "ipam": {"type": "dhcp", "routes": [{"dst": "10.3.0.0/16"}]},
                   "args": {"labels": {"appVersion": "1.0"}}}),
            json!({"cniVersion": "1.0.0", "name": "wan", "type": "macvlan",
                   "ipam": {"type": "dhcp", "routes": [{"dst": "10.0.0.0/8", "gw": "10.0.0.1"}]},
                   "dns": {"nameservers": ["10.0.0.1"]}}),
        ];
        for ex in examples {
            assert_eq!(Config::from_json(&ex).unwrap_err().code(), 7, "{ex}");
            let mut with_url = ex.clone();
            with_url["api_url"] = json!("http://127.0.0.1:9696");
            let e = Config::from_json(&with_url).unwrap_err();
            assert_eq!(e.code(), 2, "{ex}");
            assert!(e.to_string().contains("ipam"), "{e}");
            // Without ipam they are valid: every other key is someone else's and ignored.
            with_url.as_object_mut().unwrap().remove("ipam");
            Config::from_json(&with_url).unwrap();
        }
    }

    #[test]
    fn bad_configurations_get_their_codes() {
        let cases = [
            (json!({"cniVersion": "9.9.9", "api_url": "http://x:1"}), 1),
            (json!({"api_url": "http://x:1"}), 1),
            (json!([1, 2]), 7),
            (conf(json!({"api_url": null})), 7),
            (conf(json!({"api_url": "https://x:1"})), 7),
            (conf(json!({"api_url": "not a url"})), 7),
            (conf(json!({"mode": "bridge"})), 7),
            (conf(json!({"mode": "nested"})), 7),
            (
                conf(json!({"mode": "nested", "trunk_interface": "far-too-long-name"})),
                7,
            ),
            (
                conf(json!({"mode": "nested", "vlan": "ovs", "vm_bridge": ""})),
                7,
            ),
            (
                conf(json!({"mode": "nested", "vlan": "ovs", "vm_ovsdb": "/run/db.sock"})),
                7,
            ),
            (conf(json!({"mode": "nested", "vlan": "kernel"})), 7),
            (
                conf(json!({"mode": "nested", "vlan": "qinq", "trunk_interface": "eth0"})),
                7,
            ),
            (conf(json!({"vlan": "ovs"})), 7),
            (conf(json!({"port_wait": -1})), 7),
            (conf(json!({"install_wait": 1e9})), 7),
            (conf(json!({"port_wait": "10"})), 7),
            (conf(json!({"ovsdb": "/var/run/db.sock"})), 7),
            (conf(json!({"bridge": ""})), 7),
            (conf(json!({"token_file": "/t", "project_id": "p"})), 7),
            (conf(json!({"prevResult": {"interfaces": 3}})), 7),
            (conf(json!({"ipam": {"type": "host-local"}})), 2),
        ];
        for (doc, code) in cases {
            let e = Config::from_json(&doc).unwrap_err();
            assert_eq!(e.code(), code, "{doc}: {e}");
        }
        assert_eq!(decode(b"{not json").unwrap_err().code(), 6);
        assert_eq!(decode(b"").unwrap_err().code(), 6);
    }
}
