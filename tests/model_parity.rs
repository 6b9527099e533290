//! Training and scoring prepare an image the same way.

#![allow(clippy::unwrap_used)]

mod common;

use cxr_triage::io::{load_study, load_study_for_model};
use cxr_triage::model::Classifier;
use cxr_triage::model::dataset;
use cxr_triage::model::preprocess::{normalise, unit_resized};
use cxr_triage::model::scoring::score_paths;

fn write_test_jpeg(path: &std::path::Path, width: u32, height: u32) {
    let img = image::GrayImage::from_fn(width, height, |x, y| {
        image::Luma([((x * 7 + y * 3) % 251) as u8 / 2 + ((x / 40 + y / 40) % 2) as u8 * 100])
    });
    img.save(path).unwrap();
}

/// The training path (`dataset::load_image`, `unit_resized`, `normalise`) gives the very same
/// input as the scoring path (`load_study_for_model`, `Classifier::prepare`) for a 224-pixel
/// training-size image, and the same score through `score_paths`.
#[test]
fn training_and_scoring_inputs_are_identical() {
    let classifier = Classifier::load(&common::shipped_model()).unwrap();
    let norm = classifier.card().normalisation;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jpeg");
    write_test_jpeg(&path, 224, 224);

    let (image, window) = dataset::load_image(&path).unwrap();
    let mut train_input = unit_resized(&image, window, norm.input_size).unwrap();
    normalise(&mut train_input, &norm);

    let study = load_study_for_model(&path, norm.input_size as u32).unwrap();
    let score_input = classifier
        .prepare(&study.image, study.meta.default_window)
        .unwrap();
    assert_eq!(train_input, score_input);

    let direct = classifier.score_prepared(&[train_input]).unwrap()[0];
    let mut via_pipeline = Vec::new();
    score_paths(
        &classifier,
        &[path],
        8,
        &std::sync::atomic::AtomicBool::new(false),
        &mut |b| via_pipeline.extend(b),
    );
    assert_eq!(via_pipeline[0].outcome.as_ref().unwrap(), &direct);
}

/// Full-resolution studies are decoded at a reduced scale for scoring; the network input stays
/// within a small distance of the full decode's, and the score with it.
#[test]
fn reduced_decoding_of_full_resolution_studies_keeps_the_input() {
    let Some(dir) = common::shared_data("kermany-fullres") else {
        return;
    };
    let classifier = Classifier::load(&common::shipped_model()).unwrap();
    let size = classifier.input_size() as u32;
    let mut checked = 0;
    for class in ["NORMAL", "PNEUMONIA"] {
        for entry in std::fs::read_dir(dir.join(class)).unwrap() {
            let path = entry.unwrap().path();
            let full = load_study(&path).unwrap();
            let reduced = load_study_for_model(&path, size).unwrap();
            assert_eq!(full.meta.sha256, reduced.meta.sha256);
            let a = classifier
                .prepare(&full.image, full.meta.default_window)
                .unwrap();
            let b = classifier
                .prepare(&reduced.image, reduced.meta.default_window)
                .unwrap();
            // In [0, 1] units before normalisation: mean absolute difference.
            let std = classifier.card().normalisation.std;
            let mad: f32 =
                a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32 * std;
            assert!(mad < 0.02, "{}: mean difference {mad}", path.display());
            let s = classifier.score_prepared(&[a, b]).unwrap();
            assert!(
                (s[0] - s[1]).abs() < 0.1,
                "{}: scores {s:?}",
                path.display()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}
