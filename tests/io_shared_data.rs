//! The loader against the real files in `../shared/data` (see its README).
//!
//! Without that folder these tests print why they skip, unless `CI` is set, where they fail.

use std::path::{Path, PathBuf};

use cxr_triage::io::{
    LoadError, Photometric, Samples, SourceFormat, Study, Window, load_study, load_study_for_model,
};
use dicom_dictionary_std::tags;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

mod common;

fn shared(sub: &str) -> Option<PathBuf> {
    common::shared_data(sub)
}

struct DicomCase {
    file: &'static str,
    /// Columns.
    width: u32,
    /// Rows.
    height: u32,
    bits_stored: u16,
    transfer_syntax: &'static str,
    /// The file's first VOI window (centre, width) as written, before mirroring.
    file_window: Option<(f64, f64)>,
}

/// From `../shared/data/dicom/README.md`, whose sizes are Rows x Columns; the transfer syntaxes
/// and windows were read with dicom-rs (`OpenFileOptions` and the element values).
const DICOM_CASES: [DicomCase; 5] = [
    DicomCase {
        file: "RG1_J2KI.dcm",
        width: 1841,
        height: 1955,
        bits_stored: 15,
        transfer_syntax: "1.2.840.10008.1.2.4.91",
        file_window: Some((15000.0, 30000.0)),
    },
    DicomCase {
        file: "RG3_J2KR.dcm",
        width: 1760,
        height: 1760,
        bits_stored: 10,
        transfer_syntax: "1.2.840.10008.1.2.4.90",
        file_window: Some((550.0, 1024.0)),
    },
    DicomCase {
        file: "RG3_J2KI.dcm",
        width: 1760,
        height: 1760,
        bits_stored: 10,
        transfer_syntax: "1.2.840.10008.1.2.4.91",
        file_window: Some((550.0, 1024.0)),
    },
    DicomCase {
        file: "CR-MONO1-10-chest.dcm",
        width: 440,
        height: 440,
        bits_stored: 10,
        transfer_syntax: "1.2.840.10008.1.2",
        file_window: Some((550.0, 1024.0)),
    },
    DicomCase {
        file: "CR-ModalitySequenceLUT.dcm",
        width: 1976,
        height: 1576,
        bits_stored: 10,
        transfer_syntax: "1.2.840.10008.1.2.4.70",
        file_window: None,
    },
];

fn u16_samples(study: &Study) -> &[u16] {
    match &study.image.samples {
        Samples::U16(v) => v,
        Samples::F32(_) => panic!("expected integer samples"),
    }
}

fn distinct_values(samples: &[u16]) -> usize {
    let mut seen = vec![false; 65536];
    samples.iter().for_each(|&v| seen[usize::from(v)] = true);
    seen.iter().filter(|&&s| s).count()
}

/// The stored values of the first frame, straight from dicom-rs with no LUT applied.
fn raw_stored_values(path: &Path, raw_data_set: bool) -> Vec<u16> {
    if raw_data_set {
        // No preamble and no file meta group: read the data set as implicit VR little endian.
        let bytes = std::fs::read(path).expect("reading the raw data set");
        let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
        let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts)
            .expect("dicom-rs parses the raw data set");
        return obj
            .get(tags::PIXEL_DATA)
            .expect("pixel data")
            .to_multi_int::<u16>()
            .expect("16-bit pixel data");
    }
    let obj = dicom_object::open_file(path).expect("dicom-rs opens the file");
    let pixels = obj
        .decode_pixel_data_frame(0)
        .expect("dicom-rs decodes the first frame");
    let options = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    pixels
        .to_vec_frame_with_options::<u16>(0, &options)
        .expect("stored values as u16")
}

/// The Modality LUT Sequence's first item: (first mapped value, entries).
fn modality_lut(path: &Path) -> (i64, Vec<u16>) {
    let obj = dicom_object::open_file(path).expect("dicom-rs opens the file");
    let sequence = obj
        .get(tags::MODALITY_LUT_SEQUENCE)
        .expect("a Modality LUT Sequence");
    let item = &sequence.items().expect("sequence items")[0];
    let descriptor: Vec<i64> = item
        .get(tags::LUT_DESCRIPTOR)
        .expect("LUT Descriptor")
        .to_multi_int()
        .expect("three integers");
    let entries: Vec<u16> = item
        .get(tags::LUT_DATA)
        .expect("LUT Data")
        .to_multi_int()
        .expect("16-bit entries");
    assert_eq!(entries.len() as i64, descriptor[0]);
    (descriptor[1], entries)
}

