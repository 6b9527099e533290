//! Fixtures and the one harness factory for the window's tests: generated studies in a temporary
//! folder, a decision store of their own, and the real `App` under `egui_kittest`.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cxr_triage::app::{App, AppConfig};
use egui_kittest::Harness;
use tempfile::TempDir;

/// A folder of generated studies and a decision store, both in a temporary folder.
pub struct Fixture {
    /// Holds everything; removed when dropped.
    pub dir: TempDir,
    /// The folder the window opens.
    pub studies: PathBuf,
    /// The decision store.
    pub db: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let studies = dir.path().join("studies");
        std::fs::create_dir_all(&studies).unwrap();
        let db = dir.path().join("store").join("decisions.sqlite3");
        Self { dir, studies, db }
    }
}

/// A small chest-like film: a bright body, two darker lung fields, and seeded bright patches
/// (opacities) so that the model gives the studies different scores. PNG or JPEG by extension.
pub fn write_study(path: &Path, seed: u32) {
    let (w, h) = (192u32, 160u32);
    let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let mut rnd = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1u32 << 24) as f32
    };
    let blobs: Vec<(f32, f32, f32, f32)> = (0..(seed % 4) * 2)
        .map(|_| {
            (
                rnd() * 0.6 + 0.2,
                rnd() * 0.5 + 0.3,
                rnd() * 0.12 + 0.05,
                rnd() * 90.0 + 40.0,
            )
        })
        .collect();
    let noise: Vec<f32> = (0..w * h).map(|_| rnd() * 18.0).collect();
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let mut value = 150.0;
        for cx in [0.32, 0.68] {
            let d = ((u - cx) / 0.15).powi(2) + ((v - 0.55) / 0.3).powi(2);
            if d < 1.0 {
                value -= 90.0 * (1.0 - d);
            }
        }
        for &(bx, by, r, strength) in &blobs {
            let d = ((u - bx).powi(2) + (v - by).powi(2)).sqrt() / r;
            if d < 1.0 {
                value += strength * (1.0 - d);
            }
        }
        image::Luma([(value + noise[(y * w + x) as usize]).clamp(0.0, 255.0) as u8])
    });
    img.save(path).unwrap();
}

/// The film of [`write_study`] as a 12-bit MONOCHROME2 DICOM file carrying the patient's age and
/// sex, a study date and time, and a view position.
pub fn write_dicom_study(path: &Path, seed: u32, age: &str, sex: &str, view: &str) {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    let png = path.with_extension("tmp.png");
    write_study(&png, seed);
    let img = image::open(&png).unwrap().into_luma8();
    std::fs::remove_file(&png).unwrap();
    let (w, h) = img.dimensions();
    let pixels: Vec<u16> = img.pixels().map(|p| u16::from(p.0[0]) * 16).collect();
    let us = |v: u16| PrimitiveValue::from(v);
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
        ),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, format!("2.25.{seed}1")),
        DataElement::new(tags::STUDY_DATE, VR::DA, "20240131"),
        DataElement::new(tags::STUDY_TIME, VR::TM, "143000"),
        DataElement::new(tags::MODALITY, VR::CS, "DX"),
        DataElement::new(tags::PATIENT_ID, VR::LO, format!("PAT-{seed}")),
        DataElement::new(tags::PATIENT_SEX, VR::CS, sex),
        DataElement::new(tags::PATIENT_AGE, VR::AS, age),
        DataElement::new(tags::BODY_PART_EXAMINED, VR::CS, "CHEST"),
        DataElement::new(tags::VIEW_POSITION, VR::CS, view),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, format!("2.25.{seed}")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(1)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, us(h as u16)),
        DataElement::new(tags::COLUMNS, VR::US, us(w as u16)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, us(16)),
        DataElement::new(tags::BITS_STORED, VR::US, us(12)),
        DataElement::new(tags::HIGH_BIT, VR::US, us(11)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, us(0)),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ]);
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_to_file(path)
        .unwrap();
}

/// `n` generated studies (PNG and JPEG, one in a subfolder) and one file that is not an image.
pub fn folder(n: u32) -> Fixture {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.studies.join("ward")).unwrap();
    for i in 0..n {
        let name = match i % 3 {
            0 => format!("study-{i:02}.png"),
            1 => format!("study-{i:02}.jpg"),
            _ => format!("ward/study-{i:02}.png"),
        };
        write_study(&fx.studies.join(name), i * 7 + 1);
    }
    std::fs::write(fx.studies.join("notes.txt"), "not an image").unwrap();
    fx
}

/// Studies under NORMAL/ and PNEUMONIA/ folders: a dataset with labels to correct.
pub fn labelled_folder(per_class: u32) -> Fixture {
    let fx = Fixture::new();
    for (class, offset) in [("NORMAL", 0), ("PNEUMONIA", 100)] {
        std::fs::create_dir_all(fx.studies.join(class)).unwrap();
        for i in 0..per_class {
            write_study(
                &fx.studies.join(class).join(format!("img-{i}.png")),
                offset + i * 3 + 2,
            );
        }
    }
    fx
}

/// A window on the fixture's folder and store, read by "Test Reader", with the shipped model.
pub fn config(fx: &Fixture) -> AppConfig {
    AppConfig {
        folder: Some(fx.studies.clone()),
        reader: Some("Test Reader".to_owned()),
        db_path: Some(fx.db.clone()),
        persist_preferences: false,
        ..AppConfig::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/cxrnet.json"))
    }
}

/// The real `App` in a test harness.
pub fn harness(config: AppConfig) -> Harness<'static, App> {
    Harness::builder()
        .with_size([1280.0, 800.0])
        .build_eframe(|cc| App::new(cc, config))
}

/// Runs frames until `done` holds, failing after two minutes.
pub fn step_until(h: &mut Harness<'static, App>, what: &str, done: impl Fn(&App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(h.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.step();
}

/// Waits until the folder is listed and every study has its score or error.
pub fn wait_for_scores(h: &mut Harness<'static, App>) {
    step_until(h, "the scores", |app| {
        app.worklist().is_some() && !app.is_scoring() && app.model_ready()
    });
}

/// Runs a few frames, so that queued input and the commands it pushes are applied, and then
/// until every decision sent to the store is acknowledged.
pub fn settle(h: &mut Harness<'static, App>) {
    for _ in 0..3 {
        h.step();
    }
    if h.state().is_saving() {
        step_until(h, "the decisions to be saved", |app| !app.is_saving());
    }
}

/// Waits until a decision on the selected study would be recorded: its film has been on screen
/// for the minimum time.
pub fn until_decidable(h: &mut Harness<'static, App>) {
    step_until(h, "the film to have been on screen long enough", |app| {
        app.decision_blocked().is_none()
    });
}

/// The real `App` in a test harness whose frames are `step_dt` seconds apart (egui's clock), for
/// tests that time what the reader does.
pub fn harness_with_step(config: AppConfig, step_dt: f32) -> Harness<'static, App> {
    Harness::builder()
        .with_size([1280.0, 800.0])
        .with_step_dt(step_dt)
        .build_eframe(|cc| App::new(cc, config))
}

/// Runs frames of both windows until `done` holds for them, failing after 20 seconds.
pub fn step_both(
    a: &mut Harness<'static, App>,
    b: &mut Harness<'static, App>,
    what: &str,
    done: impl Fn(&App, &App) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(a.state(), b.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        a.step();
        b.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    a.step();
    b.step();
}
