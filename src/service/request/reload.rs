//! The decisions of a reload that need no model: which model directories to load again, which
//! served models to keep as they are, which to stop serving, and what a client is told about a
//! failure.
//!
//! A served model keeps its old version whatever goes wrong with its directory: a directory
//! that is still there but has no `card.json` is a copy in progress (or a broken one), not a
//! removal, and a card, hash or TorchScript file that fails to load fails that load only. Only a
//! directory gone from the repository stops a model being served, and never the default's: the
//! default is configuration (`model`), and requests naming no model must never silently go to
//! another one, so a default whose directory is gone keeps its old version (reported as a
//! failure) until the directory is back or the server restarts with another `model`.
//!
//! What a client reads names no path: the host's directory layout is none of its business, and
//! the full error goes to the server's log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::model::ModelError;
use crate::service::error::ServiceError;

/// A model directory found on disk at reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub dir: PathBuf,
    /// Whether it holds a `card.json`.
    pub has_card: bool,
}

/// What a reload does with one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Load the directory (a new version, or a new model).
    Load(PathBuf),
    /// Keep the served version, reporting why there is no new one.
    Keep(Failure),
}

/// Every model's step, and the served models that stop being served.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub steps: BTreeMap<String, Step>,
    pub removed: Vec<String>,
}

/// Decides each model's step from the directories `found` (by model name), the models
/// `served` now and the `default` one; see the module's documentation.
pub fn plan(found: &BTreeMap<String, Found>, served: &BTreeSet<String>, default: &str) -> Plan {
    let mut out = Plan::default();
    for (name, f) in found {
        if f.has_card {
            out.steps.insert(name.clone(), Step::Load(f.dir.clone()));
        } else if served.contains(name) {
            out.steps.insert(name.clone(), Step::Keep(Failure::NoCard));
        }
        // A new directory without a card is not a model yet.
    }
    for name in served.iter().filter(|n| !found.contains_key(*n)) {
        if name == default {
            out.steps
                .insert(name.clone(), Step::Keep(Failure::DirectoryGone));
        } else {
            out.removed.push(name.clone());
        }
    }
    out
}

/// Why a model has no new version, in words that name no path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("its directory is gone; it is the default model, which only a restart changes")]
    DirectoryGone,
    #[error("its directory holds no card.json (incomplete, e.g. a copy in progress)")]
    NoCard,
    #[error("a file does not match its sha256 in the card (modified or incomplete)")]
    HashMismatch,
    /// A short, path-free summary of the artifact's problem.
    #[error("{0}")]
    Artifact(String),
    #[error("libtorch could not load it")]
    Torch,
    #[error("it failed to load")]
    Other,
}

/// Stands in for an artifact summary that could name a path.
const INVALID_FILES: &str = "its files are missing or invalid";

impl Failure {
    /// The failure a load error stands for.
    pub fn of(e: &ServiceError) -> Self {
        match e {
            ServiceError::Load(ModelError::HashMismatch { .. }) => Self::HashMismatch,
            ServiceError::Load(ModelError::Artifact { detail, .. }) => {
                Self::Artifact(summary(detail))
            }
            ServiceError::Load(ModelError::Torch(_)) => Self::Torch,
            _ => Self::Other,
        }
    }

    /// What the client reads in the model's outcome; `kept` says whether an old version goes
    /// on serving.
    pub fn outcome(&self, kept: bool) -> String {
        let then = if kept {
            "the old version is still served"
        } else {
            "not served"
        };
        format!("{self}; {then} (details in the server log)")
    }
}

/// The part of an artifact error's detail before its first ": " (the artifact's errors put
/// their cause, which may quote a path, after it), or a fixed text when even that holds a path
/// separator.
pub fn summary(detail: &str) -> String {
    let head = detail.split(": ").next().unwrap_or_default().trim();
    if head.is_empty() || head.contains(['/', '\\']) {
        INVALID_FILES.to_owned()
    } else {
        head.to_owned()
    }
}

/// What a client reads about a catalog that could not be read (its error names its
/// directory).
pub const CATALOG_UNREADABLE: &str = "cannot be read or is invalid (details in the server log)";

