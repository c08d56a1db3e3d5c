//! Conformance with the real Neutron: replays `reference/scenario.json` against Wyvern and compares every
//! answer with the reference Neutron's recorded answer (`reference/neutron-recording.json`, made by
//! `reference/record.py`). The same for the load-balancer API and the real Octavia:
//! `reference/octavia-scenario.json` and `reference/octavia-recording.json`. A scenario's `setup`
//! steps run against Wyvern only, before the others (the reference Octavia's no-op network needs no
//! subnet; `reference_bound` gives the recording the values they bind), and its top-level
//! `volatile` keys are volatile in every step (the Octavia scenario's statuses: Wyvern documents its
//! own, see `api::lbaas`). And for service function chaining and the real networking-sfc (in the
//! reference Neutron): `reference/sfc-scenario.json` and `reference/sfc-recording.json`; for trunks
//! and the reference Neutron's trunk plugin: `reference/trunk-scenario.json` and
//! `reference/trunk-recording.json`.
//!
//! The comparison rules, all of them:
//! 0. The recording is fresh: every recorded request (name, method, path, headers, body) is the
//!    scenario's step as it is now, filled in with the values the reference bound ([`stale_steps`]).
//! 1. The status codes are equal.
//! 2. The bodies are equal after both sides are normalised the same way:
//!    - a UUID that a step bound (scenario `bind`) becomes `{name}`, any other UUID `<uuid>`, also inside
//!      strings such as pagination links; so ids must be consistent, not equal;
//!    - the server's own base URL becomes `{base}`, and the query parameters of a link are sorted;
//!    - every object with an `id` is followed across the steps, on each side separately
//!      ([`Tracker`]): its `revision_number` (an integer) reads as its increase since the object was
//!      last shown, so the increases must equal Neutron's; `created_at` (`YYYY-MM-DDTHH:MM:SSZ`,
//!      Octavia's `YYYY-MM-DDTHH:MM:SS.ffffff`) must never change; `updated_at` must never go back
//!      and must change where Neutron's did (Neutron's timestamps have whole seconds: Wyvern's may
//!      look unchanged when it is the second of the request, and may change where Neutron's stayed
//!      although the object was revised); `standard_attr_id` must be an integer, constant for
//!      the object and no other object's;
//!    - what a request fixed is compared exactly: an address, MAC or segmentation id that a request
//!      of this or an earlier step sent. What the server picks is checked for what it must be: an
//!      address in `fixed_ips`, `external_fixed_ips`, `floating_ip_address` or `fixed_ip_address`
//!      that no request sent must be the EUI-64 address of the port's MAC in the prefix of its
//!      SLAAC (or dhcpv6-stateless) subnet, or else lie in the allocation pools of its subnet
//!      (subnets as that side last showed them), and the pool addresses of one answer must differ;
//!      a MAC no request sent must be a lower-case MAC (in an allowed address pair the port's own),
//!      a `provider:segmentation_id` an integer or null;
//!    - `NeutronError.message` may be any string (its `type` and `detail` are compared);
//!    - the keys listed in a step's `volatile` (and the scenario's top-level `volatile`) need only the
//!      same JSON type; addresses, MACs, `fixed_ips`, revisions and timestamps may not be listed
//!      there (the rules above check them);
//!    - arrays are multisets, except `fixed_ips` (the order of the request), `dns_nameservers` (the
//!      resolver preference) and the top-level collection of a list whose path has `sort_key`;
//!    - a `compare: "shape"` step compares only keys and JSON types (arrays as multisets of shapes);
//!    - a `compare: "extensions"` step compares the sets of extension aliases exactly, less the
//!      documented deviations [`WYVERN_ONLY_EXTENSIONS`] and [`NEUTRON_ONLY_EXTENSIONS`] (each
//!      with its reason), and every extension both list by shape.
//! 3. One documented exception, where the reference differs from a deployed Neutron (see
//!    ../shared/design/reference-neutron.md): its tables come from the models, not from migrations, so the
//!    templates of default security-group rules are empty. A deployed Neutron gives every new group an
//!    egress rule per ethertype and the project's `default` group also an ingress rule per ethertype from
//!    the group itself; [`add_deployed_default_rules`] adds those to every recorded security group before
//!    comparing. (The other artifact, `binding:vif_type` `binding_failed` for lack of an L2 agent, is
//!    declared `volatile` in the scenario's binding steps.) The same for what only an agent shows: a
//!    step's `deployed` values (dotted paths such as `port.device_owner`) replace those of the
//!    recorded body, as [`apply_deployed`] does (a trunk's subport shows `device_owner`
//!    `trunk:subport` once the openvswitch agent wired the trunk, at once with OVN). A `deployed`
//!    `"port.revision_number": "+N"` says that the port has N revisions more from then on (each
//!    change the agent or OVN makes to a subport), see [`Tracker::deployed_revisions`]; a step's
//!    `"revisions": "any"` leaves its revision increases uncompared (the reference's failing port
//!    bindings, for lack of an agent, revise the port a number of times a deployed one does not).
//! 4. Wyvern's own API extensions (announced in `/v2.0/extensions`) add attributes the reference
//!    Neutron does not have, listed in [`WYVERN_EXTENSION_ATTRIBUTES`] by the kind of object that
//!    carries them: such a key in a Wyvern object where Neutron's object has none is not a
//!    difference. Every other key, and these keys wherever Neutron has them, are compared as above;
//!    their values are Wyvern's own tests' business.
//! 5. The reference's quotas list resources Wyvern does not serve (subnet pools, RBAC policies,
//!    and those of the reference's service plugins: trunks, SFC), listed in
//!    [`NEUTRON_ONLY_QUOTA_RESOURCES`]: such a key of a quota object (`quota`, or an element of
//!    `quotas`) that Wyvern's object lacks is not a difference.
//!
//! `WYVERN_CONFORMANCE_URL=http://HOST:PORT` replays against another server instead of an in-process
//! Wyvern (e.g. the reference itself, to check the rules: with `WYVERN_CONFORMANCE_RAW=1`, which leaves
//! out the exception, a fresh reference matches its recording).

use crate::support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, Value, json};

const SCENARIO: &str = include_str!("../reference/scenario.json");
const RECORDING: &str = include_str!("../reference/neutron-recording.json");
const OCTAVIA_SCENARIO: &str = include_str!("../reference/octavia-scenario.json");
const OCTAVIA_RECORDING: &str = include_str!("../reference/octavia-recording.json");
const SFC_SCENARIO: &str = include_str!("../reference/sfc-scenario.json");
const SFC_RECORDING: &str = include_str!("../reference/sfc-recording.json");
const TRUNK_SCENARIO: &str = include_str!("../reference/trunk-scenario.json");
const TRUNK_RECORDING: &str = include_str!("../reference/trunk-recording.json");

