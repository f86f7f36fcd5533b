use std::path::Path;

use super::*;
use crate::manifest::{load_paths, parse_str};

fn options() -> Options {
    Options {
        domain: None,
        self_exe: PathBuf::from("/bin/kdp"),
    }
}

fn build(text: &str, history: &mut RevisionHistory) -> Result<Model> {
    let docs = parse_str(Path::new("svc.yaml"), text)?;
    Model::build(&docs, history, &options())
}

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/local")
        .join(name)
}

fn load(paths: &[PathBuf]) -> Model {
    let docs = load_paths(paths).unwrap();
    Model::build(&docs, &mut RevisionHistory::default(), &options()).unwrap()
}

fn names(model: &Model, host: &str, tag: Option<&str>) -> Vec<String> {
    (0..100)
        .map(|d| {
            model
                .routes
                .resolve(host, tag, d)
                .unwrap()
                .revision
                .name
                .clone()
        })
        .collect()
}

fn count(v: &[String], name: &str) -> usize {
    v.iter().filter(|n| *n == name).count()
}

#[test]
fn hello_world_example() {
    let m = load(&[deploy("hello-world.yaml")]);
    let s = &m.services[0];
    assert_eq!(s.url, "http://helloworld-go.default.example.com");
    assert_eq!(
        s.cluster_url,
        "http://helloworld-go.default.svc.cluster.local"
    );
    assert_eq!(s.latest_created.name, "helloworld-go-00001");
    let rev = &m.revisions[&s.latest_created];
    assert_eq!(rev.annotations["autoscaling.knative.dev/target"], "10");
    assert_eq!(rev.env, [("TARGET".to_owned(), "World".to_owned())]);
    assert_eq!(
        count(
            &names(&m, "helloworld-go.default.svc.cluster.local", None),
            "helloworld-go-00001"
        ),
        100
    );
    assert_eq!(m.routed_revisions().count(), 1);
}

#[test]
fn traffic_split_example() {
    let m = load(&[deploy("traffic-split.yaml")]);
    assert_eq!(m.revisions.len(), 2);
    let split = names(&m, "helloworld-go.default.example.com", None);
    assert_eq!(
        (
            count(&split, "helloworld-go-v1"),
            count(&split, "helloworld-go-v2")
        ),
        (20, 80)
    );
    let route = |host: &str| {
        m.routes
            .resolve(host, None, 0)
            .unwrap()
            .revision
            .name
            .clone()
    };
    assert_eq!(
        route("v1-helloworld-go.default.example.com"),
        "helloworld-go-v1"
    );
    assert_eq!(
        route("v2-helloworld-go.default.example.com"),
        "helloworld-go-v2"
    );
    assert_eq!(
        route("latest-helloworld-go.default.example.com"),
        "helloworld-go-v2"
    );
    assert_eq!(
        m.services[0].tag_url("v1"),
        "http://v1-helloworld-go.default.example.com"
    );
    assert!(!m.routes.tag_header_routing());
}

#[test]
fn tag_header_example() {
    let m = load(&[deploy("tag-header.yaml")]);
    assert!(m.routes.tag_header_routing());
    let host = "helloworld-go.example.example.com";
    assert_eq!(
        count(&names(&m, host, Some("a")), "helloworld-go-00001"),
        100
    );
    assert_eq!(
        count(&names(&m, host, Some("b")), "helloworld-go-00002"),
        100
    );
    assert_eq!(
        count(&names(&m, host, Some("c")), "helloworld-go-00001"),
        50
    );
    assert!(
        m.routes
            .resolve("c-helloworld-go.example.example.com", None, 0)
            .is_err()
    );
}

#[test]
fn autoscale_and_config_domain_examples() {
    let m = load(&[deploy("config-domain.yaml"), deploy("autoscale.yaml")]);
    let s = &m.services[0];
    assert_eq!(s.url, "http://autoscale-go.default.naturelr.cc");
    let rev = &m.revisions[&s.latest_created];
    assert_eq!(rev.annotations["autoscaling.knative.dev/minScale"], "1");
    assert_eq!(rev.annotations["autoscaling.knative.dev/maxScale"], "5");
    assert_eq!(m.config.autoscaler["stable-window"], "6s");
}

