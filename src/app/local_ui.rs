//! Model > Local performance: the model measured on the studies readers labelled in this
//! decision store, and a threshold chosen on them, applied as an audited change.
//!
//! The figures come from [`crate::model::local`] (the same as `cxr-triage eval --db`), computed
//! on their own thread (studies without a recorded score are scored from their files); applying
//! a threshold records a threshold change (as `cxr-triage threshold` does) on another thread.

use std::sync::Arc;

use egui::{Color32, RichText, Sense, Stroke, Vec2};
use poll_promise::Promise;

use super::notifications::Level;
use super::{App, theme};
use crate::audit::DecisionStore;
use crate::model::Classifier;
use crate::model::local::{self, LocalReport, ThresholdProposal};

/// The Local performance window.
pub(super) struct LocalView {
    job: Option<Promise<Result<LocalReport, String>>>,
    /// The studies measured, with the threshold in force then.
    measured: Option<LocalReport>,
    error: Option<String>,
    /// The sensitivity the proposed threshold must keep on the reviewed studies.
    target: f64,
    reason: String,
    /// Applying a threshold: the new threshold and the note on where it comes from.
    apply_job: Option<Promise<Result<(f32, String), String>>>,
}

impl App {
    /// Opens the Local performance window and starts measuring.
    pub(super) fn open_local_performance(&mut self) {
        let (Ok(db), Some(classifier)) = (self.db_path.clone(), self.classifier_arc()) else {
            self.toasts.add(
                Level::Warning,
                "Local performance needs the model and a decision store.",
            );
            return;
        };
        let job = Promise::spawn_thread("local-performance", move || measure(&db, &classifier));
        self.dialogs.local = Some(LocalView {
            job: Some(job),
            measured: None,
            error: None,
            target: 0.95,
            reason: String::new(),
            apply_job: None,
        });
    }

    /// Draws the Local performance window, if open.
    pub(super) fn local_performance_ui(&mut self, ctx: &egui::Context) {
        let Some(view) = &mut self.dialogs.local else {
            return;
        };
        match super::dialogs::poll_job(&mut view.job) {
            Some(Ok(m)) => view.measured = Some(m),
            Some(Err(e)) => view.error = Some(e),
            None => {}
        }
        let applied = super::dialogs::poll_job(&mut view.apply_job);
        let mut open = true;
        let mut apply = None;
        let reader = self.reader.trim().to_owned();
        egui::Window::new("Local performance")
            .open(&mut open)
            .default_width(760.0)
            .show(ctx, |ui| {
                apply = view_ui(ui, view, &reader);
            });
        if !open {
            self.dialogs.local = None;
        }
        if let Some((target, reason)) = apply {
            self.start_applying(target, reason);
        }
        match applied {
            Some(Ok((threshold, note))) => {
                if let Some(s) = &mut self.session {
                    s.worklist.set_threshold(Some(threshold));
                    s.site_threshold = Some(note.clone());
                    s.view_dirty = true;
                }
                self.toasts.add(
                    Level::Success,
                    format!(
                        "The threshold in force is now {threshold:.3} ({note}); AI labels follow it, scores do not change."
                    ),
                );
                // Measure again at the new threshold.
                self.open_local_performance();
            }
            Some(Err(e)) => {
                self.toasts
                    .add(Level::Error, format!("The threshold was not changed: {e}"));
            }
            None => {}
        }
    }

    fn start_applying(&mut self, target: f64, reason: String) {
        let (Ok(db), Some(classifier)) = (self.db_path.clone(), self.classifier_arc()) else {
            return;
        };
        let Some(view) = &mut self.dialogs.local else {
            return;
        };
        let Some(measured) = &view.measured else {
            return;
        };
        let cases = measured.cases.clone();
        let left_out = measured.left_out.len();
        let old = measured.threshold;
        let reader = self.reader.trim().to_owned();
        view.apply_job = Some(Promise::spawn_thread("apply-threshold", move || {
            let proposal = ThresholdProposal::new(&cases, old, target)?;
            let store = DecisionStore::open_existing(&db).map_err(|e| e.to_string())?;
            let head = store.head_hash().map_err(|e| e.to_string())?;
            let change = proposal.change(
                &classifier,
                &reader,
                &reason,
                None,
                left_out,
                head.as_deref(),
            );
            let event = store
                .record_threshold_change(&change)
                .map_err(|e| e.to_string())?;
            Ok((event.new_threshold, local::describe_change(&event)))
        }));
    }

    fn classifier_arc(&self) -> Option<Arc<Classifier>> {
        match &self.model {
            super::ModelState::Ready(c) => Some(Arc::clone(c)),
            _ => None,
        }
    }
}

/// Measures the model on the store's reviewed studies (on a worker thread).
fn measure(db: &std::path::Path, classifier: &Classifier) -> Result<LocalReport, String> {
    let store = DecisionStore::open_existing(db).map_err(|e| e.to_string())?;
    let (threshold, note) =
        local::threshold_in_force(&store, classifier).map_err(|e| e.to_string())?;
    let source = note.unwrap_or_else(|| "the model card's".to_owned());
    let (cases, left_out) =
        local::local_cases(&store, classifier, None, &mut |_, _| {}).map_err(|e| e.to_string())?;
    Ok(LocalReport::new(
        classifier,
        &db.display().to_string(),
        threshold,
        &source,
        cases,
        left_out,
    ))
}

