//! A trained model ready to score: weights checked against their card, batched inference.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::io::{GrayImage, Window, sha256_hex};
use crate::model::card::ModelCard;
use crate::model::domain::DomainModel;
use crate::model::ood::{FeatureGaussian, OodError};
use crate::model::preprocess::{self, PreprocessError};
use crate::model::{ARCH_ID, CxrNet};

/// Loading or running a model failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file cannot be read.
    #[error("cannot read the model file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The card is not valid JSON of the expected shape.
    #[error("the model card is not valid: {0}")]
    Card(#[from] serde_json::Error),
    /// The weights are not the ones the card describes.
    #[error(
        "the weights file does not match its model card (its SHA-256 is {actual}, the card expects \
         {expected}): it is damaged, truncated or belongs to another model"
    )]
    HashMismatch {
        /// The hash in the card.
        expected: String,
        /// The hash of the bytes found.
        actual: String,
    },
    /// A value of the card is out of range (an edited or damaged card).
    #[error("the model card is not valid: {0}")]
    CardValue(String),
    /// The card names the shipped model's weights but is not the shipped card: it was edited.
    #[error(
        "the model card of {model_id} was edited (its SHA-256 is {actual}, the shipped card's is \
         {expected}): change the threshold with `cxr-triage threshold` (an audited change), or \
         reinstall cxr-triage to get the shipped card back"
    )]
    CardEdited {
        /// The model.
        model_id: String,
        /// SHA-256 of the shipped card.
        expected: String,
        /// SHA-256 of the card found.
        actual: String,
    },
    /// The card is for another architecture.
    #[error("the model is a {found} network; this version of cxr-triage runs {expected}")]
    Architecture {
        /// What the card says.
        found: String,
        /// What this build runs.
        expected: &'static str,
    },
    /// The tensors do not fit the network (wrong names or shapes).
    #[error("the weights do not fit the network: {0}")]
    Weights(candle_core::Error),
    /// Inference failed.
    #[error("the model failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// An image could not be prepared.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// The "not seen" flag's statistics are missing or damaged.
    #[error(transparent)]
    Ood(#[from] OodError),
}

/// What the model says of one study.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    /// The (calibrated) pneumonia probability.
    pub score: f32,
    /// How unlike the training films the study is (see [`crate::model::ood`]); `None` for a
    /// model without the flag.
    pub ood_distance: Option<f32>,
    /// The probability that the film is paediatric (see [`crate::model::domain`]), for a model
    /// calibrated per population.
    pub paediatric: Option<f32>,
}

