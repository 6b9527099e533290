//! The store's schema and its versioned migrations (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

use super::AuditError;

/// `PRAGMA application_id` of a cxr-triage store: "CXRT" in ASCII.
pub(crate) const APPLICATION_ID: i64 = 0x4358_5254;

/// The trigger that refuses UPDATE on the decisions table, exactly as created.
pub(crate) const NO_UPDATE_TRIGGER: &str =
    "CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
BEGIN
    SELECT RAISE(ABORT, 'decisions are append-only: an event cannot be changed');
END";

/// The trigger that refuses DELETE on the decisions table, exactly as created.
pub(crate) const NO_DELETE_TRIGGER: &str =
    "CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
BEGIN
    SELECT RAISE(ABORT, 'decisions are append-only: an event cannot be deleted');
END";

/// Version 1: studies, the append-only decisions log with its guards.
const V1_TABLES: &str = "
CREATE TABLE studies (
    sha256        TEXT PRIMARY KEY NOT NULL,
    last_path     TEXT NOT NULL,
    patient_id    TEXT,
    study_uid     TEXT,
    metadata_json TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL
);
CREATE TABLE decisions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    decided_at     TEXT NOT NULL,
    reader         TEXT NOT NULL,
    app_version    TEXT NOT NULL,
    study_sha256   TEXT NOT NULL,
    study_path     TEXT NOT NULL,
    model_id       TEXT,
    weights_sha256 TEXT,
    score          REAL,
    threshold      REAL,
    ai_label       TEXT CHECK (ai_label IN ('NORMAL', 'PNEUMONIA')),
    prev_label     TEXT CHECK (prev_label IN ('NORMAL', 'PNEUMONIA')),
    new_label      TEXT CHECK (new_label IN ('NORMAL', 'PNEUMONIA')),
    action         TEXT NOT NULL CHECK (action IN ('confirm', 'override', 'undo', 'relabel')),
    reason         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    row_hash       TEXT NOT NULL
);
CREATE INDEX decisions_by_study ON decisions (study_sha256, id);
";

/// The trigger that refuses UPDATE on the threshold log, exactly as created.
pub(crate) const THRESHOLD_NO_UPDATE_TRIGGER: &str =
    "CREATE TRIGGER threshold_events_no_update BEFORE UPDATE ON threshold_events
BEGIN
    SELECT RAISE(ABORT, 'threshold changes are append-only: an event cannot be changed');
END";

/// The trigger that refuses DELETE on the threshold log, exactly as created.
pub(crate) const THRESHOLD_NO_DELETE_TRIGGER: &str =
    "CREATE TRIGGER threshold_events_no_delete BEFORE DELETE ON threshold_events
BEGIN
    SELECT RAISE(ABORT, 'threshold changes are append-only: an event cannot be deleted');
END";

/// Version 2 (learning from the site): the scores each model gave each study (a cache, like
/// `studies`), and the append-only, hash-chained log of threshold changes.
const V2_TABLES: &str = "
CREATE TABLE scores (
    study_sha256   TEXT NOT NULL,
    weights_sha256 TEXT NOT NULL,
    model_id       TEXT NOT NULL,
    score          REAL NOT NULL CHECK (score >= 0.0 AND score <= 1.0),
    threshold      REAL NOT NULL CHECK (threshold >= 0.0 AND threshold <= 1.0),
    scored_at      TEXT NOT NULL,
    PRIMARY KEY (study_sha256, weights_sha256)
);
CREATE TABLE threshold_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at    TEXT NOT NULL,
    reader         TEXT NOT NULL,
    app_version    TEXT NOT NULL,
    model_id       TEXT NOT NULL,
    weights_sha256 TEXT NOT NULL,
    old_threshold  REAL NOT NULL,
    new_threshold  REAL NOT NULL,
    basis_json     TEXT NOT NULL,
    reason         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    row_hash       TEXT NOT NULL
);
CREATE INDEX threshold_events_by_model ON threshold_events (weights_sha256, id);
";

