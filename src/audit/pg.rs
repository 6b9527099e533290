//! The decision store on a PostgreSQL server ([`PgStore`]): a department's readers at several
//! workstations on one log.
//!
//! The decision log keeps the SQLite store's semantics exactly: the same columns, the same rules
//! for a decision and an undo, the same canonical encoding and hash chain (both backends append
//! what [`super::store::next_event`] builds and check with the same chain walk), so that
//! `store copy` moves a log between them and its head hash stays the same.
//!
//! What the server adds:
//!
//! - **Appends are serialised** by a transaction-level advisory lock taken before the last event
//!   is read, so concurrent writers line up instead of forking the chain; the primary key on
//!   `id` refuses a second event with the same number should a writer skip the lock.
//! - **Append-only for everyone.** Triggers refuse UPDATE, DELETE and TRUNCATE on `decisions`,
//!   and readers' roles are granted only SELECT and INSERT on it (`deploy/postgres/roles.sql`).
//!   `decisions_issued` remembers the highest id ever appended (kept by a trigger the readers
//!   cannot bypass), so that events deleted from the end are reported, as `sqlite_sequence` does
//!   on SQLite.
//! - **Who decided** is the authenticated database user (`session_user`): the store writes it
//!   into every event, and a trigger refuses an event naming anyone else (only the store's
//!   owner may write other names, which `store copy` needs to carry a log over verbatim).
//! - **Decisions reach every window at once**: each append sends `NOTIFY cxr_triage_decisions`
//!   with the event's id ([`PgStore::listen`], [`PgStore::wait_for_decision`]).
//! - Claims (who has a study open) are a table like SQLite's, outside the audit trail.
//!
//! The schema is versioned in `cxr_triage_meta` and migrated on open, under an advisory lock,
//! by the store's owner; a reader's role cannot create tables, and opening a store that is not
//! set up then says so ([`AuditError::ServerNotSetUp`]).
//!
//! - **A decision retried after a broken connection is recorded once.** A window names each
//!   decision it sends (`decision_requests`, written in the append's transaction); when the
//!   connection breaks around a commit, the window cannot know whether the decision was
//!   recorded, so it sends it again under the same name ([`PgStore::record_once`]) and gets the
//!   event recorded the first time, if there was one.
//! - The scores each model gave each study (`scores`: a cache, as in SQLite, not part of the
//!   audit trail), written by `score --db` and read by `export`.
//!
//! Not kept on the server in this version: the study log (the `studies` table is the index
//! only), the threshold log and model switches, and the anchor file; `store copy` says what it
//! leaves behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::error::SqlState;
use postgres::{Client, GenericClient, Row};

use super::AuditError;
use super::claims::Claim;
use super::event::{Action, CurrentState, DecisionEvent, NewDecision, StudyRecord};
use super::pg_tls::ServerAddress;
use super::site::ScoreRecord;
use super::store::{
    Step, check_copied, next_event, now_rfc3339, validate_decision, validate_study,
};
use super::verify::{COLUMNS, ChainWalk, RawEvent, VerifyReport};
use crate::worklist::Label;

/// The channel every append notifies, with the new event's id as the payload.
pub const NOTIFY_CHANNEL: &str = "cxr_triage_decisions";

/// The newest schema version this build knows.
pub const PG_SCHEMA_VERSION: i64 = 2;

/// The advisory lock key that serialises appends ("CXRT").
const APPEND_LOCK: i64 = 0x4358_5254;
/// The advisory lock key that serialises migrations.
const MIGRATE_LOCK: i64 = 0x4358_5255;

/// The body of the function behind the append-only triggers, exactly as created.
pub(crate) const REFUSE_CHANGE_BODY: &str = "
BEGIN
    RAISE EXCEPTION 'decisions are append-only: an event cannot be changed or deleted';
END
";

/// Version 1: the studies index, the append-only decision log and its guards, claims.
const V1: &str = "
CREATE TABLE cxr_triage_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO cxr_triage_meta (key, value) VALUES ('application', 'cxr-triage'),
                                                ('schema_version', '0');
