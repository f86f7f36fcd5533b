use http::HeaderMap;

use super::go_fmt::{push_float, push_js_escaped};
use super::*;

fn revision() -> RevisionInfo {
    RevisionInfo {
        name: "rev".into(),
        namespace: "ns".into(),
        service: "svc".into(),
        configuration: "cfg".into(),
        pod_name: "pn".into(),
        pod_ip: "ip".into(),
    }
}

fn request(headers: &HeaderMap) -> RequestInfo<'_> {
    RequestInfo {
        method: "POST",
        request_uri: "/testpage?a=1",
        url: "/testpage?a=1",
        host: "example.com",
        proto: "HTTP/1.1",
        content_length: 4,
        remote_addr: "10.1.2.3:5678",
        user_agent: "curl/8.0",
        referer: "",
        headers,
    }
}

fn entry<'a>(headers: &'a HeaderMap, revision: &'a RevisionInfo) -> LogEntry<'a> {
    LogEntry {
        request: request(headers),
        response: ResponseInfo {
            code: 200,
            size: 12,
            latency: 0.5,
        },
        revision,
        trace_id: "",
    }
}

fn render(src: &str, entry: &LogEntry<'_>) -> Result<String, RenderError> {
    let template = Template::parse(src).expect("template parses");
    let mut out = String::new();
    template.render(entry, &mut out).map(|()| out)
}

fn render_default(src: &str) -> String {
    let headers = HeaderMap::new();
    let rev = revision();
    render(src, &entry(&headers, &rev)).expect("renders")
}

fn float(f: f64) -> String {
    let mut out = String::new();
    push_float(&mut out, f);
    out
}

fn js(s: &str) -> String {
    let mut out = String::new();
    push_js_escaped(&mut out, s);
    out
}

#[test]
fn default_template_renders_like_go() {
    let headers = HeaderMap::new();
    let rev = revision();
    let mut e = entry(&headers, &rev);
    e.request.request_uri = "/a?b=\"c\"&d=<e>";
    e.request.referer = "http://ref.example/";
    e.response.latency = 1.2e-5;
    e.trace_id = "abc";
    let out = render(DEFAULT_TEMPLATE, &e).expect("renders");
    assert_eq!(
        out,
        r#"{"httpRequest": {"requestMethod": "POST", "requestUrl": "/a?b\u003D\"c\"\u0026d\u003D\u003Ce\u003E", "requestSize": "4", "status": 200, "responseSize": "12", "userAgent": "curl/8.0", "remoteIp": "10.1.2.3:5678", "serverIp": "ip", "referer": "http://ref.example/", "latency": "1.2e-05s", "protocol": "HTTP/1.1"}, "traceId": "abc"}"#
    );
}

// L1, activator 2
#[test]
fn url_prints_absolute_form_when_client_used_it() {
    let headers = HeaderMap::new();
    let rev = revision();
    let mut e = entry(&headers, &rev);
    e.request.url = "http://example.com/testpage";
    let logger = RequestLogger::new(true, "{{.Request.URL}}\n").expect("valid");
    assert_eq!(
        logger.format(&e).as_deref(),
        Some("http://example.com/testpage\n")
    );
    e.request.url = "/testpage";
    assert_eq!(logger.format(&e).as_deref(), Some("/testpage\n"));
}

#[test]
fn url_fields() {
    let headers = HeaderMap::new();
    let rev = revision();
    let mut e = entry(&headers, &rev);
    e.request.url = "http://example.com/a%20b?x=1";
    let out = render(
        "{{.Request.URL.Scheme}}|{{.Request.URL.Host}}|{{.Request.URL.Path}}|{{.Request.URL.RawQuery}}|{{.Request.URL.String}}",
        &e,
    );
    assert_eq!(
        out.expect("renders"),
        "http|example.com|/a b|x=1|http://example.com/a%20b?x=1"
    );
    assert_eq!(
        render_default("{{.Request.URL.Path}}|{{.Request.URL.Host}}|{{.Request.URL.RawQuery}}"),
        "/testpage||a=1"
    );
}

