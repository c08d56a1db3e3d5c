//! Conformance with the real Neutron: replays `reference/scenario.json` against Wyvern and compares every
//! answer with the reference Neutron's recorded answer (`reference/neutron-recording.json`, made by
//! `reference/record.py`). The same for the load-balancer API and the real Octavia:
//! `reference/octavia-scenario.json` and `reference/octavia-recording.json`. A scenario's `setup`
//! steps run against Wyvern only, before the others (the reference Octavia's no-op network needs no
//! subnet; `reference_bound` gives the recording the values they bind), and its top-level
//! `volatile` keys are volatile in every step (the Octavia scenario's statuses: Wyvern documents its
//! own, see `api::lbaas`). And for service function chaining and the real networking-sfc (in the
//! reference Neutron): `reference/sfc-scenario.json` and `reference/sfc-recording.json`.
//!
//! The comparison rules, all of them:
//! 1. The status codes are equal.
//! 2. The bodies are equal after both sides are normalised the same way:
//!    - a UUID that a step bound (scenario `bind`) becomes `{name}`, any other UUID `<uuid>`, also inside
//!      strings such as pagination links; so ids must be consistent, not equal;
//!    - the server's own base URL becomes `{base}`, and the query parameters of a link are sorted;
//!    - `created_at`/`updated_at` must be `YYYY-MM-DDTHH:MM:SSZ` (Octavia's `YYYY-MM-DDTHH:MM:SS.ffffff`), `revision_number` and
//!      `standard_attr_id` integers, `mac_address` a lower-case MAC, `provider:segmentation_id` an
//!      integer or null;
//!    - `NeutronError.message` may be any string (its `type` and `detail` are compared);
//!    - the keys listed in a step's `volatile` need only the same JSON type (random addresses);
//!    - arrays are multisets, except `dns_nameservers` (the order is the resolver preference) and the
//!      top-level collection of an `ordered` step (sorted, paged);
//!    - a `compare: "shape"` step compares only keys and JSON types (arrays as sets of shapes).
//! 3. One documented exception, where the reference differs from a deployed Neutron (see
//!    ../shared/design/reference-neutron.md): its tables come from the models, not from migrations, so the
//!    templates of default security-group rules are empty. A deployed Neutron gives every new group an
//!    egress rule per ethertype and the project's `default` group also an ingress rule per ethertype from
//!    the group itself; [`add_deployed_default_rules`] adds those to every recorded security group before
//!    comparing. (The other artifact, `binding:vif_type` `binding_failed` for lack of an L2 agent, is
//!    declared `volatile` in the scenario's binding steps.)
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

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

const SCENARIO: &str = include_str!("reference/scenario.json");
const RECORDING: &str = include_str!("reference/neutron-recording.json");
const OCTAVIA_SCENARIO: &str = include_str!("reference/octavia-scenario.json");
const OCTAVIA_RECORDING: &str = include_str!("reference/octavia-recording.json");
const SFC_SCENARIO: &str = include_str!("reference/sfc-scenario.json");
const SFC_RECORDING: &str = include_str!("reference/sfc-recording.json");

