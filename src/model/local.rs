//! Local performance: the model measured on the studies readers labelled at this site, with the
//! readers' final labels as truth, and a threshold chosen on them.
//!
//! [`local_cases`] gathers the labelled studies of a decision store with a score from the model
//! (recorded by `score --db`, else the AI call of a decision made with the same weights, else
//! scored now from the study's file, whose hash must still match). [`LocalReport::new`] computes
//! the figures, or withholds them when either class has fewer than [`MIN_PER_CLASS`] studies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::audit::{AuditError, DecisionStore, LabelledStudy, ThresholdEvent};
use crate::io;
use crate::model::Classifier;
use crate::model::metrics::{self, Confusion, Interval, RocPoint};
use crate::worklist::Label;

/// Fewer reviewed studies than this in either class and the figures are not shown.
pub const MIN_PER_CLASS: usize = 20;

/// Bins of the score histogram.
pub const HISTOGRAM_BINS: usize = 10;

/// One reviewed study with its score.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalCase {
    /// The study's identity.
    pub sha256: String,
    /// Where its file was last seen.
    pub path: PathBuf,
    /// The DICOM patient id, if any (the unit of a patient-level split).
    pub patient_id: Option<String>,
    /// The reader's final label: true for pneumonia.
    pub pneumonia: bool,
    /// The model's score.
    pub score: f32,
}

impl LocalCase {
    /// The group a patient-level split keeps together: the patient id, or the study itself.
    pub fn group(&self) -> &str {
        self.patient_id
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .unwrap_or(&self.sha256)
    }
}

/// A labelled study left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeftOut {
    /// Where its file was last seen.
    pub path: PathBuf,
    /// Why it was left out, in words.
    pub why: String,
}

/// Reads a labelled study's file from its recorded path and checks that its bytes are still the
/// study the reader labelled (same SHA-256).
pub fn read_checked(path: &Path, sha256: &str, min_side_px: u32) -> Result<io::Study, String> {
    let bytes = io::read_study_file(path).map_err(|e| format!("the file cannot be read ({e})"))?;
    if io::sha256_hex(&bytes) != sha256 {
        return Err(
            "the file has changed since it was labelled (its SHA-256 no longer matches)".to_owned(),
        );
    }
    io::load_study_bytes_for_model(&bytes, min_side_px).map_err(|e| e.to_string())
}

/// The labelled studies of `store` (under `folder`, if given) with the score `classifier` gives
/// them, and the studies left out (a changed or unreadable file that had to be scored now).
/// `on_progress` gets (done, total) while studies are scored.
pub fn local_cases(
    store: &DecisionStore,
    classifier: &Classifier,
    folder: Option<&Path>,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<LocalCase>, Vec<LeftOut>), AuditError> {
    let labelled = store.labelled_studies(folder)?;
    let weights = classifier.card().weights_sha256.to_ascii_lowercase();
    let recorded = store.scores_of_model(&weights)?;
    let mut cases = Vec::with_capacity(labelled.len());
    let mut to_score: Vec<&LabelledStudy> = Vec::new();
    for l in &labelled {
        let from_event = l.ai.as_ref().filter(|a| {
            a.weights_sha256
                .as_deref()
                .is_some_and(|w| w.eq_ignore_ascii_case(&weights))
        });
        match recorded
            .get(&l.study.sha256)
            .copied()
            .or_else(|| from_event.and_then(|a| a.score))
        {
            Some(score) => cases.push(case_of(l, score)),
            None => to_score.push(l),
        }
    }
    let mut left_out = Vec::new();
    let min_side = classifier.input_size() as u32;
    let total = to_score.len();
    for (i, chunk) in to_score.chunks(32).enumerate() {
        let prepared: Vec<Result<Vec<f32>, String>> = chunk
            .par_iter()
            .map(|l| {
                let study = read_checked(&l.study.path, &l.study.sha256, min_side)?;
                classifier
                    .prepare(&study.image, study.meta.default_window)
                    .map_err(|e| e.to_string())
            })
            .collect();
        let mut inputs = Vec::new();
        let mut which = Vec::new();
        for (l, p) in chunk.iter().zip(prepared) {
            match p {
                Ok(x) => {
                    inputs.push(x);
                    which.push(*l);
                }
                Err(why) => left_out.push(LeftOut {
                    path: l.study.path.clone(),
                    why,
                }),
            }
        }
        match classifier.score_prepared(&inputs) {
            Ok(scores) => {
                for (l, s) in which.into_iter().zip(scores) {
                    cases.push(case_of(l, s));
                }
            }
            Err(e) => {
                for l in which {
                    left_out.push(LeftOut {
                        path: l.study.path.clone(),
                        why: format!("the model failed: {e}"),
                    });
                }
            }
        }
        on_progress((i * 32 + chunk.len()).min(total), total);
    }
    cases.sort_by(|a, b| a.path.cmp(&b.path).then(a.sha256.cmp(&b.sha256)));
    Ok((cases, left_out))
}

