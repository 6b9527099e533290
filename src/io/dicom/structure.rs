//! A quick walk over the element headers of a DICOM file before dicom-rs parses it.
//!
//! dicom-rs trusts the lengths it reads: an element that claims 4 GiB makes it reserve and zero
//! 4 GiB before it notices the file is short, and deeply nested sequences recurse without bound.
//! This walk checks, without allocating, that every length fits in the bytes that remain and that
//! nesting stays shallow, so damaged and hostile files get a clear error instead. It also finds
//! the transfer syntax and whether there is pixel data at all.
//!
//! Every encoding is walked: explicit and implicit VR little endian, explicit VR big endian, and
//! the deflated syntaxes, whose data set is inflated here first, up to [`MAX_INFLATED_BYTES`] (a
//! few kilobytes can inflate to gigabytes of zeros).

use crate::io::{LoadError, SourceFormat};

const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const TRANSFER_SYNTAX_UID: (u16, u16) = (0x0002, 0x0010);
/// Deeper nesting than this is refused (real files rarely exceed 5 levels).
const MAX_DEPTH: usize = 32;
/// The most a deflated data set may inflate to: twice the largest pixel data accepted (64 Mi
/// pixels of 16 bits), so that the walk and dicom-rs's own inflation stay under 1 GiB together.
pub(crate) const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// The implicit VR little-endian transfer syntax UID.
pub(crate) const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// What the walk learned about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outline {
    /// The transfer syntax UID from the file meta group (`None` for a raw data set).
    pub transfer_syntax: Option<String>,
    /// Whether the top-level data set has a Pixel Data element. `None` when the data set was not
    /// walked (big-endian or deflated encodings).
    pub has_pixel_data: Option<bool>,
}

/// Walks a PS3.10 file whose file meta group starts at `meta_offset` (just after "DICM").
pub(crate) fn walk_part10(bytes: &[u8], meta_offset: usize) -> Result<Outline, LoadError> {
    let mut walker = Walker {
        bytes,
        pos: meta_offset,
        pixel_data: false,
        big_endian: false,
    };
    let transfer_syntax = walker.file_meta()?;
    let outline = |pixel_data| Outline {
        transfer_syntax: Some(transfer_syntax.clone()),
        has_pixel_data: Some(pixel_data),
    };
    match transfer_syntax.as_str() {
        IMPLICIT_VR_LE => {
            walker.data_set(bytes.len(), false, 0, Context::TopLevel)?;
            Ok(outline(walker.pixel_data))
        }
        EXPLICIT_VR_BE => {
            walker.big_endian = true;
            walker.data_set(bytes.len(), true, 0, Context::TopLevel)?;
            Ok(outline(walker.pixel_data))
        }
        ts if is_deflated(ts) => {
            let inflated = inflate(&bytes[walker.pos..])?;
            let mut inner = Walker {
                bytes: &inflated,
                pos: 0,
                pixel_data: false,
                big_endian: false,
            };
            inner.data_set(inflated.len(), true, 0, Context::TopLevel)?;
            Ok(outline(inner.pixel_data))
        }
        _ => {
            walker.data_set(bytes.len(), true, 0, Context::TopLevel)?;
            Ok(outline(walker.pixel_data))
        }
    }
}

/// The deflated transfer syntaxes: Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99)
/// and the JPIP Referenced Deflate syntax (1.2.840.10008.1.2.4.95).
fn is_deflated(uid: &str) -> bool {
    uid == "1.2.840.10008.1.2.1.99" || uid == "1.2.840.10008.1.2.4.95"
}

/// Inflates a deflated data set (raw deflate, RFC 1951), refusing one that inflates to more than
/// [`MAX_INFLATED_BYTES`].
fn inflate(deflated: &[u8]) -> Result<Vec<u8>, LoadError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|_| LoadError::Corrupt {
            format: SourceFormat::Dicom,
            reason: "the deflated data set cannot be inflated".into(),
        })?;
    if out.len() as u64 > MAX_INFLATED_BYTES {
        return Err(LoadError::Corrupt {
            format: SourceFormat::Dicom,
            reason: format!(
                "the deflated data set inflates to more than {} MiB",
                MAX_INFLATED_BYTES >> 20
            ),
        });
    }
    Ok(out)
}

