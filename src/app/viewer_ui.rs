//! The viewer: the study's header (score, threshold, AI label, model), two panes side by side
//! (the study; its heat map or another study), and the decision bar.

use egui::{Align2, Color32, FontId, PointerButton, Pos2, Rect, RichText, Sense, Stroke, Vec2};

use super::view::{self, ViewTransform, WindowPreset};
use super::viewer_worker::ImageInfo;
use super::{App, Command, HeatEntry, ImageEntry, PaneView, RightPane, theme};
use crate::model::card::ModelCard;
use crate::model::gradcam::{overlay_alpha, turbo};
use crate::worklist::{Disposition, Label, ReviewState, StudyId};

/// Which pane is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// What the reader did in a pane this frame.
#[derive(Default)]
struct PaneInput {
    transform: Option<ViewTransform>,
    window_drag: Option<Vec2>,
}

/// The heat map to draw over a pane.
struct Overlay<'a> {
    heat: Option<&'a HeatEntry>,
    opacity: f32,
    pending_text: &'static str,
}

/// The tooltip on the score and threshold: what they mean, with the figures of every set the
/// model was measured on.
pub(super) fn score_explanation(card: &ModelCard) -> String {
    let figures: String = card
        .source_figures()
        .iter()
        .map(|(what, line)| format!("\n• {what}: {line}"))
        .collect();
    format!(
        "The score is the model's estimate of the probability of pneumonia, from 0 to 1, \
         calibrated on its validation films. A study scoring {t:.3} (the threshold) or more is \
         called PNEUMONIA. The threshold was chosen for high sensitivity on every validation \
         source: it raises the priority of likely cases; it is not a diagnosis.\n\n\
         At this threshold:{figures}\n\n\
         {limits}",
        t = card.threshold,
        limits = super::shell_ui::not_seen_sentence(&card.intended_use),
    )
}

impl App {
    /// Draws the central area.
    pub(super) fn viewer_ui(&mut self, ui: &mut egui::Ui) {
        let has_banner = matches!(self.model, super::ModelState::Failed(_))
            || self.store_error.is_some()
            || self.retrying.is_some()
            || self
                .session
                .as_ref()
                .is_some_and(|s| s.uniform_warning.is_some());
        if has_banner {
            egui::Panel::top("banners")
                .frame(egui::Frame::new().inner_margin(egui::Margin::same(6)))
                .show(ui, |ui| self.banners_ui(ui));
        }
        let selected = self.session.as_ref().and_then(|s| s.selected);
        let Some(id) = selected else {
            ui.centered_and_justified(|ui| {
                let text = if self.session.is_some() {
                    "Select a study in the worklist: J/K or the arrow keys to move, F1 for every shortcut"
                } else {
                    "Open a folder (Ctrl+O) or drop one on the window"
                };
                ui.label(RichText::new(text).color(theme::TEXT_DIM).size(15.0));
            });
            return;
        };
        egui::Panel::top("study-header")
            .frame(
                egui::Frame::new()
                    .fill(theme::PANEL_RAISED)
                    .inner_margin(egui::Margin::symmetric(12, 8)),
            )
            .show(ui, |ui| self.study_header_ui(ui, id));
        egui::Panel::top("viewer-toolbar")
            .frame(egui::Frame::new().inner_margin(egui::Margin::symmetric(8, 4)))
            .show(ui, |ui| self.viewer_toolbar_ui(ui, id));
        egui::Panel::bottom("decision-bar")
            .frame(
                egui::Frame::new()
                    .fill(theme::PANEL_RAISED)
                    .inner_margin(egui::Margin::symmetric(12, 8)),
            )
            .show(ui, |ui| self.decision_bar_ui(ui, id));
        egui::CentralPanel::default()
            .frame(
                egui::Frame::new()
                    .fill(theme::PANEL)
                    .inner_margin(egui::Margin::same(4)),
            )
            .show(ui, |ui| self.panes_ui(ui, id));
    }

