//! Commands: everything the reader asks for goes through [`Command`] and
//! [`App::apply_commands`], the only code that records decisions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use egui::{Key, Modifiers};

use super::notifications::Level;
use super::scorer::ScoreJob;
use super::view::{ViewTransform, WindowPreset};
use super::{App, ImageEntry, PaneView, Progress, RightPane, Session};
use crate::audit::{Action, DecisionEvent, DecisionStore, ExportKind, ExportOptions, NewDecision};
use crate::worklist::{
    DatasetLabel, Disposition, Filter, Label, SortSpec, StudyId, Worklist, step_in_view,
};

/// Something the reader asked for. The window queues commands as they come (clicks, keys,
/// dialogs) and applies them all at the start of the next frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Open a folder of studies (and stop scoring the one open before).
    OpenFolder(PathBuf),
    /// Ask for a folder with the system's dialog.
    ChooseFolder,
    /// Select a study.
    Select(StudyId),
    /// Move the selection by this many rows of the worklist (J/K, arrows).
    Step(isize),
    /// Select the first row of the worklist.
    SelectFirst,
    /// Select the last row of the worklist.
    SelectLast,
    /// Select the next unreviewed study.
    NextUnreviewed,
    /// The reader agrees with the AI label of the selected study.
    Confirm,
    /// The reader sets the selected study's label.
    SetLabel(Label),
    /// The reader closes the selected study without a label: read elsewhere, or not a chest
    /// film.
    Dispose(Disposition),
    /// Take back the last decision of this session (or, if there is none, the selected study's).
    Undo,
    /// Ask where to write a CSV export.
    ChooseExportFile(ExportKind),
    /// Write a CSV export of the decision store, for the open folder.
    ExportCsv {
        /// The file to write.
        dest: PathBuf,
        /// Which rows.
        kind: ExportKind,
    },
    /// Sort the worklist.
    SetSort(SortSpec),
    /// Filter the worklist.
    SetFilter(Filter),
    /// Show a study beside the selected one (`None`: show the heat map).
    Compare(Option<StudyId>),
    /// Show a display-window preset in the left pane (and the right one when linked).
    WindowPreset(usize),
    /// Swap black and white.
    ToggleInvert,
    /// Fit the study to its pane.
    Fit,
    /// One image pixel per screen pixel.
    ActualSize,
    /// Link or unlink zoom, pan and window of the two panes.
    ToggleLink,
    /// Show or hide an optional worklist column.
    ToggleColumn(super::prefs::OptionalColumn),
    /// Open Model > Local performance: the model measured on this store's reviewed studies.
    ShowLocalPerformance,
    /// Open Model > Adapt to this site: the model fine-tuned on this store's reviewed studies.
    ShowAdapt,
    /// Give the film the whole viewer (hide the right pane), or show both panes again.
    ToggleSinglePane,
    /// Open Quality > Reader agreement: the QA report of the decision store.
    ShowQa,
}

/// Queues commands for the window from anywhere: the window's own drawing code, or another
/// thread holding a clone. Commands are applied, in order, at the start of the next frame.
#[derive(Clone, Debug)]
pub struct CommandSender {
    tx: std::sync::mpsc::Sender<Command>,
    ctx: egui::Context,
}

impl CommandSender {
    pub(super) fn new(tx: std::sync::mpsc::Sender<Command>, ctx: egui::Context) -> Self {
        Self { tx, ctx }
    }

    /// Queues a command and wakes the window. A command sent after the window closed is dropped.
    pub fn send(&self, command: Command) {
        if self.tx.send(command).is_ok() {
            self.ctx.request_repaint();
        }
    }
}

/// What the reader decided.
#[derive(Clone, Copy, Debug)]
enum Wanted {
    ConfirmAi,
    Label(Label),
    Dispose(Disposition),
}

impl App {
    /// Applies every queued command, in order. This is the only place that records decisions.
    pub(super) fn apply_commands(&mut self) {
        let commands: Vec<Command> = self.command_rx.try_iter().collect();
        for command in commands {
            self.apply(command);
        }
    }

