//! One interface over the two decision stores ([`DecisionLog`]): SQLite for one machine
//! ([`DecisionStore`]), PostgreSQL for a department ([`PgStore`]), chosen by the store's
//! address ([`open_store`]); and moving a log from one to the other ([`copy_store`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::pg::{PgStore, is_postgres_address};
use super::{
    AuditError, BlindFirstSummary, Claim, CurrentState, DecisionEvent, DecisionStore, NewDecision,
    QaReport, ScoreRecord, StudyRecord, VerifyReport,
};

/// What both backends of the decision store do, with the same semantics: the same rules for a
/// decision and an undo, the same events, the same hash chain.
pub trait DecisionLog: Send {
    /// "SQLite" or "PostgreSQL".
    fn backend(&self) -> &'static str;
    /// The reader the store records whatever a decision says: the authenticated database user
    /// on PostgreSQL; `None` on SQLite, where the decision's reader name is recorded.
    fn authenticated_reader(&self) -> Option<&str>;
    /// Appends a decision (see [`DecisionStore::record`]).
    fn record(&mut self, d: &NewDecision) -> Result<DecisionEvent, AuditError>;
    /// Appends a decision that the caller names `request_id` (unique to it and the decision),
    /// once: sent again after a broken connection, it returns the event recorded the first time
    /// (see [`PgStore::record_once`]). On SQLite, where a failed commit leaves nothing behind,
    /// this is [`record`](Self::record).
    fn record_once(
        &mut self,
        request_id: &str,
        d: &NewDecision,
    ) -> Result<DecisionEvent, AuditError>;
    /// Appends several decisions in one transaction: all of them, or none.
    fn record_all(&mut self, ds: &[NewDecision]) -> Result<Vec<DecisionEvent>, AuditError>;
    /// What the store knows of one study, if anything.
    fn study(&mut self, sha256: &str) -> Result<Option<StudyRecord>, AuditError>;
    /// Records (or replaces) the scores models gave studies (a cache, not audited).
    fn record_scores(&mut self, scores: &[ScoreRecord]) -> Result<(), AuditError>;
    /// Writes or refreshes what the store knows of each study.
    fn upsert_studies(&mut self, studies: &[StudyRecord]) -> Result<(), AuditError>;
    /// Every study the store knows of.
    fn studies(&mut self) -> Result<Vec<StudyRecord>, AuditError>;
    /// The current state of each listed study that has events.
    fn current_many(
        &mut self,
        sha256s: &[&str],
    ) -> Result<HashMap<String, CurrentState>, AuditError>;
    /// The events after `id`, oldest first (`0`: every event).
    fn events_after(&mut self, id: i64) -> Result<Vec<DecisionEvent>, AuditError>;
    /// Checks the decision log's chain and append-only guard.
    fn verify(&mut self) -> Result<VerifyReport, AuditError>;
    /// Appends events carried over verbatim from another store.
    fn append_copied(&mut self, events: &[DecisionEvent]) -> Result<(), AuditError>;
    /// Claims a study for a window (see [`DecisionStore::claim`]).
    fn claim(
        &mut self,
        sha256: &str,
        reader: &str,
        holder: &str,
        now: SystemTime,
        lease: Duration,
    ) -> Result<Option<String>, AuditError>;
    /// Lets go of a window's claims.
    fn release_claims(&mut self, holder: &str) -> Result<(), AuditError>;
    /// The claims in force at `now`.
    fn active_claims(&mut self, now: SystemTime) -> Result<Vec<Claim>, AuditError>;
    /// What this store keeps besides the decision log and studies, which [`copy_store`] does
    /// not carry over, in words (empty when there is nothing).
    fn not_copied(&mut self) -> Result<Vec<String>, AuditError>;
    /// The id of the newest event (0 for an empty log).
    fn last_event_id(&mut self) -> Result<i64, AuditError>;
    /// Starts listening for appends by any writer; `false` where the store cannot notify (SQLite:
    /// poll [`events_after`](Self::events_after) instead).
    fn listen(&mut self) -> Result<bool, AuditError>;
    /// After [`listen`](Self::listen) returned `true`: waits up to `timeout` for an append and
    /// returns its id (`None`: none in time). Where the store cannot notify, sleeps `timeout`.
    fn wait_for_decision(&mut self, timeout: Duration) -> Result<Option<i64>, AuditError>;
    /// Whether the connection to the store is encrypted: `Some` on a server, `None` for a file.
    fn encrypted(&mut self) -> Result<Option<bool>, AuditError> {
        Ok(None)
    }
    /// The SQLite store, for what only it keeps (the threshold log, the model in force).
    fn as_sqlite(&self) -> Option<&DecisionStore>;