CREATE TABLE studies (
    sha256        TEXT PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    last_path     TEXT NOT NULL,
    patient_id    TEXT,
    study_uid     TEXT,
    metadata_json TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL
);
CREATE TABLE decisions (
    id             BIGINT PRIMARY KEY CHECK (id > 0),
    decided_at     TEXT NOT NULL,
    reader         TEXT NOT NULL,
    app_version    TEXT NOT NULL,
    study_sha256   TEXT NOT NULL REFERENCES studies (sha256),
    study_path     TEXT NOT NULL,
    model_id       TEXT,
    weights_sha256 TEXT,
    score          DOUBLE PRECISION,
    threshold      DOUBLE PRECISION,
    ai_label       TEXT CHECK (ai_label IN ('NORMAL', 'PNEUMONIA')),
    prev_label     TEXT CHECK (prev_label IN ('NORMAL', 'PNEUMONIA')),
    new_label      TEXT CHECK (new_label IN ('NORMAL', 'PNEUMONIA')),
    action         TEXT NOT NULL CHECK (action IN ('confirm', 'override', 'undo', 'relabel',
                                                   'read_elsewhere', 'not_chest_film',
                                                   'blind_call')),
    reason         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    row_hash       TEXT NOT NULL,
    format_version BIGINT NOT NULL,
    viewed_ms      BIGINT,
    ood_reason     TEXT
);
CREATE INDEX decisions_by_study ON decisions (study_sha256, id);
CREATE TABLE decisions_issued (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    issued   BIGINT NOT NULL
);
INSERT INTO decisions_issued (issued) VALUES (0);
CREATE FUNCTION cxr_triage_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    RAISE EXCEPTION 'decisions are append-only: an event cannot be changed or deleted';
END
$body$;
CREATE FUNCTION cxr_triage_check_reader() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF NEW.reader <> session_user::text AND session_user::text <> (
        SELECT tableowner::text FROM pg_tables
        WHERE schemaname = TG_TABLE_SCHEMA AND tablename = TG_TABLE_NAME
    ) THEN
        RAISE EXCEPTION 'a reader records decisions as themselves: the event names %, the database user is %',
            NEW.reader, session_user;
    END IF;
    RETURN NEW;
END
$body$;
CREATE FUNCTION cxr_triage_after_decision() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $body$
BEGIN
    UPDATE decisions_issued SET issued = greatest(issued, NEW.id);
    PERFORM pg_notify('cxr_triage_decisions', NEW.id::text);
    RETURN NULL;
END
$body$;
CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
    FOR EACH ROW EXECUTE FUNCTION cxr_triage_refuse_change();
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
    FOR EACH ROW EXECUTE FUNCTION cxr_triage_refuse_change();
CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions
    FOR EACH STATEMENT EXECUTE FUNCTION cxr_triage_refuse_change();
CREATE TRIGGER decisions_reader BEFORE INSERT ON decisions
    FOR EACH ROW EXECUTE FUNCTION cxr_triage_check_reader();
CREATE TRIGGER decisions_issued_and_notify AFTER INSERT ON decisions
    FOR EACH ROW EXECUTE FUNCTION cxr_triage_after_decision();
CREATE TABLE claims (
    study_sha256  TEXT PRIMARY KEY,
    reader        TEXT NOT NULL,
    holder        TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
";

/// Version 2: the names windows give the decisions they send (so that a retried decision is
/// recorded once), and the scores each model gave each study.
const V2: &str = "
CREATE TABLE decision_requests (
    request_id TEXT PRIMARY KEY CHECK (length(request_id) BETWEEN 16 AND 200),
    reader     TEXT NOT NULL DEFAULT session_user,
    event_id   BIGINT NOT NULL UNIQUE REFERENCES decisions (id)
);
CREATE TABLE scores (
    study_sha256   TEXT NOT NULL REFERENCES studies (sha256),
    weights_sha256 TEXT NOT NULL CHECK (weights_sha256 ~ '^[0-9a-f]{64}$'),
    model_id       TEXT NOT NULL,
    score          DOUBLE PRECISION NOT NULL CHECK (score >= 0 AND score <= 1),
    threshold      DOUBLE PRECISION NOT NULL CHECK (threshold >= 0 AND threshold <= 1),
    scored_at      TEXT NOT NULL,
    PRIMARY KEY (study_sha256, weights_sha256)
);
";

/// The migrations, in order: migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; 2] = [V1, V2];

/// The columns of a study, in the order [`study_from_pg`] reads them.
const STUDY_COLUMNS: &str = "sha256, last_path, patient_id, study_uid, metadata_json";

/// The columns of an event, in the order [`raw_event`] and [`event_from_pg`] read them.
const EVENT_COLUMNS: &str = super::store::EVENT_COLUMNS_SQL;

/// Whether a store address names a PostgreSQL server (`postgres://…` or `postgresql://…`)
/// rather than a SQLite file.
pub fn is_postgres_address(address: &str) -> bool {
    address.starts_with("postgres://") || address.starts_with("postgresql://")
}

/// The decision store on a PostgreSQL server (see the [module documentation](self)).
pub struct PgStore {
    client: Client,
    /// Where the server is, to connect again after the connection broke (never shown: it may
    /// hold a password).
    address: String,
    /// The authenticated database user: the reader of every decision this store records.
    user: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the address: it may hold a password.
        f.debug_struct("PgStore").field("user", &self.user).finish()
    }
}