// L2
#[test]
fn newline_appended_when_template_lacks_one() {
    let headers = HeaderMap::new();
    let rev = revision();
    let e = entry(&headers, &rev);
    let logger = RequestLogger::new(true, "{{.Request.ContentLength}}").expect("valid");
    assert_eq!(logger.format(&e).as_deref(), Some("4\n"));
    let logger = RequestLogger::new(true, "{{.Request.ContentLength}}\n").expect("valid");
    assert_eq!(logger.format(&e).as_deref(), Some("4\n"));
    // The newline is appended to the source, so a final `-}}` eats it, as
    // in Go.
    let logger = RequestLogger::new(true, "{{.Request.ContentLength -}}").expect("valid");
    assert_eq!(logger.format(&e).as_deref(), Some("4"));
}

// L3, activator 4
#[test]
fn revision_fields_render() {
    assert_eq!(
        render_default(
            "{{.Revision.Name}}, {{.Revision.Namespace}}, {{.Revision.Service}}, {{.Revision.Configuration}}, {{.Revision.PodName}}, {{.Revision.PodIP}}"
        ),
        "rev, ns, svc, cfg, pn, ip"
    );
    let headers = HeaderMap::new();
    let rev = RevisionInfo {
        pod_name: String::new(),
        pod_ip: String::new(),
        ..revision()
    };
    let out = render(
        "{{.Revision.Name}},{{.Revision.Service}},{{.Revision.PodName}},{{.Revision.PodIP}}",
        &entry(&headers, &rev),
    );
    assert_eq!(out.expect("renders"), "rev,svc,,");
}

// activator 7
#[test]
fn revision_without_labels_renders_empty_service_and_configuration() {
    let headers = HeaderMap::new();
    let rev = RevisionInfo {
        name: "rev".into(),
        namespace: "ns".into(),
        ..RevisionInfo::default()
    };
    let out = render(
        "{{.Revision.Name}}|{{.Revision.Service}}|{{.Revision.Configuration}}",
        &entry(&headers, &rev),
    );
    assert_eq!(out.expect("renders"), "rev||");
}

// L4
#[test]
fn probes_logged_only_when_enabled() {
    let logger = RequestLogger::new(true, DEFAULT_TEMPLATE).expect("valid");
    assert!(logger.wants(false));
    assert!(!logger.wants(true));
    let logger = logger.with_probe_logging(true);
    assert!(logger.wants(true));
    assert!(
        !RequestLogger::disabled()
            .with_probe_logging(true)
            .wants(true)
    );
}

// L5
#[test]
fn invalid_template_disables_logging() {
    let err = RequestLogger::new(true, "{{}}").expect_err("must not parse");
    assert!(matches!(err, UpdateError::Parse(_)));
    let headers = HeaderMap::new();
    let rev = revision();
    let mut logger = RequestLogger::disabled();
    assert!(logger.update(true, "{{}}").is_err());
    assert!(!logger.is_enabled());
    assert_eq!(logger.format(&entry(&headers, &rev)), None);
}

// L6
#[test]
fn missing_field_writes_invalid_template_line() {
    let headers = HeaderMap::new();
    let rev = revision();
    let mut e = entry(&headers, &rev);
    e.response.latency = 1.5;
    let logger = RequestLogger::new(true, "before {{.Request.Missing}} after").expect("valid");
    assert_eq!(
        logger.format(&e).as_deref(),
        Some(
            "Invalid request log template: method: POST, response code: 200, latency: 1.5, url: /testpage?a=1\n"
        )
    );
    for src in [
        "{{.Missing}}",
        "{{.Response.Foo}}",
        "{{.Revision.Name.Foo}}",
        "{{.Request.Method.Foo}}",
        "{{.Request.Method \"x\"}}",
        "{{\"x\" | .Request.Method}}",
    ] {
        assert!(render(src, &e).is_err(), "{src} must fail at render time");
    }
}

// L7
#[test]
fn trace_id_prefers_traceparent_then_b3() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .expect("valid"),
    );
    headers.insert("x-b3-traceid", "b3id".parse().expect("valid"));
    assert_eq!(trace_id(&headers), "4bf92f3577b34da6a3ce929d0e0e4736");
    headers.remove("traceparent");
    assert_eq!(trace_id(&headers), "b3id");
    headers.clear();
    for tp in ["invalid", "00"] {
        headers.insert("traceparent", tp.parse().expect("valid"));
        assert_eq!(trace_id(&headers), "", "traceparent {tp}");
    }
    headers.clear();
    assert_eq!(trace_id(&headers), "");
}

