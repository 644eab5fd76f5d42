//! The model repository: every served model with its worker thread and catalogs, swapped as
//! a whole on reload.
//!
//! With `model_repository` set, every directory under it that holds a `card.json` is a model
//! (named by its directory); otherwise the one `model` directory is. The default model (the one
//! a request with an empty `model` gets) is the one named like the `model` directory, else the
//! first by name. Each model gets its own worker ([`ModelWorker`]: one thread per instance).
//!
//! [`Repository::reload`] (the Reload RPC and SIGHUP) loads every model directory again, each
//! in a new worker that is warmed up before it takes over, then reads the catalogs again, and
//! swaps the new [`Registry`] in at once. A request holds the registry it started with, so
//! requests in flight finish on the old workers (which end once their last request is done):
//! nothing is dropped. A model or catalog that fails to load keeps its old version, whatever
//! the failure, and the default never changes (see [`crate::service::request::reload`] for which directories
//! count as removed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tch::Device;

use crate::model::artifact;
use crate::service::error::ServiceError;
use crate::service::ops::memory;
use crate::service::ops::metrics;
use crate::service::request::catalog::{self, CatalogData};
use crate::service::request::reload::{self, Failure, Found, Step};
use crate::service::types::ModelInfo;
use crate::service::worker::{ModelWorker, WorkerHandle, WorkerOptions, WorkerStats};

/// One served model.
pub struct Served {
    pub info: ModelInfo,
    pub dir: PathBuf,
    pub worker: WorkerHandle,
    pub stats: Arc<WorkerStats>,
    /// Its catalogs, by name (also installed, as tensors, in its worker).
    pub catalogs: BTreeMap<String, Arc<CatalogData>>,
}

/// What requests see: the served models, by name, and the default's name.
pub struct Registry {
    pub models: BTreeMap<String, Arc<Served>>,
    pub default: String,
}

impl Registry {
    /// The model `name`, or the default for "".
    pub fn model(&self, name: &str) -> Result<&Arc<Served>, ServiceError> {
        let key = if name.is_empty() { &self.default } else { name };
        self.models
            .get(key)
            .ok_or_else(|| ServiceError::ModelNotFound {
                name: name.into(),
                available: self.models.keys().cloned().collect(),
            })
    }

    /// The default model first, then the others by name.
    pub fn ordered(&self) -> Vec<&Arc<Served>> {
        let mut v: Vec<&Arc<Served>> = self.models.get(&self.default).into_iter().collect();
        v.extend(
            self.models
                .iter()
                .filter(|(k, _)| **k != self.default)
                .map(|(_, m)| m),
        );
        v
    }
}

/// What became of one model or catalog in a (re)load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    /// Why it failed (and whether the old version is kept), naming no path: it goes to
    /// Reload's clients.
    pub error: Option<String>,
}

/// The report of a (re)load.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub models: Vec<Outcome>,
    pub catalogs: Vec<Outcome>,
    pub removed_models: Vec<String>,
}

/// Where the models and catalogs come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The single model directory, or the name of the default in the repository.
    pub model: PathBuf,
    /// The repository directory ("" = only `model`).
    pub repository: PathBuf,
    /// The catalogs directory ("" = none).
    pub catalogs: PathBuf,
    pub device: Device,
    pub worker: WorkerOptions,
}

