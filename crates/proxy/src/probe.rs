//! Knative's ingress probe, answered the same way by both binaries.
//!
//! Sits with the other probe answers at the front of each stack, before any
//! proxying. A request whose `K-Network-Probe` is exactly `probe` is an
//! ingress prober checking the path: it gets 200 with its `K-Network-Hash`
//! echoed, or 400 when the hash is missing. It is never forwarded.

use http::{HeaderMap, Response, StatusCode};
use kdp_core::header::{K_NETWORK_HASH, K_NETWORK_PROBE, PROBE_NETWORK};

use crate::body::BoxBody;
use crate::respond::{http_error, raw};

/// True when the request is an ingress probe (`K-Network-Probe: probe`).
pub fn is_network_probe(headers: &HeaderMap) -> bool {
    headers
        .get(&K_NETWORK_PROBE)
        .is_some_and(|v| v == PROBE_NETWORK)
}

/// The answer to an ingress probe: the hash echoed, or 400 without one.
pub fn network_probe_response(headers: &HeaderMap) -> Response<BoxBody> {
    match headers.get(&K_NETWORK_HASH).filter(|h| !h.is_empty()) {
        None => http_error(
            StatusCode::BAD_REQUEST,
            "a probe request must contain a non-empty \"K-Network-Hash\" header",
        ),
        Some(hash) => {
            let mut rsp = raw(StatusCode::OK, "");
            rsp.headers_mut().insert(&K_NETWORK_HASH, hash.clone());
            rsp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_hash_or_refuses_without_one() {
        let mut h = HeaderMap::new();
        assert!(!is_network_probe(&h));
        h.insert(&K_NETWORK_PROBE, "probe".parse().unwrap());
        assert!(is_network_probe(&h));
        assert_eq!(network_probe_response(&h).status(), 400);
        h.insert(&K_NETWORK_HASH, "abc".parse().unwrap());
        let rsp = network_probe_response(&h);
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()[&K_NETWORK_HASH], "abc");
    }
}
