//! The decision store: recording, undo semantics, current state, resuming, rules and opening.

mod audit_common;

use audit_common::{confirm, decision, override_ai, sha, store_with_studies, study, undo};
use cxr_triage::audit::{Action, AuditError, DecisionStore, StudyRecord};
use cxr_triage::worklist::Label::{Normal, Pneumonia};

#[test]
fn record_fills_in_id_time_version_previous_label_and_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 2);

    let first = store.record(&confirm(0, 0.9)).unwrap();
    assert_eq!(first.id, 1);
    assert_eq!(first.prev_hash, "0".repeat(64));
    assert_eq!(first.row_hash.len(), 64);
    assert_eq!(first.app_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(first.prev_label, None);
    assert_eq!(first.new_label, Some(Pneumonia));
    assert_eq!(first.ai_label, Some(Pneumonia));
    assert_eq!(first.score, Some(0.9));
    // RFC 3339, UTC with `Z`, milliseconds: 2026-03-01T09:30:12.345Z.
    let t = &first.decided_at;
    assert_eq!(t.len(), 24, "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    chrono::DateTime::parse_from_rfc3339(t).unwrap();

    let second = store.record(&override_ai(0, 0.9)).unwrap();
    assert_eq!(second.id, 2);
    assert_eq!(second.prev_hash, first.row_hash);
    assert_eq!(second.prev_label, Some(Pneumonia));
    assert_eq!(second.new_label, Some(Normal));
    assert!(second.decided_at >= first.decided_at);

    // Another study's chain of labels is its own, but the hash chain is shared.
    let third = store.record(&confirm(1, 0.1)).unwrap();
    assert_eq!(third.prev_label, None);
    assert_eq!(third.prev_hash, second.row_hash);

    assert_eq!(store.history(&sha(0)).unwrap(), vec![first, second]);
    assert_eq!(store.history(&sha(1)).unwrap(), vec![third]);
    assert_eq!(store.event_count().unwrap(), 3);
}

#[test]
fn undo_walks_back_through_the_decisions_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 1);
    let final_label = |store: &DecisionStore| store.current(&sha(0)).unwrap().unwrap().final_label;

    store.record(&confirm(0, 0.8)).unwrap();
    store.record(&override_ai(0, 0.8)).unwrap();
    assert_eq!(final_label(&store), Some(Normal));

    let u1 = store.record(&undo(0, 0.8)).unwrap();
    assert_eq!(
        (u1.prev_label, u1.new_label),
        (Some(Normal), Some(Pneumonia))
    );
    assert_eq!(final_label(&store), Some(Pneumonia));

    let u2 = store.record(&undo(0, 0.8)).unwrap();
    assert_eq!((u2.prev_label, u2.new_label), (Some(Pneumonia), None));
    assert_eq!(final_label(&store), None);
    assert!(!store.current(&sha(0)).unwrap().unwrap().is_reviewed());

    assert!(matches!(
        store.record(&undo(0, 0.8)),
        Err(AuditError::NothingToUndo)
    ));
    let actions: Vec<_> = store
        .history(&sha(0))
        .unwrap()
        .iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            Action::Confirm,
            Action::Override,
            Action::Undo,
            Action::Undo
        ]
    );
}

#[test]
fn a_decision_after_an_undo_is_the_next_one_undone() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 1);
    store.record(&confirm(0, 0.2)).unwrap(); // NORMAL, replacing unreviewed
    store.record(&override_ai(0, 0.2)).unwrap(); // PNEUMONIA, replacing NORMAL
    store.record(&undo(0, 0.2)).unwrap(); // back to NORMAL
    store
        .record(&decision(0, Action::Relabel, 0.2, Some(Pneumonia)))
        .unwrap(); // PNEUMONIA, replacing NORMAL

    // An undo that names a label other than the one it restores is refused, and not recorded.
    let mut wrong = undo(0, 0.2);
    wrong.new_label = Some(Pneumonia);
    assert!(matches!(
        store.record(&wrong),
        Err(AuditError::InvalidDecision(_))
    ));
    let mut right = undo(0, 0.2);
    right.new_label = Some(Normal);
    assert_eq!(store.record(&right).unwrap().new_label, Some(Normal)); // undoes the relabel
    assert_eq!(store.record(&undo(0, 0.2)).unwrap().new_label, None); // undoes the confirm
    assert!(matches!(
        store.record(&undo(0, 0.2)),
        Err(AuditError::NothingToUndo)
    ));
    assert_eq!(store.event_count().unwrap(), 6);
}

