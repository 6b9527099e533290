//! `cxr-triage use-model --db STORE --reader NAME [--weights CARD]`: switches the model in force
//! at a site, as an audited event.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use super::audit::open_existing_store;

/// Arguments of `use-model`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Records, in the store's audited threshold log, that the site now uses the model at CARD (the \
shipped model when --weights is left out), with its threshold: the threshold set at this site \
for those weights if there is one, else the adapted model's locally chosen threshold or the \
model card's. From then on the window, `score --db`, `eval --db`, `threshold` and `adapt` on this \
store use it unless given --weights. The previous model stays where it is: switch back the same \
way.")]
pub struct UseModelArgs {
    /// The decision store of the site.
    #[arg(long, value_name = "STORE")]
    pub db: PathBuf,
    /// Who switches (recorded in the audit trail).
    #[arg(long, value_name = "NAME")]
    pub reader: String,
    /// The model card to use (weights beside it) [default: the shipped model].
    #[arg(long, value_name = "CARD")]
    pub weights: Option<PathBuf>,
    /// Why, in the reader's words (recorded with the switch).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Runs `use-model`.
pub fn run(args: &UseModelArgs) -> anyhow::Result<ExitCode> {
    if args.reader.trim().is_empty() {
        bail!("say who switches the model: --reader NAME");
    }
    let store = open_existing_store(Some(&args.db))?;
    let (_, current) = super::model_for_store(None, &store)?;
    let path = super::model_path(args.weights.as_deref())?;
    let path = path.canonicalize().unwrap_or(path);
    let next = super::load_classifier(Some(&path))?;
    let (from_threshold, _) = super::threshold_in_force(&store, &current)?;
    let (threshold, source) = super::threshold_in_force(&store, &next)?;
    let event = crate::model::local::record_model_switch(
        &store,
        &args.reader,
        &args.reason,
        (&current, from_threshold),
        (&next, &path, threshold),
        serde_json::json!({ "threshold_source": source }),
    )?;
    println!(
        "model in force: {} -> {} (threshold {threshold:.4}, {source}), recorded as threshold \
         change {} by {} at {} (hash {})",
        current.card().model_id,
        next.card().model_id,
        event.id,
        event.reader,
        event.recorded_at,
        event.row_hash
    );
    Ok(ExitCode::SUCCESS)
}
