//! The model card: `weights/NAME.json` beside `weights/NAME.safetensors`.

use crate::model::{CnnConfig, augment::Augment, metrics, preprocess::Normalisation};

/// Everything needed to use, trust and reproduce a set of weights.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelCard {
    /// The model's name (`NAME` in `weights/NAME.*`), shown in the app and written in the audit trail.
    pub model_id: String,
    /// The architecture ([`crate::model::ARCH_ID`]) the weights are for.
    pub arch_id: String,
    /// The network's shape.
    pub config: CnnConfig,
    /// Input size and normalisation.
    pub normalisation: Normalisation,
    /// Maps the network's logit to the score: `sigmoid(scale * logit + bias)`, fitted on
    /// validation so that a score of 0.97 means about 97% (identity for older models).
    #[serde(default)]
    pub calibration: Calibration,
    /// Triage threshold on the (calibrated) score: a score at or above it is called pneumonia.
    pub threshold: f32,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// SHA-256 of the safetensors file: loading refuses any other file.
    pub weights_sha256: String,
    /// How the weights were trained.
    pub training: TrainingRecord,
    /// Metrics on the validation split (used for checkpoint and threshold choice): every
    /// source's validation films pooled. Read it with [`Self::validation_sources`]: pooled
    /// figures hide how the model does on each hospital's films.
    pub validation: EvalSummary,
    /// Metrics on each source's validation films (and each label source's, where a source has
    /// more than one), in a fixed order.
    #[serde(default)]
    pub validation_sources: Vec<SourceSummary>,
    /// Metrics on the held-out test split, computed once after training.
    pub test: Option<EvalSummary>,
    /// The image-based "not seen" flag (see [`crate::model::ood`]); absent for older models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<OodCard>,
    /// One calibration per population, blended by how paediatric a film looks (see
    /// [`crate::model::domain`]); absent for older models, which use [`Self::calibration`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainCard>,
    /// What the model has and has not seen.
    pub intended_use: String,
    /// When the weights were written (RFC 3339, UTC).
    pub created_at: String,
    /// The cxr-triage version that trained them.
    pub app_version: String,
}

impl ModelCard {
    /// Where the model was measured, one line per set, the held-out test split first, then each
    /// validation source: `(what the films are, the figures at the threshold)`. The score's
    /// tooltip, Help > Model information and `train` quote these, never a pooled figure alone.
    pub fn source_figures(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(t) = &self.test {
            out.push((
                "Test, Kermany (paediatric, held out)".to_owned(),
                t.figures_line(),
            ));
        }
        for s in &self.validation_sources {
            out.push((
                format!("Validation, {}", s.description),
                s.summary.figures_line(),
            ));
        }
        if self.validation_sources.is_empty() {
            out.push(("Validation".to_owned(), self.validation.figures_line()));
        }
        out
    }
}

impl ModelCard {
    /// How the network's output becomes the score, in words (Help > Model information).
    pub fn score_description(&self) -> String {
        match &self.domain {
            Some(d) => {
                let taken: Vec<String> = d
                    .validation_paediatric
                    .iter()
                    .map(|(n, f)| format!("{:.0}% of {n}", 100.0 * f))
                    .collect();
                format!(
                    "calibrated per population: a film that looks like the paediatric training \
                     films gets the paediatric calibration, any other the adult one (validation \
                     films taken for paediatric: {})",
                    taken.join(", ")
                )
            }
            None => "one calibration for every film".to_owned(),
        }
    }
}

impl EvalSummary {
    /// The figures at the threshold in one line: films, sensitivity, specificity, AUC with its
    /// interval, calibration error.
    pub fn figures_line(&self) -> String {
        format!(
            "{} films ({} pneumonia): sensitivity {:.1}%, specificity {:.1}% at {:.3}; AUC {:.3} \
             ({:.3}-{:.3}); calibration error {:.3}",
            self.images,
            self.pneumonia,
            self.sensitivity * 100.0,
            self.specificity * 100.0,
            self.threshold,
            self.auc.estimate,
            self.auc.low,
            self.auc.high,
            self.ece
        )
    }
}

