//! Which population a film looks like: the paediatric films of the training hospital, or adults.
//!
//! The network's logits do not mean the same on both: adult pneumonia films score far lower than
//! paediatric ones, so one logit-to-score map makes either the children's scores too low or the
//! adults' too high, and one threshold then calls nearly every child PNEUMONIA or misses adult
//! pneumonia. A logistic regression on the penultimate features (the same 256 values the "not
//! seen" flag reads) gives the probability that a film is paediatric; the score blends the two
//! populations' calibrations by it (see [`crate::model::card::DomainCard`]). It is fitted on the
//! training films' features with each population weighted the same, and stored in the weights
//! file (tensors [`WEIGHT_TENSOR`] and [`BIAS_TENSOR`]), so the weights' SHA-256 covers it.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::model::ood::OodError;

/// Name of the regression's weights in the weights file.
pub const WEIGHT_TENSOR: &str = "domain.weight";
/// Name of its bias.
pub const BIAS_TENSOR: &str = "domain.bias";

/// A linear model of "this film is paediatric" on the penultimate features.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainModel {
    weight: Vec<f32>,
    bias: f32,
}

impl DomainModel {
    /// Fits the regression to `features` (one vector per film) against `paediatric`, each class
    /// weighted by the inverse of its count, with an L2 penalty `l2` on the standardised
    /// features' weights (Newton's method).
    pub fn fit(features: &[Vec<f32>], paediatric: &[bool], l2: f64) -> Result<Self, OodError> {
        let n = features.len();
        let dim = features.first().map_or(0, Vec::len);
        let n_pos = paediatric.iter().filter(|&&p| p).count();
        if n != paediatric.len()
            || dim == 0
            || n_pos == 0
            || n_pos == n
            || features.iter().any(|f| f.len() != dim)
        {
            return Err(OodError::Fit(format!(
                "{n} feature vectors of length {dim} with {n_pos} paediatric: both populations \
                 are needed"
            )));
        }
        // Standardise, so that the penalty treats every feature alike.
        let mut mean = vec![0f64; dim];
        for f in features {
            for (m, &v) in mean.iter_mut().zip(f) {
                *m += f64::from(v) / n as f64;
            }
        }
        let mut sd = vec![0f64; dim];
        for f in features {
            for ((s, &v), &m) in sd.iter_mut().zip(f).zip(&mean) {
                *s += (f64::from(v) - m).powi(2) / n as f64;
            }
        }
        for s in &mut sd {
            *s = s.sqrt().max(1e-6);
        }
        let x: Vec<Vec<f64>> = features
            .iter()
            .map(|f| {
                f.iter()
                    .zip(&mean)
                    .zip(&sd)
                    .map(|((&v, &m), &s)| (f64::from(v) - m) / s)
                    .chain(std::iter::once(1.0))
                    .collect()
            })
            .collect();
        let w_pos = n as f64 / (2.0 * n_pos as f64);
        let w_neg = n as f64 / (2.0 * (n - n_pos) as f64);
        let d = dim + 1;
        let mut beta = vec![0f64; d];
        for _ in 0..25 {
            let mut grad = vec![0f64; d];
            let mut hess = vec![0f64; d * d];
            for (xi, &y) in x.iter().zip(paediatric) {
                let z: f64 = xi.iter().zip(&beta).map(|(a, b)| a * b).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                let w = if y { w_pos } else { w_neg };
                let r = w * (p - if y { 1.0 } else { 0.0 });
                let h = w * (p * (1.0 - p)).max(1e-9);
                for (i, &a) in xi.iter().enumerate() {
                    grad[i] += r * a;
                    let row = &mut hess[i * d..i * d + i + 1];
                    for (hij, &b) in row.iter_mut().zip(&xi[..=i]) {
                        *hij += h * a * b;
                    }
                }
            }
            // The bias is not penalised.
            for i in 0..dim {
                grad[i] += l2 * beta[i];
                hess[i * d + i] += l2;
            }
            hess[dim * d + dim] += 1e-6;
            for i in 0..d {
                for j in 0..i {
                    hess[j * d + i] = hess[i * d + j];
                }
            }
            let step = solve_spd(&hess, &grad, d)
                .ok_or_else(|| OodError::Fit("the regression's Hessian is singular".into()))?;
            let mut largest = 0f64;
            for (b, s) in beta.iter_mut().zip(&step) {
                *b -= s;
                largest = largest.max(s.abs());
            }
            if largest < 1e-8 {
                break;
            }
        }
        // Back to raw features: z = sum_i beta_i (f_i - m_i) / s_i + beta_dim.
        let weight: Vec<f32> = (0..dim).map(|i| (beta[i] / sd[i]) as f32).collect();
        let bias = beta[dim] - (0..dim).map(|i| beta[i] * mean[i] / sd[i]).sum::<f64>();
        if !bias.is_finite() || weight.iter().any(|w| !w.is_finite()) {
            return Err(OodError::Fit("the regression did not converge".into()));
        }
        Ok(Self {
            weight,
            bias: bias as f32,
        })
    }

