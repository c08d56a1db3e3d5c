//! List and show queries: filters on any attribute, tag filters, `fields=`, sorting and pagination.

use std::cmp::Ordering;

use model::ResourceDef;
use model::validate::echo;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::repo::Obj;

/// The query string of a request, as ordered (name, value) pairs; repeated names are kept.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                q.split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (decode_component(k), decode_component(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self(pairs)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The attributes named by `fields=` (empty: all).
    pub fn fields(&self) -> Vec<String> {
        self.all("fields")
            .flat_map(|f| f.split(','))
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The `fields=` asked for, as Neutron applies them to `def`: an address group (whose
    /// attribute map has `project_id` but no `tenant_id`) also shows `tenant_id`, which Neutron
    /// adds to the fields for its policy check and never takes out again.
    pub fn fields_of(&self, def: &ResourceDef) -> Vec<String> {
        let mut fields = self.fields();
        if !fields.is_empty() && def.collection == "address_groups" {
            fields.push("tenant_id".into());
        }
        fields
    }
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parameters that are not attribute filters.
pub(crate) const CONTROL: &[&str] = &[
    "fields",
    "sort_key",
    "sort_dir",
    "limit",
    "marker",
    "page_reverse",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
];

/// Removes internal fields and keeps only the requested ones.
pub fn render(mut obj: Obj, fields: &[String]) -> Value {
    obj.retain(|k, _| !k.starts_with('_'));
    if !fields.is_empty() {
        obj.retain(|k, _| fields.iter().any(|f| f == k));
    }
    Value::Object(obj)
}

/// How a filter's text compares with an attribute's value.
fn matches(value: &Value, wanted: &str) -> bool {
    match value {
        Value::Null => wanted.is_empty() || wanted == "None" || wanted == "null",
        Value::Bool(b) => wanted.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        Value::Number(n) => n.to_string() == wanted,
        Value::String(s) => s == wanted,
        Value::Array(items) => match wanted.split_once('=') {
            // fixed_ips=ip_address=10.0.0.3 or fixed_ips=subnet_id=...
            Some((k, v)) if items.iter().any(Value::is_object) => items
                .iter()
                .any(|i| i.get(k).is_some_and(|x| matches(x, v))),
            _ => items.iter().any(|i| matches(i, wanted)),
        },
        Value::Object(_) => false,
    }
}

fn tag_set(obj: &Obj) -> Vec<&str> {
    obj.get("tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn tag_list<'a>(q: &'a Query, name: &'a str) -> Vec<&'a str> {
    q.all(name)
        .flat_map(|v| v.split(','))
        .filter(|t| !t.is_empty())
        .collect()
}

/// Checks every filter names a known attribute.
pub fn validate_filters(def: &ResourceDef, q: &Query) -> ApiResult<()> {
    for (name, _) in &q.0 {
        if !CONTROL.contains(&name.as_str()) && def.attr(name).is_none() {
            return Err(ApiError::bad_request(format!(
                "[{}] is invalid attribute for filtering",
                echo(name)
            )));
        }
    }
    Ok(())
}

/// Whether an object passes every attribute and tag filter of the query.
pub fn passes(q: &Query, obj: &Obj) -> bool {
    let mut names: Vec<&str> =
        q.0.iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !CONTROL.contains(k))
            .collect();
    names.dedup();
    let attrs_ok = names.iter().all(|name| {
        let value = obj.get(*name).unwrap_or(&Value::Null);
        q.all(name).any(|wanted| matches(value, wanted))
    });
    if !attrs_ok {
        return false;
    }
    let tags = tag_set(obj);
    let all = tag_list(q, "tags");
    let any = tag_list(q, "tags-any");
    let not_all = tag_list(q, "not-tags");
    let not_any = tag_list(q, "not-tags-any");
    all.iter().all(|t| tags.contains(t))
        && (any.is_empty() || any.iter().any(|t| tags.contains(t)))
        && (not_all.is_empty() || !not_all.iter().all(|t| tags.contains(t)))
        && !not_any.iter().any(|t| tags.contains(t))
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or_default()
            .partial_cmp(&y.as_f64().unwrap_or_default())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// The non-empty values of a repeated parameter (Neutron ignores empty ones).
fn list_args<'a>(q: &'a Query, name: &'a str) -> Vec<&'a str> {
    q.all(name).filter(|v| !v.is_empty()).collect()
}

/// Encodes a query component as Python's `urllib.parse.quote_plus` does (Neutron builds its links so).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A pagination link: the request's own query with `marker` (and `page_reverse`) replaced.
fn page_link(base: &str, q: &Query, marker: Option<&str>, reverse: bool) -> String {
    let mut params: Vec<(&str, &str)> =
        q.0.iter()
            .filter(|(k, _)| k != "marker" && k != "page_reverse")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
    if let Some(marker) = marker {
        params.push(("marker", marker));
    }
    if reverse {
        params.push(("page_reverse", "True"));
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// Sorts, pages and renders a filtered list whose URL is `collection_url`. Returns the items and
/// the `<collection>_links`, if any.
///
/// Links follow Neutron: with a `limit`, a `next` link unless a forward page came back short, and a
/// `previous` link unless a reverse page came back short; each link repeats the request's query.
pub fn page(
    def: &ResourceDef,
    q: &Query,
    collection_url: &str,
    mut items: Vec<Obj>,
) -> ApiResult<(Vec<Value>, Option<Value>)> {
    let keys = list_args(q, "sort_key");
    let dirs = list_args(q, "sort_dir");
    if keys.len() != dirs.len() {
        return Err(ApiError::bad_request(
            "The number of sort_keys and sort_dirs must be same",
        ));
    }
    let unknown: Vec<String> = keys
        .iter()
        .filter(|k| def.attr(k).is_none())
        .map(|k| format!("'{}'", echo(k)))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "[{}] is invalid attribute for sort_keys",
            unknown.join(", ")
        )));
    }
    let bad_dirs: Vec<String> = dirs
        .iter()
        .filter(|d| **d != "asc" && **d != "desc")
        .map(|d| format!("'{}'", echo(d)))
        .collect();
    if !bad_dirs.is_empty() {
        return Err(ApiError::bad_request(format!(
            "[{}] is invalid value for sort_dirs, valid value is 'asc' and 'desc'",
            bad_dirs.join(", ")
        )));
    }
    let reverse = q
        .first("page_reverse")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    items.sort_by(|a, b| {
        for (i, k) in keys.iter().enumerate() {
            let null = Value::Null;
            let ord = compare_values(a.get(*k).unwrap_or(&null), b.get(*k).unwrap_or(&null));
            let ord = if dirs.get(i) == Some(&"desc") {
                ord.reverse()
            } else {
                ord
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        crate::repo::str_field(a, "id").cmp(crate::repo::str_field(b, "id"))
    });
    if reverse {
        items.reverse();
    }
    let limit = match q.first("limit") {
        None => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(0) => None,
            _ => {
                return Err(ApiError::bad(
                    "BadRequest",
                    format!(
                        "Bad limit request: Limit must be an integer 0 or greater and not '{}'.",
                        echo(l)
                    ),
                ));
            }
        },
    };
    let fields = q.fields_of(def);
    let Some(limit) = limit else {
        return Ok((
            items.into_iter().map(|o| render(o, &fields)).collect(),
            None,
        ));
    };
    let marker = q.first("marker").filter(|m| !m.is_empty());
    let start = match marker {
        Some(m) => match items
            .iter()
            .position(|o| crate::repo::str_field(o, "id") == m)
        {
            Some(i) => i + 1,
            None => {
                return Err(ApiError::object_not_found(def.error_name, def.singular, m));
            }
        },
        None => 0,
    };
    let mut page: Vec<Obj> = items.into_iter().skip(start).take(limit).collect();
    if reverse {
        page.reverse();
    }
    let base = collection_url;
    let short = page.len() < limit;
    fn id(o: Option<&Obj>) -> Option<&str> {
        o.map(|o| crate::repo::str_field(o, "id"))
    }
    let mut links = Vec::new();
    if !short || reverse {
        let href = page_link(base, q, id(page.last()), false);
        links.push(json!({"rel": "next", "href": href}));
    }
    if !short || !reverse {
        let href = page_link(base, q, id(page.first()), true);
        links.push(json!({"rel": "previous", "href": href}));
    }
    let rendered = page.into_iter().map(|o| render(o, &fields)).collect();
    Ok((rendered, Some(Value::Array(links))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Obj {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn repeated_filters_mean_any_of() {
        let q = Query::parse(Some("name=a&name=b&admin_state_up=True"));
        assert!(passes(
            &q,
            &obj(json!({"name": "b", "admin_state_up": true}))
        ));
        assert!(!passes(
            &q,
            &obj(json!({"name": "c", "admin_state_up": true}))
        ));
        assert!(!passes(
            &q,
            &obj(json!({"name": "a", "admin_state_up": false}))
        ));
    }

    #[test]
    fn fixed_ip_filters_look_inside_the_list() {
        let q = Query::parse(Some("fixed_ips=ip_address%3D10.0.0.3"));
        let port = obj(json!({"fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.3"}]}));
        assert!(passes(&q, &port));
        let q = Query::parse(Some("fixed_ips=ip_address=10.0.0.4"));
        assert!(!passes(&q, &port));
    }

    #[test]
    fn tag_filters() {
        let o = obj(json!({"tags": ["red", "blue"]}));
        assert!(passes(&Query::parse(Some("tags=red,blue")), &o));
        assert!(!passes(&Query::parse(Some("tags=red,green")), &o));
        assert!(passes(&Query::parse(Some("tags-any=green,blue")), &o));
        assert!(!passes(&Query::parse(Some("not-tags-any=green,blue")), &o));
        assert!(passes(&Query::parse(Some("not-tags=red,green")), &o));
    }

    #[test]
    fn links_repeat_the_query() {
        let q = Query::parse(Some(
            "name=a+b&fields=id&limit=1&marker=x&page_reverse=True",
        ));
        assert_eq!(
            page_link("http://h/v2.0/networks", &q, Some("y"), false),
            "http://h/v2.0/networks?name=a+b&fields=id&limit=1&marker=y"
        );
        let q = Query::parse(Some("provider:network_type=vlan&limit=2"));
        assert_eq!(
            page_link("b", &q, Some("m"), true),
            "b?provider%3Anetwork_type=vlan&limit=2&marker=m&page_reverse=True"
        );
    }

    #[test]
    fn percent_decoding() {
        let q = Query::parse(Some("name=a%20b+c&x=%zz"));
        assert_eq!(q.first("name"), Some("a b c"));
        assert_eq!(q.first("x"), Some("%zz"));
    }
}