/// The logit-to-score map of [`ModelCard::calibration`] (Platt scaling).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Multiplies the logit (1 / temperature).
    pub scale: f32,
    /// Added to the scaled logit.
    pub bias: f32,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            scale: 1.0,
            bias: 0.0,
        }
    }
}

impl Calibration {
    /// The score of a logit.
    pub fn score(&self, logit: f32) -> f32 {
        1.0 / (1.0 + (-(self.scale * logit + self.bias)).exp())
    }
}

/// Calibration per population: the logit means less on adult films than on the paediatric films
/// of the training hospital, so each population has its own Platt scaling, fitted on its own
/// validation films, and a film's score blends the two by the probability `p` that it is
/// paediatric: `sigmoid(p (a_p z + b_p) + (1 - p) (a_a z + b_a))`. A film the regression cannot
/// place (`p` near 0.5) gets a score between the two.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DomainCard {
    /// Length of the feature vectors the regression reads.
    pub feature_dim: usize,
    /// Training films it was fitted on.
    pub fitted_on: usize,
    /// The calibration of paediatric films.
    pub paediatric: Calibration,
    /// The calibration of adult films (and of any film unlike the paediatric ones).
    pub adult: Calibration,
    /// The share of each validation source's films taken for paediatric (`p >= 0.5`).
    pub validation_paediatric: Vec<(String, f64)>,
}

impl DomainCard {
    /// The score of `logit` for a film that is paediatric with probability `paediatric`; a
    /// non-finite probability counts as adult (the more sensitive calibration).
    pub fn score(&self, logit: f32, paediatric: f32) -> f32 {
        let p = if paediatric.is_finite() {
            paediatric.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let zp = self.paediatric.scale * logit + self.paediatric.bias;
        let za = self.adult.scale * logit + self.adult.bias;
        1.0 / (1.0 + (-(p * zp + (1.0 - p) * za)).exp())
    }
}

/// Metrics on one source's films (or one label source's within it).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceSummary {
    /// Short name: `kermany`, `nih-adult`, `nih-adult/rsna`, `nih-adult/nih`.
    pub name: String,
    /// What the films are, in words.
    pub description: String,
    /// The metrics at the model's threshold.
    pub summary: EvalSummary,
}

/// The "not seen" flag's settings, fixed at training (see [`crate::model::ood`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OodCard {
    /// Length of the feature vectors (the head's input).
    pub feature_dim: usize,
    /// Shrinkage of the covariance towards the identity.
    pub shrinkage: f64,
    /// Training films the statistics were fitted on.
    pub fitted_on: usize,
    /// A study whose distance is above this is flagged.
    pub threshold: f32,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// Share of each source's validation films flagged at the threshold.
    pub validation_flagged: Vec<(String, f64)>,
}

/// How a model was trained.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainingRecord {
    /// The training data folder as given on the command line.
    pub data: String,
    /// Images used for training (after the split).
    pub train_images: usize,
    /// Images in the validation split.
    pub validation_images: usize,
    /// Patients in the training and validation splits.
    pub train_patients: usize,
    /// Patients in the validation split.
    pub validation_patients: usize,
    /// Fraction of each class's images put into validation.
    pub validation_fraction: f64,
    /// Seed of the patient split.
    pub split_seed: u64,
    /// Seed of initialisation, shuffling, augmentation and dropout.
    pub seed: u64,
    /// Epochs run, and the epoch whose weights were kept (1-based).
    pub epochs_run: usize,
    /// The epoch whose weights were kept (best validation AUC), 1-based.
    pub best_epoch: usize,
    /// Maximum epochs asked for.
    pub max_epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, warm-up then cosine decay).
    pub learning_rate: f64,
    /// Decoupled weight decay on convolution and linear weights.
    pub weight_decay: f64,
    /// Epochs without a better validation AUC before stopping.
    pub patience: usize,
    /// Loss weight of a normal and of a pneumonia image (class balance).
    pub class_weights: (f32, f32),
    /// Augmentation used.
    pub augment: Augment,
    /// Wall-clock training time, loading included.
    pub training_secs: f64,
    /// Training images processed per second (forward, backward, update).
    pub images_per_sec: f64,
    /// Convolution kernels used (`candle` or `fast`).
    pub kernels: String,
    /// Threads used.
    pub threads: usize,
    /// Corrected labels trained with, if any.
    pub corrections: Option<Corrections>,
    /// Each source's films: how many trained and validated, and how each training film was
    /// weighted (empty for models trained on Kermany alone, before sources existed).
    pub sources: Vec<SourceRecord>,
    /// One row per epoch.
    pub history: Vec<EpochRecord>,
}

