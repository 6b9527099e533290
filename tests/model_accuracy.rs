//! The shipped model on the Kermany test split: a guard against regressions.
//!
//! The floor is the accuracy recorded in the model card when the weights were made, minus one
//! point, and the AUC recorded there minus 0.01. Needs `../shared/data/kermany-224/test`.

#![allow(clippy::unwrap_used)]

mod common;

use cxr_triage::model::Classifier;
use cxr_triage::model::report::evaluate_folder;

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
