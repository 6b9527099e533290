//! 2-D convolution over NHWC activations: forward (optionally fused with a bias and `ReLU`) and both
//! gradients, each as tiles of im2col/col2im and one matrix product per tile.
//!
//! Output pixels of the whole batch form the rows of the matrix products, so a tile can span
//! images. That keeps tiles large on the small late feature maps and lets batch-1 inference use
//! both cores; the smallest layers share out output channels instead. Wide stride-1 "same"
//! convolutions skip im2col (see [`implicit_tile`]). The input gradient of a stride-1
//! convolution is itself a convolution; other strides go through col2im.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::{MatMut, MatRef, gemm};
use super::{KernelError, contiguous_f32, vectorized};

/// Shape and hyper-parameters of one convolution, in NHWC terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    /// Reads the geometry from an NHWC input shape and an OIHW weight shape.
    pub fn new(
        x_dims: &[usize],
        w_dims: &[usize],
        stride: usize,
        padding: usize,
    ) -> Result<Self, KernelError> {
        let (&[batch, in_h, in_w, in_c], &[out_c, w_in_c, kernel_h, kernel_w]) = (x_dims, w_dims)
        else {
            return Err(KernelError::Shape(
                "a convolution needs a 4-D image batch and a 4-D weight",
            ));
        };
        if w_in_c != in_c {
            return Err(KernelError::Shape(
                "the convolution weight does not match the number of input channels",
            ));
        }
        if stride == 0 || kernel_h == 0 || kernel_w == 0 {
            return Err(KernelError::Shape(
                "a convolution needs a stride and kernel of at least 1",
            ));
        }
        if in_h + 2 * padding < kernel_h || in_w + 2 * padding < kernel_w {
            return Err(KernelError::Shape(
                "the image is smaller than the convolution kernel",
            ));
        }
        Ok(Self {
            batch,
            in_h,
            in_w,
            in_c,
            out_c,
            kernel_h,
            kernel_w,
            stride,
            padding,
        })
    }

    /// Output height.
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel_h) / self.stride + 1
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel_w) / self.stride + 1
    }

    /// Output pixels of the whole batch: the rows of the matrix products.
    pub fn out_pixels(&self) -> usize {
        self.batch * self.out_h() * self.out_w()
    }

    /// Length of one im2col row: the inner dimension of the forward product.
    pub fn patch_len(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_c
    }

    /// Floats in the input batch.
    pub fn x_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }

    /// Floats in the weight.
    pub fn w_len(&self) -> usize {
        self.out_c * self.patch_len()
    }

    /// The geometry of the input gradient of a stride-1 convolution, seen as a forward
    /// convolution of the output gradient with the flipped, transposed kernel. `None` when that
    /// rewrite does not apply.
    fn transposed_stride1(&self) -> Option<Self> {
        let fits = self.stride == 1
            && self.padding < self.kernel_h
            && self.padding < self.kernel_w
            && self.kernel_h == self.kernel_w;
        fits.then(|| Self {
            batch: self.batch,
            in_h: self.out_h(),
            in_w: self.out_w(),
            in_c: self.out_c,
            out_c: self.in_c,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride: 1,
            padding: self.kernel_h - 1 - self.padding,
        })
    }

    /// Output rows per tile when [`implicit_tile`] applies: a stride-1 convolution with an odd
    /// square kernel and "same" padding, on an image wide enough that the border columns it
    /// recomputes are few. `None` otherwise.
    fn implicit_rows_per_tile(&self) -> Option<usize> {
        let same = self.stride == 1
            && self.kernel_h == self.kernel_w
            && self.kernel_h % 2 == 1
            && 2 * self.padding + 1 == self.kernel_h;
        if !same || self.in_w < IMPLICIT_MIN_WIDTH.max(2 * self.kernel_w) {
            return None;
        }
        // About 256 output pixels per tile, and at least two tiles per thread.
        let by_size = IMPLICIT_TILE_PIXELS.div_ceil(self.in_w).max(1);
        let tiles_wanted = 2 * rayon::current_num_threads();
        let by_threads = (self.batch * self.in_h).div_ceil(tiles_wanted).max(1);
        Some(by_size.min(by_threads).min(self.in_h))
    }

    /// Pixels per tile: an im2col tile of about 256 KiB (it stays in L2), at least two tiles per
    /// thread when the layer is small, and a multiple of 48 (of the matrix kernel's 6 columns
    /// and 16 rows).
    fn tile_pixels(&self) -> usize {
        let pixels = self.out_pixels().max(1);
        let by_cache = (TILE_FLOATS / self.patch_len().max(1)).clamp(64, 1024);
        let by_threads = pixels.div_ceil(2 * rayon::current_num_threads());
        by_cache.min(by_threads).max(48).next_multiple_of(48)
    }
}

