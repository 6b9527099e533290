//! Why a study or a folder could not be loaded, in words a radiologist or an IT person understands.
//!
//! The messages never contain the file's path (callers put it next to the message) nor any value
//! read from the file that could identify a patient.

use std::fmt;

use super::SourceFormat;

/// Why a study, or a folder holding studies, could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file or folder does not exist.
    #[error("no such file or folder")]
    NotFound,
    /// The operating system refused to open the file or list the folder.
    #[error("permission denied: the file or folder cannot be opened")]
    PermissionDenied,
    /// Reading failed for another operating-system reason (disk error, network drive gone...).
    #[error("cannot read: {0}")]
    Read(String),
    /// A folder was expected (the folder to scan is a file).
    #[error("not a folder")]
    NotAFolder,
    /// A symbolic link leads back to a folder that contains it.
    #[error("symbolic link loop: this folder links back to one of its parent folders; skipped")]
    SymlinkLoop,
    /// A symbolic link whose target does not exist.
    #[error("broken symbolic link: its target does not exist")]
    BrokenLink,
    /// A folder was given where a study (a file) was expected.
    #[error("this is a folder, not a study file: open it as a folder instead")]
    IsAFolder,
    /// A named pipe, socket or device file: never read, as reading could block.
    #[error("not a regular file (named pipe, socket or device); skipped")]
    NotRegularFile,
    /// The file has no bytes at all.
    #[error("empty file (0 bytes)")]
    Empty,
    /// The file is larger than [`Limits::max_file_bytes`](super::Limits::max_file_bytes).
    #[error("file is {}, above the {} limit", Bytes(*size_bytes), Bytes(*max_bytes))]
    FileTooLarge {
        /// Size of the file in bytes.
        size_bytes: u64,
        /// The limit in bytes.
        max_bytes: u64,
    },
    /// The file is recognisably something else (a PDF report, a thumbnail cache...).
    #[error("not an image: {0}")]
    NotAnImage(&'static str),
    /// The content is not recognised at all.
    #[error("not a JPEG, PNG or DICOM file")]
    UnknownFormat,
    /// A side of the image is above [`Limits::max_side_px`](super::Limits::max_side_px).
    #[error("image is {width}x{height} pixels, above the {max_side_px}-pixel limit")]
    TooLarge {
        /// Width in pixels, as the file's header states it.
        width: u32,
        /// Height in pixels, as the file's header states it.
        height: u32,
        /// The limit on either side, in pixels.
        max_side_px: u32,
    },
    /// The image has more pixels than [`Limits::max_pixels`](super::Limits::max_pixels).
    #[error(
        "image is {width}x{height} pixels ({:.1} megapixels), above the {:.1}-megapixel limit",
        megapixels(u64::from(*width) * u64::from(*height)),
        megapixels(*max_pixels)
    )]
    TooManyPixels {
        /// Width in pixels, as the file's header states it.
        width: u32,
        /// Height in pixels, as the file's header states it.
        height: u32,
        /// The limit on the number of pixels.
        max_pixels: u64,
    },
    /// The file ends before the image does (a half-copied file).
    #[error("truncated {0}: the file ends before the image does")]
    Truncated(SourceFormat),
    /// The decoder rejected the data.
    #[error("damaged {format}: {reason}")]
    Corrupt {
        /// The format the file claims to be.
        format: SourceFormat,
        /// What the decoder reported.
        reason: String,
    },
    /// A DICOM data element claims more bytes than the file holds.
    #[error(
        "damaged DICOM file: element ({group:04X},{element:04X}) says it holds {claimed_bytes} bytes \
         but only {remaining_bytes} remain"
    )]
    DicomBadLength {
        /// Group number of the element's tag.
        group: u16,
        /// Element number of the element's tag.
        element: u16,
        /// The length the element's header claims.
        claimed_bytes: u64,
        /// The bytes left in the file (or in the enclosing item) after the header.
        remaining_bytes: u64,
    },
    /// A DICOM file (a report, a presentation state...) without an image.
    #[error("DICOM file has no pixel data")]
    NoPixelData,
    /// A required DICOM attribute is missing or unreadable.
    #[error("DICOM file lacks a valid {0} attribute")]
    DicomMissing(&'static str),
    /// The transfer syntax (compression) is not one this program decodes.
    #[error("DICOM compression not supported: {0}")]
    UnsupportedTransferSyntax(String),
    /// A DICOM image this program does not handle (colour palettes, 32-bit samples...).
    #[error("unsupported DICOM image: {0}")]
    UnsupportedDicom(String),
    /// A decoder library failed in an unexpected way (caught; the file is probably damaged).
    #[error("the {0} decoder failed unexpectedly on this file; it is probably damaged")]
    DecoderCrashed(SourceFormat),
}

impl LoadError {
    /// The error for an operating-system failure, without the path the OS may have been given.
    pub fn from_io(err: &std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound,
            std::io::ErrorKind::PermissionDenied => Self::PermissionDenied,
            std::io::ErrorKind::UnexpectedEof => Self::Read("the file ended unexpectedly".into()),
            _ => Self::Read(err.to_string()),
        }
    }
}

impl From<std::io::Error> for LoadError {
    fn from(err: std::io::Error) -> Self {
        Self::from_io(&err)
    }
}

fn megapixels(pixels: u64) -> f64 {
    pixels as f64 / 1e6
}

/// A byte count shown with a binary unit ("3.2 GiB").
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} bytes", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_wording_users_see() {
        let big = LoadError::TooLarge {
            width: 60000,
            height: 60000,
            max_side_px: 16384,
        };
        assert_eq!(
            big.to_string(),
            "image is 60000x60000 pixels, above the 16384-pixel limit"
        );
        assert_eq!(LoadError::Empty.to_string(), "empty file (0 bytes)");
        assert_eq!(
            LoadError::NoPixelData.to_string(),
            "DICOM file has no pixel data"
        );
        assert_eq!(
            LoadError::Truncated(SourceFormat::Jpeg).to_string(),
            "truncated JPEG: the file ends before the image does"
        );
        let file = LoadError::FileTooLarge {
            size_bytes: 3 * 1024 * 1024 * 1024 + 200 * 1024 * 1024,
            max_bytes: 512 * 1024 * 1024,
        };
        assert_eq!(
            file.to_string(),
            "file is 3.2 GiB, above the 512.0 MiB limit"
        );
        let many = LoadError::TooManyPixels {
            width: 10000,
            height: 9000,
            max_pixels: 64 << 20,
        };
        assert_eq!(
            many.to_string(),
            "image is 10000x9000 pixels (90.0 megapixels), above the 67.1-megapixel limit"
        );
    }

    #[test]
    fn io_errors_never_carry_the_path() {
        let err = std::fs::read("/definitely/not/here/patient-smith.dcm").unwrap_err();
        let ours = LoadError::from_io(&err);
        assert_eq!(ours, LoadError::NotFound);
        assert!(!ours.to_string().contains("smith"));
    }
}
