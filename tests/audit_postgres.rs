//! The decision store on a real PostgreSQL server: the same semantics as SQLite, the reader is
//! the database user, append-only for everyone, concurrent writers never fork the chain,
//! NOTIFY reaches a listening window, claims, `store copy` both ways, `audit verify`.
//!
//! Needs a server: `CXR_TRIAGE_TEST_PG=postgres://SUPERUSER@HOST:PORT` (`.ci/run` starts a
//! throw-away one with `scripts/pg-test-server.sh`). Without it the tests skip and say why,
//! except under `CI=true`, where they fail.

mod audit_common;
mod common;
mod pg_common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use audit_common::{confirm, decision, override_ai, sha, study};
use cxr_triage::audit::{Action, AuditError, DecisionStore, LinkProblem, PgStore, copy_store};
use cxr_triage::worklist::Label;
use pg_common::{as_user, department, message, new_database, server};

/// Runs the command line with `args`; fails the test unless it succeeds; returns what it printed.
fn cli_ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cxr-triage"))
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .expect("run cxr-triage");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn decisions_and_undo_follow_the_same_rules_as_on_sqlite_and_copy_both_ways() {
    let Some((url, mut pg)) = department("rules", &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = DecisionStore::open(&dir.path().join("a.sqlite3")).unwrap();
    let studies: Vec<_> = (0..4).map(study).collect();
    pg.upsert_studies(&studies).unwrap();
    sqlite.upsert_studies(&studies).unwrap();

    let mut read_elsewhere = decision(3, Action::ReadElsewhere, 0.2, None);
    read_elsewhere.reason = "read on the PACS".to_owned();
    let steps = vec![
        confirm(0, 0.9),
        override_ai(1, 0.8),
        decision(0, Action::Undo, 0.9, None),
        confirm(2, 0.1),
        override_ai(2, 0.1),
        decision(2, Action::Undo, 0.1, None),
        decision(2, Action::Undo, 0.1, None),
        decision(2, Action::Undo, 0.1, None), // nothing left to undo
        read_elsewhere,
        confirm(3, 0.2), // refused: undo "read elsewhere" first
    ];
    for d in &steps {
        let a = sqlite.record(d);
        let b = pg.record(d);
        match (&a, &b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    (a.id, a.action, a.prev_label, a.new_label),
                    (b.id, b.action, b.prev_label, b.new_label)
                );
                assert_eq!(b.reader, pg.user(), "the database user is the reader");
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("the backends disagree on {d:?}: {a:?} / {b:?}"),
        }
    }
    assert!(matches!(
        pg.record(&decision(2, Action::Undo, 0.1, None)),
        Err(AuditError::NothingToUndo)
    ));
    let shas: Vec<String> = (0..4).map(sha).collect();
    let refs: Vec<&str> = shas.iter().map(String::as_str).collect();
    let a = sqlite.current_many(&refs).unwrap();
    let b = pg.current_many(&refs).unwrap();
    assert_eq!(a.len(), 4);
    for sha in &refs {
        assert_eq!(a[*sha].final_label, b[*sha].final_label);
        assert_eq!(a[*sha].disposition, b[*sha].disposition);
        assert_eq!(a[*sha].agreed, b[*sha].agreed);
    }
    assert_eq!(b[refs[1]].final_label, Some(Label::Normal));
    assert_eq!(b[refs[3]].disposition, Some(Action::ReadElsewhere));
    let report = pg.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.total_events, 8);

    // PostgreSQL -> a new SQLite file -> a new database: the same events and head hash.
    let mut copy = DecisionStore::open(&dir.path().join("copy.sqlite3")).unwrap();
    let there = copy_store(&mut pg, &mut copy).unwrap();
    assert_eq!((there.events, there.studies), (8, 4));
    assert_eq!(there.head_hash, report.head_hash);
    assert_eq!(copy.events_after(0).unwrap(), pg.events_after(0).unwrap());
    let server = server().unwrap();
    let mut back = PgStore::open(&new_database(&server, "back")).unwrap();
    let again = copy_store(&mut copy, &mut back).unwrap();
    assert_eq!(again.head_hash, report.head_hash);
    // Into a store that already has events: refused, nothing written.
    let refused = copy_store(&mut copy, &mut back).unwrap_err();
    assert!(refused.to_string().contains("already holds 8"), "{refused}");
    assert_eq!(back.event_count().unwrap(), 8);
    drop(url);
}