/// What one step got back.
struct Answer {
    status: u16,
    body: Value,
    /// The first and last wall-clock second of the exchange (`YYYY-MM-DDTHH:MM:SS`), when known:
    /// a timestamp of that second may look unchanged although the object changed.
    seconds: Option<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wyvern_answers_like_the_reference_neutron() {
    conforms(SCENARIO, RECORDING, "Neutron").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wyvern_answers_like_the_reference_octavia() {
    conforms(OCTAVIA_SCENARIO, OCTAVIA_RECORDING, "Octavia").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wyvern_answers_like_the_reference_networking_sfc() {
    conforms(SFC_SCENARIO, SFC_RECORDING, "Neutron with networking-sfc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wyvern_answers_like_the_reference_neutron_trunk_plugin() {
    conforms(
        TRUNK_SCENARIO,
        TRUNK_RECORDING,
        "Neutron with its trunk plugin",
    )
    .await;
}

/// Replays a scenario against Wyvern and compares every answer with the reference's recorded one.
async fn conforms(scenario: &str, recording: &str, reference: &str) {
    let scenario: Value = serde_json::from_str(scenario).expect("the scenario is JSON");
    let recording: Value = serde_json::from_str(recording).expect("the recording is JSON");
    let stale = stale_steps(&scenario, &recording);
    assert!(
        stale.is_empty(),
        "the recording is stale: re-record it against the reference {reference} \
         (tests/reference/README.md)\n{}",
        stale.join("\n")
    );
    let steps = scenario["steps"].as_array().expect("scenario steps");

    let local;
    let base = match std::env::var("WYVERN_CONFORMANCE_URL") {
        Ok(url) => url.trim_end_matches('/').to_string(),
        Err(_) => {
            local = support::Server::start();
            local.base.clone()
        }
    };
    let deployed_exception = std::env::var_os("WYVERN_CONFORMANCE_RAW").is_none();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");

    // Set up what only Wyvern needs (its bindings stand for the recording's `reference_bound`), then
    // replay everything, so that ids bound late still read as their names in earlier steps.
    let mut bound: HashMap<String, Value> = HashMap::new();
    let identities = &scenario["identities"];
    for step in scenario["setup"].as_array().into_iter().flatten() {
        let answer = replay(&client, &base, identities, step, &bound).await;
        let answer = answer.unwrap_or_else(|e| panic!("setup {}: {e}", step["name"]));
        for (name, path) in step["bind"].as_object().into_iter().flatten() {
            let value = lookup(&answer.body, path.as_str().unwrap_or_default());
            let value = value.unwrap_or_else(|| panic!("setup {}: {}", step["name"], answer.body));
            bound.insert(name.clone(), value.clone());
        }
    }
    let mut answers: Vec<Result<Answer, String>> = Vec::new();
    for step in steps {
        let answer = replay(&client, &base, &scenario["identities"], step, &bound).await;
        if let Ok(answer) = &answer {
            for (name, path) in step["bind"].as_object().into_iter().flatten() {
                let path = path.as_str().expect("bind paths are strings");
                if let Some(value) = lookup(&answer.body, path) {
                    bound.insert(name.clone(), value.clone());
                }
            }
        }
        answers.push(answer);
    }

    let failures = compare(
        &scenario,
        &recording,
        &answers,
        &bound,
        &base,
        deployed_exception,
    );
    assert!(
        failures.is_empty(),
        "{} of {} steps differ from the reference {reference}:\n\n{}\n",
        failures.len(),
        steps.len(),
        failures.join("\n\n")
    );
}

/// Compares Wyvern's answers (`ours`: what its steps bound; `base`: its URL) with the recording,
/// step by step: one text per differing step.
fn compare(
    scenario: &Value,
    recording: &Value,
    answers: &[Result<Answer, String>],
    ours: &HashMap<String, Value>,
    base: &str,
    deployed_exception: bool,
) -> Vec<String> {
    let steps = scenario["steps"].as_array().expect("scenario steps");
    let recorded = recording["steps"].as_array().expect("recorded steps");
    let ours = symbols(ours.iter());
    let reference_bound = scenario["reference_bound"]
        .as_object()
        .into_iter()
        .flatten();
    let theirs = symbols(
        recorded
            .iter()
            .flat_map(|s| s["bound"].as_object().into_iter().flatten())
            .chain(reference_bound),
    );
    let their_base = recording["base_url"].as_str().expect("recorded base_url");
    let mut requested = Requested::default();
    let (mut their_objects, mut our_objects) = (Tracker::default(), Tracker::default());
    let mut failures = Vec::new();
    for (index, ((step, record), answer)) in steps.iter().zip(recorded).zip(answers).enumerate() {
        let title = format!(
            "step {} {}: {} {} (as {})",
            index + 1,
            step["name"].as_str().unwrap_or("?"),
            step["method"].as_str().unwrap_or("?"),
            step["path"].as_str().unwrap_or("?"),
            step["as"].as_str().unwrap_or("admin"),
        );
        requested.add(None, &step["body"]);
        let mut expected = record["response"]["body"].clone();
        if deployed_exception {
            let method = step["method"].as_str().unwrap_or("GET");
            let shape = RuleShape::of(method, &expected);
            add_deployed_default_rules(&mut expected, shape);
            apply_deployed(&mut expected, &step["deployed"]);
        }
        if deployed_exception {
            their_objects.deployed_revisions(&expected, &step["deployed"]);
        }
        let revisions = StepKind {
            compare: step["revisions"] != json!("any"),
            write: step["method"] != json!("GET"),
        };
        let (expected, their_problems) =
            their_objects.annotate(&expected, &requested, None, revisions);
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                failures.push(format!("{title}\n  not sent: {err}"));
                continue;
            }
        };
        let mut diffs: Vec<String> = their_problems
            .into_iter()
            .map(|p| format!("the reference's own answer: {p}"))
            .collect();
        let their_status = record["response"]["status"].as_u64().unwrap_or(0);
        if u64::from(answer.status) != their_status {
            diffs.push(format!(
                "status: {their_status} recorded, Wyvern {}",
                answer.status
            ));
        }
        for (name, path) in step["bind"].as_object().into_iter().flatten() {
            if lookup(&answer.body, path.as_str().unwrap_or("")).is_none() {
                diffs.push(format!("cannot bind {name} from {path} of Wyvern's answer"));
            }
        }
        let seconds = answer.seconds.as_ref();
        let (actual, our_problems) =
            our_objects.annotate(&answer.body, &requested, seconds, revisions);
        diffs.extend(our_problems);
        let rules = Rules::of(scenario, step);
        let expected = rules.normalize(&expected, &theirs, their_base);
        let actual = rules.normalize(&actual, &ours, base);
        if step["compare"] == json!("extensions") {
            compare_extensions(&expected, &actual, deployed_exception, &mut diffs);
        } else {
            diff("$", &expected, &actual, &mut diffs);
        }
        if !diffs.is_empty() {
            failures.push(format!("{title}\n  {}", diffs.join("\n  ")));
        }
    }
    failures
}

/// Where the recording no longer records the scenario (rule 0 of the module documentation): each
/// step's request as the scenario now makes it, filled in with what the reference bound, must be
/// the recorded request.
fn stale_steps(scenario: &Value, recording: &Value) -> Vec<String> {
    let steps = scenario["steps"].as_array().expect("scenario steps");
    let recorded = recording["steps"].as_array().expect("recorded steps");
    let mut out = Vec::new();
    if steps.len() != recorded.len() {
        out.push(format!(
            "the scenario has {} steps, the recording {}",
            steps.len(),
            recorded.len()
        ));
    }
    let mut bound: HashMap<String, Value> = scenario["reference_bound"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let identities = &scenario["identities"];
    for (index, (step, record)) in steps.iter().zip(recorded).enumerate() {
        let wanted = (|| -> Result<Value, String> {
            let mut headers = Map::new();
            let identity = &identities[step["as"].as_str().unwrap_or("admin")];
            for (name, value) in identity.as_object().into_iter().flatten() {
                headers.insert(name.clone(), value.clone());
            }
            for (name, value) in step["headers"].as_object().into_iter().flatten() {
                let value = fill_text(value.as_str().unwrap_or_default(), &bound)?;
                headers.insert(name.clone(), json!(value));
            }
            Ok(json!({
                "name": step["name"],
                "method": step["method"],
                "path": fill_text(step["path"].as_str().unwrap_or_default(), &bound)?,
                "headers": headers,
                "body": fill(&step["body"], &bound)?,
                "raw_body": step["raw_body"],
            }))
        })();
        let request = &record["request"];
        let mut headers = request["headers"].as_object().cloned().unwrap_or_default();
        headers.remove("Content-Type");
        headers.remove("Accept");
        let made = json!({
            "name": record["name"],
            "method": request["method"],
            "path": request["path"],
            "headers": headers,
            "body": request["body"],
            "raw_body": request["raw_body"],
        });
        match wanted {
            Ok(wanted) if wanted == made => {}
            Ok(wanted) => out.push(format!(
                "step {}: the scenario sends {}\n  the recording sent {}",
                index + 1,
                brief(&wanted),
                brief(&made)
            )),
            Err(err) => out.push(format!("step {}: {err}", index + 1)),
        }
        for (name, value) in record["bound"].as_object().into_iter().flatten() {
            bound.insert(name.clone(), value.clone());
        }
    }
    out
}

/// Sends one scenario step, with its placeholders filled in from `bound`.
async fn replay(
    client: &reqwest::Client,
    base: &str,
    identities: &Value,
    step: &Value,
    bound: &HashMap<String, Value>,
) -> Result<Answer, String> {
    let method = step["method"].as_str().ok_or("step without a method")?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let path = fill_text(step["path"].as_str().ok_or("step without a path")?, bound)?;
    let mut request = client.request(method, format!("{base}{path}"));
    let identity = &identities[step["as"].as_str().unwrap_or("admin")];
    let headers = identity.as_object().into_iter().flatten();
    for (name, value) in headers.chain(step["headers"].as_object().into_iter().flatten()) {
        let value = fill_text(value.as_str().unwrap_or_default(), bound)?;
        request = request.header(name.as_str(), value);
    }
    request = request.header("Accept", "application/json");
    if let Some(raw) = step["raw_body"].as_str() {
        request = request
            .header("Content-Type", "application/json")
            .body(raw.to_string());
    } else if !step["body"].is_null() {
        request = request.json(&fill(&step["body"], bound)?);
    }
    let sent = wall_second();
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    let seconds = Some((sent, wall_second()));
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| json!(format!("<not JSON: {text}>")))
    };
    Ok(Answer {
        status,
        body,
        seconds,
    })
}

/// The current UTC second as `YYYY-MM-DDTHH:MM:SS`.
fn wall_second() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rest) = (now / 86_400, now % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Replaces `{name}` placeholders of bound names inside a string.
fn fill_text(text: &str, bound: &HashMap<String, Value>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let candidate = &rest[open + 1..];
        let name_len = candidate
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(candidate.len());
        if name_len == 0 || !candidate[name_len..].starts_with('}') {
            out.push_str(&rest[..=open]);
            rest = candidate;
            continue;
        }
        let name = &candidate[..name_len];
        let value = bound
            .get(name)
            .ok_or_else(|| format!("{{{name}}} is not bound (the step binding it failed)"))?;
        out.push_str(&rest[..open]);
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &candidate[name_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills placeholders throughout a JSON value; a string that is exactly `{name}` takes the bound value.
fn fill(value: &Value, bound: &HashMap<String, Value>) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => {
            let whole = s
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .and_then(|name| bound.get(name));
            match whole {
                Some(v) => v.clone(),
                None => Value::String(fill_text(s, bound)?),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| fill(v, bound))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill(v, bound)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Follows a bind path such as `network.id`, `ports[1].id` or `port_id`.
fn lookup<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    let mut value = body;
    for part in path.split('.') {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, i)| (k, i));
        value = value.get(key)?;
        for index in indexes.split('[') {
            if let Some(index) = index.strip_suffix(']') {
                value = value.get(index.parse::<usize>().ok()?)?;
            }
        }
    }
    Some(value)
}

/// Maps every bound UUID string to its placeholder spelling `{name}`.
fn symbols<'a>(bound: impl Iterator<Item = (&'a String, &'a Value)>) -> HashMap<String, String> {
    bound
        .filter_map(|(name, value)| Some((value.as_str()?.to_string(), format!("{{{name}}}"))))
        .filter(|(value, _)| is_uuid(value))
        .collect()
}

