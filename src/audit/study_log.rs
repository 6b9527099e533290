//! The study log: every change to what the store knows of a study (where its file is, its
//! patient and study ids, its format details) as an append-only, hash-chained event, so that the
//! `studies` table, which exports and adaptation read, can be checked against it.
//!
//! See the [module documentation](super#the-study-log) for the encoding.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, Row, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::chain::{self, GENESIS_PREV_HASH};
use super::event::StudyRecord;
use super::schema::{STUDY_LOG_NO_DELETE_TRIGGER, STUDY_LOG_NO_UPDATE_TRIGGER};
use super::site::{ChainedLog, ThresholdLogReport, put, put_opt, verify_log};
use super::{AuditError, DecisionStore};
use crate::io::hex;

/// The first field of every study event's encoding: names the format and its version.
const STUDY_ENCODING_TAG: &[u8] = b"cxr-triage study event v1";

const STUDY_EVENT_COLUMNS_SQL: &str = "id, recorded_at, sha256, path, path_bytes, patient_id, \
     study_uid, metadata_json, prev_hash, row_hash";

/// One recorded change to what the store knows of a study.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyEvent {
    /// Position in the study log: 1, 2, 3, … with no gaps.
    pub id: i64,
    /// UTC time of recording, RFC 3339 with milliseconds and `Z`.
    pub recorded_at: String,
    /// The study's identity.
    pub sha256: String,
    /// Where its file is, for display (invalid UTF-8 replaced).
    pub path: String,
    /// Where its file is, as the operating system's bytes (lossless).
    pub path_bytes: Vec<u8>,
    /// The patient ID, where the file carries one.
    pub patient_id: Option<String>,
    /// The study instance UID, where the file carries one.
    pub study_uid: Option<String>,
    /// The loader's other metadata (JSON).
    pub metadata_json: String,
    /// Hexadecimal hash of the previous study event (64 zeros for the first).
    pub prev_hash: String,
    /// Hexadecimal SHA-256 of the previous hash and this event's canonical encoding.
    pub row_hash: String,
}

/// What [`DecisionStore::verify_studies`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StudyLogReport {
    /// The study log's chain, guard and tail.
    pub log: ThresholdLogReport,
    /// Studies whose row in `studies` is not what the study log last recorded (or has no event).
    pub mismatched: Vec<String>,
}

impl StudyLogReport {
    /// True when the log checks out and every study row matches it.
    pub fn is_intact(&self) -> bool {
        self.log.is_intact() && self.mismatched.is_empty()
    }
}

/// A path's bytes as the operating system gives them.
pub(crate) fn path_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt as _;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

/// A path from its stored bytes, or from its display form when there are none (stores written
/// before the study log).
pub(crate) fn path_from_stored(bytes: Option<Vec<u8>>, display: String) -> PathBuf {
    match bytes {
        #[cfg(unix)]
        Some(b) => {
            use std::os::unix::ffi::OsStringExt as _;
            PathBuf::from(std::ffi::OsString::from_vec(b))
        }
        #[cfg(not(unix))]
        Some(b) => PathBuf::from(String::from_utf8_lossy(&b).into_owned()),
        None => PathBuf::from(display),
    }
}

fn study_event_from_row(r: &Row<'_>) -> rusqlite::Result<StudyEvent> {
    Ok(StudyEvent {
        id: r.get(0)?,
        recorded_at: r.get(1)?,
        sha256: r.get(2)?,
        path: r.get(3)?,
        path_bytes: r.get(4)?,
        patient_id: r.get(5)?,
        study_uid: r.get(6)?,
        metadata_json: r.get(7)?,
        prev_hash: r.get(8)?,
        row_hash: r.get(9)?,
    })
}

/// The canonical encoding of a study event (every column but the two hashes, in order; NULL as
/// a single `0x00`).
fn encode_study(e: &StudyEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + e.metadata_json.len());
    put(&mut out, STUDY_ENCODING_TAG);
    put(&mut out, &e.id.to_be_bytes());
    put(&mut out, e.recorded_at.as_bytes());
    put(&mut out, e.sha256.as_bytes());
    put(&mut out, e.path.as_bytes());
    put(&mut out, &e.path_bytes);
    put_opt(&mut out, e.patient_id.as_deref().map(str::as_bytes));
    put_opt(&mut out, e.study_uid.as_deref().map(str::as_bytes));
    put(&mut out, e.metadata_json.as_bytes());
    out
}

