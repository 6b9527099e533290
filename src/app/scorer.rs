//! The "scorer" thread: loads the model once, then for each opened folder lists the studies,
//! scores them in batches, registers them in the decision store and reads their decisions back.
//!
//! It talks to the window through bounded channels and calls `request_repaint` after every
//! message. A job stops between batches when its cancel flag is set (another folder was opened).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use crate::audit::{DecisionLog, DecisionStore, StoreAddress, StudyRecord};
use crate::io::{self, StudyMeta};
use crate::model::Classifier;
use crate::worklist::{
    DatasetLabel, Disposition, Label, LabelFile, LabelSource, ScoreState, StudyId, StudyRow,
    label_from_folder_names,
};

use super::scoring::{self, Scored};

/// Studies per batch: small enough that rows update several times a second.
const BATCH_SIZE: usize = 16;

/// What the scorer is asked to do: one opened folder.
#[derive(Debug)]
pub(crate) struct ScoreJob {
    /// Tells this job's messages apart from those of a folder opened earlier.
    pub generation: u64,
    /// The folder.
    pub root: PathBuf,
    /// The `--labels` CSV file, if any.
    pub labels_csv: Option<PathBuf>,
    /// The decision store to register the studies in (none when there is no usable path).
    pub db_path: Option<PathBuf>,
    /// Set when another folder is opened.
    pub cancel: Arc<AtomicBool>,
}

/// A study's score and its reader's label in force.
#[derive(Debug)]
pub(crate) struct ScoredStudy {
    /// The study.
    pub id: StudyId,
    /// What was read of it.
    pub meta: Option<StudyMeta>,
    /// Its score, or why there is none.
    pub outcome: Result<f32, String>,
    /// Why the model flags the image as unlike its training films, if it does.
    pub not_seen: Option<String>,
    /// The reader's label in force in the decision store.
    pub final_label: Option<Label>,
    /// "Read elsewhere" or "not a chest film", when that is in force in the decision store.
    pub disposition: Option<Disposition>,
    /// SHA-256 of the bytes of a file that could not be read as a study (so that a reader can
    /// still record that it was read elsewhere or is not a chest film).
    pub raw_sha256: Option<String>,
    /// When the file was last written (where a study without a DICOM study date starts waiting).
    pub modified: Option<std::time::SystemTime>,
}

/// What the scorer reports.
#[derive(Debug)]
pub(crate) enum ScorerMsg {
    /// The model is loaded, or why it is not.
    Model(Result<Arc<Classifier>, String>),
    /// The folder's studies, before any is read.
    Listed {
        /// The job.
        generation: u64,
        /// One row per file, in listing order, plus one per entry that could not be looked at.
        rows: Vec<StudyRow>,
        /// Seconds from the start of the job.
        elapsed_secs: f64,
    },
    /// The folder itself cannot be read.
    ListFailed {
        /// The job.
        generation: u64,
        /// Why, in words.
        error: String,
    },
    /// Something the reader should know that does not stop the job.
    Warning {
        /// The job.
        generation: u64,
        /// What, in words.
        message: String,
    },
    /// A threshold set at this site for the model (an audited change in the decision store),
    /// which labels follow instead of the model card's.
    SiteThreshold {
        /// The job.
        generation: u64,
        /// The threshold in force.
        threshold: f32,
        /// Who set it, when, and from what, in words.
        note: String,
    },
    /// Scores of a batch of studies.
    Batch {
        /// The job.
        generation: u64,
        /// The studies.
        studies: Vec<ScoredStudy>,
    },
    /// The job is over.
    Finished {
        /// The job.
        generation: u64,
        /// Seconds from the start of the job.
        elapsed_secs: f64,
        /// Whether it stopped early because another folder was opened.
        cancelled: bool,
    },
}

/// The window's end of the scorer.
pub(crate) struct ScorerHandle {
    jobs: SyncSender<ScoreJob>,
    /// Messages from the scorer.
    pub messages: Receiver<ScorerMsg>,
}

