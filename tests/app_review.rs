//! The review window, driven as a reader would: open a folder of generated studies, wait for the
//! scores, decide from the keyboard and the mouse, and check the decision store.

#![allow(clippy::unwrap_used)]

mod app_common;

use app_common::{
    config, folder, harness, labelled_folder, settle, step_until, until_decidable, wait_for_scores,
};
use cxr_triage::audit::{Action, DecisionStore};
use cxr_triage::worklist::{Label, LabelSource, StudyId, StudyRow};
use egui::accesskit::Role;
use egui::{Key, Modifiers};
use egui_kittest::kittest::Queryable as _;

fn row(app: &cxr_triage::app::App, id: StudyId) -> StudyRow {
    app.worklist().unwrap().row(id).unwrap().clone()
}

fn other(label: Label) -> Label {
    match label {
        Label::Normal => Label::Pneumonia,
        Label::Pneumonia => Label::Normal,
    }
}

fn label_key(label: Label) -> Key {
    match label {
        Label::Normal => Key::N,
        Label::Pneumonia => Key::P,
    }
}

#[test]
fn confirm_override_and_undo_are_recorded_in_the_store() {
    let fx = folder(6);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);

    let app = h.state();
    let w = app.worklist().unwrap();
    assert_eq!(w.len(), 7, "six studies and one file that is not an image");
    let view = app.view_order().to_vec();
    // The unreadable file first (it needs a manual read), then highest score first.
    let scores: Vec<f32> = view[1..]
        .iter()
        .filter_map(|&id| row(app, id).score_value())
        .collect();
    assert_eq!(scores.len(), 6);
    // Strictly decreasing: the fixtures get distinct scores, so this checks an order, not a tie
    // (with twenty studies at 1.000 any order would pass).
    assert!(scores.windows(2).all(|p| p[0] > p[1]), "{scores:?}");
    h.check_accessibility();
    let app = h.state();
    let junk = row(app, view[0]);
    assert_eq!(junk.name, "notes.txt");
    assert!(junk.error().unwrap().contains("not an image"), "{junk:?}");

    // Select the second scored row, then the top scored row, with the mouse.
    let (top, second) = (view[1], view[2]);
    let second_name = row(h.state(), second).name;
    h.get_by_label(&second_name).click();
    settle(&mut h);
    assert_eq!(h.state().selected(), Some(second));
    let top_row = row(h.state(), top);
    h.get_by_label(&top_row.name).click();
    settle(&mut h);
    assert_eq!(h.state().selected(), Some(top));

    // C confirms the AI label and moves on to the next unreviewed study.
    let threshold = h.state().worklist().unwrap().threshold().unwrap();
    let ai = Label::from_score(top_row.score_value().unwrap(), threshold);
    until_decidable(&mut h);
    h.key_press(Key::C);
    settle(&mut h);
    let store = DecisionStore::open(&fx.db).unwrap();
    let top_sha = top_row.sha256.clone().unwrap();
    let state = store
        .current(&top_sha)
        .unwrap()
        .expect("a decision for the top study");
    assert_eq!(state.final_label, Some(ai));
    assert_eq!(state.last_event.action, Action::Confirm);
    assert_eq!(state.last_event.reader, "Test Reader");
    assert_eq!(state.last_event.score, top_row.score_value());
    assert_eq!(state.last_event.threshold, Some(threshold));
    assert_eq!(state.last_event.model_id.as_deref(), Some("cxrnet-v3"));
    assert_eq!(state.last_event.study_path, top_row.path);
    assert_eq!(row(h.state(), top).final_label, Some(ai));
    assert_eq!(h.state().selected(), Some(second));

    // Override the second study, with a reason typed after R.
    let second_row = row(h.state(), second);
    let second_ai = Label::from_score(second_row.score_value().unwrap(), threshold);
    h.key_press(Key::R);
    settle(&mut h);
    h.get_by_label("Reason")
        .type_text("consolidation left base");
    settle(&mut h);
    h.key_press(Key::Enter);
    settle(&mut h);
    until_decidable(&mut h);
    h.key_press(label_key(other(second_ai)));
    settle(&mut h);
    let second_sha = second_row.sha256.clone().unwrap();
    let state = store.current(&second_sha).unwrap().unwrap();
    assert_eq!(state.final_label, Some(other(second_ai)));
    assert_eq!(state.last_event.action, Action::Override);
    assert_eq!(state.last_event.reason, "consolidation left base");
    assert_eq!(state.agreed, Some(false));

    // Ctrl+Z takes back the override, then the confirm: each an undo event, newest first.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    settle(&mut h);
    let state = store.current(&second_sha).unwrap().unwrap();
    assert_eq!(state.last_event.action, Action::Undo);
    assert_eq!(state.final_label, None);
    assert_eq!(h.state().selected(), Some(second));
    assert_eq!(row(h.state(), second).final_label, None);
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    settle(&mut h);
    let state = store.current(&top_sha).unwrap().unwrap();
    assert_eq!(state.last_event.action, Action::Undo);
    assert_eq!(state.final_label, None);
    assert_eq!(h.state().selected(), Some(top));

    // Nothing else was recorded, and the trail verifies.
    assert_eq!(store.event_count().unwrap(), 4);
    assert!(store.verify().unwrap().is_intact());
}