/// Layers with at most this many output pixels (in the whole batch) share out output channels
/// between threads rather than pixels.
const SMALL_LAYER_PIXELS: usize = 256;

/// Output channels per task on such layers.
const CHANNEL_BLOCK: usize = 64;

/// Floats in one im2col tile: 256 KiB, which stays in L2 next to the packed operands.
const TILE_FLOATS: usize = 64 * 1024;

/// Images narrower than this go through im2col: below it the columns that [`implicit_tile`]
/// recomputes cost more than im2col saves (measured: 15% faster at 64 columns, 4% at 32, even
/// at 16, 20% slower at 8).
const IMPLICIT_MIN_WIDTH: usize = 24;

/// Output pixels per [`implicit_tile`], rounded to whole rows.
const IMPLICIT_TILE_PIXELS: usize = 256;

/// Weight-gradient partial sums: a fixed number, whatever the number of threads, so that the
/// sum comes out the same from run to run.
const GRAD_WEIGHT_PARTS: usize = 4;

thread_local! {
    /// Each thread's im2col buffer, kept between calls so that its memory stays mapped.
    static COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's buffer of weight-gradient partial sums, likewise.
    static PARTIALS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's buffer in `slot` (contents unspecified), or on a
/// fresh buffer when that one is in use further up the stack.
fn with_buffer<R>(
    slot: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    slot.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// [`with_buffer`] on the im2col buffer.
fn with_col<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&COL, len, f)
}

/// [`with_buffer`] on the partial-sum buffer.
fn with_partials<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&PARTIALS, len, f)
}

/// Fills `col` (rows of `patch_len`) with the patches of output pixels `first..first + rows`.
/// Each row is ordered `(ky, kx, channel)`, zero where the kernel overlaps the padding.
fn im2col(g: &ConvGeometry, x: &[f32], first: usize, col: &mut [f32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let c = g.in_c;
    let row_len = g.kernel_w * c;
    let image_len = g.in_h * g.in_w * c;
    for (t, patch) in col.chunks_exact_mut(g.patch_len()).enumerate() {
        let p = first + t;
        let (b, r) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox) = (r / ow, r % ow);
        let image = &x[b * image_len..(b + 1) * image_len];
        let x0 = (ox * g.stride) as isize - g.padding as isize;
        for (ky, dst) in patch.chunks_exact_mut(row_len).enumerate() {
            let iy = (oy * g.stride + ky) as isize - g.padding as isize;
            if iy < 0 || iy >= g.in_h as isize {
                dst.fill(0.0);
                continue;
            }
            let line = &image[iy as usize * g.in_w * c..(iy as usize + 1) * g.in_w * c];
            if x0 >= 0 && x0 as usize + g.kernel_w <= g.in_w {
                let start = x0 as usize * c;
                dst.copy_from_slice(&line[start..start + row_len]);
            } else {
                for (kx, d) in dst.chunks_exact_mut(c).enumerate() {
                    let ix = x0 + kx as isize;
                    if ix < 0 || ix >= g.in_w as isize {
                        d.fill(0.0);
                    } else {
                        d.copy_from_slice(&line[ix as usize * c..(ix as usize + 1) * c]);
                    }
                }
            }
        }
    }
}

