//! What `diffgap serve` takes, layered: built-in defaults < a TOML file < `DIFFGAP_*`
//! environment variables < command-line flags, into one typed [`ServeConfig`] that is checked
//! before anything starts. Every error names the key it is about.
//!
//! The file is `--config FILE` or `$DIFFGAP_CONFIG` (then it must exist), else `./diffgap.toml`
//! when present. Each key `k` has the environment variable `DIFFGAP_` + `k` upper-cased (e.g.
//! `max_batch_rows` <- `DIFFGAP_MAX_BATCH_ROWS`) and the flag `--k` with dashes. Adding a key:
//! a field in [`ServeConfig`] (and its [`Default`]), its name in [`KEYS`], an `Option` field
//! in [`ServeArgs`] with a line in [`ServeArgs::overrides`], a check in
//! [`ServeConfig::validate`] and a documented line in `diffgap.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;
use crate::service::ops::threads::IoThreadPolicy;
use crate::service::worker::scheduler::Batching;

/// The file read when neither `--config` nor `DIFFGAP_CONFIG` names one (skipped if absent).
pub const DEFAULT_FILE: &str = "diffgap.toml";
/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "DIFFGAP_CONFIG";
/// The prefix of the environment variables of the keys.
pub const ENV_PREFIX: &str = "DIFFGAP";

/// Every key of [`ServeConfig`]; only these are read from the environment (other `DIFFGAP_*`
/// variables, such as `DIFFGAP_CONFIG` or the scripts' `DIFFGAP_ROOT`, are not keys).
pub const KEYS: &[&str] = &[
    "model",
    "listen",
    "device",
    "max_batch_rows",
    "queue_capacity",
    "max_items_per_request",
    "metrics_listen",
    "log_format",
    "drain_timeout_secs",
    "max_message_bytes",
    "batching",
    "max_batch_wait_ms",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "auth_tokens_file",
    "admin_tokens_file",
    "model_repository",
    "catalogs",
    "io_thread_policy",
    "instances",
    "intra_op_threads",
];

/// Largest `max_batch_rows` and `max_items_per_request`.
pub const MAX_ROWS: usize = 65536;
/// Largest `instances` (each holds a copy of the model and a thread).
pub const MAX_INSTANCES: usize = 64;
/// Largest `intra_op_threads`.
pub const MAX_INTRA_OP_THREADS: usize = 1024;

/// How the server writes its logs (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, span fields inline.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields (request_id, rpc, ...).
    Json,
}

