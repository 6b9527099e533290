//! [`DecisionStore`]: opening the SQLite file, recording decisions and reading states back.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::chain::{self, EventFields, GENESIS_PREV_HASH};
use super::event::{Action, CurrentState, DecisionEvent, NewDecision, StudyRecord};
use super::{AuditError, schema};
use crate::io::hex;
use crate::worklist::Label;

/// How long a write waits for another program's write to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The file name of the store in the user's data folder.
const DEFAULT_FILE_NAME: &str = "decisions.sqlite3";

/// The columns of an event, in the order [`event_from_row`] reads them.
pub(crate) const EVENT_COLUMNS_SQL: &str = "id, decided_at, reader, app_version, study_sha256, study_path, \
     model_id, weights_sha256, score, threshold, ai_label, prev_label, new_label, action, reason, \
     prev_hash, row_hash, format_version, viewed_ms, ood_reason";

/// The append-only, hash-chained decision store: one SQLite file.
///
/// Every method that writes runs in its own transaction and returns only once the transaction is
/// on disk (`synchronous=FULL`). Several stores (in one process or several) may have the same file
/// open: writes are serialised by SQLite's lock and wait up to 10 seconds for each other.
#[derive(Debug)]
pub struct DecisionStore {
    pub(crate) conn: Connection,
    path: PathBuf,
}