    /// The QA report of the whole log (see [`QaReport`]).
    fn qa_report(&mut self) -> Result<QaReport, AuditError> {
        let events = self.events_after(0)?;
        Ok(QaReport::from_events(
            &events,
            BlindFirstSummary::from_events(&events),
        ))
    }
}

impl DecisionLog for DecisionStore {
    fn backend(&self) -> &'static str {
        "SQLite"
    }
    fn authenticated_reader(&self) -> Option<&str> {
        None
    }
    fn record(&mut self, d: &NewDecision) -> Result<DecisionEvent, AuditError> {
        DecisionStore::record(self, d)
    }
    fn record_once(
        &mut self,
        _request_id: &str,
        d: &NewDecision,
    ) -> Result<DecisionEvent, AuditError> {
        DecisionStore::record(self, d)
    }
    fn record_all(&mut self, ds: &[NewDecision]) -> Result<Vec<DecisionEvent>, AuditError> {
        DecisionStore::record_all(self, ds)
    }
    fn study(&mut self, sha256: &str) -> Result<Option<StudyRecord>, AuditError> {
        DecisionStore::study(self, sha256)
    }
    fn record_scores(&mut self, scores: &[ScoreRecord]) -> Result<(), AuditError> {
        DecisionStore::record_scores(self, scores)
    }
    fn upsert_studies(&mut self, studies: &[StudyRecord]) -> Result<(), AuditError> {
        DecisionStore::upsert_studies(self, studies)
    }
    fn studies(&mut self) -> Result<Vec<StudyRecord>, AuditError> {
        DecisionStore::studies(self)
    }
    fn current_many(
        &mut self,
        sha256s: &[&str],
    ) -> Result<HashMap<String, CurrentState>, AuditError> {
        DecisionStore::current_many(self, sha256s)
    }
    fn events_after(&mut self, id: i64) -> Result<Vec<DecisionEvent>, AuditError> {
        DecisionStore::events_after(self, id)
    }
    fn verify(&mut self) -> Result<VerifyReport, AuditError> {
        DecisionStore::verify(self)
    }
    fn append_copied(&mut self, events: &[DecisionEvent]) -> Result<(), AuditError> {
        DecisionStore::append_copied(self, events)
    }
    fn claim(
        &mut self,
        sha256: &str,
        reader: &str,
        holder: &str,
        now: SystemTime,
        lease: Duration,
    ) -> Result<Option<String>, AuditError> {
        DecisionStore::claim(self, sha256, reader, holder, now, lease)
    }
    fn release_claims(&mut self, holder: &str) -> Result<(), AuditError> {
        DecisionStore::release_claims(self, holder)
    }
    fn active_claims(&mut self, now: SystemTime) -> Result<Vec<Claim>, AuditError> {
        DecisionStore::active_claims(self, now)
    }
    fn last_event_id(&mut self) -> Result<i64, AuditError> {
        DecisionStore::last_event_id(self)
    }
    fn listen(&mut self) -> Result<bool, AuditError> {
        Ok(false)
    }
    fn wait_for_decision(&mut self, timeout: Duration) -> Result<Option<i64>, AuditError> {
        std::thread::sleep(timeout);
        Ok(None)
    }
    fn as_sqlite(&self) -> Option<&DecisionStore> {
        Some(self)
    }
    fn not_copied(&mut self) -> Result<Vec<String>, AuditError> {
        let thresholds = self.threshold_events()?.len();
        Ok(if thresholds > 0 {
            vec![format!(
                "{thresholds} threshold changes and model switches (the threshold log stays in \
                 the SQLite store: set the threshold again with `cxr-triage threshold`)"
            )]
        } else {
            Vec::new()
        })
    }
}

