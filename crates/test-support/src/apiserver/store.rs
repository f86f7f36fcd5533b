//! The fake API server's state: objects, the change history watches replay,
//! the resource version counter, and what clients asked for.
//!
//! Everything here is synchronous and runs under one `Mutex`; the HTTP side
//! (`handler`) takes snapshots and never holds the lock across an `.await`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::RecordedRequest;
use super::resource::ResourceType;
use super::selector::{FieldSelector, LabelSelector};

/// Where one object lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) api_version: String,
    pub(crate) plural: String,
    /// Empty for cluster-scoped objects.
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// One write, as watches replay it.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) key: Key,
    /// The object before the write (`None` for a create).
    pub(crate) prev: Option<Value>,
    /// The object after the write (`None` for a delete).
    pub(crate) cur: Option<Value>,
}

/// What a list or watch selects.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    pub(crate) api_version: String,
    pub(crate) plural: String,
    /// `None` lists across all namespaces.
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

/// The whole server state.
#[derive(Debug)]
pub(crate) struct Store {
    /// The last resource version handed out (the etcd revision).
    pub(crate) rv: u64,
    /// Changes after this version are all in `history`; a watch from an
    /// older version gets 410 Gone.
    pub(crate) compacted: u64,
    pub(crate) objects: BTreeMap<Key, Value>,
    pub(crate) history: Vec<Change>,
    pub(crate) types: Vec<ResourceType>,
    pub(crate) version: Value,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) bookmark_interval: Duration,
    uids: u64,
}

// === impl Filter ===

impl Filter {
    pub(crate) fn matches(&self, key: &Key, object: &Value) -> bool {
        key.api_version == self.api_version
            && key.plural == self.plural
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// The watch event `change` produces for this filter, if any. An update
    /// that moves an object into or out of the selection is an `ADDED` or
    /// `DELETED`, as the API server's watch cache reports it.
    pub(crate) fn event(&self, change: &Change) -> Option<(&'static str, Value)> {
        let passes =
            |obj: &Option<Value>| obj.as_ref().is_some_and(|o| self.matches(&change.key, o));
        match (passes(&change.prev), passes(&change.cur)) {
            (_, true) => {
                let kind = if passes(&change.prev) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                change.cur.clone().map(|obj| (kind, obj))
            }
            (true, false) => change.prev.clone().map(|mut obj| {
                set_resource_version(&mut obj, change.rv);
                ("DELETED", obj)
            }),
            (false, false) => None,
        }
    }
}

// === impl Store ===

impl Store {
    pub(crate) fn new() -> Self {
        Self {
            rv: 1,
            compacted: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            types: ResourceType::known().collect(),
            version: version_info("1", "34", "v1.34.0"),
            requests: Vec::new(),
            bookmark_interval: Duration::from_secs(1),
            uids: 0,
        }
    }

    /// The type served at `api_version`/`plural`.
    pub(crate) fn type_by_plural(&self, api_version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|ty| ty.api_version == api_version && ty.plural == plural)
    }

    /// The type named by kind or plural, guessing (and remembering) unknown
    /// kinds.
    pub(crate) fn resolve(
        &mut self,
        api_version: &str,
        kind_or_plural: &str,
        namespaced: bool,
    ) -> ResourceType {
        if let Some(ty) = self
            .types
            .iter()
            .find(|ty| ty.api_version == api_version && ty.is_named(kind_or_plural))
        {
            return ty.clone();
        }
        let ty = ResourceType::guess(api_version, kind_or_plural, namespaced);
        self.types.push(ty.clone());
        ty
    }

    /// Creates or replaces `object`, stamping `resourceVersion`, `uid` and
    /// `creationTimestamp` as the API server does.
    pub(crate) fn apply(&mut self, mut object: Value) -> Result<Value, String> {
        let field = |obj: &Value, pointer: &str| {
            obj.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let api_version = field(&object, "/apiVersion").ok_or("object has no apiVersion")?;
        let kind = field(&object, "/kind").ok_or("object has no kind")?;
        let name = field(&object, "/metadata/name").ok_or("object has no metadata.name")?;
        let namespace = field(&object, "/metadata/namespace");
        let ty = self.resolve(&api_version, &kind, namespace.is_some());
        let namespace = match (ty.namespaced, namespace) {
            (true, ns) => ns.unwrap_or_else(|| "default".to_owned()),
            (false, None) => String::new(),
            (false, Some(ns)) => {
                return Err(format!("{kind} is cluster-scoped but has namespace {ns:?}"));
            }
        };
        let key = Key {
            api_version,
            plural: ty.plural,
            namespace: namespace.clone(),
            name,
        };
        let prev = self.objects.get(&key).cloned();
        let meta = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or("metadata is not an object")?;
        if ty.namespaced {
            meta.insert("namespace".into(), namespace.into());
        }
        // A replace keeps identity; a create gets a fresh one.
        let old_meta = prev.as_ref().and_then(|p| p.get("metadata"));
        let kept = |name: &str| old_meta.and_then(|m| m.get(name)).cloned();
        let uid = kept("uid").unwrap_or_else(|| {
            self.uids += 1;
            format!("00000000-0000-4000-8000-{:012x}", self.uids).into()
        });
        meta.entry("uid").or_insert(uid);
        let created = kept("creationTimestamp").unwrap_or_else(|| now_rfc3339().into());
        meta.entry("creationTimestamp").or_insert(created);
        self.rv += 1;
        set_resource_version(&mut object, self.rv);
        self.objects.insert(key.clone(), object.clone());
        self.history.push(Change {
            rv: self.rv,
            key,
            prev,
            cur: Some(object.clone()),
        });
        Ok(object)
    }

    /// Deletes an object; `None` when it did not exist.
    pub(crate) fn delete(&mut self, key: &Key) -> Option<Value> {
        let prev = self.objects.remove(key)?;
        self.rv += 1;
        self.history.push(Change {
            rv: self.rv,
            key: key.clone(),
            prev: Some(prev.clone()),
            cur: None,
        });
        let mut deleted = prev;
        set_resource_version(&mut deleted, self.rv);
        Some(deleted)
    }

    /// Forgets the change history: watches from any version before now get
    /// 410 Gone.
    pub(crate) fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// Current objects the filter selects, in key order.
    pub(crate) fn list(&self, filter: &Filter) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(key, obj)| filter.matches(key, obj))
            .map(|(_, obj)| obj.clone())
            .collect()
    }

    /// Watch events for changes after `after`, or `None` if that part of the
    /// history has been compacted away.
    pub(crate) fn events_after(
        &self,
        after: u64,
        filter: &Filter,
    ) -> Option<Vec<(&'static str, Value)>> {
        if after < self.compacted {
            return None;
        }
        let start = self.history.partition_point(|change| change.rv <= after);
        Some(
            self.history[start..]
                .iter()
                .filter_map(|c| filter.event(c))
                .collect(),
        )
    }
}

