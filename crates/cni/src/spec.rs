//! The documents of the CNI protocol this plugin prints and reads: the success result of
//! `ADD` (also read back as `prevResult`), the `VERSION` answer and the error document, and the
//! choice of spec version.
//!
//! The plugin speaks spec versions [`SUPPORTED_VERSIONS`] and answers in the version the
//! configuration names. The versions differ, for this plugin, in one field only: before 1.0.0
//! each entry of `ips` carries `"version": "4"` or `"6"`. `CHECK` exists from 0.4.0 on.
//! Errors found before the configuration's version is known (a bad environment, input that
//! is not JSON) are reported in [`PREFERRED_VERSION`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The spec versions this plugin implements, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The version of answers that no configuration asked for.
pub const PREFERRED_VERSION: &str = "1.0.0";

/// Checks that `version` is one of [`SUPPORTED_VERSIONS`].
pub fn negotiate(version: &str) -> Result<&'static str> {
    SUPPORTED_VERSIONS
        .iter()
        .find(|v| **v == version)
        .copied()
        .ok_or_else(|| Error::IncompatibleVersion(version.to_owned()))
}

/// True if `version` (a supported one) knows the `CHECK` command.
pub fn has_check(version: &str) -> bool {
    !version.starts_with("0.3.")
}

/// One interface of a result: the host end (no `sandbox`) or the container's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name (in the sandbox, if it has one).
    pub name: String,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The network namespace path it lives in; empty for an interface on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"`, only in results of versions before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address and prefix length (`10.0.0.5/24`).
    pub address: String,
    /// The subnet's gateway, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into the result's `interfaces` of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0`).
    pub dst: String,
    /// Next hop; none for an on-link route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The success result of `ADD`, and the `prevResult` of `CHECK` and `DEL`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Success {
    /// The spec version of this document.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The interfaces the plugins made.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Their addresses.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes in the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default)]
    pub dns: Dns,
}

impl Success {
    /// Rewrites the document for spec `version`: the per-address `version` field exists before
    /// 1.0.0 only.
    pub fn for_version(mut self, version: &str) -> Success {
        let old = version.starts_with("0.");
        for ip in &mut self.ips {
            ip.version = if old {
                let family = ip
                    .address
                    .split('/')
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .map(|a| if a.is_ipv6() { "6" } else { "4" });
                family.map(str::to_owned)
            } else {
                None
            };
        }
        self.cni_version = version.to_owned();
        self
    }

