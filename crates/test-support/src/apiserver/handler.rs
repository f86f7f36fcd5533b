//! The HTTP side of the fake API server: routes `/version`, `/api/v1/...`
//! and `/apis/<group>/<version>/...` to list, get and watch over the
//! [`Store`](super::store::Store).
//!
//! Every failure is a `Status` JSON body with the API server's code and
//! reason (404 `NotFound`, 400 `BadRequest`, 405 `MethodNotAllowed`); a watch
//! from a compacted version is a 200 stream carrying one `ERROR` event with a
//! 410 `Expired` Status, as the real server answers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::resource::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Filter, Key};
use super::{RecordedRequest, Shared, Signal};
use crate::body::{self, RespBody};

/// The API server's default watch length when `timeoutSeconds` is absent
/// (`--min-request-timeout`).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    api_version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

/// A parsed watch request.
#[derive(Debug)]
struct WatchRequest {
    filter: Filter,
    kind: String,
    /// `None` starts with the current state as `ADDED` events.
    from: Option<u64>,
    /// `sendInitialEvents=true`: end the initial state with a marked bookmark.
    initial_events_end: bool,
    bookmarks: bool,
    timeout: Duration,
}

/// Decrements the open-watch count when a watch ends.
#[derive(Debug)]
struct OpenWatch(Arc<Shared>);

/// Serves one request; never fails, errors are Status responses.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let raw_query = req.uri().query().unwrap_or("").to_owned();
    let query = parse_query(&raw_query);
    shared.lock().requests.push(RecordedRequest {
        method: req.method().clone(),
        path: path.clone(),
        query: raw_query,
        watch: is_watch(&query),
    });
    if req.method() != Method::GET {
        return Ok(status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "the fake API server is read-only; {} is not supported",
                req.method()
            ),
        ));
    }
    if path == "/version" {
        let version = shared.lock().version.clone();
        return Ok(json_response(StatusCode::OK, &version));
    }
    Ok(route(&shared, &path, &query))
}

fn route(shared: &Arc<Shared>, path: &str, query: &HashMap<String, String>) -> Response<RespBody> {
    let Some(target) = parse_path(path) else {
        return not_found_path();
    };
    let Some(ty) = shared
        .lock()
        .type_by_plural(&target.api_version, &target.plural)
        .cloned()
    else {
        return not_found_path();
    };
    if target.namespace.is_some() && !ty.namespaced {
        return not_found_path();
    }
    if let Some(name) = &target.name {
        return get(shared, &ty, target.namespace.as_deref(), name);
    }
    let filter = match parse_filter(&ty, target.namespace, query) {
        Ok(filter) => filter,
        Err(message) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    if is_watch(query) {
        watch(shared, &ty, filter, query)
    } else {
        list(shared, &ty, &filter)
    }
}

fn get(
    shared: &Shared,
    ty: &ResourceType,
    namespace: Option<&str>,
    name: &str,
) -> Response<RespBody> {
    let key = Key {
        api_version: ty.api_version.clone(),
        plural: ty.plural.clone(),
        namespace: namespace.unwrap_or_default().to_owned(),
        name: name.to_owned(),
    };
    // A namespaced type has no cluster-wide `GET .../<plural>/<name>`.
    let found = if ty.namespaced == namespace.is_some() {
        shared.lock().objects.get(&key).cloned()
    } else {
        None
    };
    match found {
        Some(object) => json_response(StatusCode::OK, &object),
        None => {
            let group = ty.api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let resource = if group.is_empty() {
                ty.plural.clone()
            } else {
                format!("{}.{group}", ty.plural)
            };
            let mut status = status_body(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{resource} \"{name}\" not found"),
            );
            status["details"] = json!({ "name": name, "group": group, "kind": ty.plural });
            json_response(StatusCode::NOT_FOUND, &status)
        }
    }
}

fn list(shared: &Shared, ty: &ResourceType, filter: &Filter) -> Response<RespBody> {
    // `limit` and `continue` are ignored: one page holds everything, and no
    // continue token tells the client so.
    let (items, rv) = {
        let store = shared.lock();
        (store.list(filter), store.rv)
    };
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", ty.kind),
            "apiVersion": ty.api_version,
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
    )
}

fn watch(
    shared: &Arc<Shared>,
    ty: &ResourceType,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Response<RespBody> {
    let param = |name: &str| query.get(name).map(String::as_str);
    let from = match param("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => match rv.parse() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("invalid resource version: {rv:?}"),
                );
            }
        },
    };
    let initial_events_end = param("sendInitialEvents") == Some("true");
    let timeout = match param("timeoutSeconds").map(str::parse::<u64>) {
        None => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "invalid timeoutSeconds".to_owned(),
            );
        }
    };
    let request = WatchRequest {
        filter,
        kind: ty.kind.clone(),
        from: if initial_events_end { None } else { from },
        initial_events_end,
        bookmarks: param("allowWatchBookmarks") == Some("true"),
        timeout,
    };
    let (tx, body) = body::channel(64);
    // Subscribe before the task reads the store, so no write slips between.
    let signal = shared.signal.clone();
    tokio::spawn(run_watch(
        OpenWatch::enter(shared.clone()),
        signal,
        request,
        tx,
    ));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Streams one watch until it times out, the client leaves, or the test