impl PgStore {
    /// Connects to the server at `address` (a libpq-style URL or key=value string) and brings
    /// the store's schema up to date (the owner's first connection creates it).
    ///
    /// The connection is encrypted as the address's `sslmode` says (TLS when the server offers
    /// it by default; `verify-full` with `sslrootcert` checks the server's certificate: see
    /// [`ServerAddress`](super::ServerAddress)).
    pub fn open(address: &str) -> Result<Self, AuditError> {
        let (mut client, user) = connect(address)?;
        migrate(&mut client)?;
        Ok(Self {
            client,
            address: address.to_owned(),
            user,
        })
    }

    /// Connects again when the connection broke (the server restarted, the network dropped, an
    /// administrator ended the session). Checked before each append, where connecting again is
    /// always safe: nothing of that append has reached the server yet.
    fn ensure_connected(&mut self) -> Result<(), AuditError> {
        if self.client.is_valid(Duration::from_secs(5)).is_ok() {
            return Ok(());
        }
        tracing::info!(target: "cxr_triage::audit", "connecting to the decision store's server again");
        let (client, user) = connect(&self.address)?;
        if user != self.user {
            return Err(AuditError::Server(format!(
                "the server now signs this window in as {user}, not {}: open the window again",
                self.user
            )));
        }
        self.client = client;
        Ok(())
    }

    /// Whether the connection to the server is encrypted (TLS).
    pub fn encrypted(&mut self) -> Result<bool, AuditError> {
        Ok(self
            .client
            .query_opt(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?
            .is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// The authenticated database user, who is recorded as the reader of every decision.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Appends one decision, recorded as made by [`user`](Self::user) whatever `d.reader`
    /// says, and returns it once the server has committed it. The rules are those of
    /// [`DecisionStore::record`](super::DecisionStore::record).
    pub fn record(&mut self, d: &NewDecision) -> Result<DecisionEvent, AuditError> {
        Ok(self.record_all(std::slice::from_ref(d))?.remove(0))
    }

    /// Records several decisions, in order, in one transaction: all of them or none.
    pub fn record_all(
        &mut self,
        decisions: &[NewDecision],
    ) -> Result<Vec<DecisionEvent>, AuditError> {
        self.append_all(decisions, None)
    }

    /// Records a decision that a window names `request_id` (unique to the window and the
    /// decision: at least 16 characters), once: when a decision of that name by this user is
    /// already in the log, returns its event and records nothing. A window that lost its
    /// connection while recording, and so cannot tell whether the server committed, sends the
    /// decision again under the same name.
    pub fn record_once(
        &mut self,
        request_id: &str,
        d: &NewDecision,
    ) -> Result<DecisionEvent, AuditError> {
        Ok(self
            .append_all(std::slice::from_ref(d), Some(request_id))?
            .remove(0))
    }

    /// Appends `decisions` under the append lock, in one transaction; with `request_id` (one
    /// decision), returns the event already recorded under that name instead, if any.
    fn append_all(
        &mut self,
        decisions: &[NewDecision],
        request_id: Option<&str>,
    ) -> Result<Vec<DecisionEvent>, AuditError> {
        let decisions: Vec<NewDecision> = decisions
            .iter()
            .map(|d| NewDecision {
                reader: self.user.clone(),
                ..d.clone()
            })
            .collect();
        for d in &decisions {
            validate_decision(d)?;
        }
        if decisions.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_connected()?;
        let mut tx = self.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])?;
        if let Some(request_id) = request_id {
            let earlier = tx.query_opt(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM decisions WHERE id =
                         (SELECT event_id FROM decision_requests
                          WHERE request_id = $1 AND reader = session_user)"
                ),
                &[&request_id],
            )?;
            if let Some(row) = earlier {
                let event = event_from_pg(&row)?;
                tx.commit()?;
                return Ok(vec![event]);
            }
        }
        let mut events = Vec::with_capacity(decisions.len());
        for d in &decisions {
            events.push(append(&mut tx, d)?);
        }
        if let (Some(request_id), Some(event)) = (request_id, events.first()) {
            tx.execute(
                "INSERT INTO decision_requests (request_id, event_id) VALUES ($1, $2)",
                &[&request_id, &event.id],
            )?;
        }
        tx.commit()?;
        Ok(events)
    }

