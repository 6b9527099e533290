//! Timing helpers shared by the benchmarks: median wall time with the CPU cores kept busy, and
//! `CxrNet` forward and training-step throughput with either backend.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use cxr_triage::model::fast::Backend;
use cxr_triage::model::{CnnConfig, CxrNet};

/// Timed repetitions: at least this many...
pub const MIN_REPS: usize = 3;
/// ...and more while the total stays under this.
pub const TARGET_SECS: f64 = 3.0;
pub const MAX_REPS: usize = 30;

/// Seconds of CPU time this process has used, all threads together (Linux; `None` elsewhere).
pub fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses); utime and stime are the 12th and
    // 13th of those, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// One measurement: median wall seconds per call, and the CPU cores kept busy meanwhile.
#[derive(Clone, Copy)]
pub struct Timing {
    /// Median wall seconds per call.
    pub secs: f64,
    /// CPU cores kept busy meanwhile.
    pub cores: f64,
}

impl Timing {
    /// A measurement not taken.
    pub const SKIPPED: Self = Self {
        secs: f64::NAN,
        cores: f64::NAN,
    };
}

/// Times `f` after one warm-up call.
pub fn time(mut f: impl FnMut() -> candle_core::Result<()>) -> candle_core::Result<Timing> {
    f()?;
    let mut times = Vec::new();
    let cpu_start = cpu_secs();
    let start = Instant::now();
    while times.len() < MIN_REPS
        || (times.len() < MAX_REPS && start.elapsed() < Duration::from_secs_f64(TARGET_SECS))
    {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let wall = start.elapsed().as_secs_f64();
    let cores = match (cpu_start, cpu_secs()) {
        (Some(a), Some(b)) => (b - a) / wall,
        _ => f64::NAN,
    };
    times.sort_by(f64::total_cmp);
    Ok(Timing {
        secs: times[times.len() / 2],
        cores,
    })
}

/// A training network and an inference copy whose parameters are plain tensors.
pub fn networks(
    cfg: &CnnConfig,
    backend: Backend,
) -> candle_core::Result<(CxrNet, VarMap, CxrNet)> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let train_net = CxrNet::new(cfg, &VarBuilder::from_varmap(&varmap, DType::F32, &dev))?
        .with_backend(backend);
    // Detached copies: a copy of a variable would carry autograd history.
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned VarMap".into()))?
        .iter()
        .map(|(k, v)| v.as_detached_tensor().copy().map(|t| (k.clone(), t)))
        .collect::<candle_core::Result<_>>()?;
    let infer_net = CxrNet::new(cfg, &VarBuilder::from_tensors(tensors, DType::F32, &dev))?
        .with_backend(backend);
    Ok((train_net, varmap, infer_net))
}

/// Forward batch 1, forward batch 32, training step batch 32.
pub fn measure(cfg: &CnnConfig, backend: Backend) -> candle_core::Result<[Timing; 3]> {
    let dev = Device::Cpu;
    let s = cfg.input_size;
    let (train_net, varmap, infer_net) = networks(cfg, backend)?;
    let x1 = Tensor::randn(0f32, 1.0, (1, 1, s, s), &dev)?;
    let x32 = Tensor::randn(0f32, 1.0, (32, 1, s, s), &dev)?;
    let targets = Tensor::rand(0f32, 1.0, 32, &dev)?
        .ge(0.5)?
        .to_dtype(DType::F32)?;
    let only = std::env::var("CXR_BENCH_ONLY").unwrap_or_default();
    let wanted = |what: &str| only.is_empty() || only == what;
    let fwd1 = if wanted("fwd1") {
        time(|| infer_net.forward_t(&x1, false).map(drop))?
    } else {
        Timing::SKIPPED
    };
    let fwd32 = if wanted("fwd32") {
        time(|| infer_net.forward_t(&x32, false).map(drop))?
    } else {
        Timing::SKIPPED
    };
    let step = if wanted("train") {
        let params = ParamsAdamW {
            lr: 1e-4,
            ..Default::default()
        };
        let mut opt = AdamW::new(varmap.all_vars(), params)?;
        time(|| {
            let logits = train_net.forward_t(&x32, true)?;
            let loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, &targets)?;
            opt.backward_step(&loss)
        })?
    } else {
        Timing::SKIPPED
    };
    Ok([fwd1, fwd32, step])
}
