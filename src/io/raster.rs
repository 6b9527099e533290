//! JPEG through `jpeg-decoder` (one decoder for every path: the window, `scan`, `score` and
//! training, at full resolution or at a reduced DCT scale for the model's input), PNG through
//! `image` (png inside).

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};

use super::gray::luma;
use super::{Decoded, GrayImage, Limits, LoadError, Photometric, Samples, SourceFormat, Window};

/// Decodes a JPEG or PNG at full resolution, or, for a JPEG when `reduce_to_min_side_px` is set,
/// at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at or above that many pixels.
pub(crate) fn decode(
    bytes: &[u8],
    format: SourceFormat,
    limits: &Limits,
    reduce_to_min_side_px: Option<u32>,
) -> Result<Decoded, LoadError> {
    match format {
        SourceFormat::Jpeg => {
            if !jpeg_is_complete(bytes) {
                return Err(LoadError::Truncated(SourceFormat::Jpeg));
            }
            decode_jpeg(bytes, limits, reduce_to_min_side_px)
        }
        SourceFormat::Png => {
            if !png_is_complete(bytes) {
                return Err(LoadError::Truncated(SourceFormat::Png));
            }
            decode_full(bytes, ImageFormat::Png, format, limits)
        }
        SourceFormat::Dicom => Err(LoadError::UnknownFormat),
    }
}

/// True when an end-of-image marker follows the last start-of-scan marker.
///
/// Decoders accept a JPEG cut short and fill the missing part with gray; a half-copied file must
/// not reach the model that way. Neither marker can occur inside entropy-coded data (0xFF bytes
/// there are stuffed), and an EXIF thumbnail comes before the main image's scans. The search
/// starts from the end, where the end-of-image marker of a complete file is.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const START_OF_SCAN: [u8; 2] = [0xFF, 0xDA];
    const END_OF_IMAGE: [u8; 2] = [0xFF, 0xD9];
    match bytes.windows(2).rposition(|w| w == END_OF_IMAGE) {
        // Complete unless a scan starts after the last end-of-image (a thumbnail's).
        Some(end) => !bytes[end..].windows(2).any(|w| w == START_OF_SCAN),
        // No end at all: truncated if there is a scan; without one, the decoder says what is
        // wrong.
        None => !bytes.windows(2).any(|w| w == START_OF_SCAN),
    }
}

/// True when the PNG has its end chunk (IEND).
fn png_is_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).rev().any(|w| w == b"IEND")
}

fn decode_full(
    bytes: &[u8],
    image_format: ImageFormat,
    format: SourceFormat,
    limits: &Limits,
) -> Result<Decoded, LoadError> {
    // `image` decoders are not guaranteed to be panic-free on hostile input: a panic is caught
    // here, as a last resort, and becomes an error.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut reader = ImageReader::new(Cursor::new(bytes));
        reader.set_format(image_format);
        // Width and height are checked below with our own, clearer message; the allocation cap
        // is a second line of defence.
        let mut image_limits = image::Limits::default();
        image_limits.max_alloc = Some(limits.max_decoded_bytes());
        reader.limits(image_limits);
        let decoder = reader.into_decoder().map_err(|e| image_error(&e, format))?;
        let (width, height) = decoder.dimensions();
        // The header has been read, nothing decoded yet: refuse bombs here.
        limits.check(width, height)?;
        let color = decoder.color_type();
        let image = DynamicImage::from_decoder(decoder).map_err(|e| image_error(&e, format))?;
        Ok::<_, LoadError>(to_gray(image, color))
    }));
    let (image, photometric) = match result {
        Ok(outcome) => outcome?,
        Err(_) => return Err(LoadError::DecoderCrashed(format)),
    };
    Ok(Decoded {
        width: image.width,
        height: image.height,
        bits_stored: image.bits_stored,
        photometric,
        default_window: nominal_window(image.bits_stored),
        dicom: None,
        image,
    })
}

/// The nominal range of `bits` bits, never stretched to the image's content.
fn nominal_window(bits: u16) -> Window {
    Window::from_range(0.0, f64::from((1u32 << bits) - 1))
}

fn to_gray(image: DynamicImage, color: ColorType) -> (GrayImage, Photometric) {
    let photometric = if color.has_color() {
        Photometric::Rgb
    } else {
        Photometric::Monochrome2
    };
    let sixteen_bits = color.bytes_per_pixel() / color.channel_count() > 1;
    let gray = if sixteen_bits {
        let luma = image.into_luma16();
        let (width, height) = luma.dimensions();
        GrayImage {
            width,
            height,
            bits_stored: 16,
            samples: Samples::U16(luma.into_raw()),
        }
    } else {
        let luma = image.into_luma8();
        let (width, height) = luma.dimensions();
        GrayImage::from_u8(width, height, luma.as_raw())
    };
    (gray, photometric)
}

fn image_error(err: &ImageError, format: SourceFormat) -> LoadError {
    match err {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            LoadError::Truncated(format)
        }
        ImageError::Limits(_) => LoadError::Corrupt {
            format,
            reason: "decoding it would need more memory than allowed".into(),
        },
        ImageError::Unsupported(e) => LoadError::Corrupt {
            format,
            reason: format!("unsupported variant: {e}"),
        },
        other => LoadError::Corrupt {
            format,
            reason: other.to_string(),
        },
    }
}

