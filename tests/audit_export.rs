//! CSV export: which rows, which columns, quoting, folders, and atomic files.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod audit_common;

use std::collections::HashMap;

use audit_common::{
    MODEL_ID, confirm, decision, override_ai, sha, store_with_studies, study, undo,
};
use cxr_triage::audit::{
    Action, DecisionStore, EVENT_COLUMNS, ExportKind, ExportOptions, STUDY_COLUMNS, StudyRecord,
};
use cxr_triage::worklist::Label;

/// Parses exported CSV into its header and its rows as column-name → value maps.
fn parse(csv_text: &[u8]) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut rdr = csv::Reader::from_reader(csv_text);
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = rdr
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect();
    (header, rows)
}

fn export(
    store: &DecisionStore,
    opts: &ExportOptions,
) -> (usize, Vec<String>, Vec<HashMap<String, String>>) {
    let mut buf = Vec::new();
    let n = store.export_csv(&mut buf, opts).unwrap();
    let (header, rows) = parse(&buf);
    assert_eq!(n, rows.len());
    (n, header, rows)
}

fn kind(kind: ExportKind) -> ExportOptions {
    ExportOptions {
        kind,
        ..ExportOptions::default()
    }
}

/// Studies 0..4: 0 confirmed PNEUMONIA, 1 overridden to PNEUMONIA, 2 confirmed then undone
/// (unreviewed), 3 never touched.
fn fixture(dir: &std::path::Path) -> DecisionStore {
    let store = store_with_studies(dir, 4);
    store.record(&confirm(0, 0.875)).unwrap();
    let mut d = override_ai(1, 0.25);
    d.reason = "consolidation, right lower lobe".to_owned();
    d.reader = "dr-bob".to_owned();
    store.record(&d).unwrap();
    store.record(&confirm(2, 0.5)).unwrap();
    store.record(&undo(2, 0.5)).unwrap();
    store
}

#[test]
fn the_default_export_has_one_row_per_reviewed_study_with_the_documented_columns() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path());
    let (n, header, rows) = export(&store, &ExportOptions::default());
    assert_eq!(
        header,
        [
            "path",
            "sha256",
            "patient_id",
            "study_uid",
            "score",
            "ai_label",
            "final_label",
            "agreed",
            "reader",
            "decided_at",
            "reason",
            "model_id",
            "threshold",
            "not_seen"
        ]
    );
    assert_eq!(header, STUDY_COLUMNS);
    assert_eq!(n, 2);

    let r0 = &rows[0];
    assert_eq!(r0["path"], "/data/ward-a/study-0000.jpeg");
    assert_eq!(r0["sha256"], sha(0));
    assert_eq!(r0["patient_id"], "P00000");
    assert_eq!(r0["study_uid"], "1.2.826.0.1.3680043.2.1125.0");
    assert_eq!(r0["score"], "0.875");
    assert_eq!(r0["ai_label"], "PNEUMONIA");
    assert_eq!(r0["final_label"], "PNEUMONIA");
    assert_eq!(r0["agreed"], "yes");
    assert_eq!(r0["reader"], "dr-alice");
    assert_eq!(r0["model_id"], MODEL_ID);
    assert_eq!(r0["threshold"], "0.5");
    assert_eq!(
        r0["decided_at"],
        store
            .current(&sha(0))
            .unwrap()
            .unwrap()
            .last_event
            .decided_at
    );

    let r1 = &rows[1];
    assert_eq!(r1["sha256"], sha(1));
    assert_eq!(
        (r1["ai_label"].as_str(), r1["final_label"].as_str()),
        ("NORMAL", "PNEUMONIA")
    );
    assert_eq!(r1["agreed"], "no");
    assert_eq!(r1["reader"], "dr-bob");
    assert_eq!(r1["reason"], "consolidation, right lower lobe");
}

#[test]
fn all_adds_unreviewed_studies_with_empty_labels() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path());
    let (n, _, rows) = export(&store, &kind(ExportKind::All));
    assert_eq!(n, 4);
    let by_sha: HashMap<_, _> = rows.iter().map(|r| (r["sha256"].clone(), r)).collect();
    // Undone back to unreviewed: the AI call and the undo are shown, the final label is empty.
    let undone = by_sha[&sha(2)];
    assert_eq!(undone["final_label"], "");
    assert_eq!(undone["agreed"], "");
    assert_eq!(undone["ai_label"], "PNEUMONIA");
    // Never touched: only what the loader knows.
    let untouched = by_sha[&sha(3)];
    assert_eq!(untouched["patient_id"], "P00003");
    for col in [
        "score",
        "ai_label",
        "final_label",
        "agreed",
        "reader",
        "decided_at",
    ] {
        assert_eq!(untouched[col], "", "{col}");
    }
}