/// One source of training data (see [`TrainingRecord::sources`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceRecord {
    /// Short name (`kermany`, `nih-adult`).
    pub name: String,
    /// The folder.
    pub data: String,
    /// Training films (before repetition).
    pub train_images: usize,
    /// Validation films.
    pub validation_images: usize,
    /// Fraction of the source's films held out for validation (by patient, stratified).
    pub validation_fraction: f64,
    /// Seed of the split.
    pub split_seed: u64,
    /// How many times each training film is shown per epoch.
    pub repeat: usize,
    /// How films with another finding than pneumonia were used (`left out`, `as not pneumonia`),
    /// where the source has them.
    pub other_findings: String,
}

/// Corrected labels applied to the training data.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Corrections {
    /// The CSV file.
    pub file: String,
    /// Images of the data folder whose label it changed.
    pub labels_changed: usize,
    /// Images it added.
    pub images_added: usize,
}

/// One epoch of training.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss (weighted binary cross-entropy, augmented inputs).
    pub train_loss: f64,
    /// Validation loss (same weighting, no augmentation).
    pub validation_loss: f64,
    /// Validation ROC AUC: with several sources, the lowest of the sources' AUCs (the criterion
    /// that chooses the epoch).
    pub validation_auc: f64,
    /// Each source's validation ROC AUC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_auc_sources: Vec<(String, f64)>,
    /// Validation accuracy at 0.5.
    pub validation_accuracy: f64,
    /// Learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// Seconds the epoch took.
    pub secs: f64,
    /// Test loss, ROC AUC and accuracy at 0.5 after this epoch, when training was asked to
    /// record the test curve (`train --test-curve`): for the report only, never used to choose
    /// an epoch, a threshold or a setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<EpochTest>,
}

/// The test split after one epoch (see [`EpochRecord::test`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochTest {
    /// Loss (same class weighting as training).
    pub loss: f64,
    /// ROC AUC.
    pub auc: f64,
    /// Accuracy at 0.5.
    pub accuracy: f64,
}

/// Headline metrics of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EvalSummary {
    /// Images evaluated.
    pub images: usize,
    /// Of which pneumonia.
    pub pneumonia: usize,
    /// Of which normal.
    pub normal: usize,
    /// The threshold the rates below are computed at.
    pub threshold: f32,
    /// Accuracy at the threshold.
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub accuracy: f64,
    /// Sensitivity at the threshold.
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub sensitivity: f64,
    /// Specificity at the threshold.
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub specificity: f64,
    /// Positive predictive value at the threshold.
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub ppv: f64,
    /// Negative predictive value at the threshold.
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub npv: f64,
    /// Confusion matrix at the threshold.
    pub confusion: metrics::Confusion,
    /// Accuracy at 0.5.
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub accuracy_at_half: f64,
    /// Confusion matrix at 0.5.
    pub confusion_at_half: metrics::Confusion,
    /// ROC AUC with its 95% bootstrap interval.
    pub auc: metrics::Interval,
    /// Expected calibration error (10 bins).
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub ece: f64,
}