pub(crate) fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), rv.to_string().into());
    }
}

/// The `/version` body (apimachinery `version.Info`).
pub(crate) fn version_info(major: &str, minor: &str, git_version: &str) -> Value {
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Wall-clock time as `2006-01-02T15:04:05Z`.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(ns: &str, name: &str, app: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": { "name": name, "namespace": ns, "labels": { "app": app } },
        })
    }

    fn filter(labels: &str) -> Filter {
        Filter {
            api_version: "v1".into(),
            plural: "endpoints".into(),
            namespace: None,
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::default(),
        }
    }

    #[test]
    fn apply_stamps_metadata_and_keeps_identity() {
        let mut store = Store::new();
        let first = store.apply(endpoints("ns", "a", "x")).unwrap();
        assert_eq!(first["metadata"]["resourceVersion"], "2");
        let uid = first["metadata"]["uid"].clone();
        let created = first["metadata"]["creationTimestamp"].clone();
        assert!(created.as_str().unwrap().ends_with('Z'));
        let second = store.apply(endpoints("ns", "a", "y")).unwrap();
        assert_eq!(second["metadata"]["resourceVersion"], "3");
        assert_eq!(second["metadata"]["uid"], uid);
        assert_eq!(second["metadata"]["creationTimestamp"], created);
        let other = store.apply(endpoints("ns", "b", "y")).unwrap();
        assert_ne!(other["metadata"]["uid"], uid);
    }

    #[test]
    fn apply_defaults_namespace_and_rejects_bad_objects() {
        let mut store = Store::new();
        let obj = store
            .apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}))
            .unwrap();
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert!(
            store
                .apply(json!({"kind": "Service", "metadata": {"name": "s"}}))
                .is_err()
        );
        assert!(
            store
                .apply(json!({"apiVersion": "v1", "kind": "Service"}))
                .is_err()
        );
        assert!(
            store
                .apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "namespace": "x"}}))
                .is_err()
        );
    }

    #[test]
    fn relabel_moves_objects_in_and_out_of_a_selection() {
        let mut store = Store::new();
        let start = store.rv;
        store.apply(endpoints("ns", "a", "x")).unwrap();
        store.apply(endpoints("ns", "a", "x")).unwrap();
        store.apply(endpoints("ns", "a", "y")).unwrap();
        store.apply(endpoints("ns", "a", "x")).unwrap();
        let deleted = store.delete(&Key {
            api_version: "v1".into(),
            plural: "endpoints".into(),
            namespace: "ns".into(),
            name: "a".into(),
        });
        assert_eq!(deleted.unwrap()["metadata"]["resourceVersion"], "6");
        let events = store.events_after(start, &filter("app=x")).unwrap();
        let types: Vec<_> = events.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, ["ADDED", "MODIFIED", "DELETED", "ADDED", "DELETED"]);
        let rvs: Vec<_> = events
            .iter()
            .map(|(_, o)| {
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(rvs, ["2", "3", "4", "5", "6"]);
    }

    #[test]
    fn compaction_expires_old_versions_only() {
        let mut store = Store::new();
        let old = store.rv;
        store.apply(endpoints("ns", "a", "x")).unwrap();
        store.compact();
        assert!(store.events_after(old, &filter("")).is_none());
        assert_eq!(store.events_after(store.rv, &filter("")).unwrap().len(), 0);
        store.apply(endpoints("ns", "b", "x")).unwrap();
        assert_eq!(
            store
                .events_after(store.compacted, &filter(""))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let ts = now_rfc3339();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.starts_with("20"), "{ts}");
    }
}