    fn study_header_ui(&mut self, ui: &mut egui::Ui, id: StudyId) {
        let Some(s) = &self.session else { return };
        let Some(row) = s.worklist.row(id) else {
            return;
        };
        let card = self.classifier().map(|c| c.card().clone());
        let card_sha = self
            .classifier()
            .map(|c| c.card_sha256().to_owned())
            .unwrap_or_default();
        ui.horizontal(|ui| {
            let (file, _) = super::worklist_ui::split_name(&row.name);
            ui.label(RichText::new(file).size(16.0).strong())
                .on_hover_text(row.path.display().to_string());
            // What a radiologist reads first: age, sex, study date, view (DICOM).
            if let Some(facts) = row.facts.summary() {
                ui.label(RichText::new(facts).size(14.0).color(theme::TEXT))
                    .on_hover_text("Patient's age and sex, study date, view position (DICOM)");
            }
            let hidden = super::command::ai_hidden(self.config.blind_first, &s.worklist, row);
            let rank = s.order.ranks.get(id.0).copied().flatten();
            let mut line = match rank {
                _ if hidden => "blind-first reading: the AI's call is shown after yours".to_owned(),
                Some(r) => format!("rank {r} of {}", s.order.counts.scored),
                None => "not ranked".to_owned(),
            };
            if let Some(ImageEntry::Ready { info, .. }) = self.cache.image(s.key(id)) {
                line.push_str(&format!(
                    " · {} · {}×{}",
                    info.description, info.width, info.height
                ));
            }
            if let Some(p) = &row.patient_id {
                line.push_str(&format!(" · patient {p}"));
            }
            if let Some(reader) = &row.claimed_by
                && !s.worklist.review_state(row).is_reviewed()
            {
                ui.label(
                    RichText::new(format!("being read by {reader}"))
                        .color(theme::WARNING)
                        .strong(),
                )
                .on_hover_text("Another reader has this study open in their window");
            }
            if let Some(waited) = row.facts.waited(std::time::SystemTime::now()) {
                let from = row.facts.waiting_since.map(|(_, from)| from.as_str());
                ui.label(
                    RichText::new(format!("waiting {}", crate::worklist::waiting_text(waited)))
                        .color(theme::TEXT),
                )
                .on_hover_text(from.unwrap_or_default());
            }
            ui.add(egui::Label::new(RichText::new(line).color(theme::TEXT_DIM)).truncate());
        });
        ui.add_space(4.0);
        ui.horizontal_wrapped(|ui| {
            let hidden = super::command::ai_hidden(self.config.blind_first, &s.worklist, row);
            let explanation = card.as_ref().map(score_explanation);
            let ai = s.worklist.ai_label(row).filter(|_| !hidden);
            let (score_text, score_colour) = match (row.score_value(), row.error()) {
                (Some(_), _) if hidden => ("after your call".to_owned(), theme::TEXT_DIM),
                (Some(v), _) => (
                    super::worklist_ui::score_text(v),
                    ai.map_or(theme::TEXT, theme::label_colour),
                ),
                (None, Some(_)) => ("failed".to_owned(), theme::ERROR),
                (None, None) => ("pending".to_owned(), theme::TEXT_DIM),
            };
            let r = chip_ui(ui, "SCORE", &score_text, score_colour);
            if let Some(e) = &explanation {
                r.on_hover_text(e);
            }
            let (ai_text, ai_colour) = match ai {
                Some(l) => (l.as_str().to_owned(), theme::label_colour(l)),
                None if hidden => ("after your call".to_owned(), theme::TEXT_DIM),
                None => ("none".to_owned(), theme::TEXT_DIM),
            };
            let r = chip_ui(ui, "AI LABEL", &ai_text, ai_colour);
            if let Some(e) = &explanation {
                r.on_hover_text(e);
            }
            if let Some(t) = s.worklist.threshold() {
                // The threshold in force: the model card's, or one set at this site (audited).
                let (label, colour) = match &s.site_threshold {
                    Some(_) => ("SITE THRESHOLD", theme::WARNING),
                    None => ("THRESHOLD", theme::TEXT),
                };
                let r = chip_ui(ui, label, &format!("{t:.3}"), colour);
                match (&s.site_threshold, &explanation, &card) {
                    (Some(note), _, Some(c)) => {
                        r.on_hover_text(format!(
                            "The threshold in force was {note}; the model card's is {:.3}. AI labels \
                             and exports follow the threshold in force; scores do not change.",
                            c.threshold
                        ));
                    }
                    (None, Some(e), _) => {
                        r.on_hover_text(e);
                    }
                    _ => {}
                }
            }
            if let Some(d) = row.dataset_label {
                chip_ui(
                    ui,
                    "DATASET LABEL",
                    d.label.as_str(),
                    theme::label_colour(d.label),
                )
                .on_hover_text(format!(
                    "The label the dataset gives, from the {}; a decision records the \
                         corrected label",
                    d.source.as_str()
                ));
            }
            let state = s.worklist.review_state(row);
            let (text, colour) = match (state, row.final_label) {
                (ReviewState::ReadElsewhere | ReviewState::NotChestFilm, _) => {
                    (state.as_str().to_owned(), theme::TEXT)
                }
                (ReviewState::Unreviewed, _) | (_, None) if s.worklist.needs_manual_read(row) => {
                    ("needs a manual read".to_owned(), theme::WARNING)
                }
                _ if row.second_read_due => ("second read due".to_owned(), theme::ACCENT),
                (ReviewState::Unreviewed, _) | (_, None) => {
                    ("unreviewed".to_owned(), theme::TEXT_DIM)
                }
                (ReviewState::Confirmed, Some(l)) => {
                    (format!("confirmed {l}"), theme::label_colour(l))
                }
                (ReviewState::Overridden, Some(l)) => {
                    (format!("overridden to {l}"), theme::label_colour(l))
                }
                (ReviewState::Labelled, Some(l)) => {
                    (format!("labelled {l}"), theme::label_colour(l))
                }
            };
            chip_ui(ui, "READER", &text, colour);
            if let Some(c) = &card {
                chip_ui(
                    ui,
                    "MODEL",
                    &format!("{} · v{}", c.model_id, c.app_version),
                    theme::TEXT,
                )
                .on_hover_text(format!(
                    "Weights SHA-256 {}\nCard SHA-256 {card_sha}\n\n{}",
                    c.weights_sha256, c.intended_use
                ));
            }
        });
        if let Some(warning) = &row.scope_warning {
            ui.label(
                RichText::new(format!("{warning}: treat its score with caution."))
                    .color(theme::WARNING),
            );
        }
        if let Some(error) = row.error() {
            ui.label(RichText::new(error).color(theme::ERROR));
        }
    }