impl ScorerHandle {
    /// Starts the scorer thread, which first loads the model: the one in force at the site of
    /// `site_db` (its latest audited switch) when given and the site ever switched, else the one
    /// at `weights`.
    pub fn spawn(
        ctx: egui::Context,
        weights: PathBuf,
        site_db: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let (job_tx, job_rx) = sync_channel::<ScoreJob>(4);
        let (msg_tx, msg_rx) = sync_channel::<ScorerMsg>(64);
        std::thread::Builder::new()
            .name("scorer".to_owned())
            .spawn(move || run(&ctx, &weights, site_db.as_deref(), &job_rx, &msg_tx))?;
        Ok(Self {
            jobs: job_tx,
            messages: msg_rx,
        })
    }

    /// Queues a job. Fails only when the thread is gone or already holds four jobs.
    pub fn submit(&self, job: ScoreJob) -> Result<(), String> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => "the scorer is busy; try again in a moment".to_owned(),
            TrySendError::Disconnected(_) => "the scorer has stopped".to_owned(),
        })
    }
}

/// Sends a message and wakes the window; `false` when the window is gone.
fn send(ctx: &egui::Context, tx: &SyncSender<ScorerMsg>, msg: ScorerMsg) -> bool {
    let ok = tx.send(msg).is_ok();
    ctx.request_repaint();
    ok
}

/// Sends a warning about the folder of `generation`; false when the window is gone.
fn warn(ctx: &egui::Context, tx: &SyncSender<ScorerMsg>, generation: u64, message: String) -> bool {
    send(
        ctx,
        tx,
        ScorerMsg::Warning {
            generation,
            message,
        },
    )
}

/// The model to score with: the one in force at the site when it switched (never another in its
/// place: a model in force that cannot be loaded is the error shown), else the one at `weights`.
fn load_model(weights: &Path, site_db: Option<&Path>) -> Result<Arc<Classifier>, String> {
    // A missing or empty store has no switch; it is read without being created or written.
    if let Some(store) = site_db
        .filter(|p| p.is_file())
        .and_then(|p| DecisionStore::open_for_check(p).ok())
    {
        match crate::model::local::load_model_in_force(&store) {
            Ok(Some((_, classifier))) => return Ok(Arc::new(classifier)),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Classifier::load(weights)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

fn run(
    ctx: &egui::Context,
    weights: &Path,
    site_db: Option<&Path>,
    jobs: &Receiver<ScoreJob>,
    tx: &SyncSender<ScorerMsg>,
) {
    let model = load_model(weights, site_db);
    if !send(ctx, tx, ScorerMsg::Model(model.clone())) {
        return;
    }
    while let Ok(job) = jobs.recv() {
        if job.cancel.load(Ordering::Relaxed) {
            continue;
        }
        let classifier = model.as_ref().ok().map(Arc::as_ref);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(ctx, &job, classifier, tx)
        }));
        match outcome {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                // A library failed in a way it should not; say so and keep the window working.
                let generation = job.generation;
                let message =
                    "scoring stopped unexpectedly; the studies scored so far are shown".to_owned();
                let delivered = warn(ctx, tx, generation, message)
                    && send(
                        ctx,
                        tx,
                        ScorerMsg::Finished {
                            generation,
                            elapsed_secs: 0.0,
                            cancelled: true,
                        },
                    );
                if !delivered {
                    return;
                }
            }
        }
    }
}

