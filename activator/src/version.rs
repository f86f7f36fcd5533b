//! The Kubernetes version gate at startup (`activator.md` §1.4 step 4).
//!
//! Before anything else talks to the API server, `main` asks `GET /version`
//! every second for up to a minute until it answers with a version at least
//! `KUBERNETES_MIN_VERSION` (default `v1.34.0`); pre-releases of the minimum
//! itself pass, as in Knative. Otherwise the activator stops. Versions
//! compare as semantic versions, so `v1.34.2-gke.1000` and `v1.35.0+k3s1`
//! are newer than `v1.34.0`.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use kdp_k8s::kube::Client;

/// `KUBERNETES_MIN_VERSION`'s default (Knative's `DefaultKubernetesMinVersion`).
pub const DEFAULT_MIN_VERSION: &str = "v1.34.0";
/// How long the API server may take to answer with a good version.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between attempts.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A semantic version as Kubernetes reports it (`v1.34.2-gke.1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    /// Dot-separated pre-release identifiers; empty for a release.
    pre: Vec<String>,
}

/// Why the version gate refused to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// The server's version is older than the minimum.
    #[error(
        "kubernetes version \"{server}\" is not compatible, need at least \"{minimum}\" \
         (this can be overridden with the env var \"KUBERNETES_MIN_VERSION\")"
    )]
    TooOld {
        /// The server's version.
        server: Version,
        /// The minimum.
        minimum: Version,
    },
    /// The server's `gitVersion` is not a semantic version.
    #[error("cannot parse the server's version {0:?}")]
    Unparsable(String),
    /// `GET /version` failed.
    #[error("cannot get the server version")]
    Request(#[source] kdp_k8s::kube::Error),
}

// === impl Version ===

impl Version {
    /// Parses `[v]MAJOR.MINOR.PATCH[-PRE][+BUILD]`.
    ///
    /// # Errors
    /// Anything else, with a reason.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let s = s.split_once('+').map_or(s, |(v, _build)| v);
        let (core, pre) = match s.split_once('-') {
            Some((core, pre)) => (core, pre.split('.').map(str::to_owned).collect()),
            None => (s, Vec::new()),
        };
        let nums: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = nums.as_slice() else {
            return Err("expected MAJOR.MINOR.PATCH, e.g. v1.34.0".to_owned());
        };
        let num = |p: &str| {
            p.parse::<u64>()
                .map_err(|_| format!("{p:?} is not a version number"))
        };
        let pre: Vec<String> = pre;
        if pre.iter().any(String::is_empty) {
            return Err("empty pre-release identifier".to_owned());
        }
        Ok(Self {
            major: num(major)?,
            minor: num(minor)?,
            patch: num(patch)?,
            pre,
        })
    }

    /// The lowest version at or above `self` with the same numbers: the
    /// minimum a release minimum admits (Knative appends `-0`).
    fn admitting_prereleases(&self) -> Self {
        let mut v = self.clone();
        if v.pre.is_empty() {
            v.pre.push("0".to_owned());
        }
        v
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A release is newer than its pre-releases.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => cmp_pre(&self.pre, &other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre.join("."))?;
        }
        Ok(())
    }
}

/// Semver pre-release precedence: numeric identifiers below alphanumeric
/// ones, numbers by value, longer lists above their prefixes.
fn cmp_pre(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// Whether the server version `git_version` satisfies `minimum`.
///
/// # Errors
/// [`VersionError::TooOld`] or [`VersionError::Unparsable`].
pub fn check(git_version: &str, minimum: &Version) -> Result<(), VersionError> {
    let server = Version::parse(git_version)
        .map_err(|_| VersionError::Unparsable(git_version.to_owned()))?;
    let floor = minimum.admitting_prereleases();
    if server < floor {
        return Err(VersionError::TooOld {
            server,
            minimum: floor,
        });
    }
    Ok(())
}

/// Asks the API server for its version every [`CHECK_INTERVAL`] until it is
/// at least `minimum`, for at most `timeout`.
///
/// # Errors
/// The last failure once `timeout` has passed.
pub async fn wait_for_minimum(
    client: &Client,
    minimum: &Version,
    timeout: Duration,
) -> Result<(), VersionError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let result = match client.apiserver_version().await {
            Ok(info) => check(&info.git_version, minimum),
            Err(err) => Err(VersionError::Request(err)),
        };
        let err = match result {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        tracing::warn!(error = %kdp_core::ErrorChain(&err), "Failed to get k8s version");
        if tokio::time::Instant::now() + CHECK_INTERVAL > deadline {
            return Err(err);
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_kubernetes_versions() {
        assert_eq!(v("v1.34.0").to_string(), "1.34.0");
        assert_eq!(v("1.34.2-gke.1000+abc").to_string(), "1.34.2-gke.1000");
        for bad in ["v1.34", "1.x.0", "", "v1.34.0-", "v1.34.0-a..b"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn minimum_admits_newer_and_its_own_prereleases() {
        let min = v(DEFAULT_MIN_VERSION);
        for ok in [
            "v1.34.0",
            "v1.34.0-rc.1",
            "v1.34.0-alpha.0",
            "v1.34.2-gke.1000",
            "v1.35.0+k3s1",
            "v2.0.0",
        ] {
            check(ok, &min).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = check("v1.33.5", &min).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kubernetes version \"1.33.5\" is not compatible, need at least \"1.34.0-0\" \
             (this can be overridden with the env var \"KUBERNETES_MIN_VERSION\")"
        );
        assert!(matches!(
            check("not-a-version", &min),
            Err(VersionError::Unparsable(_))
        ));
        // An explicit pre-release minimum is taken as is.
        assert!(check("v1.34.0-alpha.1", &v("v1.34.0-beta.0")).is_err());
    }

    #[test]
    fn semver_precedence() {
        let ordered = [
            "1.0.0-0",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }
}
