//! Winograd F(2x2, 3x3) for the small late layers at batch 1 and 2 (8x8: 16 tiles of 2x2 per
//! image), on CPUs where the panels apply ([`direct::applies`]).
//!
//! F(4x4, 3x3) ([`super::winograd`]) has too few tiles there (4 per image) for its transformed
//! weight, 4x the direct convolution's; F(2x2, 3x3) does 2.25x fewer multiplications than the
//! direct convolution with a weight only 16/9 its size. Each 4x4 input tile `d` becomes
//! `V = Bᵀ d B`, each weight `U = G g Gᵀ` (once, when the batch norm is folded), the 16
//! positions are 16 matrix products through [`direct::product`] (shared out among the
//! threads), and the 2x2 output is `Aᵀ M A` plus the bias, through `ReLU`. The transforms run
//! with AVX2, 8 channels to a register.
//!
//! Only for inference on fixed weights: the op has no backward pass.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::{KernelError, contiguous_f32, direct, winograd};

/// Side of an output tile.
const TILE: usize = 2;

/// Side of an input tile.
const ALPHA: usize = TILE + 2;

/// Positions in a transformed tile.
pub(crate) const POSITIONS: usize = ALPHA * ALPHA;

/// The output tiles of an `[n, h, w, _]` input, all images together.
pub(crate) fn tile_count(n: usize, h: usize, w: usize) -> usize {
    n * h.div_ceil(TILE) * w.div_ceil(TILE)
}

/// Whether a convolution with `ci` input and `co` output channels can run here: AVX2 and FMA
/// without AVX-512 ([`direct::applies`]), and the channels in whole registers of 8.
pub(crate) fn applies(ci: usize, co: usize) -> bool {
    direct::applies(co) && ci > 0 && ci.is_multiple_of(winograd::AVX2_LANES)
}

/// The transformed weight `U = G g Gᵀ` of an OIHW 3x3 weight `[co, ci, 3, 3]`, as panels
/// `[16, co / 16, ci, 16]` for [`direct::product`].
pub(crate) fn transform_weight(w: &[f32], co: usize, ci: usize) -> Result<Vec<f32>, KernelError> {
    const G: [[f64; 3]; ALPHA] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    winograd::panels(&winograd::transform_weight_with(&G, w, co, ci)?, ci, co)
}

