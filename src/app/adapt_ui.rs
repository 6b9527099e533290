//! Model > Adapt to this site: the model in force fine-tuned on the studies readers labelled in
//! this decision store (as `cxr-triage adapt`), both models measured on held-out local labels,
//! and a switch of the model in force (an audited event, as `cxr-triage use-model`).
//!
//! Adaptation runs on its own thread and reports progress through atomics; the new model is
//! written beside the store (`models/NAME.json` and `NAME.safetensors`), never over a file.
//! Switching records the event on another thread, then the scorer is started again: it loads the
//! model in force and the open folder is scored again with it. The old model stays where it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use egui::RichText;
use poll_promise::Promise;

use super::notifications::Level;
use super::scorer::ScorerHandle;
use super::{App, ModelState, theme};
use crate::audit::DecisionStore;
use crate::model::Classifier;
use crate::model::adapt::{self, AdaptError, AdaptEvent, AdaptOptions, LocalSource};
use crate::model::local::{self, LocalFigures};

/// How far adaptation has got, written by its thread and read by the window.
#[derive(Default)]
struct Progress {
    labelled: AtomicUsize,
    read: AtomicUsize,
    epoch: AtomicUsize,
    step: AtomicUsize,
    steps: AtomicUsize,
}

/// What adaptation gave.
enum Outcome {
    /// A better model, written.
    Better {
        card_path: PathBuf,
        model_id: String,
        held_out: usize,
        before: Box<LocalFigures>,
        after: Box<LocalFigures>,
        threshold: f32,
        secs: f64,
        left_out: usize,
    },
    /// Not better on the held-out labels: nothing written.
    NotBetter {
        before: Box<LocalFigures>,
        after: Box<LocalFigures>,
    },
}

/// The Adapt to this site window.
pub(super) struct AdaptView {
    name: String,
    reason: String,
    progress: Arc<Progress>,
    job: Option<Promise<Result<Outcome, String>>>,
    outcome: Option<Outcome>,
    error: Option<String>,
    /// Recording a switch: the new model's name, or why it failed.
    switch_job: Option<Promise<Result<String, String>>>,
}

/// What the reader asked for in the window this frame.
enum Ask {
    Adapt,
    Use(PathBuf, f32),
    Shipped,
}

impl App {
    /// Opens the Adapt to this site window.
    pub(super) fn open_adapt(&mut self) {
        self.dialogs.adapt = Some(AdaptView {
            name: format!("site-{}", chrono::Local::now().format("%Y%m%d-%H%M")),
            reason: String::new(),
            progress: Arc::new(Progress::default()),
            job: None,
            outcome: None,
            error: None,
            switch_job: None,
        });
    }

    /// Draws the Adapt to this site window, if open.
    pub(super) fn adapt_ui(&mut self, ctx: &egui::Context) {
        let model = match &self.model {
            ModelState::Ready(c) => Some((Arc::clone(c), self.threshold_in_force_now(c))),
            _ => None,
        };
        let Some(view) = &mut self.dialogs.adapt else {
            return;
        };
        match super::dialogs::poll_job(&mut view.job) {
            Some(Ok(outcome)) => view.outcome = Some(outcome),
            Some(Err(e)) => view.error = Some(e),
            None => {}
        }
        let switched = super::dialogs::poll_job(&mut view.switch_job);
        let follows_site = self.config.follow_site_model;
        let reader = self.reader.trim().to_owned();
        let mut open = true;
        let mut ask = None;
        egui::Window::new("Adapt to this site")
            .open(&mut open)
            .default_width(860.0)
            .show(ctx, |ui| {
                ask = view_ui(ui, view, model.as_ref(), &reader, follows_site);
            });
        let running = view.job.is_some() || view.switch_job.is_some();
        if !open && !running {
            self.dialogs.adapt = None;
        }
        match ask {
            Some(Ask::Adapt) => self.start_adapting(ctx),
            Some(Ask::Use(card_path, threshold)) => self.start_switch(Some((card_path, threshold))),
            Some(Ask::Shipped) => self.start_switch(None),
            None => {}
        }
        match switched {
            Some(Ok(model_id)) => {
                self.toasts.add(
                    Level::Success,
                    format!(
                        "The model in force at this site is now {model_id} (an audited change); \
                         the folder is scored again with it."
                    ),
                );
                self.reload_model(ctx);
            }
            Some(Err(e)) => {
                self.toasts
                    .add(Level::Error, format!("The model was not switched: {e}"));
            }
            None => {}
        }
    }