/// Walks a raw data set (no preamble, no file meta group).
pub(crate) fn walk_raw(bytes: &[u8], explicit_vr: bool) -> Result<Outline, LoadError> {
    let mut walker = Walker {
        bytes,
        pos: 0,
        pixel_data: false,
        big_endian: false,
    };
    walker.data_set(bytes.len(), explicit_vr, 0, Context::TopLevel)?;
    Ok(Outline {
        transfer_syntax: None,
        has_pixel_data: Some(walker.pixel_data),
    })
}

/// The transfer syntax UID that a raw data set in this encoding is read with.
pub(crate) fn raw_transfer_syntax(explicit_vr: bool) -> &'static str {
    if explicit_vr {
        EXPLICIT_VR_LE
    } else {
        IMPLICIT_VR_LE
    }
}

/// True when `bytes` start like a raw little-endian data set: a few well-formed elements in
/// ascending tag order, the first in group 0002 or 0008 (where every image's data set starts).
pub(crate) fn looks_like_raw_dataset(bytes: &[u8], explicit_vr: bool) -> bool {
    const ELEMENTS_TO_CHECK: usize = 4;
    let mut walker = Walker {
        bytes,
        pos: 0,
        pixel_data: false,
        big_endian: false,
    };
    let mut previous: Option<(u16, u16)> = None;
    for _ in 0..ELEMENTS_TO_CHECK {
        if walker.pos == bytes.len() {
            break;
        }
        let Ok(header) = walker.element_header(bytes.len(), explicit_vr) else {
            return false;
        };
        let ascending = match previous {
            None => matches!(header.tag.0, 0x0002 | 0x0008),
            Some(prev) => header.tag > prev && header.tag.0 != 0xFFFE,
        };
        if !ascending {
            return false;
        }
        previous = Some(header.tag);
        let skipped = if header.length == UNDEFINED_LENGTH {
            walker.items(bytes.len(), header.items_explicit_vr(explicit_vr), 1, false)
        } else {
            walker.skip(header.tag, header.length, bytes.len())
        };
        if skipped.is_err() {
            return false;
        }
    }
    previous.is_some()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// The file's data set: ends at the end of the file.
    TopLevel,
    /// An item of defined length: ends at its end.
    DefinedItem,
    /// An item of undefined length: ends with an item delimiter.
    UndefinedItem,
}

struct Header {
    tag: (u16, u16),
    vr: Option<[u8; 2]>,
    length: u32,
}

impl Header {
    fn is_sequence(&self) -> bool {
        self.vr == Some(*b"SQ")
    }

    /// Items of an undefined-length UN element are encoded in implicit VR (PS3.5 6.2.2).
    fn items_explicit_vr(&self, explicit_vr: bool) -> bool {
        explicit_vr && self.vr != Some(*b"UN")
    }
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    pixel_data: bool,
    /// Explicit VR big endian (the file meta group is always little endian).
    big_endian: bool,
}

