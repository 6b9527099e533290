//! Tampering with the decision log behind the app's back, as an attacker with SQLite tools or a
//! hex editor would, must be caught by `verify` at the first broken event.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod audit_common;

use std::path::{Path, PathBuf};

use audit_common::{confirm, override_ai, store_with_studies, undo};
use cxr_triage::audit::{BrokenLink, DecisionStore, LinkProblem, VerifyReport};

const EVENTS: i64 = 8;

/// A closed store with 8 events over 3 studies (all by dr-alice, except event 5 by dr-bob).
/// Events 4 and 6 are PNEUMONIA confirmations.
fn tampering_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 3);
    store.record(&confirm(0, 0.2)).unwrap(); // 1
    store.record(&override_ai(0, 0.2)).unwrap(); // 2
    store.record(&confirm(1, 0.3)).unwrap(); // 3
    store.record(&confirm(2, 0.95)).unwrap(); // 4
    let mut bob = undo(0, 0.2);
    bob.reader = "dr-bob".to_owned();
    store.record(&bob).unwrap(); // 5
    store.record(&confirm(7, 0.7)).unwrap_err(); // Refused (unknown study): uses no id.
    store.record(&override_ai(1, 0.3)).unwrap(); // 6
    store.record(&undo(1, 0.3)).unwrap(); // 7
    store.record(&override_ai(2, 0.95)).unwrap(); // 8
    let report = store.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.total_events, 8);
    let path = store.path().to_owned();
    drop(store); // Closing checkpoints the write-ahead log into the file.
    (dir, path)
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// Runs `sql` with the append-only triggers dropped, then puts them back as they were, so that
/// only the hash chain can tell.
fn tamper(path: &Path, sql: &str) {
    let conn = raw(path);
    let triggers: Vec<String> = conn
        .prepare("SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'decisions' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(triggers.len(), 2);
    conn.execute_batch("DROP TRIGGER decisions_no_update; DROP TRIGGER decisions_no_delete;")
        .unwrap();
    conn.execute_batch(sql).unwrap();
    for t in triggers {
        conn.execute_batch(&t).unwrap();
    }
}

fn verify(path: &Path) -> VerifyReport {
    DecisionStore::open(path).unwrap().verify().unwrap()
}

fn assert_broken_at(report: &VerifyReport, id: i64, problem: &LinkProblem) {
    assert!(!report.is_intact());
    assert!(report.append_only_guard_intact, "{report:?}");
    assert_eq!(
        report.first_broken,
        Some(BrokenLink {
            id,
            problem: problem.clone()
        }),
        "{report:?}"
    );
    let sound = match problem {
        LinkProblem::IdOutOfSequence { expected } => expected - 1,
        _ => id - 1,
    };
    assert_eq!(report.events_checked, u64::try_from(sound).unwrap());
    assert_eq!(report.head_hash, None);
}

#[test]
fn an_intact_log_verifies_and_reports_its_head_hash() {
    let (_dir, path) = tampering_fixture();
    let report = verify(&path);
    assert!(report.is_intact());
    assert_eq!(report.events_checked, 8);
    let last: String = raw(&path)
        .query_row("SELECT row_hash FROM decisions WHERE id = 8", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(report.head_hash, Some(last));
}

#[test]
fn a_label_changed_through_sqlite_is_caught() {
    let (_dir, path) = tampering_fixture();
    tamper(
        &path,
        "UPDATE decisions SET new_label = 'NORMAL' WHERE id = 4",
    );
    assert_broken_at(&verify(&path), 4, &LinkProblem::ContentChanged);
}

#[test]
fn a_score_nudged_by_a_rounding_error_is_caught() {
    let (_dir, path) = tampering_fixture();
    tamper(
        &path,
        "UPDATE decisions SET score = score + 1e-12 WHERE id = 3",
    );
    assert_broken_at(&verify(&path), 3, &LinkProblem::ContentChanged);
}

#[test]
fn a_deleted_row_is_caught() {
    let (_dir, path) = tampering_fixture();
    tamper(&path, "DELETE FROM decisions WHERE id = 3");
    assert_broken_at(
        &verify(&path),
        4,
        &LinkProblem::IdOutOfSequence { expected: 3 },
    );
}

#[test]
fn deleting_the_last_rows_is_caught() {
    let (_dir, path) = tampering_fixture();
    tamper(&path, "DELETE FROM decisions WHERE id >= 7");
    assert_broken_at(
        &verify(&path),
        7,
        &LinkProblem::TailDeleted { issued: EVENTS },
    );
}

#[test]
fn two_swapped_rows_are_caught() {
    let (_dir, path) = tampering_fixture();
    // Swap everything but the ids of events 3 and 5.
    let cols = "decided_at, reader, app_version, study_sha256, study_path, model_id, weights_sha256, \
                score, threshold, ai_label, prev_label, new_label, action, reason, prev_hash, row_hash";
    let set = cols
        .split(", ")
        .map(|c| format!("{c} = (SELECT {c} FROM decisions AS o WHERE o.id = 8 - decisions.id)"))
        .collect::<Vec<_>>()
        .join(", ");
    tamper(
        &path,
        &format!(
            "CREATE TEMP TABLE copy AS SELECT * FROM decisions;
             UPDATE decisions SET {} WHERE id IN (3, 5);",
            set.replace("FROM decisions AS o", "FROM temp.copy AS o")
        ),
    );
    let reader3: String = raw(&path)
        .query_row("SELECT reader FROM decisions WHERE id = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(reader3, "dr-bob", "the swap did not happen");
    assert_broken_at(&verify(&path), 3, &LinkProblem::PrevHashMismatch);
}

#[test]
fn two_rows_with_swapped_ids_are_caught() {
    let (_dir, path) = tampering_fixture();
    tamper(
        &path,
        "UPDATE decisions SET id = -1 WHERE id = 3;
         UPDATE decisions SET id = 3 WHERE id = 5;
         UPDATE decisions SET id = 5 WHERE id = -1;",
    );
    assert_broken_at(&verify(&path), 3, &LinkProblem::PrevHashMismatch);
}

#[test]
fn a_forged_row_appended_at_the_end_is_caught() {
    let (_dir, path) = tampering_fixture();
    // The forger links to the real head and borrows a real row hash.
    tamper(
        &path,
        "INSERT INTO decisions
             SELECT 9, decided_at, 'dr-mallory', app_version, study_sha256, study_path, model_id,
                    weights_sha256, score, threshold, ai_label, new_label, 'NORMAL', 'relabel',
                    'forged', (SELECT row_hash FROM decisions WHERE id = 8), row_hash,
                    format_version, viewed_ms, ood_reason
             FROM decisions WHERE id = 8",
    );
    assert_broken_at(&verify(&path), 9, &LinkProblem::ContentChanged);
}

#[test]
fn a_forged_row_inserted_in_the_middle_is_caught() {
    let (_dir, path) = tampering_fixture();
    // Renumber events 5.. up by one and slip a copy of event 4 (relabelled) in at 5.
    tamper(
        &path,
        "UPDATE decisions SET id = -id WHERE id >= 5;
         UPDATE decisions SET id = 1 - id WHERE id < 0;
         INSERT INTO decisions
             SELECT 5, decided_at, reader, app_version, study_sha256, study_path, model_id,
                    weights_sha256, score, threshold, ai_label, new_label, 'NORMAL', 'relabel',
                    '', row_hash, row_hash, format_version, viewed_ms, ood_reason
             FROM decisions WHERE id = 4;",
    );
    let count: i64 = raw(&path)
        .query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, EVENTS + 1);
    assert_broken_at(&verify(&path), 5, &LinkProblem::ContentChanged);
}

#[test]
fn a_byte_edited_in_the_file_is_caught() {
    let (_dir, path) = tampering_fixture();
    assert!(!path.with_extension("sqlite3-wal").exists());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"dr-bob")
        .expect("the reader's name is in the file");
    bytes[at + 5] = b'x'; // dr-bob -> dr-box
    std::fs::write(&path, bytes).unwrap();
    assert_broken_at(&verify(&path), 5, &LinkProblem::ContentChanged);
}

#[test]
fn a_value_of_the_wrong_type_is_caught() {
    let (_dir, path) = tampering_fixture();
    // A TEXT column turns a number into text, but keeps a blob as it is.
    tamper(&path, "UPDATE decisions SET reason = X'00ff' WHERE id = 6");
    assert_broken_at(
        &verify(&path),
        6,
        &LinkProblem::Unreadable { column: "reason" },
    );
}

#[test]
fn removing_or_defusing_the_append_only_guard_is_reported() {
    let (_dir, path) = tampering_fixture();
    raw(&path)
        .execute_batch("DROP TRIGGER decisions_no_delete")
        .unwrap();
    let report = verify(&path);
    assert!(report.first_broken.is_none());
    assert!(!report.append_only_guard_intact);
    assert!(!report.is_intact());

    // A trigger of the same name that does nothing is no guard either.
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions BEGIN SELECT 1; END",
        )
        .unwrap();
    assert!(!verify(&path).append_only_guard_intact);
}

