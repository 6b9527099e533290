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
    /// How unlike the training films the study is (see [`crate::model::ood`]), when the model
    /// measures it.
    pub ood_distance: Option<f32>,
    /// Why the score may not hold for this study, in words, when the image itself lies beyond
    /// the model's "not seen" threshold.
    pub not_seen: Option<String>,
}

/// The reader-facing reason of the image-based "not seen" flag.
pub const UNLIKE_TRAINING: &str = "unlike the films the model was trained on";

/// A DICOM Age String (`nnnD`, `nnnW`, `nnnM` or `nnnY`) in years; `None` when malformed.
pub fn age_years(age: &str) -> Option<f32> {
    let age = age.trim();
    let (digits, unit) = age.split_at(age.len().checked_sub(1)?);
    let n: f32 = digits.parse().ok()?;
    let per_year = match unit {
        "D" | "d" => 365.25,
        "W" | "w" => 52.18,
        "M" | "m" => 12.0,
        "Y" | "y" => 1.0,
        _ => return None,
    };
    Some(n / per_year)
}

/// Why the score may not hold for a patient of this DICOM age: the model trained on children
/// of 1 to 5 years and on a few adult films, and ranks adult films less well.
pub fn age_reason(age: &str) -> Option<String> {
    let years = age_years(age)?;
    if years < 1.0 {
        Some("infant under one year".to_owned())
    } else if years >= 18.0 {
        Some("adult patient (few adult films in training)".to_owned())
    } else {
        None
    }
}

/// The "not seen" reasons of one study: the image-based flag and the DICOM Patient's Age.
fn not_seen_reasons(unlike_training: bool, meta: Option<&StudyMeta>) -> Option<String> {
    let mut reasons: Vec<String> = Vec::new();
    if unlike_training {
        reasons.push(UNLIKE_TRAINING.to_owned());
    }
    reasons.extend(
        meta.and_then(|m| m.dicom.as_ref())
            .and_then(|d| d.patient_age.as_deref())
            .and_then(age_reason),
    );
    (!reasons.is_empty()).then(|| reasons.join(", "))
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
    score_paths_first(classifier, paths, batch_size, batch_size, cancel, on_batch);
}

/// The batches of `n` studies: `first` studies, then `batch_size` at a time.
fn batches(n: usize, first: usize, batch_size: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = first.max(1);
    while start < n {
        let end = (start + size).min(n);
        out.push(start..end);
        start = end;
        size = batch_size.max(1);
    }
    out
}

/// As [`score_paths`], with a first batch of `first` studies: a window shows its first score
/// sooner when the first batch is small (one study per core), then scores the rest in batches,
/// which the network runs faster per study.
pub fn score_paths_first(
    classifier: &Classifier,
    paths: &[PathBuf],
    first: usize,
    batch_size: usize,
    cancel: &AtomicBool,
    on_batch: &mut dyn FnMut(Vec<Scored>),
) {
    let min_side = classifier.input_size() as u32;
    for range in batches(paths.len(), first, batch_size) {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let base = range.start;
        let chunk = &paths[range];
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
        let assessed = classifier.assess_prepared(&inputs);
        let mut assessed = match assessed {
            Ok(s) => s.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(format!("the model failed: {e}")); inputs.len()],
        }
        .into_iter();
        let out = prepared
            .into_iter()
            .enumerate()
            .map(|(i, (meta, input))| {
                let assessment = match input {
                    Ok(_) => assessed
                        .next()
                        .unwrap_or_else(|| Err("the model gave no score".to_owned())),
                    Err(e) => Err(e),
                };
                let ood_distance = assessment.as_ref().ok().and_then(|a| a.ood_distance);
                Scored {
                    index: base + i,
                    not_seen: not_seen_reasons(
                        ood_distance.is_some_and(|d| classifier.is_unlike_training(d)),
                        meta.as_ref(),
                    ),
                    meta,
                    outcome: assessment.map(|a| a.score),
                    ood_distance,
                }
            })
            .collect();
        on_batch(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_batch_may_be_smaller_and_every_study_is_in_one_batch() {
        assert_eq!(batches(0, 2, 16), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(
            batches(1, 2, 16),
            vec![std::ops::Range { start: 0, end: 1 }]
        );
        assert_eq!(batches(40, 2, 16), [0..2, 2..18, 18..34, 34..40]);
        assert_eq!(batches(5, 0, 0), [0..1, 1..2, 2..3, 3..4, 4..5]);
        assert_eq!(batches(32, 16, 16), [0..16, 16..32]);
    }

    #[test]
    fn dicom_ages_become_years_and_reasons() {
        assert_eq!(age_years("045Y"), Some(45.0));
        assert_eq!(age_years("006M"), Some(0.5));
        assert!((age_years("104W").unwrap() - 1.993).abs() < 0.01);
        assert!(age_years("Y").is_none() && age_years("12X").is_none() && age_years("").is_none());
        assert_eq!(age_reason("003Y"), None);
        assert_eq!(age_reason("017Y"), None);
        assert_eq!(
            age_reason("018Y").as_deref(),
            Some("adult patient (few adult films in training)")
        );
        assert_eq!(age_reason("010D").as_deref(), Some("infant under one year"));
        assert_eq!(not_seen_reasons(false, None), None);
        assert_eq!(
            not_seen_reasons(true, None).as_deref(),
            Some(UNLIKE_TRAINING)
        );
    }
}
