//! `cxr-triage threshold --db STORE --target-sensitivity S --reader NAME`: a threshold chosen on
//! the studies readers labelled, applied as an audited event.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use super::audit::open_existing_store;
use crate::model::local::{self, ThresholdProposal};

/// Arguments of `threshold`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The new threshold is the highest one at which the model finds at least the target share of the \
studies the readers labelled PNEUMONIA. It is recorded, with the figures it rests on, as an \
audited threshold change by NAME; from then on AI labels in `score --db`, `eval --db` and \
exports follow it. Scores never change. It needs at least 20 reviewed studies of each label.")]
pub struct ThresholdArgs {
    /// The decision store whose reviewed studies choose the threshold.
    #[arg(long, value_name = "STORE")]
    pub db: PathBuf,
    /// Who applies the change (recorded in the audit trail).
    #[arg(long, value_name = "NAME")]
    pub reader: String,
    /// The share of the readers' PNEUMONIA studies the model must flag, 0 to 1.
    #[arg(long, default_value_t = 0.95, value_name = "S")]
    pub target_sensitivity: f64,
    /// The model card (weights beside it) [default: the model in force at this site].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Only studies last seen under this folder.
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// Why, in the reader's words (recorded with the change).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Show the figures at the new threshold without applying it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `threshold`.
pub fn run(args: &ThresholdArgs) -> anyhow::Result<ExitCode> {
    if !(args.target_sensitivity > 0.0 && args.target_sensitivity <= 1.0) {
        bail!("the target sensitivity must be above 0 and at most 1");
    }
    if args.reader.trim().is_empty() {
        bail!("say who applies the change: --reader NAME");
    }
    let store = open_existing_store(Some(&args.db))?;
    let (_, classifier) = super::model_for_store(args.weights.as_deref(), &store)?;
    let (old, source) = super::threshold_in_force(&store, &classifier)?;
    let (cases, left_out) =
        local::local_cases(&store, &classifier, args.folder.as_deref(), &mut |_, _| {})?;
    for l in &left_out {
        println!("left out: {}: {}", l.why, l.path.display());
    }
    let proposal = ThresholdProposal::new(&cases, old, args.target_sensitivity)
        .map_err(|why| anyhow::anyhow!("the threshold was not changed: {why}"))?;
    let card = classifier.card();
    let new = proposal.new;
    println!(
        "model {} on {} reviewed studies ({} PNEUMONIA, {} NORMAL)",
        card.model_id,
        cases.len(),
        proposal.pneumonia,
        proposal.normal
    );
    println!(
        "\nnow: threshold {old:.4} ({source})\n{}",
        proposal.before.text()
    );
    println!(
        "\nproposed: threshold {new:.4} (target sensitivity {})\n{}",
        args.target_sensitivity,
        proposal.after.text()
    );
    if args.dry_run {
        println!("\nnot applied (--dry-run)");
        return Ok(ExitCode::SUCCESS);
    }
    let event = store.record_threshold_change(&proposal.change(
        &classifier,
        &args.reader,
        &args.reason,
        args.folder.as_deref(),
        left_out.len(),
        store.head_hash()?.as_deref(),
    ))?;
    println!(
        "\napplied: threshold {old:.4} -> {new:.4} for model {}, recorded as threshold change {} by {} at {} (hash {})",
        card.model_id, event.id, event.reader, event.recorded_at, event.row_hash
    );
    Ok(ExitCode::SUCCESS)
}