    fn viewer_toolbar_ui(&mut self, ui: &mut egui::Ui, id: StudyId) {
        ui.horizontal_wrapped(|ui| {
            if ui
                .button("Fit")
                .on_hover_text("Fit the study to the pane (F)")
                .clicked()
            {
                self.commands.send(Command::Fit);
            }
            if ui
                .button("1:1")
                .on_hover_text("One image pixel per screen pixel (O)")
                .clicked()
            {
                self.commands.send(Command::ActualSize);
            }
            egui::ComboBox::from_id_salt("window-presets")
                .selected_text("Window presets")
                .width(132.0)
                .show_ui(ui, |ui| {
                    for (n, preset) in WindowPreset::ALL.into_iter().enumerate() {
                        if ui
                            .selectable_label(false, format!("{}  {}", n + 1, preset.label()))
                            .clicked()
                        {
                            self.commands.send(Command::WindowPreset(n));
                        }
                    }
                })
                .response
                .on_hover_text("Display window presets (keys 1 to 4); right-drag for window/level");
            if ui
                .selectable_label(self.left.invert, "Invert")
                .on_hover_text("Swap black and white (I)")
                .clicked()
            {
                self.commands.send(Command::ToggleInvert);
            }
            if ui
                .selectable_label(self.prefs.link_views, "Link panes")
                .on_hover_text("Zoom, pan and window move both panes together (L)")
                .clicked()
            {
                self.commands.send(Command::ToggleLink);
            }
            ui.separator();
            if ui
                .selectable_label(self.right_pane == RightPane::Explanation, "Heat map")
                .on_hover_text("The model's Grad-CAM heat map over the study (H)")
                .clicked()
            {
                self.commands.send(Command::Compare(None));
            }
            self.compare_picker_ui(ui, id);
            if self.right_pane == RightPane::Explanation {
                if ui.available_size_before_wrap().x < 150.0 {
                    ui.end_row();
                }
                let label = ui.label(RichText::new("Opacity").color(theme::TEXT_DIM));
                ui.spacing_mut().slider_width = 80.0;
                ui.add(
                    egui::Slider::new(&mut self.prefs.heat_opacity, 0.0..=1.0).show_value(false),
                )
                .labelled_by(label.id)
                .on_hover_text("Opacity of the heat map over the study");
            }
        });
    }

