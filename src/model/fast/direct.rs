//! The inference convolutions that do not run as Winograd (the stem, and layers with too few
//! tiles), as a direct convolution with weights packed once and our own AVX2 matrix
//! kernel, on CPUs with AVX2 and FMA but no AVX-512.
//!
//! The input is padded once per call; each output pixel's patch is then read in place (no
//! im2col), and each 16-channel panel of the weight, packed as `[(kh, kw, ci), 16]` when the
//! batch norm is folded, is read contiguously. A micro-tile is 6 output pixels by 16 output
//! channels: 12 accumulators, 2 weight vectors and a broadcast fill AVX2's 16 registers, and
//! each step does 12 fused multiply-adds for 8 loads. The bias and `ReLU` are applied as the
//! tile is stored, straight into the NHWC output.
//!
//! Measured at batch 1 on a 2-core AMD EPYC (Zen 3, AVX2, no AVX-512), the `gemm` crate ran these
//! layers at about 40 GFLOP/s per core inside the network: it packs the weight (up to 2.4 MB) on
//! every call, and the small-layer path went through im2col, per-block buffers and a copy back.
//! On CPUs with AVX-512 the `gemm` crate's wider kernels are kept ([`available`]).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::conv::ConvGeometry;
use super::{KernelError, contiguous_f32};

/// Output channels per panel: two 8-lane vectors.
pub(crate) const PANEL: usize = 16;

/// Output pixels per micro-tile (see the module comment).
const TILE_PIXELS: usize = 6;

/// Micro-tiles per task at most, so that large layers (the stem) still share out evenly.
const TASK_TILES: usize = 128;

/// Whether this CPU runs [`forward`]: x86-64 with AVX2 and FMA, and no AVX-512 (where the `gemm`
/// crate's 16-lane kernels are faster than ours could be measured to be).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && !is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether an inference convolution with `out_c` output channels runs here.
pub(crate) fn applies(out_c: usize) -> bool {
    out_c > 0 && out_c.is_multiple_of(PANEL) && available()
}

/// A matrix `[rows, co]`, read through `at(row, col)`, as panels `[co / 16, rows, 16]`.
pub(crate) fn panels_of(rows: usize, co: usize, at: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let mut packed = vec![0.0f32; rows * co];
    for (panel, dst) in packed.chunks_exact_mut(rows * PANEL).enumerate() {
        for (r, row) in dst.chunks_exact_mut(PANEL).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = at(r, panel * PANEL + j);
            }
        }
    }
    packed
}

/// A folded OIHW weight `[co, ci, kh, kw]` as panels `[co / 16, (kh, kw, ci), 16]`.
pub(crate) fn pack_panels(
    w: &[f32],
    [co, ci, kh, kw]: [usize; 4],
) -> Result<Vec<f32>, KernelError> {
    let k = kh * kw * ci;
    if w.len() != co * k || !co.is_multiple_of(PANEL) {
        return Err(KernelError::Shape(
            "panels need a whole number of 16 output channels",
        ));
    }
    Ok(panels_of(k, co, |r, o| {
        let (tap, i) = (r / ci, r % ci);
        let (ky, kx) = (tap / kw, tap % kw);
        w[((o * ci + i) * kh + ky) * kw + kx]
    }))
}

