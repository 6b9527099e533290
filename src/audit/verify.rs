//! Checking the hash chain: [`DecisionStore::verify`].

use std::fmt;

use rusqlite::{OptionalExtension, Row, Transaction, TransactionBehavior};

use super::chain::{self, EventFields, GENESIS_PREV_HASH};
use super::schema::{NO_DELETE_TRIGGER, NO_UPDATE_TRIGGER};
use super::{AuditError, DecisionStore};
use crate::io::hex;

/// What [`DecisionStore::verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The number of events in the log.
    pub total_events: u64,
    /// The number of events checked and found sound, in order, before the first broken link.
    pub events_checked: u64,
    /// The hash of the last event when the whole chain is sound (`None` for an empty log or a
    /// broken chain). Writing it down elsewhere lets a later check prove that the log was not
    /// rewritten wholesale since.
    pub head_hash: Option<String>,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLink>,
    /// Whether the triggers that refuse UPDATE and DELETE on the log are present and unchanged.
    pub append_only_guard_intact: bool,
}

impl VerifyReport {
    /// True when the chain is sound and the append-only guard is in place.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none() && self.append_only_guard_intact
    }
}

/// The first event at which the chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    /// The id of the event where the chain breaks (for a deleted tail: the first missing id).
    pub id: i64,
    /// What is wrong there.
    pub problem: LinkProblem,
}

/// What is wrong at a broken link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkProblem {
    /// The ids jump or go back: events were deleted, renumbered or moved.
    IdOutOfSequence {
        /// The id that should have come here.
        expected: i64,
    },
    /// The event does not link to the event before it: events were swapped, inserted or
    /// rewritten.
    PrevHashMismatch,
    /// The event's content no longer matches its hash: it was edited.
    ContentChanged,
    /// A column holds a value that the store never writes.
    Unreadable {
        /// The column's name.
        column: &'static str,
    },
    /// The last events were deleted: the store had handed out ids up to `issued`.
    TailDeleted {
        /// The highest id the store ever handed out.
        issued: i64,
    },
}

impl fmt::Display for LinkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdOutOfSequence { expected } => write!(
                f,
                "event {expected} should come here: events were deleted, renumbered or reordered"
            ),
            Self::PrevHashMismatch => f.write_str(
                "it does not link to the event before it: events were swapped, inserted or rewritten",
            ),
            Self::ContentChanged => {
                f.write_str("its content was changed after it was recorded")
            }
            Self::Unreadable { column } => {
                write!(f, "its {column} holds a value cxr-triage never writes")
            }
            Self::TailDeleted { issued } => write!(
                f,
                "it is missing: the log had events up to {issued}, so the last events were deleted"
            ),
        }
    }
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.id, self.problem)
    }
}

/// The columns [`DecisionStore::verify`] reads, in chain order.
pub(crate) const COLUMNS: [&str; 20] = [
    "id",
    "decided_at",
    "reader",
    "app_version",
    "study_sha256",
    "study_path",
    "model_id",
    "weights_sha256",
    "score",
    "threshold",
    "ai_label",
    "prev_label",
    "new_label",
    "action",
    "reason",
    "prev_hash",
    "row_hash",
    "format_version",
    "viewed_ms",
    "ood_reason",
];

/// One event as stored, read without interpretation.
pub(crate) struct RawEvent {
    pub(crate) id: i64,
    pub(crate) decided_at: String,
    pub(crate) reader: String,
    pub(crate) app_version: String,
    pub(crate) study_sha256: String,
    pub(crate) study_path: String,
    pub(crate) model_id: Option<String>,
    pub(crate) weights_sha256: Option<String>,
    pub(crate) score: Option<f64>,
    pub(crate) threshold: Option<f64>,
    pub(crate) ai_label: Option<String>,
    pub(crate) prev_label: Option<String>,
    pub(crate) new_label: Option<String>,
    pub(crate) action: String,
    pub(crate) reason: String,
    pub(crate) prev_hash: String,
    pub(crate) row_hash: String,
    pub(crate) format_version: i64,
    pub(crate) viewed_ms: Option<i64>,
    pub(crate) ood_reason: Option<String>,
}

impl RawEvent {
    /// Reads a row of `SELECT {COLUMNS}`; on a value of the wrong type, names its column.
    fn read(r: &Row<'_>) -> Result<Self, &'static str> {
        let text = |i: usize| r.get::<_, String>(i).map_err(|_| COLUMNS[i]);
        let opt_text = |i: usize| r.get::<_, Option<String>>(i).map_err(|_| COLUMNS[i]);
        let opt_real = |i: usize| r.get::<_, Option<f64>>(i).map_err(|_| COLUMNS[i]);
        Ok(Self {
            id: r.get(0).map_err(|_| COLUMNS[0])?,
            decided_at: text(1)?,
            reader: text(2)?,
            app_version: text(3)?,
            study_sha256: text(4)?,
            study_path: text(5)?,
            model_id: opt_text(6)?,
            weights_sha256: opt_text(7)?,
            score: opt_real(8)?,
            threshold: opt_real(9)?,
            ai_label: opt_text(10)?,
            prev_label: opt_text(11)?,
            new_label: opt_text(12)?,
            action: text(13)?,
            reason: text(14)?,
            prev_hash: text(15)?,
            row_hash: text(16)?,
            format_version: r.get(17).map_err(|_| COLUMNS[17])?,
            viewed_ms: r.get(18).map_err(|_| COLUMNS[18])?,
            ood_reason: opt_text(19)?,
        })
    }

    pub(crate) fn fields(&self) -> EventFields<'_> {
        EventFields {
            id: self.id,
            decided_at: &self.decided_at,
            reader: &self.reader,
            app_version: &self.app_version,
            study_sha256: &self.study_sha256,
            study_path: &self.study_path,
            model_id: self.model_id.as_deref(),
            weights_sha256: self.weights_sha256.as_deref(),
            score: self.score,
            threshold: self.threshold,
            ai_label: self.ai_label.as_deref(),
            prev_label: self.prev_label.as_deref(),
            new_label: self.new_label.as_deref(),
            action: &self.action,
            reason: &self.reason,
            format_version: self.format_version,
            viewed_ms: self.viewed_ms,
            ood_reason: self.ood_reason.as_deref(),
        }
    }
}

