//! The window's state between frames: the open folder, the texture cache, the panes, pending
//! writes, and the code that folds the background threads' messages into it (scorer, viewer).
//! No drawing here.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::scorer::ScorerMsg;
use super::view::{self, ViewTransform};
use super::viewer_worker::{self, ImageInfo, ImageKey, Textures, ViewerMsg, Want};
use super::{App, Command, IMAGE_CACHE_CAPACITY, Level};
use crate::io::Window;
use crate::model::Classifier;
use crate::worklist::{StudyId, Worklist};

/// The model, as far as the window knows.
pub(super) enum ModelState {
    Loading,
    Ready(Arc<Classifier>),
    Failed(String),
}

/// Scoring progress of the open folder.
#[derive(Clone, Debug, Default)]
pub(super) struct Progress {
    pub(super) done: usize,
    pub(super) first_rows_secs: Option<f64>,
    /// Seconds from opening the folder to the first score on screen.
    pub(super) first_score_secs: Option<f64>,
    pub(super) finished_secs: Option<f64>,
    pub(super) cancelled: bool,
}

/// The open folder.
pub(super) struct Session {
    pub(super) generation: u64,
    pub(super) root: PathBuf,
    pub(super) worklist: Worklist,
    pub(super) listed: bool,
    /// The worklist's order, ranks and counts for the sort and filter in force.
    pub(super) order: crate::worklist::Order,
    pub(super) view_dirty: bool,
    /// Blind-first reading: studies (by SHA-256) whose blind call was sent in this session and
    /// whose final call has not been made yet.
    pub(super) awaiting_final: std::collections::HashSet<String>,
    /// When the waiting-time cap was last checked (see `App::check_waiting_cap`).
    pub(super) waiting_checked: Option<std::time::SystemTime>,
    pub(super) selected: Option<StudyId>,
    pub(super) compare: Option<StudyId>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) started: Instant,
    pub(super) progress: Progress,
    pub(super) uniform_warning: Option<String>,
    pub(super) undo_stack: Vec<StudyId>,
    /// Which optional values some study has, for the worklist's columns.
    pub(super) present: Present,
    /// Where the threshold in force comes from, when it is not the model card's.
    pub(super) site_threshold: Option<String>,
}

/// Which optional values some study of the folder has (their columns are drawn only then), kept
/// up to date as studies are read rather than searched for in every frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Present {
    pub(super) patient_id: bool,
    pub(super) study_uid: bool,
    pub(super) waiting: bool,
    pub(super) age_sex: bool,
    pub(super) study_date: bool,
    pub(super) view: bool,
}

impl Present {
    /// Takes note of what `row` has.
    pub(super) fn note(&mut self, row: &crate::worklist::StudyRow) {
        let f = &row.facts;
        self.patient_id |= row.patient_id.is_some();
        self.study_uid |= row.study_uid.is_some();
        self.waiting |= f.waiting_since.is_some();
        self.age_sex |= f.age.is_some() || f.sex.is_some();
        self.study_date |= f.study_date.is_some();
        self.view |= f.view.is_some();
    }
}

impl Session {
    pub(super) fn key(&self, id: StudyId) -> ImageKey {
        ImageKey {
            generation: self.generation,
            id,
        }
    }

    pub(super) fn is_scoring(&self) -> bool {
        self.progress.finished_secs.is_none()
    }
}

/// A decision sent to the writer thread, waiting for its acknowledgement.
#[derive(Clone, Debug)]
pub(super) struct PendingWrite {
    pub(super) seq: u64,
    pub(super) id: StudyId,
    pub(super) sha: String,
    pub(super) name: String,
    pub(super) kind: WriteKind,
}

/// What a pending write does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WriteKind {
    /// A decision; `last` when no unreviewed study was left in the list after it.
    Decision { last: bool },
    /// An undo; `from_stack` when it takes back a decision of this session.
    Undo { from_stack: bool },
}

/// A study's display textures as the viewer delivered them.
pub(super) enum ImageEntry {
    Ready {
        info: Arc<ImageInfo>,
        window: Option<Window>,
        invert: bool,
        textures: Textures,
    },
    Failed(String),
}

