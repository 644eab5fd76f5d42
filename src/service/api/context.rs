//! What every RPC handler needs: the served models and the per-request limits.

use std::sync::Arc;

use crate::service::error::ServiceError;
use crate::service::request::repository::{Repository, Served};
use crate::service::request::validate::check_count;

/// The per-request limits of the service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items_per_request: usize,
    pub max_batch_rows: usize,
    pub queue_capacity: usize,
}

/// The served models and the limits, shared by the handlers (cheap to clone).
#[derive(Clone)]
pub struct Context {
    pub repo: Arc<Repository>,
    pub limits: Limits,
}

impl Context {
    /// The model `name` ("" = the default), or UNAVAILABLE while loading, NOT_FOUND if unknown.
    pub fn served(&self, name: &str) -> Result<Arc<Served>, ServiceError> {
        Ok(self.repo.get()?.model(name)?.clone())
    }

    pub fn count(&self, field: &str, n: usize) -> Result<(), ServiceError> {
        check_count(field, n, self.limits.max_items_per_request)
    }

    /// The model label of a request's metrics: its model, or the default's name.
    pub fn model_label(&self, name: &str) -> String {
        if !name.is_empty() {
            return name.to_owned();
        }
        self.repo
            .get()
            .map_or_else(|_| "none".to_owned(), |r| r.default.clone())
    }
}
