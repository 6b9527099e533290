//! Learning from the site: the scores each model gave each study, the studies whose label a
//! reader set, and the audited, hash-chained log of threshold changes.
//!
//! See the [module documentation](super#learning-from-the-site) for the tables and the encoding
//! of a threshold event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::chain::{self, GENESIS_PREV_HASH};
use super::event::{AiCall, StudyRecord};
use super::schema::{THRESHOLD_NO_DELETE_TRIGGER, THRESHOLD_NO_UPDATE_TRIGGER};
use super::store::latest_states;
use super::verify::{BrokenLink, LinkProblem};
use super::{AuditError, DecisionStore};
use crate::io::{StudyMeta, hex};
use crate::worklist::Label;

/// The first field of every threshold event's encoding: names the format and its version.
const THRESHOLD_ENCODING_TAG: &[u8] = b"cxr-triage threshold event v1";

/// The score one model gave one study, as `cxr-triage score --db` records it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRecord {
    /// The study's identity (SHA-256 of its file).
    pub study_sha256: String,
    /// The model's name.
    pub model_id: String,
    /// SHA-256 of the model's weights: scores are kept per weights.
    pub weights_sha256: String,
    /// The pneumonia score, 0 to 1.
    pub score: f32,
    /// The threshold in force when the study was scored.
    pub threshold: f32,
}

impl ScoreRecord {
    /// Checks what both stores require of a score: SHA-256 values as 64 lower-case hexadecimal
    /// digits, score and threshold between 0 and 1.
    pub(crate) fn validate(&self) -> Result<(), AuditError> {
        if !chain::is_sha256_hex(&self.study_sha256) || !chain::is_sha256_hex(&self.weights_sha256)
        {
            return Err(AuditError::InvalidDecision(
                "a score's SHA-256 is not 64 lower-case hexadecimal digits".to_owned(),
            ));
        }
        if !(0.0..=1.0).contains(&self.score) || !(0.0..=1.0).contains(&self.threshold) {
            return Err(AuditError::InvalidDecision(
                "a score or threshold is not between 0 and 1".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A study whose label a reader set (the label in force), with what the store knows of it.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledStudy {
    /// The study: identity, last known path, DICOM ids.
    pub study: StudyRecord,
    /// The reader's label in force.
    pub label: Label,
    /// The AI call on record in its decision events, if any.
    pub ai: Option<AiCall>,
}

/// A threshold change to record.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdChange {
    /// Who applied it.
    pub reader: String,
    /// The model whose threshold changes.
    pub model_id: String,
    /// SHA-256 of that model's weights: a threshold belongs to one set of weights.
    pub weights_sha256: String,
    /// The threshold in force before.
    pub old_threshold: f32,
    /// The threshold in force from now on.
    pub new_threshold: f32,
    /// The local figures the change rests on, as a JSON document.
    pub basis_json: String,
    /// Why, in the reader's words (may be empty).
    pub reason: String,
}

/// A switch of the model in force at this site, to record. It is recorded in the threshold log
/// (a threshold event for the new model, whose basis names the switch), so it shares that log's
/// hash chain, append-only guard and verification: the model in force and its threshold are one
/// decision of the site.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSwitch {
    /// Who switched.
    pub reader: String,
    /// The model in force before, and its weights' SHA-256.
    pub from_model_id: String,
    /// SHA-256 of the weights in force before.
    pub from_weights_sha256: String,
    /// The threshold in force before.
    pub from_threshold: f32,
    /// The model in force from now on.
    pub model_id: String,
    /// SHA-256 of its weights.
    pub weights_sha256: String,
    /// Where its card is (the weights beside it).
    pub card_path: PathBuf,
    /// Its threshold in force from now on.
    pub threshold: f32,
    /// What the switch rests on (for an adapted model, its held-out figures), as JSON.
    pub basis: serde_json::Value,
    /// Why, in the reader's words (may be empty).
    pub reason: String,
}

/// The model a site switched to, as the threshold log records it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInForce {
    /// The event that recorded the switch.
    pub event: ThresholdEvent,
    /// Where the model's card was when it was switched to.
    pub card_path: PathBuf,
    /// The model in force before.
    pub from_model_id: String,
}

/// The key in a threshold event's basis that marks a switch of the model in force.
const MODEL_SWITCH_KEY: &str = "model_switch";

/// One recorded threshold change, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdEvent {
    /// Position in the threshold log: 1, 2, 3, … with no gaps.
    pub id: i64,
    /// UTC time of recording, RFC 3339 with milliseconds and `Z`.
    pub recorded_at: String,
    /// Who applied it.
    pub reader: String,
    /// The cxr-triage version that recorded it.
    pub app_version: String,
    /// The model.
    pub model_id: String,
    /// SHA-256 of the model's weights.
    pub weights_sha256: String,
    /// The threshold before.
    pub old_threshold: f32,
    /// The threshold after.
    pub new_threshold: f32,
    /// The local figures it rests on (JSON).
    pub basis_json: String,
    /// Why.
    pub reason: String,
    /// Hexadecimal hash of the previous threshold event (64 zeros for the first).
    pub prev_hash: String,
    /// Hexadecimal SHA-256 of the previous hash and this event's canonical encoding.
    pub row_hash: String,
}

/// What [`DecisionStore::verify_thresholds`] found in the threshold log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThresholdLogReport {
    /// The number of threshold events.
    pub total_events: u64,
    /// The hash of the last threshold event when the chain is sound (`None` when empty or broken).
    pub head_hash: Option<String>,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLink>,
    /// Whether the triggers that refuse UPDATE and DELETE on the log are in place and unchanged.
    pub append_only_guard_intact: bool,
}

