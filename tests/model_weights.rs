//! Loading refuses weights that are not the ones their card describes.

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
