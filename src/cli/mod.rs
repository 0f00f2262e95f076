//! STUB: the `vigil` command line, being written.

/// Entry point of the `vigil` binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
