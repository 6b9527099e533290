//! The review window (eframe). The only module that knows egui.
//!
//! # Architecture
//!
//! - [`App::logic`] runs first each frame: it drains the background threads' channels, turns
//!   keyboard shortcuts and dropped folders into [`Command`]s (queued through a
//!   [`CommandSender`], which anything may hold), and applies every queued command in one place
//!   ([`App::apply_commands`]), which sends decisions to the writer thread.
//! - [`App::ui`] only draws, and pushes commands for what the reader asks.
//! - Background work runs on named threads with bounded channels: `scorer` (loads the model,
//!   lists the folder, scores in batches with rayon, registers the studies in the decision store
//!   and reads their decisions back) and `viewer` (full-resolution decoding, display textures,
//!   Grad-CAM) and `store-writer` (owns the decision store: records each decision and
//!   acknowledges it; the window shows "saving…" until then, so a slow disk never blocks a
//!   frame). One-off jobs (folder and file dialogs, CSV export) are
//!   [`poll_promise::Promise`]s on their own named threads.
//! - Preferences (recent folders, reader name, sort order, link toggle, opacity) persist in
//!   eframe's storage; decisions never do.

mod adapt_ui;
mod command;
mod dialogs;
mod frame_stats;
mod local_ui;
mod notifications;
mod prefs;
mod qa_ui;
mod scorer;
mod scoring;
mod screenshot;
mod shell_ui;
mod state;
mod sync;
mod theme;
mod view;
mod viewer_ui;
mod viewer_worker;
mod worklist_ui;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use command::{Command, CommandSender};
pub use frame_stats::{FrameStats, Histogram};
pub use prefs::OptionalColumn;

use crate::audit::DecisionStore;
use crate::io::Window;
use crate::worklist::{StudyId, Worklist};

use notifications::{Level, Notifications};
use prefs::Preferences;
use scorer::ScorerHandle;
use screenshot::ScreenshotState;
use state::{
    HeatEntry, ImageCache, ImageEntry, ModelState, PaneView, PendingWrite, Progress, RightPane,
    Session, WriteKind,
};
use viewer_worker::{ImageInfo, ImageKey, ViewerHandle, Want};

/// Textures kept for studies not on screen (the LRU evicts beyond this).
const IMAGE_CACHE_CAPACITY: usize = 6;

/// What the left (main) pane shows: zoom, pan and display window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaneState {
    /// Zoom relative to "fit" (1 shows the whole study).
    pub zoom: f32,
    /// The study point at the pane's centre, 0 to 1 on each axis.
    pub center: [f32; 2],
    /// The display window; `None` for the study's default.
    pub window: Option<Window>,
    /// Whether black and white are swapped.
    pub invert: bool,
    /// Whether the right pane follows this one.
    pub linked: bool,
}

/// What the main pane's texture shows: the display window and invert it was rendered with, and
/// a digest and mean of its full-resolution display bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DisplayedImage {
    /// The window the texture was rendered with (`None`: the study's default).
    pub window: Option<Window>,
    /// Whether black and white are swapped in the texture.
    pub invert: bool,
    /// Hash of the display bytes: equal digests, equal pictures.
    pub digest: u64,
    /// Mean display value, 0 to 255.
    pub mean: f64,
}

