//! `cxr-triage export --csv FILE [--db PATH] [--folder DIR] [--all | --events]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::audit::open_existing_store;
use crate::audit::{ExportKind, ExportOptions};

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The CSV file to write (replaced whole; a failed export leaves the old file untouched).
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// The decision store: a SQLite file (default: decisions.sqlite3 in the user's data folder)
    /// or `postgres://USER@HOST/DATABASE`.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Only studies last seen under this folder. The CSV may not be written inside it: study
    /// folders are never written to. Nor over the store, a known study or a symbolic link.
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// Also list known studies that nobody has reviewed yet.
    #[arg(long, conflicts_with = "events")]
    pub all: bool,
    /// Export the full event log (every event, every column) instead of one row per study.
    #[arg(long)]
    pub events: bool,
    /// Export even from a store that fails its audit check (`audit verify`); the file's first
    /// line then says so.
    #[arg(long)]
    pub force: bool,
}

/// Runs `export`.
pub fn run(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let kind = if args.events {
        ExportKind::Events
    } else if args.all {
        ExportKind::All
    } else {
        ExportKind::Reviewed
    };
    let opts = ExportOptions {
        kind,
        folder: args.folder.clone(),
        force: args.force,
    };
    let server = args
        .db
        .as_deref()
        .and_then(std::path::Path::to_str)
        .filter(|a| crate::audit::is_postgres_address(a));
    let (rows, receipt) = if let Some(address) = server {
        let mut store = crate::audit::PgStore::open(address)?;
        let rows = store.export_csv_to_file(&args.csv, &opts)?;
        let report = store.verify()?;
        let receipt = match report.head_hash {
            Some(head_hash) => crate::audit::Anchor {
                events: report.total_events,
                head_hash,
            }
            .receipt(),
            None if report.total_events == 0 => crate::audit::Anchor {
                events: 0,
                head_hash: String::new(),
            }
            .receipt(),
            None => "none: the decision log fails its check".to_owned(),
        };
        (rows, receipt)
    } else {
        let store = open_existing_store(args.db.as_deref())?;
        let rows = store.export_csv_to_file(&args.csv, &opts)?;
        (rows, store.anchor()?.receipt())
    };
    let what = match kind {
        ExportKind::Events => "events",
        ExportKind::All => "studies",
        ExportKind::Reviewed => "reviewed studies",
    };
    println!("exported {rows} {what} to {}", args.csv.display());
    // The log's length and last hash: kept elsewhere, it lets `audit verify --receipt` prove
    // later that no event was deleted from the end.
    println!("receipt: {receipt}");
    Ok(ExitCode::SUCCESS)
}
