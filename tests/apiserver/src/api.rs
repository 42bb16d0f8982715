//! The Kubernetes REST protocol as clients use it: `GET` list (limit + continue tokens,
//! fieldSelector on any dotted field), `GET ?watch=true` (chunked JSON lines: ADDED, MODIFIED,
//! DELETED, BOOKMARK; resuming from a resourceVersion older than the history: an ERROR event
//! with a 410 `Expired` Status, as the real server sends), `GET`/`POST`/`PATCH`
//! (merge patch)/`DELETE` of single objects, bearer-token authentication, Status objects for
//! errors. Events are stored once and served as `events.k8s.io/v1` and `v1` (converted).

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    events,
    store::{key_of, resource, Change, Resource, Store},
};

pub struct Server {
    pub store: Mutex<Store>,
    pub token: String,
    pub bookmark_every: Duration,
    /// Requests served, by "METHOD resource[?watch]" (the tests read it through /debug/requests).
    pub requests: Mutex<HashMap<String, u64>>,
}

type Shared = Arc<Server>;

impl Server {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A Status error as the API server sends it.
pub fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code.as_u16()
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn ok_json(code: StatusCode, body: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Where a request points: the resource, the namespace (if any), the name (if any).
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
}

fn target(group: &str, rest: &[&str]) -> Option<Target> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some(name.to_string())),
        _ => return None,
    };
    let resource = resource(group, plural)?;
    if namespace.is_some() && !resource.namespaced {
        return None;
    }
    Some(Target { resource, namespace, name })
}

/// `/api/{*path}`: the core group.
pub async fn core(
    state: State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
    query: Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["v1", rest @ ..] => serve(state, method, headers, "", rest, query, body).await,
        _ => status(StatusCode::NOT_FOUND, "NotFound", format!("the server could not find /api/{path}")),
    }
}

/// `/apis/{*path}`: named groups.
pub async fn groups(
    state: State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
    query: Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [group, "v1", rest @ ..] => serve(state, method, headers, group, rest, query, body).await,
        _ => status(StatusCode::NOT_FOUND, "NotFound", format!("the server could not find /apis/{path}")),
    }
}

async fn serve(
    State(server): State<Shared>,
    method: Method,
    headers: HeaderMap,
    group: &str,
    rest: &[&str],
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == server.token);
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let Some(target) = target(group, rest) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({})", rest.join("/")),
        );
    };
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    {
        let label = format!("{method} {}{}", target.resource.storage, if watch { "?watch" } else { "" });
        *server.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(label).or_default() += 1;
    }
    if query.get("labelSelector").is_some_and(|s| !s.is_empty()) {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "labelSelector is not supported by the test API server");
    }
    match (method, &target.name) {
        (Method::GET, None) if watch => watch_stream(server, target, &query),
        (Method::GET, None) => list(&server, &target, &query),
        (Method::GET, Some(name)) => get(&server, &target, name),
        (Method::POST, None) => create(&server, &target, &body),
        (Method::PATCH, Some(name)) => patch(&server, &target, name, &headers, &body),
        (Method::DELETE, Some(name)) => delete(&server, &target, name),
        (method, _) => {
            status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} is not supported here"))
        }
    }
}

fn full_key(target: &Target, name: &str) -> String {
    match &target.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// The object as served through `resource` (events converted between the two APIs).
fn served(resource: &Resource, object: &Value) -> Value {
    let mut out = if resource.storage == "events" && resource.api_version == "v1" {
        events::to_core(object)
    } else {
        object.clone()
    };
    out["kind"] = json!(resource.kind);
    out["apiVersion"] = json!(resource.api_version);
    out
}

/// `fieldSelector`: comma-separated `path=value`, `path==value`, `path!=value` on dotted paths.
fn selects(selector: Option<&String>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    selector.split(',').all(|term| {
        let (path, want, equal) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = term.split_once("==") {
            (p, v, true)
        } else if let Some((p, v)) = term.split_once('=') {
            (p, v, true)
        } else {
            return false;
        };
        let pointer = format!("/{}", path.trim().replace('.', "/"));
        let have = match object.pointer(&pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        (have == want.trim()) == equal
    })
}

fn in_namespace(target: &Target, object: &Value) -> bool {
    target
        .namespace
        .as_deref()
        .is_none_or(|ns| object.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
}

/// Continue tokens: `<list rv>:<last key>` (hex-encoded), expired once the rv left the history.
fn encode_continue(rv: u64, key: &str) -> String {
    let raw = format!("{rv}:{key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let (rv, key) = raw.split_once(':')?;
    Some((rv.parse().ok()?, key.to_string()))
}

fn list(server: &Server, target: &Target, query: &HashMap<String, String>) -> Response {
    let store = server.store();
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|&l| l > 0);
    let (list_rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match decode_continue(token) {
            Some((rv, _)) if rv < store.oldest_resumable() => {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                )
            }
            Some((rv, key)) => (rv, Some(key)),
            None => return status(StatusCode::BAD_REQUEST, "BadRequest", "invalid continue token"),
        },
        None => (store.rv(), None),
    };
    let mut items = Vec::new();
    let mut next = None;
    for (key, object) in store.list(target.resource.storage) {
        if after.as_ref().is_some_and(|a| key <= a) || !in_namespace(target, object) {
            continue;
        }
        let object = served(&target.resource, object);
        if !selects(query.get("fieldSelector"), &object) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            next = items.last().map(|(k, _): &(String, Value)| encode_continue(list_rv, k));
            break;
        }
        items.push((key.clone(), object));
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(token) = next {
        metadata["continue"] = json!(token);
    }
    let body = json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.api_version,
        "metadata": metadata,
        "items": items.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
    });
    ok_json(StatusCode::OK, &body)
}

