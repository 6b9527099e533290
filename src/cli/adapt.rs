//! `cxr-triage adapt --db STORE --out weights/NAME [--folder DIR]`: fine-tunes the model on the
//! studies readers labelled at this site.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::audit::open_existing_store;
use crate::model::Classifier;
use crate::model::adapt::{self, AdaptError, AdaptEvent, AdaptOptions, LocalSource};
use crate::model::local::LocalFigures;

/// Arguments of `adapt`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads every study with a reader's label from its recorded path (a file whose SHA-256 no longer \
matches is left out and listed), holds part of them out by patient (by study where there are no \
patient ids), fine-tunes the model on the rest and measures both models on the held-out part. \
Writes OUT.safetensors and OUT.json only when the adapted model's held-out ROC AUC is higher; its \
card records the parent model, the store's last event hash, the local labels and the held-out \
figures. Never overwrites a model file.

Exit status: 0 when a model was written; 1 when adaptation refused (too few labels, not better) \
or failed.")]
pub struct AdaptArgs {
    /// The decision store whose reviewed studies to learn from.
    #[arg(long, value_name = "STORE")]
    pub db: PathBuf,
    /// Output path without extension: writes OUT.safetensors and OUT.json (never over a file).
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    /// Only studies last seen under this folder.
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// The model to adapt (its card; weights beside it) [default: the shipped model].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Passes over the local training labels.
    #[arg(long, default_value_t = AdaptOptions::default().epochs)]
    pub epochs: usize,
    /// Peak learning rate (cosine decay).
    #[arg(long, default_value_t = AdaptOptions::default().learning_rate)]
    pub learning_rate: f64,
    /// Images per step.
    #[arg(long, default_value_t = AdaptOptions::default().batch_size)]
    pub batch_size: usize,
    /// Share of each label held out (by patient) to measure before and after.
    #[arg(long, default_value_t = AdaptOptions::default().held_out_fraction)]
    pub held_out: f64,
    /// The adapted model's threshold: the highest with at least this held-out sensitivity.
    #[arg(long, default_value_t = AdaptOptions::default().target_sensitivity)]
    pub target_sensitivity: f64,
    /// Seed of the split, shuffling, augmentation and dropout.
    #[arg(long, default_value_t = AdaptOptions::default().seed)]
    pub seed: u64,
    /// Train only the stages from this one on, and the head (0: every layer; 4: the head alone).
    #[arg(long, default_value_t = AdaptOptions::default().train_from_stage)]
    pub train_from_stage: usize,
    /// Make the adapted model the one in force at this site once it is written (an audited
    /// switch, as `use-model` records it); needs --reader.
    #[arg(long = "use", requires = "reader")]
    pub use_it: bool,
    /// Who switches to the adapted model (with --use; recorded in the audit trail).
    #[arg(long, value_name = "NAME")]
    pub reader: Option<String>,
}

