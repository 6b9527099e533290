//! The training block as one op: convolution, batch norm with batch statistics, `ReLU` and
//! optionally the 2x2 max pool, forward and backward.
//!
//! As separate candle ops, each intermediate (the convolution output and its gradient) would be
//! a tensor of its own, and candle's autograd would add every gradient into a fresh zero tensor.
//! Here the convolution output stays inside the op for the backward pass, its gradient never
//! becomes a tensor, and only the block input's gradient goes back to candle.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::conv::{self, ConvGeometry};
use super::norm::{self, Affine};
use super::{KernelError, contiguous_f32, with_f32};

/// What the forward pass keeps for the backward pass.
#[derive(Debug)]
pub(crate) struct Saved {
    /// The convolution output, NHWC.
    z: Vec<f32>,
    /// Its batch mean and biased variance per channel, `[means; variances]`.
    pub stats: Vec<f32>,
}

/// Convolution (OIHW weight, no bias), training batch norm, `ReLU` and, if `pool`, a 2x2 max
/// pool. Arguments: `x` NHWC, `weight` OIHW, `gamma_beta` `[2, co]`. After the forward pass,
/// `saved` holds the batch statistics for the running averages.
#[derive(Clone, Debug)]
pub(crate) struct ConvBnReluTrain {
    pub stride: usize,
    pub padding: usize,
    pub eps: f64,
    pub pool: bool,
    pub saved: Arc<Mutex<Option<Saved>>>,
}

impl ConvBnReluTrain {
    fn geometry(&self, x: &Layout, w: &Layout) -> Result<ConvGeometry, KernelError> {
        let g = ConvGeometry::new(x.dims(), w.dims(), self.stride, self.padding)?;
        if w.shape().elem_count() != g.w_len() {
            return Err(KernelError::Shape(
                "the convolution weight has the wrong size",
            ));
        }
        Ok(g)
    }
}

impl CustomOp3 for ConvBnReluTrain {
    fn name(&self) -> &'static str {
        "cxr-conv-bn-relu-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gbs: &CpuStorage,
        gbl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry(xl, wl)?;
        let x = contiguous_f32(xs, xl)?;
        let w = contiguous_f32(ws, wl)?;
        let gamma_beta = contiguous_f32(gbs, gbl)?;
        let z = conv::forward(&g, x, &conv::weight_to_matrix(&g, w), None)?;
        let (mean, var) = norm::channel_stats(&z, g.out_c)?;
        let stats: Vec<f32> = mean.iter().chain(&var).map(|&v| v as f32).collect();
        let a = Affine::new(gamma_beta, &stats, g.out_c, self.eps)?;
        let dims = (g.batch, g.out_h(), g.out_w(), g.out_c);
        let y = norm::bn_relu_forward(&z, dims, &a, self.pool)?;
        let shape = if self.pool {
            let (ph, pw) = norm::pool_dims(dims.1, dims.2)?;
            Shape::from((dims.0, ph, pw, dims.3))
        } else {
            Shape::from(dims)
        };
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(Saved { z, stats });
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gamma_beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry(x.layout(), w.layout())?;
        let saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let saved = saved
            .as_ref()
            .ok_or(KernelError::Internal("backward before forward"))?;
        let gb = gamma_beta.flatten_all()?.to_vec1::<f32>()?;
        let a = Affine::new(&gb, &saved.stats, g.out_c, self.eps)?;
        let dims = (g.batch, g.out_h(), g.out_w(), g.out_c);
        let dy = dy.contiguous()?;
        let (dz, dgb) = with_f32(&dy, |dy| {
            norm::bn_relu_backward(&saved.z, dy, dims, &a, self.pool)
        })??;
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let dw = if w.track_op() {
            let dw = with_f32(&x, |x| conv::grad_weight(&g, x, &dz))??;
            Some(Tensor::from_vec(dw, w.shape(), w.device())?)
        } else {
            None
        };
        let dx = if x.track_op() {
            let dx = with_f32(&w, |w| conv::grad_input(&g, &dz, w, true))??;
            Some(Tensor::from_vec(dx, x.shape(), x.device())?)
        } else {
            None
        };
        let dgb = gamma_beta
            .track_op()
            .then(|| Tensor::from_vec(dgb, gamma_beta.shape(), x.device()))
            .transpose()?;
        Ok((dx, dw, dgb))
    }
}
