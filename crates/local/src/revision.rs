//! Revisions: naming, change detection, history and traffic resolution.
//!
//! Sits between [`crate::manifest`] and [`crate::model`]: each applied [`Service`] either
//! reuses its latest revision (an unchanged template) or creates a new immutable [`Revision`]
//! named `<service>-<generation:05>` or by `spec.template.metadata.name`, as Knative's
//! Configuration reconciler does. The [`RevisionHistory`] outlives one load of the files, so a
//! re-applied file keeps its revisions and an edit adds one. [`RevisionHistory::resolve_traffic`]
//! turns `spec.traffic` into concrete revisions for the route table. Errors are
//! [`InvalidRevision`]s located in the manifest.
//!
//! Invariant the runtime relies on: a [`RevisionKey`] always names the same content; revisions
//! are never modified once created.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Defaults;
use crate::manifest::{
    BUNDLED_HELLO, ContainerPort, Location, RevisionTemplate, Service, Source, TrafficRef,
};

/// A Service's identity: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// A revision's identity: namespace and name (what `Knative-Serving-Namespace` and
/// `Knative-Serving-Revision` carry).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RevisionKey {
    /// The namespace.
    pub namespace: String,
    /// The revision's name.
    pub name: String,
}

/// An immutable revision with config-defaults applied: everything the runtime needs to run
/// replicas of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    /// Namespace and name.
    pub key: RevisionKey,
    /// The Service (and Configuration) it belongs to.
    pub service: String,
    /// The Configuration generation that created it (1, 2, ...).
    pub generation: u64,
    /// Template labels.
    pub labels: BTreeMap<String, String>,
    /// Template annotations, including `autoscaling.knative.dev/*` for the KPA.
    pub annotations: BTreeMap<String, String>,
    /// `containerConcurrency`; 0 = unlimited.
    pub container_concurrency: u64,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// `responseStartTimeoutSeconds`, if any.
    pub response_start_timeout: Option<Duration>,
    /// `idleTimeoutSeconds`, if any.
    pub idle_timeout: Option<Duration>,
    /// The program to run: `command[0]`, resolved (the bundled app becomes our own executable).
    pub program: PathBuf,
    /// `command[1..]` followed by `args`.
    pub args: Vec<String>,
    /// `env` from the manifest, in order.
    pub env: Vec<(String, String)>,
    /// Working directory: `workingDir` or the manifest's folder.
    pub working_dir: PathBuf,
    /// `ports[0]`: the port the app would use in a cluster.
    pub port: Option<ContainerPort>,
    /// `readinessProbe` as JSON, for the queue-proxy's `SERVING_READINESS_PROBE`.
    pub readiness_probe: Option<serde_json::Value>,
    /// `image`, shown in status only.
    pub image: Option<String>,
    /// The document that created it.
    pub source: Source,
}

/// What applying a Service did to its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The template changed: a new revision.
    Created(RevisionKey),
    /// The template is the one last applied: nothing new.
    Unchanged(RevisionKey),
    /// The template names an existing revision with the same content (a roll-back by name):
    /// that revision becomes the latest again.
    Restored(RevisionKey),
}

/// One traffic entry with its revision resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvedTarget {
    /// The revision receiving the traffic.
    pub revision: RevisionKey,
    /// Its share, 0..=100.
    pub percent: u32,
    /// `tag`, if any.
    pub tag: Option<String>,
    /// Whether it follows the latest revision (`latestRevision: true`).
    pub latest_revision: bool,
}

/// Every Service's revisions, across reloads of the manifests.
#[derive(Clone, Debug, Default)]
pub struct RevisionHistory {
    services: BTreeMap<ServiceKey, ServiceHistory>,
}

/// A template or traffic entry that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct InvalidRevision {
    /// Where in the manifest.
    pub at: Location,
    /// What is wrong.
    pub message: String,
}

/// What revisions are built against: config-defaults and our own executable.
#[derive(Clone, Copy, Debug)]
pub struct BuildContext<'a> {
    /// config-defaults.
    pub defaults: &'a Defaults,
    /// The executable that `command: ["kdp", ...]` runs (normally `std::env::current_exe()`).
    pub self_exe: &'a Path,
}

#[derive(Clone, Debug)]
struct ServiceHistory {
    generation: u64,
    last_template: String,
    latest: RevisionKey,
    revisions: Vec<(Arc<Revision>, String)>,
}

// === impl ServiceKey / RevisionKey ===

