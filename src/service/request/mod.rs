pub mod bridge;
pub mod catalog;
pub mod rank;
pub mod raw_input;
pub mod reload;
pub mod repository;
pub mod validate;