/// The effective configuration of `diffgap serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Model directory written by `diffgap train`.
    pub model: PathBuf,
    /// Address of the gRPC listener; port 0 picks a free port (logged at startup).
    pub listen: SocketAddr,
    /// auto, cpu or cuda:N.
    #[serde(with = "as_string")]
    pub device: DeviceChoice,
    /// Most embedding rows the model worker batches into one pass.
    pub max_batch_rows: usize,
    /// Requests that may wait for the model worker; more are refused with RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Most items of a Bridge request and most candidates of a Rank request.
    pub max_items_per_request: usize,
    /// Address of the Prometheus `/metrics` listener; "" or "off" disables it.
    pub metrics_listen: String,
    /// text or json.
    #[serde(with = "as_value_enum")]
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long the requests in flight may take to finish.
    pub drain_timeout_secs: u64,
    /// Largest gRPC message decoded or encoded, in bytes. Default: room for the largest
    /// request, `(max_items_per_request + 1) * 64 KiB`, at least 4 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// How the model worker batches: step (rows join and leave the running batch at every
    /// denoising step) or request (whole requests grouped by options).
    #[serde(with = "as_value_enum")]
    pub batching: Batching,
    /// When the worker is idle, how long (ms) the first request may wait for others before
    /// the first step; 0 starts at once.
    pub max_batch_wait_ms: u64,
    /// TLS certificate chain (PEM) of the gRPC listener; "" serves plaintext. Needs `tls_key`.
    pub tls_cert: PathBuf,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: PathBuf,
    /// CA certificates (PEM) that sign client certificates: set, clients must present one
    /// (mutual TLS). Needs `tls_cert`.
    pub tls_client_ca: PathBuf,
    /// Bearer tokens, one a line: set, every call but health's needs `authorization: Bearer
    /// <token>`. `DIFFGAP_AUTH_TOKENS` may add tokens (see `security`).
    pub auth_tokens_file: PathBuf,
    /// Admin tokens, one a line: the Reload RPC needs `authorization: Bearer <admin token>`
    /// and is refused without any configured. `DIFFGAP_ADMIN_TOKENS` may add tokens (see
    /// `admin`).
    pub admin_tokens_file: PathBuf,
    /// A folder of model directories, all served (one worker each); "" serves `model` alone.
    /// With it, `model` names the default (its directory name).
    pub model_repository: PathBuf,
    /// A folder of catalogs (`diffgap catalog build`) served for their models; "" = none.
    pub catalogs: PathBuf,
    /// Scheduling of the network threads: batch (Linux SCHED_BATCH: they never preempt the
    /// model threads on wake-up) or normal (see `service::threads`).
    #[serde(with = "as_value_enum")]
    pub io_thread_policy: IoThreadPolicy,
    /// Model instances per model, each on its own thread with its own copy of the model and
    /// its own batch; requests go to the least loaded. On CPU, one single-threaded instance
    /// per core gives the most throughput (a preempted thread then stalls only its own
    /// instance), one instance over all cores the lowest latency of a lone request. 0: one
    /// per core on the CPU, one on a GPU.
    pub instances: usize,
    /// libtorch intra-op threads of each instance; 0 shares the cores out over the instances
    /// (libtorch's own default with one instance).
    pub intra_op_threads: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model: "models/default".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            device: DeviceChoice::Auto,
            max_batch_rows: 256,
            queue_capacity: 64,
            max_items_per_request: 64,
            metrics_listen: "127.0.0.1:9090".into(),
            log_format: LogFormat::Text,
            drain_timeout_secs: 30,
            max_message_bytes: None,
            batching: Batching::default(),
            max_batch_wait_ms: 0,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            auth_tokens_file: PathBuf::new(),
            admin_tokens_file: PathBuf::new(),
            model_repository: PathBuf::new(),
            catalogs: PathBuf::new(),
            io_thread_policy: IoThreadPolicy::default(),
            instances: 1,
            intra_op_threads: 0,
        }
    }
}

