//! The integration tests that can share a process, as one test binary: each file directly
//! under `tests/` is a binary of its own and each links libtorch, so 33 of them took most of
//! `cargo test --release`'s compile time. With these 24 as one binary, rebuilding every test
//! binary after a change to `tests/support/` went from about 7m46s to 3m25s on a 2-core
//! machine. Each former `tests/NAME.rs` is the module `NAME` here (run one with
//! `cargo test --release --test integration NAME::`); `tests/support/` stays where it is.
//!
//! Tests that read the process-wide Prometheus recorder (the metrics of every server in the
//! process) stay binaries of their own: a counter delta or gauge they read must not move with
//! the calls of other modules' tests running beside them in the same process. Those are
//! `tests/admission.rs`, `tests/client_faults.rs`, `tests/connections.rs`, `tests/drain.rs`,
//! `tests/http_api.rs`, `tests/security.rs`, `tests/service_deadlines.rs` and
//! `tests/service_ops.rs`; and `tests/fd_limit.rs`, whose child server's CPU time over a second
//! at its file limit is bounded.
//!
//! `fuzz_regressions` installs a panic hook for the whole process, but it counts panics per
//! thread and chains to the hook before it, so a panic in another module's test (on its own
//! thread) neither counts against a fuzz target nor goes unreported.

#[path = "../support/mod.rs"]
mod support;

mod artifact;
mod baselines;
mod catalog_export;
mod cli;
mod corpus;
mod data_files;
mod encoders;
mod fair_share;
mod fuzz_regressions;
mod http_openai;
mod http_openapi;
mod http_playground;
mod layout;
mod loadgen;
mod rank_modes;
mod real_model;
mod reload;
mod sampling;
mod scheduler;
mod script_commands;
mod service;
mod service_features;
mod soak;
mod training;