impl Walker<'_> {
    fn truncated() -> LoadError {
        LoadError::Truncated(SourceFormat::Dicom)
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = [self.bytes[at], self.bytes[at + 1]];
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Reads the file meta group (always explicit VR little endian) and returns the transfer
    /// syntax UID.
    fn file_meta(&mut self) -> Result<String, LoadError> {
        let end = self.bytes.len();
        let mut transfer_syntax = None;
        while end - self.pos >= 8 && self.u16_at(self.pos) == 0x0002 {
            let header = self.element_header(end, true)?;
            let start = self.pos;
            self.skip(header.tag, header.length, end)?;
            if header.tag == TRANSFER_SYNTAX_UID {
                let value = &self.bytes[start..self.pos];
                let uid = String::from_utf8_lossy(value)
                    .trim_end_matches(['\0', ' '])
                    .to_string();
                transfer_syntax = Some(uid);
            }
        }
        if end - self.pos < 8 {
            // The file ends in, or right after, the file meta group.
            return Err(Self::truncated());
        }
        transfer_syntax.ok_or(LoadError::DicomMissing("Transfer Syntax UID"))
    }

    /// Reads one element header at the cursor and moves past it.
    fn element_header(&mut self, end: usize, explicit_vr: bool) -> Result<Header, LoadError> {
        if end - self.pos < 8 {
            return Err(Self::truncated());
        }
        let tag = (self.u16_at(self.pos), self.u16_at(self.pos + 2));
        if tag.0 == 0xFFFE || !explicit_vr {
            // Item markers and implicit VR: tag, then a 4-byte length. In implicit VR the value
            // representation comes from the standard dictionary, as dicom-rs takes it: sequences
            // are walked into, and fixed-size values are checked, so that the walk and the parser
            // read the same elements.
            let length = self.u32_at(self.pos + 4);
            self.pos += 8;
            let vr = if tag.0 == 0xFFFE {
                None
            } else if tag == PIXEL_DATA {
                // "OB or OW" in the dictionary: an implicit-VR reader takes OW (16-bit words).
                Some(*b"OW")
            } else {
                dictionary_vr(tag)
            };
            return Ok(Header { tag, vr, length });
        }
        let vr = [self.bytes[self.pos + 4], self.bytes[self.pos + 5]];
        if !is_known_vr(vr) {
            return Err(LoadError::Corrupt {
                format: SourceFormat::Dicom,
                reason: format!(
                    "element ({:04X},{:04X}) has no valid value representation",
                    tag.0, tag.1
                ),
            });
        }
        if has_long_length(vr) {
            if end - self.pos < 12 {
                return Err(Self::truncated());
            }
            let length = self.u32_at(self.pos + 8);
            self.pos += 12;
            Ok(Header {
                tag,
                vr: Some(vr),
                length,
            })
        } else {
            let length = u32::from(self.u16_at(self.pos + 6));
            self.pos += 8;
            Ok(Header {
                tag,
                vr: Some(vr),
                length,
            })
        }
    }

    /// Moves past a value of `length` bytes, checking it fits before `end`.
    fn skip(&mut self, tag: (u16, u16), length: u32, end: usize) -> Result<(), LoadError> {
        let remaining = end - self.pos;
        let length_usize = usize::try_from(length).unwrap_or(usize::MAX);
        if length_usize > remaining {
            // The file ends inside the pixel data (or inside the last element): a half-copied
            // file. Anywhere else the length itself is wrong.
            let past_end_of_file = end == self.bytes.len();
            if past_end_of_file && (tag == PIXEL_DATA || tag == ITEM) {
                return Err(Self::truncated());
            }
            return Err(LoadError::DicomBadLength {
                group: tag.0,
                element: tag.1,
                claimed_bytes: u64::from(length),
                remaining_bytes: remaining as u64,
            });
        }
        self.pos += length_usize;
        Ok(())
    }

    /// Walks the elements of a data set (the file's, or an item's) up to `end`.
    fn data_set(
        &mut self,
        end: usize,
        explicit_vr: bool,
        depth: usize,
        context: Context,
    ) -> Result<(), LoadError> {
        if depth > MAX_DEPTH {
            return Err(LoadError::Corrupt {
                format: SourceFormat::Dicom,
                reason: format!("sequences are nested more than {MAX_DEPTH} levels deep"),
            });
        }
        loop {
            if self.pos == end {
                return match context {
                    Context::UndefinedItem => Err(Self::truncated()),
                    Context::TopLevel | Context::DefinedItem => Ok(()),
                };
            }
            // Trailing padding shorter than an element header is tolerated at the top level.
            if context == Context::TopLevel
                && end - self.pos < 8
                && self.bytes[self.pos..end].iter().all(|&b| b == 0)
            {
                return Ok(());
            }
            let header = self.element_header(end, explicit_vr)?;
            match header.tag {
                ITEM_END if context == Context::UndefinedItem => return Ok(()),
                ITEM | ITEM_END | SEQUENCE_END => {
                    return Err(LoadError::Corrupt {
                        format: SourceFormat::Dicom,
                        reason: "an item marker stands where a data element should".into(),
                    });
                }
                _ => {}
            }
            if header.tag == PIXEL_DATA && depth == 0 {
                self.pixel_data = true;
            }
            // A binary value whose length is not a whole number of values: dicom-rs reads the
            // whole values and loses its place in the file, then trusts a length read from the
            // middle of a value (found by fuzzing: 3.6 GB for a 2 KB file).
            if let Some(size) = header.vr.and_then(value_size)
                && header.length != UNDEFINED_LENGTH
                && header.length % size != 0
            {
                return Err(LoadError::Corrupt {
                    format: SourceFormat::Dicom,
                    reason: format!(
                        "element ({:04X},{:04X}) has a length of {} bytes, not a whole number of \
                         {}-byte values",
                        header.tag.0, header.tag.1, header.length, size
                    ),
                });
            }
            if header.length == UNDEFINED_LENGTH {
                // A sequence, or encapsulated (compressed) pixel data made of fragments.
                let fragments = header.tag == PIXEL_DATA;
                self.items(
                    end,
                    header.items_explicit_vr(explicit_vr),
                    depth + 1,
                    fragments,
                )?;
            } else if header.is_sequence() {
                let start = self.pos;
                self.skip(header.tag, header.length, end)?;
                let sequence_end = self.pos;
                self.pos = start;
                self.defined_items(sequence_end, explicit_vr, depth + 1)?;
            } else {
                self.skip(header.tag, header.length, end)?;
            }
        }
    }

    /// Walks the items of an undefined-length sequence (or the fragments of encapsulated pixel
    /// data), up to and including the sequence delimiter.
    fn items(
        &mut self,
        end: usize,
        explicit_vr: bool,
        depth: usize,
        fragments: bool,
    ) -> Result<(), LoadError> {
        if depth > MAX_DEPTH {
            return Err(LoadError::Corrupt {
                format: SourceFormat::Dicom,
                reason: format!("sequences are nested more than {MAX_DEPTH} levels deep"),
            });
        }
        loop {
            if self.pos == end {
                // The sequence never closes: the file was cut.
                return Err(Self::truncated());
            }
            let header = self.element_header(end, false)?;
            match header.tag {
                SEQUENCE_END => return Ok(()),
                ITEM => {}
                _ => {
                    return Err(LoadError::Corrupt {
                        format: SourceFormat::Dicom,
                        reason: "a sequence holds something other than items".into(),
                    });
                }
            }
            self.item(&header, end, explicit_vr, depth, fragments)?;
        }
    }

    /// Walks the items of a sequence of defined length, which ends at `end`.
    fn defined_items(
        &mut self,
        end: usize,
        explicit_vr: bool,
        depth: usize,
    ) -> Result<(), LoadError> {
        while self.pos < end {
            let header = self.element_header(end, false)?;
            if header.tag != ITEM {
                return Err(LoadError::Corrupt {
                    format: SourceFormat::Dicom,
                    reason: "a sequence holds something other than items".into(),
                });
            }
            self.item(&header, end, explicit_vr, depth, false)?;
        }
        Ok(())
    }

    /// Walks one item whose header was just read.
    fn item(
        &mut self,
        header: &Header,
        end: usize,
        explicit_vr: bool,
        depth: usize,
        fragment: bool,
    ) -> Result<(), LoadError> {
        if header.length == UNDEFINED_LENGTH {
            if fragment {
                return Err(LoadError::Corrupt {
                    format: SourceFormat::Dicom,
                    reason: "a compressed pixel data fragment has no length".into(),
                });
            }
            return self.data_set(end, explicit_vr, depth + 1, Context::UndefinedItem);
        }
        let start = self.pos;
        self.skip(header.tag, header.length, end)?;
        if !fragment {
            let item_end = self.pos;
            self.pos = start;
            self.data_set(item_end, explicit_vr, depth + 1, Context::DefinedItem)?;
        }
        Ok(())
    }
}

