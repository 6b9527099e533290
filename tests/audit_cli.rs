//! The `audit verify`, `export` and `import` commands, run as the real binary.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod audit_common;

use std::path::Path;
use std::process::{Command, Output};

use audit_common::{confirm, override_ai, store_with_studies};

fn run(args: &[&str], data_home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxr-triage"))
        .args(args)
        // Keep the default store location away from the user's real data folder.
        .env("XDG_DATA_HOME", data_home)
        .env("HOME", data_home)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A store with 3 events, its path as text, and the temp dir holding both.
fn fixture() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 3);
    store.record(&confirm(0, 0.9)).unwrap();
    store.record(&override_ai(1, 0.9)).unwrap();
    store.record(&confirm(2, 0.1)).unwrap();
    let db = store.path().to_str().unwrap().to_owned();
    (dir, db)
}

#[test]
fn verify_says_ok_for_an_intact_store_and_names_the_broken_event_otherwise() {
    let (dir, db) = fixture();
    let ok = run(&["audit", "verify", "--db", &db], dir.path());
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).starts_with("OK: 3 events"), "{}", stdout(&ok));

    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute_batch(
        "DROP TRIGGER decisions_no_update; UPDATE decisions SET reader = 'dr-mallory' WHERE id = 2;",
    )
    .unwrap();
    drop(raw);
    let bad = run(&["audit", "verify", "--db", &db], dir.path());
    assert_eq!(bad.status.code(), Some(2));
    let out = stdout(&bad);
    assert!(out.contains("TAMPERED"), "{out}");
    assert!(
        out.contains("event 2: its content was changed after it was recorded"),
        "{out}"
    );
    assert!(out.contains("append-only"), "{out}");
}

