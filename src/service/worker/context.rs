//! What runs on a model instance's thread sees: the model and the catalogs installed there as
//! device tensors (the encoders have their own thread: [`super::encoder_thread`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tch::Tensor;

use crate::model::DiffgapModel;
use crate::service::error::ServiceError;
use crate::service::types::CatalogData;
use crate::service::worker::ranking::RankState;

/// What a [`Call`] sees: the model and the catalogs installed on this worker.
pub struct WorkerCtx<'m> {
    pub model: &'m DiffgapModel,
    pub catalogs: BTreeMap<String, DeviceCatalog>,
    /// The baselines and bridged query banks (`None` for a model trained without baselines).
    pub ranking: Option<&'m RankState>,
}

/// A catalog's tensors on the model's device, and the plain data they come from.
pub struct DeviceCatalog {
    pub data: Arc<CatalogData>,
    /// [entries, dim], L2-normalised.
    pub embeddings: Tensor,
    /// Query modality -> the entries bridged into it, [entries, dim], L2-normalised.
    pub reverse: BTreeMap<String, Tensor>,
    /// The inverted softmax's bank terms over the entries, [1, entries], computed on first use
    /// and kept with the catalog (they depend on the entries only), keyed by mode and direction.
    pub bank_norms: BTreeMap<String, Tensor>,
}

impl WorkerCtx<'_> {
    /// Replaces the catalogs with `set` (tensors made on the model's device).
    pub fn install_catalogs(&mut self, set: &[Arc<CatalogData>]) -> Result<(), ServiceError> {
        let device = self.model.device();
        let dim = self.model.dim();
        let mut out = BTreeMap::new();
        for c in set {
            let rows = c.meta.ids.len() as i64;
            let t = |v: &[f32]| -> Result<Tensor, ServiceError> {
                if v.len() as i64 != rows * dim {
                    return Err(ServiceError::Internal(format!(
                        "catalog '{}': {} values for {rows} entries of dimension {dim}",
                        c.meta.name,
                        v.len()
                    )));
                }
                Ok(Tensor::from_slice(v).view([rows, dim]).to_device(device))
            };
            let embeddings = t(&c.embeddings)?;
            let mut reverse = BTreeMap::new();
            for (m, v) in &c.reverse {
                reverse.insert(m.clone(), t(v)?);
            }
            out.insert(
                c.meta.name.clone(),
                DeviceCatalog {
                    data: c.clone(),
                    embeddings,
                    reverse,
                    bank_norms: BTreeMap::new(),
                },
            );
        }
        self.catalogs = out;
        Ok(())
    }
}
