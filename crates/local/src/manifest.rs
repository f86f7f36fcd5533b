//! Manifest loading: YAML files and folders into typed Knative objects.
//!
//! This is the first stage of `kdp run`: it reads the same YAML a cluster takes (files or
//! folders, several documents per file), keeps the `serving.knative.dev/v1` `Service`s and the
//! Knative `ConfigMap`s, and checks each document on its own like Knative's admission webhook
//! does. It hands a list of [`Document`]s to [`crate::model`], which applies them in order like
//! `kubectl apply`. Errors are [`ManifestError`]s naming the file, the document (1-based) and the
//! field path, e.g. `hello.yaml: document 2: spec.traffic[1].percent: ...`.
//!
//! Kubernetes objects carry many fields the local mode has no use for (`status`, `resources`,
//! `securityContext`, ...): those are accepted and ignored. The fields the local mode interprets
//! are typed strictly, and the Knative-owned parts of the spec (`spec`, `traffic` entries, `env`
//! entries) refuse unknown fields, as Knative's strict decoding does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `apiVersion` of the Knative Serving objects we read.
pub const SERVING_V1: &str = "serving.knative.dev/v1";
/// The namespace a Service lands in when its manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The namespace Knative's ConfigMaps live in.
pub const SYSTEM_NAMESPACE: &str = "knative-serving";
/// Environment variables Knative sets itself and refuses in a container's `env`.
pub const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"];
/// The command that runs the bundled hello-world app (see [`crate::hello`]).
pub const BUNDLED_HELLO: [&str; 2] = ["kdp", "hello"];

/// `Result` alias for manifest loading.
pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// One Kubernetes object read from a manifest, with where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// The file and the document index the object was read from.
    pub source: Source,
    /// The object.
    pub object: Object,
}

/// Where a document was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file, as the user named it (or as found in a named folder).
    pub file: PathBuf,
    /// The document's index in the file, counting from 1.
    pub document: usize,
}

/// The objects the local mode understands.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Object {
    /// A `serving.knative.dev/v1` `Service`.
    Service(Box<Service>),
    /// One of Knative's `ConfigMap`s.
    ConfigMap(ConfigMap),
}

/// A Knative Service, as far as the local mode reads it.
#[derive(Clone, Debug)]
pub struct Service {
    /// `metadata.namespace`, [`DEFAULT_NAMESPACE`] when absent.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels` (they select the domain in `config-domain`).
    pub labels: BTreeMap<String, String>,
    /// `spec.template`: what each revision runs.
    pub template: RevisionTemplate,
    /// `spec.traffic`; `None` means 100% to the latest revision.
    pub traffic: Option<Vec<TrafficTarget>>,
}

