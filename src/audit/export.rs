//! CSV export of decisions: [`DecisionStore::export_csv`] and [`DecisionStore::export_csv_to_file`].

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Transaction, TransactionBehavior};

use super::event::{CurrentState, DecisionEvent};
use super::site::{ScoreRecord, latest_scores, thresholds_in_force};
use super::store::{EVENT_COLUMNS_SQL, event_from_row, latest_states};
use super::{AuditError, DecisionStore, PgStore};
use crate::worklist::Label;

/// The columns of the per-study export (the default and `--all`), in order.
pub const STUDY_COLUMNS: [&str; 14] = [
    "path",
    "sha256",
    "patient_id",
    "study_uid",
    "score",
    "ai_label",
    "final_label",
    "agreed",
    "reader",
    "decided_at",
    "reason",
    "model_id",
    "threshold",
    "not_seen",
];

/// The columns of the event-log export (`--events`): every column of the log, in order.
pub const EVENT_COLUMNS: [&str; 20] = [
    "id",
    "decided_at",
    "reader",
    "app_version",
    "sha256",
    "path",
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

/// Which rows an export writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportKind {
    /// One row per reviewed study (a final label is in force), with its latest decision.
    #[default]
    Reviewed,
    /// One row per known study, reviewed or not.
    All,
    /// One row per event of the log, oldest first, with every column ([`EVENT_COLUMNS`]).
    Events,
}

/// What to export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Which rows.
    pub kind: ExportKind,
    /// Only studies whose last known path lies under this folder.
    pub folder: Option<PathBuf>,
    /// Export even from a store that fails its audit check, saying so in the file's first line.
    pub force: bool,
}

/// A study as the per-study export needs it.
struct StudyRow {
    sha256: String,
    path: String,
    patient_id: Option<String>,
    study_uid: Option<String>,
}