fn case_of(l: &LabelledStudy, score: f32) -> LocalCase {
    LocalCase {
        sha256: l.study.sha256.clone(),
        path: l.study.path.clone(),
        patient_id: l.study.patient_id.clone(),
        pneumonia: l.label == Label::Pneumonia,
        score,
    }
}

/// Cohen's kappa between the AI label and the reader's label, from their confusion matrix:
/// `(p_o - p_e) / (1 - p_e)`, with `p_o` the observed agreement and `p_e` the agreement expected
/// by chance from the two raters' marginal rates. NaN without cases or when `p_e` is 1.
pub fn cohen_kappa(c: &Confusion) -> f64 {
    let n = (c.tp + c.fp + c.tn + c.fn_) as f64;
    if n == 0.0 {
        return f64::NAN;
    }
    let observed = (c.tp + c.tn) as f64 / n;
    let ai_pos = (c.tp + c.fp) as f64 / n;
    let reader_pos = (c.tp + c.fn_) as f64 / n;
    let expected = ai_pos * reader_pos + (1.0 - ai_pos) * (1.0 - reader_pos);
    if (1.0 - expected).abs() < f64::EPSILON {
        return f64::NAN;
    }
    (observed - expected) / (1.0 - expected)
}

/// Score histogram per reader label: [`HISTOGRAM_BINS`] equal bins over 0..1 (1.0 in the last).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScoreHistogram {
    /// Studies the readers labelled NORMAL, per bin.
    pub normal: Vec<usize>,
    /// Studies the readers labelled PNEUMONIA, per bin.
    pub pneumonia: Vec<usize>,
}

impl ScoreHistogram {
    /// Counts `scores` per bin and label.
    pub fn of(scores: &[f32], labels: &[bool]) -> Self {
        let mut h = Self {
            normal: vec![0; HISTOGRAM_BINS],
            pneumonia: vec![0; HISTOGRAM_BINS],
        };
        for (&s, &y) in scores.iter().zip(labels) {
            let bin =
                ((s.clamp(0.0, 1.0) * HISTOGRAM_BINS as f32) as usize).min(HISTOGRAM_BINS - 1);
            if y {
                h.pneumonia[bin] += 1;
            } else {
                h.normal[bin] += 1;
            }
        }
        h
    }
}

/// The figures at one threshold, with 95% intervals (Wilson for rates, bootstrap for the AUC).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalFigures {
    /// The threshold the rates are computed at.
    pub threshold: f32,
    /// ROC AUC with its 95% bootstrap interval (2,000 resamples, stratified, seeded).
    pub auc: Interval,
    /// Sensitivity with its 95% Wilson interval.
    pub sensitivity: Interval,
    /// Specificity with its 95% Wilson interval.
    pub specificity: Interval,
    /// Positive predictive value with its 95% Wilson interval.
    pub ppv: Interval,
    /// Negative predictive value with its 95% Wilson interval.
    pub npv: Interval,
    /// Counts at the threshold (positive: the AI calls PNEUMONIA; truth: the reader's label).
    pub confusion: Confusion,
    /// Cohen's kappa between the AI label and the reader's label.
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub kappa: f64,
    /// Studies the AI flags PNEUMONIA per 100 studies of this mix.
    #[serde(deserialize_with = "metrics::nan_from_null")]
    pub flags_per_100: f64,
}

impl LocalFigures {
    /// Computes the figures of `scores` against `labels` (true: pneumonia) at `threshold`.
    pub fn compute(scores: &[f32], labels: &[bool], threshold: f32) -> Self {
        let c = Confusion::at(scores, labels, threshold);
        let n = labels.len().max(1) as f64;
        Self {
            threshold,
            auc: metrics::roc_auc_bootstrap(scores, labels, 2000, 2018),
            sensitivity: metrics::wilson_interval(c.tp, c.tp + c.fn_),
            specificity: metrics::wilson_interval(c.tn, c.tn + c.fp),
            ppv: metrics::wilson_interval(c.tp, c.tp + c.fp),
            npv: metrics::wilson_interval(c.tn, c.tn + c.fn_),
            confusion: c,
            kappa: cohen_kappa(&c),
            flags_per_100: 100.0 * (c.tp + c.fp) as f64 / n,
        }
    }

