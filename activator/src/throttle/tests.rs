use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use kdp_core::{Error, cause_ref};

use super::*;

fn key(name: &str) -> RevisionKey {
    RevisionKey::new("test-namespace", name)
}

fn poll(acquire: &mut Acquire) -> Poll<Result<Lease>> {
    Pin::new(acquire).poll(&mut Context::from_waker(Waker::noop()))
}

fn pods(dests: &[&str]) -> Backends {
    Backends::Pods {
        healthy: dests.iter().map(|d| (*d).to_owned()).collect(),
    }
}

// Item 93 (and 92): a revision accepts requests until it is removed; then
// `try_acquire` fails with Knative's NotFound text.
#[test]
fn removed_revision_is_not_found() {
    let throttler = Throttler::default();
    let k = key("test-revision");
    throttler.upsert_revision(k.clone(), 1, Protocol::Http1);
    throttler.update_backends(&k, pods(&["10.0.0.1:8012"]));
    let lease = match poll(&mut throttler.try_acquire(&k)) {
        Poll::Ready(Ok(lease)) => lease,
        other => panic!("{other:?}"),
    };
    assert_eq!(lease.dest(), "10.0.0.1:8012");

    assert!(throttler.remove_revision(&k));
    assert!(!throttler.remove_revision(&k));
    let err = match poll(&mut throttler.try_acquire(&k)) {
        Poll::Ready(Err(err)) => err,
        other => panic!("{other:?}"),
    };
    assert!(err.is_revision_not_found());
    let ThrottleError::RevisionNotFound(not_found) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(
        not_found.to_string(),
        "revision.serving.knative.dev \"test-revision\" not found"
    );
    let get = throttler.get(&k).unwrap_err();
    assert_eq!(get, *not_found);
    // The lease out before removal is still returned cleanly.
    drop(lease);
}

#[test]
fn removal_fails_waiting_requests() {
    let throttler = Throttler::default();
    let k = key("held");
    throttler.upsert_revision(k.clone(), 0, Protocol::Http1);
    let mut held = throttler.try_acquire(&k);
    assert!(poll(&mut held).is_pending());
    throttler.remove_revision(&k);
    assert!(matches!(
        poll(&mut held),
        Poll::Ready(Err(ThrottleError::RevisionNotFound(_)))
    ));
}

#[test]
fn unknown_revision_is_not_found() {
    let throttler = Throttler::default();
    assert!(matches!(
        poll(&mut throttler.try_acquire(&key("nope"))),
        Poll::Ready(Err(ThrottleError::RevisionNotFound(_)))
    ));
}

// The respond edge finds the leaf errors in the chain of a boxed ThrottleError.
#[test]
fn errors_expose_their_cause() {
    let full: Error = Box::new(ThrottleError::QueueFull(QueueFull));
    assert_eq!(
        cause_ref::<QueueFull>(full.as_ref()).map(ToString::to_string),
        Some("pending request queue full".to_owned())
    );
    let missing: Error = Box::new(ThrottleError::RevisionNotFound(RevisionNotFound::new(
        &key("gone"),
    )));
    assert_eq!(
        cause_ref::<RevisionNotFound>(missing.as_ref()).map(|e| e.name.as_str()),
        Some("gone")
    );
    assert_eq!(
        kdp_core::ErrorChain(missing.as_ref()).to_string(),
        "throttler has no such revision: revision.serving.knative.dev \"gone\" not found"
    );
}

#[test]
fn upsert_keeps_the_existing_throttler() {
    let throttler = Throttler::default();
    let k = key("r");
    let first = throttler.upsert_revision(k.clone(), 3, Protocol::H2c);
    let second = throttler.upsert_revision(k, 7, Protocol::Http1);
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(second.container_concurrency(), 3);
    assert_eq!(second.protocol(), Protocol::H2c);
    assert_eq!(throttler.revisions().len(), 1);
}

#[test]
fn updates_before_the_revision_are_applied_on_upsert() {
    let throttler = Throttler::default();
    let k = key("early");
    throttler.update_backends(&k, pods(&["a", "b", "c"]));
    assert!(throttler.update_activator_ips(&k, &["10.1.0.2", "10.1.0.1"], "10.1.0.2"));
    let revision = throttler.upsert_revision(k, 1, Protocol::Http1);
    assert_eq!(
        revision.activators(),
        Activators {
            count: 2,
            index: Some(1)
        }
    );
    assert_eq!(revision.assigned_dests(), ["b"]);
    assert_eq!(revision.capacity(), 1);

    // Removal forgets pending updates too.
    let other = key("never");
    throttler.update_backends(&other, pods(&["a"]));
    throttler.remove_revision(&other);
    assert_eq!(
        throttler
            .upsert_revision(other, 1, Protocol::Http1)
            .capacity(),
        0
    );
}