/// Adds the patch gradients in `col` (output pixels `first..`, all of image `b`) back onto the
/// input gradient of that image: the adjoint of [`im2col`].
fn col2im_add(g: &ConvGeometry, col: &[f32], first_in_image: usize, image: &mut [f32]) {
    let ow = g.out_w();
    let c = g.in_c;
    let row_len = g.kernel_w * c;
    for (t, patch) in col.chunks_exact(g.patch_len()).enumerate() {
        let r = first_in_image + t;
        let (oy, ox) = (r / ow, r % ow);
        let x0 = (ox * g.stride) as isize - g.padding as isize;
        for (ky, src) in patch.chunks_exact(row_len).enumerate() {
            let iy = (oy * g.stride + ky) as isize - g.padding as isize;
            if iy < 0 || iy >= g.in_h as isize {
                continue;
            }
            let line = &mut image[iy as usize * g.in_w * c..(iy as usize + 1) * g.in_w * c];
            for (kx, s) in src.chunks_exact(c).enumerate() {
                let ix = x0 + kx as isize;
                if ix >= 0 && ix < g.in_w as isize {
                    let d = &mut line[ix as usize * c..(ix as usize + 1) * c];
                    for (d, s) in d.iter_mut().zip(s) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// OIHW weight `[co, ci, kh, kw]` to the forward product's right-hand side `[(kh, kw, ci), co]`.
pub(crate) fn weight_to_matrix(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let (co, ci, kh, kw) = (g.out_c, g.in_c, g.kernel_h, g.kernel_w);
    let mut m = vec![0.0f32; g.w_len()];
    // Written in order; read with a stride (the weights are small next to the activations).
    for (r, row) in m.chunks_exact_mut(co).enumerate() {
        let (tap, i) = (r / ci, r % ci);
        let (ky, kx) = (tap / kw, tap % kw);
        for (o, v) in row.iter_mut().enumerate() {
            *v = w[((o * ci + i) * kh + ky) * kw + kx];
        }
    }
    m
}

/// The inverse of [`weight_to_matrix`]: a weight gradient `[(kh, kw, ci), co]` back to OIHW.
fn matrix_to_weight(g: &ConvGeometry, m: &[f32]) -> Vec<f32> {
    let (co, ci, kh, kw) = (g.out_c, g.in_c, g.kernel_h, g.kernel_w);
    let mut w = vec![0.0f32; g.w_len()];
    for o in 0..co {
        for i in 0..ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    w[((o * ci + i) * kh + ky) * kw + kx] = m[((ky * kw + kx) * ci + i) * co + o];
                }
            }
        }
    }
    w
}

/// OIHW weight to the matrix of the input-gradient convolution: the kernel flipped in both
/// directions, input and output channels swapped, `[(kh, kw, co), ci]`.
fn weight_to_flipped_matrix(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let (co, ci, kh, kw) = (g.out_c, g.in_c, g.kernel_h, g.kernel_w);
    let mut m = vec![0.0f32; g.w_len()];
    for o in 0..co {
        for i in 0..ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    let flipped = ((kh - 1 - ky) * kw + (kw - 1 - kx)) * co + o;
                    m[flipped * ci + i] = w[((o * ci + i) * kh + ky) * kw + kx];
                }
            }
        }
    }
    m
}

/// The forward convolution, NHWC in and out, with `w_matrix` from [`weight_to_matrix`].
pub(crate) fn forward(
    g: &ConvGeometry,
    x: &[f32],
    w_matrix: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    let co = g.out_c;
    let mut out = vec![0.0f32; g.out_pixels() * co];
    if out.is_empty() {
        return Ok(out);
    }
    let epilogue = |out_tile: &mut [f32]| {
        if let Some(bias) = bias {
            vectorized(
                #[inline(always)]
                || {
                    for row in out_tile.chunks_exact_mut(co) {
                        for (v, b) in row.iter_mut().zip(bias) {
                            *v = (*v + b).max(0.0);
                        }
                    }
                },
            );
        }
    };
    if let Some(rows_per_tile) = g.implicit_rows_per_tile() {
        let image_len = g.out_h() * g.out_w() * co;
        out.par_chunks_mut(image_len)
            .enumerate()
            .try_for_each(|(b, image)| {
                image
                    .par_chunks_mut(rows_per_tile * g.out_w() * co)
                    .enumerate()
                    .try_for_each(|(t, out_tile)| {
                        let first_row = t * rows_per_tile;
                        implicit_tile(g, x, w_matrix, b, first_row, out_tile)?;
                        epilogue(out_tile);
                        Ok::<(), KernelError>(())
                    })
            })?;
        return Ok(out);
    }
    let k = g.patch_len();
    let pixels = g.out_pixels();
    let threads = rayon::current_num_threads();
    if threads > 1 && pixels <= SMALL_LAYER_PIXELS && co >= 2 * CHANNEL_BLOCK {
        // Too few pixels to share out (batch-1 inference on the last feature maps): share out
        // the output channels instead, so that each thread also packs only its part of the
        // weight. The patches are gathered once, by all threads, and read by every block.
        let blocks: Vec<Vec<f32>> = with_col(pixels * k, |col| {
            let per_part = pixels.div_ceil(threads);
            col.par_chunks_mut(per_part * k)
                .enumerate()
                .for_each(|(i, part)| im2col(g, x, i * per_part, part));
            let col = &*col;
            (0..co.div_ceil(CHANNEL_BLOCK))
                .into_par_iter()
                .map(|blk| {
                    let (c0, c1) = (blk * CHANNEL_BLOCK, ((blk + 1) * CHANNEL_BLOCK).min(co));
                    let mut part = vec![0.0f32; pixels * (c1 - c0)];
                    gemm(
                        pixels,
                        c1 - c0,
                        k,
                        &mut MatMut {
                            data: &mut part,
                            row_stride: c1 - c0,
                            col_stride: 1,
                        },
                        false,
                        MatRef {
                            data: col,
                            row_stride: k,
                            col_stride: 1,
                        },
                        MatRef {
                            data: &w_matrix[c0..],
                            row_stride: co,
                            col_stride: 1,
                        },
                    )?;
                    Ok(part)
                })
                .collect::<Result<_, KernelError>>()
        })?;
        for (blk, part) in blocks.iter().enumerate() {
            let c0 = blk * CHANNEL_BLOCK;
            let width = part.len() / pixels;
            for (row, src) in out.chunks_exact_mut(co).zip(part.chunks_exact(width)) {
                row[c0..c0 + width].copy_from_slice(src);
            }
        }
        epilogue(&mut out);
        return Ok(out);
    }
    let tile = g.tile_pixels();
    out.par_chunks_mut(tile * co)
        .enumerate()
        .try_for_each(|(i, out_tile)| {
            let rows = out_tile.len() / co;
            with_col(rows * k, |col| {
                im2col(g, x, i * tile, col);
                gemm(
                    rows,
                    co,
                    k,
                    &mut MatMut {
                        data: out_tile,
                        row_stride: co,
                        col_stride: 1,
                    },
                    false,
                    MatRef {
                        data: col,
                        row_stride: k,
                        col_stride: 1,
                    },
                    MatRef {
                        data: w_matrix,
                        row_stride: co,
                        col_stride: 1,
                    },
                )?;
                epilogue(out_tile);
                Ok(())
            })
        })?;
    Ok(out)
}