#[test]
fn current_state_says_whether_reader_and_ai_agree() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 3);
    store.record(&confirm(0, 0.7)).unwrap();
    store.record(&override_ai(1, 0.7)).unwrap();
    store.record(&confirm(2, 0.3)).unwrap();
    // A relabel without an AI call keeps the AI call on record from the earlier event.
    let mut relabel = decision(2, Action::Relabel, 0.0, Some(Pneumonia));
    relabel.score = None;
    relabel.threshold = None;
    relabel.ai_label = None;
    relabel.model_id = None;
    store.record(&relabel).unwrap();

    let c0 = store.current(&sha(0)).unwrap().unwrap();
    assert_eq!((c0.final_label, c0.agreed), (Some(Pneumonia), Some(true)));
    let c1 = store.current(&sha(1)).unwrap().unwrap();
    assert_eq!((c1.final_label, c1.agreed), (Some(Normal), Some(false)));
    let c2 = store.current(&sha(2)).unwrap().unwrap();
    assert_eq!((c2.final_label, c2.agreed), (Some(Pneumonia), Some(false)));
    assert_eq!(c2.last_event.action, Action::Relabel);
    let ai = c2.ai.unwrap();
    assert_eq!((ai.label, ai.score), (Normal, Some(0.3)));
    assert!(store.current(&sha(99)).unwrap().is_none());
}

#[test]
fn a_reopened_folder_gets_its_decisions_back_by_hash_even_after_a_move() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decisions.sqlite3");
    {
        let store = store_with_studies(dir.path(), 3);
        store.record(&confirm(0, 0.9)).unwrap();
        store.record(&override_ai(2, 0.1)).unwrap();
    }
    // The folder was renamed: the loader sees the same files (same hashes) at new paths.
    let store = DecisionStore::open(&db).unwrap();
    let moved: Vec<StudyRecord> = (0..3)
        .map(|n| StudyRecord {
            path: format!("/archive/renamed/{n}.jpeg").into(),
            ..study(n)
        })
        .collect();
    store.upsert_studies(&moved).unwrap();
    let hashes: Vec<String> = (0..3).map(sha).collect();
    let refs: Vec<&str> = hashes.iter().map(String::as_str).collect();
    let states = store.current_many(&refs).unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(states[&sha(0)].final_label, Some(Pneumonia));
    assert_eq!(states[&sha(2)].final_label, Some(Pneumonia));
    assert!(!states.contains_key(&sha(1)));
    assert_eq!(
        store.study(&sha(2)).unwrap().unwrap().path,
        std::path::Path::new("/archive/renamed/2.jpeg")
    );
}

#[test]
fn current_many_answers_for_thousands_of_studies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 5000);
    for n in (0..5000).step_by(50) {
        store.record(&confirm(n, 0.6)).unwrap();
        if n % 100 == 0 {
            store.record(&override_ai(n, 0.6)).unwrap();
        }
    }
    let hashes: Vec<String> = (0..5000).map(sha).collect();
    let refs: Vec<&str> = hashes.iter().map(String::as_str).collect();
    let states = store.current_many(&refs).unwrap();
    assert_eq!(states.len(), 100);
    for n in (0..5000).step_by(50) {
        let want = if n % 100 == 0 { Normal } else { Pneumonia };
        assert_eq!(states[&sha(n)].final_label, Some(want), "study {n}");
    }
    // A second, smaller call does not see the first call's studies.
    assert_eq!(store.current_many(&refs[..60]).unwrap().len(), 2);
}

