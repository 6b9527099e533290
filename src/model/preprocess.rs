//! The one preprocessing path, shared by training and inference: resize, window, normalise.
//!
//! Order matters for parity: the study's samples are first resized (antialiased bilinear, with
//! `fast_image_resize`) in their native type, then mapped through the display window onto `[0, 1]`,
//! then standardised with the training set's mean and standard deviation. Training decodes the
//! 224-pixel Kermany JPEGs and calls [`unit_resized`] exactly as scoring does for a full-resolution
//! study; augmentation happens between [`unit_resized`] and [`normalise`].

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::{F32, U16};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use crate::io::{GrayImage, Samples, Window};

/// How a study becomes the network's input. Stored in the weights card.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalisation {
    /// Side of the square input, in pixels (aspect ratio is not kept, as in the training data).
    pub input_size: usize,
    /// Mean of the `[0, 1]` training inputs (after [`Self::contrast`]), subtracted.
    pub mean: f32,
    /// Standard deviation of the `[0, 1]` training inputs (after [`Self::contrast`]), divided by.
    pub std: f32,
    /// Contrast equalisation applied to the `[0, 1]` input before standardising (none for
    /// models trained before it existed).
    #[serde(default)]
    pub contrast: Contrast,
}

/// Contrast equalisation at the network's input size, meant to cancel the differences between
/// hospitals' exposure, processing and display (see [`equalise`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Contrast {
    /// None: the window's `[0, 1]` values as they are.
    #[default]
    None,
    /// Contrast-limited adaptive histogram equalisation (Zuiderveld 1994) on `tiles` x `tiles`
    /// tiles, each tile's histogram clipped at `clip` times its mean bin count (the excess spread
    /// evenly) and the tiles' mappings blended bilinearly. One tile and no clip (`clip` 0) is
    /// plain histogram equalisation.
    Clahe {
        /// Tiles along each side.
        tiles: usize,
        /// Clip limit, in multiples of the mean bin count (0: no clipping).
        clip: f32,
    },
}

/// Histogram bins of [`equalise`].
const EQUALISE_BINS: usize = 256;

