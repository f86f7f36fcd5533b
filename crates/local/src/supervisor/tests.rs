use std::os::unix::process::ExitStatusExt as _;

use super::*;

struct Harness {
    events: mpsc::UnboundedReceiver<ProcessEvent>,
    lines: mpsc::UnboundedReceiver<OutputLine>,
    replica: Replica,
}

fn fast() -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        reset_after: Duration::from_secs(60),
        max_restarts: None,
    }
}

fn sh(script: &str, policy: RestartPolicy) -> Harness {
    sh_with(script, policy, vec![])
}

fn sh_with(script: &str, policy: RestartPolicy, env: Vec<(String, String)>) -> Harness {
    let (etx, events) = mpsc::unbounded_channel();
    let (ltx, lines) = mpsc::unbounded_channel();
    let spec = ProcessSpec {
        label: "hello-00001/1".into(),
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env,
        working_dir: None,
    };
    let replica = Replica::spawn(spec, policy, Output::Capture(ltx), etx).unwrap();
    Harness {
        events,
        lines,
        replica,
    }
}

async fn line(h: &mut Harness) -> String {
    let next = tokio::time::timeout(Duration::from_secs(5), h.lines.recv()).await;
    next.expect("a line within 5 s")
        .expect("output channel open")
        .line
}

async fn event(h: &mut Harness) -> ProcessEvent {
    let next = tokio::time::timeout(Duration::from_secs(5), h.events.recv()).await;
    next.expect("an event within 5 s")
        .expect("event channel open")
}

/// Whether a pid is gone (or a zombie about to be reaped by init).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn assert_gone(pid: u32) {
    for _ in 0..200 {
        if gone(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("process {pid} outlived its replica");
}

#[tokio::test]
async fn output_is_prefixed_and_env_is_passed() {
    let env = vec![
        ("PORT".to_owned(), "4242".to_owned()),
        ("K_REVISION".to_owned(), "hello-00001".to_owned()),
    ];
    let mut h = sh_with(
        "echo port=$PORT rev=$K_REVISION; echo oops >&2; sleep 10",
        fast(),
        env,
    );
    let mut got = vec![line(&mut h).await, line(&mut h).await];
    got.sort();
    assert_eq!(got, ["oops", "port=4242 rev=hello-00001"]);
    assert!(matches!(event(&mut h).await, ProcessEvent::Started { .. }));
    let status = h.replica.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.signal(), Some(15));
}

#[tokio::test]
async fn crashes_restart_with_backoff_then_give_up() {
    let mut h = sh(
        "echo run; exit 3",
        RestartPolicy {
            max_restarts: Some(2),
            ..fast()
        },
    );
    let mut exits = 0;
    let mut restarts = Vec::new();
    loop {
        match event(&mut h).await {
            ProcessEvent::Exited { status, .. } => {
                assert_eq!(status.code(), Some(3));
                exits += 1;
            }
            ProcessEvent::Restarting {
                attempt, backoff, ..
            } => restarts.push((attempt, backoff)),
            ProcessEvent::GaveUp { restarts: n, .. } => {
                assert_eq!(n, 2);
                break;
            }
            ProcessEvent::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(exits, 3);
    assert_eq!(
        restarts,
        [
            (1, Duration::from_millis(10)),
            (2, Duration::from_millis(20))
        ]
    );
    for _ in 0..3 {
        assert_eq!(line(&mut h).await, "run");
    }
    assert_eq!(h.replica.pid(), None);
    assert_eq!(h.replica.stop(Duration::from_secs(1)).await, None);
}

#[tokio::test]
async fn sigterm_lets_the_child_exit_cleanly() {
    let mut h = sh(
        "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.01; done",
        fast(),
    );
    assert_eq!(line(&mut h).await, "ready");
    let status = h.replica.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.code(), Some(0));
    // The shell may also report its killed `sleep` ("Terminated") on stderr.
    let mut said_bye = false;
    while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(5), h.lines.recv()).await {
        said_bye |= l.line == "bye";
    }
    assert!(said_bye);
    let mut stopped = false;
    while let Ok(ev) = h.events.try_recv() {
        if let ProcessEvent::Stopped { killed, .. } = ev {
            assert!(!killed);
            stopped = true;
        }
    }
    assert!(stopped);
}

#[tokio::test]
async fn sigkill_after_grace() {
    let mut h = sh(
        "trap '' TERM; echo ready; while true; do sleep 0.01; done",
        fast(),
    );
    assert_eq!(line(&mut h).await, "ready");
    let status = h.replica.stop(Duration::from_millis(100)).await.unwrap();
    assert_eq!(status.signal(), Some(9));
}

#[tokio::test]
async fn stop_leaves_no_grandchildren() {
    let mut h = sh("sleep 1000 & echo $!; wait", fast());
    let grandchild: u32 = line(&mut h).await.parse().unwrap();
    assert!(!gone(grandchild));
    h.replica.stop(Duration::from_secs(5)).await;
    assert_gone(grandchild).await;
}

#[tokio::test]
async fn crash_takes_grandchildren_down() {
    let mut h = sh(
        "sleep 1000 & echo $!; sleep 0.1; exit 1",
        RestartPolicy {
            max_restarts: Some(0),
            ..fast()
        },
    );
    let grandchild: u32 = line(&mut h).await.parse().unwrap();
    loop {
        if let ProcessEvent::GaveUp { .. } = event(&mut h).await {
            break;
        }
    }
    assert_gone(grandchild).await;
}

#[tokio::test]
async fn drop_kills_the_group() {
    let mut h = sh("sleep 1000 & echo $!; wait", fast());
    let grandchild: u32 = line(&mut h).await.parse().unwrap();
    let leader = h.replica.pid().unwrap();
    drop(h.replica);
    assert_gone(grandchild).await;
    assert_gone(leader).await;
}

#[tokio::test]
async fn spawn_failure_is_an_error() {
    let (etx, _events) = mpsc::unbounded_channel();
    let spec = ProcessSpec {
        label: "x/1".into(),
        program: "/nonexistent/kdp-test-program".into(),
        args: vec![],
        env: vec![],
        working_dir: None,
    };
    let err = Replica::spawn(spec, fast(), Output::Discard, etx).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn working_dir_is_honoured() {
    let (etx, _events) = mpsc::unbounded_channel();
    let (ltx, mut lines) = mpsc::unbounded_channel();
    let spec = ProcessSpec {
        label: "x/1".into(),
        program: "pwd".into(),
        args: vec![],
        env: vec![],
        working_dir: Some("/".into()),
    };
    let _replica = Replica::spawn(
        spec,
        RestartPolicy {
            max_restarts: Some(0),
            ..fast()
        },
        Output::Capture(ltx),
        etx,
    )
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), lines.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.line, "/");
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = RestartPolicy::default();
    let ms = |n| p.backoff(n).as_millis();
    assert_eq!(
        (ms(1), ms(2), ms(3), ms(7), ms(8), ms(100)),
        (100, 200, 400, 6400, 10_000, 10_000)
    );
}

#[tokio::test]
async fn wait_listening_sees_a_listener() {
    let port = free_port().unwrap();
    let err = wait_listening(port, Duration::from_millis(30))
        .await
        .unwrap_err();
    assert_eq!(err.port, port);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    wait_listening(port, Duration::from_secs(1)).await.unwrap();
    drop(listener);
}