/// The deployed-Neutron exception (rule 3 of the module documentation): adds the default rules a
/// deployed Neutron creates to every security group object that lacks them.
/// How Neutron shows the rules inside a group, by path: a create answer shows them as created, a
/// show or update adds `standard_attr_id` and `tags`, a list also nulls `belongs_to_default_sg`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleShape {
    Created,
    Shown,
    Listed,
}

impl RuleShape {
    fn of(method: &str, body: &Value) -> Self {
        if body.get("security_groups").is_some() {
            RuleShape::Listed
        } else if method == "POST" {
            RuleShape::Created
        } else {
            RuleShape::Shown
        }
    }
}

fn add_deployed_default_rules(value: &mut Value, shape: RuleShape) {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| add_deployed_default_rules(v, shape)),
        Value::Object(map) => {
            if map.contains_key("security_group_rules") && map.contains_key("stateful") {
                let group = map.clone();
                let is_default = group.get("name") == Some(&json!("default"));
                let rules = map["security_group_rules"]
                    .as_array_mut()
                    .expect("security_group_rules is a list");
                for (number, ethertype) in ["IPv4", "IPv6"].into_iter().enumerate() {
                    let mut wanted = vec![("egress", Value::Null)];
                    if is_default {
                        wanted.push(("ingress", group["id"].clone()));
                    }
                    for (direction, remote_group) in wanted {
                        let number = number * 2 + usize::from(direction == "ingress");
                        let present = rules.iter().any(|r| {
                            r["direction"] == direction
                                && r["ethertype"] == ethertype
                                && r["protocol"].is_null()
                                && r["remote_ip_prefix"].is_null()
                                && r["remote_group_id"] == remote_group
                        });
                        if !present {
                            let mut rule =
                                default_rule(&group, number, direction, ethertype, remote_group);
                            if shape != RuleShape::Created {
                                // One of its own, fixed for the rule: from the group's id.
                                let tail = group["id"].as_str().and_then(|id| id.get(24..));
                                let tail = tail.and_then(|t| u64::from_str_radix(t, 16).ok());
                                let attr = tail.unwrap_or(0) * 4 + number as u64;
                                rule["standard_attr_id"] = json!(attr);
                                rule["tags"] = json!([]);
                            }
                            if shape == RuleShape::Listed {
                                rule["belongs_to_default_sg"] = Value::Null;
                            }
                            rules.push(rule);
                        }
                    }
                }
            }
            map.values_mut()
                .for_each(|v| add_deployed_default_rules(v, shape));
        }
        _ => {}
    }
}

/// One default rule as a deployed Neutron shows it (keys as in the recorded rules).
fn default_rule(
    group: &Map<String, Value>,
    number: usize,
    direction: &str,
    ethertype: &str,
    remote_group: Value,
) -> Value {
    // An id of its own for each rule of each group (the group's last 12 digits), so that the rule is
    // followed across the steps like Wyvern's.
    let tail = group["id"]
        .as_str()
        .and_then(|id| id.get(24..))
        .unwrap_or("000000000000");
    json!({
        "id": format!("0000000{number}-0000-4000-8000-{tail}"),
        "project_id": group["project_id"],
        "tenant_id": group["tenant_id"],
        "security_group_id": group["id"],
        "ethertype": ethertype,
        "direction": direction,
        "protocol": null,
        "port_range_min": null,
        "port_range_max": null,
        "remote_ip_prefix": null,
        "remote_address_group_id": null,
        "normalized_cidr": null,
        "remote_group_id": remote_group,
        "belongs_to_default_sg": group.get("name") == Some(&json!("default")),
        "description": "",
        "created_at": group["created_at"],
        "updated_at": group["created_at"],
        "revision_number": 0,
    })
}

/// Sets the values of a step's `deployed` map (`"port.device_owner": "trunk:subport"`) in the
/// recorded body: what a deployed Neutron shows there where the agentless reference cannot (rule 3).
fn apply_deployed(body: &mut Value, deployed: &Value) {
    let values = deployed.as_object().into_iter().flatten();
    for (path, value) in values.filter(|(path, _)| !path.ends_with(".revision_number")) {
        let mut at = &mut *body;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                if let Some(obj) = at.as_object_mut() {
                    obj.insert(part.to_string(), value.clone());
                }
                break;
            }
            at = &mut at[part];
        }
    }
}

/// How one step's bodies are normalised before they are compared.
struct Rules<'a> {
    volatile: Vec<&'a str>,
    ordered: bool,
    shape: bool,
}

/// Keys that rule 2 checks for what they must be: never merely `volatile`.
const CHECKED_KEYS: &[&str] = &[
    "ip_address",
    "floating_ip_address",
    "fixed_ip_address",
    "fixed_ips",
    "external_fixed_ips",
    "mac_address",
    "provider:segmentation_id",
    "revision_number",
    "standard_attr_id",
    "created_at",
    "updated_at",
];

impl<'a> Rules<'a> {
    fn of(scenario: &'a Value, step: &'a Value) -> Rules<'a> {
        let volatile: Vec<&str> = step["volatile"]
            .as_array()
            .into_iter()
            .chain(scenario["volatile"].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(key) = volatile.iter().find(|k| CHECKED_KEYS.contains(k)) {
            panic!(
                "step {}: `{key}` may not be volatile: the comparison checks it (module documentation, rule 2)",
                step["name"]
            );
        }
        let path = step["path"].as_str().unwrap_or_default();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        Rules {
            volatile,
            ordered: query.split('&').any(|p| p.starts_with("sort_key=")),
            shape: step["compare"] == json!("shape"),
        }
    }

    fn normalize(&self, body: &Value, symbols: &HashMap<String, String>, base: &str) -> Value {
        self.value(None, body, 0, symbols, base)
    }

    fn value(
        &self,
        key: Option<&str>,
        value: &Value,
        depth: usize,
        symbols: &HashMap<String, String>,
        base: &str,
    ) -> Value {
        if let Some(key) = key
            && self.volatile.contains(&key)
        {
            return type_marker(value);
        }
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if k == "NeutronError" {
                            let mut error = v.clone();
                            if let Some(message) = error.get_mut("message")
                                && message.is_string()
                            {
                                *message = json!("<text>");
                            }
                            error
                        } else {
                            v.clone()
                        };
                        (k.clone(), self.value(Some(k), &v, depth + 1, symbols, base))
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                let mut items: Vec<Value> = items
                    .iter()
                    .map(|v| self.value(None, v, depth + 1, symbols, base))
                    .collect();
                let ordered = self.ordered && depth == 1
                    || matches!(key, Some("dns_nameservers" | "fixed_ips"));
                if self.shape || !ordered {
                    items.sort_by_cached_key(|v| (v["name"].to_string(), v.to_string()));
                }
                Value::Array(items)
            }
            // The markers of rule 2's checks (a `Tracker`'s) stay, in shape too.
            Value::String(s) if self.shape && s.starts_with('<') && s.ends_with('>') => {
                value.clone()
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) if self.shape => {
                type_marker(value)
            }
            Value::String(s) => Value::String(normalize_string(s, symbols, base)),
            other => other.clone(),
        }
    }
}

/// The keys whose values a request fixes for the answer (not, say, the bounds of a pool).
const REQUESTED_KEYS: &[&str] = &[
    "ip_address",
    "floating_ip_address",
    "fixed_ip_address",
    "mac_address",
];

/// The values the requests fixed so far (rule 2 of the module documentation): every string a request
/// body sent, every address among them, and every `provider:segmentation_id`.
#[derive(Default)]
struct Requested {
    strings: HashSet<String>,
    addresses: HashSet<IpAddr>,
    segmentation_ids: HashSet<String>,
}

impl Requested {
    fn add(&mut self, key: Option<&str>, value: &Value) {
        match value {
            Value::String(s) if matches!(key, Some(k) if REQUESTED_KEYS.contains(&k)) => {
                self.strings.insert(s.clone());
                if let Ok(address) = s.parse() {
                    self.addresses.insert(address);
                }
            }
            Value::Number(n) if key == Some("provider:segmentation_id") => {
                self.segmentation_ids.insert(n.to_string());
            }
            Value::Array(items) => items.iter().for_each(|v| self.add(key, v)),
            Value::Object(map) => map.iter().for_each(|(k, v)| self.add(Some(k), v)),
            _ => {}
        }
    }
}

