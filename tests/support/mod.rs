//! Fixtures shared by the tests, one small module per kind: synthetic files and tiny trained
//! models ([`models`]), deterministic vectors and their comparisons ([`vectors`]), a served
//! model with its gRPC client ([`server`]), the metrics listener ([`metrics`]) and the
//! `diffgap` binary ([`cli`]). Everything is re-exported here: `support::tiny_model()`. Raw
//! TCP connections ([`net`]), `diffgap serve` as a child process ([`process`]) and the HTTP/JSON
//! client ([`http`]) are used by their module's name.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod http;
pub mod metrics;
pub mod models;
pub mod net;
pub mod process;
pub mod server;
pub mod vectors;

pub use cli::*;
pub use metrics::*;
pub use models::*;
pub use server::*;
pub use vectors::*;