#[test]
fn the_reader_is_the_database_user_and_nobody_rewrites_the_log() {
    let Some((url, mut owner)) = department("guard", &["dr_lee", "dr_kim"]) else {
        return;
    };
    owner.upsert_studies(&[study(0), study(1)]).unwrap();
    let mut lee = PgStore::open(&as_user(&url, "dr_lee")).unwrap();
    assert_eq!(lee.user(), "dr_lee");
    let mut d = confirm(0, 0.9);
    d.reader = "dr_kim".to_owned(); // typed: ignored
    let e = lee.record(&d).unwrap();
    assert_eq!(e.reader, "dr_lee");
    let e2 = lee.record(&override_ai(1, 0.3)).unwrap();

    // A reader writing an event by hand as someone else: refused by the trigger.
    let mut raw = postgres::Client::connect(&as_user(&url, "dr_lee"), postgres::NoTls).unwrap();
    let forged = raw.execute(
        "INSERT INTO decisions SELECT 3, decided_at, 'dr_kim', app_version, study_sha256, \
         study_path, model_id, weights_sha256, score, threshold, ai_label, prev_label, new_label, \
         action, reason, row_hash, row_hash, format_version, viewed_ms, ood_reason \
         FROM decisions WHERE id = 2",
        &[],
    );
    let err = message(&forged.unwrap_err());
    assert!(err.contains("records decisions as themselves"), "{err}");
    // A reader has no UPDATE, DELETE or TRUNCATE on the log.
    for sql in [
        "UPDATE decisions SET new_label = 'NORMAL' WHERE id = 1",
        "DELETE FROM decisions WHERE id = 2",
        "TRUNCATE decisions",
        "UPDATE decisions_issued SET issued = 0",
    ] {
        let err = raw.batch_execute(sql).unwrap_err();
        assert_eq!(
            err.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    // Nor does the owner: the triggers refuse.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for sql in [
        "UPDATE decisions SET new_label = 'NORMAL' WHERE id = 1",
        "DELETE FROM decisions WHERE id = 2",
        "TRUNCATE decisions CASCADE",
    ] {
        let err = message(&admin.batch_execute(sql).unwrap_err());
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    // Without CASCADE the log's names of retried decisions hold it first.
    let err = message(&admin.batch_execute("TRUNCATE decisions").unwrap_err());
    assert!(err.contains("foreign key"), "{err}");
    assert!(owner.verify().unwrap().is_intact());

    // An owner who switches the triggers off and deletes the last event is caught.
    admin
        .batch_execute(
            "ALTER TABLE decisions DISABLE TRIGGER decisions_no_delete;
             DELETE FROM decisions WHERE id = 2;",
        )
        .unwrap();
    let report = owner.verify().unwrap();
    assert!(!report.append_only_guard_intact);
    assert_eq!(
        report.first_broken.map(|b| b.problem),
        Some(LinkProblem::TailDeleted { issued: e2.id })
    );
    // An edited event breaks its hash.
    admin
        .batch_execute(
            "ALTER TABLE decisions DISABLE TRIGGER decisions_no_update;
             UPDATE decisions SET reason = 'edited' WHERE id = 1;",
        )
        .unwrap();
    let report = owner.verify().unwrap();
    assert_eq!(
        report.first_broken.map(|b| (b.id, b.problem)),
        Some((e.id, LinkProblem::ContentChanged))
    );
}

#[test]
fn a_reader_cannot_set_up_a_store_and_is_told_who_can() {
    let Some(server) = server() else { return };
    let Some(_) = department("setup_roles", &["dr_new"]) else {
        return;
    };
    let url = new_database(&server, "bare");
    let err = PgStore::open(&as_user(&url, "dr_new")).unwrap_err();
    assert!(matches!(err, AuditError::ServerNotSetUp), "{err}");
    assert!(err.to_string().contains("store init"), "{err}");
}

/// A store set up by an older cxr-triage (schema 1: no `decision_requests`, no `scores`) is brought
/// up to date by its owner; a reader meanwhile is told who can, and nothing is lost.
#[test]
fn a_store_of_an_older_version_is_migrated_by_its_owner() {
    let Some((url, mut owner)) = department("migrate", &["dr_ada"]) else {
        return;
    };
    owner.upsert_studies(&[study(0), study(1)]).unwrap();
    owner.record(&confirm(0, 0.9)).unwrap();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "DROP TABLE decision_requests, scores;
             UPDATE cxr_triage_meta SET value = '1' WHERE key = 'schema_version';",
        )
        .unwrap();
    let err = PgStore::open(&as_user(&url, "dr_ada")).unwrap_err();
    assert!(matches!(err, AuditError::ServerNotSetUp), "{err}");
    // The owner's next open migrates; the log is as it was.
    let mut owner = PgStore::open(&url).unwrap();
    let version: String = admin
        .query_one(
            "SELECT value FROM cxr_triage_meta WHERE key = 'schema_version'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, cxr_triage::audit::PG_SCHEMA_VERSION.to_string());
    assert_eq!(owner.event_count().unwrap(), 1);
    assert!(owner.verify().unwrap().is_intact());
    owner
        .record_once("migrated-window-0001", &override_ai(1, 0.8))
        .unwrap();
    assert_eq!(owner.event_count().unwrap(), 2);
}

#[test]
fn eight_concurrent_writers_never_fork_the_chain() {
    let Some((url, mut owner)) = department("writers", &[]) else {
        return;
    };
    const WRITERS: u32 = 8;
    const EACH: u32 = 40;
    owner
        .upsert_studies(&(0..WRITERS).map(study).collect::<Vec<_>>())
        .unwrap();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = url.clone();
            std::thread::Builder::new()
                .name(format!("writer-{w}"))
                .spawn(move || {
                    let mut store = PgStore::open(&url).unwrap();
                    for i in 0..EACH {
                        // Each writer confirms and undoes its own study in turn, while the
                        // others append to the same log.
                        let d = if i % 2 == 0 {
                            confirm(w, 0.9)
                        } else {
                            decision(w, Action::Undo, 0.9, None)
                        };
                        store.record(&d).unwrap();
                    }
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = owner.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.total_events, u64::from(WRITERS * EACH));
    assert_eq!(report.events_checked, u64::from(WRITERS * EACH));
    let shas: Vec<String> = (0..WRITERS).map(sha).collect();
    let refs: Vec<&str> = shas.iter().map(String::as_str).collect();
    for state in owner.current_many(&refs).unwrap().values() {
        assert_eq!(state.last_event.action, Action::Undo);
        assert_eq!(state.final_label, None);
    }
}

#[test]
fn a_decision_reaches_a_listening_window_and_claims_name_the_other_reader() {
    let Some((url, mut owner)) = department("notify", &["dr_ada", "dr_bo"]) else {
        return;
    };
    owner.upsert_studies(&[study(0)]).unwrap();
    let mut ada = PgStore::open(&as_user(&url, "dr_ada")).unwrap();
    let mut bo = PgStore::open(&as_user(&url, "dr_bo")).unwrap();
    bo.listen().unwrap();
    let started = Instant::now();
    let event = ada.record(&confirm(0, 0.8)).unwrap();
    let heard = bo.wait_for_decision(Duration::from_secs(2)).unwrap();
    assert_eq!(heard, Some(event.id));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        bo.wait_for_decision(Duration::from_millis(100)).unwrap(),
        None
    );
    let seen = bo.events_after(0).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].reader, "dr_ada");

    // Claims: Ada's window holds the study; Bo's is told who reads it; a lapsed lease frees it.
    let now = SystemTime::now();
    let lease = Duration::from_secs(180);
    assert_eq!(ada.claim(&sha(0), "win-a", now, lease).unwrap(), None);
    assert_eq!(
        bo.claim(&sha(0), "win-b", now, lease).unwrap().as_deref(),
        Some("dr_ada")
    );
    let claims = bo.active_claims(now).unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].reader, "dr_ada");
    let later = now + lease + Duration::from_secs(1);
    assert!(bo.active_claims(later).unwrap().is_empty());
    assert_eq!(bo.claim(&sha(0), "win-b", later, lease).unwrap(), None);
    bo.release_claims("win-b").unwrap();
    assert!(ada.active_claims(later).unwrap().is_empty());
}