impl DecisionLog for PgStore {
    fn backend(&self) -> &'static str {
        "PostgreSQL"
    }
    fn authenticated_reader(&self) -> Option<&str> {
        Some(self.user())
    }
    fn record(&mut self, d: &NewDecision) -> Result<DecisionEvent, AuditError> {
        PgStore::record(self, d)
    }
    fn record_once(
        &mut self,
        request_id: &str,
        d: &NewDecision,
    ) -> Result<DecisionEvent, AuditError> {
        PgStore::record_once(self, request_id, d)
    }
    fn record_all(&mut self, ds: &[NewDecision]) -> Result<Vec<DecisionEvent>, AuditError> {
        PgStore::record_all(self, ds)
    }
    fn study(&mut self, sha256: &str) -> Result<Option<StudyRecord>, AuditError> {
        PgStore::study(self, sha256)
    }
    fn record_scores(&mut self, scores: &[ScoreRecord]) -> Result<(), AuditError> {
        PgStore::record_scores(self, scores)
    }
    fn upsert_studies(&mut self, studies: &[StudyRecord]) -> Result<(), AuditError> {
        PgStore::upsert_studies(self, studies)
    }
    fn studies(&mut self) -> Result<Vec<StudyRecord>, AuditError> {
        PgStore::studies(self)
    }
    fn current_many(
        &mut self,
        sha256s: &[&str],
    ) -> Result<HashMap<String, CurrentState>, AuditError> {
        PgStore::current_many(self, sha256s)
    }
    fn events_after(&mut self, id: i64) -> Result<Vec<DecisionEvent>, AuditError> {
        PgStore::events_after(self, id)
    }
    fn verify(&mut self) -> Result<VerifyReport, AuditError> {
        PgStore::verify(self)
    }
    fn append_copied(&mut self, events: &[DecisionEvent]) -> Result<(), AuditError> {
        PgStore::append_copied(self, events)
    }
    fn claim(
        &mut self,
        sha256: &str,
        _reader: &str,
        holder: &str,
        now: SystemTime,
        lease: Duration,
    ) -> Result<Option<String>, AuditError> {
        PgStore::claim(self, sha256, holder, now, lease)
    }
    fn release_claims(&mut self, holder: &str) -> Result<(), AuditError> {
        PgStore::release_claims(self, holder)
    }
    fn active_claims(&mut self, now: SystemTime) -> Result<Vec<Claim>, AuditError> {
        PgStore::active_claims(self, now)
    }
    fn not_copied(&mut self) -> Result<Vec<String>, AuditError> {
        Ok(Vec::new())
    }
    fn last_event_id(&mut self) -> Result<i64, AuditError> {
        PgStore::last_event_id(self)
    }
    fn listen(&mut self) -> Result<bool, AuditError> {
        PgStore::listen(self).map(|()| true)
    }
    fn wait_for_decision(&mut self, timeout: Duration) -> Result<Option<i64>, AuditError> {
        PgStore::wait_for_decision(self, timeout)
    }
    fn as_sqlite(&self) -> Option<&DecisionStore> {
        None
    }
    fn encrypted(&mut self) -> Result<Option<bool>, AuditError> {
        PgStore::encrypted(self).map(Some)
    }
}

/// Opens the store at `address`: a PostgreSQL server for `postgres://…` or `postgresql://…`,
/// otherwise a SQLite file (created if missing).
pub fn open_store(address: &str) -> Result<Box<dyn DecisionLog>, AuditError> {
    StoreAddress::from_path(Path::new(address)).open()
}

/// Where a decision store is: a SQLite file, or a PostgreSQL server (`--db postgres://…`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreAddress {
    /// A SQLite file.
    File(PathBuf),
    /// A PostgreSQL server's address (a URL; it may hold a password, so it is never shown).
    Server(String),
}

