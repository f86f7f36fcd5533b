//! Proxy-path micro-benchmarks: the header rewriting every forwarded request
//! goes through (`kdp_proxy::forward`, the queue-proxy's `Forwarded` shim)
//! and the request log line (`kdp_proxy::request_log`).
//!
//! Run with:
//!
//! ```text
//! cargo bench -p kdp-benches --bench proxy
//! ```
//!
//! Cases: `proxy/strip_hop_by_hop` (a browser-like request with
//! `Connection`, `Keep-Alive` and `TE: trailers`), `proxy/append_xff` (one
//! earlier `X-Forwarded-For` hop), `proxy/forwarded_shim` (RFC 7239
//! `Forwarded` built from `X-Forwarded-*`, `kdp_queue_proxy::forwarded`),
//! `proxy/queue_proxy_request_headers` (all of the queue-proxy's request
//! header work in its order: shim, routing headers removed, hop-by-hop
//! stripped, peer appended) and `request_log/render_default_template`
//! (Knative's default JSON template). Header maps are cloned outside the
//! timed part.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use kdp_proxy::forward::{append_forwarded_for, strip_hop_by_hop};
use kdp_proxy::request_log::{
    DEFAULT_TEMPLATE, LogEntry, RequestInfo, ResponseInfo, RevisionInfo, Template,
};
use kdp_queue_proxy::forwarded;

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "helloworld-go.default.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101",
        ),
        ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.5"),
        ("connection", "keep-alive, x-hop"),
        ("keep-alive", "timeout=5"),
        ("x-hop", "1"),
        ("te", "trailers"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-request-id", "6c1f0d3e-8a44-4b52-9a4d-1f3b2c7d9e10"),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

/// [`request_headers`] as the queue-proxy gets it behind an ingress: plus
/// `X-Forwarded-Proto` and the routing headers (15 headers).
fn routed_headers() -> HeaderMap {
    let mut headers = request_headers();
    for (name, value) in [
        ("x-forwarded-proto", "https"),
        ("knative-serving-namespace", "default"),
        ("knative-serving-revision", "helloworld-go-00001"),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

fn proxy(c: &mut Criterion) {
    let headers = request_headers();
    let mut group = c.benchmark_group("proxy");
    group.bench_function("strip_hop_by_hop", |b| {
        b.iter_batched(
            || headers.clone(),
            |mut h| {
                strip_hop_by_hop(&mut h, true);
                h
            },
            BatchSize::SmallInput,
        );
    });
    let ip = IpAddr::V4(Ipv4Addr::new(10, 244, 1, 17));
    group.bench_function("append_xff", |b| {
        b.iter_batched(
            || headers.clone(),
            |mut h| {
                append_forwarded_for(&mut h, ip);
                h
            },
            BatchSize::SmallInput,
        );
    });
    let routed = routed_headers();
    group.bench_function("forwarded_shim", |b| {
        b.iter_batched(
            || routed.clone(),
            |mut h| {
                forwarded::apply(&mut h);
                h
            },
            BatchSize::SmallInput,
        );
    });
    let namespace = HeaderName::from_static("knative-serving-namespace");
    let revision = HeaderName::from_static("knative-serving-revision");
    group.bench_function("queue_proxy_request_headers", |b| {
        b.iter_batched(
            || routed.clone(),
            |mut h| {
                // queue-proxy/src/handler.rs, then kdp_proxy::forward.
                forwarded::apply(&mut h);
                h.remove(&revision);
                h.remove(&namespace);
                strip_hop_by_hop(&mut h, true);
                append_forwarded_for(&mut h, ip);
                h
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn request_log(c: &mut Criterion) {
    let headers = request_headers();
    let template = Template::parse(DEFAULT_TEMPLATE).expect("Knative's default template parses");
    let revision = RevisionInfo {
        name: "helloworld-go-00001".to_owned(),
        namespace: "default".to_owned(),
        service: "helloworld-go".to_owned(),
        configuration: "helloworld-go".to_owned(),
        pod_name: "helloworld-go-00001-deployment-5d8f9c7b4-x2x9z".to_owned(),
        pod_ip: "10.244.1.17".to_owned(),
    };
    let entry = LogEntry {
        request: RequestInfo {
            method: "GET",
            request_uri: "/search?q=knative&lang=en",
            url: "/search?q=knative&lang=en",
            host: "helloworld-go.default.example.com",
            proto: "HTTP/1.1",
            content_length: 0,
            remote_addr: "10.244.0.5:51234",
            user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101",
            referer: "https://example.com/\"quoted\"",
            headers: &headers,
        },
        response: ResponseInfo {
            code: 200,
            size: 13,
            latency: 0.000_731,
        },
        revision: &revision,
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    };
    let mut out = String::with_capacity(1024);
    let mut group = c.benchmark_group("request_log");
    group.bench_function("render_default_template", |b| {
        b.iter(|| {
            out.clear();
            template.render(&entry, &mut out).expect("renders");
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short by default so that the whole `cargo bench` stays near two
    // minutes; criterion's command-line flags override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = proxy, request_log
}
criterion_main!(benches);