/// The window's contents; returns the target sensitivity and reason when the reader applies a
/// threshold.
fn view_ui(ui: &mut egui::Ui, view: &mut LocalView, reader: &str) -> Option<(f64, String)> {
    if let Some(e) = &view.error {
        ui.label(RichText::new(format!("Cannot measure: {e}")).color(theme::ERROR));
        return None;
    }
    let Some(r) = &view.measured else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Measuring the model on the reviewed studies…");
        });
        return None;
    };
    ui.label(format!(
        "{} reviewed studies in this decision store ({} PNEUMONIA, {} NORMAL by the readers' final labels), model {}",
        r.reviewed, r.pneumonia, r.normal, r.model_id
    ));
    if !r.left_out.is_empty() {
        ui.label(
            RichText::new(format!(
                "{} reviewed studies left out (file missing or changed, no score)",
                r.left_out.len()
            ))
            .color(theme::TEXT_DIM),
        );
    }
    ui.label(
        RichText::new(format!(
            "Threshold in force: {:.3} ({})",
            r.threshold, r.threshold_source
        ))
        .strong(),
    );
    let Some(figures) = &r.figures else {
        ui.add_space(6.0);
        ui.label(RichText::new(local::too_few_text(r.pneumonia, r.normal)).color(theme::WARNING));
        return None;
    };
    let proposal = ThresholdProposal::new(&r.cases, r.threshold, view.target);
    ui.add_space(6.0);
    ui.horizontal_top(|ui| {
        roc_ui(
            ui,
            r,
            figures.threshold,
            proposal.as_ref().ok().map(|p| p.new),
        );
        ui.vertical(|ui| {
            ui.add(
                egui::Label::new(RichText::new(figures.text()).monospace().size(11.0))
                    .wrap_mode(egui::TextWrapMode::Extend),
            );
        });
    });
    ui.separator();
    ui.label(RichText::new("Choose a threshold on these studies").strong());
    ui.add(
        egui::Slider::new(&mut view.target, 0.80..=1.0)
            .step_by(0.01)
            .text("target sensitivity"),
    );
    let proposal = match proposal {
        Ok(p) => p,
        Err(why) => {
            ui.label(RichText::new(why).color(theme::WARNING));
            return None;
        }
    };
    let a = &proposal.after;
    ui.label(format!(
        "Threshold {:.4}: sensitivity {:.1}%, specificity {:.1}%, {:.1} flagged per 100 studies (now {:.1})",
        proposal.new,
        100.0 * a.sensitivity.estimate,
        100.0 * a.specificity.estimate,
        a.flags_per_100,
        proposal.before.flags_per_100
    ));
    ui.horizontal(|ui| {
        ui.label("Reason");
        ui.add(
            egui::TextEdit::singleline(&mut view.reason)
                .hint_text("why the site changes its threshold")
                .desired_width(320.0),
        );
    });
    let busy = view.apply_job.is_some();
    let can = !busy && !reader.is_empty() && (proposal.new - r.threshold).abs() > 1e-6;
    let button = ui
        .add_enabled(
            can,
            egui::Button::new(format!("Apply threshold {:.4} as {reader}", proposal.new)),
        )
        .on_hover_text(
            "Recorded in the decision store as an audited threshold change (who, when, old and \
             new threshold, the figures it rests on); AI labels in the worklist and exports \
             follow it; scores never change",
        );
    if busy {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Recording the change…");
        });
    }
    button
        .clicked()
        .then(|| (view.target, view.reason.trim().to_owned()))
}

/// The ROC curve of the reviewed studies, with the operating point in force (white) and the
/// proposed one (orange).
fn roc_ui(ui: &mut egui::Ui, r: &LocalReport, threshold: f32, proposed: Option<f32>) {
    let size = Vec2::splat(220.0);
    let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, theme::PANEL);
    let to_screen = |fpr: f64, tpr: f64| {
        egui::pos2(
            rect.left() + rect.width() * fpr as f32,
            rect.bottom() - rect.height() * tpr as f32,
        )
    };
    painter.line_segment(
        [to_screen(0.0, 0.0), to_screen(1.0, 1.0)],
        Stroke::new(1.0, theme::TEXT_DIM),
    );
    let points: Vec<egui::Pos2> = std::iter::once(to_screen(0.0, 0.0))
        .chain(
            r.roc
                .iter()
                .map(|p| to_screen(p.false_positive_rate, p.true_positive_rate)),
        )
        .chain(std::iter::once(to_screen(1.0, 1.0)))
        .collect();
    painter.add(egui::Shape::line(points, Stroke::new(2.0, theme::ACCENT)));
    // The point of a threshold: the lowest ROC threshold at or above it.
    let point_of = |t: f32| {
        r.roc
            .iter()
            .filter(|p| p.threshold >= t)
            .min_by(|a, b| a.threshold.total_cmp(&b.threshold))
    };
    for (t, colour) in [
        (Some(threshold), Color32::WHITE),
        (proposed, theme::PNEUMONIA),
    ] {
        if let Some(p) = t.and_then(point_of) {
            painter.circle_filled(
                to_screen(p.false_positive_rate, p.true_positive_rate),
                4.0,
                colour,
            );
        }
    }
    painter.text(
        rect.left_bottom() + Vec2::new(4.0, -4.0),
        egui::Align2::LEFT_BOTTOM,
        "1 - specificity",
        egui::FontId::proportional(10.0),
        theme::TEXT_DIM,
    );
    painter.text(
        rect.left_top() + Vec2::new(4.0, 4.0),
        egui::Align2::LEFT_TOP,
        "sensitivity",
        egui::FontId::proportional(10.0),
        theme::TEXT_DIM,
    );
}