    /// Length of the feature vectors.
    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// The probability that the film of these features is paediatric (`NaN` for features of
    /// another length).
    pub fn paediatric_probability(&self, features: &[f32]) -> f32 {
        if features.len() != self.dim() {
            return f32::NAN;
        }
        let z: f64 = f64::from(self.bias)
            + features
                .iter()
                .zip(&self.weight)
                .map(|(&f, &w)| f64::from(f) * f64::from(w))
                .sum::<f64>();
        (1.0 / (1.0 + (-z).exp())) as f32
    }

    /// The regression as tensors for the weights file.
    pub fn to_tensors(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        Ok(HashMap::from([
            (
                WEIGHT_TENSOR.to_owned(),
                Tensor::from_vec(self.weight.clone(), self.dim(), &Device::Cpu)?,
            ),
            (
                BIAS_TENSOR.to_owned(),
                Tensor::from_vec(vec![self.bias], 1, &Device::Cpu)?,
            ),
        ]))
    }

    /// Reads the regression of `dim`-long features back from a weights file's tensors.
    pub fn from_weights(weights: &[u8], dim: usize) -> Result<Self, OodError> {
        let bad = |e: String| OodError::Tensors(e);
        let tensors = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        let get = |name: &str, len: usize| super::ood::finite_vector(&tensors, name, len);
        Ok(Self {
            weight: get(WEIGHT_TENSOR, dim)?,
            bias: get(BIAS_TENSOR, 1)?.first().copied().unwrap_or(0.0),
        })
    }
}

/// Solves `a x = b` for a symmetric positive definite `a` (row-major `dim x dim`) by Cholesky.
fn solve_spd(a: &[f64], b: &[f64], dim: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; dim * dim];
    for i in 0..dim {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * dim + k] * l[j * dim + k]).sum();
            if i == j {
                let v = a[i * dim + i] - dot;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * dim + i] = v.sqrt();
            } else {
                l[i * dim + j] = (a[i * dim + j] - dot) / l[j * dim + j];
            }
        }
    }
    let mut y = vec![0f64; dim];
    for i in 0..dim {
        let dot: f64 = (0..i).map(|k| l[i * dim + k] * y[k]).sum();
        y[i] = (b[i] - dot) / l[i * dim + i];
    }
    let mut x = vec![0f64; dim];
    for i in (0..dim).rev() {
        let dot: f64 = (i + 1..dim).map(|k| l[k * dim + i] * x[k]).sum();
        x[i] = (y[i] - dot) / l[i * dim + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two populations apart along one feature and alike along the others.
    fn populations(n: usize) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut state = 12345u64;
        let mut noise = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            // Few of one population, as with the adult films.
            let paediatric = i % 5 != 0;
            let shift = if paediatric { 1.0 } else { -1.0 };
            features.push(vec![shift + noise(), 3.0 + noise(), noise() * 10.0]);
            labels.push(paediatric);
        }
        (features, labels)
    }

    #[test]
    fn separates_two_populations_and_survives_the_weights_file() {
        let (features, labels) = populations(400);
        let model = DomainModel::fit(&features, &labels, 1.0).unwrap();
        let correct = features
            .iter()
            .zip(&labels)
            .filter(|&(f, &y)| (model.paediatric_probability(f) >= 0.5) == y)
            .count();
        assert!(correct >= 396, "{correct} of 400");
        // The separating feature carries the weight; the noise does not.
        assert!(
            model.weight[0] > 10.0 * model.weight[2].abs(),
            "{:?}",
            model.weight
        );
        assert!(model.paediatric_probability(&[1.0, 3.0, 0.0]) > 0.95);
        assert!(model.paediatric_probability(&[-1.0, 3.0, 0.0]) < 0.05);
        assert!(model.paediatric_probability(&[1.0]).is_nan());

        let path = std::env::temp_dir().join(format!("domain-{}.safetensors", std::process::id()));
        candle_core::safetensors::save(&model.to_tensors().unwrap(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(DomainModel::from_weights(&bytes, 3).unwrap(), model);
        assert!(DomainModel::from_weights(&bytes, 4).is_err());
    }

    #[test]
    fn refuses_one_population() {
        let (features, _) = populations(20);
        assert!(DomainModel::fit(&features, &[true; 20], 1.0).is_err());
        assert!(DomainModel::fit(&features, &[true; 3], 1.0).is_err());
    }
}