impl DecisionStore {
    /// Checks the whole log: ids run 1, 2, 3, … without gaps, each event links to the previous
    /// event's hash, each event's hash matches its content (in the encoding its
    /// `format_version` names, so that events written before version 2 still verify), no events were cut off the end, and
    /// the append-only triggers are in place.
    ///
    /// Returns `Ok` with the first broken link when it finds tampering; `Err` only when the store
    /// cannot be read at all.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?;
        let trigger_sql = |name: &str| -> rusqlite::Result<Option<String>> {
            tx.query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?1 AND tbl_name = 'decisions'",
                [name],
                |r| r.get(0),
            )
            .optional()
        };
        let append_only_guard_intact = trigger_sql("decisions_no_update")?.as_deref()
            == Some(NO_UPDATE_TRIGGER)
            && trigger_sql("decisions_no_delete")?.as_deref() == Some(NO_DELETE_TRIGGER);
        let total: i64 = tx.query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))?;

        let mut stmt = tx.prepare(&format!(
            "SELECT {} FROM decisions ORDER BY id",
            COLUMNS.join(", ")
        ))?;
        let mut rows = stmt.query([])?;
        let mut walk = ChainWalk::default();
        while let Some(row) = rows.next()? {
            let event = RawEvent::read(row).map_err(|column| (row.get(0).ok(), column));
            if !walk.next(event) {
                break;
            }
        }
        drop(rows);
        let issued = super::schema::highest_issued_id(&tx, "decisions")?;
        Ok(walk.finish(total, issued, append_only_guard_intact))
    }
}

/// The check of a decision log's hash chain, event by event in id order: the same for both
/// backends.
#[derive(Debug)]
pub(crate) struct ChainWalk {
    prev: [u8; 32],
    expected_id: i64,
    first_broken: Option<BrokenLink>,
}

impl Default for ChainWalk {
    fn default() -> Self {
        Self {
            prev: GENESIS_PREV_HASH,
            expected_id: 1,
            first_broken: None,
        }
    }
}

impl ChainWalk {
    /// Checks the next event (or, for a value the store never writes, its id if readable and
    /// the column); `false` once the chain is broken, when the rest need not be read.
    pub(crate) fn next(&mut self, event: Result<RawEvent, (Option<i64>, &'static str)>) -> bool {
        let expected_id = self.expected_id;
        let e = match event {
            Ok(e) => e,
            Err((id, column)) => {
                self.first_broken = Some(BrokenLink {
                    id: id.unwrap_or(expected_id),
                    problem: LinkProblem::Unreadable { column },
                });
                return false;
            }
        };
        let broken = |problem| BrokenLink { id: e.id, problem };
        if e.id != expected_id {
            self.first_broken = Some(broken(LinkProblem::IdOutOfSequence {
                expected: expected_id,
            }));
            return false;
        }
        if chain::parse_hash_hex(&e.prev_hash) != Some(self.prev) {
            self.first_broken = Some(broken(LinkProblem::PrevHashMismatch));
            return false;
        }
        let computed = chain::row_hash(&self.prev, &e.fields());
        // A version 1 event's hash does not cover the later columns: they must be empty.
        let v1_extra = e.format_version == 1 && (e.viewed_ms.is_some() || e.ood_reason.is_some());
        if v1_extra || chain::parse_hash_hex(&e.row_hash) != Some(computed) {
            self.first_broken = Some(broken(LinkProblem::ContentChanged));
            return false;
        }
        self.prev = computed;
        self.expected_id += 1;
        true
    }

    /// The report: `total` events in the log, `issued` the highest id the store ever handed
    /// out (a deleted tail shows as ids issued past the last event), `guard` whether the
    /// append-only guard is in place.
    pub(crate) fn finish(mut self, total: i64, issued: Option<i64>, guard: bool) -> VerifyReport {
        if self.first_broken.is_none()
            && let Some(issued) = issued
            && issued >= self.expected_id
        {
            self.first_broken = Some(BrokenLink {
                id: self.expected_id,
                problem: LinkProblem::TailDeleted { issued },
            });
        }
        let events_checked = u64::try_from(self.expected_id - 1).unwrap_or(0);
        let head_hash =
            (self.first_broken.is_none() && events_checked > 0).then(|| hex(&self.prev));
        VerifyReport {
            total_events: u64::try_from(total).unwrap_or(0),
            events_checked,
            head_hash,
            first_broken: self.first_broken,
            append_only_guard_intact: guard,
        }
    }
}