/// A subnet as one side last showed it: what its servers' picked addresses must fit.
struct Subnet {
    network_id: String,
    prefix: IpAddr,
    len: u8,
    pools: Vec<(IpAddr, IpAddr)>,
    slaac: bool,
}

impl Subnet {
    fn contains(&self, address: IpAddr) -> bool {
        let (Some(a), Some(p)) = (bits(address), bits(self.prefix)) else {
            return false;
        };
        let width = if address.is_ipv4() { 32 } else { 128 };
        if address.is_ipv4() != self.prefix.is_ipv4() || u32::from(self.len) > width {
            return false;
        }
        let host = width - u32::from(self.len);
        host >= 128 || a >> host == p >> host
    }

    fn in_pools(&self, address: IpAddr) -> bool {
        self.pools.iter().any(|&(start, end)| {
            start.is_ipv4() == address.is_ipv4()
                && bits(start) <= bits(address)
                && bits(address) <= bits(end)
        })
    }
}

/// An address as an integer.
fn bits(address: IpAddr) -> Option<u128> {
    Some(match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    })
}

/// The modified EUI-64 address of `mac` in the /64 `prefix`.
fn eui64(prefix: IpAddr, mac: &str) -> Option<IpAddr> {
    let IpAddr::V6(prefix) = prefix else {
        return None;
    };
    let mac: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let [a, b, c, d, e, f] = mac[..] else {
        return None;
    };
    let interface = u64::from_be_bytes([a ^ 0x02, b, c, 0xff, 0xfe, d, e, f]);
    let network = u128::from(prefix) >> 64 << 64;
    Some(IpAddr::V6((network | u128::from(interface)).into()))
}

/// `10.0.0.0/24` as its address and length.
fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (address, len) = cidr.split_once('/')?;
    Some((address.parse().ok()?, len.parse().ok()?))
}

/// What one side showed of one object (by id) the last time.
#[derive(Default, Clone)]
struct Seen {
    revision: Option<i64>,
    created: Option<String>,
    updated: Option<String>,
    attr: Option<String>,
    mac: Option<String>,
    /// The first second of the step that showed it (Wyvern's side only).
    at: Option<String>,
}

/// Follows the objects of one side across the steps and checks what the server picked (rule 2 of
/// the module documentation): [`Tracker::annotate`] replaces each such value by a marker that says
/// what it is (`<revision_number +1>`, `<address from the pools>`) or what is wrong with it.
#[derive(Default)]
struct Tracker {
    subnets: HashMap<String, Subnet>,
    objects: HashMap<String, Seen>,
    /// standard_attr_id -> the id of the object that has it.
    attr_ids: HashMap<String, String>,
    /// What a deployed Neutron adds to an object's recorded revisions (rule 3), by id.
    offsets: HashMap<String, i64>,
}

/// The update-time markers; `compatible` says which of Wyvern's fit which of Neutron's.
const UPDATED_LATER: &str = "<updated_at later>";
const UPDATED_SAME: &str = "<updated_at unchanged>";
const UPDATED_SAME_REVISED: &str = "<updated_at unchanged, though revised>";
const UPDATED_SAME_SECOND: &str = "<updated_at unchanged, the second of an update>";

impl Tracker {
    /// A step's `deployed` revisions (`"port.revision_number": "+1"`): from this step on, the object
    /// at the path has so many revisions more in a deployed Neutron than in the recording (rule 3).
    fn deployed_revisions(&mut self, body: &Value, deployed: &Value) {
        for (path, value) in deployed.as_object().into_iter().flatten() {
            let Some(object) = path.strip_suffix(".revision_number") else {
                continue;
            };
            let extra = value.as_str().and_then(|v| v.parse::<i64>().ok());
            let extra = extra.unwrap_or_else(|| panic!("deployed {path}: not \"+N\": {value}"));
            let id = object.split('.').fold(body, |at, part| &at[part]);
            let id = id["id"]
                .as_str()
                .unwrap_or_else(|| panic!("deployed {path}: no id"));
            *self.offsets.entry(id.to_string()).or_default() += extra;
        }
    }

    /// One answer with the server's picks replaced by markers, and what is wrong beyond a marker.
    /// `seconds` are the first and last second of the exchange, when known.
    fn annotate(
        &mut self,
        body: &Value,
        requested: &Requested,
        seconds: Option<&(String, String)>,
        revisions: StepKind,
    ) -> (Value, Vec<String>) {
        self.learn_subnets(body);
        let mut pooled = Vec::new();
        let context = Context {
            requested,
            seconds,
            revisions: revisions.compare,
            write: revisions.write,
        };
        let value = self.walk(body, None, None, &context, &mut pooled);
        pooled.sort_unstable();
        let mut problems: Vec<String> = pooled
            .windows(2)
            .filter(|pair| pair[0] == pair[1])
            .map(|pair| format!("the address {} is given out twice", pair[0]))
            .collect();
        problems.dedup();
        (value, problems)
    }

    fn learn_subnets(&mut self, value: &Value) {
        match value {
            Value::Array(items) => items.iter().for_each(|v| self.learn_subnets(v)),
            Value::Object(map) => {
                let text = |key: &str| map.get(key).and_then(Value::as_str);
                if let (Some(id), Some((prefix, len)), Some(pools)) = (
                    text("id"),
                    text("cidr").and_then(parse_cidr),
                    map.get("allocation_pools").and_then(Value::as_array),
                ) {
                    let pools = pools
                        .iter()
                        .filter_map(|p| {
                            Some((
                                p["start"].as_str()?.parse().ok()?,
                                p["end"].as_str()?.parse().ok()?,
                            ))
                        })
                        .collect();
                    let mode = text("ipv6_address_mode");
                    let subnet = Subnet {
                        network_id: text("network_id").unwrap_or_default().to_string(),
                        prefix,
                        len,
                        pools,
                        slaac: matches!(mode, Some("slaac" | "dhcpv6-stateless")),
                    };
                    self.subnets.insert(id.to_string(), subnet);
                }
                map.values().for_each(|v| self.learn_subnets(v));
            }
            _ => {}
        }
    }