impl ThresholdLogReport {
    /// True when the chain is sound and the append-only guard is in place.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none() && self.append_only_guard_intact
    }
}

impl StudyRecord {
    /// The store's record of a study as its loader read it: identity, where it is, DICOM ids and
    /// format details (as the review window registers the studies of an opened folder).
    pub fn from_meta(path: &Path, meta: &StudyMeta) -> Self {
        let dicom = meta.dicom.as_ref();
        let metadata = serde_json::json!({
            "format": meta.format.to_string(),
            "width": meta.width,
            "height": meta.height,
            "bits_stored": meta.bits_stored,
            "photometric": meta.photometric.to_string(),
            "file_size_bytes": meta.file_size_bytes,
            "modality": dicom.and_then(|d| d.modality.clone()),
            "view_position": dicom.and_then(|d| d.view_position.clone()),
            "body_part_examined": dicom.and_then(|d| d.body_part_examined.clone()),
        });
        Self {
            sha256: meta.sha256.clone(),
            path: path.to_owned(),
            patient_id: dicom.and_then(|d| d.patient_id.clone()),
            study_uid: dicom.and_then(|d| d.study_instance_uid.clone()),
            metadata_json: metadata.to_string(),
        }
    }
}

const THRESHOLD_COLUMNS_SQL: &str = "id, recorded_at, reader, app_version, model_id, \
     weights_sha256, old_threshold, new_threshold, basis_json, reason, prev_hash, row_hash";

fn threshold_event_from_row(r: &Row<'_>) -> rusqlite::Result<ThresholdEvent> {
    Ok(ThresholdEvent {
        id: r.get(0)?,
        recorded_at: r.get(1)?,
        reader: r.get(2)?,
        app_version: r.get(3)?,
        model_id: r.get(4)?,
        weights_sha256: r.get(5)?,
        old_threshold: r.get::<_, f64>(6)? as f32,
        new_threshold: r.get::<_, f64>(7)? as f32,
        basis_json: r.get(8)?,
        reason: r.get(9)?,
        prev_hash: r.get(10)?,
        row_hash: r.get(11)?,
    })
}