    fn apply(&mut self, command: Command) {
        // Commands act on the list as it is drawn now, not as it was a frame ago.
        self.refresh_view();
        match command {
            Command::OpenFolder(path) => self.open_folder(&path),
            Command::ChooseFolder => self
                .dialogs
                .choose_folder(self.prefs.recent_folders.first()),
            Command::Select(id) => self.select(id),
            Command::Step(delta) => {
                if let Some(s) = &self.session
                    && let Some(id) = step_in_view(&s.order.view, s.selected, delta)
                {
                    self.select(id);
                    self.scroll_to_selected = true;
                }
            }
            Command::SelectFirst => {
                if let Some(id) = self
                    .session
                    .as_ref()
                    .and_then(|s| s.order.view.first().copied())
                {
                    self.select(id);
                    self.scroll_to_selected = true;
                }
            }
            Command::SelectLast => {
                if let Some(id) = self
                    .session
                    .as_ref()
                    .and_then(|s| s.order.view.last().copied())
                {
                    self.select(id);
                    self.scroll_to_selected = true;
                }
            }
            Command::NextUnreviewed => {
                let next = self
                    .session
                    .as_ref()
                    .and_then(|s| s.worklist.next_unreviewed(&s.order.view, s.selected));
                match next {
                    Some(id) => {
                        self.select(id);
                        self.scroll_to_selected = true;
                    }
                    None => {
                        let text = self.nothing_left_text();
                        self.toasts.add(Level::Info, text);
                    }
                }
            }
            Command::Confirm => self.decide(Wanted::ConfirmAi),
            Command::SetLabel(label) => self.decide(Wanted::Label(label)),
            Command::Dispose(d) => self.decide(Wanted::Dispose(d)),
            Command::Undo => self.undo(),
            Command::ChooseExportFile(kind) => {
                let suggested = self.default_export_path(kind);
                self.dialogs.choose_export_file(kind, suggested);
            }
            Command::ExportCsv { dest, kind } => self.export(&dest, kind),
            Command::SetSort(sort) => {
                self.prefs.sort = sort;
                self.mark_view_dirty();
                self.scroll_to_selected = true;
            }
            Command::SetFilter(filter) => {
                self.prefs.filter = filter;
                self.mark_view_dirty();
                self.scroll_to_selected = true;
            }
            Command::Compare(other) => match other {
                Some(id) => {
                    if let Some(s) = &mut self.session {
                        s.compare = Some(id);
                    }
                    self.right_pane = RightPane::Compare;
                    self.right = PaneView::default();
                }
                None => self.right_pane = RightPane::Explanation,
            },
            Command::WindowPreset(n) => {
                let Some(preset) = WindowPreset::ALL.get(n) else {
                    return;
                };
                if let Some(info) = self.selected_info() {
                    self.left.window = preset.window(&info);
                }
                if !self.prefs.link_views
                    && let Some(info) = self.compare_info()
                {
                    self.right.window = preset.window(&info);
                }
            }
            Command::ToggleInvert => {
                self.left.invert = !self.left.invert;
                self.right.invert = !self.right.invert;
            }
            Command::Fit => {
                self.left.transform = ViewTransform::FIT;
                self.right.transform = ViewTransform::FIT;
            }
            Command::ActualSize => self.pending_actual_size = true,
            Command::ToggleLink => self.prefs.link_views = !self.prefs.link_views,
            Command::ToggleColumn(column) => self.prefs.columns.toggle(column),
            Command::ShowLocalPerformance => self.open_local_performance(),
            Command::ShowAdapt => self.open_adapt(),
            Command::ToggleSinglePane => self.single_pane = !self.single_pane,
            Command::ShowQa => self.open_qa(),
        }
    }

    fn mark_view_dirty(&mut self) {
        if let Some(s) = &mut self.session {
            s.view_dirty = true;
        }
    }

    pub(super) fn selected_info(&self) -> Option<Arc<super::ImageInfo>> {
        let s = self.session.as_ref()?;
        match self.cache.image(s.key(s.selected?))? {
            ImageEntry::Ready { info, .. } => Some(Arc::clone(info)),
            ImageEntry::Failed(_) => None,
        }
    }

    fn compare_info(&self) -> Option<Arc<super::ImageInfo>> {
        let s = self.session.as_ref()?;
        match self.cache.image(s.key(s.compare?))? {
            ImageEntry::Ready { info, .. } => Some(Arc::clone(info)),
            ImageEntry::Failed(_) => None,
        }
    }