/// How the window is started.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// A folder to open at once.
    pub folder: Option<PathBuf>,
    /// A CSV of `path,label` rows giving the studies' dataset labels (label-correction mode).
    pub labels_csv: Option<PathBuf>,
    /// The reader's name; when absent the window asks at start (default: the OS user).
    pub reader: Option<String>,
    /// The decision store; `None` for the default in the user's data folder.
    pub db_path: Option<PathBuf>,
    /// The model card (`NAME.json`, with `NAME.safetensors` beside it).
    pub weights: PathBuf,
    /// Use the model in force at the store's site instead of `weights` when the site switched to
    /// one (`cxr-triage use-model`, an audited event); off when the reader named a model.
    pub follow_site_model: bool,
    /// Save a PNG of the window here once the scores are in, then close (for
    /// `scripts/screenshot.sh`).
    pub screenshot: Option<PathBuf>,
    /// Print frame times, time to first rows and peak memory to stderr on exit.
    pub print_stats: bool,
    /// Read and save preferences in eframe's storage.
    pub persist_preferences: bool,
    /// Wait this long before each write to the decision store, as a slow or locked disk would
    /// (benchmarks and tests of the window's responsiveness).
    pub store_write_delay: Option<std::time::Duration>,
    /// The waiting-time cap: an unreviewed study that has waited longer (since its DICOM study
    /// time, else since its file arrived) moves to the top of the worklist whatever its score.
    /// `None`: no cap.
    pub wait_limit: Option<std::time::Duration>,
    /// Blind-first reading: the score, AI label, rank and heat map of a study stay hidden until
    /// the reader's own call on it (recorded as a blind call); then they appear and the reader
    /// makes the final call (a confirm or an override).
    pub blind_first: bool,
    /// The share of studies queued for a second read by another reader, besides every override
    /// of the AI (see [`crate::audit::second_reads_due`]).
    pub second_read_share: f64,
}

/// The default waiting-time cap ([`AppConfig::wait_limit`]): 60 minutes.
pub const DEFAULT_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60 * 60);

impl AppConfig {
    /// A window with the model at `weights`, nothing opened, the default store.
    pub fn new(weights: PathBuf) -> Self {
        Self {
            folder: None,
            labels_csv: None,
            reader: None,
            db_path: None,
            weights,
            follow_site_model: true,
            screenshot: None,
            print_stats: false,
            persist_preferences: true,
            store_write_delay: None,
            wait_limit: Some(DEFAULT_WAIT_LIMIT),
            blind_first: false,
            second_read_share: crate::audit::DEFAULT_SECOND_READ_SHARE,
        }
    }
}

/// The state of a screenshot requested with [`AppConfig::screenshot`].
/// The review window.
pub struct App {
    config: AppConfig,
    prefs: Preferences,
    reader: String,
    commands: CommandSender,
    command_rx: std::sync::mpsc::Receiver<Command>,
    model: ModelState,
    db_path: Result<PathBuf, String>,
    writer: Option<writer::WriterHandle>,
    /// Claims and other readers' decisions on a shared store (see [`sync`]).
    sync: Option<sync::SyncHandle>,
    /// The newest decision event this window knows of, per study: a sync report older than
    /// this window's own write is ignored.
    newest_event: sync::NewestEvents,
    /// The database user signed in to a PostgreSQL store: the reader of every decision, not
    /// editable (`None` on SQLite).
    signed_in: Option<String>,
    /// Whether the connection to a PostgreSQL store is encrypted (TLS); `None` on SQLite.
    store_encrypted: Option<bool>,
    /// The studies other readers have open (SHA-256 to reader), as the store last said.
    claims: std::collections::HashMap<String, String>,
    store_error: Option<String>,
    /// Why the decisions waiting to be saved are being sent again (the server cannot be
    /// reached), until the writer acknowledges the one it was trying.
    retrying: Option<String>,
    /// The reader asked to close the window while decisions were not saved yet, was told so,
    /// and may now close it.
    close_anyway: bool,
    /// Decisions sent to the writer and not acknowledged yet, oldest first.
    pending: Vec<PendingWrite>,
    next_seq: u64,
    /// The last decision acknowledged, in words, for the status bar.
    saved_note: Option<String>,
    scorer: Option<ScorerHandle>,
    viewer: Option<ViewerHandle>,
    generation: u64,
    session: Option<Session>,
    cache: ImageCache,
    left: PaneView,
    right: PaneView,
    right_pane: RightPane,
    reason: String,
    toasts: Notifications,
    dialogs: dialogs::Dialogs,
    stats: FrameStats,
    frame_started: Option<Instant>,
    screenshot: Option<ScreenshotState>,
    last_wants: Option<Vec<Want>>,
    forgotten: Vec<ImageKey>,
    scroll_to_selected: bool,
    focus_reason: bool,
    pending_actual_size: bool,
    /// egui's clock at the start of this frame, in seconds.
    now: f64,
    /// The study whose full-resolution image is on screen in the main pane, and since when
    /// (egui's clock): a decision needs it there for `Preferences::min_view_secs`.
    shown: Option<(ImageKey, f64)>,
    /// Why the last decision asked for was not recorded, for the status bar.
    status: Option<String>,
    /// Whether the film has the whole viewer (no right pane).
    single_pane: bool,
}

