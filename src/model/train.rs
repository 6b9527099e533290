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
    Corrections, EpochRecord, EpochTest, EvalSummary, INTENDED_USE, ModelCard, TrainingRecord,
};
use crate::model::dataset::{self, Sample};
use crate::model::optim::AdamW;
use crate::model::preprocess::{self, Normalisation};
use crate::model::{ARCH_ID, CnnConfig, CxrNet, metrics};

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
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            data: PathBuf::from("../shared/data/kermany-224"),
            out: PathBuf::from("weights/cxrnet"),
            checkpoint_dir: PathBuf::from("runs/cxrnet"),
            cnn: CnnConfig::default(),
            max_epochs: 30,
            batch_size: 32,
            learning_rate: 2e-3,
            weight_decay: 5e-4,
            warmup_epochs: 1.0,
            patience: 12,
            validation_fraction: 0.15,
            split_seed: 2018,
            seed: 7,
            augment: Augment::default(),
            min_sensitivity: 0.97,
            resume: false,
            limit_per_class: None,
            evaluate_test: true,
            test_curve: false,
            labels: None,
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
fn weighted_bce(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<Tensor> {
    // softplus(z) = max(z, 0) + log(1 + exp(-|z|)), stable for large |z|.
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let per = (softplus - (targets * logits)?)?;
    (per * weights)?.mean_all()
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
    let tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|source| TrainError::Write {
        path: path.to_owned(),
        source,
    })
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

/// Scores `units` in inference mode (no augmentation), in batches.
fn predict(
    net: &CxrNet,
    units: &[Vec<f32>],
    norm: &Normalisation,
    device: &Device,
) -> candle_core::Result<Vec<f32>> {
    let s = norm.input_size;
    let mut scores = Vec::with_capacity(units.len());
    for chunk in units.chunks(64) {
        let mut flat = Vec::with_capacity(chunk.len() * s * s);
        for u in chunk {
            let mut x = u.clone();
            preprocess::normalise(&mut x, norm);
            flat.extend_from_slice(&x);
        }
        let xs = Tensor::from_vec(flat, (chunk.len(), 1, s, s), device)?;
        let logits = net.forward_t(&xs, false)?;
        scores.extend(candle_nn::ops::sigmoid(&logits)?.to_vec1::<f32>()?);
    }
    Ok(scores)
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

/// Trains a model and writes `OUT.safetensors` and `OUT.json`.
pub fn train(
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Trained, TrainError> {
    let started = Instant::now();
    let device = Device::Cpu;
    let size = opts.cnn.input_size;

    // Data: the patient-level split of train/.
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
    if train_idx.len() < opts.batch_size.max(2) || val_idx.is_empty() {
        return Err(TrainError::TooFew(format!(
            "{} training and {} validation images",
            train_idx.len(),
            val_idx.len()
        )));
    }
    let pick = |idx: &[usize]| idx.iter().map(|&i| samples[i].clone()).collect::<Vec<_>>();
    let (train_samples, val_samples) = (pick(&train_idx), pick(&val_idx));
    on_event(TrainEvent::Loading {
        images: samples.len(),
    });
    let train_set = load_units(&train_samples, size)?;
    let val_set = load_units(&val_samples, size)?;
    let test_dir = opts.data.join("test");
    let curve_set = if opts.test_curve {
        Some(load_units(&dataset::list_labelled(&test_dir)?, size)?)
    } else {
        None
    };
    on_event(TrainEvent::Loaded {
        train: train_set.units.len(),
        validation: val_set.units.len(),
        secs: started.elapsed().as_secs_f64(),
    });

    let n_pos = train_set.labels.iter().filter(|&&y| y).count();
    let n_neg = train_set.labels.len() - n_pos;
    let n = train_set.labels.len() as f32;
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

    let (mean, std) = pixel_stats(&train_set.units);
    let mut state = CheckpointState {
        epochs_done: 0,
        best_auc: f64::NEG_INFINITY,
        best_epoch: 0,
        history: Vec::new(),
        normalisation: Normalisation {
            input_size: size,
            mean,
            std,
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

    let steps_per_epoch = train_set.units.len() / opts.batch_size;
    let total_steps = steps_per_epoch * opts.max_epochs;
    let warmup_steps = ((opts.warmup_epochs * steps_per_epoch as f64) as usize).max(1);
    let mut order: Vec<usize> = (0..train_set.units.len()).collect();

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
            let flat: Vec<f32> = augmented.concat();
            let targets: Vec<f32> = batch
                .iter()
                .map(|&i| if train_set.labels[i] { 1.0 } else { 0.0 })
                .collect();
            let weights: Vec<f32> = batch
                .iter()
                .map(|&i| {
                    if train_set.labels[i] {
                        class_weights.1
                    } else {
                        class_weights.0
                    }
                })
                .collect();
            let xs = Tensor::from_vec(flat, (batch.len(), 1, size, size), &device)?;
            let ys = Tensor::from_vec(targets, batch.len(), &device)?;
            let ws = Tensor::from_vec(weights, batch.len(), &device)?;
            let logits = net.forward_t(&xs, true)?;
            let loss = weighted_bce(&logits, &ys, &ws)?;
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            if !loss_value.is_finite() {
                return Err(TrainError::Candle(candle_core::Error::Msg(format!(
                    "the loss became {loss_value} at epoch {epoch}, step {}",
                    step + 1
                ))));
            }
            opt.step(&loss.backward()?)?;
            loss_sum += loss_value;
            state.images_seen += batch.len();
            on_event(TrainEvent::Step {
                step: step + 1,
                loss: loss_sum / (step + 1) as f64,
            });
        }
        let train_secs = epoch_started.elapsed().as_secs_f64();
        let val_scores = predict(&net, &val_set.units, &norm, &device)?;
        let auc = metrics::roc_auc(&val_scores, &val_set.labels);
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / steps_per_epoch.max(1) as f64,
            validation_loss: mean_bce(&val_scores, &val_set.labels, class_weights),
            validation_auc: auc,
            validation_accuracy: metrics::Confusion::at(&val_scores, &val_set.labels, 0.5)
                .accuracy(),
            learning_rate: opt.learning_rate,
            secs: epoch_started.elapsed().as_secs_f64(),
            test: match &curve_set {
                Some(set) => {
                    let scores = predict(&net, &set.units, &norm, &device)?;
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

    // Keep the best epoch, choose the threshold on validation, report test once.
    if let Some(best) = &best {
        restore(&varmap, best)?;
    }
    let val_scores = predict(&net, &val_set.units, &norm, &device)?;
    let threshold =
        metrics::threshold_for_sensitivity(&val_scores, &val_set.labels, opts.min_sensitivity);
    let validation = EvalSummary::compute(&val_scores, &val_set.labels, threshold, opts.seed);

    let weights_path = opts.out.with_extension("safetensors");
    if let Some(parent) = weights_path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| TrainError::Write {
            path: parent.to_owned(),
            source,
        })?;
    }
    save_varmap(&varmap, &weights_path)?;
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
        let scores = predict(&net, &test_set.units, &norm, &device)?;
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
    let card = ModelCard {
        model_id,
        arch_id: ARCH_ID.to_owned(),
        config: opts.cnn.clone(),
        normalisation: norm,
        threshold,
        threshold_rule: format!(
            "highest threshold with validation sensitivity >= {}",
            opts.min_sensitivity
        ),
        weights_sha256: sha256_hex(&weights_bytes),
        training: TrainingRecord {
            data: opts.data.display().to_string(),
            train_images: train_set.units.len(),
            validation_images: val_set.units.len(),
            train_patients: count_patients(&train_samples),
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
            training_secs: started.elapsed().as_secs_f64(),
            images_per_sec: state.images_seen as f64 / state.train_secs.max(1e-9),
            kernels: format!("{:?}", net.backend()).to_lowercase(),
            corrections,
            threads: candle_core::utils::get_num_threads(),
            history: state.history.clone(),
        },
        validation,
        test,
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
