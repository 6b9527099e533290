//! The command line: one file per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod adapt;
mod audit;
mod eval;
mod explain;
mod export;
mod import;
mod open;
mod qa;
mod scan;
mod score;
mod store;
mod threshold;
mod train;
mod use_model;

pub use open::{OpenArgs, SCREENSHOT_ENV, STATS_ENV};

/// Offline chest X-ray pneumonia triage.
///
/// Without a subcommand, opens the review window (on DIR, if given).
#[derive(Debug, Parser)]
#[command(name = "cxr-triage", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: open the review window).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The window's arguments.
    #[command(flatten)]
    pub open: OpenArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every study in a folder with its format, size and bit depth, or why it cannot be read.
    Scan(scan::ScanArgs),
    /// Measure a model on labelled folders (NORMAL/, PNEUMONIA/), or on the studies readers
    /// labelled in a decision store (--db): metrics, report.json, plots.
    Eval(eval::EvalArgs),
    /// Score every study in a folder and list them, likely pneumonia first.
    Score(score::ScoreArgs),
    /// Write the Grad-CAM heat map of one study over it, as a PNG.
    Explain(explain::ExplainArgs),
    /// Train the CNN on labelled folders and write its weights and model card.
    Train(train::TrainArgs),
    /// Check the audit trail of decisions (`audit verify`).
    Audit(audit::AuditArgs),
    /// Write decisions to a CSV file: reviewed studies, all known studies, or the full event log.
    Export(export::ExportArgs),
    /// Record labels corrected outside the app (a CSV file) as audited relabel events.
    Import(import::ImportArgs),
    /// Choose the threshold on the studies readers labelled (target sensitivity) and apply it as
    /// an audited change.
    Threshold(threshold::ThresholdArgs),
    /// Fine-tune the model on the studies readers labelled at this site (held-out check before
    /// and after; writes a new model, never over a file).
    Adapt(adapt::AdaptArgs),
    /// Switch the model in force at a site (a store) to another model card, such as one `adapt`
    /// wrote, or back to the shipped model: an audited event.
    UseModel(use_model::UseModelArgs),
    /// Quality assurance: readers' agreement with the AI and with each other (Cohen's kappa),
    /// per reader and per month, the disagreement queue and blind-first reading.
    Qa(qa::QaArgs),
    /// A department's store on a PostgreSQL server: set it up (`store init`), or copy a
    /// decision log between stores (`store copy --from A --to B`).
    Store(store::StoreArgs),
}

/// Parses the command line, runs the subcommand and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        None => open::run(cli.open),
        Some(Command::Scan(args)) => scan::run(&args),
        Some(Command::Train(args)) => train::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Score(args)) => score::run(&args),
        Some(Command::Explain(args)) => explain::run(&args),
        Some(Command::Audit(args)) => audit::run(&args),
        Some(Command::Export(args)) => export::run(&args),
        Some(Command::Import(args)) => import::run(&args),
        Some(Command::Threshold(args)) => threshold::run(&args),
        Some(Command::Adapt(args)) => adapt::run(&args),
        Some(Command::UseModel(args)) => use_model::run(&args),
        Some(Command::Qa(args)) => qa::run(&args),
        Some(Command::Store(args)) => store::run(&args),
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

/// The model card at `path`, or the shipped model's (see [`crate::install::find_shipped_model`]).
pub(crate) fn model_path(path: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    match path {
        Some(p) => Ok(p.to_owned()),
        None => crate::install::find_shipped_model().map_err(|e| anyhow::anyhow!(e)),
    }
}

/// Loads the model card at `path`, or the shipped model when `path` is `None`.
pub(crate) fn load_classifier(
    path: Option<&std::path::Path>,
) -> anyhow::Result<crate::model::Classifier> {
    let path = model_path(path)?;
    crate::model::Classifier::load(&path)
        .map_err(|e| anyhow::anyhow!("cannot load the model {}: {e}", path.display()))
}

/// The model a command on `store` uses: the card at `explicit` when given, else the model in force
/// at the site (the latest audited switch, see [`crate::audit::DecisionStore::model_in_force`]),
/// else the shipped model. A model in force that cannot be loaded, or whose weights are not the
/// ones switched to, is an error: another model is never used in its place without a word.
pub(crate) fn model_for_store(
    explicit: Option<&std::path::Path>,
    store: &crate::audit::DecisionStore,
) -> anyhow::Result<(std::path::PathBuf, crate::model::Classifier)> {
    if explicit.is_none()
        && let Some(in_force) = crate::model::local::load_model_in_force(store)?
    {
        return Ok(in_force);
    }
    let path = model_path(explicit)?;
    let classifier = load_classifier(Some(&path))?;
    Ok((path, classifier))
}

/// The threshold in force for `classifier` in `store`, and where it comes from, in words (see
/// [`crate::model::local::threshold_in_force`]).
pub(crate) fn threshold_in_force(
    store: &crate::audit::DecisionStore,
    classifier: &crate::model::Classifier,
) -> anyhow::Result<(f32, String)> {
    let (threshold, note) = crate::model::local::threshold_in_force(store, classifier)?;
    Ok((
        threshold,
        note.unwrap_or_else(|| "the model card's".to_owned()),
    ))
}