    /// The figures as lines of text, for the command line.
    pub fn text(&self) -> String {
        let pct = |i: &Interval| {
            format!(
                "{:.1}% (95% CI {:.1} to {:.1})",
                100.0 * i.estimate,
                100.0 * i.low,
                100.0 * i.high
            )
        };
        let c = &self.confusion;
        format!(
            "ROC AUC      {:.4} (95% CI {:.4} to {:.4}, bootstrap)\n\
             at the threshold {:.4}:\n  \
             sensitivity  {}  ({} of {} pneumonia)\n  \
             specificity  {}  ({} of {} normal)\n  \
             PPV          {}\n  \
             NPV          {}\n  \
             flags per 100 studies: {:.1}; agreement with the readers: Cohen's kappa {:.3}\n\
             \x20                AI PNEUMONIA  AI NORMAL\n  \
             reader PNEUMONIA {:>12}  {:>9}\n  \
             reader NORMAL    {:>12}  {:>9}",
            self.auc.estimate,
            self.auc.low,
            self.auc.high,
            self.threshold,
            pct(&self.sensitivity),
            c.tp,
            c.tp + c.fn_,
            pct(&self.specificity),
            c.tn,
            c.tn + c.fp,
            pct(&self.ppv),
            pct(&self.npv),
            self.flags_per_100,
            self.kappa,
            c.tp,
            c.fn_,
            c.fp,
            c.tn,
        )
    }
}

/// The threshold in force for `classifier` in `store`: the latest threshold change recorded for
/// its weights, with where it comes from in words ([`describe_change`]); `None` for the words
/// when none was recorded and the model card's threshold is in force.
pub fn threshold_in_force(
    store: &DecisionStore,
    classifier: &Classifier,
) -> Result<(f32, Option<String>), AuditError> {
    let card = classifier.card();
    Ok(
        match store.threshold_in_force(&card.weights_sha256.to_ascii_lowercase())? {
            Some(change) => (change.new_threshold, Some(describe_change(&change))),
            None => (card.threshold, None),
        },
    )
}

/// The model in force at a site could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InForceError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] AuditError),
    /// The recorded card or its weights cannot be loaded.
    #[error(
        "{what} cannot be loaded from {}: {source}; give --weights, or switch with `cxr-triage \
         use-model`",
        path.display()
    )]
    Load {
        /// The switch, in words.
        what: String,
        /// Where the card was recorded.
        path: PathBuf,
        /// Why.
        source: Box<crate::model::ModelError>,
    },
    /// The card at the recorded path is now another model.
    #[error(
        "{what}: the card at {} is now another model (weights {found}, {expected} expected); \
         give --weights, or switch with `cxr-triage use-model`",
        path.display()
    )]
    Replaced {
        /// The switch, in words.
        what: String,
        /// Where the card was recorded.
        path: PathBuf,
        /// The weights' hash found.
        found: String,
        /// The weights' hash switched to.
        expected: String,
    },
}

/// The model in force at the site of `store` (its latest audited switch, see
/// [`DecisionStore::model_in_force`]), loaded from its recorded card and checked to be the
/// weights switched to; `None` when the site never switched (the shipped model is in force).
pub fn load_model_in_force(
    store: &DecisionStore,
) -> Result<Option<(PathBuf, Classifier)>, InForceError> {
    let Some(in_force) = store.model_in_force()? else {
        return Ok(None);
    };
    let path = in_force.card_path;
    let what = format!(
        "the model in force at this site ({}, switched to by {} at {})",
        in_force.event.model_id, in_force.event.reader, in_force.event.recorded_at
    );
    let classifier = Classifier::load(&path).map_err(|source| InForceError::Load {
        what: what.clone(),
        path: path.clone(),
        source: Box::new(source),
    })?;
    let found = classifier.card().weights_sha256.to_ascii_lowercase();
    if found != in_force.event.weights_sha256 {
        return Err(InForceError::Replaced {
            what,
            path,
            found,
            expected: in_force.event.weights_sha256,
        });
    }
    Ok(Some((path, classifier)))
}

