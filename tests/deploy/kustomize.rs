//! A small kustomize: enough of it to render `deploy/kustomize` offline.
//!
//! Handles exactly the fields the overlays use — `resources` (files,
//! folders, and the pinned Knative release URL, which is replaced by the
//! excerpt in `deploy/kustomize/testdata`), `components`, `patches` with a
//! `path`, `images` and `configurations` (image field specs) — and refuses a
//! kustomization that uses anything else, so an overlay cannot grow a feature
//! this renderer would silently ignore. Patches are merged the way kustomize
//! merges a strategic-merge patch for the fields involved: maps recursively,
//! lists of named items (containers, env, ports) by `name`, anything else
//! replaced. When `kubectl` is installed, the tests also render with the real
//! kustomize and compare.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The release the base points at.
pub(crate) const KNATIVE_RELEASE_URL: &str =
    "https://github.com/knative/serving/releases/download/knative-v1.23.0/serving-core.yaml";

/// The offline excerpt of that release.
pub(crate) const RELEASE_EXCERPT: &str = "deploy/kustomize/testdata/serving-core-excerpt.yaml";

/// Fields of a kustomization this renderer understands.
const KNOWN_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "resources",
    "components",
    "patches",
    "images",
    "configurations",
];

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A path relative to the repository root.
pub(crate) fn repo_path(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// Every YAML document of a file, as JSON values (empty documents skipped).
pub(crate) fn load_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of a string.
pub(crate) fn parse_docs(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// `kind/namespace/name` of an object.
pub(crate) fn key(obj: &Value) -> String {
    format!(
        "{}/{}/{}",
        obj["kind"].as_str().unwrap_or_default(),
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Objects by [`key`]; panics on a duplicate.
pub(crate) fn by_key(objects: Vec<Value>) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for obj in objects {
        let k = key(&obj);
        assert!(map.insert(k.clone(), obj).is_none(), "duplicate object {k}");
    }
    map
}

/// Renders the kustomization in `dir` (a folder of `deploy/kustomize`).
pub(crate) fn render(dir: &Path) -> Vec<Value> {
    let mut acc = Accumulated::default();
    accumulate(dir, &mut acc, false);
    let Accumulated {
        mut objects,
        patches,
        field_specs,
        images,
    } = acc;
    for patch in &patches {
        apply_patch(&mut objects, patch);
    }
    for image in &images {
        for obj in &mut objects {
            set_images(obj, image, &field_specs);
        }
    }
    objects
}

#[derive(Default)]
struct Accumulated {
    objects: Vec<Value>,
    patches: Vec<Value>,
    /// `(kind, path)` from `configurations`.
    field_specs: Vec<(String, Vec<String>)>,
    images: Vec<Value>,
}

fn accumulate(dir: &Path, acc: &mut Accumulated, component: bool) {
    let file = dir.join("kustomization.yaml");
    let docs = load_docs(&file);
    let [k] = docs.as_slice() else {
        panic!("{}: expected one document", file.display());
    };
    let map = k.as_object().expect("a kustomization is a map");
    for field in map.keys() {
        assert!(
            KNOWN_FIELDS.contains(&field.as_str()),
            "{}: field {field:?} is not understood by the test renderer; extend tests/deploy/kustomize.rs",
            file.display()
        );
    }
    let kind = k["kind"].as_str().unwrap_or("Kustomization");
    assert_eq!(
        kind,
        if component {
            "Component"
        } else {
            "Kustomization"
        },
        "{}",
        file.display()
    );
    for res in strings(&k["resources"]) {
        if res.starts_with("https://") || res.starts_with("http://") {
            assert_eq!(
                res,
                KNATIVE_RELEASE_URL,
                "{}: the only remote resource is the pinned Knative release",
                file.display()
            );
            acc.objects.extend(load_docs(&repo_path(RELEASE_EXCERPT)));
            continue;
        }
        let path = dir.join(&res);
        if path.is_dir() {
            // A sub-kustomization is rendered on its own, then added.
            acc.objects.extend(render(&path));
        } else {
            acc.objects.extend(load_docs(&path));
        }
    }
    for comp in strings(&k["components"]) {
        accumulate(&dir.join(comp), acc, true);
    }
    for patch in k["patches"].as_array().into_iter().flatten() {
        let path = patch["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: only `patches: - path:` is supported", file.display()));
        assert!(
            patch.get("target").is_none() && patch.get("patch").is_none(),
            "{}: only plain strategic-merge patch files are supported",
            file.display()
        );
        acc.patches.extend(load_docs(&dir.join(path)));
    }
    for cfg in strings(&k["configurations"]) {
        for doc in load_docs(&dir.join(cfg)) {
            for spec in doc["images"].as_array().into_iter().flatten() {
                let kind = spec["kind"].as_str().expect("field spec kind").to_owned();
                let path = spec["path"]
                    .as_str()
                    .expect("field spec path")
                    .split('/')
                    .map(str::to_owned)
                    .collect();
                acc.field_specs.push((kind, path));
            }
        }
    }
    acc.images
        .extend(k["images"].as_array().into_iter().flatten().cloned());
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a list of strings").to_owned())
        .collect()
}

/// Applies a strategic-merge patch to the one object it names.
fn apply_patch(objects: &mut [Value], patch: &Value) {
    let same = |o: &&mut Value| {
        o["kind"] == patch["kind"]
            && o["metadata"]["name"] == patch["metadata"]["name"]
            && (patch["metadata"]["namespace"].is_null()
                || o["metadata"]["namespace"] == patch["metadata"]["namespace"])
    };
    let mut targets: Vec<&mut Value> = objects.iter_mut().filter(|o| same(o)).collect();
    assert_eq!(
        targets.len(),
        1,
        "patch for {} must match exactly one object",
        key(patch)
    );
    merge(targets.remove(0), patch);
}

/// Strategic-merge-lite: maps merge, `null` deletes, lists whose items all
/// have a `name` merge by name, other values are replaced.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k) {
                    merge(existing, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (Value::Array(t), Value::Array(p)) if named(t) && named(p) => {
            for item in p {
                match t.iter_mut().find(|x| x["name"] == item["name"]) {
                    Some(existing) => merge(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn named(items: &[Value]) -> bool {
    items.iter().all(|i| i["name"].is_string())
}

/// kustomize's default image fields, in pods and pod templates.
const POD_SPEC_PATHS: &[&[&str]] = &[&["spec"], &["spec", "template", "spec"]];

fn set_images(obj: &mut Value, image: &Value, field_specs: &[(String, Vec<String>)]) {
    for pod_spec in POD_SPEC_PATHS {
        let Some(spec) = walk(obj, pod_spec) else {
            continue;
        };
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(containers)) = spec.get_mut(list) {
                for c in containers {
                    if let Some(Value::String(s)) = c.get_mut("image") {
                        *s = retag(s, image);
                    }
                }
            }
        }
    }
    let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
    for (spec_kind, path) in field_specs {
        if *spec_kind != kind {
            continue;
        }
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        if let Some(Value::String(s)) = walk(obj, &path) {
            *s = retag(s, image);
        }
    }
}

fn walk<'v>(mut v: &'v mut Value, path: &[&str]) -> Option<&'v mut Value> {
    for p in path {
        v = v.get_mut(*p)?;
    }
    Some(v)
}

/// Splits `name[:tag][@digest]`.
pub(crate) fn split_image(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(&rest[last_slash + i + 1..]),
            digest,
        ),
        None => (rest, None, digest),
    }
}

/// kustomize's image rewrite: a matching name gets `newName`; `newTag` or
/// `digest` replace both the old tag and the old digest.
fn retag(current: &str, image: &Value) -> String {
    let (name, tag, digest) = split_image(current);
    if image["name"].as_str() != Some(name) {
        return current.to_owned();
    }
    let name = image["newName"].as_str().unwrap_or(name);
    let new_tag = image["newTag"].as_str();
    let new_digest = image["digest"].as_str();
    let (tag, digest) = if new_tag.is_some() || new_digest.is_some() {
        (new_tag, new_digest)
    } else {
        (tag, digest)
    };
    let mut out = name.to_owned();
    if let Some(t) = tag {
        out.push(':');
        out.push_str(t);
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    out
}

/// Paths (`a.b[name=x].c`) where two values differ.
pub(crate) fn diff(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into(a, b, String::new(), &mut out);
    out
}

fn diff_into(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_into(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    sub,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                let label = match (p["name"].as_str(), q["name"].as_str()) {
                    (Some(n), Some(m)) if n == m => format!("[name={n}]"),
                    _ => format!("[{i}]"),
                };
                diff_into(p, q, format!("{path}{label}"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(path),
    }
}

/// Renders with `kubectl kustomize` when kubectl is installed: the overlay
/// tree is copied to a scratch folder whose `base` holds the release excerpt
/// instead of the URL. `None` when kubectl is absent.
pub(crate) fn kubectl_render(overlay: &str) -> Option<Vec<Value>> {
    let probe = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let scratch =
        std::env::temp_dir().join(format!("kdp-deploy-test-{}-{overlay}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    copy_tree(&repo_path("deploy/kustomize"), &scratch);
    std::fs::write(
        scratch.join("base/kustomization.yaml"),
        "resources:\n  - serving-core.yaml\n",
    )
    .expect("write scratch base");
    std::fs::copy(
        repo_path(RELEASE_EXCERPT),
        scratch.join("base/serving-core.yaml"),
    )
    .expect("copy excerpt");
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(scratch.join(overlay))
        .output()
        .expect("run kubectl kustomize");
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(parse_docs(&String::from_utf8_lossy(&out.stdout)).expect("kustomize output is YAML"))
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}
