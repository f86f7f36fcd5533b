//! The fake API server driven through a real kube-rs 5 client: raw list,
//! get and watch calls, and the watcher/reflector machinery kdp-k8s uses.

use std::collections::BTreeSet;
use std::future::ready;
use std::time::Duration;

use futures_util::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Service};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, WatchEvent,
    WatchParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

use super::FakeApiServer;
use crate::within;

const T: Duration = Duration::from_secs(5);

const PRIVATE: &str =
    "serving.knative.dev/revisionUID,networking.internal.knative.dev/serviceType=Private";

fn client(server: &FakeApiServer) -> Client {
    Client::try_from(Config::new(server.url().parse().unwrap())).unwrap()
}

fn endpoints(ns: &str, name: &str, labels: Value, ips: &[&str]) -> Value {
    let addresses: Vec<Value> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": { "name": name, "namespace": ns, "labels": labels },
        "subsets": [{ "addresses": addresses, "ports": [{ "name": "http", "port": 8012 }] }],
    })
}

fn private_endpoints(ns: &str, rev: &str, ips: &[&str]) -> Value {
    endpoints(
        ns,
        &format!("{rev}-private"),
        json!({
            "serving.knative.dev/revision": rev,
            "serving.knative.dev/revisionUID": format!("uid-{rev}"),
            "networking.internal.knative.dev/serviceType": "Private",
        }),
        ips,
    )
}

fn names<K: ResourceExt>(objects: impl IntoIterator<Item = K>) -> BTreeSet<String> {
    objects.into_iter().map(|o| o.name_any()).collect()
}

fn store_names(store: &Store<Endpoints>) -> BTreeSet<String> {
    store.state().iter().map(|o| o.name_any()).collect()
}

fn ips(store: &Store<Endpoints>, name: &str) -> Vec<String> {
    store
        .state()
        .iter()
        .find(|o| o.name_any() == name)
        .and_then(|o| o.subsets.clone())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.addresses.unwrap_or_default())
        .map(|a| a.ip)
        .collect()
}

/// The next watch event, bounded by [`T`].
async fn next_event(
    events: &mut (impl Stream<Item = kube::Result<WatchEvent<Endpoints>>> + Unpin),
) -> Option<WatchEvent<Endpoints>> {
    within(T, "watch event", events.try_next()).await.unwrap()
}

/// Polls `check` until it holds, bounded by [`T`].
async fn eventually(what: &'static str, mut check: impl FnMut() -> bool) {
    within(T, what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Runs a reflector over private Endpoints in all namespaces, as the
/// activator does, and waits for its first sync.
async fn private_endpoints_reflector(
    server: &FakeApiServer,
    config: watcher::Config,
) -> (Store<Endpoints>, tokio::task::JoinHandle<()>) {
    let api: Api<Endpoints> = Api::all(client(server));
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, config.labels(PRIVATE))).default_backoff();
    let task = tokio::spawn(stream.for_each(|_| ready(())));
    within(T, "reflector sync", reader.wait_until_ready())
        .await
        .unwrap();
    (reader, task)
}

#[tokio::test]
async fn version_reports_configured_version() {
    let server = FakeApiServer::start().await;
    let client = client(&server);
    let info = within(T, "version", client.apiserver_version())
        .await
        .unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "34"));
    server.set_version("1", "31", "v1.31.2-gke.100");
    let info = within(T, "version", client.apiserver_version())
        .await
        .unwrap();
    assert_eq!(info.git_version, "v1.31.2-gke.100");
    assert_eq!(info.minor, "31");
    assert_eq!(server.request_count("/version"), 2);
}