impl ServiceKey {
    /// The key of `svc`.
    #[must_use]
    pub fn of(svc: &Service) -> Self {
        Self {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for RevisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === impl Revision ===

impl Revision {
    /// The environment of one replica, as Knative sets it: the manifest's `env`, then `PORT`
    /// (the free port this replica listens on), `K_SERVICE`, `K_CONFIGURATION`, `K_REVISION`.
    #[must_use]
    pub fn process_env(&self, port: u16) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.extend([
            ("PORT".to_owned(), port.to_string()),
            ("K_SERVICE".to_owned(), self.service.clone()),
            ("K_CONFIGURATION".to_owned(), self.service.clone()),
            ("K_REVISION".to_owned(), self.key.name.clone()),
        ]);
        env
    }

    fn build(
        key: RevisionKey,
        svc: &Service,
        generation: u64,
        source: &Source,
        ctx: BuildContext<'_>,
    ) -> Result<Self, InvalidRevision> {
        let t = &svc.template;
        let d = ctx.defaults;
        let invalid = |field: &str, message: String| InvalidRevision {
            at: Location::new(source, &format!("spec.template.spec.{field}")),
            message,
        };
        let container_concurrency = t.container_concurrency.unwrap_or(d.container_concurrency);
        if container_concurrency > d.container_concurrency_max_limit {
            return Err(invalid(
                "containerConcurrency",
                format!(
                    "{container_concurrency} is above container-concurrency-max-limit ({})",
                    d.container_concurrency_max_limit
                ),
            ));
        }
        let timeout = match t.timeout_seconds {
            None | Some(0) => d.revision_timeout_seconds,
            Some(s) => s,
        };
        let max = d.max_revision_timeout_seconds;
        for (field, value) in [
            ("timeoutSeconds", Some(timeout)),
            (
                "responseStartTimeoutSeconds",
                t.response_start_timeout_seconds,
            ),
            ("idleTimeoutSeconds", t.idle_timeout_seconds),
        ] {
            if let Some(v) = value
                && v > max
            {
                return Err(invalid(
                    field,
                    format!("{v} is above max-revision-timeout-seconds ({max})"),
                ));
            }
        }
        let response_start = t
            .response_start_timeout_seconds
            .or(d.revision_response_start_timeout_seconds)
            .filter(|s| *s > 0);
        if let Some(rs) = response_start
            && rs > timeout
        {
            return Err(invalid(
                "responseStartTimeoutSeconds",
                format!("{rs} is above timeoutSeconds ({timeout})"),
            ));
        }
        let idle = t
            .idle_timeout_seconds
            .unwrap_or(d.revision_idle_timeout_seconds);
        let manifest_dir = source
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (program, args) = resolve_command(
            &t.container.command,
            &t.container.args,
            ctx.self_exe,
            manifest_dir,
        );
        let working_dir = match t.container.working_dir.as_deref() {
            Some(dir) => manifest_dir.join(dir),
            None => manifest_dir.to_path_buf(),
        };
        Ok(Self {
            key,
            service: svc.name.clone(),
            generation,
            labels: t.labels.clone(),
            annotations: t.annotations.clone(),
            container_concurrency,
            timeout: Duration::from_secs(timeout),
            response_start_timeout: response_start.map(Duration::from_secs),
            idle_timeout: (idle > 0).then(|| Duration::from_secs(idle)),
            program,
            args,
            env: t
                .container
                .env
                .iter()
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect(),
            working_dir,
            port: t.container.port.clone(),
            readiness_probe: t.container.readiness_probe.clone(),
            image: t.container.image.clone(),
            source: source.clone(),
        })
    }
}

/// Resolves a container's `command` and `args` to a program and its arguments.
///
/// `kdp ...` runs `self_exe` (so the bundled app needs no separate build); a relative path with
/// a `/` (`./app`) is relative to the manifest's folder; a bare name is looked up in `PATH`.
#[must_use]
pub fn resolve_command(
    command: &[String],
    args: &[String],
    self_exe: &Path,
    manifest_dir: &Path,
) -> (PathBuf, Vec<String>) {
    let (first, rest) = command
        .split_first()
        .map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
    let program = if first == BUNDLED_HELLO[0] {
        self_exe.to_path_buf()
    } else if first.contains('/') && Path::new(first).is_relative() {
        manifest_dir.join(first)
    } else {
        PathBuf::from(first)
    };
    (program, rest.iter().chain(args).cloned().collect())
}

/// The template as a canonical string: equal templates, whatever their key order in YAML,
/// give equal strings.
fn canonical(template: &RevisionTemplate) -> String {
    fn write(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let value = serde_json::to_value(template).unwrap_or(serde_json::Value::Null);
    let mut out = String::new();
    write(&value, &mut out);
    out
}

// === impl RevisionHistory ===

impl RevisionHistory {
    /// Applies one Service like `kubectl apply`: a changed template creates a revision, an
    /// unchanged one does nothing.
    ///
    /// # Errors
    /// A named template that reuses an existing revision's name with different content (Knative
    /// refuses that too), an invalid timeout or concurrency, or a generated name already taken.
    pub fn apply(
        &mut self,
        svc: &Service,
        source: &Source,
        ctx: BuildContext<'_>,
    ) -> Result<Applied, InvalidRevision> {
        let key = ServiceKey::of(svc);
        let canon = canonical(&svc.template);
        let history = self.services.get(&key);
        if let Some(h) = history
            && h.last_template == canon
        {
            return Ok(Applied::Unchanged(h.latest.clone()));
        }
        let generation = history.map_or(0, |h| h.generation) + 1;
        let name = svc
            .template
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{generation:05}", svc.name));
        let rev_key = RevisionKey {
            namespace: svc.namespace.clone(),
            name,
        };
        let existing = history.and_then(|h| h.revisions.iter().find(|(r, _)| r.key == rev_key));
        if let Some((_, existing_canon)) = existing {
            if *existing_canon != canon {
                let field = if svc.template.name.is_some() {
                    "spec.template.metadata.name"
                } else {
                    "spec.template"
                };
                return Err(InvalidRevision {
                    at: Location::new(source, field),
                    message: format!(
                        "revision {:?} already exists with a different template; give the \
                         changed template a new name",
                        rev_key.name
                    ),
                });
            }
            let h = self
                .services
                .get_mut(&key)
                .expect("an existing revision implies a history");
            h.generation = generation;
            h.last_template = canon;
            h.latest = rev_key.clone();
            return Ok(Applied::Restored(rev_key));
        }
        let revision = Arc::new(Revision::build(
            rev_key.clone(),
            svc,
            generation,
            source,
            ctx,
        )?);
        let h = self.services.entry(key).or_insert_with(|| ServiceHistory {
            generation: 0,
            last_template: String::new(),
            latest: rev_key.clone(),
            revisions: Vec::new(),
        });
        h.generation = generation;
        h.last_template.clone_from(&canon);
        h.latest = rev_key.clone();
        h.revisions.push((revision, canon));
        Ok(Applied::Created(rev_key))
    }

    /// Forgets the Services for which `keep` is false (they left the input).
    pub fn retain(&mut self, mut keep: impl FnMut(&ServiceKey) -> bool) {
        self.services.retain(|k, _| keep(k));
    }

    /// The latest created revision of a Service (what `latestRevision: true` follows locally,
    /// where a revision is usable as soon as it is created: the activator holds requests until
    /// a replica is ready).
    #[must_use]
    pub fn latest(&self, service: &ServiceKey) -> Option<&RevisionKey> {
        self.services.get(service).map(|h| &h.latest)
    }

    /// A Service's revisions, oldest first.
    pub fn revisions(&self, service: &ServiceKey) -> impl Iterator<Item = &Arc<Revision>> {
        self.services
            .get(service)
            .into_iter()
            .flat_map(|h| h.revisions.iter().map(|(r, _)| r))
    }

    /// Every Service with a history.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// Resolves `spec.traffic` of an applied Service; absent traffic is 100% to the latest.
    ///
    /// # Errors
    /// A `revisionName` that is not one of this Service's revisions.
    pub fn resolve_traffic(
        &self,
        svc: &Service,
        source: &Source,
    ) -> Result<Vec<ResolvedTarget>, InvalidRevision> {
        let key = ServiceKey::of(svc);
        let Some(h) = self.services.get(&key) else {
            return Err(InvalidRevision {
                at: Location::new(source, ""),
                message: format!("service {key} has not been applied"),
            });
        };
        let Some(traffic) = &svc.traffic else {
            return Ok(vec![ResolvedTarget {
                revision: h.latest.clone(),
                percent: 100,
                tag: None,
                latest_revision: true,
            }]);
        };
        traffic
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let revision = match &t.target {
                    TrafficRef::Latest => h.latest.clone(),
                    TrafficRef::Revision(name) => h
                        .revisions
                        .iter()
                        .map(|(r, _)| &r.key)
                        .find(|k| k.name == *name)
                        .cloned()
                        .ok_or_else(|| InvalidRevision {
                            at: Location::new(source, &format!("spec.traffic[{i}].revisionName")),
                            message: format!(
                                "revision {name:?} does not exist; known revisions of {}: {}",
                                svc.name,
                                h.revisions
                                    .iter()
                                    .map(|(r, _)| r.key.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        })?,
                };
                Ok(ResolvedTarget {
                    revision,
                    percent: t.percent,
                    tag: t.tag.clone(),
                    latest_revision: t.target == TrafficRef::Latest,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