/// The output pixels of one kernel row whose taps [`implicit_tile`] reads in place.
struct TapRows {
    /// The kernel row.
    ky: usize,
    /// The pixels, counted from the start of the tile.
    local: std::ops::Range<usize>,
    /// Where the first pixel's taps start in the input.
    start: usize,
}

/// For each kernel row, centre row first, the pixels of a tile of `rows` output rows from
/// `first_row` of image `b` whose taps can be read in place from an input of `x_len` floats:
/// those whose input row lies inside the image, less border pixels whose taps would start
/// before or end after the input (those are recomputed anyway).
fn tap_rows(
    g: &ConvGeometry,
    x_len: usize,
    b: usize,
    first_row: usize,
    rows: usize,
) -> Vec<TapRows> {
    let (h, w, ci) = (g.in_h, g.in_w, g.in_c);
    let (kh, pad) = (g.kernel_h, g.padding);
    let row_len = g.kernel_w * ci;
    let tile_first = (b * h + first_row) * w;
    std::iter::once(pad)
        .chain((0..kh).filter(|&ky| ky != pad))
        .filter_map(|ky| {
            // Output rows whose input row `y + ky - pad` lies inside the image.
            let y_start = first_row.max(pad.saturating_sub(ky));
            let y_end = (first_row + rows).min((h + pad).saturating_sub(ky));
            if y_start >= y_end {
                return None;
            }
            let offset = |p: usize| {
                (p as isize + (ky as isize - pad as isize) * w as isize - pad as isize)
                    * ci as isize
            };
            let (mut p_start, mut p_end) = ((b * h + y_start) * w, (b * h + y_end) * w);
            while p_start < p_end && offset(p_start) < 0 {
                p_start += 1;
            }
            while p_end > p_start && offset(p_end - 1) + row_len as isize > x_len as isize {
                p_end -= 1;
            }
            (p_start < p_end).then(|| TapRows {
                ky,
                local: p_start - tile_first..p_end - tile_first,
                start: offset(p_start) as usize,
            })
        })
        .collect()
}

/// The pixels (counted from the start of a tile of `rows` output rows) in the first and last
/// `pad` columns, where [`tap_rows`]' in-place taps wrap around to the neighbouring row.
fn border_pixels(g: &ConvGeometry, rows: usize) -> Vec<usize> {
    let w = g.in_w;
    let right = g.kernel_w - 1 - g.padding;
    (0..rows)
        .flat_map(|r| (0..g.padding).chain(w - right..w).map(move |c| r * w + c))
        .collect()
}