#[test]
fn keyboard_moves_through_the_list_and_unreadable_studies_cannot_be_decided() {
    let fx = folder(5);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    let view = h.state().view_order().to_vec();
    // When scoring ends with nothing selected, the top of the list is selected.
    assert_eq!(h.state().selected(), Some(view[0]));

    for (key, expected) in [
        (Key::J, 1),
        (Key::J, 2),
        (Key::K, 1),
        (Key::ArrowDown, 2),
        (Key::ArrowUp, 1),
        (Key::End, view.len() - 1),
        (Key::J, view.len() - 1),
        (Key::Home, 0),
        (Key::K, 0),
    ] {
        h.key_press(key);
        settle(&mut h);
        assert_eq!(h.state().selected(), Some(view[expected]), "after {key:?}");
    }

    // The unreadable file is first; no label can be recorded for it.
    h.key_press(Key::Home);
    settle(&mut h);
    assert_eq!(row(h.state(), view[0]).name, "notes.txt");
    step_until(&mut h, "the error on screen", |app| {
        app.decision_blocked()
            .is_some_and(|w| w.contains("cannot be shown"))
    });
    h.key_press(Key::P);
    settle(&mut h);
    assert!(
        h.state()
            .status_message()
            .is_some_and(|n| n.contains("cannot be shown")),
        "{:?}",
        h.state().status_message()
    );
    let store = DecisionStore::open(&fx.db).unwrap();
    assert_eq!(store.event_count().unwrap(), 0);

    // U jumps to the next unreviewed study.
    h.key_press(Key::U);
    settle(&mut h);
    assert_eq!(h.state().selected(), Some(view[1]));

    // F1 shows the shortcuts; Escape hides them, and keys act on the list again.
    h.key_press(Key::F1);
    settle(&mut h);
    assert!(h.query_by_label("Keyboard shortcuts").is_some());
    h.key_press(Key::J);
    settle(&mut h);
    assert_eq!(
        h.state().selected(),
        Some(view[1]),
        "keys are held while help is open"
    );
    h.key_press(Key::Escape);
    settle(&mut h);
    assert!(h.query_by_label("Keyboard shortcuts").is_none());
    h.key_press(Key::J);
    settle(&mut h);
    assert_eq!(h.state().selected(), Some(view[2]));
}

