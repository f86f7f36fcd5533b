use super::*;
use crate::manifest::{Object, parse_str};

const BASE: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/target: "10"
    spec:
      containers:
        - command: ["kdp", "hello"]
          env:
            - name: TARGET
              value: "World"
"#;

fn svc(text: &str) -> (Service, Source) {
    let mut docs = parse_str(Path::new("dir/hello.yaml"), text).unwrap();
    let doc = docs.remove(0);
    match doc.object {
        Object::Service(s) => (*s, doc.source),
        Object::ConfigMap(_) => panic!("expected a service"),
    }
}

fn ctx(defaults: &Defaults) -> BuildContext<'_> {
    BuildContext {
        defaults,
        self_exe: Path::new("/bin/kdp"),
    }
}

fn key(name: &str) -> RevisionKey {
    RevisionKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

#[test]
fn names_revisions_by_generation() {
    let d = Defaults::default();
    let mut h = RevisionHistory::default();
    let (s, src) = svc(BASE);
    assert_eq!(
        h.apply(&s, &src, ctx(&d)).unwrap(),
        Applied::Created(key("hello-00001"))
    );
    assert_eq!(
        h.apply(&s, &src, ctx(&d)).unwrap(),
        Applied::Unchanged(key("hello-00001"))
    );
    let (s2, _) = svc(&BASE.replace("World", "Go Sample v2"));
    assert_eq!(
        h.apply(&s2, &src, ctx(&d)).unwrap(),
        Applied::Created(key("hello-00002"))
    );
    let (s3, _) = svc(&BASE.replace("\"10\"", "\"20\""));
    assert_eq!(
        h.apply(&s3, &src, ctx(&d)).unwrap(),
        Applied::Created(key("hello-00003"))
    );
    let names: Vec<_> = h
        .revisions(&ServiceKey::of(&s))
        .map(|r| r.key.name.clone())
        .collect();
    assert_eq!(names, ["hello-00001", "hello-00002", "hello-00003"]);
    assert_eq!(h.latest(&ServiceKey::of(&s)), Some(&key("hello-00003")));
}

#[test]
fn key_order_does_not_make_a_new_revision() {
    let d = Defaults::default();
    let mut h = RevisionHistory::default();
    let (s, src) = svc(BASE);
    h.apply(&s, &src, ctx(&d)).unwrap();
    let reordered = BASE.replace(
        "        - command: [\"kdp\", \"hello\"]\n          env:\n            - name: TARGET\n              value: \"World\"\n",
        "        - env:\n            - value: \"World\"\n              name: TARGET\n          command: [\"kdp\", \"hello\"]\n",
    );
    assert_ne!(reordered, BASE);
    let (s2, _) = svc(&reordered);
    assert_eq!(
        h.apply(&s2, &src, ctx(&d)).unwrap(),
        Applied::Unchanged(key("hello-00001"))
    );
}

#[test]
fn named_templates_and_rollback() {
    let d = Defaults::default();
    let mut h = RevisionHistory::default();
    let named = |name: &str, target: &str| {
        svc(&BASE
            .replace(
                "    metadata:\n      annotations",
                &format!("    metadata:\n      name: {name}\n      annotations"),
            )
            .replace("World", target))
    };
    let (v1, src) = named("hello-v1", "v1");
    let (v2, _) = named("hello-v2", "v2");
    assert_eq!(
        h.apply(&v1, &src, ctx(&d)).unwrap(),
        Applied::Created(key("hello-v1"))
    );
    assert_eq!(
        h.apply(&v2, &src, ctx(&d)).unwrap(),
        Applied::Created(key("hello-v2"))
    );
    assert_eq!(
        h.apply(&v1, &src, ctx(&d)).unwrap(),
        Applied::Restored(key("hello-v1"))
    );
    // Generation keeps counting: an unnamed template after three changes is -00004.
    let (plain, _) = svc(BASE);
    assert_eq!(
        h.apply(&plain, &src, ctx(&d)).unwrap(),
        Applied::Created(key("hello-00004"))
    );
    let (changed, _) = named("hello-v1", "changed");
    let err = h.apply(&changed, &src, ctx(&d)).unwrap_err().to_string();
    assert_eq!(
        err,
        "dir/hello.yaml: document 1: spec.template.metadata.name: revision \"hello-v1\" already exists with a different template; give the changed template a new name"
    );
}

#[test]
fn revision_gets_defaults_and_resolved_command() {
    let d = Defaults::default();
    let mut h = RevisionHistory::default();
    let (s, src) = svc(BASE);
    h.apply(&s, &src, ctx(&d)).unwrap();
    let rev = h.revisions(&ServiceKey::of(&s)).next().unwrap();
    assert_eq!(rev.program, Path::new("/bin/kdp"));
    assert_eq!(rev.args, ["hello"]);
    assert_eq!(rev.working_dir, Path::new("dir"));
    assert_eq!(rev.timeout, Duration::from_secs(300));
    assert_eq!(rev.container_concurrency, 0);
    assert_eq!(rev.idle_timeout, None);
    assert_eq!(rev.annotations["autoscaling.knative.dev/target"], "10");
    let env = rev.process_env(4242);
    assert_eq!(
        env,
        [
            ("TARGET".to_owned(), "World".to_owned()),
            ("PORT".to_owned(), "4242".to_owned()),
            ("K_SERVICE".to_owned(), "hello".to_owned()),
            ("K_CONFIGURATION".to_owned(), "hello".to_owned()),
            ("K_REVISION".to_owned(), "hello-00001".to_owned()),
        ]
    );
}

#[test]
fn resolves_commands() {
    let exe = Path::new("/bin/kdp");
    let dir = Path::new("/srv/app");
    let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        resolve_command(&s(&["kdp", "hello"]), &s(&["x"]), exe, dir),
        (exe.into(), s(&["hello", "x"]))
    );
    assert_eq!(
        resolve_command(&s(&["./app"]), &[], exe, dir),
        ("/srv/app/./app".into(), vec![])
    );
    assert_eq!(
        resolve_command(&s(&["python3", "-m"]), &s(&["http.server"]), exe, dir),
        ("python3".into(), s(&["-m", "http.server"]))
    );
    assert_eq!(
        resolve_command(&s(&["/usr/bin/env"]), &[], exe, dir),
        ("/usr/bin/env".into(), vec![])
    );
}

