//! Executes a parsed template against a [`LogEntry`], with Go
//! `text/template` semantics: the data model mirrors Knative's
//! `RequestLogTemplateInput` (`*http.Request`, `*RequestLogResponse`,
//! `*RequestLogRevision`, `TraceID`), values print like Go's `fmt` `%v`,
//! and unknown fields are errors.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::go_fmt;
use super::parse::{Base, Command, Func, Node, Operand, Pipeline};
use super::{LogEntry, RenderError};

type Result<T, E = RenderError> = std::result::Result<T, E>;

/// A Go value as the template sees it.
#[derive(Clone, Debug)]
enum Value<'a> {
    /// Go's invalid `reflect.Value` (a missing map key): prints `<no value>`.
    Missing,
    /// A nil interface: prints `<nil>`.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// A `[]string`, such as one header's values.
    List(Vec<String>),
    Obj(Obj),
}

/// The structured values of the entry; their data is read from the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Obj {
    Root,
    Request,
    Url,
    Header,
    Response,
    Revision,
}

struct Exec<'e, 'a> {
    entry: &'e LogEntry<'a>,
}

/// Renders `nodes` for `entry`, appending to `out`.
pub(super) fn render(nodes: &[Node], entry: &LogEntry<'_>, out: &mut String) -> Result<()> {
    Exec { entry }.walk(nodes, &Value::Obj(Obj::Root), out)
}

fn err(message: impl Into<String>) -> RenderError {
    RenderError::new(message)
}

// === impl Obj ===

impl Obj {
    /// The Go type name, for error messages.
    fn type_name(self) -> &'static str {
        match self {
            Self::Root => "*http.RequestLogTemplateInput",
            Self::Request => "*http.Request",
            Self::Url => "*url.URL",
            Self::Header => "http.Header",
            Self::Response => "*http.RequestLogResponse",
            Self::Revision => "*http.RequestLogRevision",
        }
    }
}

// === impl Value ===

impl Value<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Missing => "<invalid>",
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "[]string",
            Value::Obj(obj) => obj.type_name(),
        }
    }
}

// === impl Exec ===

