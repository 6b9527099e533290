//! The shipped model's throughput: forward images per second at batch 1 and batch 32, and
//! end-to-end scoring (`score_paths`, what `cxr-triage score` and the window run) of the
//! full-resolution Kermany JPEGs (15 originals), repeated to 1,005 studies, split into its decoding and its
//! network time.
//!
//! Run with `cargo bench --bench score`. Reads `../shared/data/kermany-fullres`; without it the
//! scoring part says so and measures nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rayon::prelude::*;

use cxr_triage::io;
use cxr_triage::model::{Classifier, scoring};

mod common;
use common::{cpu_secs, time};

/// Studies scored end to end: the 15 originals, 67 times each.
const REPEATS: usize = 67;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let classifier =
        Classifier::load(&root.join(cxr_triage::model::DEFAULT_MODEL)).expect("shipped model");
    let s = classifier.input_size();
    let gflop = classifier.net().config().forward_flops() as f64 / 1e9;
    println!("CPU: {}", cxr_triage::model::fast::cpu_description());
    println!(
        "model {} ({s} px, {:.2} GFLOP per image), {} rayon threads",
        classifier.card().model_id,
        gflop,
        rayon::current_num_threads()
    );

    // Forward on real-looking inputs (a constant gray image, normalised as the model's own).
    let gray = vec![0.0f32; s * s];
    for batch in [1usize, 32] {
        let inputs = vec![gray.clone(); batch];
        let t = time(|| {
            classifier
                .score_prepared(&inputs)
                .map(drop)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })
        .expect("forward");
        let rate = batch as f64 / t.secs;
        println!(
            "forward batch {batch:>2}: {rate:7.1} images/s ({:.2} ms per batch, {:.0} GFLOP/s, {:.2} cores)",
            t.secs * 1e3,
            rate * gflop,
            t.cores
        );
    }

    let dir = root.join("../shared/data/kermany-fullres");
    let Ok(found) = io::discover(&dir) else {
        eprintln!(
            "score: end-to-end scoring not measured, the shared data is missing ({})",
            dir.display()
        );
        return;
    };
    let originals: Vec<PathBuf> = found.files.iter().map(|f| f.path.clone()).collect();
    let paths: Vec<PathBuf> = (0..REPEATS).flat_map(|_| originals.clone()).collect();
    let n = paths.len();

    // Warm the page cache and the model once.
    let cancel = AtomicBool::new(false);
    scoring::score_paths(&classifier, &originals, 32, &cancel, &mut |_| {});

    // End to end, as `cxr-triage score` runs it.
    let (wall, cores, failed) = timed(|| {
        let mut failed = 0;
        scoring::score_paths(&classifier, &paths, 32, &cancel, &mut |batch| {
            failed += batch.iter().filter(|s| s.outcome.is_err()).count();
        });
        failed
    });
    assert_eq!(failed, 0, "every original scores");
    println!(
        "score {n} full-resolution JPEGs: {wall:.2} s, {:.1} studies/s ({cores:.2} cores)",
        n as f64 / wall
    );

    // Its two parts alone: decoding and preprocessing in parallel, then the network in batches.
    let (decode_wall, _, inputs) = timed(|| {
        paths
            .par_iter()
            .map(|p| {
                let study = io::load_study_for_model(p, s as u32).expect("decodes");
                classifier
                    .prepare(&study.image, study.meta.default_window)
                    .expect("prepares")
            })
            .collect::<Vec<_>>()
    });
    let (net_wall, _, ()) = timed(|| {
        for chunk in inputs.chunks(32) {
            classifier.score_prepared(chunk).expect("scores");
        }
    });
    println!(
        "  decoding and preprocessing alone: {decode_wall:.2} s ({:.1} ms per study); network alone: {net_wall:.2} s ({:.1} ms per study); the network is {:.0}% of the two",
        decode_wall * 1e3 / n as f64,
        net_wall * 1e3 / n as f64,
        100.0 * net_wall / (decode_wall + net_wall)
    );
}

/// Wall seconds and CPU cores kept busy while running `f` once.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, f64, T) {
    let cpu = cpu_secs();
    let start = Instant::now();
    let out = f();
    let wall = start.elapsed().as_secs_f64();
    let cores = match (cpu, cpu_secs()) {
        (Some(a), Some(b)) => (b - a) / wall,
        _ => f64::NAN,
    };
    (wall, cores, out)
}