    /// What the store knows of one study, if anything.
    pub fn study(&mut self, sha256: &str) -> Result<Option<StudyRecord>, AuditError> {
        self.client
            .query_opt(
                &format!("SELECT {STUDY_COLUMNS} FROM studies WHERE sha256 = $1"),
                &[&sha256],
            )?
            .map(|r| study_from_pg(&r))
            .transpose()
    }

    /// Records (or replaces) the score each study got from a model, in one transaction, as
    /// [`DecisionStore::record_scores`](super::DecisionStore::record_scores) does: a cache, not
    /// part of the audit trail; the studies must be known ([`AuditError::UnknownStudy`]).
    pub fn record_scores(&mut self, scores: &[ScoreRecord]) -> Result<(), AuditError> {
        for s in scores {
            s.validate()?;
        }
        let now = now_rfc3339();
        let mut tx = self.client.transaction()?;
        let known = tx.prepare("SELECT EXISTS (SELECT 1 FROM studies WHERE sha256 = $1)")?;
        let stmt = tx.prepare(
            "INSERT INTO scores (study_sha256, weights_sha256, model_id, score, threshold, scored_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (study_sha256, weights_sha256) DO UPDATE SET
                 model_id = excluded.model_id, score = excluded.score,
                 threshold = excluded.threshold, scored_at = excluded.scored_at",
        )?;
        for s in scores {
            if !tx.query_one(&known, &[&s.study_sha256])?.get::<_, bool>(0) {
                return Err(AuditError::UnknownStudy);
            }
            tx.execute(
                &stmt,
                &[
                    &s.study_sha256,
                    &s.weights_sha256,
                    &s.model_id,
                    &f64::from(s.score),
                    &f64::from(s.threshold),
                    &now,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Each study's most recent score (any model), by hash.
    pub fn latest_scores(&mut self) -> Result<HashMap<String, ScoreRecord>, AuditError> {
        let rows = self.client.query(
            "SELECT study_sha256, model_id, weights_sha256, score, threshold FROM scores
             ORDER BY scored_at, study_sha256, weights_sha256",
            &[],
        )?;
        let mut map = HashMap::new();
        for r in &rows {
            let score = ScoreRecord {
                study_sha256: r.try_get(0)?,
                model_id: r.try_get(1)?,
                weights_sha256: r.try_get(2)?,
                score: r.try_get::<_, f64>(3)? as f32,
                threshold: r.try_get::<_, f64>(4)? as f32,
            };
            map.insert(score.study_sha256.clone(), score);
        }
        Ok(map)
    }

    /// Writes (or refreshes) what the store knows of each study, in one transaction.
    pub fn upsert_studies(&mut self, studies: &[StudyRecord]) -> Result<(), AuditError> {
        for s in studies {
            validate_study(s)?;
        }
        let now = now_rfc3339();
        let mut tx = self.client.transaction()?;
        let stmt = tx.prepare(
            "INSERT INTO studies (sha256, last_path, patient_id, study_uid, metadata_json,
                                  first_seen_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (sha256) DO UPDATE SET
                 last_path = excluded.last_path,
                 patient_id = excluded.patient_id,
                 study_uid = excluded.study_uid,
                 metadata_json = excluded.metadata_json,
                 last_seen_at = excluded.last_seen_at",
        )?;
        for s in studies {
            let path = s.path.to_string_lossy();
            tx.execute(
                &stmt,
                &[
                    &s.sha256,
                    &path.as_ref(),
                    &s.patient_id,
                    &s.study_uid,
                    &s.metadata_json,
                    &now,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every study the store knows of, by hash.
    pub fn studies(&mut self) -> Result<Vec<StudyRecord>, AuditError> {
        let rows = self.client.query(
            &format!("SELECT {STUDY_COLUMNS} FROM studies ORDER BY sha256"),
            &[],
        )?;
        rows.iter().map(study_from_pg).collect()
    }

    /// The study's current state, or `None` if no decision was ever recorded for it.
    pub fn current(&mut self, sha256: &str) -> Result<Option<CurrentState>, AuditError> {
        Ok(self.current_many(&[sha256])?.remove(sha256))
    }

    /// The current state of each study in `sha256s` that has at least one event, by hash (two
    /// queries in one snapshot, whatever the number of studies).
    pub fn current_many(
        &mut self,
        sha256s: &[&str],
    ) -> Result<HashMap<String, CurrentState>, AuditError> {
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let mut latest = |extra: &str| -> Result<HashMap<String, DecisionEvent>, AuditError> {
            let rows = tx.query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM decisions WHERE id IN
                         (SELECT max(id) FROM decisions
                          WHERE {extra} study_sha256 = ANY($1) GROUP BY study_sha256)"
                ),
                &[&sha256s],
            )?;
            rows.iter()
                .map(|r| event_from_pg(r).map(|e| (e.study_sha256.clone(), e)))
                .collect()
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

    /// Every event of the study, oldest first.
    pub fn history(&mut self, sha256: &str) -> Result<Vec<DecisionEvent>, AuditError> {
        let rows = self.client.query(
            &format!("SELECT {EVENT_COLUMNS} FROM decisions WHERE study_sha256 = $1 ORDER BY id"),
            &[&sha256],
        )?;
        rows.iter().map(event_from_pg).collect()
    }

    /// The decision events after `id`, oldest first.
    pub fn events_after(&mut self, id: i64) -> Result<Vec<DecisionEvent>, AuditError> {
        let rows = self.client.query(
            &format!("SELECT {EVENT_COLUMNS} FROM decisions WHERE id > $1 ORDER BY id"),
            &[&id],
        )?;
        rows.iter().map(event_from_pg).collect()
    }

    /// The id of the newest event (0 for an empty log).
    pub fn last_event_id(&mut self) -> Result<i64, AuditError> {
        Ok(self
            .client
            .query_one("SELECT coalesce(max(id), 0)::bigint FROM decisions", &[])?
            .get(0))
    }

    /// The number of events in the log.
    pub fn event_count(&mut self) -> Result<u64, AuditError> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM decisions", &[])?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Checks the whole log as [`DecisionStore::verify`](super::DecisionStore::verify) does:
    /// ids without gaps, each link, each event's hash, no events cut off the end
    /// (`decisions_issued`), and the append-only triggers in place, enabled and unchanged.
    pub fn verify(&mut self) -> Result<VerifyReport, AuditError> {
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let guard = guard_intact(&mut tx)?;
        let total: i64 = tx.query_one("SELECT count(*) FROM decisions", &[])?.get(0);
        let issued: i64 = tx
            .query_one("SELECT issued FROM decisions_issued", &[])?
            .get(0);
        let mut walk = ChainWalk::default();
        let portal = tx.bind(
            &format!("SELECT {EVENT_COLUMNS} FROM decisions ORDER BY id"),
            &[],
        )?;
        'rows: loop {
            let rows = tx.query_portal(&portal, 1000)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                if !walk.next(raw_event(row)) {
                    break 'rows;
                }
            }
        }
        Ok(walk.finish(total, Some(issued), guard))
    }

    /// Appends an event carried over verbatim from another store (`store copy`): it must be
    /// the next event of this log, linked to its last event, with its hash intact. Only the
    /// store's owner may write events naming other readers.
    pub fn append_copied(&mut self, events: &[DecisionEvent]) -> Result<(), AuditError> {
        let mut tx = self.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])?;
        for e in events {
            let last = last_event(&mut tx)?;
            check_copied(last.as_ref().map(|(id, h)| (*id, h.as_str())), e)?;
            insert(&mut tx, e)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Claims `sha256` for this user's window `holder` until `now + lease`, and lets go of
    /// every other study that window held; returns the other reader when another window holds
    /// an unexpired claim (see [`DecisionStore::claim`](super::DecisionStore::claim)).
    pub fn claim(
        &mut self,
        sha256: &str,
        holder: &str,
        now: SystemTime,
        lease: Duration,
    ) -> Result<Option<String>, AuditError> {
        let mut tx = self.client.transaction()?;
        tx.execute(
            "DELETE FROM claims WHERE holder = $1 AND study_sha256 <> $2",
            &[&holder, &sha256],
        )?;
        let other: Option<String> = tx
            .query_opt(
                "SELECT reader FROM claims WHERE study_sha256 = $1 AND holder <> $2 \
                 AND expires_at_ms > $3 FOR UPDATE",
                &[&sha256, &holder, &millis(now)],
            )?
            .map(|r| r.get(0));
        if other.is_none() {
            tx.execute(
                "INSERT INTO claims (study_sha256, reader, holder, expires_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (study_sha256) DO UPDATE SET \
                 reader = excluded.reader, holder = excluded.holder, \
                 expires_at_ms = excluded.expires_at_ms",
                &[&sha256, &self.user, &holder, &millis(now + lease)],
            )?;
        }
        tx.commit()?;
        Ok(other)
    }

    /// Lets go of every study the window `holder` has claimed.
    pub fn release_claims(&mut self, holder: &str) -> Result<(), AuditError> {
        self.client
            .execute("DELETE FROM claims WHERE holder = $1", &[&holder])?;
        Ok(())
    }

    /// The claims that have not expired at `now`.
    pub fn active_claims(&mut self, now: SystemTime) -> Result<Vec<Claim>, AuditError> {
        let rows = self.client.query(
            "SELECT study_sha256, reader, holder FROM claims WHERE expires_at_ms > $1 \
             ORDER BY study_sha256",
            &[&millis(now)],
        )?;
        Ok(rows
            .iter()
            .map(|r| Claim {
                study_sha256: r.get(0),
                reader: r.get(1),
                holder: r.get(2),
            })
            .collect())
    }

    /// Starts listening for appends by any window ([`NOTIFY_CHANNEL`]).
    pub fn listen(&mut self) -> Result<(), AuditError> {
        self.client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))?;
        Ok(())
    }

    /// Waits up to `timeout` for an append after [`listen`](Self::listen); returns the new
    /// event's id, or `None` when none came in time.
    pub fn wait_for_decision(&mut self, timeout: Duration) -> Result<Option<i64>, AuditError> {
        let mut notifications = self.client.notifications();
        let mut waiting = notifications.timeout_iter(timeout);
        loop {
            match postgres::fallible_iterator::FallibleIterator::next(&mut waiting)? {
                None => return Ok(None),
                Some(n) if n.channel() == NOTIFY_CHANNEL => {
                    return Ok(n.payload().parse().ok());
                }
                Some(_) => {}
            }
        }
    }
}

/// Milliseconds since the Unix epoch of `t`.
fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Brings the schema up to date, under an advisory lock so that two first windows do not both
/// create it.
fn migrate(client: &mut Client) -> Result<(), AuditError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    let has_meta: bool = tx
        .query_one("SELECT to_regclass('cxr_triage_meta') IS NOT NULL", &[])?
        .get(0);
    let version = if has_meta {
        let rows = tx.query(
            "SELECT key, value FROM cxr_triage_meta \
             WHERE key IN ('application', 'schema_version')",
            &[],
        )?;
        let value = |key: &str| {
            rows.iter()
                .find(|r| r.get::<_, &str>(0) == key)
                .map(|r| r.get::<_, String>(1))
        };
        if value("application").as_deref() != Some("cxr-triage") {
            return Err(AuditError::Server(
                "this database holds another program's cxr_triage_meta table".to_owned(),
            ));
        }
        value("schema_version")
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| AuditError::Server("the store's schema version is unreadable".into()))?
    } else {
        let has_decisions: bool = tx
            .query_one("SELECT to_regclass('decisions') IS NOT NULL", &[])?
            .get(0);
        if has_decisions {
            return Err(AuditError::Server(
                "this database has a decisions table that cxr-triage did not make".to_owned(),
            ));
        }
        0
    };
    if version > PG_SCHEMA_VERSION {
        return Err(AuditError::Server(format!(
            "the store was set up by a newer cxr-triage (schema {version}; this version knows \
             up to {PG_SCHEMA_VERSION}): update cxr-triage"
        )));
    }
    if version == PG_SCHEMA_VERSION {
        return Ok(());
    }
    for migration in MIGRATIONS
        .iter()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        if let Err(e) = tx.batch_execute(migration) {
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                return Err(AuditError::ServerNotSetUp);
            }
            return Err(e.into());
        }
    }
    tx.execute(
        "UPDATE cxr_triage_meta SET value = $1 WHERE key = 'schema_version'",
        &[&PG_SCHEMA_VERSION.to_string()],
    )?;
    tx.commit()?;
    Ok(())
}

