use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn rev(name: &str) -> RevisionKey {
    RevisionKey {
        namespace: "example".into(),
        name: name.into(),
    }
}

fn svc(name: &str) -> ServiceKey {
    ServiceKey {
        namespace: "example".into(),
        name: name.into(),
    }
}

/// The seed walk-through: v1 20%, v2 80%, tags v1, v2 and latest (0%, follows v2).
fn table(tag_header: bool) -> RouteTable {
    let mut t = RouteTable::new(tag_header);
    t.add_service(
        ServiceRoute {
            service: svc("helloworld-go"),
            split: vec![
                (rev("helloworld-go-v1"), 20),
                (rev("helloworld-go-v2"), 80),
                (rev("helloworld-go-v2"), 0),
            ],
            tags: BTreeMap::from([
                ("v1".into(), rev("helloworld-go-v1")),
                ("v2".into(), rev("helloworld-go-v2")),
                ("latest".into(), rev("helloworld-go-v2")),
            ]),
        },
        "example.com",
    )
    .unwrap();
    t
}

#[test]
fn split_follows_draws() {
    let t = table(false);
    let host = "helloworld-go.example.example.com";
    for (draw, want) in [
        (0, "helloworld-go-v1"),
        (19, "helloworld-go-v1"),
        (20, "helloworld-go-v2"),
        (99, "helloworld-go-v2"),
        (150, "helloworld-go-v2"),
    ] {
        let m = t.resolve(host, None, draw).unwrap();
        assert_eq!(m.revision.name, want, "draw {draw}");
        assert_eq!(m.reason, MatchReason::Split);
        assert_eq!(m.service, &svc("helloworld-go"));
    }
}

#[test]
fn split_ratio_is_within_bounds() {
    let t = table(false);
    let mut rng = StdRng::seed_from_u64(7);
    let n = 10_000;
    let v1 = (0..n)
        .filter(|_| {
            t.route("helloworld-go.example.example.com", None, &mut rng)
                .unwrap()
                .revision
                .name
                == "helloworld-go-v1"
        })
        .count();
    // Binomial(10000, 0.2): sd = 40; 5 sd either side.
    assert!((1800..=2200).contains(&v1), "v1 got {v1} of {n}");
}

#[test]
fn cluster_local_names_and_ports_route_too() {
    let t = table(false);
    for host in [
        "helloworld-go.example",
        "helloworld-go.example.svc",
        "helloworld-go.example.svc.cluster.local",
        "HelloWorld-Go.Example.Example.com:8080",
        "helloworld-go.example.example.com.",
    ] {
        assert_eq!(
            t.resolve(host, None, 50).unwrap().revision.name,
            "helloworld-go-v2",
            "{host}"
        );
    }
}

#[test]
fn tag_hosts_pick_the_tagged_revision() {
    let t = table(false);
    for (host, want, tag) in [
        (
            "v1-helloworld-go.example.example.com",
            "helloworld-go-v1",
            "v1",
        ),
        (
            "v2-helloworld-go.example.example.com:80",
            "helloworld-go-v2",
            "v2",
        ),
        (
            "latest-helloworld-go.example.svc.cluster.local",
            "helloworld-go-v2",
            "latest",
        ),
    ] {
        let m = t.resolve(host, Some("v2"), 0).unwrap();
        assert_eq!(
            (m.revision.name.as_str(), m.reason),
            (want, MatchReason::TagHost(tag)),
            "{host}"
        );
    }
}

#[test]
fn tag_header_only_when_enabled() {
    let host = "helloworld-go.example.example.com";
    let off = table(false);
    assert_eq!(
        off.resolve(host, Some("v2"), 0).unwrap().revision.name,
        "helloworld-go-v1"
    );
    let on = table(true);
    let m = on.resolve(host, Some("v2"), 0).unwrap();
    assert_eq!(
        (m.revision.name.as_str(), m.reason),
        ("helloworld-go-v2", MatchReason::TagHeader("v2"))
    );
    // Unknown tag: the default split, as net-istio's header matches fall through.
    let m = on.resolve(host, Some("nope"), 0).unwrap();
    assert_eq!(
        (m.revision.name.as_str(), m.reason),
        ("helloworld-go-v1", MatchReason::Split)
    );
}

#[test]
fn unknown_host_lists_known_hosts() {
    let t = table(false);
    let err = t
        .resolve("c-helloworld-go.example.example.com", None, 0)
        .unwrap_err();
    assert_eq!(err.host, "c-helloworld-go.example.example.com");
    assert_eq!(
        err.known,
        [
            "helloworld-go.example.example.com",
            "latest-helloworld-go.example.example.com",
            "v1-helloworld-go.example.example.com",
            "v2-helloworld-go.example.example.com",
        ]
    );
    let msg = err.to_string();
    assert!(msg.starts_with("no service answers host \"c-helloworld-go.example.example.com\"; known hosts: helloworld-go.example.example.com, "), "{msg}");
    let empty = RouteTable::new(false)
        .resolve("x", None, 0)
        .unwrap_err()
        .to_string();
    assert_eq!(
        empty,
        "no service answers host \"x\"; no services are running"
    );
}

#[test]
fn conflicting_hosts_are_refused() {
    let mut t = table(false);
    let clash = ServiceRoute {
        service: svc("v1-helloworld-go"),
        split: vec![(rev("v1-helloworld-go-00001"), 100)],
        tags: BTreeMap::new(),
    };
    let err = t.add_service(clash, "example.com").unwrap_err();
    assert_eq!(err.host, "v1-helloworld-go.example.example.com");
    assert_eq!(err.first, svc("helloworld-go"));
    assert!(t.resolve("v1-helloworld-go.example", None, 0).is_ok());
}

#[test]
fn normalizes_hosts() {
    assert_eq!(normalize_host("A.b:8080"), "a.b");
    assert_eq!(normalize_host("a.b."), "a.b");
    assert_eq!(normalize_host("[::1]:80"), "[::1]");
    assert_eq!(normalize_host("::1"), "::1");
}
