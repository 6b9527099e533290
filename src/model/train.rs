//! Training: patient-level split, augmentation, class-balanced loss, AdamW with warm-up and cosine
//! decay, early stopping on validation AUC, resumable checkpoints, and the model card.
//!
//! The loop is plain candle (see candle's `mnist-training` example): a `VarMap`, a forward pass in
//! training mode, `loss.backward()`, an optimizer step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom as _;
use rand::{RngExt as _, SeedableRng as _};
use rayon::prelude::*;

use crate::io::sha256_hex;
use crate::model::augment::Augment;
use crate::model::card::{
    Calibration, Corrections, DomainCard, EpochRecord, EpochTest, EvalSummary, INTENDED_USE,
    ModelCard, OodCard, SourceRecord, SourceSummary, TrainingRecord,
};
use crate::model::dataset::{self, Sample, Source};
use crate::model::domain::DomainModel;
use crate::model::ood::{self, FeatureGaussian};
use crate::model::optim::AdamW;
use crate::model::preprocess::{self, Contrast, Normalisation};
use crate::model::{ARCH_ID, CnnConfig, CxrNet, metrics};

/// Shrinkage of the training features' covariance for the "not seen" flag.
const OOD_SHRINKAGE: f64 = 0.05;
/// L2 penalty of the population regression (on standardised features, classes weighted to sum
/// to the number of films). Chosen on validation among 0.1, 1, 10, 50 and 200: 0.1 and 1 gave the
/// best paediatric specificity at the threshold (0.876, against 0.821 at 200) with the adult
/// sensitivity unchanged; 1 is the softer of the two.
const DOMAIN_L2: f64 = 1.0;

/// How adult films with another finding than pneumonia (NIH `other`) are used in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OtherFindings {
    /// Not used.
    LeftOut,
    /// As "not pneumonia" (label 0).
    AsNotPneumonia,
}

impl OtherFindings {
    /// In words, for the model card.
    pub fn describe(self) -> &'static str {
        match self {
            Self::LeftOut => "left out",
            Self::AsNotPneumonia => "as not pneumonia",
        }
    }
}

/// The second source: adult films in the NIH layout (`labels.csv`).
#[derive(Clone, Debug)]
pub struct AdultOptions {
    /// The folder holding `labels.csv` and the images.
    pub data: PathBuf,
    /// Fraction of each stratum's patients held out for validation.
    pub validation_fraction: f64,
    /// Seed of the split.
    pub split_seed: u64,
    /// How many times each adult training film is shown per epoch (the adult films are few).
    pub repeat: usize,
    /// How films with another finding are used.
    pub other_findings: OtherFindings,
}

impl Default for AdultOptions {
    fn default() -> Self {
        Self {
            data: PathBuf::from("../shared/data/nih-adult"),
            validation_fraction: 0.5,
            split_seed: 2017,
            repeat: 6,
            other_findings: OtherFindings::LeftOut,
        }
    }
}

type Rng = rand::rngs::Xoshiro256PlusPlus;

/// What to train and how.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// A folder with `train/` (and optionally `test/`), each holding `NORMAL/` and `PNEUMONIA/`.
    pub data: PathBuf,
    /// Output path without extension: writes `OUT.safetensors` and `OUT.json`.
    pub out: PathBuf,
    /// Where checkpoints go (resumable).
    pub checkpoint_dir: PathBuf,
    /// The network.
    pub cnn: CnnConfig,
    /// Upper bound on epochs.
    pub max_epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Linear warm-up, in epochs.
    pub warmup_epochs: f64,
    /// Stop after this many epochs without a better validation AUC.
    pub patience: usize,
    /// Fraction of each class's images held out for validation.
    pub validation_fraction: f64,
    /// Seed of the patient split.
    pub split_seed: u64,
    /// Seed of everything else.
    pub seed: u64,
    /// Augmentation.
    pub augment: Augment,
    /// The triage threshold is the highest one with at least this validation sensitivity.
    pub min_sensitivity: f64,
    /// Continue from the checkpoint in `checkpoint_dir` if there is one.
    pub resume: bool,
    /// Use at most this many images per class of `train/` (for quick experiments and tests).
    pub limit_per_class: Option<usize>,
    /// Evaluate once on `test/` after training and record it in the card.
    pub evaluate_test: bool,
    /// Also measure `test/` after every epoch, for the report's learning curves. Nothing is
    /// chosen on it: the epoch, threshold and settings come from validation alone.
    pub test_curve: bool,
    /// Corrected labels to train with (a `path,label` CSV, or `cxr-triage export`'s reviewed
    /// cases): they override the folder labels of `train/` and add the images they list.
    pub labels: Option<PathBuf>,
    /// Adult films as a second source, trained on and validated on their own (see
    /// [`AdultOptions`]).
    pub adult: Option<AdultOptions>,
    /// Contrast equalisation of the input (recorded in the card; scoring does the same).
    pub contrast: Contrast,
    /// The "not seen" flag's threshold is this quantile of the validation films' distances.
    pub ood_quantile: f64,
    /// Replace an existing model at `out`.
    pub overwrite: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            data: PathBuf::from("../shared/data/kermany-224"),
            out: PathBuf::from("weights/cxrnet"),
            checkpoint_dir: PathBuf::from("runs/cxrnet"),
            cnn: CnnConfig::default(),
            max_epochs: 24,
            batch_size: 32,
            learning_rate: 2e-3,
            weight_decay: 5e-4,
            warmup_epochs: 1.0,
            patience: 10,
            validation_fraction: 0.15,
            split_seed: 2018,
            seed: 7,
            augment: Augment::default(),
            min_sensitivity: 0.95,
            resume: false,
            limit_per_class: None,
            evaluate_test: true,
            test_curve: false,
            labels: None,
            adult: Some(AdultOptions::default()),
            contrast: Contrast::Clahe {
                tiles: 4,
                clip: 2.0,
            },
            ood_quantile: 0.99,
            overwrite: false,
        }
    }
}