#[test]
fn label_correction_sorts_likely_label_errors_first_and_records_the_correction() {
    let fx = labelled_folder(3);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);

    let w = h.state().worklist().unwrap().clone();
    assert!(w.rows().iter().all(|r| {
        r.dataset_label
            .is_some_and(|d| d.source == LabelSource::FolderName)
    }));
    let normal = w
        .rows()
        .iter()
        .find(|r| r.name.starts_with("NORMAL"))
        .unwrap();
    assert_eq!(normal.dataset_label.unwrap().label, Label::Normal);

    h.get_by_label("Likely label errors first").click();
    settle(&mut h);
    let view = h.state().view_order().to_vec();
    let gaps: Vec<f32> = view
        .iter()
        .map(|&id| {
            let r = w.row(id).unwrap();
            (r.dataset_label.unwrap().label.target() - r.score_value().unwrap()).abs()
        })
        .collect();
    assert_eq!(view.len(), 6);
    assert!(
        gaps.windows(2).all(|p| p[0] > p[1]),
        "distinct and decreasing: {gaps:?}"
    );

    // Correct the label of the study most at odds with its label.
    h.key_press(Key::Home);
    settle(&mut h);
    let first = w.row(view[0]).unwrap().clone();
    assert_eq!(h.state().selected(), Some(first.id));
    let corrected = other(first.dataset_label.unwrap().label);
    until_decidable(&mut h);
    h.key_press(label_key(corrected));
    settle(&mut h);
    let store = DecisionStore::open(&fx.db).unwrap();
    let state = store
        .current(first.sha256.as_deref().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(state.final_label, Some(corrected));
    let ai = Label::from_score(first.score_value().unwrap(), w.threshold().unwrap());
    let expected_action = if ai == corrected {
        Action::Confirm
    } else {
        Action::Override
    };
    assert_eq!(state.last_event.action, expected_action);
    assert_eq!(
        state.last_event.reason,
        format!(
            "[dataset label: {}, from folder name]",
            first.dataset_label.unwrap().label
        )
    );

    // Clicking the Δ column header again sorts the other way.
    h.get_by_label("Δ ▼").click();
    settle(&mut h);
    let sort_back = h.state().view_order().to_vec();
    assert_eq!(sort_back.first(), view.last());
}

#[test]
fn a_labels_csv_gives_dataset_labels_and_reopening_restores_decisions() {
    let fx = folder(3);
    let csv = fx.dir.path().join("labels.csv");
    std::fs::write(
        &csv,
        "path,label\nstudies/study-00.png,PNEUMONIA\nstudies/study-01.jpg,normal\n",
    )
    .unwrap();
    let mut cfg = config(&fx);
    cfg.labels_csv = Some(csv);
    let mut h = harness(cfg.clone());
    wait_for_scores(&mut h);
    let w = h.state().worklist().unwrap().clone();
    let by_name = |name: &str| w.rows().iter().find(|r| r.name == name).unwrap().clone();
    let labelled = by_name("study-00.png");
    assert_eq!(labelled.dataset_label.unwrap().label, Label::Pneumonia);
    assert_eq!(labelled.dataset_label.unwrap().source, LabelSource::CsvFile);
    assert_eq!(
        by_name("study-01.jpg").dataset_label.unwrap().label,
        Label::Normal
    );
    assert!(by_name("ward/study-02.png").dataset_label.is_none());

    // Decide one study with the button, then reopen the folder in a new window. (The selected
    // study's name is also in the viewer's header; the worklist's row comes first.)
    h.get_all_by_label(&labelled.name).next().unwrap().click();
    settle(&mut h);
    until_decidable(&mut h);
    h.get_by_role_and_label(Role::Button, "NORMAL N").click();
    settle(&mut h);
    assert_eq!(row(h.state(), labelled.id).final_label, Some(Label::Normal));
    drop(h);
    let mut h = harness(cfg);
    wait_for_scores(&mut h);
    assert_eq!(row(h.state(), labelled.id).final_label, Some(Label::Normal));
    let counts = h.state().worklist().unwrap().counts();
    assert_eq!(counts.reviewed, 1);
}

