//! DICOM through dicom-rs: parse, decode the first frame, apply the Modality LUT or rescale, and
//! invert MONOCHROME1 so that a higher value is always brighter.
//!
//! # MONOCHROME1 and the default window
//!
//! MONOCHROME1 samples are inverted within the range the modality transform can output for the
//! file's Bits Stored (not the range the image happens to use), `v' = low + high - v`: for
//! `RG1_J2KI.dcm` (15 bits stored, no rescale) that is `32767 - v`. The file's first VOI window is
//! mirrored the same way, centre `c' = low + high - c`, width unchanged, so that it shows exactly
//! what the file's window showed: for `RG1_J2KI.dcm`, 15000/30000 becomes centre 17767, width 30000.
//! With a Modality LUT Sequence, `low` and `high` are the smallest and largest LUT entries.
//!
//! The file's VOI is, in order: its VOI LUT Sequence (the first LUT, as the linear window over
//! the input range where the LUT rises from 1 % to 99 % of its output), else its first Window
//! Center/Width; without either, the full range of the samples. A Presentation LUT Shape of
//! `INVERSE` on a MONOCHROME2 image inverts it as MONOCHROME1 is (samples and window mirrored).

pub(crate) mod structure;

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_core::Tag;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_object::{
    DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions, ReadError,
};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::gray::luma;
use super::sniff::DicomLayout;
use super::{
    Decoded, DicomTags, GrayImage, Limits, LoadError, Photometric, Samples, SourceFormat, Window,
};

/// The name of a transfer syntax ("JPEG 2000 Image Compression"), or `None` if unknown.
pub fn transfer_syntax_name(uid: &str) -> Option<&'static str> {
    TransferSyntaxRegistry
        .get(uid.trim_end_matches(['\0', ' ']))
        .map(dicom_transfer_syntax_registry::TransferSyntax::name)
}

/// Decodes DICOM `bytes` laid out as `layout`.
pub(crate) fn decode(
    bytes: &[u8],
    layout: DicomLayout,
    limits: &Limits,
) -> Result<Decoded, LoadError> {
    let outline = match layout {
        DicomLayout::Part10 { meta_offset } => structure::walk_part10(bytes, meta_offset)?,
        DicomLayout::Raw { explicit_vr } => structure::walk_raw(bytes, explicit_vr)?,
    };
    if outline.has_pixel_data == Some(false) {
        return Err(LoadError::NoPixelData);
    }
    if let Some(uid) = &outline.transfer_syntax {
        check_transfer_syntax(uid)?;
    }
    let obj = parse(bytes, layout)?;
    let tags = dicom_tags(&obj);
    let (image, photometric, window) = decode_image(&obj, limits)?;
    Ok(Decoded {
        width: image.width,
        height: image.height,
        bits_stored: image.bits_stored,
        photometric,
        default_window: window.unwrap_or_else(|| image.full_range_window()),
        dicom: Some(tags),
        image,
    })
}

/// Refuses, before parsing, transfer syntaxes whose pixel data cannot be decoded.
fn check_transfer_syntax(uid: &str) -> Result<(), LoadError> {
    match TransferSyntaxRegistry.get(uid) {
        None => Err(LoadError::UnsupportedTransferSyntax(format!(
            "unknown transfer syntax {uid}"
        ))),
        Some(ts) if !ts.can_decode_all() => Err(LoadError::UnsupportedTransferSyntax(format!(
            "{} ({uid})",
            ts.name()
        ))),
        Some(_) => Ok(()),
    }
}