#[tokio::test]
async fn get_finds_objects_and_404s_missing_ones() {
    let server = FakeApiServer::start().await;
    let stored = server.apply(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "config-network", "namespace": "knative-serving" },
        "data": { "system-internal-tls": "Disabled" },
    }));
    let api: Api<ConfigMap> = Api::namespaced(client(&server), "knative-serving");
    let cm = within(T, "get", api.get("config-network")).await.unwrap();
    assert_eq!(cm.data.unwrap()["system-internal-tls"], "Disabled");
    assert_eq!(
        cm.metadata.resource_version.as_deref(),
        stored["metadata"]["resourceVersion"].as_str()
    );
    assert!(cm.metadata.uid.is_some() && cm.metadata.creation_timestamp.is_some());

    let err = within(T, "get missing", api.get("config-logging"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
            assert_eq!(status.message, r#"configmaps "config-logging" not found"#);
        }
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    assert!(
        within(T, "get_opt", api.get_opt("config-logging"))
            .await
            .unwrap()
            .is_none()
    );
    let other_ns: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    assert!(
        within(T, "get_opt", other_ns.get_opt("config-network"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn list_spans_namespaces_and_reports_resource_version() {
    let server = FakeApiServer::start().await;
    server.apply(endpoints("a", "one", json!({}), &["127.0.0.2"]));
    server.apply(endpoints("b", "two", json!({}), &["127.0.0.3"]));
    server.apply(json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "one", "namespace": "a" } }));

    let all: Api<Endpoints> = Api::all(client(&server));
    let list = within(T, "list all", all.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(
        names(list.items),
        BTreeSet::from(["one".into(), "two".into()])
    );
    assert_eq!(
        list.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    assert!(list.metadata.continue_.is_none());

    let ns_b: Api<Endpoints> = Api::namespaced(client(&server), "b");
    let list = within(T, "list b", ns_b.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(names(list.items), BTreeSet::from(["two".into()]));

    let services: Api<Service> = Api::all(client(&server));
    let list = within(T, "list services", services.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(names(list.items), BTreeSet::from(["one".into()]));
    assert_eq!(server.objects("v1", "Endpoints", None).len(), 2);
    assert_eq!(server.objects("v1", "endpoints", Some("a")).len(), 1);
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "rev-1", &["127.0.0.2"]));
    server.apply(private_endpoints("ns", "rev-2", &["127.0.0.3"]));
    server.apply(endpoints(
        "ns",
        "rev-1",
        json!({ "serving.knative.dev/revisionUID": "uid-rev-1", "networking.internal.knative.dev/serviceType": "Public" }),
        &["10.0.0.1"],
    ));
    server.apply(endpoints("ns", "kubernetes", json!({}), &["10.0.0.2"]));
    let api: Api<Endpoints> = Api::all(client(&server));
    let select = |labels: &str, fields: &str| {
        let mut lp = ListParams::default().labels(labels);
        if !fields.is_empty() {
            lp = lp.fields(fields);
        }
        let api = api.clone();
        async move { names(within(T, "list", api.list(&lp)).await.unwrap().items) }
    };
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<BTreeSet<_>>()
    };

    assert_eq!(
        select(PRIVATE, "").await,
        set(&["rev-1-private", "rev-2-private"])
    );
    assert_eq!(
        select("serving.knative.dev/revision=rev-2", "").await,
        set(&["rev-2-private"])
    );
    assert_eq!(
        select("networking.internal.knative.dev/serviceType!=Private", "").await,
        set(&["kubernetes", "rev-1"])
    );
    assert_eq!(
        select("!serving.knative.dev/revisionUID", "").await,
        set(&["kubernetes"])
    );
    assert_eq!(select("", "metadata.name=rev-1").await, set(&["rev-1"]));
    assert_eq!(
        select(PRIVATE, "metadata.name!=rev-1-private").await,
        set(&["rev-2-private"])
    );

    let err = within(
        T,
        "bad selector",
        api.list(&ListParams::default().labels("a b")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(status) if status.code == 400),
        "400 for a bad selector"
    );
}

#[tokio::test]
async fn watch_replays_changes_after_version_then_streams_live() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "old", &[]));
    let from = server.resource_version();
    server.apply(private_endpoints("ns", "rev", &["127.0.0.2"]));
    server.apply(private_endpoints("ns", "rev", &["127.0.0.2", "127.0.0.3"]));

    let api: Api<Endpoints> = Api::namespaced(client(&server), "ns");
    let wp = WatchParams::default().disable_bookmarks();
    let mut events = within(T, "watch", api.watch(&wp, &from.to_string()))
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(next_event(&mut events).await, Some(WatchEvent::Added(e)) if e.name_any() == "rev-private")
    );
    assert!(
        matches!(next_event(&mut events).await, Some(WatchEvent::Modified(e)) if e.subsets.as_ref().unwrap()[0].addresses.as_ref().unwrap().len() == 2)
    );

    server
        .delete("v1", "Endpoints", "ns", "rev-private")
        .unwrap();
    let rv = server.resource_version().to_string();
    match next_event(&mut events).await {
        Some(WatchEvent::Deleted(e)) => {
            assert_eq!(e.name_any(), "rev-private");
            assert_eq!(
                e.metadata.resource_version,
                Some(rv),
                "DELETED carries the deletion version"
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    server.apply(private_endpoints("other-ns", "elsewhere", &[]));
    server.apply(private_endpoints("ns", "later", &[]));
    assert!(
        matches!(next_event(&mut events).await, Some(WatchEvent::Added(e)) if e.name_any() == "later-private")
    );
    assert_eq!(server.open_watches(), 1);
}

#[tokio::test]
async fn watch_without_version_starts_with_current_state() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "a", &[]));
    server.apply(private_endpoints("ns", "b", &[]));
    let api: Api<Endpoints> = Api::all(client(&server));
    let events = within(
        T,
        "watch",
        api.watch(&WatchParams::default().disable_bookmarks(), "0"),
    )
    .await
    .unwrap();
    let first: Vec<_> = within(T, "initial events", events.take(2).try_collect::<Vec<_>>())
        .await
        .unwrap();
    let added: BTreeSet<_> = first
        .into_iter()
        .map(|e| match e {
            WatchEvent::Added(e) => e.name_any(),
            other => panic!("expected ADDED, got {other:?}"),
        })
        .collect();
    assert_eq!(
        added,
        BTreeSet::from(["a-private".into(), "b-private".into()])
    );
}

