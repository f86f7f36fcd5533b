//! `labelSelector` and `fieldSelector` query parameters, parsed as the API
//! server parses them (apimachinery `labels.Parse` and `fields.ParseSelector`),
//! for the subset of syntax clients send.
//!
//! Errors are human-readable strings; the handler turns them into a 400
//! `BadRequest` Status.

use serde_json::Value;

/// A conjunction of label requirements; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

/// One comma-separated term of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    /// `k=v` or `k==v`.
    Eq(String, String),
    /// `k!=v` (also true when `k` is absent).
    NotEq(String, String),
    /// `k in (a,b)`.
    In(String, Vec<String>),
    /// `k notin (a,b)` (also true when `k` is absent).
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    NotExists(String),
}

/// A conjunction of `metadata.name` / `metadata.namespace` (in)equalities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(Field, bool, String)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Parses `app=x,tier!=db,env in (a,b),canary,!legacy`.
    pub(crate) fn parse(selector: &str) -> Result<Self, String> {
        split_top_level(selector)
            .into_iter()
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(Requirement::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether an object with these `metadata.labels` is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
        };
        self.0.iter().all(|req| match req {
            Requirement::Eq(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0_u32;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

// === impl Requirement ===

impl Requirement {
    fn parse(term: &str) -> Result<Self, String> {
        let req = if let Some(key) = term.strip_prefix('!') {
            Self::NotExists(key.trim().to_owned())
        } else if let Some((key, values)) = term.split_once(" notin ") {
            Self::NotIn(key.trim().to_owned(), parse_set(values)?)
        } else if let Some((key, values)) = term.split_once(" in ") {
            Self::In(key.trim().to_owned(), parse_set(values)?)
        } else if let Some((key, value)) = term.split_once("!=") {
            Self::NotEq(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            Self::Eq(key.trim().to_owned(), value.trim().to_owned())
        } else {
            Self::Exists(term.trim().to_owned())
        };
        let key = match &req {
            Self::Eq(k, _)
            | Self::NotEq(k, _)
            | Self::In(k, _)
            | Self::NotIn(k, _)
            | Self::Exists(k)
            | Self::NotExists(k) => k,
        };
        if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['(', ')', '=']) {
            return Err(format!("unable to parse requirement: {term:?}"));
        }
        Ok(req)
    }
}

fn parse_set(values: &str) -> Result<Vec<String>, String> {
    values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_owned()).collect())
        .ok_or_else(|| format!("expected a parenthesised set of values, got {values:?}"))
}

// === impl FieldSelector ===

impl FieldSelector {
    /// Parses `metadata.name=x,metadata.namespace!=y`.
    pub(crate) fn parse(selector: &str) -> Result<Self, String> {
        selector
            .split(',')
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(|term| {
                let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                    (f, false, v)
                } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    (f, true, v)
                } else {
                    return Err(format!("invalid field selector term: {term:?}"));
                };
                let field = match field.trim() {
                    "metadata.name" => Field::Name,
                    "metadata.namespace" => Field::Namespace,
                    other => return Err(format!("field label not supported: {other}")),
                };
                Ok((field, equal, value.trim().to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether the object is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let pointer = match field {
                Field::Name => "/metadata/name",
                Field::Namespace => "/metadata/namespace",
            };
            let actual = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labelled(labels: Value) -> Value {
        json!({ "metadata": { "name": "a", "namespace": "ns", "labels": labels } })
    }

    fn selects(selector: &str, labels: Value) -> bool {
        LabelSelector::parse(selector)
            .unwrap()
            .matches(&labelled(labels))
    }

    #[test]
    fn equality_and_inequality() {
        assert!(selects("app=x", json!({"app": "x"})));
        assert!(selects("app==x", json!({"app": "x"})));
        assert!(!selects("app=x", json!({"app": "y"})));
        assert!(!selects("app=x", json!({})));
        assert!(selects("app!=x", json!({"app": "y"})));
        assert!(selects("app!=x", json!({})), "absent label is not equal");
        assert!(!selects("app!=x", json!({"app": "x"})));
    }

    #[test]
    fn existence() {
        assert!(selects(
            "serving.knative.dev/revisionUID",
            json!({"serving.knative.dev/revisionUID": "u"})
        ));
        assert!(!selects("serving.knative.dev/revisionUID", json!({})));
        assert!(selects("!legacy", json!({})));
        assert!(!selects("!legacy", json!({"legacy": ""})));
    }

    #[test]
    fn sets_and_conjunctions() {
        assert!(selects(
            "env in (a, b),tier",
            json!({"env": "b", "tier": "t"})
        ));
        assert!(!selects("env in (a,b),tier", json!({"env": "b"})));
        assert!(selects("env notin (a,b)", json!({})));
        assert!(!selects("env notin (a,b)", json!({"env": "a"})));
        assert!(selects(
            "serving.knative.dev/revisionUID,networking.internal.knative.dev/serviceType=Private",
            json!({"serving.knative.dev/revisionUID": "u", "networking.internal.knative.dev/serviceType": "Private"})
        ));
    }

    #[test]
    fn empty_selects_everything() {
        assert!(selects("", json!({})));
        assert!(selects(" , ", json!({})));
    }

    #[test]
    fn rejects_garbage() {
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("env in a,b").is_err());
    }

    #[test]
    fn field_selector_on_name_and_namespace() {
        let obj = labelled(json!({}));
        let sel = |s| FieldSelector::parse(s).unwrap().matches(&obj);
        assert!(sel("metadata.name=a"));
        assert!(!sel("metadata.name=b"));
        assert!(sel("metadata.name!=b,metadata.namespace==ns"));
        assert!(FieldSelector::parse("spec.nodeName=n").is_err());
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
