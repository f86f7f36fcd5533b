//! `config-network`: the three keys the activator reads, fixed at startup.
//!
//! Beside the request path. `main` reads the ConfigMap once, before the
//! caches start (`activator.md` §1.4 step 7), and the values hold for the
//! life of the process, as in Knative:
//!
//! * `system-internal-tls` (`Enabled`/`Disabled`, any case; the deprecated
//!   `internal-encryption: "true"` also enables it): serve TLS on 8112 and
//!   talk TLS to pods;
//! * `enable-mesh-pod-addressability`: upstream requests and probes carry
//!   `Host: <rev>-private.<ns>` and `K-Passthrough-Lb: true`, and a revision
//!   never falls back to its ClusterIP;
//! * `mesh-compatibility-mode` (`auto`, `enabled`, `disabled`, any case; an
//!   unknown value is ignored): whether pods are probed directly, the
//!   private Service's ClusterIP is used, or Knative guesses (§4.4).
//!
//! A value the activator cannot interpret is a [`NetworkConfigError`]; the
//! binary then stops, as Knative's does.

use std::collections::BTreeMap;

/// `system-internal-tls`.
pub const KEY_SYSTEM_INTERNAL_TLS: &str = "system-internal-tls";
/// Deprecated alias of `system-internal-tls` (a boolean).
pub const KEY_INTERNAL_ENCRYPTION: &str = "internal-encryption";
/// `enable-mesh-pod-addressability`.
pub const KEY_MESH_POD_ADDRESSABILITY: &str = "enable-mesh-pod-addressability";
/// `mesh-compatibility-mode`.
pub const KEY_MESH_COMPATIBILITY_MODE: &str = "mesh-compatibility-mode";
/// The ConfigMap's name.
pub const CONFIG_NETWORK: &str = "config-network";

/// What the activator takes from `config-network`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Serve 8112 and send TLS upstream.
    pub system_internal_tls: bool,
    /// Address pods through the mesh (`K-Passthrough-Lb`).
    pub mesh_pod_addressability: bool,
    /// How pods versus the ClusterIP are chosen.
    pub mesh_compatibility_mode: MeshCompatibilityMode,
}

/// `mesh-compatibility-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MeshCompatibilityMode {
    /// Probe pods; fall back to the ClusterIP when every pod looks meshed.
    #[default]
    Auto,
    /// Always the private Service's ClusterIP.
    Enabled,
    /// Always pods; Kubernetes-ready pods are trusted without probing.
    Disabled,
}

/// A `config-network` value the activator cannot interpret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config-network key {key:?} has unsupported value {value:?}")]
pub struct NetworkConfigError {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
}

// === impl NetworkConfig ===

impl NetworkConfig {
    /// Interprets the ConfigMap's `data`.
    ///
    /// # Errors
    /// A boolean key that is not a Go boolean, or a `system-internal-tls`
    /// that is neither `Enabled` nor `Disabled` (Knative refuses both).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, NetworkConfigError> {
        let boolean = |key: &str| -> Result<bool, NetworkConfigError> {
            data.get(key).map_or(Ok(false), |v| {
                kdp_core::env::parse_go_bool(v).map_err(|_| NetworkConfigError {
                    key: key.to_owned(),
                    value: v.clone(),
                })
            })
        };
        let internal_encryption = boolean(KEY_INTERNAL_ENCRYPTION)?;
        let raw_tls = data.get(KEY_SYSTEM_INTERNAL_TLS).map_or("", String::as_str);
        let system_internal_tls = match raw_tls.to_ascii_lowercase().as_str() {
            "" | "disabled" => internal_encryption,
            "enabled" => true,
            _ => {
                return Err(NetworkConfigError {
                    key: KEY_SYSTEM_INTERNAL_TLS.to_owned(),
                    value: raw_tls.to_owned(),
                });
            }
        };
        Ok(Self {
            system_internal_tls,
            mesh_pod_addressability: boolean(KEY_MESH_POD_ADDRESSABILITY)?,
            mesh_compatibility_mode: data
                .get(KEY_MESH_COMPATIBILITY_MODE)
                .and_then(|v| MeshCompatibilityMode::parse(v))
                .unwrap_or_default(),
        })
    }
}

// === impl MeshCompatibilityMode ===

impl MeshCompatibilityMode {
    /// `auto`, `enabled` or `disabled`, any case; `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        [
            ("auto", Self::Auto),
            ("enabled", Self::Enabled),
            ("disabled", Self::Disabled),
        ]
        .into_iter()
        .find_map(|(name, mode)| value.eq_ignore_ascii_case(name).then_some(mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<NetworkConfig, NetworkConfigError> {
        let data = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        NetworkConfig::from_data(&data)
    }

    #[test]
    fn empty_map_is_knatives_default() {
        assert_eq!(parse(&[]).unwrap(), NetworkConfig::default());
        assert_eq!(
            NetworkConfig::default().mesh_compatibility_mode,
            MeshCompatibilityMode::Auto
        );
    }

    #[test]
    fn system_internal_tls_any_case_and_the_deprecated_key() {
        for v in ["Enabled", "enabled", "ENABLED"] {
            assert!(
                parse(&[(KEY_SYSTEM_INTERNAL_TLS, v)])
                    .unwrap()
                    .system_internal_tls
            );
        }
        assert!(
            !parse(&[(KEY_SYSTEM_INTERNAL_TLS, "Disabled")])
                .unwrap()
                .system_internal_tls
        );
        assert!(
            parse(&[(KEY_INTERNAL_ENCRYPTION, "true")])
                .unwrap()
                .system_internal_tls
        );
        // The new key wins when it enables; "disabled" leaves the old one in charge.
        assert!(
            parse(&[
                (KEY_INTERNAL_ENCRYPTION, "true"),
                (KEY_SYSTEM_INTERNAL_TLS, "disabled")
            ])
            .unwrap()
            .system_internal_tls
        );
        let err = parse(&[(KEY_SYSTEM_INTERNAL_TLS, "on")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config-network key \"system-internal-tls\" has unsupported value \"on\""
        );
        assert!(parse(&[(KEY_INTERNAL_ENCRYPTION, "yes")]).is_err());
    }

    #[test]
    fn mesh_keys() {
        let c = parse(&[
            (KEY_MESH_POD_ADDRESSABILITY, "true"),
            (KEY_MESH_COMPATIBILITY_MODE, "Enabled"),
        ])
        .unwrap();
        assert!(c.mesh_pod_addressability);
        assert_eq!(c.mesh_compatibility_mode, MeshCompatibilityMode::Enabled);
        assert_eq!(
            parse(&[(KEY_MESH_COMPATIBILITY_MODE, "DISABLED")])
                .unwrap()
                .mesh_compatibility_mode,
            MeshCompatibilityMode::Disabled
        );
        // Unknown modes are ignored, as in Knative.
        assert_eq!(
            parse(&[(KEY_MESH_COMPATIBILITY_MODE, "sometimes")])
                .unwrap()
                .mesh_compatibility_mode,
            MeshCompatibilityMode::Auto
        );
        assert!(parse(&[(KEY_MESH_POD_ADDRESSABILITY, "maybe")]).is_err());
    }
}