fn get(server: &Server, target: &Target, name: &str) -> Response {
    match server.store().get(target.resource.storage, &full_key(target, name)) {
        Some(object) => ok_json(StatusCode::OK, &served(&target.resource, object)),
        None => status(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", target.resource.storage)),
    }
}

fn create(server: &Server, target: &Target, body: &[u8]) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not a JSON object");
    };
    if let Some(ns) = &target.namespace {
        match object.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            }
            _ => object["metadata"]["namespace"] = json!(ns),
        }
    } else if target.resource.namespaced {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "create in a namespace: POST .../namespaces/NS/...",
        );
    }
    if object.pointer("/metadata/name").and_then(Value::as_str).is_none_or(str::is_empty) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value");
    }
    if target.resource.storage == "events" {
        if target.resource.api_version == "v1" {
            object = events::from_core(&object);
        }
        if let Err(problem) = events::validate_create(&object) {
            return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", problem);
        }
    }
    let key = key_of(&object);
    let mut store = server.store();
    if store.get(target.resource.storage, &key).is_some() {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", target.resource.storage),
        );
    }
    if let Some(fields) = object.as_object_mut() {
        fields.remove("kind");
    }
    let stored = store.put(target.resource.storage, key, object);
    ok_json(StatusCode::CREATED, &served(&target.resource, &stored))
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(object) = target.as_object_mut() {
                for (k, v) in fields {
                    if v.is_null() {
                        object.remove(k);
                    } else {
                        merge(object.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn patch(server: &Server, target: &Target, name: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(content_type.starts_with("application/merge-patch+json")
        || content_type.starts_with("application/strategic-merge-patch+json"))
    {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the test API server takes merge patches, not {content_type}"),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "the patch is not JSON");
    };
    let key = full_key(target, name);
    let mut store = server.store();
    let Some(before) = store.get(target.resource.storage, &key).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", target.resource.storage));
    };
    let mut after = before.clone();
    merge(&mut after, &patch);
    if target.resource.storage == "events" {
        if let Err(problem) = events::validate_update(&before, &after) {
            return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", problem);
        }
    }
    let stored = store.put(target.resource.storage, key, after);
    ok_json(StatusCode::OK, &served(&target.resource, &stored))
}

fn delete(server: &Server, target: &Target, name: &str) -> Response {
    match server.store().delete(target.resource.storage, &full_key(target, name)) {
        Some(object) => ok_json(StatusCode::OK, &served(&target.resource, &object)),
        None => status(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", target.resource.storage)),
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn watch_stream(server: Shared, target: Target, query: &HashMap<String, String>) -> Response {
    let from = query.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0").map(|v| v.parse::<u64>());
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let selector = query.get("fieldSelector").cloned();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    // Subscribed before the history is read: nothing falls between replay and live.
    let (mut live, replay, start_rv) = {
        let store = server.store();
        let live = store.changes.subscribe();
        let storage = target.resource.storage;
        match from {
            Some(Err(_)) => return status(StatusCode::BAD_REQUEST, "BadRequest", "resourceVersion is not a number"),
            Some(Ok(rv)) if rv < store.oldest_resumable() || rv > store.rv() => {
                let gone = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {rv} ({})", store.oldest_resumable()),
                    "reason": "Expired", "code": 410
                });
                let body = line("ERROR", &gone);
                return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
            }
            Some(Ok(rv)) => {
                let replay: Vec<(String, Value)> =
                    store.since(storage, rv).into_iter().map(|c| (c.kind.to_string(), c.object)).collect();
                (live, replay, store.rv())
            }
            None => {
                let replay = store.list(storage).map(|(_, o)| ("ADDED".to_string(), o.clone())).collect();
                (live, replay, store.rv())
            }
        }
    };
    tokio::spawn(async move {
        let resource = target.resource;
        let wanted =
            |object: &Value| in_namespace(&target, object) && selects(selector.as_ref(), &served(&resource, object));
        for (kind, object) in replay {
            if wanted(&object) && tx.send(Ok(line(&kind, &served(&resource, &object)))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut beat = tokio::time::interval(server.bookmark_every);
        loop {
            tokio::select! {
                change = live.recv() => match change {
                    Ok(Change { rv, resource: storage, kind, object }) => {
                        if storage != resource.storage || rv <= start_rv || !wanted(&object) {
                            continue;
                        }
                        if tx.send(Ok(line(kind, &served(&resource, &object)))).await.is_err() {
                            return;
                        }
                    }
                    // Fell behind or the server is stopping: end the watch, the client resumes.
                    Err(_) => return,
                },
                _ = beat.tick(), if bookmarks => {
                    let rv = server.store().rv();
                    let mark = json!({"kind": resource.kind, "apiVersion": resource.api_version,
                                      "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors_match_dotted_paths() {
        let event = json!({"reportingComponent": "observer", "metadata": {"namespace": "shop"}});
        assert!(selects(Some(&"reportingComponent=observer".to_string()), &event));
        assert!(selects(Some(&"reportingComponent=observer,metadata.namespace==shop".to_string()), &event));
        assert!(!selects(Some(&"reportingComponent!=observer".to_string()), &event));
        assert!(!selects(Some(&"metadata.namespace=other".to_string()), &event));
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "shop/cart-1");
        assert_eq!(decode_continue(&token), Some((42, "shop/cart-1".to_string())));
        assert_eq!(decode_continue("zz"), None);
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge(&mut doc, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(doc, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