#[tokio::test]
async fn watch_sends_bookmarks_when_asked() {
    let server = FakeApiServer::start().await;
    server.set_bookmark_interval(Duration::from_millis(50));
    server.apply(private_endpoints("ns", "a", &[]));
    let rv = server.resource_version().to_string();
    let api: Api<Endpoints> = Api::all(client(&server));
    let mut events = within(T, "watch", api.watch(&WatchParams::default(), &rv))
        .await
        .unwrap()
        .boxed();
    match within(T, "bookmark", events.try_next()).await.unwrap() {
        Some(WatchEvent::Bookmark(bm)) => {
            assert_eq!(bm.metadata.resource_version, rv);
            assert_eq!(bm.types.kind, "Endpoints");
        }
        other => panic!("expected BOOKMARK, got {other:?}"),
    }
    server.apply(private_endpoints("ns", "b", &[]));
    let new_rv = server.resource_version().to_string();
    let bookmark_rv = within(T, "bookmark after change", async {
        loop {
            if let Some(WatchEvent::Bookmark(bm)) = events.try_next().await.unwrap() {
                return bm.metadata.resource_version;
            }
        }
    })
    .await;
    assert_eq!(
        bookmark_rv, new_rv,
        "bookmarks advance past delivered changes"
    );
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let server = FakeApiServer::start().await;
    let api: Api<Endpoints> = Api::all(client(&server));
    let wp = WatchParams::default().timeout(1).disable_bookmarks();
    let events = within(
        T,
        "watch",
        api.watch(&wp, &server.resource_version().to_string()),
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let rest: Vec<_> = within(T, "stream end", events.try_collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(rest.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed early: {:?}",
        started.elapsed()
    );
    assert_eq!(server.open_watches(), 0);
}

#[tokio::test]
async fn watch_from_compacted_version_gets_410() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "a", &[]));
    let old = server.resource_version();
    server.apply(private_endpoints("ns", "b", &[]));
    server.compact();
    let api: Api<Endpoints> = Api::all(client(&server));
    let mut events = within(
        T,
        "watch",
        api.watch(&WatchParams::default(), &old.to_string()),
    )
    .await
    .unwrap()
    .boxed();
    match within(T, "error event", events.try_next()).await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    assert!(
        within(T, "stream end", events.try_next())
            .await
            .unwrap()
            .is_none()
    );

    // The current version is still watchable.
    let current = server.resource_version().to_string();
    let wp = WatchParams::default().disable_bookmarks();
    let mut events = within(T, "watch", api.watch(&wp, &current))
        .await
        .unwrap()
        .boxed();
    server.apply(private_endpoints("ns", "c", &[]));
    assert!(matches!(
        within(T, "event", events.try_next()).await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
}

#[tokio::test]
async fn expire_watches_sends_410_to_open_watches() {
    let server = FakeApiServer::start().await;
    let api: Api<Endpoints> = Api::all(client(&server));
    let rv = server.resource_version().to_string();
    let mut events = within(T, "watch", api.watch(&WatchParams::default(), &rv))
        .await
        .unwrap()
        .boxed();
    server.wait_for_watches(1, T).await.unwrap();
    server.expire_watches();
    let status = within(T, "error event", async {
        loop {
            match events.try_next().await.unwrap() {
                Some(WatchEvent::Bookmark(_)) => {}
                Some(WatchEvent::Error(status)) => return status,
                other => panic!("expected ERROR, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(status.code, 410);
}

#[tokio::test]
async fn watch_with_selector_reports_relabel_as_add_and_delete() {
    let server = FakeApiServer::start().await;
    let api: Api<Endpoints> = Api::all(client(&server));
    let wp = WatchParams::default().labels(PRIVATE).disable_bookmarks();
    let rv = server.resource_version().to_string();
    let mut events = within(T, "watch", api.watch(&wp, &rv))
        .await
        .unwrap()
        .boxed();
    let public = endpoints(
        "ns",
        "e",
        json!({ "serving.knative.dev/revisionUID": "u" }),
        &[],
    );
    let private = endpoints(
        "ns",
        "e",
        json!({ "serving.knative.dev/revisionUID": "u", "networking.internal.knative.dev/serviceType": "Private" }),
        &[],
    );
    server.apply(public.clone());
    server.apply(private);
    server.apply(public);
    assert!(matches!(
        next_event(&mut events).await,
        Some(WatchEvent::Added(_))
    ));
    assert!(matches!(
        next_event(&mut events).await,
        Some(WatchEvent::Deleted(_))
    ));
}

#[tokio::test]
async fn reflector_converges_after_adds_updates_and_deletes() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "rev-1", &["127.0.0.2"]));
    server.apply(endpoints("ns", "not-private", json!({}), &["10.0.0.1"]));
    let (store, task) = private_endpoints_reflector(&server, watcher::Config::default()).await;
    assert_eq!(
        store_names(&store),
        BTreeSet::from(["rev-1-private".into()])
    );

    server.apply(private_endpoints("ns", "rev-2", &["127.0.0.3"]));
    server.apply(private_endpoints(
        "ns",
        "rev-1",
        &["127.0.0.2", "127.0.0.4"],
    ));
    server.apply(private_endpoints("other", "rev-3", &["127.0.0.5"]));
    eventually("adds and updates", || {
        store_names(&store).len() == 3 && ips(&store, "rev-1-private") == ["127.0.0.2", "127.0.0.4"]
    })
    .await;

    server
        .delete("v1", "endpoints", "ns", "rev-2-private")
        .unwrap();
    eventually("delete", || !store_names(&store).contains("rev-2-private")).await;
    assert_eq!(
        server.list_count("/api/v1/endpoints"),
        1,
        "one list, then watch only"
    );
    let watch = server.requests().into_iter().find(|r| r.watch).unwrap();
    assert_eq!(watch.param("labelSelector").as_deref(), Some(PRIVATE));
    assert_eq!(watch.param("allowWatchBookmarks").as_deref(), Some("true"));
    task.abort();
}

#[tokio::test]
async fn reflector_relists_after_forced_410() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "rev-1", &["127.0.0.2"]));
    server.apply(private_endpoints("ns", "rev-2", &["127.0.0.3"]));
    let (store, task) = private_endpoints_reflector(&server, watcher::Config::default()).await;
    server.wait_for_watches(1, T).await.unwrap();

    server.expire_watches();
    server
        .delete("v1", "Endpoints", "ns", "rev-1-private")
        .unwrap();
    server.apply(private_endpoints("ns", "rev-3", &["127.0.0.4"]));
    eventually("relisted state", || {
        store_names(&store) == BTreeSet::from(["rev-2-private".into(), "rev-3-private".into()])
    })
    .await;
    assert_eq!(
        server.list_count("/api/v1/endpoints"),
        2,
        "410 forces exactly one relist"
    );
    task.abort();
}

