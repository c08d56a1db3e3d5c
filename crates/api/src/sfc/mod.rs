//! Service function chaining, networking-sfc's API under `/v2.0/sfc/`: port pairs, port pair groups,
//! flow classifiers and port chains, as python-networking-sfc's `openstack sfc ...` commands drive
//! it.
//!
//! The resources go through the generic Neutron request flow of `lib.rs` (`NeutronError` bodies,
//! `fields=`, filters, `limit`/`marker`, bulk creates, Neutron's default policy: a project sees and
//! changes its own objects, admins all), with networking-sfc's differences: no timestamps,
//! `revision_number` or tags; filters on unknown attributes are ignored (networking-sfc does not
//! validate filters) and sorting is refused (no attribute is a sort key). [`plans`] holds what
//! creating, changing and deleting each object means, with networking-sfc's checks and errors.
//!
//! Objects are stored under `/r/<collection>/<id>` (`nb_keys::PORT_PAIRS`, ...). References are
//! kept on both sides, so that a write that relies on one pins the other: a group lists its
//! `port_pairs` and each pair names its group in `_group`; a chain lists its `port_pair_groups`
//! and `flow_classifiers`, each group lists its chains in `_chains` and each classifier names its
//! chain in `_chain`. Every object carries the networks it touches in `_network_ids`, by which
//! sync topics want it (see `nb_keys::Topics::wants`).

pub(crate) mod plans;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use model::ResourceDef;
use model::validate::echo;

use crate::error::{ApiError, ApiResult};
use crate::limits::RequestBody;
use crate::query::{CONTROL, Query};
use crate::{Api, create, delete, list, show, update};

/// Whether `def` is one of the SFC resources.
pub fn is_sfc(def: &ResourceDef) -> bool {
    model::sfc::ALL.iter().any(|d| std::ptr::eq(*d, def))
}

/// The routes `/v2.0/sfc/<collection>` and `/v2.0/sfc/<collection>/<id>`, served by the generic
/// handlers.
pub fn routes(router: Router<Api>) -> Router<Api> {
    router
        .route(
            "/v2.0/sfc/{collection}",
            get(
                |state: State<Api>,
                 Path(collection): Path<String>,
                 headers: HeaderMap,
                 q: RawQuery| {
                    list(state, Path(format!("sfc/{collection}")), headers, q)
                },
            )
            .post(
                |state: State<Api>,
                 Path(collection): Path<String>,
                 headers: HeaderMap,
                 body: RequestBody| {
                    create(state, Path(format!("sfc/{collection}")), headers, body)
                },
            ),
        )
        .route(
            "/v2.0/sfc/{collection}/{id}",
            get(
                |state: State<Api>,
                 Path((collection, id)): Path<(String, String)>,
                 headers: HeaderMap,
                 q: RawQuery| {
                    show(state, Path((format!("sfc/{collection}"), id)), headers, q)
                },
            )
            .put(
                |state: State<Api>,
                 Path((collection, id)): Path<(String, String)>,
                 headers: HeaderMap,
                 body: RequestBody| {
                    update(
                        state,
                        Path((format!("sfc/{collection}"), id)),
                        headers,
                        body,
                    )
                },
            )
            .delete(
                |state: State<Api>,
                 Path((collection, id)): Path<(String, String)>,
                 headers: HeaderMap| {
                    delete(state, Path((format!("sfc/{collection}"), id)), headers)
                },
            ),
        )
}

/// A list query as networking-sfc takes it: filters on attributes the resource lacks are left
/// out (not refused), and any `sort_key` is refused, as no SFC attribute is a sort key.
pub fn list_query(def: &ResourceDef, q: &Query) -> ApiResult<Query> {
    let keys: Vec<String> = q
        .all("sort_key")
        .filter(|k| !k.is_empty())
        .map(|k| format!("'{}'", echo(k)))
        .collect();
    if !keys.is_empty() {
        return Err(ApiError::bad_request(format!(
            "[{}] is invalid attribute for sort_keys",
            keys.join(", ")
        )));
    }
    Ok(Query(
        q.0.iter()
            .filter(|(k, _)| CONTROL.contains(&k.as_str()) || def.attr(k).is_some())
            .cloned()
            .collect(),
    ))
}

/// The `<Kind>NotFound` message of an SFC resource: `Port Pair <id> not found.`
pub fn not_found_message(error_name: &str, id: &str) -> Option<String> {
    let noun = match error_name {
        "PortPair" => "Port Pair",
        "PortPairGroup" => "Port Pair Group",
        "FlowClassifier" => "Flow Classifier",
        "PortChain" => "Port Chain",
        _ => return None,
    };
    Some(format!("{noun} {} not found.", echo(id)))
}
