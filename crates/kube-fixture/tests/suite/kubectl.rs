//! The real `kubectl` against the fixture: discovery, get (tables, JSON, jsonpath, selectors),
//! create, apply, label, annotate, delete and `get -w`.
//!
//! kubectl is `/usr/bin/kubectl` or `WYVERN_KUBECTL`; when it is missing these tests fail (they
//! do not skip). Each run uses a kubeconfig and a discovery cache directory of its own.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kube_fixture::KubeApi;
use serde_json::{Value, json};

struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(api: &KubeApi) -> Self {
        let bin = PathBuf::from(
            std::env::var_os("WYVERN_KUBECTL").unwrap_or_else(|| "/usr/bin/kubectl".into()),
        );
        assert!(
            bin.exists(),
            "kubectl not found at {} (set WYVERN_KUBECTL, or install kubectl: it is not a Debian \
             package; see crates/kube-fixture docs)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("kube-fixture-kubectl")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("kubeconfig"), api.kubeconfig()).unwrap();
        Self { bin, dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs kubectl; panics with its output unless it succeeds.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// A background `kubectl get -w`, killed when dropped.
struct Watching {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watching {
    fn start(k: &Kubectl, args: &[&str]) -> Self {
        let mut child = k.command(args).stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Lines until one contains `want`.
    fn until(&self, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let done = line.contains(want);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("no line with {want:?} ({e}); got {seen:?}"),
            }
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: c
    image: nginx:1
";

#[test]
fn discovery_and_get() {
    let api = KubeApi::start().unwrap();
    let k = Kubectl::new(&api);
    let v = k.ok(&["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1");
    let resources = k.ok(&["api-resources"]);
    for r in [
        "pods",
        "services",
        "nodes",
        "namespaces",
        "endpointslices",
        "networkpolicies",
    ] {
        assert!(resources.contains(r), "{r} in {resources}");
    }
    assert_eq!(k.ok(&["get", "pods", "-A"]), "");
    let ns = k.ok(&["get", "ns"]);
    assert!(ns.contains("kube-system") && ns.contains("Active"), "{ns}");
    let svc = k.ok(&["get", "svc", "-n", "default"]);
    assert!(
        svc.contains("kubernetes") && svc.contains("10.96.0.1"),
        "{svc}"
    );
    api.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "kube-system", "labels": {"app": "dns"}}, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}}))
        .unwrap();
    api.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}))
        .unwrap();
    let all = k.ok(&["get", "pods", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(
        all.contains("kube-system") && all.contains("p1") && all.contains("p2"),
        "{all}"
    );
    let wide = k.ok(&["get", "pods", "-A", "-o", "wide"]);
    assert!(wide.contains("n1"), "{wide}");
    let j: Value = serde_json::from_str(&k.ok(&["get", "pods", "-A", "-o", "json"])).unwrap();
    assert_eq!(j["items"].as_array().unwrap().len(), 2);
    let sel = k.ok(&["get", "pods", "-A", "-l", "app=dns", "-o", "name"]);
    assert_eq!(sel, "pod/p1\n");
    let sel = k.ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=n1",
        "-o",
        "name",
    ]);
    assert_eq!(sel, "pod/p1\n");
    let phase = k.ok(&["get", "pod", "p2", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Pending");
}

#[test]
fn create_apply_label_annotate_delete() {
    let api = KubeApi::start().unwrap();
    let k = Kubectl::new(&api);
    let file = k.file("pod.yaml", POD);
    // Without an OpenAPI document kubectl cannot validate: `--validate=false` is needed.
    let out = k.command(&["create", "-f", &file]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--validate=false"));
    assert_eq!(
        k.ok(&["create", "-f", &file, "--validate=false"]),
        "pod/web created\n"
    );
    let out = k
        .command(&["create", "-f", &file, "--validate=false"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AlreadyExists"));
    assert_eq!(
        k.ok(&["label", "pod", "web", "tier=front"]),
        "pod/web labeled\n"
    );
    assert_eq!(
        k.ok(&["annotate", "pod", "web", "note=hi"]),
        "pod/web annotated\n"
    );
    let pod = api.get("v1", "Pod", "default", "web").unwrap();
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "web", "tier": "front"})
    );
    assert_eq!(pod["metadata"]["annotations"]["note"], "hi");
    assert_eq!(
        k.ok(&["label", "pod", "web", "tier-"]),
        "pod/web unlabeled\n"
    );
    assert_eq!(k.ok(&["delete", "pod", "web"]), "pod \"web\" deleted\n");
    assert!(api.get("v1", "Pod", "default", "web").is_err());

    // apply: create, then a change sent as a strategic merge patch.
    let ns = k.file(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n",
    );
    assert_eq!(
        k.ok(&["create", "-f", &ns, "--validate=false"]),
        "namespace/team created\n"
    );
    assert_eq!(
        k.ok(&["apply", "-n", "team", "-f", &file, "--validate=false"]),
        "pod/web created\n"
    );
    let changed = k.file("pod2.yaml", &POD.replace("nginx:1", "nginx:2"));
    assert_eq!(
        k.ok(&["apply", "-n", "team", "-f", &changed, "--validate=false"]),
        "pod/web configured\n"
    );
    let pod = api.get("v1", "Pod", "team", "web").unwrap();
    assert_eq!(
        pod["spec"]["containers"],
        json!([{"name": "c", "image": "nginx:2"}])
    );
    assert!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    assert_eq!(
        k.ok(&["apply", "-n", "team", "-f", &changed, "--validate=false"]),
        "pod/web unchanged\n"
    );
    assert_eq!(
        k.ok(&["delete", "-n", "team", "-f", &changed]),
        "pod \"web\" deleted\n"
    );
    assert_eq!(
        k.ok(&["delete", "namespace", "team"]),
        "namespace \"team\" deleted\n"
    );
    assert!(api.get("v1", "Namespace", "", "team").is_err());
}

#[test]
fn get_watch() {
    let api = KubeApi::start().unwrap();
    let k = Kubectl::new(&api);
    api.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "first"}, "spec": {"containers": [{"name": "c"}]}}))
        .unwrap();
    let table = Watching::start(&k, &["get", "pods", "-w"]);
    let lines = table.until("first");
    assert!(lines[0].starts_with("NAME"), "{lines:?}");
    let json_watch = Watching::start(&k, &["get", "pods", "-w", "-o", "json"]);
    json_watch.until("\"first\"");
    api.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "second"}, "spec": {"containers": [{"name": "c"}]}}))
        .unwrap();
    table.until("second");
    json_watch.until("\"second\"");
    api.update_status(
        "v1",
        "Pod",
        "default",
        "second",
        json!({"phase": "Running"}),
    )
    .unwrap();
    let lines = table.until("Running");
    assert!(lines.last().unwrap().contains("second"), "{lines:?}");
}
