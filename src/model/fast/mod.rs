//! Fast CPU kernels for [`CxrNet`](super::CxrNet), as candle custom ops.
//!
//! Stock candle runs our convolutions at 16-42 GFLOP/s forward and 8-17 GFLOP/s in training, on a
//! machine whose matrix product reaches about 220 GFLOP/s: the time goes into im2col, layout
//! copies and a backward pass without matrix products. These kernels keep candle's autograd and
//! tensors, and replace only the arithmetic:
//!
//! - activations are NHWC inside the network (channels last), so every output pixel of the batch
//!   is one row of one large matrix product (`gemm`, the crate candle's matmul uses), and
//!   per-channel work (batch norm, `ReLU`, pooling) runs over contiguous channels. Measured on
//!   the target machine, `gemm` with the output channels contiguous ran at 110 GFLOP/s per core
//!   on a 64x64, 32->32 layer against 71 with the pixels contiguous (NCHW);
//! - convolution forward and both gradients are tiles of im2col (or col2im) plus one `gemm` call
//!   per tile, in parallel over tiles; wide stride-1 convolutions read their patches in place
//!   instead of through im2col; the input gradient is skipped when the input needs none (the
//!   network's input);
//! - in training, each block (convolution, batch norm with batch statistics, `ReLU`, and the
//!   2x2 max pool where one follows) is one op, so the convolution output and its gradient
//!   never become candle tensors;
//! - in inference, batch norm is folded into the convolution's weight and a bias (once, for
//!   fixed weights: [`FoldCache`]), and the bias and `ReLU` are applied to each output tile while
//!   it is in cache. The 3x3 convolutions with 32 or more input channels run as Winograd
//!   F(4x4, 3x3) ([`winograd`]: 4x fewer multiplications), with the 2x2 max pool that follows a
//!   stage fused into their output.
//!
//! - on CPUs with AVX2 and FMA but no AVX-512, the inference convolutions' matrix products
//!   (the direct ones, and Winograd's 36 products per tile) run through our own 6x16 kernel
//!   on weights packed once into 16-channel panels ([`direct`]), instead of the `gemm` crate,
//!   which packs the weight on every call; there the layers with too few tiles for
//!   F(4x4, 3x3) but 16 or more of 2x2 (8x8 at batch 1 and 2) run as Winograd F(2x2, 3x3)
//!   ([`winograd2`]).
//!
//! The element-wise loops run through [`pulp`]'s run-time dispatch, so they use AVX2 or AVX-512
//! where the CPU has them although the crate is built for baseline x86-64.
//!
//! [`Backend`] selects these kernels or stock candle (the reference, and the fallback on other
//! devices and dtypes). Conv weights stay in candle's OIHW layout and parameter names are
//! unchanged, so checkpoints are the same for both.
//!
//! Each thread keeps its im2col buffer (at most a few MiB) between calls, so that its memory is
//! not mapped afresh for every layer.

mod block;
mod conv;
mod direct;
mod matmul;
mod norm;
mod pool;
mod winograd;
mod winograd2;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor, Var};
use candle_nn::{BatchNorm, Conv2d};

use block::ConvBnReluTrain;
use conv::{Conv2dBiasReluNhwc, Conv2dBiasReluPacked, Conv2dNhwc, pack_weight};
use norm::{BnReluTrain, ChannelStats};
use pool::MaxPool2x2Nhwc;

/// Why a fast kernel refused its input.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The tensor's shape does not fit the operation.
    #[error("the fast CPU kernels cannot handle this tensor shape: {0}")]
    Shape(&'static str),
    /// The tensor lives on another device or holds another number type.
    #[error("the fast CPU kernels run on the CPU with 32-bit floats only")]
    Unsupported,
    /// A check inside the kernels failed; this is a bug, not a problem with the input.
    #[error("internal error in the fast CPU kernels: {0}")]
    Internal(&'static str),
    /// `CXR_TRIAGE_KERNELS` holds something other than `fast` or `candle`.
    #[error("unknown value {0:?} for {env}: use \"fast\" or \"candle\"", env = Backend::ENV_VAR)]
    UnknownBackend(String),
}

impl From<KernelError> for candle_core::Error {
    fn from(e: KernelError) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// Which implementation runs the network's convolutions, batch norms, `ReLU`s and pools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Backend {
    /// The kernels of this module (CPU, `f32`); anything else falls back to candle.
    #[default]
    Fast,
    /// Stock candle operations: the reference.
    Candle,
}

impl std::str::FromStr for Backend {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fast" => Ok(Self::Fast),
            "candle" => Ok(Self::Candle),
            _ => Err(KernelError::UnknownBackend(s.to_owned())),
        }
    }
}