    /// Opens a folder: stops the previous job and starts listing and scoring this one.
    fn open_folder(&mut self, path: &Path) {
        let root = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        if !root.is_dir() {
            self.toasts.add(
                Level::Error,
                format!("not a folder that can be opened: {}", root.display()),
            );
            return;
        }
        if let Some(old) = self.session.take() {
            old.cancel.store(true, Ordering::Relaxed);
        }
        self.forgotten.extend(self.cache.clear());
        self.generation += 1;
        self.prefs.remember_folder(&root);
        self.left = PaneView::default();
        self.right = PaneView::default();
        self.right_pane = RightPane::Explanation;
        self.reason.clear();
        let cancel = Arc::new(AtomicBool::new(false));
        self.session = Some(Session {
            generation: self.generation,
            root: root.clone(),
            worklist: Worklist::default(),
            listed: false,
            order: crate::worklist::Order::default(),
            view_dirty: true,
            waiting_checked: None,
            awaiting_final: std::collections::HashSet::new(),
            selected: None,
            compare: None,
            cancel: Arc::clone(&cancel),
            started: Instant::now(),
            progress: Progress::default(),
            uniform_warning: None,
            undo_stack: Vec::new(),
            present: super::state::Present::default(),
            site_threshold: None,
        });
        let job = ScoreJob {
            generation: self.generation,
            root,
            labels_csv: self.config.labels_csv.clone(),
            db_path: self.db_path.clone().ok(),
            cancel,
        };
        let submitted = match &self.scorer {
            Some(scorer) => scorer.submit(job),
            None => Err("the scorer could not be started".to_owned()),
        };
        if let Err(e) = submitted {
            self.toasts
                .add(Level::Error, format!("the folder cannot be scored: {e}"));
            self.session = None;
        }
    }

    /// Selects a study and resets the panes to fit and the default window.
    fn select(&mut self, id: StudyId) {
        let Some(s) = &mut self.session else { return };
        if s.worklist.row(id).is_none() || s.selected == Some(id) {
            return;
        }
        s.selected = Some(id);
        self.shown = None;
        self.status = None;
        if self.right_pane == RightPane::Compare {
            let same_patient = s.worklist.same_patient(id);
            if let Some(&first) = same_patient.first() {
                s.compare = Some(first);
            } else if s.compare == Some(id) {
                s.compare = None;
            }
        }
        self.left = PaneView {
            invert: self.left.invert,
            ..PaneView::default()
        };
        self.right = PaneView {
            invert: self.right.invert,
            ..PaneView::default()
        };
    }

    /// Whether a decision on the selected study may be recorded now, and if so how long its
    /// full-resolution image has been on screen, in milliseconds (`None` when the study cannot
    /// be shown at all). A label needs the study in the list as filtered, and its image on
    /// screen (not the placeholder) for `min_view_secs`; with `needs_image` false (read
    /// elsewhere, not a chest film) a study whose image cannot be shown may be decided too.
    pub(super) fn viewing(&self, needs_image: bool) -> Result<Option<u64>, String> {
        let s = self.session.as_ref().ok_or("Open a folder first.")?;
        let id = s.selected.ok_or("Select a study first.")?;
        if !s.order.view.contains(&id) {
            return Err(
                "The selected study is hidden by the worklist's filter: show it before deciding."
                    .to_owned(),
            );
        }
        let key = s.key(id);
        let loading = || "The full-resolution image is still loading: wait for it.".to_owned();
        match self.cache.image(key) {
            None => Err(loading()),
            Some(ImageEntry::Failed(_)) if needs_image => Err(
                "This study cannot be shown, so no label can be recorded: mark it \"read elsewhere\" or \"not a chest film\"."
                    .to_owned(),
            ),
            Some(ImageEntry::Failed(_)) => Ok(None),
            Some(ImageEntry::Ready { .. }) => {
                let Some((_, since)) = self.shown.filter(|(k, _)| *k == key) else {
                    return Err(loading());
                };
                let secs = (self.now - since).max(0.0);
                let min = f64::from(self.prefs.min_view_secs.max(0.0));
                if secs < min {
                    return Err(format!(
                        "The film has been on screen for {secs:.1} s: look at it for at least {min:.1} s before deciding."
                    ));
                }
                Ok(Some((secs * 1000.0).round() as u64))
            }
        }
    }

    /// What to say when no unreviewed study is left in the list: "all reviewed" only when every
    /// study of the folder has a decision.
    fn nothing_left_text(&self) -> String {
        let Some(s) = &self.session else {
            return String::new();
        };
        let open = s
            .worklist
            .rows()
            .iter()
            .filter(|r| !s.worklist.review_state(r).is_reviewed())
            .count();
        if open == 0 && !s.is_scoring() {
            "Every study of this folder has been reviewed.".to_owned()
        } else if open == 0 {
            "Every study read so far has been reviewed; the rest are still being read.".to_owned()
        } else {
            format!(
                "No unreviewed study in this list, but {open} of the folder's studies have no decision: the filter hides them."
            )
        }
    }