/// One tile of whole output rows (`first_row..`, of image `b`) of a stride-1 "same" convolution,
/// without im2col.
///
/// With NHWC activations, the `kw` taps of one kernel row are `kw * ci` consecutive floats of the
/// input, and moving one output pixel to the right moves them by `ci`. So for each kernel row
/// `ky`, the patches of consecutive output pixels are the rows of a matrix read straight from the
/// input with row stride `ci` (rows overlap), and the convolution is `kh` products accumulated
/// into the output. That is exact except in the first and last `pad` columns, where the taps
/// wrap around to the neighbouring image row instead of reading the zero padding: those pixels
/// are recomputed afterwards through im2col.
fn implicit_tile(
    g: &ConvGeometry,
    x: &[f32],
    w_matrix: &[f32],
    b: usize,
    first_row: usize,
    out_tile: &mut [f32],
) -> Result<(), KernelError> {
    let (w, ci, co) = (g.in_w, g.in_c, g.out_c);
    let rows = out_tile.len() / (w * co);
    let row_len = g.kernel_w * ci;
    // The centre kernel row comes first and covers the whole tile (but for border pixels): it
    // initialises the output.
    for (n, t) in tap_rows(g, x.len(), b, first_row, rows).iter().enumerate() {
        let m = t.local.len();
        gemm(
            m,
            co,
            row_len,
            &mut MatMut {
                data: &mut out_tile[t.local.start * co..t.local.end * co],
                row_stride: co,
                col_stride: 1,
            },
            n > 0,
            MatRef {
                data: &x[t.start..t.start + (m - 1) * ci + row_len],
                row_stride: ci,
                col_stride: 1,
            },
            MatRef {
                data: &w_matrix[t.ky * row_len * co..(t.ky + 1) * row_len * co],
                row_stride: co,
                col_stride: 1,
            },
        )?;
    }
    let image_first = b * g.in_h * w;
    // The border columns, exactly.
    let border = border_pixels(g, rows);
    let k = g.patch_len();
    with_col(border.len() * k + border.len() * co, |buf| {
        let (col, res) = buf.split_at_mut(border.len() * k);
        let tile_first = image_first + first_row * w;
        for (patch, &local) in col.chunks_exact_mut(k).zip(&border) {
            im2col(g, x, tile_first + local, patch);
        }
        gemm(
            border.len(),
            co,
            k,
            &mut MatMut {
                data: res,
                row_stride: co,
                col_stride: 1,
            },
            false,
            MatRef {
                data: col,
                row_stride: k,
                col_stride: 1,
            },
            MatRef {
                data: w_matrix,
                row_stride: co,
                col_stride: 1,
            },
        )?;
        for (r, &local) in res.chunks_exact(co).zip(&border) {
            out_tile[local * co..(local + 1) * co].copy_from_slice(r);
        }
        Ok(())
    })
}

/// The weight gradient in OIHW order: the product of the im2col patches, transposed, with the
/// output gradient, summed over the batch. The pixels are split into a fixed number of parts so
/// that the sum is reproducible from run to run.
pub(crate) fn grad_weight(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
) -> Result<Vec<f32>, KernelError> {
    if g.implicit_rows_per_tile().is_some() {
        return grad_weight_implicit(g, x, dy);
    }
    let (co, k) = (g.out_c, g.patch_len());
    let pixels = g.out_pixels();
    let tile = g.tile_pixels().max(256).min(pixels.max(1));
    let tiles = pixels.div_ceil(tile);
    let parts = tiles.clamp(1, GRAD_WEIGHT_PARTS);
    let sum = with_partials(parts * k * co, |partials| {
        partials
            .par_chunks_mut(k * co)
            .enumerate()
            .try_for_each(|(part, acc)| {
                with_col(tile * k, |col| {
                    let tiles_of_part = (part * tiles / parts)..((part + 1) * tiles / parts);
                    for (n, t) in tiles_of_part.enumerate() {
                        let first = t * tile;
                        let rows = tile.min(pixels - first);
                        let col = &mut col[..rows * k];
                        im2col(g, x, first, col);
                        gemm(
                            k,
                            co,
                            rows,
                            &mut MatMut {
                                data: acc,
                                row_stride: co,
                                col_stride: 1,
                            },
                            n > 0,
                            MatRef {
                                data: col,
                                row_stride: 1,
                                col_stride: k,
                            },
                            MatRef {
                                data: &dy[first * co..(first + rows) * co],
                                row_stride: co,
                                col_stride: 1,
                            },
                        )?;
                    }
                    Ok::<(), KernelError>(())
                })
            })?;
        let (first, rest) = partials.split_at(k * co);
        let mut sum = first.to_vec();
        for partial in rest.chunks_exact(k * co) {
            for (s, p) in sum.iter_mut().zip(partial) {
                *s += p;
            }
        }
        Ok::<_, KernelError>(sum)
    })?;
    Ok(matrix_to_weight(g, &sum))
}