/// Whether the append-only triggers are on `decisions`, enabled, and call the refusing function
/// unchanged.
fn guard_intact(tx: &mut impl GenericClient) -> Result<bool, AuditError> {
    let rows = tx.query(
        "SELECT t.tgname::text, t.tgenabled::text, p.prosrc
         FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE t.tgrelid = 'decisions'::regclass AND NOT t.tgisinternal",
        &[],
    )?;
    let intact = |name: &str| {
        rows.iter().any(|r| {
            r.get::<_, &str>(0) == name
                && r.get::<_, &str>(1) == "O"
                && r.get::<_, &str>(2) == REFUSE_CHANGE_BODY
        })
    };
    Ok(intact("decisions_no_update")
        && intact("decisions_no_delete")
        && intact("decisions_no_truncate"))
}

/// The log's last event: its id and hash.
fn last_event(tx: &mut impl GenericClient) -> Result<Option<(i64, String)>, AuditError> {
    Ok(tx
        .query_opt(
            "SELECT id, row_hash FROM decisions ORDER BY id DESC LIMIT 1",
            &[],
        )?
        .map(|r| (r.get(0), r.get(1))))
}

/// Appends one validated decision; the caller holds the append lock.
fn append(tx: &mut impl GenericClient, d: &NewDecision) -> Result<DecisionEvent, AuditError> {
    let known: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM studies WHERE sha256 = $1)",
            &[&d.study_sha256],
        )?
        .get(0);
    if !known {
        return Err(AuditError::UnknownStudy);
    }
    let last = last_event(tx)?;
    let history = tx
        .query(
            "SELECT action, prev_label, new_label FROM decisions WHERE study_sha256 = $1 \
             ORDER BY id",
            &[&d.study_sha256],
        )?
        .iter()
        .map(|r| {
            Ok(Step {
                action: parse(r, 0)?,
                prev_label: parse_opt(r, 1)?,
                new_label: parse_opt(r, 2)?,
            })
        })
        .collect::<Result<Vec<_>, AuditError>>()?;
    let event = next_event(
        last.as_ref().map(|(id, h)| (*id, h.as_str())),
        &history,
        d,
        &d.reader,
    )?;
    insert(tx, &event)?;
    Ok(event)
}