    /// Records the reader's decision on the selected study, then moves to the next unreviewed
    /// one. Nothing is recorded (and the status bar says why) unless the study is in the list as
    /// filtered and its full-resolution image has been on screen long enough.
    fn decide(&mut self, wanted: Wanted) {
        let needs_image = !matches!(wanted, Wanted::Dispose(_));
        let viewed_ms = match self.viewing(needs_image) {
            Ok(v) => v,
            Err(why) => {
                self.refuse(why);
                return;
            }
        };
        let Some(s) = &self.session else { return };
        let Some(id) = s.selected else { return };
        let Some(row) = s.worklist.row(id) else {
            return;
        };
        if row.changed {
            self.refuse(
                "this file changed on disk after it was scored: reopen the folder to score it again."
                    .to_owned(),
            );
            return;
        }
        let Some(sha) = row.sha256.clone() else {
            let why = if row.error().is_some() {
                "This file could not be read at all, so no decision can be recorded for it."
            } else {
                "This study has not been read yet: wait a moment for its score."
            };
            self.refuse(why.to_owned());
            return;
        };
        let ai = s.worklist.ai_label(row);
        if let Some(d) = row.disposition {
            let what = match d {
                Disposition::ReadElsewhere => "read elsewhere",
                Disposition::NotChestFilm => "not a chest film",
            };
            self.refuse(format!(
                "{} is recorded as {what}: undo that first (Ctrl+Z).",
                row.name
            ));
            return;
        }
        let blind = ai_hidden(self.config.blind_first, &s.worklist, row);
        let awaiting_final = s.awaiting_final.contains(&sha);
        let (action, new_label) = match (wanted, ai) {
            (Wanted::Dispose(Disposition::ReadElsewhere), _) => (Action::ReadElsewhere, None),
            (Wanted::Dispose(Disposition::NotChestFilm), _) => (Action::NotChestFilm, None),
            (Wanted::Label(l), _) if blind => (Action::BlindCall, Some(l)),
            (Wanted::ConfirmAi, _) if blind => {
                self.refuse(
                    "Blind-first reading: make your own call first (N or P); the AI's call \
                     appears after it."
                        .to_owned(),
                );
                return;
            }
            (Wanted::Label(l), Some(ai)) if ai == l => (Action::Confirm, Some(l)),
            (Wanted::Label(l), Some(_)) => (Action::Override, Some(l)),
            (Wanted::Label(l), None) => (Action::Relabel, Some(l)),
            (Wanted::ConfirmAi, Some(ai)) => (Action::Confirm, Some(ai)),
            (Wanted::ConfirmAi, None) => {
                self.refuse(
                    "There is no AI label to confirm for this study: set its label with N or P."
                        .to_owned(),
                );
                return;
            }
        };
        // After a blind call, keeping it is a final call too (recorded against the AI label).
        // A second read is recorded whatever the first read was (which the reader has not seen).
        if new_label.is_some()
            && row.final_label == new_label
            && !awaiting_final
            && !row.second_read_due
        {
            self.toasts.add(
                Level::Info,
                format!(
                    "{} is already {}: nothing recorded.",
                    row.name,
                    new_label.map_or("", Label::as_str)
                ),
            );
            return;
        }
        if self.pending.iter().any(|p| p.sha == sha) {
            self.refuse(format!(
                "the previous decision on {} is still being saved.",
                row.name
            ));
            return;
        }
        let mut decision = NewDecision {
            reason: compose_reason(&self.reason, row.dataset_label),
            action,
            new_label,
            viewed_ms,
            ..self.ai_context(&s.worklist, id, &sha)
        };
        if action == Action::BlindCall {
            // Nothing of the AI's call was shown.
            decision.ai_label = None;
        }
        let name = row.name.clone();
        // The reader moves on at once; the row shows the decision once it is saved. After a
        // blind call the reader stays, to see the AI's call and make the final one.
        let next = if action == Action::BlindCall {
            None
        } else {
            s.worklist.next_unreviewed(&s.order.view, Some(id))
        };
        let kind = super::WriteKind::Decision {
            last: next.is_none(),
        };
        match self.record(decision, id, &sha, name, kind) {
            Ok(()) => {
                if let Some(s) = &mut self.session {
                    if action == Action::BlindCall {
                        s.awaiting_final.insert(sha.clone());
                    } else {
                        s.awaiting_final.remove(&sha);
                    }
                }
                if action == Action::BlindCall {
                    self.toasts.add(
                        Level::Info,
                        format!(
                            "Your call: {}. The AI's call is shown now: keep yours or change \
                             it (C, N or P).",
                            new_label.map_or("", Label::as_str)
                        ),
                    );
                }
                self.status = None;
                self.reason.clear();
                if let Some(next) = next {
                    self.select(next);
                    self.scroll_to_selected = true;
                }
            }
            Err(e) => self.toasts.add(Level::Error, e),
        }
    }