#[test]
fn a_missing_folder_and_a_missing_model_are_reported_not_fatal() {
    let fx = folder(2);
    let mut cfg = config(&fx);
    cfg.folder = Some(fx.dir.path().join("no-such-folder"));
    let mut h = harness(cfg);
    step_until(&mut h, "the notice", |app| !app.notices().is_empty());
    assert!(
        h.state().notices()[0].contains("not a folder"),
        "{:?}",
        h.state().notices()
    );
    assert!(h.state().worklist().is_none());

    // Without weights the studies are still listed, read and decidable by label.
    let mut cfg = config(&fx);
    cfg.weights = fx.dir.path().join("missing.json");
    let mut h = harness(cfg);
    step_until(&mut h, "the folder", |app| {
        app.worklist().is_some() && !app.is_scoring()
    });
    assert!(!h.state().model_ready());
    let w = h.state().worklist().unwrap();
    assert!(w.rows().iter().all(|r| r.score_value().is_none()));
    let readable = w
        .rows()
        .iter()
        .find(|r| r.sha256.is_some() && r.name.starts_with("study"))
        .unwrap()
        .clone();
    h.get_by_label(&readable.name).click();
    settle(&mut h);
    until_decidable(&mut h);
    h.key_press(Key::P);
    settle(&mut h);
    let store = DecisionStore::open(&fx.db).unwrap();
    let state = store
        .current(readable.sha256.as_deref().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(state.last_event.action, Action::Relabel);
    assert_eq!(state.last_event.ai_label, None);
    assert_eq!(state.final_label, Some(Label::Pneumonia));
}

#[test]
fn zoom_window_presets_and_invert_change_the_main_pane() {
    let fx = folder(3);
    let mut h = harness(config(&fx));
    step_until(
        &mut h,
        "the study on screen",
        cxr_triage::app::App::is_settled,
    );
    // The first scored study (the unreadable file heads the list).
    let scored = h.state().view_order()[1];
    h.state_mut().push(cxr_triage::app::Command::Select(scored));
    step_until(&mut h, "the film on screen", |app| {
        app.image_on_screen_secs().is_some()
    });
    let start = h.state().left_pane();
    assert_eq!((start.zoom, start.window, start.invert), (1.0, None, false));

    // The wheel over the study zooms in around the pointer.
    let pane = h.get_by_label("Link panes").rect().left_bottom() + egui::vec2(200.0, 200.0);
    h.hover_at(pane);
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, 200.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers: Modifiers::NONE,
    });
    settle(&mut h);
    assert!(
        h.state().left_pane().zoom > 1.2,
        "{:?}",
        h.state().left_pane()
    );

    // 2 is the full-range preset, I inverts, F fits again, L unlinks the panes.
    for key in [Key::Num2, Key::I, Key::F, Key::L] {
        h.key_press(key);
        settle(&mut h);
    }
    let pane = h.state().left_pane();
    assert!(pane.window.is_some());
    assert!(pane.invert);
    assert_eq!(pane.zoom, 1.0);
    assert!(!pane.linked);
    // 1 goes back to the study's own window.
    h.key_press(Key::Num1);
    settle(&mut h);
    assert_eq!(h.state().left_pane().window, None);
}

