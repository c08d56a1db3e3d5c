//! `wyvern lab` as a user runs it, through the built binary: a lab that does not exist is said
//! so in one line, every error once; a file that is not valid is refused in one line naming what
//! is wrong, before anything starts; output into a closed pipe (`wyvern lab status | head -1`)
//! ends quietly from every command that prints (status, up's progress, exec, down); `up` refuses
//! a lab of the same name that runs from another file unless `--replace`; a failed `up` removes
//! a lab it made afresh and leaves one that ran before, saying how to remove it.
//!
//! Labs are named after the test process (`cli<pid><tag>`) and taken down when a test ends,
//! also on a panic. `cargo test -p wyvern --test suite lab_cli::`.

use std::collections::BTreeMap;
use std::io::pipe;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const WYVERN: &str = env!("CARGO_BIN_EXE_wyvern");

/// A lab name unique to this process and call.
fn lab_name(tag: &str) -> String {
    format!("cli{:x}{tag}", std::process::id())
}

/// Takes lab `.0` down when dropped (the test's end, or a panic).
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.0, false) {
            eprintln!("tearing lab {} down: {e}", self.0);
        }
    }
}

/// `wyvern lab ARGS`, its output captured.
fn wyvern_lab(args: &[&str]) -> Output {
    Command::new(WYVERN)
        .arg("lab")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wyvern")
}

/// `wyvern lab ARGS` with stdout a pipe whose reader is gone; its output (stderr captured).
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = pipe().expect("pipe");
    drop(reader);
    Command::new(WYVERN)
        .arg("lab")
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run wyvern")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab that exists only on file: a state with a chassis, a VM and a network (whose daemons
/// and namespaces do not run), and the namespace of host `h1`.
fn paper_lab(name: &str) -> Down {
    let down = Down(name.to_owned());
    let dir = lab::names::state_dir(name);
    std::fs::create_dir_all(&dir).expect("state dir");
    let chassis = lab::ChassisState {
        netns: format!("wyl-{name}.c1"),
        rundir: dir.join("c1"),
        tunnel_ip: "172.31.0.1".parse().unwrap(),
        prefix_len: 24,
        agent_args: None,
        metrics_port: None,
        gateway: false,
    };
    let network = lab::NetworkState {
        id: "net-1".into(),
        project: None,
        mtu: 1450,
        subnets: Vec::new(),
        segment: lab::SegmentState::default(),
        external: false,
    };
    let state = lab::State {
        name: name.to_owned(),
        chassis: BTreeMap::from([("c1".to_owned(), chassis)]),
        networks: BTreeMap::from([("n".to_owned(), network)]),
        ..lab::State::default()
    };
    state.save(&dir).expect("save the state");
    let ns = lab::names::host_netns(name, "h1");
    let added = Command::new("ip").args(["netns", "add", &ns]).status();
    assert!(added.expect("ip netns add").success(), "ip netns add {ns}");
    down
}

