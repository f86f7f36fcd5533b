//! The `Forwarded` shim: synthesises RFC 7239 `Forwarded` from `X-Forwarded-*`.
//!
//! Runs inside the timeouts, before the proxy handler. When the request has
//! no `Forwarded` header but has `X-Forwarded-For`, `-Host` or `-Proto`, it
//! builds one the way Knative does, quirks included (empty `for=` nodes,
//! IPv6 nodes quoted in brackets). It never fails.

use http::{HeaderMap, HeaderValue};
use kdp_core::header::{FORWARDED, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// Adds a `Forwarded` header built from `X-Forwarded-*` when none is present.
pub fn apply(headers: &mut HeaderMap) {
    if headers.get(&FORWARDED).is_some_and(|v| !v.is_empty()) {
        return;
    }
    let first = |name| {
        headers
            .get(name)
            .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let (xff, xfh, xfp) = (
        first(&X_FORWARDED_FOR),
        first(&X_FORWARDED_HOST),
        first(&X_FORWARDED_PROTO),
    );
    if xff.is_empty() && xfh.is_empty() && xfp.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::try_from(render(&xff, &xfh, &xfp)) {
        headers.insert(&FORWARDED, v);
    }
}

fn render(xff: &str, xfh: &str, xfp: &str) -> String {
    let mut nodes: Vec<&str> = xff.split(',').map(str::trim).collect();
    // Nothing is emitted for the remainder after a final comma.
    if nodes.len() > 1 && nodes.last().is_some_and(|n| n.is_empty()) {
        nodes.pop();
    }
    let mut out = String::new();
    let first = if xff.is_empty() { "" } else { nodes[0] };
    if !xff.is_empty() {
        out.push_str("for=");
        push_node(&mut out, first);
    }
    if !xfh.is_empty() {
        if !first.is_empty() {
            out.push(';');
        }
        out.push_str("host=");
        out.push_str(xfh);
    }
    if !xfp.is_empty() {
        if !first.is_empty() || !xfh.is_empty() {
            out.push(';');
        }
        out.push_str("proto=");
        out.push_str(xfp);
    }
    if !xff.is_empty() {
        for node in &nodes[1..] {
            out.push_str(", for=");
            push_node(&mut out, node);
        }
    }
    out
}

fn push_node(out: &mut String, node: &str) {
    if node.contains(':') {
        out.push_str("\"[");
        out.push_str(node);
        out.push_str("]\"");
    } else {
        out.push_str(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shim(xff: &str, xfh: &str, xfp: &str, fwd: &str) -> Option<String> {
        let mut h = HeaderMap::new();
        for (name, v) in [
            (&X_FORWARDED_FOR, xff),
            (&X_FORWARDED_HOST, xfh),
            (&X_FORWARDED_PROTO, xfp),
            (&FORWARDED, fwd),
        ] {
            if !v.is_empty() {
                h.insert(name, v.parse().unwrap());
            }
        }
        apply(&mut h);
        h.get(&FORWARDED).map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn knative_cases_f1_to_f11() {
        let cases = [
            (
                "127.0.0.1, ::1",
                "h",
                "p",
                "",
                Some(r#"for=127.0.0.1;host=h;proto=p, for="[::1]""#),
            ),
            (
                "127.0.0.1",
                "h",
                "p",
                "",
                Some("for=127.0.0.1;host=h;proto=p"),
            ),
            (
                "127.0.0.1, ::1",
                "",
                "",
                "",
                Some(r#"for=127.0.0.1, for="[::1]""#),
            ),
            (
                "127.0.0.1, ::1",
                "",
                "p",
                "",
                Some(r#"for=127.0.0.1;proto=p, for="[::1]""#),
            ),
            (
                "127.0.0.1, ::1",
                "h",
                "",
                "",
                Some(r#"for=127.0.0.1;host=h, for="[::1]""#),
            ),
            ("", "h", "", "", Some("host=h")),
            ("", "", "p", "", Some("proto=p")),
            ("", "h", "p", "", Some("host=h;proto=p")),
            (",,,", "", "", "", Some("for=, for=, for=")),
            ("127.0.0.1", "h", "p", "for=a, for=b", Some("for=a, for=b")),
            ("", "", "", "", None),
        ];
        for (i, (xff, xfh, xfp, fwd, want)) in cases.into_iter().enumerate() {
            assert_eq!(shim(xff, xfh, xfp, fwd).as_deref(), want, "F{}", i + 1);
        }
    }

    #[test]
    fn quirk_empty_first_node() {
        assert_eq!(
            shim(",a", "h", "", "").as_deref(),
            Some("for=host=h, for=a")
        );
        assert_eq!(shim("a,", "", "", "").as_deref(), Some("for=a"));
    }
}
