//! Helpers shared by the integration tests.

#![allow(dead_code)]

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
