//! Decoding full-resolution Kermany JPEGs: at full size, and at the reduced DCT scale used for
//! the model's input, alone and followed by the model's own preprocessing (resize to the shipped
//! model's input size, window, normalise: `Classifier::prepare`).
//!
//! Run with `cargo bench --bench io_decode`. Reads `../shared/data/kermany-fullres`; without it
//! the benchmark says so and measures nothing.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use cxr_triage::io::{load_study_bytes, load_study_bytes_for_model, sha256_hex};
use cxr_triage::model::Classifier;

/// The largest images of the set: the README's 2111 x 1509, and the largest area (2031 x 1837).
const FILES: [&str; 2] = ["NORMAL/IM-0003-0001.jpeg", "NORMAL/IM-0005-0001.jpeg"];

fn decode(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/kermany-fullres");
    if !dir.is_dir() {
        eprintln!(
            "io_decode: nothing measured, the shared data is missing ({})",
            dir.display()
        );
        return;
    }
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join(cxr_triage::model::DEFAULT_MODEL);
    let classifier = Classifier::load(&model).expect("the shipped model loads");
    let size = classifier.input_size() as u32;
    let prepare = |study: &cxr_triage::io::Study| {
        classifier
            .prepare(&study.image, study.meta.default_window)
            .expect("prepares")
    };
    let mut group = c.benchmark_group("kermany_jpeg");
    group
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for name in FILES {
        let bytes = std::fs::read(dir.join(name)).expect("reading a shared JPEG");
        let short = name.rsplit('/').next().unwrap_or(name);
        group.bench_function(format!("full/{short}"), |b| {
            b.iter(|| load_study_bytes(black_box(&bytes)).expect("decodes"));
        });
        group.bench_function(format!("for_model/{short}"), |b| {
            b.iter(|| load_study_bytes_for_model(black_box(&bytes), size).expect("decodes"));
        });
        group.bench_function(format!("for_model_and_prepare/{short}"), |b| {
            b.iter(|| {
                let study = load_study_bytes_for_model(black_box(&bytes), size).expect("decodes");
                prepare(&study)
            });
        });
        group.bench_function(format!("full_and_prepare/{short}"), |b| {
            b.iter(|| {
                let study = load_study_bytes(black_box(&bytes)).expect("decodes");
                prepare(&study)
            });
        });
        group.bench_function(format!("sha256_only/{short}"), |b| {
            b.iter(|| sha256_hex(black_box(&bytes)));
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