/// Convolution (3x3, stride 1, padding 1) of NHWC `x` `[n, h, w, ci]` with the panels `u`
/// from [`transform_weight`], plus `bias`, through `ReLU`.
fn forward(
    [n, h, w, ci, co]: [usize; 5],
    x: &[f32],
    u: &[f32],
    bias: &[f32],
) -> Result<Vec<f32>, KernelError> {
    if !direct::available() {
        return Err(KernelError::Internal("F(2x2) needs AVX2 and FMA"));
    }
    if !applies(ci, co)
        || x.len() != n * h * w * ci
        || u.len() != POSITIONS * ci * co
        || bias.len() != co
    {
        return Err(KernelError::Shape(
            "the F(2x2) convolution's input, weight or bias has the wrong size",
        ));
    }
    let tiles = tile_count(n, h, w);
    let mut out = vec![0.0f32; n * h * w * co];
    if tiles == 0 {
        return Ok(out);
    }
    let mut v = vec![0.0f32; POSITIONS * tiles * ci];
    let mut m = vec![0.0f32; POSITIONS * tiles * co];
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `direct::available` checked that the CPU has AVX2 and FMA.
    unsafe {
        avx2::transform_input([n, h, w, ci], x, &mut v);
    }
    m.par_chunks_exact_mut(tiles * co)
        .zip(v.par_chunks_exact(tiles * ci))
        .zip(u.par_chunks_exact(ci * co))
        .try_for_each(|((m_k, v_k), u_k)| direct::product([tiles, ci, co], v_k, u_k, m_k))?;
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: as above.
    unsafe {
        avx2::transform_output([n, h, w, co], &m, bias, &mut out);
    }
    Ok(out)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_max_ps, _mm256_setzero_ps, _mm256_sub_ps,
    };

    use super::super::winograd::AVX2_LANES as LANES;
    use super::super::winograd::avx2::{load, store};
    use super::super::winograd::tile_edges;
    use super::{ALPHA, TILE};

    /// `Bᵀ x` for one column (or row) of an input tile.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn input_1d([x0, x1, x2, x3]: [__m256; ALPHA]) -> [__m256; ALPHA] {
        [
            _mm256_sub_ps(x0, x2),
            _mm256_add_ps(x1, x2),
            _mm256_sub_ps(x2, x1),
            _mm256_sub_ps(x1, x3),
        ]
    }

    /// `Aᵀ m` for one column (or row) of a tile of products.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn output_1d([m0, m1, m2, m3]: [__m256; ALPHA]) -> [__m256; TILE] {
        [
            _mm256_add_ps(_mm256_add_ps(m0, m1), m2),
            _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3),
        ]
    }

    /// `V = Bᵀ d B` of every tile, laid out `[16, tiles, ci]`. `ci` is a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn transform_input([n, h, w, ci]: [usize; 4], x: &[f32], v: &mut [f32]) {
        let (tiles_h, tiles_w) = (h.div_ceil(TILE), w.div_ceil(TILE));
        let tiles = n * tiles_h * tiles_w;
        let zero = _mm256_setzero_ps();
        let mut rows = [[zero; ALPHA]; ALPHA];
        for t in 0..tiles {
            let (b, ty, tx) = (t / (tiles_h * tiles_w), t / tiles_w % tiles_h, t % tiles_w);
            let image = &x[b * h * w * ci..][..h * w * ci];
            let (ys, ys_inside) = tile_edges::<ALPHA>(TILE * ty, h, w * ci);
            let (xs, xs_inside) = tile_edges::<ALPHA>(TILE * tx, w, ci);
            for c0 in (0..ci).step_by(LANES) {
                for i in 0..ALPHA {
                    let mut d = [zero; ALPHA];
                    if ys_inside >> i & 1 != 0 {
                        for j in 0..ALPHA {
                            if xs_inside >> j & 1 != 0 {
                                d[j] = load(image, ys[i] + xs[j] + c0);
                            }
                        }
                    }
                    rows[i] = input_1d(d);
                }
                #[allow(clippy::needless_range_loop)] // `j` picks a column of every row.
                for j in 0..ALPHA {
                    let column = input_1d([rows[0][j], rows[1][j], rows[2][j], rows[3][j]]);
                    for (i, value) in column.into_iter().enumerate() {
                        store(v, ((i * ALPHA + j) * tiles + t) * ci + c0, value);
                    }
                }
            }
        }
    }

    /// `Aᵀ M A` plus the bias, through `ReLU`, into the NHWC output `[n, h, w, co]`, from the
    /// products `[16, tiles, co]`. `co` is a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn transform_output(
        [n, h, w, co]: [usize; 4],
        m: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        let (tiles_h, tiles_w) = (h.div_ceil(TILE), w.div_ceil(TILE));
        let tiles = n * tiles_h * tiles_w;
        let zero = _mm256_setzero_ps();
        let mut r = [[zero; ALPHA]; TILE];
        for t in 0..tiles {
            let (b, ty, tx) = (t / (tiles_h * tiles_w), t / tiles_w % tiles_h, t % tiles_w);
            for c0 in (0..co).step_by(LANES) {
                #[allow(clippy::needless_range_loop)] // `j` picks a column of every row.
                for j in 0..ALPHA {
                    let mut column = [zero; ALPHA];
                    for (i, value) in column.iter_mut().enumerate() {
                        *value = load(m, ((i * ALPHA + j) * tiles + t) * co + c0);
                    }
                    for (i, value) in output_1d(column).into_iter().enumerate() {
                        r[i][j] = value;
                    }
                }
                let bias = load(bias, c0);
                for (i, row) in r.iter().enumerate() {
                    for (j, z) in output_1d(*row).into_iter().enumerate() {
                        let (py, px) = (TILE * ty + i, TILE * tx + j);
                        if py < h && px < w {
                            let value = _mm256_max_ps(_mm256_add_ps(z, bias), zero);
                            store(out, ((b * h + py) * w + px) * co + c0, value);
                        }
                    }
                }
            }
        }
    }
}

/// Convolution (3x3, stride 1, padding 1), bias and `ReLU` on NHWC activations with the weight
/// from [`transform_weight`]: `(x [n, h, w, ci], u [16, co / 16, ci, 16], bias [co]) ->
/// [n, h, w, co]`. Inference only: it has no backward pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv3x3BiasReluF2;

impl CustomOp3 for Conv3x3BiasReluF2 {
    fn name(&self) -> &'static str {
        "cxr-conv3x3-bias-relu-f2"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[n, h, w, ci], &[POSITIONS, blocks, u_ci, direct::PANEL]) = (xl.dims(), ul.dims())
        else {
            return Err(KernelError::Shape(
                "an F(2x2) convolution needs NHWC input and a [16, co / 16, ci, 16] weight",
            )
            .into());
        };
        let co = blocks * direct::PANEL;
        if u_ci != ci || bl.dims() != [co] {
            return Err(
                KernelError::Shape("the F(2x2) weight or bias does not match the input").into(),
            );
        }
        let y = forward(
            [n, h, w, ci, co],
            contiguous_f32(xs, xl)?,
            contiguous_f32(us, ul)?,
            contiguous_f32(bs, bl)?,
        )?;
        Ok((CpuStorage::F32(y), Shape::from_dims(&[n, h, w, co])))
    }
}