/// Records, in `store`, the switch of the model in force from `from` (with its threshold in force)
/// to `to` (its card's path and the threshold it gets), resting on `basis`; refuses a switch to
/// the model already in force.
pub fn record_model_switch(
    store: &DecisionStore,
    reader: &str,
    reason: &str,
    from: (&Classifier, f32),
    to: (&Classifier, &Path, f32),
    basis: serde_json::Value,
) -> Result<ThresholdEvent, AuditError> {
    let (current, from_threshold) = from;
    let (next, card_path, threshold) = to;
    let hash = |c: &Classifier| c.card().weights_sha256.to_ascii_lowercase();
    if hash(current) == hash(next) {
        return Err(AuditError::InvalidDecision(format!(
            "{} is already the model in force at this site",
            next.card().model_id
        )));
    }
    store.record_model_switch(&crate::audit::ModelSwitch {
        reader: reader.trim().to_owned(),
        from_model_id: current.card().model_id.clone(),
        from_weights_sha256: hash(current),
        from_threshold,
        model_id: next.card().model_id.clone(),
        weights_sha256: hash(next),
        card_path: card_path.to_owned(),
        threshold,
        basis,
        reason: reason.to_owned(),
    })
}

/// A recorded threshold change in words: "set at this site by NAME on 2026-12-01 (was 0.034),
/// threshold change 3: REASON".
pub fn describe_change(change: &ThresholdEvent) -> String {
    format!(
        "set at this site by {} on {} (was {:.3}), threshold change {}{}",
        change.reader,
        change.recorded_at.get(..10).unwrap_or(&change.recorded_at),
        change.old_threshold,
        change.id,
        if change.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", change.reason)
        }
    )
}

/// A threshold chosen on the reviewed studies for a target sensitivity, with the figures before
/// and after: what `cxr-triage threshold` and the window's Local performance view show before a
/// change is applied, and what the audited change records as its basis.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdProposal {
    /// The threshold in force now.
    pub old: f32,
    /// The highest threshold whose sensitivity on the reviewed studies is at least the target.
    pub new: f32,
    /// The target sensitivity.
    pub target_sensitivity: f64,
    /// The figures at the threshold in force.
    pub before: LocalFigures,
    /// The figures at the proposed threshold.
    pub after: LocalFigures,
    /// Reviewed studies labelled PNEUMONIA.
    pub pneumonia: usize,
    /// Reviewed studies labelled NORMAL.
    pub normal: usize,
}

impl ThresholdProposal {
    /// Proposes a threshold for `target_sensitivity` (above 0, at most 1) on `cases`; says why
    /// not when there are too few reviewed studies of a class.
    pub fn new(cases: &[LocalCase], old: f32, target_sensitivity: f64) -> Result<Self, String> {
        if !(target_sensitivity > 0.0 && target_sensitivity <= 1.0) {
            return Err("the target sensitivity must be above 0 and at most 1".to_owned());
        }
        let scores: Vec<f32> = cases.iter().map(|c| c.score).collect();
        let labels: Vec<bool> = cases.iter().map(|c| c.pneumonia).collect();
        let pneumonia = labels.iter().filter(|&&y| y).count();
        let normal = labels.len() - pneumonia;
        if !enough(pneumonia, normal) {
            return Err(too_few_text(pneumonia, normal));
        }
        let new = metrics::threshold_for_sensitivity(&scores, &labels, target_sensitivity)
            .clamp(0.0, 1.0);
        Ok(Self {
            old,
            new,
            target_sensitivity,
            before: LocalFigures::compute(&scores, &labels, old),
            after: LocalFigures::compute(&scores, &labels, new),
            pneumonia,
            normal,
        })
    }

    /// The audited change that applies the proposal: by `reader`, for `classifier`'s weights,
    /// with the rule, the counts, the figures before and after and the decision log's head as its
    /// basis.
    pub fn change(
        &self,
        classifier: &Classifier,
        reader: &str,
        reason: &str,
        folder: Option<&Path>,
        left_out: usize,
        decision_log_head: Option<&str>,
    ) -> crate::audit::ThresholdChange {
        let card = classifier.card();
        let basis = serde_json::json!({
            "rule": format!(
                "highest threshold with sensitivity >= {} on the reviewed studies",
                self.target_sensitivity
            ),
            "target_sensitivity": self.target_sensitivity,
            "folder": folder.map(|f| f.display().to_string()),
            "reviewed": self.pneumonia + self.normal,
            "pneumonia": self.pneumonia,
            "normal": self.normal,
            "left_out": left_out,
            "decision_log_head": decision_log_head,
            "before": self.before,
            "after": self.after,
        });
        crate::audit::ThresholdChange {
            reader: reader.trim().to_owned(),
            model_id: card.model_id.clone(),
            weights_sha256: card.weights_sha256.to_ascii_lowercase(),
            old_threshold: self.old,
            new_threshold: self.new,
            basis_json: basis.to_string(),
            reason: reason.to_owned(),
        }
    }
}

