//! The request core: a request validated into checked rows ([`validate`], [`bridge`]), Rank
//! planning and scoring ([`rank`]), raw inputs ([`raw_input`]), and the served models and
//! catalogs ([`repository`], [`reload`], [`catalog`]; exported for a vector database by
//! [`catalog_export`]; their files and gap picture for the playground, [`catalog_files`] and
//! [`catalog_gap`]). It hands rows to [`crate::service::worker`].

pub mod bridge;
pub mod catalog;
pub mod catalog_export;
pub mod catalog_files;
pub mod catalog_gap;
pub mod rank;
pub mod rank_mode;
pub mod rank_scores;
pub mod raw_input;
pub mod reload;
pub mod repository;
pub mod validate;