/// The flags of `diffgap serve` and `diffgap config print`: each overrides the file and the
/// environment only when given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML; see diffgap.example.toml). Env: DIFFGAP_CONFIG. Default:
    /// ./diffgap.toml when present.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Model directory written by `diffgap train` [default: models/default; env: DIFFGAP_MODEL].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:50051; env:
    /// DIFFGAP_LISTEN].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// auto, cpu or cuda:N [default: auto; env: DIFFGAP_DEVICE].
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Most embedding rows the model worker batches into one pass [default: 256; env:
    /// DIFFGAP_MAX_BATCH_ROWS].
    #[arg(long)]
    pub max_batch_rows: Option<usize>,
    /// Requests that may wait for the model worker; more are refused with RESOURCE_EXHAUSTED
    /// [default: 64; env: DIFFGAP_QUEUE_CAPACITY].
    #[arg(long)]
    pub queue_capacity: Option<usize>,
    /// Most items of a Bridge request and most candidates of a Rank request [default: 64;
    /// env: DIFFGAP_MAX_ITEMS_PER_REQUEST].
    #[arg(long)]
    pub max_items_per_request: Option<usize>,
    /// Prometheus /metrics listener address, "" or "off" to disable [default:
    /// 127.0.0.1:9090; env: DIFFGAP_METRICS_LISTEN].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Log format [default: text; env: DIFFGAP_LOG_FORMAT].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds the requests in flight may take to finish after SIGTERM/SIGINT [default: 30;
    /// env: DIFFGAP_DRAIN_TIMEOUT_SECS].
    #[arg(long)]
    pub drain_timeout_secs: Option<u64>,
    /// Largest gRPC message in bytes [default: derived from max_items_per_request; env:
    /// DIFFGAP_MAX_MESSAGE_BYTES].
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// How the model worker batches [default: step; env: DIFFGAP_BATCHING].
    #[arg(long, value_enum)]
    pub batching: Option<Batching>,
    /// When idle, milliseconds the first request may wait for others [default: 0; env:
    /// DIFFGAP_MAX_BATCH_WAIT_MS].
    #[arg(long)]
    pub max_batch_wait_ms: Option<u64>,
    /// TLS certificate chain (PEM) of the gRPC listener [default: none, plaintext; env:
    /// DIFFGAP_TLS_CERT].
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert [env: DIFFGAP_TLS_KEY].
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) of client certificates: requires mutual TLS [env: DIFFGAP_TLS_CLIENT_CA].
    #[arg(long, value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
    /// File of bearer tokens, one a line [env: DIFFGAP_AUTH_TOKENS_FILE; tokens may also
    /// come from DIFFGAP_AUTH_TOKENS].
    #[arg(long, value_name = "FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// File of admin tokens, one a line, for the Reload RPC [default: none, Reload refused;
    /// env: DIFFGAP_ADMIN_TOKENS_FILE; tokens may also come from DIFFGAP_ADMIN_TOKENS].
    #[arg(long, value_name = "FILE")]
    pub admin_tokens_file: Option<PathBuf>,
    /// Folder of model directories to serve, all of them; --model names the default
    /// [default: none, serve --model alone; env: DIFFGAP_MODEL_REPOSITORY].
    #[arg(long, value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    /// Folder of catalogs to serve (diffgap catalog build) [default: none; env:
    /// DIFFGAP_CATALOGS].
    #[arg(long, value_name = "DIR")]
    pub catalogs: Option<PathBuf>,
    /// Scheduling of the network threads: batch (never preempt the model threads on wake-up)
    /// or normal [default: batch; env: DIFFGAP_IO_THREAD_POLICY].
    #[arg(long, value_enum)]
    pub io_thread_policy: Option<IoThreadPolicy>,
    /// Model instances per model, each a thread with its own batch; on CPU one per core
    /// gives the most throughput; 0: one per core on the CPU, one on a GPU [default: 1;
    /// env: DIFFGAP_INSTANCES].
    #[arg(long)]
    pub instances: Option<usize>,
    /// libtorch intra-op threads of each instance; 0 shares the cores out over the
    /// instances [default: 0; env: DIFFGAP_INTRA_OP_THREADS].
    #[arg(long)]
    pub intra_op_threads: Option<usize>,
}

