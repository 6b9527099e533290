//! Scoring many studies: parallel decoding (rayon), batched inference, results as they come.
//!
//! A stand-in with the exact signature of `model::scoring::score_paths`, which the lead is adding
//! to `main` for `cxr-triage score` and this window alike. When it lands, this file becomes
//! `pub(crate) use crate::model::scoring::{Scored, score_paths};` and nothing else changes.
//! [`read_paths`] (no model: identity and metadata only) stays here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::io::{self, StudyMeta};

/// A study read and prepared for the model: what was read, and the input or why there is none.
type Prepared = (Option<StudyMeta>, Result<Vec<f32>, String>);
use crate::model::Classifier;

/// The outcome for one study.
#[derive(Clone, Debug)]
pub(crate) struct Scored {
    /// Index of the study in the list given to [`score_paths`].
    pub index: usize,
    /// What was read of it (absent when it could not be read).
    pub meta: Option<StudyMeta>,
    /// The pneumonia probability, or why there is none (in words for the reader).
    pub outcome: Result<f32, String>,
}

/// Scores `paths` in batches of `batch_size`, calling `on_batch` after each batch, in order.
/// Stops early (between batches) when `cancel` is set.
pub(crate) fn score_paths(
    classifier: &Classifier,
    paths: &[PathBuf],
    batch_size: usize,
    cancel: &AtomicBool,
    on_batch: &mut dyn FnMut(Vec<Scored>),
) {
    let min_side = u32::try_from(classifier.input_size()).unwrap_or(u32::MAX);
    let batch_size = batch_size.max(1);
    for (chunk_index, chunk) in paths.chunks(batch_size).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let base = chunk_index * batch_size;
        let prepared: Vec<Prepared> = chunk
            .par_iter()
            .map(|path| match io::load_study_for_model(path, min_side) {
                Ok(study) => {
                    let input = classifier
                        .prepare(&study.image, study.meta.default_window)
                        .map_err(|e| e.to_string());
                    (Some(study.meta), input)
                }
                Err(e) => (None, Err(e.to_string())),
            })
            .collect();
        let inputs: Vec<Vec<f32>> = prepared
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().cloned())
            .collect();
        let mut scores = match classifier.score_prepared(&inputs) {
            Ok(s) => s.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(format!("the model failed: {e}")); inputs.len()],
        }
        .into_iter();
        let out = prepared
            .into_iter()
            .enumerate()
            .map(|(i, (meta, input))| Scored {
                index: base + i,
                meta,
                outcome: match input {
                    Ok(_) => scores
                        .next()
                        .unwrap_or_else(|| Err("the model gave no score".to_owned())),
                    Err(e) => Err(e),
                },
            })
            .collect();
        on_batch(out);
    }
}

/// Like [`score_paths`] without a model: reads each study (its identity and metadata) so that
/// it can still be viewed and labelled; every outcome is `Err(reason)`.
pub(crate) fn read_paths(
    paths: &[PathBuf],
    batch_size: usize,
    reason: &str,
    cancel: &AtomicBool,
    on_batch: &mut dyn FnMut(Vec<Scored>),
) {
    let batch_size = batch_size.max(1);
    for (chunk_index, chunk) in paths.chunks(batch_size).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let base = chunk_index * batch_size;
        let out = chunk
            .par_iter()
            .enumerate()
            .map(|(i, path)| match io::load_study_for_model(path, 64) {
                Ok(study) => Scored {
                    index: base + i,
                    meta: Some(study.meta),
                    outcome: Err(reason.to_owned()),
                },
                Err(e) => Scored {
                    index: base + i,
                    meta: None,
                    outcome: Err(e.to_string()),
                },
            })
            .collect();
        on_batch(out);
    }
}
