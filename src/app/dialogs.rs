//! Dialogs: the system's folder and file choosers (off the UI thread), their path-field
//! fallbacks, the reader's name, the shortcut overlay, model information and diagnostics.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use egui::{Id, Key, Modal, RichText};
use poll_promise::Promise;

use super::notifications::Level;
use super::{App, Command, theme};
use crate::audit::ExportKind;

/// Shown when the system's dialog returned no folder.
const NO_FOLDER_DIALOG: &str = "No folder was chosen. If no dialog appeared, this desktop has no \
file-chooser service (xdg-desktop-portal, or zenity): type or paste the folder's path instead.";

/// Shown when the system's dialog returned no file.
const NO_SAVE_DIALOG: &str = "No file was chosen. If no dialog appeared, this desktop has no \
file-chooser service (xdg-desktop-portal, or zenity): type the path of the CSV file to write.";

/// Every keyboard shortcut, as the help overlay and the README list them.
pub(crate) const SHORTCUTS: [(&str, &str); 22] = [
    ("C or Enter", "Confirm the AI label"),
    ("N", "Set NORMAL"),
    ("P", "Set PNEUMONIA"),
    ("Ctrl+Z", "Undo the last decision"),
    ("R", "Type a reason (Enter to finish)"),
    ("J or Down", "Next study"),
    ("K or Up", "Previous study"),
    ("Page Down / Page Up", "20 studies down / up"),
    ("Home / End", "First / last study"),
    ("U", "Next unreviewed study"),
    (
        "1 2 3 4",
        "Window: default, full range, auto, high contrast",
    ),
    ("I", "Invert black and white"),
    (
        "Right-drag",
        "Window/level: across for width, up/down for level",
    ),
    ("Wheel / drag", "Zoom at the pointer / pan"),
    ("F / O", "Fit / one image pixel per screen pixel (1:1)"),
    ("L", "Link or unlink zoom, pan and window of the panes"),
    ("H", "Show the heat map in the right pane"),
    (
        "S",
        "Single pane: give the film the whole viewer (again: both panes)",
    ),
    ("Ctrl+O", "Open a folder"),
    ("Ctrl+E", "Export reviewed cases (CSV)"),
    ("F1 or ?", "Show or hide this help"),
    ("Esc", "Close a dialog; leave the reason field"),
];

/// A path typed by hand, when the system's dialog is not available.
#[derive(Debug, Default)]
pub(super) struct PathDialog {
    pub text: String,
    pub message: Option<String>,
    /// Whether the path field has been given the keyboard once (when the dialog opened), so
    /// that the reader can type or paste at once.
    pub focused: bool,
}

impl PathDialog {
    /// Gives `field` the keyboard the first time the dialog is drawn.
    fn focus_once(&mut self, field: &egui::Response) {
        if !self.focused {
            field.request_focus();
            self.focused = true;
        }
    }
}

/// The outcome of an export: rows written, where, and what.
type ExportOutcome = Result<(usize, PathBuf, ExportKind, String), String>;

/// A background job's result, taken once it is ready (the job is kept until then).
pub(super) fn poll_job<T: Send + 'static>(job: &mut Option<Promise<T>>) -> Option<T> {
    match job.take()?.try_take() {
        Ok(result) => Some(result),
        Err(running) => {
            *job = Some(running);
            None
        }
    }
}

/// Which dialogs are open, and the one-off jobs behind them.
#[derive(Default)]
pub(super) struct Dialogs {
    /// The shortcut overlay.
    pub help: bool,
    /// The model information window.
    pub model_info: bool,
    /// The diagnostics window (frame times, memory).
    pub diagnostics: bool,
    /// The reader-name prompt.
    pub reader_prompt: bool,
    /// The path field for opening a folder.
    pub open_folder: Option<PathDialog>,
    /// The path field for an export.
    pub export_path: Option<(ExportKind, PathDialog)>,
    /// The system's folder dialog, running.
    pub folder_picker: Option<Promise<Option<PathBuf>>>,
    /// The system's save dialog, running, with the path suggested.
    pub save_picker: Option<(ExportKind, PathBuf, Promise<Option<PathBuf>>)>,
    /// An export, running.
    pub export_job: Option<Promise<ExportOutcome>>,
    /// The Local performance window.
    pub local: Option<super::local_ui::LocalView>,
    /// The Adapt to this site window.
    pub adapt: Option<super::adapt_ui::AdaptView>,
    /// The Reader agreement window.
    pub qa: Option<super::qa_ui::QaView>,
}