    /// `parent_key`: the key the value is under (for an array's element, the array's key);
    /// `port_mac`: the MAC of the port the value belongs to.
    fn walk(
        &mut self,
        value: &Value,
        parent_key: Option<&str>,
        port_mac: Option<&str>,
        context: &Context,
        pooled: &mut Vec<IpAddr>,
    ) -> Value {
        let (requested, seconds) = (context.requested, context.seconds);
        let map = match value {
            Value::Array(items) => {
                return Value::Array(
                    items
                        .iter()
                        .map(|v| self.walk(v, parent_key, port_mac, context, pooled))
                        .collect(),
                );
            }
            Value::Object(map) => map,
            other => return other.clone(),
        };
        let text = |key: &str| map.get(key).and_then(Value::as_str);
        let port_mac = if map.contains_key("fixed_ips") || map.contains_key("allowed_address_pairs")
        {
            text("mac_address")
        } else {
            port_mac
        };
        let id = text("id");
        let previous = id.and_then(|id| self.objects.get(id)).cloned();
        let mut seen = previous.clone().unwrap_or_default();
        let was = previous.unwrap_or_default();
        let offset = id.and_then(|id| self.offsets.get(id)).copied().unwrap_or(0);
        let revision = map.get("revision_number").and_then(Value::as_i64);
        let revision = revision.map(|r| r + offset);
        let revised = was.revision.zip(revision).map(|(a, b)| a != b);
        let mut out = Map::new();
        for (key, v) in map {
            let marked = match key.as_str() {
                "revision_number" => Some(match (revision, was.revision) {
                    (None, _) => json!(format!("<revision_number not an integer: {v}>")),
                    (Some(now), Some(before)) if id.is_some() && context.revisions => {
                        json!(format!("<revision_number {:+}>", now - before))
                    }
                    (Some(_), _) => json!("<revision_number>"),
                }),
                "created_at" => v.as_str().map(|t| match &was.created {
                    _ if !is_timestamp(t) => json!(format!("<created_at not a timestamp: {t}>")),
                    Some(before) if before != t => {
                        json!(format!("<created_at changed from {before} to {t}>"))
                    }
                    _ => json!("<created_at>"),
                }),
                "updated_at" => v.as_str().map(|t| {
                    let created = text("created_at").unwrap_or_default();
                    let second = t.get(..19).unwrap_or(t);
                    match &was.updated {
                        _ if !is_timestamp(t) => {
                            json!(format!("<updated_at not a timestamp: {t}>"))
                        }
                        _ if t < created => json!(format!("<updated_at {t} before created_at>")),
                        None => json!("<updated_at>"),
                        Some(before) if t < before.as_str() => {
                            json!(format!("<updated_at went back from {before} to {t}>"))
                        }
                        Some(before) if t > before.as_str() => json!(UPDATED_LATER),
                        _ if was.at.as_deref().is_some_and(|at| second >= at) => {
                            json!(UPDATED_SAME_SECOND)
                        }
                        // Revised, or revisions not compared (`"revisions": "any"`), or a write
                        // (Neutron dates a trunk's subport changes without revising it): Neutron's
                        // whole seconds may hide a change. A read changes nothing.
                        _ if seconds.is_none()
                            && (revised == Some(true) || !context.revisions || context.write) =>
                        {
                            json!(UPDATED_SAME_REVISED)
                        }
                        _ => json!(UPDATED_SAME),
                    }
                }),
                "standard_attr_id" => Some(match v.as_i64().map(|n| n.to_string()) {
                    None => json!(format!("<standard_attr_id not an integer: {v}>")),
                    Some(attr) => {
                        let owner = self.attr_ids.get(&attr).map(String::as_str);
                        let marker = match (&was.attr, id) {
                            (Some(before), _) if *before != attr => {
                                format!("<standard_attr_id changed from {before} to {attr}>")
                            }
                            (_, Some(id)) if owner.is_some_and(|o| o != id) => {
                                format!("<standard_attr_id {attr} of another object>")
                            }
                            _ => "<standard_attr_id>".to_string(),
                        };
                        if let Some(id) = id {
                            self.attr_ids.entry(attr.clone()).or_insert(id.to_string());
                            seen.attr = Some(attr);
                        }
                        json!(marker)
                    }
                }),
                "mac_address" => v.as_str().map(|mac| {
                    let own = map.contains_key("fixed_ips").then_some(id).flatten();
                    match &was.mac {
                        _ if requested.strings.contains(mac) => v.clone(),
                        _ if !is_mac(mac) => json!(format!("<not a MAC: {mac}>")),
                        Some(before) if own.is_some() && before != mac => {
                            json!(format!("<mac_address changed from {before} to {mac}>"))
                        }
                        _ if parent_key == Some("allowed_address_pairs") => {
                            if port_mac == Some(mac) {
                                json!("<the port's MAC>")
                            } else {
                                json!(format!("<not the port's MAC: {mac}>"))
                            }
                        }
                        _ => json!("<mac>"),
                    }
                }),
                "provider:segmentation_id" if !v.is_null() => Some(match v {
                    Value::Number(n) if requested.segmentation_ids.contains(&n.to_string()) => {
                        v.clone()
                    }
                    Value::Number(n) if n.is_u64() || n.is_i64() => json!("<segmentation id>"),
                    _ => json!(format!("<segmentation id not an integer: {v}>")),
                }),
                "ip_address" if matches!(parent_key, Some("fixed_ips" | "external_fixed_ips")) => {
                    let subnet = text("subnet_id").map(Hint::Subnet);
                    let subnet = subnet.unwrap_or(Hint::Any);
                    self.address(v, subnet, port_mac, requested, Some(pooled))
                }
                "floating_ip_address" => {
                    let network = text("floating_network_id").map_or(Hint::Any, Hint::Network);
                    self.address(v, network, port_mac, requested, Some(pooled))
                }
                "fixed_ip_address" => self.address(v, Hint::Any, port_mac, requested, None),
                _ => None,
            };
            let v = match marked {
                Some(marked) => marked,
                None => self.walk(v, Some(key), port_mac, context, pooled),
            };
            out.insert(key.clone(), v);
        }
        if let Some(id) = id {
            if revision.is_some() {
                seen.revision = revision;
            }
            if let Some(t) = text("created_at") {
                seen.created = Some(t.to_string());
            }
            if let Some(t) = text("updated_at") {
                seen.updated = Some(t.to_string());
            }
            if map.contains_key("fixed_ips")
                && let Some(mac) = text("mac_address")
            {
                seen.mac = Some(mac.to_string());
            }
            seen.at = seconds.map(|(first, _)| first.clone());
            self.objects.insert(id.to_string(), seen);
        }
        Value::Object(out)
    }

    /// The marker of an address the server picked; `None` (compare exactly) when a request sent it
    /// or no rule explains it.
    fn address(
        &self,
        value: &Value,
        hint: Hint,
        port_mac: Option<&str>,
        requested: &Requested,
        pooled: Option<&mut Vec<IpAddr>>,
    ) -> Option<Value> {
        let address: IpAddr = value.as_str()?.parse().ok()?;
        if requested.addresses.contains(&address) {
            return None;
        }
        let candidates = self.subnets.iter().filter(|(id, subnet)| match hint {
            Hint::Subnet(wanted) => id.as_str() == wanted,
            Hint::Network(network) => subnet.network_id == network,
            Hint::Any => true,
        });
        for (_, subnet) in candidates {
            if !subnet.contains(address) {
                continue;
            }
            if subnet.slaac {
                let derived = port_mac.and_then(|mac| eui64(subnet.prefix, mac));
                return Some(match derived {
                    Some(derived) if derived == address => json!("<EUI-64 of the port's MAC>"),
                    Some(derived) => {
                        json!(format!("<not the EUI-64 address {derived}: {address}>"))
                    }
                    // No MAC shown (a list with `fields`): the interface id must still be an EUI-64.
                    None if bits(address).is_some_and(|b| (b >> 24) & 0xffff == 0xfffe) => {
                        json!("<an EUI-64 address>")
                    }
                    None => json!(format!("<not an EUI-64 address: {address}>")),
                });
            }
            if subnet.in_pools(address) {
                if let Some(pooled) = pooled {
                    pooled.push(address);
                }
                return Some(json!("<address from the pools>"));
            }
        }
        None
    }
}

/// What the timestamp and revision rules need to know of a step.
#[derive(Clone, Copy)]
struct StepKind {
    /// Whether its revision increases are compared (`"revisions": "any"` says not).
    compare: bool,
    /// Whether it writes (any method but GET).
    write: bool,
}

/// What [`Tracker::walk`] needs of the step.
struct Context<'a> {
    requested: &'a Requested,
    seconds: Option<&'a (String, String)>,
    /// Whether the revision increases are compared (a step's `"revisions": "any"` says not).
    revisions: bool,
    /// Whether the step writes (any method but GET).
    write: bool,
}

/// Where an address the server picked must come from.
#[derive(Clone, Copy)]
enum Hint<'a> {
    Subnet(&'a str),
    Network(&'a str),
    Any,
}

/// Whether Wyvern's normalised scalar `got` fits Neutron's `want` although they differ: the update
/// times (Neutron's whole seconds may hide an update, see rule 2).
fn compatible(want: &Value, got: &Value) -> bool {
    let (Some(want), Some(got)) = (want.as_str(), got.as_str()) else {
        return false;
    };
    match want {
        UPDATED_LATER => got == UPDATED_SAME_SECOND,
        UPDATED_SAME => got == UPDATED_SAME_SECOND,
        UPDATED_SAME_REVISED => [UPDATED_SAME, UPDATED_SAME_SECOND, UPDATED_LATER].contains(&got),
        _ => false,
    }
}

/// Equality up to [`compatible`] scalars.
fn equivalent(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            w.len() == g.len()
                && w.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|o| equivalent(v, o)))
        }
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| equivalent(a, b))
        }
        _ => want == got || compatible(want, got),
    }
}

/// `<string>`, `<number>`, ... for a value whose content does not matter.
fn type_marker(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::Bool(_) => json!("<bool>"),
        Value::Number(_) => json!("<number>"),
        Value::String(_) => json!("<string>"),
        Value::Array(_) => json!("<array>"),
        Value::Object(_) => json!("<object>"),
    }
}

