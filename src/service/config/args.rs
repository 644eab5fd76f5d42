//! The flags of `diffgap serve`, as overrides of the configuration's keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::keys::KEYS;
use super::serde_as::value_name;
use crate::device::{DeviceChoice, Dtype};
use crate::service::ops::telemetry::LogFormat;
use crate::service::ops::threads::IoThreadPolicy;
use crate::service::types::Batching;

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
    /// Number format of the denoiser network: float32, or bfloat16 (faster where the CPU
    /// multiplies it natively, AMX or AVX-512 BF16, and on GPUs) [default: float32; env:
    /// DIFFGAP_DTYPE].
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// Most embedding rows the model worker batches into one pass [default: 256; env:
    /// DIFFGAP_MAX_BATCH_ROWS].
    #[arg(long)]
    pub max_batch_rows: Option<usize>,
    /// Requests that may wait for the model worker; more are refused with RESOURCE_EXHAUSTED
    /// [default: 64; env: DIFFGAP_QUEUE_CAPACITY].
    #[arg(long)]
    pub queue_capacity: Option<usize>,
    /// Most row-steps outstanding on one model instance; 0: 100 per max_batch_rows, at least
    /// 25600
    /// [default: 0; env: DIFFGAP_MAX_QUEUE_ROW_STEPS].
    #[arg(long)]
    pub max_queue_row_steps: Option<usize>,
    /// Most model calls in flight, checked before decoding; 0: no limit [default: 1024;
    /// env: DIFFGAP_MAX_CONCURRENT_REQUESTS].
    #[arg(long)]
    pub max_concurrent_requests: Option<usize>,
    /// Most concurrent calls on one connection; 0: the HTTP/2 default [default: 256; env:
    /// DIFFGAP_MAX_CONCURRENT_STREAMS].
    #[arg(long)]
    pub max_concurrent_streams: Option<u32>,
    /// Most items of a Bridge request and most candidates of a Rank request [default: 64;
    /// env: DIFFGAP_MAX_ITEMS_PER_REQUEST].
    #[arg(long)]
    pub max_items_per_request: Option<usize>,
    /// Prometheus /metrics listener address, "" or "off" to disable [default:
    /// 127.0.0.1:9090; env: DIFFGAP_METRICS_LISTEN].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// HTTP/JSON listener address (the API and the OpenAI-compatible /v1/embeddings), "" or
    /// "off" to disable [default: off; env: DIFFGAP_HTTP_LISTEN].
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Log format [default: text; env: DIFFGAP_LOG_FORMAT].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds the requests in flight may take to finish after SIGTERM/SIGINT [default: 30;
    /// env: DIFFGAP_DRAIN_TIMEOUT_SECS].
    #[arg(long)]
    pub drain_timeout_secs: Option<u64>,
    /// Most open connections of the gRPC listener, more are closed on arrival; 0: no limit
    /// [default: 1024; env: DIFFGAP_MAX_CONNECTIONS].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds a connection may stay open without a call; 0: for ever [default: 300; env:
    /// DIFFGAP_IDLE_CONNECTION_TIMEOUT_SECS].
    #[arg(long)]
    pub idle_connection_timeout_secs: Option<u64>,
    /// Largest gRPC message in bytes [default: derived from max_items_per_request; env:
    /// DIFFGAP_MAX_MESSAGE_BYTES].
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Largest metadata block of a call in bytes; larger ones get INVALID_ARGUMENT
    /// [default: 16384; env: DIFFGAP_MAX_METADATA_BYTES].
    #[arg(long)]
    pub max_metadata_bytes: Option<usize>,
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
    pub(super) fn overrides(&self) -> Vec<(&'static str, String)> {
        let o: Vec<(&'static str, Option<String>)> = vec![
            (
                "model",
                self.model.as_ref().map(|p| p.display().to_string()),
            ),
            ("listen", self.listen.as_ref().map(ToString::to_string)),
            ("device", self.device.as_ref().map(ToString::to_string)),
            ("dtype", self.dtype.map(value_name)),
            (
                "max_batch_rows",
                self.max_batch_rows.as_ref().map(ToString::to_string),
            ),
            (
                "queue_capacity",
                self.queue_capacity.as_ref().map(ToString::to_string),
            ),
            (
                "max_queue_row_steps",
                self.max_queue_row_steps.as_ref().map(ToString::to_string),
            ),
            (
                "max_concurrent_requests",
                self.max_concurrent_requests
                    .as_ref()
                    .map(ToString::to_string),
            ),
            (
                "max_concurrent_streams",
                self.max_concurrent_streams
                    .as_ref()
                    .map(ToString::to_string),
            ),
            (
                "max_items_per_request",
                self.max_items_per_request.as_ref().map(ToString::to_string),
            ),
            ("metrics_listen", self.metrics_listen.clone()),
            ("http_listen", self.http_listen.clone()),
            ("log_format", self.log_format.map(value_name)),
            (
                "drain_timeout_secs",
                self.drain_timeout_secs.as_ref().map(ToString::to_string),
            ),
            (
                "max_connections",
                self.max_connections.as_ref().map(ToString::to_string),
            ),
            (
                "idle_connection_timeout_secs",
                self.idle_connection_timeout_secs
                    .as_ref()
                    .map(ToString::to_string),
            ),
            (
                "max_message_bytes",
                self.max_message_bytes.as_ref().map(ToString::to_string),
            ),
            (
                "max_metadata_bytes",
                self.max_metadata_bytes.as_ref().map(ToString::to_string),
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

/// A path flag as an override value.
fn path_value(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}