    /// Applies the writer's acknowledgements: a saved decision shows in its row, a refused one
    /// is reported.
    pub(super) fn drain_writer(&mut self) {
        let Some(writer) = &self.writer else { return };
        let messages: Vec<super::writer::WriterMsg> = writer.messages.try_iter().collect();
        for msg in messages {
            match msg {
                super::writer::WriterMsg::OpenFailed(e) => self.store_error = Some(e),
                super::writer::WriterMsg::Opened {
                    signed_in,
                    encrypted,
                } => {
                    self.store_error = None;
                    self.store_encrypted = encrypted;
                    // On a PostgreSQL store the reader is the database user, whatever is typed.
                    if let Some(user) = signed_in {
                        self.reader.clone_from(&user);
                        self.dialogs.reader_prompt = false;
                        self.signed_in = Some(user);
                    }
                }
                super::writer::WriterMsg::Retrying { seq, why } => {
                    if self.pending.iter().any(|p| p.seq == seq) {
                        self.retrying = Some(why);
                    }
                }
                super::writer::WriterMsg::Ack { seq, result } => {
                    self.retrying = None;
                    self.on_ack(seq, result);
                }
            }
        }
    }

    /// Keeps the window open, once, when the reader closes it while decisions are not saved
    /// yet (being saved, or waiting for the server): closing would lose them. The status bar
    /// says so; closing again closes.
    pub(super) fn guard_close(&mut self, ctx: &egui::Context) {
        if self.pending.is_empty() {
            self.close_anyway = false;
            return;
        }
        if !ctx.input(|i| i.viewport().close_requested()) || self.close_anyway {
            return;
        }
        ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
        self.close_anyway = true;
        let n = self.pending.len();
        self.status = Some(format!(
            "{n} decision{s} not saved yet: closing now would lose {them}. Wait until {they} \
             {are} saved, or close again to close anyway.",
            s = if n == 1 { " is" } else { "s are" },
            them = if n == 1 { "it" } else { "them" },
            they = if n == 1 { "it" } else { "they" },
            are = if n == 1 { "is" } else { "are" },
        ));
    }

    fn on_ack(&mut self, seq: u64, result: Result<Box<DecisionEvent>, String>) {
        let Some(pos) = self.pending.iter().position(|p| p.seq == seq) else {
            return;
        };
        let pending = self.pending.remove(pos);
        let event = match result {
            Ok(event) => event,
            Err(e) => {
                self.saved_note = None;
                self.toasts
                    .add(Level::Error, format!("{}: {e}", pending.name));
                return;
            }
        };
        self.newest_event.saved(&pending.sha, event.id);
        // A folder opened since has other rows: the store has the decision all the same.
        if let Some(s) = &mut self.session {
            s.worklist
                .set_decision(&pending.sha, event.new_label, disposition_of(event.action));
            s.view_dirty = true;
        }
        let now = match (event.new_label, disposition_of(event.action)) {
            (Some(l), _) => l.to_string(),
            (None, Some(Disposition::ReadElsewhere)) => "read elsewhere".to_owned(),
            (None, Some(Disposition::NotChestFilm)) => "not a chest film".to_owned(),
            (None, None) => "unreviewed".to_owned(),
        };
        match pending.kind {
            super::WriteKind::Decision { last } => {
                if let Some(s) = &mut self.session {
                    s.undo_stack.push(pending.id);
                }
                self.saved_note = Some(format!("Saved: {} is {now}", pending.name));
                if last {
                    self.refresh_view();
                    let text = self.nothing_left_text();
                    self.toasts.add(Level::Success, text);
                }
            }
            super::WriteKind::Undo { from_stack } => {
                if from_stack && let Some(s) = &mut self.session {
                    s.undo_stack.pop();
                }
                self.saved_note = Some(format!("Saved: undone, {} is {now}", pending.name));
                self.toasts.add(
                    Level::Info,
                    format!("Undone: {} is {now} again.", pending.name),
                );
            }
        }
    }