    /// The threshold in force for `classifier` now (the site's, else its card's).
    fn threshold_in_force_now(&self, classifier: &Classifier) -> f32 {
        self.worklist()
            .and_then(crate::worklist::Worklist::threshold)
            .unwrap_or(classifier.card().threshold)
    }

    fn start_adapting(&mut self, ctx: &egui::Context) {
        let Ok(db) = self.db_path.clone() else {
            self.toasts
                .add(Level::Error, "Adaptation needs a decision store.");
            return;
        };
        let Some(view) = &mut self.dialogs.adapt else {
            return;
        };
        let name = view.name.trim().to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            view.error = Some("Name the model with letters, digits, '-' and '_' only.".to_owned());
            return;
        }
        let out = db
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("models")
            .join(&name);
        let weights = self.config.weights.clone();
        let follows_site = self.config.follow_site_model;
        let progress = Arc::new(Progress::default());
        view.progress = Arc::clone(&progress);
        view.outcome = None;
        view.error = None;
        let ctx = ctx.clone();
        view.job = Some(Promise::spawn_thread("adapt", move || {
            run_adapt(&db, &weights, follows_site, &out, &progress, &ctx)
        }));
    }

    /// Records a switch to the model at `to` (with its threshold), or back to the model this
    /// window was opened with when `None`.
    fn start_switch(&mut self, to: Option<(PathBuf, f32)>) {
        let (Ok(db), Some(current)) = (self.db_path.clone(), self.classifier().cloned()) else {
            return;
        };
        let from_threshold = self.threshold_in_force_now(&current);
        let weights = self.config.weights.clone();
        let reader = self.reader.trim().to_owned();
        let Some(view) = &mut self.dialogs.adapt else {
            return;
        };
        let reason = view.reason.trim().to_owned();
        let basis = match &view.outcome {
            Some(Outcome::Better {
                held_out,
                before,
                after,
                ..
            }) if to.is_some() => serde_json::json!({
                "held_out_labels": held_out,
                "held_out_before": before,
                "held_out_after": after,
            }),
            _ => serde_json::json!({}),
        };
        view.switch_job = Some(Promise::spawn_thread("switch-model", move || {
            let store = DecisionStore::open_existing(&db).map_err(|e| e.to_string())?;
            let (path, threshold) = match to {
                Some(t) => t,
                None => {
                    let shipped = Classifier::load(&weights).map_err(|e| e.to_string())?;
                    let (t, _) =
                        local::threshold_in_force(&store, &shipped).map_err(|e| e.to_string())?;
                    (weights, t)
                }
            };
            let path = path.canonicalize().unwrap_or(path);
            let next = Classifier::load(&path).map_err(|e| e.to_string())?;
            let event = local::record_model_switch(
                &store,
                &reader,
                &reason,
                (&current, from_threshold),
                (&next, &path, threshold),
                basis,
            )
            .map_err(|e| e.to_string())?;
            Ok(event.model_id)
        }));
    }

    /// Starts the scorer again (it loads the model in force) and scores the open folder again.
    fn reload_model(&mut self, ctx: &egui::Context) {
        let site_db = self
            .db_path
            .as_ref()
            .ok()
            .filter(|_| self.config.follow_site_model)
            .cloned();
        match ScorerHandle::spawn(ctx.clone(), self.config.weights.clone(), site_db) {
            Ok(scorer) => {
                self.scorer = Some(scorer);
                self.model = ModelState::Loading;
                if let Some(root) = self.session.as_ref().map(|s| s.root.clone()) {
                    self.push(super::Command::OpenFolder(root));
                }
            }
            Err(e) => self
                .toasts
                .add(Level::Error, format!("cannot start scoring: {e}")),
        }
    }
}