/// Whether there are enough reviewed studies of each class for figures.
pub fn enough(pneumonia: usize, normal: usize) -> bool {
    pneumonia >= MIN_PER_CLASS && normal >= MIN_PER_CLASS
}

/// The words shown instead of figures when there are too few reviewed studies.
pub fn too_few_text(pneumonia: usize, normal: usize) -> String {
    format!(
        "too few reviewed studies for figures: {pneumonia} PNEUMONIA and {normal} NORMAL \
         (at least {MIN_PER_CLASS} of each are needed)"
    )
}

/// Local performance, as `eval --db` writes it to `report.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalReport {
    /// The model measured.
    pub model_id: String,
    /// SHA-256 of its weights.
    pub weights_sha256: String,
    /// The decision store whose labels are the truth.
    pub store: String,
    /// The threshold in force for this model.
    pub threshold: f32,
    /// Where it comes from: the model card, or a threshold change recorded in the store.
    pub threshold_source: String,
    /// Reviewed studies measured.
    pub reviewed: usize,
    /// Of which the readers labelled PNEUMONIA.
    pub pneumonia: usize,
    /// Of which the readers labelled NORMAL.
    pub normal: usize,
    /// The minimum of each class for figures.
    pub min_per_class: usize,
    /// The figures at the threshold in force; `None` when there are too few reviewed studies.
    pub figures: Option<LocalFigures>,
    /// The ROC curve (empty when figures are withheld).
    pub roc: Vec<RocPoint>,
    /// Score histogram per reader label (always: it shows counts, not estimates).
    pub histogram: ScoreHistogram,
    /// Labelled studies that could not be measured, and why.
    pub left_out: Vec<LeftOut>,
    /// Every measured study.
    pub cases: Vec<LocalCase>,
}

impl LocalReport {
    /// Builds the report from measured cases.
    pub fn new(
        classifier: &Classifier,
        store: &str,
        threshold: f32,
        threshold_source: &str,
        cases: Vec<LocalCase>,
        left_out: Vec<LeftOut>,
    ) -> Self {
        let scores: Vec<f32> = cases.iter().map(|c| c.score).collect();
        let labels: Vec<bool> = cases.iter().map(|c| c.pneumonia).collect();
        let pneumonia = labels.iter().filter(|&&y| y).count();
        let normal = labels.len() - pneumonia;
        let ok = enough(pneumonia, normal);
        let card = classifier.card();
        Self {
            model_id: card.model_id.clone(),
            weights_sha256: card.weights_sha256.clone(),
            store: store.to_owned(),
            threshold,
            threshold_source: threshold_source.to_owned(),
            reviewed: cases.len(),
            pneumonia,
            normal,
            min_per_class: MIN_PER_CLASS,
            figures: ok.then(|| LocalFigures::compute(&scores, &labels, threshold)),
            roc: if ok {
                metrics::roc_curve(&scores, &labels)
            } else {
                Vec::new()
            },
            histogram: ScoreHistogram::of(&scores, &labels),
            left_out,
            cases,
        }
    }

    /// The summary `eval --db` prints.
    pub fn text(&self) -> String {
        let head = format!(
            "model {} on the reviewed studies of {} ({} reviewed: {} PNEUMONIA, {} NORMAL, by the readers' final labels)\n\
             threshold in force {:.4} ({})",
            self.model_id,
            self.store,
            self.reviewed,
            self.pneumonia,
            self.normal,
            self.threshold,
            self.threshold_source
        );
        let body = match &self.figures {
            Some(f) => f.text(),
            None => too_few_text(self.pneumonia, self.normal),
        };
        format!("{head}\n{body}")
    }
}