impl ServeArgs {
    /// The flags given, as (key, value) overrides.
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let o: Vec<(&'static str, Option<String>)> = vec![
            (
                "model",
                self.model.as_ref().map(|p| p.display().to_string()),
            ),
            ("listen", self.listen.as_ref().map(ToString::to_string)),
            ("device", self.device.as_ref().map(ToString::to_string)),
            (
                "max_batch_rows",
                self.max_batch_rows.as_ref().map(ToString::to_string),
            ),
            (
                "queue_capacity",
                self.queue_capacity.as_ref().map(ToString::to_string),
            ),
            (
                "max_items_per_request",
                self.max_items_per_request.as_ref().map(ToString::to_string),
            ),
            ("metrics_listen", self.metrics_listen.clone()),
            ("log_format", self.log_format.map(value_name)),
            (
                "drain_timeout_secs",
                self.drain_timeout_secs.as_ref().map(ToString::to_string),
            ),
            (
                "max_message_bytes",
                self.max_message_bytes.as_ref().map(ToString::to_string),
            ),
            ("batching", self.batching.map(value_name)),
            (
                "max_batch_wait_ms",
                self.max_batch_wait_ms.as_ref().map(ToString::to_string),
            ),
            ("tls_cert", path_value(&self.tls_cert)),
            ("tls_key", path_value(&self.tls_key)),
            ("tls_client_ca", path_value(&self.tls_client_ca)),
            ("auth_tokens_file", path_value(&self.auth_tokens_file)),
            ("admin_tokens_file", path_value(&self.admin_tokens_file)),
            ("model_repository", path_value(&self.model_repository)),
            ("catalogs", path_value(&self.catalogs)),
            ("io_thread_policy", self.io_thread_policy.map(value_name)),
            (
                "instances",
                self.instances.as_ref().map(ToString::to_string),
            ),
            (
                "intra_op_threads",
                self.intra_op_threads.as_ref().map(ToString::to_string),
            ),
        ];
        debug_assert!(o.iter().all(|(k, _)| KEYS.contains(k)));
        o.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }
}

impl ServeConfig {
    /// The defaults for `model` on `listen`, with the metrics listener off: for embedding the
    /// server in another program or a test (where a fixed metrics port would collide).
    pub fn new(model: PathBuf, listen: SocketAddr, device: DeviceChoice) -> Self {
        Self {
            model,
            listen,
            device,
            metrics_listen: "off".into(),
            ..Self::default()
        }
    }

    /// Layers the defaults, the file, the process environment and `args`, and validates.
    pub fn load(args: &ServeArgs) -> Result<Self, String> {
        Self::load_from(args, std::env::vars(), Path::new("."))
    }

    /// [`ServeConfig::load`] with an explicit environment, and the directory where the default
    /// `diffgap.toml` is looked for.
    pub fn load_from(
        args: &ServeArgs,
        env: impl IntoIterator<Item = (String, String)>,
        dir: &Path,
    ) -> Result<Self, String> {
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
        let cfg: Self = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every key; the error names the first key out of range.
    pub fn validate(&self) -> Result<(), String> {
        let ranges = [
            ("max_batch_rows", self.max_batch_rows, MAX_ROWS),
            ("queue_capacity", self.queue_capacity, 1 << 20),
            (
                "max_items_per_request",
                self.max_items_per_request,
                MAX_ROWS,
            ),
        ];
        for (key, v, max) in ranges {
            if v == 0 || v > max {
                return Err(format!("{key}: must be in 1..={max}, got {v}"));
            }
        }
        if self.drain_timeout_secs > 3600 {
            return Err(format!(
                "drain_timeout_secs: must be in 0..=3600, got {}",
                self.drain_timeout_secs
            ));
        }
        if self.instances > MAX_INSTANCES {
            return Err(format!(
                "instances: must be in 0..={MAX_INSTANCES} (0: one per core on the CPU), got {}",
                self.instances
            ));
        }
        if self.intra_op_threads > MAX_INTRA_OP_THREADS {
            return Err(format!(
                "intra_op_threads: must be in 0..={MAX_INTRA_OP_THREADS}, got {}",
                self.intra_op_threads
            ));
        }
        if self.max_batch_wait_ms > 10_000 {
            return Err(format!(
                "max_batch_wait_ms: must be in 0..=10000, got {}",
                self.max_batch_wait_ms
            ));
        }
        if let Some(b) = self.max_message_bytes {
            const MIN: usize = 1024;
            const MAX: usize = 1 << 31;
            if !(MIN..=MAX).contains(&b) {
                return Err(format!(
                    "max_message_bytes: must be in {MIN}..={MAX}, got {b}"
                ));
            }
        }
        if self.model.as_os_str().is_empty() {
            return Err("model: must name a model directory".into());
        }
        let set = |p: &Path| !p.as_os_str().is_empty();
        if set(&self.tls_cert) != set(&self.tls_key) {
            return Err(if set(&self.tls_cert) {
                "tls_key: must be set when tls_cert is".into()
            } else {
                "tls_cert: must be set when tls_key is".into()
            });
        }
        if set(&self.tls_client_ca) && !set(&self.tls_cert) {
            return Err("tls_client_ca: mutual TLS needs tls_cert and tls_key".into());
        }
        if let Some(m) = self.metrics_addr()? {
            if m.port() != 0 && m == self.listen {
                return Err(format!(
                    "metrics_listen: must differ from listen (both are {m})"
                ));
            }
        }
        Ok(())
    }

    /// The metrics listener's address, `None` when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        let v = self.metrics_listen.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| {
            format!("metrics_listen: '{v}' is not an address (host:port), \"\" or \"off\"")
        })
    }

    /// The gRPC message size limit in bytes: `max_message_bytes`, or the default derived from
    /// `max_items_per_request`.
    pub fn message_limit(&self) -> usize {
        self.max_message_bytes.unwrap_or_else(|| {
            (self.max_items_per_request + 1)
                .saturating_mul(64 * 1024)
                .max(4 * 1024 * 1024)
        })
    }

    /// The configuration as `diffgap config print` shows it: TOML, with the derived
    /// `max_message_bytes` filled in.
    pub fn to_toml(&self) -> Result<String, String> {
        let mut shown = self.clone();
        shown.max_message_bytes = Some(self.message_limit());
        toml::to_string(&shown).map_err(|e| format!("rendering the configuration: {e}"))
    }
}