/// Reads the labelled studies, adapts the model in force and writes the new model at `out`.
fn run_adapt(
    db: &Path,
    weights: &Path,
    follows_site: bool,
    out: &Path,
    progress: &Progress,
    ctx: &egui::Context,
) -> Result<Outcome, String> {
    let store = DecisionStore::open_existing(db).map_err(|e| e.to_string())?;
    let parent_path = match local::load_model_in_force(&store).map_err(|e| e.to_string())? {
        Some((path, _)) if follows_site => path,
        _ => weights.to_owned(),
    };
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| format!("cannot read the model file {}: {e}", p.display()))
    };
    let card_json = read(&parent_path.with_extension("json"))?;
    let parent_weights = read(&parent_path.with_extension("safetensors"))?;
    let parent =
        Classifier::from_bytes(&card_json, parent_weights.clone()).map_err(|e| e.to_string())?;
    let (threshold, _) = local::threshold_in_force(&store, &parent).map_err(|e| e.to_string())?;
    let head = store.head_hash().map_err(|e| e.to_string())?;
    let labelled = store
        .labelled_studies(None)
        .map_err(|e| e.to_string())?
        .len();
    progress.labelled.store(labelled, Ordering::Relaxed);
    let (samples, left) = adapt::read_local_samples(&store, None, parent.input_size(), &|| {
        progress.read.fetch_add(1, Ordering::Relaxed);
        ctx.request_repaint();
    })
    .map_err(|e| e.to_string())?;
    let opts = AdaptOptions::default();
    let source = LocalSource {
        store: db.display().to_string(),
        store_last_event_hash: head,
        folder: None,
        left_out: left.len(),
    };
    let mut on_event = |e: AdaptEvent| {
        match e {
            AdaptEvent::Started {
                steps_per_epoch, ..
            } => progress.steps.store(steps_per_epoch, Ordering::Relaxed),
            AdaptEvent::Step { epoch, .. } => {
                progress.epoch.store(epoch, Ordering::Relaxed);
                progress.step.fetch_add(1, Ordering::Relaxed);
            }
            AdaptEvent::EpochEnd { .. } => progress.step.store(0, Ordering::Relaxed),
        }
        ctx.request_repaint();
    };
    let parent_ref = adapt::Parent {
        card: parent.card(),
        weights: &parent_weights,
        threshold,
    };
    match adapt::adapt(&parent_ref, &samples, &source, out, &opts, &mut on_event) {
        Ok(adapted) => {
            let record = adapted
                .card
                .adaptation
                .ok_or("the adapted card has no adaptation record")?;
            Ok(Outcome::Better {
                card_path: adapted.card_path,
                model_id: adapted.card.card.model_id,
                held_out: record.held_out_labels,
                before: Box::new(record.held_out_before),
                after: Box::new(record.held_out_after),
                threshold: record.threshold,
                secs: record.adapt_secs,
                left_out: left.len(),
            })
        }
        Err(AdaptError::NotBetter { before, after }) => Ok(Outcome::NotBetter { before, after }),
        Err(e) => Err(e.to_string()),
    }
}

fn figures_columns(ui: &mut egui::Ui, before: &LocalFigures, after: &LocalFigures) {
    ui.columns(2, |cols| {
        cols[0].label(RichText::new("Before (the model in force)").strong());
        cols[0].label(RichText::new(before.text()).monospace().small());
        cols[1].label(RichText::new("After (adapted)").strong());
        cols[1].label(RichText::new(after.text()).monospace().small());
    });
}

