//! The picture matches its controls: window presets, invert and window drags, in any order and
//! any number of times, always end with the main pane's texture rendered through the window and
//! invert state the controls show, and the same state always gives the same pixels. The header
//! and the worklist show what a radiologist expects: age, sex, study date, view, waiting time.

#![allow(clippy::unwrap_used)]

mod app_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use app_common::{config, folder, harness, step_until};
use cxr_triage::app::{App, Command, DisplayedImage};
use cxr_triage::io::Window;
use egui::{Event, Key, Modifiers, PointerButton};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};

/// Runs frames until the texture on screen was rendered with the pane's window and invert;
/// fails after ten seconds (the picture never caught up with its controls).
fn picture_matches_controls(h: &mut Harness<'static, App>, after: &str) -> DisplayedImage {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        h.step();
        let app = h.state();
        let pane = app.left_pane();
        if let Some(d) = app.displayed_image()
            && d.window == pane.window
            && d.invert == pane.invert
        {
            // One more frame: the corner text is drawn from the same entry.
            h.step();
            return h.state().displayed_image().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "after {after}: the pane shows {:?} but its controls say window {:?}, invert {}",
            app.displayed_image().map(|d| (d.window, d.invert)),
            pane.window,
            pane.invert
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The window a picture was effectively rendered with.
fn effective(d: &DisplayedImage, default: Window) -> (u64, u64, bool) {
    let w = d.window.unwrap_or(default);
    (w.center.to_bits(), w.width.to_bits(), d.invert)
}

#[test]
fn presets_invert_and_drags_in_any_order_keep_the_picture_matching_its_controls() {
    let fx = folder(3);
    let mut h = harness(config(&fx));
    step_until(&mut h, "the study on screen", App::is_settled);
    // A scored study (the unreadable file heads the list).
    let id = *h
        .state()
        .view_order()
        .iter()
        .find(|&&id| {
            h.state()
                .worklist()
                .unwrap()
                .row(id)
                .unwrap()
                .score_value()
                .is_some()
        })
        .unwrap();
    h.state_mut().push(Command::Select(id));
    let base = picture_matches_controls(&mut h, "selecting the study");
    let [default, ..] = h.state().selected_windows().unwrap();
    assert_eq!((base.window, base.invert), (None, false));

    // Invert twice: the picture comes back, and the inverted one is its negative.
    h.key_press(Key::I);
    let inverted = picture_matches_controls(&mut h, "I");
    assert!(inverted.invert);
    assert_ne!(inverted.digest, base.digest);
    assert!((inverted.mean - (255.0 - base.mean)).abs() < 1e-6);
    h.key_press(Key::I);
    let back = picture_matches_controls(&mut h, "I, I");
    assert_eq!(back.digest, base.digest, "invert twice shows the original");

    // High contrast, then the default again (key 1, and the menu's "Default").
    h.key_press(Key::Num4);
    let high = picture_matches_controls(&mut h, "4");
    assert!(high.window.is_some());
    h.key_press(Key::Num1);
    let back = picture_matches_controls(&mut h, "4, 1");
    assert_eq!((back.window, back.digest), (None, base.digest));
    h.key_press(Key::Num4);
    picture_matches_controls(&mut h, "4, 1, 4");
    h.state_mut().push(Command::WindowPreset(0));
    let back = picture_matches_controls(&mut h, "4, 1, 4, Default");
    assert_eq!(back.digest, base.digest);

    // A fixed pseudo-random walk through presets and invert: every state always shows the
    // same pixels, whatever came before.
    let mut seen: HashMap<(u64, u64, bool), u64> = HashMap::new();
    seen.insert(effective(&base, default), base.digest);
    let keys = [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::I];
    let mut state = 12_345u32;
    let mut walk = Vec::new();
    for _ in 0..24 {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let key = keys[(state >> 24) as usize % keys.len()];
        walk.push(key);
        h.key_press(key);
        let d = picture_matches_controls(&mut h, &format!("{walk:?}"));
        let expected = *seen.entry(effective(&d, default)).or_insert(d.digest);
        assert_eq!(d.digest, expected, "after {walk:?}");
    }

    // A right-drag changes the window; key 1 and invert still bring back the original.
    let pane = h.get_by_label("Link panes").rect().left_bottom() + egui::vec2(200.0, 200.0);
    h.hover_at(pane);
    h.event(Event::PointerButton {
        pos: pane,
        button: PointerButton::Secondary,
        pressed: true,
        modifiers: Modifiers::NONE,
    });
    h.step();
    for i in 1..=4 {
        h.event(Event::PointerMoved(pane + egui::vec2(12.0 * i as f32, 6.0)));
        h.step();
    }
    h.event(Event::PointerButton {
        pos: pane + egui::vec2(48.0, 6.0),
        button: PointerButton::Secondary,
        pressed: false,
        modifiers: Modifiers::NONE,
    });
    let dragged = picture_matches_controls(&mut h, "a right-drag");
    assert!(dragged.window.is_some());
    assert_ne!(dragged.digest, base.digest);
    h.key_press(Key::Num1);
    let now = picture_matches_controls(&mut h, "a right-drag, 1");
    let expected_invert = now.invert;
    if expected_invert {
        h.key_press(Key::I);
    }
    let back = picture_matches_controls(&mut h, "a right-drag, 1, (I)");
    assert_eq!(back.digest, base.digest);
}

#[test]
fn s_gives_the_film_the_whole_viewer_and_is_in_the_help() {
    let fx = folder(2);
    let mut h = harness(config(&fx));
    step_until(&mut h, "the study on screen", App::is_settled);
    assert!(!h.state().single_pane());
    h.key_press(Key::S);
    app_common::settle(&mut h);
    assert!(h.state().single_pane());
    h.key_press(Key::S);
    app_common::settle(&mut h);
    assert!(!h.state().single_pane());
    h.key_press(Key::F1);
    app_common::settle(&mut h);
    assert!(h.query_by_label_contains("Single pane").is_some());
}

#[test]
fn the_header_and_optional_columns_show_age_sex_date_view_and_waiting_time() {
    let fx = folder(3);
    app_common::write_dicom_study(&fx.studies.join("chest.dcm"), 5, "045Y", "F", "PA");
    let mut h = harness(config(&fx));
    step_until(&mut h, "the scores", |app| {
        app.worklist().is_some() && !app.is_scoring() && app.model_ready()
    });
    let w = h.state().worklist().unwrap();
    let id = w.rows().iter().find(|r| r.name == "chest.dcm").unwrap().id;
    let facts = &w.row(id).unwrap().facts;
    assert_eq!(
        facts.summary().as_deref(),
        Some("45 y · F · 2024-01-31 · PA")
    );
    // Every study has a waiting time: the DICOM one from its study date and time, the others
    // from their files.
    assert!(
        w.rows()
            .iter()
            .filter(|r| r.sha256.is_some())
            .all(|r| r.facts.waiting_since.is_some())
    );
    h.state_mut().push(Command::Select(id));
    step_until(&mut h, "the study on screen", App::is_settled);
    assert!(h.query_by_label("45 y · F · 2024-01-31 · PA").is_some());
    // The optional columns are there, and the View menu switches one off.
    assert!(
        h.query_all_by_label_contains("Waiting").next().is_some(),
        "no Waiting column"
    );
    // Age, sex, date and view are in the header; their columns are off until switched on.
    assert!(h.query_by_label("PA").is_none());
    assert!(h.query_by_label("45 y F").is_none());
    h.state_mut()
        .push(Command::ToggleColumn(cxr_triage::app::OptionalColumn::View));
    app_common::settle(&mut h);
    assert!(h.query_by_label("PA").is_some(), "no View column");
    h.state_mut().push(Command::ToggleColumn(
        cxr_triage::app::OptionalColumn::AgeSex,
    ));
    app_common::settle(&mut h);
    assert!(h.query_by_label("45 y F").is_some(), "no Age/sex column");
    // The Study column starts with the file name.
    let labels: Vec<String> = h
        .query_all_by_label_contains("study-02")
        .filter_map(|n| {
            let node = n.accesskit_node();
            node.label().or_else(|| node.value())
        })
        .collect();
    assert!(
        labels.iter().any(|l| l.starts_with("study-02.png")),
        "{labels:?}"
    );
}
