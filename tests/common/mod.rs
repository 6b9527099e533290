//! Helpers shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};

/// `../shared/data/<sub>`, or `None` (after saying why) when it is absent on a developer's machine.
/// With `CI` set, a missing folder fails the test loudly instead.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the shared test data is missing: {}",
        dir.display()
    );
    eprintln!(
        "skipped: the shared test data is not on this machine ({})",
        dir.display()
    );
    None
}

/// The shipped model's card.
pub fn shipped_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(cxr_triage::model::DEFAULT_MODEL)
}

/// Writes a 96 x 96 grey "film": a smooth chest-like gradient with seeded noise; a pneumonia
/// film also has a bright patch low in the right half (an opacity).
pub fn write_film(path: &Path, pneumonia: bool, seed: u32) {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 21) as f32 - 10.0
    };
    let img = image::GrayImage::from_fn(96, 96, |x, y| {
        let (fx, fy) = (x as f32 / 95.0, y as f32 / 95.0);
        let lungs = 60.0 + 80.0 * (1.0 - (2.0 * fx - 1.0).abs()) * (0.3 + 0.7 * fy);
        let patch = if pneumonia && (52..84).contains(&x) && (50..86).contains(&y) {
            90.0
        } else {
            0.0
        };
        image::Luma([(lungs + patch + noise()).clamp(0.0, 255.0) as u8])
    });
    img.save(path).unwrap();
}