/// closes or expires watches.
async fn run_watch(
    open: OpenWatch,
    mut signal: watch::Receiver<Signal>,
    w: WatchRequest,
    tx: mpsc::Sender<Bytes>,
) {
    let shared = &open.0;
    let epochs = *signal.borrow_and_update();
    let (start, interval) = {
        let store = shared.lock();
        let start = match w.from {
            None => {
                let initial = store
                    .list(&w.filter)
                    .into_iter()
                    .map(|o| ("ADDED", o))
                    .collect();
                Ok((initial, store.rv))
            }
            Some(rv) if rv < store.compacted => Err(gone_event(rv, store.compacted)),
            Some(rv) => Ok((Vec::new(), rv)),
        };
        (start, store.bookmark_interval)
    };
    let (initial, mut sent) = match start {
        Ok(start) => start,
        Err(gone) => {
            let _sent = send(&tx, &gone).await;
            return;
        }
    };
    for (kind, object) in initial {
        if !send(&tx, &json!({ "type": kind, "object": object })).await {
            return;
        }
    }
    if w.initial_events_end && !send(&tx, &bookmark(&w, sent, true)).await {
        return;
    }
    let deadline = Instant::now() + w.timeout;
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let pending = {
            let store = shared.lock();
            store
                .events_after(sent, &w.filter)
                .map(|events| (events, store.rv))
                .ok_or_else(|| gone_event(sent, store.compacted))
        };
        match pending {
            Ok((events, rv)) => {
                for (kind, object) in events {
                    if !send(&tx, &json!({ "type": kind, "object": object })).await {
                        return;
                    }
                }
                sent = sent.max(rv);
            }
            Err(gone) => {
                let _sent = send(&tx, &gone).await;
                return;
            }
        }
        tokio::select! {
            changed = signal.changed() => {
                if changed.is_err() {
                    return; // the server is gone
                }
                let now = *signal.borrow_and_update();
                if now.expired != epochs.expired {
                    let gone = gone_event(sent, shared.lock().compacted);
                    let _sent = send(&tx, &gone).await;
                    return;
                }
                if now.closed != epochs.closed {
                    return;
                }
            }
            _ = ticker.tick(), if w.bookmarks => {
                if !send(&tx, &bookmark(&w, sent, false)).await {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => return,
            () = tx.closed() => return,
        }
    }
}

/// Writes one newline-terminated event; `false` once the client has gone.
async fn send(tx: &mpsc::Sender<Bytes>, event: &Value) -> bool {
    let mut line = event.to_string().into_bytes();
    line.push(b'\n');
    tx.send(Bytes::from(line)).await.is_ok()
}

fn bookmark(w: &WatchRequest, rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({
        "type": "BOOKMARK",
        "object": { "kind": w.kind, "apiVersion": w.filter.api_version, "metadata": metadata },
    })
}

fn gone_event(requested: u64, oldest: u64) -> Value {
    json!({
        "type": "ERROR",
        "object": status_body(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        ),
    })
}

fn parse_filter(
    ty: &ResourceType,
    namespace: Option<String>,
    query: &HashMap<String, String>,
) -> Result<Filter, String> {
    let param = |name: &str| query.get(name).map_or("", String::as_str);
    Ok(Filter {
        api_version: ty.api_version.clone(),
        plural: ty.plural.clone(),
        namespace,
        labels: LabelSelector::parse(param("labelSelector"))?,
        fields: FieldSelector::parse(param("fieldSelector"))?,
    })
}

fn is_watch(query: &HashMap<String, String>) -> bool {
    matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        // Also `namespaces/<name>`: the Namespace object itself.
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    Some(Target {
        api_version,
        namespace: namespace.map(str::to_owned),
        plural: plural.to_owned(),
        name: name.map(str::to_owned),
    })
}

/// `application/x-www-form-urlencoded` query pairs; the last value wins.
pub(super) fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_body(code: StatusCode, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

fn status_response(code: StatusCode, reason: &str, message: String) -> Response<RespBody> {
    json_response(code, &status_body(code, reason, message))
}

fn not_found_path() -> Response<RespBody> {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource".to_owned(),
    )
}

fn json_response(code: StatusCode, body: &Value) -> Response<RespBody> {
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// === impl OpenWatch ===

impl OpenWatch {
    fn enter(shared: Arc<Shared>) -> Self {
        shared
            .open_watches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0
            .open_watches
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_core_group_and_namespaced_paths() {
        let t = |path| parse_path(path).unwrap();
        assert_eq!(
            t("/api/v1/namespaces/ns/endpoints/e"),
            Target {
                api_version: "v1".into(),
                namespace: Some("ns".into()),
                plural: "endpoints".into(),
                name: Some("e".into()),
            }
        );
        let all = t("/apis/serving.knative.dev/v1/revisions");
        assert_eq!(all.api_version, "serving.knative.dev/v1");
        assert_eq!((all.namespace, all.name), (None, None));
        let ns = t("/api/v1/namespaces/kube-system");
        assert_eq!(
            (ns.plural.as_str(), ns.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        assert!(parse_path("/healthz").is_none());
        assert!(parse_path("/api/v1/namespaces/ns/pods/p/status").is_none());
    }

    #[test]
    fn decodes_query_parameters() {
        let q = parse_query("labelSelector=app%3Dx%2C%21legacy&watch=1&a=b+c&bad=%zz&t=%4");
        assert_eq!(q["labelSelector"], "app=x,!legacy");
        assert_eq!(q["a"], "b c");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["t"], "%4");
        assert!(is_watch(&q));
    }
}