/// Runs one job; `false` when the window is gone.
fn run_job(
    ctx: &egui::Context,
    job: &ScoreJob,
    model: Option<&Classifier>,
    tx: &SyncSender<ScorerMsg>,
) -> bool {
    let started = Instant::now();
    let generation = job.generation;
    let discovery = match io::discover(&job.root) {
        Ok(d) => d,
        Err(e) => {
            return send(
                ctx,
                tx,
                ScorerMsg::ListFailed {
                    generation,
                    error: format!("the folder cannot be opened: {e}"),
                },
            );
        }
    };
    let label_file = match job.labels_csv.as_deref().map(LabelFile::read) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            let message = format!("{e}; labels come from folder names only");
            if !warn(ctx, tx, generation, message) {
                return false;
            }
            None
        }
    };

    let mut rows: Vec<StudyRow> = discovery
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut row = StudyRow::new(
                StudyId(i),
                f.path.clone(),
                f.rel_path.to_string_lossy().into_owned(),
            );
            let from_csv = label_file
                .as_ref()
                .and_then(|l| l.label_for(&f.path, &f.rel_path))
                .map(|label| DatasetLabel {
                    label,
                    source: LabelSource::CsvFile,
                });
            let from_folder = label_from_folder_names(&f.rel_path).map(|label| DatasetLabel {
                label,
                source: LabelSource::FolderName,
            });
            row.dataset_label = from_csv.or(from_folder);
            row
        })
        .collect();
    let n_files = rows.len();
    for (rel, problem) in &discovery.problems {
        let mut row = StudyRow::new(
            StudyId(rows.len()),
            job.root.join(rel),
            rel.to_string_lossy().into_owned(),
        );
        row.score = ScoreState::Failed(problem.to_string());
        rows.push(row);
    }
    if let Some(labels) = &label_file {
        let matched = rows
            .iter()
            .filter(|r| r.dataset_label.map(|l| l.source) == Some(LabelSource::CsvFile))
            .count();
        if matched < labels.len() {
            let message = format!(
                "{} of the {} rows of the label file name no study in this folder",
                labels.len() - matched,
                labels.len()
            );
            if !warn(ctx, tx, generation, message) {
                return false;
            }
        }
    }
    let paths: Vec<PathBuf> = discovery.files.into_iter().map(|f| f.path).collect();
    let listed = ScorerMsg::Listed {
        generation,
        rows,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    if !send(ctx, tx, listed) {
        return false;
    }
    debug_assert_eq!(paths.len(), n_files);

    let mut store = match job
        .db_path
        .as_deref()
        .map(|p| StoreAddress::from_path(p).open())
    {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            let message = format!("decisions cannot be saved or restored: {e}");
            if !warn(ctx, tx, generation, message) {
                return false;
            }
            None
        }
    };
    // A threshold chosen at this site (`cxr-triage threshold`, audited) replaces the card's.
    // (Kept in a SQLite store only: on a PostgreSQL store the model card's threshold holds.)
    if let (Some(store), Some(model)) = (store.as_ref().and_then(|s| s.as_sqlite()), model) {
        match crate::model::local::threshold_in_force(store, model) {
            Ok((threshold, Some(note))) => {
                let msg = ScorerMsg::SiteThreshold {
                    generation,
                    threshold,
                    note,
                };
                if !send(ctx, tx, msg) {
                    return false;
                }
            }
            Ok((_, None)) => {}
            Err(e) => {
                let message = format!(
                    "the threshold in force at this site cannot be read ({e}); labels follow the model card's"
                );
                if !warn(ctx, tx, generation, message) {
                    return false;
                }
            }
        }
    }
    let mut store_failed = false;
    let mut window_gone = false;
    let mut on_batch = |batch: Vec<Scored>| {
        if window_gone {
            return;
        }
        let mut warning = None;
        // Files that could not be read as studies are still identified by their bytes.
        let raw: Vec<(usize, String)> = batch
            .iter()
            .filter(|s| s.meta.is_none())
            .filter_map(|s| {
                let bytes = io::read_study_file(paths.get(s.index)?).ok()?;
                Some((s.index, io::sha256_hex(&bytes)))
            })
            .collect();
        let labels = match store.as_deref_mut() {
            Some(store) if !store_failed => match register(store, &paths, &batch, &raw) {
                Ok(labels) => labels,
                Err(e) => {
                    store_failed = true;
                    warning = Some(format!(
                        "the decision store cannot be used: {e}; earlier decisions are not shown"
                    ));
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        if let Some(message) = warning
            && !warn(ctx, tx, generation, message)
        {
            window_gone = true;
            job.cancel.store(true, Ordering::Relaxed);
            return;
        }
        let studies = batch
            .into_iter()
            .map(|s| {
                let (final_label, disposition) = labels
                    .iter()
                    .find(|(i, _, _)| *i == s.index)
                    .map_or((None, None), |(_, l, d)| (*l, *d));
                let raw_sha256 = raw
                    .iter()
                    .find(|(i, _)| *i == s.index)
                    .map(|(_, h)| h.clone());
                let modified = paths
                    .get(s.index)
                    .and_then(|p| std::fs::metadata(p).ok())
                    .and_then(|m| m.modified().ok());
                ScoredStudy {
                    modified,
                    id: StudyId(s.index),
                    meta: s.meta,
                    outcome: s.outcome,
                    not_seen: s.not_seen,
                    final_label,
                    disposition,
                    raw_sha256,
                }
            })
            .collect();
        if !send(
            ctx,
            tx,
            ScorerMsg::Batch {
                generation,
                studies,
            },
        ) {
            window_gone = true;
            job.cancel.store(true, Ordering::Relaxed);
        }
    };
    match model {
        Some(model) => {
            // A first batch of one study per core puts the first score on screen sooner.
            let first = rayon::current_num_threads().clamp(1, BATCH_SIZE);
            scoring::score_paths_first(
                model,
                &paths,
                first,
                BATCH_SIZE,
                &job.cancel,
                &mut on_batch,
            );
        }
        None => scoring::read_paths(
            &paths,
            BATCH_SIZE,
            "not scored: the model could not be loaded",
            &job.cancel,
            &mut on_batch,
        ),
    }
    if window_gone {
        return false;
    }
    send(
        ctx,
        tx,
        ScorerMsg::Finished {
            generation,
            elapsed_secs: started.elapsed().as_secs_f64(),
            cancelled: job.cancel.load(Ordering::Relaxed),
        },
    )
}

/// The reader's label and disposition in force for a study of the batch, by index.
type InForce = (usize, Option<Label>, Option<Disposition>);

/// Registers the batch's studies in the store (so that decisions can be recorded for them):
/// those read, and by the hash of their bytes (`raw`) those that could not be read as studies.
/// Returns the reader's decision in force for each, by index.
fn register(
    store: &mut dyn DecisionLog,
    paths: &[PathBuf],
    batch: &[Scored],
    raw: &[(usize, String)],
) -> Result<Vec<InForce>, crate::audit::AuditError> {
    let mut records: Vec<(usize, StudyRecord)> = batch
        .iter()
        .filter_map(|s| {
            let meta = s.meta.as_ref()?;
            let path = paths.get(s.index)?;
            Some((s.index, StudyRecord::from_meta(path, meta)))
        })
        .collect();
    records.extend(raw.iter().filter_map(|(index, sha)| {
        let path = paths.get(*index)?;
        Some((
            *index,
            StudyRecord {
                sha256: sha.clone(),
                path: path.clone(),
                patient_id: None,
                study_uid: None,
                metadata_json: r#"{"unreadable":true}"#.to_owned(),
            },
        ))
    }));
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let studies: Vec<StudyRecord> = records.iter().map(|(_, r)| r.clone()).collect();
    store.upsert_studies(&studies)?;
    let shas: Vec<&str> = studies.iter().map(|r| r.sha256.as_str()).collect();
    let states = store.current_many(&shas)?;
    Ok(records
        .iter()
        .map(|(index, r)| {
            let state = states.get(&r.sha256);
            (
                *index,
                state.and_then(|c| c.final_label),
                state
                    .and_then(|c| c.disposition)
                    .and_then(super::command::disposition_of),
            )
        })
        .collect())
}