#[test]
fn decisions_that_break_the_rules_are_refused_and_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 1);
    let mut cases = Vec::new();
    let mut d = confirm(0, 0.9);
    d.reader = "  ".to_owned();
    cases.push(("empty reader", d));
    let mut d = confirm(0, 0.9);
    d.study_sha256 = sha(0).to_uppercase();
    cases.push(("upper-case hash", d));
    let mut d = confirm(0, 0.9);
    d.score = Some(1.5);
    d.ai_label = Some(Pneumonia);
    cases.push(("score above 1", d));
    let mut d = confirm(0, 0.9);
    d.score = Some(f32::NAN);
    cases.push(("score NaN", d));
    let mut d = confirm(0, 0.9);
    d.new_label = Some(Normal);
    cases.push(("confirm that changes the label", d));
    let mut d = override_ai(0, 0.9);
    d.new_label = Some(Pneumonia);
    cases.push(("override that keeps the label", d));
    let mut d = confirm(0, 0.9);
    d.new_label = None;
    cases.push(("confirm without a label", d));
    let mut d = confirm(0, 0.9);
    d.ai_label = Some(Normal);
    d.new_label = Some(Normal);
    cases.push(("AI label that does not follow from the score", d));
    let mut d = confirm(0, 0.9);
    d.weights_sha256 = Some("abc".to_owned());
    cases.push(("short weights hash", d));
    for (what, d) in cases {
        let err = store.record(&d).unwrap_err();
        assert!(
            matches!(err, AuditError::InvalidDecision(_)),
            "{what}: {err}"
        );
    }
    assert!(matches!(
        store.record(&confirm(7, 0.9)),
        Err(AuditError::UnknownStudy)
    ));
    assert_eq!(store.event_count().unwrap(), 0);

    let mut bad = study(1);
    bad.metadata_json = "{not json".to_owned();
    assert!(matches!(
        store.upsert_study(&bad),
        Err(AuditError::InvalidStudy(_))
    ));
}

#[test]
fn the_log_refuses_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 1);
    store.record(&confirm(0, 0.9)).unwrap();
    let raw = rusqlite::Connection::open(store.path()).unwrap();
    let update = raw
        .execute("UPDATE decisions SET new_label = 'NORMAL' WHERE id = 1", [])
        .unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = raw
        .execute("DELETE FROM decisions WHERE id = 1", [])
        .unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    assert_eq!(
        store.current(&sha(0)).unwrap().unwrap().final_label,
        Some(Pneumonia)
    );
}

