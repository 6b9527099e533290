//! "Not seen": how unlike the training films a study is, from the image itself.
//!
//! The network's penultimate features (the globally pooled last feature map, the head's input)
//! of every training film are summarised by their mean and a shrunk covariance; a study's
//! out-of-distribution distance is the Mahalanobis distance of its features to that mean (Lee et
//! al., `NeurIPS` 2018, with one class-independent Gaussian). The flag's threshold is a high
//! quantile of the validation films' distances, fixed when the model is trained and recorded in
//! its card, so a study is flagged when it lies further out than nearly every film of the
//! sources the model was validated on.
//!
//! The mean and the precision matrix are stored in the weights file (tensors [`MEAN_TENSOR`] and
//! [`PRECISION_TENSOR`]), so the weights' SHA-256 covers them.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

/// Name of the features' mean in the weights file.
pub const MEAN_TENSOR: &str = "ood.mean";
/// Name of the precision matrix (inverse covariance) in the weights file.
pub const PRECISION_TENSOR: &str = "ood.precision";

/// Fitting or loading the feature statistics failed.
#[derive(Debug, thiserror::Error)]
pub enum OodError {
    /// Too few feature vectors, or of different lengths.
    #[error("cannot fit the feature statistics: {0}")]
    Fit(String),
    /// The stored tensors are missing or of the wrong shape.
    #[error("the weights file's feature statistics are not usable: {0}")]
    Tensors(String),
}

/// A Gaussian summary of the training films' features.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureGaussian {
    mean: Vec<f32>,
    /// Row-major `dim x dim` inverse of the shrunk covariance.
    precision: Vec<f32>,
}