#[tokio::test]
async fn reflector_resumes_without_relist_after_closed_watch() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "rev-1", &["127.0.0.2"]));
    let (store, task) = private_endpoints_reflector(&server, watcher::Config::default()).await;
    server.wait_for_watches(1, T).await.unwrap();

    server.close_watches();
    server.apply(private_endpoints("ns", "rev-2", &["127.0.0.3"]));
    eventually("resumed watch", || store_names(&store).len() == 2).await;
    eventually("second watch", || {
        server.watch_count("/api/v1/endpoints") >= 2
    })
    .await;
    assert_eq!(
        server.list_count("/api/v1/endpoints"),
        1,
        "resumed from the last version"
    );
    let resumed = server.requests().into_iter().rfind(|r| r.watch).unwrap();
    assert_ne!(resumed.param("resourceVersion").as_deref(), Some("0"));
    task.abort();
}

#[tokio::test]
async fn streaming_list_watcher_syncs_from_initial_events() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "rev-1", &["127.0.0.2"]));
    server.apply(private_endpoints("ns", "rev-2", &["127.0.0.3"]));
    let (store, task) =
        private_endpoints_reflector(&server, watcher::Config::default().streaming_lists()).await;
    assert_eq!(store_names(&store).len(), 2);
    assert_eq!(
        server.list_count("/api/v1/endpoints"),
        0,
        "no list call with streaming lists"
    );
    server.apply(private_endpoints("ns", "rev-3", &["127.0.0.4"]));
    eventually("live add", || store_names(&store).len() == 3).await;
    task.abort();
}