    /// The combo box of studies to compare with: the same patient's first, then by score.
    fn compare_picker_ui(&mut self, ui: &mut egui::Ui, id: StudyId) {
        let Some(s) = &self.session else { return };
        let same_patient = s.worklist.same_patient(id);
        let current = s
            .compare
            .filter(|_| self.right_pane == RightPane::Compare)
            .and_then(|c| s.worklist.row(c))
            .map_or_else(
                || "Compare with…".to_owned(),
                |r| format!("Compare: {}", r.name),
            );
        let mut chosen = None;
        egui::ComboBox::from_id_salt("compare-with")
            .selected_text(current)
            .width(150.0)
            .height(360.0)
            .show_ui(ui, |ui| {
                if !same_patient.is_empty() {
                    ui.label(RichText::new("Same patient").color(theme::TEXT_DIM));
                    for &other in &same_patient {
                        if let Some(r) = s.worklist.row(other)
                            && ui
                                .selectable_label(s.compare == Some(other), &r.name)
                                .clicked()
                        {
                            chosen = Some(other);
                        }
                    }
                    ui.separator();
                }
                ui.label(RichText::new("All studies, in worklist order").color(theme::TEXT_DIM));
                let others: Vec<StudyId> =
                    s.order.view.iter().copied().filter(|&o| o != id).collect();
                egui::ScrollArea::vertical().max_height(300.0).show_rows(
                    ui,
                    ROW_TEXT_HEIGHT,
                    others.len(),
                    |ui, range| {
                        for &other in &others[range] {
                            if let Some(r) = s.worklist.row(other)
                                && ui
                                    .selectable_label(s.compare == Some(other), &r.name)
                                    .clicked()
                            {
                                chosen = Some(other);
                            }
                        }
                    },
                );
            })
            .response
            .on_hover_text("Right pane: another study, for comparison (same patient first)");
        if let Some(other) = chosen {
            self.commands.send(Command::Compare(Some(other)));
        }
    }

