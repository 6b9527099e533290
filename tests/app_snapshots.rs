//! Snapshots of the review window, rendered with wgpu (Mesa's software Vulkan here). Regenerate
//! with `UPDATE_SNAPSHOTS=1 cargo test --release --test app_snapshots` and look at the images.

#![allow(clippy::unwrap_used)]

mod app_common;

use app_common::{config, folder, labelled_folder, settle, step_until};
use cxr_triage::app::App;
use egui::Key;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;

fn small_harness(cfg: cxr_triage::app::AppConfig) -> Harness<'static, App> {
    Harness::builder()
        .with_size([1024.0, 640.0])
        .with_render_cursor(false)
        .build_eframe(|cc| App::new(cc, cfg))
}

/// Hides the line that says how long scoring took.
fn mask_timing(h: &mut Harness<'static, App>) {
    let rect = h.get_by_label_contains("scored in").rect();
    h.mask(rect);
}

#[test]
fn review_window_with_heat_map() {
    let fx = folder(4);
    let mut h = small_harness(config(&fx));
    step_until(&mut h, "the study and its heat map", App::is_settled);
    settle(&mut h);
    mask_timing(&mut h);
    h.snapshot("review_window");
}

#[test]
fn label_correction_columns() {
    let fx = labelled_folder(3);
    let mut h = small_harness(config(&fx));
    step_until(&mut h, "the study and its heat map", App::is_settled);
    h.get_by_label("Likely label errors first").click();
    settle(&mut h);
    h.key_press(Key::Home);
    step_until(&mut h, "the first study", App::is_settled);
    settle(&mut h);
    mask_timing(&mut h);
    h.snapshot("label_correction");
}

#[test]
fn shortcut_overlay() {
    let fx = folder(1);
    let mut cfg = config(&fx);
    cfg.folder = None;
    let mut h = small_harness(cfg);
    settle(&mut h);
    h.key_press(Key::F1);
    settle(&mut h);
    h.snapshot("shortcut_overlay");
}