/// [`grad_weight`] for the convolutions [`implicit_tile`] handles, without im2col: for each
/// kernel row, the weight gradient is the in-place patches (transposed) times the output
/// gradient; then the border pixels' wrong patches are replaced by their im2col patches, as one
/// correction product `(right - wrong)^T * dy`.
fn grad_weight_implicit(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Result<Vec<f32>, KernelError> {
    let (h, w, ci, co, k) = (g.in_h, g.in_w, g.in_c, g.out_c, g.patch_len());
    let row_len = g.kernel_w * ci;
    // Larger tiles than the forward pass: the pixels are the inner dimension here.
    let rows_per_tile = (4 * IMPLICIT_TILE_PIXELS).div_ceil(w).clamp(1, h);
    let tiles: Vec<(usize, usize, usize)> = (0..g.batch)
        .flat_map(|b| {
            (0..h)
                .step_by(rows_per_tile)
                .map(move |r| (b, r, rows_per_tile.min(h - r)))
        })
        .collect();
    let parts = tiles.len().clamp(1, GRAD_WEIGHT_PARTS);
    let sum = with_partials(parts * k * co, |partials| {
        partials
            .par_chunks_mut(k * co)
            .enumerate()
            .try_for_each(|(part, acc)| {
                acc.fill(0.0);
                for &(b, first_row, rows) in
                    &tiles[part * tiles.len() / parts..(part + 1) * tiles.len() / parts]
                {
                    let tile_first = (b * h + first_row) * w;
                    let taps = tap_rows(g, x.len(), b, first_row, rows);
                    for t in &taps {
                        let m = t.local.len();
                        gemm(
                            row_len,
                            co,
                            m,
                            &mut MatMut {
                                data: &mut acc[t.ky * row_len * co..(t.ky + 1) * row_len * co],
                                row_stride: co,
                                col_stride: 1,
                            },
                            true,
                            MatRef {
                                data: &x[t.start..t.start + (m - 1) * ci + row_len],
                                row_stride: 1,
                                col_stride: ci,
                            },
                            MatRef {
                                data: &dy[(tile_first + t.local.start) * co
                                    ..(tile_first + t.local.end) * co],
                                row_stride: co,
                                col_stride: 1,
                            },
                        )?;
                    }
                    let border = border_pixels(g, rows);
                    let nb = border.len();
                    with_col(nb * k + nb * co, |buf| {
                        let (diff, dyb) = buf.split_at_mut(nb * k);
                        for ((patch, d), &local) in diff
                            .chunks_exact_mut(k)
                            .zip(dyb.chunks_exact_mut(co))
                            .zip(&border)
                        {
                            im2col(g, x, tile_first + local, patch);
                            for t in taps.iter().filter(|t| t.local.contains(&local)) {
                                let wrong = &x[t.start + (local - t.local.start) * ci..][..row_len];
                                let right = &mut patch[t.ky * row_len..(t.ky + 1) * row_len];
                                for (r, w) in right.iter_mut().zip(wrong) {
                                    *r -= w;
                                }
                            }
                            d.copy_from_slice(&dy[(tile_first + local) * co..][..co]);
                        }
                        gemm(
                            k,
                            co,
                            nb,
                            &mut MatMut {
                                data: acc,
                                row_stride: co,
                                col_stride: 1,
                            },
                            true,
                            MatRef {
                                data: diff,
                                row_stride: 1,
                                col_stride: k,
                            },
                            MatRef {
                                data: dyb,
                                row_stride: co,
                                col_stride: 1,
                            },
                        )
                    })?;
                }
                Ok::<(), KernelError>(())
            })?;
        let (first, rest) = partials.split_at(k * co);
        let mut sum = first.to_vec();
        for partial in rest.chunks_exact(k * co) {
            for (s, p) in sum.iter_mut().zip(partial) {
                *s += p;
            }
        }
        Ok::<_, KernelError>(sum)
    })?;
    Ok(matrix_to_weight(g, &sum))
}

/// The input gradient, NHWC. A stride-1 convolution's input gradient is itself a convolution of
/// the output gradient (flipped kernel, channels swapped); other strides go through
/// column gradients and [`col2im_add`], one image per task.
pub(crate) fn grad_input(
    g: &ConvGeometry,
    dy: &[f32],
    w: &[f32],
    allow_rewrite: bool,
) -> Result<Vec<f32>, KernelError> {
    if let Some(gt) = g.transposed_stride1().filter(|_| allow_rewrite) {
        return forward(&gt, dy, &weight_to_flipped_matrix(g, w), None);
    }
    let (co, k) = (g.out_c, g.patch_len());
    let w_matrix = weight_to_matrix(g, w);
    let per_image = g.out_h() * g.out_w();
    let image_len = g.in_h * g.in_w * g.in_c;
    let mut dx = vec![0.0f32; g.x_len()];
    if dx.is_empty() || per_image == 0 {
        return Ok(dx);
    }
    let tile = g.tile_pixels().min(per_image);
    dx.par_chunks_mut(image_len)
        .enumerate()
        .try_for_each(|(b, image)| {
            with_col(tile * k, |col| {
                let mut first = 0;
                while first < per_image {
                    let rows = tile.min(per_image - first);
                    let col = &mut col[..rows * k];
                    let start = (b * per_image + first) * co;
                    gemm(
                        rows,
                        k,
                        co,
                        &mut MatMut {
                            data: col,
                            row_stride: k,
                            col_stride: 1,
                        },
                        false,
                        MatRef {
                            data: &dy[start..start + rows * co],
                            row_stride: co,
                            col_stride: 1,
                        },
                        MatRef {
                            data: &w_matrix,
                            row_stride: 1,
                            col_stride: co,
                        },
                    )?;
                    col2im_add(g, col, first, image);
                    first += rows;
                }
                Ok::<(), KernelError>(())
            })
        })?;
    Ok(dx)
}

/// Checks a weight layout and returns the geometry.
fn geometry(
    x: &Layout,
    w: &Layout,
    stride: usize,
    padding: usize,
) -> Result<ConvGeometry, KernelError> {
    let g = ConvGeometry::new(x.dims(), w.dims(), stride, padding)?;
    if w.shape().elem_count() != g.w_len() {
        return Err(KernelError::Shape(
            "the convolution weight has the wrong size",
        ));
    }
    Ok(g)
}

/// The output shape of a forward convolution.
fn out_shape(g: &ConvGeometry) -> Shape {
    Shape::from((g.batch, g.out_h(), g.out_w(), g.out_c))
}

/// Convolution of an NHWC batch `[n, h, w, ci]` with an OIHW weight `[co, ci, kh, kw]` (no bias),
/// giving `[n, oh, ow, co]`. Autograd: both gradients; the input gradient only when the input
/// needs one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2dNhwc {
    pub stride: usize,
    pub padding: usize,
}