/// A study's heat map.
pub(super) enum HeatEntry {
    Ready(egui::TextureHandle),
    Failed(String),
}

/// Textures of recently shown studies, least recently used first.
#[derive(Default)]
pub(super) struct ImageCache {
    pub(super) images: Vec<(ImageKey, ImageEntry)>,
    pub(super) heat: Vec<(ImageKey, HeatEntry)>,
}

impl ImageCache {
    pub(super) fn image(&self, key: ImageKey) -> Option<&ImageEntry> {
        self.images.iter().find(|(k, _)| *k == key).map(|(_, e)| e)
    }

    pub(super) fn heat(&self, key: ImageKey) -> Option<&HeatEntry> {
        self.heat.iter().find(|(k, _)| *k == key).map(|(_, e)| e)
    }

    /// Marks a study as just used.
    pub(super) fn touch(&mut self, key: ImageKey) {
        if let Some(pos) = self.images.iter().position(|(k, _)| *k == key) {
            let entry = self.images.remove(pos);
            self.images.push(entry);
        }
    }

    /// Keeps at most `IMAGE_CACHE_CAPACITY` studies besides those in `keep`; returns the
    /// studies dropped.
    pub(super) fn evict(&mut self, keep: &[ImageKey]) -> Vec<ImageKey> {
        let mut dropped = Vec::new();
        while self.images.len() > IMAGE_CACHE_CAPACITY {
            let Some(pos) = self.images.iter().position(|(k, _)| !keep.contains(k)) else {
                break;
            };
            dropped.push(self.images.remove(pos).0);
        }
        while self.heat.len() > IMAGE_CACHE_CAPACITY {
            let Some(pos) = self.heat.iter().position(|(k, _)| !keep.contains(k)) else {
                break;
            };
            dropped.push(self.heat.remove(pos).0);
        }
        dropped
    }

    pub(super) fn clear(&mut self) -> Vec<ImageKey> {
        let mut keys: Vec<ImageKey> = self.images.drain(..).map(|(k, _)| k).collect();
        keys.extend(self.heat.drain(..).map(|(k, _)| k));
        keys
    }
}

/// Zoom, pan and window of one pane.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct PaneView {
    pub(super) transform: ViewTransform,
    /// `None`: the study's default window.
    pub(super) window: Option<Window>,
    pub(super) invert: bool,
}

/// What the right pane shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum RightPane {
    /// The same study with its Grad-CAM heat map.
    #[default]
    Explanation,
    /// Another study of the worklist.
    Compare,
}

impl App {
    pub(super) fn classifier(&self) -> Option<&Arc<Classifier>> {
        match &self.model {
            ModelState::Ready(c) => Some(c),
            ModelState::Loading | ModelState::Failed(_) => None,
        }
    }

    /// Drains the scorer's messages into the session.
    pub(super) fn drain_scorer(&mut self) {
        let Some(scorer) = &self.scorer else { return };
        let messages: Vec<ScorerMsg> = scorer.messages.try_iter().collect();
        for msg in messages {
            self.on_scorer_msg(msg);
        }
    }

