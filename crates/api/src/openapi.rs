//! The API's description: an OpenAPI 3.1 document generated from the attribute maps of the `model`
//! crate when asked for, served at `GET /wyvern/v1/openapi.json` for clients and fuzzers.
//!
//! Every resource of [`model::resources::ALL`] gets its collection (list, with a filter on each
//! attribute, `fields`, `limit`, `marker`, `page_reverse`, sorting and, on taggable resources, the
//! tag filters; create, of one object or of several at once, as Neutron allows on every resource),
//! its members (show with `fields`, update, delete), its member actions (`add_router_interface`,
//! ...) and, if taggable, its tags. The load-balancer resources ([`model::lbaas::ALL`]) get the same
//! under `/v2.0/lbaas/` (members under their pool), without bulk creates, with Octavia's faults as
//! errors, and the status tree of a load balancer. The quotas ([`model::quotas`]), the extensions, the availability
//! zones and the version documents have their paths too; the server's own `/wyvern/v1` routes (the
//! agents' sync, chassis and bindings) are not described.
//!
//! A create body takes the attributes allowed on POST, an update body those allowed on PUT, each
//! with the shape of the values its validator accepts ([`model::shape`]); required attributes are
//! required and no others allowed. Addresses and prefixes carry examples, the ends of the address
//! space among them. A description is loose where the validators are (a value the
//! schema allows may still be refused, by a resource's semantics), and answers are described only
//! roughly: objects of the resource with its attributes, errors as `NeutronError`. The answer of a
//! create links, for stateful fuzzers, to the operations on the object it made, and to the creates
//! of the resources that refer to it by an attribute named after it (`network_id`,
//! `floating_network_id`, ...).

use axum::response::{IntoResponse, Response};
use model::quotas;
use model::resources::{ALL, ResourceDef};
use model::shape::{Format, Shape};
use serde_json::{Map, Value, json};

/// The OpenAPI version of the document.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// Where the document is served.
pub const PATH: &str = "/wyvern/v1/openapi.json";

/// `GET /wyvern/v1/openapi.json`.
pub async fn serve() -> Response {
    axum::Json(document()).into_response()
}