/// The current registry, swapped on reload.
pub struct Repository {
    sources: Sources,
    current: RwLock<Option<Arc<Registry>>>,
    reloading: tokio::sync::Mutex<()>,
    /// Sends the message of a worker that died (for health).
    deaths: tokio::sync::mpsc::UnboundedSender<String>,
    /// Every worker thread started, for the wait at shutdown.
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

fn dir_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Repository {
    /// A repository with nothing loaded yet; `deaths` receives a message when a worker thread
    /// dies.
    pub fn new(sources: Sources, deaths: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        Self {
            sources,
            current: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
            deaths,
            threads: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The worker threads started so far (the finished ones included), taken out.
    pub fn take_threads(&self) -> Vec<std::thread::JoinHandle<()>> {
        self.threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// The registry now, or UNAVAILABLE while the first load is running.
    pub fn get(&self) -> Result<Arc<Registry>, ServiceError> {
        self.current
            .read()
            .map_err(|_| ServiceError::Internal("the model registry lock is poisoned".into()))?
            .clone()
            .ok_or_else(|| ServiceError::Unavailable("the model is still loading".into()))
    }

    /// The model directories to serve, by name: the one model, or every directory of the
    /// repository that holds a card.
    pub fn model_dirs(&self) -> Result<BTreeMap<String, PathBuf>, ServiceError> {
        let s = &self.sources;
        if s.repository.as_os_str().is_empty() {
            return Ok(BTreeMap::from([(dir_name(&s.model), s.model.clone())]));
        }
        let out: BTreeMap<String, PathBuf> = self
            .found_dirs()?
            .into_iter()
            .filter(|(_, f)| f.has_card)
            .map(|(name, f)| (name, f.dir))
            .collect();
        if out.is_empty() {
            return Err(ServiceError::Config(format!(
                "model_repository: no model directory (with {}) under {}",
                artifact::CARD_FILE,
                s.repository.display()
            )));
        }
        Ok(out)
    }

    async fn start_worker(&self, dir: &Path) -> Result<Served, ServiceError> {
        let w = ModelWorker::spawn_with(dir.into(), self.sources.device, self.sources.worker)?;
        if let Ok(mut t) = self.threads.lock() {
            t.retain(|h| !h.is_finished());
            t.extend(w.threads);
        }
        let info = w
            .ready
            .await
            .map_err(|_| ServiceError::Internal("the model thread ended while loading".into()))??;
        let deaths = self.deaths.clone();
        let died = w.died;
        let name = info.name.clone();
        tokio::spawn(async move {
            if let Ok(msg) = died.await {
                tracing::error!(model = %name, "{msg}");
                let _ = deaths.send(format!("model '{name}': {msg}"));
            }
        });
        Ok(Served {
            info,
            dir: dir.into(),
            worker: w.handle,
            stats: w.stats,
            catalogs: BTreeMap::new(),
        })
    }

    /// The first load: every model must load (else serving fails); a catalog that does not is
    /// logged and left out.
    pub async fn load(&self) -> Result<ReloadReport, ServiceError> {
        let _one = self.reloading.lock().await;
        let dirs = self.model_dirs()?;
        let mut models = BTreeMap::new();
        let mut report = ReloadReport::default();
        for (name, dir) in dirs {
            let served = self.start_worker(&dir).await?;
            report.models.push(Outcome {
                name: name.clone(),
                error: None,
            });
            models.insert(name, served);
        }
        let registry = self.with_catalogs(models, None, &mut report).await?;
        self.publish(registry)?;
        Ok(report)
    }

    /// The model directories on disk now, with a card or without (see [`reload::plan`]).
    fn found_dirs(&self) -> Result<BTreeMap<String, Found>, ServiceError> {
        let s = &self.sources;
        let found = |dir: PathBuf| Found {
            has_card: dir.join(artifact::CARD_FILE).is_file(),
            dir,
        };
        let mut out = BTreeMap::new();
        if s.repository.as_os_str().is_empty() {
            if s.model.is_dir() {
                out.insert(dir_name(&s.model), found(s.model.clone()));
            }
            return Ok(out);
        }
        let entries = std::fs::read_dir(&s.repository).map_err(|e| {
            ServiceError::Config(format!(
                "model_repository: cannot read {}: {e}",
                s.repository.display()
            ))
        })?;
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                out.insert(dir_name(&p), found(p));
            }
        }
        Ok(out)
    }

    /// Reloads every model and catalog; see the module's documentation. The errors, and the
    /// outcomes in the report, name no path (they go to Reload's clients); the details are
    /// logged.
    pub async fn reload(&self) -> Result<ReloadReport, ServiceError> {
        let _one = self.reloading.lock().await;
        let old = self.get()?;
        let report = self.reload_from(&old).await.map_err(reload::public_error);
        // The old catalogs, freed on this thread once no request holds them, go back too.
        drop(old);
        memory::release_freed();
        report
    }

    async fn reload_from(&self, old: &Arc<Registry>) -> Result<ReloadReport, ServiceError> {
        let served: BTreeSet<String> = old.models.keys().cloned().collect();
        let plan = reload::plan(&self.found_dirs()?, &served, &old.default);
        let mut report = ReloadReport {
            removed_models: plan.removed,
            ..ReloadReport::default()
        };
        let mut models: BTreeMap<String, Served> = BTreeMap::new();
        for (name, step) in plan.steps {
            let failure = match step {
                Step::Load(dir) => match self.start_worker(&dir).await {
                    Ok(served) => {
                        tracing::info!(model = %name, "reloaded");
                        report.models.push(Outcome {
                            name: name.clone(),
                            error: None,
                        });
                        models.insert(name, served);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(model = %name, "reload failed: {e}");
                        Failure::of(&e)
                    }
                },
                Step::Keep(f) => {
                    tracing::error!(model = %name, "reload failed: {f}");
                    f
                }
            };
            let kept = old.models.get(&name);
            if kept.is_some() {
                tracing::warn!(model = %name, "keeping the old version");
            }
            report.models.push(Outcome {
                name: name.clone(),
                error: Some(failure.outcome(kept.is_some())),
            });
            // Kept models get the same treatment as new ones: a fresh `Served` with their
            // handle (their catalogs are matched again).
            if let Some(m) = kept {
                models.insert(
                    name,
                    Served {
                        info: m.info.clone(),
                        dir: m.dir.clone(),
                        worker: m.worker.clone(),
                        stats: m.stats.clone(),
                        catalogs: m.catalogs.clone(),
                    },
                );
            }
        }
        // Models gone from the repository stop being served (their workers end after their
        // last request).
        for name in &report.removed_models {
            tracing::warn!(model = %name, "its directory is gone: no longer served");
        }
        let registry = self.with_catalogs(models, Some(old), &mut report).await?;
        self.publish(registry)?;
        Ok(report)
    }

    /// Reads the catalogs, matches each with its model, installs them in the workers and
    /// builds the registry. With `old`, a catalog that fails keeps its old version when that
    /// still fits its model.
    async fn with_catalogs(
        &self,
        mut models: BTreeMap<String, Served>,
        old: Option<&Registry>,
        report: &mut ReloadReport,
    ) -> Result<Registry, ServiceError> {
        let default = match old {
            // The default never moves to another model on reload (the plan keeps it); checked
            // before the catalogs change anything in the workers.
            Some(o) if models.contains_key(&o.default) => o.default.clone(),
            Some(o) => {
                return Err(ServiceError::Internal(format!(
                    "the default model '{}' would no longer be served",
                    o.default
                )))
            }
            None => {
                let wanted = dir_name(&self.sources.model);
                if models.contains_key(&wanted) {
                    wanted
                } else {
                    models.keys().next().cloned().unwrap_or_default()
                }
            }
        };
        let root = self.sources.catalogs.clone();
        let read = tokio::task::spawn_blocking(move || catalog::read_all(&root))
            .await
            .map_err(|e| ServiceError::Internal(format!("reading the catalogs: {e}")))?
            .map_err(ServiceError::Config)?;
        let mut sets: BTreeMap<String, BTreeMap<String, Arc<CatalogData>>> = BTreeMap::new();
        for (name, got) in read {
            // Errors as (the log's detail, the client's text): a read error names the
            // catalog's directory; a mismatch names no path.
            let fit = got
                .map_err(|e| (e, reload::CATALOG_UNREADABLE.to_owned()))
                .and_then(|c| {
                    let m = models.get(&c.meta.model).ok_or_else(|| {
                        format!(
                            "catalog '{name}' was built for model '{}', which is not served",
                            c.meta.model
                        )
                    });
                    m.and_then(|m| {
                        catalog::check_for_model(&c, &m.info.name, &m.info.fingerprint, m.info.dim)
                    })
                    .map_err(|e| (e.clone(), e))?;
                    Ok(c)
                });
            match fit {
                Ok(c) => {
                    report.catalogs.push(Outcome {
                        name: name.clone(),
                        error: None,
                    });
                    sets.entry(c.meta.model.clone())
                        .or_default()
                        .insert(name, Arc::new(c));
                }
                Err((detail, public)) => {
                    tracing::error!(catalog = %name, "cannot serve the catalog: {detail}");
                    report.catalogs.push(Outcome {
                        name: name.clone(),
                        error: Some(public),
                    });
                    // Keep the old version if it still fits its (possibly reloaded) model.
                    let previous = old.and_then(|o| {
                        o.models
                            .values()
                            .find_map(|m| m.catalogs.get(&name).cloned())
                    });
                    if let Some(c) = previous {
                        if let Some(m) = models.get(&c.meta.model) {
                            if catalog::check_for_model(
                                &c,
                                &m.info.name,
                                &m.info.fingerprint,
                                m.info.dim,
                            )
                            .is_ok()
                            {
                                sets.entry(c.meta.model.clone())
                                    .or_default()
                                    .insert(name, c);
                            }
                        }
                    }
                }
            }
        }
        for (name, served) in models.iter_mut() {
            let set = sets.remove(name).unwrap_or_default();
            let list: Vec<Arc<CatalogData>> = set.values().cloned().collect();
            served
                .worker
                .call_all(move |ctx| ctx.install_catalogs(&list))
                .await?;
            served.catalogs = set;
        }
        for m in models.values() {
            metrics::model_loaded(&m.info.name, &m.info.space, m.info.dim, &m.info.device);
        }
        Ok(Registry {
            models: models.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            default,
        })
    }

    fn publish(&self, registry: Registry) -> Result<(), ServiceError> {
        *self
            .current
            .write()
            .map_err(|_| ServiceError::Internal("the model registry lock is poisoned".into()))? =
            Some(Arc::new(registry));
        Ok(())
    }

    /// Forgets the registry (at shutdown): the workers end once the requests in flight are
    /// done.
    pub fn clear(&self) {
        if let Ok(mut c) = self.current.write() {
            *c = None;
        }
    }
}