/// What one step got back.
struct Answer {
    status: u16,
    body: Value,
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

/// Replays a scenario against Wyvern and compares every answer with the reference's recorded one.
async fn conforms(scenario: &str, recording: &str, reference: &str) {
    let scenario: Value = serde_json::from_str(scenario).expect("the scenario is JSON");
    let recording: Value = serde_json::from_str(recording).expect("the recording is JSON");
    let steps = scenario["steps"].as_array().expect("scenario steps");
    let recorded = recording["steps"].as_array().expect("recorded steps");
    let recorded_names: Vec<&Value> = recorded.iter().map(|s| &s["name"]).collect();
    let scenario_names: Vec<&Value> = steps.iter().map(|s| &s["name"]).collect();
    assert_eq!(
        scenario_names, recorded_names,
        "the recording is stale: run tests/reference/record.py against the reference {reference}"
    );

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

    let ours = symbols(bound.iter());
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
    let mut failures = Vec::new();
    for (index, ((step, record), answer)) in steps.iter().zip(recorded).zip(&answers).enumerate() {
        let title = format!(
            "step {} {}: {} {} (as {})",
            index + 1,
            step["name"].as_str().unwrap_or("?"),
            step["method"].as_str().unwrap_or("?"),
            step["path"].as_str().unwrap_or("?"),
            step["as"].as_str().unwrap_or("admin"),
        );
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                failures.push(format!("{title}\n  not sent: {err}"));
                continue;
            }
        };
        let mut diffs = Vec::new();
        let their_status = record["response"]["status"].as_u64().unwrap_or(0);
        if u64::from(answer.status) != their_status {
            diffs.push(format!(
                "status: {reference} {their_status}, Wyvern {}",
                answer.status
            ));
        }
        for (name, path) in step["bind"].as_object().into_iter().flatten() {
            if lookup(&answer.body, path.as_str().unwrap_or("")).is_none() {
                diffs.push(format!("cannot bind {name} from {path} of Wyvern's answer"));
            }
        }
        let mut expected = record["response"]["body"].clone();
        if deployed_exception {
            let method = step["method"].as_str().unwrap_or("GET");
            let shape = RuleShape::of(method, &expected);
            add_deployed_default_rules(&mut expected, shape);
        }
        let rules = Rules::of(&scenario, step);
        let expected = rules.normalize(&expected, &theirs, their_base);
        let actual = rules.normalize(&answer.body, &ours, &base);
        diff("$", &expected, &actual, &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{title}\n  {}", diffs.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} steps differ from the reference {reference}:\n\n{}\n",
        failures.len(),
        steps.len(),
        failures.join("\n\n")
    );
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
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| json!(format!("<not JSON: {text}>")))
    };
    Ok(Answer { status, body })
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
                for ethertype in ["IPv4", "IPv6"] {
                    let mut wanted = vec![("egress", Value::Null)];
                    if is_default {
                        wanted.push(("ingress", group["id"].clone()));
                    }
                    for (direction, remote_group) in wanted {
                        let present = rules.iter().any(|r| {
                            r["direction"] == direction
                                && r["ethertype"] == ethertype
                                && r["protocol"].is_null()
                                && r["remote_ip_prefix"].is_null()
                                && r["remote_group_id"] == remote_group
                        });
                        if !present {
                            let mut rule = default_rule(&group, direction, ethertype, remote_group);
                            if shape != RuleShape::Created {
                                rule["standard_attr_id"] = json!(0);
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
    direction: &str,
    ethertype: &str,
    remote_group: Value,
) -> Value {
    json!({
        "id": "00000000-0000-4000-8000-000000000000",
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
        "updated_at": group["updated_at"],
        "revision_number": 0,
    })
}

/// How one step's bodies are normalised before they are compared.
struct Rules<'a> {
    volatile: Vec<&'a str>,
    ordered: bool,
    shape: bool,
}

impl<'a> Rules<'a> {
    fn of(scenario: &'a Value, step: &'a Value) -> Rules<'a> {
        Rules {
            volatile: step["volatile"]
                .as_array()
                .into_iter()
                .chain(scenario["volatile"].as_array())
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
            ordered: step["ordered"] == json!(true),
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
            && let Some(marker) = self.keyed(key, value)
        {
            return marker;
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
                if self.shape {
                    items.sort_by_key(Value::to_string);
                    items.dedup();
                } else if !(self.ordered && depth == 1 || key == Some("dns_nameservers")) {
                    items.sort_by_cached_key(|v| (v["name"].to_string(), v.to_string()));
                }
                Value::Array(items)
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) if self.shape => {
                type_marker(value)
            }
            Value::String(s) => Value::String(normalize_string(s, symbols, base)),
            other => other.clone(),
        }
    }

    /// The key-based rules; `None` when the key has no rule or the value is null where null is fine.
    fn keyed(&self, key: &str, value: &Value) -> Option<Value> {
        let checked = |ok: bool, marker: &str| {
            Some(if ok {
                json!(marker)
            } else {
                json!(format!("<not {marker}: {value}>"))
            })
        };
        match key {
            _ if self.volatile.contains(&key) => Some(type_marker(value)),
            "created_at" | "updated_at" => {
                checked(value.as_str().is_some_and(is_timestamp), "<timestamp>")
            }
            "revision_number" | "standard_attr_id" => {
                checked(value.is_i64() || value.is_u64(), "<integer>")
            }
            "mac_address" => checked(value.as_str().is_some_and(is_mac), "<mac>"),
            "provider:segmentation_id" if !value.is_null() => {
                checked(value.is_i64() || value.is_u64(), "<integer>")
            }
            _ => None,
        }
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
    let s = match s.strip_prefix(base) {
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
                match unmatched.iter().position(|other| *other == element) {
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
            } else if missing.is_empty() && w != g {
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
        _ if want != got => out.push(format!(
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