/// Rewrites the base URL to `{base}` (sorting a link's query) and every UUID to its symbol.
fn normalize_string(s: &str, symbols: &HashMap<String, String>, base: &str) -> String {
    let s = match s.strip_prefix(base).filter(|_| !base.is_empty()) {
        Some(rest) => match rest.split_once('?') {
            Some((path, query)) => {
                let mut params: Vec<&str> = query.split('&').collect();
                params.sort_unstable();
                format!("{{base}}{path}?{}", params.join("&"))
            }
            None => format!("{{base}}{rest}"),
        },
        None => s.to_string(),
    };
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        let candidate = s.get(i..i + 36).filter(|c| is_uuid(c));
        match candidate {
            Some(uuid) => {
                out.push_str(symbols.get(uuid).map_or("<uuid>", String::as_str));
                i += 36;
            }
            None => {
                let c = s[i..].chars().next().expect("inside the string");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Does `s` follow the pattern `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits)?
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Neutron's timestamp format, `2026-11-26T19:48:01Z`.
fn is_timestamp(s: &str) -> bool {
    let seconds = |t: &str| {
        t.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
    };
    match (s.len(), s.split_at_checked(19)) {
        (20, Some((t, "Z"))) => seconds(t),
        (26, Some((t, micros))) => {
            seconds(t) && micros.starts_with('.') && micros[1..].bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// A lower-case colon-separated MAC such as `fa:16:3e:12:34:56`.
fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| {
            p.len() == 2
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The attributes of Wyvern's own API extensions, as (kind of object, attribute): rule 4 of the
/// module documentation.
const WYVERN_EXTENSION_ATTRIBUTES: &[(&str, &str)] = &[
    // `snat-mode`: how a router's ports without a floating IP reach the outside.
    ("router", "snat_mode"),
];

/// The extensions Wyvern announces that the reference Neutron does not have, with the reason:
/// deliberate deviations of the `compare: "extensions"` rule (module documentation, rule 2).
const WYVERN_ONLY_EXTENSIONS: &[(&str, &str)] = &[
    (
        "snat-mode",
        "Wyvern's own: a router's `snat_mode` (distributed or centralized SNAT), see rule 4",
    ),
    (
        "filter-validation",
        "Neutron's: a list with an unknown filter is refused (400), as both servers do; \
         the reference's plugins leave the alias out, Wyvern announces the behaviour it has",
    ),
];

/// Why Wyvern does not announce an extension of the reference: it announces only what it implements.
const NO_AGENTS: &str =
    "Wyvern has no Neutron agents to list or schedule: its chassis are not agents";
const NO_SUBNETPOOLS: &str = "Wyvern does not serve subnet pools or address scopes";
const NO_RBAC: &str = "Wyvern does not serve RBAC policies: `shared` is its only sharing";
const NO_FLAVORS: &str = "Wyvern does not serve service flavors or service types";
const NO_PORT_FORWARDING: &str = "Wyvern does not serve floating IP port forwardings";
const NO_NOVA_EXTRAS: &str =
    "Wyvern does not serve Nova/Cyborg scheduling hints (device profiles, NUMA affinity)";
const NO_HA_DVR: &str = "Wyvern's routers are distributed by design: no `distributed`/`ha` flags";
const NOT_IMPLEMENTED: &str =
    "not implemented (yet): Wyvern announces only what it implements, so clients do not rely on it";

/// The extensions of the reference Neutron that Wyvern deliberately does not announce, with the
/// reason: deliberate deviations of the `compare: "extensions"` rule (module documentation, rule 2).
const NEUTRON_ONLY_EXTENSIONS: &[(&str, &str)] = &[
    ("agent", NO_AGENTS),
    ("agent-resources-synced", NO_AGENTS),
    ("agent_sort_key", NO_AGENTS),
    ("dhcp_agent_scheduler", NO_AGENTS),
    ("l3_agent_scheduler", NO_AGENTS),
    ("address-scope", NO_SUBNETPOOLS),
    ("default-subnetpools", NO_SUBNETPOOLS),
    ("subnet_allocation", NO_SUBNETPOOLS),
    ("subnet_onboard", NO_SUBNETPOOLS),
    ("subnetpool-prefix-ops", NO_SUBNETPOOLS),
    ("rbac-address-group", NO_RBAC),
    ("rbac-address-scope", NO_RBAC),
    ("rbac-policies", NO_RBAC),
    ("rbac-security-groups", NO_RBAC),
    ("rbac-subnetpool", NO_RBAC),
    ("flavors", NO_FLAVORS),
    ("l3-flavors", NO_FLAVORS),
    ("service-type", NO_FLAVORS),
    ("floating-ip-port-forwarding-detail", NO_PORT_FORWARDING),
    ("port-device-profile", NO_NOVA_EXTRAS),
    ("port-numa-affinity-policy", NO_NOVA_EXTRAS),
    ("port-numa-affinity-policy-socket", NO_NOVA_EXTRAS),
    ("dvr", NO_HA_DVR),
    ("l3-ha", NO_HA_DVR),
    ("network_ha", NO_HA_DVR),
    (
        "multi-provider",
        "Wyvern's networks have one segment: the `provider:*` attributes",
    ),
    (
        "binding-extended",
        "no port bindings API (`/ports/{id}/bindings`, for live migration)",
    ),
    (
        "auto-allocated-topology",
        "no auto-allocated topology (get-me-a-network)",
    ),
    ("network-ip-availability", "no network IP availability API"),
    (
        "network-ip-availability-details",
        "no network IP availability API",
    ),
    (
        "security-groups-default-rules",
        "no API for the default groups' rule templates: fixed",
    ),
    (
        "service_graph",
        "Wyvern serves port chains, not networking-sfc's service graphs",
    ),
    ("aap-reject-multicast", NOT_IMPLEMENTED),
    ("availability_zone_filter", NOT_IMPLEMENTED),
    ("extraroute-atomic", NOT_IMPLEMENTED),
    ("floating-ip-router-writable", NOT_IMPLEMENTED),
    ("floatingip-pools", NOT_IMPLEMENTED),
    ("ip-substring-filtering", NOT_IMPLEMENTED),
    ("l3-port-ip-change-not-allowed", NOT_IMPLEMENTED),
    ("port-mac-address-regenerate", NOT_IMPLEMENTED),
    ("port-mac-override", NOT_IMPLEMENTED),
    ("port-security-groups-filtering", NOT_IMPLEMENTED),
    ("router-admin-state-down-before-update", NOT_IMPLEMENTED),
    ("security-groups-default-statefulness", NOT_IMPLEMENTED),
    ("security-groups-shared-filtering", NOT_IMPLEMENTED),
    ("subnet-service-types", NOT_IMPLEMENTED),
];

/// A list of documented deviations: (alias, reason).
type Deviations = &'static [(&'static str, &'static str)];

/// The `compare: "extensions"` rule: the alias sets are equal but for the documented deviations
/// (only with the deployed exception: a reference matches its own recording exactly), and each
/// extension both announce has the same shape.
fn compare_extensions(want: &Value, got: &Value, deviations: bool, out: &mut Vec<String>) {
    let by_alias = |body: &Value| -> BTreeMap<String, Value> {
        let list = body["extensions"].as_array().into_iter().flatten();
        list.map(|e| (e["alias"].as_str().unwrap_or("?").to_string(), e.clone()))
            .collect()
    };
    let (theirs, ours) = (by_alias(want), by_alias(got));
    let listed = got["extensions"].as_array().map_or(0, Vec::len);
    if listed != ours.len() {
        out.push(format!(
            "Wyvern lists {listed} extensions with {} aliases",
            ours.len()
        ));
    }
    let (wyvern_only, neutron_only): (Deviations, Deviations) = if deviations {
        (WYVERN_ONLY_EXTENSIONS, NEUTRON_ONLY_EXTENSIONS)
    } else {
        (&[], &[])
    };
    let deviation = |list: &[(&str, &str)], alias: &str| list.iter().any(|(a, _)| *a == alias);
    for (alias, reason) in wyvern_only {
        if theirs.contains_key(*alias) || !ours.contains_key(*alias) {
            out.push(format!(
                "WYVERN_ONLY_EXTENSIONS is stale: {alias} ({reason}) must be Wyvern's only"
            ));
        }
    }
    for (alias, reason) in neutron_only {
        if ours.contains_key(*alias) || !theirs.contains_key(*alias) {
            out.push(format!(
                "NEUTRON_ONLY_EXTENSIONS is stale: {alias} ({reason}) must be the reference's only"
            ));
        }
    }
    for alias in theirs.keys() {
        if !ours.contains_key(alias) && !deviation(neutron_only, alias) {
            out.push(format!("extension {alias}: missing in Wyvern"));
        }
    }
    for alias in ours.keys() {
        if !theirs.contains_key(alias) && !deviation(wyvern_only, alias) {
            out.push(format!("extension {alias}: only in Wyvern"));
        }
    }
    let shape = Rules {
        volatile: Vec::new(),
        ordered: false,
        shape: true,
    };
    let none = HashMap::new();
    for (alias, mine) in &ours {
        if let Some(reference) = theirs.get(alias) {
            let path = format!("$.extensions[alias={alias}]");
            let (w, g) = (
                shape.normalize(reference, &none, ""),
                shape.normalize(mine, &none, ""),
            );
            diff(&path, &w, &g, out);
        }
    }
}

/// The quota resources of the reference Neutron for which Wyvern serves no objects: rule 5 of the
/// module documentation.
const NEUTRON_ONLY_QUOTA_RESOURCES: &[&str] = &[
    "subnetpool",
    "rbac_policy",
    "trunk",
    "flow_classifier",
    "service_graph",
    "port_pair",
    "port_chain",
    "port_pair_group",
];

/// The kind of the object at `path`: the singular of the key it is under (`$.router` and
/// `$.routers[2]` are routers).
fn object_kind(path: &str) -> &str {
    let key = path.rsplit('.').next().unwrap_or(path);
    let key = key.split('[').next().unwrap_or(key);
    key.strip_suffix('s').unwrap_or(key)
}

/// Lists every difference between the normalised bodies of Neutron (`want`) and Wyvern (`got`).
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let kind = object_kind(path);
            let neutron_only =
                |key: &str| kind == "quota" && NEUTRON_ONLY_QUOTA_RESOURCES.contains(&key);
            for (key, value) in w {
                match g.get(key) {
                    Some(other) => diff(&format!("{path}.{key}"), value, other, out),
                    None if neutron_only(key) => {}
                    None => out.push(format!(
                        "{path}.{key}: missing in Wyvern (Neutron: {})",
                        brief(value)
                    )),
                }
            }
            let extension = |key: &str| WYVERN_EXTENSION_ATTRIBUTES.contains(&(kind, key));
            for (key, value) in g
                .iter()
                .filter(|(k, _)| !w.contains_key(*k) && !extension(k))
            {
                out.push(format!(
                    "{path}.{key}: only in Wyvern (Wyvern: {})",
                    brief(value)
                ));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            // Elements present on both sides pair up first, whatever their places; the rest pair in
            // order, so that one differing element does not shift the comparison of all the others.
            let mut unmatched: Vec<&Value> = g.iter().collect();
            let mut missing = Vec::new();
            for (index, element) in w.iter().enumerate() {
                match unmatched
                    .iter()
                    .position(|other| equivalent(element, other))
                {
                    Some(found) => {
                        unmatched.remove(found);
                    }
                    None => missing.push((index, element)),
                }
            }
            if missing.len() != unmatched.len() {
                out.push(format!(
                    "{path}: Neutron has {} elements, Wyvern {}\n    Neutron: {}\n    Wyvern:  {}",
                    w.len(),
                    g.len(),
                    brief(want),
                    brief(got)
                ));
            } else if missing.is_empty() && !equivalent(want, got) {
                out.push(format!(
                    "{path}: the same elements in another order\n    Neutron: {}\n    Wyvern:  {}",
                    brief(want),
                    brief(got)
                ));
            }
            if missing.len() == unmatched.len() {
                for ((index, a), b) in missing.into_iter().zip(unmatched) {
                    diff(&format!("{path}[{index}]"), a, b, out);
                }
            }
        }
        _ if !equivalent(want, got) => out.push(format!(
            "{path}: Neutron {}, Wyvern {}",
            brief(want),
            brief(got)
        )),
        _ => {}
    }
}

/// A value as compact JSON, cut to a readable length.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

// The comparison itself: each rule reports what a wrong server would answer. Wyvern's side is made
// from the recording (the reference's own answers, which must pass), then mutated the way a wrong
// server would answer.

/// The recording's answers as if Wyvern had given them.
fn recorded_answers(recording: &Value) -> Vec<Result<Answer, String>> {
    let steps = recording["steps"].as_array().expect("recorded steps");
    steps
        .iter()
        .map(|s| {
            Ok(Answer {
                status: u16::try_from(s["response"]["status"].as_u64().unwrap_or(0)).unwrap_or(0),
                body: s["response"]["body"].clone(),
                seconds: None,
            })
        })
        .collect()
}

/// The index of the step called `name`.
fn step_index(scenario: &Value, name: &str) -> usize {
    let steps = scenario["steps"].as_array().expect("scenario steps");
    steps
        .iter()
        .position(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

/// Compares the recording with itself after `mutate` changed the answer of step `name` (the
/// status and body, as Wyvern's); the differences found.
fn self_compared(
    scenario: &str,
    recording: &str,
    name: &str,
    mutate: impl FnOnce(&mut u16, &mut Value),
) -> Vec<String> {
    let scenario: Value = serde_json::from_str(scenario).expect("scenario");
    let recording: Value = serde_json::from_str(recording).expect("recording");
    let mut answers = recorded_answers(&recording);
    let answer = answers[step_index(&scenario, name)]
        .as_mut()
        .expect("answer");
    mutate(&mut answer.status, &mut answer.body);
    let mut bound: HashMap<String, Value> = HashMap::new();
    let reference_bound = scenario["reference_bound"]
        .as_object()
        .into_iter()
        .flatten();
    let recorded = recording["steps"].as_array().expect("recorded steps");
    let binds = recorded
        .iter()
        .flat_map(|s| s["bound"].as_object().into_iter().flatten());
    for (k, v) in reference_bound.chain(binds) {
        bound.insert(k.clone(), v.clone());
    }
    let base = recording["base_url"].as_str().expect("base_url");
    compare(&scenario, &recording, &answers, &bound, base, false)
}

/// Asserts that mutating step `name` of the main scenario is reported at that step, and returns
/// what was reported.
#[track_caller]
fn assert_reported(name: &str, mutate: impl FnOnce(&mut Value)) -> String {
    let failures = self_compared(SCENARIO, RECORDING, name, |_, body| mutate(body));
    let report = failures.join("\n");
    assert!(
        failures.iter().any(|f| f.contains(&format!(" {name}: "))),
        "a mutated {name} passed:\n{report}"
    );
    report
}

/// The element of `list` whose `key` is `value`.
fn element<'a>(list: &'a mut Value, key: &str, value: &str) -> &'a mut Value {
    let items = list.as_array_mut().expect("a list");
    items
        .iter_mut()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no element with {key} {value}"))
}

#[test]
fn every_recording_matches_itself_and_its_scenario() {
    for (scenario, recording) in [
        (SCENARIO, RECORDING),
        (OCTAVIA_SCENARIO, OCTAVIA_RECORDING),
        (SFC_SCENARIO, SFC_RECORDING),
        (TRUNK_SCENARIO, TRUNK_RECORDING),
    ] {
        let (s, r): (Value, Value) = (
            serde_json::from_str(scenario).expect("scenario"),
            serde_json::from_str(recording).expect("recording"),
        );
        let first = s["steps"][0]["name"].as_str().expect("a first step");
        let failures = self_compared(scenario, recording, first, |_, _| {});
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
        assert_eq!(stale_steps(&s, &r), Vec::<String>::new());
    }
}

// Rule 2, what the request fixed: compared exactly.

#[test]
fn a_requested_fixed_ip_is_compared_exactly() {
    // 10.0.0.150 lies in the pool: only the request says it is wrong.
    assert_reported("port3-create-by-ip", |b| {
        element(&mut b["port"]["fixed_ips"], "ip_address", "10.0.0.50")["ip_address"] =
            json!("10.0.0.150");
    });
    assert_reported("port2-takes-released-ip", |b| {
        element(&mut b["port"]["fixed_ips"], "ip_address", "10.0.0.51")["ip_address"] =
            json!("10.0.0.52");
    });
}

#[test]
fn allowed_address_pairs_are_compared_exactly() {
    let pairs = |b: &mut Value| b["port"]["allowed_address_pairs"].clone();
    assert_reported("port-pairs-dhcp-opts-create", |b| {
        let mut list = pairs(b);
        element(&mut list, "ip_address", "10.0.1.200")["ip_address"] = json!("10.0.1.201");
        b["port"]["allowed_address_pairs"] = list;
    });
    // The pair's requested MAC.
    assert_reported("port-pairs-dhcp-opts-create", |b| {
        let mut list = pairs(b);
        element(&mut list, "ip_address", "10.1.0.0/24")["mac_address"] = json!("fa:16:3e:aa:bb:cd");
        b["port"]["allowed_address_pairs"] = list;
    });
    // A pair without a MAC takes the port's own.
    assert_reported("port-pairs-dhcp-opts-create", |b| {
        let mut list = pairs(b);
        element(&mut list, "ip_address", "10.0.1.200")["mac_address"] = json!("fa:16:3e:12:34:56");
        b["port"]["allowed_address_pairs"] = list;
    });
}

#[test]
fn a_requested_mac_and_segmentation_id_are_compared_exactly() {
    assert_reported("port-mac-create", |b| {
        b["port"]["mac_address"] = json!("fa:16:3e:00:00:02");
    });
    assert_reported("net-vxlan-create", |b| {
        b["network"]["provider:segmentation_id"] = json!(4243);
    });
    assert_reported("net-vlan-create", |b| {
        b["network"]["provider:segmentation_id"] = json!(151);
    });
}

// Rule 2, what the server picked: checked for what it must be.

#[test]
fn a_slaac_address_must_be_the_eui64_of_the_mac() {
    assert_reported("port1-create-auto", |b| {
        let ips = b["port"]["fixed_ips"].as_array_mut().expect("fixed_ips");
        let v6 = ips
            .iter_mut()
            .find(|ip| ip["ip_address"].as_str().is_some_and(|a| a.contains(':')));
        v6.expect("a SLAAC address")["ip_address"] = json!("2001:db8:1::1234");
    });
    // The address stays, the MAC changes: no longer its EUI-64.
    assert_reported("port1-create-auto", |b| {
        b["port"]["mac_address"] = json!("fa:16:3e:00:00:99");
    });
}

#[test]
fn a_picked_address_must_come_from_the_pools_once() {
    // Outside the pool (10.0.0.100-200), inside the subnet.
    assert_reported("port1-create-auto", |b| {
        let ips = b["port"]["fixed_ips"].as_array_mut().expect("fixed_ips");
        let v4 = ips
            .iter_mut()
            .find(|ip| ip["ip_address"].as_str().is_some_and(|a| a.contains('.')));
        v4.expect("an IPv4 address")["ip_address"] = json!("10.0.0.99");
    });
    // Two ports with one address.
    let report = assert_reported("port-tiny-list", |b| {
        let first = b["ports"][0]["fixed_ips"][0]["ip_address"].clone();
        b["ports"][1]["fixed_ips"][0]["ip_address"] = first;
    });
    assert!(report.contains("given out twice"), "{report}");
    // A floating IP from outside the external network's pools.
    assert_reported("fip1-create", |b| {
        b["floatingip"]["floating_ip_address"] = json!("203.0.113.5");
    });
}

#[test]
fn a_generated_mac_needs_its_shape() {
    assert_reported("port1-create-auto", |b| {
        b["port"]["mac_address"] = json!("FA-16-3E-00-00-01");
    });
}

#[test]
#[should_panic(expected = "may not be volatile")]
fn addresses_may_not_be_volatile() {
    let scenario = json!({"steps": []});
    let step = json!({"name": "x", "path": "/v2.0/ports", "volatile": ["ip_address"]});
    Rules::of(&scenario, &step);
}

// Rule 2, revisions and timestamps followed across the steps.

/// The first sighting of net1 that Neutron revised and dated later than the one before, with
/// the earlier revision and update time.
fn net1_revised_later() -> (String, Value, Value) {
    let scenario: Value = serde_json::from_str(SCENARIO).expect("scenario");
    let recording: Value = serde_json::from_str(RECORDING).expect("recording");
    let net1 = recording["steps"][step_index(&scenario, "net1-create")]["bound"]["net1"].clone();
    let mut before: Option<(Value, Value)> = None;
    for step in recording["steps"].as_array().expect("steps") {
        let network = &step["response"]["body"]["network"];
        if network["id"] != net1 || network["revision_number"].is_null() {
            continue;
        }
        let now = (
            network["revision_number"].clone(),
            network["updated_at"].clone(),
        );
        if let Some((revision, updated)) = &before
            && now.0 != *revision
            && now.1.as_str() > updated.as_str()
        {
            let name = step["name"].as_str().expect("name").to_string();
            return (name, revision.clone(), updated.clone());
        }
        before = Some(now);
    }
    panic!("net1 is never revised a second later");
}

#[test]
fn a_revision_that_is_not_bumped_is_reported() {
    let (name, revision, _) = net1_revised_later();
    assert_reported(&name, |b| b["network"]["revision_number"] = revision);
    assert_reported("net1-update", |b| {
        let bumped = b["network"]["revision_number"].as_i64().expect("revision") + 1;
        b["network"]["revision_number"] = json!(bumped);
    });
}

#[test]
fn a_stale_real_revision_must_be_refused() {
    let failures = self_compared(
        SCENARIO,
        RECORDING,
        "net1-update-if-match-stale-real",
        |s, b| {
            *s = 200;
            *b = json!({"network": {"name": "net1-stale"}});
        },
    );
    assert!(
        failures
            .iter()
            .any(|f| f.contains("status: 412 recorded, Wyvern 200"))
    );
}

#[test]
fn update_times_must_move_with_neutrons() {
    let (name, _, updated) = net1_revised_later();
    // Unchanged although Neutron's changed.
    assert_reported(&name, |b| b["network"]["updated_at"] = updated.clone());
    // Back in time.
    assert_reported(&name, |b| {
        b["network"]["updated_at"] = json!("2000-01-01T00:00:00Z")
    });
    // A creation time that changes.
    assert_reported(&name, |b| {
        b["network"]["created_at"] = json!("2000-01-01T00:00:00Z")
    });
    // Changed although Neutron's did not (a read).
    assert_reported("tag-show-net1", |b| {
        b["network"]["updated_at"] = json!("2099-01-01T00:00:00Z");
    });
}

#[test]
fn standard_attr_ids_are_unique_and_fixed() {
    assert_reported("sg2-show", |b| {
        let rules = &mut b["security_group"]["security_group_rules"];
        rules[0]["standard_attr_id"] = rules[1]["standard_attr_id"].clone();
    });
    assert_reported("sg2-update", |b| {
        let rules = &mut b["security_group"]["security_group_rules"];
        let changed = rules[0]["standard_attr_id"].as_i64().expect("an integer") + 1000;
        rules[0]["standard_attr_id"] = json!(changed);
    });
}

// Rule 2, arrays, shapes and the extensions list.

#[test]
fn fixed_ips_keep_the_order_of_the_request() {
    let report = assert_reported("port3-update-fixed-ips", |b| {
        let ips = b["port"]["fixed_ips"].as_array_mut().expect("fixed_ips");
        ips.swap(0, 1);
    });
    assert!(report.contains("another order"), "{report}");
}

#[test]
fn lists_keep_their_order_only_with_sort_key() {
    assert_reported("net-sort-desc", |b| {
        b["networks"].as_array_mut().expect("networks").reverse();
    });
    // Without sort_key Neutron's order is its database's: not compared.
    let failures = self_compared(SCENARIO, RECORDING, "alice-security-groups", |_, b| {
        let groups = b["security_groups"].as_array_mut().expect("groups");
        assert!(groups.len() > 1);
        groups.reverse();
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shape_compares_every_element() {
    let failures = self_compared(TRUNK_SCENARIO, TRUNK_RECORDING, "port-parent", |_, b| {
        let ips = b["port"]["fixed_ips"].as_array_mut().expect("fixed_ips");
        let copy = ips[0].clone();
        ips.push(copy);
    });
    assert!(
        failures.iter().any(|f| f.contains(" port-parent: ")),
        "a duplicated element passed"
    );
}

/// The recorded extensions list, and the one Wyvern should give by the documented deviations.
fn extension_lists() -> (Value, Value) {
    let scenario: Value = serde_json::from_str(SCENARIO).expect("scenario");
    let recording: Value = serde_json::from_str(RECORDING).expect("recording");
    let theirs =
        recording["steps"][step_index(&scenario, "extensions-list")]["response"]["body"].clone();
    let mut ours = theirs.clone();
    let list = ours["extensions"].as_array_mut().expect("extensions");
    list.retain(|e| {
        !NEUTRON_ONLY_EXTENSIONS
            .iter()
            .any(|(a, _)| e["alias"] == *a)
    });
    for (alias, _) in WYVERN_ONLY_EXTENSIONS {
        list.push(
            json!({"alias": alias, "name": "n", "description": "d", "updated": "u", "links": []}),
        );
    }
    (theirs, ours)
}

/// What the extensions rule reports of `ours` (normalised as a step would).
fn extension_differences(theirs: &Value, ours: &Value) -> Vec<String> {
    let rules = Rules {
        volatile: Vec::new(),
        ordered: false,
        shape: false,
    };
    let none = HashMap::new();
    let (w, g) = (
        rules.normalize(theirs, &none, ""),
        rules.normalize(ours, &none, ""),
    );
    let mut out = Vec::new();
    compare_extensions(&w, &g, true, &mut out);
    out
}

#[test]
fn the_extension_aliases_are_compared_as_sets() {
    let (theirs, ours) = extension_lists();
    assert_eq!(extension_differences(&theirs, &ours), Vec::<String>::new());
    // One extension only (a shape comparison let that pass).
    let mut one = ours.clone();
    one["extensions"].as_array_mut().expect("list").truncate(1);
    assert!(!extension_differences(&theirs, &one).is_empty());
    // One dropped.
    let mut dropped = ours.clone();
    dropped["extensions"]
        .as_array_mut()
        .expect("list")
        .remove(3);
    assert!(!extension_differences(&theirs, &dropped).is_empty());
    // One listed twice.
    let mut twice = ours.clone();
    let list = twice["extensions"].as_array_mut().expect("list");
    let copy = list[0].clone();
    list.push(copy);
    assert!(!extension_differences(&theirs, &twice).is_empty());
    // One that is no deviation, or one Wyvern does not implement.
    for alias in ["no-such-extension", "dvr"] {
        let mut more = ours.clone();
        let list = more["extensions"].as_array_mut().expect("list");
        list.push(
            json!({"alias": alias, "name": "n", "description": "d", "updated": "u", "links": []}),
        );
        assert!(
            !extension_differences(&theirs, &more).is_empty(),
            "{alias} passed"
        );
    }
}

#[test]
fn a_stale_recording_is_detected() {
    let scenario: Value = serde_json::from_str(SCENARIO).expect("scenario");
    let recording: Value = serde_json::from_str(RECORDING).expect("recording");
    assert_eq!(stale_steps(&scenario, &recording), Vec::<String>::new());
    let at = |name: &str| step_index(&scenario, name);
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: [(&str, Mutation); 4] = [
        (
            "a body",
            Box::new(|r| r["body"]["network"]["name"] = json!("net0")),
        ),
        (
            "a path",
            Box::new(|r| r["path"] = json!("/v2.0/networks?name=x")),
        ),
        ("a method", Box::new(|r| r["method"] = json!("PUT"))),
        (
            "an identity",
            Box::new(|r| r["headers"]["X-Project-Id"] = json!("project-bob")),
        ),
    ];
    for (what, mutate) in mutations {
        let mut stale = recording.clone();
        mutate(&mut stale["steps"][at("net1-create")]["request"]);
        assert!(!stale_steps(&scenario, &stale).is_empty(), "{what} passed");
    }
    // A header the scenario sends (the revision of If-Match).
    let mut stale = recording.clone();
    stale["steps"][at("net1-update-if-match-stale-real")]["request"]["headers"]["If-Match"] =
        json!("revision_number=987654");
    assert!(!stale_steps(&scenario, &stale).is_empty());
    // A step more in the scenario.
    let mut longer = scenario.clone();
    let extra = longer["steps"][0].clone();
    longer["steps"].as_array_mut().expect("steps").push(extra);
    assert!(!stale_steps(&longer, &recording).is_empty());
}
