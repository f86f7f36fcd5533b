//! Header names and values that Knative components put on the wire.
//!
//! Names are lowercase `HeaderName` constants so the hot path never parses
//! them; values that are compared exactly (probe values, the activator's
//! proxy marker) live next to them.

use http::HeaderName;

/// `K-Network-Probe`: marks a probe request; its value says who probes.
pub const K_NETWORK_PROBE: HeaderName = HeaderName::from_static("k-network-probe");
/// `K-Network-Hash`: the ingress prober's hash, echoed back on success.
pub const K_NETWORK_HASH: HeaderName = HeaderName::from_static("k-network-hash");
/// `K-Kubelet-Probe`: legacy marker for kubelet probes.
pub const K_KUBELET_PROBE: HeaderName = HeaderName::from_static("k-kubelet-probe");
/// `K-Proxy-Request`: set to `activator` on requests the activator forwards.
pub const K_PROXY_REQUEST: HeaderName = HeaderName::from_static("k-proxy-request");
/// `K-Original-Host`: the client's Host, moved aside by the activator.
pub const K_ORIGINAL_HOST: HeaderName = HeaderName::from_static("k-original-host");
/// `K-Passthrough-Lb`: set by the activator when mesh pod addressability is on.
pub const K_PASSTHROUGH_LB: HeaderName = HeaderName::from_static("k-passthrough-lb");
/// `Knative-Serving-Revision`: the revision the ingress routed to.
pub const KNATIVE_SERVING_REVISION: HeaderName =
    HeaderName::from_static("knative-serving-revision");
/// `Knative-Serving-Namespace`: the namespace of that revision.
pub const KNATIVE_SERVING_NAMESPACE: HeaderName =
    HeaderName::from_static("knative-serving-namespace");
/// `Knative-Serving-Tag`: selects a tagged revision when tag-header routing is on.
pub const KNATIVE_SERVING_TAG: HeaderName = HeaderName::from_static("knative-serving-tag");
/// `Knative-Serving-Default-Route`: set by the ingress on the default route.
pub const KNATIVE_SERVING_DEFAULT_ROUTE: HeaderName =
    HeaderName::from_static("knative-serving-default-route");
/// `Forwarded` (RFC 7239).
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `Retry-After`, sent with our queue-full 503s.
pub const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

/// `K-Network-Probe` value used by kubelet and the activator to probe a queue-proxy.
pub const PROBE_QUEUE: &str = "queue";
/// `K-Network-Probe` value the autoscaler sends to find the activator in the path.
pub const PROBE_ACTIVATOR: &str = "activator";
/// `K-Network-Probe` value of the ingress prober (paired with `K-Network-Hash`).
pub const PROBE_NETWORK: &str = "probe";
/// `K-Proxy-Request` value marking activator-proxied requests.
pub const PROXY_REQUEST_ACTIVATOR: &str = "activator";

/// User-Agent prefix of kubelet probes.
pub const UA_KUBE_PROBE: &str = "kube-probe/";
/// User-Agent of the activator's pod probes.
pub const UA_ACTIVATOR_PROBE: &str = "Knative-Activator-Probe";
/// User-Agent of the autoscaler's activator probes.
pub const UA_AUTOSCALING_PROBE: &str = "Knative-Autoscaling-Probe";
/// User-Agent the queue-proxy's readiness prober sends (Knative leaves the version empty).
pub const UA_READINESS_PROBE: &str = "kube-probe//";

/// True for a User-Agent that marks a health check on the queue-proxy's
/// serving port (kubelet, activator or autoscaler; case-sensitive prefix).
pub fn is_health_check_user_agent(ua: &[u8]) -> bool {
    ua.starts_with(UA_KUBE_PROBE.as_bytes())
        || ua.starts_with(UA_ACTIVATOR_PROBE.as_bytes())
        || ua.starts_with(UA_AUTOSCALING_PROBE.as_bytes())
}

/// True when the request is a kubelet probe by Knative's networking
/// definition: a `kube-probe/` User-Agent or a non-empty `K-Kubelet-Probe`.
pub fn is_kubelet_probe(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(UA_KUBE_PROBE.as_bytes()))
        || headers.get(&K_KUBELET_PROBE).is_some_and(|v| !v.is_empty())
}

/// Knative's `IsProbe`: a kubelet probe or any non-empty `K-Network-Probe`.
/// Such requests are kept out of request metrics, logs and traces.
pub fn is_probe(headers: &http::HeaderMap) -> bool {
    is_kubelet_probe(headers) || headers.get(&K_NETWORK_PROBE).is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn health_check_agents() {
        assert!(is_health_check_user_agent(b"kube-probe/1.30"));
        assert!(is_health_check_user_agent(b"Knative-Activator-Probe"));
        assert!(is_health_check_user_agent(b"Knative-Autoscaling-Probe/x"));
        assert!(!is_health_check_user_agent(b"curl/8"));
        assert!(!is_health_check_user_agent(b"KUBE-PROBE/1"));
    }

    #[test]
    fn probe_classification() {
        let mut h = HeaderMap::new();
        assert!(!is_probe(&h));
        h.insert(&K_NETWORK_PROBE, "".parse().unwrap());
        assert!(!is_probe(&h), "an empty K-Network-Probe counts as absent");
        h.insert(&K_NETWORK_PROBE, "queue".parse().unwrap());
        assert!(is_probe(&h));
        assert!(!is_kubelet_probe(&h));
        let mut h = HeaderMap::new();
        h.insert(&K_KUBELET_PROBE, "queue".parse().unwrap());
        assert!(is_kubelet_probe(&h));
    }
}