/// Inserts an event as it is.
fn insert(tx: &mut impl GenericClient, e: &DecisionEvent) -> Result<(), AuditError> {
    let path = e.study_path.to_string_lossy();
    let label = |l: Option<Label>| l.map(Label::as_str);
    let viewed_ms = e.viewed_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    tx.execute(
        "INSERT INTO decisions (id, decided_at, reader, app_version, study_sha256, study_path,
             model_id, weights_sha256, score, threshold, ai_label, prev_label, new_label, action,
             reason, prev_hash, row_hash, format_version, viewed_ms, ood_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20)",
        &[
            &e.id,
            &e.decided_at,
            &e.reader,
            &e.app_version,
            &e.study_sha256,
            &path.as_ref(),
            &e.model_id,
            &e.weights_sha256,
            &e.score.map(f64::from),
            &e.threshold.map(f64::from),
            &label(e.ai_label),
            &label(e.prev_label),
            &label(e.new_label),
            &e.action.as_str(),
            &e.reason,
            &e.prev_hash,
            &e.row_hash,
            &e.format_version,
            &viewed_ms,
            &e.ood_reason,
        ],
    )?;
    Ok(())
}

/// Reads a text column into a type that parses it (an action, a label).
fn parse<T: FromStr>(r: &Row, i: usize) -> Result<T, AuditError> {
    let text: String = r.try_get(i)?;
    text.parse()
        .map_err(|_| AuditError::UnreadableValue(format!("{text:?} in column {i}")))
}

