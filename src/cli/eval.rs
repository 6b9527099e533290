//! `cxr-triage eval --data DIR`: metrics of a model on labelled folders (or a folder with the NIH
//! layout's `labels.csv`), `report.json` and plots; `cxr-triage eval --db STORE`: the same on
//! the studies readers labelled (local performance).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::{dataset, local, report};

/// Arguments of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Folder holding NORMAL/ and PNEUMONIA/, or a labels.csv in the NIH adult layout.
    #[arg(long, required_unless_present = "db", conflicts_with = "db")]
    pub data: Option<PathBuf>,
    /// For a source the model was trained on (a labels.csv folder, or the Kermany train/
    /// folder): which films of the model's patient-level split to measure (the split the model
    /// card records); films with another finding than pneumonia are always left out. Any other
    /// folder is measured whole.
    #[arg(long, value_enum, default_value_t = Part::Validation)]
    pub part: Part,
    /// Measure on the studies readers labelled in this decision store instead (local
    /// performance: the readers' final labels are the truth).
    #[arg(long, value_name = "STORE")]
    pub db: Option<PathBuf>,
    /// With --db: only studies last seen under this folder.
    #[arg(long, value_name = "DIR", requires = "db")]
    pub folder: Option<PathBuf>,
    /// The model card (weights beside it) [default: the model in force at the site of --db, else
    /// the shipped model].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where to write report.json and the plots [default: reports/<model>-<data folder>, or
    /// reports/<model>-local with --db].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Record these metrics in the model card as its test metrics (for the held-out test split,
    /// once, after the model and its threshold are final; the weights are unchanged).
    #[arg(long, conflicts_with = "db")]
    pub record_test: bool,
}

/// Which part of a split source `eval` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The validation part (never trained on).
    Validation,
    /// The training part.
    Train,
    /// Every normal and pneumonia film.
    All,
}