/// `m = v u` for a matrix product with `u` as panels: `v` `[rows, k]`, `u` `[co / 16, k, 16]`,
/// `m` `[rows, co]` (Winograd's products, one position at a time). Single-threaded.
pub(crate) fn product(
    [rows, k, co]: [usize; 3],
    v: &[f32],
    u: &[f32],
    m: &mut [f32],
) -> Result<(), KernelError> {
    if v.len() < rows * k || u.len() != k * co || m.len() < rows * co || !co.is_multiple_of(PANEL) {
        return Err(KernelError::Shape(
            "the panel product's operands have the wrong size",
        ));
    }
    if !available() {
        return Err(KernelError::Internal(
            "the panel product needs AVX2 and FMA",
        ));
    }
    if rows == 0 || co == 0 {
        return Ok(());
    }
    if k == 0 {
        m[..rows * co].fill(0.0);
        return Ok(());
    }
    for (panel, weights) in u.chunks_exact(k * PANEL).enumerate() {
        for t in 0..rows.div_ceil(TILE_PIXELS) {
            let row = |i: usize| (t * TILE_PIXELS + i).min(rows - 1);
            let bases: [usize; TILE_PIXELS] = std::array::from_fn(|i| row(i) * k);
            let outs: [usize; TILE_PIXELS] = std::array::from_fn(|i| row(i) * co + panel * PANEL);
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: `available()` checked AVX2 and FMA. Reads `bases[i] + j` (j < k) are below
            // `rows * k <= v.len()`; `weights` is one panel of `k * 16` floats; writes
            // `outs[i] + j` (j < 16) are below `rows * co <= m.len()`, and `m` is borrowed
            // mutably for the call.
            unsafe {
                avx2::tile::<false>(
                    v.as_ptr(),
                    &bases,
                    &[0],
                    k,
                    weights.as_ptr(),
                    std::ptr::null(),
                    m.as_mut_ptr(),
                    &outs,
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (bases, outs, weights);
        }
    }
    Ok(())
}

/// The NHWC input with `padding` zeros around each image.
fn pad(g: &ConvGeometry, x: &[f32]) -> Vec<f32> {
    let c = g.in_c;
    let (ph, pw) = (g.in_h + 2 * g.padding, g.in_w + 2 * g.padding);
    let mut padded = vec![0.0f32; g.batch * ph * pw * c];
    let row = g.in_w * c;
    for (image, dst) in x
        .chunks_exact(g.in_h * row)
        .zip(padded.chunks_exact_mut(ph * pw * c))
    {
        for (y, src) in image.chunks_exact(row).enumerate() {
            let start = ((y + g.padding) * pw + g.padding) * c;
            dst[start..start + row].copy_from_slice(src);
        }
    }
    padded
}

/// The output, shared by the tasks of [`forward`], each of which writes its own pixels and
/// channels.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

impl SharedOut {
    /// The output's first element (a method, so that closures capture the whole `Sync` value).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

#[allow(unsafe_code)]
// SAFETY: `forward` hands the pointer to tasks that write disjoint elements (see there), and
// reads the output only after all of them have finished.
unsafe impl Send for SharedOut {}
#[allow(unsafe_code)]
// SAFETY: as for `Send`.
unsafe impl Sync for SharedOut {}

/// Convolution, bias and `ReLU` on NHWC activations with a weight from [`pack_panels`].
/// Errors where [`available`] is false.
pub(crate) fn forward(
    g: &ConvGeometry,
    x: &[f32],
    panels: &[f32],
    bias: &[f32],
) -> Result<Vec<f32>, KernelError> {
    let (co, c) = (g.out_c, g.in_c);
    let k = g.patch_len();
    if x.len() != g.x_len()
        || panels.len() != co * k
        || bias.len() != co
        || !co.is_multiple_of(PANEL)
    {
        return Err(KernelError::Shape(
            "the panel convolution's input, weight or bias has the wrong size",
        ));
    }
    if !available() {
        return Err(KernelError::Internal(
            "the panel convolution needs AVX2 and FMA",
        ));
    }
    let pixels = g.out_pixels();
    let mut out = vec![0.0f32; pixels * co];
    if pixels == 0 || co == 0 {
        return Ok(out);
    }
    if c == 0 {
        // An empty patch: every output is the bias through `ReLU`.
        for row in out.chunks_exact_mut(co) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = b.max(0.0);
            }
        }
        return Ok(out);
    }
    let padded = pad(g, x);
    let (ph, pw) = (g.in_h + 2 * g.padding, g.in_w + 2 * g.padding);
    let (oh, ow) = (g.out_h(), g.out_w());
    let taps: Vec<usize> = (0..g.kernel_h)
        .flat_map(|ky| (0..g.kernel_w).map(move |kx| (ky * pw + kx) * c))
        .collect();
    // Where output pixel `p`'s patch starts in `padded`; it grows with `p`.
    let base = |p: usize| {
        let (b, r) = (p / (oh * ow), p % (oh * ow));
        let (y, x) = (r / ow, r % ow);
        ((b * ph + y * g.stride) * pw + x * g.stride) * c
    };
    // Every read is `base(p) + tap + i` with `p < pixels`, `i < c`: the last is in bounds.
    let last_read = base(pixels - 1) + taps.last().copied().unwrap_or(0) + c;
    if last_read > padded.len() {
        return Err(KernelError::Internal(
            "the panel convolution reads out of bounds",
        ));
    }
    let tiles = pixels.div_ceil(TILE_PIXELS);
    let n_panels = co / PANEL;
    let threads = rayon::current_num_threads();
    let parts = (2 * threads)
        .div_ceil(n_panels)
        .max(tiles.div_ceil(TASK_TILES))
        .min(tiles);
    let tiles_per_part = tiles.div_ceil(parts);
    let shared = SharedOut(out.as_mut_ptr());
    (0..n_panels * parts).into_par_iter().for_each(|task| {
        let (part, panel) = (task / n_panels, task % n_panels);
        let weights = &panels[panel * k * PANEL..(panel + 1) * k * PANEL];
        let bias = &bias[panel * PANEL..(panel + 1) * PANEL];
        let first = part * tiles_per_part;
        for t in first..(first + tiles_per_part).min(tiles) {
            // A last tile short of pixels repeats its last pixel: the same values, written
            // again by the same task.
            let pixel = |i: usize| (t * TILE_PIXELS + i).min(pixels - 1);
            let bases: [usize; TILE_PIXELS] = std::array::from_fn(|i| base(pixel(i)));
            let outs: [usize; TILE_PIXELS] = std::array::from_fn(|i| pixel(i) * co + panel * PANEL);
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: `available()` checked that the CPU has AVX2 and FMA. Each read
            // `bases[i] + tap + j` (j < c) is at most `last_read - 1 < padded.len()`, as `base`
            // grows with the pixel. `weights` holds `taps.len() * c * 16` floats (k = taps * c)
            // and `bias` 16. Each write `outs[i] + j` (j < 16) is below `pixels * co`, the
            // output's length, and belongs to pixel `pixel(i)` and this task's panel: tasks
            // cover disjoint (tile range, panel) pairs, so no two tasks write the same element,
            // and `out` is read only after `for_each` has returned.
            unsafe {
                avx2::tile::<true>(
                    padded.as_ptr(),
                    &bases,
                    &taps,
                    c,
                    weights.as_ptr(),
                    bias.as_ptr(),
                    shared.ptr(),
                    &outs,
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (bases, outs, weights, bias, &shared);
        }
    });
    Ok(out)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _MM_HINT_T0, _mm_prefetch, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_max_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use super::{PANEL, TILE_PIXELS};

    /// How far ahead in the weight panel the kernel asks for the next lines: 16 steps (1 KiB).
    /// The panels come from L2 or beyond, and at batch 1 perf put most of the kernel's time
    /// on the weight loads; with the prefetch, batch 1 took 4.0-4.8 ms against 4.5-5.2 (the
    /// faster half of ten interleaved runs each, on a 2-core AMD EPYC, Zen 3).
    const PREFETCH: usize = 16 * PANEL;

    /// One micro-tile: output pixels `outs` (offsets of their 16 channels in `out`) of the
    /// patches at `input + bases[i] + taps[t]` (`c` channels each), with the panel `weights`
    /// `[taps * c, 16]`; with `BIAS_RELU`, plus `bias` and through `ReLU`.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA. For each `i` and tap `t`, `c` floats from
    /// `input + bases[i] + t` are readable; `weights` has `taps.len() * c * 16` readable floats
    /// and, with `BIAS_RELU`, `bias` 16; 16 floats from `out + outs[i]` are writable and not
    /// accessed by any other thread during the call.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile<const BIAS_RELU: bool>(
        input: *const f32,
        bases: &[usize; TILE_PIXELS],
        taps: &[usize],
        c: usize,
        weights: *const f32,
        bias: *const f32,
        out: *mut f32,
        outs: &[usize; TILE_PIXELS],
    ) {
        let zero = _mm256_setzero_ps();
        let mut acc: [[__m256; 2]; TILE_PIXELS] = [[zero; 2]; TILE_PIXELS];
        let mut w = weights;
        for &tap in taps {
            // SAFETY (all blocks below): within the bounds the caller guarantees.
            let rows: [*const f32; TILE_PIXELS] =
                std::array::from_fn(|i| unsafe { input.add(bases[i] + tap) });
            for j in 0..c {
                // A hint only: no access happens, so the address may run past the panel.
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(PREFETCH).cast());
                let (w0, w1) = unsafe { (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8))) };
                w = unsafe { w.add(PANEL) };
                for (a, row) in acc.iter_mut().zip(&rows) {
                    let v = unsafe { _mm256_broadcast_ss(&*row.add(j)) };
                    a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(v, w1, a[1]);
                }
            }
        }
        if BIAS_RELU {
            let (b0, b1) = unsafe { (_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8))) };
            for a in &mut acc {
                a[0] = _mm256_max_ps(_mm256_add_ps(a[0], b0), zero);
                a[1] = _mm256_max_ps(_mm256_add_ps(a[1], b1), zero);
            }
        }
        for (a, &o) in acc.iter().zip(outs) {
            unsafe {
                _mm256_storeu_ps(out.add(o), a[0]);
                _mm256_storeu_ps(out.add(o + 8), a[1]);
            }
        }
    }
}

