//! `cxr-triage eval --data DIR`: metrics of a model on labelled folders, `report.json` and plots.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::model::dataset;
use crate::model::report::{self, EvalCase, EvalReport};

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
}

/// Runs `eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let classifier = super::load_classifier(args.weights.as_deref())?;
    let samples = dataset::list_labelled(&args.data)?;
    let bar = ProgressBar::new(samples.len() as u64).with_style(ProgressStyle::with_template(
        "scoring [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
    )?);
    let mut cases = Vec::with_capacity(samples.len());
    let mut failed = Vec::new();
    let rel = |p: &std::path::Path| {
        p.strip_prefix(&args.data)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    for chunk in samples.chunks(64) {
        let prepared: Vec<Result<Vec<f32>, String>> = chunk
            .par_iter()
            .map(|s| {
                let (image, window) = dataset::load_image(&s.path)?;
                classifier
                    .prepare(&image, window)
                    .map_err(|e| e.to_string())
            })
            .collect();
        let mut ok_inputs = Vec::new();
        let mut ok_samples = Vec::new();
        for (s, p) in chunk.iter().zip(prepared) {
            match p {
                Ok(x) => {
                    ok_inputs.push(x);
                    ok_samples.push(s);
                }
                Err(e) => failed.push((rel(&s.path), e)),
            }
        }
        let scores = classifier.score_prepared(&ok_inputs)?;
        for (s, score) in ok_samples.into_iter().zip(scores) {
            cases.push(EvalCase {
                path: rel(&s.path),
                pneumonia: s.label == crate::worklist::Label::Pneumonia,
                score,
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let card = classifier.card();
    let report = EvalReport::new(
        &card.model_id,
        &card.weights_sha256,
        &args.data.display().to_string(),
        card.threshold,
        cases,
        failed,
    );
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
    println!(
        "wrote {} and roc.png, calibration.png, histogram.png beside it",
        json.display()
    );
    Ok(ExitCode::SUCCESS)
}
