//! The queue-proxy's whole environment: a valid Knative environment with
//! `KEY=VALUE` lines from the input laid over it (an empty value removes the
//! variable). `Config::from_env` returns a config or an error naming a
//! variable; it never panics.
#![no_main]

use std::collections::HashMap;

use kdp_queue_proxy::env::Config;
use libfuzzer_sys::fuzz_target;

const BASE: [(&str, &str); 12] = [
    ("CONTAINER_CONCURRENCY", "10"),
    ("QUEUE_SERVING_PORT", "8012"),
    ("QUEUE_SERVING_TLS_PORT", "8112"),
    ("USER_PORT", "8080"),
    ("REVISION_TIMEOUT_SECONDS", "300"),
    ("SERVING_LOGGING_CONFIG", ""),
    ("SERVING_LOGGING_LEVEL", "info"),
    ("SERVING_NAMESPACE", "default"),
    ("SERVING_CONFIGURATION", "hello"),
    ("SERVING_REVISION", "hello-00001"),
    ("SERVING_POD", "hello-00001-pod"),
    ("SERVING_POD_IP", "10.0.0.5"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut env: HashMap<String, String> = BASE
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for line in text.lines() {
        match line.split_once('=') {
            Some((k, "")) => {
                env.remove(k);
            }
            Some((k, v)) => {
                env.insert(k.to_owned(), v.to_owned());
            }
            None => {}
        }
    }
    match Config::from_env(&env) {
        Ok(config) => {
            assert!(config.serving_port > 0 && config.user_port > 0);
        }
        Err(err) => {
            assert!(!err.var().is_empty(), "errors name a variable: {err}");
        }
    }
});