    pub(super) fn on_scorer_msg(&mut self, msg: ScorerMsg) {
        match msg {
            ScorerMsg::Model(Ok(classifier)) => {
                let threshold = classifier.card().threshold;
                self.model = ModelState::Ready(classifier);
                if let Some(s) = &mut self.session
                    && s.site_threshold.is_none()
                {
                    s.worklist.set_threshold(Some(threshold));
                    s.view_dirty = true;
                }
            }
            ScorerMsg::Model(Err(e)) => {
                self.toasts
                    .add(Level::Error, format!("the model could not be loaded: {e}"));
                self.model = ModelState::Failed(e);
            }
            ScorerMsg::Listed {
                generation,
                rows,
                elapsed_secs,
            } => {
                let threshold = self.classifier().map(|c| c.card().threshold);
                if let Some(s) = self.session_of(generation) {
                    s.worklist = Worklist::new(rows, threshold);
                    s.listed = true;
                    s.view_dirty = true;
                    s.progress.first_rows_secs = Some(s.started.elapsed().as_secs_f64());
                    tracing::info!(
                        target: "cxr_triage::app",
                        "listed {} studies in {:.0} ms",
                        s.worklist.len(),
                        elapsed_secs * 1000.0
                    );
                }
            }
            ScorerMsg::ListFailed { generation, error } => {
                if self.session_of(generation).is_some() {
                    self.session = None;
                    self.toasts.add(Level::Error, error);
                }
            }
            ScorerMsg::Warning {
                generation,
                message,
            } => {
                if self.session_of(generation).is_some() {
                    self.toasts.add(Level::Warning, message);
                }
            }
            ScorerMsg::SiteThreshold {
                generation,
                threshold,
                note,
            } => {
                if let Some(s) = self.session_of(generation) {
                    s.worklist.set_threshold(Some(threshold));
                    s.site_threshold = Some(note);
                    s.view_dirty = true;
                }
            }
            ScorerMsg::Batch {
                generation,
                studies,
            } => {
                let (sort, filter) = (self.prefs.sort, self.prefs.filter);
                // Other readers' claims arrive by hash: a row learns its hash here, so it learns
                // whether someone else has it open here too.
                let claims = std::mem::take(&mut self.claims);
                if let Some(s) = self.session_of(generation) {
                    // The order is kept up to date for these rows alone, unless it is rebuilt
                    // anyway: a full sort per batch grows with the folder.
                    let ids: Vec<StudyId> = studies.iter().map(|st| st.id).collect();
                    let incremental = !s.view_dirty;
                    if incremental {
                        s.order.remove(&s.worklist, &ids);
                    }
                    for study in studies {
                        let Some(row) = s.worklist.row_mut(study.id) else {
                            continue;
                        };
                        if let Some(meta) = study.meta {
                            let dicom = meta.dicom;
                            row.patient_id = dicom.as_ref().and_then(|d| d.patient_id.clone());
                            row.study_uid =
                                dicom.as_ref().and_then(|d| d.study_instance_uid.clone());
                            row.scope_warning = crate::worklist::scope_warning(
                                dicom.as_ref().and_then(|d| d.body_part_examined.as_deref()),
                                dicom.as_ref().and_then(|d| d.view_position.as_deref()),
                                study.not_seen.as_deref(),
                            );
                            row.facts =
                                crate::worklist::StudyFacts::new(dicom.as_ref(), study.modified);
                            row.sha256 = Some(meta.sha256);
                        } else {
                            row.facts = crate::worklist::StudyFacts::new(None, study.modified);
                        }
                        row.score = match study.outcome {
                            Ok(score) => crate::worklist::ScoreState::Scored(score),
                            Err(e) => crate::worklist::ScoreState::Failed(e),
                        };
                        if row.sha256.is_none() {
                            row.sha256 = study.raw_sha256;
                        }
                        row.claimed_by = row.sha256.as_ref().and_then(|h| claims.get(h)).cloned();
                        row.final_label = study.final_label;
                        row.disposition = study.disposition;
                        s.present.note(row);
                        s.progress.done += 1;
                        if s.progress.first_score_secs.is_none() && row.score_value().is_some() {
                            s.progress.first_score_secs = Some(s.started.elapsed().as_secs_f64());
                        }
                    }
                    if incremental {
                        s.order.insert(&s.worklist, sort, filter, &ids);
                    }
                }
                self.claims = claims;
            }
            ScorerMsg::Finished {
                generation,
                elapsed_secs,
                cancelled,
            } => {
                if let Some(s) = self.session_of(generation) {
                    s.progress.finished_secs = Some(s.started.elapsed().as_secs_f64());
                    s.progress.cancelled = cancelled;
                    s.uniform_warning = s.worklist.uniform_scores_warning();
                    tracing::info!(
                        target: "cxr_triage::app",
                        "scored {} studies in {elapsed_secs:.1} s",
                        s.progress.done
                    );
                    if s.selected.is_none() {
                        s.view_dirty = true;
                        self.commands.send(Command::SelectFirst);
                    }
                }
            }
        }
    }

    pub(super) fn session_of(&mut self, generation: u64) -> Option<&mut Session> {
        self.session.as_mut().filter(|s| s.generation == generation)
    }