/// The value representation the standard dictionary gives `tag`, when it gives exactly one (how
/// an implicit-VR reader, dicom-rs included, reads the value).
fn dictionary_vr(tag: (u16, u16)) -> Option<[u8; 2]> {
    use dicom_core::dictionary::{DataDictionary as _, DataDictionaryEntry as _};
    // As dicom-rs's implicit-VR decoder takes it: an ambiguous VR is relaxed ("US or SS" to US,
    // "OB or OW" and the like to OW; SS for signed pixel data has the same size), so that an
    // odd-length "US or SS" value is refused here rather than read two bytes at a time.
    let vr = dicom_dictionary_std::StandardDataDictionary
        .by_tag(dicom_core::Tag(tag.0, tag.1))?
        .vr()
        .relaxed();
    vr.to_string().as_bytes().try_into().ok()
}

/// The size of one value of a binary value representation that dicom-rs reads as an array of
/// numbers, words included (`None` for text and bytes, which it reads whole).
fn value_size(vr: [u8; 2]) -> Option<u32> {
    match &vr {
        b"US" | b"SS" | b"OW" => Some(2),
        b"UL" | b"SL" | b"FL" | b"AT" | b"OF" | b"OL" => Some(4),
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => Some(8),
        _ => None,
    }
}

fn is_known_vr(vr: [u8; 2]) -> bool {
    const VRS: [&[u8; 2]; 34] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
        b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
        b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
    ];
    VRS.iter().any(|known| **known == vr)
}