    fn decision_bar_ui(&mut self, ui: &mut egui::Ui, id: StudyId) {
        let Some(s) = &self.session else { return };
        let Some(row) = s.worklist.row(id) else {
            return;
        };
        let blocked = self.viewing(true).err();
        let decidable = row.can_be_decided() && blocked.is_none() && row.disposition.is_none();
        let hidden = super::command::ai_hidden(self.config.blind_first, &s.worklist, row);
        let ai = s.worklist.ai_label(row).filter(|_| !hidden);
        let why_not = if decidable {
            String::new()
        } else if let Some(d) = row.disposition {
            format!(
                "Recorded as {}: undo that first (Ctrl+Z)",
                match d {
                    Disposition::ReadElsewhere => "read elsewhere",
                    Disposition::NotChestFilm => "not a chest film",
                }
            )
        } else if let Some(why) = &blocked {
            why.clone()
        } else if row.error().is_some() {
            "This study could not be read: no label can be recorded".to_owned()
        } else {
            "Wait for the study to be read".to_owned()
        };
        let why_not = why_not.as_str();
        // The image may have been on screen for less than the minimum time: wake up when it has.
        if blocked.is_some() {
            ui.ctx().request_repaint_after_secs(0.1);
        }
        let can_dispose =
            row.can_be_decided() && row.disposition.is_none() && self.viewing(false).is_ok();
        ui.horizontal_wrapped(|ui| {
            let confirm_text = match ai {
                Some(l) => format!("Confirm {l}"),
                None => "Confirm AI label".to_owned(),
            };
            let confirm = ui
                .add_enabled(
                    decidable && ai.is_some(),
                    egui::Button::new(RichText::new(confirm_text).strong())
                        .shortcut_text("C")
                        .min_size(Vec2::new(140.0, 28.0)),
                )
                .on_hover_text("Agree with the AI label (C or Enter)")
                .on_disabled_hover_text(if hidden {
                    "Blind-first reading: make your own call first (N or P); the AI's call \
                     appears after it"
                } else if why_not.is_empty() {
                    "There is no AI label for this study: set the label with N or P"
                } else {
                    why_not
                });
            if confirm.clicked() {
                self.commands.send(Command::Confirm);
            }
            for (label, key) in [(Label::Normal, "N"), (Label::Pneumonia, "P")] {
                let button = egui::Button::new(
                    RichText::new(label.as_str()).color(theme::label_colour(label)),
                )
                .shortcut_text(key)
                .stroke(Stroke::new(1.0, theme::label_colour(label)))
                .min_size(Vec2::new(112.0, 28.0));
                if ui
                    .add_enabled(decidable, button)
                    .on_hover_text(format!("Set {label} ({key})"))
                    .on_disabled_hover_text(why_not)
                    .clicked()
                {
                    self.commands.send(Command::SetLabel(label));
                }
            }
            for (d, text, hover) in [
                (
                    Disposition::ReadElsewhere,
                    "Read elsewhere",
                    "Record that this study was read elsewhere: it counts as reviewed, with no label",
                ),
                (
                    Disposition::NotChestFilm,
                    "Not a chest film",
                    "Record that this is not a chest film: the AI label does not apply; it counts as reviewed, with no label",
                ),
            ] {
                if ui
                    .add_enabled(can_dispose, egui::Button::new(text))
                    .on_hover_text(hover)
                    .on_disabled_hover_text(why_not)
                    .clicked()
                {
                    self.commands.send(Command::Dispose(d));
                }
            }
            if ui
                .add(
                    egui::Button::new("Undo")
                        .shortcut_text("Ctrl+Z")
                        .min_size(Vec2::new(86.0, 28.0)),
                )
                .on_hover_text("Take back the last decision (recorded as an undo event)")
                .clicked()
            {
                self.commands.send(Command::Undo);
            }
            // The reason and its label stay together, on a row of their own when narrow.
            if ui.available_size_before_wrap().x < 250.0 {
                ui.end_row();
            } else {
                ui.separator();
            }
            let label = ui.label(RichText::new("Reason").color(theme::TEXT_DIM));
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.reason)
                        .hint_text("optional: R to type, Enter to finish")
                        .desired_width(ui.available_size_before_wrap().x.max(200.0)),
                )
                .labelled_by(label.id);
            if std::mem::take(&mut self.focus_reason) {
                field.request_focus();
            }
        });
    }

    fn panes_ui(&mut self, ui: &mut egui::Ui, id: StudyId) {
        let full = ui.available_rect_before_wrap();
        let gap = 4.0;
        let half = (full.width() - gap) / 2.0;
        let left_rect = if self.single_pane {
            full
        } else {
            Rect::from_min_size(full.min, Vec2::new(half, full.height()))
        };
        let right_rect = Rect::from_min_size(
            Pos2::new(full.min.x + half + gap, full.min.y),
            Vec2::new(half, full.height()),
        );
        ui.allocate_rect(full, Sense::hover());
        let Some(s) = &self.session else { return };
        let left_key = s.key(id);
        let name = s
            .worklist
            .row(id)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let right_view = self.right_view();
        let left_image = self.cache.image(left_key);
        // When the study's full-resolution image first reached the screen (decisions wait for
        // it to have been there long enough).
        match left_image {
            Some(ImageEntry::Ready { .. }) => {
                if self.shown.is_none_or(|(k, _)| k != left_key) {
                    self.shown = Some((left_key, self.now));
                }
            }
            _ => self.shown = None,
        }

        let left_input = pane_ui(
            ui,
            Side::Left,
            left_rect,
            left_image,
            &self.left,
            &name,
            None,
            self.pending_actual_size,
        );

        let (right_image, right_name, overlay) = match self.right_pane {
            RightPane::Explanation => {
                let scored = s
                    .worklist
                    .row(id)
                    .is_some_and(|r| r.score_value().is_some());
                let hidden = s.worklist.row(id).is_some_and(|r| {
                    super::command::ai_hidden(self.config.blind_first, &s.worklist, r)
                });
                let pending_text = if hidden {
                    "Blind-first reading: the heat map is shown after your call (N or P)"
                } else if self.classifier().is_none() {
                    "No heat map: no model is loaded"
                } else if !scored {
                    "No heat map: this study has no score"
                } else {
                    "Computing the heat map…"
                };
                (
                    left_image,
                    "Explanation (Grad-CAM), not a localisation".to_owned(),
                    Some(Overlay {
                        heat: self.cache.heat(left_key).filter(|_| !hidden),
                        opacity: self.prefs.heat_opacity,
                        pending_text,
                    }),
                )
            }
            RightPane::Compare => match s.compare {
                Some(other) => (
                    self.cache.image(s.key(other)),
                    format!(
                        "Comparison: {}",
                        s.worklist
                            .row(other)
                            .map(|r| r.name.as_str())
                            .unwrap_or_default()
                    ),
                    None,
                ),
                None => (None, "Choose a study to compare with".to_owned(), None),
            },
        };
        let right_input = if self.single_pane {
            PaneInput::default()
        } else if self.right_pane == RightPane::Compare && s.compare.is_none() {
            empty_pane_ui(
                ui,
                right_rect,
                "Choose a study to compare with in the toolbar (same patient first)",
            );
            PaneInput::default()
        } else {
            pane_ui(
                ui,
                Side::Right,
                right_rect,
                right_image,
                &right_view,
                &right_name,
                overlay.as_ref(),
                // Linked panes follow the main pane's 1:1, relative to their own fit.
                self.pending_actual_size && !self.prefs.link_views,
            )
        };
        self.pending_actual_size = false;

        let left_info = ready_info(left_image);
        let right_info = ready_info(right_image);
        self.apply_pane_input(&left_input, Side::Left, left_info.as_deref());
        self.apply_pane_input(&right_input, Side::Right, right_info.as_deref());
    }

    /// Applies zoom, pan and window changes made in a pane, to both panes when linked.
    fn apply_pane_input(&mut self, input: &PaneInput, side: Side, info: Option<&ImageInfo>) {
        let linked = self.prefs.link_views;
        let shares_left = linked || side == Side::Left;
        if let Some(t) = input.transform {
            if shares_left {
                self.left.transform = t;
            } else {
                self.right.transform = t;
            }
        }
        if let (Some(delta), Some(info)) = (input.window_drag, info) {
            // In the heat-map view both panes show one texture, hence one window.
            let on_left = shares_left || self.right_pane == RightPane::Explanation;
            if on_left && side == Side::Right && self.right_pane == RightPane::Compare {
                // A linked comparison pane drives the main pane's window, relative to defaults.
                if let Some(left_info) = self.selected_info() {
                    let current = self.right_view().window.unwrap_or(info.default_window);
                    let dragged = view::window_dragged(current, delta, info);
                    self.left.window = Some(view::carry_window(
                        dragged,
                        info.default_window,
                        left_info.default_window,
                    ));
                }
            } else if on_left {
                let current = self.left.window.unwrap_or(info.default_window);
                self.left.window = Some(view::window_dragged(current, delta, info));
            } else {
                let current = self.right.window.unwrap_or(info.default_window);
                self.right.window = Some(view::window_dragged(current, delta, info));
            }
        }
    }
}