impl DecisionStore {
    /// Opens the store at `path`, creating the file (and its folder) if needed, and brings its
    /// schema up to date. Sets write-ahead logging, `synchronous=FULL` and a busy timeout.
    ///
    /// Fails with [`AuditError::NotOurDatabase`] for a file that is not a cxr-triage store.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        refuse_server_address(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| AuditError::File {
                what: "could not create the folder for the decision store",
                source,
                path: parent.to_owned(),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| open_error(e, path))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        schema::check_identity(&conn, path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| open_error(e, path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(AuditError::CannotOpen {
                path: path.to_owned(),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&conn)?;
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS wanted_studies (sha256 TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID",
        )?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// Opens a store that must already exist (for commands that read or check a store).
    pub fn open_existing(path: &Path) -> Result<Self, AuditError> {
        refuse_server_address(path)?;
        if !path.is_file() {
            return Err(AuditError::NoStore {
                path: path.to_owned(),
            });
        }
        Self::open(path)
    }

    /// Opens an existing store for checking only (`audit verify`): read-only, so that checking
    /// never writes (no schema, no migration, no WAL checkpoint). Refuses a missing file, a file
    /// of 0 bytes (a truncated store) and a store made by an older cxr-triage that has not been
    /// opened by this version yet.
    pub fn open_for_check(path: &Path) -> Result<Self, AuditError> {
        refuse_server_address(path)?;
        let meta = fs::metadata(path).map_err(|_| AuditError::NoStore {
            path: path.to_owned(),
        })?;
        if !meta.is_file() {
            return Err(AuditError::NoStore {
                path: path.to_owned(),
            });
        }
        if meta.len() == 0 {
            return Err(AuditError::EmptyStore {
                path: path.to_owned(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(e, path))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        schema::check_identity(&conn, path)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            return Err(AuditError::EmptyStore {
                path: path.to_owned(),
            });
        }
        if version < schema::LATEST_VERSION {
            return Err(AuditError::OlderStore {
                found: version,
                path: path.to_owned(),
            });
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// Where the store lives unless `--db` says otherwise: `decisions.sqlite3` in the user's data
    /// folder (on Linux `~/.local/share/cxr-triage/`).
    pub fn default_path() -> Result<PathBuf, AuditError> {
        directories::ProjectDirs::from("org", "cxr-triage", "cxr-triage")
            .map(|dirs| dirs.data_dir().join(DEFAULT_FILE_NAME))
            .ok_or(AuditError::NoDataDir)
    }

    /// The file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a study or updates its last known path and metadata. Decisions are keyed by the
    /// study's hash, so a moved or renamed file keeps them. Every change is also appended to the
    /// study log (see [`DecisionStore::verify_studies`]); the path is kept as the operating
    /// system's bytes beside its display form.
    pub fn upsert_study(&self, study: &StudyRecord) -> Result<(), AuditError> {
        self.upsert_studies(std::slice::from_ref(study))
    }

    /// [`upsert_study`](Self::upsert_study) for many studies in one transaction (one disk sync),
    /// as when a folder of thousands of studies is opened.
    pub fn upsert_studies(&self, studies: &[StudyRecord]) -> Result<(), AuditError> {
        for s in studies {
            validate_study(s)?;
        }
        let now = now_rfc3339();
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        {
            let mut log = super::study_log::StudyLogWriter::new(&tx)?;
            for s in studies {
                let bytes = log.record(&tx, s, &now)?;
                tx.prepare_cached(
                    "INSERT INTO studies (sha256, last_path, patient_id, study_uid, metadata_json,
                                          first_seen_at, last_seen_at, path_bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
                     ON CONFLICT (sha256) DO UPDATE SET
                         last_path = excluded.last_path,
                         patient_id = excluded.patient_id,
                         study_uid = excluded.study_uid,
                         metadata_json = excluded.metadata_json,
                         last_seen_at = excluded.last_seen_at,
                         path_bytes = excluded.path_bytes",
                )?
                .execute(rusqlite::params![
                    s.sha256,
                    s.path.to_string_lossy(),
                    s.patient_id,
                    s.study_uid,
                    s.metadata_json,
                    now,
                    bytes,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The study with this hash, if the store knows it.
    pub fn study(&self, sha256: &str) -> Result<Option<StudyRecord>, AuditError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sha256, last_path, patient_id, study_uid, metadata_json, path_bytes FROM studies
             WHERE sha256 = ?1",
        )?;
        Ok(stmt.query_row([sha256], study_from_row).optional()?)
    }

    /// Appends one decision event and returns it once it is durable on disk.
    ///
    /// The store fills in the id, the UTC time, the app version, the previous final label (read
    /// in the same write transaction) and the hashes. For [`Action::Undo`] it also works out the
    /// label to restore (see the [module documentation](super#undo)).
    ///
    /// Rules, each an [`AuditError::InvalidDecision`] when broken: a reader name; SHA-256 values
    /// as 64 lower-case hexadecimal digits; score and threshold between 0 and 1; a new label for
    /// every action but undo; a confirm's label equals the AI label and an override's differs
    /// from it; an AI label, score and threshold given together agree with
    /// [`Label::from_score`]. The study must be known ([`AuditError::UnknownStudy`]), and an undo
    /// needs a decision to undo ([`AuditError::NothingToUndo`]).
    pub fn record(&self, d: &NewDecision) -> Result<DecisionEvent, AuditError> {
        validate_decision(d)?;
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let event = append(&tx, d)?;
        tx.commit()?;
        self.anchor_after_commit();
        Ok(event)
    }

    /// Records several decisions, in order, in one transaction: all of them or, on any error,
    /// none. One disk sync for the lot, and the write lock is held only for the appends, so a
    /// batch (an import) makes other writers wait for a fraction of a second rather than race
    /// them row by row. Each decision follows the rules of [`record`](Self::record).
    pub fn record_all(&self, decisions: &[NewDecision]) -> Result<Vec<DecisionEvent>, AuditError> {
        for d in decisions {
            validate_decision(d)?;
        }
        if decisions.is_empty() {
            return Ok(Vec::new());
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let events = decisions
            .iter()
            .map(|d| append(&tx, d))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        self.anchor_after_commit();
        Ok(events)
    }

    /// Writes the anchor after a commit (see [`super::anchor`]). The decisions are committed
    /// whatever happens here: a failure is logged, and `audit verify` will say the anchor is
    /// behind.
    fn anchor_after_commit(&self) {
        if let Err(e) = self.write_anchor() {
            tracing::warn!("the anchor beside the decision store could not be written: {e}");
        }
    }

    /// The study's current state, or `None` if no decision was ever recorded for it.
    pub fn current(&self, sha256: &str) -> Result<Option<CurrentState>, AuditError> {
        Ok(self.current_many(&[sha256])?.remove(sha256))
    }

    /// The current state of each study in `sha256s` that has at least one event, by hash. Runs
    /// two queries through a temporary table, whatever the number of studies: this is how a
    /// reopened folder gets its decisions back.
    pub fn current_many(
        &self,
        sha256s: &[&str],
    ) -> Result<HashMap<String, CurrentState>, AuditError> {
        // The transaction gives both queries one snapshot; it only writes the temporary table
        // and is rolled back when dropped.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?;
        tx.execute_batch("DELETE FROM temp.wanted_studies")?;
        {
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO temp.wanted_studies (sha256) VALUES (?1)")?;
            for sha in sha256s {
                insert.execute([sha])?;
            }
        }
        latest_states(
            &tx,
            "study_sha256 IN (SELECT sha256 FROM temp.wanted_studies)",
        )
    }

    /// Every event of the study, oldest first.
    pub fn history(&self, sha256: &str) -> Result<Vec<DecisionEvent>, AuditError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS_SQL} FROM decisions WHERE study_sha256 = ?1 ORDER BY id"
        ))?;
        let events = stmt
            .query_map([sha256], event_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(events)
    }

    /// Appends events carried over verbatim from another store (`store copy`), in one
    /// transaction: each must be the next event of this log, linked to its last event, with its
    /// hash intact, and its study known.
    pub fn append_copied(&self, events: &[DecisionEvent]) -> Result<(), AuditError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        for e in events {
            let last = tx
                .prepare_cached("SELECT id, row_hash FROM decisions ORDER BY id DESC LIMIT 1")?
                .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()?;
            check_copied(last.as_ref().map(|(id, h)| (*id, h.as_str())), e)?;
            let known: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM studies WHERE sha256 = ?1)")?
                .query_row([&e.study_sha256], |r| r.get(0))?;
            if !known {
                return Err(AuditError::UnknownStudy);
            }
            insert_event(&tx, e)?;
        }
        tx.commit()?;
        self.anchor_after_commit();
        Ok(())
    }

    /// Every study the store knows of, by hash.
    pub fn studies(&self) -> Result<Vec<StudyRecord>, AuditError> {
        let mut stmt = self.conn.prepare(
            "SELECT sha256, last_path, patient_id, study_uid, metadata_json FROM studies \
             ORDER BY sha256",
        )?;
        let studies = stmt
            .query_map([], |r| {
                Ok(StudyRecord {
                    sha256: r.get(0)?,
                    path: PathBuf::from(r.get::<_, String>(1)?),
                    patient_id: r.get(2)?,
                    study_uid: r.get(3)?,
                    metadata_json: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(studies)
    }

    /// The number of events in the log.
    pub fn event_count(&self) -> Result<u64, AuditError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Appends one validated decision inside the caller's write transaction.
fn append(tx: &Transaction<'_>, d: &NewDecision) -> Result<DecisionEvent, AuditError> {
    let known: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM studies WHERE sha256 = ?1)")?
        .query_row([&d.study_sha256], |r| r.get(0))?;
    if !known {
        return Err(AuditError::UnknownStudy);
    }
    let last = tx
        .prepare_cached("SELECT id, row_hash FROM decisions ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .optional()?;
    let history = {
        let mut stmt = tx.prepare_cached(
            "SELECT action, prev_label, new_label FROM decisions WHERE study_sha256 = ?1 ORDER BY id",
        )?;
        stmt.query_map([&d.study_sha256], |row| {
            Ok(Step {
                action: row.get(0)?,
                prev_label: row.get(1)?,
                new_label: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    let event = next_event(
        last.as_ref().map(|(id, h)| (*id, h.as_str())),
        &history,
        d,
        d.reader.trim(),
    )?;
    insert_event(tx, &event)?;
    Ok(event)
}

/// Refuses a PostgreSQL address where a SQLite file is expected, rather than making a file
/// named after it.
fn refuse_server_address(path: &Path) -> Result<(), AuditError> {
    match path.to_str() {
        Some(a) if super::pg::is_postgres_address(a) => Err(AuditError::NotOnServer),
        _ => Ok(()),
    }
}

/// The id and hash the next event links to, after `last` (`None`: an empty log).
fn link_after(last: Option<(i64, &str)>) -> Result<(i64, [u8; 32]), AuditError> {
    match last {
        None => Ok((0, GENESIS_PREV_HASH)),
        Some((id, h)) => chain::parse_hash_hex(h)
            .map(|hash| (id, hash))
            .ok_or_else(|| AuditError::UnreadableValue(format!("event {id} has no valid hash"))),
    }
}

/// Checks an event carried over from another store (`store copy`) before it is appended
/// verbatim: it is the next event after `last` (id and hash; `None`: an empty log), links to
/// it, and its content still matches its hash.
pub(crate) fn check_copied(last: Option<(i64, &str)>, e: &DecisionEvent) -> Result<(), AuditError> {
    let (last_id, prev) = link_after(last)?;
    let refuse = |why: String| Err(AuditError::InvalidDecision(why));
    if e.id != last_id + 1 {
        return refuse(format!(
            "event {} cannot follow event {last_id} of the destination",
            e.id
        ));
    }
    if chain::parse_hash_hex(&e.prev_hash) != Some(prev) {
        return refuse(format!(
            "event {} does not link to the destination's last event",
            e.id
        ));
    }
    let path_text = e.study_path.to_string_lossy();
    if hex(&chain::row_hash(&prev, &fields_of(e, &path_text))) != e.row_hash {
        return refuse(format!("event {} does not match its hash", e.id));
    }
    Ok(())
}

/// Inserts an event as it is.
fn insert_event(tx: &Transaction<'_>, e: &DecisionEvent) -> Result<(), AuditError> {
    let path_text = e.study_path.to_string_lossy();
    let fields = fields_of(e, &path_text);
    tx.prepare_cached(
        "INSERT INTO decisions (id, decided_at, reader, app_version, study_sha256, study_path,
             model_id, weights_sha256, score, threshold, ai_label, prev_label, new_label, action,
             reason, prev_hash, row_hash, format_version, viewed_ms, ood_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19, ?20)",
    )?
    .execute(rusqlite::params![
        e.id,
        e.decided_at,
        e.reader,
        e.app_version,
        e.study_sha256,
        path_text,
        e.model_id,
        e.weights_sha256,
        fields.score,
        fields.threshold,
        e.ai_label,
        e.prev_label,
        e.new_label,
        e.action,
        e.reason,
        e.prev_hash,
        e.row_hash,
        e.format_version,
        fields.viewed_ms,
        e.ood_reason,
    ])?;
    Ok(())
}

/// One earlier event of a study, as [`next_event`] replays it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step {
    pub action: Action,
    pub prev_label: Option<Label>,
    pub new_label: Option<Label>,
}

/// The next event of the log, with its hashes: the decision `d` by `reader`, after the log's
/// last event (`last`: its id and hash; `None` for an empty log) and the study's earlier events
/// (`history`, oldest first). Both backends append what this returns, so that they keep the
/// same rules, the same chain and the same encoding; the caller holds the log's write lock.
pub(crate) fn next_event(
    last: Option<(i64, &str)>,
    history: &[Step],
    d: &NewDecision,
    reader: &str,
) -> Result<DecisionEvent, AuditError> {
    let (last_id, prev_hash) = link_after(last)?;

    // Replay the study's events: the final label in force, and the labels that each decision
    // still in force replaced (the undo stack), with the actions still in force.
    let mut prev_label = None;
    let mut undo_stack: Vec<Option<Label>> = Vec::new();
    let mut in_force: Vec<Action> = Vec::new();
    for step in history {
        if step.action == Action::Undo {
            undo_stack.pop();
            in_force.pop();
        } else {
            undo_stack.push(step.prev_label);
            in_force.push(step.action);
        }
        prev_label = step.new_label;
    }
    // A "read elsewhere" or "not a chest film" in force is undone before anything else is
    // recorded, so that an undo always restores a label (or unreviewed).
    if let Some(&top) = in_force.last()
        && top.is_disposition()
        && d.action != Action::Undo
    {
        return Err(AuditError::InvalidDecision(format!(
            "the study is recorded as {}: undo that first",
            disposition_words(top)
        )));
    }
    let new_label = if d.action == Action::Undo {
        let restored = undo_stack.pop().ok_or(AuditError::NothingToUndo)?;
        if d.new_label.is_some() && d.new_label != restored {
            return Err(AuditError::InvalidDecision(format!(
                "this undo restores {}, not {}",
                label_words(restored),
                label_words(d.new_label)
            )));
        }
        restored
    } else {
        d.new_label
    };

    let event = DecisionEvent {
        id: last_id + 1,
        decided_at: now_rfc3339(),
        reader: reader.to_owned(),
        app_version: env!("CARGO_PKG_VERSION").to_owned(),
        study_sha256: d.study_sha256.clone(),
        study_path: PathBuf::from(d.study_path.to_string_lossy().into_owned()),
        model_id: d.model_id.clone(),
        weights_sha256: d.weights_sha256.clone(),
        score: d.score,
        threshold: d.threshold,
        ai_label: d.ai_label,
        prev_label,
        new_label,
        action: d.action,
        reason: d.reason.clone(),
        viewed_ms: d.viewed_ms,
        ood_reason: d.ood_reason.clone(),
        format_version: chain::LATEST_FORMAT,
        prev_hash: hex(&prev_hash),
        row_hash: String::new(),
    };
    let path_text = event.study_path.to_string_lossy();
    let row_hash = hex(&chain::row_hash(&prev_hash, &fields_of(&event, &path_text)));
    Ok(DecisionEvent { row_hash, ..event })
}

/// The state of every study whose events match `filter` (an SQL condition on `decisions`).
pub(crate) fn latest_states(
    conn: &Connection,
    filter: &str,
) -> Result<HashMap<String, CurrentState>, AuditError> {
    let latest = |extra: &str| -> Result<HashMap<String, DecisionEvent>, AuditError> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS_SQL} FROM decisions WHERE id IN
                 (SELECT MAX(id) FROM decisions WHERE {extra} {filter} GROUP BY study_sha256)"
        ))?;
        let rows = stmt.query_map([], event_from_row)?;
        let mut map = HashMap::new();
        for event in rows {
            let event = event?;
            map.insert(event.study_sha256.clone(), event);
        }
        Ok(map)
    };
    let last_events = latest("")?;
    let ai_events = latest("ai_label IS NOT NULL AND")?;
    Ok(last_events
        .into_iter()
        .map(|(sha, last)| {
            let state = CurrentState::new(last, ai_events.get(&sha));
            (sha, state)
        })
        .collect())
}

/// Reads an event from the columns of [`EVENT_COLUMNS_SQL`].
pub(crate) fn event_from_row(r: &Row<'_>) -> rusqlite::Result<DecisionEvent> {
    Ok(DecisionEvent {
        id: r.get(0)?,
        decided_at: r.get(1)?,
        reader: r.get(2)?,
        app_version: r.get(3)?,
        study_sha256: r.get(4)?,
        study_path: PathBuf::from(r.get::<_, String>(5)?),
        model_id: r.get(6)?,
        weights_sha256: r.get(7)?,
        score: r.get::<_, Option<f64>>(8)?.map(|v| v as f32),
        threshold: r.get::<_, Option<f64>>(9)?.map(|v| v as f32),
        ai_label: r.get(10)?,
        prev_label: r.get(11)?,
        new_label: r.get(12)?,
        action: r.get(13)?,
        reason: r.get(14)?,
        prev_hash: r.get(15)?,
        row_hash: r.get(16)?,
        format_version: r.get(17)?,
        viewed_ms: r
            .get::<_, Option<i64>>(18)?
            .map(|v| u64::try_from(v).unwrap_or(0)),
        ood_reason: r.get(19)?,
    })
}

/// The chain fields of an event whose path, as stored, is `path_text`.
fn fields_of<'a>(e: &'a DecisionEvent, path_text: &'a str) -> EventFields<'a> {
    EventFields {
        id: e.id,
        decided_at: &e.decided_at,
        reader: &e.reader,
        app_version: &e.app_version,
        study_sha256: &e.study_sha256,
        study_path: path_text,
        model_id: e.model_id.as_deref(),
        weights_sha256: e.weights_sha256.as_deref(),
        score: e.score.map(f64::from),
        threshold: e.threshold.map(f64::from),
        ai_label: e.ai_label.map(Label::as_str),
        prev_label: e.prev_label.map(Label::as_str),
        new_label: e.new_label.map(Label::as_str),
        action: e.action.as_str(),
        reason: &e.reason,
        format_version: e.format_version,
        viewed_ms: e.viewed_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        ood_reason: e.ood_reason.as_deref(),
    }
}

/// A study from `sha256, last_path, patient_id, study_uid, metadata_json, path_bytes`.
pub(crate) fn study_from_row(r: &Row<'_>) -> rusqlite::Result<StudyRecord> {
    Ok(StudyRecord {
        sha256: r.get(0)?,
        path: super::study_log::path_from_stored(r.get(5)?, r.get(1)?),
        patient_id: r.get(2)?,
        study_uid: r.get(3)?,
        metadata_json: r.get(4)?,
    })
}

/// The current UTC time as the store writes it: RFC 3339, milliseconds, `Z`.
pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn disposition_words(action: Action) -> &'static str {
    match action {
        Action::ReadElsewhere => "read elsewhere",
        Action::NotChestFilm => "not a chest film",
        other => other.as_str(),
    }
}

fn label_words(label: Option<Label>) -> &'static str {
    label.map_or("unreviewed", Label::as_str)
}

fn open_error(err: rusqlite::Error, path: &Path) -> AuditError {
    match err.sqlite_error_code() {
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => AuditError::CannotOpen {
            path: path.to_owned(),
        },
        Some(ErrorCode::NotADatabase) => AuditError::NotOurDatabase {
            path: path.to_owned(),
        },
        _ => AuditError::from(err),
    }
}

pub(crate) fn validate_study(s: &StudyRecord) -> Result<(), AuditError> {
    if !chain::is_sha256_hex(&s.sha256) {
        return Err(AuditError::InvalidStudy(
            "its SHA-256 is not 64 lower-case hexadecimal digits".to_owned(),
        ));
    }
    if serde_json::from_str::<serde_json::Value>(&s.metadata_json).is_err() {
        return Err(AuditError::InvalidStudy(
            "its metadata is not a JSON document".to_owned(),
        ));
    }
    Ok(())
}

pub(crate) fn validate_decision(d: &NewDecision) -> Result<(), AuditError> {
    let invalid = |why: &str| Err(AuditError::InvalidDecision(why.to_owned()));
    if d.reader.trim().is_empty() {
        return invalid("the reader's name is empty");
    }
    if !chain::is_sha256_hex(&d.study_sha256) {
        return invalid("the study's SHA-256 is not 64 lower-case hexadecimal digits");
    }
    if d.weights_sha256
        .as_deref()
        .is_some_and(|w| !chain::is_sha256_hex(w))
    {
        return invalid("the weights' SHA-256 is not 64 lower-case hexadecimal digits");
    }
    let in_unit = |v: Option<f32>| v.is_none_or(|x| (0.0..=1.0).contains(&x));
    if !in_unit(d.score) {
        return invalid("the score is not between 0 and 1");
    }
    if !in_unit(d.threshold) {
        return invalid("the threshold is not between 0 and 1");
    }
    if let (Some(score), Some(threshold), Some(ai)) = (d.score, d.threshold, d.ai_label)
        && Label::from_score(score, threshold) != ai
    {
        return invalid("the AI label does not follow from the score and threshold");
    }
    if d.viewed_ms.is_some_and(|v| i64::try_from(v).is_err()) {
        return invalid("the viewing time is out of range");
    }
    if d.action.is_disposition() && d.new_label.is_some() {
        return invalid("a \"read elsewhere\" or \"not a chest film\" records no label");
    }
    if d.action != Action::Undo && !d.action.is_disposition() && d.new_label.is_none() {
        return invalid("a confirm, override, relabel or blind call needs a new label");
    }
    match d.action {
        Action::BlindCall if d.ai_label.is_some() => {
            invalid("a blind call is made before the AI label is shown, so it records none")
        }
        Action::Confirm if d.ai_label.is_none() || d.ai_label != d.new_label => invalid(
            "a confirm keeps the AI label, but there is none or the new label differs from it",
        ),
        Action::Override if d.ai_label.is_none() || d.ai_label == d.new_label => invalid(
            "an override replaces the AI label, but there is none or the new label equals it",
        ),
        _ => Ok(()),
    }
}

impl ToSql for Label {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Label {
    /// Accepts exactly `NORMAL` and `PNEUMONIA`, as the store writes them.
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "NORMAL" => Ok(Self::Normal),
            "PNEUMONIA" => Ok(Self::Pneumonia),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

impl ToSql for Action {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Action {
    /// Accepts exactly the names [`Action::as_str`] writes.
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}
