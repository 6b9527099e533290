//! `audit::import_csv` on arbitrary CSV text, against an empty decision store (so that every
//! row is parsed and checked, and none is recorded: the store does not grow run after run). Any
//! panic is a bug: a malformed file must be refused as a whole or row by row.

#![no_main]

use std::sync::OnceLock;

use cxr_triage::audit::{DecisionStore, import_csv};
use libfuzzer_sys::fuzz_target;

/// A store in a temporary folder, created once per process.
fn store() -> &'static (tempfile::TempDir, std::path::PathBuf) {
    static STORE: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let db = dir.path().join("fuzz.sqlite3");
        DecisionStore::open(&db).expect("a store");
        (dir, db)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, db) = store();
    let store = DecisionStore::open(db).expect("the store opens");
    if let Ok(report) = import_csv(&store, data, dir.path(), "fuzzer") {
        // Every row is accounted for: recorded, rejected, or the import stopped.
        let _ = report.recorded.len() + report.rejected.len();
    }
});
