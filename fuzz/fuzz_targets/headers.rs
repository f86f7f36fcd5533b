//! Header handling on the proxy path: `name: value` lines from the input
//! become a header map, then go through hop-by-hop stripping (both ways),
//! the `X-Forwarded-For` append and the `Forwarded` shim. None may panic;
//! afterwards no hop-by-hop header and no header named by `Connection`
//! remains (except `Te: trailers` on requests), and `Forwarded` is valid.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, header};
use kdp_proxy::forward::{append_forwarded_for, strip_hop_by_hop};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim_ascii()),
            HeaderValue::from_bytes(value.trim_ascii()),
        ) {
            headers.append(n, v);
        }
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for request in [true, false] {
        let mut h = headers.clone();
        strip_hop_by_hop(&mut h, request);
        for gone in [
            header::CONNECTION,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::TRAILER,
            header::PROXY_AUTHORIZATION,
        ] {
            assert!(!h.contains_key(&gone), "{gone} survived");
        }
        for n in &named {
            assert!(
                !h.contains_key(n) || (request && *n == header::TE),
                "{n} named by Connection survived"
            );
        }
        if let Some(te) = h.get(header::TE) {
            assert!(request && te == "trailers");
        }
        append_forwarded_for(&mut h, std::net::Ipv4Addr::LOCALHOST.into());
        kdp_queue_proxy::forwarded::apply(&mut h);
    }
});