impl App {
    /// Creates the window's state, starts the background threads and, if the configuration
    /// names one, opens a folder.
    pub fn new(cc: &eframe::CreationContext<'_>, config: AppConfig) -> Self {
        let ctx = cc.egui_ctx.clone();
        theme::apply(&ctx);
        let saved: Preferences = if config.persist_preferences {
            cc.storage
                .and_then(|s| eframe::get_value(s, prefs::STORAGE_KEY))
                .unwrap_or_default()
        } else {
            Preferences::default()
        };
        let (prefs, prefs_note) = saved.restored();
        let mut toasts = Notifications::default();
        if let Some(note) = prefs_note {
            toasts.add(Level::Info, note);
        }
        let viewer = ViewerHandle::spawn(ctx.clone())
            .map_err(|e| toasts.add(Level::Error, format!("cannot start the viewer: {e}")))
            .ok();
        let db_path = match &config.db_path {
            Some(p) => Ok(p.clone()),
            None => DecisionStore::default_path().map_err(|e| e.to_string()),
        };
        let site_db = db_path
            .as_ref()
            .ok()
            .filter(|_| config.follow_site_model)
            .cloned();
        let scorer = ScorerHandle::spawn(ctx.clone(), config.weights.clone(), site_db)
            .map_err(|e| toasts.add(Level::Error, format!("cannot start scoring: {e}")))
            .ok();
        // The store is opened and written on the writer thread only.
        let writer =
            writer::WriterHandle::spawn(ctx.clone(), db_path.clone(), config.store_write_delay)
                .map_err(|e| toasts.add(Level::Error, format!("cannot start saving: {e}")))
                .ok();
        let sync = db_path.as_ref().ok().and_then(|p| {
            sync::SyncHandle::spawn(
                ctx.clone(),
                p.clone(),
                std::time::Duration::from_secs(1),
                config.second_read_share,
            )
            .map_err(|e| tracing::warn!(target: "cxr_triage::app", "no store sync: {e}"))
            .ok()
        });
        let store_error = db_path.as_ref().err().cloned();
        let reader = config.reader.clone().unwrap_or_else(|| {
            if prefs.reader.trim().is_empty() {
                prefs::os_user()
            } else {
                prefs.reader.clone()
            }
        });
        let dialogs = dialogs::Dialogs {
            reader_prompt: config.reader.is_none(),
            ..dialogs::Dialogs::default()
        };
        let screenshot = config.screenshot.clone().map(|out| ScreenshotState {
            out,
            ready_frames: 0,
            requested: false,
            started: Instant::now(),
            result: Arc::new(Mutex::new(None)),
        });
        let (command_tx, command_rx) = std::sync::mpsc::channel();
        let commands = CommandSender::new(command_tx, ctx.clone());
        if let Some(folder) = &config.folder {
            commands.send(Command::OpenFolder(folder.clone()));
        }
        Self {
            config,
            prefs,
            reader,
            commands,
            command_rx,
            model: ModelState::Loading,
            db_path,
            writer,
            sync,
            newest_event: sync::NewestEvents::default(),
            signed_in: None,
            store_encrypted: None,
            claims: std::collections::HashMap::new(),
            store_error,
            retrying: None,
            close_anyway: false,
            pending: Vec::new(),
            next_seq: 1,
            saved_note: None,
            scorer,
            viewer,
            generation: 0,
            session: None,
            cache: ImageCache::default(),
            left: PaneView::default(),
            right: PaneView::default(),
            right_pane: RightPane::Explanation,
            reason: String::new(),
            toasts,
            dialogs,
            stats: FrameStats::default(),
            frame_started: None,
            screenshot,
            last_wants: None,
            forgotten: Vec::new(),
            scroll_to_selected: false,
            focus_reason: false,
            pending_actual_size: false,
            now: 0.0,
            shown: None,
            status: None,
            single_pane: false,
        }
    }

