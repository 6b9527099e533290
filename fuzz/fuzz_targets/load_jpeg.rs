//! `io::load_study_bytes` (full size, as the window and `scan` read) and
//! `io::load_study_bytes_for_model` (reduced, as `score` reads) on inputs recognised as
//! Jpeg. Any panic, abort, hang or out-of-memory is a bug: every damaged input must become a
//! `LoadError`.

#![no_main]

use cxr_triage::io::{self, SourceFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if io::sniff(data) != Some(SourceFormat::Jpeg) {
        return;
    }
    let full = io::load_study_bytes(data);
    let reduced = io::load_study_bytes_for_model(data, 128);
    // One decoder for every path: both read the file, or neither does.
    assert_eq!(full.is_ok(), reduced.is_ok());
});
