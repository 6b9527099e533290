//! Quality > Reader agreement: the QA report of the decision store (the same as `cxr-triage qa`),
//! read on its own thread: each reader's agreement with the AI (Cohen's kappa with its 95%
//! interval), agreement between readers on studies read twice, the disagreement queue (a click
//! opens the study when it is in the open folder) and blind-first figures.

use egui::RichText;
use poll_promise::Promise;

use super::notifications::Level;
use super::{App, Command, theme};
use crate::audit::{Agreement, QaReport, StoreAddress};
use crate::worklist::StudyId;

/// The Reader agreement window.
pub(super) struct QaView {
    job: Option<Promise<Result<QaReport, String>>>,
    report: Option<QaReport>,
    error: Option<String>,
}

impl App {
    /// Opens the Reader agreement window and starts reading the decision log.
    pub(super) fn open_qa(&mut self) {
        let Ok(db) = self.db_path.clone() else {
            self.toasts
                .add(Level::Warning, "Reader agreement needs a decision store.");
            return;
        };
        let job = Promise::spawn_thread("qa-report", move || {
            StoreAddress::from_path(&db)
                .open_existing()
                .and_then(|mut store| store.qa_report())
                .map_err(|e| e.to_string())
        });
        self.dialogs.qa = Some(QaView {
            job: Some(job),
            report: None,
            error: None,
        });
    }

    /// Draws the Reader agreement window, if open.
    pub(super) fn qa_ui(&mut self, ctx: &egui::Context) {
        let Some(view) = &mut self.dialogs.qa else {
            return;
        };
        match super::dialogs::poll_job(&mut view.job) {
            Some(Ok(r)) => view.report = Some(r),
            Some(Err(e)) => view.error = Some(e),
            None => {}
        }
        let mut open = true;
        let mut refresh = false;
        let mut show: Option<String> = None;
        egui::Window::new("Reader agreement")
            .open(&mut open)
            .default_width(760.0)
            .show(ctx, |ui| {
                if view.job.is_some() {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Reading the decision log…");
                    });
                }
                if let Some(e) = &view.error {
                    ui.label(
                        RichText::new(format!("The report could not be made: {e}"))
                            .color(theme::ERROR),
                    );
                }
                if let Some(report) = &view.report {
                    show = report_ui(ui, report);
                }
                ui.add_space(6.0);
                if ui
                    .add_enabled(view.job.is_none(), egui::Button::new("Refresh"))
                    .clicked()
                {
                    refresh = true;
                }
            });
        if !open {
            self.dialogs.qa = None;
        } else if refresh {
            self.open_qa();
        }
        if let Some(sha) = show {
            self.show_study_by_hash(&sha);
        }
    }

    /// Selects the study with this hash in the open folder, or says it is not there.
    fn show_study_by_hash(&mut self, sha: &str) {
        let found = self.session.as_ref().and_then(|s| {
            s.worklist
                .rows()
                .iter()
                .position(|r| r.sha256.as_deref() == Some(sha))
        });
        match found {
            Some(i) => self.commands.send(Command::Select(StudyId(i))),
            None => self.toasts.add(
                Level::Info,
                "That study is not in the open folder: open its folder to read it again.",
            ),
        }
    }
}

/// Kappa with its interval, in words for a cell.
fn kappa_text(a: &Agreement) -> String {
    let k = &a.kappa;
    if a.pairs == 0 {
        "no paired calls".to_owned()
    } else if !k.estimate.is_finite() {
        "undefined (one label only)".to_owned()
    } else {
        format!("{:.2} [{:.2}, {:.2}]", k.estimate, k.low, k.high)
    }
}

/// Draws the report; returns the hash of a study in the disagreement queue the reader asked to
/// open.
fn report_ui(ui: &mut egui::Ui, report: &QaReport) -> Option<String> {
    ui.label(
        RichText::new(format!(
            "{} events in the decision log. Cohen's kappa with a 95% bootstrap interval; the \
             same figures as `cxr-triage qa`.",
            report.events
        ))
        .color(theme::TEXT_DIM),
    );
    ui.add_space(4.0);
    egui::Grid::new("qa-agreement")
        .num_columns(5)
        .spacing([16.0, 4.0])
        .striped(true)
        .show(ui, |ui| {
            for h in ["", "calls", "overrides", "agree", "kappa [95% interval]"] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            let row =
                |ui: &mut egui::Ui, name: &str, calls: String, over: String, a: &Agreement| {
                    ui.label(name);
                    ui.label(calls);
                    ui.label(over);
                    ui.label(if a.pairs == 0 {
                        "-".to_owned()
                    } else {
                        format!("{:.0}% of {}", 100.0 * a.observed, a.pairs)
                    });
                    ui.label(kappa_text(a));
                    ui.end_row();
                };
            for r in &report.readers {
                row(
                    ui,
                    &format!("{} vs AI", r.reader),
                    r.calls.to_string(),
                    r.overrides.to_string(),
                    &r.with_ai,
                );
            }
            row(
                ui,
                "All readers vs AI",
                String::new(),
                String::new(),
                &report.all_with_ai,
            );
            row(
                ui,
                "Reader vs reader",
                String::new(),
                String::new(),
                &report.reader_reader,
            );
        });
    if let Some(text) = report.blind_first.text() {
        ui.add_space(6.0);
        ui.label(text);
    }
    ui.add_space(8.0);
    ui.label(
        RichText::new(format!(
            "Disagreement queue: {} studies read twice with different calls",
            report.disagreements.len()
        ))
        .strong(),
    );
    let mut open = None;
    egui::ScrollArea::vertical()
        .max_height(220.0)
        .id_salt("qa-disagreements")
        .show(ui, |ui| {
            for d in &report.disagreements {
                ui.horizontal(|ui| {
                    let name = std::path::Path::new(&d.path)
                        .file_name()
                        .map_or_else(|| d.path.clone(), |n| n.to_string_lossy().into_owned());
                    if ui
                        .link(name)
                        .on_hover_text("Open the study (when it is in the open folder)")
                        .clicked()
                    {
                        open = Some(d.study_sha256.clone());
                    }
                    ui.label(format!(
                        "{}: {}, then {}: {}",
                        d.first.0, d.first.1, d.second.0, d.second.1
                    ));
                });
            }
        });
    open
}
