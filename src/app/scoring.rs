//! Reading studies without a model, alongside the shared scoring pipeline.
//!
//! Scoring itself is `model::scoring::score_paths` (shared with `cxr-triage score`); when the
//! model cannot be loaded, [`read_paths`] still reads every study (its identity and metadata) so
//! that it can be viewed and labelled.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::io;
pub(crate) use crate::model::scoring::{Scored, score_paths_first};

/// Like [`score_paths_first`] without a model: reads each study (its identity and metadata) so that
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
                    ood_distance: None,
                    not_seen: None,
                },
                Err(e) => Scored {
                    index: base + i,
                    meta: None,
                    outcome: Err(e.to_string()),
                    ood_distance: None,
                    not_seen: None,
                },
            })
            .collect();
        on_batch(out);
    }
}
