//! The configuration's key names: a leaf, so that the flags and the layered sources can both
//! check against it.

/// Every key of [`super::ServeConfig`]; only these are read from the environment (other `DIFFGAP_*`
/// variables, such as `DIFFGAP_CONFIG` or the scripts' `DIFFGAP_ROOT`, are not keys).
pub const KEYS: &[&str] = &[
    "model",
    "listen",
    "device",
    "dtype",
    "max_batch_rows",
    "queue_capacity",
    "max_queue_row_steps",
    "max_concurrent_requests",
    "max_concurrent_streams",
    "max_items_per_request",
    "metrics_listen",
    "http_listen",
    "log_format",
    "drain_timeout_secs",
    "max_connections",
    "idle_connection_timeout_secs",
    "max_message_bytes",
    "max_metadata_bytes",
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
