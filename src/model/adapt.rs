//! Site adaptation: fine-tuning the model in force on the studies readers labelled at this site.
//!
//! Part of the local labels is held out (by patient where studies carry a patient id, otherwise
//! by study), the network is fine-tuned on the rest (every layer, a few epochs at a low learning
//! rate, with the training augmentation and class-balanced loss, on the fast kernels), and both
//! models are measured on the held-out part. The adapted model is written only when its held-out
//! ROC AUC is higher than the parent's; its card records where it came from
//! ([`AdaptationRecord`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom as _;
use rand::{RngExt as _, SeedableRng as _};
use rayon::prelude::*;

use crate::io::sha256_hex;
use crate::model::CxrNet;
use crate::model::augment::Augment;
use crate::model::card::{AdaptationRecord, AdaptedCard, EvalSummary, ModelCard};
use crate::model::domain::DomainModel;
use crate::model::local::{LocalFigures, MIN_PER_CLASS};
use crate::model::optim::AdamW;
use crate::model::preprocess::{self, Normalisation};

type Rng = rand::rngs::Xoshiro256PlusPlus;

/// How to adapt.
#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// Passes over the local training labels.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (cosine decay to 2% of it).
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Share of each class's studies held out (by patient) to measure before and after.
    pub held_out_fraction: f64,
    /// Seed of the split, shuffling, augmentation and dropout.
    pub seed: u64,
    /// The adapted model's threshold: the highest one with at least this held-out sensitivity.
    pub target_sensitivity: f64,
    /// Fewer local labels of either class than this and adaptation refuses.
    pub min_per_class: usize,
    /// Augmentation.
    pub augment: Augment,
    /// Train only the stages from this one on, and the head (0: every layer; the number of
    /// stages: the head alone). Batch-norm statistics of every stage follow the local films.
    pub train_from_stage: usize,
}

impl Default for AdaptOptions {
    fn default() -> Self {
        Self {
            epochs: 12,
            batch_size: 16,
            learning_rate: 3e-4,
            weight_decay: 5e-4,
            held_out_fraction: 0.3,
            seed: 13,
            target_sensitivity: 0.95,
            min_per_class: MIN_PER_CLASS,
            augment: Augment::default(),
            train_from_stage: 0,
        }
    }
}

/// One labelled local study, read and resized to the network's input (`[0, 1]`, before
/// normalisation).
#[derive(Clone, Debug)]
pub struct AdaptSample {
    /// The study's identity.
    pub sha256: String,
    /// The group a split keeps together: the patient id, or the study's hash.
    pub group: String,
    /// The reader's label: true for pneumonia.
    pub pneumonia: bool,
    /// The input, `input_size` squared values in `[0, 1]`.
    pub unit: Vec<f32>,
}

/// A study with a reader's label that could not be used, and why.
#[derive(Clone, Debug)]
pub struct LeftOut {
    /// Its recorded path.
    pub path: PathBuf,
    /// Why, in words.
    pub why: String,
}