/// Runs `adapt`.
pub fn run(args: &AdaptArgs) -> anyhow::Result<ExitCode> {
    if !(args.held_out > 0.0 && args.held_out < 1.0) {
        bail!("--held-out must be between 0 and 1");
    }
    for p in [
        args.out.with_extension("json"),
        args.out.with_extension("safetensors"),
    ] {
        if p.exists() {
            bail!(AdaptError::Exists(p));
        }
    }
    if args.use_it && args.reader.as_deref().is_none_or(|r| r.trim().is_empty()) {
        bail!("say who switches to the adapted model: --reader NAME");
    }
    let store = open_existing_store(Some(&args.db))?;
    // The model in force at this site unless told otherwise; its bytes are read once and checked
    // against its card again here.
    let (parent_path, _) = super::model_for_store(args.weights.as_deref(), &store)?;
    let card_json = read(&parent_path.with_extension("json"))?;
    let weights = read(&parent_path.with_extension("safetensors"))?;
    let parent = Classifier::from_bytes(&card_json, weights.clone())
        .map_err(|e| anyhow::anyhow!("cannot load the model {}: {e}", parent_path.display()))?;
    let (threshold, source) = super::threshold_in_force(&store, &parent)?;
    let head = store.head_hash()?;
    let labelled = store.labelled_studies(args.folder.as_deref())?.len();
    println!(
        "adapting {} (threshold in force {threshold:.4}, {source}) to {labelled} studies with a reader's label in {}",
        parent.card().model_id,
        args.db.display()
    );

    let bar = ProgressBar::new(labelled as u64).with_style(ProgressStyle::with_template(
        "reading [{bar:30}] {pos}/{len} ({per_sec})",
    )?);
    let (samples, left) =
        adapt::read_local_samples(&store, args.folder.as_deref(), parent.input_size(), &|| {
            bar.inc(1);
        })?;
    bar.finish_and_clear();
    for l in &left {
        println!("left out: {}: {}", l.why, l.path.display());
    }
    let left_out = left.len();
    let pneumonia = samples.iter().filter(|s| s.pneumonia).count();
    println!(
        "{} studies read ({pneumonia} PNEUMONIA, {} NORMAL), {left_out} left out",
        samples.len(),
        samples.len() - pneumonia
    );

    let opts = AdaptOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        held_out_fraction: args.held_out,
        seed: args.seed,
        target_sensitivity: args.target_sensitivity,
        train_from_stage: args.train_from_stage,
        ..AdaptOptions::default()
    };
    let local_source = LocalSource {
        store: args.db.display().to_string(),
        store_last_event_hash: head,
        folder: args.folder.as_ref().map(|f| f.display().to_string()),
        left_out,
    };
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "epoch {msg} [{bar:30}] {pos}/{len} steps",
    )?);
    let mut on_event = |e: AdaptEvent| match e {
        AdaptEvent::Started {
            train,
            held_out,
            steps_per_epoch,
        } => {
            bar.println(format!(
                "fine-tuning on {train} studies, {held_out} held out to measure before and after"
            ));
            bar.set_length(steps_per_epoch as u64);
        }
        AdaptEvent::Step { epoch, loss } => {
            bar.set_message(format!("{epoch}/{} (loss {loss:.4})", opts.epochs));
            bar.inc(1);
        }
        AdaptEvent::EpochEnd { epoch, loss, secs } => {
            bar.println(format!(
                "epoch {epoch}/{}: training loss {loss:.4} ({secs:.1} s)",
                opts.epochs
            ));
            bar.set_position(0);
        }
    };
    let parent_ref = adapt::Parent {
        card: parent.card(),
        weights: &weights,
        threshold,
    };
    let result = adapt::adapt(
        &parent_ref,
        &samples,
        &local_source,
        &args.out,
        &opts,
        &mut on_event,
    );
    bar.finish_and_clear();
    match result {
        Ok(adapted) => {
            let Some(record) = &adapted.card.adaptation else {
                bail!("the adapted card has no adaptation record");
            };
            print_figures(
                record.held_out_labels,
                &record.held_out_before,
                &record.held_out_after,
            );
            println!(
                "wrote {} and {} ({:.1} s; threshold {:.4} chosen on the held-out local labels)",
                adapted.weights_path.display(),
                adapted.card_path.display(),
                record.adapt_secs,
                record.threshold
            );
            if args.use_it {
                let path = adapted.card_path.canonicalize()?;
                let next = Classifier::load(&path)
                    .map_err(|e| anyhow::anyhow!("cannot load the adapted model: {e}"))?;
                let event = crate::model::local::record_model_switch(
                    &store,
                    args.reader.as_deref().unwrap_or_default(),
                    "adapted to this site's labels",
                    (&parent, threshold),
                    (&next, &path, record.threshold),
                    serde_json::json!({
                        "held_out_labels": record.held_out_labels,
                        "held_out_before": record.held_out_before,
                        "held_out_after": record.held_out_after,
                    }),
                )?;
                println!(
                    "model in force at this site: {} (threshold {:.4}), recorded as threshold \
                     change {} by {} (hash {})",
                    next.card().model_id,
                    record.threshold,
                    event.id,
                    event.reader,
                    event.row_hash
                );
            } else {
                println!(
                    "score with it: cxr-triage score DIR --weights {}, or make it the model in \
                     force: cxr-triage use-model --db {} --weights {} --reader NAME",
                    adapted.card_path.display(),
                    args.db.display(),
                    adapted.card_path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(AdaptError::NotBetter { before, after }) => {
            print_figures(
                after.confusion.tp + after.confusion.fp + after.confusion.tn + after.confusion.fn_,
                &before,
                &after,
            );
            Err(AdaptError::NotBetter { before, after }.into())
        }
        Err(e) => Err(e.into()),
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the model file {}", path.display()))
}

fn print_figures(held_out: usize, before: &LocalFigures, after: &LocalFigures) {
    println!(
        "\non the {held_out} held-out local studies:\n\nbefore (the parent model):\n{}\n\nafter (adapted):\n{}\n",
        before.text(),
        after.text()
    );
}