fn file_source(
    path: &Path,
    required: bool,
) -> config::File<config::FileSourceFile, config::FileFormat> {
    config::File::new(&path.to_string_lossy(), config::FileFormat::Toml).required(required)
}

/// A path flag as an override value.
fn path_value(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

/// The name clap knows a value by (`text`, `step`...).
fn value_name<T: clap::ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// (De)serializes a clap value enum by its value names.
mod as_value_enum {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: clap::ValueEnum, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::value_name(v.clone()))
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: clap::ValueEnum,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        T::from_str(&s, true).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .map(|v| super::value_name(v.clone()))
                .collect();
            serde::de::Error::custom(format!("unknown value '{s}', use one of {names:?}"))
        })
    }
}

/// (De)serializes through `Display` and `FromStr`.
mod as_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_print() {
        let cfg = ServeConfig::default();
        cfg.validate().expect("the defaults are valid");
        let text = cfg.to_toml().expect("toml");
        for key in KEYS {
            assert!(
                text.contains(&format!("{key} = ")),
                "{key} missing in\n{text}"
            );
        }
        let back: ServeConfig = toml::from_str(&text).expect("parses back");
        assert_eq!(back.max_message_bytes, Some(cfg.message_limit()));
    }

    #[test]
    fn zero_rows_names_the_key() {
        let cfg = ServeConfig {
            max_batch_rows: 0,
            ..ServeConfig::default()
        };
        assert_eq!(
            cfg.validate().unwrap_err(),
            "max_batch_rows: must be in 1..=65536, got 0"
        );
    }

    #[test]
    fn instance_counts_out_of_range_name_the_key() {
        let auto = ServeConfig {
            instances: 0,
            ..ServeConfig::default()
        };
        assert_eq!(auto.validate(), Ok(()), "0 is auto");
        let many = ServeConfig {
            instances: 65,
            ..ServeConfig::default()
        };
        assert_eq!(
            many.validate().unwrap_err(),
            "instances: must be in 0..=64 (0: one per core on the CPU), got 65"
        );
        let threads = ServeConfig {
            intra_op_threads: 5000,
            ..ServeConfig::default()
        };
        assert_eq!(
            threads.validate().unwrap_err(),
            "intra_op_threads: must be in 0..=1024, got 5000"
        );
    }
}