#[test]
fn every_shared_dicom_decodes_to_its_size_depth_and_window() {
    let Some(dir) = shared("dicom") else { return };
    for case in &DICOM_CASES {
        let path = dir.join(case.file);
        let study = load_study(&path).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let meta = &study.meta;
        assert_eq!(meta.format, SourceFormat::Dicom, "{}", case.file);
        assert_eq!(
            (meta.width, meta.height),
            (case.width, case.height),
            "{}",
            case.file
        );
        assert_eq!(
            (study.image.width, study.image.height),
            (case.width, case.height)
        );
        assert_eq!(study.image.len(), (case.width * case.height) as usize);
        assert_eq!(meta.bits_stored, case.bits_stored, "{}", case.file);
        assert_eq!(meta.photometric, Photometric::Monochrome1, "{}", case.file);
        let tags = meta.dicom.as_ref().unwrap();
        assert_eq!(tags.transfer_syntax, case.transfer_syntax, "{}", case.file);
        assert_eq!(tags.modality.as_deref(), Some("CR"), "{}", case.file);
        assert_eq!(
            meta.file_size_bytes,
            std::fs::metadata(&path).unwrap().len()
        );
        assert_eq!(
            meta.sha256,
            cxr_triage::io::sha256_hex(&std::fs::read(&path).unwrap())
        );

        // MONOCHROME1 is inverted within the stored range: v' = (2^bits - 1) - v, here with no
        // rescale (slope 1, intercept 0) or with a Modality LUT.
        let raw = raw_stored_values(&path, case.file == "CR-MONO1-10-chest.dcm");
        let ours = u16_samples(&study);
        assert_eq!(raw.len(), ours.len(), "{}", case.file);
        let expected: Vec<u16> = if case.file == "CR-ModalitySequenceLUT.dcm" {
            let (first, lut) = modality_lut(&path);
            let (low, high) = (*lut.iter().min().unwrap(), *lut.iter().max().unwrap());
            raw.iter()
                .map(|&v| {
                    let index = (i64::from(v) - first).clamp(0, lut.len() as i64 - 1) as usize;
                    low + high - lut[index]
                })
                .collect()
        } else {
            let high = (1u16 << case.bits_stored) - 1;
            raw.iter().map(|&v| high - v).collect()
        };
        let mismatches = expected.iter().zip(ours).filter(|(a, b)| a != b).count();
        assert_eq!(
            mismatches, 0,
            "{}: samples differ from inverted raw values",
            case.file
        );
        assert!(
            distinct_values(ours) > 200,
            "{}: suspiciously flat image",
            case.file
        );

        // The window comes from the file, its centre mirrored like the samples; without one,
        // the samples' actual range.
        let full_scale = f64::from((1u32 << case.bits_stored) - 1);
        let expected_window = match case.file_window {
            Some((center, width)) => Window {
                center: full_scale - center,
                width,
            },
            None => study.image.full_range_window(),
        };
        assert_eq!(meta.default_window, expected_window, "{}", case.file);
    }
}

#[test]
fn rg1_window_is_15000_30000_mirrored_for_monochrome1() {
    let Some(dir) = shared("dicom") else { return };
    let study = load_study(&dir.join("RG1_J2KI.dcm")).unwrap();
    // 15 bits stored: the file's centre 15000 becomes 32767 - 15000.
    assert_eq!(
        study.meta.default_window,
        Window {
            center: 17767.0,
            width: 30000.0
        }
    );
    let tags = study.meta.dicom.unwrap();
    assert_eq!(tags.view_position.as_deref(), Some("PA"));
    assert_eq!(tags.body_part_examined.as_deref(), Some("CHEST"));
    assert_eq!(tags.study_date.as_deref(), Some("20040826"));
}

