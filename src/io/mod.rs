//! Finding and decoding studies: JPEG, PNG and DICOM, recognised by content.
//!
//! - [`discover`] lists the files under a folder (sorted, hidden entries skipped, symbolic link
//!   loops reported, never followed twice).
//! - [`load_study`] reads one file, hashes it, recognises its format from its bytes and decodes
//!   it into a [`GrayImage`] that keeps the source's bit depth, with its [`StudyMeta`].
//! - [`load_study_for_model`] does the same but may decode a JPEG at a reduced scale, which is
//!   several times faster when the model only needs a couple of hundred pixels a side.
//!
//! Nothing here writes to the folder being read, and nothing panics on bad input: every failure
//! is a [`LoadError`] kept with that one study.

mod dicom;
mod discover;
mod error;
mod gray;
mod hash;
mod raster;
mod sniff;

use std::fmt;
use std::io::Read as _;
use std::path::Path;

pub use dicom::transfer_syntax_name;
pub use discover::{DiscoveredFile, Discovery, discover};
pub use error::LoadError;
pub use gray::{GrayImage, Samples, Window};
pub use hash::{hex, sha256_hex};
pub use sniff::sniff;

/// The file format a study was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// JPEG (baseline or progressive), 8 bits.
    Jpeg,
    /// PNG, 8 or 16 bits.
    Png,
    /// DICOM (PS3.10 file or raw data set).
    Dicom,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Jpeg => "JPEG",
            Self::Png => "PNG",
            Self::Dicom => "DICOM",
        })
    }
}

/// How the source encoded brightness.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Photometric {
    /// Low values are white (DICOM MONOCHROME1); the samples have been inverted.
    Monochrome1,
    /// Low values are black (DICOM MONOCHROME2, gray JPEG and PNG).
    Monochrome2,
    /// Colour, converted to gray (luma, Rec. 709 weights).
    Rgb,
    /// Any other DICOM photometric interpretation, as written in the file.
    Other(String),
}

impl fmt::Display for Photometric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Monochrome1 => f.write_str("MONOCHROME1"),
            Self::Monochrome2 => f.write_str("MONOCHROME2"),
            Self::Rgb => f.write_str("RGB"),
            Self::Other(name) => f.write_str(name),
        }
    }
}

/// Identifying DICOM attributes, when present in the file. Holds patient data: never log it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DicomTags {
    /// Patient ID (0010,0020).
    pub patient_id: Option<String>,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: Option<String>,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: Option<String>,
    /// Modality (0008,0060), for example "CR" or "DX".
    pub modality: Option<String>,
    /// View Position (0018,5101), for example "PA" or "AP".
    pub view_position: Option<String>,
    /// Study Date (0008,0020), as written (YYYYMMDD).
    pub study_date: Option<String>,
    /// Body Part Examined (0018,0015), for example "CHEST".
    pub body_part_examined: Option<String>,
    /// Patient's Age (0010,1010) as written, for example "045Y" or "006M".
    pub patient_age: Option<String>,
    /// Patient's Sex (0010,0040): "F", "M" or "O".
    pub patient_sex: Option<String>,
    /// Study Time (0008,0030), as written (HHMMSS.FFFFFF, any tail may be missing).
    pub study_time: Option<String>,
    /// Transfer Syntax UID; for a raw data set, the syntax it was read with. See
    /// [`transfer_syntax_name`].
    pub transfer_syntax: String,
}

/// What is known about a study besides its pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyMeta {
    /// Width of the image in the file, in pixels (even when it was decoded at a reduced scale).
    pub width: u32,
    /// Height of the image in the file, in pixels (even when it was decoded at a reduced scale).
    pub height: u32,
    /// The file's format.
    pub format: SourceFormat,
    /// Significant bits per sample in the source (8 for JPEG, 8 or 16 for PNG, Bits Stored for
    /// DICOM).
    pub bits_stored: u16,
    /// How the source encoded brightness.
    pub photometric: Photometric,
    /// Lower-case hexadecimal SHA-256 of the file's bytes: the study's identity.
    pub sha256: String,
    /// Size of the file in bytes.
    pub file_size_bytes: u64,
    /// Identifying DICOM attributes (DICOM only).
    pub dicom: Option<DicomTags>,
    /// The window to show the study with first. DICOM: the file's first VOI window (centre
    /// mirrored for MONOCHROME1, see [`GrayImage`] orientation), else the samples' actual
    /// minimum to maximum. JPEG and PNG: the nominal range `0..=2^bits_stored - 1`, never
    /// stretched to the content.
    pub default_window: Window,
}

/// A decoded study: metadata and pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Study {
    /// What is known about the study.
    pub meta: StudyMeta,
    /// The pixels, higher is brighter. Its size equals `meta.width` x `meta.height`, except when
    /// loaded with [`load_study_for_model`], which may decode a JPEG at 1/2, 1/4 or 1/8 scale.
    pub image: GrayImage,
}

/// Limits checked on the file size and on the image header, before anything is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted width or height, in pixels.
    pub max_side_px: u32,
    /// Largest accepted number of pixels (width x height).
    pub max_pixels: u64,
    /// Largest accepted file, in bytes.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    /// 16384 pixels a side, 64 Mi pixels (8192 x 8192; chest films are 5 to 20 megapixels), and
    /// 512 MiB files.
    fn default() -> Self {
        Self {
            max_side_px: 16384,
            max_pixels: 64 << 20,
            max_file_bytes: 512 << 20,
        }
    }
}