    /// Says in the status bar why a decision was not recorded (not in a notice: notices sit
    /// over the decision bar, where the reader's next click goes).
    fn refuse(&mut self, why: impl std::fmt::Display) {
        self.status = Some(format!("Not recorded: {why}"));
    }

    /// The decision's fields that describe the study and the AI call shown (an undo or a
    /// decision fills in the rest).
    fn ai_context(&self, worklist: &Worklist, id: StudyId, sha: &str) -> NewDecision {
        let row = worklist.row(id);
        let ai = row.and_then(|r| worklist.ai_label(r));
        let card = self.classifier().map(|c| c.card()).filter(|_| ai.is_some());
        NewDecision {
            reader: self.reader.trim().to_owned(),
            study_sha256: sha.to_owned(),
            study_path: row.map(|r| r.path.clone()).unwrap_or_default(),
            model_id: card.map(|c| c.model_id.clone()),
            weights_sha256: card.map(|c| c.weights_sha256.to_lowercase()),
            score: ai.and(row.and_then(crate::worklist::StudyRow::score_value)),
            threshold: ai.and(worklist.threshold()),
            ai_label: ai,
            new_label: None,
            action: Action::Undo,
            reason: String::new(),
            viewed_ms: None,
            // What the reader was told the model has not seen (the image-based flag and the
            // DICOM warnings), as shown in the row and the header.
            ood_reason: row.and_then(|r| r.scope_warning.clone()),
        }
    }

    /// Takes back the last decision of this session, or the selected study's last decision.
    fn undo(&mut self) {
        let Some(s) = &self.session else { return };
        let from_stack = s.undo_stack.last().copied();
        let Some(id) = from_stack.or(s.selected) else {
            self.toasts.add(Level::Info, "Nothing to undo.");
            return;
        };
        let Some(row) = s.worklist.row(id) else {
            return;
        };
        let Some(sha) = row.sha256.clone() else {
            self.toasts
                .add(Level::Info, "Nothing to undo for this study.");
            return;
        };
        let name = row.name.clone();
        if !self.pending.is_empty() {
            self.refuse("wait until the decisions being saved are saved, then undo.".to_owned());
            return;
        }
        let decision = NewDecision {
            reason: self.reason.trim().to_owned(),
            ..self.ai_context(&s.worklist, id, &sha)
        };
        let kind = super::WriteKind::Undo {
            from_stack: from_stack.is_some(),
        };
        match self.record(decision, id, &sha, name, kind) {
            Ok(()) => {
                self.reason.clear();
                self.select(id);
                self.scroll_to_selected = true;
            }
            Err(e) => self.toasts.add(Level::Info, e),
        }
    }

    /// Sends a decision to the writer thread; it shows in its row once acknowledged. The UI
    /// thread never touches the store.
    fn record(
        &mut self,
        decision: NewDecision,
        id: StudyId,
        sha: &str,
        name: String,
        kind: super::WriteKind,
    ) -> Result<(), String> {
        if decision.reader.is_empty() {
            self.dialogs.reader_prompt = true;
            return Err("Enter your name as the reader first.".to_owned());
        }
        let writer = self
            .writer
            .as_ref()
            .ok_or("decisions cannot be saved: the writer could not be started")?;
        let seq = self.next_seq;
        writer.submit(super::writer::WriteRequest { seq, decision })?;
        self.next_seq += 1;
        self.saved_note = None;
        self.pending.push(super::PendingWrite {
            seq,
            id,
            sha: sha.to_owned(),
            name,
            kind,
        });
        Ok(())
    }

    /// Where an export goes unless the reader says otherwise: the home folder (never the
    /// studies' folder).
    fn default_export_path(&self, kind: ExportKind) -> PathBuf {
        let dir = directories::UserDirs::new()
            .map(|u| u.home_dir().to_owned())
            .unwrap_or_else(std::env::temp_dir);
        let folder = self
            .session
            .as_ref()
            .and_then(|s| s.root.file_name())
            .map_or_else(|| "all".to_owned(), |n| n.to_string_lossy().into_owned());
        let what = match kind {
            ExportKind::Reviewed => "reviewed",
            ExportKind::All => "all",
            ExportKind::Events => "events",
        };
        let day = chrono::Utc::now().format("%Y-%m-%d");
        dir.join(format!("cxr-triage-{folder}-{what}-{day}.csv"))
    }

