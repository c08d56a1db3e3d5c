//! Keystone end to end: a real Keystone (PyPI's, from the venv `scripts/install-deps` makes; SQLite
//! in a temp dir, served by Python's own wsgiref) whose catalog's `network` endpoint is a `wyvern
//! server` that validates tokens with it (`auth.keystone` in `--config`). The `openstack` CLI with
//! password authentication and no endpoint override: a member creates, lists, shows and deletes a
//! network; another project's member does not see it; a reader lists it but may not create or
//! delete (403); an admin shows and sets a project's network quota, which the member's third
//! network meets. Tokens sent straight to Wyvern: none, an invalid or an unscoped one is 401; with
//! Keystone stopped a token Wyvern has seen still works (cached), a new one is 503.

use crate::server;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::{ServerProcess, free_port};

const ADMIN_PASSWORD: &str = "admin-secret";
const PASSWORD: &str = "user-secret";

/// The venv's `bin` directory: that of `$WYVERN_OPENSTACK_CLI`, else `<repo>/.venv/bin`.
fn venv_bin() -> PathBuf {
    let cli = std::env::var_os("WYVERN_OPENSTACK_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack")
        });
    cli.parent().expect("a directory").to_path_buf()
}

/// Serves Keystone's WSGI application with Python's wsgiref on 127.0.0.1, port `argv[1]`.
const SERVE: &str = r#"
import sys
from wsgiref.simple_server import make_server, WSGIRequestHandler
port = int(sys.argv[1])
sys.argv = sys.argv[:1]  # Keystone parses the command line as its own options
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
from keystone.wsgi.api import application
make_server("127.0.0.1", port, application, handler_class=Quiet).serve_forever()
"#;

/// A Keystone server and its state directory; the server is killed by its PID when dropped.
struct KeystoneProcess {
    child: Child,
    /// `http://127.0.0.1:PORT/v3`.
    url: String,
    dir: tempfile::TempDir,
}