#[test]
fn opening_refuses_files_that_are_not_our_store() {
    let dir = tempfile::tempdir().unwrap();

    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "PatientName,Score\nnot a database at all, but long enough to have a header\n".repeat(20),
    )
    .unwrap();
    let err = DecisionStore::open(&text).unwrap_err();
    assert!(matches!(err, AuditError::NotOurDatabase { .. }), "{err}");
    assert!(
        err.to_string().contains("is not a cxr-triage database"),
        "{err}"
    );

    let other = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER)")
        .unwrap();
    assert!(matches!(
        DecisionStore::open(&other),
        Err(AuditError::NotOurDatabase { .. })
    ));

    let newer = dir.path().join("newer.sqlite3");
    drop(DecisionStore::open(&newer).unwrap());
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = DecisionStore::open(&newer).unwrap_err();
    assert!(matches!(err, AuditError::TooNew { found: 99, .. }), "{err}");

    let missing = dir.path().join("missing.sqlite3");
    assert!(matches!(
        DecisionStore::open_existing(&missing),
        Err(AuditError::NoStore { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn reopening_keeps_events_and_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/folder/decisions.sqlite3");
    {
        let store = DecisionStore::open(&db).unwrap();
        store.upsert_study(&study(0)).unwrap();
        store.record(&confirm(0, 0.9)).unwrap();
    }
    let store = DecisionStore::open(&db).unwrap();
    assert_eq!(store.event_count().unwrap(), 1);
    let raw = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!((version, mode.as_str()), (6, "wal"));
    assert!(store.verify().unwrap().is_intact());
}

#[test]
fn the_default_path_is_in_the_users_data_folder() {
    if std::env::var_os("HOME").is_none() {
        // No home folder: the store says so instead of guessing a place.
        assert!(matches!(
            DecisionStore::default_path(),
            Err(AuditError::NoDataDir)
        ));
        return;
    }
    let path = DecisionStore::default_path().unwrap();
    assert!(
        path.ends_with("cxr-triage/decisions.sqlite3"),
        "{}",
        path.display()
    );
    assert!(path.is_absolute());
}

#[test]
fn record_all_records_every_decision_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 2);
    // The second undo has nothing left to undo: the whole batch is refused.
    let batch = [confirm(0, 0.9), undo(0, 0.9), undo(0, 0.9)];
    assert!(matches!(
        store.record_all(&batch),
        Err(AuditError::NothingToUndo)
    ));
    assert_eq!(store.event_count().unwrap(), 0);

    let events = store
        .record_all(&[confirm(0, 0.9), override_ai(1, 0.1), undo(0, 0.9)])
        .unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(events[2].prev_label, Some(Pneumonia));
    assert_eq!(events[2].new_label, None);
    assert_eq!(events[1].prev_hash, events[0].row_hash);
    assert_eq!(
        store.history(&sha(0)).unwrap(),
        [events[0].clone(), events[2].clone()]
    );
    assert!(store.record_all(&[]).unwrap().is_empty());
    assert!(store.verify().unwrap().is_intact());
}

#[test]
fn a_blind_call_records_no_ai_label_and_the_final_call_follows_it() {
    use cxr_triage::audit::BlindFirstSummary;
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 4);
    let blind = |n: u32, label| {
        let mut d = decision(n, Action::BlindCall, 0.9, Some(label));
        d.ai_label = None;
        d
    };
    // A blind call carries no AI label: one that does is refused.
    let mut shown = blind(0, Normal);
    shown.ai_label = Some(Pneumonia);
    assert!(matches!(
        store.record(&shown),
        Err(AuditError::InvalidDecision(_))
    ));
    // Study 0: NORMAL blind, then PNEUMONIA once the AI (PNEUMONIA at 0.9) was shown.
    let first = store.record(&blind(0, Normal)).unwrap();
    assert_eq!((first.ai_label, first.new_label), (None, Some(Normal)));
    assert_eq!(first.action, Action::BlindCall);
    store.record(&confirm(0, 0.9)).unwrap();
    // Study 1: NORMAL blind, kept against the AI's PNEUMONIA.
    store.record(&blind(1, Normal)).unwrap();
    store.record(&override_ai(1, 0.9)).unwrap();
    // Study 2: PNEUMONIA blind, kept with the AI.
    store.record(&blind(2, Pneumonia)).unwrap();
    store.record(&confirm(2, 0.9)).unwrap();
    // Study 3: a blind call and no final call yet; its label is in force.
    store.record(&blind(3, Pneumonia)).unwrap();
    assert_eq!(
        store.current(&sha(3)).unwrap().unwrap().final_label,
        Some(Pneumonia)
    );
    assert_eq!(
        store.blind_first_summary().unwrap(),
        BlindFirstSummary {
            blind_calls: 4,
            final_calls: 3,
            changed: 1,
            blind_disagreed: 2,
        }
    );
    // Undoing a final call leaves the blind call in force, and no final call.
    store.record(&undo(0, 0.9)).unwrap();
    assert_eq!(
        store.current(&sha(0)).unwrap().unwrap().final_label,
        Some(Normal)
    );
    assert_eq!(store.blind_first_summary().unwrap().final_calls, 2);
    assert!(store.verify().unwrap().is_intact());
}
