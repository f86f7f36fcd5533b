//! `kdp status`: what `kdp run` reports about its Services.
//!
//! Off the request path. The runtime builds a [`StatusReport`] from its [`Model`] plus live
//! replica counts and serves it as JSON at [`STATUS_PATH`] on its listen address (for any Host
//! that is not a Service's, e.g. `127.0.0.1:8080`); `kdp status` fetches it and prints it
//! with [`render`], in the shape of `kn service describe`, or as JSON with `-o json`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::model::Model;

/// Where `kdp run` serves its status as JSON.
pub const STATUS_PATH: &str = "/.kdp/status";

/// Every Service's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Services, in input order.
    pub services: Vec<ServiceStatus>,
}

/// One Service, like `kn service describe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// External URL.
    pub url: String,
    /// Cluster-local URL.
    pub cluster_url: String,
    /// The latest created revision.
    pub latest_created: String,
    /// Revisions, newest first.
    pub revisions: Vec<RevisionStatus>,
    /// `Ready`, `ConfigurationsReady`, `RoutesReady`.
    pub conditions: Vec<Condition>,
}

/// One revision of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionStatus {
    /// Name.
    pub name: String,
    /// Configuration generation.
    pub generation: u64,
    /// Share of the Service's traffic, summed over its traffic entries.
    pub percent: u32,
    /// Tags pointing at it.
    pub tags: Vec<String>,
    /// Whether a `latestRevision: true` entry points at it.
    pub latest_revision: bool,
    /// Replicas answering requests (filled in by the runtime).
    pub ready_replicas: u32,
    /// Replicas the autoscaler wants (filled in by the runtime).
    pub desired_replicas: u32,
    /// `image` from the manifest (ignored locally), if any.
    pub image: Option<String>,
    /// The program the replicas run, with its arguments.
    pub command: Vec<String>,
}

/// A Knative-style condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// `Ready`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, when not `True`.
    pub reason: Option<String>,
}

// === impl StatusReport ===

impl StatusReport {
    /// The report for `model` with no replicas yet; the runtime fills in replica counts and
    /// the `Ready` condition.
    #[must_use]
    pub fn from_model(model: &Model) -> Self {
        let services = model
            .services
            .iter()
            .map(|s| {
                let revisions = s
                    .revisions
                    .iter()
                    .rev()
                    .filter_map(|key| model.revisions.get(key))
                    .map(|r| {
                        let targets = s.traffic.iter().filter(|t| t.revision == r.key);
                        RevisionStatus {
                            name: r.key.name.clone(),
                            generation: r.generation,
                            percent: targets.clone().map(|t| t.percent).sum(),
                            tags: targets.clone().filter_map(|t| t.tag.clone()).collect(),
                            latest_revision: targets.clone().any(|t| t.latest_revision),
                            ready_replicas: 0,
                            desired_replicas: 0,
                            image: r.image.clone(),
                            command: std::iter::once(r.program.display().to_string())
                                .chain(r.args.iter().cloned())
                                .collect(),
                        }
                    })
                    .collect();
                let ok = |kind: &str| Condition {
                    kind: kind.to_owned(),
                    status: "True".to_owned(),
                    reason: None,
                };
                ServiceStatus {
                    namespace: s.key.namespace.clone(),
                    name: s.key.name.clone(),
                    url: s.url.clone(),
                    cluster_url: s.cluster_url.clone(),
                    latest_created: s.latest_created.name.clone(),
                    revisions,
                    conditions: vec![ok("Ready"), ok("ConfigurationsReady"), ok("RoutesReady")],
                }
            })
            .collect();
        Self { services }
    }
}

/// Renders a report for people, like `kn service describe` for each Service.
#[must_use]
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    if report.services.is_empty() {
        out.push_str("No services.\n");
    }
    for (i, s) in report.services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(out, "Name:       {}", s.name);
        let _ = writeln!(out, "Namespace:  {}", s.namespace);
        let _ = writeln!(out, "URL:        {}", s.url);
        let _ = writeln!(out, "Cluster:    {}", s.cluster_url);
        let _ = writeln!(out, "\nRevisions:");
        for r in &s.revisions {
            let share = if r.percent > 0 || !r.tags.is_empty() || r.latest_revision {
                format!("{:>4}%", r.percent)
            } else {
                "     ".to_owned()
            };
            let mut name = String::new();
            for tag in &r.tags {
                let _ = write!(name, "#{tag} ");
            }
            if r.latest_revision {
                let _ = write!(name, "@latest ({})", r.name);
            } else {
                name.push_str(&r.name);
            }
            if r.name == s.latest_created {
                name.push_str(" (latest created)");
            }
            let _ = writeln!(out, "  {share}  {name} [{}]", r.generation);
            let _ = writeln!(out, "         Command:   {}", r.command.join(" "));
            let _ = writeln!(
                out,
                "         Replicas:  {}/{}",
                r.ready_replicas, r.desired_replicas
            );
        }
        let _ = writeln!(out, "\nConditions:\n  OK TYPE                 REASON");
        for c in &s.conditions {
            let ok = match c.status.as_str() {
                "True" => "++",
                "False" => "!!",
                _ => "??",
            };
            let _ = writeln!(
                out,
                "  {ok} {:<20} {}",
                c.kind,
                c.reason.as_deref().unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::load_paths;
    use crate::model::Options;
    use crate::revision::RevisionHistory;

    #[test]
    fn describes_the_traffic_split_example() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/traffic-split.yaml");
        let docs = load_paths(&[path]).unwrap();
        let opts = Options {
            domain: None,
            self_exe: "/bin/kdp".into(),
        };
        let model = Model::build(&docs, &mut RevisionHistory::default(), &opts).unwrap();
        let report = StatusReport::from_model(&model);
        let s = &report.services[0];
        assert_eq!(s.latest_created, "helloworld-go-v2");
        assert_eq!(s.revisions[0].name, "helloworld-go-v2");
        assert_eq!(
            (s.revisions[0].percent, s.revisions[0].tags.clone()),
            (80, vec!["v2".to_owned(), "latest".to_owned()])
        );
        assert!(s.revisions[0].latest_revision);
        assert_eq!(
            (s.revisions[1].percent, s.revisions[1].tags.clone()),
            (20, vec!["v1".to_owned()])
        );
        let text = render(&report);
        assert!(
            text.contains("URL:        http://helloworld-go.default.example.com\n"),
            "{text}"
        );
        assert!(
            text.contains("   80%  #v2 #latest @latest (helloworld-go-v2) (latest created) [2]\n"),
            "{text}"
        );
        assert!(
            text.contains("   20%  #v1 helloworld-go-v1 [1]\n"),
            "{text}"
        );
        assert!(
            text.contains("         Command:   /bin/kdp hello\n"),
            "{text}"
        );
        let json = serde_json::to_string(&report).unwrap();
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!(json.contains("\"type\":\"Ready\""), "{json}");
    }

    #[test]
    fn empty_report() {
        assert_eq!(render(&StatusReport::default()), "No services.\n");
    }
}
