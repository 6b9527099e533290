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
    /// Mean of the `[0, 1]` training inputs, subtracted.
    pub mean: f32,
    /// Standard deviation of the `[0, 1]` training inputs, divided by.
    pub std: f32,
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

/// Standardises `[0, 1]` inputs in place: `(x - mean) / std`.
pub fn normalise(unit: &mut [f32], norm: &Normalisation) {
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
        };
        let x = preprocess(&img, Window::from_range(1000.0, 2000.0), &norm).unwrap();
        // Upscaling 2x1 to 2x2 keeps the columns; both are clamped by the window.
        assert_eq!(x, vec![-2.0, 2.0, -2.0, 2.0]);
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
