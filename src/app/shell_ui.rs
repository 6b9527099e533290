//! The frame around the work: menu bar, status bar, banners and the layout of the panels.

use egui::{Align, Layout, RichText};

use super::{App, Command, ModelState, theme};
use crate::audit::ExportKind;

impl App {
    /// Draws the whole window. Pushes commands; changes no domain state.
    pub(super) fn draw(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("menu-bar")
            .frame(
                egui::Frame::new()
                    .fill(theme::PANEL_RAISED)
                    .inner_margin(egui::Margin::symmetric(8, 4)),
            )
            .show(ui, |ui| self.menu_bar_ui(ui));
        egui::Panel::bottom("status-bar")
            .frame(
                egui::Frame::new()
                    .fill(theme::PANEL_RAISED)
                    .inner_margin(egui::Margin::symmetric(10, 4)),
            )
            .show(ui, |ui| self.status_bar_ui(ui));
        egui::Panel::left("worklist")
            .resizable(true)
            .default_size((ui.ctx().content_rect().width() * 0.42).clamp(420.0, 640.0))
            .size_range(360.0..=1100.0)
            .frame(
                egui::Frame::new()
                    .fill(theme::PANEL)
                    .inner_margin(egui::Margin::symmetric(8, 8)),
            )
            .show(ui, |ui| self.worklist_ui(ui));
        egui::CentralPanel::default()
            .frame(
                egui::Frame::new()
                    .fill(theme::PANEL)
                    .inner_margin(egui::Margin::same(0)),
            )
            .show(ui, |ui| self.viewer_ui(ui));
        let ctx = ui.ctx().clone();
        self.dialogs_ui(&ctx);
        drop_hint_ui(&ctx);
        self.toasts.show(&ctx);
    }

