//! The binary's answers to bad input: an error document on stdout (the spec's codes), a
//! non-zero exit, never a panic — and `VERSION`.

use serde_json::json;

use crate::support::invoke;

const ENV: [(&str, &str); 4] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/var/run/netns/wyt-never-created"),
    ("CNI_IFNAME", "eth0"),
];

#[test]
fn version_lists_the_supported_versions() {
    let a = invoke(
        None,
        &[("CNI_COMMAND", "VERSION")],
        &json!({"cniVersion": "1.0.0"}),
    );
    assert!(a.ok, "{a:?}");
    assert_eq!(
        a.doc,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
    );
}

#[test]
fn bad_input_gets_the_specs_codes() {
    let good = json!({"cniVersion": "1.0.0", "name": "n", "type": "wyvern-cni",
                      "api_url": "http://127.0.0.1:9"});
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let mut no_url = good.clone();
    no_url.as_object_mut().unwrap().remove("api_url");
    let cases = [
        (
            "unknown command",
            vec![("CNI_COMMAND", "FROB")],
            good.clone(),
            4,
        ),
        ("no command", vec![], good.clone(), 4),
        (
            "missing CNI_IFNAME",
            ENV[..2].iter().chain(&ENV[2..3]).copied().collect(),
            good.clone(),
            4,
        ),
        (
            "missing CNI_NETNS",
            vec![ENV[0], ENV[1], ENV[3]],
            good.clone(),
            4,
        ),
        (
            "bad CNI_ARGS",
            [&ENV[..], &[("CNI_ARGS", "novalue")]].concat(),
            good.clone(),
            4,
        ),
        (
            "unsupported version",
            ENV.to_vec(),
            with("cniVersion", json!("0.2.0")),
            1,
        ),
        ("missing api_url", ENV.to_vec(), no_url, 7),
        ("bad mode", ENV.to_vec(), with("mode", json!("bridged")), 7),
        (
            "ipam",
            ENV.to_vec(),
            with("ipam", json!({"type": "host-local"})),
            2,
        ),
        ("missing namespace", ENV.to_vec(), good.clone(), 3),
    ];
    for (what, env, conf, code) in cases {
        let a = invoke(None, &env, &conf);
        assert!(!a.ok, "{what}: {a:?}");
        assert_eq!(a.code(), code, "{what}: {a:?}");
        assert!(!a.stderr.contains("panicked"), "{what}: {}", a.stderr);
    }
}

#[test]
fn input_that_is_not_json_is_code_6() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::support::BIN)
        .env_clear()
        .envs(ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"cniVersion\": ")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["code"], 6);
    assert_eq!(doc["cniVersion"], "1.0.0");
}
