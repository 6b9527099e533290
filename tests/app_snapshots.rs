//! Snapshots of the review window, rendered with wgpu (Mesa's software Vulkan here). Regenerate
//! with `UPDATE_SNAPSHOTS=1 cargo test --release --test app_snapshots` and look at the images.

#![allow(clippy::unwrap_used)]

mod app_common;

use app_common::{config, folder, labelled_folder, settle, step_until};
use cxr_triage::app::App;
use egui::Key;
use egui_kittest::kittest::Queryable as _;
use egui_kittest::{Harness, SnapshotError};

fn small_harness(cfg: cxr_triage::app::AppConfig) -> Harness<'static, App> {
    sized_harness(cfg, [1024.0, 640.0])
}

fn sized_harness(cfg: cxr_triage::app::AppConfig, size: [f32; 2]) -> Harness<'static, App> {
    Harness::builder()
        .with_size(size)
        .with_render_cursor(false)
        .build_eframe(|cc| App::new(cc, cfg))
}

/// Compares with `tests/snapshots/NAME.png`. Without a renderer (no Vulkan or GL driver) the
/// comparison is skipped with a reason, except under `CI`, where it fails.
fn snapshot(h: &mut Harness<'static, App>, name: &str) {
    match h.try_snapshot(name) {
        Err(SnapshotError::RenderError { err }) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "skipped snapshot {name}: nothing can render here ({err}); install mesa-vulkan-drivers"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(()) => {}
    }
}

/// Hides the line that says how long scoring took, and the waiting times (they grow with the
/// clock: "0 min" in the header and the Waiting column becomes "1 min" on a slow machine).
fn mask_timing(h: &mut Harness<'static, App>) {
    let rect = h.get_by_label_contains("scored in").rect();
    h.mask(rect);
    let waiting: Vec<egui::Rect> = h
        .query_all_by_label_contains(" min")
        .map(|n| n.rect())
        .collect();
    assert!(!waiting.is_empty(), "no waiting time on screen");
    for rect in waiting {
        h.mask(rect);
    }
}

#[test]
fn review_window_with_heat_map() {
    let fx = folder(4);
    let mut h = small_harness(config(&fx));
    step_until(&mut h, "the study and its heat map", App::is_settled);
    // The top scored study (the unreadable file heads the list, needing a manual read).
    let scored = h.state().view_order()[1];
    h.state_mut().push(cxr_triage::app::Command::Select(scored));
    settle(&mut h);
    step_until(&mut h, "the study and its heat map", App::is_settled);
    settle(&mut h);
    mask_timing(&mut h);
    snapshot(&mut h, "review_window");
}

#[test]
fn label_correction_columns() {
    let fx = labelled_folder(3);
    // Wide enough for the label columns.
    let mut h = sized_harness(config(&fx), [1360.0, 720.0]);
    step_until(&mut h, "the study and its heat map", App::is_settled);
    h.get_by_label("Likely label errors first").click();
    settle(&mut h);
    h.key_press(Key::Home);
    // Let the window apply the selection first: until it has, the previous study (already
    // settled) would satisfy the wait, and the new one's heat map would still be computing.
    settle(&mut h);
    step_until(&mut h, "the first study", App::is_settled);
    settle(&mut h);
    mask_timing(&mut h);
    snapshot(&mut h, "label_correction");
}

#[test]
fn shortcut_overlay() {
    let fx = folder(1);
    let mut cfg = config(&fx);
    cfg.folder = None;
    let mut h = small_harness(cfg);
    // The status bar names the model once it is loaded.
    step_until(&mut h, "the model", App::model_ready);
    settle(&mut h);
    h.key_press(Key::F1);
    settle(&mut h);
    snapshot(&mut h, "shortcut_overlay");
}
