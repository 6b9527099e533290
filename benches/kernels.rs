//! Throughput of `CxrNet` with stock candle and with the fast kernels, side by side.
//!
//! ```sh
//! cargo bench --bench kernels                  # S = 128 and 224
//! cargo bench --bench kernels -- --size 128    # one size
//! cargo bench --bench kernels -- --layers      # also each convolution of the network alone
//! cargo bench --bench kernels -- --fast-only   # skip stock candle (for profiling)
//! CXR_BENCH_ONLY=train cargo bench --bench kernels -- --fast-only   # or fwd1, fwd32
//! ```
//!
//! For each input size: forward images per second at batch 1 and 32 (inference: batch norm in
//! eval mode, parameters as plain tensors as when loaded from a checkpoint), and training-step
//! images per second at batch 32 (forward, backward and an `AdamW` step over a `VarMap`). Each
//! figure is the median of several timed repetitions after a warm-up; GFLOP/s counts
//! `CnnConfig::forward_flops` per image, three times that for a training step.
//!
//! "cores" is the process's CPU time over the wall time of those repetitions (Linux): on an idle
//! 2-core machine it is close to 2; well below that, other programs were taking the CPU and the
//! figures are low.

use candle_core::Device;
use cxr_triage::model::CnnConfig;
use cxr_triage::model::fast::{self, Backend};

mod common;
use common::{Timing, measure, time};

/// Each convolution of the network at batch 32, alone: forward, and forward plus both gradients.
fn layers(cfg: &CnnConfig) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    println!(
        "\nconvolutions at S = {}, batch 32, GFLOP/s (forward; forward and both gradients)",
        cfg.input_size
    );
    println!(
        "{:>24} {:>10} {:>10} {:>12} {:>12}",
        "layer", "candle fwd", "fast fwd", "candle f+b", "fast f+b"
    );
    let mut side = cfg.input_size;
    let mut cin = 1;
    for (stage, &w) in cfg.widths.iter().enumerate() {
        let convs: Vec<(usize, usize, usize)> = if stage == 0 {
            vec![(cin, w, 2)]
        } else {
            vec![(cin, w, 1), (w, w, 1)]
        };
        for (i, o, stride) in convs {
            let out_side = (side + 2 - 3) / stride + 1;
            let flops = 2.0 * (32 * out_side * out_side * i * o * 9) as f64;
            let x = candle_core::Var::randn(0f32, 1.0, (32, i, side, side), &dev)?;
            let wt = candle_core::Var::randn(0f32, 0.1, (o, i, 3, 3), &dev)?;
            let x_nhwc = candle_core::Var::from_tensor(&fast::nchw_to_nhwc(&x)?)?;
            let candle_fwd = time(|| x.as_tensor().conv2d(&wt, 1, stride, 1, 1).map(drop))?;
            let fast_fwd = time(|| fast::conv2d(&x_nhwc, &wt, stride, 1).map(drop))?;
            let candle_fb = time(|| {
                x.as_tensor()
                    .conv2d(&wt, 1, stride, 1, 1)?
                    .sum_all()?
                    .backward()
                    .map(drop)
            })?;
            let fast_fb = time(|| {
                fast::conv2d(&x_nhwc, &wt, stride, 1)?
                    .sum_all()?
                    .backward()
                    .map(drop)
            })?;
            println!(
                "{:>24} {:>10.1} {:>10.1} {:>12.1} {:>12.1}",
                format!("{side}x{side} {i}->{o} s{stride}"),
                flops / candle_fwd.secs / 1e9,
                flops / fast_fwd.secs / 1e9,
                3.0 * flops / candle_fb.secs / 1e9,
                3.0 * flops / fast_fb.secs / 1e9,
            );
            side = out_side;
            cin = o;
        }
        if stage > 0 && stage + 1 < cfg.widths.len() {
            side /= 2;
        }
    }
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--size") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .map_or_else(|| vec![128], |s| vec![s]),
        None => vec![128, 224],
    };
    let with_layers = args.iter().any(|a| a == "--layers");
    let fast_only = args.iter().any(|a| a == "--fast-only");
    println!("CPU: {}", cxr_triage::model::fast::cpu_description());
    println!(
        "CxrNet throughput, images per second (median), {} rayon threads",
        rayon::current_num_threads()
    );
    for &s in &sizes {
        let cfg = CnnConfig {
            input_size: s,
            ..CnnConfig::default()
        };
        let gflop = cfg.forward_flops() as f64 / 1e9;
        let candle = if fast_only {
            [Timing::SKIPPED; 3]
        } else {
            measure(&cfg, Backend::Candle)?
        };
        let fast = measure(&cfg, Backend::Fast)?;
        println!("\nS = {s} ({gflop:.3} GFLOP forward per image)");
        println!(
            "{:>24} {:>8} {:>6} {:>8} {:>6} {:>8} {:>13}",
            "", "candle", "cores", "fast", "cores", "ratio", "fast GFLOP/s"
        );
        for (i, what) in [
            "forward, batch 1",
            "forward, batch 32",
            "training step, batch 32",
        ]
        .iter()
        .enumerate()
        {
            let batch = if i == 0 { 1.0 } else { 32.0 };
            let per_image = if i == 2 { 3.0 * gflop } else { gflop };
            let (c, f) = (batch / candle[i].secs, batch / fast[i].secs);
            println!(
                "{:>24} {:>8.1} {:>6.2} {:>8.1} {:>6.2} {:>7.2}x {:>13.1}",
                what,
                c,
                candle[i].cores,
                f,
                fast[i].cores,
                f / c,
                f * per_image
            );
        }
        if with_layers {
            layers(&cfg)?;
        }
    }
    Ok(())
}