    /// Drains the viewer's deliveries into the texture cache.
    pub(super) fn drain_viewer(&mut self) {
        let Some(viewer) = &self.viewer else { return };
        let messages: Vec<ViewerMsg> = viewer.messages.try_iter().collect();
        for msg in messages {
            match msg {
                ViewerMsg::Image {
                    key,
                    info,
                    window,
                    invert,
                    textures,
                } => {
                    self.cache.images.retain(|(k, _)| *k != key);
                    self.cache.images.push((
                        key,
                        ImageEntry::Ready {
                            info,
                            window,
                            invert,
                            textures,
                        },
                    ));
                }
                ViewerMsg::ImageFailed {
                    key,
                    error,
                    changed,
                } => {
                    if changed
                        && let Some(s) = self.session_of(key.generation)
                        && let Some(row) = s.worklist.row_mut(key.id)
                    {
                        row.changed = true;
                        row.score = crate::worklist::ScoreState::Failed(error.clone());
                        s.view_dirty = true;
                    }
                    self.cache.images.retain(|(k, _)| *k != key);
                    self.cache.images.push((key, ImageEntry::Failed(error)));
                }
                ViewerMsg::Heat { key, texture } => {
                    self.cache.heat.retain(|(k, _)| *k != key);
                    self.cache.heat.push((key, HeatEntry::Ready(texture)));
                }
                ViewerMsg::HeatFailed { key, error } => {
                    self.cache.heat.retain(|(k, _)| *k != key);
                    self.cache.heat.push((key, HeatEntry::Failed(error)));
                }
            }
        }
    }

    /// Tells the sync thread which study is on screen (it claims it for this reader).
    pub(super) fn sync_viewing(&mut self) {
        let Some(sync) = &mut self.sync else { return };
        let study = self.session.as_ref().and_then(|s| {
            let row = s.worklist.row(s.selected?)?;
            row.sha256.clone()
        });
        sync.viewing(super::sync::SyncCmd {
            study,
            reader: self.reader.trim().to_owned(),
        });
    }

    /// Applies what the sync thread saw: which studies other readers have open, and decisions
    /// recorded by any window since its last look.
    pub(super) fn drain_sync(&mut self) {
        let Some(sync) = &self.sync else { return };
        let messages: Vec<super::sync::SyncMsg> = sync.messages.try_iter().collect();
        for msg in messages {
            match msg {
                super::sync::SyncMsg::Update {
                    others,
                    decided,
                    second_reads,
                } => {
                    // Kept for the rows whose hash is not known yet (see the scorer's batches).
                    self.claims = others;
                    let Some(s) = &mut self.session else { continue };
                    s.worklist.set_claims(&self.claims);
                    let mut changed = 0;
                    if let Some(due) = second_reads
                        && s.worklist.set_second_reads(&due)
                    {
                        changed += 1;
                    }
                    for d in decided {
                        // Read before a decision this window saved since: stale.
                        if !self.newest_event.is_fresh(&d) {
                            continue;
                        }
                        changed += s.worklist.set_decision(
                            &d.sha256,
                            d.label,
                            d.disposition.and_then(super::command::disposition_of),
                        );
                    }
                    if changed > 0 {
                        s.view_dirty = true;
                    }
                }
                super::sync::SyncMsg::Taken { sha256, reader } => {
                    let name = self.session.as_ref().and_then(|s| {
                        s.worklist
                            .rows()
                            .iter()
                            .find(|r| r.sha256.as_deref() == Some(sha256.as_str()))
                            .map(|r| r.name.clone())
                    });
                    if let Some(name) = name {
                        self.toasts.add(
                            Level::Warning,
                            format!("{name} is being read by {reader} in another window."),
                        );
                    }
                }
            }
        }
    }