impl FeatureGaussian {
    /// Fits the mean and the covariance of `features` (one vector per film), shrunk towards a
    /// multiple of the identity by `shrinkage` in `[0, 1]` (Ledoit-Wolf style, fixed amount) so
    /// that it can be inverted whatever the number of films.
    pub fn fit(features: &[Vec<f32>], shrinkage: f64) -> Result<Self, OodError> {
        let n = features.len();
        let dim = features.first().map_or(0, Vec::len);
        if n < 2 || dim == 0 || features.iter().any(|f| f.len() != dim) {
            return Err(OodError::Fit(format!(
                "{n} feature vectors of length {dim} (or of different lengths)"
            )));
        }
        let mut mean = vec![0f64; dim];
        for f in features {
            for (m, &v) in mean.iter_mut().zip(f) {
                *m += f64::from(v);
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        let mut cov = vec![0f64; dim * dim];
        let mut centred = vec![0f64; dim];
        for f in features {
            for ((c, &v), &m) in centred.iter_mut().zip(f).zip(&mean) {
                *c = f64::from(v) - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                let row = &mut cov[i * dim..i * dim + i + 1];
                for (r, &cj) in row.iter_mut().zip(&centred[..=i]) {
                    *r += ci * cj;
                }
            }
        }
        let trace: f64 = (0..dim).map(|i| cov[i * dim + i]).sum::<f64>() / (n - 1) as f64;
        let floor = (trace / dim as f64).max(1e-12);
        let s = shrinkage.clamp(0.0, 1.0);
        for i in 0..dim {
            for j in 0..=i {
                let v = cov[i * dim + j] / (n - 1) as f64 * (1.0 - s)
                    + if i == j { s * floor } else { 0.0 };
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        let precision = invert_spd(&cov, dim)
            .ok_or_else(|| OodError::Fit("the covariance is not positive definite".into()))?;
        Ok(Self {
            mean: mean.iter().map(|&v| v as f32).collect(),
            precision: precision.iter().map(|&v| v as f32).collect(),
        })
    }

    /// Length of the feature vectors.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The Mahalanobis distance of `features` to the training films' mean.
    pub fn distance(&self, features: &[f32]) -> f32 {
        let dim = self.dim();
        if features.len() != dim {
            return f32::NAN;
        }
        let d: Vec<f64> = features
            .iter()
            .zip(&self.mean)
            .map(|(&f, &m)| f64::from(f) - f64::from(m))
            .collect();
        let mut total = 0f64;
        for (i, &di) in d.iter().enumerate() {
            let row = &self.precision[i * dim..(i + 1) * dim];
            let pd: f64 = row.iter().zip(&d).map(|(&p, &dj)| f64::from(p) * dj).sum();
            total += di * pd;
        }
        total.max(0.0).sqrt() as f32
    }

    /// The two tensors stored in the weights file.
    pub fn to_tensors(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let dim = self.dim();
        Ok(HashMap::from([
            (
                MEAN_TENSOR.to_owned(),
                Tensor::from_vec(self.mean.clone(), dim, &Device::Cpu)?,
            ),
            (
                PRECISION_TENSOR.to_owned(),
                Tensor::from_vec(self.precision.clone(), (dim, dim), &Device::Cpu)?,
            ),
        ]))
    }

    /// Reads the statistics of `dim`-long features back from a weights file's tensors.
    pub fn from_weights(weights: &[u8], dim: usize) -> Result<Self, OodError> {
        let bad = |e: String| OodError::Tensors(e);
        let tensors = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        let get = |name: &str, len: usize| finite_vector(&tensors, name, len);
        Ok(Self {
            mean: get(MEAN_TENSOR, dim)?,
            precision: get(PRECISION_TENSOR, dim * dim)?,
        })
    }
}

/// The inverse of a symmetric positive definite `dim x dim` matrix (row-major), through its
/// Cholesky factor; `None` if it is not positive definite.
fn invert_spd(a: &[f64], dim: usize) -> Option<Vec<f64>> {
    // a = L L^T.
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
    // Solve L L^T x = e_c for every column c.
    let mut inv = vec![0f64; dim * dim];
    let mut y = vec![0f64; dim];
    for c in 0..dim {
        for i in 0..dim {
            let b = if i == c { 1.0 } else { 0.0 };
            let dot: f64 = (0..i).map(|k| l[i * dim + k] * y[k]).sum();
            y[i] = (b - dot) / l[i * dim + i];
        }
        for i in (0..dim).rev() {
            let dot: f64 = (i + 1..dim)
                .map(|k| l[k * dim + i] * inv[k * dim + c])
                .sum();
            inv[i * dim + c] = (y[i] - dot) / l[i * dim + i];
        }
    }
    Some(inv)
}

/// The `q` quantile (0 to 1) of `values` by the nearest-rank rule; NaN when empty.
pub fn quantile(values: &[f32], q: f64) -> f32 {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f32::NAN;
    }
    v.sort_by(f32::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The tensor `name` of a weights file's `tensors`, flattened: `len` finite values, or why not.
pub(crate) fn finite_vector(
    tensors: &std::collections::HashMap<String, Tensor>,
    name: &str,
    len: usize,
) -> Result<Vec<f32>, OodError> {
    let bad = |e: String| OodError::Tensors(e);
    let v = tensors
        .get(name)
        .ok_or_else(|| bad(format!("{name} is missing")))?
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| bad(e.to_string()))?;
    if v.len() != len || v.iter().any(|x| !x.is_finite()) {
        return Err(bad(format!(
            "{name} has {} values, {len} expected, or a non-finite one",
            v.len()
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt as _, SeedableRng as _};

    #[test]
    fn inverse_of_a_known_matrix() {
        // [[4, 2], [2, 3]]^-1 = [[3, -2], [-2, 4]] / 8.
        let inv = invert_spd(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        let want = [0.375, -0.25, -0.25, 0.5];
        for (a, b) in inv.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{inv:?}");
        }
        assert!(invert_spd(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn distance_is_the_mahalanobis_distance_of_a_fitted_gaussian() {
        // Two independent coordinates with standard deviations 1 and 10: a step of 3 along the
        // first is as far as a step of 30 along the second.
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(5);
        let mut normal = || {
            let s: f32 = (0..12).map(|_| rng.random::<f32>()).sum();
            s - 6.0
        };
        let features: Vec<Vec<f32>> = (0..20_000)
            .map(|_| vec![5.0 + normal(), -2.0 + 10.0 * normal()])
            .collect();
        let g = FeatureGaussian::fit(&features, 0.0).unwrap();
        let a = g.distance(&[8.0, -2.0]);
        let b = g.distance(&[5.0, 28.0]);
        assert!((a - 3.0).abs() < 0.1 && (b - 3.0).abs() < 0.1, "{a} {b}");
        assert!(g.distance(&[5.0, -2.0]) < 0.05);
        assert!(g.distance(&[1.0]).is_nan());
        // Through the weights file and back.
        let tensors = g.to_tensors().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(FeatureGaussian::from_weights(&bytes, 2).unwrap(), g);
        assert!(FeatureGaussian::from_weights(&bytes, 3).is_err());
    }

    #[test]
    fn shrinkage_makes_a_degenerate_covariance_invertible() {
        // Three films in four dimensions: the sample covariance is singular.
        let features = vec![
            vec![1.0, 0.0, 0.0, 2.0],
            vec![0.0, 1.0, 0.0, 2.0],
            vec![0.0, 0.0, 1.0, 2.0],
        ];
        assert!(FeatureGaussian::fit(&features, 0.0).is_err());
        let g = FeatureGaussian::fit(&features, 0.1).unwrap();
        assert!(g.distance(&[0.0, 0.0, 0.0, 9.0]) > g.distance(&[0.3, 0.3, 0.3, 2.0]));
        assert!(FeatureGaussian::fit(&features[..1], 0.1).is_err());
    }

    #[test]
    fn quantile_by_nearest_rank() {
        let v: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
