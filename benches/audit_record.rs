//! How long one decision takes to record, durably (`synchronous=FULL`), in a store on disk; and
//! how long a reopened folder of 5,000 studies takes to get its states back.
//!
//! And how long `import` takes for 100,000 rows (printed once), and for 1,000 rows into a store
//! of 100,000 studies.
//!
//! Run: `cargo bench --bench audit_record`. The median is in
//! `target/criterion/record_one_decision/new/estimates.json` (`median.point_estimate`, in ns).

#![allow(clippy::unwrap_used)] // Benchmark set-up: a failed unwrap is a failed run.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use cxr_triage::audit::{Action, DecisionStore, NewDecision, StudyRecord};
use cxr_triage::io::sha256_hex;
use cxr_triage::worklist::Label;

const STUDIES: u32 = 5000;

fn sha(n: u32) -> String {
    sha256_hex(format!("bench study {n}").as_bytes())
}

/// A store in a temporary folder under `target/` (a real disk, not a RAM file system), knowing
/// `STUDIES` studies.
fn store() -> (tempfile::TempDir, DecisionStore) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = DecisionStore::open(&dir.path().join("decisions.sqlite3")).unwrap();
    let studies: Vec<StudyRecord> = (0..STUDIES)
        .map(|n| StudyRecord {
            sha256: sha(n),
            path: format!("/data/ward/study-{n}.jpeg").into(),
            patient_id: Some(format!("P{n}")),
            study_uid: None,
            metadata_json: "{}".to_owned(),
        })
        .collect();
    store.upsert_studies(&studies).unwrap();
    (dir, store)
}

fn relabel(n: u32, i: u32) -> NewDecision {
    NewDecision {
        reader: "dr-bench".to_owned(),
        study_sha256: sha(n),
        study_path: format!("/data/ward/study-{n}.jpeg").into(),
        model_id: Some("cxrnet".to_owned()),
        weights_sha256: Some(sha256_hex(b"weights")),
        score: Some(0.75),
        threshold: Some(0.5),
        ai_label: Some(Label::Pneumonia),
        new_label: Some(if i.is_multiple_of(2) {
            Label::Normal
        } else {
            Label::Pneumonia
        }),
        action: Action::Relabel,
        reason: "benchmark".to_owned(),
        viewed_ms: None,
        ood_reason: None,
    }
}

fn record_one_decision(c: &mut Criterion) {
    let (_dir, store) = store();
    let mut i = 0u32;
    c.bench_function("record_one_decision", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            // Studies are revisited, so each record also replays a short history.
            black_box(store.record(&relabel(i % 500, i / 500)).unwrap())
        });
    });
}

fn current_many_5000(c: &mut Criterion) {
    let (_dir, store) = store();
    let batch: Vec<NewDecision> = (0..STUDIES).step_by(2).map(|n| relabel(n, 0)).collect();
    store.record_all(&batch).unwrap();
    let hashes: Vec<String> = (0..STUDIES).map(sha).collect();
    let refs: Vec<&str> = hashes.iter().map(String::as_str).collect();
    c.bench_function("current_many_5000_studies", |b| {
        b.iter(|| black_box(store.current_many(&refs).unwrap()));
    });
}

/// 100,000 rows of `sha256,label,reason` naming studies 0 to `rows`.
fn import_csv_text(rows: u32, round: u32) -> String {
    let mut text = String::from("sha256,label,reason\n");
    for n in 0..rows {
        let label = if (n + round).is_multiple_of(2) {
            "NORMAL"
        } else {
            "PNEUMONIA"
        };
        text.push_str(&format!("{},{label},\"bench, round {round}\"\n", sha(n)));
    }
    text
}

fn import_rows(c: &mut Criterion) {
    const MANY: u32 = 100_000;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut store = DecisionStore::open(&dir.path().join("decisions.sqlite3")).unwrap();
    let studies: Vec<StudyRecord> = (0..MANY)
        .map(|n| StudyRecord {
            sha256: sha(n),
            path: format!("/data/ward/study-{n}.jpeg").into(),
            patient_id: None,
            study_uid: None,
            metadata_json: "{}".to_owned(),
        })
        .collect();
    store.upsert_studies(&studies).unwrap();
    let text = import_csv_text(MANY, 0);
    let started = std::time::Instant::now();
    let report = cxr_triage::audit::import_csv(
        &mut store,
        text.as_bytes(),
        std::path::Path::new("."),
        "dr-bench",
    )
    .unwrap();
    assert_eq!(report.recorded.len(), MANY as usize);
    eprintln!(
        "import of {MANY} rows (one per study) into a store of {MANY} studies: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let mut round = 0;
    c.bench_function("import_1000_rows_into_100000_studies", |b| {
        b.iter(|| {
            round += 1;
            let text = import_csv_text(1000, round);
            black_box(
                cxr_triage::audit::import_csv(
                    &mut store,
                    text.as_bytes(),
                    std::path::Path::new("."),
                    "dr-bench",
                )
                .unwrap(),
            )
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = record_one_decision, current_many_5000
}
criterion_group! {
    name = imports;
    config = Criterion::default().sample_size(10);
    targets = import_rows
}
criterion_main!(benches, imports);
