//! `cxr-triage train`: trains the CNN and writes `OUT.safetensors` and `OUT.json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::CnnConfig;
use crate::model::preprocess::Contrast;
use crate::model::train::{self, AdultOptions, OtherFindings, TrainEvent, TrainOptions};

/// Arguments of `train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Folder with train/ (and test/), each holding NORMAL/ and PNEUMONIA/.
    #[arg(long, default_value = "../shared/data/kermany-224")]
    pub data: PathBuf,
    /// Output path without extension: writes OUT.safetensors and OUT.json (never over an
    /// existing model unless --force).
    #[arg(long, default_value = "runs/cxrnet-new")]
    pub out: PathBuf,
    /// Replace the model at OUT if there is one.
    #[arg(long)]
    pub force: bool,
    /// Adult films in the NIH layout (a folder with labels.csv), trained and validated on as a
    /// second source.
    #[arg(long, default_value = "../shared/data/nih-adult")]
    pub adult_data: PathBuf,
    /// Train on the Kermany folders alone.
    #[arg(long)]
    pub no_adult: bool,
    /// Fraction of the adult films held out for validation (by patient, stratified by label and
    /// label source).
    #[arg(long, default_value_t = AdultOptions::default().validation_fraction)]
    pub adult_validation_fraction: f64,
    /// How many times each adult training film is shown per epoch.
    #[arg(long, default_value_t = AdultOptions::default().repeat)]
    pub adult_repeat: usize,
    /// How adult films with another finding than pneumonia are used.
    #[arg(long, value_enum, default_value_t = OtherFindings::LeftOut)]
    pub other_findings: OtherFindings,
    /// Contrast equalisation of the input: CLAHE tiles per side (1 with --clahe-clip 0 is plain
    /// histogram equalisation; 0 turns it off).
    #[arg(long, default_value_t = 4)]
    pub clahe_tiles: usize,
    /// CLAHE clip limit, in multiples of the mean bin count (0: no clipping).
    #[arg(long, default_value_t = 2.0)]
    pub clahe_clip: f32,
    /// The threshold is the highest with at least this validation sensitivity on every source.
    #[arg(long, default_value_t = TrainOptions::default().min_sensitivity)]
    pub min_sensitivity: f64,
    /// Folder for resumable checkpoints [default: runs/<name of OUT>].
    #[arg(long)]
    pub checkpoints: Option<PathBuf>,
    /// Continue from the checkpoint if one exists.
    #[arg(long)]
    pub resume: bool,
    /// Input side in pixels.
    #[arg(long, default_value_t = CnnConfig::default().input_size)]
    pub input_size: usize,
    /// Channels per stage, comma-separated (stem first).
    #[arg(long, value_delimiter = ',', default_values_t = CnnConfig::default().widths)]
    pub widths: Vec<usize>,
    /// Maximum epochs.
    #[arg(long, default_value_t = TrainOptions::default().max_epochs)]
    pub epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = TrainOptions::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
    pub lr: f64,
    /// Weight decay.
    #[arg(long, default_value_t = TrainOptions::default().weight_decay)]
    pub weight_decay: f64,
    /// Epochs without a better validation AUC before stopping.
    #[arg(long, default_value_t = TrainOptions::default().patience)]
    pub patience: usize,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    pub seed: u64,
    /// Seed of the patient-level validation split.
    #[arg(long, default_value_t = TrainOptions::default().split_seed)]
    pub split_seed: u64,
    /// Mirror films left-right during training (off by default: measured not to help).
    #[arg(long)]
    pub hflip: bool,
    /// Use at most N images per class (quick experiments).
    #[arg(long)]
    pub limit_per_class: Option<usize>,
    /// Also measure test/ after every epoch, for the learning curves of the report (never used
    /// to choose the epoch, the threshold or a setting).
    #[arg(long)]
    pub test_curve: bool,
    /// Do not evaluate on test/ at the end.
    #[arg(long)]
    pub no_test: bool,
    /// Corrected labels (a path,label CSV, or `cxr-triage export` of reviewed cases): they
    /// override the folder labels of the training images and add the images they list.
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