impl Dialogs {
    /// Whether a dialog that takes the keyboard is open.
    pub fn any_modal_open(&self) -> bool {
        self.help || self.reader_prompt || self.open_folder.is_some() || self.export_path.is_some()
    }

    /// Starts the system's folder dialog on its own thread.
    pub fn choose_folder(&mut self, start: Option<&PathBuf>) {
        if self.folder_picker.is_some() {
            return;
        }
        let start = start.cloned();
        self.folder_picker = Some(Promise::spawn_thread("folder-dialog", move || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let mut dialog = rfd::FileDialog::new().set_title("Open a folder of chest X-rays");
                if let Some(dir) = start.as_deref().and_then(std::path::Path::parent) {
                    dialog = dialog.set_directory(dir);
                }
                dialog.pick_folder()
            }))
            .unwrap_or(None)
        }));
    }

    /// Starts the system's save dialog on its own thread.
    pub fn choose_export_file(&mut self, kind: ExportKind, suggested: PathBuf) {
        if self.save_picker.is_some() {
            return;
        }
        let start = suggested.clone();
        let promise = Promise::spawn_thread("save-dialog", move || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let mut dialog = rfd::FileDialog::new()
                    .set_title("Export decisions as CSV")
                    .add_filter("CSV", &["csv"]);
                if let Some(dir) = start.parent() {
                    dialog = dialog.set_directory(dir);
                }
                if let Some(name) = start.file_name() {
                    dialog = dialog.set_file_name(name.to_string_lossy());
                }
                dialog.save_file()
            }))
            .unwrap_or(None)
        });
        self.save_picker = Some((kind, suggested, promise));
    }
}

impl App {
    /// Collects the outcome of dialogs and exports that finished.
    pub(super) fn poll_dialogs(&mut self) {
        if let Some(picker) = self.dialogs.folder_picker.take() {
            match picker.try_take() {
                Ok(Some(folder)) => self.commands.send(Command::OpenFolder(folder)),
                Ok(None) => {
                    let text = self
                        .prefs
                        .recent_folders
                        .first()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    self.dialogs.open_folder = Some(PathDialog {
                        text,
                        message: Some(NO_FOLDER_DIALOG.to_owned()),
                        focused: false,
                    });
                }
                Err(picker) => self.dialogs.folder_picker = Some(picker),
            }
        }
        if let Some((kind, suggested, picker)) = self.dialogs.save_picker.take() {
            match picker.try_take() {
                Ok(Some(dest)) => self.commands.send(Command::ExportCsv { dest, kind }),
                Ok(None) => {
                    self.dialogs.export_path = Some((
                        kind,
                        PathDialog {
                            text: suggested.display().to_string(),
                            message: Some(NO_SAVE_DIALOG.to_owned()),
                            focused: false,
                        },
                    ));
                }
                Err(picker) => self.dialogs.save_picker = Some((kind, suggested, picker)),
            }
        }
        if let Some(job) = self.dialogs.export_job.take() {
            match job.try_take() {
                Ok(Ok((rows, dest, kind, receipt))) => {
                    let what = match kind {
                        ExportKind::Reviewed => "reviewed studies",
                        ExportKind::All => "studies",
                        ExportKind::Events => "decision events",
                    };
                    self.toasts.add(
                        Level::Success,
                        format!(
                            "Exported {rows} {what} to {}. Receipt (keep it elsewhere; `cxr-triage audit verify --receipt` checks the store against it): {receipt}",
                            dest.display()
                        ),
                    );
                }
                Ok(Err(e)) => self
                    .toasts
                    .add(Level::Error, format!("The export failed: {e}")),
                Err(job) => self.dialogs.export_job = Some(job),
            }
        }
    }