// activator 1, 6
#[test]
fn enabled_with_empty_template_is_rejected_and_previous_kept() {
    let mut logger = RequestLogger::disabled();
    assert!(matches!(
        logger.update(true, ""),
        Err(UpdateError::EmptyTemplate)
    ));
    assert!(!logger.is_enabled());
    logger.update(true, "{{.Request.Method}}").expect("valid");
    assert!(matches!(
        logger.update(true, ""),
        Err(UpdateError::EmptyTemplate)
    ));
    let headers = HeaderMap::new();
    let rev = revision();
    assert_eq!(
        logger.format(&entry(&headers, &rev)).as_deref(),
        Some("POST\n")
    );
}

// activator 3
#[test]
fn parse_error_keeps_previous_template() {
    let headers = HeaderMap::new();
    let rev = revision();
    let e = entry(&headers, &rev);
    let mut logger = RequestLogger::new(true, "{{.Request.Method}}").expect("valid");
    assert!(logger.update(true, "{{.Request.Method").is_err());
    assert_eq!(logger.format(&e).as_deref(), Some("POST\n"));
    logger.update(true, "{{.Response.Code}}").expect("valid");
    assert_eq!(logger.format(&e).as_deref(), Some("200\n"));
}

// activator 5
#[test]
fn disabled_ignores_template() {
    let headers = HeaderMap::new();
    let rev = revision();
    let mut logger = RequestLogger::new(true, DEFAULT_TEMPLATE).expect("valid");
    logger
        .update(false, "{{.Request.Method}}")
        .expect("disabling never fails");
    assert!(!logger.is_enabled());
    assert_eq!(logger.format(&entry(&headers, &rev)), None);
    // Even an unparsable template is fine when disabled.
    logger.update(false, "{{").expect("disabling never fails");
    let mut sink = Vec::new();
    logger
        .write_to(&entry(&headers, &rev), &mut sink)
        .expect("in-memory write");
    assert!(sink.is_empty());
}

#[test]
fn write_to_writes_one_line() {
    let headers = HeaderMap::new();
    let rev = revision();
    let logger = RequestLogger::new(true, "{{.Request.Method}} {{.Response.Code}}").expect("valid");
    let mut sink = Vec::new();
    logger
        .write_to(&entry(&headers, &rev), &mut sink)
        .expect("in-memory write");
    assert_eq!(sink, b"POST 200\n");
}

