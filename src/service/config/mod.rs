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

mod args;
mod keys;
mod serde_as;
mod sources;

pub use args::ServeArgs;
pub use keys::KEYS;
pub use sources::{CONFIG_ENV, DEFAULT_FILE, ENV_PREFIX};

use crate::device::{DeviceChoice, Dtype};
pub use crate::service::ops::telemetry::LogFormat;
use crate::service::ops::threads::IoThreadPolicy;
use crate::service::types::Batching;
use serde_as::{as_string, as_value_enum};

/// Largest `max_batch_rows` and `max_items_per_request`.
pub const MAX_ROWS: usize = 65536;
/// Largest `instances` (each holds a copy of the model and a thread).
pub const MAX_INSTANCES: usize = 64;
/// Largest `intra_op_threads`.
pub const MAX_INTRA_OP_THREADS: usize = 1024;
/// Largest `max_connections`.
pub const MAX_CONNECTIONS: usize = 1 << 20;
/// Largest `max_queue_row_steps`.
pub const MAX_QUEUE_ROW_STEPS: usize = 1 << 32;
/// Largest `idle_connection_timeout_secs` (a day).
pub const MAX_IDLE_SECS: u64 = 86_400;

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
    /// Number format of the denoiser network: float32 or bfloat16 (see `device::Dtype`).
    #[serde(with = "as_value_enum")]
    pub dtype: Dtype,
    /// Most embedding rows the model worker batches into one pass.
    pub max_batch_rows: usize,
    /// Requests that may wait for the model worker; more are refused with RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Most bridge work (rows x samples x steps) outstanding on one model instance; more is
    /// refused with RESOURCE_EXHAUSTED (a larger request still runs on an idle instance).
    /// 0: 100 per `max_batch_rows`, at least 25,600.
    pub max_queue_row_steps: usize,
    /// Most model calls in flight over the server, checked before a call's body is read;
    /// more are refused with RESOURCE_EXHAUSTED. 0: no limit.
    pub max_concurrent_requests: usize,
    /// Most concurrent calls (HTTP/2 streams) on one connection; a client opens more only
    /// as earlier ones end. 0: the HTTP/2 library's default.
    pub max_concurrent_streams: u32,
    /// Most items of a Bridge request and most candidates of a Rank request.
    pub max_items_per_request: usize,
    /// Address of the Prometheus `/metrics` listener; "" or "off" disables it.
    pub metrics_listen: String,
    /// Address of the HTTP/JSON listener (the API and the OpenAI-compatible
    /// `/v1/embeddings`, `api/http`); "" or "off" disables it. Plaintext: with TLS on it must
    /// be a loopback address.
    pub http_listen: String,
    /// text or json.
    #[serde(with = "as_value_enum")]
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long the requests in flight may take to finish.
    pub drain_timeout_secs: u64,
    /// Most open connections of the gRPC listener; more are closed on arrival. 0: no limit
    /// but the process's file limit.
    pub max_connections: usize,
    /// Seconds a connection may stay open without a call on it (pings do not count); 0:
    /// for ever.
    pub idle_connection_timeout_secs: u64,
    /// Largest gRPC message decoded or encoded, in bytes. Default: room for the largest
    /// request, `(max_items_per_request + 1) * 64 KiB`, at least 4 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Largest metadata block of a call (headers, counted as HTTP/2 does); larger ones are
    /// refused with INVALID_ARGUMENT. The transport drops blocks over 4x this before any
    /// code of ours runs (the client then sees HTTP 431, which gRPC reads as UNKNOWN).
    pub max_metadata_bytes: usize,
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
            dtype: Dtype::Float32,
            max_batch_rows: 256,
            queue_capacity: 64,
            max_queue_row_steps: 0,
            max_concurrent_requests: 1024,
            max_concurrent_streams: 256,
            max_items_per_request: 64,
            metrics_listen: "127.0.0.1:9090".into(),
            http_listen: "off".into(),
            log_format: LogFormat::Text,
            drain_timeout_secs: 30,
            max_connections: 1024,
            idle_connection_timeout_secs: 300,
            max_message_bytes: None,
            max_metadata_bytes: 16 * 1024,
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
        let cfg: Self = sources::layered(args, env, dir)?
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
        if self.max_concurrent_requests > MAX_CONNECTIONS {
            return Err(format!(
                "max_concurrent_requests: must be in 0..={MAX_CONNECTIONS} (0: no limit), got {}",
                self.max_concurrent_requests
            ));
        }
        if self.max_queue_row_steps > MAX_QUEUE_ROW_STEPS {
            return Err(format!(
                "max_queue_row_steps: must be in 0..={MAX_QUEUE_ROW_STEPS} (0: auto), got {}",
                self.max_queue_row_steps
            ));
        }
        if self.max_connections > MAX_CONNECTIONS {
            return Err(format!(
                "max_connections: must be in 0..={MAX_CONNECTIONS} (0: no limit), got {}",
                self.max_connections
            ));
        }
        if self.idle_connection_timeout_secs > MAX_IDLE_SECS {
            return Err(format!(
                "idle_connection_timeout_secs: must be in 0..={MAX_IDLE_SECS} (0: never), got {}",
                self.idle_connection_timeout_secs
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
        const METADATA: std::ops::RangeInclusive<usize> = 1024..=(1 << 20);
        if !METADATA.contains(&self.max_metadata_bytes) {
            return Err(format!(
                "max_metadata_bytes: must be in {}..={}, got {}",
                METADATA.start(),
                METADATA.end(),
                self.max_metadata_bytes
            ));
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
        let metrics = self.metrics_addr()?;
        if let Some(m) = metrics {
            if m.port() != 0 && m == self.listen {
                return Err(format!(
                    "metrics_listen: must differ from listen (both are {m})"
                ));
            }
        }
        if let Some(h) = self.http_addr()? {
            if h.port() != 0 && (h == self.listen || Some(h) == metrics) {
                return Err(format!(
                    "http_listen: must differ from listen and metrics_listen ({h})"
                ));
            }
            if set(&self.tls_cert) && !h.ip().is_loopback() {
                return Err(format!(
                    "http_listen: the HTTP listener is plaintext, so with TLS on (tls_cert) it \
                     must be a loopback address (put a TLS proxy in front), got {h}"
                ));
            }
        }
        Ok(())
    }

    /// The metrics listener's address, `None` when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        optional_addr("metrics_listen", &self.metrics_listen)
    }

    /// The HTTP listener's address, `None` when disabled.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, String> {
        optional_addr("http_listen", &self.http_listen)
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

    /// The transport's limit on a call's header block (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE):
    /// room above `max_metadata_bytes`, so that a block a little over it reaches our check
    /// and gets a gRPC status, not a transport refusal.
    pub fn header_list_limit(&self) -> u32 {
        u32::try_from(self.max_metadata_bytes.saturating_mul(4)).unwrap_or(u32::MAX)
    }

    /// The configuration as `diffgap config print` shows it: TOML, with the derived
    /// `max_message_bytes` filled in.
    pub fn to_toml(&self) -> Result<String, String> {
        let mut shown = self.clone();
        shown.max_message_bytes = Some(self.message_limit());
        toml::to_string(&shown).map_err(|e| format!("rendering the configuration: {e}"))
    }
}

/// The address of an optional listener's key: `None` for "" or "off".
fn optional_addr(key: &str, value: &str) -> Result<Option<SocketAddr>, String> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{key}: '{v}' is not an address (host:port), \"\" or \"off\""))
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
    fn the_denoiser_dtype_comes_from_the_environment_and_unknown_names_are_refused() {
        let no_file = Path::new("/nonexistent-diffgap-config-dir");
        let env = |v: &str| [("DIFFGAP_DTYPE".to_string(), v.to_string())];
        let args = ServeArgs::default();
        assert_eq!(ServeConfig::default().dtype, Dtype::Float32);
        let cfg = ServeConfig::load_from(&args, env("bfloat16"), no_file).expect("bfloat16");
        assert_eq!(cfg.dtype, Dtype::Bfloat16);
        let e = ServeConfig::load_from(&args, env("float16"), no_file).expect_err("float16");
        assert!(e.contains("dtype") && e.contains("bfloat16"), "{e}");
    }

    #[test]
    fn the_http_listener_is_off_by_default_and_checked() {
        assert_eq!(ServeConfig::default().http_addr(), Ok(None));
        let on = ServeConfig {
            http_listen: "127.0.0.1:8080".into(),
            ..ServeConfig::default()
        };
        assert_eq!(on.validate(), Ok(()));
        let bad = ServeConfig {
            http_listen: "nowhere".into(),
            ..ServeConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("http_listen: "));
        let same = ServeConfig {
            http_listen: "127.0.0.1:9090".into(),
            ..ServeConfig::default()
        };
        assert!(same
            .validate()
            .unwrap_err()
            .starts_with("http_listen: must differ"));
        let exposed = ServeConfig {
            http_listen: "0.0.0.0:8080".into(),
            tls_cert: "cert.pem".into(),
            tls_key: "key.pem".into(),
            ..ServeConfig::default()
        };
        assert!(exposed.validate().unwrap_err().contains("loopback"));
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
    fn connection_limits_out_of_range_name_the_key() {
        let off = ServeConfig {
            max_connections: 0,
            idle_connection_timeout_secs: 0,
            ..ServeConfig::default()
        };
        assert_eq!(off.validate(), Ok(()), "0 is no limit");
        let many = ServeConfig {
            max_connections: MAX_CONNECTIONS + 1,
            ..ServeConfig::default()
        };
        assert!(many.validate().unwrap_err().starts_with("max_connections:"));
        let long = ServeConfig {
            idle_connection_timeout_secs: MAX_IDLE_SECS + 1,
            ..ServeConfig::default()
        };
        assert!(long
            .validate()
            .unwrap_err()
            .starts_with("idle_connection_timeout_secs:"));
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