    /// Draws the open dialogs.
    pub(super) fn dialogs_ui(&mut self, ctx: &egui::Context) {
        if self.dialogs.reader_prompt {
            self.reader_prompt_ui(ctx);
        }
        if self.dialogs.open_folder.is_some() {
            self.open_folder_ui(ctx);
        }
        if self.dialogs.export_path.is_some() {
            self.export_path_ui(ctx);
        }
        if self.dialogs.help {
            let response = Modal::new(Id::unique("help")).show(ctx, |ui| {
                ui.heading("Keyboard shortcuts");
                ui.add_space(6.0);
                let max_height = (ctx.content_rect().height() - 160.0).max(120.0);
                egui::ScrollArea::vertical()
                    .max_height(max_height)
                    .show(ui, |ui| {
                        // Two columns of shortcuts: decisions and moving on the left, viewing
                        // and files on the right.
                        let half = SHORTCUTS.len().div_ceil(2);
                        egui::Grid::new("shortcuts")
                            .num_columns(4)
                            .spacing([18.0, 6.0])
                            .striped(true)
                            .show(ui, |ui| {
                                for i in 0..half {
                                    for (keys, what) in [SHORTCUTS.get(i), SHORTCUTS.get(i + half)]
                                        .into_iter()
                                        .flatten()
                                    {
                                        ui.label(
                                            RichText::new(*keys).monospace().color(theme::ACCENT),
                                        );
                                        ui.label(*what);
                                    }
                                    ui.end_row();
                                }
                            });
                    });
                ui.add_space(8.0);
                ui.label(
                    RichText::new(
                        "After each decision the next unreviewed study is selected. Every \
                         decision is appended to the audit trail with your name, the score and \
                         the model.",
                    )
                    .color(theme::TEXT_DIM),
                );
                ui.add_space(4.0);
                if ui.button("Close").clicked() {
                    ui.close();
                }
            });
            if response.should_close() {
                self.dialogs.help = false;
            }
        }
        if self.dialogs.model_info {
            let mut open = true;
            egui::Window::new("Model information")
                .open(&mut open)
                .default_width(520.0)
                .show(ctx, |ui| self.model_info_ui(ui));
            self.dialogs.model_info = open;
        }
        self.local_performance_ui(ctx);
        self.adapt_ui(ctx);
        self.qa_ui(ctx);
        if self.dialogs.diagnostics {
            let mut open = true;
            egui::Window::new("Diagnostics")
                .open(&mut open)
                .default_width(520.0)
                .show(ctx, |ui| self.diagnostics_ui(ui));
            self.dialogs.diagnostics = open;
        }
    }

    fn reader_prompt_ui(&mut self, ctx: &egui::Context) {
        let mut done = false;
        Modal::new(Id::unique("reader-prompt")).show(ctx, |ui| {
            ui.set_width(420.0);
            ui.heading("Who is reading?");
            ui.label(
                RichText::new("Every decision is recorded in the audit trail under this name.")
                    .color(theme::TEXT_DIM),
            );
            ui.add_space(6.0);
            let label = ui.label("Reader name");
            let field = ui.add(
                egui::TextEdit::singleline(&mut self.reader)
                    .hint_text("Reader name")
                    .desired_width(f32::INFINITY),
            );
            let field = field.labelled_by(label.id);
            if !field.has_focus() && !field.lost_focus() {
                field.request_focus();
            }
            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            ui.add_space(6.0);
            let ok = ui.add_enabled(
                !self.reader.trim().is_empty(),
                egui::Button::new("Start reading"),
            );
            if (ok.clicked() || entered) && !self.reader.trim().is_empty() {
                done = true;
            }
        });
        if done {
            self.reader = self.reader.trim().to_owned();
            self.dialogs.reader_prompt = false;
        }
    }