    /// Moves the studies that have waited past the cap to the top (checked once a second: the
    /// check looks at every study).
    pub(super) fn check_waiting_cap(&mut self) {
        let Some(s) = &mut self.session else { return };
        let now = std::time::SystemTime::now();
        // A new worklist (the folder listed again) has no cut-off yet: set it at once.
        let unset = self.config.wait_limit.is_some() && s.worklist.overdue_before().is_none();
        if !unset
            && s.waiting_checked
                .is_some_and(|t| now.duration_since(t).is_ok_and(|d| d.as_secs() < 1))
        {
            return;
        }
        s.waiting_checked = Some(now);
        let cutoff = self
            .config
            .wait_limit
            .and_then(|limit| now.checked_sub(limit));
        if s.worklist.set_overdue_before(cutoff) {
            s.view_dirty = true;
        }
    }

    /// Recomputes the worklist's order and counts after a change.
    pub(super) fn refresh_view(&mut self) {
        let Some(s) = &mut self.session else { return };
        if !s.view_dirty {
            return;
        }
        s.order = crate::worklist::Order::build(&s.worklist, self.prefs.sort, self.prefs.filter);
        s.view_dirty = false;
    }

    /// What the panes need from the viewer thread, most important first.
    pub(super) fn wants(&self) -> Vec<Want> {
        let Some(s) = &self.session else {
            return Vec::new();
        };
        let Some(selected) = s.selected else {
            return Vec::new();
        };
        let image = |id: StudyId, pane: &PaneView| {
            s.worklist.row(id).map(|row| Want::Image {
                key: s.key(id),
                path: row.path.clone(),
                window: pane.window,
                invert: pane.invert,
                sha256: row.sha256.clone(),
            })
        };
        let mut wants: Vec<Want> = image(selected, &self.left).into_iter().collect();
        match self.right_pane {
            RightPane::Explanation => {
                if self.classifier().is_some()
                    && let Some(row) = s.worklist.row(selected)
                    && row.score_value().is_some()
                {
                    wants.push(Want::Heat {
                        key: s.key(selected),
                        path: row.path.clone(),
                    });
                }
            }
            RightPane::Compare => {
                if let Some(other) = s.compare {
                    wants.extend(image(other, &self.right_view()));
                }
            }
        }
        // Prefetch the next study of the list, so that J shows it at once.
        if let Some(next) = crate::worklist::step_in_view(&s.order.view, Some(selected), 1)
            .filter(|&n| n != selected)
        {
            wants.extend(image(next, &PaneView::default()));
        }
        wants
    }

    /// The right pane's view: the left one's when linked.
    pub(super) fn right_view(&self) -> PaneView {
        if !self.prefs.link_views {
            return self.right;
        }
        let mut view = self.left;
        if self.right_pane == RightPane::Compare
            && let (Some(s), Some(window)) = (&self.session, self.left.window)
            && let (Some(sel), Some(other)) = (s.selected, s.compare)
            && let (
                Some(ImageEntry::Ready { info: from, .. }),
                Some(ImageEntry::Ready { info: to, .. }),
            ) = (self.cache.image(s.key(sel)), self.cache.image(s.key(other)))
        {
            view.window = Some(view::carry_window(
                window,
                from.default_window,
                to.default_window,
            ));
        } else if self.right_pane == RightPane::Compare {
            view.window = None;
        }
        view
    }

    /// Sends the viewer what the panes need, when that changed.
    pub(super) fn request_images(&mut self, ctx: &egui::Context) {
        let wants = self.wants();
        let keep: Vec<ImageKey> = wants
            .iter()
            .map(|w| match w {
                Want::Image { key, .. } | Want::Heat { key, .. } => *key,
            })
            .collect();
        for key in &keep {
            self.cache.touch(*key);
        }
        let dropped = self.cache.evict(&keep);
        self.forgotten.extend(dropped);
        if self.last_wants.as_ref() == Some(&wants) && self.forgotten.is_empty() {
            return;
        }
        let Some(viewer) = &self.viewer else { return };
        let request = viewer_worker::ViewerRequest {
            wants: wants.clone(),
            forgotten: self.forgotten.clone(),
            classifier: self.classifier().cloned(),
            max_texture_side: ctx.input(|i| i.max_texture_side),
        };
        if viewer.request(request) {
            self.last_wants = Some(wants);
            self.forgotten.clear();
        } else {
            ctx.request_repaint();
        }
    }
}
