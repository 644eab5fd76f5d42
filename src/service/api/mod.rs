pub mod bridge;
pub mod codec;
pub mod context;
pub mod deadline;
pub mod embed;
pub mod faults;
pub mod info;
pub mod rank;
pub mod request_id;
pub mod security;
pub mod service;
pub mod stream;

pub use context::Limits;
pub use service::DiffgapService;