/// Parses the data set (up to and including Pixel Data) with dicom-rs.
fn parse(bytes: &[u8], layout: DicomLayout) -> Result<DefaultDicomObject, LoadError> {
    // dicom-rs is not known to panic here once the structure walk has passed, but it parses
    // untrusted bytes: a panic is turned into an error as a last resort.
    let parsed = catch_unwind(AssertUnwindSafe(|| match layout {
        DicomLayout::Part10 { .. } => OpenFileOptions::new()
            .read_to(tags::PIXEL_DATA)
            .from_reader(bytes)
            .map_err(Some),
        DicomLayout::Raw { explicit_vr } => {
            let uid = structure::raw_transfer_syntax(explicit_vr);
            let Some(ts) = TransferSyntaxRegistry.get(uid) else {
                // The two little-endian syntaxes are always registered.
                return Err(None);
            };
            let data_set = InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(Some)?;
            let sop_class = string_of(&data_set, tags::SOP_CLASS_UID).unwrap_or_default();
            let sop_instance = string_of(&data_set, tags::SOP_INSTANCE_UID).unwrap_or_default();
            let meta = FileMetaTableBuilder::new()
                .transfer_syntax(uid)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_instance)
                .build()
                .map_err(|_| None)?;
            Ok(data_set.with_exact_meta(meta))
        }
    }));
    match parsed {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(Some(err))) => Err(read_error(&err)),
        Ok(Err(None)) => Err(LoadError::Corrupt {
            format: SourceFormat::Dicom,
            reason: "the data set cannot be parsed".into(),
        }),
        Err(_) => Err(LoadError::DecoderCrashed(SourceFormat::Dicom)),
    }
}

/// Turns a dicom-rs read error into words, without echoing any value read from the file.
fn read_error(err: &ReadError) -> LoadError {
    match err {
        ReadError::ReadUnrecognizedTransferSyntax { uid, .. } => {
            LoadError::UnsupportedTransferSyntax(format!("unknown transfer syntax {uid}"))
        }
        ReadError::ReadUnsupportedTransferSyntax { uid, name, .. }
        | ReadError::ReadUnsupportedTransferSyntaxWithSuggestion { uid, name, .. } => {
            LoadError::UnsupportedTransferSyntax(format!("{name} ({uid})"))
        }
        ReadError::PrematureEnd { .. } | ReadError::ReadPreambleBytes { .. } => {
            LoadError::Truncated(SourceFormat::Dicom)
        }
        ReadError::ParseMetaDataSet { .. } => LoadError::Corrupt {
            format: SourceFormat::Dicom,
            reason: "the file meta header is damaged".into(),
        },
        _ => LoadError::Corrupt {
            format: SourceFormat::Dicom,
            reason: "the data set cannot be parsed".into(),
        },
    }
}

/// A trimmed string attribute, if present and not empty.
fn string_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

fn dicom_tags(obj: &DefaultDicomObject) -> DicomTags {
    DicomTags {
        patient_id: string_of(obj, tags::PATIENT_ID),
        study_instance_uid: string_of(obj, tags::STUDY_INSTANCE_UID),
        sop_instance_uid: string_of(obj, tags::SOP_INSTANCE_UID),
        modality: string_of(obj, tags::MODALITY),
        view_position: string_of(obj, tags::VIEW_POSITION),
        study_date: string_of(obj, tags::STUDY_DATE),
        body_part_examined: string_of(obj, tags::BODY_PART_EXAMINED),
        patient_age: string_of(obj, tags::PATIENT_AGE),
        patient_sex: string_of(obj, tags::PATIENT_SEX),
        study_time: string_of(obj, tags::STUDY_TIME),
        transfer_syntax: obj.meta().transfer_syntax().to_string(),
    }
}

