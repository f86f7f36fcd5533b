//! Resource types the fake API server knows: the kind ↔ plural table kube-rs
//! needs to build URLs, and whether objects of a type live in a namespace.

/// `(apiVersion, kind, plural, namespaced)` for every type the activator and
/// its tests touch (activator spec §1.4), plus a few neighbours.
const KNOWN: &[(&str, &str, &str, bool)] = &[
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Endpoints", "endpoints", true),
    ("v1", "Namespace", "namespaces", false),
    ("v1", "Node", "nodes", false),
    ("v1", "Pod", "pods", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "Service", "services", true),
    ("coordination.k8s.io/v1", "Lease", "leases", true),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    (
        "autoscaling.internal.knative.dev/v1alpha1",
        "PodAutoscaler",
        "podautoscalers",
        true,
    ),
    (
        "networking.internal.knative.dev/v1alpha1",
        "ServerlessService",
        "serverlessservices",
        true,
    ),
    (
        "serving.knative.dev/v1",
        "Configuration",
        "configurations",
        true,
    ),
    ("serving.knative.dev/v1", "Revision", "revisions", true),
    ("serving.knative.dev/v1", "Route", "routes", true),
    ("serving.knative.dev/v1", "Service", "services", true),
];

/// One served resource type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub(crate) api_version: String,
    /// `Endpoints`, `Revision`, ...
    pub(crate) kind: String,
    /// The URL segment: `endpoints`, `revisions`, ...
    pub(crate) plural: String,
    /// Whether objects carry `metadata.namespace`.
    pub(crate) namespaced: bool,
}

// === impl ResourceType ===

impl ResourceType {
    /// Every built-in type.
    pub(crate) fn known() -> impl Iterator<Item = Self> {
        KNOWN
            .iter()
            .map(|&(api_version, kind, plural, namespaced)| Self {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                plural: plural.to_owned(),
                namespaced,
            })
    }

    /// A guess for a type missing from the table, the way `kubectl` guesses:
    /// lower-case the kind and pluralise it with English rules.
    pub(crate) fn guess(api_version: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            plural: pluralize(&kind.to_ascii_lowercase()),
            namespaced,
        }
    }

    /// Whether `name` is this type's kind (exact) or plural (any case).
    pub(crate) fn is_named(&self, name: &str) -> bool {
        self.kind == name || self.plural.eq_ignore_ascii_case(name)
    }
}

fn pluralize(singular: &str) -> String {
    if singular.ends_with("points") {
        singular.to_owned()
    } else if singular.ends_with('s')
        || singular.ends_with('x')
        || singular.ends_with("ch")
        || singular.ends_with("sh")
    {
        format!("{singular}es")
    } else if let Some(stem) = singular.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else {
        format!("{singular}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_english_plurals() {
        let plural = |kind| ResourceType::guess("x/v1", kind, true).plural;
        assert_eq!(plural("Widget"), "widgets");
        assert_eq!(plural("Ingress"), "ingresses");
        assert_eq!(plural("Policy"), "policies");
        assert_eq!(plural("Gateway"), "gateways");
        assert_eq!(plural("Endpoints"), "endpoints");
    }

    #[test]
    fn known_table_matches_guesses_or_says_otherwise() {
        for ty in ResourceType::known() {
            assert!(ty.is_named(&ty.kind));
            assert!(ty.is_named(&ty.plural.to_ascii_uppercase()));
            assert_eq!(
                ResourceType::guess(&ty.api_version, &ty.kind, ty.namespaced),
                ty
            );
        }
    }
}