/// Value representations whose explicit header has a 4-byte length (PS3.5 7.1.2).
fn has_long_length(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An explicit VR little-endian element.
    fn explicit(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        if has_long_length(*vr) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn marker(group: u16, element: u16, length: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out
    }

    #[test]
    fn nested_sequences_and_fragments_are_walked() {
        let mut data = explicit(0x0008, 0x0060, b"CS", b"CR");
        // An undefined-length sequence holding one undefined-length item.
        data.extend_from_slice(&0x0008u16.to_le_bytes());
        data.extend_from_slice(&0x1140u16.to_le_bytes());
        data.extend_from_slice(b"SQ\0\0");
        data.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
        data.extend(marker(0xFFFE, 0xE000, UNDEFINED_LENGTH));
        data.extend(explicit(0x0008, 0x1150, b"UI", b"1.2\0"));
        data.extend(marker(0xFFFE, 0xE00D, 0));
        data.extend(marker(0xFFFE, 0xE0DD, 0));
        // Encapsulated pixel data: empty offset table, one fragment.
        data.extend_from_slice(&0x7FE0u16.to_le_bytes());
        data.extend_from_slice(&0x0010u16.to_le_bytes());
        data.extend_from_slice(b"OB\0\0");
        data.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
        data.extend(marker(0xFFFE, 0xE000, 0));
        data.extend(marker(0xFFFE, 0xE000, 4));
        data.extend_from_slice(&[1, 2, 3, 4]);
        data.extend(marker(0xFFFE, 0xE0DD, 0));
        let outline = walk_raw(&data, true).unwrap();
        assert_eq!(outline.has_pixel_data, Some(true));

        // Cut inside the fragment: truncated.
        let cut = &data[..data.len() - 10];
        assert_eq!(
            walk_raw(cut, true),
            Err(LoadError::Truncated(SourceFormat::Dicom))
        );
    }

    #[test]
    fn a_length_beyond_the_file_is_reported_with_its_tag() {
        let mut data = explicit(0x0008, 0x0060, b"CS", b"CR");
        let mut name = explicit(0x0010, 0x0010, b"PN", b"DOE^JANE");
        name[6] = 0xF0; // The length now claims 0x00F0 bytes.
        data.extend(name);
        data.extend(explicit(0x0028, 0x0010, b"US", &[4, 0]));
        match walk_raw(&data, true) {
            Err(LoadError::DicomBadLength {
                group: 0x0010,
                element: 0x0010,
                claimed_bytes: 0xF0,
                remaining_bytes,
            }) => assert_eq!(remaining_bytes, 8 + 10),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing_further() {
        let mut data = Vec::new();
        for _ in 0..200 {
            data.extend_from_slice(&0x0008u16.to_le_bytes());
            data.extend_from_slice(&0x1140u16.to_le_bytes());
            data.extend_from_slice(b"SQ\0\0");
            data.extend_from_slice(&UNDEFINED_LENGTH.to_le_bytes());
            data.extend(marker(0xFFFE, 0xE000, UNDEFINED_LENGTH));
        }
        let err = walk_raw(&data, true).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }

    /// A PS3.10 file: preamble, "DICM", a file meta group naming `transfer_syntax`, then `body`.
    fn part10(transfer_syntax: &str, body: &[u8]) -> Vec<u8> {
        let mut uid = transfer_syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend(explicit(0x0002, 0x0010, b"UI", &uid));
        out.extend_from_slice(body);
        out
    }

    /// `levels` nested undefined-length sequences, never closed, in explicit VR with the given
    /// byte order.
    fn deep(levels: usize, big_endian: bool) -> Vec<u8> {
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut data = Vec::new();
        for _ in 0..levels {
            data.extend_from_slice(&u16b(0x0008));
            data.extend_from_slice(&u16b(0x1140));
            data.extend_from_slice(b"SQ\0\0");
            data.extend_from_slice(&u32b(UNDEFINED_LENGTH));
            data.extend_from_slice(&u16b(0xFFFE));
            data.extend_from_slice(&u16b(0xE000));
            data.extend_from_slice(&u32b(UNDEFINED_LENGTH));
        }
        data
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn big_endian_and_deflated_data_sets_are_walked_too() {
        // About 10,000 levels in explicit big endian used to overflow dicom-rs's stack.
        let be = part10(EXPLICIT_VR_BE, &deep(10_000, true));
        let err = crate::io::load_study_bytes(&be).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
        // The same nesting deflated, in 2 KB or so.
        let deflated = deflate(&deep(10_000, false));
        assert!(deflated.len() < 4096, "{}", deflated.len());
        let file = part10("1.2.840.10008.1.2.1.99", &deflated);
        let err = crate::io::load_study_bytes(&file).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
        // A big-endian pixel data element that claims 0xFFFFFFF0 bytes in a small file.
        let mut body = Vec::new();
        body.extend_from_slice(&0x7FE0u16.to_be_bytes());
        body.extend_from_slice(&0x0010u16.to_be_bytes());
        body.extend_from_slice(b"OW\0\0");
        body.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        body.extend_from_slice(&[0u8; 12_000]);
        let err = crate::io::load_study_bytes(&part10(EXPLICIT_VR_BE, &body)).unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::Truncated(_) | LoadError::DicomBadLength { .. }
            ),
            "{err}"
        );
        // A well-formed big-endian element is walked through.
        let mut ok = Vec::new();
        ok.extend_from_slice(&0x0008u16.to_be_bytes());
        ok.extend_from_slice(&0x0060u16.to_be_bytes());
        ok.extend_from_slice(b"CS");
        ok.extend_from_slice(&2u16.to_be_bytes());
        ok.extend_from_slice(b"CR");
        let outline = walk_part10(&part10(EXPLICIT_VR_BE, &ok), 132).unwrap();
        assert_eq!(outline.has_pixel_data, Some(false));
    }

    #[test]
    fn a_deflated_data_set_that_inflates_beyond_the_cap_is_refused_quickly() {
        // 300 MiB of zeros deflate to about 300 KB.
        let zeros = vec![0u8; 300 << 20];
        let deflated = deflate(&zeros);
        drop(zeros);
        let file = part10("1.2.840.10008.1.2.1.99", &deflated);
        let err = walk_part10(&file, 132).unwrap_err();
        assert!(err.to_string().contains("inflates to more than"), "{err}");
    }
}
