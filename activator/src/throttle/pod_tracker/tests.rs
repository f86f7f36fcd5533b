use super::*;

fn activators(count: usize, index: usize) -> Activators {
    Activators {
        count,
        index: Some(index),
    }
}

// Item 103: the pickIndices table of §3.4 (plus a slice-and-remnant case).
#[test]
fn pick_indices_table() {
    let table = [
        // (pods, activators, index) -> (begin, end, remnants)
        ((1, 1, 0), (0, 1, 0)),
        ((1, 2, 0), (0, 1, 0)),
        ((1, 2, 1), (0, 1, 0)),
        ((2, 3, 1), (1, 2, 0)),
        ((2, 3, 2), (0, 1, 0)),
        ((3, 3, 2), (2, 3, 0)),
        ((10, 3, 0), (0, 3, 1)),
        ((10, 3, 1), (3, 6, 1)),
        ((10, 3, 2), (6, 9, 1)),
        ((150, 5, 0), (0, 30, 0)),
        ((150, 5, 1), (30, 60, 0)),
        ((150, 5, 4), (120, 150, 0)),
        ((16, 7, 5), (10, 12, 2)),
    ];
    for ((pods, count, index), want) in table {
        assert_eq!(
            pick_indices(pods, index, count),
            want,
            "{pods} pods, {count} activators, index {index}"
        );
    }
}

// Item 103: assignSlice — unknown index, one tracker or one activator
// take all; otherwise slice plus remnant.
#[test]
fn assign_slice_cases() {
    let pods = ["a", "b", "c", "d", "e", "f"];
    assert_eq!(
        assign_slice::<&str>(&[], activators(1, 0)),
        Vec::<&str>::new()
    );
    assert_eq!(assign_slice(&pods, Activators::UNKNOWN), pods);
    assert_eq!(assign_slice(&pods[..1], activators(3, 2)), ["a"]);
    assert_eq!(assign_slice(&pods, activators(1, 0)), pods);
    assert_eq!(assign_slice(&pods[..3], activators(3, 1)), ["b"]);
    // 6 pods over 4 activators: slices of 1, remnants e and f go to 0 and 1.
    assert_eq!(assign_slice(&pods, activators(4, 0)), ["a", "e"]);
    assert_eq!(assign_slice(&pods, activators(4, 1)), ["b", "f"]);
    assert_eq!(assign_slice(&pods, activators(4, 2)), ["c"]);
    assert_eq!(assign_slice(&pods, activators(4, 3)), ["d"]);
    // More activators than pods: one pod each, round robin.
    assert_eq!(assign_slice(&pods[..2], activators(5, 3)), ["b"]);
    // Inconsistent input (index outside count) falls back to all pods.
    assert_eq!(assign_slice(&pods[..2], activators(2, 7)), ["a", "b"]);
    assert_eq!(assign_slice(&pods[..2], activators(0, 0)), ["a", "b"]);
}

#[test]
fn every_pod_is_assigned_exactly_once_across_activators() {
    for pods in 2..40usize {
        for count in 2..=pods {
            let trackers: Vec<usize> = (0..pods).collect();
            let mut seen = vec![0; pods];
            for index in 0..count {
                for pod in assign_slice(&trackers, activators(count, index)) {
                    seen[pod] += 1;
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "{pods} pods, {count} activators: {seen:?}"
            );
        }
    }
}

#[test]
fn tracker_reserves_up_to_its_capacity() {
    let limited = PodTracker::new("10.0.0.1:8012".into(), 2);
    assert!(limited.try_reserve());
    assert!(limited.try_reserve());
    assert!(!limited.try_reserve());
    assert_eq!(limited.load(), 2);
    limited.release();
    assert!(limited.has_spare());

    let unlimited = PodTracker::new("10.0.0.2:8012".into(), 0);
    for _ in 0..1000 {
        assert!(unlimited.try_reserve());
    }
    assert_eq!(unlimited.load(), 1000);
}
