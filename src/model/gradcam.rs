//! Grad-CAM: which regions pushed the score up. An explanation, not a localisation.
//!
//! For the last convolutional feature map `A` (channels `k`) and the pneumonia logit `y`, the
//! channel weights are the spatial means of `dy/dA_k`, and the map is `ReLU(sum_k w_k A_k)`,
//! scaled to `[0, 1]` (Selvaraju et al., 2017).

use candle_core::{Tensor, Var};
use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::F32;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use crate::io::{GrayImage, Window};
use crate::model::classifier::{Classifier, ModelError};

/// A heat map in `[0, 1]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatMap {
    /// Width in cells.
    pub width: usize,
    /// Height in cells.
    pub height: usize,
    /// One value per cell, `[0, 1]`.
    pub values: Vec<f32>,
}

impl HeatMap {
    /// Bilinear resize to `width`x`height` (for example the study's resolution).
    pub fn resized(&self, width: usize, height: usize) -> Self {
        let fallback = || Self {
            width,
            height,
            values: vec![0.0; width * height],
        };
        let (Ok(sw), Ok(sh), Ok(dw), Ok(dh)) = (
            u32::try_from(self.width),
            u32::try_from(self.height),
            u32::try_from(width),
            u32::try_from(height),
        ) else {
            return fallback();
        };
        let src: Vec<F32> = self.values.iter().map(|&v| F32::new(v)).collect();
        let Ok(src) = TypedImageRef::new(sw, sh, &src) else {
            return fallback();
        };
        let mut dst = TypedImage::<F32>::new(dw, dh);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        if Resizer::new()
            .resize_typed(&src, &mut dst, &options)
            .is_err()
        {
            return fallback();
        }
        Self {
            width,
            height,
            values: dst.pixels().iter().map(|p| p.0.clamp(0.0, 1.0)).collect(),
        }
    }
}

/// A score and its explanation.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// Pneumonia probability.
    pub score: f32,
    /// Grad-CAM at the feature map's resolution.
    pub heat: HeatMap,
}

impl Classifier {
    /// Grad-CAM of one prepared input.
    pub fn explain_prepared(&self, input: &[f32]) -> Result<Explanation, ModelError> {
        let xs = self.batch(&[input.to_vec()])?;
        let features = self.net().features_t(&xs, false)?.detach();
        let features = Var::from_tensor(&features)?;
        let logits = self.net().head_t(features.as_tensor(), false)?;
        let logit = logits
            .to_vec1::<f32>()?
            .first()
            .copied()
            .unwrap_or(f32::NAN);
        let pooled = features
            .as_tensor()
            .mean((2, 3))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let score = self.score_of_logit(logit, self.paediatric_probability(Some(&pooled)));
        let grads = logits.sum_all()?.backward()?;
        let (_, c, h, w) = features.dims4()?;
        let Some(grad) = grads.get(features.as_tensor()) else {
            return Ok(Explanation {
                score,
                heat: HeatMap {
                    width: w,
                    height: h,
                    values: vec![0.0; w * h],
                },
            });
        };
        let weights = grad.mean_keepdim((2, 3))?; // [1, c, 1, 1]
        let cam: Tensor = features
            .as_tensor()
            .broadcast_mul(&weights)?
            .sum(1)?
            .relu()?
            .reshape(h * w)?;
        let mut values = cam.to_vec1::<f32>()?;
        let max = values.iter().copied().fold(0.0f32, f32::max);
        if max > 0.0 && max.is_finite() {
            for v in &mut values {
                *v /= max;
            }
        }
        debug_assert_eq!(c, weights.dims4()?.1);
        Ok(Explanation {
            score,
            heat: HeatMap {
                width: w,
                height: h,
                values,
            },
        })
    }

    /// Grad-CAM of a study, at the feature map's resolution.
    pub fn explain(&self, image: &GrayImage, window: Window) -> Result<Explanation, ModelError> {
        let input = self.prepare(image, window)?;
        self.explain_prepared(&input)
    }
}

/// The "turbo" colour map (Mikhailov, Google 2019), polynomial approximation: 0 is dark blue, 1
/// dark red.
pub fn turbo(t: f32) -> [u8; 3] {
    let t = f64::from(t.clamp(0.0, 1.0));
    let r = 0.135_721_38
        + t * (4.615_392_6
            + t * (-42.660_322_4 + t * (132.131_082_9 + t * (-152.942_393_1 + t * 59.286_379_5))));
    let g = 0.091_402_61
        + t * (2.194_188_39
            + t * (4.842_966_58 + t * (-14.185_033_3 + t * (4.277_298_58 + t * 2.829_566_04))));
    let b = 0.106_673_3
        + t * (12.641_946_4
            + t * (-60.582_048_6 + t * (110.362_767_6 + t * (-89.903_109_3 + t * 27.348_249_3))));
    let to_u8 = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    [to_u8(r), to_u8(g), to_u8(b)]
}

/// How much of the colour map shows at heat `v` (before the user's opacity): fully transparent
/// below a tenth of the maximum, fully coloured from 0.6 up. Shared by the PNG overlay, the
/// window's overlay texture and its colour bar.
pub fn overlay_alpha(v: f32) -> f32 {
    ((v - 0.1) / 0.5).clamp(0.0, 1.0)
}

