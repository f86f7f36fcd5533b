use super::*;

fn parse(text: &str) -> Result<Vec<Document>> {
    parse_str(Path::new("hello.yaml"), text)
}

fn err(text: &str) -> String {
    parse(text)
        .expect_err("manifest must be refused")
        .to_string()
}

fn service(doc: &Document) -> &Service {
    match &doc.object {
        Object::Service(svc) => svc,
        other => panic!("expected a Service, got {other:?}"),
    }
}

const HELLO: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: helloworld-go
  uid: ignored
spec:
  template:
    metadata:
      labels:
        app: helloworld-go
      annotations:
        autoscaling.knative.dev/target: "10"
    spec:
      containerConcurrency: 5
      enableServiceLinks: false
      containers:
        - image: registry.example/helloworld-go:160e4dc8
          command: ["kdp", "hello"]
          resources: {}
          ports:
            - name: http1
              containerPort: 8080
          env:
            - name: TARGET
              value: "World"
          readinessProbe:
            tcpSocket:
              port: 0
status:
  url: ignored
"#;

#[test]
fn parses_hello_world_service() {
    let docs = parse(HELLO).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].source.document, 1);
    let svc = service(&docs[0]);
    assert_eq!(svc.namespace, "default");
    assert_eq!(svc.name, "helloworld-go");
    assert!(svc.traffic.is_none());
    let t = &svc.template;
    assert_eq!(t.annotations["autoscaling.knative.dev/target"], "10");
    assert_eq!(t.labels["app"], "helloworld-go");
    assert_eq!(t.container_concurrency, Some(5));
    assert_eq!(t.container.command, ["kdp", "hello"]);
    assert_eq!(
        t.container.env,
        [EnvVar {
            name: "TARGET".into(),
            value: "World".into()
        }]
    );
    let port = t.container.port.as_ref().unwrap();
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("http1"), 8080)
    );
    assert_eq!(
        t.container.readiness_probe,
        Some(serde_json::json!({"tcpSocket": {"port": 0}}))
    );
}

#[test]
fn counts_documents_and_skips_empty_ones() {
    let text = format!(
        "---\n{HELLO}\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-domain\n  namespace: knative-serving\ndata:\n  example.org: \"\"\n"
    );
    let docs = parse(&text).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].source.document, 3);
    let Object::ConfigMap(cm) = &docs[1].object else {
        panic!("expected a ConfigMap")
    };
    assert_eq!(cm.name, ConfigMapName::Domain);
    assert_eq!(cm.data["example.org"], "");
}

#[test]
fn refuses_other_kinds() {
    let msg = err("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n");
    assert!(
        msg.starts_with("hello.yaml: document 1: kdp run does not handle apps/v1 Deployment"),
        "{msg}"
    );
    let msg = err("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-network\n");
    assert!(
        msg.contains("metadata.name") && msg.contains("config-network"),
        "{msg}"
    );
    let msg = err("kind: Service\n");
    assert_eq!(msg, "hello.yaml: document 1: apiVersion: missing");
}

#[test]
fn refuses_config_map_in_other_namespace() {
    let msg = err(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-domain\n  namespace: default\n",
    );
    assert!(msg.contains("metadata.namespace"), "{msg}");
}

const SPLIT: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: helloworld-go
  namespace: example
spec:
  template:
    metadata:
      name: helloworld-go-v2
    spec:
      containers:
        - command: ["kdp", "hello"]
  traffic:
    - tag: v1
      revisionName: helloworld-go-v1
      percent: 20
    - tag: v2
      revisionName: helloworld-go-v2
      percent: 80
    - tag: latest
      latestRevision: true
      percent: 0
"#;

#[test]
fn parses_traffic() {
    let docs = parse(SPLIT).unwrap();
    let svc = service(&docs[0]);
    assert_eq!(svc.template.name.as_deref(), Some("helloworld-go-v2"));
    let traffic = svc.traffic.as_ref().unwrap();
    assert_eq!(traffic.len(), 3);
    assert_eq!(
        traffic[0].target,
        TrafficRef::Revision("helloworld-go-v1".into())
    );
    assert_eq!(traffic[2].target, TrafficRef::Latest);
    assert_eq!(traffic[2].tag.as_deref(), Some("latest"));
    assert_eq!(traffic.iter().map(|t| t.percent).sum::<u32>(), 100);
}

#[test]
fn traffic_must_sum_to_100() {
    let msg = err(&SPLIT.replace("percent: 80", "percent: 70"));
    assert_eq!(
        msg,
        "hello.yaml: document 1: spec.traffic: traffic targets sum to 90, want 100"
    );
}

#[test]
fn traffic_errors_name_the_field() {
    let msg = err(&SPLIT.replace("percent: 80", "percent: eighty"));
    assert!(
        msg.starts_with("hello.yaml: document 1: spec.traffic[1].percent: invalid type"),
        "{msg}"
    );
    let msg = err(&SPLIT.replace("percent: 80", "percent: 180"));
    assert!(
        msg.starts_with("hello.yaml: document 1: spec.traffic[1].percent: 180"),
        "{msg}"
    );
    let msg = err(&SPLIT.replace("tag: v2", "tag: v1"));
    assert!(
        msg.contains("spec.traffic[1].tag: tag \"v1\" is defined more than once"),
        "{msg}"
    );
    let msg = err(&SPLIT.replace("tag: v2", "tag: V_2"));
    assert!(
        msg.contains("spec.traffic[1].tag: \"V_2\" is not a DNS label"),
        "{msg}"
    );
    let msg = err(&SPLIT.replace("latestRevision: true", "latestRevision: false"));
    assert!(
        msg.contains("spec.traffic[2]: expected exactly one"),
        "{msg}"
    );
    let msg = err(&SPLIT.replace(
        "    - tag: v1\n",
        "    - tag: v1\n      latestRevision: true\n",
    ));
    assert!(
        msg.contains("spec.traffic[0]: revisionName and latestRevision"),
        "{msg}"
    );
    let msg = err(&SPLIT.replace("percent: 20", "percent: 20\n      weight: 3"));
    assert!(
        msg.contains("spec.traffic[0].weight: unknown field `weight`"),
        "{msg}"
    );
}