    fn menu_bar_ui(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui
                    .add(egui::Button::new("Open folder…").shortcut_text("Ctrl+O"))
                    .clicked()
                {
                    self.commands.send(Command::ChooseFolder);
                }
                ui.menu_button("Open recent", |ui| {
                    if self.prefs.recent_folders.is_empty() {
                        ui.label(RichText::new("No recent folders").color(theme::TEXT_DIM));
                    }
                    for folder in self.prefs.recent_folders.clone() {
                        if ui.button(folder.display().to_string()).clicked() {
                            self.commands.send(Command::OpenFolder(folder));
                        }
                    }
                });
                if ui.button("Type a folder path…").clicked() {
                    self.dialogs.open_folder = Some(super::dialogs::PathDialog::default());
                }
                let demo = crate::install::find_demo_folder();
                if ui
                    .add_enabled(demo.is_ok(), egui::Button::new("Open the demo studies"))
                    .clicked()
                    && let Ok(demo) = demo
                {
                    self.commands.send(Command::OpenFolder(demo));
                }
                ui.separator();
                let has_store = self.store_path().is_some();
                if ui
                    .add_enabled(
                        has_store,
                        egui::Button::new("Export reviewed cases…").shortcut_text("Ctrl+E"),
                    )
                    .clicked()
                {
                    self.commands
                        .send(Command::ChooseExportFile(ExportKind::Reviewed));
                }
                if ui
                    .add_enabled(has_store, egui::Button::new("Export all studies…"))
                    .clicked()
                {
                    self.commands
                        .send(Command::ChooseExportFile(ExportKind::All));
                }
                if ui
                    .add_enabled(has_store, egui::Button::new("Export the event log…"))
                    .clicked()
                {
                    self.commands
                        .send(Command::ChooseExportFile(ExportKind::Events));
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                let mut link = self.prefs.link_views;
                if ui
                    .checkbox(&mut link, "Link zoom, pan and window (L)")
                    .changed()
                {
                    self.commands.send(Command::ToggleLink);
                }
                if ui
                    .add(egui::Button::new("Fit").shortcut_text("F"))
                    .clicked()
                {
                    self.commands.send(Command::Fit);
                }
                if ui
                    .add(egui::Button::new("Actual size (1:1)").shortcut_text("O"))
                    .clicked()
                {
                    self.commands.send(Command::ActualSize);
                }
                if ui
                    .add(egui::Button::new("Heat map in the right pane").shortcut_text("H"))
                    .clicked()
                {
                    self.commands.send(Command::Compare(None));
                }
                ui.menu_button("Columns", |ui| {
                    for column in super::prefs::OptionalColumn::ALL {
                        let mut on = self.prefs.columns.shows(column);
                        if ui.checkbox(&mut on, column.menu_name()).changed() {
                            self.commands.send(Command::ToggleColumn(column));
                        }
                    }
                    ui.label(
                        RichText::new("A DICOM column appears when a study has the attribute")
                            .color(theme::TEXT_DIM)
                            .small(),
                    );
                });
                ui.separator();
                ui.checkbox(
                    &mut self.dialogs.diagnostics,
                    "Diagnostics (frame times, memory)",
                );
            });
            ui.menu_button("Model", |ui| {
                if ui
                    .button("Local performance and threshold…")
                    .on_hover_text(
                        "The model measured on the studies readers labelled in this decision \
                         store, and a threshold chosen on them (an audited change)",
                    )
                    .clicked()
                {
                    self.commands.send(Command::ShowLocalPerformance);
                }
                if ui
                    .button("Adapt to this site…")
                    .on_hover_text(
                        "Fine-tune the model on the studies readers labelled in this decision \
                         store, compare both on held-out studies, and switch the model in force \
                         (an audited change)",
                    )
                    .clicked()
                {
                    self.commands.send(Command::ShowAdapt);
                }
                if ui.button("Model information").clicked() {
                    self.dialogs.model_info = true;
                }
            });
            ui.menu_button("Quality", |ui| {
                if ui
                    .button("Reader agreement…")
                    .on_hover_text(
                        "How readers agree with the AI and with each other (Cohen's kappa), and \
                         the studies two readers called differently",
                    )
                    .clicked()
                {
                    self.commands.send(Command::ShowQa);
                }
            });
            ui.menu_button("Help", |ui| {
                if ui
                    .add(egui::Button::new("Keyboard shortcuts").shortcut_text("F1"))
                    .clicked()
                {
                    self.dialogs.help = true;
                }
                if ui.button("Model information").clicked() {
                    self.dialogs.model_info = true;
                }
            });
            ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                if let Some(user) = &self.signed_in {
                    match self.store_encrypted {
                        Some(true) => {
                            ui.label(RichText::new("TLS").color(theme::TEXT_DIM))
                                .on_hover_text(
                                    "The connection to the department's store is encrypted",
                                );
                        }
                        Some(false) => {
                            ui.label(RichText::new("not encrypted").color(theme::WARNING))
                                .on_hover_text(
                                    "The connection to the department's store is not encrypted: \
                                     ask IT to turn on TLS on the server (ssl = on), or use \
                                     sslmode=verify-full in the store's address",
                                );
                        }
                        None => {}
                    }
                    // The department's store records the database user: nothing to type.
                    ui.label(RichText::new(user).strong()).on_hover_text(
                        "Decisions are recorded under your database user on the department's store",
                    );
                    ui.label(RichText::new("Signed in as").color(theme::TEXT_DIM));
                    return;
                }
                let field = ui.add(
                    egui::TextEdit::singleline(&mut self.reader)
                        .desired_width(140.0)
                        .hint_text("your name"),
                );
                let label = ui.label(RichText::new("Reader").color(theme::TEXT_DIM));
                field
                    .labelled_by(label.id)
                    .on_hover_text("Decisions are recorded under this name");
            });
        });
    }

    fn status_bar_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(status) = &self.status {
            ui.label(RichText::new(status).color(theme::WARNING).strong());
        }
        // A decision is "saved" only once the store has acknowledged it.
        if !self.pending.is_empty() {
            let n = self.pending.len();
            let s = if n == 1 { "" } else { "s" };
            ui.horizontal(|ui| {
                ui.spinner();
                if self.retrying.is_some() {
                    ui.label(
                        RichText::new(format!(
                            "Not saved, retrying: {n} decision{s} waiting for the decision store"
                        ))
                        .color(theme::WARNING)
                        .strong(),
                    );
                } else {
                    ui.label(format!("Saving {n} decision{s}…"));
                }
            });
        } else if let Some(note) = &self.saved_note {
            ui.label(RichText::new(note).color(theme::TEXT_DIM));
        }
        ui.horizontal(|ui| match &self.model {
            ModelState::Loading => {
                ui.spinner();
                ui.label("Loading the model…");
            }
            ModelState::Failed(_) => {
                ui.label(RichText::new("No model: studies are not scored").color(theme::ERROR));
            }
            ModelState::Ready(c) => {
                let card = c.card();
                let site = self.session.as_ref().and_then(|s| {
                    s.site_threshold
                        .as_ref()
                        .and_then(|note| Some((s.worklist.threshold()?, note)))
                });
                let threshold = match site {
                    Some((t, _)) => format!("site threshold {t:.3}"),
                    None => format!("threshold {:.3}", card.threshold),
                };
                ui.label(
                    RichText::new(format!(
                        "Model {} · cxr-triage {} · {threshold}",
                        card.model_id, card.app_version
                    ))
                    .color(theme::TEXT_DIM),
                )
                .on_hover_text(match site {
                    Some((_, note)) => format!(
                        "The threshold in force was {note}.\n\n{}",
                        super::viewer_ui::score_explanation(card)
                    ),
                    None => super::viewer_ui::score_explanation(card),
                });
                ui.separator();
                let unseen = not_seen_sentence(&card.intended_use);
                let link = ui.add(
                    egui::Label::new(
                        RichText::new(format!("Model limits: {unseen}")).color(theme::WARNING),
                    )
                    .truncate()
                    .sense(egui::Sense::click()),
                );
                if link
                    .on_hover_text("What the model has and has not seen: click for details")
                    .clicked()
                {
                    self.dialogs.model_info = true;
                }
            }
        });
    }

    /// Banners above the viewer for conditions that affect every study.
    pub(super) fn banners_ui(&mut self, ui: &mut egui::Ui) {
        let banner = |ui: &mut egui::Ui, colour: egui::Color32, text: &str| {
            egui::Frame::new()
                .fill(colour.gamma_multiply(0.18))
                .stroke(egui::Stroke::new(1.0, colour))
                .inner_margin(egui::Margin::symmetric(10, 6))
                .show(ui, |ui| {
                    ui.set_width(ui.available_width());
                    ui.label(RichText::new(text).color(colour));
                });
        };
        if let ModelState::Failed(e) = &self.model {
            banner(
                ui,
                theme::ERROR,
                &format!(
                    "The model could not be loaded, so studies are not scored or ranked; they can \
                     still be viewed and labelled. {e}"
                ),
            );
        }
        if let Some(e) = &self.store_error {
            banner(ui, theme::ERROR, &format!("Decisions cannot be saved: {e}"));
        }
        if let Some(why) = &self.retrying {
            let n = self.pending.len();
            banner(
                ui,
                theme::WARNING,
                &format!(
                    "Not saved, retrying: {n} decision{s} will be saved as soon as the decision \
                     store answers ({why}). Keep the window open.",
                    s = if n == 1 { "" } else { "s" }
                ),
            );
        }
        if let Some(w) = self
            .session
            .as_ref()
            .and_then(|s| s.uniform_warning.as_deref())
        {
            banner(ui, theme::WARNING, w);
        }
    }
}

/// Darkens the window with a hint while files are dragged over it.
fn drop_hint_ui(ctx: &egui::Context) {
    let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
    if !hovering {
        return;
    }
    let painter = ctx.layer_painter(egui::LayerId::new(
        egui::Order::Foreground,
        egui::Id::unique("drop-hint"),
    ));
    let rect = ctx.content_rect();
    painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(190));
    painter.text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        "Drop a folder to open it",
        egui::FontId::proportional(24.0),
        theme::TEXT,
    );
}

/// The sentence of the intended use that says what the model has not seen.
pub(super) fn not_seen_sentence(intended_use: &str) -> &str {
    intended_use
        .split_inclusive(". ")
        .map(str::trim)
        .find(|s| s.contains("outside") || s.contains("not seen") || s.contains("has not"))
        .unwrap_or(intended_use)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_sentence_is_found_in_the_intended_use() {
        let text = crate::model::card::INTENDED_USE;
        let s = not_seen_sentence(text);
        assert!(s.starts_with("Adult films"), "{s}");
        assert!(s.ends_with("outside what it has seen."), "{s}");
        assert_eq!(not_seen_sentence("Only this."), "Only this.");
    }
}