#[test]
fn export_writes_the_reviewed_cases_and_never_into_the_studies_folder() {
    use cxr_triage::app::Command;
    use cxr_triage::audit::ExportKind;

    let fx = folder(3);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    let decided = row(h.state(), h.state().view_order()[1]);
    h.state_mut().push(Command::Select(decided.id));
    settle(&mut h);
    until_decidable(&mut h);
    h.key_press(Key::C);
    settle(&mut h);

    let inside = fx.studies.join("export.csv");
    h.state_mut().push(Command::ExportCsv {
        dest: inside.clone(),
        kind: ExportKind::Reviewed,
    });
    settle(&mut h);
    assert!(!inside.exists());
    assert!(
        h.state()
            .notices()
            .iter()
            .any(|n| n.contains("never written to")),
        "{:?}",
        h.state().notices()
    );

    // A long path without spaces, as hospital shares have: the notice must still fit on screen.
    let deep = fx
        .dir
        .path()
        .join("departmental_share_radiology_quality_assurance_exports_2026_december_reader_one");
    std::fs::create_dir_all(&deep).unwrap();
    let dest = deep.join("reviewed_cases_of_the_morning_list_for_the_quality_team.csv");
    h.state_mut().push(Command::ExportCsv {
        dest: dest.clone(),
        kind: ExportKind::Reviewed,
    });
    step_until(&mut h, "the export", |app| {
        app.notices().iter().any(|n| n.starts_with("Exported"))
    });
    // Frames only as the window asks for them (as the real event loop runs): a notice must be
    // in place without the reader moving the mouse.
    h.run();
    let notice = h.get_by_label_contains("Exported");
    let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1280.0, 800.0));
    assert!(
        screen.contains_rect(notice.rect()),
        "the export notice is drawn at {:?}, outside the window",
        notice.rect()
    );
    let csv = std::fs::read_to_string(&dest).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("path,sha256,"), "{csv}");
    assert!(
        lines[1].contains(decided.sha256.as_deref().unwrap()),
        "{csv}"
    );
    assert!(lines[1].contains("Test Reader"), "{csv}");
}

#[test]
fn without_a_system_dialog_the_export_path_field_has_the_keyboard() {
    use cxr_triage::app::Command;
    use cxr_triage::audit::ExportKind;
    use egui_kittest::kittest::NodeT as _;

    let fx = folder(2);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    // No desktop portal or zenity answers here (as on a bare workstation): the window falls back
    // to a path field.
    h.state_mut()
        .push(Command::ChooseExportFile(ExportKind::Reviewed));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while h.query_by_label("CSV file").is_none() {
        assert!(std::time::Instant::now() < deadline, "no path field");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    h.step();
    let csv_field = |h: &egui_kittest::Harness<'static, cxr_triage::app::App>| {
        h.query_all_by_role(egui::accesskit::Role::TextInput)
            .map(|n| n.accesskit_node())
            .find(|n| n.value().is_some_and(|v| v.contains(".csv")))
            .map(|n| (n.is_focused(), n.value().unwrap_or_default()))
            .unwrap()
    };
    let (focused, before) = csv_field(&h);
    assert!(focused, "the path field does not have the keyboard");
    // What the reader types goes into the field, not to the shortcuts (C would confirm).
    h.event(egui::Event::Text("C".to_owned()));
    h.key_press(Key::C);
    h.step();
    let (_, after) = csv_field(&h);
    assert_eq!(after, format!("{before}C"));
}

/// A folder dropped on the window, as the windowing layer reports it.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        Err("a folder has no bytes".to_owned())
    }
}

#[test]
fn a_folder_dropped_on_the_window_opens() {
    let fx = folder(2);
    let mut cfg = config(&fx);
    cfg.folder = None;
    let mut h = harness(cfg);
    settle(&mut h);
    assert!(h.state().worklist().is_none());
    assert!(h.query_by_label("No folder open").is_some());
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(fx.studies.clone())));
    wait_for_scores(&mut h);
    assert_eq!(h.state().worklist().unwrap().len(), 3);
}

#[test]
fn the_start_screen_opens_the_demo_studies() {
    let fx = folder(1);
    let mut cfg = config(&fx);
    cfg.folder = None;
    let mut h = harness(cfg);
    settle(&mut h);
    assert!(h.state().worklist().is_none());
    h.get_by_role_and_label(Role::Button, "Open the demo studies")
        .click();
    wait_for_scores(&mut h);
    let w = h.state().worklist().unwrap();
    // The nine films of assets/demo, every one read and scored.
    assert_eq!(w.len(), 9);
    assert!(
        w.rows().iter().all(|r| r.score_value().is_some()),
        "{:?}",
        w.rows()
            .iter()
            .map(|r| (&r.name, r.error()))
            .collect::<Vec<_>>()
    );
    assert!(w.rows().iter().any(|r| r.name == "RG1_J2KI.dcm"));
}