/// The description of the whole API.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    general_paths(&mut paths);
    for def in ALL {
        resource_paths(def, &mut paths);
        schemas.insert(def.error_name.to_string(), object_schema(def));
    }
    quota_paths(&mut paths);
    for def in model::lbaas::ALL {
        lbaas_paths(def, &mut paths);
        schemas.insert(lbaas_schema_name(def), object_schema(def));
    }
    schemas.insert(
        "OctaviaFault".into(),
        json!({"type": "object", "properties": {"faultcode": {"type": "string"},
            "faultstring": {"type": "string"}, "debuginfo": {}}}),
    );
    schemas.insert(
        "NeutronError".into(),
        json!({"type": "object", "properties": {"NeutronError": {"type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                "detail": {"type": "string"}}}}}),
    );
    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Wyvern: the OpenStack Networking (Neutron) API v2.0",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated from Wyvern's attribute maps. Without authentication \
                configured, every request is admin unless X-Project-Id (and X-Roles) name a project.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The pattern of CIDRs: prefixes without host bits (what every attribute taking a CIDR accepts),
/// IPv4 with a length of 8, 16, 24 or 32 and IPv6 with 48, 64 or 128. A fuzzer that keeps to the
/// pattern makes subnets; one that strays from it tries the validators.
fn cidr_pattern() -> String {
    const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    const GROUP: &str = "[0-9a-f]{1,4}";
    [
        format!("{OCTET}\\.0\\.0\\.0/8"),
        format!("{OCTET}\\.{OCTET}\\.0\\.0/16"),
        format!("{OCTET}\\.{OCTET}\\.{OCTET}\\.0/24"),
        format!("{OCTET}\\.{OCTET}\\.{OCTET}\\.{OCTET}/32"),
        format!("({GROUP}:){{1,3}}:/48"),
        format!("({GROUP}:){{1,4}}:/64"),
        format!("({GROUP}:){{7}}{GROUP}/128"),
    ]
    .map(|alternative| format!("^{alternative}$"))
    .join("|")
}

/// The JSON Schema of values of `shape`.
fn schema(shape: &Shape) -> Value {
    match shape {
        Shape::Any => json!({}),
        Shape::Boolean => json!({"type": "boolean"}),
        Shape::Text(None) => json!({"type": "string"}),
        Shape::Text(Some(max)) => json!({"type": "string", "maxLength": max}),
        Shape::Formatted(Format::Uuid) => json!({"type": "string", "format": "uuid"}),
        Shape::Formatted(Format::IpAddress) => json!({"anyOf": [
            {"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}],
            "examples": ["10.0.0.10", "2001:db8::10", "0.0.0.0", "255.255.255.255", "::",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]}),
        Shape::Formatted(Format::Cidr) => json!({"type": "string", "pattern": cidr_pattern(),
            "examples": ["10.0.0.0/24", "2001:db8::/64", "255.255.255.255/32",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]}),
        Shape::Formatted(Format::MacAddress) => json!({"type": "string",
            "pattern": r"^[0-9a-f][26ae](:[0-9a-f]{2}){5}$", "examples": ["fa:16:3e:00:00:01"]}),
        Shape::OneOf(names) => json!({"type": "string", "enum": names}),
        Shape::Integer { min, max } => {
            let mut s = json!({"type": "integer"});
            if let Some(min) = min {
                s["minimum"] = json!(min);
            }
            if let Some(max) = max {
                s["maximum"] = json!(max);
            }
            s
        }
        Shape::IntegerOneOf(values) => json!({"type": "integer", "enum": values}),
        Shape::Either(shapes) => json!({"anyOf": shapes.iter().map(schema).collect::<Vec<_>>()}),
        Shape::ListOf(item) => json!({"type": "array", "items": schema(item)}),
        Shape::Dict => json!({"type": "object"}),
        Shape::Object(fields) => {
            let properties: Map<String, Value> = fields
                .iter()
                .map(|(name, shape)| (name.to_string(), schema(shape)))
                .collect();
            json!({"type": "object", "properties": properties, "additionalProperties": false})
        }
        Shape::OrNull(shape) => json!({"anyOf": [schema(shape), {"type": "null"}]}),
    }
}

/// An object whose attributes are those of `attrs` that the request may give.
fn body_object<'a>(attrs: impl Iterator<Item = &'a model::Attr>, required: &[&str]) -> Value {
    let properties: Map<String, Value> = attrs
        .map(|a| (a.name.to_string(), schema(&a.validate.shape)))
        .collect();
    json!({"type": "object", "properties": properties, "required": required,
        "additionalProperties": false})
}

/// An object of `def` as answers show it: its attributes, loosely.
fn object_schema(def: &ResourceDef) -> Value {
    let mut properties: Map<String, Value> = def
        .all_attrs()
        .map(|a| (a.name.to_string(), json!({})))
        .collect();
    properties.insert("id".into(), schema(&Shape::UUID));
    json!({"type": "object", "properties": properties})
}

fn reference(def: &ResourceDef) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", def.error_name)})
}

/// A JSON request body of `schema`.
fn request_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// An operation: its id, parameters, request body (if any) and answers. Every operation may also
/// answer a `NeutronError`.
fn operation(id: &str, parameters: Vec<Value>, body: Option<Value>, answers: Value) -> Value {
    let mut op = json!({"operationId": id, "parameters": parameters, "responses": answers});
    op["responses"]["default"] = json!({"description": "An error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NeutronError"}}}});
    if let Some(body) = body {
        op["requestBody"] = request_body(body);
    }
    op
}

/// A JSON answer.
fn answer(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn no_content() -> Value {
    json!({"204": {"description": "Done"}})
}

fn path_parameter(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn query_parameter(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

/// A query parameter that may be repeated (`fields=a&fields=b`).
fn repeated_parameter(name: &str, item: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "style": "form", "explode": true,
        "schema": {"type": "array", "items": item}})
}

/// `fields=`: which attributes of `def` to show.
fn fields_parameter(def: &ResourceDef) -> Value {
    repeated_parameter("fields", attribute_names(def))
}

fn attribute_names(def: &ResourceDef) -> Value {
    let names: Vec<&str> = def.all_attrs().map(|a| a.name).collect();
    json!({"type": "string", "enum": names})
}

/// The path parameter of an object of `def`: `network_id`.
fn id_parameter_name(def: &ResourceDef) -> String {
    format!("{}_id", def.singular)
}

/// `/`, `/v2.0`, the extensions and the availability zones.
fn general_paths(paths: &mut Map<String, Value>) {
    let any = || answer("The document", json!({"type": "object"}));
    paths.insert(
        "/".into(),
        json!({"get": operation("list_versions", vec![], None, json!({"200": any()}))}),
    );
    paths.insert(
        "/v2.0".into(),
        json!({"get": operation("list_resources", vec![], None, json!({"200": any()}))}),
    );
    paths.insert(
        "/v2.0/extensions".into(),
        json!({"get": operation("list_extensions", vec![], None, json!({"200": any()}))}),
    );
    let aliases: Vec<&str> = crate::extensions::aliases().collect();
    let alias = path_parameter("alias", json!({"type": "string", "enum": aliases}));
    paths.insert(
        "/v2.0/extensions/{alias}".into(),
        json!({"get": operation("show_extension", vec![alias], None, json!({"200": any()}))}),
    );
    let zone_parameters = ["name", "resource", "state"]
        .into_iter()
        .map(|name| query_parameter(name, json!({"type": "string"})))
        .chain([repeated_parameter(
            "fields",
            json!({"type": "string", "enum": ["name", "resource", "state"]}),
        )])
        .collect();
    paths.insert(
        "/v2.0/availability_zones".into(),
        json!({"get": operation("list_availability_zones", zone_parameters, None,
            json!({"200": any()}))}),
    );
}

/// The paths of one resource: its collection, its members, their actions and tags.
fn resource_paths(def: &ResourceDef, paths: &mut Map<String, Value>) {
    let collection = format!("/v2.0/{}", def.path);
    let member = format!("{collection}/{{{}}}", id_parameter_name(def));
    let one = json!({"type": "object", "properties": {def.singular: reference(def)}});
    let many = json!({"type": "object", "properties": {def.collection: {"type": "array", "items": reference(def)}}});
    let id = || path_parameter(&id_parameter_name(def), schema(&Shape::UUID));

    // One object, or several from a bulk create.
    let mut created = answer(
        "Created",
        json!({"type": "object", "properties": {def.singular: reference(def),
            def.collection: {"type": "array", "items": reference(def)}}}),
    );
    created["links"] = Value::Object(create_links(def));
    paths.insert(
        collection.clone(),
        json!({
            "get": operation(&format!("list_{}", def.collection), list_parameters(def), None,
                json!({"200": answer("The objects", many.clone())})),
            "post": operation(&format!("create_{}", def.singular), vec![],
                Some(create_body(def)), json!({"201": created})),
        }),
    );
    let update = body_object(def.all_attrs().filter(|a| a.put), &[]);
    let update = json!({"type": "object", "properties": {def.singular: update},
        "required": [def.singular], "additionalProperties": false});
    paths.insert(
        member.clone(),
        json!({
            "get": operation(&format!("show_{}", def.singular), vec![id(), fields_parameter(def)],
                None, json!({"200": answer("The object", one.clone())})),
            "put": operation(&format!("update_{}", def.singular), vec![id()], Some(update),
                json!({"200": answer("The object", one)})),
            "delete": operation(&format!("delete_{}", def.singular), vec![id()], None, no_content()),
        }),
    );
    for action in def.actions {
        paths.insert(
            format!("{member}/{}", action.name),
            json!({"put": operation(action.name, vec![id()], Some(schema(&action.body)),
                json!({"200": answer("The result", json!({"type": "object"}))}))}),
        );
    }
    if def.taggable {
        let tags = json!({"type": "object", "properties": {"tags": {"type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^,/]*$"}}}});
        let tags_answer = || json!({"200": answer("The tags", tags.clone())});
        paths.insert(
            format!("{member}/tags"),
            json!({
                "get": operation(&format!("list_{}_tags", def.singular), vec![id()], None,
                    tags_answer()),
                "post": operation(&format!("add_{}_tags", def.singular), vec![id()],
                    Some(json!({"type": "object", "properties": tags["properties"].clone(),
                        "required": ["tags"]})),
                    json!({"200": answer("The tags added", tags.clone())})),
                "put": operation(&format!("replace_{}_tags", def.singular), vec![id()],
                    Some(json!({"type": "object", "properties": tags["properties"].clone(),
                        "required": ["tags"]})),
                    tags_answer()),
                "delete": operation(&format!("delete_{}_tags", def.singular), vec![id()], None,
                    no_content()),
            }),
        );
        let tag = || vec![id(), path_parameter("tag", json!({"type": "string"}))];
        paths.insert(
            format!("{member}/tags/{{tag}}"),
            json!({
                "get": operation(&format!("check_{}_tag", def.singular), tag(), None, no_content()),
                "put": operation(&format!("add_{}_tag", def.singular), tag(), None,
                    json!({"201": {"description": "Added"}})),
                "delete": operation(&format!("remove_{}_tag", def.singular), tag(), None,
                    no_content()),
            }),
        );
    }
}

/// The query parameters of a list: a filter per attribute, `fields`, paging, sorting, tags.
fn list_parameters(def: &ResourceDef) -> Vec<Value> {
    let mut parameters: Vec<Value> = def
        .all_attrs()
        .filter(|a| a.name != "tags")
        .map(|a| query_parameter(a.name, json!({"type": "string"})))
        .collect();
    parameters.extend([
        fields_parameter(def),
        query_parameter("limit", json!({"type": "integer", "minimum": 0})),
        query_parameter("marker", schema(&Shape::UUID)),
        query_parameter("page_reverse", json!({"type": "boolean"})),
        repeated_parameter("sort_key", attribute_names(def)),
        repeated_parameter(
            "sort_dir",
            json!({"type": "string", "enum": ["asc", "desc"]}),
        ),
    ]);
    if def.taggable {
        for name in ["tags", "tags-any", "not-tags", "not-tags-any"] {
            parameters.push(query_parameter(name, json!({"type": "string"})));
        }
    }
    parameters
}

/// A create body: `{"network": {...}}`, or `{"networks": [{...}, ...]}` for several.
fn create_body(def: &ResourceDef) -> Value {
    let required: Vec<&str> = def
        .all_attrs()
        .filter(|a| a.post && a.default == model::Default::Required)
        .map(|a| a.name)
        .collect();
    let item = body_object(def.all_attrs().filter(|a| a.post), &required);
    json!({"anyOf": [
        {"type": "object", "properties": {def.singular: item}, "required": [def.singular],
            "additionalProperties": false},
        {"type": "object", "properties": {def.collection: {"type": "array", "items": item,
            "minItems": 1}}, "required": [def.collection], "additionalProperties": false},
    ]})
}

/// The links of a create's answer: to the operations on the new object, and to the creates and
/// actions whose bodies refer to it (an attribute `<singular>_id` or `..._<singular>_id`).
fn create_links(def: &ResourceDef) -> Map<String, Value> {
    let new_id = json!(format!("$response.body#/{}/id", def.singular));
    let mut links = Map::new();
    let mut member_ops = vec![
        format!("show_{}", def.singular),
        format!("update_{}", def.singular),
        format!("delete_{}", def.singular),
    ];
    member_ops.extend(def.actions.iter().map(|a| a.name.to_string()));
    if def.taggable {
        member_ops.extend(
            ["list_{}_tags", "replace_{}_tags", "add_{}_tag"]
                .map(|pattern| pattern.replace("{}", def.singular)),
        );
    }
    for op in member_ops {
        links.insert(
            op.clone(),
            json!({"operationId": op, "parameters": {id_parameter_name(def): new_id}}),
        );
    }
    let refers = |name: &str| {
        let field = id_parameter_name(def);
        name == field || name.ends_with(&format!("_{field}"))
    };
    for other in ALL {
        let op = format!("create_{}", other.singular);
        for attr in other.attrs.iter().filter(|a| a.post) {
            for (label, value) in referring(attr.name, &attr.validate.shape, &refers, &new_id) {
                links.insert(
                    format!("{op}.{label}"),
                    json!({"operationId": op,
                        "requestBody": {other.singular: {attr.name: value}}}),
                );
            }
        }
        for action in other.actions {
            for (label, body) in referring(action.name, &action.body, &refers, &new_id) {
                links.insert(
                    label,
                    json!({"operationId": action.name, "requestBody": body}),
                );
            }
        }
    }
    links
}

/// The values of a field `name` of `shape` that put `id` where the field, or a field within it,
/// refers to an object (`refers`), each with the path to that field (`fixed_ips.subnet_id`).
fn referring(
    name: &str,
    shape: &Shape,
    refers: &dyn Fn(&str) -> bool,
    id: &Value,
) -> Vec<(String, Value)> {
    if refers(name) {
        return vec![(name.to_string(), id.clone())];
    }
    match shape {
        Shape::OrNull(shape) => referring(name, shape, refers, id),
        Shape::ListOf(item) => referring(name, item, refers, id)
            .into_iter()
            .map(|(label, value)| (label, json!([value])))
            .collect(),
        Shape::Object(fields) => fields
            .iter()
            .flat_map(|(field, shape)| {
                referring(field, shape, refers, id)
                    .into_iter()
                    .map(move |(label, value)| (format!("{name}.{label}"), json!({*field: value})))
            })
            .collect(),
        _ => vec![],
    }
}

/// The name of the schema of an Octavia object (`Octavialoadbalancer`).
fn lbaas_schema_name(def: &ResourceDef) -> String {
    format!("Octavia{}", def.singular)
}

/// The paths of one load-balancer resource: its collection and members under `/v2.0/lbaas/`
/// (members of a pool under the pool), and a load balancer's status tree. Errors are Octavia's
/// faults.
fn lbaas_paths(def: &ResourceDef, paths: &mut Map<String, Value>) {
    let octavia = |mut op: Value| {
        op["responses"]["default"]["content"]["application/json"]["schema"] =
            json!({"$ref": "#/components/schemas/OctaviaFault"});
        op
    };
    let reference = json!({"$ref": format!("#/components/schemas/{}", lbaas_schema_name(def))});
    let one = json!({"type": "object", "properties": {def.singular: reference.clone()}});
    let many = json!({"type": "object",
        "properties": {def.collection: {"type": "array", "items": reference}}});
    let uuid = |name: &str| path_parameter(name, schema(&Shape::UUID));
    let (collection, mut parents) = if def.collection == "members" {
        (
            "/v2.0/lbaas/pools/{pool_id}/members".to_string(),
            vec![uuid("pool_id")],
        )
    } else {
        (format!("/v2.0/lbaas/{}", def.path), vec![])
    };
    let ids = || {
        parents
            .iter()
            .cloned()
            .chain([uuid(&id_parameter_name(def))])
    };
    let required: Vec<&str> = def
        .all_attrs()
        .filter(|a| a.post && a.default == model::Default::Required)
        .map(|a| a.name)
        .collect();
    let body = |attrs: &mut dyn Iterator<Item = &model::Attr>, required: &[&str]| {
        json!({"type": "object", "properties": {def.singular: body_object(attrs, required)},
            "required": [def.singular], "additionalProperties": false})
    };
    let create = body(&mut def.all_attrs().filter(|a| a.post), &required);
    let update = body(&mut def.all_attrs().filter(|a| a.put), &[]);
    let name = |verb: &str| format!("{verb}_lbaas_{}", def.singular);
    let mut list = parents.clone();
    list.extend(list_parameters(def));
    let mut show = ids().collect::<Vec<_>>();
    show.push(fields_parameter(def));
    paths.insert(
        collection.clone(),
        json!({
            "get": octavia(operation(&name("list"), list, None,
                json!({"200": answer("The objects", many)}))),
            "post": octavia(operation(&name("create"), parents.clone(), Some(create),
                json!({"201": answer("Created", one.clone())}))),
        }),
    );
    paths.insert(
        format!("{collection}/{{{}}}", id_parameter_name(def)),
        json!({
            "get": octavia(operation(&name("show"), show, None,
                json!({"200": answer("The object", one.clone())}))),
            "put": octavia(operation(&name("update"), ids().collect(), Some(update),
                json!({"200": answer("The object", one)}))),
            "delete": octavia(operation(&name("delete"), ids().collect(), None, no_content())),
        }),
    );
    if def.collection == "loadbalancers" {
        parents.push(uuid(&id_parameter_name(def)));
        paths.insert(
            format!("{collection}/{{{}}}/status", id_parameter_name(def)),
            json!({"get": octavia(operation("show_lbaas_loadbalancer_status", parents, None,
                json!({"200": answer("The status tree", json!({"type": "object"}))})))}),
        );
    }
}

/// The quotas: the list, a project's limits (show, update, delete), its details and defaults.
fn quota_paths(paths: &mut Map<String, Value>) {
    let limits: Map<String, Value> = quotas::ALL
        .iter()
        .map(|r| {
            let limit = Shape::Integer {
                min: Some(quotas::UNLIMITED),
                max: Some(quotas::MAX_LIMIT),
            };
            (r.name.to_string(), schema(&limit))
        })
        .chain([
            ("force".to_string(), json!({"type": "boolean"})),
            ("check_limit".to_string(), json!({"type": "boolean"})),
        ])
        .collect();
    let update = json!({"type": "object", "required": ["quota"], "additionalProperties": false,
        "properties": {"quota": {"type": "object", "properties": limits,
            "additionalProperties": false}}});
    let project = || vec![path_parameter("project_id", json!({"type": "string"}))];
    let quota = || json!({"200": answer("The limits", json!({"type": "object"}))});
    paths.insert(
        "/v2.0/quotas".into(),
        json!({"get": operation("list_quotas", vec![], None, quota())}),
    );
    paths.insert(
        "/v2.0/quotas/{project_id}".into(),
        json!({
            "get": operation("show_quota", project(), None, quota()),
            "put": operation("update_quota", project(), Some(update), quota()),
            "delete": operation("delete_quota", project(), None, no_content()),
        }),
    );
    for (action, id) in [
        ("details", "show_quota_details"),
        ("default", "show_quota_default"),
    ] {
        paths.insert(
            format!("/v2.0/quotas/{{project_id}}/{action}"),
            json!({"get": operation(id, project(), None, quota())}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operations of the document, as (method, path, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
        out
    }

    #[test]
    fn the_document_is_openapi_json() {
        let doc = document();
        let text = serde_json::to_string(&doc).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["openapi"], OPENAPI_VERSION);
        assert!(doc["info"]["title"].is_string());
        assert!(doc["info"]["version"].is_string());
        let ops = operations(&doc);
        assert!(ops.len() > 60, "{}", ops.len());
        let mut ids = std::collections::HashSet::new();
        for (method, path, op) in &ops {
            assert!(
                ["get", "put", "post", "delete"].contains(&method.as_str()),
                "{method} {path}"
            );
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
            // Every path parameter is declared, and every declared one is in the path.
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}");
        }
        // Every link names an operation of the document.
        for (_, path, op) in &ops {
            for answer in op["responses"].as_object().unwrap().values() {
                for link in answer["links"].as_object().into_iter().flatten() {
                    let target = link.1["operationId"].as_str().unwrap();
                    assert!(ids.contains(target), "{path}: link to {target}");
                }
            }
        }
        // Every reference resolves.
        for reference in text.match_indices("#/components/schemas/") {
            let name: String = text[reference.0 + 21..]
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            assert!(doc["components"]["schemas"][&name].is_object(), "{name}");
        }
    }

    #[test]
    fn the_load_balancer_api_is_described() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let members = &paths["/v2.0/lbaas/pools/{pool_id}/members/{member_id}"];
        assert!(members["put"].is_object());
        for def in model::lbaas::ALL
            .iter()
            .filter(|d| d.collection != "members")
        {
            let collection = &paths[&format!("/v2.0/lbaas/{}", def.path)];
            let create = &collection["post"]["requestBody"]["content"]["application/json"];
            let body = &create["schema"]["properties"][def.singular];
            assert!(body["properties"]["name"].is_object(), "{}", def.path);
            assert!(body["properties"].get("id").is_none(), "{}", def.path);
            let fault = &collection["get"]["responses"]["default"]["content"]["application/json"];
            assert_eq!(fault["schema"]["$ref"], "#/components/schemas/OctaviaFault");
        }
        assert!(paths["/v2.0/lbaas/loadbalancers/{loadbalancer_id}/status"]["get"].is_object());
    }

    #[test]
    fn every_resource_of_the_model_is_described() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for def in ALL {
            let collection = &paths[&format!("/v2.0/{}", def.path)];
            assert!(collection["get"].is_object(), "{}", def.path);
            let member = &paths[&format!("/v2.0/{}/{{{}_id}}", def.path, def.singular)];
            for method in ["get", "put", "delete"] {
                assert!(member[method].is_object(), "{method} {}", def.path);
            }
            // Creates take exactly the attributes allowed on POST, updates those allowed on PUT.
            let create =
                &collection["post"]["requestBody"]["content"]["application/json"]["schema"];
            let item = &create["anyOf"][0]["properties"][def.singular];
            let update = &member["put"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
                [def.singular];
            for attr in def.all_attrs() {
                assert_eq!(
                    item["properties"].get(attr.name).is_some(),
                    attr.post,
                    "{}",
                    attr.name
                );
                assert_eq!(
                    update["properties"].get(attr.name).is_some(),
                    attr.put,
                    "{}",
                    attr.name
                );
                let filter = collection["get"]["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == attr.name);
                assert!(filter, "filter {} of {}", attr.name, def.path);
            }
            assert_eq!(
                create["anyOf"][1]["properties"][def.collection]["items"], *item,
                "bulk {}",
                def.path
            );
            for action in def.actions {
                let path = format!("/v2.0/{}/{{{}_id}}/{}", def.path, def.singular, action.name);
                assert!(paths[&path]["put"].is_object(), "{path}");
            }
            let tags = format!("/v2.0/{}/{{{}_id}}/tags", def.path, def.singular);
            assert_eq!(paths.contains_key(&tags), def.taggable, "{tags}");
        }
        let required = &paths["/v2.0/subnets"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["anyOf"][0]["properties"]["subnet"]["required"];
        assert_eq!(*required, json!(["network_id", "ip_version"]));
        for quota in [
            "/v2.0/quotas",
            "/v2.0/quotas/{project_id}",
            "/v2.0/quotas/{project_id}/details",
        ] {
            assert!(paths.contains_key(quota), "{quota}");
        }
        let limits = &paths["/v2.0/quotas/{project_id}"]["put"]["requestBody"]["content"]["application/json"]
            ["schema"]["properties"]["quota"]["properties"];
        for r in quotas::ALL {
            assert_eq!(limits[r.name]["minimum"], -1, "{}", r.name);
        }
    }

    #[test]
    fn shapes_become_schemas() {
        assert_eq!(
            schema(&Shape::OrNull(&Shape::OneOf(&["a", "b"]))),
            json!({"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}]})
        );
        assert_eq!(
            schema(&Shape::ListOf(&Shape::Integer {
                min: Some(0),
                max: None
            })),
            json!({"type": "array", "items": {"type": "integer", "minimum": 0}})
        );
        assert_eq!(
            schema(&Shape::Object(&[("subnet_id", Shape::UUID)])),
            json!({"type": "object", "properties": {"subnet_id": {"type": "string", "format": "uuid"}},
                "additionalProperties": false})
        );
        let links = create_links(&model::resources::NETWORK);
        assert_eq!(
            links["create_subnet.network_id"]["requestBody"],
            json!({"subnet": {"network_id": "$response.body#/network/id"}})
        );
        assert!(links.contains_key("create_floatingip.floating_network_id"));
        assert_eq!(
            links["create_router.external_gateway_info.network_id"]["requestBody"],
            json!({"router": {"external_gateway_info": {"network_id": "$response.body#/network/id"}}})
        );
        let links = create_links(&model::resources::SUBNET);
        assert_eq!(
            links["create_port.fixed_ips.subnet_id"]["requestBody"],
            json!({"port": {"fixed_ips": [{"subnet_id": "$response.body#/subnet/id"}]}})
        );
        assert_eq!(
            links["add_router_interface.subnet_id"]["requestBody"],
            json!({"subnet_id": "$response.body#/subnet/id"})
        );
    }
}