/// Applies `contrast` in place to a square `[0, 1]` image of side `size`.
pub fn equalise(unit: &mut [f32], size: usize, contrast: Contrast) {
    let Contrast::Clahe { tiles, clip } = contrast else {
        return;
    };
    if size == 0 || unit.len() != size * size {
        return;
    }
    let tiles = tiles.clamp(1, size);
    let bin = |v: f32| ((v.clamp(0.0, 1.0) * (EQUALISE_BINS - 1) as f32).round()) as usize;
    // Tile t covers [bounds[t], bounds[t + 1]) along each axis.
    let bounds: Vec<usize> = (0..=tiles).map(|t| t * size / tiles).collect();
    let mut maps = vec![[0f32; EQUALISE_BINS]; tiles * tiles];
    for ty in 0..tiles {
        for tx in 0..tiles {
            let mut hist = [0f32; EQUALISE_BINS];
            for y in bounds[ty]..bounds[ty + 1] {
                for &v in &unit[y * size + bounds[tx]..y * size + bounds[tx + 1]] {
                    hist[bin(v)] += 1.0;
                }
            }
            let count: f32 = hist.iter().sum();
            if clip > 0.0 {
                let limit = (clip * count / EQUALISE_BINS as f32).max(1.0);
                let mut excess = 0.0;
                for h in &mut hist {
                    if *h > limit {
                        excess += *h - limit;
                        *h = limit;
                    }
                }
                let share = excess / EQUALISE_BINS as f32;
                for h in &mut hist {
                    *h += share;
                }
            }
            let map = &mut maps[ty * tiles + tx];
            let mut cumulative = 0.0;
            for (m, h) in map.iter_mut().zip(hist) {
                cumulative += h;
                *m = cumulative / count.max(1.0);
            }
        }
    }
    // Each pixel blends the mappings of the (up to) four tiles whose centres surround it.
    let centre = |t: usize| (bounds[t] + bounds[t + 1]) as f32 / 2.0 - 0.5;
    let locate = |p: usize| -> (usize, usize, f32) {
        let p = p as f32;
        if tiles == 1 || p <= centre(0) {
            return (0, 0, 0.0);
        }
        if p >= centre(tiles - 1) {
            return (tiles - 1, tiles - 1, 0.0);
        }
        let mut t = 0;
        while p > centre(t + 1) {
            t += 1;
        }
        (t, t + 1, (p - centre(t)) / (centre(t + 1) - centre(t)))
    };
    let columns: Vec<(usize, usize, f32)> = (0..size).map(locate).collect();
    for y in 0..size {
        let (y0, y1, fy) = locate(y);
        for (x, &(x0, x1, fx)) in columns.iter().enumerate() {
            let b = bin(unit[y * size + x]);
            let m = |ty: usize, tx: usize| maps[ty * tiles + tx][b];
            let top = m(y0, x0) * (1.0 - fx) + m(y0, x1) * fx;
            let bottom = m(y1, x0) * (1.0 - fx) + m(y1, x1) * fx;
            unit[y * size + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
}

/// Preprocessing failed (only on a degenerate image).
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The image has no pixels, or its buffer does not match its size.
    #[error("the image is empty or its pixel buffer does not match its size ({width}x{height})")]
    BadImage {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The resizer refused the image.
    #[error("resizing the image failed: {0}")]
    Resize(String),
}

/// Resizes `image` to `size`x`size` and maps it through `window` onto `[0, 1]`, row-major.
pub fn unit_resized(
    image: &GrayImage,
    window: Window,
    size: usize,
) -> Result<Vec<f32>, PreprocessError> {
    let bad = || PreprocessError::BadImage {
        width: image.width,
        height: image.height,
    };
    if image.is_empty() || image.len() != image.width as usize * image.height as usize {
        return Err(bad());
    }
    let size_px = u32::try_from(size).map_err(|_| bad())?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    let mut resizer = Resizer::new();
    let low = window.low() as f32;
    let inv_width = 1.0 / window.width.max(f64::EPSILON) as f32;
    let to_unit = |v: f32| ((v - low) * inv_width).clamp(0.0, 1.0);
    let out = match &image.samples {
        Samples::U16(pixels) => {
            let src: Vec<U16> = pixels.iter().map(|&p| U16::new(p)).collect();
            let src = TypedImageRef::new(image.width, image.height, &src).map_err(|_| bad())?;
            let mut dst = TypedImage::<U16>::new(size_px, size_px);
            resizer
                .resize_typed(&src, &mut dst, &options)
                .map_err(|e| PreprocessError::Resize(e.to_string()))?;
            dst.pixels()
                .iter()
                .map(|p| to_unit(f32::from(p.0)))
                .collect()
        }
        Samples::F32(pixels) => {
            let src: Vec<F32> = pixels
                .iter()
                .map(|&p| F32::new(if p.is_finite() { p } else { 0.0 }))
                .collect();
            let src = TypedImageRef::new(image.width, image.height, &src).map_err(|_| bad())?;
            let mut dst = TypedImage::<F32>::new(size_px, size_px);
            resizer
                .resize_typed(&src, &mut dst, &options)
                .map_err(|e| PreprocessError::Resize(e.to_string()))?;
            dst.pixels().iter().map(|p| to_unit(p.0)).collect()
        }
    };
    Ok(out)
}

/// Turns a `[0, 1]` input into the network's input in place: [`equalise`] with the model's
/// contrast step, then `(x - mean) / std`.
pub fn normalise(unit: &mut [f32], norm: &Normalisation) {
    equalise(unit, norm.input_size, norm.contrast);
    standardise(unit, norm);
}

/// Standardises `[0, 1]` inputs in place: `(x - mean) / std`.
pub fn standardise(unit: &mut [f32], norm: &Normalisation) {
    let inv_std = 1.0 / norm.std.max(f32::EPSILON);
    for v in unit {
        *v = (*v - norm.mean) * inv_std;
    }
}

/// The network input for one study: [`unit_resized`] then [`normalise`].
pub fn preprocess(
    image: &GrayImage,
    window: Window,
    norm: &Normalisation,
) -> Result<Vec<f32>, PreprocessError> {
    let mut x = unit_resized(image, window, norm.input_size)?;
    normalise(&mut x, norm);
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> GrayImage {
        let px: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).map(move |x| ((x * 255) / (width - 1)) as u8 ^ (y as u8 & 1)))
            .collect();
        GrayImage::from_u8(width, height, &px)
    }

    #[test]
    fn u16_and_f32_samples_resize_to_the_same_input() {
        let img = gradient(301, 207);
        let as_f32 = GrayImage {
            samples: Samples::F32((0..img.len()).map(|i| img.sample(i)).collect()),
            ..img.clone()
        };
        let w = Window::from_range(0.0, 255.0);
        let a = unit_resized(&img, w, 64).unwrap();
        let b = unit_resized(&as_f32, w, 64).unwrap();
        assert_eq!(a.len(), 64 * 64);
        let max_diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        // U16 resizing works in fixed point and rounds to integer levels: within one level.
        assert!(max_diff <= 1.0 / 255.0, "max diff {max_diff}");
        // The horizontal ramp survives: left edge dark, right edge bright.
        assert!(a[0] < 0.05 && a[63] > 0.95);
    }

    #[test]
    fn window_clamps_and_normalisation_standardises() {
        let img = GrayImage {
            width: 2,
            height: 1,
            bits_stored: 12,
            samples: Samples::U16(vec![0, 4095]),
        };
        let norm = Normalisation {
            input_size: 2,
            mean: 0.5,
            std: 0.25,
            contrast: Contrast::None,
        };
        let x = preprocess(&img, Window::from_range(1000.0, 2000.0), &norm).unwrap();
        // Upscaling 2x1 to 2x2 keeps the columns; both are clamped by the window.
        assert_eq!(x, vec![-2.0, 2.0, -2.0, 2.0]);
    }

    #[test]
    fn histogram_equalisation_flattens_the_histogram_and_keeps_the_order() {
        // A dark, low-contrast ramp: values 0.2 to 0.3.
        let size = 32;
        let src: Vec<f32> = (0..size * size)
            .map(|i| 0.2 + 0.1 * i as f32 / (size * size - 1) as f32)
            .collect();
        let mut he = src.clone();
        equalise(
            &mut he,
            size,
            Contrast::Clahe {
                tiles: 1,
                clip: 0.0,
            },
        );
        // The order of the pixels is kept, and the output spans nearly all of [0, 1].
        assert!(he.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            he[0] < 0.05 && he[size * size - 1] > 0.99,
            "{} {}",
            he[0],
            he[size * size - 1]
        );
        // About a quarter of the pixels fall below 0.25 (a flat histogram).
        let below = he.iter().filter(|&&v| v < 0.25).count() as f32 / he.len() as f32;
        assert!((0.2..0.3).contains(&below), "{below}");
        // A monotonic change of the input (gamma) gives nearly the same output.
        let mut gamma: Vec<f32> = src.iter().map(|v| v.powf(0.7)).collect();
        equalise(
            &mut gamma,
            size,
            Contrast::Clahe {
                tiles: 1,
                clip: 0.0,
            },
        );
        let max_diff = he
            .iter()
            .zip(&gamma)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max_diff < 0.06, "{max_diff}");
    }

    #[test]
    fn clahe_is_local_and_clipping_limits_the_stretch() {
        // Left half dark (0.1 to 0.2), right half bright (0.7 to 0.8), each a vertical ramp.
        let size = 32;
        let src: Vec<f32> = (0..size * size)
            .map(|i| {
                let (x, y) = (i % size, i / size);
                let base = if x < size / 2 { 0.1 } else { 0.7 };
                base + 0.1 * y as f32 / (size - 1) as f32
            })
            .collect();
        let mut local = src.clone();
        equalise(
            &mut local,
            size,
            Contrast::Clahe {
                tiles: 4,
                clip: 0.0,
            },
        );
        // Each half is stretched on its own: the dark half's top and bottom differ widely.
        let (top, bottom) = (local[2], local[(size - 1) * size + 2]);
        assert!(bottom - top > 0.6, "{top} {bottom}");
        let mut clipped = src.clone();
        equalise(
            &mut clipped,
            size,
            Contrast::Clahe {
                tiles: 4,
                clip: 1.5,
            },
        );
        let (ctop, cbottom) = (clipped[2], clipped[(size - 1) * size + 2]);
        assert!(cbottom - ctop < bottom - top, "clip {ctop} {cbottom}");
        assert!(clipped.iter().all(|v| (0.0..=1.0).contains(v)));
        // None leaves the image alone.
        let mut same = src.clone();
        equalise(&mut same, size, Contrast::None);
        assert_eq!(same, src);
    }

    #[test]
    fn empty_or_inconsistent_images_are_refused() {
        let img = GrayImage {
            width: 3,
            height: 3,
            bits_stored: 8,
            samples: Samples::U16(vec![0; 4]),
        };
        assert!(unit_resized(&img, Window::from_range(0.0, 255.0), 8).is_err());
    }
}
