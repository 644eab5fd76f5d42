use std::path::PathBuf;

/// What can go wrong loading or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("encoders {dir}: {detail}")]
    Manifest { dir: PathBuf, detail: String },
    #[error("encoders {dir}: {file} does not match encoders.json (sha256 {actual}, expected {expected}); the files were modified or are incomplete")]
    HashMismatch {
        dir: PathBuf,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: not a loadable TorchScript module: {detail}")]
    NotTorchScript { path: PathBuf, detail: String },
    #[error("{path}: does not meet the {contract} contract: {detail}")]
    Contract {
        path: PathBuf,
        contract: &'static str,
        detail: String,
    },
    #[error("{path}: not a usable tokenizer: {detail}")]
    Tokenizer { path: PathBuf, detail: String },
    #[error("no {0} encoder is configured for this model")]
    NotConfigured(&'static str),
    /// Bad input from a caller: maps to INVALID_ARGUMENT.
    #[error("{0}")]
    Input(String),
    #[error("libtorch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for EncoderError {
    fn from(e: tch::TchError) -> Self {
        EncoderError::Torch(first_line(&e.to_string()))
    }
}

/// libtorch errors carry a C++ backtrace; the first lines say what went wrong.
pub(crate) fn first_line(s: &str) -> String {
    let mut out: String = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ");
    if out.len() > 400 {
        let mut cut = 400;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}
