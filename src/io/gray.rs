//! The one grayscale representation every study is decoded into.

/// Pixel samples at their original depth, row-major, one sample per pixel.
///
/// Values are in the modality's output units (after rescale or the Modality LUT), oriented so that
/// a higher value is brighter on screen: MONOCHROME1 data is already inverted.
#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    /// Integer samples (8-bit JPEG/PNG, 16-bit PNG, DICOM without fractional rescale).
    U16(Vec<u16>),
    /// Real-valued samples (DICOM whose rescale gives fractions or negatives).
    F32(Vec<f32>),
}

/// Rec. 709 luma of an RGB sample, the weights `image` uses to convert colour to gray.
pub(crate) fn luma(red: f32, green: f32, blue: f32) -> f32 {
    0.2126 * red + 0.7152 * green + 0.0722 * blue
}

/// A display window: values below `center - width/2` are black, above `center + width/2` white.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Window centre (level), in the image's sample units.
    pub center: f64,
    /// Window width, in the image's sample units; always positive.
    pub width: f64,
}

impl Window {
    /// A window that maps `[low, high]` linearly onto black to white.
    pub fn from_range(low: f64, high: f64) -> Self {
        let width = (high - low).max(1.0);
        Self {
            center: low + width / 2.0,
            width,
        }
    }

    /// The lowest value shown as something brighter than black.
    pub fn low(&self) -> f64 {
        self.center - self.width / 2.0
    }

    /// The highest value shown as something darker than white.
    pub fn high(&self) -> f64 {
        self.center + self.width / 2.0
    }
}

/// A decoded grayscale image that keeps its bit depth.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Significant bits per sample in the source (8 for JPEG, 8 or 16 for PNG, Bits Stored for DICOM).
    pub bits_stored: u16,
    /// The samples, `width * height` of them.
    pub samples: Samples,
}

impl GrayImage {
    /// An 8-bit image, as decoded from a JPEG or an 8-bit PNG.
    pub fn from_u8(width: u32, height: u32, pixels: &[u8]) -> Self {
        Self {
            width,
            height,
            bits_stored: 8,
            samples: Samples::U16(pixels.iter().map(|&v| u16::from(v)).collect()),
        }
    }

    /// Number of pixels.
    pub fn len(&self) -> usize {
        match &self.samples {
            Samples::U16(v) => v.len(),
            Samples::F32(v) => v.len(),
        }
    }

    /// True when the image has no pixels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample at `index` (row-major) as `f32`.
    pub fn sample(&self, index: usize) -> f32 {
        match &self.samples {
            Samples::U16(v) => f32::from(v[index]),
            Samples::F32(v) => v[index],
        }
    }

    /// Smallest and largest sample value; `(0, 0)` for an empty image.
    pub fn value_range(&self) -> (f32, f32) {
        let fold = |(lo, hi): (f32, f32), v: f32| (lo.min(v), hi.max(v));
        let (lo, hi) = match &self.samples {
            Samples::U16(v) => v
                .iter()
                .map(|&x| f32::from(x))
                .fold((f32::INFINITY, f32::NEG_INFINITY), fold),
            Samples::F32(v) => v
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), fold),
        };
        if lo > hi { (0.0, 0.0) } else { (lo, hi) }
    }

    /// A window covering the full range of the samples.
    pub fn full_range_window(&self) -> Window {
        let (lo, hi) = self.value_range();
        Window::from_range(f64::from(lo), f64::from(hi))
    }

    /// Converts to 8 bits for display through `window` (linear, clamped), row-major.
    pub fn to_display_u8(&self, window: Window) -> Vec<u8> {
        let low = window.low() as f32;
        let scale = 255.0 / window.width.max(f64::EPSILON) as f32;
        let map = |v: f32| ((v - low) * scale).clamp(0.0, 255.0).round() as u8;
        match &self.samples {
            Samples::U16(v) => v.iter().map(|&x| map(f32::from(x))).collect(),
            Samples::F32(v) => v
                .iter()
                .map(|&x| if x.is_finite() { map(x) } else { 0 })
                .collect(),
        }
    }

    /// Maps every sample through `window` onto `[0, 1]` (linear, clamped), row-major.
    pub fn to_unit_f32(&self, window: Window) -> Vec<f32> {
        let low = window.low() as f32;
        let inv_width = 1.0 / window.width.max(f64::EPSILON) as f32;
        let map = |v: f32| ((v - low) * inv_width).clamp(0.0, 1.0);
        match &self.samples {
            Samples::U16(v) => v.iter().map(|&x| map(f32::from(x))).collect(),
            Samples::F32(v) => v
                .iter()
                .map(|&x| if x.is_finite() { map(x) } else { 0.0 })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_window_maps_ends_to_black_and_white() {
        let img = GrayImage {
            width: 4,
            height: 1,
            bits_stored: 12,
            samples: Samples::U16(vec![0, 1000, 1500, 4095]),
        };
        let w = Window {
            center: 1500.0,
            width: 1000.0,
        };
        assert_eq!(img.to_display_u8(w), vec![0, 0, 128, 255]);
        assert_eq!(img.value_range(), (0.0, 4095.0));
    }

    #[test]
    fn non_finite_samples_do_not_poison_range_or_display() {
        let img = GrayImage {
            width: 3,
            height: 1,
            bits_stored: 16,
            samples: Samples::F32(vec![-100.0, f32::NAN, 300.0]),
        };
        assert_eq!(img.value_range(), (-100.0, 300.0));
        let d = img.to_display_u8(img.full_range_window());
        assert_eq!(d, vec![0, 0, 255]);
    }
}
