//! Each fast op against stock candle on random inputs of several shapes (odd sizes, stride 2,
//! padding, batch 1, one input channel): forward and every gradient, relative error at most 1e-4
//! in `f32`, NaN never passing. Then the whole network, fast against candle.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::conv::{Conv2dNhwc, ConvGeometry};
use super::*;
use crate::model::{CnnConfig, CxrNet};

/// The tolerance of the issue: relative error in `f32`.
const TOLERANCE: f64 = 1e-4;

/// `‖a − b‖ / ‖b‖`, or infinity when the shapes differ or either holds a NaN or an infinity, so
/// that such a result can never pass.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    if a.dims() != b.dims() {
        return f64::INFINITY;
    }
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    if a.iter().chain(&b).any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

#[track_caller]
fn assert_close(what: &str, fast: &Tensor, reference: &Tensor) {
    let err = rel_err(fast, reference);
    assert!(
        err <= TOLERANCE,
        "{what}: relative error {err:e} (shapes {:?} / {:?})",
        fast.dims(),
        reference.dims()
    );
}

/// Uniform values in `[lo, hi)` from a seeded generator.
fn uniform(rng: &mut StdRng, dims: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn var(rng: &mut StdRng, dims: &[usize], lo: f32, hi: f32) -> Var {
    Var::from_tensor(&uniform(rng, dims, lo, hi)).unwrap()
}

/// `sum(y * g)` for a fixed random `g`: its gradient with respect to `y` is `g`.
fn probe(y: &Tensor, g: &Tensor) -> Tensor {
    (y * g).unwrap().sum_all().unwrap()
}

/// The gradients of `sum(got * g)` and `sum(want * g)` with respect to each of `vars` agree.
fn assert_gradients_close(
    case: &str,
    got: &Tensor,
    want: &Tensor,
    g: &Tensor,
    vars: &[(&str, &Var)],
) {
    let gw = probe(want, g).backward().unwrap();
    let gg = probe(got, g).backward().unwrap();
    for (name, v) in vars {
        assert_close(
            &format!("{case}: {name} gradient"),
            gg.get(v).unwrap(),
            gw.get(v).unwrap(),
        );
    }
}

/// The reference max pool: values as candle's `max_pool2d`, with the right gradient (candle
/// 0.11's `max_pool2d` backward scales it by a quarter).
fn reference_pool(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.dims4().unwrap();
    let (ph, pw) = (h / 2, w / 2);
    x.narrow(2, 0, 2 * ph)
        .unwrap()
        .narrow(3, 0, 2 * pw)
        .unwrap()
        .reshape((n, c, ph, 2, pw, 2))
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .max(3)
        .unwrap()
}

#[test]
fn rel_err_never_lets_nan_or_infinity_pass() {
    let good = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
    let nan = Tensor::new(&[1.0f32, f32::NAN, 3.0], &Device::Cpu).unwrap();
    let inf = Tensor::new(&[1.0f32, f32::INFINITY, 3.0], &Device::Cpu).unwrap();
    assert_eq!(rel_err(&good, &good), 0.0);
    assert!(rel_err(&nan, &good) > TOLERANCE);
    assert!(rel_err(&good, &nan) > TOLERANCE);
    assert!(rel_err(&nan, &nan) > TOLERANCE);
    assert!(rel_err(&inf, &good) > TOLERANCE);
    let close = Tensor::new(&[1.0f32, 2.0, 3.00001], &Device::Cpu).unwrap();
    assert!(rel_err(&close, &good) <= TOLERANCE);
    let far = Tensor::new(&[1.0f32, 2.0, 3.01], &Device::Cpu).unwrap();
    assert!(rel_err(&far, &good) > TOLERANCE);
}

/// `(batch, height, width, in channels, out channels, kernel, stride, padding)`.
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

const CONV_CASES: &[ConvCase] = &[
    (1, 9, 7, 1, 5, 3, 2, 1), // the stem: one channel, stride 2, odd sizes, batch 1
    (2, 11, 8, 3, 4, 3, 1, 1), // stride 1, padding 1
    (3, 6, 8, 8, 16, 3, 2, 1), // stride 2 on even sizes: the last row and column unused
    (1, 13, 13, 1, 8, 3, 1, 1), // one input channel, stride 1
    (2, 9, 7, 4, 6, 3, 2, 0), // stride 2 without padding
    (2, 6, 7, 5, 3, 3, 1, 0), // stride 1 without padding
    (1, 10, 9, 2, 3, 5, 1, 2), // a 5x5 kernel
    (2, 8, 8, 3, 4, 1, 1, 0), // a 1x1 kernel
    (3, 33, 31, 16, 32, 3, 1, 1), // many tiles spanning images
    (2, 27, 26, 4, 8, 5, 1, 2), // a wide 5x5 "same" convolution: the im2col-free path
    (1, 30, 40, 8, 16, 3, 1, 1), // batch 1, wide: the im2col-free path split in tiles of rows
    (1, 8, 7, 16, 136, 3, 1, 1), // few pixels, many channels: channels shared out between threads
];

/// A convolution written as a sum over kernel taps of strided slices times a matrix, in candle
/// operations whose gradients are right for every shape. candle 0.11's own `conv2d` backward
/// fails when height and width leave different remainders under the stride (it sizes the
/// transposed convolution's output padding from the height alone), so cases like that are checked
/// against this instead.
fn tap_sum_conv(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Tensor {
    let (n, ci, h, wd) = x.dims4().unwrap();
    let (co, _, kh, kw) = w.dims4().unwrap();
    let (oh, ow) = (
        (h + 2 * pad - kh) / stride + 1,
        (wd + 2 * pad - kw) / stride + 1,
    );
    // Pad enough that every strided slice can be reshaped to `[.., o, stride]`.
    let xp = x
        .pad_with_zeros(2, pad, pad + stride)
        .unwrap()
        .pad_with_zeros(3, pad, pad + stride)
        .unwrap();
    let mut y: Option<Tensor> = None;
    for ky in 0..kh {
        for kx in 0..kw {
            let s = xp
                .narrow(2, ky, oh * stride)
                .unwrap()
                .narrow(3, kx, ow * stride)
                .unwrap()
                .reshape((n, ci, oh, stride, ow, stride))
                .unwrap()
                .narrow(3, 0, 1)
                .unwrap()
                .narrow(5, 0, 1)
                .unwrap()
                .reshape((n, ci, oh * ow))
                .unwrap();
            let tap = w
                .narrow(2, ky, 1)
                .unwrap()
                .narrow(3, kx, 1)
                .unwrap()
                .reshape((co, ci))
                .unwrap();
            let term = tap.broadcast_matmul(&s).unwrap();
            y = Some(match y {
                Some(y) => (y + term).unwrap(),
                None => term,
            });
        }
    }
    y.unwrap().reshape((n, co, oh, ow)).unwrap()
}

/// Stock candle's convolution of NCHW `x` with OIHW `w`, plus `b`, through `ReLU`.
fn reference_conv_bias_relu(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
) -> Tensor {
    let co = b.dim(0).unwrap();
    x.conv2d(w, pad, stride, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((co, 1, 1)).unwrap())
        .unwrap()
        .relu()
        .unwrap()
}

#[test]
fn conv2d_matches_a_tap_sum_reference_where_candle_conv_backward_fails() {
    let mut rng = StdRng::seed_from_u64(10);
    for &(n, h, w, ci, co, k, stride, pad) in &[
        (3, 5, 6, 8, 16, 3, 2, 1),
        (1, 8, 7, 1, 4, 3, 2, 1),
        (2, 7, 10, 3, 5, 3, 3, 1),
        (2, 9, 7, 2, 3, 3, 1, 1),
    ] {
        let case = format!("conv n={n} {h}x{w} {ci}->{co} k={k} s={stride} p={pad}");
        let x = var(&mut rng, &[n, ci, h, w], -1.0, 1.0);
        let wt = var(&mut rng, &[co, ci, k, k], -0.5, 0.5);
        let want = tap_sum_conv(&x, &wt, stride, pad);
        let stock = x
            .as_tensor()
            .conv2d(wt.as_tensor(), pad, stride, 1, 1)
            .unwrap();
        assert_close(
            &format!("{case}: reference equals candle's conv2d"),
            &want,
            &stock,
        );
        let g = uniform(&mut rng, want.dims(), -1.0, 1.0);
        let got =
            nhwc_to_nchw(&conv2d(&nchw_to_nhwc(&x).unwrap(), &wt, stride, pad).unwrap()).unwrap();
        assert_close(&format!("{case}: output"), &got, &want);
        assert_gradients_close(&case, &got, &want, &g, &[("input", &x), ("weight", &wt)]);
    }
}

#[test]
fn conv2d_matches_candle_forward_and_both_gradients() {
    let mut rng = StdRng::seed_from_u64(1);
    for &(n, h, w, ci, co, k, stride, pad) in CONV_CASES {
        let case = format!("conv n={n} {h}x{w} {ci}->{co} k={k} s={stride} p={pad}");
        let x = var(&mut rng, &[n, ci, h, w], -1.0, 1.0);
        let wt = var(&mut rng, &[co, ci, k, k], -0.5, 0.5);
        let want = x
            .as_tensor()
            .conv2d(wt.as_tensor(), pad, stride, 1, 1)
            .unwrap();
        let g = uniform(&mut rng, want.dims(), -1.0, 1.0);
        let got =
            nhwc_to_nchw(&conv2d(&nchw_to_nhwc(&x).unwrap(), &wt, stride, pad).unwrap()).unwrap();
        assert_close(&format!("{case}: output"), &got, &want);
        assert_gradients_close(&case, &got, &want, &g, &[("input", &x), ("weight", &wt)]);
    }
}

#[test]
fn stride1_input_gradient_rewrite_matches_col2im() {
    let mut rng = StdRng::seed_from_u64(2);
    for &(n, h, w, ci, co, k, pad) in &[
        (2, 7, 5, 3, 4, 3, 1),
        (1, 6, 6, 2, 5, 3, 0),
        (2, 9, 8, 4, 2, 5, 2),
        (2, 8, 30, 3, 4, 3, 1),
    ] {
        let g = ConvGeometry::new(&[n, h, w, ci], &[co, ci, k, k], 1, pad).unwrap();
        let dy = uniform(&mut rng, &[g.out_pixels() * co], -1.0, 1.0)
            .to_vec1::<f32>()
            .unwrap();
        let wt = uniform(&mut rng, &[g.w_len()], -1.0, 1.0)
            .to_vec1::<f32>()
            .unwrap();
        let rewrite = conv::grad_input(&g, &dy, &wt, true).unwrap();
        let col2im = conv::grad_input(&g, &dy, &wt, false).unwrap();
        let t = |v: Vec<f32>| Tensor::from_vec(v, g.x_len(), &Device::Cpu).unwrap();
        assert_close("stride-1 input gradient", &t(rewrite), &t(col2im));
    }
}

#[test]
fn conv_skips_the_input_gradient_when_the_input_needs_none() {
    let mut rng = StdRng::seed_from_u64(3);
    let x = uniform(&mut rng, &[2, 6, 6, 1], -1.0, 1.0);
    let wt = var(&mut rng, &[4, 1, 3, 3], -1.0, 1.0);
    let op = Conv2dNhwc {
        stride: 2,
        padding: 1,
    };
    let y = conv2d(&x, &wt, 2, 1).unwrap();
    let dy = y.ones_like().unwrap();
    let (dx, dw) = candle_core::CustomOp2::bwd(&op, &x, &wt, &y, &dy).unwrap();
    assert!(dx.is_none(), "the network input needs no gradient");
    assert_eq!(dw.unwrap().dims(), &[4, 1, 3, 3]);
    let xv = Var::from_tensor(&x).unwrap();
    let (dx, _) = candle_core::CustomOp2::bwd(&op, &xv, &wt, &y, &dy).unwrap();
    assert_eq!(dx.unwrap().dims(), &[2, 6, 6, 1]);
}

#[test]
fn conv2d_bias_relu_matches_candle() {
    let mut rng = StdRng::seed_from_u64(4);
    for &(n, h, w, ci, co, k, stride, pad) in CONV_CASES {
        let case = format!("conv+bias+relu n={n} {h}x{w} {ci}->{co} s={stride} p={pad}");
        let x = var(&mut rng, &[n, ci, h, w], -1.0, 1.0);
        let wt = var(&mut rng, &[co, ci, k, k], -0.5, 0.5);
        let b = var(&mut rng, &[co], -0.3, 0.3);
        let want = reference_conv_bias_relu(&x, &wt, &b, stride, pad);
        let got = conv2d_bias_relu(&nchw_to_nhwc(&x).unwrap(), &wt, &b, stride, pad).unwrap();
        let got = nhwc_to_nchw(&got).unwrap();
        assert_close(&format!("{case}: output"), &got, &want);
        let g = uniform(&mut rng, want.dims(), -1.0, 1.0);
        assert_gradients_close(
            &case,
            &got,
            &want,
            &g,
            &[("input", &x), ("weight", &wt), ("bias", &b)],
        );
    }
}

/// `(batch, height, width, channels)`.
const BN_CASES: &[(usize, usize, usize, usize)] = &[
    (2, 5, 7, 3),
    (1, 9, 9, 8),
    (4, 6, 4, 16),
    (3, 8, 10, 1),
    (2, 33, 17, 32),
];

/// A candle batch norm with random running statistics, and its affine parameters as variables.
fn random_bn(rng: &mut StdRng, c: usize) -> (BatchNorm, Var, Var) {
    let gamma = var(rng, &[c], 0.5, 1.5);
    let beta = var(rng, &[c], -0.5, 0.5);
    let bn = BatchNorm::new(
        c,
        uniform(rng, &[c], -0.2, 0.2),
        uniform(rng, &[c], 0.5, 1.5),
        gamma.as_tensor().clone(),
        beta.as_tensor().clone(),
        1e-5,
    )
    .unwrap();
    (bn, gamma, beta)
}

#[test]
fn batch_norm_relu_train_matches_candle_with_and_without_pool() {
    let mut rng = StdRng::seed_from_u64(5);
    for &(n, h, w, c) in BN_CASES {
        for pool in [false, true] {
            let case = format!("bn+relu pool={pool} n={n} {h}x{w}x{c}");
            // A mean far from zero checks the shifted sums of the batch statistics.
            let x = Var::from_tensor(
                &(uniform(&mut rng, &[n, c, h, w], -1.0, 1.0)
                    .affine(2.0, 3.0)
                    .unwrap()),
            )
            .unwrap();
            let (bn, gamma, beta) = random_bn(&mut rng, c);
            let want = bn.forward_train(&x).unwrap().relu().unwrap();
            let want = if pool { reference_pool(&want) } else { want };
            let (got, stats) =
                batch_norm_relu_train(&nchw_to_nhwc(&x).unwrap(), &gamma, &beta, 1e-5, pool)
                    .unwrap();
            let got = nhwc_to_nchw(&got).unwrap();
            assert_close(&format!("{case}: output"), &got, &want);
            let mean = x.as_tensor().mean((0, 2, 3)).unwrap();
            let centred = x
                .as_tensor()
                .broadcast_sub(&mean.reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            let var_ = centred.sqr().unwrap().mean((0, 2, 3)).unwrap();
            assert_close(
                &format!("{case}: batch mean"),
                &stats.get(0).unwrap(),
                &mean,
            );
            assert_close(
                &format!("{case}: batch variance"),
                &stats.get(1).unwrap(),
                &var_,
            );
            let g = uniform(&mut rng, want.dims(), -1.0, 1.0);
            assert_gradients_close(
                &case,
                &got,
                &want,
                &g,
                &[("input", &x), ("gamma", &gamma), ("beta", &beta)],
            );
        }
    }
}

#[test]
fn max_pool_matches_candle_values_and_the_right_gradient() {
    let mut rng = StdRng::seed_from_u64(6);
    for &(n, h, w, c) in &[(1, 4, 4, 1), (2, 5, 7, 3), (3, 9, 6, 16), (1, 2, 3, 8)] {
        let case = format!("max pool n={n} {h}x{w}x{c}");
        let x = var(&mut rng, &[n, c, h, w], -1.0, 1.0);
        let stock = x.as_tensor().max_pool2d(2).unwrap();
        let want = reference_pool(&x);
        assert_close(
            &format!("{case}: reference equals max_pool2d"),
            &want,
            &stock,
        );
        let got = nhwc_to_nchw(&max_pool2x2(&nchw_to_nhwc(&x).unwrap()).unwrap()).unwrap();
        assert_close(&format!("{case}: output"), &got, &want);
        let g = uniform(&mut rng, want.dims(), -1.0, 1.0);
        assert_gradients_close(&case, &got, &want, &g, &[("input", &x)]);
    }
}

/// A conv (bias-free, OIHW variable weight) and batch norm pair built like `CxrNet`'s blocks.
fn block(
    rng: &mut StdRng,
    ci: usize,
    co: usize,
    stride: usize,
) -> (Conv2d, Var, BatchNorm, Var, Var) {
    let wt = var(rng, &[co, ci, 3, 3], -0.4, 0.4);
    let cfg = Conv2dConfig {
        stride,
        padding: 1,
        ..Default::default()
    };
    let conv = Conv2d::new(wt.as_tensor().clone(), None, cfg);
    let (bn, gamma, beta) = random_bn(rng, co);
    (conv, wt, bn, gamma, beta)
}

#[test]
fn conv_bn_relu_block_matches_candle_in_training_and_inference() {
    let mut rng = StdRng::seed_from_u64(7);
    for &(n, h, w, ci, co, stride, pool) in &[
        (2, 9, 11, 1, 8, 2, false),
        (3, 10, 7, 4, 8, 1, true),
        (1, 12, 12, 8, 16, 1, true),
    ] {
        let case = format!("block n={n} {h}x{w} {ci}->{co} s={stride} pool={pool}");
        let x = var(&mut rng, &[n, ci, h, w], -1.0, 1.0);
        let (conv, wt, bn_fast, gamma, beta) = block(&mut rng, ci, co, stride);
        // The reference gets its own running statistics, equal to the fast block's.
        let bn_ref = BatchNorm::new(
            co,
            bn_fast.running_mean().copy().unwrap(),
            bn_fast.running_var().copy().unwrap(),
            gamma.as_tensor().clone(),
            beta.as_tensor().clone(),
            1e-5,
        )
        .unwrap();
        for train in [true, false] {
            let case = format!("{case} train={train}");
            let z = candle_nn::Module::forward(&conv, &x).unwrap();
            let want = candle_nn::ModuleT::forward_t(&bn_ref, &z, train)
                .unwrap()
                .relu()
                .unwrap();
            let want = if pool { reference_pool(&want) } else { want };
            let got = conv_bn_relu(
                &nchw_to_nhwc(&x).unwrap(),
                &conv,
                &bn_fast,
                train,
                pool,
                &FoldCache::new(),
            )
            .unwrap();
            let got = nhwc_to_nchw(&got).unwrap();
            assert_close(&format!("{case}: output"), &got, &want);
            assert_close(
                &format!("{case}: running mean"),
                bn_fast.running_mean(),
                bn_ref.running_mean(),
            );
            assert_close(
                &format!("{case}: running var"),
                bn_fast.running_var(),
                bn_ref.running_var(),
            );
            let g = uniform(&mut rng, want.dims(), -1.0, 1.0);
            assert_gradients_close(
                &case,
                &got,
                &want,
                &g,
                &[
                    ("input", &x),
                    ("weight", &wt),
                    ("gamma", &gamma),
                    ("beta", &beta),
                ],
            );
        }
        // Training moved the running statistics away from where they started.
        assert!(
            rel_err(
                bn_fast.running_mean(),
                &Tensor::zeros(co, DType::F32, &Device::Cpu).unwrap()
            ) > 0.0
        );
    }
}

#[test]
fn backend_parses_its_environment_values() {
    assert_eq!(Backend::from_env_value(None).unwrap(), Backend::Fast);
    assert_eq!(
        Backend::from_env_value(Some("fast")).unwrap(),
        Backend::Fast
    );
    assert_eq!(
        Backend::from_env_value(Some(" Candle ")).unwrap(),
        Backend::Candle
    );
    let err = Backend::from_env_value(Some("onnx")).unwrap_err();
    assert!(err.to_string().contains("CXR_TRIAGE_KERNELS"), "{err}");
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    assert!(Backend::Fast.is_fast_for(&t));
    assert!(!Backend::Candle.is_fast_for(&t));
    assert!(!Backend::Fast.is_fast_for(&t.to_dtype(DType::F64).unwrap()));
}

/// Two copies of the same network, one per backend, with the same seeded parameters.
fn twin_networks(cfg: &CnnConfig, seed: u64) -> (CxrNet, VarMap, CxrNet, VarMap) {
    let dev = Device::Cpu;
    let map_fast = VarMap::new();
    let map_ref = VarMap::new();
    let fast = CxrNet::new(cfg, &VarBuilder::from_varmap(&map_fast, DType::F32, &dev)).unwrap();
    let reference = CxrNet::new(cfg, &VarBuilder::from_varmap(&map_ref, DType::F32, &dev)).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let fast_vars: BTreeMap<String, Var> = map_fast
        .data()
        .lock()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
    let ref_vars = map_ref.data().lock().unwrap().clone();
    for (name, v) in &fast_vars {
        let dims = v.dims().to_vec();
        let value = if name.ends_with("conv.weight") {
            let fan_in = (dims[1] * dims[2] * dims[3]) as f32;
            let bound = (6.0 / fan_in).sqrt();
            uniform(&mut rng, &dims, -bound, bound)
        } else if name.ends_with("running_var") || name.ends_with("bn.weight") {
            uniform(&mut rng, &dims, 0.5, 1.5)
        } else {
            uniform(&mut rng, &dims, -0.3, 0.3)
        };
        v.set(&value).unwrap();
        ref_vars[name].set(&value).unwrap();
    }
    (
        fast.with_backend(Backend::Fast),
        map_fast,
        reference.with_backend(Backend::Candle),
        map_ref,
    )
}

fn sorted_vars(map: &VarMap) -> BTreeMap<String, Var> {
    map.data().lock().unwrap().clone().into_iter().collect()
}

#[test]
fn whole_network_matches_candle_logits_gradients_and_running_stats() {
    // An odd input size exercises the odd feature maps of every pool.
    let cfg = CnnConfig {
        input_size: 37,
        widths: vec![8, 8, 16, 16],
        dropout: 0.0,
    };
    let (fast, map_fast, reference, map_ref) = twin_networks(&cfg, 8);
    let mut rng = StdRng::seed_from_u64(9);
    let xs = uniform(&mut rng, &[3, 1, 37, 37], -1.0, 1.0);
    let targets = uniform(&mut rng, &[3], 0.0, 1.0);

    let got = fast.forward_t(&xs, true).unwrap();
    let want = reference.forward_t(&xs, true).unwrap();
    assert_close("training logits", &got, &want);
    let loss = |logits: &Tensor| {
        candle_nn::loss::binary_cross_entropy_with_logit(logits, &targets).unwrap()
    };
    let grads_fast = loss(&got).backward().unwrap();
    let grads_ref = loss(&want).backward().unwrap();
    let (vars_fast, vars_ref) = (sorted_vars(&map_fast), sorted_vars(&map_ref));
    let mut compared = 0;
    for (name, v) in &vars_fast {
        let r = &vars_ref[name];
        if name.contains("running") {
            assert!(
                grads_fast.get(v).is_none() && grads_ref.get(r).is_none(),
                "{name} has a gradient"
            );
            assert_close(
                &format!("{name} after a training step"),
                v.as_tensor(),
                r.as_tensor(),
            );
        } else {
            assert_close(
                &format!("gradient of {name}"),
                grads_fast.get(v).unwrap(),
                grads_ref.get(r).unwrap(),
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 7 * 3 + 2, "every conv, bn and head parameter");

    let got = fast.forward_t(&xs, false).unwrap();
    let want = reference.forward_t(&xs, false).unwrap();
    assert_close("inference logits", &got, &want);
    let got = fast.forward_with_features(&xs).unwrap();
    let want = reference.forward_with_features(&xs).unwrap();
    assert_eq!(got.features.dims(), &[3, 16, 4, 4]);
    assert_close("inference features", &got.features, &want.features);
}

#[test]
fn inference_with_fixed_weights_folds_once_and_refolds_after_training() {
    let mut rng = StdRng::seed_from_u64(11);
    let (n, h, w, ci, co) = (2, 9, 8, 3, 6);
    // Plain tensors, as loaded from a checkpoint: the fold is cached.
    let wt = uniform(&mut rng, &[co, ci, 3, 3], -0.4, 0.4);
    let conv = Conv2d::new(
        wt.clone(),
        None,
        Conv2dConfig {
            padding: 1,
            ..Default::default()
        },
    );
    let (gamma, beta) = (
        uniform(&mut rng, &[co], 0.5, 1.5),
        uniform(&mut rng, &[co], -0.5, 0.5),
    );
    let stats = || {
        (
            uniform(&mut StdRng::seed_from_u64(12), &[co], -0.2, 0.2),
            uniform(&mut StdRng::seed_from_u64(13), &[co], 0.5, 1.5),
        )
    };
    let (rm, rv) = stats();
    let bn = BatchNorm::new(co, rm, rv, gamma.clone(), beta.clone(), 1e-5).unwrap();
    let (rm, rv) = stats();
    let bn_ref = BatchNorm::new(co, rm, rv, gamma, beta, 1e-5).unwrap();
    let cache = FoldCache::new();
    let x = var(&mut rng, &[n, ci, h, w], -1.0, 1.0);
    let reference = |train: bool| {
        let z = candle_nn::Module::forward(&conv, &x).unwrap();
        candle_nn::ModuleT::forward_t(&bn_ref, &z, train)
            .unwrap()
            .relu()
            .unwrap()
    };
    let fast = |train: bool| {
        let y = conv_bn_relu(&nchw_to_nhwc(&x).unwrap(), &conv, &bn, train, false, &cache).unwrap();
        nhwc_to_nchw(&y).unwrap()
    };
    let first = fast(false);
    assert!(
        cache.folded.lock().unwrap().is_some(),
        "fixed weights are folded once"
    );
    assert_close("first inference", &first, &reference(false));
    assert_close("cached inference", &fast(false), &reference(false));
    // The input gradient goes through the cached, packed weight too.
    let g = uniform(&mut rng, first.dims(), -1.0, 1.0);
    assert_gradients_close(
        "through the cache",
        &fast(false),
        &reference(false),
        &g,
        &[("input", &x)],
    );
    // Training changes the running statistics: the fold must follow.
    assert_close("training", &fast(true), &reference(true));
    assert!(
        cache.folded.lock().unwrap().is_none(),
        "training clears the fold"
    );
    assert_close("inference after training", &fast(false), &reference(false));
}

#[test]
fn a_block_alone_takes_and_gives_nchw_with_either_backend() {
    let cfg = CnnConfig {
        input_size: 20,
        widths: vec![8, 8, 16],
        dropout: 0.0,
    };
    let (fast, _, reference, _) = twin_networks(&cfg, 14);
    let x = uniform(&mut StdRng::seed_from_u64(15), &[2, 8, 10, 10], -1.0, 1.0);
    for train in [false, true] {
        let got = fast.stages()[1][0].forward_t(&x, train).unwrap();
        let want = reference.stages()[1][0].forward_t(&x, train).unwrap();
        assert_eq!(got.dims(), &[2, 8, 10, 10]);
        assert_close(&format!("block alone, train={train}"), &got, &want);
    }
}

#[test]
fn training_gradients_are_the_same_from_run_to_run() {
    let cfg = CnnConfig {
        input_size: 40,
        widths: vec![8, 16, 32],
        dropout: 0.0,
    };
    let run = || {
        let (fast, map, _, _) = twin_networks(&cfg, 16);
        let xs = uniform(&mut StdRng::seed_from_u64(17), &[5, 1, 40, 40], -1.0, 1.0);
        let grads = fast
            .forward_t(&xs, true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        sorted_vars(&map)
            .into_iter()
            .filter_map(|(name, v)| {
                grads
                    .get(&v)
                    .map(|g| (name, g.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            })
            .collect::<Vec<_>>()
    };
    let (first, second) = (run(), run());
    assert_eq!(first.len(), 5 * 3 + 2);
    assert_eq!(first, second, "bit-identical gradients");
}

#[test]
fn winograd_convolution_matches_candle() {
    let mut rng = StdRng::seed_from_u64(11);
    // (batch, height, width, in, out): odd sizes, one pixel, batch 1, channels not a multiple of 8
    // nor of the transforms' channel block, tiles that stick out of the image; each with and
    // without the fused 2x2 max pool (where the image has a 2x2 window). With panels on a CPU
    // where they apply, channels in whole registers of 8 run the AVX2 transforms, the others
    // (36 -> 32) the portable ones.
    for &(n, h, w, ci, co) in &[
        (1, 7, 9, 32, 8),
        (2, 7, 6, 36, 32),
        (3, 8, 8, 33, 40),
        (2, 1, 1, 32, 5),
        (1, 16, 16, 64, 128),
        (2, 5, 2, 48, 16),
        (1, 64, 64, 32, 32),
        (5, 6, 10, 70, 67),
        (4, 8, 8, 128, 256),
        (3, 13, 11, 32, 32),
    ] {
        let x = uniform(&mut rng, &[n, ci, h, w], -1.0, 1.0);
        let wt = uniform(&mut rng, &[co, ci, 3, 3], -0.5, 0.5);
        let b = uniform(&mut rng, &[co], -0.3, 0.3);
        let want = reference_conv_bias_relu(&x, &wt, &b, 1, 1);
        let u = winograd::transform_weight(&wt.flatten_all().unwrap().to_vec1().unwrap(), co, ci)
            .unwrap();
        let u = Tensor::from_vec(u, (winograd::POSITIONS, ci, co), &Device::Cpu).unwrap();
        for pool in [false, true] {
            if pool && (h < 2 || w < 2) {
                continue;
            }
            let case = format!("winograd n={n} {h}x{w} {ci}->{co} pool={pool}");
            let got = nchw_to_nhwc(&x)
                .unwrap()
                .apply_op3(&u, &b, winograd::Conv3x3BiasReluWinograd { pool })
                .unwrap();
            let want = if pool {
                reference_pool(&want)
            } else {
                want.clone()
            };
            assert_close(&case, &nhwc_to_nchw(&got).unwrap(), &want);
            if direct::applies(co) {
                let flat = u.flatten_all().unwrap().to_vec1().unwrap();
                let panels = Tensor::from_vec(
                    winograd::panels(&flat, ci, co).unwrap(),
                    (winograd::POSITIONS, co / direct::PANEL, ci, direct::PANEL),
                    &Device::Cpu,
                )
                .unwrap();
                let got = nchw_to_nhwc(&x)
                    .unwrap()
                    .apply_op3(&panels, &b, winograd::Conv3x3BiasReluWinograd { pool })
                    .unwrap();
                assert_close(
                    &format!("{case} with panels"),
                    &nhwc_to_nchw(&got).unwrap(),
                    &want,
                );
            }
        }
    }
}

#[test]
fn winograd_refuses_a_pool_without_a_window() {
    let x = Tensor::zeros((1, 1, 5, 32), DType::F32, &Device::Cpu).unwrap();
    let u = Tensor::zeros((winograd::POSITIONS, 32, 4), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let got = x.apply_op3(&u, &b, winograd::Conv3x3BiasReluWinograd { pool: true });
    assert!(got.is_err(), "a 1-pixel-high image has no 2x2 window");
    let got = x
        .apply_op3(&u, &b, winograd::Conv3x3BiasReluWinograd { pool: false })
        .unwrap();
    assert_eq!(got.dims(), [1, 1, 5, 4]);
}

/// A block with fixed random weights, as loaded from a checkpoint: a 3x3 convolution (padding 1,
/// weights in `±weight_range`) and a batch norm with running statistics.
fn fixed_block(
    rng: &mut StdRng,
    ci: usize,
    co: usize,
    stride: usize,
    weight_range: f32,
) -> (Conv2d, BatchNorm) {
    let conv = Conv2d::new(
        uniform(rng, &[co, ci, 3, 3], -weight_range, weight_range),
        None,
        Conv2dConfig {
            padding: 1,
            stride,
            ..Default::default()
        },
    );
    let bn = BatchNorm::new(
        co,
        uniform(rng, &[co], -0.2, 0.2),
        uniform(rng, &[co], 0.5, 1.5),
        uniform(rng, &[co], 0.5, 1.5),
        uniform(rng, &[co], -0.5, 0.5),
        1e-5,
    )
    .unwrap();
    (conv, bn)
}

/// Stock candle's inference block on NCHW `x`: convolution, batch norm, `ReLU`.
fn reference_block(conv: &Conv2d, bn: &BatchNorm, x: &Tensor) -> Tensor {
    let z = candle_nn::Module::forward(conv, x).unwrap();
    candle_nn::ModuleT::forward_t(bn, &z, false)
        .unwrap()
        .relu()
        .unwrap()
}

#[test]
fn inference_blocks_with_fixed_weights_run_winograd_with_enough_tiles_and_match_candle() {
    let mut rng = StdRng::seed_from_u64(12);
    // (batch, height, width, in, out, pool, runs as Winograd F(4x4)): 36, 48, 4, 12, 16 and 1
    // tiles of 4x4; 16 are enough where the weights are in panels for our own kernel. Of the
    // others, those with 16 or more tiles of 2x2 (16, 40) run as F(2x2) where the panels apply.
    for &(n, h, w, ci, co, pool, winograd) in &[
        (6, 9, 7, 32, 16, true, true),
        (3, 16, 16, 64, 32, true, true),
        (1, 8, 8, 64, 64, false, false),
        (2, 9, 7, 32, 16, true, false),
        (1, 16, 16, 64, 128, false, direct::applies(128)),
        (1, 4, 4, 32, 32, false, false),
    ] {
        let case = format!("fixed block n={n} {h}x{w} {ci}->{co} pool={pool}");
        let x = uniform(&mut rng, &[n, ci, h, w], -1.0, 1.0);
        let (conv, bn) = fixed_block(&mut rng, ci, co, 1, 0.3);
        let want = reference_block(&conv, &bn, &x);
        let want = if pool { reference_pool(&want) } else { want };
        let cache = FoldCache::new();
        let xs = nchw_to_nhwc(&x).unwrap();
        // Twice: the second call uses the cached transformed weight.
        for call in 0..2 {
            let got = conv_bn_relu(&xs, &conv, &bn, false, pool, &cache).unwrap();
            assert_close(
                &format!("{case} call {call}"),
                &nhwc_to_nchw(&got).unwrap(),
                &want,
            );
        }
        let dims = |slot: &Mutex<Option<(Tensor, Tensor)>>| {
            slot.lock()
                .unwrap()
                .as_ref()
                .map(|(u, _)| u.dims().to_vec())
        };
        let (transformed, transformed2) = (dims(&cache.winograd), dims(&cache.winograd2));
        let folded = cache.folded.lock().unwrap().is_some();
        let panels = dims(&cache.panels);
        let f2 = !winograd
            && winograd2::applies(ci, co)
            && winograd2::tile_count(n, h, w) >= WINOGRAD2_MIN_TILES;
        if winograd {
            let layout = if direct::applies(co) {
                vec![winograd::POSITIONS, co / direct::PANEL, ci, direct::PANEL]
            } else {
                vec![winograd::POSITIONS, ci, co]
            };
            assert_eq!(
                transformed,
                Some(layout),
                "{case}: the transformed weight is cached"
            );
            assert!(
                !folded && panels.is_none() && transformed2.is_none(),
                "{case}: the other convolutions' weights are not made"
            );
        } else if f2 {
            assert_eq!(
                transformed2,
                Some(vec![
                    winograd2::POSITIONS,
                    co / direct::PANEL,
                    ci,
                    direct::PANEL
                ]),
                "{case}: the F(2x2) weight is cached"
            );
            assert!(
                !folded && panels.is_none() && transformed.is_none(),
                "{case}: the other convolutions' weights are not made"
            );
        } else {
            assert_eq!(transformed, None, "{case}: too few tiles for Winograd");
            assert_eq!(transformed2, None, "{case}: too few tiles for F(2x2)");
            if direct::applies(co) {
                assert_eq!(
                    panels,
                    Some(vec![co / direct::PANEL, 9 * ci, direct::PANEL]),
                    "{case}: the direct convolution's panels are cached"
                );
                assert!(!folded, "{case}: the unpanelled weight is not made");
            } else {
                assert!(
                    folded && panels.is_none(),
                    "{case}: the direct convolution's folded weight is cached"
                );
            }
        }
    }
}

#[test]
fn winograd_f2_convolution_matches_candle() {
    if !winograd2::applies(8, direct::PANEL) {
        println!("skipped: F(2x2) runs only with AVX2 and FMA and no AVX-512");
        return;
    }
    let mut rng = StdRng::seed_from_u64(15);
    // (batch, height, width, in, out): the 8x8 layers at batch 1 and 2, odd sizes, one pixel,
    // a single row, tiles that stick out of the image.
    for &(n, h, w, ci, co) in &[
        (1, 8, 8, 128, 256),
        (2, 8, 8, 256, 256),
        (1, 7, 9, 32, 16),
        (3, 5, 2, 40, 32),
        (2, 1, 1, 8, 16),
        (1, 1, 6, 64, 48),
    ] {
        let case = format!("F(2x2) n={n} {h}x{w} {ci}->{co}");
        let x = uniform(&mut rng, &[n, ci, h, w], -1.0, 1.0);
        let wt = uniform(&mut rng, &[co, ci, 3, 3], -0.5, 0.5);
        let b = uniform(&mut rng, &[co], -0.3, 0.3);
        let want = reference_conv_bias_relu(&x, &wt, &b, 1, 1);
        let u = winograd2::transform_weight(&wt.flatten_all().unwrap().to_vec1().unwrap(), co, ci)
            .unwrap();
        let u = Tensor::from_vec(
            u,
            (winograd2::POSITIONS, co / direct::PANEL, ci, direct::PANEL),
            &Device::Cpu,
        )
        .unwrap();
        let got = nchw_to_nhwc(&x)
            .unwrap()
            .apply_op3(&u, &b, winograd2::Conv3x3BiasReluF2)
            .unwrap();
        assert_close(&case, &nhwc_to_nchw(&got).unwrap(), &want);
    }
}

#[test]
fn winograd_f2_refuses_channels_it_cannot_run() {
    // Output channels that are not whole panels, input channels that are not whole registers.
    assert!(!winograd2::applies(8, 24));
    assert!(!winograd2::applies(12, 16));
    assert!(!winograd2::applies(0, 16));
    assert!(winograd2::transform_weight(&[0.0; 9 * 8 * 24], 24, 8).is_err());
    let x = Tensor::zeros((1, 4, 4, 12), DType::F32, &Device::Cpu).unwrap();
    let u = Tensor::zeros((winograd2::POSITIONS, 1, 12, 16), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap();
    assert!(
        x.apply_op3(&u, &b, winograd2::Conv3x3BiasReluF2).is_err(),
        "12 input channels are not whole registers of 8"
    );
}

#[test]
fn one_channel_inference_blocks_match_candle() {
    let mut rng = StdRng::seed_from_u64(13);
    // (batch, height, width, out, stride): the stem's shape, odd sizes, one pixel, batch 1.
    for &(n, h, w, co, stride) in &[
        (2, 32, 32, 32, 2),
        (3, 13, 9, 5, 2),
        (1, 7, 11, 16, 1),
        (1, 1, 1, 4, 2),
    ] {
        let case = format!("one-channel block n={n} {h}x{w} 1->{co} stride {stride}");
        let x = uniform(&mut rng, &[n, 1, h, w], -1.0, 1.0);
        let (conv, bn) = fixed_block(&mut rng, 1, co, stride, 0.5);
        let want = reference_block(&conv, &bn, &x);
        let got = conv_bn_relu(
            &nchw_to_nhwc(&x).unwrap(),
            &conv,
            &bn,
            false,
            false,
            &FoldCache::new(),
        )
        .unwrap();
        assert_close(&case, &nhwc_to_nchw(&got).unwrap(), &want);
    }
}

#[test]
fn panel_convolution_matches_candle() {
    if !direct::available() {
        println!(
            "skipped: this CPU runs the gemm direct convolution (AVX-512, or no AVX2 and FMA)"
        );
        return;
    }
    let mut rng = StdRng::seed_from_u64(14);
    // (batch, height, width, in, out, stride, padding, kernel): the network's direct layers
    // (stem, 16x16 and 8x8 at batch 1 and 2), pixel counts that are not a multiple of the
    // 6-pixel tile, fewer pixels than a tile, one channel in, no padding, a 1x1 kernel.
    for &(n, h, w, ci, co, stride, padding, kernel) in &[
        (1, 128, 128, 1, 32, 2, 1, 3),
        (1, 16, 16, 64, 128, 1, 1, 3),
        (2, 8, 8, 256, 256, 1, 1, 3),
        (1, 7, 5, 33, 16, 1, 1, 3),
        (3, 2, 1, 8, 48, 1, 1, 3),
        (2, 9, 11, 3, 32, 2, 0, 3),
        (1, 5, 6, 20, 16, 1, 0, 1),
    ] {
        let case = format!("panels n={n} {h}x{w} {ci}->{co} s{stride} p{padding} k{kernel}");
        let x = uniform(&mut rng, &[n, ci, h, w], -1.0, 1.0);
        let wt = uniform(&mut rng, &[co, ci, kernel, kernel], -0.5, 0.5);
        let b = uniform(&mut rng, &[co], -0.3, 0.3);
        let want = reference_conv_bias_relu(&x, &wt, &b, stride, padding);
        let k = kernel * kernel * ci;
        let panels = direct::pack_panels(
            &wt.flatten_all().unwrap().to_vec1().unwrap(),
            [co, ci, kernel, kernel],
        )
        .unwrap();
        let panels =
            Tensor::from_vec(panels, (co / direct::PANEL, k, direct::PANEL), &Device::Cpu).unwrap();
        let op = direct::Conv2dBiasReluPanels {
            stride,
            padding,
            kernel_h: kernel,
            kernel_w: kernel,
        };
        let got = nchw_to_nhwc(&x)
            .unwrap()
            .apply_op3(&panels, &b, op)
            .unwrap();
        assert_close(&case, &nhwc_to_nchw(&got).unwrap(), &want);
    }
}

#[test]
fn a_panel_convolution_without_input_channels_gives_the_bias_through_relu() {
    if !direct::available() {
        println!(
            "skipped: this CPU runs the gemm direct convolution (AVX-512, or no AVX2 and FMA)"
        );
        return;
    }
    let x = Tensor::zeros((1, 2, 3, 0), DType::F32, &Device::Cpu).unwrap();
    let panels = Tensor::zeros((1, 0, direct::PANEL), DType::F32, &Device::Cpu).unwrap();
    let bias: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
    let b = Tensor::from_slice(&bias, 16, &Device::Cpu).unwrap();
    let op = direct::Conv2dBiasReluPanels {
        stride: 1,
        padding: 1,
        kernel_h: 3,
        kernel_w: 3,
    };
    let got = x.apply_op3(&panels, &b, op).unwrap();
    assert_eq!(got.dims(), [1, 2, 3, 16]);
    let want: Vec<f32> = bias.iter().map(|b| b.max(0.0)).collect();
    for pixel in got.reshape((6, 16)).unwrap().to_vec2::<f32>().unwrap() {
        assert_eq!(pixel, want);
    }
}

#[test]
fn panels_need_whole_panels_of_output_channels() {
    assert!(direct::pack_panels(&[0.0; 8 * 9], [8, 1, 3, 3]).is_err());
    assert!(!direct::applies(24) && !direct::applies(0));
}