impl Limits {
    /// Checks the size an image header states.
    pub fn check(&self, width: u32, height: u32) -> Result<(), LoadError> {
        if width > self.max_side_px || height > self.max_side_px {
            return Err(LoadError::TooLarge {
                width,
                height,
                max_side_px: self.max_side_px,
            });
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(LoadError::TooManyPixels {
                width,
                height,
                max_pixels: self.max_pixels,
            });
        }
        Ok(())
    }

    /// The most a decoder may allocate for one image: four 16-bit channels per pixel.
    pub fn max_decoded_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(8)
    }
}

/// How to load a study.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Size limits, checked before decoding.
    pub limits: Limits,
    /// When set, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale, the smallest that keeps both
    /// sides at or above this many pixels. Other formats are always decoded at full size.
    pub reduce_to_min_side_px: Option<u32>,
}

/// What a format decoder returns, before the file-level metadata is added.
pub(crate) struct Decoded {
    width: u32,
    height: u32,
    bits_stored: u16,
    photometric: Photometric,
    default_window: Window,
    dicom: Option<DicomTags>,
    image: GrayImage,
}

/// Reads, hashes, recognises and decodes the study at `path`, with the default [`Limits`].
pub fn load_study(path: &Path) -> Result<Study, LoadError> {
    load_study_with(path, &LoadOptions::default())
}

/// Like [`load_study`], but a JPEG may be decoded at a reduced scale that keeps both sides at or
/// above `min_side_px` (see [`LoadOptions::reduce_to_min_side_px`]); `meta` still reports the
/// file's full size. Use it when the pixels only feed the model.
pub fn load_study_for_model(path: &Path, min_side_px: u32) -> Result<Study, LoadError> {
    load_study_with(
        path,
        &LoadOptions {
            reduce_to_min_side_px: Some(min_side_px),
            ..LoadOptions::default()
        },
    )
}

/// [`load_study`] with explicit options.
pub fn load_study_with(path: &Path, options: &LoadOptions) -> Result<Study, LoadError> {
    let bytes = read_file(path, &options.limits)?;
    load_study_bytes_with(&bytes, options)
}

/// Recognises and decodes a study held in memory, with the default [`Limits`].
pub fn load_study_bytes(bytes: &[u8]) -> Result<Study, LoadError> {
    load_study_bytes_with(bytes, &LoadOptions::default())
}

/// [`load_study_for_model`] for a study held in memory.
pub fn load_study_bytes_for_model(bytes: &[u8], min_side_px: u32) -> Result<Study, LoadError> {
    load_study_bytes_with(
        bytes,
        &LoadOptions {
            reduce_to_min_side_px: Some(min_side_px),
            ..LoadOptions::default()
        },
    )
}

/// [`load_study_bytes`] with explicit options.
pub fn load_study_bytes_with(bytes: &[u8], options: &LoadOptions) -> Result<Study, LoadError> {
    let file_size_bytes = bytes.len() as u64;
    if bytes.is_empty() {
        return Err(LoadError::Empty);
    }
    if file_size_bytes > options.limits.max_file_bytes {
        return Err(LoadError::FileTooLarge {
            size_bytes: file_size_bytes,
            max_bytes: options.limits.max_file_bytes,
        });
    }
    let format = sniff(bytes).ok_or_else(|| match sniff::describe_non_image(bytes) {
        Some(what) => LoadError::NotAnImage(what),
        None => LoadError::UnknownFormat,
    })?;
    let decoded = match format {
        SourceFormat::Jpeg | SourceFormat::Png => raster::decode(
            bytes,
            format,
            &options.limits,
            options.reduce_to_min_side_px,
        )?,
        SourceFormat::Dicom => {
            let layout = sniff::dicom_layout(bytes).ok_or(LoadError::UnknownFormat)?;
            dicom::decode(bytes, layout, &options.limits)?
        }
    };
    Ok(Study {
        meta: StudyMeta {
            width: decoded.width,
            height: decoded.height,
            format,
            bits_stored: decoded.bits_stored,
            photometric: decoded.photometric,
            sha256: sha256_hex(bytes),
            file_size_bytes,
            dicom: decoded.dicom,
            default_window: decoded.default_window,
        },
        image: decoded.image,
    })
}

/// Reads a whole study file with the default [`Limits`]: only a regular file (a named pipe or a
/// device such as `/dev/zero` is refused before it is opened), and no larger than a study may be.
/// For every path that reads a file named by a user or a store, not only for decoding.
pub fn read_study_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    read_file(path, &Limits::default())
}

/// Reads a whole file, refusing files above the size limit before reading them.
fn read_file(path: &Path, limits: &Limits) -> Result<Vec<u8>, LoadError> {
    // Checked before opening: opening a named pipe would block.
    let metadata = std::fs::metadata(path).map_err(|e| LoadError::from_io(&e))?;
    if metadata.is_dir() {
        return Err(LoadError::IsAFolder);
    }
    if !metadata.is_file() {
        return Err(LoadError::NotRegularFile);
    }
    let file = std::fs::File::open(path).map_err(|e| LoadError::from_io(&e))?;
    let size_bytes = metadata.len();
    if size_bytes > limits.max_file_bytes {
        return Err(LoadError::FileTooLarge {
            size_bytes,
            max_bytes: limits.max_file_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size_bytes).unwrap_or(0));
    // The file may grow while it is read (still being copied): read one byte past the limit at
    // most, so that the limit holds.
    file.take(limits.max_file_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| LoadError::from_io(&e))?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(LoadError::FileTooLarge {
            size_bytes: bytes.len() as u64,
            max_bytes: limits.max_file_bytes,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