fn view_ui(
    ui: &mut egui::Ui,
    view: &mut AdaptView,
    model: Option<&(Arc<Classifier>, f32)>,
    reader: &str,
    follows_site: bool,
) -> Option<Ask> {
    let mut ask = None;
    let Some((classifier, threshold)) = model else {
        ui.label("The model is not loaded.");
        return None;
    };
    ui.label(format!(
        "Model in force: {} (threshold {threshold:.3})",
        classifier.card().model_id
    ));
    ui.label(
        RichText::new(
            "Fine-tunes this model on the studies readers labelled in this decision store, holds \
             30% of each label out (by patient) and measures both models on them. About a minute \
             for 300 studies on 2 cores. The new model is kept only if it ranks the held-out \
             studies better; it is written beside the store and used only once you switch to it.",
        )
        .color(theme::TEXT_DIM),
    );
    if !follows_site {
        ui.colored_label(
            theme::WARNING,
            "This window uses the model named on the command line (--weights): a switch is \
             recorded for the site but this window keeps its model.",
        );
    }
    ui.add_space(6.0);
    let running = view.job.is_some();
    ui.horizontal(|ui| {
        ui.label("New model's name");
        ui.add_enabled(
            !running,
            egui::TextEdit::singleline(&mut view.name).desired_width(220.0),
        );
        if ui
            .add_enabled(!running, egui::Button::new("Adapt"))
            .clicked()
        {
            ask = Some(Ask::Adapt);
        }
    });
    if running {
        let p = &view.progress;
        let (labelled, read) = (
            p.labelled.load(Ordering::Relaxed),
            p.read.load(Ordering::Relaxed),
        );
        let epoch = p.epoch.load(Ordering::Relaxed);
        let text = if epoch == 0 {
            format!("Reading the labelled studies: {read} of {labelled}")
        } else {
            format!(
                "Fine-tuning: epoch {epoch} of {}, step {} of {}",
                AdaptOptions::default().epochs,
                p.step.load(Ordering::Relaxed),
                p.steps.load(Ordering::Relaxed)
            )
        };
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(text);
        });
    }
    if let Some(e) = &view.error {
        ui.colored_label(theme::ERROR, e);
    }
    match &view.outcome {
        Some(Outcome::Better {
            card_path,
            model_id,
            held_out,
            before,
            after,
            threshold,
            secs,
            left_out,
        }) => {
            ui.separator();
            ui.label(format!(
                "{model_id} written in {secs:.0} s ({}); measured on {held_out} held-out studies{}.",
                card_path.display(),
                if *left_out > 0 {
                    format!(", {left_out} labelled studies left out (file missing or changed)")
                } else {
                    String::new()
                }
            ));
            figures_columns(ui, before, after);
            ui.label(format!(
                "Its threshold, chosen on the held-out labels: {threshold:.3}"
            ));
            ui.horizontal(|ui| {
                ui.label("Reason");
                ui.add(egui::TextEdit::singleline(&mut view.reason).desired_width(260.0));
                let label = format!("Use {model_id} at this site as {reader}");
                if ui
                    .add_enabled(
                        view.switch_job.is_none() && !reader.is_empty(),
                        egui::Button::new(label),
                    )
                    .on_hover_text(
                        "Recorded in the audit trail: who, when, both models and the figures \
                         above. The current model stays available.",
                    )
                    .clicked()
                {
                    ask = Some(Ask::Use(card_path.clone(), *threshold));
                }
            });
        }
        Some(Outcome::NotBetter { before, after }) => {
            ui.separator();
            ui.colored_label(
                theme::WARNING,
                "The adapted model does not rank the held-out studies better: no model was \
                 written.",
            );
            figures_columns(ui, before, after);
        }
        None => {}
    }
    if !classifier.is_shipped() {
        ui.separator();
        if ui
            .add_enabled(
                view.switch_job.is_none() && !reader.is_empty(),
                egui::Button::new("Go back to the shipped model"),
            )
            .on_hover_text("An audited switch, like the one that brought this model in.")
            .clicked()
        {
            ask = Some(Ask::Shipped);
        }
    }
    ask
}
