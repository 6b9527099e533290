//! The look: a dark, low-glare theme for reading rooms, with colour kept for meaning
//! (pneumonia, normal, warnings, errors).

use egui::{Color32, CornerRadius, FontFamily, FontId, Stroke, TextStyle, Visuals};

/// Image panes: black, as on a diagnostic monitor.
pub(crate) const IMAGE_BACKGROUND: Color32 = Color32::BLACK;
/// Panels.
pub(crate) const PANEL: Color32 = Color32::from_rgb(0x17, 0x19, 0x1d);
/// Raised surfaces: toasts, menus, headers.
pub(crate) const PANEL_RAISED: Color32 = Color32::from_rgb(0x21, 0x24, 0x2a);
/// Lines between areas.
pub(crate) const BORDER: Color32 = Color32::from_rgb(0x2e, 0x32, 0x39);
/// Body text.
pub(crate) const TEXT: Color32 = Color32::from_rgb(0xd4, 0xd7, 0xdc);
/// Secondary text.
pub(crate) const TEXT_DIM: Color32 = Color32::from_rgb(0x8a, 0x90, 0x99);
/// Selection and focus.
pub(crate) const ACCENT: Color32 = Color32::from_rgb(0x4c, 0x8d, 0xf6);
/// The AI or reader said pneumonia.
pub(crate) const PNEUMONIA: Color32 = Color32::from_rgb(0xf0, 0x8a, 0x4b);
/// The AI or reader said normal.
pub(crate) const NORMAL: Color32 = Color32::from_rgb(0x5b, 0xc0, 0x9b);
/// Something to look at.
pub(crate) const WARNING: Color32 = Color32::from_rgb(0xe8, 0xc2, 0x4a);
/// Something failed.
pub(crate) const ERROR: Color32 = Color32::from_rgb(0xf2, 0x5f, 0x5c);

/// The colour of a label.
pub(crate) fn label_colour(label: crate::worklist::Label) -> Color32 {
    match label {
        crate::worklist::Label::Normal => NORMAL,
        crate::worklist::Label::Pneumonia => PNEUMONIA,
    }
}

/// Applies the theme to the context.
pub(crate) fn apply(ctx: &egui::Context) {
    let mut visuals = Visuals::dark();
    visuals.panel_fill = PANEL;
    visuals.window_fill = PANEL_RAISED;
    visuals.extreme_bg_color = Color32::from_rgb(0x0f, 0x11, 0x14);
    visuals.faint_bg_color = Color32::from_rgb(0x1c, 0x1f, 0x24);
    visuals.window_stroke = Stroke::new(1.0, BORDER);
    visuals.override_text_color = Some(TEXT);
    visuals.selection.bg_fill = Color32::from_rgb(0x24, 0x45, 0x7a);
    visuals.selection.stroke = Stroke::new(1.0, ACCENT);
    visuals.hyperlink_color = ACCENT;
    visuals.warn_fg_color = WARNING;
    visuals.error_fg_color = ERROR;
    visuals.striped = true;
    let radius = CornerRadius::same(3);
    visuals.widgets.noninteractive.bg_stroke = Stroke::new(1.0, BORDER);
    visuals.widgets.noninteractive.corner_radius = radius;
    visuals.widgets.inactive.corner_radius = radius;
    visuals.widgets.hovered.corner_radius = radius;
    visuals.widgets.active.corner_radius = radius;
    visuals.widgets.open.corner_radius = radius;
    visuals.widgets.inactive.weak_bg_fill = Color32::from_rgb(0x2a, 0x2e, 0x35);
    visuals.widgets.inactive.bg_fill = Color32::from_rgb(0x2a, 0x2e, 0x35);
    visuals.widgets.hovered.weak_bg_fill = Color32::from_rgb(0x35, 0x3a, 0x43);
    visuals.widgets.hovered.bg_fill = Color32::from_rgb(0x35, 0x3a, 0x43);
    ctx.set_visuals_of(egui::Theme::Dark, visuals);
    ctx.set_theme(egui::Theme::Dark);
    ctx.all_styles_mut(|style| {
        style.text_styles = [
            (
                TextStyle::Small,
                FontId::new(11.0, FontFamily::Proportional),
            ),
            (TextStyle::Body, FontId::new(13.5, FontFamily::Proportional)),
            (
                TextStyle::Button,
                FontId::new(13.5, FontFamily::Proportional),
            ),
            (
                TextStyle::Heading,
                FontId::new(18.0, FontFamily::Proportional),
            ),
            (
                TextStyle::Monospace,
                FontId::new(12.5, FontFamily::Monospace),
            ),
        ]
        .into();
        style.spacing.item_spacing = egui::vec2(8.0, 5.0);
        // Clicks on a worklist row's text select the row, not the text.
        style.interaction.selectable_labels = false;
        style.spacing.button_padding = egui::vec2(8.0, 3.0);
    });
}
