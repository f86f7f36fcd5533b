//! Watching the manifests: reload on change, keep the last good model on error.
//!
//! Sits in front of [`crate::model`]: [`Loader`] reads the paths given to `kdp run` and builds
//! a [`Model`] on top of the revision history it keeps, so a reload behaves like `kubectl
//! apply`. [`Watcher`] polls the files every [`DEFAULT_INTERVAL`] (content hashes, not mtimes:
//! two quick saves within one mtime tick are still seen, and a `touch` alone reloads nothing)
//! and yields a [`Reload`]: a new model with its [`Change`]s, or the [`LoadError`] that kept
//! the old one in place. Polling is simpler than inotify and plenty for files people edit.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::manifest::{load_paths, manifest_files};
use crate::model::{Change, LoadError, Model, Options};
use crate::revision::RevisionHistory;

/// How often [`Watcher`] looks at the files.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

/// Loads the manifests into models, keeping revision history across loads.
#[derive(Debug)]
pub struct Loader {
    paths: Vec<PathBuf>,
    options: Options,
    history: RevisionHistory,
    current: Option<Arc<Model>>,
}

/// The outcome of one (re)load.
#[derive(Debug)]
pub enum Reload {
    /// The files were valid: the new model and how it differs from the previous one.
    Applied {
        /// The new model.
        model: Arc<Model>,
        /// What changed (lifecycle lines); empty when the edit changed nothing that matters.
        changes: Vec<Change>,
    },
    /// The files were refused; the previous model (if any) stays in force.
    Rejected(LoadError),
}

/// Polls the manifests and reloads them when their content changes.
#[derive(Debug)]
pub struct Watcher {
    loader: Loader,
    interval: Duration,
    fingerprint: u64,
}

// === impl Loader ===

impl Loader {
    /// A loader for `paths` (files or folders).
    #[must_use]
    pub fn new(paths: Vec<PathBuf>, options: Options) -> Self {
        Self {
            paths,
            options,
            history: RevisionHistory::default(),
            current: None,
        }
    }

    /// Reads and applies the files now.
    pub fn load(&mut self) -> Reload {
        let built = load_paths(&self.paths)
            .map_err(LoadError::from)
            .and_then(|docs| Model::build(&docs, &mut self.history, &self.options));
        match built {
            Ok(model) => {
                let changes = model.changes(self.current.as_deref());
                let model = Arc::new(model);
                self.current = Some(Arc::clone(&model));
                Reload::Applied { model, changes }
            }
            Err(err) => Reload::Rejected(err),
        }
    }

    /// The model in force: the last one that loaded.
    #[must_use]
    pub fn current(&self) -> Option<&Arc<Model>> {
        self.current.as_ref()
    }

    /// The paths being loaded.
    #[must_use]
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// A hash of the manifest files' names and contents (and of read errors, so a file that
    /// appears or disappears counts as a change).
    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        match manifest_files(&self.paths) {
            Ok(files) => {
                for file in files {
                    file.hash(&mut h);
                    match std::fs::read(&file) {
                        Ok(bytes) => bytes.hash(&mut h),
                        Err(err) => err.kind().hash(&mut h),
                    }
                }
            }
            Err(err) => err.to_string().hash(&mut h),
        }
        h.finish()
    }
}

// === impl Watcher ===

impl Watcher {
    /// A watcher polling every `interval`; call [`Watcher::load_now`] for the first model.
    #[must_use]
    pub fn new(loader: Loader, interval: Duration) -> Self {
        Self {
            loader,
            interval,
            fingerprint: 0,
        }
    }

    /// Loads the files now, whatever their state.
    pub fn load_now(&mut self) -> Reload {
        // Fingerprint first: an edit racing the load is then seen by the next poll.
        self.fingerprint = self.loader.fingerprint();
        self.loader.load()
    }

    /// Waits until the files change, then reloads them.
    pub async fn next(&mut self) -> Reload {
        loop {
            tokio::time::sleep(self.interval).await;
            let fingerprint = self.loader.fingerprint();
            if fingerprint != self.fingerprint {
                self.fingerprint = fingerprint;
                return self.loader.load();
            }
        }
    }

    /// The loader (and through it the model in force).
    #[must_use]
    pub fn loader(&self) -> &Loader {
        &self.loader
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SVC: &str = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  template:\n    spec:\n      containers:\n        - command: [kdp, hello]\n          env: [{name: TARGET, value: T1}]\n";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kdp-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn options() -> Options {
        Options {
            domain: None,
            self_exe: Path::new("/bin/kdp").into(),
        }
    }

    fn applied(r: Reload) -> (Arc<Model>, Vec<String>) {
        match r {
            Reload::Applied { model, changes } => {
                (model, changes.iter().map(ToString::to_string).collect())
            }
            Reload::Rejected(err) => panic!("rejected: {err}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reloads_on_edit_and_keeps_model_on_error() {
        let dir = temp_dir("edit");
        let file = dir.join("hello.yaml");
        std::fs::write(&file, SVC).unwrap();
        let mut w = Watcher::new(Loader::new(vec![dir.clone()], options()), DEFAULT_INTERVAL);
        let (m1, _) = applied(w.load_now());
        assert_eq!(m1.services[0].latest_created.name, "hello-00001");

        std::fs::write(&file, SVC.replace("T1", "T2")).unwrap();
        let (m2, changes) = applied(w.next().await);
        assert_eq!(m2.services[0].latest_created.name, "hello-00002");
        assert!(
            changes.contains(&"revision default/hello-00002 created".to_owned()),
            "{changes:?}"
        );

        std::fs::write(&file, "apiVersion: [").unwrap();
        let Reload::Rejected(err) = w.next().await else {
            panic!("expected a rejection")
        };
        assert!(
            err.to_string().contains("hello.yaml: invalid YAML"),
            "{err}"
        );
        assert_eq!(
            w.loader().current().unwrap().services[0]
                .latest_created
                .name,
            "hello-00002"
        );

        // Restoring the good content applies with no new revision.
        std::fs::write(&file, SVC.replace("T1", "T2")).unwrap();
        let (m3, changes) = applied(w.next().await);
        assert_eq!(m3.revisions.len(), 2);
        assert_eq!(changes, Vec::<String>::new());

        // A new file in the folder is picked up.
        std::fs::write(
            dir.join("other.yaml"),
            SVC.replace("name: hello", "name: other"),
        )
        .unwrap();
        let (m4, _) = applied(w.next().await);
        assert_eq!(m4.services.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_path_is_rejected() {
        let mut loader = Loader::new(vec!["/nonexistent/kdp.yaml".into()], options());
        let Reload::Rejected(err) = loader.load() else {
            panic!("expected a rejection")
        };
        assert_eq!(err.to_string(), "/nonexistent/kdp.yaml: cannot read");
        assert!(loader.current().is_none());
    }
}