fn int_of(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

fn required_u16(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<u16, LoadError> {
    int_of(obj, tag)
        .and_then(|v| u16::try_from(v).ok())
        .ok_or(LoadError::DicomMissing(name))
}

fn first_f64(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    obj.get(tag)?
        .to_multi_float64()
        .ok()?
        .first()
        .copied()
        .filter(|v| v.is_finite())
}

fn unsupported(what: impl Into<String>) -> LoadError {
    LoadError::UnsupportedDicom(what.into())
}

fn corrupt(reason: impl Into<String>) -> LoadError {
    LoadError::Corrupt {
        format: SourceFormat::Dicom,
        reason: reason.into(),
    }
}

/// The imaging attributes that say how to read the samples.
struct PixelLayout {
    rows: u16,
    columns: u16,
    samples_per_pixel: u16,
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    planar: bool,
    photometric: String,
}

impl PixelLayout {
    fn read(obj: &InMemDicomObject, limits: &Limits) -> Result<Self, LoadError> {
        let rows = required_u16(obj, tags::ROWS, "Rows")?;
        let columns = required_u16(obj, tags::COLUMNS, "Columns")?;
        if rows == 0 || columns == 0 {
            return Err(corrupt(format!("the image is {columns}x{rows} pixels")));
        }
        // The limits are checked before anything is decoded.
        limits.check(u32::from(columns), u32::from(rows))?;
        let samples_per_pixel = int_of(obj, tags::SAMPLES_PER_PIXEL)
            .map_or(Ok(1), u16::try_from)
            .map_err(|_| LoadError::DicomMissing("Samples per Pixel"))?;
        let bits_allocated = required_u16(obj, tags::BITS_ALLOCATED, "Bits Allocated")?;
        let bits_stored = int_of(obj, tags::BITS_STORED)
            .map_or(Ok(bits_allocated), u16::try_from)
            .map_err(|_| LoadError::DicomMissing("Bits Stored"))?;
        let high_bit = int_of(obj, tags::HIGH_BIT)
            .map_or(Ok(bits_stored.saturating_sub(1)), u16::try_from)
            .map_err(|_| LoadError::DicomMissing("High Bit"))?;
        let signed = int_of(obj, tags::PIXEL_REPRESENTATION) == Some(1);
        let planar = int_of(obj, tags::PLANAR_CONFIGURATION) == Some(1);
        let photometric = string_of(obj, tags::PHOTOMETRIC_INTERPRETATION)
            .ok_or(LoadError::DicomMissing("Photometric Interpretation"))?
            .to_ascii_uppercase();
        let layout = Self {
            rows,
            columns,
            samples_per_pixel,
            bits_allocated,
            bits_stored,
            high_bit,
            signed,
            planar,
            photometric,
        };
        layout.validate()?;
        Ok(layout)
    }

    fn validate(&self) -> Result<(), LoadError> {
        if !matches!(self.bits_allocated, 8 | 16) {
            return Err(unsupported(format!(
                "{} bits allocated per sample (8 and 16 are supported)",
                self.bits_allocated
            )));
        }
        if self.bits_stored == 0
            || self.bits_stored > self.bits_allocated
            || self.high_bit >= self.bits_allocated
            || self.high_bit + 1 < self.bits_stored
        {
            return Err(corrupt(format!(
                "inconsistent bit depth: {} allocated, {} stored, high bit {}",
                self.bits_allocated, self.bits_stored, self.high_bit
            )));
        }
        match (self.samples_per_pixel, self.photometric.as_str()) {
            (1, "MONOCHROME1" | "MONOCHROME2")
            | (3, "RGB" | "YBR_FULL" | "YBR_FULL_422" | "YBR_ICT" | "YBR_RCT") => Ok(()),
            (1, "PALETTE COLOR") => Err(unsupported("palette colour images")),
            (samples, photometric) => Err(unsupported(format!(
                "photometric interpretation {photometric} with {samples} samples per pixel"
            ))),
        }
    }

    fn pixels(&self) -> usize {
        usize::from(self.rows) * usize::from(self.columns)
    }

    fn frame_bytes(&self) -> usize {
        self.pixels() * usize::from(self.samples_per_pixel) * usize::from(self.bits_allocated / 8)
    }

    /// The stored value of each sample, with its unused high bits masked off and its sign
    /// extended, from native-endian frame bytes.
    fn stored_values(&self, frame: &[u8]) -> Vec<i32> {
        let shift = u32::from(self.high_bit + 1 - self.bits_stored);
        let bits = u32::from(self.bits_stored);
        let mask: u32 = if bits >= 32 {
            u32::MAX
        } else {
            (1 << bits) - 1
        };
        let signed = self.signed;
        let extract = move |raw: u32| -> i32 {
            let v = (raw >> shift) & mask;
            if signed && bits < 32 && v & (1 << (bits - 1)) != 0 {
                // Sign extension of a `bits`-bit two's complement value.
                (v | !mask) as i32
            } else {
                v as i32
            }
        };
        let samples = self.pixels() * usize::from(self.samples_per_pixel);
        if self.bits_allocated == 8 {
            frame[..samples]
                .iter()
                .map(|&b| extract(u32::from(b)))
                .collect()
        } else {
            frame[..samples * 2]
                .chunks_exact(2)
                .map(|pair| extract(u32::from(u16::from_ne_bytes([pair[0], pair[1]]))))
                .collect()
        }
    }

    /// The smallest and largest stored value that Bits Stored allows.
    fn stored_range(&self) -> (i64, i64) {
        let bits = u32::from(self.bits_stored);
        if self.signed {
            (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
        } else {
            (0, (1i64 << bits) - 1)
        }
    }
}

/// The first frame's samples as modality values, oriented so that higher is brighter, with the
/// photometric interpretation and the file's first VOI window (mirrored for MONOCHROME1).
fn decode_image(
    obj: &DefaultDicomObject,
    limits: &Limits,
) -> Result<(GrayImage, Photometric, Option<Window>), LoadError> {
    let layout = PixelLayout::read(obj, limits)?;
    let pixel_data = obj.get(tags::PIXEL_DATA).ok_or(LoadError::NoPixelData)?;
    let (frame, compressed): (Cow<'_, [u8]>, bool) = match pixel_data.value() {
        Value::Primitive(PrimitiveValue::Empty) => return Err(LoadError::NoPixelData),
        Value::Primitive(primitive) => {
            let bytes = primitive.to_bytes();
            let needed = layout.frame_bytes();
            if bytes.len() < needed {
                return Err(corrupt(format!(
                    "the pixel data holds {} bytes, fewer than the {needed} its header calls for",
                    bytes.len()
                )));
            }
            let frame = match bytes {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..needed]),
                Cow::Owned(mut b) => {
                    b.truncate(needed);
                    Cow::Owned(b)
                }
            };
            (frame, false)
        }
        Value::PixelSequence(sequence) => {
            let Some(first) = sequence.fragments().first() else {
                return Err(LoadError::NoPixelData);
            };
            check_compressed_size(first, &layout, limits)?;
            (decode_compressed_frame(obj, &layout)?, true)
        }
        Value::Sequence(_) => return Err(corrupt("the pixel data is a sequence of items")),
    };
    // The decoders turn compressed colour (YBR) frames into RGB.
    let photometric = if compressed && layout.samples_per_pixel == 3 {
        "RGB"
    } else {
        layout.photometric.as_str()
    };
    if layout.samples_per_pixel == 3 {
        if photometric != "RGB" {
            return Err(unsupported(format!(
                "uncompressed colour in {photometric} (only RGB is converted to gray)"
            )));
        }
        let image = rgb_to_gray(&layout, &frame);
        return Ok((image, Photometric::Rgb, None));
    }
    let stored = layout.stored_values(&frame);
    drop(frame);
    let modality = ModalityTransform::read(obj, &layout)?;
    let (low, high) = modality.output_range();
    let monochrome1 = photometric == "MONOCHROME1";
    // A Presentation LUT Shape of INVERSE on a MONOCHROME2 image asks for it to be shown
    // inverted, as MONOCHROME1 is (on MONOCHROME1 it is the usual, consistent value).
    let inverse_shape = string_of(obj, tags::PRESENTATION_LUT_SHAPE)
        .is_some_and(|s| s.eq_ignore_ascii_case("INVERSE"));
    let invert = monochrome1 || inverse_shape;
    // The file's VOI: its VOI LUT Sequence when present, else its first window.
    let file_window = voi_lut_window(obj).or_else(|| {
        first_f64(obj, tags::WINDOW_CENTER)
            .zip(first_f64(obj, tags::WINDOW_WIDTH))
            .filter(|&(_, width)| width > 0.0)
            .map(|(center, width)| Window { center, width })
    });
    let window = file_window.map(|w| Window {
        center: if invert {
            low + high - w.center
        } else {
            w.center
        },
        width: w.width,
    });
    let samples = modality.apply(&stored, invert);
    let image = GrayImage {
        width: u32::from(layout.columns),
        height: u32::from(layout.rows),
        bits_stored: layout.bits_stored,
        samples,
    };
    let photometric = if monochrome1 {
        Photometric::Monochrome1
    } else {
        Photometric::Monochrome2
    };
    Ok((image, photometric, window))
}

/// The window that stands for the first VOI LUT of the VOI LUT Sequence (0028,3010): the
/// range of input values over which the LUT rises from 1 % to 99 % of its output range (a
/// linear window through the LUT's own transition, which shows what the LUT shows up to its
/// curvature). `None` without a usable LUT.
fn voi_lut_window(obj: &InMemDicomObject) -> Option<Window> {
    let item = obj
        .get(tags::VOILUT_SEQUENCE)?
        .items()
        .and_then(<[_]>::first)?;
    let descriptor: Vec<i64> = item
        .get(tags::LUT_DESCRIPTOR)?
        .to_multi_int::<i64>()
        .ok()
        .filter(|d| d.len() == 3)?;
    let count = match descriptor[0] {
        0 => 65536,
        n => usize::try_from(n & 0xFFFF).ok()?,
    };
    // The first value mapped: read as signed when it is above 32767 and the LUT is for signed
    // data is ambiguous; modality values of chest films are non-negative, so unsigned.
    let first_mapped = (descriptor[1] & 0xFFFF) as f64;
    let entry_bits = u32::try_from(descriptor[2]).ok()?.clamp(1, 16);
    let data = item.get(tags::LUT_DATA)?;
    let entries: Vec<f64> = match data.value() {
        Value::Primitive(PrimitiveValue::U16(values)) => {
            values.iter().map(|&v| f64::from(v)).collect()
        }
        Value::Primitive(PrimitiveValue::U8(bytes)) if entry_bits > 8 => bytes
            .chunks_exact(2)
            .map(|pair| f64::from(u16::from_le_bytes([pair[0], pair[1]])))
            .collect(),
        Value::Primitive(PrimitiveValue::U8(bytes)) => {
            bytes.iter().map(|&b| f64::from(b)).collect()
        }
        _ => data
            .to_multi_int::<i64>()
            .ok()?
            .into_iter()
            .map(|v| (v & 0xFFFF) as f64)
            .collect(),
    };
    if entries.len() < count || count < 2 {
        return None;
    }
    let entries = &entries[..count];
    let lo = entries.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = entries.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi <= lo {
        return None;
    }
    let rising = entries[count - 1] >= entries[0];
    let level = |f: f64| lo + f * (hi - lo);
    // Indices where the LUT passes 1 % and 99 % of its range (in its own direction).
    let (a, b) = if rising {
        (level(0.01), level(0.99))
    } else {
        (level(0.99), level(0.01))
    };
    let start = entries
        .iter()
        .position(|&v| if rising { v >= a } else { v <= a })?;
    let end = entries
        .iter()
        .rposition(|&v| if rising { v <= b } else { v >= b })?;
    let (start, end) = (start.min(end), start.max(end));
    let low_input = first_mapped + start as f64;
    let high_input = first_mapped + end as f64;
    Some(Window::from_range(
        low_input,
        high_input.max(low_input + 1.0),
    ))
}

/// Checks the size written in the compressed stream itself (JPEG frame header or JPEG 2000
/// SIZ marker) against the limits and against Rows and Columns, before the decoder allocates
/// anything from it.
fn check_compressed_size(
    fragment: &[u8],
    layout: &PixelLayout,
    limits: &Limits,
) -> Result<(), LoadError> {
    let Some((width, height)) = compressed_frame_size(fragment) else {
        return Ok(());
    };
    limits.check(width, height)?;
    if (width, height) != (u32::from(layout.columns), u32::from(layout.rows)) {
        return Err(corrupt(format!(
            "the compressed image is {width}x{height} pixels but the header says {}x{}",
            layout.columns, layout.rows
        )));
    }
    Ok(())
}

/// Width and height written in a JPEG or JPEG 2000 codestream, if it is one and they can be read.
fn compressed_frame_size(stream: &[u8]) -> Option<(u32, u32)> {
    let be16 = |at: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes([
            *stream.get(at)?,
            *stream.get(at + 1)?,
        ])))
    };
    let be32 = |at: usize| -> Option<u32> {
        let b = stream.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if stream.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) {
        // JPEG 2000: SOC, then SIZ: Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz.
        let width = be32(8)?.checked_sub(be32(16)?)?;
        let height = be32(12)?.checked_sub(be32(20)?)?;
        return Some((width, height));
    }
    if stream.starts_with(&[0xFF, 0xD8]) {
        // JPEG: walk the marker segments up to the first start-of-frame.
        let mut at = 2;
        loop {
            while *stream.get(at)? != 0xFF {
                at += 1;
            }
            while *stream.get(at)? == 0xFF {
                at += 1;
            }
            let marker = *stream.get(at)?;
            at += 1;
            let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
            if is_frame {
                // Lf, P, Y (height), X (width).
                return Some((be16(at + 5)?, be16(at + 3)?));
            }
            if matches!(marker, 0xD0..=0xD9 | 0x01) {
                continue;
            }
            at += usize::try_from(be16(at)?).ok()?;
        }
    }
    None
}

