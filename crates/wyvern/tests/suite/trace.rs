//! `wyvern trace` against a real lab (two chassis with Open vSwitch and agents; router r1 joins
//! network web to network app, which has no VM): traced from the switch, web1's packet to web2
//! goes over the tunnel to c2 and br-int holds exactly the computed flows; a spoofed one is
//! dropped by port security; an ARP request is answered by the responder; r1 answers a ping to
//! its address and routes onto app, where no port has the address; the computed flows agree; an
//! ARP probe, a DHCP renewal, a packet from the tunnel and a VLAN-tagged one from the command
//! line (the only lab without `--lab`); bad input is an error with a message, not a panic nor a
//! backtrace even with `RUST_BACKTRACE` set.

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

/// `wyvern trace ARGS`, with backtraces asked for: a user's error must still print none.
fn trace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wyvern"))
        .arg("trace")
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run wyvern trace")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn trace_from_the_switch_of_a_lab() {
    let _alone = crate::support::alone();
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
    // Sent from c1's own tunnel address.
    assert!(
        text.contains("tun_src=172.31.47.1,tun_dst=172.31.47.2"),
        "{text}"
    );

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

    // Packets the command line builds: an ARP probe stops at port security, which the trace
    // says (Open vSwitch agrees: see trace_differential.rs); a DHCP renewal goes to the router's MAC (it holds the gateway, the server's
    // address) and to the agent; web2's packet arrives from c2 over the tunnel.
    let probe = stdout(&trace(&["--lab", &name, "web1", "--arp", "probe"]));
    assert!(
        probe.contains("ARP probe from port web1 (VM web1)")
            && probe.contains("dropped: port security (an ARP probe (sender 0.0.0.0)")
            && !probe.contains("answered by"),
        "{probe}"
    );
    let renew = stdout(&trace(&["--lab", &name, "web1", "--dhcp", "renew"]));
    assert!(
        renew.contains("a renewal is unicast to the DHCP server 10.0.0.1 at ")
            && renew
                .contains("as the ARP responder answers for router r1's interface on network web")
            && renew.contains("DHCP request: sent to the agent of this chassis"),
        "{renew}"
    );
    let tunnelled = stdout(&trace(&[
        "--lab",
        &name,
        "web2",
        "web1",
        "--from-tunnel",
        "c2",
    ]));
    assert!(
        tunnelled.contains("(the tunnel port, from chassis c2).")
            && tunnelled.contains("delivered to port web1 (VM web1) on this chassis"),
        "{tunnelled}"
    );
    // Without --lab, the only lab (as `wyvern lab exec` picks it), unless others are up.
    let o = trace(&["web1", "10.0.0.12", "--vlan", "7"]);
    if lab::names::labs() == [name.clone()] {
        let text = stdout(&o);
        // web1 is no trunk's parent: its VIF is an access port, so the tagged frame stops at
        // ingress (tests/suite/trunks.rs traces what a trunk parent's tagged frames do).
        assert!(
            text.contains("tagged with VLAN 7 (802.1Q)")
                && text.contains(
                    "dropped at ingress: no flow of table 0 (ingress, app classifier) admits this packet from port web1 (VM web1)"
                ),
            "{text}"
        );
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("several labs are up ("), "{err}");
    }

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
            err.starts_with("Error: ")
                && err.contains(msg)
                && !err.contains("panicked")
                && !err.to_lowercase().contains("backtrace"),
            "{args:?}: {err}"
        );
    }
    lab.down().expect("lab down");
}