    /// Queues a command; it is applied at the start of the next frame.
    pub fn push(&mut self, command: Command) {
        self.commands.send(command);
    }

    /// A handle that queues commands for this window from anywhere (it can be cloned and kept).
    pub fn command_sender(&self) -> CommandSender {
        self.commands.clone()
    }

    /// Whether decisions sent to the decision store are waiting for its acknowledgement.
    pub fn is_saving(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Why the decisions waiting to be saved are being sent again, while the store's server
    /// cannot be reached (the window says "Not saved, retrying").
    pub fn save_retrying(&self) -> Option<&str> {
        self.retrying.as_deref()
    }

    /// The open folder's worklist, once listed.
    pub fn worklist(&self) -> Option<&Worklist> {
        self.session
            .as_ref()
            .filter(|s| s.listed)
            .map(|s| &s.worklist)
    }

    /// The studies in the order the worklist shows them (sorted and filtered).
    pub fn view_order(&self) -> &[StudyId] {
        self.session.as_ref().map_or(&[], |s| &s.order.view)
    }

    /// The selected study.
    pub fn selected(&self) -> Option<StudyId> {
        self.session.as_ref().and_then(|s| s.selected)
    }

    /// Whether the open folder is still being listed or scored.
    pub fn is_scoring(&self) -> bool {
        self.session.as_ref().is_some_and(Session::is_scoring)
    }

    /// Whether the model is loaded.
    pub fn model_ready(&self) -> bool {
        matches!(self.model, ModelState::Ready(_))
    }

    /// The loaded model's name (the one in force at the store's site, see
    /// [`AppConfig::follow_site_model`]).
    pub fn model_id(&self) -> Option<&str> {
        self.classifier().map(|c| c.card().model_id.as_str())
    }

    /// The reader's name as decisions record it.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// The database user signed in to a PostgreSQL store (`None` on SQLite).
    pub fn signed_in(&self) -> Option<&str> {
        self.signed_in.as_deref()
    }

    /// The decision store's file.
    pub fn store_path(&self) -> Option<&Path> {
        self.db_path.as_deref().ok()
    }

    /// The notices on screen, oldest first.
    pub fn notices(&self) -> Vec<String> {
        self.toasts
            .toasts()
            .iter()
            .map(|t| t.text.clone())
            .collect()
    }

    /// Whether everything is on screen: the folder scored, and the selected study and its heat
    /// map (or their errors) shown.
    pub fn is_settled(&self) -> bool {
        self.screenshot_ready()
    }

    /// The main pane's zoom, pan and window.
    pub fn left_pane(&self) -> PaneState {
        PaneState {
            zoom: self.left.transform.zoom,
            center: self.left.transform.center,
            window: self.left.window,
            invert: self.left.invert,
            linked: self.prefs.link_views,
        }
    }

    /// Why a decision on the selected study would not be recorded now (no study, its image not
    /// on screen yet or not long enough, the study hidden by the filter); `None` when it would.
    pub fn decision_blocked(&self) -> Option<String> {
        self.viewing(true).err()
    }

    /// Whether the selected study's full-resolution image is on screen in the main pane (not the
    /// loading placeholder), and for how many seconds.
    pub fn image_on_screen_secs(&self) -> Option<f64> {
        let s = self.session.as_ref()?;
        let key = s.key(s.selected?);
        self.shown
            .filter(|(k, _)| *k == key)
            .map(|(_, since)| self.now - since)
    }

    /// What the main pane's texture shows now (the selected study), once delivered.
    pub fn displayed_image(&self) -> Option<DisplayedImage> {
        let s = self.session.as_ref()?;
        match self.cache.image(s.key(s.selected?))? {
            ImageEntry::Ready {
                window,
                invert,
                textures,
                ..
            } => Some(DisplayedImage {
                window: *window,
                invert: *invert,
                digest: textures.digest,
                mean: textures.mean,
            }),
            ImageEntry::Failed(_) => None,
        }
    }

    /// The selected study's display windows: its default, full range and 1–99 % percentiles.
    pub fn selected_windows(&self) -> Option<[Window; 3]> {
        let info = self.selected_info()?;
        Some([info.default_window, info.full_range, info.auto_window])
    }

    /// Whether the film has the whole viewer (S).
    pub fn single_pane(&self) -> bool {
        self.single_pane
    }

    /// What the status bar says about the last decision asked for that was not recorded.
    pub fn status_message(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// Frame times recorded so far.
    pub fn frame_stats(&self) -> &FrameStats {
        &self.stats
    }

    /// Seconds from opening the folder to its first score (drawn in the same frame).
    pub fn first_score_secs(&self) -> Option<f64> {
        self.session
            .as_ref()
            .and_then(|s| s.progress.first_score_secs)
    }

    /// Seconds from opening the folder to its first rows, and to its last score.
    pub fn timings_secs(&self) -> (Option<f64>, Option<f64>) {
        self.session.as_ref().map_or((None, None), |s| {
            (s.progress.first_rows_secs, s.progress.finished_secs)
        })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(s) = &self.session {
            s.cancel.store(true, Ordering::Relaxed);
        }
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.frame_started = Some(Instant::now());
        self.now = ctx.input(|i| i.time);
        self.drain_scorer();
        self.drain_viewer();
        self.drain_writer();
        self.drain_sync();
        self.poll_dialogs();
        self.dropped_files(ctx);
        self.guard_close(ctx);
        self.shortcuts(ctx);
        self.apply_commands();
        self.check_waiting_cap();
        self.sync_viewing();
        self.refresh_view();
        self.request_images(ctx);
        self.screenshot_logic(ctx);
        if self.is_scoring() {
            // The progress bar moves; the scorer also wakes the window after every batch.
            ctx.request_repaint_after_secs(0.25);
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.draw(ui);
        if let Some(started) = self.frame_started.take() {
            // The previous frame's full CPU time (layout, tessellation, painting) when the
            // integration reports it; our own logic and drawing otherwise (tests).
            let app_ms = started.elapsed().as_secs_f64() * 1000.0;
            let ms = frame
                .info()
                .cpu_usage
                .map_or(app_ms, |s| f64::from(s) * 1000.0);
            self.stats.record(ms, app_ms, self.is_scoring());
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.config.persist_preferences {
            // A database user is not a name the reader typed.
            if self.signed_in.is_none() {
                self.prefs.reader.clone_from(&self.reader);
            }
            eframe::set_value(storage, prefs::STORAGE_KEY, &self.prefs);
        }
    }

    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        if self.screenshot.is_some() {
            // A screenshot shows the window at rest: no hover effects where the pointer happens
            // to be on the virtual screen.
            raw_input.events.retain(|e| {
                !matches!(e, egui::Event::PointerMoved(_) | egui::Event::MouseMoved(_))
            });
        }
    }

    fn on_exit(&mut self) {
        if self.config.print_stats && self.screenshot.is_none() {
            self.print_stats();
        }
    }
}

/// Opens the window and runs it until it is closed.
pub fn run(config: AppConfig) -> eframe::Result {
    let persistence_path = if config.persist_preferences {
        None
    } else {
        // Keep test and screenshot runs out of the reader's preferences.
        Some(std::env::temp_dir().join(format!("cxr-triage-{}.ron", std::process::id())))
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("cxr-triage")
            .with_app_id("cxr-triage")
            .with_inner_size([1440.0, 900.0])
            .with_min_inner_size([960.0, 600.0])
            .with_drag_and_drop(true),
        persistence_path,
        ..Default::default()
    };
    eframe::run_native(
        "cxr-triage",
        options,
        Box::new(|cc| Ok(Box::new(App::new(cc, config)))),
    )
}
