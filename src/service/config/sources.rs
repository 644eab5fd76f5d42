//! Where the configuration's values come from: the TOML file, the `DIFFGAP_*` environment
//! variables of the known keys, and the flags given.

use std::path::{Path, PathBuf};

use config::builder::DefaultState;
use config::ConfigBuilder;

use super::args::ServeArgs;
use super::keys::KEYS;

/// The file read when neither `--config` nor `DIFFGAP_CONFIG` names one (skipped if absent).
pub const DEFAULT_FILE: &str = "diffgap.toml";
/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "DIFFGAP_CONFIG";
/// The prefix of the environment variables of the keys.
pub const ENV_PREFIX: &str = "DIFFGAP";

/// The defaults' layers under `args`: the file, then the environment's `DIFFGAP_*` keys,
/// then the flags given.
pub(super) fn layered(
    args: &ServeArgs,
    env: impl IntoIterator<Item = (String, String)>,
    dir: &Path,
) -> Result<ConfigBuilder<DefaultState>, String> {
    let mut env_keys = config::Map::new();
    let mut file_from_env = None;
    for (k, v) in env {
        if k == CONFIG_ENV {
            file_from_env = Some(PathBuf::from(v));
            continue;
        }
        let key = k
            .strip_prefix(ENV_PREFIX)
            .and_then(|r| r.strip_prefix('_'))
            .map(str::to_ascii_lowercase);
        if key.is_some_and(|key| KEYS.contains(&key.as_str())) {
            env_keys.insert(k, v);
        }
    }
    let mut builder = config::Config::builder();
    match args.config.clone().or(file_from_env) {
        Some(path) => {
            if !path.is_file() {
                return Err(format!(
                    "config: cannot read the configuration file {}",
                    path.display()
                ));
            }
            builder = builder.add_source(file_source(&path, true));
        }
        None => {
            let path = dir.join(DEFAULT_FILE);
            if path.is_file() {
                builder = builder.add_source(file_source(&path, true));
            }
        }
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .source(Some(env_keys)),
    );
    for (key, value) in args.overrides() {
        builder = builder
            .set_override(key, value)
            .map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(builder)
}

fn file_source(
    path: &Path,
    required: bool,
) -> config::File<config::FileSourceFile, config::FileFormat> {
    config::File::new(&path.to_string_lossy(), config::FileFormat::Toml).required(required)
}