    /// Starts a CSV export on its own thread.
    fn export(&mut self, dest: &Path, kind: ExportKind) {
        if self.dialogs.export_job.is_some() {
            self.toasts.add(
                Level::Info,
                "An export is already running; wait for it to finish.",
            );
            return;
        }
        let db = match &self.db_path {
            Ok(p) => p.clone(),
            Err(e) => {
                self.toasts
                    .add(Level::Error, format!("nothing to export: {e}"));
                return;
            }
        };
        let folder = self.session.as_ref().map(|s| s.root.clone());
        // Said at once, before the export thread starts (which checks the store and the known
        // studies too, with the same rules: `crate::output`).
        if let Some(root) = &folder
            && let Err(e) = crate::output::Protected::new().folder(root).check(dest)
        {
            self.toasts.add(
                Level::Error,
                format!("The export was not written: {e}; choose another place."),
            );
            return;
        }
        let ctx_dest = dest.to_owned();
        self.dialogs.export_job = Some(poll_promise::Promise::spawn_thread("export", move || {
            let store = DecisionStore::open(&db).map_err(|e| e.to_string())?;
            let rows = store
                .export_csv_to_file(
                    &ctx_dest,
                    &ExportOptions {
                        kind,
                        folder,
                        force: false,
                    },
                )
                .map_err(|e| e.to_string())?;
            let receipt = store.anchor().map_err(|e| e.to_string())?.receipt();
            Ok((rows, ctx_dest, kind, receipt))
        }));
    }

    /// Turns keyboard shortcuts into commands. Single keys act only while no text field has the
    /// keyboard and no dialog is open.
    pub(super) fn shortcuts(&mut self, ctx: &egui::Context) {
        let typing = ctx.egui_wants_keyboard_input();
        if typing {
            return;
        }
        if self.dialogs.any_modal_open() {
            if self.dialogs.help
                && ctx.input_mut(|i| help_key(i) || i.consume_key(Modifiers::NONE, Key::Escape))
            {
                self.dialogs.help = false;
            }
            return;
        }
        let KeyOutcome {
            commands,
            toggle_help,
            focus_reason,
        } = ctx.input_mut(key_outcome);
        if toggle_help {
            self.dialogs.help = !self.dialogs.help;
        }
        if focus_reason {
            self.focus_reason = true;
        }
        if !commands.is_empty() {
            ctx.request_repaint();
        }
        for command in commands {
            self.commands.send(command);
        }
    }

    /// Opens a folder dropped on the window (or the folder of a dropped file).
    pub(super) fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .collect()
        });
        if let Some(path) = dropped.first() {
            let folder = if path.is_dir() {
                path.clone()
            } else {
                path.parent().map_or_else(|| path.clone(), Path::to_owned)
            };
            self.commands.send(Command::OpenFolder(folder));
        }
    }
}

/// F1 or ?: the help key.
fn help_key(i: &mut egui::InputState) -> bool {
    i.consume_key(Modifiers::NONE, Key::F1) || i.consume_key(Modifiers::NONE, Key::Questionmark)
}

/// What the keys pressed this frame ask for.
#[derive(Debug, Default, PartialEq)]
pub(super) struct KeyOutcome {
    /// Commands, in the order of the table below.
    pub commands: Vec<Command>,
    /// F1 or ?: show or hide the shortcut overlay.
    pub toggle_help: bool,
    /// R: give the reason field the keyboard.
    pub focus_reason: bool,
}

