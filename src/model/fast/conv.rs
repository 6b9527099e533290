//! 2-D convolution over NHWC activations: forward (optionally fused with a bias and `ReLU`) and both
//! gradients, each as tiles of im2col/col2im and one matrix product per tile.
//!
//! Output pixels of the whole batch form the rows of the matrix products, so a tile can span
//! images. That keeps tiles large on the small late feature maps and lets batch-1 inference use
//! both cores.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::matmul::{MatMut, MatRef, gemm};
use super::{KernelError, contiguous_f32, parts_for, vectorized};

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

    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel_h) / self.stride + 1
    }

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

    pub fn x_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }

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

    /// Pixels per tile: an im2col tile of about 256 KiB (it stays in L2), at least two tiles per
    /// thread when the layer is small, and a multiple of 16.
    fn tile_pixels(&self) -> usize {
        const TILE_FLOATS: usize = 64 * 1024;
        let pixels = self.out_pixels().max(1);
        let by_cache = (TILE_FLOATS / self.patch_len().max(1)).clamp(64, 1024);
        let by_threads = pixels.div_ceil(2 * rayon::current_num_threads());
        by_cache.min(by_threads).max(16).next_multiple_of(16)
    }
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
fn weight_to_matrix(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
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
fn forward(
    g: &ConvGeometry,
    x: &[f32],
    w_matrix: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    let (co, k) = (g.out_c, g.patch_len());
    let mut out = vec![0.0f32; g.out_pixels() * co];
    if out.is_empty() {
        return Ok(out);
    }
    let tile = g.tile_pixels();
    out.par_chunks_mut(tile * co)
        .enumerate()
        .try_for_each_init(
            || vec![0.0f32; tile * k],
            |col, (i, out_tile)| {
                let rows = out_tile.len() / co;
                let col = &mut col[..rows * k];
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
                Ok(())
            },
        )?;
    Ok(out)
}

/// The weight gradient in OIHW order: the product of the im2col patches, transposed, with the
/// output gradient, summed over the batch. The pixels are split into a fixed number of parts so
/// that the sum is reproducible from run to run.
fn grad_weight(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Result<Vec<f32>, KernelError> {
    let (co, k) = (g.out_c, g.patch_len());
    let pixels = g.out_pixels();
    let tile = g.tile_pixels().max(256).min(pixels.max(1));
    let tiles = pixels.div_ceil(tile);
    let parts = parts_for(tiles);
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let mut acc = vec![0.0f32; k * co];
            let mut col = vec![0.0f32; tile * k];
            let mut first_product = true;
            for t in (part * tiles / parts)..((part + 1) * tiles / parts) {
                let first = t * tile;
                let rows = tile.min(pixels - first);
                let col = &mut col[..rows * k];
                im2col(g, x, first, col);
                gemm(
                    k,
                    co,
                    rows,
                    &mut MatMut {
                        data: &mut acc,
                        row_stride: co,
                        col_stride: 1,
                    },
                    !first_product,
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
                first_product = false;
            }
            Ok(acc)
        })
        .collect::<Result<_, KernelError>>()?;
    let mut sum = vec![0.0f32; k * co];
    for partial in &partials {
        for (s, p) in sum.iter_mut().zip(partial) {
            *s += p;
        }
    }
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
    dx.par_chunks_mut(image_len).enumerate().try_for_each_init(
        || vec![0.0f32; tile * k],
        |col, (b, image)| {
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
        },
    )?;
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
    let dy = dy.contiguous()?;
    let dw = if w.track_op() {
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
    let dx = if x.track_op() {
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