/// A network with its card: what `score`, `explain`, `eval` and the app use.
pub struct Classifier {
    net: CxrNet,
    card: ModelCard,
    card_sha256: String,
    device: Device,
    ood: Option<FeatureGaussian>,
    domain: Option<DomainModel>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model_id", &self.card.model_id)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Loads `NAME.json` and the `NAME.safetensors` beside it. `path` may name either file or
    /// leave out the extension.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let card_path = path.with_extension("json");
        let weights_path = path.with_extension("safetensors");
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| ModelError::Read {
                path: p.to_owned(),
                source,
            })
        };
        Self::from_bytes(&read(&card_path)?, read(&weights_path)?)
    }

    /// Builds a classifier from a card's JSON and the weights' bytes, refusing weights whose
    /// SHA-256 is not the card's.
    pub fn from_bytes(card_json: &[u8], weights: Vec<u8>) -> Result<Self, ModelError> {
        let card: ModelCard = serde_json::from_slice(card_json)?;
        validate_card(&card)?;
        if card.arch_id != ARCH_ID {
            return Err(ModelError::Architecture {
                found: card.arch_id,
                expected: ARCH_ID,
            });
        }
        let actual = sha256_hex(&weights);
        if !actual.eq_ignore_ascii_case(&card.weights_sha256) {
            return Err(ModelError::HashMismatch {
                expected: card.weights_sha256,
                actual,
            });
        }
        let card_sha256 = sha256_hex(card_json);
        check_shipped_card(&card, &card_sha256)?;
        let device = Device::Cpu;
        let ood = match &card.ood {
            Some(o) => Some(FeatureGaussian::from_weights(&weights, o.feature_dim)?),
            None => None,
        };
        let domain = match &card.domain {
            Some(d) => Some(DomainModel::from_weights(&weights, d.feature_dim)?),
            None => None,
        };
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(ModelError::Weights)?;
        let net = CxrNet::new(&card.config, &vb).map_err(ModelError::Weights)?;
        Ok(Self {
            net,
            card,
            card_sha256,
            device,
            ood,
            domain,
        })
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Lower-case hexadecimal SHA-256 of the model card's file as loaded (the card holds the
    /// threshold: an edited card has another hash).
    pub fn card_sha256(&self) -> &str {
        &self.card_sha256
    }

    /// Whether these are the shipped model's weights (the card built into this binary).
    pub fn is_shipped(&self) -> bool {
        serde_json::from_slice::<ModelCard>(SHIPPED_CARD).is_ok_and(|shipped| {
            shipped
                .weights_sha256
                .eq_ignore_ascii_case(&self.card.weights_sha256)
        })
    }

    /// The network.
    pub fn net(&self) -> &CxrNet {
        &self.net
    }

    /// Side of the square input.
    pub fn input_size(&self) -> usize {
        self.card.normalisation.input_size
    }

    /// The network input for one study (see [`preprocess::preprocess`]).
    pub fn prepare(&self, image: &GrayImage, window: Window) -> Result<Vec<f32>, ModelError> {
        Ok(preprocess::preprocess(
            image,
            window,
            &self.card.normalisation,
        )?)
    }

    /// Pneumonia probabilities for prepared inputs, one per input, in order.
    pub fn score_prepared(&self, inputs: &[Vec<f32>]) -> Result<Vec<f32>, ModelError> {
        Ok(self
            .assess_prepared(inputs)?
            .into_iter()
            .map(|a| a.score)
            .collect())
    }

    /// The score and the "not seen" distance of prepared inputs, one per input, in order.
    pub fn assess_prepared(&self, inputs: &[Vec<f32>]) -> Result<Vec<Assessment>, ModelError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let xs = self.batch(inputs)?;
        let (pooled, logits) = self.net.pooled_and_logits(&xs)?;
        let logits = logits.to_vec1::<f32>()?;
        let features = if self.ood.is_some() || self.domain.is_some() {
            pooled.to_vec2::<f32>()?
        } else {
            Vec::new()
        };
        Ok(logits
            .iter()
            .enumerate()
            .map(|(i, &z)| {
                let f = features.get(i).map(Vec::as_slice);
                let paediatric = self.paediatric_probability(f);
                Assessment {
                    score: self.score_of_logit(z, paediatric),
                    ood_distance: self.ood.as_ref().zip(f).map(|(g, f)| g.distance(f)),
                    paediatric,
                }
            })
            .collect())
    }

    /// The probability that the film of these penultimate features is paediatric, for a model
    /// calibrated per population.
    pub fn paediatric_probability(&self, features: Option<&[f32]>) -> Option<f32> {
        self.domain
            .as_ref()
            .zip(features)
            .map(|(d, f)| d.paediatric_probability(f))
    }

    /// The score of a logit: through the population's calibration where the card has one
    /// (`paediatric` from [`Self::paediatric_probability`]; missing counts as adult), else the
    /// card's single calibration.
    pub fn score_of_logit(&self, logit: f32, paediatric: Option<f32>) -> f32 {
        match &self.card.domain {
            Some(d) => d.score(logit, paediatric.unwrap_or(f32::NAN)),
            None => self.card.calibration.score(logit),
        }
    }

    /// Whether a "not seen" distance lies beyond the card's threshold: the study is unlike the
    /// films the model was trained and validated on.
    pub fn is_unlike_training(&self, distance: f32) -> bool {
        self.card
            .ood
            .as_ref()
            .is_some_and(|o| distance > o.threshold || distance.is_nan())
    }

    /// Stacks prepared inputs into a `[n, 1, s, s]` tensor.
    pub fn batch(&self, inputs: &[Vec<f32>]) -> Result<Tensor, ModelError> {
        let s = self.input_size();
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(
            flat,
            (inputs.len(), 1, s, s),
            &self.device,
        )?)
    }

    /// The pneumonia probability of one study.
    pub fn score(&self, image: &GrayImage, window: Window) -> Result<f32, ModelError> {
        let input = self.prepare(image, window)?;
        let scores = self.score_prepared(std::slice::from_ref(&input))?;
        Ok(scores.first().copied().unwrap_or(f32::NAN))
    }
}
/// The shipped model card, built into this binary. A card that names the shipped weights must be
/// this card byte for byte: its threshold, calibration and input settings decide every AI label,
/// so an edit to them is refused (a site changes its threshold with `cxr-triage threshold`, an
/// audited event) rather than changing labels silently.
const SHIPPED_CARD: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/cxrnet.json"));