/// Line height of the comparison list.
const ROW_TEXT_HEIGHT: f32 = 20.0;

fn ready_info(entry: Option<&ImageEntry>) -> Option<std::sync::Arc<ImageInfo>> {
    match entry? {
        ImageEntry::Ready { info, .. } => Some(std::sync::Arc::clone(info)),
        ImageEntry::Failed(_) => None,
    }
}

/// A label and value in a small box, as in a scanner's overlay.
fn chip_ui(ui: &mut egui::Ui, caption: &str, value: &str, colour: Color32) -> egui::Response {
    // Chips never wrap inside: one that does not fit starts a new row.
    let painter = ui.painter();
    let width = painter
        .layout_no_wrap(value.to_owned(), FontId::proportional(15.0), colour)
        .size()
        .x
        .max(
            painter
                .layout_no_wrap(caption.to_owned(), FontId::proportional(9.5), colour)
                .size()
                .x,
        )
        + 20.0;
    if ui.available_size_before_wrap().x < width {
        ui.end_row();
    }
    egui::Frame::new()
        .fill(theme::PANEL)
        .stroke(Stroke::new(1.0, theme::BORDER))
        .corner_radius(3.0)
        .inner_margin(egui::Margin::symmetric(8, 3))
        .show(ui, |ui| {
            ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
            ui.vertical(|ui| {
                ui.label(RichText::new(caption).size(9.5).color(theme::TEXT_DIM));
                ui.label(RichText::new(value).size(15.0).strong().color(colour));
            });
        })
        .response
        .interact(Sense::hover())
}