/// Version 3: the decisions table rebuilt with three columns appended (`format_version`, which
/// encoding the event's hash uses; `viewed_ms`; `ood_reason`) and two more actions
/// (`read_elsewhere`, `not_chest_film`). Existing events are copied unchanged, as version 1
/// events, so their hashes still verify. SQLite cannot change a CHECK constraint in place, hence
/// the rebuild; the guards and the index are created again on the new table.
const V3_DECISIONS: &str = "
CREATE TABLE decisions_v2 (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    decided_at     TEXT NOT NULL,
    reader         TEXT NOT NULL,
    app_version    TEXT NOT NULL,
    study_sha256   TEXT NOT NULL,
    study_path     TEXT NOT NULL,
    model_id       TEXT,
    weights_sha256 TEXT,
    score          REAL,
    threshold      REAL,
    ai_label       TEXT CHECK (ai_label IN ('NORMAL', 'PNEUMONIA')),
    prev_label     TEXT CHECK (prev_label IN ('NORMAL', 'PNEUMONIA')),
    new_label      TEXT CHECK (new_label IN ('NORMAL', 'PNEUMONIA')),
    action         TEXT NOT NULL CHECK (action IN ('confirm', 'override', 'undo', 'relabel',
                                                   'read_elsewhere', 'not_chest_film')),
    reason         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    row_hash       TEXT NOT NULL,
    format_version INTEGER NOT NULL DEFAULT 1,
    viewed_ms      INTEGER,
    ood_reason     TEXT
);
INSERT INTO decisions_v2 (id, decided_at, reader, app_version, study_sha256, study_path,
    model_id, weights_sha256, score, threshold, ai_label, prev_label, new_label, action, reason,
    prev_hash, row_hash, format_version)
SELECT id, decided_at, reader, app_version, study_sha256, study_path, model_id, weights_sha256,
    score, threshold, ai_label, prev_label, new_label, action, reason, prev_hash, row_hash, 1
FROM decisions ORDER BY id;
DROP TABLE decisions;
ALTER TABLE decisions_v2 RENAME TO decisions;
CREATE INDEX decisions_by_study ON decisions (study_sha256, id);
";

/// Version 5 (blind-first reading): the decisions table rebuilt as in version 3, with one more
/// action, `blind_call`. Every event is copied unchanged, with its encoding version.
const V5_DECISIONS: &str = "
CREATE TABLE decisions_v5 (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    decided_at     TEXT NOT NULL,
    reader         TEXT NOT NULL,
    app_version    TEXT NOT NULL,
    study_sha256   TEXT NOT NULL,
    study_path     TEXT NOT NULL,
    model_id       TEXT,
    weights_sha256 TEXT,
    score          REAL,
    threshold      REAL,
    ai_label       TEXT CHECK (ai_label IN ('NORMAL', 'PNEUMONIA')),
    prev_label     TEXT CHECK (prev_label IN ('NORMAL', 'PNEUMONIA')),
    new_label      TEXT CHECK (new_label IN ('NORMAL', 'PNEUMONIA')),
    action         TEXT NOT NULL CHECK (action IN ('confirm', 'override', 'undo', 'relabel',
                                                   'read_elsewhere', 'not_chest_film',
                                                   'blind_call')),
    reason         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    row_hash       TEXT NOT NULL,
    format_version INTEGER NOT NULL DEFAULT 1,
    viewed_ms      INTEGER,
    ood_reason     TEXT
);
INSERT INTO decisions_v5 (id, decided_at, reader, app_version, study_sha256, study_path,
    model_id, weights_sha256, score, threshold, ai_label, prev_label, new_label, action, reason,
    prev_hash, row_hash, format_version, viewed_ms, ood_reason)
SELECT id, decided_at, reader, app_version, study_sha256, study_path, model_id, weights_sha256,
    score, threshold, ai_label, prev_label, new_label, action, reason, prev_hash, row_hash,
    format_version, viewed_ms, ood_reason
FROM decisions ORDER BY id;
DROP TABLE decisions;
ALTER TABLE decisions_v5 RENAME TO decisions;
CREATE INDEX decisions_by_study ON decisions (study_sha256, id);
";

/// Rebuilds the decisions table with `rebuild` (SQL that copies it into a new table and renames
/// that), then creates its guards again. The highest id ever handed out survives the rebuild,
/// so that a log whose last events were deleted before the migration still reports it.
fn rebuild_decisions(tx: &Transaction<'_>, rebuild: &str) -> rusqlite::Result<()> {
    let issued = highest_issued_id(tx, "decisions")?;
    tx.execute_batch(rebuild)?;
    tx.execute_batch(NO_UPDATE_TRIGGER)?;
    tx.execute_batch(NO_DELETE_TRIGGER)?;
    if let Some(issued) = issued {
        let updated = tx.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'decisions'",
            [issued],
        )?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('decisions', ?1)",
                [issued],
            )?;
        }
    }
    Ok(())
}

/// Version 6 (several readers on one store): which window has which study open, as leases.
/// Not part of the audit trail.
const V6_CLAIMS: &str = "
CREATE TABLE claims (
    study_sha256  TEXT PRIMARY KEY NOT NULL,
    reader        TEXT NOT NULL,
    holder        TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX claims_by_holder ON claims (holder);
";

/// The highest id SQLite ever handed out in `table` (its `sqlite_sequence` entry), which
/// survives the deletion of the rows: how a deleted tail of a log is told from a short log.
pub(crate) fn highest_issued_id(conn: &Connection, table: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = ?1",
        [table],
        |r| r.get(0),
    )
    .optional()
}