/// The error a Reload client gets for a reload that failed as a whole (nothing was changed);
/// the detail, which may name paths, is logged here.
pub fn public_error(e: ServiceError) -> ServiceError {
    match e {
        ServiceError::Config(_) | ServiceError::Load(_) | ServiceError::Internal(_) => {
            tracing::error!("reload failed, nothing was changed: {e}");
            let what = if matches!(e, ServiceError::Config(_)) {
                "the model repository or the catalogs cannot be read"
            } else {
                "the new models could not be installed"
            };
            ServiceError::FailedPrecondition(format!(
                "reload failed, nothing was changed: {what} (details in the server log)"
            ))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(entries: &[(&str, bool)]) -> BTreeMap<String, Found> {
        entries
            .iter()
            .map(|(n, card)| {
                (
                    (*n).to_owned(),
                    Found {
                        dir: PathBuf::from("/srv/models").join(n),
                        has_card: *card,
                    },
                )
            })
            .collect()
    }

    fn served(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_served_directory_without_a_card_is_kept_not_removed() {
        let p = plan(
            &found(&[("alpha", true), ("beta", false)]),
            &served(&["alpha", "beta"]),
            "beta",
        );
        assert_eq!(p.steps["beta"], Step::Keep(Failure::NoCard));
        assert_eq!(p.steps["alpha"], Step::Load("/srv/models/alpha".into()));
        assert!(p.removed.is_empty());
        // The same for a model that is not the default.
        let p = plan(
            &found(&[("alpha", false), ("beta", true)]),
            &served(&["alpha", "beta"]),
            "beta",
        );
        assert_eq!(p.steps["alpha"], Step::Keep(Failure::NoCard));
        assert!(p.removed.is_empty());
    }

    #[test]
    fn only_a_gone_directory_of_another_model_is_removed() {
        let p = plan(
            &found(&[("beta", true)]),
            &served(&["alpha", "beta"]),
            "beta",
        );
        assert_eq!(p.removed, vec!["alpha".to_owned()]);
        assert!(!p.steps.contains_key("alpha"));
        // The default's directory gone: kept, never removed.
        let p = plan(
            &found(&[("alpha", true)]),
            &served(&["alpha", "beta"]),
            "beta",
        );
        assert_eq!(p.steps["beta"], Step::Keep(Failure::DirectoryGone));
        assert!(p.removed.is_empty());
    }

    #[test]
    fn new_directories_load_once_they_have_a_card() {
        let p = plan(
            &found(&[("alpha", true), ("gamma", false), ("delta", true)]),
            &served(&["alpha"]),
            "alpha",
        );
        assert!(!p.steps.contains_key("gamma"), "{p:?}");
        assert_eq!(p.steps["delta"], Step::Load("/srv/models/delta".into()));
    }

    #[test]
    fn failures_name_no_path() {
        let dir = PathBuf::from("/srv/secret/models/beta");
        let cases = [
            ServiceError::Load(ModelError::Artifact {
                dir: dir.clone(),
                detail: "cannot read card.json: No such file or directory (os error 2)".into(),
            }),
            ServiceError::Load(ModelError::Artifact {
                dir: dir.clone(),
                detail: "/srv/secret/models/beta/denoiser.pt: truncated".into(),
            }),
            ServiceError::Load(ModelError::HashMismatch {
                dir: dir.clone(),
                file: "denoiser.pt".into(),
                expected: "aa".into(),
                actual: "bb".into(),
            }),
            ServiceError::Internal("the model thread ended while loading".into()),
        ];
        let got: Vec<String> = cases.iter().map(|e| Failure::of(e).outcome(true)).collect();
        assert_eq!(
            got[0],
            "cannot read card.json; the old version is still served (details in the server log)"
        );
        assert!(got[1].starts_with(INVALID_FILES), "{}", got[1]);
        assert!(got[2].starts_with("a file does not match"), "{}", got[2]);
        assert!(got[3].starts_with("it failed to load"), "{}", got[3]);
        for g in &got {
            assert!(!g.contains('/') && !g.contains("secret"), "{g}");
        }
        assert!(Failure::NoCard.outcome(false).contains("not served"));
    }

    #[test]
    fn a_failed_reload_tells_the_client_no_path() {
        let e = public_error(ServiceError::Config(
            "model_repository: cannot read /srv/secret/models: denied".into(),
        ));
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(!status.message().contains('/'), "{}", status.message());
        let e = public_error(ServiceError::Unavailable(
            "the model is still loading".into(),
        ));
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unavailable);
    }
}
