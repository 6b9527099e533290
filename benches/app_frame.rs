//! The review window with 5,000 studies: the time to its first rows, and the time of one frame
//! (logic and drawing, without GPU painting) while the studies are being scored.
//!
//! Run: `cargo bench --bench app_frame`. The studies are small generated PNG files in a
//! temporary folder; the model is the shipped one. Medians are in
//! `target/criterion/<name>/new/estimates.json`.

#![allow(clippy::unwrap_used)] // Benchmark set-up: a failed unwrap is a failed run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use cxr_triage::app::{App, AppConfig};
use egui::Key;
use egui_kittest::Harness;

const STUDIES: u32 = 5000;

/// `STUDIES` small studies in 10 subfolders, each a little different.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for n in 0..STUDIES {
        let sub = dir.path().join(format!("ward-{}", n % 10));
        std::fs::create_dir_all(&sub).unwrap();
        let img = image::GrayImage::from_fn(96, 80, |x, y| {
            image::Luma([((x * 3 + y * 2 + n * 7) % 200 + 20) as u8])
        });
        img.save(sub.join(format!("study-{n:05}.png"))).unwrap();
    }
    dir
}

fn config(studies: &Path, db: PathBuf) -> AppConfig {
    AppConfig {
        folder: Some(studies.to_owned()),
        reader: Some("Bench".to_owned()),
        db_path: Some(db),
        persist_preferences: false,
        ..AppConfig::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/cxrnet.json"))
    }
}

fn harness(config: AppConfig) -> Harness<'static, App> {
    Harness::builder()
        .with_size([1440.0, 900.0])
        .build_eframe(|cc| App::new(cc, config))
}

fn step_until(h: &mut Harness<'static, App>, done: impl Fn(&App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(h.state()) {
        assert!(Instant::now() < deadline, "timed out");
        h.step();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn benches(c: &mut Criterion) {
    let studies = folder();
    let store = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();

    // From a new window on the folder (threads started, model loaded, folder listed) to rows.
    let mut group = c.benchmark_group("app");
    group.sample_size(10);
    group.bench_function("first rows of 5000 studies", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let db = store.path().join(format!("first-rows-{i}.sqlite3"));
                let start = Instant::now();
                let mut h = harness(config(studies.path(), db));
                step_until(&mut h, |app| app.worklist().is_some());
                total += start.elapsed();
                assert_eq!(h.state().worklist().unwrap().len(), STUDIES as usize);
            }
            total
        });
    });
    group.finish();

    // One frame while the scorer works through the folder, with a study shown.
    let mut h = harness(config(studies.path(), store.path().join("frames.sqlite3")));
    step_until(&mut h, |app| app.worklist().is_some() && app.model_ready());
    step_until(&mut h, |app| {
        app.worklist().is_some_and(|w| w.counts().scored >= 64)
    });
    h.key_press(Key::Home);
    step_until(&mut h, |app| app.selected().is_some());
    c.bench_function("frame with 5000 studies while scoring", |b| {
        b.iter(|| h.step());
    });
    let scored = h.state().worklist().unwrap().counts().scored;
    assert!(
        h.state().is_scoring(),
        "scoring ended during the measurement ({scored} scored): the frames were not all measured while scoring"
    );
    eprintln!(
        "scored {scored} of {STUDIES} by the end; frame times (logic and drawing): {}",
        h.state().frame_stats().while_scoring()
    );
}

criterion_group!(app_frame, benches);
criterion_main!(app_frame);
