//! The API layer: the tonic handlers of `diffgap.v1.Diffgap` ([`service`], one file per RPC
//! family), what they share ([`context`]), request ids and timing headers, `grpc-timeout`
//! deadlines and [`security`]; the accepted connections and their limits ([`listener`]) and
//! the health service ([`health`]). No request logic: it hands requests to
//! [`crate::service::request`].

pub mod admission;
pub mod bridge;
pub mod codec;
pub mod context;
pub mod deadline;
pub mod embed;
pub mod faults;
pub mod health;
pub mod held_body;
pub mod http;
pub mod info;
pub mod listener;
pub mod observe;
pub mod rank;
pub mod request_id;
pub mod security;
pub mod service;
pub mod stream;

pub use context::Limits;
pub use service::DiffgapService;