impl Backend {
    /// The environment variable that sets the process-wide default: `fast` or `candle`.
    pub const ENV_VAR: &'static str = "CXR_TRIAGE_KERNELS";

    /// The backend named by `value` (the content of [`Self::ENV_VAR`]); unset means
    /// [`Backend::Fast`].
    pub fn from_env_value(value: Option<&str>) -> Result<Self, KernelError> {
        value.map_or(Ok(Self::Fast), str::parse)
    }

    /// The process-wide default, read once from [`Self::ENV_VAR`]. An unknown value is logged
    /// as a warning and gives [`Backend::Fast`].
    pub fn process_default() -> Self {
        static DEFAULT: OnceLock<Backend> = OnceLock::new();
        *DEFAULT.get_or_init(|| {
            let value = std::env::var(Self::ENV_VAR).ok();
            Self::from_env_value(value.as_deref()).unwrap_or_else(|e| {
                tracing::warn!("{e}; using the fast kernels");
                Self::Fast
            })
        })
    }

    /// Whether this backend runs the fast kernels on `t`: [`Backend::Fast`], on the CPU, `f32`.
    pub fn is_fast_for(self, t: &Tensor) -> bool {
        self == Self::Fast && matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
    }
}

/// The contiguous `f32` data of a CPU storage under `layout`.
fn contiguous_f32<'a>(s: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32], KernelError> {
    let CpuStorage::F32(data) = s else {
        return Err(KernelError::Unsupported);
    };
    let (start, end) = layout.contiguous_offsets().ok_or(KernelError::Shape(
        "the fast kernels need contiguous tensors",
    ))?;
    data.get(start..end)
        .ok_or(KernelError::Internal("layout outside its storage"))
}

/// Runs `f` on the contiguous `f32` data of a CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(KernelError::Unsupported.into());
    };
    Ok(f(contiguous_f32(cpu, layout)?))
}

/// Runs `f` compiled for the widest vector instructions this CPU has (AVX2 and FMA on most
/// x86-64 machines; plain code elsewhere), chosen at run time, so that loops over channels
/// inside it autovectorise with them. The crate is built for baseline x86-64 (SSE2), which would
/// otherwise leave those loops four lanes wide.
#[inline(always)]
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Reductions split their work into at most this many parts, whatever the number of threads,
/// so that sums come out the same from run to run.
const REDUCTION_PARTS: usize = 8;

/// The number of parts to split `units` of reduction work into.
fn parts_for(units: usize) -> usize {
    units.clamp(1, REDUCTION_PARTS)
}

/// The CPU's model name as `lscpu` shows it (from `/proc/cpuinfo`), for benchmark figures:
/// speed ratios differ between CPU families. `None` where it cannot be read.
pub fn cpu_model_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|name| name.trim().to_owned())
}

/// The widest vector instructions this CPU offers the kernels, in words ("AVX-512", "AVX2 and
/// FMA, no AVX-512", ...): machines of one model name may differ here, and the kernels' speed
/// does.
pub fn cpu_vector_features() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            "AVX2 and FMA, no AVX-512"
        } else {
            "no AVX2"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "not x86-64"
    }
}

/// The CPU for benchmark figures: its model name and its vector instructions, as in
/// "AMD EPYC (AVX2 and FMA, no AVX-512)".
pub fn cpu_description() -> String {
    format!(
        "{} ({})",
        cpu_model_name().unwrap_or_else(|| "unknown CPU".to_owned()),
        cpu_vector_features()
    )
}

/// NCHW `[n, c, h, w]` to contiguous NHWC `[n, h, w, c]`.
pub fn nchw_to_nhwc(x: &Tensor) -> candle_core::Result<Tensor> {
    x.permute((0, 2, 3, 1))?.contiguous()
}

/// NHWC `[n, h, w, c]` to contiguous NCHW `[n, c, h, w]`.
pub fn nhwc_to_nchw(x: &Tensor) -> candle_core::Result<Tensor> {
    x.permute((0, 3, 1, 2))?.contiguous()
}

