//! The store's schema and its versioned migrations (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

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
        _ => Ok(()),
    }
}

/// The newest schema version this build writes.
pub(crate) const LATEST_VERSION: i64 = 2;

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