#[test]
fn timeouts_are_validated_against_defaults() {
    let d = Defaults::default();
    let mut h = RevisionHistory::default();
    let (s, src) = svc(&BASE.replace(
        "      containers:",
        "      timeoutSeconds: 601\n      containers:",
    ));
    let err = h.apply(&s, &src, ctx(&d)).unwrap_err().to_string();
    assert!(
        err.ends_with(
            "spec.template.spec.timeoutSeconds: 601 is above max-revision-timeout-seconds (600)"
        ),
        "{err}"
    );
    let (s, src) = svc(&BASE.replace(
        "      containers:",
        "      timeoutSeconds: 10\n      responseStartTimeoutSeconds: 20\n      containers:",
    ));
    let err = h.apply(&s, &src, ctx(&d)).unwrap_err().to_string();
    assert!(
        err.contains("responseStartTimeoutSeconds: 20 is above timeoutSeconds (10)"),
        "{err}"
    );
    let (s, src) = svc(&BASE.replace(
        "      containers:",
        "      containerConcurrency: 1001\n      containers:",
    ));
    let err = h.apply(&s, &src, ctx(&d)).unwrap_err().to_string();
    assert!(
        err.contains("containerConcurrency: 1001 is above container-concurrency-max-limit (1000)"),
        "{err}"
    );
    assert_eq!(h.services().count(), 0, "failed applies leave no trace");
}

#[test]
fn resolves_traffic() {
    let d = Defaults::default();
    let mut h = RevisionHistory::default();
    let (s1, src) = svc(BASE);
    h.apply(&s1, &src, ctx(&d)).unwrap();
    let traffic = "  traffic:\n    - revisionName: hello-00001\n      percent: 50\n      tag: a\n    - latestRevision: true\n      percent: 50\n";
    let (s2, _) = svc(&format!("{}{traffic}", BASE.replace("World", "v2")));
    h.apply(&s2, &src, ctx(&d)).unwrap();
    let resolved = h.resolve_traffic(&s2, &src).unwrap();
    assert_eq!(
        resolved,
        [
            ResolvedTarget {
                revision: key("hello-00001"),
                percent: 50,
                tag: Some("a".into()),
                latest_revision: false
            },
            ResolvedTarget {
                revision: key("hello-00002"),
                percent: 50,
                tag: None,
                latest_revision: true
            },
        ]
    );
    let default = h.resolve_traffic(&s1, &src).unwrap();
    assert_eq!(
        default,
        [ResolvedTarget {
            revision: key("hello-00002"),
            percent: 100,
            tag: None,
            latest_revision: true
        }]
    );
    let (bad, _) = svc(&format!(
        "{BASE}  traffic:\n    - revisionName: hello-00009\n      percent: 100\n"
    ));
    let err = h.resolve_traffic(&bad, &src).unwrap_err().to_string();
    assert!(err.contains("spec.traffic[0].revisionName: revision \"hello-00009\" does not exist; known revisions of hello: hello-00001, hello-00002"), "{err}");
}