#[test]
fn events_exports_every_event_with_every_column() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path());
    let (n, header, rows) = export(&store, &kind(ExportKind::Events));
    assert_eq!(header, EVENT_COLUMNS);
    assert_eq!(n, 4);
    let history = store.history(&sha(2)).unwrap();
    let undo_row = &rows[3];
    assert_eq!(undo_row["id"], "4");
    assert_eq!(undo_row["action"], "undo");
    assert_eq!(undo_row["prev_label"], "PNEUMONIA");
    assert_eq!(undo_row["new_label"], "");
    assert_eq!(undo_row["row_hash"], history[1].row_hash);
    assert_eq!(undo_row["prev_hash"], rows[2]["row_hash"]);
    assert_eq!(rows[0]["prev_hash"], "0".repeat(64));
    assert_eq!(rows[0]["app_version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn folder_keeps_only_studies_last_seen_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path());
    // Study 1 moved to a sibling folder whose name starts like the first one.
    store
        .upsert_study(&StudyRecord {
            path: "/data/ward-ab/moved.jpeg".into(),
            ..study(1)
        })
        .unwrap();
    let in_folder = |folder: &str, k: ExportKind| {
        let opts = ExportOptions {
            kind: k,
            folder: Some(folder.into()),
            ..ExportOptions::default()
        };
        let (_, _, rows) = export(&store, &opts);
        rows.iter().map(|r| r["sha256"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(in_folder("/data/ward-a", ExportKind::Reviewed), [sha(0)]);
    assert_eq!(in_folder("/data/ward-ab", ExportKind::Reviewed), [sha(1)]);
    assert_eq!(in_folder("/data", ExportKind::Reviewed).len(), 2);
    assert_eq!(in_folder("/elsewhere", ExportKind::All).len(), 0);
    // Events follow their study's last known folder.
    assert_eq!(in_folder("/data/ward-ab", ExportKind::Events), [sha(1)]);
    // The moved study is exported at its new path.
    let (_, _, rows) = export(&store, &ExportOptions::default());
    assert_eq!(rows[1]["path"], "/data/ward-ab/moved.jpeg");
}

#[test]
fn awkward_text_survives_a_round_trip_through_rfc_4180() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 1);
    let reason = "said \"no\", then: yes\nsecond line; é 中文 ✓";
    let mut d = decision(0, Action::Relabel, 0.1, Some(Label::Pneumonia));
    d.reason = reason.to_owned();
    d.reader = "Dr. O'Brien, MD".to_owned();
    store.record(&d).unwrap();
    let mut buf = Vec::new();
    store
        .export_csv(&mut buf, &ExportOptions::default())
        .unwrap();
    let text = String::from_utf8(buf.clone()).unwrap();
    assert!(
        text.contains("\"said \"\"no\"\", then: yes\nsecond line; é 中文 ✓\""),
        "{text}"
    );
    let (_, rows) = parse(&buf);
    assert_eq!(rows[0]["reason"], reason);
    assert_eq!(rows[0]["reader"], "Dr. O'Brien, MD");
}

#[test]
fn cells_that_a_spreadsheet_would_run_as_formulas_or_control_characters_are_made_safe() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 1);
    let mut d = decision(0, Action::Relabel, 0.1, Some(Label::Pneumonia));
    d.reason = "=HYPERLINK(\"http://evil\",\"x\") \u{1b}[31m\0".to_owned();
    d.reader = "@SUM(1+1)".to_owned();
    store.record(&d).unwrap();
    for opts in [ExportOptions::default(), kind(ExportKind::Events)] {
        let mut buf = Vec::new();
        store.export_csv(&mut buf, &opts).unwrap();
        let (_, rows) = parse(&buf);
        let row = rows.last().unwrap();
        assert_eq!(
            row["reason"],
            "'=HYPERLINK(\"http://evil\",\"x\") \\x1B[31m\\x00"
        );
        assert_eq!(row["reader"], "'@SUM(1+1)");
        assert!(
            !buf.contains(&0x1b) && !buf.contains(&0),
            "raw ESC or NUL in the CSV"
        );
    }
}

#[test]
fn exporting_to_a_file_replaces_it_whole_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path());
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("labels.csv");
    std::fs::write(&dest, "old contents\n").unwrap();
    let n = store
        .export_csv_to_file(&dest, &ExportOptions::default())
        .unwrap();
    assert_eq!(n, 2);
    let (header, rows) = parse(&std::fs::read(&dest).unwrap());
    assert_eq!((header.len(), rows.len()), (14, 2));
    let names: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["labels.csv"]);
}

#[test]
fn a_failed_export_leaves_the_old_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = fixture(dir.path());
    let path = store.path().to_owned();
    drop(store);
    // Damage the last event so that the export fails after writing the first rows.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP TRIGGER decisions_no_update; UPDATE decisions SET reason = X'00' WHERE id = 4;",
    )
    .unwrap();
    drop(raw);
    let store = DecisionStore::open(&path).unwrap();

    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("events.csv");
    std::fs::write(&dest, "old contents\n").unwrap();
    // The damaged store fails its audit check: refused before anything is written.
    let err = store
        .export_csv_to_file(&dest, &kind(ExportKind::Events))
        .unwrap_err();
    assert!(err.to_string().contains("fails its audit check"), "{err}");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old contents\n");
    // Forced, the export starts and fails at the damaged event.
    let forced = ExportOptions {
        force: true,
        ..kind(ExportKind::Events)
    };
    let err = store.export_csv_to_file(&dest, &forced).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old contents\n");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 1);

    // A destination folder that does not exist: an error, and no file anywhere.
    let missing = out_dir.path().join("no/such/folder/out.csv");
    assert!(
        store
            .export_csv_to_file(&missing, &ExportOptions::default())
            .is_err()
    );
    assert!(!missing.exists());
}