/// Reads every study with a reader's label in `store` (only those last seen under `folder`, when
/// given) from its recorded path at `size` pixels, for [`adapt`]; a file that cannot be read or
/// whose SHA-256 no longer matches is left out and listed. `on_read` is called once per study
/// read, from the reading threads.
pub fn read_local_samples(
    store: &crate::audit::DecisionStore,
    folder: Option<&Path>,
    size: usize,
    on_read: &(dyn Fn() + Sync),
) -> Result<(Vec<AdaptSample>, Vec<LeftOut>), crate::audit::AuditError> {
    let labelled = store.labelled_studies(folder)?;
    let read: Vec<Result<AdaptSample, String>> = labelled
        .par_iter()
        .map(|l| {
            let study =
                crate::model::local::read_checked(&l.study.path, &l.study.sha256, size as u32)?;
            let unit = preprocess::unit_resized(&study.image, study.meta.default_window, size)
                .map_err(|e| e.to_string())?;
            on_read();
            Ok(AdaptSample {
                sha256: l.study.sha256.clone(),
                group: l
                    .study
                    .patient_id
                    .clone()
                    .filter(|p| !p.trim().is_empty())
                    .unwrap_or_else(|| l.study.sha256.clone()),
                pneumonia: l.label == crate::worklist::Label::Pneumonia,
                unit,
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(read.len());
    let mut left_out = Vec::new();
    for (l, r) in labelled.iter().zip(read) {
        match r {
            Ok(s) => samples.push(s),
            Err(why) => left_out.push(LeftOut {
                path: l.study.path.clone(),
                why,
            }),
        }
    }
    Ok((samples, left_out))
}

/// Where the local labels come from, for the card.
#[derive(Clone, Debug)]
pub struct LocalSource {
    /// The decision store.
    pub store: String,
    /// The hash of its last decision event when the labels were read.
    pub store_last_event_hash: Option<String>,
    /// The folder the studies were restricted to, if any.
    pub folder: Option<String>,
    /// Labelled studies left out (changed or unreadable files).
    pub left_out: usize,
}

/// The parent model.
#[derive(Debug)]
pub struct Parent<'a> {
    /// Its card.
    pub card: &'a ModelCard,
    /// Its weights file's bytes (checked against the card by the caller).
    pub weights: &'a [u8],
    /// Its threshold in force at this site.
    pub threshold: f32,
}

/// What adaptation reports while it runs.
#[derive(Clone, Debug)]
pub enum AdaptEvent {
    /// The split is made and training starts.
    Started {
        /// Studies trained on.
        train: usize,
        /// Studies held out.
        held_out: usize,
        /// Steps per epoch.
        steps_per_epoch: usize,
    },
    /// One step done.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// Running mean loss of the epoch.
        loss: f64,
    },
    /// An epoch ended.
    EpochEnd {
        /// 1-based epoch.
        epoch: usize,
        /// Mean training loss.
        loss: f64,
        /// Seconds it took.
        secs: f64,
    },
}

/// Adaptation failed or refused.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// Too few local labels.
    #[error("too few local labels to adapt the model: {0}")]
    TooFew(String),
    /// The adapted model is no better than its parent on the held-out labels.
    #[error(
        "the adapted model is not better on the held-out local labels (ROC AUC {:.4} before, {:.4} after): no model was written",
        before.auc.estimate, after.auc.estimate
    )]
    NotBetter {
        /// The parent on the held-out labels, at its threshold in force.
        before: Box<LocalFigures>,
        /// The adapted model on the held-out labels, at its chosen threshold.
        after: Box<LocalFigures>,
    },
    /// The output exists already.
    #[error("refusing to overwrite an existing model file: {}", .0.display())]
    Exists(PathBuf),
    /// The parent's weights do not fit its network.
    #[error("the parent model's weights cannot be loaded for training: {0}")]
    Parent(String),
    /// A numeric failure.
    #[error("training failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Writing the model failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The card could not be encoded.
    #[error("cannot encode the model card: {0}")]
    Json(#[from] serde_json::Error),
}

/// The outcome of a successful adaptation.
#[derive(Debug)]
pub struct Adapted {
    /// The new card (with its adaptation record).
    pub card: AdaptedCard,
    /// Where the card was written.
    pub card_path: PathBuf,
    /// Where the weights were written.
    pub weights_path: PathBuf,
}

/// Splits sample indices into (train, held out): groups (patients) stay on one side; a group
/// counts as pneumonia if any of its studies is; within each class the groups are shuffled with
/// `seed` and held out until about `fraction` of that class's studies are.
pub fn split_by_group(
    samples: &[AdaptSample],
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        groups.entry(&s.group).or_default().push(i);
    }
    let mut rng = Rng::seed_from_u64(seed);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for class in [false, true] {
        let mut members: Vec<Vec<usize>> = groups
            .values()
            .filter(|idx| idx.iter().any(|&i| samples[i].pneumonia) == class)
            .cloned()
            .collect();
        let total: usize = members.iter().map(Vec::len).sum();
        let target = (total as f64 * fraction).round() as usize;
        members.shuffle(&mut rng);
        let mut taken = 0;
        for idx in members {
            if taken < target {
                taken += idx.len();
                held.extend(idx);
            } else {
                train.extend(idx);
            }
        }
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}