/// Refuses a card that names the shipped weights but is not the shipped card.
fn check_shipped_card(card: &ModelCard, card_sha256: &str) -> Result<(), ModelError> {
    let Ok(shipped) = serde_json::from_slice::<ModelCard>(SHIPPED_CARD) else {
        return Ok(());
    };
    let expected = sha256_hex(SHIPPED_CARD);
    if card.model_id == shipped.model_id
        && card
            .weights_sha256
            .eq_ignore_ascii_case(&shipped.weights_sha256)
        && card_sha256 != expected
    {
        return Err(ModelError::CardEdited {
            model_id: card.model_id.clone(),
            expected,
            actual: card_sha256.to_owned(),
        });
    }
    Ok(())
}

/// Refuses a card whose values cannot be right: a threshold outside (0, 1), an empty model
/// name, a weights hash that is not 64 hexadecimal digits, an input size below 8 pixels.
fn validate_card(card: &ModelCard) -> Result<(), ModelError> {
    let bad = |why: &str| Err(ModelError::CardValue(why.to_owned()));
    if !(card.threshold.is_finite() && card.threshold > 0.0 && card.threshold < 1.0) {
        return bad("its threshold is not between 0 and 1");
    }
    if card.model_id.trim().is_empty() || card.model_id.chars().any(char::is_control) {
        return bad("its model name is empty or holds control characters");
    }
    if card.weights_sha256.len() != 64
        || !card.weights_sha256.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return bad("its weights SHA-256 is not 64 hexadecimal digits");
    }
    if card.normalisation.input_size < 8 {
        return bad("its input size is below 8 pixels");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn shipped() -> (serde_json::Value, Vec<u8>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
        let card = std::fs::read(dir.join("cxrnet.json")).unwrap();
        let weights = std::fs::read(dir.join("cxrnet.safetensors")).unwrap();
        (serde_json::from_slice(&card).unwrap(), weights)
    }

    #[test]
    fn edited_card_values_are_refused_and_the_card_hash_is_kept() {
        let (card, weights) = shipped();
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/cxrnet.json"),
        )
        .unwrap();
        let c = Classifier::from_bytes(&bytes, weights.clone()).unwrap();
        assert_eq!(c.card_sha256(), sha256_hex(&bytes));
        assert_eq!(c.card_sha256(), sha256_hex(SHIPPED_CARD));
        for (field, value) in [
            ("threshold", serde_json::json!(1.5)),
            ("threshold", serde_json::json!(0.0)),
            ("model_id", serde_json::json!(" ")),
            ("weights_sha256", serde_json::json!("abc")),
        ] {
            let mut edited = card.clone();
            edited[field] = value.clone();
            let err =
                Classifier::from_bytes(&serde_json::to_vec(&edited).unwrap(), weights.clone())
                    .unwrap_err();
            assert!(
                matches!(err, ModelError::CardValue(_)),
                "{field} = {value}: {err}"
            );
        }
        // A valid value (another threshold) in the shipped card is still an edit: refused.
        let mut edited = card.clone();
        edited["threshold"] = serde_json::json!(0.42);
        let err = Classifier::from_bytes(&serde_json::to_vec(&edited).unwrap(), weights.clone())
            .unwrap_err();
        assert!(matches!(err, ModelError::CardEdited { .. }), "{err}");
        // Even re-serialised with the same values, the card is not the shipped file.
        let err = Classifier::from_bytes(&serde_json::to_vec(&card).unwrap(), weights.clone())
            .unwrap_err();
        assert!(matches!(err, ModelError::CardEdited { .. }), "{err}");
        // A card of another model with these weights (a copy made for a site, renamed) loads,
        // with its own hash.
        let mut renamed = edited;
        renamed["model_id"] = serde_json::json!("cxrnet-v2-site-copy");
        let bytes2 = serde_json::to_vec(&renamed).unwrap();
        let c2 = Classifier::from_bytes(&bytes2, weights).unwrap();
        assert_ne!(c2.card_sha256(), c.card_sha256());
    }
}