/// Appends one present field: `0x01`, the length as 8 bytes big-endian, and the bytes.
pub(crate) fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.push(1);
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// The canonical encoding of a threshold event (every column but the two hashes, in order).
fn encode_threshold(e: &ThresholdEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    put(&mut out, THRESHOLD_ENCODING_TAG);
    put(&mut out, &e.id.to_be_bytes());
    put(&mut out, e.recorded_at.as_bytes());
    put(&mut out, e.reader.as_bytes());
    put(&mut out, e.app_version.as_bytes());
    put(&mut out, e.model_id.as_bytes());
    put(&mut out, e.weights_sha256.as_bytes());
    put(
        &mut out,
        &f64::from(e.old_threshold).to_bits().to_be_bytes(),
    );
    put(
        &mut out,
        &f64::from(e.new_threshold).to_bits().to_be_bytes(),
    );
    put(&mut out, e.basis_json.as_bytes());
    put(&mut out, e.reason.as_bytes());
    out
}

fn threshold_row_hash(prev: &[u8; 32], e: &ThresholdEvent) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(encode_threshold(e));
    h.finalize().into()
}

/// An append-only, hash-chained table besides the decision log (the threshold log, the study
/// log): how to read its events and hash them.
pub(crate) struct ChainedLog<'a, E> {
    /// The table.
    pub table: &'a str,
    /// Its columns, in the order `from_row` reads them.
    pub columns_sql: &'a str,
    /// The names and exact SQL of its UPDATE and DELETE guards.
    pub triggers: [(&'a str, &'a str); 2],
    /// Reads one event.
    pub from_row: fn(&Row<'_>) -> rusqlite::Result<E>,
    /// An event's id, previous hash and own hash (hexadecimal).
    pub links: fn(&E) -> (i64, &str, &str),
    /// The hash of an event after `prev`.
    pub hash: fn(&[u8; 32], &E) -> [u8; 32],
}

/// Checks a chained log: ids in sequence, each event linked to the one before, each hash
/// matching its content, no events cut off the end (the highest id ever issued), and the guards
/// in place.
pub(crate) fn verify_log<E>(
    tx: &Transaction<'_>,
    log: &ChainedLog<'_, E>,
) -> Result<ThresholdLogReport, AuditError> {
    let trigger_sql = |name: &str| -> rusqlite::Result<Option<String>> {
        tx.query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?1 AND tbl_name = ?2",
            [name, log.table],
            |r| r.get(0),
        )
        .optional()
    };
    let mut append_only_guard_intact = true;
    for (name, sql) in log.triggers {
        append_only_guard_intact &= trigger_sql(name)?.as_deref() == Some(sql);
    }
    let mut stmt = tx.prepare(&format!(
        "SELECT {} FROM {} ORDER BY id",
        log.columns_sql, log.table
    ))?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS_PREV_HASH;
    let mut expected_id = 1i64;
    let mut first_broken = None;
    let mut total = 0u64;
    while let Some(row) = rows.next()? {
        total += 1;
        if first_broken.is_some() {
            continue;
        }
        let broken = |problem| BrokenLink {
            id: row.get(0).unwrap_or(expected_id),
            problem,
        };
        let Ok(e) = (log.from_row)(row) else {
            first_broken = Some(broken(LinkProblem::Unreadable { column: "row" }));
            continue;
        };
        let (id, prev_hash, row_hash) = (log.links)(&e);
        if id != expected_id {
            first_broken = Some(broken(LinkProblem::IdOutOfSequence {
                expected: expected_id,
            }));
            continue;
        }
        if chain::parse_hash_hex(prev_hash) != Some(prev) {
            first_broken = Some(broken(LinkProblem::PrevHashMismatch));
            continue;
        }
        let computed = (log.hash)(&prev, &e);
        if chain::parse_hash_hex(row_hash) != Some(computed) {
            first_broken = Some(broken(LinkProblem::ContentChanged));
            continue;
        }
        prev = computed;
        expected_id += 1;
    }
    drop(rows);
    if first_broken.is_none()
        && let Some(issued) = super::schema::highest_issued_id(tx, log.table)?
        && issued >= expected_id
    {
        first_broken = Some(BrokenLink {
            id: expected_id,
            problem: LinkProblem::TailDeleted { issued },
        });
    }
    let head_hash = (first_broken.is_none() && total > 0).then(|| hex(&prev));
    Ok(ThresholdLogReport {
        total_events: total,
        head_hash,
        first_broken,
        append_only_guard_intact,
    })
}