/// Logits and penultimate features of `units` in inference mode, in batches.
fn predict(
    net: &CxrNet,
    units: &[&Vec<f32>],
    norm: &Normalisation,
    device: &Device,
) -> candle_core::Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let s = norm.input_size;
    let (mut logits, mut features) = (Vec::with_capacity(units.len()), Vec::new());
    for chunk in units.chunks(64) {
        let mut flat = Vec::with_capacity(chunk.len() * s * s);
        for u in chunk {
            let mut x = (*u).clone();
            preprocess::normalise(&mut x, norm);
            flat.extend_from_slice(&x);
        }
        let xs = Tensor::from_vec(flat, (chunk.len(), 1, s, s), device)?;
        let (pooled, z) = net.pooled_and_logits(&xs)?;
        logits.extend(z.to_vec1::<f32>()?);
        features.extend(pooled.to_vec2::<f32>()?);
    }
    Ok((logits, features))
}

/// The parent's scores of inferred studies, as the parent scores them (per population where its
/// card says), and the one calibration the adapted model keeps: the parent's, or, for a parent
/// calibrated per population, that of the population most of the site's studies look like (the
/// adapted network's features are not the ones the population regression was fitted on).
fn parent_scores(
    card: &ModelCard,
    weights: &[u8],
    logits: &[f32],
    features: &[Vec<f32>],
) -> Result<(Vec<f32>, crate::model::card::Calibration), AdaptError> {
    let Some(domain) = &card.domain else {
        let scores = logits.iter().map(|&z| card.calibration.score(z)).collect();
        return Ok((scores, card.calibration));
    };
    let model = DomainModel::from_weights(weights, domain.feature_dim)
        .map_err(|e| AdaptError::Parent(e.to_string()))?;
    let p: Vec<f32> = features
        .iter()
        .map(|f| model.paediatric_probability(f))
        .collect();
    let scores = logits
        .iter()
        .zip(&p)
        .map(|(&z, &p)| domain.score(z, p))
        .collect();
    let paediatric = p.iter().filter(|&&p| p >= 0.5).count();
    let kept = if 2 * paediatric > p.len() {
        domain.paediatric
    } else {
        domain.adult
    };
    Ok((scores, kept))
}

/// The parent's network in a `VarMap`, its variables set from the parent's weights.
fn load_parent(
    card: &ModelCard,
    weights: &[u8],
    device: &Device,
) -> Result<(VarMap, CxrNet), AdaptError> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = CxrNet::new(&card.config, &vb)?;
    let tensors = candle_core::safetensors::load_buffer(weights, device)
        .map_err(|e| AdaptError::Parent(e.to_string()))?;
    {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| AdaptError::Parent("variable map lock poisoned".to_owned()))?;
        for (name, var) in data.iter() {
            let t = tensors
                .get(name)
                .ok_or_else(|| AdaptError::Parent(format!("{name} is missing")))?;
            var.set(t)
                .map_err(|e| AdaptError::Parent(format!("{name}: {e}")))?;
        }
    }
    Ok((varmap, net))
}

