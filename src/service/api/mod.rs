pub mod request_id;
pub mod security;
pub mod service;