/// The study through `window`, with `heat` (any resolution) blended over it in the turbo colour
/// map at `opacity` (0 to 1), weighted by the heat itself so that cold regions stay grey. RGB, row-major,
/// at the study's resolution.
pub fn overlay_rgb(image: &GrayImage, window: Window, heat: &HeatMap, opacity: f32) -> Vec<u8> {
    let (w, h) = (image.width as usize, image.height as usize);
    let gray = image.to_display_u8(window);
    let heat = if heat.width == w && heat.height == h {
        heat.clone()
    } else {
        heat.resized(w, h)
    };
    let mut rgb = Vec::with_capacity(w * h * 3);
    for (&g, &v) in gray.iter().zip(&heat.values) {
        let colour = turbo(v);
        let alpha = opacity.clamp(0.0, 1.0) * overlay_alpha(v);
        for c in colour {
            let mixed = f32::from(g) * (1.0 - alpha) + f32::from(c) * alpha;
            rgb.push(mixed.round().clamp(0.0, 255.0) as u8);
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Grad-CAM checked against a reference computed without autograd.
    ///
    /// Recipe: Grad-CAM's weight of channel `c` is the spatial mean of `∂logit/∂F_cij`. That mean
    /// is, exactly and for any head, the derivative of the logit along the direction that adds
    /// the same ε to every cell of channel `c`, divided by H·W. So
    /// `α_c = (head(F + ε·1_c) − head(F − ε·1_c)) / (2ε·H·W)` (central differences, 2·C head
    /// evaluations), and the map is `relu(Σ_c α_c F_c)`, scaled to a maximum of 1. With our head
    /// (global average pooling, then one linear unit) `α_c = w_c / (H·W)` and Grad-CAM is CAM
    /// (Zhou et al. 2016). The film is a real pneumonia film of the demo set, scored by the
    /// shipped model.
    #[test]
    fn grad_cam_matches_a_reference_from_finite_differences_of_the_head() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let classifier = Classifier::load(&root.join("weights/cxrnet.json")).unwrap();
        let study = crate::io::load_study(&root.join("assets/demo/person1_virus_11.jpeg")).unwrap();
        let input = classifier
            .prepare(&study.image, study.meta.default_window)
            .unwrap();
        let explanation = classifier.explain_prepared(&input).unwrap();

        let net = classifier.net();
        let xs = classifier.batch(std::slice::from_ref(&input)).unwrap();
        let features = net.features_t(&xs, false).unwrap();
        let (_, channels, h, w) = features.dims4().unwrap();
        let cells = h * w;
        let logit = |f: &Tensor| net.head_t(f, false).unwrap().to_vec1::<f32>().unwrap()[0];
        let eps = 0.05f32;
        let alphas: Vec<f32> = (0..channels)
            .map(|c| {
                let mut bump = vec![0f32; channels * cells];
                bump[c * cells..(c + 1) * cells].fill(eps);
                let bump = Tensor::from_vec(bump, features.shape(), features.device()).unwrap();
                let up = logit(&(&features + &bump).unwrap());
                let down = logit(&(&features - &bump).unwrap());
                (up - down) / (2.0 * eps * cells as f32)
            })
            .collect();
        let f = features.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut reference: Vec<f32> = (0..cells)
            .map(|i| {
                (0..channels)
                    .map(|c| alphas[c] * f[c * cells + i])
                    .sum::<f32>()
                    .max(0.0)
            })
            .collect();
        let max = reference.iter().copied().fold(0.0f32, f32::max);
        assert!(max > 0.0, "the reference map is empty");
        for v in &mut reference {
            *v /= max;
        }

        assert_eq!((explanation.heat.width, explanation.heat.height), (w, h));
        let worst = explanation
            .heat
            .values
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 2e-3, "Grad-CAM is {worst} away from the reference");
        // A map with some structure: not all hot, not all cold.
        let hot = reference.iter().filter(|&&v| v > 0.5).count();
        assert!(hot > 0 && hot < cells, "{hot} of {cells} cells above 0.5");
        // And the score is the calibrated score of the same input.
        let score = classifier.score_prepared(&[input]).unwrap()[0];
        assert!((explanation.score - score).abs() < 1e-4);
    }

    #[test]
    fn turbo_runs_from_blue_to_red() {
        // Reference values of Google's turbo map (0.15: blue, 0.5: green, 0.9: red).
        let cold = turbo(0.15);
        let hot = turbo(0.9);
        assert!(cold[2] > cold[0], "{cold:?}");
        assert!(hot[0] > hot[2], "{hot:?}");
        let mid = turbo(0.5);
        assert!(mid[1] > 150, "{mid:?}");
    }

    #[test]
    fn heat_map_upsamples_smoothly_and_keeps_its_hot_corner() {
        let heat = HeatMap {
            width: 2,
            height: 2,
            values: vec![1.0, 0.0, 0.0, 0.0],
        };
        let big = heat.resized(8, 8);
        assert_eq!(big.values.len(), 64);
        assert!(big.values[0] > 0.9);
        assert!(big.values[63] < 0.1);
        // Pixels (0, 0) and (1, 1) fall before the first source centre; (2, 2) is interpolated.
        assert!(big.values[0] > big.values[18] && big.values[18] > big.values[63]);
    }

    #[test]
    fn overlay_keeps_cold_regions_grey() {
        let img = GrayImage::from_u8(2, 1, &[100, 100]);
        let heat = HeatMap {
            width: 2,
            height: 1,
            values: vec![0.0, 1.0],
        };
        let rgb = overlay_rgb(&img, Window::from_range(0.0, 255.0), &heat, 0.5);
        assert_eq!(&rgb[..3], &[100, 100, 100]);
        assert_ne!(&rgb[3..], &[100, 100, 100]);
    }
}
