//! Toasts: short notices in the corner of the window for the outcome of actions (an export
//! done or failed, a decision the store refused). After rerun's `re_ui` notifications.

use egui::{Align2, Color32, Frame, Id, Margin, RichText, Stroke};

use super::theme;

/// How serious a notice is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// Something finished.
    Success,
    /// For information.
    Info,
    /// Something the reader should look at.
    Warning,
    /// An action failed.
    Error,
}

impl Level {
    /// Seconds the notice stays up: errors until they are read.
    fn lifetime_secs(self) -> f64 {
        match self {
            Self::Success | Self::Info => 5.0,
            Self::Warning => 10.0,
            Self::Error => 20.0,
        }
    }

    fn colour(self) -> Color32 {
        match self {
            Self::Success => theme::NORMAL,
            Self::Info => theme::ACCENT,
            Self::Warning => theme::WARNING,
            Self::Error => theme::ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Success => "Done",
            Self::Info => "Note",
            Self::Warning => "Warning",
            Self::Error => "Failed",
        }
    }
}

/// One notice.
#[derive(Clone, Debug)]
pub(crate) struct Toast {
    /// How serious.
    pub level: Level,
    /// What happened, in words.
    pub text: String,
    /// When it was shown (egui time, seconds), once it has been.
    shown_at: Option<f64>,
}

/// The notices on screen, newest last.
#[derive(Debug, Default)]
pub(crate) struct Notifications {
    toasts: Vec<Toast>,
}

impl Notifications {
    /// Adds a notice. The same text twice in a row is shown once.
    pub fn add(&mut self, level: Level, text: impl Into<String>) {
        let text = text.into();
        if self.toasts.last().is_some_and(|t| t.text == text) {
            return;
        }
        tracing::debug!(target: "cxr_triage::app", "notice shown ({level:?})");
        self.toasts.push(Toast {
            level,
            text,
            shown_at: None,
        });
        if self.toasts.len() > 6 {
            self.toasts.remove(0);
        }
    }

    /// The notices on screen.
    pub fn toasts(&self) -> &[Toast] {
        &self.toasts
    }

    /// Draws the notices at the top right, under the header and the viewer's toolbar (never over
    /// the decision bar, where the reader's next click goes), and drops those that have expired
    /// or been clicked away.
    pub fn show(&mut self, ctx: &egui::Context) {
        let now = ctx.input(|i| i.time);
        let mut soonest_expiry: Option<f64> = None;
        let mut new_toast = false;
        self.toasts.retain_mut(|t| {
            new_toast |= t.shown_at.is_none();
            let shown = *t.shown_at.get_or_insert(now);
            let left = shown + t.level.lifetime_secs() - now;
            if left > 0.0 {
                soonest_expiry = Some(soonest_expiry.map_or(left, |s| s.min(left)));
            }
            left > 0.0
        });
        if let Some(secs) = soonest_expiry {
            ctx.request_repaint_after_secs(secs as f32);
        }
        if new_toast {
            // The first frame of a notice only measures it: draw again at once, so that it is
            // placed where it fits (without this it stayed off-screen until the next input).
            ctx.request_repaint();
        }
        let mut dismissed = None;
        egui::Area::new(Id::unique("notifications"))
            .anchor(Align2::RIGHT_TOP, [-12.0, 180.0])
            .constrain(true)
            .order(egui::Order::Foreground)
            .interactable(true)
            .show(ctx, |ui| {
                ui.set_max_width(420.0);
                for (i, toast) in self.toasts.iter().enumerate().rev() {
                    let colour = toast.level.colour();
                    let response = Frame::new()
                        .fill(theme::PANEL_RAISED)
                        .stroke(Stroke::new(1.0, colour))
                        .corner_radius(4.0)
                        .inner_margin(Margin::symmetric(12, 8))
                        .show(ui, |ui| {
                            ui.set_width(396.0);
                            ui.label(RichText::new(toast.level.title()).strong().color(colour));
                            ui.label(RichText::new(&toast.text).color(theme::TEXT));
                        })
                        .response
                        .interact(egui::Sense::click())
                        .on_hover_text("Click to dismiss");
                    if response.clicked() {
                        dismissed = Some(i);
                    }
                    ui.add_space(6.0);
                }
            });
        if let Some(i) = dismissed {
            self.toasts.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_notices_are_shown_once_and_old_ones_make_room() {
        let mut n = Notifications::default();
        n.add(Level::Error, "disk full");
        n.add(Level::Error, "disk full");
        assert_eq!(n.toasts().len(), 1);
        for i in 0..10 {
            n.add(Level::Info, format!("n{i}"));
        }
        assert_eq!(n.toasts().len(), 6);
        assert_eq!(n.toasts().last().unwrap().text, "n9");
    }
}