/// Runs `train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let defaults = TrainOptions::default();
    let name = args
        .out
        .file_name()
        .map_or_else(|| "cxrnet".into(), |n| n.to_string_lossy().into_owned());
    let mut augment = defaults.augment;
    augment.horizontal_flip = args.hflip;
    let opts = TrainOptions {
        data: args.data.clone(),
        out: args.out.clone(),
        checkpoint_dir: args
            .checkpoints
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(&name)),
        cnn: CnnConfig {
            input_size: args.input_size,
            widths: args.widths.clone(),
            ..CnnConfig::default()
        },
        max_epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        patience: args.patience,
        seed: args.seed,
        split_seed: args.split_seed,
        augment,
        resume: args.resume,
        limit_per_class: args.limit_per_class,
        evaluate_test: !args.no_test,
        test_curve: args.test_curve,
        labels: args.labels.clone(),
        adult: (!args.no_adult).then(|| AdultOptions {
            data: args.adult_data.clone(),
            validation_fraction: args.adult_validation_fraction,
            repeat: args.adult_repeat,
            other_findings: args.other_findings,
            ..AdultOptions::default()
        }),
        contrast: if args.clahe_tiles == 0 {
            Contrast::None
        } else {
            Contrast::Clahe {
                tiles: args.clahe_tiles,
                clip: args.clahe_clip,
            }
        },
        min_sensitivity: args.min_sensitivity,
        overwrite: args.force,
        ..defaults
    };
    let style = ProgressStyle::with_template(
        "epoch {prefix:>3} [{bar:30}] {pos}/{len} {msg} ({per_sec}, ETA {eta})",
    )?
    .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let mut last_val = String::from("val AUC -");
    let trained = train::train(&opts, &mut |event| match event {
        TrainEvent::Loading { images } => eprintln!("loading {images} images…"),
        TrainEvent::Loaded {
            train,
            validation,
            secs,
        } => {
            eprintln!("{train} training and {validation} validation images, loaded in {secs:.1} s");
        }
        TrainEvent::Resumed { epochs_done } => {
            eprintln!("resuming after epoch {epochs_done}");
        }
        TrainEvent::EpochStart { epoch, steps } => {
            let b = ProgressBar::new(steps as u64).with_style(style.clone());
            b.set_prefix(epoch.to_string());
            b.enable_steady_tick(Duration::from_millis(500));
            bar = Some(b);
        }
        TrainEvent::Step { loss, .. } => {
            if let Some(b) = &bar {
                b.set_message(format!("loss {loss:.4} | {last_val}"));
                b.inc(1);
            }
        }
        TrainEvent::EpochEnd(r) => {
            last_val = format!("val AUC {:.4}", r.validation_auc);
            let per_source: String = r
                .validation_auc_sources
                .iter()
                .map(|(name, auc)| format!(" {name} {auc:.4}"))
                .collect();
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!(
                "epoch {:>3}: loss {:.4}, val loss {:.4}, val AUC {:.4}{}{}, val acc {:.3}, lr {:.2e}, {:.0} s",
                r.epoch,
                r.train_loss,
                r.validation_loss,
                r.validation_auc,
                if per_source.is_empty() {
                    ""
                } else {
                    " (lowest of"
                },
                if per_source.is_empty() {
                    String::new()
                } else {
                    format!("{per_source})")
                },
                r.validation_accuracy,
                r.learning_rate,
                r.secs
            );
            if let Some(t) = &r.test {
                eprintln!(
                    "           test (curve only): loss {:.4}, AUC {:.4}, acc {:.3}",
                    t.loss, t.auc, t.accuracy
                );
            }
        }
        TrainEvent::EarlyStop { best_epoch } => {
            eprintln!("validation AUC has not improved since epoch {best_epoch}: stopping");
        }
    })?;
    let c = &trained.card;
    println!(
        "wrote {} ({} epochs, best {}, {:.0} s, {:.1} images/s)",
        trained.card_path.display(),
        c.training.epochs_run,
        c.training.best_epoch,
        c.training.training_secs,
        c.training.images_per_sec
    );
    println!(
        "threshold {:.4}; calibration: score = sigmoid({:.4} x logit {:+.4})",
        c.threshold, c.calibration.scale, c.calibration.bias
    );
    if let Some(d) = &c.domain {
        let taken: Vec<String> = d
            .validation_paediatric
            .iter()
            .map(|(n, f)| format!("{n} {:.1}%", 100.0 * f))
            .collect();
        println!(
            "per population: paediatric sigmoid({:.4} x logit {:+.4}), adult sigmoid({:.4} x \
             logit {:+.4}); validation films taken for paediatric: {}",
            d.paediatric.scale,
            d.paediatric.bias,
            d.adult.scale,
            d.adult.bias,
            taken.join(", ")
        );
    }
    for s in &c.validation_sources {
        let v = &s.summary;
        println!(
            "validation {:<15} {:>4} films: AUC {:.4} [{:.4}, {:.4}], sensitivity {:.3}, \
             specificity {:.3}, accuracy {:.3}, ECE {:.3}",
            s.name,
            v.images,
            v.auc.estimate,
            v.auc.low,
            v.auc.high,
            v.sensitivity,
            v.specificity,
            v.accuracy,
            v.ece
        );
    }
    if let Some(o) = &c.ood {
        let flagged: Vec<String> = o
            .validation_flagged
            .iter()
            .map(|(n, f)| format!("{n} {:.1}%", 100.0 * f))
            .collect();
        println!(
            "not-seen flag: distance above {:.2} ({}); validation flagged: {}",
            o.threshold,
            o.threshold_rule,
            flagged.join(", ")
        );
    }
    if let Some(t) = &c.test {
        println!(
            "test: AUC {:.4} [{:.4}, {:.4}], accuracy {:.4} at the threshold ({:.4} at 0.5), \
             sensitivity {:.4}, specificity {:.4}",
            t.auc.estimate,
            t.auc.low,
            t.auc.high,
            t.accuracy,
            t.accuracy_at_half,
            t.sensitivity,
            t.specificity
        );
    }
    Ok(ExitCode::SUCCESS)
}