fn empty_pane_ui(ui: &mut egui::Ui, rect: Rect, text: &str) {
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, theme::IMAGE_BACKGROUND);
    painter.text(
        rect.center(),
        Align2::CENTER_CENTER,
        text,
        FontId::proportional(14.0),
        theme::TEXT_DIM,
    );
}

/// Draws one image pane and reads the reader's zoom, pan and window gestures in it.
#[allow(clippy::too_many_arguments)]
fn pane_ui(
    ui: &mut egui::Ui,
    side: Side,
    rect: Rect,
    image: Option<&ImageEntry>,
    pane: &PaneView,
    caption: &str,
    overlay: Option<&Overlay<'_>>,
    actual_size: bool,
) -> PaneInput {
    let id = ui.make_persistent_id(("pane", side == Side::Left));
    let response = ui.interact(rect, id, Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, theme::IMAGE_BACKGROUND);
    let mut input = PaneInput::default();

    let (info, shown_window, shown_invert, textures) = match image {
        None => {
            painter.text(
                rect.center(),
                Align2::CENTER_CENTER,
                "Loading the full-resolution image…",
                FontId::proportional(14.0),
                theme::TEXT_DIM,
            );
            ui.ctx().request_repaint_after_secs(0.1);
            caption_ui(&painter, rect, caption);
            return input;
        }
        Some(ImageEntry::Failed(error)) => {
            painter.text(
                rect.center(),
                Align2::CENTER_CENTER,
                format!("This study cannot be shown:\n{error}"),
                FontId::proportional(14.0),
                theme::ERROR,
            );
            caption_ui(&painter, rect, caption);
            return input;
        }
        Some(ImageEntry::Ready {
            info,
            window,
            invert,
            textures,
        }) => (
            info,
            window.unwrap_or(info.default_window),
            *invert,
            textures,
        ),
    };
    let image_px = Vec2::new(info.width as f32, info.height as f32);
    let mut transform = pane.transform;
    if actual_size {
        transform = transform.actual_size(rect, image_px, ui.ctx().pixels_per_point());
        input.transform = Some(transform);
    }

    // Gestures.
    if response.dragged_by(PointerButton::Primary) {
        transform.pan(response.drag_delta(), rect, image_px);
        input.transform = Some(transform);
    }
    if response.dragged_by(PointerButton::Secondary) {
        input.window_drag = Some(response.drag_delta());
    }
    if response.double_clicked() {
        transform = ViewTransform::FIT;
        input.transform = Some(transform);
    }
    if response.hovered() {
        let (scroll, zoom) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = zoom * (scroll * 0.002).exp();
        if (factor - 1.0).abs() > 1e-4
            && let Some(pointer) = response.hover_pos()
        {
            transform.zoom_around(factor, pointer, rect, image_px);
            input.transform = Some(transform);
        }
    }

    // The study, at the mip level nearest above one texel per screen pixel.
    let image_rect = transform.image_rect(rect, image_px);
    let texels_per_pixel =
        1.0 / (transform.scale(rect, image_px) * ui.ctx().pixels_per_point()).max(f32::EPSILON);
    let wanted_level = texels_per_pixel.log2().floor().max(0.0) as usize;
    let full_res_missing = usize::from(
        textures
            .levels
            .first()
            .is_some_and(|t| t.size()[0] < info.width as usize),
    );
    let level = wanted_level
        .saturating_sub(full_res_missing)
        .min(textures.levels.len().saturating_sub(1));
    if let Some(texture) = textures.levels.get(level) {
        painter.image(
            texture.id(),
            image_rect,
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
    }

    if let Some(overlay) = overlay {
        match overlay.heat {
            Some(HeatEntry::Ready(texture)) => {
                let alpha = (overlay.opacity.clamp(0.0, 1.0) * 255.0).round() as u8;
                painter.image(
                    texture.id(),
                    image_rect,
                    Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                    Color32::from_white_alpha(alpha),
                );
                colour_bar_ui(&painter, rect);
            }
            Some(HeatEntry::Failed(error)) => {
                corner_text(&painter, rect, Align2::CENTER_BOTTOM, error, theme::ERROR);
            }
            None => {
                corner_text(
                    &painter,
                    rect,
                    Align2::CENTER_BOTTOM,
                    overlay.pending_text,
                    theme::TEXT_DIM,
                );
            }
        }
    }

    caption_ui(&painter, rect, caption);
    let zoom_pct = transform.scale(rect, image_px) * ui.ctx().pixels_per_point() * 100.0;
    corner_text(
        &painter,
        rect,
        Align2::LEFT_BOTTOM,
        &format!(
            "W {:.0}  L {:.0}{}{}  ·  {zoom_pct:.0}%",
            shown_window.width,
            shown_window.center,
            // What the texture on screen was rendered with, not what was last asked for.
            if shown_invert { "  · inverted" } else { "" },
            match &info.default_note {
                Some(note) if shown_window == info.default_window => format!("  · {note}"),
                _ => String::new(),
            }
        ),
        theme::TEXT,
    );
    input
}

fn caption_ui(painter: &egui::Painter, rect: Rect, caption: &str) {
    corner_text(painter, rect, Align2::LEFT_TOP, caption, theme::TEXT);
}

/// Text in a corner of a pane, on a dark backing so it reads over any image.
fn corner_text(painter: &egui::Painter, rect: Rect, align: Align2, text: &str, colour: Color32) {
    let margin = 8.0;
    let anchor = match align {
        Align2::LEFT_TOP => rect.left_top() + Vec2::splat(margin),
        Align2::LEFT_BOTTOM => rect.left_bottom() + Vec2::new(margin, -margin),
        Align2::CENTER_BOTTOM => rect.center_bottom() + Vec2::new(0.0, -36.0),
        _ => rect.center(),
    };
    let galley = painter.layout_no_wrap(text.to_owned(), FontId::proportional(12.5), colour);
    let text_rect = align.anchor_size(anchor, galley.size());
    painter.rect_filled(text_rect.expand(4.0), 3.0, Color32::from_black_alpha(170));
    painter.galley(text_rect.min, galley, colour);
}

/// The heat map's colour scale, bottom right of the pane.
fn colour_bar_ui(painter: &egui::Painter, rect: Rect) {
    let width = 160.0;
    let bar = Rect::from_min_size(
        Pos2::new(rect.right() - width - 12.0, rect.bottom() - 22.0),
        Vec2::new(width, 8.0),
    );
    let backing = Rect::from_min_max(
        Pos2::new(bar.left() - 8.0, bar.top() - 20.0),
        Pos2::new(bar.right() + 8.0, bar.bottom() + 6.0),
    );
    painter.rect_filled(backing, 3.0, Color32::from_black_alpha(170));
    let steps = 48;
    for i in 0..steps {
        let t0 = i as f32 / steps as f32;
        let t = t0 + 0.5 / steps as f32;
        // Faded as on the image: clear below 0.1, full colour from 0.6.
        let alpha = overlay_alpha(t);
        let [r, g, b] = turbo(t).map(|c| (f32::from(c) * alpha + 96.0 * (1.0 - alpha)) as u8);
        let x0 = bar.left() + bar.width() * t0;
        let x1 = bar.left() + bar.width() * (i + 1) as f32 / steps as f32;
        painter.rect_filled(
            Rect::from_min_max(Pos2::new(x0, bar.top()), Pos2::new(x1 + 0.5, bar.bottom())),
            0.0,
            Color32::from_rgb(r, g, b),
        );
    }
    let font = FontId::proportional(11.0);
    painter.text(
        Pos2::new(bar.left(), bar.top() - 3.0),
        Align2::LEFT_BOTTOM,
        "low",
        font.clone(),
        theme::TEXT_DIM,
    );
    painter.text(
        Pos2::new(bar.center().x, bar.top() - 3.0),
        Align2::CENTER_BOTTOM,
        "influence on score",
        font.clone(),
        theme::TEXT_DIM,
    );
    painter.text(
        Pos2::new(bar.right(), bar.top() - 3.0),
        Align2::RIGHT_BOTTOM,
        "high",
        font,
        theme::TEXT_DIM,
    );
}
