//! `cxr-triage [DIR]`: the review window, the default command.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::app::{self, AppConfig};

/// Arguments of the window (given without a subcommand).
#[derive(Debug, Default, clap::Args)]
pub struct OpenArgs {
    /// A folder of studies to open at once (JPEG, PNG, DICOM; searched recursively).
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A CSV file of `path,label` rows: the studies' dataset labels, for label correction.
    /// Folders named NORMAL or PNEUMONIA give labels too.
    #[arg(long, value_name = "FILE.csv")]
    pub labels: Option<PathBuf>,
    /// The reader's name for the audit trail (default: asked at start, the OS user suggested).
    #[arg(long, value_name = "NAME")]
    pub reader: Option<String>,
    /// The decision store: a SQLite file, or the department's PostgreSQL store as
    /// `postgres://USER@HOST/DATABASE`, where decisions are recorded under USER (default: the
    /// `CXR_TRIAGE_DB` environment variable, else decisions.sqlite3 in the user's data folder).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// The model card to score with (default: the shipped model).
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// Open the demo studies that come with cxr-triage (instead of DIR).
    #[arg(long, conflicts_with = "dir")]
    pub demo: bool,
    /// The waiting-time cap in minutes: an unreviewed study that has waited longer (since its
    /// DICOM study time, else since its file arrived) goes to the top of the worklist whatever
    /// its score. 0 turns the cap off.
    #[arg(long, value_name = "MINUTES", default_value_t = 60)]
    pub wait_limit: u32,
    /// Blind-first reading: each study's score, AI label, rank and heat map stay hidden until
    /// the reader's own call (N or P); then they appear, and the reader keeps or revises the
    /// call. Both calls are audited.
    #[arg(long)]
    pub blind_first: bool,
    /// The share of studies, in percent, queued for a second read by another reader on a
    /// shared store, besides every study where the reader overrode the AI.
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    pub second_reads: f64,
}

/// The environment variable that makes the window save a screenshot once the scores are in,
/// then close (see `scripts/screenshot.sh`).
pub const SCREENSHOT_ENV: &str = "CXR_TRIAGE_SCREENSHOT";

/// The environment variable that makes the window print frame times, time to first rows and
/// peak memory on exit.
pub const STATS_ENV: &str = "CXR_TRIAGE_STATS";

/// Opens the window.
pub fn run(mut args: OpenArgs) -> anyhow::Result<ExitCode> {
    if args.demo {
        args.dir = Some(crate::install::find_demo_folder().map_err(|e| anyhow::anyhow!(e))?);
    }
    if let Some(dir) = &args.dir
        && !dir.is_dir()
    {
        anyhow::bail!("not a folder: {}", dir.display());
    }
    if let Some(labels) = &args.labels
        && !labels.is_file()
    {
        anyhow::bail!("the label file does not exist: {}", labels.display());
    }
    let screenshot = std::env::var_os(SCREENSHOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let config = AppConfig {
        folder: args.dir,
        labels_csv: args.labels,
        reader: args.reader.filter(|r| !r.trim().is_empty()),
        db_path: args
            .db
            .or_else(|| std::env::var_os("CXR_TRIAGE_DB").map(PathBuf::from)),
        follow_site_model: args.weights.is_none(),
        weights: args.weights.unwrap_or_else(default_model),
        print_stats: std::env::var_os(STATS_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
        persist_preferences: screenshot.is_none(),
        screenshot,
        store_write_delay: None,
        blind_first: args.blind_first,
        second_read_share: (args.second_reads / 100.0).clamp(0.0, 1.0),
        wait_limit: (args.wait_limit > 0)
            .then(|| std::time::Duration::from_secs(u64::from(args.wait_limit) * 60)),
    };
    app::run(config).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the window: {e} (is a graphical session available? see the README's \
             prerequisites)"
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The shipped model (see [`crate::install::find_shipped_model`]); when it is nowhere, the first
/// place looked in, so that the window says it cannot load it there and still lists studies.
pub(crate) fn default_model() -> PathBuf {
    crate::install::find_shipped_model().unwrap_or_else(|_| {
        crate::install::shipped_model_candidates()
            .into_iter()
            .next()
            .unwrap_or_else(|| PathBuf::from(crate::model::DEFAULT_MODEL))
    })
}
