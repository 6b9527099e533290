//! Training-time augmentation that respects chest anatomy: small rotations, shifts and zooms,
//! brightness, contrast and gamma, and the sharpness and noise that differ between equipment. No vertical flips; horizontal flips are a measured option
//! (the heart is on the left: a flip makes an anatomically impossible film).

use rand::{Rng, RngExt as _};

/// Augmentation strengths. The defaults are the shipped model's.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Augment {
    /// Rotation, uniform in ±this many degrees.
    pub max_rotation_deg: f32,
    /// Shift along each axis, uniform in ±this fraction of the side.
    pub max_shift_frac: f32,
    /// Zoom factor, uniform in `[min, max]`.
    pub scale_range: (f32, f32),
    /// Added to `[0, 1]` intensities, uniform in ±this.
    pub brightness: f32,
    /// Contrast factor around mid-grey, uniform in `[min, max]`.
    pub contrast_range: (f32, f32),
    /// Gamma, log-uniform in `[min, max]`.
    pub gamma_range: (f32, f32),
    /// Mirror left-right with probability one half.
    pub horizontal_flip: bool,
    /// Blur or sharpen (3x3 unsharp mask), amount uniform in ±this; negative blurs.
    pub max_sharpness: f32,
    /// Gaussian noise, standard deviation uniform in `[0, this]` (in `[0, 1]` intensity units).
    pub max_noise_std: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            max_rotation_deg: 8.0,
            max_shift_frac: 0.06,
            scale_range: (0.92, 1.1),
            brightness: 0.08,
            contrast_range: (0.8, 1.25),
            gamma_range: (0.8, 1.25),
            horizontal_flip: false,
            max_sharpness: 0.6,
            max_noise_std: 0.02,
        }
    }
}

impl Augment {
    /// No augmentation at all: [`Augment::apply`] returns its input.
    pub fn none() -> Self {
        Self {
            max_rotation_deg: 0.0,
            max_shift_frac: 0.0,
            scale_range: (1.0, 1.0),
            brightness: 0.0,
            contrast_range: (1.0, 1.0),
            gamma_range: (1.0, 1.0),
            horizontal_flip: false,
            max_sharpness: 0.0,
            max_noise_std: 0.0,
        }
    }

    /// Applies a random transform to a square `[0, 1]` image of side `size`.
    pub fn apply(&self, src: &[f32], size: usize, rng: &mut impl Rng) -> Vec<f32> {
        let uniform = |rng: &mut dyn FnMut() -> f32, lo: f32, hi: f32| lo + (hi - lo) * rng();
        let mut unit = || rng.random::<f32>();
        let angle = uniform(&mut unit, -1.0, 1.0) * self.max_rotation_deg.to_radians();
        let shift_x = uniform(&mut unit, -1.0, 1.0) * self.max_shift_frac * size as f32;
        let shift_y = uniform(&mut unit, -1.0, 1.0) * self.max_shift_frac * size as f32;
        let scale = uniform(&mut unit, self.scale_range.0, self.scale_range.1);
        let flip = self.horizontal_flip && unit() < 0.5;
        let brightness = uniform(&mut unit, -1.0, 1.0) * self.brightness;
        let contrast = uniform(&mut unit, self.contrast_range.0, self.contrast_range.1);
        let gamma = uniform(&mut unit, self.gamma_range.0.ln(), self.gamma_range.1.ln()).exp();
        let sharpness = uniform(&mut unit, -1.0, 1.0) * self.max_sharpness;
        let noise_std = unit() * self.max_noise_std;

        let geometric = angle != 0.0 || shift_x != 0.0 || shift_y != 0.0 || scale != 1.0 || flip;
        let mut out = if geometric {
            warp(src, size, angle, scale, (shift_x, shift_y), flip)
        } else {
            src.to_vec()
        };
        if sharpness != 0.0 {
            out = unsharp(&out, size, sharpness);
        }
        if gamma != 1.0 || contrast != 1.0 || brightness != 0.0 || noise_std > 0.0 {
            for v in &mut out {
                let g = v.max(0.0).powf(gamma);
                let n = if noise_std > 0.0 {
                    // Approximately normal: the sum of four uniforms, scaled to unit variance.
                    let s: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
                    s * 3.0f32.sqrt() * noise_std
                } else {
                    0.0
                };
                *v = ((g - 0.5) * contrast + 0.5 + brightness + n).clamp(0.0, 1.0);
            }
        }
        out
    }
}