#[test]
fn store_copy_and_audit_verify_work_from_the_command_line() {
    let Some((url, _owner)) = department("cli", &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("laptop.sqlite3");
    {
        let store = DecisionStore::open(&path).unwrap();
        store
            .upsert_studies(&[study(0), study(1), study(2)])
            .unwrap();
        store.record(&confirm(0, 0.9)).unwrap();
        store.record(&override_ai(1, 0.2)).unwrap();
        // Blind-first: the reader's own call, then the AI's shown and overridden.
        let mut blind = decision(2, Action::BlindCall, 0.7, Some(Label::Normal));
        (
            blind.ai_label,
            blind.score,
            blind.threshold,
            blind.model_id,
            blind.weights_sha256,
        ) = (None, None, None, None, None);
        store.record(&blind).unwrap();
        store.record(&override_ai(2, 0.7)).unwrap();
    }
    let exe = env!("CARGO_BIN_EXE_cxr-triage");
    let stdout = cli_ok(&[&"store", &"copy", &"--from", &path, &"--to", &url]);
    assert!(
        stdout.contains("3 studies and 4 decision events copied from SQLite to PostgreSQL"),
        "{stdout}"
    );
    let head = DecisionStore::open(&path)
        .unwrap()
        .verify()
        .unwrap()
        .head_hash
        .unwrap();
    assert!(stdout.contains(&head), "{stdout}");

    let out = Command::new(exe)
        .args(["audit", "verify", "--db", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "OK: 4 events, the hash chain is intact; last event's hash {head}"
        )),
        "{stdout}"
    );
    // `qa` reports the same from both stores.
    let reports: Vec<String> = [path.to_string_lossy().into_owned(), url.clone()]
        .iter()
        .enumerate()
        .map(|(i, db)| {
            let out_dir = dir.path().join(format!("qa-{i}"));
            let out = Command::new(exe)
                .args(["qa", "--db", db, "--out"])
                .arg(&out_dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::read_to_string(out_dir.join("report.json")).unwrap()
        })
        .collect();
    assert_eq!(reports[0], reports[1]);
    assert!(reports[0].contains("\"blind_calls\": 1"), "{}", reports[0]);

    // `export` writes the same files from both stores, and the same receipt.
    for kind in [None, Some("--all"), Some("--events")] {
        let files: Vec<(String, String)> = [path.to_string_lossy().into_owned(), url.clone()]
            .iter()
            .enumerate()
            .map(|(i, db)| {
                let csv = dir
                    .path()
                    .join(format!("export-{i}-{}.csv", kind.unwrap_or("")));
                let out = Command::new(exe)
                    .args(["export", "--db", db, "--csv"])
                    .arg(&csv)
                    .args(kind)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let receipt = stdout
                    .lines()
                    .find_map(|l| l.strip_prefix("receipt: "))
                    .unwrap()
                    .to_owned();
                (std::fs::read_to_string(&csv).unwrap(), receipt)
            })
            .collect();
        assert_eq!(files[0], files[1], "{kind:?}");
        assert_eq!(files[0].1, format!("cxr-triage-receipt:v1:4:{head}"));
        let rows = files[0].0.lines().count() - 1;
        assert_eq!(
            rows,
            if kind == Some("--events") { 4 } else { 3 },
            "{kind:?}"
        );
    }

    // Tampering behind the store's back: exit status 2.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "ALTER TABLE decisions DISABLE TRIGGER decisions_no_update;
             UPDATE decisions SET reader = 'someone' WHERE id = 2;",
        )
        .unwrap();
    let out = Command::new(exe)
        .args(["audit", "verify", "--db", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("TAMPERED"), "{stdout}");
}

#[test]
fn score_and_import_record_on_the_department_store_as_the_signed_in_reader() {
    let Some((url, mut owner)) = department("score_import", &["dr_kim"]) else {
        return;
    };
    let kim = as_user(&url, "dr_kim");
    let dir = tempfile::tempdir().unwrap();
    let films = dir.path().join("films");
    std::fs::create_dir(&films).unwrap();
    for (i, name) in ["a.png", "b.png", "c.png"].iter().enumerate() {
        common::write_film(&films.join(name), i == 1, i as u32);
    }
    let stdout = cli_ok(&[&"score", &films, &"--db", &kim]);
    assert!(
        stdout.contains("recorded 3 studies and their scores"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("dr_kim@"),
        "the address is not shown: {stdout}"
    );
    assert_eq!(owner.studies().unwrap().len(), 3);
    let scores = owner.latest_scores().unwrap();
    assert_eq!(scores.len(), 3);
    assert!(scores.values().all(|s| (0.0..=1.0).contains(&s.score)));

    let csv = films.join("labels.csv");
    std::fs::write(
        &csv,
        "path,label,reason\na.png,PNEUMONIA,seen on CT\nb.png,NORMAL,\n",
    )
    .unwrap();
    // Someone else's name is refused: the database user records.
    let out = Command::new(env!("CARGO_BIN_EXE_cxr-triage"))
        .args(["import", "--reader", "dr_lee", "--db", &kim, "--csv"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("recorded as the database user dr_kim, not dr_lee"),
        "{stderr}"
    );
    assert_eq!(owner.event_count().unwrap(), 0);
    let stdout = cli_ok(&[&"import", &"--db", &kim, &"--csv", &csv]);
    assert!(
        stdout.contains("recorded 2 relabel events, rejected 0 rows"),
        "{stdout}"
    );
    let events = owner.events_after(0).unwrap();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e.reader == "dr_kim" && e.action == Action::Relabel)
    );
    assert_eq!(events[0].new_label, Some(Label::Pneumonia));
    assert_eq!(events[0].reason, "seen on CT");
    assert!(owner.verify().unwrap().is_intact());

    // The export carries the scores the server keeps, as a SQLite store's does.
    let export = dir.path().join("export.csv");
    cli_ok(&[&"export", &"--all", &"--db", &url, &"--csv", &export]);
    let text = std::fs::read_to_string(&export).unwrap();
    let c_score =
        scores[&cxr_triage::io::sha256_hex(&std::fs::read(films.join("c.png")).unwrap())].score;
    assert!(
        text.lines()
            .any(|l| l.contains("c.png") && l.contains(&format!(",{c_score},"))),
        "{text}"
    );
}

#[test]
fn a_decision_sent_again_under_its_name_is_recorded_once() {
    let Some((url, mut owner)) = department("once", &["dr_ada", "dr_bo"]) else {
        return;
    };
    owner.upsert_studies(&[study(0), study(1)]).unwrap();
    let mut ada = PgStore::open(&as_user(&url, "dr_ada")).unwrap();
    let first = ada
        .record_once("window-1234567890-1", &confirm(0, 0.9))
        .unwrap();
    let again = ada
        .record_once("window-1234567890-1", &confirm(0, 0.9))
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(owner.event_count().unwrap(), 1);
    // A name is used once in the whole store: another reader's decision under it is refused.
    let mut bo = PgStore::open(&as_user(&url, "dr_bo")).unwrap();
    let bos = bo.record_once("window-1234567890-1", &override_ai(1, 0.9));
    assert!(bos.is_err(), "{bos:?}");
    let bos = bo
        .record_once("window-abcdefghij-1", &override_ai(1, 0.9))
        .unwrap();
    assert_eq!(bos.reader, "dr_bo");
    assert_eq!(owner.event_count().unwrap(), 2);
    assert!(owner.verify().unwrap().is_intact());
}

#[test]
fn the_connection_is_encrypted_and_verify_full_checks_the_servers_certificate() {
    let Some(server) = server() else {
        return;
    };
    let Ok(ca) = std::env::var("CXR_TRIAGE_TEST_PG_CA") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and CXR_TRIAGE_TEST_PG_CA is not set (scripts/pg-test-server.sh sets it)"
        );
        eprintln!("skipped: the test server's CA is not known (CXR_TRIAGE_TEST_PG_CA)");
        return;
    };
    let url = new_database(&server, "tls");
    // By default (sslmode=prefer, as libpq) the connection is encrypted where the server offers it.
    assert!(PgStore::open(&url).unwrap().encrypted().unwrap());
    assert!(
        !PgStore::open(&format!("{url}?sslmode=disable"))
            .unwrap()
            .encrypted()
            .unwrap()
    );
    // verify-full: the certificate must chain to the CA and name the host.
    let localhost = url.replace("127.0.0.1", "localhost");
    let mut checked =
        PgStore::open(&format!("{localhost}?sslmode=verify-full&sslrootcert={ca}")).unwrap();
    assert!(checked.encrypted().unwrap());
    let wrong_name = PgStore::open(&format!("{url}?sslmode=verify-full&sslrootcert={ca}"))
        .unwrap_err()
        .to_string();
    assert!(
        wrong_name.contains("TLS with the server failed") && wrong_name.contains("certificate"),
        "{wrong_name}"
    );
    // verify-ca checks the signature only.
    assert!(
        PgStore::open(&format!("{url}?sslmode=verify-ca&sslrootcert={ca}"))
            .unwrap()
            .encrypted()
            .unwrap()
    );
    // A CA that did not sign the server's certificate: refused.
    let other = std::path::Path::new(&ca).with_file_name("server.crt");
    let unknown = PgStore::open(&format!(
        "{localhost}?sslmode=verify-full&sslrootcert={}",
        other.display()
    ))
    .unwrap_err();
    assert!(
        matches!(&unknown, AuditError::Server(m) if m.contains("TLS with the server failed")),
        "{unknown}"
    );
    // The same settings in the key=value form.
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    let db = url.rsplit('/').next().unwrap();
    let kv = format!(
        "host=localhost port={port} user=postgres dbname={db} sslmode=verify-full sslrootcert={ca}"
    );
    assert!(PgStore::open(&kv).unwrap().encrypted().unwrap());
}
