//! The command line: one file per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod export;
mod import;
mod scan;

/// Offline chest X-ray pneumonia triage.
#[derive(Debug, Parser)]
#[command(name = "cxr-triage", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every study in a folder with its format, size and bit depth, or why it cannot be read.
    Scan(scan::ScanArgs),
    /// Check the audit trail of decisions (`audit verify`).
    Audit(audit::AuditArgs),
    /// Write decisions to a CSV file: reviewed studies, all known studies, or the full event log.
    Export(export::ExportArgs),
    /// Record labels corrected outside the app (a CSV file) as audited relabel events.
    Import(import::ImportArgs),
}

/// Parses the command line, runs the subcommand and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => scan::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Import(args) => import::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