impl DecisionStore {
    /// Writes the export as CSV (RFC 4180, UTF-8, with a header row) to `w`, and returns the
    /// number of data rows. Rows are sorted by path, then hash (events: by id). All rows come
    /// from one snapshot of the store.
    ///
    /// A store that fails its audit check (see [`DecisionStore::audit_problems`]) is refused
    /// unless `opts.force`; then the file's first line, before the header, says so:
    /// `# cxr-triage: exported with --force from a decision store that FAILS its audit check: …`.
    pub fn export_csv(&self, w: impl Write, opts: &ExportOptions) -> Result<usize, AuditError> {
        let problems = self.audit_problems()?;
        if !problems.is_empty() && !opts.force {
            return Err(AuditError::FailsVerification(problems.join("; ")));
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?;
        let data = if opts.kind == ExportKind::Events {
            let mut stmt = tx.prepare(&format!(
                "SELECT {cols}, s.last_path FROM decisions d LEFT JOIN studies s ON s.sha256 = d.study_sha256 ORDER BY d.id",
                cols = EVENT_COLUMNS_SQL
                    .split(", ")
                    .map(|c| format!("d.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?;
            let events = stmt
                .query_map([], |row| Ok((event_from_row(row)?, row.get(20)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            ExportData::Events(events)
        } else {
            let states = latest_states(&tx, "1")?;
            let site = SiteFigures {
                thresholds: thresholds_in_force(&tx)?,
                scores: latest_scores(&tx)?,
            };
            let mut stmt = tx.prepare(
                "SELECT sha256, last_path, patient_id, study_uid FROM studies ORDER BY last_path, sha256",
            )?;
            let studies = stmt
                .query_map([], |r| {
                    Ok(StudyRow {
                        sha256: r.get(0)?,
                        path: r.get(1)?,
                        patient_id: r.get(2)?,
                        study_uid: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            ExportData::Studies {
                studies,
                states,
                site,
            }
        };
        write_export(w, opts, &problems, &data)
    }

    /// What `audit verify` would find wrong with the store, in words: a broken hash chain, a
    /// removed append-only guard (of the decision or the threshold log), or a log shorter than
    /// (or rewritten since) the anchor beside the store. Empty when it checks out.
    pub fn audit_problems(&self) -> Result<Vec<String>, AuditError> {
        let mut problems = Vec::new();
        let report = self.verify()?;
        if let Some(broken) = &report.first_broken {
            problems.push(format!("the hash chain is broken at {broken}"));
        }
        if !report.append_only_guard_intact {
            problems.push("the decision log's append-only triggers were removed or changed".into());
        }
        let thresholds = self.verify_thresholds()?;
        if !thresholds.is_intact() {
            problems.push("the threshold log does not check out".into());
        }
        let studies = self.verify_studies()?;
        if !studies.log.is_intact() {
            problems.push("the study log does not check out".into());
        }
        if !studies.mismatched.is_empty() {
            problems.push(format!(
                "{} studies in the studies table are not what the study log recorded",
                studies.mismatched.len()
            ));
        }
        let beside = super::anchor_path(self.path());
        if beside.is_file() {
            match super::Anchor::read(&beside) {
                Ok(anchor) => problems.extend(self.check_anchor(&anchor)?),
                Err(e) => problems.push(e.to_string()),
            }
        }
        Ok(problems)
    }

    /// Writes the export to the file `dest`, atomically (see [`crate::output::write_file`]): the
    /// CSV goes to a temporary file in the same folder, is synced to disk, and is then renamed
    /// over `dest`. A failed export leaves neither half a file nor the temporary file behind.
    ///
    /// Refuses, touching nothing, a destination that is this store or one of its files, a study
    /// the store knows, a file under `opts.folder`, or a symbolic link.
    pub fn export_csv_to_file(
        &self,
        dest: &Path,
        opts: &ExportOptions,
    ) -> Result<usize, AuditError> {
        let mut protected = crate::output::Protected::new().store(self.path());
        if let Some(folder) = &opts.folder {
            protected = protected.folder(folder);
        }
        let paths: Vec<std::path::PathBuf> = self
            .conn
            .prepare("SELECT path_bytes, last_path FROM studies")?
            .query_map([], |r| {
                Ok(super::study_log::path_from_stored(r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        for path in &paths {
            protected = protected.input(path);
        }
        export_to_file(dest, &protected, |w| self.export_csv(w, opts))
    }
}

/// Writes an export to `dest` atomically ([`crate::output::write_file`]), keeping the export's
/// own error when it fails.
fn export_to_file(
    dest: &Path,
    protected: &crate::output::Protected,
    export: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<usize, AuditError>,
) -> Result<usize, AuditError> {
    let mut failure = None;
    let written = crate::output::write_file(dest, protected, |w| {
        export(w).map_err(|e| {
            let message = e.to_string();
            failure = Some(e);
            std::io::Error::other(message)
        })
    });
    match (written, failure) {
        (Ok(n), _) => Ok(n),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(AuditError::Output(e)),
    }
}

/// What an export writes, as read from either backend in one snapshot.
enum ExportData {
    /// Every event, oldest first, with its study's last known path.
    Events(Vec<(DecisionEvent, Option<String>)>),
    /// Every known study, by path, with its state and the site's figures.
    Studies {
        studies: Vec<StudyRow>,
        states: HashMap<String, CurrentState>,
        site: SiteFigures,
    },
}

/// Writes an export (see [`DecisionStore::export_csv`]): with `problems`, the first line says
/// the store fails its audit check (the caller refused already unless forced).
fn write_export(
    mut w: impl Write,
    opts: &ExportOptions,
    problems: &[String],
    data: &ExportData,
) -> Result<usize, AuditError> {
    if !problems.is_empty() {
        let line = crate::output::terminal_text(&problems.join("; ")).into_owned();
        writeln!(
            w,
            "# cxr-triage: exported with --force from a decision store that FAILS its audit check: {line}"
        )
        .map_err(csv::Error::from)?;
    }
    let folder = opts.folder.as_deref().map(FolderFilter::new);
    let under = |path: &str| folder.as_ref().is_none_or(|f| f.contains(path));
    let mut out = csv::Writer::from_writer(w);
    let mut n = 0;
    match data {
        ExportData::Events(events) => {
            out.write_record(EVENT_COLUMNS)?;
            for (event, last_path) in events {
                if under(last_path.as_deref().unwrap_or_default()) {
                    out.write_record(safe_cells(event_record(event)))?;
                    n += 1;
                }
            }
        }
        ExportData::Studies {
            studies,
            states,
            site,
        } => {
            out.write_record(STUDY_COLUMNS)?;
            for study in studies {
                let state = states.get(&study.sha256);
                let reviewed = state.is_some_and(CurrentState::is_reviewed);
                if (reviewed || opts.kind == ExportKind::All) && under(&study.path) {
                    out.write_record(safe_cells(study_record(study, state, site)))?;
                    n += 1;
                }
            }
        }
    }
    out.flush().map_err(csv::Error::from)?;
    Ok(n)
}

impl PgStore {
    /// The export of a store on a PostgreSQL server, as [`DecisionStore::export_csv`] writes
    /// it. The AI call shown per study is the one its decision events carry, else its latest
    /// score (the threshold log is kept in SQLite stores only); refuses a store whose decision log
    /// fails its check unless `opts.force`.
    pub fn export_csv(&mut self, w: impl Write, opts: &ExportOptions) -> Result<usize, AuditError> {
        let report = self.verify()?;
        let mut problems = Vec::new();
        if let Some(broken) = &report.first_broken {
            problems.push(format!("the hash chain is broken at {broken}"));
        }
        if !report.append_only_guard_intact {
            problems.push("the decision log's append-only triggers were removed or changed".into());
        }
        if !problems.is_empty() && !opts.force {
            return Err(AuditError::FailsVerification(problems.join("; ")));
        }
        let mut studies: Vec<StudyRow> = self
            .studies()?
            .into_iter()
            .map(|s| StudyRow {
                path: s.path.to_string_lossy().into_owned(),
                sha256: s.sha256,
                patient_id: s.patient_id,
                study_uid: s.study_uid,
            })
            .collect();
        let data = if opts.kind == ExportKind::Events {
            let paths: HashMap<&str, &str> = studies
                .iter()
                .map(|s| (s.sha256.as_str(), s.path.as_str()))
                .collect();
            let events = self
                .events_after(0)?
                .into_iter()
                .map(|e| {
                    let path = paths.get(e.study_sha256.as_str()).map(|p| (*p).to_owned());
                    (e, path)
                })
                .collect();
            ExportData::Events(events)
        } else {
            studies.sort_by(|a, b| (&a.path, &a.sha256).cmp(&(&b.path, &b.sha256)));
            let shas: Vec<&str> = studies.iter().map(|s| s.sha256.as_str()).collect();
            let states = self.current_many(&shas)?;
            ExportData::Studies {
                studies,
                states,
                site: SiteFigures {
                    thresholds: HashMap::new(),
                    scores: self.latest_scores()?,
                },
            }
        };
        write_export(w, opts, &problems, &data)
    }

    /// Writes the export to the file `dest`, atomically, refusing a destination that is a
    /// study the store knows, a file under `opts.folder`, or a symbolic link (as
    /// [`DecisionStore::export_csv_to_file`]).
    pub fn export_csv_to_file(
        &mut self,
        dest: &Path,
        opts: &ExportOptions,
    ) -> Result<usize, AuditError> {
        let mut protected = crate::output::Protected::new();
        if let Some(folder) = &opts.folder {
            protected = protected.folder(folder);
        }
        for study in self.studies()? {
            protected = protected.input(&study.path);
        }
        export_to_file(dest, &protected, |w| self.export_csv(w, opts))
    }
}

/// Whether a stored path lies under a folder, as given or as the file system resolves it.
struct FolderFilter {
    given: PathBuf,
    resolved: Option<PathBuf>,
}

impl FolderFilter {
    fn new(folder: &Path) -> Self {
        Self {
            given: folder.to_owned(),
            resolved: folder.canonicalize().ok(),
        }
    }

    fn contains(&self, path: &str) -> bool {
        let path = Path::new(path);
        path.starts_with(&self.given) || self.resolved.as_ref().is_some_and(|r| path.starts_with(r))
    }
}

fn opt_label(label: Option<Label>) -> String {
    label.map(Label::as_str).unwrap_or_default().to_owned()
}

fn opt_f32(v: Option<f32>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// What the per-study export needs beyond the decision events: the threshold in force per set
/// of weights, and each study's latest recorded score (for studies scored by `score --db` that
/// no decision event carries an AI call for).
struct SiteFigures {
    thresholds: HashMap<String, f32>,
    scores: HashMap<String, ScoreRecord>,
}

/// The AI call a per-study row shows: score, label, model and threshold.
struct RowAi {
    score: Option<f32>,
    label: Label,
    model_id: Option<String>,
    threshold: Option<f32>,
}

/// The AI call on record (from the decision events, else from the scores table), with its label
/// following the threshold in force for its model's weights. Scores never change.
fn row_ai(study: &StudyRow, state: Option<&CurrentState>, site: &SiteFigures) -> Option<RowAi> {
    let in_force = |weights: Option<&str>| weights.and_then(|w| site.thresholds.get(w)).copied();
    if let Some(ai) = state.and_then(|s| s.ai.as_ref()) {
        let threshold = in_force(ai.weights_sha256.as_deref()).or(ai.threshold);
        let label = match (ai.score, in_force(ai.weights_sha256.as_deref())) {
            (Some(score), Some(t)) => Label::from_score(score, t),
            _ => ai.label,
        };
        return Some(RowAi {
            score: ai.score,
            label,
            model_id: ai.model_id.clone(),
            threshold,
        });
    }
    site.scores.get(&study.sha256).map(|s| {
        let threshold = in_force(Some(&s.weights_sha256)).unwrap_or(s.threshold);
        RowAi {
            score: Some(s.score),
            label: Label::from_score(s.score, threshold),
            model_id: Some(s.model_id.clone()),
            threshold: Some(threshold),
        }
    })
}

/// The cells of a row, safe to open in a spreadsheet ([`crate::output::csv_cell`]).
fn safe_cells(cells: Vec<String>) -> impl Iterator<Item = String> {
    cells
        .into_iter()
        .map(|c| crate::output::csv_cell(&c).into_owned())
}

fn study_record(study: &StudyRow, state: Option<&CurrentState>, site: &SiteFigures) -> Vec<String> {
    let last = state.map(|s| &s.last_event);
    let ai = row_ai(study, state, site);
    let final_label = state.and_then(|s| s.final_label);
    vec![
        study.path.clone(),
        study.sha256.clone(),
        study.patient_id.clone().unwrap_or_default(),
        study.study_uid.clone().unwrap_or_default(),
        opt_f32(ai.as_ref().and_then(|a| a.score)),
        opt_label(ai.as_ref().map(|a| a.label)),
        final_words(state),
        match (final_label, ai.as_ref()) {
            (Some(f), Some(a)) if f == a.label => "yes".to_owned(),
            (Some(_), Some(_)) => "no".to_owned(),
            _ => String::new(),
        },
        last.map(|e| e.reader.clone()).unwrap_or_default(),
        last.map(|e| e.decided_at.clone()).unwrap_or_default(),
        last.map(|e| e.reason.clone()).unwrap_or_default(),
        ai.as_ref()
            .and_then(|a| a.model_id.clone())
            .unwrap_or_default(),
        opt_f32(ai.as_ref().and_then(|a| a.threshold)),
        last.and_then(|e| e.ood_reason.clone()).unwrap_or_default(),
    ]
}

fn event_record(e: &DecisionEvent) -> Vec<String> {
    vec![
        e.id.to_string(),
        e.decided_at.clone(),
        e.reader.clone(),
        e.app_version.clone(),
        e.study_sha256.clone(),
        e.study_path.to_string_lossy().into_owned(),
        e.model_id.clone().unwrap_or_default(),
        e.weights_sha256.clone().unwrap_or_default(),
        opt_f32(e.score),
        opt_f32(e.threshold),
        opt_label(e.ai_label),
        opt_label(e.prev_label),
        opt_label(e.new_label),
        e.action.as_str().to_owned(),
        e.reason.clone(),
        e.prev_hash.clone(),
        e.row_hash.clone(),
        e.format_version.to_string(),
        e.viewed_ms.map(|v| v.to_string()).unwrap_or_default(),
        e.ood_reason.clone().unwrap_or_default(),
    ]
}

/// The per-study export's `final_label`: the label in force, or `read_elsewhere` /
/// `not_chest_film` when that is the decision in force, or empty.
fn final_words(state: Option<&CurrentState>) -> String {
    match state {
        Some(CurrentState {
            final_label: Some(l),
            ..
        }) => l.as_str().to_owned(),
        Some(CurrentState {
            disposition: Some(a),
            ..
        }) => a.as_str().to_owned(),
        _ => String::new(),
    }
}
