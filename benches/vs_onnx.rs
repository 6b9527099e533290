//! The shipped network against ONNX Runtime (forward, batch 1 and 32, the same graph and
//! weights) and our training step against stock candle's (batch 32): one run, one machine.
//!
//! Run it through `scripts/bench-vs-onnx.sh`, which exports the ONNX graph from the shipped
//! weights and gives the path of a Python with onnxruntime in `CXR_ORT_PYTHON`. Before timing,
//! ONNX Runtime must reproduce our logits on real test images (or generated ones without
//! `../shared/data`).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use cxr_triage::model::Classifier;
use cxr_triage::model::fast::Backend;

mod common;
use common::{Timing, measure, time};

/// The machine's practical peak for f32 matrix work, all threads: every thread runs 512 x 512 x
/// 512 products with the `gemm` crate (our kernels' own) at once; the best rate of each,
/// summed. Measured in the same run, so that "of peak" means the same on every CPU.
fn measured_peak_gflops() -> f64 {
    const N: usize = 512;
    let per_thread = rayon::broadcast(|_| {
        let (a, b) = (vec![0.5f32; N * N], vec![0.25f32; N * N]);
        let mut c = vec![0.0f32; N * N];
        let mut best = f64::MAX;
        for _ in 0..8 {
            let start = std::time::Instant::now();
            #[allow(unsafe_code)]
            // SAFETY: `a`, `b` and `c` are N x N, contiguous and row-major (row stride N,
            // column stride 1) as passed; `c` is borrowed mutably and aliases neither; with
            // `read_dst` false `c` is only written; `Parallelism::None` keeps it on this thread.
            unsafe {
                gemm::gemm(
                    N,
                    N,
                    N,
                    c.as_mut_ptr(),
                    1,
                    N as isize,
                    false,
                    a.as_ptr(),
                    1,
                    N as isize,
                    b.as_ptr(),
                    1,
                    N as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        2.0 * (N * N * N) as f64 / best / 1e9
    });
    per_thread.iter().sum()
}

/// Up to 8 images per class of the Kermany test split, prepared as the app prepares them; or
/// generated images when the shared data is absent.
fn parity_inputs(classifier: &Classifier) -> Vec<Vec<f32>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/kermany-224/test");
    let mut inputs = Vec::new();
    for class in ["NORMAL", "PNEUMONIA"] {
        let Ok(entries) = std::fs::read_dir(dir.join(class)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.into_iter().take(8) {
            let study = cxr_triage::io::load_study(&path).expect("a test image loads");
            inputs.push(
                classifier
                    .prepare(&study.image, study.meta.default_window)
                    .expect("prepares"),
            );
        }
    }
    if inputs.is_empty() {
        eprintln!("no ../shared/data: checking parity on generated images");
        let s = classifier.input_size();
        for k in 0..8 {
            inputs.push(
                (0..s * s)
                    .map(|i| ((i * (k + 3)) % 97) as f32 / 48.0 - 1.0)
                    .collect(),
            );
        }
    }
    inputs
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("writes the parity files");
}

/// Runs ONNX Runtime's side: parity check, then timings (a JSON line).
fn onnx_runtime(python: &str, model: &Path, parity_dir: &Path) -> serde_json::Value {
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx/bench_ort.py"))
        .arg(model)
        .arg(parity_dir)
        .arg(rayon::current_num_threads().to_string())
        .output()
        .expect("runs the ONNX Runtime benchmark");
    assert!(
        out.status.success(),
        "ONNX Runtime benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).expect("the ONNX Runtime benchmark prints JSON")
}

fn main() {
    let Ok(python) = std::env::var("CXR_ORT_PYTHON") else {
        eprintln!(
            "vs_onnx: run scripts/bench-vs-onnx.sh (it provides ONNX Runtime); nothing measured"
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let onnx_dir = root.join("target/onnx");
    let classifier =
        Classifier::load(&root.join(cxr_triage::model::DEFAULT_MODEL)).expect("shipped model");
    let net = classifier.net().clone().with_backend(Backend::Fast);
    let cfg = net.config().clone();
    let s = cfg.input_size;
    let gflop = cfg.forward_flops() as f64 / 1e9;

    // Parity: our logits for real inputs, which ONNX Runtime must reproduce.
    let inputs = parity_inputs(&classifier);
    let batch = classifier.batch(&inputs).expect("batch");
    let logits = net.forward_t(&batch, false).expect("forward");
    write_f32(&onnx_dir.join("inputs.f32"), &inputs.concat());
    write_f32(
        &onnx_dir.join("logits.f32"),
        &logits.to_vec1::<f32>().expect("logits"),
    );

    // Forward, interleaved with ONNX Runtime's run so that both see the same machine.
    let dev = Device::Cpu;
    let x1 = Tensor::randn(0f32, 1.0, (1, 1, s, s), &dev).expect("input");
    let x32 = Tensor::randn(0f32, 1.0, (32, 1, s, s), &dev).expect("input");
    let forward = |x: &Tensor| time(|| net.forward_t(x, false).map(drop)).expect("forward");
    let ours_before = [forward(&x1), forward(&x32)];
    let ort = onnx_runtime(&python, &onnx_dir.join("cxrnet.onnx"), &onnx_dir);
    let ours_after = [forward(&x1), forward(&x32)];
    let ours: Vec<Timing> = ours_before
        .iter()
        .zip(&ours_after)
        .map(|(a, b)| if a.secs <= b.secs { *a } else { *b })
        .collect();
    let ort_rate = |key: &str| ort[key].as_f64().unwrap_or(f64::NAN);

    // Training step: fast against stock candle, on the shipped architecture.
    let candle_step = measure(&cfg, Backend::Candle).expect("candle")[2];
    let fast_step = measure(&cfg, Backend::Fast).expect("fast")[2];

    println!("CPU: {}", cxr_triage::model::fast::cpu_description());
    println!(
        "model {} ({}x{} input, {gflop:.3} GFLOP forward per image), {} threads; ONNX Runtime {} \
         reproduces our logits within {:.1e}",
        classifier.card().model_id,
        s,
        s,
        rayon::current_num_threads(),
        ort["onnxruntime"].as_str().unwrap_or("?"),
        ort["parity_max_logit_diff"].as_f64().unwrap_or(f64::NAN),
    );
    let peak = measured_peak_gflops();
    println!(
        "{:<26} {:>12} {:>12} {:>8} {:>10} {:>8}",
        "images per second", "cxr-triage", "reference", "ratio", "GFLOP/s*", "of peak"
    );
    let rows = [
        (
            "forward, batch 1",
            1.0,
            ours[0],
            ort_rate("batch1_images_per_sec"),
            "ONNX RT",
            gflop,
        ),
        (
            "forward, batch 32",
            32.0,
            ours[1],
            ort_rate("batch32_images_per_sec"),
            "ONNX RT",
            gflop,
        ),
        (
            "training step, batch 32",
            32.0,
            fast_step,
            32.0 / candle_step.secs,
            "candle",
            3.0 * gflop,
        ),
    ];
    for (what, batch, timing, reference, name, per_image) in rows {
        let rate = batch / timing.secs;
        println!(
            "{what:<26} {rate:>12.1} {reference:>8.1} {name:<7} {:>6.2}x {:>10.1} {:>7.0}%",
            rate / reference,
            rate * per_image,
            100.0 * rate * per_image / peak
        );
    }
    println!(
        "(cores kept busy by our runs: {:.2}, {:.2}, {:.2}; near 2 means an idle machine)",
        ours[0].cores, ours[1].cores, fast_step.cores
    );
    println!(
        "(*) the network's direct-convolution operations per second: our inference convolutions \
         with enough tiles run as Winograd F(4x4, 3x3), with 4x fewer multiplications, so the \
         forward figures can pass the peak: 512 x 512 matrix products on every thread at once, \
         {peak:.0} GFLOP/s in this run"
    );
}
