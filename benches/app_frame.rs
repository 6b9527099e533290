//! The review window with 5,000, 10,000 and 50,000 studies: the time to its first rows and to its
//! first score, and the time of one frame (logic and drawing, without GPU painting) while the
//! studies are being scored.
//! `APP_FRAME_SIZES=5000,10000` measures only those sizes.
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

/// The folder sizes measured, unless `APP_FRAME_SIZES` names others.
const SIZES: [u32; 3] = [5000, 10_000, 50_000];

fn sizes() -> Vec<u32> {
    match std::env::var("APP_FRAME_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("APP_FRAME_SIZES: numbers"))
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

/// `studies` small studies in 10 subfolders, each a little different.
fn folder(studies: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for n in 0..studies {
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
    for studies in sizes() {
        folder_of(c, studies);
    }
}

fn folder_of(c: &mut Criterion, n: u32) {
    let studies = folder(n);
    let store = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();

    // From a new window on the folder (threads started, model loaded, folder listed) to rows.
    let mut group = c.benchmark_group("app");
    group.sample_size(10);
    group.bench_function(format!("first rows of {n} studies"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let db = store.path().join(format!("first-rows-{i}.sqlite3"));
                let start = Instant::now();
                let mut h = harness(config(studies.path(), db));
                step_until(&mut h, |app| app.worklist().is_some());
                total += start.elapsed();
                assert_eq!(h.state().worklist().unwrap().len(), n as usize);
            }
            total
        });
    });
    // From a new window on the folder to the first score on screen (model loaded, first
    // studies decoded and scored), as the window's own stats count it.
    group.bench_function(format!("first score of {n} studies"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let db = store.path().join(format!("first-score-{i}.sqlite3"));
                let mut h = harness(config(studies.path(), db));
                step_until(&mut h, |app| app.first_score_secs().is_some());
                total += Duration::from_secs_f64(h.state().first_score_secs().unwrap());
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
    c.bench_function(&format!("frame with {n} studies while scoring"), |b| {
        b.iter(|| h.step());
    });
    let scored = h.state().worklist().unwrap().counts().scored;
    assert!(
        h.state().is_scoring(),
        "scoring ended during the measurement ({scored} scored): the frames were not all measured while scoring"
    );
    eprintln!(
        "{}: scored {scored} of {n} by the end; frame times (logic and drawing): {}",
        cxr_triage::model::fast::cpu_description(),
        h.state().frame_stats().while_scoring()
    );
}

/// Frame times while a decision is being written to a store on a slow disk (each write delayed
/// by 300 ms): the window must keep drawing, since only the writer thread waits.
fn slow_store(c: &mut Criterion) {
    let studies = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for n in 0..150u32 {
        let img = image::GrayImage::from_fn(96, 80, |x, y| {
            image::Luma([((x * 3 + y * 2 + n * 7) % 200 + 20) as u8])
        });
        img.save(studies.path().join(format!("study-{n:03}.png")))
            .unwrap();
    }
    let store = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut cfg = config(studies.path(), store.path().join("slow.sqlite3"));
    cfg.store_write_delay = Some(Duration::from_millis(300));
    let mut h = harness(cfg);
    step_until(&mut h, |app| {
        app.worklist().is_some() && app.model_ready() && !app.is_scoring()
    });
    let mut frame_ms: Vec<f64> = Vec::new();
    let mut decisions = 0;
    let mut group = c.benchmark_group("slow store");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("frame while a decision is written to a slow store", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Wait (without measuring) until the selected study can be decided, decide it,
                // and measure every frame until the store acknowledges.
                step_until(&mut h, |app| app.decision_blocked().is_none());
                h.key_press(Key::C);
                let mut saving_seen = false;
                for frame in 0.. {
                    let t = Instant::now();
                    h.step();
                    let d = t.elapsed();
                    total += d;
                    frame_ms.push(d.as_secs_f64() * 1000.0);
                    saving_seen |= h.state().is_saving();
                    if saving_seen && !h.state().is_saving() {
                        break;
                    }
                    assert!(
                        saving_seen || frame < 50,
                        "no decision was sent (every study decided?)"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
                decisions += 1;
            }
            total
        });
    });
    group.finish();
    frame_ms.sort_by(f64::total_cmp);
    let pick = |q: f64| frame_ms[((frame_ms.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "frames while a decision was written to a slow store (300 ms per write, {decisions} decisions, {} frames): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        frame_ms.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
}

criterion_group!(app_frame, slow_store, benches);
criterion_main!(app_frame);