/// Width and height of each full-resolution Kermany JPEG, as `file(1)` reports them.
const KERMANY: [(&str, u32, u32); 15] = [
    ("NORMAL/IM-0001-0001.jpeg", 1857, 1317),
    ("NORMAL/IM-0003-0001.jpeg", 2111, 1509),
    ("NORMAL/IM-0005-0001.jpeg", 2031, 1837),
    ("NORMAL/IM-0006-0001.jpeg", 1663, 1326),
    ("NORMAL/IM-0007-0001.jpeg", 2053, 1818),
    ("NORMAL/IM-0070-0001.jpeg", 2034, 1392),
    ("NORMAL/IM-0081-0001.jpeg", 1260, 767),
    ("NORMAL/IM-0101-0001.jpeg", 1460, 906),
    ("PNEUMONIA/person10_virus_35.jpeg", 1488, 1136),
    ("PNEUMONIA/person137_bacteria_655.jpeg", 1168, 712),
    ("PNEUMONIA/person1_virus_11.jpeg", 872, 560),
    ("PNEUMONIA/person1_virus_12.jpeg", 1080, 624),
    ("PNEUMONIA/person1_virus_13.jpeg", 1136, 654),
    ("PNEUMONIA/person1_virus_8.jpeg", 960, 544),
    ("PNEUMONIA/person1_virus_9.jpeg", 856, 552),
];

fn mean(samples: &[u16]) -> f64 {
    samples.iter().map(|&v| f64::from(v)).sum::<f64>() / samples.len() as f64
}

#[test]
fn every_full_resolution_kermany_jpeg_decodes_to_its_size_in_8_bits() {
    let Some(dir) = shared("kermany-fullres") else {
        return;
    };
    for (name, width, height) in KERMANY {
        let path = dir.join(name);
        let study = load_study(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let meta = &study.meta;
        assert_eq!(meta.format, SourceFormat::Jpeg);
        assert_eq!((meta.width, meta.height), (width, height), "{name}");
        assert_eq!((study.image.width, study.image.height), (width, height));
        assert_eq!(meta.bits_stored, 8);
        assert_eq!(study.image.bits_stored, 8);
        assert_eq!(meta.photometric, Photometric::Monochrome2);
        assert_eq!(meta.default_window, Window::from_range(0.0, 255.0));
        assert!(meta.dicom.is_none());
        let full = u16_samples(&study);
        assert_eq!(full.len(), (width * height) as usize);
        assert!(full.iter().all(|&v| v <= 255));
        assert!(distinct_values(full) > 100, "{name}: suspiciously flat");

        // For the model: decoded at 1/2, 1/4 or 1/8 scale, never below 224 pixels a side,
        // with the same overall brightness; the metadata keeps the file's size.
        let reduced = load_study_for_model(&path, 224).unwrap();
        assert_eq!((reduced.meta.width, reduced.meta.height), (width, height));
        assert_eq!(reduced.meta.sha256, meta.sha256);
        let (w, h) = (reduced.image.width, reduced.image.height);
        assert!(w >= 224 && h >= 224, "{name}: reduced to {w}x{h}");
        let divisor = [1, 2, 4, 8]
            .into_iter()
            .find(|&d| width.div_ceil(d) == w && height.div_ceil(d) == h)
            .unwrap_or_else(|| panic!("{name}: {w}x{h} is not a DCT scale of {width}x{height}"));
        assert!(
            divisor == 8 || width.div_ceil(divisor * 2) < 224 || height.div_ceil(divisor * 2) < 224,
            "{name}: {w}x{h} could have been reduced further"
        );
        let (full_mean, reduced_mean) = (mean(full), mean(u16_samples(&reduced)));
        assert!(
            (full_mean - reduced_mean).abs() < 1.0,
            "{name}: mean {full_mean:.2} at full size, {reduced_mean:.2} reduced"
        );
    }
}

#[test]
fn the_data_licence_file_is_reported_as_not_an_image() {
    let Some(dir) = shared("dicom") else { return };
    assert_eq!(
        load_study(&dir.join("LICENSE.pydicom-data.MIT")),
        Err(LoadError::NotAnImage("text file"))
    );
}