fn study_row_hash(prev: &[u8; 32], e: &StudyEvent) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(encode_study(e));
    h.finalize().into()
}

/// What the study log records of a study, to compare with its row.
type Recorded = (Vec<u8>, Option<String>, Option<String>, String);

/// Appends study events inside the caller's write transaction.
pub(crate) struct StudyLogWriter {
    last_id: i64,
    prev: [u8; 32],
}

impl StudyLogWriter {
    /// Reads the log's last event (inside `tx`).
    pub(crate) fn new(tx: &Transaction<'_>) -> Result<Self, AuditError> {
        let last = tx
            .prepare_cached("SELECT id, row_hash FROM study_events ORDER BY id DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .optional()?;
        Ok(match last {
            None => Self {
                last_id: 0,
                prev: GENESIS_PREV_HASH,
            },
            Some((id, h)) => Self {
                last_id: id,
                prev: chain::parse_hash_hex(&h).ok_or_else(|| {
                    AuditError::UnreadableValue(format!("study event {id} has no valid hash"))
                })?,
            },
        })
    }

    /// Appends an event for `study` unless its row already says the same (a folder opened again
    /// adds nothing); returns the path's bytes for the row.
    pub(crate) fn record(
        &mut self,
        tx: &Transaction<'_>,
        study: &StudyRecord,
        now: &str,
    ) -> Result<Vec<u8>, AuditError> {
        let bytes = path_bytes(&study.path);
        let current: Option<Recorded> = tx
            .prepare_cached(
                "SELECT coalesce(path_bytes, CAST(last_path AS BLOB)), patient_id, study_uid,
                        metadata_json
                 FROM studies WHERE sha256 = ?1",
            )?
            .query_row([&study.sha256], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let wanted: Recorded = (
            bytes.clone(),
            study.patient_id.clone(),
            study.study_uid.clone(),
            study.metadata_json.clone(),
        );
        if current.as_ref() != Some(&wanted) {
            self.append(tx, study, &bytes, now)?;
        }
        Ok(bytes)
    }

    /// Appends an event for `study`, whose path's bytes are `bytes`.
    fn append(
        &mut self,
        tx: &Transaction<'_>,
        study: &StudyRecord,
        bytes: &[u8],
        now: &str,
    ) -> Result<(), AuditError> {
        let mut event = StudyEvent {
            id: self.last_id + 1,
            recorded_at: now.to_owned(),
            sha256: study.sha256.clone(),
            path: study.path.to_string_lossy().into_owned(),
            path_bytes: bytes.to_vec(),
            patient_id: study.patient_id.clone(),
            study_uid: study.study_uid.clone(),
            metadata_json: study.metadata_json.clone(),
            prev_hash: hex(&self.prev),
            row_hash: String::new(),
        };
        let hash = study_row_hash(&self.prev, &event);
        event.row_hash = hex(&hash);
        tx.prepare_cached(&format!(
            "INSERT INTO study_events ({STUDY_EVENT_COLUMNS_SQL})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ))?
        .execute(rusqlite::params![
            event.id,
            event.recorded_at,
            event.sha256,
            event.path,
            event.path_bytes,
            event.patient_id,
            event.study_uid,
            event.metadata_json,
            event.prev_hash,
            event.row_hash,
        ])?;
        self.last_id = event.id;
        self.prev = hash;
        Ok(())
    }
}

/// Records every study of a store written before the study log as its first event (the
/// migration to schema version 4), and fills in `path_bytes`.
pub(crate) fn backfill(tx: &Transaction<'_>) -> Result<(), AuditError> {
    let studies: Vec<(StudyRecord, String)> = tx
        .prepare(
            "SELECT sha256, last_path, patient_id, study_uid, metadata_json, first_seen_at
             FROM studies ORDER BY first_seen_at, sha256",
        )?
        .query_map([], |r| {
            Ok((
                StudyRecord {
                    sha256: r.get(0)?,
                    path: PathBuf::from(r.get::<_, String>(1)?),
                    patient_id: r.get(2)?,
                    study_uid: r.get(3)?,
                    metadata_json: r.get(4)?,
                },
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut writer = StudyLogWriter::new(tx)?;
    for (study, first_seen) in &studies {
        let bytes = path_bytes(&study.path);
        writer.append(tx, study, &bytes, first_seen)?;
        tx.execute(
            "UPDATE studies SET path_bytes = ?2 WHERE sha256 = ?1",
            rusqlite::params![study.sha256, bytes],
        )?;
    }
    Ok(())
}

impl DecisionStore {
    /// Checks the study log (chain, guard, nothing cut off the end) and that every row of the
    /// `studies` table is what the log last recorded for that study: a path, patient id or study
    /// UID edited in the table, a row added or removed behind the store's back, is reported.
    pub fn verify_studies(&self) -> Result<StudyLogReport, AuditError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?;
        let log = verify_log(
            &tx,
            &ChainedLog {
                table: "study_events",
                columns_sql: STUDY_EVENT_COLUMNS_SQL,
                triggers: [
                    ("study_events_no_update", STUDY_LOG_NO_UPDATE_TRIGGER),
                    ("study_events_no_delete", STUDY_LOG_NO_DELETE_TRIGGER),
                ],
                from_row: study_event_from_row,
                links: |e| (e.id, &e.prev_hash, &e.row_hash),
                hash: study_row_hash,
            },
        )?;
        // The latest event of each study against its row, both ways.
        let mismatched: Vec<String> = tx
            .prepare(
                "WITH latest AS (
                     SELECT e.* FROM study_events e
                     WHERE e.id = (SELECT max(id) FROM study_events WHERE sha256 = e.sha256)
                 )
                 SELECT coalesce(s.sha256, l.sha256) FROM studies s
                 FULL OUTER JOIN latest l ON l.sha256 = s.sha256
                 WHERE l.sha256 IS NULL OR s.sha256 IS NULL
                    OR s.path_bytes IS NOT l.path_bytes
                    OR s.last_path IS NOT l.path
                    OR s.patient_id IS NOT l.patient_id
                    OR s.study_uid IS NOT l.study_uid
                    OR s.metadata_json IS NOT l.metadata_json
                 ORDER BY 1",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(StudyLogReport { log, mismatched })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, path: PathBuf, patient: Option<&str>) -> StudyRecord {
        StudyRecord {
            sha256: format!("{n:02x}").repeat(32),
            path,
            patient_id: patient.map(str::to_owned),
            study_uid: None,
            metadata_json: "{}".to_owned(),
        }
    }

    fn events(store: &DecisionStore) -> i64 {
        store
            .conn
            .query_row("SELECT count(*) FROM study_events", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn only_changes_are_logged_and_paths_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = DecisionStore::open(&dir.path().join("s.sqlite3")).unwrap();
        #[cfg(unix)]
        let odd = {
            use std::os::unix::ffi::OsStringExt as _;
            PathBuf::from(std::ffi::OsString::from_vec(
                b"/ward/caf\xe9-\xff.png".to_vec(),
            ))
        };
        #[cfg(not(unix))]
        let odd = PathBuf::from("/ward/odd.png");
        let a = record(1, odd.clone(), Some("P1"));
        let b = record(2, PathBuf::from("/ward/b.png"), None);
        store.upsert_studies(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(events(&store), 2);
        // The same folder opened again: nothing new.
        store.upsert_studies(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(events(&store), 2);
        // A moved file and a changed id: one event each.
        let moved = record(2, PathBuf::from("/archive/b.png"), None);
        let renamed = record(1, odd.clone(), Some("P1-corrected"));
        store.upsert_studies(&[moved.clone(), renamed]).unwrap();
        assert_eq!(events(&store), 4);
        // The path comes back byte for byte, not as its display form.
        let back = store.study(&a.sha256).unwrap().unwrap();
        assert_eq!(back.path, odd);
        assert_eq!(store.study(&b.sha256).unwrap().unwrap().path, moved.path);
        let report = store.verify_studies().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.log.total_events, 4);
    }

    #[test]
    fn a_version_3_store_is_backfilled_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite3");
        {
            let store = DecisionStore::open(&path).unwrap();
            store
                .upsert_studies(&[record(3, PathBuf::from("/w/c.png"), Some("P3"))])
                .unwrap();
        }
        // Back to what version 3 had: no study log, no path bytes (and none of the later
        // versions' tables).
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "DROP TABLE claims;
                 DROP TABLE study_events; ALTER TABLE studies DROP COLUMN path_bytes;
                 DELETE FROM sqlite_sequence WHERE name = 'study_events';
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let store = DecisionStore::open(&path).unwrap();
        let report = store.verify_studies().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.log.total_events, 1);
        assert_eq!(
            store.study(&"03".repeat(32)).unwrap().unwrap().path,
            PathBuf::from("/w/c.png")
        );
    }
}
