//! Drives the server with the real `openstack` CLI (python-openstackclient, auth type `none`), the way an
//! operator would: create, list, show, set and delete for networks, subnets, ports, security groups and
//! rules, address groups (their addresses added and removed), routers and floating IPs, lookups by name,
//! router interfaces by subnet and by port, the router's external gateway, and floating IP association.
//!
//! The CLI is `<repo>/.venv/bin/openstack` (made by `scripts/install-deps`) or `$WYVERN_OPENSTACK_CLI`.
//! Starting the CLI costs about a second of CPU, so besides single commands the test feeds several
//! commands to one CLI process (its interactive mode reads them from stdin, splitting lines on spaces;
//! so no argument here contains one), and runs three independent sequences in parallel threads. `WYVERN_OPENSTACK_URL=http://HOST:PORT` drives another server instead
//! of an in-process Wyvern.

use crate::support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// The CLI pointed at one server.
struct Cli {
    exe: PathBuf,
    url: String,
}

impl Cli {
    /// A CLI process with the endpoint in its environment and no other `OS_*` settings.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("OS_")) {
            command.env_remove(name);
        }
        command
            .env("OS_AUTH_TYPE", "none")
            .env("OS_ENDPOINT", &self.url);
        command
    }

    /// Runs one command line (split on whitespace) with `-f json` and parses what it prints; panics
    /// with the CLI's stderr on failure.
    fn json(&self, line: &str) -> Value {
        let output = self
            .command()
            .args(line.split_whitespace())
            .args(["-f", "json"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display()));
        let what = format!("`openstack {line} -f json`");
        check(&what, &output, output.status.success());
        let out = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {out}"))
    }

    /// Runs several command lines in one CLI process and returns the JSON documents they print, in
    /// order (commands such as `set` or `delete` print none). Any message on stderr fails the test: the
    /// interactive mode reports errors there and exits with status 1 even when everything worked.
    fn batch(&self, lines: &[&str]) -> Vec<Value> {
        let script: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display()));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .expect("write the commands");
        let output = child.wait_with_output().expect("wait for the CLI");
        let what = format!("openstack <<EOF\n{script}EOF");
        check(
            &what,
            &output,
            output.stderr.iter().all(u8::is_ascii_whitespace),
        );
        let out = String::from_utf8_lossy(&output.stdout);
        serde_json::Deserializer::from_str(&out)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{what} printed something else than JSON ({e}): {out}"))
    }
}

/// Panics with the CLI's output unless `ok`.
fn check(what: &str, output: &Output, ok: bool) {
    assert!(
        ok,
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn cli_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WYVERN_OPENSTACK_CLI") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack")
}

/// The string at `key` of a CLI object.
fn text<'a>(object: &'a Value, key: &str) -> &'a str {
    object[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {object}"))
}

/// The `Name` column of a CLI list, sorted.
fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|row| text(row, "Name").to_string())
        .collect();
    names.sort();
    names
}

/// The addresses of a port's `fixed_ips` as the CLI prints them.
fn addresses(port: &Value) -> Vec<String> {
    port["fixed_ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no fixed_ips in {port}"))
        .iter()
        .map(|ip| text(ip, "ip_address").to_string())
        .collect()
}