/// [`parse`] for a column that may be NULL.
fn parse_opt<T: FromStr>(r: &Row, i: usize) -> Result<Option<T>, AuditError> {
    let text: Option<String> = r.try_get(i)?;
    text.map(|t| {
        t.parse()
            .map_err(|_| AuditError::UnreadableValue(format!("{t:?} in column {i}")))
    })
    .transpose()
}

/// Connects to the server at `address`; returns the connection and the authenticated user.
fn connect(address: &str) -> Result<(Client, String), AuditError> {
    let mut client = ServerAddress::parse(address)?.connect()?;
    let user: String = client.query_one("SELECT session_user::text", &[])?.get(0);
    Ok((client, user))
}

/// Reads a study from the columns of [`STUDY_COLUMNS`].
fn study_from_pg(r: &Row) -> Result<StudyRecord, AuditError> {
    Ok(StudyRecord {
        sha256: r.try_get(0)?,
        path: PathBuf::from(r.try_get::<_, String>(1)?),
        patient_id: r.try_get(2)?,
        study_uid: r.try_get(3)?,
        metadata_json: r.try_get(4)?,
    })
}

/// Reads an event from the columns of [`EVENT_COLUMNS`].
fn event_from_pg(r: &Row) -> Result<DecisionEvent, AuditError> {
    Ok(DecisionEvent {
        id: r.try_get(0)?,
        decided_at: r.try_get(1)?,
        reader: r.try_get(2)?,
        app_version: r.try_get(3)?,
        study_sha256: r.try_get(4)?,
        study_path: PathBuf::from(r.try_get::<_, String>(5)?),
        model_id: r.try_get(6)?,
        weights_sha256: r.try_get(7)?,
        score: r.try_get::<_, Option<f64>>(8)?.map(|v| v as f32),
        threshold: r.try_get::<_, Option<f64>>(9)?.map(|v| v as f32),
        ai_label: parse_opt(r, 10)?,
        prev_label: parse_opt(r, 11)?,
        new_label: parse_opt(r, 12)?,
        action: parse::<Action>(r, 13)?,
        reason: r.try_get(14)?,
        prev_hash: r.try_get(15)?,
        row_hash: r.try_get(16)?,
        format_version: r.try_get(17)?,
        viewed_ms: r
            .try_get::<_, Option<i64>>(18)?
            .map(|v| u64::try_from(v).unwrap_or(0)),
        ood_reason: r.try_get(19)?,
    })
}

/// Reads an event without interpretation, for the chain walk; on a value of the wrong type,
/// its id (when readable) and the column.
fn raw_event(r: &Row) -> Result<RawEvent, (Option<i64>, &'static str)> {
    let id = r.try_get::<_, i64>(0).ok();
    let fail = |i: usize| (id, COLUMNS[i]);
    let text = |i: usize| r.try_get::<_, String>(i).map_err(|_| fail(i));
    let opt_text = |i: usize| r.try_get::<_, Option<String>>(i).map_err(|_| fail(i));
    let opt_real = |i: usize| r.try_get::<_, Option<f64>>(i).map_err(|_| fail(i));
    Ok(RawEvent {
        id: id.ok_or((None, COLUMNS[0]))?,
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
        format_version: r.try_get(17).map_err(|_| fail(17))?,
        viewed_ms: r.try_get(18).map_err(|_| fail(18))?,
        ood_reason: opt_text(19)?,
    })
}
