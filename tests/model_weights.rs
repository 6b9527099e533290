//! The shipped weights: loading refuses weights that are not the ones their card describes, and
//! the fast inference path scores them as stock candle does.

#![allow(clippy::unwrap_used)]

mod common;

use cxr_triage::model::{Classifier, ModelError};

fn shipped_bytes() -> (Vec<u8>, Vec<u8>) {
    let card = common::shipped_model();
    (
        std::fs::read(&card).unwrap(),
        std::fs::read(card.with_extension("safetensors")).unwrap(),
    )
}

#[test]
fn shipped_weights_load_and_match_their_card() {
    let c = Classifier::load(&common::shipped_model()).unwrap();
    assert_eq!(c.card().arch_id, cxr_triage::model::ARCH_ID);
    assert!((0.0..1.0).contains(&c.card().threshold));
}

/// The inference path (batch norm folded, Winograd F(4x4, 3x3) convolutions with fused pools,
/// batches in chunks) gives the shipped model's scores as stock candle does, on smooth images
/// and on noise, in a batch that does not divide into whole chunks.
#[test]
fn shipped_model_scores_the_same_with_the_fast_kernels_and_with_stock_candle() {
    use candle_core::{Device, Tensor};
    use cxr_triage::model::fast::Backend;

    let c = Classifier::load(&common::shipped_model()).unwrap();
    let s = c.input_size();
    let n = 2 * cxr_triage::model::cnn::INFERENCE_CHUNK + 3;
    let mut pixels = Vec::with_capacity(n * s * s);
    for i in 0..n {
        for y in 0..s {
            for x in 0..s {
                let (fy, fx, fi) = (y as f32 / s as f32, x as f32 / s as f32, i as f32);
                let smooth = (fy * (3.0 + fi)).sin() * (fx * (2.0 + 0.5 * fi)).cos();
                let noise = ((y * 131 + x * 71 + i * 29) % 97) as f32 / 97.0 - 0.5;
                pixels.push(if i % 3 == 2 {
                    2.0 * noise
                } else {
                    smooth + 0.2 * noise
                });
            }
        }
    }
    let xs = Tensor::from_vec(pixels, (n, 1, s, s), &Device::Cpu).unwrap();
    let logits = |backend| {
        c.net()
            .clone()
            .with_backend(backend)
            .forward_t(&xs, false)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (fast, reference) = (logits(Backend::Fast), logits(Backend::Candle));
    assert_eq!(fast.len(), n);
    let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
    for (i, (f, r)) in fast.iter().zip(&reference).enumerate() {
        assert!(f.is_finite(), "image {i}: logit {f}");
        assert!(
            (f - r).abs() <= 1e-3 * r.abs().max(1.0),
            "image {i}: logit {f} with the fast kernels, {r} with candle"
        );
        assert!((sigmoid(*f) - sigmoid(*r)).abs() <= 1e-4, "image {i}");
    }
    // The images differ, and so do their logits (no image got another's).
    assert!(reference.windows(2).any(|w| (w[0] - w[1]).abs() > 1e-2));
}

#[test]
fn one_changed_byte_is_refused() {
    let (card, mut weights) = shipped_bytes();
    let mid = weights.len() / 2;
    weights[mid] ^= 0x01;
    let err = Classifier::from_bytes(&card, weights).unwrap_err();
    assert!(matches!(err, ModelError::HashMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("damaged, truncated or belongs to another model")
    );
}

#[test]
fn truncated_weights_are_refused() {
    let (card, weights) = shipped_bytes();
    let truncated = weights[..weights.len() - 1000].to_vec();
    let err = Classifier::from_bytes(&card, truncated).unwrap_err();
    assert!(matches!(err, ModelError::HashMismatch { .. }), "{err}");
}

#[test]
fn weights_of_another_model_are_refused_even_when_valid() {
    // A valid safetensors file of the right shapes, but not the one the card names.
    let (card, weights) = shipped_bytes();
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("w.safetensors");
    std::fs::write(&original, &weights).unwrap();
    let mut tensors = candle_core::safetensors::load(&original, &candle_core::Device::Cpu).unwrap();
    let bias = tensors.get("head.bias").unwrap().clone();
    tensors.insert("head.bias".into(), (bias + 1.0).unwrap());
    let other = dir.path().join("other.safetensors");
    candle_core::safetensors::save(&tensors, &other).unwrap();
    let err = Classifier::from_bytes(&card, std::fs::read(&other).unwrap()).unwrap_err();
    assert!(matches!(err, ModelError::HashMismatch { .. }), "{err}");
}

#[test]
fn a_card_for_another_architecture_is_refused() {
    let (card, weights) = shipped_bytes();
    let mut json: serde_json::Value = serde_json::from_slice(&card).unwrap();
    json["arch_id"] = "resnet-152".into();
    let err = Classifier::from_bytes(&serde_json::to_vec(&json).unwrap(), weights).unwrap_err();
    assert!(matches!(err, ModelError::Architecture { .. }), "{err}");
}

#[test]
fn a_damaged_card_is_refused() {
    let (card, weights) = shipped_bytes();
    let err = Classifier::from_bytes(&card[..card.len() / 2], weights).unwrap_err();
    assert!(matches!(err, ModelError::Card(_)), "{err}");
}