/// Decodes the first frame of encapsulated (compressed) pixel data with dicom-pixeldata.
fn decode_compressed_frame<'a>(
    obj: &'a DefaultDicomObject,
    layout: &PixelLayout,
) -> Result<Cow<'a, [u8]>, LoadError> {
    // The codecs behind dicom-pixeldata (jpeg-decoder, openjp2) are not guaranteed to be
    // panic-free on hostile input: a panic is caught here, as a last resort, and becomes an error.
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        obj.decode_pixel_data_frame(0)
            .map(dicom_pixeldata::DecodedPixelData::into_data)
    }));
    let data = match decoded {
        Ok(Ok(data)) => data,
        Ok(Err(_)) => {
            return Err(corrupt("the compressed pixel data cannot be decoded"));
        }
        Err(_) => return Err(LoadError::DecoderCrashed(SourceFormat::Dicom)),
    };
    let needed = layout.frame_bytes();
    if data.len() < needed {
        return Err(corrupt(format!(
            "the compressed pixel data decodes to {} bytes, fewer than the {needed} its header calls for",
            data.len()
        )));
    }
    Ok(Cow::Owned(data))
}

/// Converts an RGB frame (8 or 16 bits, interleaved or planar) to luma, as `image` does.
fn rgb_to_gray(layout: &PixelLayout, frame: &[u8]) -> GrayImage {
    let pixels = layout.pixels();
    let values: Vec<i32> = layout.stored_values(frame);
    let channel = |pixel: usize, c: usize| -> f32 {
        let index = if layout.planar {
            c * pixels + pixel
        } else {
            pixel * 3 + c
        };
        values[index].max(0) as f32
    };
    let gray = (0..pixels)
        .map(|p| {
            let l = luma(channel(p, 0), channel(p, 1), channel(p, 2));
            l.round().clamp(0.0, f32::from(u16::MAX)) as u16
        })
        .collect();
    GrayImage {
        width: u32::from(layout.columns),
        height: u32::from(layout.rows),
        bits_stored: layout.bits_stored,
        samples: Samples::U16(gray),
    }
}