/// The trigger that refuses UPDATE on the study log, exactly as created.
pub(crate) const STUDY_LOG_NO_UPDATE_TRIGGER: &str =
    "CREATE TRIGGER study_events_no_update BEFORE UPDATE ON study_events
BEGIN
    SELECT RAISE(ABORT, 'the study log is append-only: an event cannot be changed');
END";

/// The trigger that refuses DELETE on the study log, exactly as created.
pub(crate) const STUDY_LOG_NO_DELETE_TRIGGER: &str =
    "CREATE TRIGGER study_events_no_delete BEFORE DELETE ON study_events
BEGIN
    SELECT RAISE(ABORT, 'the study log is append-only: an event cannot be deleted');
END";

/// Version 4: paths stored losslessly (`studies.path_bytes`, the operating system's bytes) and
/// the append-only, hash-chained study log that the `studies` table is checked against.
const V4_TABLES: &str = "
ALTER TABLE studies ADD COLUMN path_bytes BLOB;
CREATE TABLE study_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at    TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    path           TEXT NOT NULL,
    path_bytes     BLOB NOT NULL,
    patient_id     TEXT,
    study_uid      TEXT,
    metadata_json  TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    row_hash       TEXT NOT NULL
);
CREATE INDEX study_events_by_study ON study_events (sha256, id);
";

/// Applies migration `version` (1-based) inside the caller's transaction.
fn apply(tx: &Transaction<'_>, version: i64) -> rusqlite::Result<()> {
    match version {
        1 => {
            tx.execute_batch(V1_TABLES)?;
            tx.execute_batch(NO_UPDATE_TRIGGER)?;
            tx.execute_batch(NO_DELETE_TRIGGER)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)
        }
        2 => {
            tx.execute_batch(V2_TABLES)?;
            tx.execute_batch(THRESHOLD_NO_UPDATE_TRIGGER)?;
            tx.execute_batch(THRESHOLD_NO_DELETE_TRIGGER)
        }
        3 => rebuild_decisions(tx, V3_DECISIONS),
        4 => {
            tx.execute_batch(V4_TABLES)?;
            tx.execute_batch(STUDY_LOG_NO_UPDATE_TRIGGER)?;
            tx.execute_batch(STUDY_LOG_NO_DELETE_TRIGGER)?;
            super::study_log::backfill(tx).map_err(|e| match e {
                AuditError::Database(e) => e,
                other => rusqlite::Error::ToSqlConversionFailure(Box::new(other)),
            })
        }
        5 => rebuild_decisions(tx, V5_DECISIONS),
        6 => tx.execute_batch(V6_CLAIMS),
        _ => Ok(()),
    }
}

/// The newest schema version this build writes.
pub(crate) const LATEST_VERSION: i64 = 6;