impl EvalSummary {
    /// Computes the summary of `scores` against `labels` (true = pneumonia) at `threshold`.
    pub fn compute(scores: &[f32], labels: &[bool], threshold: f32, seed: u64) -> Self {
        let c = metrics::Confusion::at(scores, labels, threshold);
        let half = metrics::Confusion::at(scores, labels, 0.5);
        let pneumonia = labels.iter().filter(|&&y| y).count();
        Self {
            images: labels.len(),
            pneumonia,
            normal: labels.len() - pneumonia,
            threshold,
            accuracy: c.accuracy(),
            sensitivity: c.sensitivity(),
            specificity: c.specificity(),
            ppv: c.ppv(),
            npv: c.npv(),
            confusion: c,
            accuracy_at_half: half.accuracy(),
            confusion_at_half: half,
            auc: metrics::roc_auc_bootstrap(scores, labels, 2000, seed),
            ece: metrics::calibration(scores, labels, 10).1,
        }
    }
}

/// The intended-use statement written into every card.
pub const INTENDED_USE: &str = "Triage aid for frontal chest radiographs: ranks studies by the \
probability of pneumonia so that a reader sees likely cases first. Trained on paediatric (1 to 5 \
years) anterior-posterior films from one hospital (Kermany et al. 2018, Guangzhou) and 127 adult \
films from a second (NIH Clinical Center). Adult films rank less well than paediatric ones, and \
lateral views, other hospitals' equipment and non-chest images are outside what it has seen. Not \
a diagnosis; every study still needs a reader.";

/// A model card with the record of its adaptation to a site, as `cxr-triage adapt` writes it:
/// every field of [`ModelCard`], plus `adaptation`. A card without `adaptation` reads as one
/// with `None`, and [`ModelCard`] reads an adapted card (it ignores the extra field).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdaptedCard {
    /// The card.
    #[serde(flatten)]
    pub card: ModelCard,
    /// Where the weights came from, when they were adapted to a site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<AdaptationRecord>,
}

/// How a model was adapted to one site's reviewed studies (`cxr-triage adapt`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdaptationRecord {
    /// The model it was fine-tuned from.
    pub parent_model_id: String,
    /// SHA-256 of the parent's weights.
    pub parent_weights_sha256: String,
    /// The parent's threshold in force at the site.
    pub parent_threshold: f32,
    /// The decision store whose labels it learned from.
    pub store: String,
    /// The hash of the store's last decision event when the labels were read.
    pub store_last_event_hash: Option<String>,
    /// The folder the studies were restricted to, if any.
    pub folder: Option<String>,
    /// Local labels used (training and held out).
    pub local_labels: usize,
    /// Labelled studies left out (changed or unreadable files).
    pub left_out: usize,
    /// Studies trained on.
    pub train_labels: usize,
    /// Studies held out to measure before and after.
    pub held_out_labels: usize,
    /// Of which PNEUMONIA.
    pub held_out_pneumonia: usize,
    /// Of which NORMAL.
    pub held_out_normal: usize,
    /// How the held-out part was chosen.
    pub split: String,
    /// The parent on the held-out labels, at its threshold in force.
    pub held_out_before: crate::model::local::LocalFigures,
    /// This model on the held-out labels, at its threshold.
    pub held_out_after: crate::model::local::LocalFigures,
    /// The threshold chosen on the local labels.
    pub threshold: f32,
    /// How it was chosen.
    pub threshold_rule: String,
    /// Epochs of fine-tuning.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of the split, shuffling, augmentation and dropout.
    pub seed: u64,
    /// Loss weight of a normal and of a pneumonia study.
    pub class_weights: (f32, f32),
    /// Wall-clock time of the adaptation (after the studies were read).
    pub adapt_secs: f64,
    /// Training images per second.
    pub images_per_sec: f64,
}