/// Appends one field: `0x00` for NULL, or `0x01`, the length as 8 bytes big-endian, and the bytes.
pub(crate) fn put_opt(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(f) => put(out, f),
        None => out.push(0),
    }
}

/// The threshold in force for each set of weights that has a threshold event.
pub(crate) fn thresholds_in_force(conn: &Connection) -> Result<HashMap<String, f32>, AuditError> {
    let mut stmt = conn.prepare_cached(
        "SELECT weights_sha256, new_threshold FROM threshold_events WHERE id IN
             (SELECT MAX(id) FROM threshold_events GROUP BY weights_sha256)",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
    let mut map = HashMap::new();
    for row in rows {
        let (w, t) = row?;
        map.insert(w, t as f32);
    }
    Ok(map)
}

/// Each study's most recent score (any model), with its model, weights and threshold.
pub(crate) fn latest_scores(conn: &Connection) -> Result<HashMap<String, ScoreRecord>, AuditError> {
    let mut stmt = conn.prepare_cached(
        "SELECT study_sha256, model_id, weights_sha256, score, threshold FROM scores
         ORDER BY scored_at, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ScoreRecord {
            study_sha256: r.get(0)?,
            model_id: r.get(1)?,
            weights_sha256: r.get(2)?,
            score: r.get::<_, f64>(3)? as f32,
            threshold: r.get::<_, f64>(4)? as f32,
        })
    })?;
    let mut map = HashMap::new();
    for row in rows {
        let row = row?;
        map.insert(row.study_sha256.clone(), row);
    }
    Ok(map)
}

