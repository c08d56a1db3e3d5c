//! What the Kubernetes end-to-end tests share: the binaries a lab with a cluster runs, waiting
//! for a condition, the lab's Kubernetes API, pings and HTTP between pods and VMs.

use std::time::{Duration, Instant};

use lab::Lab;
use serde_json::Value;

use super::run;

/// Fails unless the programs a lab's cluster runs were built next to `wyvern`.
pub fn need_binaries() {
    let wyvern = std::path::PathBuf::from(env!("CARGO_BIN_EXE_wyvern"));
    for bin in ["wyvern-kube-apiserver", "wyvern-cni"] {
        assert!(
            wyvern.with_file_name(bin).exists(),
            "{bin} is missing next to {}: cargo build -p kube-fixture -p cni --bins",
            wyvern.display()
        );
    }
}

/// Polls `check` for up to `secs` (a hang guard); its last error otherwise.
pub fn until(secs: u64, mut check: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `GET <path>` on the lab's Kubernetes API.
pub fn kube_get(lab: &Lab, path: &str) -> Value {
    let url = format!("{}{path}", lab.kube_api_url().expect("a cluster"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let r = reqwest::get(&url).await.expect("kubernetes API");
            assert!(r.status().is_success(), "GET {path}: {}", r.status());
            r.json().await.expect("JSON")
        })
}

/// `from` reaches `to` (ICMP).
pub fn pings(lab: &Lab, from: &str, to: &str) {
    until(20, || {
        let (ok, out) = run(lab, from, &["ping", "-c", "2", "-W", "2", to]);
        ok.then_some(()).ok_or(format!("{from} -> {to}: {out}"))
    })
    .unwrap();
}

/// `from`'s HTTP request to `url` is answered by `want`.
pub fn http_from(lab: &Lab, from: &str, url: &str, want: &str) {
    until(20, || {
        let (_, out) = run(lab, from, &["curl", "-s", "-m", "2", url]);
        (out.trim() == want)
            .then_some(())
            .ok_or(format!("{from} -> {url}: {out:?}, want {want}"))
    })
    .unwrap();
}