    fn open_folder_ui(&mut self, ctx: &egui::Context) {
        let Some(dialog) = &mut self.dialogs.open_folder else {
            return;
        };
        let mut open = None;
        let mut cancel = false;
        let response = Modal::new(Id::unique("open-folder")).show(ctx, |ui| {
            ui.set_width(560.0);
            ui.heading("Open a folder");
            if let Some(message) = &dialog.message {
                ui.label(RichText::new(message).color(theme::WARNING));
            }
            ui.add_space(6.0);
            let label = ui.label("Folder path");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut dialog.text)
                        .hint_text("/path/to/studies")
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id);
            dialog.focus_once(&field);
            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            ui.horizontal(|ui| {
                if ui.button("Open").clicked() || entered {
                    open = Some(PathBuf::from(dialog.text.trim()));
                }
                if ui.button("Cancel").clicked() {
                    cancel = true;
                }
            });
        });
        if let Some(path) = open.filter(|p| !p.as_os_str().is_empty()) {
            self.commands.send(Command::OpenFolder(path));
            self.dialogs.open_folder = None;
        } else if cancel || response.should_close() {
            self.dialogs.open_folder = None;
        }
    }

    fn export_path_ui(&mut self, ctx: &egui::Context) {
        let Some((kind, dialog)) = &mut self.dialogs.export_path else {
            return;
        };
        let kind = *kind;
        let mut export = None;
        let mut cancel = false;
        let response = Modal::new(Id::unique("export-path")).show(ctx, |ui| {
            ui.set_width(560.0);
            ui.heading("Export decisions as CSV");
            if let Some(message) = &dialog.message {
                ui.label(RichText::new(message).color(theme::WARNING));
            }
            ui.add_space(6.0);
            let label = ui.label("CSV file");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut dialog.text)
                        .hint_text("/path/to/export.csv")
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id);
            dialog.focus_once(&field);
            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            ui.horizontal(|ui| {
                if ui.button("Export").clicked() || entered {
                    export = Some(PathBuf::from(dialog.text.trim()));
                }
                if ui.button("Cancel").clicked() {
                    cancel = true;
                }
            });
        });
        if let Some(dest) = export.filter(|p| !p.as_os_str().is_empty()) {
            self.commands.send(Command::ExportCsv { dest, kind });
            self.dialogs.export_path = None;
        } else if cancel || response.should_close() {
            self.dialogs.export_path = None;
        }
    }

    fn model_info_ui(&self, ui: &mut egui::Ui) {
        match &self.model {
            super::ModelState::Loading => {
                ui.label("The model is loading…");
            }
            super::ModelState::Failed(e) => {
                ui.label(
                    RichText::new(format!("The model could not be loaded: {e}"))
                        .color(theme::ERROR),
                );
            }
            super::ModelState::Ready(classifier) => {
                let card = classifier.card();
                egui::Grid::new("model-card")
                    .num_columns(2)
                    .spacing([16.0, 4.0])
                    .show(ui, |ui| {
                        let mut row = |k: &str, v: String| {
                            ui.label(RichText::new(k).color(theme::TEXT_DIM));
                            ui.label(v);
                            ui.end_row();
                        };
                        row("Model", card.model_id.clone());
                        row("Architecture", card.arch_id.clone());
                        row("Trained by", format!("cxr-triage {}", card.app_version));
                        row("Created", card.created_at.clone());
                        row(
                            "Input",
                            format!("{0}x{0} pixels, grayscale", card.normalisation.input_size),
                        );
                        row("Score", card.score_description());
                        row("Threshold", format!("{:.3}", card.threshold));
                        row("Threshold rule", card.threshold_rule.clone());
                        row(
                            "Training data",
                            format!(
                                "{} ({} training and {} validation images)",
                                card.training.data,
                                card.training.train_images,
                                card.training.validation_images
                            ),
                        );
                        for (what, line) in card.source_figures() {
                            row(&what, line);
                        }
                        if card.test.is_none() {
                            row("Test set", "not measured yet".to_owned());
                        }
                        row("Weights SHA-256", card.weights_sha256.clone());
                        row("Card SHA-256", classifier.card_sha256().to_owned());
                    });
                ui.add_space(8.0);
                ui.label(RichText::new("Intended use and limits").strong());
                ui.label(&card.intended_use);
            }
        }
    }

    fn diagnostics_ui(&self, ui: &mut egui::Ui) {
        let (first_rows, finished) = self.timings_secs();
        let studies = self.worklist().map_or(0, crate::worklist::Worklist::len);
        ui.label(format!("Studies in the open folder: {studies}"));
        if let Some(t) = first_rows {
            ui.label(format!("First rows after {:.0} ms", t * 1000.0));
        }
        if let Some(t) = finished {
            ui.label(format!("All scored after {t:.1} s"));
        }
        ui.add_space(4.0);
        ui.label(RichText::new("Frame times while scoring").strong());
        ui.label(self.stats.while_scoring().to_string());
        ui.label(RichText::new("Frame times otherwise").strong());
        ui.label(self.stats.idle().to_string());
        if let Some(kib) = super::screenshot::peak_rss_kib() {
            ui.label(format!("Peak memory: {:.0} MiB", kib as f64 / 1024.0));
        }
        if let Some(path) = self.store_path() {
            ui.label(format!("Decision store: {}", path.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use egui::{Event, Key, Modifiers, RawInput};

    use crate::app::command::{KeyOutcome, key_outcome};

    /// What the window's key handler does with a key press; `held`: with the key's repeat that
    /// follows in the next frame while it is held down (egui marks it as a repeat), the
    /// outcome of that frame.
    fn press(modifiers: Modifiers, key: Key, held: bool) -> KeyOutcome {
        let ctx = egui::Context::default();
        let mut out = KeyOutcome::default();
        let event = Event::Key {
            key,
            physical_key: None,
            pressed: true,
            repeat: false,
            modifiers,
        };
        for _ in 0..if held { 2 } else { 1 } {
            let raw = RawInput {
                events: vec![event.clone()],
                ..RawInput::default()
            };
            let _ = ctx.run_pass(raw, |ctx| out = ctx.input_mut(key_outcome));
        }
        out
    }

    /// The keys a row of [`SHORTCUTS`] names, in groups: keys joined by "or" do the same thing
    /// and share a group; keys joined by "/" or listed with spaces ("1 2 3 4") do different
    /// things. `None` for pointer gestures.
    fn groups_of(keys: &str) -> Option<Vec<Vec<(Modifiers, Key)>>> {
        if keys.contains("drag") || keys.contains("Wheel") {
            return None;
        }
        let parse = |name: &str| {
            let (modifiers, name) = match name.strip_prefix("Ctrl+") {
                Some(rest) => (Modifiers::COMMAND, rest),
                None => (Modifiers::NONE, name),
            };
            let key = Key::from_name(&name.replace("Page ", "Page"))
                .unwrap_or_else(|| panic!("the help names a key egui does not know: {name}"));
            (modifiers, key)
        };
        let mut groups = Vec::new();
        for part in keys.split(" / ") {
            let alternatives: Vec<&str> = part.split(" or ").collect();
            if alternatives.len() == 1 && part.contains(' ') && !part.starts_with("Page ") {
                groups.extend(part.split(' ').map(|k| vec![parse(k)]));
            } else {
                groups.push(alternatives.into_iter().map(parse).collect());
            }
        }
        Some(groups)
    }

    /// Keys of the help that the shortcut handler leaves to others: Esc closes dialogs (egui's
    /// modals) and leaves the reason field (the text field).
    const HANDLED_ELSEWHERE: [Key; 1] = [Key::Escape];

    #[test]
    fn every_key_in_the_help_does_what_its_row_says_and_no_other_key_acts() {
        let mut listed = Vec::new();
        let mut outcomes: Vec<(String, KeyOutcome)> = Vec::new();
        for (keys, what) in SHORTCUTS {
            let Some(groups) = groups_of(keys) else {
                continue;
            };
            for group in groups {
                let first = press(group[0].0, group[0].1, false);
                for &(modifiers, key) in &group {
                    listed.push((modifiers, key));
                    let outcome = press(modifiers, key, false);
                    if HANDLED_ELSEWHERE.contains(&key) {
                        assert_eq!(outcome, KeyOutcome::default(), "{keys}");
                        continue;
                    }
                    assert_ne!(
                        outcome,
                        KeyOutcome::default(),
                        "{keys} ({what}) does nothing"
                    );
                    assert_eq!(outcome, first, "the keys of {keys} do different things");
                }
                if !HANDLED_ELSEWHERE.contains(&group[0].1) {
                    outcomes.push((format!("{keys}: {:?}", group[0].1), first));
                }
            }
        }
        // Different rows (and the keys of a row joined by "/") do different things.
        for (i, (a, x)) in outcomes.iter().enumerate() {
            for (b, y) in &outcomes[i + 1..] {
                assert_ne!(x, y, "{a} and {b} do the same thing");
            }
        }
        // A key that does something is in the help.
        for &key in Key::ALL {
            for modifiers in [Modifiers::NONE, Modifiers::COMMAND, Modifiers::SHIFT] {
                if press(modifiers, key, false) != KeyOutcome::default() {
                    assert!(
                        listed
                            .iter()
                            .any(|&(m, k)| k == key && modifiers.matches_logically(m)),
                        "{modifiers:?} {key:?} acts but the help does not list it"
                    );
                }
            }
        }
    }

    #[test]
    fn the_repeats_of_a_held_decision_key_do_nothing() {
        for key in [Key::C, Key::Enter, Key::N, Key::P] {
            assert_ne!(press(Modifiers::NONE, key, false), KeyOutcome::default());
            assert_eq!(
                press(Modifiers::NONE, key, true),
                KeyOutcome::default(),
                "{key:?} repeated"
            );
        }
    }

    #[test]
    fn the_readme_lists_every_shortcut_as_the_window_does() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        for (keys, what) in SHORTCUTS {
            let row = format!("| {keys} | {what} |");
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }
}
