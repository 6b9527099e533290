//! `cxr-triage eval --data DIR`: metrics of a model on labelled folders, `report.json` and plots.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::report;

/// Arguments of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Folder holding NORMAL/ and PNEUMONIA/.
    #[arg(long)]
    pub data: PathBuf,
    /// The model card (weights beside it) [default: the shipped model].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where to write report.json and the plots [default: reports/<model>-<data folder>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Record these metrics in the model card as its test metrics (for the held-out test split,
    /// once, after the model and its threshold are final; the weights are unchanged).
    #[arg(long)]
    pub record_test: bool,
}

/// Runs `eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let classifier = super::load_classifier(args.weights.as_deref())?;
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "scoring [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
    )?);
    let report = report::evaluate_folder(&classifier, &args.data, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let card = classifier.card();
    println!("{}", report.text());
    let data_name = args
        .data
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-{data_name}", card.model_id)));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    report::write_plots(&report, &out)?;
    let training = &card.training;
    report::write_training_plot(&training.history, training.best_epoch, &out)?;
    println!(
        "wrote {} and roc.png, calibration.png, histogram.png{} beside it",
        json.display(),
        if training.history.is_empty() {
            ""
        } else {
            ", training.png (the model's training curves)"
        }
    );
    if args.record_test {
        let card_path = args
            .weights
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::model::DEFAULT_MODEL))
            .with_extension("json");
        let mut card = card.clone();
        card.test = Some(report.summary.clone());
        std::fs::write(&card_path, serde_json::to_string_pretty(&card)? + "\n")
            .with_context(|| format!("cannot write {}", card_path.display()))?;
        println!("recorded the test metrics in {}", card_path.display());
    }
    Ok(ExitCode::SUCCESS)
}