/// The keyboard shortcuts: consumes the keys of this frame's input that are shortcuts and says
/// what they ask for. The one key handler of the window (the help overlay and the README list
/// the same keys: [`super::dialogs::SHORTCUTS`], checked against this function by a test).
pub(super) fn key_outcome(i: &mut egui::InputState) -> KeyOutcome {
    let mut commands = Vec::new();
    let mut focus_reason = false;
    let toggle_help = help_key(i);
    let command_key = |i: &mut egui::InputState, key| i.consume_key(Modifiers::COMMAND, key);
    if command_key(i, Key::Z) {
        commands.push(Command::Undo);
    }
    if command_key(i, Key::O) {
        commands.push(Command::ChooseFolder);
    }
    if command_key(i, Key::E) {
        commands.push(Command::ChooseExportFile(ExportKind::Reviewed));
    }
    // Deciding keys act on a fresh press only: a held key's repeats never decide.
    let c = fresh_press(i, Key::C);
    if fresh_press(i, Key::Enter) || c {
        commands.push(Command::Confirm);
    }
    if fresh_press(i, Key::N) {
        commands.push(Command::SetLabel(Label::Normal));
    }
    if fresh_press(i, Key::P) {
        commands.push(Command::SetLabel(Label::Pneumonia));
    }
    let mut key = |k| i.consume_key(Modifiers::NONE, k);
    if key(Key::J) || key(Key::ArrowDown) {
        commands.push(Command::Step(1));
    }
    if key(Key::K) || key(Key::ArrowUp) {
        commands.push(Command::Step(-1));
    }
    if key(Key::PageDown) {
        commands.push(Command::Step(20));
    }
    if key(Key::PageUp) {
        commands.push(Command::Step(-20));
    }
    if key(Key::Home) {
        commands.push(Command::SelectFirst);
    }
    if key(Key::End) {
        commands.push(Command::SelectLast);
    }
    if key(Key::U) {
        commands.push(Command::NextUnreviewed);
    }
    if key(Key::R) {
        focus_reason = true;
    }
    for (n, k) in [Key::Num1, Key::Num2, Key::Num3, Key::Num4]
        .into_iter()
        .enumerate()
    {
        if key(k) {
            commands.push(Command::WindowPreset(n));
        }
    }
    if key(Key::I) {
        commands.push(Command::ToggleInvert);
    }
    if key(Key::F) {
        commands.push(Command::Fit);
    }
    if key(Key::O) {
        commands.push(Command::ActualSize);
    }
    if key(Key::L) {
        commands.push(Command::ToggleLink);
    }
    if key(Key::H) {
        commands.push(Command::Compare(None));
    }
    if key(Key::S) {
        commands.push(Command::ToggleSinglePane);
    }
    KeyOutcome {
        commands,
        toggle_help,
        focus_reason,
    }
}

/// Blind-first reading: whether the AI's score, label, rank and heat map of `row` are hidden
/// (the reader has made no call on it yet).
pub(super) fn ai_hidden(blind_first: bool, w: &Worklist, row: &crate::worklist::StudyRow) -> bool {
    blind_first && w.review_state(row) == crate::worklist::ReviewState::Unreviewed
}

/// The disposition an event puts in force.
pub(super) fn disposition_of(action: Action) -> Option<Disposition> {
    match action {
        Action::ReadElsewhere => Some(Disposition::ReadElsewhere),
        Action::NotChestFilm => Some(Disposition::NotChestFilm),
        _ => None,
    }
}

/// Consumes every press of `key` without modifiers, repeats included, and says whether one of
/// them was a fresh press (not the repeat of a held key).
pub(super) fn fresh_press(i: &mut egui::InputState, key: Key) -> bool {
    let mut fresh = false;
    i.events.retain(|e| match e {
        egui::Event::Key {
            key: k,
            pressed: true,
            modifiers,
            repeat,
            ..
        } if *k == key && modifiers.matches_logically(Modifiers::NONE) => {
            fresh |= !*repeat;
            false
        }
        _ => true,
    });
    fresh
}

/// The reason recorded with a decision: the reader's words, and in label-correction mode the
/// label the dataset gave (the value being corrected).
fn compose_reason(typed: &str, dataset: Option<DatasetLabel>) -> String {
    let typed = typed.trim();
    match dataset {
        None => typed.to_owned(),
        Some(d) => {
            let note = format!("[dataset label: {}, from {}]", d.label, d.source.as_str());
            if typed.is_empty() {
                note
            } else {
                format!("{typed} {note}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worklist::LabelSource;

    #[test]
    fn reasons_carry_the_dataset_label_being_corrected() {
        assert_eq!(compose_reason("  typo ", None), "typo");
        let d = Some(DatasetLabel {
            label: Label::Normal,
            source: LabelSource::FolderName,
        });
        assert_eq!(
            compose_reason("", d),
            "[dataset label: NORMAL, from folder name]"
        );
        assert_eq!(
            compose_reason("consolidation RLL", d),
            "consolidation RLL [dataset label: NORMAL, from folder name]"
        );
    }

    #[test]
    fn exports_inside_the_studies_folder_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let studies = dir.path().join("studies");
        std::fs::create_dir_all(studies.join("sub")).unwrap();
        let inside = |dest: &Path| {
            crate::output::Protected::new()
                .folder(&studies)
                .check(dest)
                .is_err()
        };
        assert!(inside(&studies.join("x.csv")));
        assert!(inside(&studies.join("sub/x.csv")));
        assert!(!inside(&dir.path().join("x.csv")));
    }
}
