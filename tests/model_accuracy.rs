//! The shipped model on the Kermany test split: a guard against regressions.
//!
//! The floor is the accuracy recorded in the model card when the weights were made, minus one
//! point, and the AUC recorded there minus 0.01. Needs `../shared/data/kermany-224/test` and
//! `../shared/data/nih-adult`.

#![allow(clippy::unwrap_used)]

mod common;

use cxr_triage::model::report::{evaluate_folder, evaluate_samples};
use cxr_triage::model::{Classifier, dataset};

#[test]
fn shipped_model_keeps_its_test_accuracy() {
    let Some(test_dir) = common::shared_data("kermany-224/test") else {
        return;
    };
    let classifier = Classifier::load(&common::shipped_model()).unwrap();
    let recorded = classifier
        .card()
        .test
        .clone()
        .expect("the shipped model card records its test metrics");
    let report = evaluate_folder(&classifier, &test_dir, &mut |_, _| {}).unwrap();
    let s = &report.summary;
    assert!(report.failed.is_empty(), "unreadable: {:?}", report.failed);
    assert_eq!(s.images, 624);
    eprintln!(
        "test accuracy {:.4} (card {:.4}), AUC {:.4} (card {:.4})",
        s.accuracy, recorded.accuracy, s.auc.estimate, recorded.auc.estimate
    );
    assert!(
        s.accuracy >= recorded.accuracy - 0.01,
        "accuracy {:.4} fell below the floor {:.4}",
        s.accuracy,
        recorded.accuracy - 0.01
    );
    assert!(
        s.auc.estimate >= recorded.auc.estimate - 0.01,
        "AUC {:.4} fell below the floor {:.4}",
        s.auc.estimate,
        recorded.auc.estimate - 0.01
    );
    // Loud failure on bad preprocessing: the scores must actually vary.
    let (lo, hi) = report.cases.iter().fold((1.0f32, 0.0f32), |(lo, hi), c| {
        (lo.min(c.score), hi.max(c.score))
    });
    assert!(
        hi - lo > 0.5,
        "scores barely vary ({lo}..{hi}): preprocessing is broken"
    );
}

/// The NIH adult films the shipped model was validated on (its recorded split of that source):
/// the floors are the card's figures for that source minus 0.01 (AUC) and one film
/// (sensitivity), so that a change to preprocessing or to the kernels that hurts adults fails.
#[test]
fn shipped_model_keeps_its_adult_validation_figures() {
    let Some(dir) = common::shared_data("nih-adult") else {
        return;
    };
    let classifier = Classifier::load(&common::shipped_model()).unwrap();
    let card = classifier.card();
    let record = card
        .training
        .sources
        .iter()
        .find(|s| s.name == "nih-adult")
        .expect("the shipped model trained on the NIH adult films");
    let recorded = card
        .validation_sources
        .iter()
        .find(|s| s.name == "nih-adult")
        .expect("the card records the adult validation figures")
        .summary
        .clone();
    let all = dataset::list_nih_adult(&dir).unwrap();
    let (train, val) =
        dataset::split_nih_adult(&all, record.validation_fraction, record.split_seed);
    // No patient on both sides, and the validation part is never trained on.
    let train_patients: std::collections::HashSet<&str> =
        train.iter().map(|&i| all[i].patient.as_str()).collect();
    assert!(
        val.iter()
            .all(|&i| !train_patients.contains(all[i].patient.as_str()))
    );
    let samples: Vec<dataset::Sample> = val
        .iter()
        .map(|&i| all[i].clone())
        .filter(|s| !s.other_finding)
        .collect();
    let report = evaluate_samples(&classifier, &dir, &samples, &mut |_, _| {}).unwrap();
    let s = &report.summary;
    assert!(report.failed.is_empty(), "unreadable: {:?}", report.failed);
    assert_eq!(s.images, recorded.images);
    eprintln!(
        "adult validation AUC {:.4} (card {:.4}), sensitivity {:.4} (card {:.4})",
        s.auc.estimate, recorded.auc.estimate, s.sensitivity, recorded.sensitivity
    );
    assert!(
        s.auc.estimate >= recorded.auc.estimate - 0.01,
        "adult AUC {:.4} fell below the floor {:.4}",
        s.auc.estimate,
        recorded.auc.estimate - 0.01
    );
    let one_film = 1.0 / s.pneumonia.max(1) as f64;
    assert!(
        s.sensitivity >= recorded.sensitivity - one_film - 1e-9,
        "adult sensitivity {:.4} fell below the card's {:.4} less one film",
        s.sensitivity,
        recorded.sensitivity
    );
    // Both label sources are reported on their own.
    let names: Vec<&str> = report
        .label_sources
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, ["nih", "rsna"]);
}