/// The Modality LUT: a lookup table, or a linear rescale.
enum ModalityTransform {
    Lut {
        first_mapped: i64,
        entries: Vec<u16>,
    },
    Rescale {
        slope: f64,
        intercept: f64,
        stored_range: (i64, i64),
    },
}

impl ModalityTransform {
    fn read(obj: &InMemDicomObject, layout: &PixelLayout) -> Result<Self, LoadError> {
        if let Some(lut) = Self::read_lut(obj, layout)? {
            return Ok(lut);
        }
        let slope = first_f64(obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
        let intercept = first_f64(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
        if slope == 0.0 {
            return Err(corrupt("the rescale slope is zero"));
        }
        Ok(Self::Rescale {
            slope,
            intercept,
            stored_range: layout.stored_range(),
        })
    }

    /// The first item of the Modality LUT Sequence, if there is one.
    fn read_lut(obj: &InMemDicomObject, layout: &PixelLayout) -> Result<Option<Self>, LoadError> {
        let Some(sequence) = obj.get(tags::MODALITY_LUT_SEQUENCE) else {
            return Ok(None);
        };
        let Some(item) = sequence.items().and_then(<[_]>::first) else {
            return Ok(None);
        };
        let descriptor: Vec<i64> = item
            .get(tags::LUT_DESCRIPTOR)
            .and_then(|e| e.to_multi_int::<i64>().ok())
            .filter(|d| d.len() == 3)
            .ok_or(LoadError::DicomMissing("Modality LUT Descriptor"))?;
        // Number of entries (0 means 65536); first stored value mapped, read as signed when the
        // samples are; bits per entry.
        let count = match descriptor[0] {
            0 => 65536,
            n => usize::try_from(n & 0xFFFF).unwrap_or(0),
        };
        let first_mapped = if layout.signed {
            i64::from((descriptor[1] & 0xFFFF) as u16 as i16)
        } else {
            descriptor[1] & 0xFFFF
        };
        let entry_bits = u32::try_from(descriptor[2]).unwrap_or(0).clamp(1, 16);
        let data = item
            .get(tags::LUT_DATA)
            .ok_or(LoadError::DicomMissing("Modality LUT Data"))?;
        let mut entries: Vec<u16> = match data.value() {
            Value::Primitive(PrimitiveValue::U16(values)) => values.to_vec(),
            Value::Primitive(PrimitiveValue::I16(values)) => {
                values.iter().map(|&v| v as u16).collect()
            }
            Value::Primitive(PrimitiveValue::U8(bytes)) if entry_bits > 8 => bytes
                .chunks_exact(2)
                .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
                .collect(),
            Value::Primitive(PrimitiveValue::U8(bytes)) => {
                bytes.iter().map(|&b| u16::from(b)).collect()
            }
            _ => data
                .to_multi_int::<i64>()
                .map_err(|_| LoadError::DicomMissing("Modality LUT Data"))?
                .into_iter()
                .map(|v| (v & 0xFFFF) as u16)
                .collect(),
        };
        if entries.len() < count || count == 0 {
            return Err(corrupt(format!(
                "the Modality LUT has {} entries, its descriptor says {count}",
                entries.len()
            )));
        }
        entries.truncate(count);
        let mask = ((1u32 << entry_bits) - 1) as u16;
        for entry in &mut entries {
            *entry &= mask;
        }
        Ok(Some(Self::Lut {
            first_mapped,
            entries,
        }))
    }

    /// The smallest and largest value this transform can output.
    fn output_range(&self) -> (f64, f64) {
        match self {
            Self::Lut { entries, .. } => {
                let low = entries.iter().copied().min().unwrap_or(0);
                let high = entries.iter().copied().max().unwrap_or(0);
                (f64::from(low), f64::from(high))
            }
            Self::Rescale {
                slope,
                intercept,
                stored_range: (min, max),
            } => {
                let a = *min as f64 * slope + intercept;
                let b = *max as f64 * slope + intercept;
                (a.min(b), a.max(b))
            }
        }
    }

    /// Maps stored values to modality values, mirrored within the output range when
    /// `invert` (MONOCHROME1). Integer results in `0..=65535` stay integers.
    fn apply(&self, stored: &[i32], invert: bool) -> Samples {
        let (low, high) = self.output_range();
        match self {
            Self::Lut {
                first_mapped,
                entries,
            } => {
                let last = entries.len() - 1;
                let mirror = (low + high) as u32;
                let lookup = |v: i32| {
                    let index = (i64::from(v) - first_mapped).clamp(0, last as i64) as usize;
                    let out = entries[index];
                    if invert {
                        (mirror - u32::from(out)) as u16
                    } else {
                        out
                    }
                };
                Samples::U16(stored.iter().map(|&v| lookup(v)).collect())
            }
            Self::Rescale {
                slope, intercept, ..
            } => {
                let integral = slope.fract() == 0.0 && intercept.fract() == 0.0;
                if integral && low >= 0.0 && high <= f64::from(u16::MAX) {
                    let (slope, intercept) = (*slope as i64, *intercept as i64);
                    let mirror = (low + high) as i64;
                    let map = |v: i32| {
                        let out = i64::from(v) * slope + intercept;
                        let out = if invert { mirror - out } else { out };
                        out.clamp(0, i64::from(u16::MAX)) as u16
                    };
                    Samples::U16(stored.iter().map(|&v| map(v)).collect())
                } else {
                    let mirror = low + high;
                    let map = |v: i32| {
                        let out = f64::from(v) * slope + intercept;
                        (if invert { mirror - out } else { out }) as f32
                    };
                    Samples::F32(stored.iter().map(|&v| map(v)).collect())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_stream_sizes_are_read_from_their_headers() {
        // JPEG: SOI, an APP0 segment, then SOF0 with height 300 and width 500.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB];
        jpeg.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x01, 0x2C, 0x01, 0xF4]);
        assert_eq!(compressed_frame_size(&jpeg), Some((500, 300)));
        // JPEG 2000: SOC, SIZ with a 10-pixel origin offset.
        let mut j2k = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for v in [1010u32, 2010, 10, 10] {
            j2k.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(compressed_frame_size(&j2k), Some((1000, 2000)));
        assert_eq!(compressed_frame_size(b"garbage"), None);
        assert_eq!(compressed_frame_size(&[0xFF, 0xD8, 0xFF]), None);
    }

    #[test]
    fn stored_values_are_masked_and_sign_extended() {
        let layout = PixelLayout {
            rows: 1,
            columns: 3,
            samples_per_pixel: 1,
            bits_allocated: 16,
            bits_stored: 12,
            high_bit: 11,
            signed: true,
            planar: false,
            photometric: "MONOCHROME2".into(),
        };
        // 0xF800 has overlay bits above bit 11 set: masked to 0x800 = -2048 in 12 bits.
        let raw: Vec<u8> = [0x07FFu16, 0xF800, 0x0FFF]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(layout.stored_values(&raw), vec![2047, -2048, -1]);
        assert_eq!(layout.stored_range(), (-2048, 2047));
    }

    #[test]
    fn rescale_and_lut_mirror_monochrome1_within_their_output_range() {
        let rescale = ModalityTransform::Rescale {
            slope: 2.0,
            intercept: 100.0,
            stored_range: (0, 1023),
        };
        assert_eq!(rescale.output_range(), (100.0, 2146.0));
        assert_eq!(rescale.apply(&[0, 10], false), Samples::U16(vec![100, 120]));
        assert_eq!(
            rescale.apply(&[0, 10], true),
            Samples::U16(vec![2146, 2126])
        );
        let negative = ModalityTransform::Rescale {
            slope: 1.0,
            intercept: -1024.0,
            stored_range: (0, 4095),
        };
        assert_eq!(
            negative.apply(&[0, 1024], false),
            Samples::F32(vec![-1024.0, 0.0])
        );
        let lut = ModalityTransform::Lut {
            first_mapped: 2,
            entries: vec![10, 20, 40],
        };
        assert_eq!(lut.apply(&[0, 3, 9], false), Samples::U16(vec![10, 20, 40]));
        assert_eq!(lut.apply(&[0, 3, 9], true), Samples::U16(vec![40, 30, 10]));
    }
}