/// Unsharp mask with a 3x3 box blur: `x + amount (x - blur(x))`. A negative amount blurs
/// (`amount = -1` is the box blur itself).
fn unsharp(src: &[f32], size: usize, amount: f32) -> Vec<f32> {
    let at = |x: isize, y: isize| {
        let cx = x.clamp(0, size as isize - 1) as usize;
        let cy = y.clamp(0, size as isize - 1) as usize;
        src[cy * size + cx]
    };
    let mut out = vec![0.0; size * size];
    for y in 0..size as isize {
        for x in 0..size as isize {
            let mut sum = 0.0;
            for dy in -1..=1 {
                for dx in -1..=1 {
                    sum += at(x + dx, y + dy);
                }
            }
            let v = at(x, y);
            out[y as usize * size + x as usize] = (v + amount * (v - sum / 9.0)).clamp(0.0, 1.0);
        }
    }
    out
}

/// Output pixel `p` samples the source at `centre + R(-angle) (p - centre - shift) / scale`,
/// bilinearly, clamping at the edges (a shifted film shows its own border, not black).
fn warp(
    src: &[f32],
    size: usize,
    angle: f32,
    scale: f32,
    shift: (f32, f32),
    flip: bool,
) -> Vec<f32> {
    let c = (size as f32 - 1.0) / 2.0;
    let (sin, cos) = angle.sin_cos();
    let max = size as f32 - 1.0;
    let mut out = vec![0.0; size * size];
    for y in 0..size {
        for x in 0..size {
            let xo = if flip { max - x as f32 } else { x as f32 };
            let u = (xo - c - shift.0) / scale;
            let v = (y as f32 - c - shift.1) / scale;
            let sx = (cos * u + sin * v + c).clamp(0.0, max);
            let sy = (-sin * u + cos * v + c).clamp(0.0, max);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(size - 1), (y0 + 1).min(size - 1));
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let top = src[y0 * size + x0] * (1.0 - fx) + src[y0 * size + x1] * fx;
            let bottom = src[y1 * size + x0] * (1.0 - fx) + src[y1 * size + x1] * fx;
            out[y * size + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn ramp(size: usize) -> Vec<f32> {
        (0..size * size)
            .map(|i| (i % size) as f32 / (size - 1) as f32)
            .collect()
    }

    #[test]
    fn no_augmentation_is_the_identity() {
        let src = ramp(16);
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(1);
        assert_eq!(Augment::none().apply(&src, 16, &mut rng), src);
    }

    #[test]
    fn flip_mirrors_and_identity_warp_is_exact() {
        let src = ramp(9);
        let same = warp(&src, 9, 0.0, 1.0, (0.0, 0.0), false);
        assert!(same.iter().zip(&src).all(|(a, b)| (a - b).abs() < 1e-6));
        let mirrored = warp(&src, 9, 0.0, 1.0, (0.0, 0.0), true);
        assert!((mirrored[0] - 1.0).abs() < 1e-6 && mirrored[8].abs() < 1e-6);
    }

    #[test]
    fn unsharp_blurs_and_sharpens_an_edge() {
        // A vertical edge between columns 3 and 4.
        let src: Vec<f32> = (0..64).map(|i| if i % 8 < 4 { 0.2 } else { 0.8 }).collect();
        let blurred = unsharp(&src, 8, -1.0);
        let sharpened = unsharp(&src, 8, 0.5);
        // Beside the edge, blur moves values towards the other side, sharpening away from it.
        assert!(blurred[3] > 0.2 && blurred[4] < 0.8);
        assert!(sharpened[3] < 0.2 && sharpened[4] > 0.8);
        // Far from the edge nothing changes.
        assert!((blurred[0] - 0.2).abs() < 1e-6 && (sharpened[7] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn augmented_images_stay_in_range_and_close_to_the_source() {
        let src = ramp(32);
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7);
        for _ in 0..20 {
            let out = Augment::default().apply(&src, 32, &mut rng);
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
            // Still a left-to-right ramp: the right half is brighter on average.
            let left: f32 = (0..32 * 32).filter(|i| i % 32 < 16).map(|i| out[i]).sum();
            let right: f32 = (0..32 * 32).filter(|i| i % 32 >= 16).map(|i| out[i]).sum();
            assert!(right > left);
        }
    }
}