/// The scores of `cases` by study hash (for looking up a study's score).
pub fn scores_by_study(cases: &[LocalCase]) -> HashMap<&str, f32> {
    cases.iter().map(|c| (c.sha256.as_str(), c.score)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kappa_matches_a_hand_computed_table() {
        // AI vs reader: 20 both PNEUMONIA, 5 AI only, 10 reader only, 65 both NORMAL (n = 100).
        // p_o = 0.85; AI positive 0.25, reader positive 0.30;
        // p_e = 0.25 * 0.30 + 0.75 * 0.70 = 0.60; kappa = (0.85 - 0.60) / 0.40 = 0.625.
        let c = Confusion {
            tp: 20,
            fp: 5,
            fn_: 10,
            tn: 65,
        };
        assert!((cohen_kappa(&c) - 0.625).abs() < 1e-12);
        // Perfect agreement gives 1; agreement no better than chance gives 0.
        let perfect = Confusion {
            tp: 10,
            fp: 0,
            fn_: 0,
            tn: 30,
        };
        assert!((cohen_kappa(&perfect) - 1.0).abs() < 1e-12);
        let chance = Confusion {
            tp: 25,
            fp: 25,
            fn_: 25,
            tn: 25,
        };
        assert!(cohen_kappa(&chance).abs() < 1e-12);
    }

    #[test]
    fn figures_match_hand_computed_counts() {
        // Four pneumonia (0.9, 0.8, 0.6, 0.3) and four normal (0.7, 0.2, 0.1, 0.05) at 0.5:
        // TP 3, FN 1, FP 1, TN 3. AUC: 14 of the 16 (pneumonia, normal) pairs are ordered
        // correctly (0.6 < 0.7 and 0.3 < 0.7 are not): 0.875.
        let scores = [0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.05];
        let labels = [true, true, true, true, false, false, false, false];
        let f = LocalFigures::compute(&scores, &labels, 0.5);
        assert_eq!(
            f.confusion,
            Confusion {
                tp: 3,
                fp: 1,
                tn: 3,
                fn_: 1
            }
        );
        assert!((f.auc.estimate - 0.875).abs() < 1e-12);
        assert!((f.sensitivity.estimate - 0.75).abs() < 1e-12);
        assert!((f.specificity.estimate - 0.75).abs() < 1e-12);
        assert!((f.ppv.estimate - 0.75).abs() < 1e-12);
        assert!((f.npv.estimate - 0.75).abs() < 1e-12);
        assert!((f.flags_per_100 - 50.0).abs() < 1e-12);
        // p_o = 0.75, both raters positive half the time: p_e = 0.5, kappa = 0.5.
        assert!((f.kappa - 0.5).abs() < 1e-12);
        // Wilson 95% interval of 3 of 4, computed in Python from the textbook formula:
        //   z = 1.959963984540054; n = 4; p = 0.75; z2 = z * z
        //   c = (p + z2 / (2 * n)) / (1 + z2 / n)
        //   h = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
        //   c - h, c + h  ->  0.30064184, 0.95441274
        assert!(
            (f.sensitivity.low - 0.300_641_84).abs() < 1e-7,
            "{:?}",
            f.sensitivity
        );
        assert!(
            (f.sensitivity.high - 0.954_412_74).abs() < 1e-7,
            "{:?}",
            f.sensitivity
        );
    }

    #[test]
    fn figures_without_a_positive_call_survive_a_round_trip_through_json() {
        // Nothing called PNEUMONIA: the PPV is 0 of 0, NaN, which JSON writes as null.
        let f = LocalFigures::compute(&[0.1, 0.2, 0.3], &[true, false, false], 0.9);
        assert!(f.ppv.estimate.is_nan());
        let json = serde_json::to_string(&f).unwrap();
        let back: LocalFigures = serde_json::from_str(&json).unwrap();
        assert!(back.ppv.estimate.is_nan() && back.ppv.low.is_nan());
        assert_eq!(back.confusion, f.confusion);
        assert!((back.npv.estimate - f.npv.estimate).abs() < 1e-12);
    }

    #[test]
    fn histogram_counts_each_label_per_bin() {
        let h = ScoreHistogram::of(
            &[0.0, 0.05, 0.95, 1.0, 0.55],
            &[false, false, true, true, true],
        );
        assert_eq!(h.normal, vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(h.pneumonia, vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
    }

    #[test]
    fn figures_are_withheld_below_the_minimum_per_class() {
        assert!(!enough(19, 200));
        assert!(!enough(200, 19));
        assert!(enough(20, 20));
        assert!(too_few_text(3, 40).contains("too few reviewed studies"));
    }
}