/// 2-D convolution without bias: `x` NHWC `[n, h, w, ci]`, `weight` OIHW `[co, ci, kh, kw]`,
/// result NHWC `[n, oh, ow, co]`. Differentiable in both arguments.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, Conv2dNhwc { stride, padding })
}

/// 2-D convolution, per-channel `bias` `[co]`, then `ReLU`, in one pass (NHWC, OIHW weight).
/// Differentiable in all three arguments.
pub fn conv2d_bias_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Conv2dBiasReluNhwc { stride, padding },
    )
}

/// Per-channel mean and biased variance of an NHWC tensor, as `[2, c]`. Not differentiable.
pub fn channel_stats(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&ChannelStats)
}

/// 2x2, stride-2 max pool of an NHWC tensor (odd trailing rows and columns dropped).
/// Differentiable; the gradient goes to each window's maximum.
pub fn max_pool2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool2x2Nhwc)
}

/// Batch norm with batch statistics, then `ReLU` (then a 2x2 max pool if `pool`), on an NHWC
/// tensor, with `gamma` and `beta` `[c]`. Differentiable in `x`, `gamma` and `beta`, through the
/// batch statistics as well. Returns the output and the batch statistics `[2, c]` (mean, biased
/// variance) for the running averages.
pub fn batch_norm_relu_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    pool: bool,
) -> candle_core::Result<(Tensor, Tensor)> {
    let x = x.contiguous()?;
    let stats = channel_stats(&x)?;
    let gamma_beta = Tensor::stack(&[gamma, beta], 0)?;
    let y = x.apply_op3(&gamma_beta, &stats, BnReluTrain { eps, pool })?;
    Ok((y, stats))
}

/// The scale and shift of a batch norm: its weight and bias, or 1 and 0 without them.
fn gamma_beta(
    bn: &BatchNorm,
    channels: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    match bn.weight_and_bias() {
        Some((w, b)) => Ok((w.clone(), b.clone())),
        None => Ok((
            Tensor::ones(channels, DType::F32, device)?,
            Tensor::zeros(channels, DType::F32, device)?,
        )),
    }
}

/// Folds an inference batch norm into the preceding bias-free convolution: returns the weight
/// `w * gamma / sqrt(running_var + eps)` (per output channel) and the bias
/// `beta - running_mean * gamma / sqrt(running_var + eps)`. Written in candle operations, so
/// gradients reach the convolution weight and the batch norm's weight and bias (the running
/// statistics are treated as constants, as candle's batch norm does in eval mode).
pub fn fold_batch_norm(
    conv_weight: &Tensor,
    bn: &BatchNorm,
) -> candle_core::Result<(Tensor, Tensor)> {
    let channels = conv_weight.dim(0)?;
    let (gamma, beta) = gamma_beta(bn, channels, conv_weight.device())?;
    let inv_std = (bn.running_var().detach() + bn.eps())?.sqrt()?.recip()?;
    let scale = (gamma * inv_std)?;
    let weight = conv_weight.broadcast_mul(&scale.reshape((channels, 1, 1, 1))?)?;
    let bias = (beta - (bn.running_mean().detach() * &scale)?)?;
    Ok((weight, bias))
}

/// Updates a batch norm's running mean and variance from batch statistics `[2, c]` over `count`
/// values per channel, exactly as candle's `BatchNorm::forward_train` does (including its
/// `count / (count - 1)` correction of the variance).
fn update_running_stats(bn: &BatchNorm, stats: &Tensor, count: usize) -> candle_core::Result<()> {
    let momentum = bn.momentum();
    let (mean, var) = (stats.get(0)?, stats.get(1)?);
    let running_mean = bn.running_mean();
    let running_var = bn.running_var();
    if !running_mean.is_variable() || !running_var.is_variable() {
        return Err(
            KernelError::Internal("batch-norm running statistics are not variables").into(),
        );
    }
    let n = count as f64;
    let new_mean = ((running_mean.detach() * (1.0 - momentum))? + (mean * momentum)?)?;
    let new_var =
        ((running_var.detach() * (1.0 - momentum))? + (var * (momentum * n / (n - 1.0)))?)?;
    // `Var::from_tensor` of a variable shares its storage, so this updates the batch norm's own
    // statistics (the ones in the `VarMap`).
    Var::from_tensor(running_mean)?.set(&new_mean)?;
    Var::from_tensor(running_var)?.set(&new_var)?;
    Ok(())
}

