//! Fixtures shared by the `audit_*` integration tests: studies, decisions and stores in temp dirs.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::path::{Path, PathBuf};

use cxr_triage::audit::{Action, DecisionStore, NewDecision, StudyRecord};
use cxr_triage::io::sha256_hex;
use cxr_triage::worklist::Label;

/// The model id written by the fixtures.
pub const MODEL_ID: &str = "cxrnet-test";

/// The identity of fixture study `n`.
pub fn sha(n: u32) -> String {
    sha256_hex(format!("fixture study {n}").as_bytes())
}

/// The path the fixtures give study `n`.
pub fn study_path(n: u32) -> PathBuf {
    PathBuf::from(format!("/data/ward-a/study-{n:04}.jpeg"))
}

/// Fixture study `n`, as a loader would describe it.
pub fn study(n: u32) -> StudyRecord {
    StudyRecord {
        sha256: sha(n),
        path: study_path(n),
        patient_id: Some(format!("P{n:05}")),
        study_uid: Some(format!("1.2.826.0.1.3680043.2.1125.{n}")),
        metadata_json: format!(r#"{{"rows": 224, "columns": 224, "n": {n}}}"#),
    }
}

/// A store at `dir/decisions.sqlite3` that knows studies `0..studies`.
pub fn store_with_studies(dir: &Path, studies: u32) -> DecisionStore {
    let store = DecisionStore::open(&dir.join("decisions.sqlite3")).expect("open store");
    let records: Vec<_> = (0..studies).map(study).collect();
    store.upsert_studies(&records).expect("upsert studies");
    store
}

/// A decision on study `n` with a model score of `score` at threshold 0.5.
pub fn decision(n: u32, action: Action, score: f32, new_label: Option<Label>) -> NewDecision {
    NewDecision {
        reader: "dr-alice".to_owned(),
        study_sha256: sha(n),
        study_path: study_path(n),
        model_id: Some(MODEL_ID.to_owned()),
        weights_sha256: Some(sha256_hex(b"weights")),
        score: Some(score),
        threshold: Some(0.5),
        ai_label: Some(Label::from_score(score, 0.5)),
        new_label,
        action,
        reason: String::new(),
        viewed_ms: None,
        ood_reason: None,
    }
}

/// The reader confirms the AI label of study `n` (pneumonia when `score >= 0.5`).
pub fn confirm(n: u32, score: f32) -> NewDecision {
    decision(
        n,
        Action::Confirm,
        score,
        Some(Label::from_score(score, 0.5)),
    )
}

/// The reader overrides the AI label of study `n`.
pub fn override_ai(n: u32, score: f32) -> NewDecision {
    let other = match Label::from_score(score, 0.5) {
        Label::Normal => Label::Pneumonia,
        Label::Pneumonia => Label::Normal,
    };
    decision(n, Action::Override, score, Some(other))
}

/// The reader undoes their most recent decision on study `n`.
pub fn undo(n: u32, score: f32) -> NewDecision {
    decision(n, Action::Undo, score, None)
}