/// Training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data folder is not usable.
    #[error(transparent)]
    Dataset(#[from] dataset::DatasetError),
    /// An image could not be loaded.
    #[error("cannot load training image {path}: {reason}")]
    Image {
        /// The image.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The corrected labels cannot be used.
    #[error(transparent)]
    Labels(#[from] crate::worklist::LabelsError),
    /// Too few images to train.
    #[error("not enough images: {0}")]
    TooFew(String),
    /// The output exists and overwriting was not asked for.
    #[error(
        "{} exists: choose another --out, or add --force to replace that model",
        path.display()
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Writing the weights, card or checkpoint failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The checkpoint cannot be resumed.
    #[error("cannot resume from the checkpoint in {path}: {reason}")]
    Resume {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The numbers went wrong (NaN loss and the like).
    #[error("training failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// JSON encoding failed.
    #[error("cannot encode the model card: {0}")]
    Json(#[from] serde_json::Error),
}

/// What training reports as it goes.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// Images are being decoded and resized.
    Loading {
        /// How many.
        images: usize,
    },
    /// The split is ready.
    Loaded {
        /// Training images.
        train: usize,
        /// Validation images.
        validation: usize,
        /// Seconds spent loading.
        secs: f64,
    },
    /// Resumed from a checkpoint after this many epochs.
    Resumed {
        /// Epochs already done.
        epochs_done: usize,
    },
    /// An epoch starts.
    EpochStart {
        /// 1-based epoch.
        epoch: usize,
        /// Steps in it.
        steps: usize,
    },
    /// A step ended.
    Step {
        /// 1-based step within the epoch.
        step: usize,
        /// Running mean loss of the epoch.
        loss: f64,
    },
    /// An epoch ended, validation included.
    EpochEnd(EpochRecord),
    /// Validation AUC has not improved for `patience` epochs.
    EarlyStop {
        /// The epoch whose weights are kept.
        best_epoch: usize,
    },
}

/// The outcome of training.
#[derive(Debug)]
pub struct Trained {
    /// The card written beside the weights.
    pub card: ModelCard,
    /// Path of the card.
    pub card_path: PathBuf,
}

/// Samples loaded into memory at the network's input size, `[0, 1]`, before normalisation.
struct Loaded {
    units: Vec<Vec<f32>>,
    labels: Vec<bool>,
}

fn load_units(samples: &[Sample], size: usize) -> Result<Loaded, TrainError> {
    let units = samples
        .par_iter()
        .map(|s| {
            let (image, window) =
                dataset::load_image(&s.path).map_err(|reason| TrainError::Image {
                    path: s.path.clone(),
                    reason,
                })?;
            preprocess::unit_resized(&image, window, size).map_err(|e| TrainError::Image {
                path: s.path.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let labels = samples
        .iter()
        .map(|s| s.label == crate::worklist::Label::Pneumonia)
        .collect();
    Ok(Loaded { units, labels })
}

/// Mean and standard deviation of all pixels of `units`.
fn pixel_stats(units: &[Vec<f32>]) -> (f32, f32) {
    let (mut sum, mut sum_sq, mut n) = (0.0f64, 0.0f64, 0usize);
    for u in units {
        for &v in u {
            sum += f64::from(v);
            sum_sq += f64::from(v) * f64::from(v);
        }
        n += u.len();
    }
    let n = n.max(1) as f64;
    let mean = sum / n;
    let var = (sum_sq / n - mean * mean).max(1e-8);
    (mean as f32, var.sqrt() as f32)
}

/// Weighted binary cross-entropy with logits, averaged: `w * (softplus(z) - y z)`.
pub(crate) fn weighted_bce(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<Tensor> {
    // softplus(z) = max(z, 0) + log(1 + exp(-|z|)), stable for large |z|.
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let per = (softplus - (targets * logits)?)?;
    (per * weights)?.mean_all()
}

/// One optimiser step on a batch of network inputs (`flat`, `labels.len()` images of side
/// `size`), each image's loss weighted by its class; returns the batch's loss (possibly not
/// finite, for the caller to refuse). Training and site adaptation share it.
pub(crate) fn train_step(
    net: &CxrNet,
    opt: &mut AdamW,
    flat: Vec<f32>,
    labels: &[bool],
    class_weights: (f32, f32),
    size: usize,
) -> candle_core::Result<f64> {
    let device = Device::Cpu;
    let n = labels.len();
    let targets: Vec<f32> = labels.iter().map(|&y| if y { 1.0 } else { 0.0 }).collect();
    let weights: Vec<f32> = labels
        .iter()
        .map(|&y| if y { class_weights.1 } else { class_weights.0 })
        .collect();
    let xs = Tensor::from_vec(flat, (n, 1, size, size), &device)?;
    let ys = Tensor::from_vec(targets, n, &device)?;
    let ws = Tensor::from_vec(weights, n, &device)?;
    let logits = net.forward_t(&xs, true)?;
    let loss = weighted_bce(&logits, &ys, &ws)?;
    let value = f64::from(loss.to_scalar::<f32>()?);
    if value.is_finite() {
        opt.step(&loss.backward()?)?;
    }
    Ok(value)
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine decay to 2% of the peak.
fn learning_rate_at(step: usize, warmup: usize, total: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup).max(1)) as f64;
    let floor = 0.02 * peak;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Seeded normal initialisation (He et al. 2015) of convolution weights and a small one for the
/// head, so that the same seed gives the same network.
fn initialise(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let mut rng = Rng::seed_from_u64(seed);
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let std = if name.ends_with("conv.weight") {
            let fan_in: usize = dims[1..].iter().product();
            (2.0 / fan_in as f64).sqrt()
        } else if name.ends_with("head.weight") {
            0.01
        } else {
            continue;
        };
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                // Box-Muller.
                let u1: f64 = rng.random::<f64>().max(1e-12);
                let u2: f64 = rng.random::<f64>();
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
            })
            .collect();
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    if let Some(bias) = data.get("head.bias") {
        bias.set(&bias.as_tensor().zeros_like()?)?;
    }
    Ok(())
}

/// The trainable variables (everything but batch-norm running statistics), sorted by name.
fn trainable(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut vars: Vec<(String, candle_core::Var)> = data
        .iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Saves every variable of `varmap` to `path`, atomically (write then rename).
fn save_varmap(varmap: &VarMap, path: &Path) -> Result<(), TrainError> {
    save_with(varmap, HashMap::new(), path)
}

/// Copies the values of `varmap` (a snapshot of the best epoch).
fn snapshot(varmap: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn restore(varmap: &VarMap, values: &HashMap<String, Tensor>) -> candle_core::Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    for (k, v) in data.iter() {
        if let Some(t) = values.get(k) {
            v.set(t)?;
        }
    }
    Ok(())
}

/// Logits and penultimate features of `units` in inference mode (no augmentation), in batches.
fn predict(
    net: &CxrNet,
    units: &[Vec<f32>],
    norm: &Normalisation,
    device: &Device,
) -> candle_core::Result<Inferred> {
    let s = norm.input_size;
    let mut out = Inferred::default();
    for chunk in units.chunks(64) {
        let mut flat = Vec::with_capacity(chunk.len() * s * s);
        for u in chunk {
            let mut x = u.clone();
            preprocess::normalise(&mut x, norm);
            flat.extend_from_slice(&x);
        }
        let xs = Tensor::from_vec(flat, (chunk.len(), 1, s, s), device)?;
        let (pooled, logits) = net.pooled_and_logits(&xs)?;
        out.logits.extend(logits.to_vec1::<f32>()?);
        out.features.extend(pooled.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// What [`predict`] gives: one logit and one feature vector per image.
#[derive(Default)]
struct Inferred {
    logits: Vec<f32>,
    features: Vec<Vec<f32>>,
}

impl Inferred {
    /// Probabilities under `calibration`.
    fn scores(&self, calibration: Calibration) -> Vec<f32> {
        self.logits.iter().map(|&z| calibration.score(z)).collect()
    }
}

/// How logits become scores at the end of training: one calibration, or one per population.
struct ScoreMap<'a> {
    calibration: Calibration,
    populations: Option<&'a (DomainModel, DomainCard)>,
}

impl ScoreMap<'_> {
    /// The scores of inferred films, as [`crate::model::Classifier`] will give them.
    fn scores(&self, inf: &Inferred) -> Vec<f32> {
        match self.populations {
            Some((model, card)) => inf
                .logits
                .iter()
                .zip(&inf.features)
                .map(|(&z, f)| card.score(z, model.paediatric_probability(f)))
                .collect(),
            None => inf.scores(self.calibration),
        }
    }
}

/// Mean weighted BCE of probabilities (for the validation loss).
fn mean_bce(scores: &[f32], labels: &[bool], class_weights: (f32, f32)) -> f64 {
    let mut total = 0.0;
    for (&p, &y) in scores.iter().zip(labels) {
        let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
        let (w, l) = if y {
            (class_weights.1, -p.ln())
        } else {
            (class_weights.0, -(1.0 - p).ln())
        };
        total += f64::from(w) * l;
    }
    total / scores.len().max(1) as f64
}

/// Fits Platt scaling, `sigmoid(a z + b)`, to `logits` against `labels` by weighted maximum
/// likelihood (Newton's method on the two parameters), each case weighted by `weights`.
pub(crate) fn fit_calibration(logits: &[f32], labels: &[bool], weights: &[f64]) -> Calibration {
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for ((&z, &y), &w) in logits.iter().zip(labels).zip(weights) {
            let z = f64::from(z);
            let p = 1.0 / (1.0 + (-(a * z + b)).exp());
            let r = p - if y { 1.0 } else { 0.0 };
            let h = (p * (1.0 - p)).max(1e-12);
            ga += w * r * z;
            gb += w * r;
            haa += w * h * z * z;
            hab += w * h * z;
            hbb += w * h;
        }
        // A little ridge keeps the step finite when the classes are separable.
        let (haa, hbb) = (haa + 1e-6, hbb + 1e-6);
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da.clamp(-1.0, 1.0);
        b -= db.clamp(-2.0, 2.0);
        if da.abs() < 1e-9 && db.abs() < 1e-9 {
            break;
        }
    }
    if !(a.is_finite() && b.is_finite()) || a <= 0.0 {
        return Calibration::default();
    }
    Calibration {
        scale: a as f32,
        bias: b as f32,
    }
}

/// One source's validation films, loaded.
struct ValidationSet {
    source: Source,
    loaded: Loaded,
    /// Who labelled each film, where the source says.
    label_sources: Vec<Option<String>>,
}

impl ValidationSet {
    fn new(source: Source, samples: &[Sample], size: usize) -> Result<Self, TrainError> {
        Ok(Self {
            source,
            loaded: load_units(samples, size)?,
            label_sources: samples.iter().map(|s| s.label_source.clone()).collect(),
        })
    }
}

/// Per-source and per-label-source summaries of validation `scores` (one vector per set).
fn source_summaries(
    sets: &[ValidationSet],
    scores: &[Vec<f32>],
    threshold: f32,
    seed: u64,
) -> Vec<SourceSummary> {
    let mut out = Vec::new();
    for (set, scores) in sets.iter().zip(scores) {
        let labels = &set.loaded.labels;
        out.push(SourceSummary {
            name: set.source.name().to_owned(),
            description: source_description(set.source).to_owned(),
            summary: EvalSummary::compute(scores, labels, threshold, seed),
        });
        let mut groups: Vec<&str> = set
            .label_sources
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        if groups.len() > 1 {
            for group in groups {
                let keep: Vec<usize> = (0..labels.len())
                    .filter(|&i| set.label_sources[i].as_deref() == Some(group))
                    .collect();
                let s: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
                let l: Vec<bool> = keep.iter().map(|&i| labels[i]).collect();
                out.push(SourceSummary {
                    name: format!("{}/{group}", set.source.name()),
                    description: format!(
                        "{}, labels from {}",
                        source_description(set.source),
                        match group {
                            "rsna" => "RSNA radiologists",
                            "nih" => "NIH report text mining",
                            other => other,
                        }
                    ),
                    summary: EvalSummary::compute(&s, &l, threshold, seed),
                });
            }
        }
    }
    out
}

/// What a source's films are, in words.
pub fn source_description(source: Source) -> &'static str {
    match source {
        Source::Kermany => "paediatric films (1-5 years), Guangzhou (Kermany et al. 2018)",
        Source::NihAdult => "adult films, NIH Clinical Center (ChestX-ray14)",
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointState {
    epochs_done: usize,
    best_auc: f64,
    best_epoch: usize,
    history: Vec<EpochRecord>,
    normalisation: Normalisation,
    train_secs: f64,
    images_seen: usize,
}

/// The training and validation films of every source.
struct Splits {
    train: Vec<Sample>,
    /// One entry per source, Kermany first.
    validation: Vec<(Source, Vec<Sample>)>,
    records: Vec<SourceRecord>,
    corrections: Option<Corrections>,
}

/// Lists and splits the sources of `opts`.
fn split_sources(opts: &TrainOptions) -> Result<Splits, TrainError> {
    let mut samples = dataset::list_labelled(&opts.data.join("train"))?;
    if let Some(limit) = opts.limit_per_class {
        let mut kept = HashMap::new();
        samples.retain(|s| {
            let n = kept.entry(s.label).or_insert(0usize);
            *n += 1;
            *n <= limit
        });
    }
    let corrections = match &opts.labels {
        Some(path) => {
            let file = crate::worklist::LabelFile::read(path)?;
            let (changed, added) = dataset::apply_corrections(&mut samples, &file);
            Some(Corrections {
                file: path.display().to_string(),
                labels_changed: changed,
                images_added: added,
            })
        }
        None => None,
    };
    let (train_idx, val_idx) =
        dataset::split_by_patient(&samples, opts.validation_fraction, opts.split_seed);
    let pick =
        |all: &[Sample], idx: &[usize]| idx.iter().map(|&i| all[i].clone()).collect::<Vec<_>>();
    let mut train = pick(&samples, &train_idx);
    let mut validation = vec![(Source::Kermany, pick(&samples, &val_idx))];
    let mut records = vec![SourceRecord {
        name: Source::Kermany.name().to_owned(),
        data: opts.data.display().to_string(),
        train_images: train.len(),
        validation_images: val_idx.len(),
        validation_fraction: opts.validation_fraction,
        split_seed: opts.split_seed,
        repeat: 1,
        other_findings: String::new(),
    }];
    if let Some(adult) = &opts.adult {
        let mut all = dataset::list_nih_adult(&adult.data)?;
        if let Some(limit) = opts.limit_per_class {
            all.truncate(limit.max(8) * 4);
        }
        let (train_idx, val_idx) =
            dataset::split_nih_adult(&all, adult.validation_fraction, adult.split_seed);
        let adult_train: Vec<Sample> = pick(&all, &train_idx)
            .into_iter()
            .filter(|s| !s.other_finding || adult.other_findings == OtherFindings::AsNotPneumonia)
            .collect();
        // Films with another finding are never in a validation metric.
        let adult_val: Vec<Sample> = pick(&all, &val_idx)
            .into_iter()
            .filter(|s| !s.other_finding)
            .collect();
        records.push(SourceRecord {
            name: Source::NihAdult.name().to_owned(),
            data: adult.data.display().to_string(),
            train_images: adult_train.len(),
            validation_images: adult_val.len(),
            validation_fraction: adult.validation_fraction,
            split_seed: adult.split_seed,
            repeat: adult.repeat,
            other_findings: adult.other_findings.describe().to_owned(),
        });
        train.extend(adult_train);
        validation.push((Source::NihAdult, adult_val));
    }
    Ok(Splits {
        train,
        validation,
        records,
        corrections,
    })
}

/// Saves every variable of `varmap` and the `extra` tensors to `path`, atomically (write then
/// rename).
fn save_with(
    varmap: &VarMap,
    extra: HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), TrainError> {
    let mut tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    tensors.extend(extra);
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|source| TrainError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Trains a model and writes `OUT.safetensors` and `OUT.json`.
pub fn train(
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Trained, TrainError> {
    let started = Instant::now();
    let device = Device::Cpu;
    let size = opts.cnn.input_size;
    for ext in ["json", "safetensors"] {
        let path = opts.out.with_extension(ext);
        if path.exists() && !opts.overwrite {
            return Err(TrainError::Exists { path });
        }
    }

    // Data: the patient-level splits of every source.
    let splits = split_sources(opts)?;
    let validation_count: usize = splits.validation.iter().map(|(_, v)| v.len()).sum();
    if splits.train.len() < opts.batch_size.max(2)
        || splits.validation.iter().any(|(_, v)| v.is_empty())
    {
        return Err(TrainError::TooFew(format!(
            "{} training and {validation_count} validation images",
            splits.train.len(),
        )));
    }
    on_event(TrainEvent::Loading {
        images: splits.train.len() + validation_count,
    });
    let train_set = load_units(&splits.train, size)?;
    let val_sets = splits
        .validation
        .iter()
        .map(|(source, samples)| ValidationSet::new(*source, samples, size))
        .collect::<Result<Vec<_>, _>>()?;
    let test_dir = opts.data.join("test");
    let curve_set = if opts.test_curve {
        Some(load_units(&dataset::list_labelled(&test_dir)?, size)?)
    } else {
        None
    };
    on_event(TrainEvent::Loaded {
        train: train_set.units.len(),
        validation: validation_count,
        secs: started.elapsed().as_secs_f64(),
    });

    // Each epoch shows every training film once, and each adult film `repeat` times.
    let adult_repeat = opts.adult.as_ref().map_or(1, |a| a.repeat.max(1));
    let epoch_order: Vec<usize> = splits
        .train
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let times = if s.source == Source::NihAdult {
                adult_repeat
            } else {
                1
            };
            std::iter::repeat_n(i, times)
        })
        .collect();
    let n_pos = epoch_order.iter().filter(|&&i| train_set.labels[i]).count();
    let n_neg = epoch_order.len() - n_pos;
    let n = epoch_order.len() as f32;
    let class_weights = (
        n / (2.0 * n_neg.max(1) as f32),
        n / (2.0 * n_pos.max(1) as f32),
    );

    // The network, seeded.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let net = CxrNet::new(&opts.cnn, &vb)?;
    initialise(&varmap, opts.seed)?;
    let mut opt = AdamW::new(trainable(&varmap), opts.learning_rate, opts.weight_decay)?;

    std::fs::create_dir_all(&opts.checkpoint_dir).map_err(|source| TrainError::Write {
        path: opts.checkpoint_dir.clone(),
        source,
    })?;
    let ckpt_weights = opts.checkpoint_dir.join("last.safetensors");
    let ckpt_optim = opts.checkpoint_dir.join("last-optimizer.safetensors");
    let ckpt_best = opts.checkpoint_dir.join("best.safetensors");
    let ckpt_state = opts.checkpoint_dir.join("state.json");

    let (mean, std) = {
        let equalised: Vec<Vec<f32>> = train_set
            .units
            .par_iter()
            .map(|u| {
                let mut u = u.clone();
                preprocess::equalise(&mut u, size, opts.contrast);
                u
            })
            .collect();
        pixel_stats(&equalised)
    };
    let mut state = CheckpointState {
        epochs_done: 0,
        best_auc: f64::NEG_INFINITY,
        best_epoch: 0,
        history: Vec::new(),
        normalisation: Normalisation {
            input_size: size,
            mean,
            std,
            contrast: opts.contrast,
        },
        train_secs: 0.0,
        images_seen: 0,
    };
    let mut best: Option<HashMap<String, Tensor>> = None;
    if opts.resume && ckpt_state.exists() {
        let resume_err = |reason: String| TrainError::Resume {
            path: opts.checkpoint_dir.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&ckpt_state).map_err(|e| resume_err(e.to_string()))?;
        state = serde_json::from_str(&text).map_err(|e| resume_err(e.to_string()))?;
        let load = |p: &Path| {
            candle_core::safetensors::load(p, &device).map_err(|e| resume_err(e.to_string()))
        };
        restore(&varmap, &load(&ckpt_weights)?)?;
        opt.load(&ckpt_optim)
            .map_err(|e| resume_err(e.to_string()))?;
        if ckpt_best.exists() {
            best = Some(load(&ckpt_best)?);
        }
        on_event(TrainEvent::Resumed {
            epochs_done: state.epochs_done,
        });
    }
    let norm = state.normalisation;
    // The time of the epochs a resumed run did before, so that the card counts the whole run.
    let earlier_secs: f64 = state.history.iter().map(|e| e.secs).sum();

    let steps_per_epoch = epoch_order.len() / opts.batch_size;
    let total_steps = steps_per_epoch * opts.max_epochs;
    let warmup_steps = ((opts.warmup_epochs * steps_per_epoch as f64) as usize).max(1);
    let mut order = epoch_order.clone();

    for epoch in state.epochs_done + 1..=opts.max_epochs {
        if epoch > state.best_epoch + opts.patience && state.best_epoch > 0 {
            on_event(TrainEvent::EarlyStop {
                best_epoch: state.best_epoch,
            });
            break;
        }
        let epoch_started = Instant::now();
        let mut rng =
            Rng::seed_from_u64(opts.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        net.reseed_dropout(rng.random());
        order.sort_unstable();
        order.shuffle(&mut rng);
        on_event(TrainEvent::EpochStart {
            epoch,
            steps: steps_per_epoch,
        });
        let mut loss_sum = 0.0;
        for step in 0..steps_per_epoch {
            let global_step = (epoch - 1) * steps_per_epoch + step;
            opt.learning_rate =
                learning_rate_at(global_step, warmup_steps, total_steps, opts.learning_rate);
            let batch = &order[step * opts.batch_size..(step + 1) * opts.batch_size];
            // Each image has its own seed, so augmenting in parallel stays reproducible.
            let seeds: Vec<u64> = batch.iter().map(|_| rng.random()).collect();
            let augmented: Vec<Vec<f32>> = batch
                .par_iter()
                .zip(&seeds)
                .map(|(&i, &seed)| {
                    let mut x = opts.augment.apply(
                        &train_set.units[i],
                        size,
                        &mut Rng::seed_from_u64(seed),
                    );
                    preprocess::normalise(&mut x, &norm);
                    x
                })
                .collect();
            let labels: Vec<bool> = batch.iter().map(|&i| train_set.labels[i]).collect();
            let loss_value = train_step(
                &net,
                &mut opt,
                augmented.concat(),
                &labels,
                class_weights,
                size,
            )?;
            if !loss_value.is_finite() {
                return Err(TrainError::Candle(candle_core::Error::Msg(format!(
                    "the loss became {loss_value} at epoch {epoch}, step {}",
                    step + 1
                ))));
            }
            loss_sum += loss_value;
            state.images_seen += batch.len();
            on_event(TrainEvent::Step {
                step: step + 1,
                loss: loss_sum / (step + 1) as f64,
            });
        }
        let train_secs = epoch_started.elapsed().as_secs_f64();
        // Validation: every source on its own; the epoch is chosen on the lowest AUC.
        let mut all_scores = Vec::new();
        let mut all_labels = Vec::new();
        let mut aucs = Vec::new();
        for set in &val_sets {
            let scores =
                predict(&net, &set.loaded.units, &norm, &device)?.scores(Calibration::default());
            aucs.push((
                set.source.name().to_owned(),
                metrics::roc_auc(&scores, &set.loaded.labels),
            ));
            all_scores.extend(scores);
            all_labels.extend(set.loaded.labels.iter().copied());
        }
        let auc = aucs.iter().map(|(_, a)| *a).fold(f64::INFINITY, f64::min);
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / steps_per_epoch.max(1) as f64,
            validation_loss: mean_bce(&all_scores, &all_labels, class_weights),
            validation_auc: auc,
            validation_auc_sources: if aucs.len() > 1 { aucs } else { Vec::new() },
            validation_accuracy: metrics::Confusion::at(&all_scores, &all_labels, 0.5).accuracy(),
            learning_rate: opt.learning_rate,
            secs: epoch_started.elapsed().as_secs_f64(),
            test: match &curve_set {
                Some(set) => {
                    let scores =
                        predict(&net, &set.units, &norm, &device)?.scores(Calibration::default());
                    Some(EpochTest {
                        loss: mean_bce(&scores, &set.labels, class_weights),
                        auc: metrics::roc_auc(&scores, &set.labels),
                        accuracy: metrics::Confusion::at(&scores, &set.labels, 0.5).accuracy(),
                    })
                }
                None => None,
            },
        };
        state.train_secs += train_secs;
        if auc > state.best_auc {
            state.best_auc = auc;
            state.best_epoch = epoch;
            let snap = snapshot(&varmap)?;
            candle_core::safetensors::save(&snap, &ckpt_best)?;
            best = Some(snap);
        }
        state.epochs_done = epoch;
        state.history.push(record.clone());
        save_varmap(&varmap, &ckpt_weights)?;
        opt.save(&ckpt_optim)?;
        let text = serde_json::to_string_pretty(&state)?;
        std::fs::write(&ckpt_state, text).map_err(|source| TrainError::Write {
            path: ckpt_state.clone(),
            source,
        })?;
        on_event(TrainEvent::EpochEnd(record));
    }

    // Keep the best epoch; calibrate, choose the threshold and fix the "not seen" flag on
    // validation; report test once.
    if let Some(best) = &best {
        restore(&varmap, best)?;
    }
    let inferred: Vec<Inferred> = val_sets
        .iter()
        .map(|set| predict(&net, &set.loaded.units, &norm, &device))
        .collect::<Result<_, _>>()?;
    // Calibration: every source counts the same, whatever its size.
    let (mut cal_logits, mut cal_labels, mut cal_weights) = (Vec::new(), Vec::new(), Vec::new());
    for (set, inf) in val_sets.iter().zip(&inferred) {
        let w = 1.0 / set.loaded.labels.len().max(1) as f64;
        cal_logits.extend_from_slice(&inf.logits);
        cal_labels.extend_from_slice(&set.loaded.labels);
        cal_weights.extend(std::iter::repeat_n(w, set.loaded.labels.len()));
    }
    let calibration = fit_calibration(&cal_logits, &cal_labels, &cal_weights);
    let train_features = predict(&net, &train_set.units, &norm, &device)?.features;
    // With films of both populations, each has its own calibration, blended by how paediatric a
    // film looks to a regression on the training films' features.
    let populations = if val_sets.len() > 1 {
        let paediatric: Vec<bool> = splits
            .train
            .iter()
            .map(|s| s.source == Source::Kermany)
            .collect();
        let model = DomainModel::fit(&train_features, &paediatric, DOMAIN_L2)
            .map_err(|e| TrainError::TooFew(e.to_string()))?;
        let fit_source = |source: Source| {
            let (mut z, mut y) = (Vec::new(), Vec::new());
            for (set, inf) in val_sets.iter().zip(&inferred) {
                if (set.source == Source::Kermany) == (source == Source::Kermany) {
                    z.extend_from_slice(&inf.logits);
                    y.extend_from_slice(&set.loaded.labels);
                }
            }
            fit_calibration(&z, &y, &vec![1.0; z.len()])
        };
        let card = DomainCard {
            feature_dim: model.dim(),
            fitted_on: train_features.len(),
            paediatric: fit_source(Source::Kermany),
            adult: fit_source(Source::NihAdult),
            validation_paediatric: val_sets
                .iter()
                .zip(&inferred)
                .map(|(set, inf)| {
                    let taken = inf
                        .features
                        .iter()
                        .filter(|f| model.paediatric_probability(f) >= 0.5)
                        .count();
                    (
                        set.source.name().to_owned(),
                        taken as f64 / inf.features.len().max(1) as f64,
                    )
                })
                .collect(),
        };
        Some((model, card))
    } else {
        None
    };
    let score_map = ScoreMap {
        calibration,
        populations: populations.as_ref(),
    };
    let val_scores: Vec<Vec<f32>> = inferred.iter().map(|inf| score_map.scores(inf)).collect();
    // The threshold holds the sensitivity on every source.
    let threshold = val_sets
        .iter()
        .zip(&val_scores)
        .map(|(set, scores)| {
            metrics::threshold_for_sensitivity(scores, &set.loaded.labels, opts.min_sensitivity)
        })
        .fold(f32::INFINITY, f32::min);
    let pooled_scores: Vec<f32> = val_scores.concat();
    let validation = EvalSummary::compute(&pooled_scores, &cal_labels, threshold, opts.seed);
    let validation_sources = source_summaries(&val_sets, &val_scores, threshold, opts.seed);

    // "Not seen": the training films' features, and the validation films' distances.
    let gaussian = FeatureGaussian::fit(&train_features, OOD_SHRINKAGE)
        .map_err(|e| TrainError::TooFew(e.to_string()))?;
    let distances: Vec<Vec<f32>> = inferred
        .iter()
        .map(|inf| inf.features.iter().map(|f| gaussian.distance(f)).collect())
        .collect();
    let ood_threshold = ood::quantile(&distances.concat(), opts.ood_quantile);
    let ood_card = OodCard {
        feature_dim: gaussian.dim(),
        shrinkage: OOD_SHRINKAGE,
        fitted_on: train_features.len(),
        threshold: ood_threshold,
        threshold_rule: format!(
            "the {} quantile of the validation films' distances (every source pooled)",
            opts.ood_quantile
        ),
        validation_flagged: val_sets
            .iter()
            .zip(&distances)
            .map(|(set, d)| {
                let flagged = d.iter().filter(|&&x| x > ood_threshold).count();
                (
                    set.source.name().to_owned(),
                    flagged as f64 / d.len().max(1) as f64,
                )
            })
            .collect(),
    };

    let weights_path = opts.out.with_extension("safetensors");
    if let Some(parent) = weights_path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| TrainError::Write {
            path: parent.to_owned(),
            source,
        })?;
    }
    let mut extra = gaussian.to_tensors()?;
    if let Some((model, _)) = &populations {
        extra.extend(model.to_tensors()?);
    }
    save_with(&varmap, extra, &weights_path)?;
    let weights_bytes = std::fs::read(&weights_path).map_err(|source| TrainError::Write {
        path: weights_path.clone(),
        source,
    })?;

    let test = if opts.evaluate_test && test_dir.is_dir() {
        // The images of the test curve, if it was recorded, else read now.
        let test_set = match curve_set {
            Some(set) => set,
            None => load_units(&dataset::list_labelled(&test_dir)?, size)?,
        };
        let scores = score_map.scores(&predict(&net, &test_set.units, &norm, &device)?);
        Some(EvalSummary::compute(
            &scores,
            &test_set.labels,
            threshold,
            opts.seed,
        ))
    } else {
        None
    };

    let model_id = opts
        .out
        .file_name()
        .map_or_else(|| "cxrnet".to_owned(), |n| n.to_string_lossy().into_owned());
    let count_patients = |s: &[Sample]| {
        s.iter()
            .map(|x| x.patient.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let val_samples: Vec<Sample> = splits
        .validation
        .iter()
        .flat_map(|(_, v)| v.iter().cloned())
        .collect();
    let card = ModelCard {
        model_id,
        arch_id: ARCH_ID.to_owned(),
        config: opts.cnn.clone(),
        normalisation: norm,
        calibration,
        threshold,
        threshold_rule: format!(
            "highest threshold with validation sensitivity >= {} on every source",
            opts.min_sensitivity
        ),
        weights_sha256: sha256_hex(&weights_bytes),
        training: TrainingRecord {
            data: opts.data.display().to_string(),
            train_images: train_set.units.len(),
            validation_images: validation_count,
            train_patients: count_patients(&splits.train),
            validation_patients: count_patients(&val_samples),
            validation_fraction: opts.validation_fraction,
            split_seed: opts.split_seed,
            seed: opts.seed,
            epochs_run: state.epochs_done,
            best_epoch: state.best_epoch,
            max_epochs: opts.max_epochs,
            batch_size: opts.batch_size,
            learning_rate: opts.learning_rate,
            weight_decay: opts.weight_decay,
            patience: opts.patience,
            class_weights,
            augment: opts.augment,
            training_secs: earlier_secs + started.elapsed().as_secs_f64(),
            images_per_sec: state.images_seen as f64 / state.train_secs.max(1e-9),
            kernels: format!("{:?}", net.backend()).to_lowercase(),
            corrections: splits.corrections,
            sources: splits.records,
            threads: candle_core::utils::get_num_threads(),
            history: state.history.clone(),
        },
        validation,
        validation_sources,
        test,
        ood: Some(ood_card),
        domain: populations.map(|(_, card)| card),
        intended_use: INTENDED_USE.to_owned(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        app_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let card_path = opts.out.with_extension("json");
    std::fs::write(&card_path, serde_json::to_string_pretty(&card)? + "\n").map_err(|source| {
        TrainError::Write {
            path: card_path.clone(),
            source,
        }
    })?;
    Ok(Trained { card, card_path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let peak = 1e-3;
        assert!((learning_rate_at(0, 10, 100, peak) - 1e-4).abs() < 1e-12);
        assert!((learning_rate_at(9, 10, 100, peak) - peak).abs() < 1e-12);
        assert!((learning_rate_at(10, 10, 100, peak) - peak).abs() < 1e-12);
        assert!((learning_rate_at(100, 10, 100, peak) - 0.02 * peak).abs() < 1e-12);
        let mid = learning_rate_at(55, 10, 100, peak);
        assert!((mid - (0.02 * peak + 0.98 * peak * 0.5)).abs() < 1e-9);
    }

    #[test]
    fn platt_scaling_recovers_a_known_calibration() {
        // Labels drawn with P(y) = sigmoid(0.5 z - 1): the fit should find about (0.5, -1).
        let mut rng = Rng::seed_from_u64(3);
        let logits: Vec<f32> = (0..20_000)
            .map(|i| -8.0 + 16.0 * (i as f32 / 20_000.0))
            .collect();
        let labels: Vec<bool> = logits
            .iter()
            .map(|&z| rng.random::<f64>() < 1.0 / (1.0 + (-(0.5 * f64::from(z) - 1.0)).exp()))
            .collect();
        let c = fit_calibration(&logits, &labels, &vec![1.0; logits.len()]);
        assert!(
            (c.scale - 0.5).abs() < 0.05 && (c.bias + 1.0).abs() < 0.1,
            "{c:?}"
        );
        // Perfectly separated classes stay finite and keep the order.
        let c = fit_calibration(
            &[-2.0, -1.0, 1.0, 2.0],
            &[false, false, true, true],
            &[1.0; 4],
        );
        assert!(
            c.scale > 0.0 && c.scale.is_finite() && c.bias.is_finite(),
            "{c:?}"
        );
    }

    /// Writes a tiny two-source data set: Kermany-style folders and an NIH-style `labels.csv`.
    /// Pneumonia films carry a bright blob in a lung field; normal films do not.
    fn tiny_sources(root: &Path) -> (PathBuf, PathBuf) {
        let film = |seed: u64, pneumonia: bool| {
            let mut rng = Rng::seed_from_u64(seed);
            image::GrayImage::from_fn(48, 48, |x, y| {
                let (dx, dy) = (x as f32 - 16.0, y as f32 - 24.0);
                let blob = pneumonia && dx * dx + dy * dy < 60.0;
                let base = 60.0 + 2.0 * x as f32 + rng.random::<f32>() * 40.0;
                image::Luma([if blob { 230 } else { base.min(255.0) as u8 }])
            })
        };
        let kermany = root.join("kermany");
        for (class, pneumonia) in [("NORMAL", false), ("PNEUMONIA", true)] {
            let dir = kermany.join("train").join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..40u64 {
                let name = if pneumonia {
                    format!("person{i}_bacteria_1.png")
                } else {
                    format!("IM-{i:04}-0001.png")
                };
                film(i * 2 + u64::from(pneumonia), pneumonia)
                    .save(dir.join(name))
                    .unwrap();
            }
        }
        let adult = root.join("adult");
        std::fs::create_dir_all(adult.join("images")).unwrap();
        let mut csv = String::from("path,label,label_source,patient_id\n");
        for i in 0..48u64 {
            let label = ["normal", "pneumonia", "other"][(i % 3) as usize];
            let source = if i % 2 == 0 { "rsna" } else { "nih" };
            let name = format!("images/{i:08}_000.png");
            film(1000 + i, label == "pneumonia")
                .save(adult.join(&name))
                .unwrap();
            csv += &format!("{name},{label},{source},{i:08}\n");
        }
        std::fs::write(adult.join(dataset::NIH_LABELS_FILE), csv).unwrap();
        (kermany, adult)
    }

    #[test]
    fn two_sources_train_into_a_card_with_per_source_figures_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let (kermany, adult) = tiny_sources(dir.path());
        let opts = TrainOptions {
            data: kermany,
            out: dir.path().join("out/tiny"),
            checkpoint_dir: dir.path().join("ckpt"),
            cnn: CnnConfig {
                input_size: 32,
                widths: vec![8, 8, 16],
                dropout: 0.0,
            },
            max_epochs: 2,
            batch_size: 8,
            evaluate_test: false,
            adult: Some(AdultOptions {
                data: adult,
                repeat: 3,
                ..AdultOptions::default()
            }),
            ..TrainOptions::default()
        };
        let mut epochs = 0;
        let trained = train(&opts, &mut |e| {
            if let TrainEvent::EpochEnd(r) = e {
                epochs += 1;
                // The criterion is the lowest of the two sources' AUCs.
                let lowest = r
                    .validation_auc_sources
                    .iter()
                    .map(|(_, a)| *a)
                    .fold(1.0, f64::min);
                assert_eq!(r.validation_auc_sources.len(), 2);
                assert!((r.validation_auc - lowest).abs() < 1e-12);
            }
        })
        .unwrap();
        assert_eq!(epochs, 2);
        let card = &trained.card;
        let names: Vec<&str> = card
            .validation_sources
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["kermany", "nih-adult", "nih-adult/nih", "nih-adult/rsna"]
        );
        // 'other' films are left out of training by default and never validated on.
        let adult_record = &card.training.sources[1];
        assert_eq!(
            (adult_record.train_images, adult_record.validation_images),
            (16, 16)
        );
        assert_eq!(card.training.train_images, 68 + 16);
        // The threshold keeps the sensitivity on every source.
        for s in &card.validation_sources[..2] {
            assert!(s.summary.sensitivity >= opts.min_sensitivity, "{}", s.name);
        }
        let ood = card.ood.as_ref().unwrap();
        assert_eq!(ood.feature_dim, 16);
        assert!(ood.threshold.is_finite() && ood.threshold > 0.0);
        // The weights file holds the flag's statistics, and the model loads and scores.
        let classifier = crate::model::Classifier::load(&trained.card_path).unwrap();
        let x = vec![0.5f32; 32 * 32];
        let a = classifier.assess_prepared(&[x]).unwrap();
        assert!(a[0].ood_distance.is_some_and(f32::is_finite));
        assert!((0.0..=1.0).contains(&a[0].score));
        // A second run never writes over the model without being told to.
        let err = train(&opts, &mut |_| {}).unwrap_err();
        assert!(matches!(err, TrainError::Exists { .. }), "{err}");
    }

    #[test]
    fn weighted_bce_matches_the_formula() {
        let dev = Device::Cpu;
        let z = Tensor::new(&[0.0f32, 2.0, -3.0], &dev).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0, 0.0], &dev).unwrap();
        let w = Tensor::new(&[1.0f32, 2.0, 1.0], &dev).unwrap();
        let got = weighted_bce(&z, &y, &w)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let softplus = |v: f64| (1.0 + v.exp()).ln();
        let want = (softplus(0.0) + 2.0 * softplus(2.0) + softplus(-3.0)) / 3.0;
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
    }
}