#[test]
fn a_missing_lab_is_said_in_one_line_and_errors_once() {
    let _alone = crate::support::alone();
    let name = lab_name("m");
    let _down = Down(name.clone());
    for args in [
        vec!["exec", "--lab", &name, "h1", "--", "true"],
        vec!["status", &name],
        vec!["stop", "--lab", &name, "server-1"],
    ] {
        let out = wyvern_lab(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stdout(&out), "", "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("Error: no lab {name} ")),
            "{args:?}: {err}"
        );
    }
    // A cause is said once, not again by the error that wraps it.
    let out = wyvern_lab(&["up", "/nonexistent/lab.toml"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // Nothing was made for the missing lab.
    assert!(!lab::names::state_dir(&name).exists());
}

#[test]
fn an_invalid_file_is_refused_before_anything_starts() {
    let _alone = crate::support::alone();
    let name = lab_name("v");
    let _down = Down(name.clone());
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("cut.toml");
    let text = format!(
        "name = \"{name}\"\n[[chassis]]\nname = \"c1\"\n[[network]]\nname = \"n\"\n\
         [[network.subnet]]\ncidr = \"10.9.0.77/24\"\n"
    );
    std::fs::write(&file, text).expect("write the topology");
    let out = wyvern_lab(&["up", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    // One line, naming the subnet and the network address it probably meant.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("subnet n-1: cidr 10.9.0.77/24 is not a network address")
            && err.contains("the network address is 10.9.0.0/24"),
        "{err}"
    );
    // Nothing was started or written.
    assert!(!lab::names::state_dir(&name).exists());
    let prefix = format!("wyl-{name}.");
    assert!(!testbed::list_netns().iter().any(|n| n.starts_with(&prefix)));
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let _alone = crate::support::alone();
    let name = lab_name("p");
    let _down = paper_lab(&name);
    // The lab exists, and a host of it that is not there is said so, with those that are.
    let out = wyvern_lab(&["exec", "--lab", &name, "nope", "--", "true"]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("lab {name} has no host nope (it has c1)")),
        "{err}"
    );
    for args in [
        vec!["status", &name],
        vec!["status"],
        vec!["exec", "--lab", &name, "h1", "--", "seq", "1", "100000"],
        vec!["down", &name],
    ] {
        let out = into_closed_pipe(&args);
        assert_eq!(stderr(&out), "", "{args:?}: {:?}", out.status);
        // `exec` ends as its command does: killed by SIGPIPE, as a shell reports it.
        let code = if args[0] == "exec" { 141 } else { 0 };
        assert_eq!(out.status.code(), Some(code), "{args:?}");
    }
    // `down` went on after its reader was gone.
    assert!(!lab::names::state_dir(&name).exists());
    assert!(!testbed::list_netns().contains(&lab::names::host_netns(&name, "h1")));
}

/// A topology file of lab `name` with one chassis in `dir`, called `file`, with `server` as its
/// `[server]` section.
fn write_topology(dir: &Path, file: &str, name: &str, server: &str) -> PathBuf {
    let path = dir.join(file);
    let text = format!("name = \"{name}\"\n[server]\n{server}\n[[chassis]]\nname = \"c1\"\n");
    std::fs::write(&path, text).expect("write the topology");
    path
}

#[test]
fn up_runs_one_file_replaces_it_and_says_what_a_failure_left() {
    let _alone = crate::support::alone();
    let name = lab_name("u");
    let _down = Down(name.clone());
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = write_topology(dir.path(), "first.toml", &name, "");
    let second = write_topology(dir.path(), "second.toml", &name, "");
    let status = || stdout(&wyvern_lab(&["status", &name]));
    let from = |file: &Path| format!("from {})", file.canonicalize().unwrap().display());

    // Up with nobody reading its progress: it goes on to the end.
    let out = into_closed_pipe(&["up", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(status().lines().next().unwrap().ends_with(&from(&first)));

    // Another file with the same lab name: refused, in one line; nothing changes.
    let out = wyvern_lab(&["up", second.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is another file with the same lab name") && err.contains("--replace"),
        "{err}"
    );
    assert!(status().lines().next().unwrap().ends_with(&from(&first)));

    // With --replace: taken down and brought up from the other file.
    let out = into_closed_pipe(&["up", "--replace", second.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(status().lines().next().unwrap().ends_with(&from(&second)));

    // A failed up of the running lab (its server cannot listen where the file says) leaves it,
    // saying what runs and how to remove it.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = format!("listen = \"{}\"", taken.local_addr().unwrap());
    write_topology(dir.path(), "second.toml", &name, &listen);
    let out = wyvern_lab(&["up", second.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("up failed; the lab keeps what it has (")
            && err.contains("chassis c1")
            && err.contains(&format!("`wyvern lab down {name}`")),
        "{err}"
    );
    assert!(lab::names::state_dir(&name).exists());
    let out = wyvern_lab(&["down", &name]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A failed up of a new lab removes everything it had started.
    let out = wyvern_lab(&["up", second.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("up failed; everything it had started is removed")
            && err.contains("did not come up"),
        "{err}"
    );
    assert!(!lab::names::state_dir(&name).exists());
    let prefix = format!("wyl-{name}.");
    assert!(!testbed::list_netns().iter().any(|n| n.starts_with(&prefix)));
}