/// A batch norm folded into its convolution for inference, computed once and kept.
///
/// It is used only while the convolution weight and the batch norm's weight and bias are plain
/// tensors (as loaded from a checkpoint: they cannot change) and is cleared by every training
/// forward pass of the block, the only thing that changes the running statistics. With
/// variables (a network being trained) the fold is recomputed on every call.
#[derive(Debug, Default)]
pub struct FoldCache {
    /// The packed folded weight `[(kh, kw, ci), co]` and the bias `[co]`.
    folded: Mutex<Option<(Tensor, Tensor)>>,
    /// The folded weight transformed for Winograd `[36, ci, co]` (as panels
    /// `[36, co / 16, ci, 16]` where [`direct::applies`]) and the bias `[co]`.
    winograd: Mutex<Option<(Tensor, Tensor)>>,
    /// The folded weight as 16-channel panels `[co / 16, (kh, kw, ci), 16]` and the bias `[co]`.
    panels: Mutex<Option<(Tensor, Tensor)>>,
    /// The folded weight transformed for Winograd F(2x2, 3x3) as panels `[16, co / 16, ci, 16]`
    /// and the bias `[co]`.
    winograd2: Mutex<Option<(Tensor, Tensor)>>,
}

impl FoldCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the folded weight, for example after the running statistics changed.
    pub fn clear(&self) {
        *self.folded.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self.winograd.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self.panels.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self
            .winograd2
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The folded weight of `conv` and `bn` transformed for Winograd, and the bias, computed on
    /// first use.
    fn get_or_winograd(
        &self,
        conv: &Conv2d,
        bn: &BatchNorm,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        cached(&self.winograd, || {
            let (weight, bias) = fold_batch_norm(conv.weight(), bn)?;
            let (co, ci, _, _) = weight.dims4()?;
            let u = with_f32(&weight.contiguous()?, |w| {
                winograd::transform_weight(w, co, ci)
            })??;
            let u = if direct::applies(co) {
                let shape = (winograd::POSITIONS, co / direct::PANEL, ci, direct::PANEL);
                Tensor::from_vec(winograd::panels(&u, ci, co)?, shape, weight.device())?
            } else {
                Tensor::from_vec(u, (winograd::POSITIONS, ci, co), weight.device())?
            };
            Ok((u, bias.contiguous()?))
        })
    }

    /// The folded weight of `conv` and `bn` transformed for Winograd F(2x2, 3x3), and the bias,
    /// computed on first use.
    fn get_or_winograd2(
        &self,
        conv: &Conv2d,
        bn: &BatchNorm,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        cached(&self.winograd2, || {
            let (weight, bias) = fold_batch_norm(conv.weight(), bn)?;
            let (co, ci, _, _) = weight.dims4()?;
            let u = with_f32(&weight.contiguous()?, |w| {
                winograd2::transform_weight(w, co, ci)
            })??;
            let shape = (winograd2::POSITIONS, co / direct::PANEL, ci, direct::PANEL);
            Ok((
                Tensor::from_vec(u, shape, weight.device())?,
                bias.contiguous()?,
            ))
        })
    }

    /// The folded weight of `conv` and `bn` as panels for [`direct`], and the bias, computed on
    /// first use.
    fn get_or_panels(
        &self,
        conv: &Conv2d,
        bn: &BatchNorm,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        cached(&self.panels, || {
            let (weight, bias) = fold_batch_norm(conv.weight(), bn)?;
            let (co, ci, kh, kw) = weight.dims4()?;
            let panels = with_f32(&weight.contiguous()?, |w| {
                direct::pack_panels(w, [co, ci, kh, kw])
            })??;
            let shape = (co / direct::PANEL, kh * kw * ci, direct::PANEL);
            Ok((
                Tensor::from_vec(panels, shape, weight.device())?,
                bias.contiguous()?,
            ))
        })
    }

    /// The packed folded weight and bias of `conv` and `bn`, computed on first use.
    fn get_or_fold(&self, conv: &Conv2d, bn: &BatchNorm) -> candle_core::Result<(Tensor, Tensor)> {
        cached(&self.folded, || {
            let (weight, bias) = fold_batch_norm(conv.weight(), bn)?;
            Ok((pack_weight(&weight)?, bias.contiguous()?))
        })
    }
}