/// Convolution, bias and `ReLU` on NHWC activations with the weight as [`pack_panels`] leaves
/// it: `(x [n, h, w, ci], panels [co / 16, (kh, kw, ci), 16], bias [co]) -> [n, oh, ow, co]`.
/// Inference only: it has no backward pass (the caller uses the packed direct convolution
/// whenever a gradient could be wanted).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2dBiasReluPanels {
    pub stride: usize,
    pub padding: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
}

impl CustomOp3 for Conv2dBiasReluPanels {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bias-relu-panels"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[_, _, _, ci], &[panels, k, PANEL]) = (xl.dims(), wl.dims()) else {
            return Err(KernelError::Shape(
                "a panel convolution needs NHWC input and a [co / 16, k, 16] weight",
            )
            .into());
        };
        let co = panels * PANEL;
        let g = ConvGeometry::new(
            xl.dims(),
            &[co, ci, self.kernel_h, self.kernel_w],
            self.stride,
            self.padding,
        )?;
        if g.patch_len() != k || bl.dims() != [co] {
            return Err(KernelError::Shape(
                "the panel convolution's weight or bias does not match its input",
            )
            .into());
        }
        let y = forward(
            &g,
            contiguous_f32(xs, xl)?,
            contiguous_f32(ws, wl)?,
            contiguous_f32(bs, bl)?,
        )?;
        Ok((
            CpuStorage::F32(y),
            Shape::from_dims(&[g.batch, g.out_h(), g.out_w(), co]),
        ))
    }
}
