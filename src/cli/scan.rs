//! `cxr-triage scan DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// The folder to scan, recursively.
    pub dir: PathBuf,
}

/// Runs `scan`.
pub fn run(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("scanning {} is not implemented yet", args.dir.display())
}