#[test]
fn scale_to_zero_example() {
    let m = load(&[deploy("scale-to-zero.yaml")]);
    assert_eq!(m.services[0].url, "http://hello-zero.default.example.com");
    assert_eq!(m.config.autoscaler["scale-to-zero-grace-period"], "6s");
}

#[test]
fn deploy_folder_loads_as_a_whole() {
    // All examples at once would put two helloworld-go Services in `default`: one is enough
    // to prove the folder parses; routes are checked per file above.
    let docs = load_paths(&[deploy("")]).unwrap();
    assert!(docs.len() >= 8, "{}", docs.len());
}

#[test]
fn domain_flag_overrides_config_domain() {
    let docs = load_paths(&[deploy("config-domain.yaml"), deploy("hello-world.yaml")]).unwrap();
    let opts = Options {
        domain: Some("localhost".into()),
        ..options()
    };
    let m = Model::build(&docs, &mut RevisionHistory::default(), &opts).unwrap();
    assert_eq!(m.services[0].url, "http://helloworld-go.default.localhost");
}

const V1: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - command: ["kdp", "hello"]
          env: [{name: TARGET, value: T1}]
"#;

#[test]
fn reload_creates_revisions_and_reports_changes() {
    let mut h = RevisionHistory::default();
    let m1 = build(V1, &mut h).unwrap();
    let c1: Vec<String> = m1.changes(None).iter().map(ToString::to_string).collect();
    assert_eq!(
        c1,
        [
            "service default/hello added",
            "revision default/hello-00001 created",
            "traffic of default/hello changed: 100% hello-00001 (latest)",
        ]
    );
    let same = build(V1, &mut h).unwrap();
    assert_eq!(same.changes(Some(&m1)), []);
    let m2 = build(&V1.replace("T1", "T2"), &mut h).unwrap();
    let c2: Vec<String> = m2
        .changes(Some(&m1))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        c2,
        [
            "revision default/hello-00002 created",
            "traffic of default/hello changed: 100% hello-00002 (latest)",
        ]
    );
    assert_eq!(m2.revisions.len(), 2);
    assert_eq!(
        m2.routed_revisions()
            .map(|r| r.key.name.as_str())
            .collect::<Vec<_>>(),
        ["hello-00002"]
    );
}

#[test]
fn failed_load_keeps_history() {
    let mut h = RevisionHistory::default();
    build(V1, &mut h).unwrap();
    let bad = format!(
        "{}  traffic:\n    - revisionName: hello-00009\n      percent: 100\n",
        V1.replace("T1", "T2")
    );
    let err = build(&bad, &mut h).unwrap_err().to_string();
    assert!(err.starts_with("svc.yaml: document 1: spec.traffic[0].revisionName: revision \"hello-00009\" does not exist"), "{err}");
    // The failed load did not create hello-00002: the next good edit does.
    let m = build(&V1.replace("T1", "T3"), &mut h).unwrap();
    assert_eq!(m.services[0].latest_created.name, "hello-00002");
}

#[test]
fn removed_services_leave_the_model() {
    let mut h = RevisionHistory::default();
    let two = format!("{V1}---{}", V1.replace("name: hello", "name: other"));
    let m1 = build(&two, &mut h).unwrap();
    assert_eq!(m1.services.len(), 2);
    let m2 = build(V1, &mut h).unwrap();
    let changes: Vec<String> = m2
        .changes(Some(&m1))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        changes,
        [
            "service default/other removed",
            "revision default/other-00001 removed"
        ]
    );
    // Re-adding starts over at -00001, as deleting and re-creating a Knative Service does.
    let m3 = build(&two, &mut h).unwrap();
    assert_eq!(m3.services[1].latest_created.name, "other-00001");
}

#[test]
fn bad_config_map_value_is_located() {
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-defaults\ndata:\n  revision-timeout-seconds: soon\n---{V1}"
    );
    let err = build(&text, &mut RevisionHistory::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "svc.yaml: document 1: data.revision-timeout-seconds: \"soon\" is not a non-negative integer"
    );
}

#[test]
fn host_conflicts_are_refused() {
    let text = format!(
        "{}  traffic:\n    - latestRevision: true\n      percent: 100\n      tag: a\n---{}",
        V1.replace("name: hello", "name: b"),
        V1.replace("name: hello", "name: a-b")
    );
    let err = build(&text, &mut RevisionHistory::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("document 2: metadata.name: host \"a-b.default.example.com\" is claimed by both default/b and default/a-b"), "{err}");
}
