//! The request log template: the input up to the first NUL is the template
//! source, the rest becomes request header values and the URI. Parsing and
//! rendering return errors, never panic.
#![no_main]

use http::{HeaderMap, HeaderValue};
use kdp_proxy::request_log::{LogEntry, RequestInfo, ResponseInfo, RevisionInfo, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (src, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(src) = std::str::from_utf8(src) else {
        return;
    };
    let Ok(template) = Template::parse(src) else {
        return;
    };
    let rest = String::from_utf8_lossy(rest);
    let mut headers = HeaderMap::new();
    for (i, value) in rest.split('\n').enumerate() {
        if let Ok(v) = HeaderValue::try_from(value) {
            let name = if i % 2 == 0 { "x-fuzz" } else { "user-agent" };
            headers.append(name, v);
        }
    }
    let revision = RevisionInfo {
        name: "hello-00001".into(),
        namespace: "default".into(),
        service: "hello".into(),
        configuration: "hello".into(),
        pod_name: "pod".into(),
        pod_ip: "10.0.0.5".into(),
    };
    let entry = LogEntry {
        request: RequestInfo {
            method: "GET",
            request_uri: &rest,
            url: &rest,
            host: "example.com",
            proto: "HTTP/1.1",
            content_length: -1,
            remote_addr: "10.0.0.1:5000",
            user_agent: &rest,
            referer: "",
            headers: &headers,
        },
        response: ResponseInfo {
            code: 200,
            size: 2,
            latency: 0.25,
        },
        revision: &revision,
        trace_id: "",
    };
    let mut out = String::new();
    let _ = template.render(&entry, &mut out);
});