// Item 99: public Endpoints with two activator IPs (self second), then only self.
#[test]
fn activator_ips_set_count_and_index() {
    let throttler = Throttler::default();
    let k = key("r");
    let revision = throttler.upsert_revision(k.clone(), 1, Protocol::Http1);
    throttler.update_backends(&k, pods(&["10.0.0.1:8012", "10.0.0.2:8012"]));
    assert_eq!(revision.capacity(), 2);

    assert!(throttler.update_activator_ips(&k, &["130.0.0.2", "130.0.0.1"], "130.0.0.2"));
    assert_eq!(
        revision.activators(),
        Activators {
            count: 2,
            index: Some(1)
        }
    );
    assert_eq!(revision.assigned_dests(), ["10.0.0.2:8012"]);
    assert_eq!(revision.capacity(), 1);

    assert!(throttler.update_activator_ips(&k, &["130.0.0.2"], "130.0.0.2"));
    assert_eq!(
        revision.activators(),
        Activators {
            count: 1,
            index: Some(0)
        }
    );
    assert_eq!(revision.capacity(), 2);

    // Without our own IP nothing changes.
    assert!(!throttler.update_activator_ips(&k, &["130.0.0.7", "130.0.0.8"], "130.0.0.2"));
    assert_eq!(revision.activators().count, 1);
}

// Item 102: inferIndex.
#[test]
fn index_is_position_in_string_sorted_ips() {
    let ips = ["10.0.0.9", "10.0.0.10", "10.0.0.1", "10.0.0.3"];
    // Sorted as strings: 10.0.0.1, 10.0.0.10, 10.0.0.3, 10.0.0.9.
    let index = |own: &str| Activators::from_ips(&ips, own).map(|a| a.index);
    assert_eq!(index("10.0.0.100"), None);
    assert_eq!(index("10.0.0.1"), Some(Some(0)));
    assert_eq!(index("10.0.0.3"), Some(Some(2)));
    assert_eq!(index("10.0.0.9"), Some(Some(3)));
    assert_eq!(
        Activators::from_ips(&ips, "10.0.0.10").map(|a| a.count),
        Some(4)
    );
    assert_eq!(Activators::from_ips::<&str>(&[], "10.0.0.1"), None);
    assert_eq!(infer_index(&["a", "b", "c"], "b"), Some(1));
    assert_eq!(infer_index(&["a", "b", "c"], "d"), None);
}

#[test]
fn duplicate_activator_ips_count_once() {
    let a = Activators::from_ips(&["10.0.0.2", "10.0.0.1", "10.0.0.2"], "10.0.0.2");
    assert_eq!(
        a,
        Some(Activators {
            count: 2,
            index: Some(1)
        })
    );
}

#[test]
fn config_defaults() {
    let config = ThrottleConfig::default();
    assert_eq!(config.max_queued, 10_000);
    assert_eq!(config.load_balancing, LoadBalancing::LeastLoaded);
    let throttler = Throttler::new(ThrottleConfig {
        load_balancing: LoadBalancing::Knative,
        ..config
    });
    let revision = throttler.upsert_revision(key("k"), 2, Protocol::Http1);
    assert_eq!(revision.lb_policy(), LbPolicy::FirstAvailable);
}

#[test]
fn per_revision_counters() {
    let throttler = Throttler::default();
    let k = key("counted");
    let revision = throttler.upsert_revision(k.clone(), 1, Protocol::Http1);
    let mut held: Vec<_> = (0..3).map(|_| throttler.try_acquire(&k)).collect();
    assert_eq!((revision.queued(), revision.in_flight()), (3, 0));
    throttler.update_backends(&k, pods(&["a", "b"]));
    assert_eq!((revision.queued(), revision.in_flight()), (1, 2));
    let leases: Vec<_> = held
        .iter_mut()
        .filter_map(|a| match poll(a) {
            Poll::Ready(Ok(lease)) => Some(lease),
            _ => None,
        })
        .collect();
    assert_eq!(leases.len(), 2);
    drop(leases);
    assert_eq!((revision.queued(), revision.in_flight()), (0, 1));
    drop(held);
    assert_eq!((revision.queued(), revision.in_flight()), (0, 0));
}