    /// Appends `later` (this plugin's own result) after `self` (a previous plugin's), shifting
    /// its interface indexes past `self`'s interfaces.
    pub fn merge(mut self, later: Success) -> Success {
        let offset = self.interfaces.len();
        self.interfaces.extend(later.interfaces);
        self.ips.extend(later.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(later.routes);
        for ns in later.dns.nameservers {
            if !self.dns.nameservers.contains(&ns) {
                self.dns.nameservers.push(ns);
            }
        }
        self.dns.domain = self.dns.domain.or(later.dns.domain);
        self
    }
}

/// The answer to `VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The spec version of this document.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Every version the plugin implements.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// The answer, in `version` (the one asked for if supported, else [`PREFERRED_VERSION`]).
    pub fn new(version: Option<&str>) -> VersionInfo {
        let v = version
            .and_then(|v| negotiate(v).ok())
            .unwrap_or(PREFERRED_VERSION);
        VersionInfo {
            cni_version: v.to_owned(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// The error document printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDoc {
    /// The spec version of this document.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The error code ([`crate::error`]).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// The whole story.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl ErrorDoc {
    /// The document for `err`, in `version`.
    pub fn new(err: &Error, version: &str) -> ErrorDoc {
        ErrorDoc {
            cni_version: version.to_owned(),
            code: err.code(),
            msg: err.summary().to_owned(),
            details: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Success {
        Success {
            cni_version: String::new(),
            interfaces: vec![
                Interface {
                    name: "tap0123456789a".into(),
                    mac: "aa:bb:cc:00:00:01".into(),
                    sandbox: String::new(),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "fa:16:3e:00:00:05".into(),
                    sandbox: "/var/run/netns/pod".into(),
                },
            ],
            ips: vec![
                IpConfig {
                    version: None,
                    address: "10.0.0.5/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    interface: Some(1),
                },
                IpConfig {
                    version: None,
                    address: "fd00::5/64".into(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.0.0.1".into()),
            }],
            dns: Dns {
                nameservers: vec!["10.0.0.2".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn result_has_the_specified_shape() {
        let doc = serde_json::to_value(sample().for_version("1.0.0")).unwrap();
        assert_eq!(
            doc,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "tap0123456789a", "mac": "aa:bb:cc:00:00:01"},
                    {"name": "eth0", "mac": "fa:16:3e:00:00:05", "sandbox": "/var/run/netns/pod"}
                ],
                "ips": [
                    {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 1},
                    {"address": "fd00::5/64", "interface": 1}
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
                "dns": {"nameservers": ["10.0.0.2"]}
            })
        );
    }

    #[test]
    fn older_versions_name_the_address_family() {
        let doc = serde_json::to_value(sample().for_version("0.4.0")).unwrap();
        assert_eq!(doc["cniVersion"], "0.4.0");
        assert_eq!(doc["ips"][0]["version"], "4");
        assert_eq!(doc["ips"][1]["version"], "6");
        // And back to 1.0.0 drops it again.
        let back: Success = serde_json::from_value(doc).unwrap();
        let again = serde_json::to_value(back.for_version("1.0.0")).unwrap();
        assert!(again["ips"][0].get("version").is_none());
    }

    #[test]
    fn a_previous_result_reads_back_and_merges() {
        // A previous plugin's result as the spec's chaining example shapes it: three
        // interfaces, an address on the last one, DNS.
        let prev: Success = serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br0", "mac": "02:00:00:00:00:01"},
                {"name": "veth9", "mac": "02:00:00:00:00:02"},
                {"name": "net1", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/blue"}
            ],
            "ips": [{"address": "192.168.7.9/32", "interface": 2}],
            "dns": {"nameservers": ["192.168.7.1"]},
            "someFutureField": true
        }))
        .unwrap();
        let merged = prev.merge(sample());
        assert_eq!(merged.interfaces.len(), 5);
        assert_eq!(merged.ips[1].interface, Some(4));
        assert_eq!(merged.ips[0].interface, Some(2));
        assert_eq!(merged.dns.nameservers, ["192.168.7.1", "10.0.0.2"]);
    }

    #[test]
    fn versions_are_negotiated() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(negotiate(v).unwrap(), v);
        }
        for v in ["0.1.0", "0.2.0", "1.1.0", "2.0.0", "", "1.0"] {
            let e = negotiate(v).unwrap_err();
            assert_eq!(e.code(), 1, "{v}");
        }
        assert!(has_check("0.4.0") && has_check("1.0.0"));
        assert!(!has_check("0.3.1"));
        let info = serde_json::to_value(VersionInfo::new(Some("0.4.0"))).unwrap();
        assert_eq!(info["cniVersion"], "0.4.0");
        assert_eq!(
            info["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
        );
        assert_eq!(VersionInfo::new(Some("7.0.0")).cni_version, "1.0.0");
        assert_eq!(VersionInfo::new(None).cni_version, "1.0.0");
    }

    #[test]
    fn error_document_has_code_msg_and_details() {
        let e = Error::TryAgain("no port tagged k8s-pod:a:b after 1s".into());
        let doc = serde_json::to_value(ErrorDoc::new(&e, "1.0.0")).unwrap();
        assert_eq!(doc["cniVersion"], "1.0.0");
        assert_eq!(doc["code"], 11);
        assert_eq!(doc["msg"], "try again later");
        assert!(doc["details"].as_str().unwrap().contains("k8s-pod:a:b"));
    }
}
