//! `cxr-triage import --csv FILE --reader NAME [--db PATH]`.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::audit::{EXIT_FINDINGS, open_existing_store};
use crate::audit::import_csv;

/// Arguments of `import`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The CSV needs a header row with the columns `path` or `sha256` (or both), `label` (NORMAL or \
PNEUMONIA, any case, or 0/1) and, optionally, `reason`. A relative path is taken relative to the \
CSV file's folder; files are only read, to hash them. Each good row becomes an audited relabel \
event by NAME. Rows naming a study the store has never seen, an invalid label or a file that \
cannot be read are listed with their line number and not recorded; the other rows are.

Exit status: 0 when every row was recorded, 2 when any row was rejected (the others are \
recorded), 1 when the import could not run or the store failed (then no row is recorded).")]
pub struct ImportArgs {
    /// The CSV file of corrected labels.
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Who made the corrections (recorded as the reader of each event).
    #[arg(long, value_name = "NAME")]
    pub reader: String,
    /// The decision store (default: decisions.sqlite3 in the user's data folder).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

/// Runs `import`.
pub fn run(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(args.db.as_deref())?;
    // Checked before opening: opening a named pipe would block, and a device such as /dev/zero
    // never ends.
    let meta = std::fs::metadata(&args.csv)
        .with_context(|| format!("cannot open the CSV file {}", args.csv.display()))?;
    if !meta.is_file() {
        anyhow::bail!(
            "{} is not a regular file: give the CSV file of corrected labels",
            args.csv.display()
        );
    }
    let file = File::open(&args.csv)
        .with_context(|| format!("cannot open the CSV file {}", args.csv.display()))?;
    let base_dir = args
        .csv
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), ToOwned::to_owned);
    let report = import_csv(&store, file, &base_dir, &args.reader)?;
    for row in &report.rejected {
        println!("line {}: not recorded: {}", row.line, row.problem);
    }
    println!(
        "recorded {} relabel events, rejected {} rows",
        report.recorded.len(),
        report.rejected.len()
    );
    if let Some(err) = report.stopped_by {
        return Err(anyhow::Error::new(err).context("no row was recorded"));
    }
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}