/// `spec.template`: one revision's metadata and spec. Two equal templates make the same revision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RevisionTemplate {
    /// `metadata.name`: the revision's name, when the user picks it.
    pub name: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`, including `autoscaling.knative.dev/*`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.containerConcurrency`; `None` takes config-defaults' value.
    pub container_concurrency: Option<u64>,
    /// `spec.timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `spec.responseStartTimeoutSeconds`.
    pub response_start_timeout_seconds: Option<u64>,
    /// `spec.idleTimeoutSeconds`.
    pub idle_timeout_seconds: Option<u64>,
    /// `spec.containers[0]`.
    pub container: Container,
}

/// The single container of a revision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Container {
    /// `name`.
    pub name: Option<String>,
    /// `image`: accepted and ignored by the local mode, but part of the template.
    pub image: Option<String>,
    /// `command`: the program and its first arguments. Never empty after loading.
    pub command: Vec<String>,
    /// `args`, appended to `command`.
    pub args: Vec<String>,
    /// `env`, in order.
    pub env: Vec<EnvVar>,
    /// `workingDir`, relative to the manifest's folder when relative.
    pub working_dir: Option<String>,
    /// `ports[0]`.
    pub port: Option<ContainerPort>,
    /// `readinessProbe`, kept as JSON for the queue-proxy's `SERVING_READINESS_PROBE`.
    pub readiness_probe: Option<serde_json::Value>,
}

/// One `env` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    /// `name`.
    pub name: String,
    /// `value`; an absent value is the empty string, as in Kubernetes.
    #[serde(default)]
    pub value: String,
}

/// `ports[0]`: the port the app expects (the process gets `PORT` instead).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerPort {
    /// `name`, e.g. `http1` or `h2c`.
    pub name: Option<String>,
    /// `containerPort`.
    pub container_port: u16,
}

/// One `spec.traffic` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficTarget {
    /// `tag`: also routes `<tag>-<service>.<namespace>.<domain>` to this target.
    pub tag: Option<String>,
    /// Which revision receives the traffic.
    pub target: TrafficRef,
    /// `percent`, 0 when absent.
    pub percent: u32,
}

/// The revision a traffic entry points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrafficRef {
    /// `revisionName: <name>`.
    Revision(String),
    /// `latestRevision: true`.
    Latest,
}

/// A Knative ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMap {
    /// Which one.
    pub name: ConfigMapName,
    /// `data`.
    pub data: BTreeMap<String, String>,
}

/// The ConfigMaps that configure the local mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigMapName {
    /// `config-domain`.
    Domain,
    /// `config-autoscaler`.
    Autoscaler,
    /// `config-features`.
    Features,
    /// `config-defaults`.
    Defaults,
}

/// Where in the input a problem is: file, document and field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// The document, from 1; 0 when the problem is the file itself.
    pub document: usize,
    /// The field path (`spec.traffic[1].percent`), empty for the whole document.
    pub field: String,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A file or folder could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("{}: invalid YAML", file.display())]
    Yaml {
        /// The file.
        file: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_yaml::Error,
    },
    /// A document is well-formed YAML but not an object the local mode accepts.
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: Location,
        /// What is wrong, lowercase, without the location.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

#[derive(Default, Deserialize)]
struct ObjectMeta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ServiceDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: ServiceSpecDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpecDoc {
    template: TemplateDoc,
    traffic: Option<Vec<TrafficDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: RevisionSpecDoc,
}

// Not `deny_unknown_fields`: the revision spec inlines a Kubernetes PodSpec, whose many other
// fields (`serviceAccountName`, `volumes`, `enableServiceLinks`, ...) mean nothing locally.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevisionSpecDoc {
    container_concurrency: Option<u64>,
    timeout_seconds: Option<u64>,
    response_start_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    #[serde(default)]
    containers: Vec<ContainerDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerDoc {
    name: Option<String>,
    image: Option<String>,
    command: Option<Vec<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvDoc>,
    env_from: Option<serde_yaml::Value>,
    working_dir: Option<String>,
    #[serde(default)]
    ports: Vec<PortDoc>,
    readiness_probe: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvDoc {
    name: String,
    value: Option<String>,
    value_from: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortDoc {
    name: Option<String>,
    container_port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TrafficDoc {
    tag: Option<String>,
    revision_name: Option<String>,
    configuration_name: Option<String>,
    latest_revision: Option<bool>,
    percent: Option<u64>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct ConfigMapDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// Reads every manifest under `paths`: files as given, folders one level deep (`*.yaml`,
/// `*.yml`, `*.json`, in name order, hidden files skipped), like `kubectl apply -f`.
///
/// # Errors
/// The first unreadable path, YAML syntax error or refused document.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for file in manifest_files(paths)? {
        let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
            path: file.clone(),
            source,
        })?;
        docs.extend(parse_str(&file, &text)?);
    }
    Ok(docs)
}

/// Lists the manifest files `paths` name, in the order they are applied.
///
/// # Errors
/// A path that does not exist or a folder that cannot be listed.
pub fn manifest_files<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let read_err = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        if !std::fs::metadata(path).map_err(read_err)?.is_dir() {
            files.push(path.to_path_buf());
            continue;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read_err)? {
            let entry_path = entry.map_err(read_err)?.path();
            if is_manifest_name(&entry_path) && entry_path.is_file() {
                found.push(entry_path);
            }
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn is_manifest_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Parses the documents of one file; `file` is used for error locations only.
///
/// Empty documents (a trailing `---`) are skipped but still counted, so indices match what an
/// editor shows.
///
/// # Errors
/// A YAML syntax error or the first refused document.
pub fn parse_str(file: &Path, text: &str) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = Source {
            file: file.to_path_buf(),
            document: i + 1,
        };
        let value = serde_yaml::Value::deserialize(de).map_err(|source| ManifestError::Yaml {
            file: file.to_path_buf(),
            source,
        })?;
        if value.is_null() {
            continue;
        }
        let object = parse_object(&source, value)?;
        docs.push(Document { source, object });
    }
    Ok(docs)
}

fn parse_object(source: &Source, value: serde_yaml::Value) -> Result<Object> {
    let at = |field: &str, message: String| ManifestError::Invalid {
        at: Location::new(source, field),
        message,
    };
    if !value.is_mapping() {
        return Err(at(
            "",
            "expected a Kubernetes object (a YAML mapping)".into(),
        ));
    }
    let meta: TypeMeta = typed(source, value.clone())?;
    let api_version = meta.api_version.unwrap_or_default();
    let kind = meta.kind.unwrap_or_default();
    match (api_version.as_str(), kind.as_str()) {
        (SERVING_V1, "Service") => {
            let doc: ServiceDoc = typed(source, value)?;
            Ok(Object::Service(Box::new(service_from_doc(source, doc)?)))
        }
        ("v1", "ConfigMap") => {
            let doc: ConfigMapDoc = typed(source, value)?;
            Ok(Object::ConfigMap(config_map_from_doc(source, doc)?))
        }
        ("", _) => Err(at("apiVersion", "missing".into())),
        (_, "") => Err(at("kind", "missing".into())),
        _ => Err(at(
            "",
            format!(
                "kdp run does not handle {api_version} {kind}; it reads {SERVING_V1} Service and \
                 the v1 ConfigMaps config-domain, config-autoscaler, config-features and \
                 config-defaults"
            ),
        )),
    }
}

fn typed<T: DeserializeOwned>(source: &Source, value: serde_yaml::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = err.path().to_string();
        let field = if field == "." { String::new() } else { field };
        ManifestError::Invalid {
            at: Location::new(source, &field),
            message: err.into_inner().to_string(),
        }
    })
}

fn config_map_from_doc(source: &Source, doc: ConfigMapDoc) -> Result<ConfigMap> {
    let at = |field: &str, message: String| ManifestError::Invalid {
        at: Location::new(source, field),
        message,
    };
    if let Some(ns) = doc.metadata.namespace.as_deref()
        && ns != SYSTEM_NAMESPACE
    {
        return Err(at(
            "metadata.namespace",
            format!("Knative's ConfigMaps live in {SYSTEM_NAMESPACE:?}, not {ns:?}"),
        ));
    }
    let name = match doc.metadata.name.as_deref() {
        Some("config-domain") => ConfigMapName::Domain,
        Some("config-autoscaler") => ConfigMapName::Autoscaler,
        Some("config-features") => ConfigMapName::Features,
        Some("config-defaults") => ConfigMapName::Defaults,
        Some(other) => {
            return Err(at(
                "metadata.name",
                format!(
                    "kdp run reads the ConfigMaps config-domain, config-autoscaler, \
                     config-features and config-defaults, not {other:?}"
                ),
            ));
        }
        None => return Err(at("metadata.name", "missing".into())),
    };
    Ok(ConfigMap {
        name,
        data: doc.data,
    })
}

fn service_from_doc(source: &Source, doc: ServiceDoc) -> Result<Service> {
    let at = |field: &str, message: String| ManifestError::Invalid {
        at: Location::new(source, field),
        message,
    };
    let name = doc
        .metadata
        .name
        .ok_or_else(|| at("metadata.name", "missing".into()))?;
    if let Err(why) = check_dns_label(&name) {
        return Err(at("metadata.name", why));
    }
    let namespace = doc
        .metadata
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if let Err(why) = check_dns_label(&namespace) {
        return Err(at("metadata.namespace", why));
    }
    let template = template_from_doc(source, &name, doc.spec.template)?;
    let traffic = match doc.spec.traffic {
        Some(entries) => Some(traffic_from_doc(source, entries)?),
        None => None,
    };
    Ok(Service {
        namespace,
        name,
        labels: doc.metadata.labels,
        template,
        traffic,
    })
}

fn template_from_doc(source: &Source, service: &str, doc: TemplateDoc) -> Result<RevisionTemplate> {
    let at = |field: &str, message: String| ManifestError::Invalid {
        at: Location::new(source, field),
        message,
    };
    if let Some(name) = doc.metadata.name.as_deref() {
        // mirrors Knative's webhook: a BYO revision name must be prefixed by the service name.
        let prefix = format!("{service}-");
        if !name.starts_with(&prefix) || name.len() == prefix.len() {
            return Err(at(
                "spec.template.metadata.name",
                format!("{name:?} must have the prefix {prefix:?}"),
            ));
        }
        if let Err(why) = check_dns_label(name) {
            return Err(at("spec.template.metadata.name", why));
        }
    }
    let mut containers = doc.spec.containers.into_iter();
    let (Some(first), None) = (containers.next(), containers.next()) else {
        return Err(at(
            "spec.template.spec.containers",
            "kdp run runs exactly one container per revision".into(),
        ));
    };
    Ok(RevisionTemplate {
        name: doc.metadata.name,
        labels: doc.metadata.labels,
        annotations: doc.metadata.annotations,
        container_concurrency: doc.spec.container_concurrency,
        timeout_seconds: doc.spec.timeout_seconds,
        response_start_timeout_seconds: doc.spec.response_start_timeout_seconds,
        idle_timeout_seconds: doc.spec.idle_timeout_seconds,
        container: container_from_doc(source, first)?,
    })
}

fn container_from_doc(source: &Source, doc: ContainerDoc) -> Result<Container> {
    const PATH: &str = "spec.template.spec.containers[0]";
    let at = |field: &str, message: String| ManifestError::Invalid {
        at: Location::new(source, &format!("{PATH}{field}")),
        message,
    };
    if doc.env_from.is_some() {
        return Err(at(
            ".envFrom",
            "not supported by kdp run (there are no Secrets or ConfigMaps to read); use env".into(),
        ));
    }
    let mut env = Vec::with_capacity(doc.env.len());
    for (i, var) in doc.env.into_iter().enumerate() {
        if var.value_from.is_some() {
            return Err(at(
                &format!(".env[{i}].valueFrom"),
                "not supported by kdp run; use value".into(),
            ));
        }
        if RESERVED_ENV.contains(&var.name.as_str()) {
            return Err(at(
                &format!(".env[{i}].name"),
                format!("{:?} is reserved: Knative sets it", var.name),
            ));
        }
        env.push(EnvVar {
            name: var.name,
            value: var.value.unwrap_or_default(),
        });
    }
    let command = match doc.command {
        Some(command) if !command.is_empty() => command,
        _ => match doc.image.as_deref().and_then(bundled_app_for_image) {
            Some(command) => command,
            None => {
                return Err(at(
                    ".command",
                    format!(
                        "required by kdp run: there is no container engine, so image {} is \
                         ignored and command (plus args) names the program to run locally; \
                         command: [\"kdp\", \"hello\"] runs the bundled hello-world app",
                        doc.image
                            .as_deref()
                            .map_or_else(|| "(none)".to_owned(), |i| format!("{i:?}")),
                    ),
                ));
            }
        },
    };
    let port = match doc.ports.into_iter().next() {
        Some(PortDoc {
            container_port: 0, ..
        }) => return Err(at(".ports[0].containerPort", "must be 1..=65535".into())),
        Some(p) => Some(ContainerPort {
            name: p.name,
            container_port: p.container_port,
        }),
        None => None,
    };
    Ok(Container {
        name: doc.name,
        image: doc.image,
        command,
        args: doc.args,
        env,
        working_dir: doc.working_dir,
        port,
        readiness_probe: doc.readiness_probe,
    })
}

/// The command for an image the local mode can stand in for without a container engine.
///
/// Knative's sample `helloworld-go` image (any registry, any tag) answers `Hello <TARGET>!` on
/// `$PORT`, which is exactly the bundled app, so the documentation's manifests run unchanged.
#[must_use]
pub fn bundled_app_for_image(image: &str) -> Option<Vec<String>> {
    let last = image.rsplit('/').next().unwrap_or(image);
    let repo = last.split([':', '@']).next().unwrap_or(last);
    (repo == "helloworld-go").then(|| BUNDLED_HELLO.iter().map(|s| (*s).to_owned()).collect())
}

fn traffic_from_doc(source: &Source, entries: Vec<TrafficDoc>) -> Result<Vec<TrafficTarget>> {
    let at = |i: usize, field: &str, message: String| ManifestError::Invalid {
        at: Location::new(source, &format!("spec.traffic[{i}]{field}")),
        message,
    };
    let mut tags = BTreeSet::new();
    let mut total: u64 = 0;
    let mut targets = Vec::with_capacity(entries.len());
    for (i, doc) in entries.into_iter().enumerate() {
        if doc.configuration_name.is_some() {
            return Err(at(
                i,
                ".configurationName",
                "not allowed on a Service; use revisionName or latestRevision".into(),
            ));
        }
        if doc.url.is_some() {
            return Err(at(
                i,
                ".url",
                "set by Knative in the status; not allowed in the spec".into(),
            ));
        }
        let target = match (doc.revision_name, doc.latest_revision) {
            (Some(name), None | Some(false)) => TrafficRef::Revision(name),
            (None, Some(true)) => TrafficRef::Latest,
            (Some(_), Some(true)) => {
                return Err(at(
                    i,
                    "",
                    "revisionName and latestRevision: true are mutually exclusive".into(),
                ));
            }
            (None, Some(false) | None) => {
                return Err(at(
                    i,
                    "",
                    "expected exactly one of revisionName or latestRevision: true".into(),
                ));
            }
        };
        let percent = doc.percent.unwrap_or(0);
        if percent > 100 {
            return Err(at(
                i,
                ".percent",
                format!("{percent} is not within 0..=100"),
            ));
        }
        total += percent;
        if let Some(tag) = doc.tag.as_deref() {
            if let Err(why) = check_dns_label(tag) {
                return Err(at(i, ".tag", why));
            }
            if !tags.insert(tag.to_owned()) {
                return Err(at(
                    i,
                    ".tag",
                    format!("tag {tag:?} is defined more than once"),
                ));
            }
        }
        targets.push(TrafficTarget {
            tag: doc.tag,
            target,
            percent: u32::try_from(percent).expect("percent checked to be <= 100"),
        });
    }
    if total != 100 {
        return Err(ManifestError::Invalid {
            at: Location::new(source, "spec.traffic"),
            message: format!("traffic targets sum to {total}, want 100"),
        });
    }
    Ok(targets)
}

/// Checks a DNS-1035 label: lowercase letters, digits and `-`, starting with a letter, ending
/// with a letter or digit, at most 63 characters (what Knative requires of names and tags).
///
/// # Errors
/// A lowercase sentence saying what is wrong.
pub fn check_dns_label(label: &str) -> std::result::Result<(), String> {
    let ok_chars = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let starts = label.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    let ends = label
        .bytes()
        .last()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if label.len() > 63 || !ok_chars || !starts || !ends {
        return Err(format!(
            "{label:?} is not a DNS label: use at most 63 lowercase letters, digits and '-', \
             starting with a letter and ending with a letter or digit"
        ));
    }
    Ok(())
}

// === impl Location ===

impl Location {
    /// The location of `field` in the document `source` names.
    #[must_use]
    pub fn new(source: &Source, field: &str) -> Self {
        Self {
            file: source.file.clone(),
            document: source.document,
            field: field.to_owned(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        Ok(())
    }
}

// === impl ConfigMapName ===

impl ConfigMapName {
    /// The ConfigMap's `metadata.name`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Domain => "config-domain",
            Self::Autoscaler => "config-autoscaler",
            Self::Features => "config-features",
            Self::Defaults => "config-defaults",
        }
    }
}

impl fmt::Display for ConfigMapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
