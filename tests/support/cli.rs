//! The `diffgap` binary of this build, run as a user runs it.

use std::process::Command;

/// A command running the `diffgap` binary Cargo built for these tests.
pub fn diffgap_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_diffgap"))
}