/// The studies table (paths, patient ids and study UIDs, which exports show) is checked against
/// the study log: every edit behind the store's back is reported, and the log itself is chained.
#[test]
fn edits_to_the_studies_table_are_caught() {
    let cases = [
        (
            "a path",
            "UPDATE studies SET last_path = '/elsewhere/x.png', path_bytes = CAST('/elsewhere/x.png' AS BLOB) WHERE rowid = 1",
        ),
        (
            "a patient id",
            "UPDATE studies SET patient_id = 'P-OTHER' WHERE rowid = 2",
        ),
        (
            "a study uid",
            "UPDATE studies SET study_uid = '1.2.3' WHERE rowid = 1",
        ),
        ("a removed row", "DELETE FROM studies WHERE rowid = 3"),
        (
            "a forged row",
            "INSERT INTO studies (sha256, last_path, metadata_json, first_seen_at, last_seen_at) VALUES ('ab', '/x', '{}', 't', 't')",
        ),
    ];
    for (what, sql) in cases {
        let (_dir, path) = tampering_fixture();
        let store = DecisionStore::open_existing(&path).unwrap();
        assert!(
            store.verify_studies().unwrap().is_intact(),
            "{what}: before"
        );
        drop(store);
        raw(&path).execute_batch(sql).unwrap();
        let store = DecisionStore::open_existing(&path).unwrap();
        let report = store.verify_studies().unwrap();
        assert!(
            report.log.is_intact(),
            "{what}: the log itself is untouched"
        );
        assert_eq!(report.mismatched.len(), 1, "{what}: {report:?}");
        assert!(
            store
                .audit_problems()
                .unwrap()
                .iter()
                .any(|p| p.contains("not what the study log recorded")),
            "{what}"
        );
    }

    // The log's own rows are chained and guarded like the decisions'.
    let (_dir, path) = tampering_fixture();
    let conn = raw(&path);
    let err = conn
        .execute("UPDATE study_events SET patient_id = 'X' WHERE id = 1", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    conn.execute_batch(
        "DROP TRIGGER study_events_no_update; UPDATE study_events SET patient_id = 'X' WHERE id = 1; \
         UPDATE studies SET patient_id = 'X' WHERE rowid = 1;",
    )
    .unwrap();
    drop(conn);
    let report = DecisionStore::open_existing(&path)
        .unwrap()
        .verify_studies()
        .unwrap();
    assert!(!report.log.append_only_guard_intact);
    assert_eq!(
        report.log.first_broken.map(|b| (b.id, b.problem)),
        Some((1, LinkProblem::ContentChanged))
    );
}