/// The length of a JSON list (0 for anything else).
fn count(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

/// The JSON documents of a batch, as many as the caller expects.
fn docs<const N: usize>(documents: Vec<Value>) -> [Value; N] {
    documents.try_into().unwrap_or_else(|d: Vec<Value>| {
        panic!("expected {N} JSON documents, got {}: {d:?}", d.len())
    })
}

#[test]
fn openstack_cli_drives_every_resource() {
    let exe = cli_path();
    assert!(
        exe.exists(),
        "the OpenStack CLI is missing at {}: run scripts/install-deps (or set WYVERN_OPENSTACK_CLI)",
        exe.display()
    );
    let local;
    let url = match std::env::var("WYVERN_OPENSTACK_URL") {
        Ok(url) => url,
        Err(_) => {
            local = support::Server::start();
            local.base.clone()
        }
    };
    let cli = Cli { exe, url };
    std::thread::scope(|scope| {
        let sequences = [
            scope.spawn(|| networks_subnets_ports(&cli)),
            scope.spawn(|| security_groups(&cli)),
            scope.spawn(|| routers_and_floating_ips(&cli)),
        ];
        for sequence in sequences {
            if let Err(panic) = sequence.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

fn networks_subnets_ports(cli: &Cli) {
    let net = cli.json("network create a-net --description first --mtu 1400");
    assert_eq!(net["name"], "a-net");
    assert_eq!(net["mtu"], 1400);
    assert_eq!(net["admin_state_up"], true);
    assert_eq!(net["status"], "ACTIVE");
    assert_eq!(net["port_security_enabled"], true);
    assert_eq!(net["router:external"], false);
    assert_eq!(net["provider:network_type"], "vxlan");
    let net_id = text(&net, "id");

    let flat = cli.json(
        "network create a-flat --share --provider-network-type flat \
         --provider-physical-network physnet-a",
    );
    assert_eq!(flat["provider:network_type"], "flat");
    assert_eq!(flat["provider:physical_network"], "physnet-a");
    assert_eq!(flat["shared"], true);

    let [listed, shown] = docs(cli.batch(&[
        "network list --name a-net -f json",
        "network set a-net --name a-net2 --description renamed --mtu 1300",
        "network show a-net2 -f json",
    ]));
    assert_eq!(names(&listed), ["a-net"]);
    assert_eq!(listed[0]["ID"], net_id);
    assert_eq!(shown["id"], net_id);
    assert_eq!(shown["description"], "renamed");
    assert_eq!(shown["mtu"], 1300);

    let sub = cli.json(
        "subnet create a-sub --network a-net2 --subnet-range 192.0.2.0/24 \
         --allocation-pool start=192.0.2.10,end=192.0.2.20 --dns-nameserver 192.0.2.53 \
         --host-route destination=198.51.100.0/24,gateway=192.0.2.1",
    );
    assert_eq!(sub["cidr"], "192.0.2.0/24");
    assert_eq!(sub["ip_version"], 4);
    assert_eq!(sub["gateway_ip"], "192.0.2.1");
    assert_eq!(sub["enable_dhcp"], true);
    assert_eq!(sub["network_id"], net_id);
    assert_eq!(
        sub["allocation_pools"],
        json!([{"start": "192.0.2.10", "end": "192.0.2.20"}])
    );
    assert_eq!(sub["dns_nameservers"], json!(["192.0.2.53"]));
    assert_eq!(
        sub["host_routes"],
        json!([{"destination": "198.51.100.0/24", "nexthop": "192.0.2.1"}])
    );

    let [sub6, subnets, sub] = docs(cli.batch(&[
        "subnet create a-sub6 --network a-net2 --ip-version 6 --subnet-range 2001:db8:a::/64 \
         --ipv6-ra-mode slaac --ipv6-address-mode slaac -f json",
        "subnet list --network a-net2 -f json",
        "subnet set a-sub --name a-sub-r --no-dhcp --dns-nameserver 192.0.2.54",
        "subnet show a-sub-r -f json",
    ]));
    assert_eq!(sub6["ip_version"], 6);
    assert_eq!(sub6["ipv6_ra_mode"], "slaac");
    assert_eq!(sub6["ipv6_address_mode"], "slaac");
    assert_eq!(names(&subnets), ["a-sub", "a-sub6"]);
    assert_eq!(sub["enable_dhcp"], false);
    // The CLI sends the added server first, and Neutron keeps the order it is given.
    assert_eq!(sub["dns_nameservers"], json!(["192.0.2.54", "192.0.2.53"]));

    let p1 = cli
        .json("port create a-p1 --network a-net2 --fixed-ip subnet=a-sub-r,ip-address=192.0.2.15");
    assert!(addresses(&p1).contains(&"192.0.2.15".to_string()), "{p1}");
    assert!(text(&p1, "mac_address").starts_with("fa:16:3e:"), "{p1}");
    assert_eq!(p1["status"], "DOWN");
    assert_eq!(p1["port_security_enabled"], true);
    assert_eq!(count(&p1["security_group_ids"]), 1, "{p1}");

    let p2 = cli.json(
        "port create a-p2 --network a-net2 --fixed-ip subnet=a-sub-r \
         --allowed-address ip-address=192.0.2.200 \
         --extra-dhcp-option name=bootfile-name,value=pxelinux.0 \
         --host compute-1 --device-owner compute:nova",
    );
    let v4: Vec<String> = addresses(&p2)
        .into_iter()
        .filter(|a| a.starts_with("192.0.2."))
        .collect();
    assert_eq!(v4.len(), 1, "{p2}");
    let last: u8 = v4[0]
        .rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("IPv4");
    assert!((10..=20).contains(&last), "{} is outside the pool", v4[0]);
    assert_eq!(p2["allowed_address_pairs"][0]["ip_address"], "192.0.2.200");
    assert_eq!(p2["extra_dhcp_opts"][0]["opt_value"], "pxelinux.0");
    assert_eq!(p2["binding_host_id"], "compute-1");
    assert_eq!(p2["device_owner"], "compute:nova");

    let [ports, p1, gone] = docs(cli.batch(&[
        "port list --network a-net2 -f json",
        "port set a-p1 --name a-p1r --no-security-group --disable-port-security",
        "port show a-p1r -f json",
        "port delete a-p1r a-p2",
        "subnet delete a-sub-r a-sub6",
        "network delete a-net2 a-flat",
        "network list --name a-net2 -f json",
    ]));
    assert_eq!(names(&ports), ["a-p1", "a-p2"]);
    assert_eq!(p1["port_security_enabled"], false);
    assert_eq!(p1["security_group_ids"], json!([]));
    assert_eq!(gone, json!([]));
}

fn security_groups(cli: &Cli) {
    let sg = cli.json("security group create b-sg --description web");
    let sg_id = text(&sg, "id");
    let mut defaults: Vec<(&str, &str)> = sg["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules in {sg}"))
        .iter()
        .map(|r| (text(r, "direction"), text(r, "ethertype")))
        .collect();
    defaults.sort();
    assert_eq!(
        defaults,
        [("egress", "IPv4"), ("egress", "IPv6")],
        "a new group has one egress rule per ethertype: {sg}"
    );

    let ssh = cli
        .json("security group rule create b-sg --protocol tcp --dst-port 22 --remote-ip 0.0.0.0/0");
    assert_eq!(ssh["protocol"], "tcp");
    assert_eq!(ssh["port_range_min"], 22);
    assert_eq!(ssh["port_range_max"], 22);
    assert_eq!(ssh["direction"], "ingress");
    assert_eq!(ssh["ether_type"], "IPv4");
    assert_eq!(ssh["remote_ip_prefix"], "0.0.0.0/0");
    assert_eq!(ssh["security_group_id"], sg_id);

    let [dns, ping, listed, groups] = docs(cli.batch(&[
        "security group rule create b-sg --protocol 17 --dst-port 53:54 --remote-group b-sg -f json",
        "security group rule create b-sg --protocol icmp --icmp-type 8 --icmp-code 0 \
         --ethertype IPv4 -f json",
        "security group rule list b-sg -f json",
        "security group list -f json",
    ]));
    assert_eq!(dns["protocol"], "17");
    assert_eq!(dns["port_range_min"], 53);
    assert_eq!(dns["port_range_max"], 54);
    assert_eq!(dns["remote_group_id"], sg_id);
    assert_eq!(dns["remote_ip_prefix"], Value::Null);
    assert_eq!(ping["protocol"], "icmp");
    assert_eq!(ping["port_range_min"], 8);
    assert_eq!(ping["port_range_max"], 0);
    assert_eq!(count(&listed), 5, "{listed}");
    assert!(names(&groups).contains(&"b-sg".to_string()), "{groups}");

    let delete_rule = format!("security group rule delete {}", text(&dns, "id"));
    let [sg, groups] = docs(cli.batch(&[
        "security group set b-sg --name b-sg2 --description ssh",
        &delete_rule,
        "security group show b-sg2 -f json",
        "security group delete b-sg2",
        "security group list -f json",
    ]));
    assert_eq!(sg["description"], "ssh");
    assert_eq!(count(&sg["rules"]), 4, "{sg}");
    assert!(
        !names(&groups).iter().any(|n| n.starts_with("b-sg")),
        "{groups}"
    );
    address_groups(cli);
}

/// Address groups, and a stateless group with a rule from one.
fn address_groups(cli: &Cli) {
    let [ag, added, removed, created, rule, stateless] = docs(cli.batch(&[
        "address group create b-ag --description office --address 10.0.0.1/24 \
         --address 192.0.2.7 -f json",
        "address group set b-ag --address 2001:db8::/64 --address 198.51.100.0/24",
        "address group show b-ag -f json",
        "address group unset b-ag --address 10.0.0.0/24",
        "address group show b-ag -f json",
        "security group create b-stateless --stateless -f json",
        "security group rule create b-stateless --remote-address-group b-ag -f json",
        "security group show b-stateless -f json",
    ]));
    let sorted = |v: &Value| {
        let mut a: Vec<String> = v
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect();
        a.sort();
        a
    };
    assert_eq!(ag["description"], "office");
    assert_eq!(
        sorted(&ag["addresses"]),
        ["10.0.0.0/24", "192.0.2.7/32"],
        "{ag}"
    );
    assert_eq!(
        sorted(&added["addresses"]),
        [
            "10.0.0.0/24",
            "192.0.2.7/32",
            "198.51.100.0/24",
            "2001:db8::/64"
        ],
        "{added}"
    );
    assert_eq!(
        sorted(&removed["addresses"]),
        ["192.0.2.7/32", "198.51.100.0/24", "2001:db8::/64"],
        "{removed}"
    );
    assert_eq!(rule["remote_address_group_id"], ag["id"], "{rule}");
    assert_eq!(created["stateful"], false, "{created}");
    assert_eq!(stateless["stateful"], false, "{stateless}");
    assert_eq!(count(&stateless["rules"]), 3, "{stateless}");
    let in_use = cli
        .command()
        .args(["address", "group", "delete", "b-ag"])
        .output()
        .expect("run the CLI");
    let stderr = String::from_utf8_lossy(&in_use.stderr);
    assert!(
        !in_use.status.success() && stderr.contains("in use"),
        "deleting an address group a rule uses: {stderr}"
    );
    let [groups] = docs(cli.batch(&[
        &format!("security group rule delete {}", text(&rule, "id")),
        "address group delete b-ag",
        "address group list -f json",
    ]));
    assert_eq!(count(&groups), 0, "{groups}");
}

fn routers_and_floating_ips(cli: &Cli) {
    let [ext, _, _, sub, _, sub2, rport, vm, vm2] = docs(cli.batch(&[
        "network create c-ext --external -f json",
        "subnet create c-ext-sub --network c-ext --subnet-range 203.0.113.0/24 --no-dhcp -f json",
        "network create c-net -f json",
        "subnet create c-sub --network c-net --subnet-range 10.1.0.0/24 -f json",
        "network create c-net2 -f json",
        "subnet create c-sub2 --network c-net2 --subnet-range 10.2.0.0/24 -f json",
        "port create c-rport --network c-net2 --fixed-ip subnet=c-sub2,ip-address=10.2.0.1 -f json",
        "port create c-vm --network c-net --fixed-ip ip-address=10.1.0.50 -f json",
        "port create c-vm2 --network c-net --fixed-ip ip-address=10.1.0.51 -f json",
    ]));
    assert_eq!(ext["router:external"], true);
    let ext_id = text(&ext, "id");

    let router = cli.json("router create c-r");
    assert_eq!(router["status"], "ACTIVE");
    assert_eq!(router["admin_state_up"], true);
    assert_eq!(router["external_gateway_info"], Value::Null);
    let router_id = text(&router, "id");

    let show_rport = format!("port show {} -f json", text(&rport, "id"));
    let [router, rport] = docs(cli.batch(&[
        "router add subnet c-r c-sub",
        "router add port c-r c-rport",
        "router set c-r --external-gateway c-ext",
        "router set c-r --route destination=192.168.50.0/24,gateway=10.1.0.99",
        "router show c-r -f json",
        &show_rport,
    ]));
    let gateway = &router["external_gateway_info"];
    assert_eq!(gateway["network_id"], ext_id);
    assert_eq!(gateway["enable_snat"], true);
    let gateway_ip = text(&gateway["external_fixed_ips"][0], "ip_address");
    assert!(gateway_ip.starts_with("203.0.113."), "{router}");
    assert_eq!(
        router["routes"],
        json!([{"destination": "192.168.50.0/24", "nexthop": "10.1.0.99"}])
    );
    let mut interfaces: Vec<(&str, &str)> = router["interfaces_info"]
        .as_array()
        .unwrap_or_else(|| panic!("no interfaces_info in {router}"))
        .iter()
        .map(|i| (text(i, "subnet_id"), text(i, "ip_address")))
        .collect();
    interfaces.sort();
    let mut expected = vec![
        (text(&sub, "id"), "10.1.0.1"),
        (text(&sub2, "id"), "10.2.0.1"),
    ];
    expected.sort();
    assert_eq!(interfaces, expected);
    assert_eq!(rport["device_owner"], "network:router_interface");
    assert_eq!(rport["device_id"], router_id);

    let fip = cli.json("floating ip create c-ext --port c-vm");
    assert_eq!(fip["port_id"], vm["id"]);
    assert_eq!(fip["fixed_ip_address"], "10.1.0.50");
    assert_eq!(fip["router_id"], router_id);
    assert_eq!(fip["floating_network_id"], ext_id);
    assert!(
        text(&fip, "floating_ip_address").starts_with("203.0.113."),
        "{fip}"
    );

    let spare = cli.json("floating ip create c-ext --floating-ip-address 203.0.113.77");
    assert_eq!(spare["floating_ip_address"], "203.0.113.77");
    assert_eq!(spare["port_id"], Value::Null);
    assert_eq!(spare["router_id"], Value::Null);

    let show_spare = format!("floating ip show {} -f json", text(&spare, "id"));
    let [associated, disassociated, fips] = docs(cli.batch(&[
        "floating ip set --port c-vm2 203.0.113.77",
        "floating ip show 203.0.113.77 -f json",
        "floating ip unset --port 203.0.113.77",
        &show_spare,
        "floating ip list --network c-ext -f json",
    ]));
    assert_eq!(associated["port_id"], vm2["id"]);
    assert_eq!(associated["fixed_ip_address"], "10.1.0.51");
    assert_eq!(associated["router_id"], router_id);
    assert_eq!(disassociated["port_id"], Value::Null);
    assert_eq!(disassociated["fixed_ip_address"], Value::Null);
    assert_eq!(count(&fips), 2, "{fips}");

    // Neutron refuses to remove an interface that a route needs, so the route goes first.
    let delete_fips = format!("floating ip delete {} 203.0.113.77", text(&fip, "id"));
    let [router, routers, ports] = docs(cli.batch(&[
        &delete_fips,
        "router unset --external-gateway --route destination=192.168.50.0/24,gateway=10.1.0.99 c-r",
        "router remove port c-r c-rport",
        "router remove subnet c-r c-sub",
        "router show c-r -f json",
        "router delete c-r",
        "router list --name c-r -f json",
        "port list --network c-net2 -f json",
    ]));
    assert_eq!(router["external_gateway_info"], Value::Null);
    assert_eq!(router["routes"], json!([]));
    assert_eq!(router["interfaces_info"], json!([]));
    assert_eq!(routers, json!([]));
    assert_eq!(
        ports,
        json!([]),
        "removing an interface by port deletes the port"
    );
}