impl KeystoneProcess {
    /// Sets up Keystone's database and keys (admin `admin` in project `admin`, the public endpoint
    /// in the catalog) and starts it on a free loopback port.
    fn start(bin: &Path) -> Self {
        let manage = bin.join("keystone-manage");
        assert!(
            manage.exists(),
            "Keystone is not installed ({} is missing): run scripts/install-deps",
            manage.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("keystone.conf");
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nlog_file = {d}/keystone.log\n\
                 [database]\nconnection = sqlite:///{d}/keystone.db\n\
                 [fernet_tokens]\nkey_repository = {d}/fernet-keys\n\
                 [credential]\nkey_repository = {d}/credential-keys\n\
                 [identity]\npassword_hash_rounds = 4\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/v3");
        let owner = std::fs::metadata(dir.path()).unwrap();
        let (uid, gid) = (owner.uid().to_string(), owner.gid().to_string());
        let keys = |what: &'static str| [what, "--keystone-user", &uid, "--keystone-group", &gid];
        let manage = |args: &[&str]| {
            Command::new(&manage)
                .arg("--config-file")
                .arg(&conf)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run keystone-manage")
        };
        let succeeded = |args: &[&str], out: Output| {
            assert!(
                out.status.success(),
                "keystone-manage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        };
        // The key repositories need no database: all three at once (each waited for).
        let setup: [&[&str]; 3] = [
            &["db_sync"],
            &keys("fernet_setup"),
            &keys("credential_setup"),
        ];
        let running: Vec<Child> = setup.iter().map(|args| manage(args)).collect();
        let outputs: Vec<Output> = running
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        for (args, out) in setup.iter().zip(outputs) {
            succeeded(args, out);
        }
        let bootstrap = [
            "bootstrap",
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--bootstrap-public-url",
            &url,
            "--bootstrap-region-id",
            "RegionOne",
        ];
        succeeded(&bootstrap, manage(&bootstrap).wait_with_output().unwrap());
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut command = Command::new(bin.join("python"));
        command
            .arg("-c")
            .arg(SERVE)
            .arg(port.to_string())
            .env("OS_KEYSTONE_CONFIG_FILES", &conf)
            .stdout(Stdio::null())
            .stderr(log);
        // Dies with the test process, however it ends (a killed test run included).
        let child = testbed::spawn_tied(command).expect("start Keystone");
        Self { child, url, dir }
    }

    /// Waits until Keystone answers its version document.
    async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Keystone exited ({status}): {}", self.logs());
            }
            let answer = client.get(&self.url).send().await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Keystone did not come up: {}", self.logs());
    }

    /// The ends of Keystone's log and of its server's output.
    fn logs(&self) -> String {
        ["keystone.log", "server.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "\n--- {name}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect()
    }

    /// Kills the server by its PID.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KeystoneProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A token from Keystone for `user` (domain `Default`), scoped to `project` if given.
async fn issue_token(
    client: &reqwest::Client,
    keystone: &str,
    user: &str,
    password: &str,
    project: Option<&str>,
) -> String {
    let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}}});
    if let Some(project) = project {
        auth["scope"] = json!({"project": {"name": project, "domain": {"id": "default"}}});
    }
    let answer = client
        .post(format!("{keystone}/auth/tokens"))
        .json(&json!({ "auth": auth }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "token for {user}");
    answer.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Keystone's admin API, as the bootstrap admin.
struct KeystoneAdmin {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl KeystoneAdmin {
    async fn new(client: &reqwest::Client, url: &str) -> Self {
        let token = issue_token(client, url, "admin", ADMIN_PASSWORD, Some("admin")).await;
        Self {
            client: client.clone(),
            url: url.to_string(),
            token,
        }
    }

    /// `POST /v3/<collection>` with `{<singular>: body}`; the new object's id.
    async fn create(&self, collection: &str, body: Value) -> String {
        let singular = collection.trim_end_matches('s');
        let answer = self
            .client
            .post(format!("{}/{collection}", self.url))
            .header("X-Auth-Token", &self.token)
            .json(&json!({ singular: body }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201, "create {collection}");
        let body: Value = answer.json().await.unwrap();
        body[singular]["id"].as_str().unwrap().to_string()
    }

    /// A project in domain `Default`; its id.
    async fn project(&self, name: &str) -> String {
        self.create("projects", json!({"name": name, "domain_id": "default"}))
            .await
    }

    /// A user of `project_id` with `role`, whose password is [`PASSWORD`].
    async fn user(&self, project_id: &str, name: &str, role: &str) {
        let body = json!({"name": name, "password": PASSWORD, "domain_id": "default"});
        let user_id = self.create("users", body).await;
        self.grant(project_id, &user_id, role).await;
    }

    async fn grant(&self, project_id: &str, user_id: &str, role: &str) {
        let roles: Value = self
            .client
            .get(format!("{}/roles?name={role}", self.url))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let role_id = roles["roles"][0]["id"].as_str().expect("the role exists");
        let answer = self
            .client
            .put(format!(
                "{}/projects/{project_id}/users/{user_id}/roles/{role_id}",
                self.url
            ))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 204, "grant {role}");
    }
}

/// The `openstack` CLI, authenticating with a password against Keystone; the catalog leads it to
/// Wyvern.
struct Cli {
    program: PathBuf,
    auth_url: String,
}

impl Cli {
    fn run(&self, user: &str, project: &str, args: &[&str]) -> Output {
        let mut command = Command::new(&self.program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OS_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .env("OS_AUTH_TYPE", "password")
            .env("OS_AUTH_URL", &self.auth_url)
            .env("OS_IDENTITY_API_VERSION", "3")
            .env("OS_USERNAME", user)
            .env(
                "OS_PASSWORD",
                if user == "admin" {
                    ADMIN_PASSWORD
                } else {
                    PASSWORD
                },
            )
            .env("OS_PROJECT_NAME", project)
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_REGION_NAME", "RegionOne")
            .env("OS_INTERFACE", "public")
            .output()
            .expect("run openstack")
    }

    /// What a successful command prints.
    fn ok(&self, user: &str, project: &str, args: &[&str]) -> String {
        let out = self.run(user, project, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{user}: openstack {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// What a failing command says.
    fn fails(&self, user: &str, project: &str, args: &[&str]) -> String {
        let out = self.run(user, project, args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{user}: openstack {args:?} succeeded: {said}"
        );
        said
    }

    /// The networks `user` lists.
    fn network_names(&self, user: &str, project: &str) -> Vec<String> {
        let out = self.ok(
            user,
            project,
            &["network", "list", "-f", "value", "-c", "Name"],
        );
        out.lines().map(str::to_string).collect()
    }
}

/// `GET /v2.0/networks` with `token` (if any): the status and the body.
async fn list_networks(
    client: &reqwest::Client,
    server: &ServerProcess,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = client.get(format!("{}/v2.0/networks", server.base));
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_cli_through_keystone() {
    let _alone = crate::support::alone_async().await;
    let bin = venv_bin();
    let client = reqwest::Client::new();
    let mut keystone = KeystoneProcess::start(&bin);
    keystone.wait_ready(&client).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wyvern.json");
    let auth = json!({"keystone": {"url": keystone.url, "cache_seconds": 300}});
    std::fs::write(&config, json!({ "auth": auth }).to_string()).unwrap();
    let store = format!("embedded:{}", dir.path().join("nb.redb").display());
    let server = ServerProcess::start(&store, &["--config", config.to_str().unwrap()]);
    server.wait_ready(&client).await;

    let admin = KeystoneAdmin::new(&client, &keystone.url).await;
    let service = admin
        .create("services", json!({"type": "network", "name": "neutron"}))
        .await;
    admin
        .create(
            "endpoints",
            json!({"service_id": service, "interface": "public", "url": server.base,
                "region_id": "RegionOne"}),
        )
        .await;
    let (alpha, beta) = (admin.project("alpha").await, admin.project("beta").await);
    admin.user(&alpha, "alice", "member").await;
    admin.user(&alpha, "rita", "reader").await;
    admin.user(&beta, "bob", "member").await;

    let cli = Cli {
        program: bin.join("openstack"),
        auth_url: keystone.url.clone(),
    };
    // A member's network, in the member's project.
    let value = ["-f", "value", "-c"];
    let created = cli.ok(
        "alice",
        "alpha",
        &[&["network", "create", "a-net"][..], &value, &["id"]].concat(),
    );
    assert_eq!(created.trim().len(), 36, "{created}");
    assert_eq!(cli.network_names("alice", "alpha"), ["a-net"]);
    let project = cli.ok(
        "alice",
        "alpha",
        &[&["network", "show", "a-net"][..], &value, &["project_id"]].concat(),
    );
    assert_eq!(project.trim(), alpha);
    // Another project's member does not see it.
    assert!(cli.network_names("bob", "beta").is_empty());
    // A reader sees it, and may not write.
    assert_eq!(cli.network_names("rita", "alpha"), ["a-net"]);
    let said = cli.fails("rita", "alpha", &["network", "create", "r-net"]);
    assert!(
        said.contains("403") && said.contains("rule:create_network is disallowed by policy"),
        "{said}"
    );
    let said = cli.fails("rita", "alpha", &["network", "delete", "a-net"]);
    assert!(
        said.contains("rule:delete_network is disallowed by policy"),
        "{said}"
    );
    cli.ok("alice", "alpha", &["network", "delete", "a-net"]);
    assert!(cli.network_names("alice", "alpha").is_empty());

    // Quotas: the admin shows and sets alpha's; the member meets it.
    let quota = |cli: &Cli| {
        cli.ok(
            "admin",
            "admin",
            &["quota", "show", "--network", "alpha", "-f", "value"],
        )
    };
    assert!(
        quota(&cli).lines().any(|l| l == "networks 100"),
        "{}",
        quota(&cli)
    );
    cli.ok(
        "admin",
        "admin",
        &["quota", "set", "--networks", "2", "alpha"],
    );
    for name in ["n1", "n2"] {
        cli.ok("alice", "alpha", &["network", "create", name]);
    }
    let said = cli.fails("alice", "alpha", &["network", "create", "n3"]);
    assert!(
        said.contains("Quota exceeded for resources: ['network']"),
        "{said}"
    );

    // Tokens straight to Wyvern.
    let token = |project| issue_token(&client, &keystone.url, "alice", PASSWORD, project);
    let (seen, unseen, unscoped) = (
        token(Some("alpha")).await,
        token(Some("alpha")).await,
        token(None).await,
    );
    let (status, body) = list_networks(&client, &server, Some(&seen)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["networks"].as_array().unwrap().len(), 2, "{body}");
    for token in [None, Some("not-a-token"), Some(unscoped.as_str())] {
        let (status, body) = list_networks(&client, &server, token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["NeutronError"]["type"], "HTTPUnauthorized", "{body}");
    }
    // Keystone down: the cached answer still serves, a new token cannot be validated.
    keystone.stop();
    let (status, body) = list_networks(&client, &server, Some(&seen)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = list_networks(&client, &server, Some(&unseen)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["NeutronError"]["type"], "HTTPServiceUnavailable",
        "{body}"
    );
}