#[test]
fn revision_name_needs_service_prefix() {
    let msg = err(&SPLIT.replace("name: helloworld-go-v2", "name: v2"));
    assert!(
        msg.contains("spec.template.metadata.name: \"v2\" must have the prefix \"helloworld-go-\""),
        "{msg}"
    );
}

#[test]
fn command_is_required() {
    let msg = err(&HELLO
        .replace(
            "image: registry.example/helloworld-go:160e4dc8",
            "image: ghcr.io/me/app:1",
        )
        .replace("          command: [\"kdp\", \"hello\"]\n", ""));
    assert!(
        msg.starts_with(
            "hello.yaml: document 1: spec.template.spec.containers[0].command: required"
        ),
        "{msg}"
    );
    assert!(msg.contains("\"ghcr.io/me/app:1\" is ignored"), "{msg}");
    assert!(msg.contains("[\"kdp\", \"hello\"]"), "{msg}");
}

#[test]
fn helloworld_go_image_runs_the_bundled_app() {
    let docs = parse(&HELLO.replace("          command: [\"kdp\", \"hello\"]\n", "")).unwrap();
    assert_eq!(service(&docs[0]).template.container.command, BUNDLED_HELLO);
    assert_eq!(
        bundled_app_for_image("gcr.io/knative-samples/helloworld-go"),
        Some(vec!["kdp".into(), "hello".into()])
    );
    assert_eq!(
        bundled_app_for_image("helloworld-go@sha256:abc"),
        Some(vec!["kdp".into(), "hello".into()])
    );
    assert_eq!(bundled_app_for_image("helloworld-python"), None);
}

#[test]
fn refuses_reserved_env_and_value_from() {
    let msg = err(&HELLO.replace("name: TARGET", "name: PORT"));
    assert!(
        msg.contains("spec.template.spec.containers[0].env[0].name: \"PORT\" is reserved"),
        "{msg}"
    );
    let msg = err(&HELLO.replace(
        "value: \"World\"",
        "valueFrom: {secretKeyRef: {name: a, key: b}}",
    ));
    assert!(
        msg.contains("containers[0].env[0].valueFrom: not supported"),
        "{msg}"
    );
    let msg = err(&HELLO.replace("value: \"World\"", "value: 3"));
    assert!(
        msg.contains("containers[0].env[0].value: invalid type: integer"),
        "{msg}"
    );
}

#[test]
fn unquoted_annotation_value_is_refused_with_path() {
    let msg = err(&HELLO.replace("target: \"10\"", "target: 10"));
    assert!(
        msg.contains(
            "spec.template.metadata.annotations.autoscaling.knative.dev/target: invalid type"
        ),
        "{msg}"
    );
}

#[test]
fn refuses_unknown_spec_fields_and_two_containers() {
    let msg = err(&HELLO.replace("  template:\n", "  tempalte: {}\n  template:\n"));
    assert!(
        msg.contains("spec.tempalte: unknown field `tempalte`"),
        "{msg}"
    );
    let two = HELLO.replace(
        "          resources: {}\n",
        "          resources: {}\n        - command: [\"sleep\"]\n",
    );
    let msg = err(&two);
    assert!(
        msg.contains("spec.template.spec.containers: kdp run runs exactly one container"),
        "{msg}"
    );
}

#[test]
fn yaml_syntax_error_names_the_file() {
    let msg = err("apiVersion: [\n");
    assert!(msg.starts_with("hello.yaml: invalid YAML"), "{msg}");
}

#[test]
fn dns_labels() {
    assert!(check_dns_label("v1").is_ok());
    assert!(check_dns_label("a-b-9").is_ok());
    for bad in ["", "1a", "a-", "A", "a_b", &"a".repeat(64)] {
        assert!(check_dns_label(bad).is_err(), "{bad}");
    }
}

#[test]
fn folders_load_yaml_files_in_name_order() {
    let dir = std::env::temp_dir().join(format!("kdp-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        HELLO.replace("name: helloworld-go\n  uid", "name: second\n  uid"),
    )
    .unwrap();
    std::fs::write(dir.join("a.yml"), HELLO).unwrap();
    std::fs::write(dir.join(".a.yaml.swp"), "garbage: [").unwrap();
    std::fs::write(dir.join("notes.txt"), "garbage: [").unwrap();
    let docs = load_paths(&[&dir]).unwrap();
    let names: Vec<_> = docs.iter().map(|d| service(d).name.clone()).collect();
    assert_eq!(names, ["helloworld-go", "second"]);
    assert!(
        load_paths(&[dir.join("missing.yaml")])
            .unwrap_err()
            .to_string()
            .contains("missing.yaml: cannot read")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
