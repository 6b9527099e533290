//! `cxr-triage scan DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;

use crate::io::{self, DiscoveredFile, LoadError, Study};

/// Arguments of `scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// The folder to scan, recursively.
    pub dir: PathBuf,
}

/// Runs `scan`: one line per study (path relative to DIR, format, size, bits stored,
/// photometric interpretation, then `OK` or the reason it cannot be read), the folder problems,
/// and a summary. Succeeds whenever DIR itself could be read, even if studies failed.
pub fn run(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match scan(&args.dir, &mut out) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader of our output went away (`scan DIR | head`): not an error.
        Err(ScanError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(ScanError::Output(err)) => Err(anyhow::Error::new(err).context("cannot write output")),
        Err(ScanError::Folder(err)) => Err(anyhow::anyhow!(
            "cannot scan the folder: {err}: {}",
            args.dir.display()
        )),
    }
}

enum ScanError {
    Folder(LoadError),
    Output(std::io::Error),
}

impl From<std::io::Error> for ScanError {
    fn from(err: std::io::Error) -> Self {
        Self::Output(err)
    }
}

/// How many studies are decoded at once before their lines are printed, per worker thread:
/// enough to keep every core busy, few enough that output starts at once and memory stays low.
const STUDIES_PER_THREAD_PER_BATCH: usize = 8;

fn scan(dir: &Path, out: &mut impl std::io::Write) -> Result<(), ScanError> {
    let discovery = io::discover(dir).map_err(ScanError::Folder)?;
    let batch = rayon::current_num_threads().max(1) * STUDIES_PER_THREAD_PER_BATCH;
    let mut failed = 0usize;
    for chunk in discovery.files.chunks(batch) {
        // Decoded in parallel, printed in order; each image is dropped as soon as its line is
        // written.
        let lines: Vec<(String, bool)> = chunk.par_iter().map(study_line).collect();
        for (line, ok) in lines {
            failed += usize::from(!ok);
            writeln!(out, "{line}")?;
        }
    }
    for (rel_path, problem) in &discovery.problems {
        writeln!(
            out,
            "{}  skipped: {problem}",
            crate::output::terminal_text(&rel_path.to_string_lossy())
        )?;
    }
    let studies = discovery.files.len();
    let mut summary = format!(
        "{studies} {}, {failed} failed",
        if studies == 1 { "study" } else { "studies" }
    );
    if !discovery.problems.is_empty() {
        let n = discovery.problems.len();
        summary.push_str(&format!(
            ", {n} {} skipped",
            if n == 1 { "entry" } else { "entries" }
        ));
    }
    writeln!(out, "{summary}")?;
    out.flush()?;
    Ok(())
}

/// The line for one study, and whether it loaded.
fn study_line(file: &DiscoveredFile) -> (String, bool) {
    // One line per study, whatever the file is called (a new line or an escape sequence in a
    // name is printed as \x0A or \x1B).
    let name = file.rel_path.to_string_lossy();
    let path = crate::output::terminal_text(&name);
    match io::load_study(&file.path) {
        Ok(study) => (format!("{path}  {}  OK", describe(&study)), true),
        Err(err) => (format!("{path}  error: {err}"), false),
    }
}

fn describe(study: &Study) -> String {
    let meta = &study.meta;
    format!(
        "{}  {}x{}  {}-bit  {}",
        meta.format, meta.width, meta.height, meta.bits_stored, meta.photometric
    )
}