/// The weight and bias in `slot`, made by `make` and kept there on first use.
fn cached(
    slot: &Mutex<Option<(Tensor, Tensor)>>,
    make: impl FnOnce() -> candle_core::Result<(Tensor, Tensor)>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut cached = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(f) = cached.as_ref() {
        return Ok(f.clone());
    }
    let f = make()?;
    *cached = Some(f.clone());
    Ok(f)
}

/// Inference convolutions (3x3, stride 1, padding 1) with at least this many input channels
/// run as Winograd F(4x4, 3x3) (see [`winograd`]); the stem, with one, does not.
const WINOGRAD_MIN_CHANNELS: usize = 32;

/// ...and only when the call has at least this many output tiles ([`winograd::tile_count`]).
///
/// Winograd's transformed weight is 4x the size of the direct convolution's (36 positions
/// against 9 taps), and with few tiles the products read all of it for little work: at batch 1
/// the last stages (16x16 and 8x8, 16 and 4 tiles) were bound by reading 2.4-9.4 MB of weights
/// per layer, which the `gemm` crate also packs on every call. Measured at batch 1 on a 2-core
/// AMD EPYC (Zen 3, AVX2, no AVX-512), those four layers took 4.4-4.9 ms with Winograd and
/// 3.0-3.4 ms with the direct convolution, while the 32x32 layers (64 tiles) were 12-75% slower
/// direct. Batch 32 runs in chunks of 8 images, whose smallest layers have 32 tiles. (Where the
/// panels apply, the 8x8 layers at batch 1 and 2 now run as F(2x2, 3x3): [`WINOGRAD2_MIN_TILES`].)
const WINOGRAD_MIN_TILES: usize = 32;

/// [`WINOGRAD_MIN_TILES`] where the weights are in panels for our own kernel
/// ([`direct::applies`]): nothing is packed per call, and on the same Zen 3 the 16x16 layers at
/// batch 1 (16 tiles) took 0.27 and 0.45-0.48 ms as Winograd against 0.35-0.43 and 0.68-0.85 ms
/// direct (batch 1 over eight interleaved runs: median 3.6-4.9 ms against 4.4-5.4), while the
/// 8x8 layers (4 tiles) were 20-35% slower as Winograd.
const WINOGRAD_MIN_TILES_PANELS: usize = 16;

/// Inference convolutions that do not run as Winograd F(4x4, 3x3) run as F(2x2, 3x3) (see
/// [`winograd2`]) where the panels apply and the call has at least this many tiles of 2x2: the
/// 8x8 layers at batch 1 (16 tiles) and 2. On a 2-core AMD EPYC (Zen 3, AVX2, no AVX-512) the
/// two 8x8 layers at batch 1 took 0.72-0.77 ms against 0.95-1.0 ms direct, and the whole
/// forward pass 4-7% less at batch 1 and 8% less at batch 2 (both alternating in one process).
const WINOGRAD2_MIN_TILES: usize = 16;

/// How an inference convolution with fixed weights runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InferenceConv {
    /// Winograd F(4x4, 3x3) ([`winograd`]), with the 2x2 max pool fused.
    Winograd,
    /// Winograd F(2x2, 3x3) ([`winograd2`]).
    Winograd2,
    /// The direct convolution on panels ([`direct`]).
    Panels,
    /// The direct convolution on the packed weight, through the `gemm` crate.
    Packed,
}

/// How an inference convolution with this kernel, stride and padding, on an NHWC input
/// `[n, h, w, ci]`, with `co` output channels, runs; `gradient` when the input may need one
/// (Grad-CAM), which only the packed direct convolution gives.
fn inference_conv(
    kernel: (usize, usize),
    stride: usize,
    padding: usize,
    [n, h, w, ci]: [usize; 4],
    co: usize,
    gradient: bool,
) -> InferenceConv {
    let winograd_shape =
        (kernel, stride, padding) == ((3, 3), 1, 1) && ci >= WINOGRAD_MIN_CHANNELS && !gradient;
    let min_tiles = if direct::applies(co) {
        WINOGRAD_MIN_TILES_PANELS
    } else {
        WINOGRAD_MIN_TILES
    };
    if winograd_shape && winograd::tile_count(n, h, w) >= min_tiles {
        InferenceConv::Winograd
    } else if winograd_shape
        && winograd2::applies(ci, co)
        && winograd2::tile_count(n, h, w) >= WINOGRAD2_MIN_TILES
    {
        InferenceConv::Winograd2
    } else if direct::applies(co) && !gradient {
        InferenceConv::Panels
    } else {
        InferenceConv::Packed
    }
}

