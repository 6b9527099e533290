//! Scoring many studies: parallel decoding (rayon), batched inference, results as they come.
//!
//! Shared by `cxr-triage score` and the review window's scoring thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::io::{self, StudyMeta};
use crate::model::Classifier;

/// The outcome for one study.
#[derive(Clone, Debug)]
pub struct Scored {
    /// Index of the study in the list given to [`score_paths`].
    pub index: usize,
    /// What was read of it (absent when it could not be read).
    pub meta: Option<StudyMeta>,
    /// The pneumonia probability, or why there is none (in words for the reader).
    pub outcome: Result<f32, String>,
}

/// A study read and turned into the network's input, or why it could not be.
type Prepared = (Option<StudyMeta>, Result<Vec<f32>, String>);

/// Scores `paths` in batches of `batch_size`, calling `on_batch` after each batch, in order.
/// Stops early (between batches) when `cancel` is set.
pub fn score_paths(
    classifier: &Classifier,
    paths: &[PathBuf],
    batch_size: usize,
    cancel: &AtomicBool,
    on_batch: &mut dyn FnMut(Vec<Scored>),
) {
    let min_side = classifier.input_size() as u32;
    for (chunk_index, chunk) in paths.chunks(batch_size.max(1)).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let base = chunk_index * batch_size.max(1);
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
        let scores = classifier.score_prepared(&inputs);
        let mut scores = match scores {
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