#[test]
fn commands_refuse_a_store_that_does_not_exist_and_do_not_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.sqlite3");
    let out = run(
        &["audit", "verify", "--db", missing.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("there is no decision store at"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());
    // The default location, under the (redirected) user data folder.
    let out = run(&["audit", "verify"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cxr-triage/decisions.sqlite3"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("cxr-triage").exists());
}

#[test]
fn export_writes_the_csv_and_refuses_to_write_into_the_study_folder() {
    let (dir, db) = fixture();
    let csv_path = dir.path().join("out.csv");
    let csv_arg = csv_path.to_str().unwrap();
    let out = run(&["export", "--csv", csv_arg, "--db", &db], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("exported 3 reviewed studies"));
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert!(text.starts_with(
        "path,sha256,patient_id,study_uid,score,ai_label,final_label,agreed,reader,decided_at,reason,model_id,threshold,not_seen\n"
    ));
    assert_eq!(text.lines().count(), 4);

    let out = run(
        &["export", "--csv", csv_arg, "--db", &db, "--events"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(&csv_path)
            .unwrap()
            .starts_with("id,decided_at,")
    );

    let out = run(
        &["export", "--csv", csv_arg, "--db", &db, "--events", "--all"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "--all and --events conflict");

    let study_folder = dir.path().join("studies");
    std::fs::create_dir(&study_folder).unwrap();
    let inside = study_folder.join("labels.csv");
    let out = run(
        &[
            "export",
            "--csv",
            inside.to_str().unwrap(),
            "--db",
            &db,
            "--folder",
            study_folder.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("inside") && stderr(&out).contains("never written to"),
        "{}",
        stderr(&out)
    );
    assert!(!inside.exists());

    // `export --csv S.sqlite --db S.sqlite` used to replace the whole audit trail with a CSV and
    // exit 0: the store, its WAL and a link are refused, and the store still verifies.
    let before = std::fs::read(&db).unwrap();
    for dest in [db.clone(), format!("{db}-wal"), format!("{db}-shm")] {
        let out = run(&["export", "--csv", &dest, "--db", &db], dir.path());
        assert_eq!(out.status.code(), Some(1), "{dest}");
        assert!(stderr(&out).contains("decision store"), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let verify = run(&["audit", "verify", "--db", &db], dir.path());
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    #[cfg(unix)]
    {
        let precious = dir.path().join("precious.txt");
        std::fs::write(&precious, "keep").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&precious, &link).unwrap();
        let out = run(
            &["export", "--csv", link.to_str().unwrap(), "--db", &db],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    }
}

#[test]
fn import_records_good_rows_and_exits_non_zero_when_it_rejects_any() {
    let (dir, db) = fixture();
    let csv_path = dir.path().join("fixes.csv");
    std::fs::write(
        &csv_path,
        format!(
            "sha256,label,reason\n{},NORMAL,second look\n{},PNEUMONIA,typo\n",
            audit_common::sha(0),
            "f".repeat(64)
        ),
    )
    .unwrap();
    let args = [
        "import",
        "--csv",
        csv_path.to_str().unwrap(),
        "--reader",
        "dr-dan",
        "--db",
        &db,
    ];
    let out = run(&args, dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("line 3: not recorded: unknown study"),
        "{text}"
    );
    assert!(
        text.contains("recorded 1 relabel events, rejected 1 rows"),
        "{text}"
    );

    std::fs::write(
        &csv_path,
        format!("sha256,label\n{},0\n", audit_common::sha(1)),
    )
    .unwrap();
    let out = run(&args, dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let store = cxr_triage::audit::DecisionStore::open(Path::new(&db)).unwrap();
    assert_eq!(store.event_count().unwrap(), 5);
    assert!(store.verify().unwrap().is_intact());

    let help = run(&["import", "--help"], dir.path());
    assert!(stdout(&help).contains("2 when any row was rejected"));
}

#[test]
fn deleting_the_last_events_is_caught_by_the_anchor_and_export_refuses_unless_forced() {
    let (dir, db) = fixture();
    assert!(cxr_triage::audit::anchor_path(Path::new(&db)).is_file());
    // Remove the last event the way an attacker would: guard dropped, row deleted, sequence
    // lowered. The remaining chain of 2 events is valid on its own.
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute_batch(
        "DROP TRIGGER decisions_no_delete; DELETE FROM decisions WHERE id = 3; \
         UPDATE sqlite_sequence SET seq = 2 WHERE name = 'decisions';",
    )
    .unwrap();
    drop(raw);
    let bad = run(&["audit", "verify", "--db", &db], dir.path());
    assert_eq!(bad.status.code(), Some(2), "{}", stdout(&bad));
    assert!(
        stdout(&bad).contains("holds 2 events but 3 were recorded"),
        "{}",
        stdout(&bad)
    );
    let csv_path = dir.path().join("out.csv");
    let csv = csv_path.to_str().unwrap();
    let out = run(&["export", "--csv", csv, "--db", &db], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("fails its audit check"),
        "{}",
        stderr(&out)
    );
    assert!(!csv_path.exists());
    let forced = run(
        &["export", "--csv", csv, "--db", &db, "--force"],
        dir.path(),
    );
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert!(
        text.starts_with("# cxr-triage: exported with --force from a decision store that FAILS"),
        "{text}"
    );
}

#[test]
fn a_rolled_back_store_is_caught_by_an_earlier_receipt_and_an_empty_one_is_refused() {
    let (dir, db) = fixture();
    // A backup of the store and its anchor, taken now (3 events).
    let backup = dir.path().join("backup");
    std::fs::create_dir(&backup).unwrap();
    let anchor = cxr_triage::audit::anchor_path(Path::new(&db));
    std::fs::copy(&db, backup.join("db")).unwrap();
    std::fs::copy(&anchor, backup.join("anchor")).unwrap();
    // One more decision, then an export whose receipt the quality team keeps.
    let store = cxr_triage::audit::DecisionStore::open(Path::new(&db)).unwrap();
    store.record(&confirm(2, 0.2)).unwrap();
    drop(store);
    let csv = dir.path().join("out.csv");
    let out = run(
        &["export", "--csv", csv.to_str().unwrap(), "--db", &db],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let receipt = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("receipt: ").map(str::to_owned))
        .unwrap();
    assert!(receipt.starts_with("cxr-triage-receipt:v1:4:"), "{receipt}");
    // Roll the store and its anchor back together: the anchor agrees, the receipt does not.
    std::fs::copy(backup.join("db"), &db).unwrap();
    std::fs::copy(backup.join("anchor"), &anchor).unwrap();
    let plain = run(&["audit", "verify", "--db", &db], dir.path());
    assert_eq!(plain.status.code(), Some(0), "{}", stdout(&plain));
    let checked = run(
        &["audit", "verify", "--db", &db, "--receipt", &receipt],
        dir.path(),
    );
    assert_eq!(checked.status.code(), Some(2), "{}", stdout(&checked));
    assert!(
        stdout(&checked).contains("holds 3 events but 4 were recorded"),
        "{}",
        stdout(&checked)
    );
    // A store truncated to 0 bytes is refused, and verify leaves it at 0 bytes.
    std::fs::write(&db, b"").unwrap();
    let empty = run(&["audit", "verify", "--db", &db], dir.path());
    assert_eq!(empty.status.code(), Some(1));
    assert!(stderr(&empty).contains("is empty"), "{}", stderr(&empty));
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}

#[test]
fn events_lost_with_a_deleted_wal_are_caught_by_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 3);
    let db = store.path().to_owned();
    // While the store is open, its newest committed events are in the WAL file.
    store.record(&confirm(0, 0.9)).unwrap();
    store.record(&override_ai(1, 0.9)).unwrap();
    let copy = dir.path().join("copy.sqlite3");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::copy(
        cxr_triage::audit::anchor_path(&db),
        cxr_triage::audit::anchor_path(&copy),
    )
    .unwrap();
    drop(store);
    // The copy without its WAL: a store whose WAL was lost.
    let out = run(
        &["audit", "verify", "--db", copy.to_str().unwrap()],
        dir.path(),
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("were recorded") || text.contains("is empty"),
        "{text}"
    );
}

#[test]
fn qa_reports_agreement_with_the_ai_and_between_readers_and_the_disagreement_queue() {
    use audit_common::{decision, sha};
    use cxr_triage::audit::Action;
    use cxr_triage::worklist::Label;
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_studies(dir.path(), 12);
    let by = |reader: &str, mut d: cxr_triage::audit::NewDecision| {
        d.reader = reader.to_owned();
        store.record(&d).unwrap();
    };
    // Alice reads studies 0..10: AI PNEUMONIA on the even ones (0.9), NORMAL on the odd (0.1);
    // she agrees on 8 and overrides studies 1 (to PNEUMONIA) and 2 (to NORMAL).
    for n in 0..10u32 {
        let score = if n % 2 == 0 { 0.9 } else { 0.1 };
        let d = if n == 1 || n == 2 {
            override_ai(n, score)
        } else {
            confirm(n, score)
        };
        by("Alice", d);
    }
    // Bob reads studies 0..4 again: the same as Alice on 0, 1 and 3, the other call on 2.
    by("Bob", confirm(0, 0.9));
    by("Bob", override_ai(1, 0.1));
    by("Bob", confirm(2, 0.9));
    by("Bob", confirm(3, 0.1));
    // An import (no AI label) counts as a call but not against the AI.
    let mut imported = decision(11, Action::Relabel, 0.5, Some(Label::Normal));
    imported.ai_label = None;
    imported.score = None;
    imported.threshold = None;
    by("Carol", imported);
    drop(store);

    let db = dir.path().join("decisions.sqlite3");
    let out = dir.path().join("qa");
    let o = run(
        &[
            "qa",
            "--db",
            db.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("Alice: 10 studies called, 2 overriding the AI"),
        "{text}"
    );
    assert!(text.contains("disagreement queue: 1 studies"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let alice = &report["readers"][0];
    assert_eq!(alice["reader"], "Alice");
    // Alice against the AI: 8 of 10 agree, both raters call 5 pneumonia: kappa 0.6.
    assert!((alice["with_ai"]["observed"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    assert!((alice["with_ai"]["kappa"]["estimate"].as_f64().unwrap() - 0.6).abs() < 1e-9);
    assert_eq!(report["readers"][2]["reader"], "Carol");
    assert_eq!(report["readers"][2]["with_ai"]["pairs"], 0);
    // Reader and reader: studies 0..4, Alice first; they differ on study 2 only.
    assert_eq!(report["reader_reader"]["pairs"], 4);
    let queue = report["disagreements"].as_array().unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0]["study_sha256"], sha(2));
    assert_eq!(queue[0]["first"][0], "Alice");
    assert_eq!(queue[0]["first"][1], "NORMAL");
    assert_eq!(queue[0]["second"], serde_json::json!(["Bob", "PNEUMONIA"]));
    // The plots show the readers' agreement in colour (Carol has no calls against the AI).
    for name in ["kappa.png", "kappa_by_month.png"] {
        let img = image::open(out.join(name)).unwrap().to_rgb8();
        let coloured = img
            .pixels()
            .filter(|p| !(p.0[0] == p.0[1] && p.0[1] == p.0[2]))
            .count();
        assert!(coloured > 50, "{name}: {coloured} coloured pixels");
    }
    // qa never writes to the store.
    assert!(DecisionStoreCheck::intact(&db));
}

/// The store is unchanged and verifies.
struct DecisionStoreCheck;

impl DecisionStoreCheck {
    fn intact(db: &Path) -> bool {
        let store = cxr_triage::audit::DecisionStore::open_existing(db).unwrap();
        store.event_count().unwrap() == 15 && store.verify().unwrap().is_intact()
    }
}