/// Quality > Reader agreement: the QA report in the window, with each reader's kappa against the
/// AI and the disagreement queue; a study in the queue opens with a click.
#[test]
fn the_reader_agreement_window_shows_each_reader_and_opens_a_disagreement() {
    let fx = folder(4);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    let scored: Vec<StudyId> = h
        .state()
        .view_order()
        .iter()
        .copied()
        .filter(|&id| row(h.state(), id).score_value().is_some())
        .collect();
    let first = scored[0];
    h.state_mut().push(cxr_triage::app::Command::Select(first));
    until_decidable(&mut h);
    h.key_press(Key::C);
    settle(&mut h);
    // A second reader overrides the same AI call.
    let store = DecisionStore::open(&fx.db).unwrap();
    let sha = row(h.state(), first).sha256.unwrap();
    let read = store.current(&sha).unwrap().unwrap().last_event;
    let ai = read.ai_label.unwrap();
    store
        .record(&cxr_triage::audit::NewDecision {
            reader: "Second Reader".to_owned(),
            new_label: Some(other(ai)),
            action: Action::Override,
            reason: "second read".to_owned(),
            viewed_ms: Some(4000),
            ood_reason: None,
            study_sha256: sha,
            study_path: read.study_path.clone(),
            model_id: read.model_id.clone(),
            weights_sha256: read.weights_sha256.clone(),
            score: read.score,
            threshold: read.threshold,
            ai_label: Some(ai),
        })
        .unwrap();
    let elsewhere = scored[1];
    h.state_mut()
        .push(cxr_triage::app::Command::Select(elsewhere));
    h.state_mut().push(cxr_triage::app::Command::ShowQa);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while h
        .query_by_label_contains("Disagreement queue: 1 studies")
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "no report");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(h.query_by_label("Test Reader vs AI").is_some());
    assert!(h.query_by_label("Second Reader vs AI").is_some());
    assert!(h.query_by_label("Reader vs reader").is_some());
    assert!(
        h.query_by_label(&format!(
            "Test Reader: {ai}, then Second Reader: {}",
            other(ai)
        ))
        .is_some()
    );
    let name = read.study_path.file_name().unwrap().to_string_lossy();
    h.get_by_role_and_label(Role::Link, &name).click();
    step_until(&mut h, "the study in the queue to open", |app| {
        app.selected() == Some(first)
    });
}

/// Another program holds the store's write lock past the busy timeout: the decision is kept, the
/// window says "Not saved, retrying", and it is saved once the lock is let go.
#[test]
fn a_decision_on_a_locked_store_is_kept_and_saved_once_the_lock_goes() {
    let fx = folder(4);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    let id = h
        .state()
        .view_order()
        .iter()
        .copied()
        .find(|&id| row(h.state(), id).score_value().is_some())
        .unwrap();
    h.state_mut().push(cxr_triage::app::Command::Select(id));
    until_decidable(&mut h);
    let locker = rusqlite::Connection::open(&fx.db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    h.key_press(Key::C);
    step_until(&mut h, "the window to say it retries", |app| {
        app.save_retrying().is_some()
    });
    assert!(h.state().is_saving());
    assert!(
        row(h.state(), id).final_label.is_none(),
        "not shown as saved"
    );
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    step_until(&mut h, "the decision to be saved", |app| !app.is_saving());
    assert!(h.state().save_retrying().is_none());
    assert!(row(h.state(), id).final_label.is_some());
    let store = DecisionStore::open(&fx.db).unwrap();
    assert_eq!(store.event_count().unwrap(), 1);
    assert!(store.verify().unwrap().is_intact());
}
