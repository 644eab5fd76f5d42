//! The generated protobuf and gRPC code of `proto/diffgap/v1/diffgap.proto`, and small
//! constructors for clients.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("diffgap.v1");

/// The encoded file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("diffgap_descriptor");

impl BridgeItem {
    /// An item `from` -> `to` for `values`, with the model's default steps, guidance and
    /// samples.
    pub fn new(from: &str, to: &str, values: Vec<f32>, seed: Option<u64>) -> Self {
        Self {
            source_modality: from.into(),
            target_modality: to.into(),
            embedding: Some(Embedding { values }),
            steps: None,
            guidance: None,
            samples: None,
            seed,
            raw: None,
        }
    }
}

impl BridgeRequest {
    /// A request of `items` for the default model.
    pub fn new(items: Vec<BridgeItem>) -> Self {
        Self {
            model: String::new(),
            items,
        }
    }
}
