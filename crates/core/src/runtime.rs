//! The tokio runtime a data-plane binary runs on, sized for where it runs.
//!
//! A sidecar should not spread a pod's requests over every core of the node:
//! with one thread, the accept, the request, the upstream exchange and the
//! response of a connection all run on one thread with no cross-thread
//! wake-ups, which is what costs least CPU per request (linkerd2-proxy makes
//! the same choice). Measured here: one thread proxied 40-42k requests/s at
//! 1.4 CPU s per 100k, two threads 41-46k at 1.7-1.9. So the default is one
//! thread, and `KDP_WORKER_THREADS` buys throughput past what one core can
//! proxy.
//!
//! The activator is a shared Deployment rather than a sidecar; it defaults to
//! [`available_cores`], which honours the container's CPU limit (Knative's
//! activator Deployment sets 1000m, so one thread there too).

use crate::env::{EnvError, Strings};

/// Environment variable: worker threads (a positive integer).
pub const ENV_KDP_WORKER_THREADS: &str = "KDP_WORKER_THREADS";

/// Worker threads unless configured.
pub const DEFAULT_WORKERS: usize = 1;

/// Most worker threads accepted from the environment.
const MAX_WORKERS: usize = 256;

/// Worker threads from `KDP_WORKER_THREADS`, or [`DEFAULT_WORKERS`].
///
/// # Errors
/// The variable is set to something other than an integer in 1..=256.
pub fn worker_threads(env: &dyn Strings) -> Result<usize, EnvError> {
    worker_threads_or(env, DEFAULT_WORKERS)
}

/// Worker threads from `KDP_WORKER_THREADS`, or `default`.
///
/// # Errors
/// The variable is set to something other than an integer in 1..=256.
pub fn worker_threads_or(env: &dyn Strings, default: usize) -> Result<usize, EnvError> {
    match env.get(ENV_KDP_WORKER_THREADS)? {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
            _ => Err(EnvError::invalid(
                ENV_KDP_WORKER_THREADS,
                &v,
                format!("want an integer from 1 to {MAX_WORKERS}"),
            )),
        },
    }
}

/// The CPUs this process may use: the machine's, bounded by the scheduler
/// affinity mask and the cgroup CPU quota (`cpu.max`), at least one.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// A runtime with `workers` threads: the calling thread alone for one, a
/// work-stealing pool otherwise.
///
/// # Errors
/// The OS refused a thread or the I/O driver.
pub fn build(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(v: &str) -> HashMap<String, String> {
        HashMap::from([(ENV_KDP_WORKER_THREADS.to_owned(), v.to_owned())])
    }

    #[test]
    fn worker_threads_from_env() {
        assert_eq!(worker_threads(&env("1")).unwrap(), 1);
        assert_eq!(worker_threads(&env("4")).unwrap(), 4);
        let unset = HashMap::<String, String>::new();
        assert_eq!(worker_threads(&unset).unwrap(), DEFAULT_WORKERS);
        assert_eq!(worker_threads(&env("")).unwrap(), DEFAULT_WORKERS);
        assert_eq!(worker_threads_or(&unset, 3).unwrap(), 3);
        assert_eq!(worker_threads_or(&env("2"), 3).unwrap(), 2);
        assert!(worker_threads_or(&env("0"), 3).is_err());
    }

    #[test]
    fn bad_worker_threads_name_the_variable() {
        for bad in ["0", "-1", "two", "1000"] {
            let err = worker_threads(&env(bad)).unwrap_err();
            assert_eq!(err.var(), ENV_KDP_WORKER_THREADS, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn one_worker_is_a_current_thread_runtime() {
        let rt = build(1).unwrap();
        assert_eq!(
            rt.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        let rt = build(2).unwrap();
        assert_eq!(
            rt.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
    }
}