/// The trainable variables (everything but batch-norm running statistics) of the stages from
/// `from_stage` on and the head, sorted by name.
fn trainable(varmap: &VarMap, from_stage: usize) -> Vec<(String, candle_core::Var)> {
    let wanted = |name: &str| {
        name.strip_prefix("stage")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_none_or(|i| i >= from_stage)
    };
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut vars: Vec<(String, candle_core::Var)> = data
        .iter()
        .filter(|(k, _)| !k.contains("running_") && wanted(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// The threshold at which a share `target` of `positives` scores at or above it, read off their
/// empirical distribution with linear interpolation (the `1 - target` quantile). Unlike the
/// highest threshold that keeps at least `target` of a few held-out cases (which, with ten
/// cases and a target of 0.95, must keep all ten and so falls below the lowest), it does not
/// let one outlier set the threshold.
pub fn quantile_threshold(positives: &[f32], target: f64) -> f32 {
    let mut s: Vec<f32> = positives
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if s.is_empty() {
        return 0.5;
    }
    s.sort_by(f32::total_cmp);
    let pos = (1.0 - target).clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    let frac = (pos - lo as f64) as f32;
    s[lo] + (s[hi] - s[lo]) * frac
}

/// Fine-tunes `parent` on `samples` and, if it is better on the held-out part, writes
/// `out.safetensors` and `out.json` (never over an existing file).
pub fn adapt(
    parent: &Parent<'_>,
    samples: &[AdaptSample],
    source: &LocalSource,
    out: &Path,
    opts: &AdaptOptions,
    on_event: &mut dyn FnMut(AdaptEvent),
) -> Result<Adapted, AdaptError> {
    let started = Instant::now();
    let card_path = out.with_extension("json");
    let weights_path = out.with_extension("safetensors");
    for p in [&card_path, &weights_path] {
        if p.exists() {
            return Err(AdaptError::Exists(p.clone()));
        }
    }
    let pneumonia = samples.iter().filter(|s| s.pneumonia).count();
    let normal = samples.len() - pneumonia;
    if pneumonia < opts.min_per_class || normal < opts.min_per_class {
        return Err(AdaptError::TooFew(format!(
            "{pneumonia} PNEUMONIA and {normal} NORMAL studies with a reader's label (at least {} of each are needed)",
            opts.min_per_class
        )));
    }
    let (train_idx, held_idx) = split_by_group(samples, opts.held_out_fraction, opts.seed);
    let count = |idx: &[usize], y: bool| idx.iter().filter(|&&i| samples[i].pneumonia == y).count();
    if [
        count(&train_idx, true),
        count(&train_idx, false),
        count(&held_idx, true),
        count(&held_idx, false),
    ]
    .contains(&0)
    {
        return Err(AdaptError::TooFew(
            "the held-out and training parts do not both hold studies of each label".to_owned(),
        ));
    }

    let device = Device::Cpu;
    let norm = parent.card.normalisation;
    let size = norm.input_size;
    let held_units: Vec<&Vec<f32>> = held_idx.iter().map(|&i| &samples[i].unit).collect();
    let held_labels: Vec<bool> = held_idx.iter().map(|&i| samples[i].pneumonia).collect();

    let (varmap, net) = load_parent(parent.card, parent.weights, &device)?;
    let (before_logits, before_features) = predict(&net, &held_units, &norm, &device)?;
    let (before_scores, calibration) = parent_scores(
        parent.card,
        parent.weights,
        &before_logits,
        &before_features,
    )?;
    let before = LocalFigures::compute(&before_scores, &held_labels, parent.threshold);

    let n_pos = count(&train_idx, true);
    let n_neg = count(&train_idx, false);
    let n = train_idx.len() as f32;
    let class_weights = (n / (2.0 * n_neg as f32), n / (2.0 * n_pos as f32));
    let mut opt = AdamW::new(
        trainable(&varmap, opts.train_from_stage),
        opts.learning_rate,
        opts.weight_decay,
    )?;
    let batch_size = opts.batch_size.clamp(2, train_idx.len());
    let steps_per_epoch = train_idx.len().div_ceil(batch_size);
    let total_steps = (steps_per_epoch * opts.epochs).max(1);
    on_event(AdaptEvent::Started {
        train: train_idx.len(),
        held_out: held_idx.len(),
        steps_per_epoch,
    });
    let mut order = train_idx.clone();
    let mut images_seen = 0usize;
    let train_started = Instant::now();
    for epoch in 1..=opts.epochs {
        let epoch_started = Instant::now();
        let mut rng =
            Rng::seed_from_u64(opts.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        net.reseed_dropout(rng.random());
        order.sort_unstable();
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut steps = 0usize;
        for (step, batch) in order.chunks(batch_size).enumerate() {
            if batch.len() < 2 {
                continue; // Batch norm needs two images.
            }
            let global = (epoch - 1) * steps_per_epoch + step;
            let progress = global as f64 / total_steps as f64;
            let floor = 0.02 * opts.learning_rate;
            opt.learning_rate = floor
                + (opts.learning_rate - floor)
                    * 0.5
                    * (1.0 + (std::f64::consts::PI * progress).cos());
            let seeds: Vec<u64> = batch.iter().map(|_| rng.random()).collect();
            let flat: Vec<f32> = batch
                .par_iter()
                .zip(&seeds)
                .map(|(&i, &seed)| {
                    let mut x =
                        opts.augment
                            .apply(&samples[i].unit, size, &mut Rng::seed_from_u64(seed));
                    preprocess::normalise(&mut x, &norm);
                    x
                })
                .collect::<Vec<_>>()
                .concat();
            let labels: Vec<bool> = batch.iter().map(|&i| samples[i].pneumonia).collect();
            let value = crate::model::train::train_step(
                &net,
                &mut opt,
                flat,
                &labels,
                class_weights,
                size,
            )?;
            if !value.is_finite() {
                return Err(AdaptError::Candle(candle_core::Error::Msg(format!(
                    "the loss became {value} at epoch {epoch}"
                ))));
            }
            loss_sum += value;
            steps += 1;
            images_seen += batch.len();
            on_event(AdaptEvent::Step {
                epoch,
                loss: loss_sum / steps as f64,
            });
        }
        on_event(AdaptEvent::EpochEnd {
            epoch,
            loss: loss_sum / steps.max(1) as f64,
            secs: epoch_started.elapsed().as_secs_f64(),
        });
    }
    let train_secs = train_started.elapsed().as_secs_f64();

    let after_scores: Vec<f32> = predict(&net, &held_units, &norm, &device)?
        .0
        .into_iter()
        .map(|z| calibration.score(z))
        .collect();
    let held_positives: Vec<f32> = after_scores
        .iter()
        .zip(&held_labels)
        .filter(|&(_, &y)| y)
        .map(|(&s, _)| s)
        .collect();
    let threshold = quantile_threshold(&held_positives, opts.target_sensitivity).clamp(0.0, 1.0);
    let after = LocalFigures::compute(&after_scores, &held_labels, threshold);
    if after.auc.estimate.is_nan() || after.auc.estimate <= before.auc.estimate {
        return Err(AdaptError::NotBetter {
            before: Box::new(before),
            after: Box::new(after),
        });
    }

    // Write the weights (atomically, never over a file), then the card.
    if let Some(parent_dir) = weights_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent_dir).map_err(|source| AdaptError::Write {
            path: parent_dir.to_owned(),
            source,
        })?;
    }
    let tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    let tmp = weights_path.with_extension("safetensors.partial");
    candle_core::safetensors::save(&tensors, &tmp)?;
    let bytes = std::fs::read(&tmp).map_err(|source| AdaptError::Write {
        path: tmp.clone(),
        source,
    })?;
    if weights_path.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Err(AdaptError::Exists(weights_path));
    }
    std::fs::rename(&tmp, &weights_path).map_err(|source| AdaptError::Write {
        path: weights_path.clone(),
        source,
    })?;

    let model_id = out.file_name().map_or_else(
        || "adapted".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let threshold_rule = format!(
        "the {:.3} quantile of the held-out local PNEUMONIA scores (linear interpolation): about {:.3} of them at or above it",
        1.0 - opts.target_sensitivity,
        opts.target_sensitivity
    );
    let held_pneumonia = held_labels.iter().filter(|&&y| y).count();
    let record = AdaptationRecord {
        parent_model_id: parent.card.model_id.clone(),
        parent_weights_sha256: parent.card.weights_sha256.clone(),
        parent_threshold: parent.threshold,
        store: source.store.clone(),
        store_last_event_hash: source.store_last_event_hash.clone(),
        folder: source.folder.clone(),
        local_labels: samples.len(),
        left_out: source.left_out,
        train_labels: train_idx.len(),
        held_out_labels: held_idx.len(),
        held_out_pneumonia: held_pneumonia,
        held_out_normal: held_idx.len() - held_pneumonia,
        split: format!(
            "{:.0}% of each label held out by patient (by study where there is no patient id), seed {}",
            100.0 * opts.held_out_fraction,
            opts.seed
        ),
        held_out_before: before,
        held_out_after: after,
        threshold,
        threshold_rule: threshold_rule.clone(),
        epochs: opts.epochs,
        batch_size,
        learning_rate: opts.learning_rate,
        weight_decay: opts.weight_decay,
        seed: opts.seed,
        class_weights,
        adapt_secs: started.elapsed().as_secs_f64(),
        images_per_sec: images_seen as f64 / train_secs.max(1e-9),
    };
    let mut card = parent.card.clone();
    card.model_id = model_id;
    card.weights_sha256 = sha256_hex(&bytes);
    card.threshold = threshold;
    card.threshold_rule = threshold_rule;
    card.validation = EvalSummary::compute(&after_scores, &held_labels, threshold, opts.seed);
    card.test = None;
    // The parent's per-source figures and its "not seen" statistics describe the parent's
    // features, not the adapted network's: the adaptation record holds this model's figures, and
    // the image-based flag is off until it is refitted (the DICOM-based warnings remain).
    card.validation_sources = Vec::new();
    card.ood = None;
    card.domain = None;
    card.calibration = calibration;
    card.intended_use = format!(
        "{} Adapted to one site: fine-tuned from {} on {} studies its readers labelled (see adaptation).",
        parent.card.intended_use,
        parent.card.model_id,
        train_idx.len()
    );
    card.created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    card.app_version = env!("CARGO_PKG_VERSION").to_owned();
    let adapted = AdaptedCard {
        card,
        adaptation: Some(record),
    };
    let json = serde_json::to_string_pretty(&adapted)? + "\n";
    let write_card = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&card_path)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()
    };
    write_card().map_err(|source| AdaptError::Write {
        path: card_path.clone(),
        source,
    })?;
    Ok(Adapted {
        card: adapted,
        card_path,
        weights_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(group: &str, pneumonia: bool) -> AdaptSample {
        AdaptSample {
            sha256: format!("{group}-{pneumonia}"),
            group: group.to_owned(),
            pneumonia,
            unit: Vec::new(),
        }
    }

    #[test]
    fn the_quantile_threshold_interpolates_between_scores() {
        // Ten positives 0.1, 0.2, …, 1.0; the 0.05 quantile lies at position 0.45 between
        // 0.1 and 0.2: 0.145. Order does not matter.
        let s = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1];
        assert!((quantile_threshold(&s, 0.95) - 0.145).abs() < 1e-6);
        assert!((quantile_threshold(&s, 1.0) - 0.1).abs() < 1e-6);
        assert!((quantile_threshold(&s, 0.0) - 1.0).abs() < 1e-6);
        assert!((quantile_threshold(&[], 0.95) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_patient_never_lands_on_both_sides() {
        let mut samples = Vec::new();
        for p in 0..30 {
            let group = format!("p{p}");
            samples.push(sample(&group, p % 3 == 0));
            if p % 4 == 0 {
                samples.push(sample(&group, false));
            }
        }
        let (train, held) = split_by_group(&samples, 0.3, 1);
        assert_eq!(train.len() + held.len(), samples.len());
        let groups = |idx: &[usize]| {
            idx.iter()
                .map(|&i| samples[i].group.clone())
                .collect::<std::collections::HashSet<_>>()
        };
        assert!(groups(&train).is_disjoint(&groups(&held)));
        // About 30% of each class is held out.
        let held_pos = held.iter().filter(|&&i| samples[i].pneumonia).count();
        assert!((3..=5).contains(&held_pos), "{held_pos}");
        // Seeded: the same split every time.
        assert_eq!(split_by_group(&samples, 0.3, 1), (train, held));
    }
}
