use std::path::PathBuf;

/// What can go wrong loading or using a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model directory {dir}: {detail}")]
    Artifact { dir: PathBuf, detail: String },
    #[error("model directory {dir}: {file} does not match the card (sha256 {actual}, card says {expected}); the artifact was modified or is incomplete")]
    HashMismatch {
        dir: PathBuf,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("unknown modality '{name}'; the model knows {known:?}")]
    UnknownModality { name: String, known: Vec<String> },
    #[error("the model has no direction {from} -> {to}; it knows {known:?}")]
    UnknownDirection {
        from: String,
        to: String,
        known: Vec<String>,
    },
    #[error("embedding has dimension {got}, the model's space has {expected}")]
    Dimension { got: i64, expected: i64 },
    #[error("{0}")]
    Invalid(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