/// Whether a block's weights are fixed: no variable and no autograd history, so a fold of them
/// stays valid.
fn is_fixed(conv: &Conv2d, bn: &BatchNorm) -> bool {
    let affine_fixed = bn
        .weight_and_bias()
        .is_none_or(|(w, b)| !w.track_op() && !b.track_op());
    !conv.weight().track_op() && affine_fixed
}

/// Convolution, batch norm and `ReLU` (and the 2x2 max pool after it if `pool`) on NHWC
/// activations: [`CxrNet`](super::CxrNet)'s block with these kernels.
///
/// In training, batch norm uses batch statistics and updates its running statistics exactly as
/// candle's does, and `cache` is cleared. In inference, batch norm is folded into the
/// convolution, through `cache` when the weights are fixed (see [`FoldCache`]). `conv` must be
/// bias-free and undilated, with one group.
pub fn conv_bn_relu(
    x: &Tensor,
    conv: &Conv2d,
    bn: &BatchNorm,
    train: bool,
    pool: bool,
    cache: &FoldCache,
) -> candle_core::Result<Tensor> {
    let cfg = conv.config();
    if conv.bias().is_some() || cfg.dilation != 1 || cfg.groups != 1 {
        return Err(
            KernelError::Shape("the fast block needs a plain bias-free convolution").into(),
        );
    }
    let y = if train {
        cache.clear();
        let weight = conv.weight().contiguous()?;
        let (gamma, beta) = gamma_beta(bn, weight.dim(0)?, x.device())?;
        let op = ConvBnReluTrain {
            stride: cfg.stride,
            padding: cfg.padding,
            eps: bn.eps(),
            pool,
            saved: Arc::default(),
        };
        let saved = Arc::clone(&op.saved);
        let y = x
            .contiguous()?
            .apply_op3(&weight, &Tensor::stack(&[gamma, beta], 0)?, op)?;
        let saved = saved.lock().unwrap_or_else(PoisonError::into_inner);
        let saved = saved
            .as_ref()
            .ok_or(KernelError::Internal("the block kept no statistics"))?;
        let channels = saved.stats.len() / 2;
        let stats = Tensor::from_slice(&saved.stats, (2, channels), x.device())?;
        let (n, _, _, _) = x.dims4()?;
        let g = conv::ConvGeometry::new(x.dims(), weight.dims(), cfg.stride, cfg.padding)?;
        update_running_stats(bn, &stats, n * g.out_h() * g.out_w())?;
        return Ok(y);
    } else if is_fixed(conv, bn) {
        let (co, ci, kernel_h, kernel_w) = conv.weight().dims4()?;
        let (n, h, w, _) = x.dims4()?;
        let kind = inference_conv(
            (kernel_h, kernel_w),
            cfg.stride,
            cfg.padding,
            [n, h, w, ci],
            co,
            x.track_op(),
        );
        let x = x.contiguous()?;
        match kind {
            InferenceConv::Winograd => {
                let (u, bias) = cache.get_or_winograd(conv, bn)?;
                return x.apply_op3(&u, &bias, winograd::Conv3x3BiasReluWinograd { pool });
            }
            InferenceConv::Winograd2 => {
                let (u, bias) = cache.get_or_winograd2(conv, bn)?;
                x.apply_op3(&u, &bias, winograd2::Conv3x3BiasReluF2)?
            }
            InferenceConv::Panels => {
                let (panels, bias) = cache.get_or_panels(conv, bn)?;
                let op = direct::Conv2dBiasReluPanels {
                    stride: cfg.stride,
                    padding: cfg.padding,
                    kernel_h,
                    kernel_w,
                };
                x.apply_op3(&panels, &bias, op)?
            }
            InferenceConv::Packed => {
                let (weight, bias) = cache.get_or_fold(conv, bn)?;
                let op = Conv2dBiasReluPacked {
                    stride: cfg.stride,
                    padding: cfg.padding,
                    kernel_h,
                    kernel_w,
                };
                x.apply_op3(&weight, &bias, op)?
            }
        }
    } else {
        let (weight, bias) = fold_batch_norm(conv.weight(), bn)?;
        conv2d_bias_relu(x, &weight, &bias, cfg.stride, cfg.padding)?
    };
    if pool { max_pool2x2(&y) } else { Ok(y) }
}