#[test]
fn float_formats_like_go_percent_v() {
    let cases: &[(f64, &str)] = &[
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (0.5, "0.5"),
        (123.456, "123.456"),
        (1.2e-5, "1.2e-05"),
        (0.0001, "0.0001"),
        (0.00012345, "0.00012345"),
        (1e-7, "1e-07"),
        (123_456.0, "123456"),
        (999_999.5, "999999.5"),
        (1e6, "1e+06"),
        (1_234_567.0, "1.234567e+06"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (1.5e-300, "1.5e-300"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-2.5, "-2.5"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ];
    for &(f, want) in cases {
        assert_eq!(float(f), want, "formatting {f:?}");
    }
}

#[test]
fn js_escapes_like_go() {
    let cases: &[(&str, &str)] = &[
        ("plain /path?x", "plain /path?x"),
        (r"a\b", r"a\\b"),
        ("it's", r"it\'s"),
        (r#"say "hi""#, r#"say \"hi\""#),
        ("<script>", r"\u003Cscript\u003E"),
        ("a&b=c", r"a\u0026b\u003Dc"),
        ("line\nbreak", r"line\u000Abreak"),
        ("\r\t\0\u{1f}", r"\u000D\u0009\u0000\u001F"),
        ("\u{7f}", "\u{7f}"),
        ("héllo 日本 😀", "héllo 日本 😀"),
        ("nb\u{a0}sp", r"nb\u00A0sp"),
        ("\u{85}", r"\u0085"),
        ("zw\u{200b}sp", r"zw\u200Bsp"),
        ("\u{2028}", r"\u2028"),
        ("\u{feff}", r"\uFEFF"),
    ];
    for &(input, want) in cases {
        assert_eq!(js(input), want, "escaping {input:?}");
    }
}

#[test]
fn js_function_and_pipe_forms_agree() {
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", "x".parse().expect("valid"));
    let rev = revision();
    let mut e = entry(&headers, &rev);
    e.request.user_agent = "Mozilla \"5\" <x>";
    let want = r#"Mozilla \"5\" \u003Cx\u003E"#;
    assert_eq!(
        render("{{js .Request.UserAgent}}", &e).expect("renders"),
        want
    );
    assert_eq!(
        render("{{.Request.UserAgent | js}}", &e).expect("renders"),
        want
    );
    assert_eq!(
        render("{{js (.Request.UserAgent)}}", &e).expect("renders"),
        want
    );
    // Non-strings go through fmt.Sprint first.
    assert_eq!(render("{{js .Response.Code}}", &e).expect("renders"), "200");
    assert_eq!(
        render("{{js .Request.URL}}", &e).expect("renders"),
        r"/testpage?a\u003D1"
    );
}

#[test]
fn other_escapers() {
    assert_eq!(
        render_default(r#"{{html "<a href='x'>\"&\"</a>"}}"#),
        "&lt;a href=&#39;x&#39;&gt;&#34;&amp;&#34;&lt;/a&gt;"
    );
    assert_eq!(
        render_default(r#"{{urlquery "a b&c=d/é~"}}"#),
        "a+b%26c%3Dd%2F%C3%A9~"
    );
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(
        render_default("a  \n {{- .Request.Method -}} \n\t b"),
        "aPOSTb"
    );
    assert_eq!(render_default("a {{.Request.Method -}}  b"), "a POSTb");
    assert_eq!(render_default("a {{- .Request.Method}} b"), "aPOST b");
    assert_eq!(render_default("a {{/* note */}} b"), "a  b");
    assert_eq!(render_default("a {{- /* note */ -}} b"), "ab");
    // `{{-3}}` is a number, not a trim marker.
    assert_eq!(render_default("x {{-3}}"), "x -3");
    // Newlines inside actions are allowed.
    assert_eq!(render_default("{{\n.Request.Method\n}}"), "POST");
}

#[test]
fn literals_and_print_functions() {
    assert_eq!(render_default(r#"{{"q\"\n\u00e9"}}"#), "q\"\né");
    assert_eq!(render_default("{{`raw\\n`}}"), "raw\\n");
    assert_eq!(
        render_default("{{1.0}} {{1e3}} {{0x1F}} {{true}}"),
        "1 1000 31 true"
    );
    assert_eq!(render_default(r#"{{print "a" 1 2 "b" true}}"#), "a1 2btrue");
    assert_eq!(render_default(r#"{{println "a" 1}}"#), "a 1\n");
    assert_eq!(
        render_default("{{print .Response.Latency .Response.Code}}"),
        "0.5 200"
    );
}

#[test]
fn response_and_revision_print_as_go_structs() {
    assert_eq!(render_default("{{.Response}}"), "&{200 12 0.5}");
    assert_eq!(render_default("{{.Revision}}"), "&{rev ns svc cfg pn ip}");
    let headers = HeaderMap::new();
    let rev = revision();
    assert!(render("{{.Request}}", &entry(&headers, &rev)).is_err());
}

#[test]
fn request_scalar_fields() {
    assert_eq!(
        render_default(
            "{{.Request.Method}} {{.Request.RequestURI}} {{.Request.Host}} {{.Request.Proto}} {{.Request.ProtoMajor}}.{{.Request.ProtoMinor}} {{.Request.ContentLength}} {{.Request.RemoteAddr}} [{{.Request.Referer}}] {{.TraceID}}|"
        ),
        "POST /testpage?a=1 example.com HTTP/1.1 1.1 4 10.1.2.3:5678 [] |"
    );
    let headers = HeaderMap::new();
    let rev = revision();
    let mut e = entry(&headers, &rev);
    e.request.content_length = -1;
    e.request.proto = "HTTP/2.0";
    assert_eq!(
        render("{{.Request.ContentLength}} {{.Request.ProtoMajor}}", &e).expect("renders"),
        "-1 2"
    );
}

#[test]
fn header_access() {
    let mut headers = HeaderMap::new();
    headers.insert("host", "example.com".parse().expect("valid"));
    headers.insert("user-agent", "curl".parse().expect("valid"));
    headers.append("x-multi", "a".parse().expect("valid"));
    headers.append("x-multi", "b".parse().expect("valid"));
    headers.insert("accept", "*/*".parse().expect("valid"));
    let rev = revision();
    let e = entry(&headers, &rev);
    let r = |src: &str| render(src, &e).expect("renders");
    assert_eq!(
        r("{{.Request.Header}}"),
        "map[Accept:[*/*] User-Agent:[curl] X-Multi:[a b]]"
    );
    assert_eq!(r(r#"{{.Request.Header.Get "x-multi"}}"#), "a");
    assert_eq!(r(r#"{{.Request.Header.Get "X-Nope"}}|"#), "|");
    assert_eq!(r(r#"{{.Request.Header.Values "X-Multi"}}"#), "[a b]");
    assert_eq!(r(r#"{{"accept" | .Request.Header.Get}}"#), "*/*");
    assert_eq!(r(r#"{{index .Request.Header "X-Multi"}}"#), "[a b]");
    assert_eq!(r(r#"{{index .Request.Header "X-Multi" 1}}"#), "b");
    // Go's map keys are canonical and `Host` is not in the map.
    assert_eq!(r(r#"{{index .Request.Header "x-multi"}}"#), "[]");
    assert_eq!(r(r#"{{index .Request.Header "Host"}}"#), "[]");
    assert_eq!(r("{{.Request.Header.Accept}}"), "[*/*]");
    assert_eq!(r("{{.Request.Header.Missing}}"), "<no value>");
    assert_eq!(r("{{js .Request.Header.Missing}}"), r"\u003Cnil\u003E");
    assert_eq!(r("{{len .Request.Header}}"), "3");
    assert!(render(r#"{{index .Request.Header "X-Multi" 5}}"#, &e).is_err());
}

#[test]
fn conditionals() {
    let mut headers = HeaderMap::new();
    headers.insert("x-b3-traceid", "t".parse().expect("valid"));
    let rev = revision();
    let mut e = entry(&headers, &rev);
    let src =
        r#"{{if .TraceID}}T={{.TraceID}}{{else if eq .Response.Code 200}}ok{{else}}no{{end}}"#;
    assert_eq!(render(src, &e).expect("renders"), "ok");
    e.trace_id = "abc";
    assert_eq!(render(src, &e).expect("renders"), "T=abc");
    e.trace_id = "";
    e.response.code = 503;
    assert_eq!(render(src, &e).expect("renders"), "no");
    assert_eq!(
        render("{{with .Revision}}{{.Name}}/{{$.Response.Code}}{{end}}", &e).expect("renders"),
        "rev/503"
    );
    assert_eq!(
        render(
            r#"{{with .Request.Header.Get "nope"}}x{{else}}none{{end}}"#,
            &e
        )
        .expect("renders"),
        "none"
    );
    assert_eq!(
        render(
            "{{if and (ge .Response.Code 500) (not .TraceID)}}5xx{{end}}",
            &e
        )
        .expect("renders"),
        "5xx"
    );
    assert_eq!(
        render(
            "{{if or 0 .Request.Method}}{{or 0 .Request.Method}}{{end}}",
            &e
        )
        .expect("renders"),
        "POST"
    );
    assert!(render("{{if eq .Response.Code 1.5}}{{end}}", &e).is_err());
}

#[test]
fn parse_errors() {
    for src in [
        "{{}}",
        "{{.Request.Method",
        "{{nope .X}}",
        "{{printf \"%s\" .X}}",
        "{{end}}",
        "{{if .X}}unterminated",
        "{{else}}",
        "{{range .X}}{{end}}",
        "{{$x := 1}}",
        "{{.X | \"lit\"}}",
        "{{.X |}}",
        "{{nil}}",
        "{{(.X}}",
        "{{\"unterminated}}",
        "{{/* unclosed }}",
        "{{/* a */ .X}}",
        "{{1x}}",
    ] {
        assert!(Template::parse(src).is_err(), "{src:?} must not parse");
    }
    let err = Template::parse("line1\nline2 {{.X").expect_err("unclosed");
    assert_eq!(err.line(), 2);
    let err = Template::parse("a\n\n{{end}}").expect_err("stray end");
    assert_eq!(err.line(), 3);
}

#[test]
fn non_functions_reject_arguments() {
    let headers = HeaderMap::new();
    let rev = revision();
    let e = entry(&headers, &rev);
    assert!(render(r#"{{"a" "b"}}"#, &e).is_err());
    assert!(render(r#"{{.Request.Header.Get}}"#, &e).is_err());
    assert!(render(r#"{{.Request.Header.Accept "x"}}"#, &e).is_err());
}