/// Checks that `conn` is empty or a cxr-triage store this build can read.
pub(crate) fn check_identity(conn: &Connection, path: &Path) -> Result<(), AuditError> {
    let not_ours = || AuditError::NotOurDatabase {
        path: path.to_owned(),
    };
    let read = |sql: &str| -> Result<i64, AuditError> {
        conn.query_row(sql, [], |r| r.get(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::NotADatabase) => not_ours(),
                _ => AuditError::from(e),
            })
    };
    let app_id = read("PRAGMA application_id")?;
    let objects = read("SELECT count(*) FROM sqlite_schema")?;
    let version = read("PRAGMA user_version")?;
    if app_id == 0 && objects == 0 {
        return Ok(()); // A new, empty file.
    }
    if app_id != APPLICATION_ID {
        return Err(not_ours());
    }
    if version > LATEST_VERSION {
        return Err(AuditError::TooNew {
            found: version,
            known: LATEST_VERSION,
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Brings the schema up to [`LATEST_VERSION`], one version at a time, in one write transaction.
pub(crate) fn migrate(conn: &Connection) -> Result<(), AuditError> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let mut version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    while version < LATEST_VERSION {
        version += 1;
        apply(&tx, version)?;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{self, EventFields, GENESIS_PREV_HASH};
    use crate::audit::{Action, DecisionStore, LinkProblem, NewDecision, StudyRecord};
    use crate::io::hex;
    use crate::worklist::Label;

    /// A store as cxr-triage wrote it before schema version 2: version 1 tables, and `n`
    /// events hashed with the version 1 encoding.
    fn v1_store(path: &Path, sha: &str, n: i64) {
        let conn = Connection::open(path).unwrap();
        let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate).unwrap();
        apply(&tx, 1).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.execute(
            "INSERT INTO studies VALUES (?1, '/s/a.png', NULL, NULL, '{}', 't', 't')",
            [sha],
        )
        .unwrap();
        let mut prev = GENESIS_PREV_HASH;
        for id in 1..=n {
            let new_label = if id % 2 == 1 { "PNEUMONIA" } else { "NORMAL" };
            let prev_label = (id > 1).then_some(if id % 2 == 1 { "NORMAL" } else { "PNEUMONIA" });
            let fields = EventFields {
                id,
                decided_at: "2026-01-02T03:04:05.678Z",
                reader: "dr a",
                app_version: "0.1.0",
                study_sha256: sha,
                study_path: "/s/a.png",
                model_id: None,
                weights_sha256: None,
                score: None,
                threshold: None,
                ai_label: None,
                prev_label,
                new_label: Some(new_label),
                action: "relabel",
                reason: "",
                format_version: 1,
                viewed_ms: None,
                ood_reason: None,
            };
            let h = chain::row_hash(&prev, &fields);
            tx.execute(
                "INSERT INTO decisions (id, decided_at, reader, app_version, study_sha256,
                     study_path, model_id, weights_sha256, score, threshold, ai_label,
                     prev_label, new_label, action, reason, prev_hash, row_hash)
                 VALUES (?1, ?2, 'dr a', '0.1.0', ?3, '/s/a.png', NULL, NULL, NULL, NULL, NULL,
                     ?4, ?5, 'relabel', '', ?6, ?7)",
                rusqlite::params![
                    id,
                    fields.decided_at,
                    sha,
                    prev_label,
                    new_label,
                    hex(&prev),
                    hex(&h)
                ],
            )
            .unwrap();
            prev = h;
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_version_1_chain_still_verifies_after_the_migration_and_grows_in_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        let sha = "ab".repeat(32);
        v1_store(&path, &sha, 3);
        let store = DecisionStore::open(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, LATEST_VERSION);
        let report = store.verify().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.events_checked, 3);
        let old = store.history(&sha).unwrap();
        assert!(
            old.iter()
                .all(|e| e.format_version == 1 && e.viewed_ms.is_none())
        );

        // New events: version 2, with the viewing time, chained to the old ones.
        store
            .upsert_study(&StudyRecord {
                sha256: sha.clone(),
                path: "/s/a.png".into(),
                patient_id: None,
                study_uid: None,
                metadata_json: "{}".to_owned(),
            })
            .unwrap();
        let e = store
            .record(&NewDecision {
                reader: "dr b".to_owned(),
                study_sha256: sha.clone(),
                study_path: "/s/a.png".into(),
                model_id: None,
                weights_sha256: None,
                score: None,
                threshold: None,
                ai_label: None,
                new_label: Some(Label::Normal),
                action: Action::Relabel,
                reason: String::new(),
                viewed_ms: Some(812),
                ood_reason: None,
            })
            .unwrap();
        assert_eq!((e.id, e.format_version, e.viewed_ms), (4, 2, Some(812)));
        assert_eq!(e.prev_hash, old[2].row_hash);
        assert!(store.verify().unwrap().is_intact());

        // The format version is covered by the hash: claiming version 1 for a version 2 event,
        // or adding a viewing time to a version 1 event, breaks the chain there.
        store
            .conn
            .execute_batch("DROP TRIGGER decisions_no_update")
            .unwrap();
        for (tamper, undo, id) in [
            (
                "UPDATE decisions SET format_version = 1 WHERE id = 4",
                "UPDATE decisions SET format_version = 2 WHERE id = 4",
                4,
            ),
            (
                "UPDATE decisions SET viewed_ms = 5 WHERE id = 2",
                "UPDATE decisions SET viewed_ms = NULL WHERE id = 2",
                2,
            ),
        ] {
            store.conn.execute_batch(tamper).unwrap();
            let broken = store.verify().unwrap().first_broken.unwrap();
            assert_eq!(broken.id, id, "{tamper}");
            assert_eq!(broken.problem, LinkProblem::ContentChanged, "{tamper}");
            store.conn.execute_batch(undo).unwrap();
            assert_eq!(store.verify().unwrap().first_broken, None);
        }
    }

    #[test]
    fn a_deleted_tail_is_still_reported_after_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        let sha = "cd".repeat(32);
        v1_store(&path, &sha, 3);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "DROP TRIGGER decisions_no_delete; DELETE FROM decisions WHERE id = 3;",
            )
            .unwrap();
        }
        let store = DecisionStore::open(&path).unwrap();
        let report = store.verify().unwrap();
        assert_eq!(
            report.first_broken.map(|b| b.problem),
            Some(LinkProblem::TailDeleted { issued: 3 })
        );
    }
}