impl<'a> Exec<'_, 'a> {
    fn walk(&self, nodes: &[Node], dot: &Value<'a>, out: &mut String) -> Result<()> {
        for node in nodes {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Action(pipe) => {
                    let value = self.pipeline(pipe, dot)?;
                    self.print(&value, out)?;
                }
                Node::If(branch) => {
                    let value = self.pipeline(&branch.pipe, dot)?;
                    if self.truth(&value) {
                        self.walk(&branch.then, dot, out)?;
                    } else {
                        self.walk(&branch.otherwise, dot, out)?;
                    }
                }
                Node::With(branch) => {
                    let value = self.pipeline(&branch.pipe, dot)?;
                    if self.truth(&value) {
                        self.walk(&branch.then, &value, out)?;
                    } else {
                        self.walk(&branch.otherwise, dot, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn pipeline(&self, pipe: &Pipeline, dot: &Value<'a>) -> Result<Value<'a>> {
        let mut last = None;
        for cmd in &pipe.cmds {
            last = Some(self.command(cmd, dot, last)?);
        }
        Ok(last.unwrap_or(Value::Missing))
    }

    fn command(
        &self,
        cmd: &Command,
        dot: &Value<'a>,
        piped: Option<Value<'a>>,
    ) -> Result<Value<'a>> {
        let Some((first, rest)) = cmd.operands.split_first() else {
            return Err(err("missing value for command"));
        };
        let args = |this: &Self| -> Result<Vec<Value<'a>>> {
            let mut args = rest
                .iter()
                .map(|op| this.operand(op, dot))
                .collect::<Result<Vec<_>>>()?;
            args.extend(piped.clone());
            Ok(args)
        };
        match first {
            Operand::Func(func) => self.call(*func, args(self)?),
            Operand::Field { base, path } if !path.is_empty() => {
                let (last, init) = path.split_last().unwrap_or((&path[0], &[]));
                let mut recv = self.base(*base, dot);
                for name in init {
                    recv = self.field(&recv, name, None)?;
                }
                let has_args = !rest.is_empty() || piped.is_some();
                let args = if has_args { Some(args(self)?) } else { None };
                self.field(&recv, last, args)
            }
            other => {
                if !rest.is_empty() || piped.is_some() {
                    return Err(err("can't give argument to non-function"));
                }
                self.operand(other, dot)
            }
        }
    }

    fn base(&self, base: Base, dot: &Value<'a>) -> Value<'a> {
        match base {
            Base::Dot => dot.clone(),
            Base::Root => Value::Obj(Obj::Root),
        }
    }

    fn operand(&self, op: &Operand, dot: &Value<'a>) -> Result<Value<'a>> {
        Ok(match op {
            Operand::Field { base, path } => {
                let mut value = self.base(*base, dot);
                for name in path {
                    value = self.field(&value, name, None)?;
                }
                value
            }
            Operand::Func(func) => self.call(*func, Vec::new())?,
            Operand::Bool(b) => Value::Bool(*b),
            Operand::Int(n) => Value::Int(*n),
            Operand::Float(f) => Value::Float(*f),
            Operand::Str(s) => Value::Str(Cow::Owned(s.clone())),
            Operand::Nil => Value::Nil,
            Operand::Sub(pipe) => self.pipeline(pipe, dot)?,
        })
    }

    /// Evaluates `recv.name`; `args` is `Some` when the field is invoked
    /// with arguments (only methods accept them).
    fn field(
        &self,
        recv: &Value<'a>,
        name: &str,
        args: Option<Vec<Value<'a>>>,
    ) -> Result<Value<'a>> {
        let e = self.entry;
        let obj = match recv {
            // Go returns the invalid value again for a field of one.
            Value::Missing => return Ok(Value::Missing),
            Value::Obj(obj) => *obj,
            other => {
                return Err(err(format!(
                    "can't evaluate field {name} in type {}",
                    other.type_name()
                )));
            }
        };
        if obj == Obj::Header && matches!(name, "Get" | "Values") {
            let mut args = args.unwrap_or_default();
            let (Some(Value::Str(key)), true) = (args.pop(), args.is_empty()) else {
                return Err(err(format!("wrong arguments for {name}: want one string")));
            };
            let values = self.header_values(&key);
            return Ok(if name == "Get" {
                Value::Str(Cow::Owned(values.into_iter().next().unwrap_or_default()))
            } else {
                Value::List(values)
            });
        }
        let r = &e.request;
        let str = |s: &'a str| Value::Str(Cow::Borrowed(s));
        let value = match (obj, name) {
            (Obj::Root, "Request") => Value::Obj(Obj::Request),
            (Obj::Root, "Response") => Value::Obj(Obj::Response),
            (Obj::Root, "Revision") => Value::Obj(Obj::Revision),
            (Obj::Root, "TraceID") => str(e.trace_id),
            (Obj::Request, "Method") => str(r.method),
            (Obj::Request, "RequestURI") => str(r.request_uri),
            (Obj::Request, "URL") => Value::Obj(Obj::Url),
            (Obj::Request, "Host") => str(r.host),
            (Obj::Request, "Proto") => str(r.proto),
            (Obj::Request, "ProtoMajor") => Value::Int(proto_version(r.proto).0),
            (Obj::Request, "ProtoMinor") => Value::Int(proto_version(r.proto).1),
            (Obj::Request, "ContentLength") => Value::Int(r.content_length),
            (Obj::Request, "RemoteAddr") => str(r.remote_addr),
            (Obj::Request, "Header") => Value::Obj(Obj::Header),
            (Obj::Request, "UserAgent") => str(r.user_agent),
            (Obj::Request, "Referer") => str(r.referer),
            (Obj::Url, "String") => str(r.url),
            (Obj::Url, "Scheme") => str(url_parts(r.url).0),
            (Obj::Url, "Host") => str(url_parts(r.url).1),
            (Obj::Url, "Path") => {
                Value::Str(Cow::Owned(go_fmt::percent_decode(url_parts(r.url).2)))
            }
            (Obj::Url, "RawQuery") => str(url_parts(r.url).3),
            (Obj::Header, key) => {
                if args.is_some() {
                    return Err(err(format!("{name} is not a method but has arguments")));
                }
                return Ok(match self.header_map_get(key) {
                    Some(values) => Value::List(values),
                    None => Value::Missing,
                });
            }
            (Obj::Response, "Code") => Value::Int(i64::from(e.response.code)),
            (Obj::Response, "Size") => {
                Value::Int(i64::try_from(e.response.size).unwrap_or(i64::MAX))
            }
            (Obj::Response, "Latency") => Value::Float(e.response.latency),
            (Obj::Revision, "Name") => str(&e.revision.name),
            (Obj::Revision, "Namespace") => str(&e.revision.namespace),
            (Obj::Revision, "Service") => str(&e.revision.service),
            (Obj::Revision, "Configuration") => str(&e.revision.configuration),
            (Obj::Revision, "PodName") => str(&e.revision.pod_name),
            (Obj::Revision, "PodIP") => str(&e.revision.pod_ip),
            (obj, _) => {
                return Err(err(format!(
                    "can't evaluate field {name} in type {}",
                    obj.type_name()
                )));
            }
        };
        if args.is_some() {
            return Err(err(format!(
                "{name} has arguments but cannot be invoked as function"
            )));
        }
        Ok(value)
    }

    /// `Header.Get`/`Header.Values`: the key is canonicalised, so any case
    /// matches.
    fn header_values(&self, key: &str) -> Vec<String> {
        let Ok(name) = http::HeaderName::from_bytes(key.as_bytes()) else {
            return Vec::new();
        };
        self.entry
            .request
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// A plain map lookup on `http.Header`: Go's keys are canonical
    /// (`User-Agent`), so only the canonical spelling matches, and the
    /// server moves `Host` out of the map.
    fn header_map_get(&self, key: &str) -> Option<Vec<String>> {
        let name = http::HeaderName::from_bytes(key.as_bytes()).ok()?;
        if name == http::header::HOST || go_fmt::canonical_header_key(name.as_str()) != key {
            return None;
        }
        let values = self.header_values(key);
        (!values.is_empty()).then_some(values)
    }

    /// The header map as Go holds it: canonical keys, sorted, without `Host`.
    fn header_entries(&self) -> Vec<(String, Vec<String>)> {
        let headers = self.entry.request.headers;
        let mut entries: Vec<_> = headers
            .keys()
            .filter(|name| *name != http::header::HOST)
            .map(|name| {
                let values = headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                (go_fmt::canonical_header_key(name.as_str()), values)
            })
            .collect();
        entries.sort();
        entries
    }

    /// Go's `isTrue`: zero values are false, non-nil pointers true.
    fn truth(&self, value: &Value<'_>) -> bool {
        match value {
            Value::Missing | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Obj(Obj::Header) => !self.header_entries().is_empty(),
            Value::Obj(_) => true,
        }
    }

    /// Prints an action's value as Go's `printValue` does.
    fn print(&self, value: &Value<'_>, out: &mut String) -> Result<()> {
        match value {
            Value::Missing => out.push_str("<no value>"),
            other => self.fmt_value(other, out)?,
        }
        Ok(())
    }

    /// Go's `fmt` `%v`.
    fn fmt_value(&self, value: &Value<'_>, out: &mut String) -> Result<()> {
        let e = self.entry;
        match value {
            Value::Missing | Value::Nil => out.push_str("<nil>"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(n) => out.push_str(&n.to_string()),
            Value::Float(f) => go_fmt::push_float(out, *f),
            Value::Str(s) => out.push_str(s),
            Value::List(list) => push_list(out, list),
            Value::Obj(Obj::Url) => out.push_str(e.request.url),
            Value::Obj(Obj::Header) => {
                out.push_str("map[");
                for (i, (key, values)) in self.header_entries().iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(key);
                    out.push(':');
                    push_list(out, values);
                }
                out.push(']');
            }
            Value::Obj(Obj::Response) => {
                out.push_str("&{");
                out.push_str(&e.response.code.to_string());
                out.push(' ');
                out.push_str(&e.response.size.to_string());
                out.push(' ');
                go_fmt::push_float(out, e.response.latency);
                out.push('}');
            }
            Value::Obj(Obj::Revision) => {
                let r = e.revision;
                let fields = [
                    &r.name,
                    &r.namespace,
                    &r.service,
                    &r.configuration,
                    &r.pod_name,
                    &r.pod_ip,
                ];
                out.push_str("&{");
                out.push_str(&fields.map(String::as_str).join(" "));
                out.push('}');
            }
            // Go would dump the whole `http.Request` struct; kdp has no
            // faithful rendering of it, so refuse instead of inventing one.
            Value::Obj(obj @ (Obj::Root | Obj::Request)) => {
                return Err(err(format!(
                    "printing a {} is not supported",
                    obj.type_name()
                )));
            }
        }
        Ok(())
    }

    /// Go's `fmt.Sprint`: a space between operands when neither is a string.
    fn sprint(&self, args: &[Value<'_>], out: &mut String) -> Result<()> {
        for (i, arg) in args.iter().enumerate() {
            let is_str = matches!(arg, Value::Str(_));
            if i > 0 && !is_str && !matches!(args[i - 1], Value::Str(_)) {
                out.push(' ');
            }
            self.fmt_value(arg, out)?;
        }
        Ok(())
    }

    /// The text an escaper works on: a lone string as is, else `Sprint`.
    fn escaper_input<'v>(&self, args: &'v [Value<'_>]) -> Result<Cow<'v, str>> {
        if let [Value::Str(s)] = args {
            return Ok(Cow::Borrowed(s));
        }
        let mut s = String::new();
        self.sprint(args, &mut s)?;
        Ok(Cow::Owned(s))
    }

    fn call(&self, func: Func, args: Vec<Value<'a>>) -> Result<Value<'a>> {
        // Go passes an invalid value to an `any` parameter as nil.
        let args: Vec<Value<'a>> = args
            .into_iter()
            .map(|v| match v {
                Value::Missing => Value::Nil,
                v => v,
            })
            .collect();
        let name = func.name();
        let mut out = String::new();
        match func {
            Func::Js => go_fmt::push_js_escaped(&mut out, &self.escaper_input(&args)?),
            Func::Html => go_fmt::push_html_escaped(&mut out, &self.escaper_input(&args)?),
            Func::UrlQuery => go_fmt::push_query_escaped(&mut out, &self.escaper_input(&args)?),
            Func::Print => self.sprint(&args, &mut out)?,
            Func::Println => {
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    self.fmt_value(arg, &mut out)?;
                }
                out.push('\n');
            }
            Func::Index => return self.index(args),
            Func::Len => {
                let [arg] = args.as_slice() else {
                    return Err(arity(name, "1", args.len()));
                };
                let len = match arg {
                    Value::Str(s) => s.len(),
                    Value::List(l) => l.len(),
                    Value::Obj(Obj::Header) => self.header_entries().len(),
                    other => return Err(err(format!("len of type {}", other.type_name()))),
                };
                return Ok(Value::Int(i64::try_from(len).unwrap_or(i64::MAX)));
            }
            Func::Not => {
                let [arg] = args.as_slice() else {
                    return Err(arity(name, "1", args.len()));
                };
                return Ok(Value::Bool(!self.truth(arg)));
            }
            Func::And | Func::Or => {
                let want = func == Func::Or;
                let n = args.len();
                let pick = args
                    .into_iter()
                    .enumerate()
                    .find(|(i, v)| self.truth(v) == want || i + 1 == n);
                return pick
                    .map(|(_, v)| v)
                    .ok_or_else(|| arity(name, "at least 1", 0));
            }
            Func::Eq | Func::Ne => {
                let Some((first, rest)) = args.split_first() else {
                    return Err(arity(name, "at least 1", 0));
                };
                if rest.is_empty() {
                    return Err(err("missing argument for comparison"));
                }
                if func == Func::Ne && rest.len() > 1 {
                    return Err(arity(name, "2", args.len()));
                }
                let mut equal = false;
                for other in rest {
                    equal |= compare(first, other)? == Ordering::Equal;
                }
                return Ok(Value::Bool(if func == Func::Eq { equal } else { !equal }));
            }
            Func::Lt | Func::Le | Func::Gt | Func::Ge => {
                let [a, b] = args.as_slice() else {
                    return Err(arity(name, "2", args.len()));
                };
                if matches!((a, b), (Value::Bool(_), _) | (_, Value::Bool(_))) {
                    return Err(err("invalid type for comparison"));
                }
                let ord = compare(a, b)?;
                return Ok(Value::Bool(match func {
                    Func::Lt => ord == Ordering::Less,
                    Func::Le => ord != Ordering::Greater,
                    Func::Gt => ord == Ordering::Greater,
                    _ => ord != Ordering::Less,
                }));
            }
        }
        Ok(Value::Str(Cow::Owned(out)))
    }

    /// Go's `index`: map lookups on the header map, positions in a list.
    fn index(&self, args: Vec<Value<'a>>) -> Result<Value<'a>> {
        let mut args = args.into_iter();
        let Some(mut item) = args.next() else {
            return Err(arity("index", "at least 1", 0));
        };
        for idx in args {
            item = match (&item, idx) {
                // A missing map key yields the element's zero value, a nil
                // `[]string`.
                (Value::Obj(Obj::Header), Value::Str(key)) => {
                    Value::List(self.header_map_get(&key).unwrap_or_default())
                }
                (Value::List(list), Value::Int(i)) => {
                    let s = usize::try_from(i)
                        .ok()
                        .and_then(|i| list.get(i))
                        .ok_or_else(|| {
                            err(format!("error calling index: index out of range: {i}"))
                        })?;
                    Value::Str(Cow::Owned(s.clone()))
                }
                (item, idx) => {
                    return Err(err(format!(
                        "error calling index: cannot index {} with {}",
                        item.type_name(),
                        idx.type_name()
                    )));
                }
            };
        }
        Ok(item)
    }
}

fn arity(name: &str, want: &str, got: usize) -> RenderError {
    err(format!(
        "wrong number of args for {name}: want {want} got {got}"
    ))
}

/// Orders two basic values of the same kind, as Go's `eq`/`lt` do.
fn compare(a: &Value<'_>, b: &Value<'_>) -> Result<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => {
            x.partial_cmp(y).ok_or_else(|| err("incomparable values"))
        }
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        (
            Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Bool(_),
            Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Bool(_),
        ) => Err(err("incompatible types for comparison")),
        _ => Err(err("invalid type for comparison")),
    }
}

fn push_list(out: &mut String, list: &[String]) {
    out.push('[');
    out.push_str(&list.join(" "));
    out.push(']');
}

/// `HTTP/1.1` → (1, 1); anything unparsable → (0, 0).
fn proto_version(proto: &str) -> (i64, i64) {
    let version = proto.strip_prefix("HTTP/").unwrap_or("");
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    (major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
}

/// Splits a request URL (absolute or origin form) into scheme, host, path
/// and raw query.
fn url_parts(url: &str) -> (&str, &str, &str, &str) {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if !scheme.contains(['/', '?']) => (scheme, rest),
        _ => ("", url),
    };
    let (host, rest) = if scheme.is_empty() {
        ("", rest)
    } else {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        rest.split_at(end)
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    (scheme, host, path, query)
}