#[tokio::test]
async fn revisions_are_served_under_their_plural() {
    let server = FakeApiServer::start().await;
    server.apply(json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": { "name": "hello-00001", "namespace": "default", "labels": { "serving.knative.dev/service": "hello" } },
        "spec": { "containerConcurrency": 10 },
    }));
    let gvk = GroupVersionKind::gvk("serving.knative.dev", "v1", "Revision");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "revisions");
    let all: Api<DynamicObject> = Api::all_with(client(&server), &ar);
    let list = within(T, "list revisions", all.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(names(list.items), BTreeSet::from(["hello-00001".into()]));
    let ns: Api<DynamicObject> = Api::namespaced_with(client(&server), "default", &ar);
    let rev = within(T, "get revision", ns.get("hello-00001"))
        .await
        .unwrap();
    assert_eq!(rev.data["spec"]["containerConcurrency"], 10);
    assert_eq!(
        server.request_count("/apis/serving.knative.dev/v1/revisions"),
        1
    );
    assert_eq!(
        server
            .request_count("/apis/serving.knative.dev/v1/namespaces/default/revisions/hello-00001"),
        1
    );
}

#[tokio::test]
async fn custom_kinds_can_be_registered() {
    let server = FakeApiServer::start().await;
    server.register("example.dev/v1", "Gizmo", "gizmoes", false);
    server.apply(
        json!({ "apiVersion": "example.dev/v1", "kind": "Gizmo", "metadata": { "name": "g" } }),
    );
    let gvk = GroupVersionKind::gvk("example.dev", "v1", "Gizmo");
    let api: Api<DynamicObject> = Api::all_with(
        client(&server),
        &ApiResource::from_gvk_with_plural(&gvk, "gizmoes"),
    );
    let g = within(T, "get cluster-scoped", api.get("g")).await.unwrap();
    assert_eq!(g.metadata.namespace, None);
    assert!(server.get("example.dev/v1", "Gizmo", "", "g").is_some());
}

#[tokio::test]
async fn writes_are_rejected_and_unknown_paths_404() {
    let server = FakeApiServer::start().await;
    server.apply(private_endpoints("ns", "a", &[]));
    let api: Api<Endpoints> = Api::namespaced(client(&server), "ns");
    let err = within(
        T,
        "delete",
        api.delete("a-private", &DeleteParams::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, kube::Error::Api(status) if status.code == 405));
    assert!(
        server.get("v1", "Endpoints", "ns", "a-private").is_some(),
        "read-only"
    );

    let gvk = GroupVersionKind::gvk("example.dev", "v1", "Unknown");
    let unknown: Api<DynamicObject> = Api::all_with(client(&server), &ApiResource::from_gvk(&gvk));
    let err = within(T, "unknown list", unknown.list(&ListParams::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(status) if status.code == 404));
}
