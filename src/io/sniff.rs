//! Recognising a file by its content, never by its name.

use super::SourceFormat;
use super::dicom::structure;

/// How the DICOM bytes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DicomLayout {
    /// A DICOM file (PS3.10): optional 128-byte preamble, "DICM", file meta group, data set.
    /// `meta_offset` is where the file meta group starts (just after "DICM").
    Part10 {
        /// Offset of the first file meta element.
        meta_offset: usize,
    },
    /// A bare data set with no preamble, no "DICM" and no file meta group, as older archives
    /// hold, in little-endian byte order.
    Raw {
        /// Explicit VR (each element names its value representation) or implicit VR.
        explicit_vr: bool,
    },
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The format of `bytes`, from their content: JPEG, PNG or DICOM, or `None` for anything else.
///
/// DICOM is recognised by "DICM" at offset 128 (the standard layout), at offset 0 (a file whose
/// preamble was stripped), or as a raw data set without either: its first elements must parse
/// as a well-formed little-endian data set starting with group 0002 or 0008.
pub fn sniff(bytes: &[u8]) -> Option<SourceFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(SourceFormat::Jpeg)
    } else if bytes.starts_with(PNG_MAGIC) {
        Some(SourceFormat::Png)
    } else if dicom_layout(bytes).is_some() {
        Some(SourceFormat::Dicom)
    } else {
        None
    }
}

/// Where the DICOM content of `bytes` starts and how it is encoded, or `None` if it is not DICOM.
pub(crate) fn dicom_layout(bytes: &[u8]) -> Option<DicomLayout> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        return Some(DicomLayout::Part10 { meta_offset: 132 });
    }
    if bytes.starts_with(b"DICM") {
        return Some(DicomLayout::Part10 { meta_offset: 4 });
    }
    // A raw data set: try explicit VR first, since an explicit header read as implicit would
    // give a huge length and fail anyway.
    [true, false]
        .into_iter()
        .find(|&explicit_vr| structure::looks_like_raw_dataset(bytes, explicit_vr))
        .map(|explicit_vr| DicomLayout::Raw { explicit_vr })
}

/// What a file that is not an image is, when its content says so clearly.
pub(crate) fn describe_non_image(bytes: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"%PDF", "PDF document"),
        (
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
            "Windows thumbnail cache (Thumbs.db) or old Office document",
        ),
        (b"PK\x03\x04", "ZIP archive or Office document"),
        (b"GIF87a", "GIF image (export it as PNG, JPEG or DICOM)"),
        (b"GIF89a", "GIF image (export it as PNG, JPEG or DICOM)"),
        (b"II*\0", "TIFF image (export it as PNG, JPEG or DICOM)"),
        (b"MM\0*", "TIFF image (export it as PNG, JPEG or DICOM)"),
        (b"BM", "BMP image (export it as PNG, JPEG or DICOM)"),
        (
            b"\0\0\0\x0CjP  \r\n\x87\n",
            "JPEG 2000 file (supported only inside DICOM)",
        ),
        (
            b"\xFF\x4F\xFF\x51",
            "JPEG 2000 codestream (supported only inside DICOM)",
        ),
        (b"\x1F\x8B", "gzip archive"),
        (b"7z\xBC\xAF\x27\x1C", "7-Zip archive"),
        (b"Rar!", "RAR archive"),
        (b"SQLite format 3\0", "SQLite database"),
        (b"\0\0\0\x01Bud1", "macOS folder settings (.DS_Store)"),
        (b"{\\rtf", "RTF document"),
    ];
    if let Some((_, what)) = MAGICS.iter().find(|(magic, _)| bytes.starts_with(magic)) {
        return Some(what);
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("WebP image (export it as PNG, JPEG or DICOM)");
    }
    if looks_like_text(bytes) {
        return Some("text file");
    }
    None
}

/// True when the start of `bytes` is printable UTF-8 text (with tabs and line breaks).
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    if head.is_empty() {
        return false;
    }
    // A multi-byte character may be cut at the end of the window.
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(err) if err.error_len().is_none() => {
            // Only the last, cut character is invalid: check what comes before it.
            match std::str::from_utf8(&head[..err.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0C'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognised_by_content() {
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]),
            Some(SourceFormat::Jpeg)
        );
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR"),
            Some(SourceFormat::Png)
        );
        let mut part10 = vec![0u8; 128];
        part10.extend_from_slice(b"DICM");
        assert_eq!(sniff(&part10), Some(SourceFormat::Dicom));
        assert_eq!(
            dicom_layout(b"DICM\x02\x00"),
            Some(DicomLayout::Part10 { meta_offset: 4 })
        );
        assert_eq!(sniff(b"%PDF-1.7\n"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"hello, this is a text file named scan.dcm\n"), None);
    }

    #[test]
    fn junk_is_described() {
        assert_eq!(describe_non_image(b"%PDF-1.4\n%"), Some("PDF document"));
        assert_eq!(
            describe_non_image(b"patient list\r\n\tbed 4\n"),
            Some("text file")
        );
        assert_eq!(
            describe_non_image("naïve café\n".as_bytes()),
            Some("text file")
        );
        assert_eq!(describe_non_image(&[0, 1, 2, 3, 200, 201]), None);
        assert!(
            describe_non_image(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0\0")
                .is_some_and(|what| what.contains("Thumbs.db"))
        );
    }

    #[test]
    fn raw_datasets_are_recognised_in_both_vr_encodings() {
        // (0008,0016) SOP Class UID then (0008,0018) SOP Instance UID, implicit VR.
        let mut implicit = Vec::new();
        for (element, value) in [(0x0016u16, b"1.2.3\0".as_slice()), (0x0018, b"4.5.6\0")] {
            implicit.extend_from_slice(&0x0008u16.to_le_bytes());
            implicit.extend_from_slice(&element.to_le_bytes());
            implicit.extend_from_slice(&(value.len() as u32).to_le_bytes());
            implicit.extend_from_slice(value);
        }
        assert_eq!(
            dicom_layout(&implicit),
            Some(DicomLayout::Raw { explicit_vr: false })
        );
        let mut explicit = Vec::new();
        for (element, value) in [(0x0016u16, b"1.2.3\0".as_slice()), (0x0018, b"4.5.6\0")] {
            explicit.extend_from_slice(&0x0008u16.to_le_bytes());
            explicit.extend_from_slice(&element.to_le_bytes());
            explicit.extend_from_slice(b"UI");
            explicit.extend_from_slice(&(value.len() as u16).to_le_bytes());
            explicit.extend_from_slice(value);
        }
        assert_eq!(
            dicom_layout(&explicit),
            Some(DicomLayout::Raw { explicit_vr: true })
        );
        // Out-of-order tags are not a data set.
        let mut swapped = explicit[14..].to_vec();
        swapped.extend_from_slice(&explicit[..14]);
        assert_eq!(dicom_layout(&swapped), None);
    }
}