/// Runs `eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    if let Some(db) = &args.db {
        let store = super::audit::open_existing_store(Some(db))?;
        let (_, classifier) = super::model_for_store(args.weights.as_deref(), &store)?;
        return run_local(args, &classifier, &store, db);
    }
    let classifier = super::load_classifier(args.weights.as_deref())?;
    let Some(data) = &args.data else {
        anyhow::bail!("say what to measure on: --data DIR or --db STORE");
    };
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "scoring [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
    )?);
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let report = if data.join(dataset::NIH_LABELS_FILE).is_file() {
        let samples = nih_part(&classifier, data, args.part)?;
        report::evaluate_samples(&classifier, data, &samples, &mut progress)?
    } else if let Some(samples) = training_folder_part(&classifier, data, args.part)? {
        report::evaluate_samples(&classifier, data, &samples, &mut progress)?
    } else {
        report::evaluate_folder(&classifier, data, &mut progress)?
    };
    bar.finish_and_clear();
    let card = classifier.card();
    println!("{}", report.text());
    let mut data_name = data
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    if data.join(dataset::NIH_LABELS_FILE).is_file() || is_training_folder(&classifier, data) {
        data_name += match args.part {
            Part::Validation => "-validation",
            Part::Train => "-train",
            Part::All => "-all",
        };
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-{data_name}", card.model_id)));
    let json = write_report_json(args, &out, &report)?;
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
        let card_path = super::model_path(args.weights.as_deref())?.with_extension("json");
        // Read as an adapted card, so that an adapted model keeps its `adaptation` record.
        let text = std::fs::read_to_string(&card_path)
            .with_context(|| format!("cannot read {}", card_path.display()))?;
        let mut card: crate::model::card::AdaptedCard = serde_json::from_str(&text)?;
        card.card.test = Some(report.summary.clone());
        std::fs::write(&card_path, serde_json::to_string_pretty(&card)? + "\n")
            .with_context(|| format!("cannot write {}", card_path.display()))?;
        println!("recorded the test metrics in {}", card_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `--data` is the `train/` folder the model was trained on (its validation part was
/// split from it).
fn is_training_folder(classifier: &crate::model::Classifier, data: &std::path::Path) -> bool {
    let trained_on = std::path::Path::new(&classifier.card().training.data).join("train");
    match (trained_on.canonicalize(), data.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// For the folder the model was trained on, the films of the part `--part` selects, by the
/// card's patient-level split; `None` for any other folder (all of it is measured).
fn training_folder_part(
    classifier: &crate::model::Classifier,
    data: &std::path::Path,
    part: Part,
) -> anyhow::Result<Option<Vec<dataset::Sample>>> {
    if part == Part::All || !is_training_folder(classifier, data) {
        return Ok(None);
    }
    let t = &classifier.card().training;
    let all = dataset::list_labelled(data)?;
    let (train, val) = dataset::split_by_patient(&all, t.validation_fraction, t.split_seed);
    let idx = if part == Part::Validation { val } else { train };
    Ok(Some(idx.into_iter().map(|i| all[i].clone()).collect()))
}

/// The films of a `labels.csv` folder that `--part` selects, by the split the model card
/// records for that source (or, for a model that did not train on it, every film).
fn nih_part(
    classifier: &crate::model::Classifier,
    data: &std::path::Path,
    part: Part,
) -> anyhow::Result<Vec<dataset::Sample>> {
    let all = dataset::list_nih_adult(data)?;
    let record = classifier
        .card()
        .training
        .sources
        .iter()
        .find(|s| s.name == dataset::Source::NihAdult.name());
    let picked: Vec<dataset::Sample> = match (part, record) {
        (Part::All, _) => all,
        (_, None) => {
            eprintln!(
                "the model did not train on this source: measuring every normal and pneumonia film"
            );
            all
        }
        (part, Some(r)) => {
            let (train, val) = dataset::split_nih_adult(&all, r.validation_fraction, r.split_seed);
            let idx = if part == Part::Validation { val } else { train };
            idx.into_iter().map(|i| all[i].clone()).collect()
        }
    };
    Ok(picked.into_iter().filter(|s| !s.other_finding).collect())
}

/// Writes `report` as `OUT/report.json`, creating `OUT`, never over or into the data measured or
/// the decision store (checked before the folder is created); returns the file's path.
fn write_report_json(
    args: &EvalArgs,
    out: &std::path::Path,
    report: &impl serde::Serialize,
) -> anyhow::Result<PathBuf> {
    let mut protected = crate::output::Protected::new();
    for folder in [&args.data, &args.folder].into_iter().flatten() {
        protected = protected.folder(folder);
    }
    if let Some(db) = &args.db {
        protected = protected.store(db);
    }
    let json = out.join("report.json");
    protected.check(&json)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    crate::output::write_bytes(
        &json,
        &protected,
        (serde_json::to_string_pretty(report)? + "\n").as_bytes(),
    )?;
    Ok(json)
}

/// `eval --db STORE`: local performance on the studies readers labelled.
fn run_local(
    args: &EvalArgs,
    classifier: &crate::model::Classifier,
    store: &crate::audit::DecisionStore,
    db: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let (threshold, source) = super::threshold_in_force(store, classifier)?;
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "scoring studies without a recorded score [{bar:30}] {pos}/{len}",
    )?);
    let (cases, left_out) = local::local_cases(
        store,
        classifier,
        args.folder.as_deref(),
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let report = local::LocalReport::new(
        classifier,
        &db.display().to_string(),
        threshold,
        &source,
        cases,
        left_out,
    );
    println!("{}", report.text());
    for l in &report.left_out {
        println!("left out: {}: {}", l.why, l.path.display());
    }
    if let Some(line) = store.blind_first_summary()?.text() {
        println!("{line}");
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("reports").join(format!("{}-local", classifier.card().model_id))
    });
    let json = write_report_json(args, &out, &report)?;
    if report.figures.is_some() {
        let card = classifier.card();
        let plotted = report::EvalReport::new(
            &card.model_id,
            &card.weights_sha256,
            &report.store,
            threshold,
            report
                .cases
                .iter()
                .map(|c| report::EvalCase {
                    path: c.path.display().to_string(),
                    pneumonia: c.pneumonia,
                    score: c.score,
                    label_source: None,
                    ood_distance: None,
                })
                .collect(),
            Vec::new(),
        );
        report::write_plots(&plotted, &out)?;
        println!(
            "wrote {} and roc.png, calibration.png, histogram.png beside it",
            json.display()
        );
    } else {
        println!(
            "wrote {} (no plots: too few reviewed studies)",
            json.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