/// Decodes a JPEG, at the smallest DCT scale (1/8, 1/4, 1/2) that keeps both sides at or above
/// `min_side_px` when that is given and such a scale exists, else at full resolution. 8-bit
/// grey and colour (made grey) and 16-bit lossless grey are read; CMYK is refused.
fn decode_jpeg(
    bytes: &[u8],
    limits: &Limits,
    min_side_px: Option<u32>,
) -> Result<Decoded, LoadError> {
    // jpeg-decoder panics on some malformed headers (for example in `Decoder::info` on an
    // unexpected component count): a panic is caught here, as a last resort.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        decoder.set_max_decoding_buffer_size(
            usize::try_from(limits.max_decoded_bytes()).unwrap_or(usize::MAX),
        );
        decoder.read_info().map_err(|e| jpeg_error(&e))?;
        let info = decoder
            .info()
            .ok_or(LoadError::Truncated(SourceFormat::Jpeg))?;
        let (width, height) = (u32::from(info.width), u32::from(info.height));
        // The header has been read, nothing decoded yet: refuse bombs here.
        limits.check(width, height)?;
        let (out_w, out_h) = match min_side_px.and_then(|min| reduced_size(width, height, min)) {
            Some((want_w, want_h)) if info.pixel_format != jpeg_decoder::PixelFormat::L16 => {
                let (w, h) = decoder.scale(want_w, want_h).map_err(|e| jpeg_error(&e))?;
                let (w, h) = (u32::from(w), u32::from(h));
                if min_side_px.is_some_and(|min| w < min || h < min) {
                    // The decoder could not scale as asked: back to full size.
                    let (w, h) = decoder
                        .scale(info.width, info.height)
                        .map_err(|e| jpeg_error(&e))?;
                    (u32::from(w), u32::from(h))
                } else {
                    (w, h)
                }
            }
            _ => (width, height),
        };
        let pixels = decoder.decode().map_err(|e| jpeg_error(&e))?;
        let count = out_w as usize * out_h as usize;
        let (image, photometric) = match info.pixel_format {
            jpeg_decoder::PixelFormat::L8 => {
                if pixels.len() < count {
                    return Err(LoadError::Truncated(SourceFormat::Jpeg));
                }
                (
                    GrayImage::from_u8(out_w, out_h, &pixels[..count]),
                    Photometric::Monochrome2,
                )
            }
            jpeg_decoder::PixelFormat::RGB24 => {
                if pixels.len() < count * 3 {
                    return Err(LoadError::Truncated(SourceFormat::Jpeg));
                }
                let luma: Vec<u16> = pixels[..count * 3]
                    .chunks_exact(3)
                    .map(|rgb| {
                        let l = luma(f32::from(rgb[0]), f32::from(rgb[1]), f32::from(rgb[2]));
                        l.round().clamp(0.0, 255.0) as u16
                    })
                    .collect();
                let image = GrayImage {
                    width: out_w,
                    height: out_h,
                    bits_stored: 8,
                    samples: Samples::U16(luma),
                };
                (image, Photometric::Rgb)
            }
            jpeg_decoder::PixelFormat::L16 => {
                if pixels.len() < count * 2 {
                    return Err(LoadError::Truncated(SourceFormat::Jpeg));
                }
                // Native-endian samples; the bit depth is what the largest sample needs (a
                // lossless JPEG of 12-bit data), at least 9.
                let samples: Vec<u16> = pixels[..count * 2]
                    .chunks_exact(2)
                    .map(|b| u16::from_ne_bytes([b[0], b[1]]))
                    .collect();
                let max = samples.iter().copied().max().unwrap_or(0);
                let bits = (16 - max.leading_zeros() as u16).clamp(9, 16);
                let image = GrayImage {
                    width: out_w,
                    height: out_h,
                    bits_stored: bits,
                    samples: Samples::U16(samples),
                };
                (image, Photometric::Monochrome2)
            }
            jpeg_decoder::PixelFormat::CMYK32 => {
                return Err(LoadError::Corrupt {
                    format: SourceFormat::Jpeg,
                    reason: "unsupported variant: a CMYK (print) JPEG, not a radiograph".into(),
                });
            }
        };
        let bits = image.bits_stored;
        Ok(Decoded {
            width,
            height,
            bits_stored: bits,
            photometric,
            default_window: nominal_window(bits),
            dicom: None,
            image,
        })
    }));
    match result {
        Ok(outcome) => outcome,
        Err(_) => Err(LoadError::DecoderCrashed(SourceFormat::Jpeg)),
    }
}

/// The size to ask the decoder for: the smallest DCT scale (1/8, 1/4, 1/2) whose sides stay at
/// or above `min_side_px`; `None` when only full size does.
fn reduced_size(width: u32, height: u32, min_side_px: u32) -> Option<(u16, u16)> {
    let divisor = [8u32, 4, 2]
        .into_iter()
        .find(|&d| width.div_ceil(d) >= min_side_px && height.div_ceil(d) >= min_side_px)?;
    let w = u16::try_from(width.div_ceil(divisor)).ok()?;
    let h = u16::try_from(height.div_ceil(divisor)).ok()?;
    Some((w, h))
}

fn jpeg_error(err: &jpeg_decoder::Error) -> LoadError {
    match err {
        jpeg_decoder::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            LoadError::Truncated(SourceFormat::Jpeg)
        }
        other => LoadError::Corrupt {
            format: SourceFormat::Jpeg,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_completeness_looks_after_the_last_scan() {
        // SOI, SOS, data, EOI.
        assert!(jpeg_is_complete(&[
            0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9
        ]));
        // An EOI before the last scan (a thumbnail's) does not count.
        assert!(!jpeg_is_complete(&[
            0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA, 1, 2, 3
        ]));
        // Trailing bytes after EOI are tolerated.
        assert!(jpeg_is_complete(&[0xFF, 0xDA, 1, 0xFF, 0xD9, 0, 0]));
    }

    #[test]
    fn nominal_windows_cover_the_bit_depth() {
        assert_eq!(nominal_window(8), Window::from_range(0.0, 255.0));
        assert_eq!(nominal_window(16).high(), 65535.0);
    }
}
