//! `cxr-triage import --csv FILE --reader NAME [--db STORE]`.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::audit::{EXIT_FINDINGS, open_existing_log};
use crate::audit::import_csv;

/// Arguments of `import`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The CSV needs a header row with the columns `path` or `sha256` (or both), `label` (NORMAL or \
PNEUMONIA, any case, or 0/1) and, optionally, `reason`. A relative path is taken relative to the \
CSV file's folder; files are only read, to hash them. Each good row becomes an audited relabel \
event by NAME (on a PostgreSQL store, by the database user signed in: --reader may be left \
out, and must name that user if given). Rows naming a study the store has never seen, an \
invalid label or a file that cannot be read are listed with their line number and not recorded; the other rows are.

Exit status: 0 when every row was recorded, 2 when any row was rejected (the others are \
recorded), 1 when the import could not run or the store failed (then no row is recorded).")]
pub struct ImportArgs {
    /// The CSV file of corrected labels.
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Who made the corrections (recorded as the reader of each event); needed on a SQLite
    /// store; on a PostgreSQL store the database user is the reader.
    #[arg(long, value_name = "NAME")]
    pub reader: Option<String>,
    /// The decision store: a SQLite file (default: decisions.sqlite3 in the user's data folder)
    /// or a PostgreSQL server (postgres://…).
    #[arg(long, value_name = "STORE")]
    pub db: Option<PathBuf>,
}

/// Runs `import`.
pub fn run(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_existing_log(args.db.as_deref())?;
    let reader = match (store.authenticated_reader(), args.reader.as_deref()) {
        (Some(user), Some(named)) if named.trim() != user => anyhow::bail!(
            "on this PostgreSQL store the events are recorded as the database user {user}, not \
             {}: leave out --reader, or connect as that reader",
            named.trim()
        ),
        (Some(user), _) => user.to_owned(),
        (None, Some(named)) => named.to_owned(),
        (None, None) => anyhow::bail!("give --reader NAME: who made the corrections"),
    };
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
    let report = import_csv(store.as_mut(), file, &base_dir, &reader)?;
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