impl DecisionStore {
    /// Records (or replaces) the score each study got from a model, in one transaction. Scores
    /// are a cache, like the studies table, not part of the audit trail; the studies must be
    /// known ([`AuditError::UnknownStudy`]).
    pub fn record_scores(&self, scores: &[ScoreRecord]) -> Result<(), AuditError> {
        for s in scores {
            s.validate()?;
        }
        let now = super::store::now_rfc3339();
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        {
            let mut known =
                tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM studies WHERE sha256 = ?1)")?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO scores (study_sha256, weights_sha256, model_id, score, threshold, scored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (study_sha256, weights_sha256) DO UPDATE SET
                     model_id = excluded.model_id, score = excluded.score,
                     threshold = excluded.threshold, scored_at = excluded.scored_at",
            )?;
            for s in scores {
                if !known.query_row([&s.study_sha256], |r| r.get::<_, bool>(0))? {
                    return Err(AuditError::UnknownStudy);
                }
                stmt.execute(rusqlite::params![
                    s.study_sha256,
                    s.weights_sha256,
                    s.model_id,
                    f64::from(s.score),
                    f64::from(s.threshold),
                    now,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The scores that the model with these weights gave, by study hash.
    pub fn scores_of_model(
        &self,
        weights_sha256: &str,
    ) -> Result<HashMap<String, f32>, AuditError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT study_sha256, score FROM scores WHERE weights_sha256 = ?1")?;
        let rows = stmt.query_map([weights_sha256], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)? as f32))
        })?;
        let mut map = HashMap::new();
        for row in rows {
            let (sha, score) = row?;
            map.insert(sha, score);
        }
        Ok(map)
    }

    /// Every study whose label a reader set (a label in force), sorted by last known path, from
    /// one snapshot of the store. `folder` keeps only studies last seen under it.
    pub fn labelled_studies(
        &self,
        folder: Option<&Path>,
    ) -> Result<Vec<LabelledStudy>, AuditError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?;
        let states = latest_states(&tx, "1")?;
        let resolved: Option<(PathBuf, Option<PathBuf>)> =
            folder.map(|f| (f.to_owned(), f.canonicalize().ok()));
        let under = |p: &Path| {
            resolved.as_ref().is_none_or(|(given, canon)| {
                p.starts_with(given) || canon.as_ref().is_some_and(|c| p.starts_with(c))
            })
        };
        let mut stmt = tx.prepare(
            "SELECT sha256, last_path, patient_id, study_uid, metadata_json, path_bytes FROM studies
             ORDER BY last_path, sha256",
        )?;
        let studies = stmt.query_map([], super::store::study_from_row)?;
        let mut out = Vec::new();
        for study in studies {
            let study = study?;
            let Some(state) = states.get(&study.sha256) else {
                continue;
            };
            let Some(label) = state.final_label else {
                continue;
            };
            if under(&study.path) {
                out.push(LabelledStudy {
                    ai: state.ai.clone(),
                    study,
                    label,
                });
            }
        }
        Ok(out)
    }

    /// The hash of the last decision event (`None` for an empty log): what a model adapted to
    /// this store's labels records as the state of the store it learned from.
    pub fn head_hash(&self) -> Result<Option<String>, AuditError> {
        Ok(self
            .conn
            .query_row(
                "SELECT row_hash FROM decisions ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Appends a threshold change to the threshold log and returns it once it is on disk.
    ///
    /// Rules, each an [`AuditError::InvalidDecision`] when broken: a reader name, the weights'
    /// SHA-256 as 64 lower-case hexadecimal digits, thresholds between 0 and 1, and the basis a
    /// JSON document.
    pub fn record_threshold_change(
        &self,
        c: &ThresholdChange,
    ) -> Result<ThresholdEvent, AuditError> {
        let invalid = |why: &str| Err(AuditError::InvalidDecision(why.to_owned()));
        if c.reader.trim().is_empty() {
            return invalid("the reader's name is empty");
        }
        if !chain::is_sha256_hex(&c.weights_sha256) {
            return invalid("the weights' SHA-256 is not 64 lower-case hexadecimal digits");
        }
        if !(0.0..=1.0).contains(&c.old_threshold) || !(0.0..=1.0).contains(&c.new_threshold) {
            return invalid("the threshold is not between 0 and 1");
        }
        if serde_json::from_str::<serde_json::Value>(&c.basis_json).is_err() {
            return invalid("the figures the threshold rests on are not a JSON document");
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let last = tx
            .prepare_cached("SELECT id, row_hash FROM threshold_events ORDER BY id DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .optional()?;
        let (last_id, prev) = match last {
            None => (0, GENESIS_PREV_HASH),
            Some((id, h)) => (
                id,
                chain::parse_hash_hex(&h).ok_or_else(|| {
                    AuditError::UnreadableValue(format!("threshold event {id} has no valid hash"))
                })?,
            ),
        };
        let mut event = ThresholdEvent {
            id: last_id + 1,
            recorded_at: super::store::now_rfc3339(),
            reader: c.reader.trim().to_owned(),
            app_version: env!("CARGO_PKG_VERSION").to_owned(),
            model_id: c.model_id.clone(),
            weights_sha256: c.weights_sha256.clone(),
            old_threshold: c.old_threshold,
            new_threshold: c.new_threshold,
            basis_json: c.basis_json.clone(),
            reason: c.reason.clone(),
            prev_hash: hex(&prev),
            row_hash: String::new(),
        };
        event.row_hash = hex(&threshold_row_hash(&prev, &event));
        tx.prepare_cached(&format!(
            "INSERT INTO threshold_events ({THRESHOLD_COLUMNS_SQL})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ))?
        .execute(rusqlite::params![
            event.id,
            event.recorded_at,
            event.reader,
            event.app_version,
            event.model_id,
            event.weights_sha256,
            f64::from(event.old_threshold),
            f64::from(event.new_threshold),
            event.basis_json,
            event.reason,
            event.prev_hash,
            event.row_hash,
        ])?;
        tx.commit()?;
        Ok(event)
    }

    /// The latest threshold change for the model with these weights: its `new_threshold` is the
    /// threshold in force. `None`: the model card's threshold is in force.
    pub fn threshold_in_force(
        &self,
        weights_sha256: &str,
    ) -> Result<Option<ThresholdEvent>, AuditError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {THRESHOLD_COLUMNS_SQL} FROM threshold_events WHERE weights_sha256 = ?1
             ORDER BY id DESC LIMIT 1"
        ))?;
        Ok(stmt
            .query_row([weights_sha256], threshold_event_from_row)
            .optional()?)
    }

    /// Records a switch of the model in force (see [`ModelSwitch`]) and returns the event once it
    /// is on disk. The same rules as [`Self::record_threshold_change`], and a card path that is
    /// valid UTF-8.
    pub fn record_model_switch(&self, s: &ModelSwitch) -> Result<ThresholdEvent, AuditError> {
        let card_path = s.card_path.to_str().ok_or_else(|| {
            AuditError::InvalidDecision("the model card's path is not valid UTF-8".to_owned())
        })?;
        let basis = serde_json::json!({
            MODEL_SWITCH_KEY: {
                "from_model_id": s.from_model_id,
                "from_weights_sha256": s.from_weights_sha256,
                "card_path": card_path,
            },
            "figures": s.basis,
        });
        self.record_threshold_change(&ThresholdChange {
            reader: s.reader.clone(),
            model_id: s.model_id.clone(),
            weights_sha256: s.weights_sha256.clone(),
            old_threshold: s.from_threshold,
            new_threshold: s.threshold,
            basis_json: basis.to_string(),
            reason: s.reason.clone(),
        })
    }

    /// The latest switch of the model in force, if the site ever switched (`None`: the shipped
    /// model is in force).
    pub fn model_in_force(&self) -> Result<Option<ModelInForce>, AuditError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {THRESHOLD_COLUMNS_SQL} FROM threshold_events
             WHERE instr(basis_json, '\"{MODEL_SWITCH_KEY}\"') > 0 ORDER BY id DESC"
        ))?;
        let events = stmt
            .query_map([], threshold_event_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        for event in events {
            let Ok(basis) = serde_json::from_str::<serde_json::Value>(&event.basis_json) else {
                continue;
            };
            let Some(switch) = basis.get(MODEL_SWITCH_KEY) else {
                continue;
            };
            let text = |k: &str| switch.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            if let (Some(card_path), Some(from_model_id)) =
                (text("card_path"), text("from_model_id"))
            {
                return Ok(Some(ModelInForce {
                    event,
                    card_path: PathBuf::from(card_path),
                    from_model_id,
                }));
            }
        }
        Ok(None)
    }

    /// Every threshold change, oldest first.
    pub fn threshold_events(&self) -> Result<Vec<ThresholdEvent>, AuditError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {THRESHOLD_COLUMNS_SQL} FROM threshold_events ORDER BY id"
        ))?;
        let events = stmt
            .query_map([], threshold_event_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(events)
    }

    /// Checks the threshold log as [`DecisionStore::verify`] checks the decision log: ids in
    /// sequence, each event linked to the one before, each hash matching its content, no events
    /// cut off the end, and the append-only triggers in place.
    pub fn verify_thresholds(&self) -> Result<ThresholdLogReport, AuditError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?;
        verify_log(
            &tx,
            &ChainedLog {
                table: "threshold_events",
                columns_sql: THRESHOLD_COLUMNS_SQL,
                triggers: [
                    ("threshold_events_no_update", THRESHOLD_NO_UPDATE_TRIGGER),
                    ("threshold_events_no_delete", THRESHOLD_NO_DELETE_TRIGGER),
                ],
                from_row: threshold_event_from_row,
                links: |e| (e.id, &e.prev_hash, &e.row_hash),
                hash: threshold_row_hash,
            },
        )
    }
}
