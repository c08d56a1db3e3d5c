//! `wyvern trace` against a real lab (two chassis with Open vSwitch and agents; router r1 joins
//! network web to network app, which has no VM): traced from the switch, web1's packet to web2
//! goes over the tunnel to c2 and br-int holds exactly the computed flows; a spoofed one is
//! dropped by port security; an ARP request is answered by the responder; r1 answers a ping to
//! its address and routes onto app, where no port has the address; the computed flows agree; bad
//! input is an error with a message, not a panic.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lab::{Lab, LabOptions, Topology};

fn topology(name: &str) -> Topology {
    let text = format!(
        "name = \"{name}\"\n[underlay]\ncidr = \"172.31.47.0/24\"\n\
         [[chassis]]\nname = \"c1\"\n[[chassis]]\nname = \"c2\"\n\
         [[network]]\nname = \"web\"\n[[network.subnet]]\ncidr = \"10.0.0.0/24\"\n\
         [[network]]\nname = \"app\"\n[[network.subnet]]\ncidr = \"10.1.0.0/24\"\n\
         [[router]]\nname = \"r1\"\ninterfaces = [\"web-1\", \"app-1\"]\n\
         [[vm]]\nname = \"web1\"\nnetwork = \"web\"\nchassis = \"c1\"\nip = \"10.0.0.11\"\n\
         [[vm]]\nname = \"web2\"\nnetwork = \"web\"\nchassis = \"c2\"\nip = \"10.0.0.12\"\n"
    );
    Topology::parse(&text, Path::new("trace.toml")).expect("valid topology")
}

fn trace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wyvern"))
        .arg("trace")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run wyvern trace")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn trace_from_the_switch_of_a_lab() {
    let name = format!("tr{}", std::process::id() % 100_000);
    let opts = LabOptions {
        wyvern: env!("CARGO_BIN_EXE_wyvern").into(),
        progress: false,
    };
    // Dropping the lab tears it down, also when an assertion fails.
    let lab = Lab::up(&topology(&name), &opts).expect("lab up");

    // The agents program br-int shortly after the lab is up: trace until the flows are there.
    let want = "sent over the tunnel to chassis c2 (172.31.47.2) with VNI";
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let o = trace(&["--lab", &name, "--from-switch", "web1", "10.0.0.12"]);
        let text = stdout(&o);
        let converged = text.contains(want) && text.contains("they are exactly the");
        if converged || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("read from the switch at unix:"), "{text}");
    // What br-int holds is what the pipeline computes from the server's topology.
    assert!(
        text.contains("they are exactly the") && text.contains("flows the pipeline computes"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{want} 1 → for port web2 (VM web2)")),
        "{text}"
    );
    assert!(text.contains("owner: port "), "{text}");

    let spoofed = stdout(&trace(&[
        "--lab",
        &name,
        "web1",
        "10.0.0.12",
        "--src-ip",
        "10.0.0.99",
    ]));
    assert!(
        spoofed.contains(
            "dropped: port security (source 10.0.0.99 is not an address of port web1 (VM web1))"
        ),
        "{spoofed}"
    );
    let arp = stdout(&trace(&["--lab", &name, "web1", "10.0.0.12", "--arp"]));
    assert!(
        arp.contains("answered by the ARP responder for port web2 (VM web2): 10.0.0.12 is at"),
        "{arp}"
    );
    // Routing, from the switch: r1 answers a ping to its address on web, and routes a packet
    // onto app, where no port has its destination.
    let ping = stdout(&trace(&["--lab", &name, "web1", "10.0.0.1"]));
    assert!(
        ping.contains("table 21 (router-input, app routing): ")
            && ping.contains("owner: router r1 (")
            && !ping.contains("stale"),
        "{ping}"
    );
    assert!(
        ping.contains("answered by router r1 (")
            && ping.contains("): ICMP echo reply from 10.0.0.1"),
        "{ping}"
    );
    let routed = stdout(&trace(&["--lab", &name, "web1", "10.1.0.9"]));
    assert!(
        routed.contains("routed by router r1 via its interface on network app (")
            && routed.contains("): 10.1.0.0/24 (connected)")
            && routed.contains("where no port has 10.1.0.9: dropped (no next hop)"),
        "{routed}"
    );
    let computed = stdout(&trace(&[
        "--lab",
        &name,
        "--computed",
        "web2",
        "web1",
        "--tcp",
        "22",
    ]));
    assert!(computed.contains("computed by the pipeline"), "{computed}");
    assert!(
        computed.contains(
            "sent over the tunnel to chassis c1 (172.31.47.1) with VNI 1 → for port web1 (VM web1)"
        ),
        "{computed}"
    );

    for (args, msg) in [
        (
            vec!["--lab", &name, "web9", "10.0.0.12"],
            "no port or VM is called \"web9\"",
        ),
        (
            vec!["--lab", &name, "web1", "10.0.0."],
            "\"10.0.0.\" is not a valid IP address",
        ),
        (
            vec!["--lab", "nosuchlab", "web1", "10.0.0.12"],
            "no lab named \"nosuchlab\"",
        ),
    ] {
        let o = trace(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(msg) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    lab.down().expect("lab down");
}