impl CustomOp2 for Conv2dNhwc {
    fn name(&self) -> &'static str {
        "cxr-conv2d-nhwc"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geometry(xl, wl, self.stride, self.padding)?;
        let x = contiguous_f32(xs, xl)?;
        let w = contiguous_f32(ws, wl)?;
        let y = forward(&g, x, &weight_to_matrix(&g, w), None)?;
        Ok((CpuStorage::F32(y), out_shape(&g)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        conv_backward(x, w, dy, self.stride, self.padding)
    }
}

/// Convolution, per-channel bias and `ReLU` in one pass: the inference block once batch norm is
/// folded into the weight and bias. NHWC in and out, OIHW weight, bias `[co]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2dBiasReluNhwc {
    pub stride: usize,
    pub padding: usize,
}

impl CustomOp3 for Conv2dBiasReluNhwc {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bias-relu-nhwc"
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
        let g = geometry(xl, wl, self.stride, self.padding)?;
        if bl.dims() != [g.out_c] {
            return Err(
                KernelError::Shape("the convolution bias does not match its channels").into(),
            );
        }
        let x = contiguous_f32(xs, xl)?;
        let w = contiguous_f32(ws, wl)?;
        let b = contiguous_f32(bs, bl)?;
        let y = forward(&g, x, &weight_to_matrix(&g, w), Some(b))?;
        Ok((CpuStorage::F32(y), out_shape(&g)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // `ReLU` passes the gradient where its output is positive.
        let dz = (dy * y.gt(0.0)?.to_dtype(DType::F32)?)?;
        let (dx, dw) = conv_backward(x, w, &dz, self.stride, self.padding)?;
        let db = if b.track_op() {
            Some(dz.sum((0, 1, 2))?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// Both gradients of a convolution, each only if its argument needs one.
fn conv_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    conv_backward_with(x, w, dy, (stride, padding), (x.track_op(), w.track_op()))
}

/// The gradients of a convolution (OIHW weight) that `(input, weight)` in `needed` asks for.
fn conv_backward_with(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    (stride, padding): (usize, usize),
    (need_dx, need_dw): (bool, bool),
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let dy = dy.contiguous()?;
    let dw = if need_dw {
        Some(x.apply_op2_no_bwd(
            &dy,
            &ConvGradWeight {
                stride,
                padding,
                w_dims: w.dims4()?,
            },
        )?)
    } else {
        None
    };
    let dx = if need_dx {
        Some(dy.apply_op2_no_bwd(
            w,
            &ConvGradInput {
                stride,
                padding,
                x_dims: x.dims4()?,
            },
        )?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// [`Conv2dBiasReluNhwc`] with the weight already in the layout of the forward product,
/// `[(kh, kw, ci), co]`, as [`super::FoldCache`] keeps it: nothing is rearranged per call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2dBiasReluPacked {
    pub stride: usize,
    pub padding: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
}

impl Conv2dBiasReluPacked {
    fn geometry(&self, x: &Layout, w: &Layout) -> Result<ConvGeometry, KernelError> {
        let (&[_, _, _, ci], &[k, co]) = (x.dims(), w.dims()) else {
            return Err(KernelError::Shape("a packed convolution weight is 2-D"));
        };
        let g = ConvGeometry::new(
            x.dims(),
            &[co, ci, self.kernel_h, self.kernel_w],
            self.stride,
            self.padding,
        )?;
        if g.patch_len() != k {
            return Err(KernelError::Shape(
                "the packed convolution weight has the wrong size",
            ));
        }
        Ok(g)
    }

    /// The packed weight `[(kh, kw, ci), co]` as OIHW, through candle (so gradients flow).
    fn unpack_weight(&self, w: &Tensor) -> candle_core::Result<Tensor> {
        let (k, co) = w.dims2()?;
        let ci = k / (self.kernel_h * self.kernel_w);
        w.reshape((self.kernel_h, self.kernel_w, ci, co))?
            .permute((3, 2, 0, 1))?
            .contiguous()
    }
}

impl CustomOp3 for Conv2dBiasReluPacked {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bias-relu-packed"
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
        let g = self.geometry(xl, wl)?;
        if bl.dims() != [g.out_c] {
            return Err(
                KernelError::Shape("the convolution bias does not match its channels").into(),
            );
        }
        let x = contiguous_f32(xs, xl)?;
        let w = contiguous_f32(ws, wl)?;
        let b = contiguous_f32(bs, bl)?;
        let y = forward(&g, x, w, Some(b))?;
        Ok((CpuStorage::F32(y), out_shape(&g)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dz = (dy * y.gt(0.0)?.to_dtype(DType::F32)?)?;
        let oihw = self.unpack_weight(w)?;
        let (dx, dw) = conv_backward_with(
            x,
            &oihw,
            &dz,
            (self.stride, self.padding),
            (x.track_op(), w.track_op()),
        )?;
        let dw = dw
            .map(|dw| dw.permute((2, 3, 1, 0))?.reshape(w.shape()))
            .transpose()?;
        let db = if b.track_op() {
            Some(dz.sum((0, 1, 2))?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// OIHW weight `[co, ci, kh, kw]` to the packed layout `[(kh, kw, ci), co]` of
/// [`Conv2dBiasReluPacked`].
pub(crate) fn pack_weight(w: &Tensor) -> candle_core::Result<Tensor> {
    let (co, ci, kh, kw) = w.dims4()?;
    w.permute((2, 3, 1, 0))?
        .contiguous()?
        .reshape((kh * kw * ci, co))
}

/// The weight gradient as an op: `(x, dy) -> dw`.
pub(crate) struct ConvGradWeight {
    pub stride: usize,
    pub padding: usize,
    pub w_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for ConvGradWeight {
    fn name(&self) -> &'static str {
        "cxr-conv2d-nhwc-grad-weight"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (co, ci, kh, kw) = self.w_dims;
        let g = ConvGeometry::new(xl.dims(), &[co, ci, kh, kw], self.stride, self.padding)?;
        if dyl.dims() != [g.batch, g.out_h(), g.out_w(), g.out_c] {
            return Err(KernelError::Shape("the output gradient has the wrong shape").into());
        }
        let x = contiguous_f32(xs, xl)?;
        let dy = contiguous_f32(dys, dyl)?;
        let dw = grad_weight(&g, x, dy)?;
        Ok((CpuStorage::F32(dw), Shape::from(self.w_dims)))
    }
}

/// The input gradient as an op: `(dy, w) -> dx`.
pub(crate) struct ConvGradInput {
    pub stride: usize,
    pub padding: usize,
    pub x_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for ConvGradInput {
    fn name(&self) -> &'static str {
        "cxr-conv2d-nhwc-grad-input"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, h, w, c) = self.x_dims;
        let g = geometry(
            &Layout::contiguous((n, h, w, c)),
            wl,
            self.stride,
            self.padding,
        )?;
        if dyl.dims() != [g.batch, g.out_h(), g.out_w(), g.out_c] {
            return Err(KernelError::Shape("the output gradient has the wrong shape").into());
        }
        let dy = contiguous_f32(dys, dyl)?;
        let wt = contiguous_f32(ws, wl)?;
        let dx = grad_input(&g, dy, wt, true)?;
        Ok((CpuStorage::F32(dx), Shape::from(self.x_dims)))
    }
}