impl std::fmt::Debug for StoreAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl StoreAddress {
    /// A `--db` value: a server for `postgres://…` or `postgresql://…`, else a file.
    pub fn from_path(path: &Path) -> Self {
        match path.to_str() {
            Some(a) if is_postgres_address(a) => Self::Server(a.to_owned()),
            _ => Self::File(path.to_owned()),
        }
    }

    /// The file, for a SQLite store.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            Self::Server(_) => None,
        }
    }

    /// Where the store is, for the reader: the file, or `database on host` (never the
    /// password).
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Server(url) => match super::ServerAddress::parse(url).and_then(|a| a.config()) {
                Ok(c) => {
                    let host = c
                        .get_hosts()
                        .first()
                        .map(|h| match h {
                            postgres::config::Host::Tcp(name) => name.clone(),
                            postgres::config::Host::Unix(path) => path.display().to_string(),
                        })
                        .unwrap_or_default();
                    format!(
                        "{} on {host} (PostgreSQL)",
                        c.get_dbname().unwrap_or("the default database")
                    )
                }
                Err(_) => "a PostgreSQL server".to_owned(),
            },
        }
    }

    /// Opens the store, creating a SQLite file (or a server store's schema) if needed.
    pub fn open(&self) -> Result<Box<dyn DecisionLog>, AuditError> {
        Ok(match self {
            Self::File(p) => Box::new(DecisionStore::open(p)?),
            Self::Server(url) => Box::new(PgStore::open(url)?),
        })
    }

    /// Opens a store that exists, without creating it (a SQLite file that is not there is
    /// [`AuditError::NoStore`]).
    pub fn open_existing(&self) -> Result<Box<dyn DecisionLog>, AuditError> {
        Ok(match self {
            Self::File(p) => Box::new(DecisionStore::open_existing(p)?),
            Self::Server(url) => Box::new(PgStore::open(url)?),
        })
    }
}

/// What [`copy_store`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Studies written to the destination.
    pub studies: usize,
    /// Decision events carried over.
    pub events: u64,
    /// The head hash of the log, the same in both stores after the copy (`None`: no events).
    pub head_hash: Option<String>,
    /// What the source keeps that was not carried over, in words.
    pub not_copied: Vec<String>,
}

/// Events appended per destination transaction.
const COPY_BATCH: usize = 1000;

/// Moves a decision log from one store to another, verbatim (same ids, times, readers and
/// hashes): the source must verify, the destination must hold no events yet, and the
/// destination's chain is verified on arrival and must end in the source's head hash.
pub fn copy_store(
    from: &mut dyn DecisionLog,
    to: &mut dyn DecisionLog,
) -> Result<CopyReport, AuditError> {
    let source = from.verify()?;
    if !source.is_intact() {
        return Err(AuditError::FailsVerification(match &source.first_broken {
            Some(b) => format!("the source's chain is broken at {b}"),
            None => "the source's append-only guard was removed".to_owned(),
        }));
    }
    let before = to.verify()?;
    if before.total_events > 0 {
        return Err(AuditError::InvalidDecision(format!(
            "the destination already holds {} decision events: copy into a new, empty store",
            before.total_events
        )));
    }
    let studies = from.studies()?;
    to.upsert_studies(&studies)?;
    let events = from.events_after(0)?;
    for chunk in events.chunks(COPY_BATCH) {
        to.append_copied(chunk)?;
    }
    let arrived = to.verify()?;
    if !arrived.is_intact()
        || arrived.head_hash != source.head_hash
        || arrived.total_events != source.total_events
    {
        return Err(AuditError::FailsVerification(format!(
            "the copy does not verify: {} of {} events arrived, head hash {} (source {})",
            arrived.events_checked,
            source.total_events,
            arrived.head_hash.as_deref().unwrap_or("none"),
            source.head_hash.as_deref().unwrap_or("none"),
        )));
    }
    Ok(CopyReport {
        studies: studies.len(),
        events: arrived.total_events,
        head_hash: arrived.head_hash,
        not_copied: from.not_copied()?,
    })
}
