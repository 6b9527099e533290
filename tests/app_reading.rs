//! The reading loop, driven through the real window: a decision is recorded only for a film the
//! reader saw (no key repeats, no decision before the film has been on screen long enough, none
//! on a study the filter hides), and no study is hidden (unreadable files stay at the top, can be
//! closed as "read elsewhere" or "not a chest film", and "all reviewed" means every study).

#![allow(clippy::unwrap_used)]

mod app_common;
mod common;

use app_common::{
    config, folder, harness, harness_with_step, settle, step_until, until_decidable,
    wait_for_scores,
};
use cxr_triage::app::{App, Command};
use cxr_triage::audit::{Action, DecisionStore};
use cxr_triage::worklist::{Filter, Label, StudyId, StudyRow};
use egui::accesskit::Role;
use egui::{Event, Key, Modifiers};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};

fn row(app: &App, id: StudyId) -> StudyRow {
    app.worklist().unwrap().row(id).unwrap().clone()
}

fn events(fx: &app_common::Fixture) -> u64 {
    DecisionStore::open(&fx.db).unwrap().event_count().unwrap()
}

/// A key event as the windowing layer sends it; `repeat` for the repeats of a held key.
fn key_event(h: &mut Harness<'static, App>, key: Key, pressed: bool, repeat: bool) {
    h.event(Event::Key {
        key,
        physical_key: None,
        pressed,
        repeat,
        modifiers: Modifiers::NONE,
    });
}

/// The first scored study of the list, selected, with its film on screen.
fn select_first_scored(h: &mut Harness<'static, App>) -> StudyId {
    let id = *h
        .state()
        .view_order()
        .iter()
        .find(|&&id| row(h.state(), id).score_value().is_some())
        .unwrap();
    h.state_mut().push(Command::Select(id));
    step_until(h, "the film on screen", |app| {
        app.image_on_screen_secs().is_some()
    });
    id
}

#[test]
fn a_held_key_decides_nothing_and_a_film_must_be_seen_before_it_is_decided() {
    let fx = folder(5);
    // Frames 0.1 s apart on egui's clock.
    let mut h = harness_with_step(config(&fx), 0.1);
    wait_for_scores(&mut h);
    let first = select_first_scored(&mut h);

    // The film has just appeared: C is refused, and the status bar says why.
    assert!(h.state().image_on_screen_secs().unwrap() < 0.25);
    key_event(&mut h, Key::C, true, false);
    h.step();
    assert_eq!(events(&fx), 0);
    let status = h.state().status_message().unwrap().to_owned();
    assert!(status.contains("on screen for"), "{status}");
    assert_eq!(h.state().selected(), Some(first));

    // Holding C: only the repeats arrive after the first press was refused; none decides.
    until_decidable(&mut h);
    for _ in 0..8 {
        key_event(&mut h, Key::C, true, true);
        h.step();
    }
    key_event(&mut h, Key::C, false, false);
    settle(&mut h);
    assert_eq!(events(&fx), 0, "key repeats never decide");

    // A fresh press after the minimum time decides, and records how long the film was shown.
    let shown = h.state().image_on_screen_secs().unwrap();
    key_event(&mut h, Key::C, true, false);
    key_event(&mut h, Key::C, false, false);
    h.step();
    h.step();
    // The selection has moved on at once; a second tap 0.1 s later lands on the next study
    // before its film has been seen: nothing is recorded for it.
    let second = h.state().selected().unwrap();
    assert_ne!(second, first);
    key_event(&mut h, Key::C, true, false);
    h.step();
    assert!(
        h.state().status_message().is_some(),
        "the status bar says why"
    );
    settle(&mut h);
    assert_eq!(h.state().selected(), Some(second));
    let store = DecisionStore::open(&fx.db).unwrap();
    let sha = row(h.state(), first).sha256.unwrap();
    let event = store.current(&sha).unwrap().unwrap().last_event;
    assert_eq!(event.action, Action::Confirm);
    assert_eq!(event.format_version, 2);
    // The decision records what the row told the reader the model has not seen (the generated
    // films are unlike the training films, so the flag is up).
    assert_eq!(event.ood_reason, row(h.state(), first).scope_warning);
    assert!(event.ood_reason.is_some());
    let viewed = event.viewed_ms.unwrap();
    assert!(viewed >= 500, "{viewed} ms");
    assert!(
        viewed as f64 >= shown * 1000.0 - 1.0,
        "{viewed} ms, shown {shown} s"
    );
    assert_eq!(
        store.event_count().unwrap(),
        1,
        "only the first tap decided"
    );
}

#[test]
fn decide_buttons_wait_for_the_full_resolution_image() {
    let fx = folder(6);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    // The last study of the list: not prefetched, so its film is not there yet.
    let last = *h.state().view_order().last().unwrap();
    assert!(row(h.state(), last).score_value().is_some());
    h.state_mut().push(Command::Select(last));
    h.step();
    assert_eq!(h.state().image_on_screen_secs(), None);
    let normal = h.get_by_role_and_label(Role::Button, "NORMAL N");
    assert!(
        normal.accesskit_node().is_disabled(),
        "disabled while the image loads"
    );
    h.state_mut()
        .push(Command::SetLabel(cxr_triage::worklist::Label::Normal));
    h.step();
    assert_eq!(events(&fx), 0);
    assert!(
        h.state()
            .status_message()
            .unwrap()
            .contains("still loading"),
        "{:?}",
        h.state().status_message()
    );
    until_decidable(&mut h);
    assert!(
        !h.get_by_role_and_label(Role::Button, "NORMAL N")
            .accesskit_node()
            .is_disabled()
    );
}

#[test]
fn a_study_the_filter_hides_is_not_decided_and_all_reviewed_means_every_study() {
    let fx = folder(4);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    let first = select_first_scored(&mut h);
    until_decidable(&mut h);

    // The Disagreements filter hides the (unreviewed) selected study: C records nothing.
    h.state_mut()
        .push(Command::SetFilter(Filter::Disagreements));
    settle(&mut h);
    assert!(!h.state().view_order().contains(&first));
    h.key_press(Key::C);
    settle(&mut h);
    assert_eq!(events(&fx), 0);
    assert!(
        h.state().status_message().unwrap().contains("filter"),
        "{:?}",
        h.state().status_message()
    );
    // Nothing to review in this (empty) list, but the folder is not all reviewed.
    h.key_press(Key::U);
    settle(&mut h);
    let notices = h.state().notices();
    assert!(
        notices.iter().all(|n| !n.contains("has been reviewed")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.contains("the filter hides them")),
        "{notices:?}"
    );
}

#[test]
fn unreadable_files_stay_at_the_top_and_can_be_closed_without_a_label() {
    let fx = folder(3);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    let view = h.state().view_order().to_vec();
    let junk = row(h.state(), view[0]);
    assert_eq!(junk.name, "notes.txt", "the unreadable file heads the list");
    assert!(h.state().worklist().unwrap().needs_manual_read(&junk));
    assert!(h.query_all_by_label("needs a manual read").count() >= 1);
    assert_eq!(h.state().worklist().unwrap().counts().manual, 1);

    // Decide every scored study; U and the automatic move never skip the unreadable file.
    for _ in 0..3 {
        let next = h.state().view_order()[1..]
            .iter()
            .copied()
            .find(|&id| row(h.state(), id).final_label.is_none())
            .unwrap();
        h.state_mut().push(Command::Select(next));
        settle(&mut h);
        until_decidable(&mut h);
        h.key_press(Key::C);
        settle(&mut h);
    }
    assert_eq!(events(&fx), 3);
    assert!(
        h.state()
            .notices()
            .iter()
            .all(|n| !n.contains("has been reviewed")),
        "{:?}",
        h.state().notices()
    );
    assert_eq!(h.state().selected(), Some(junk.id), "the move lands on it");
    h.key_press(Key::U);
    settle(&mut h);
    assert_eq!(h.state().selected(), Some(junk.id));

    // It cannot be labelled (there is no film), but it can be recorded as read elsewhere.
    step_until(&mut h, "the error on screen", |app| {
        app.decision_blocked()
            .is_some_and(|w| w.contains("cannot be shown"))
    });
    h.key_press(Key::P);
    settle(&mut h);
    assert_eq!(events(&fx), 3);
    let button = h.get_by_role_and_label(Role::Button, "Read elsewhere");
    assert!(
        !button.accesskit_node().is_disabled(),
        "{:?}",
        row(h.state(), junk.id)
    );
    button.click_accesskit();
    settle(&mut h);
    let store = DecisionStore::open(&fx.db).unwrap();
    assert_eq!(
        store.event_count().unwrap(),
        4,
        "{:?} {:?}",
        h.state().status_message(),
        h.state().notices()
    );
    let sha = row(h.state(), junk.id).sha256.unwrap();
    let state = store.current(&sha).unwrap().unwrap();
    assert_eq!(state.last_event.action, Action::ReadElsewhere);
    assert_eq!(state.final_label, None);
    assert!(state.is_reviewed());
    assert_eq!(state.last_event.viewed_ms, None);
    assert!(store.verify().unwrap().is_intact());
    let counts = h.state().worklist().unwrap().counts();
    assert_eq!((counts.reviewed, counts.manual), (4, 0));
    assert!(
        h.state()
            .notices()
            .iter()
            .any(|n| n.contains("Every study of this folder has been reviewed")),
        "{:?}",
        h.state().notices()
    );

    // Ctrl+Z takes it back: it needs a manual read again.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    settle(&mut h);
    let junk_now = row(h.state(), junk.id);
    assert!(h.state().worklist().unwrap().needs_manual_read(&junk_now));
}

#[test]
fn a_slow_store_shows_saving_and_the_window_keeps_drawing() {
    let fx = folder(3);
    let mut cfg = config(&fx);
    cfg.store_write_delay = Some(std::time::Duration::from_millis(1500));
    let mut h = harness(cfg);
    wait_for_scores(&mut h);
    let first = select_first_scored(&mut h);
    until_decidable(&mut h);
    let sha = row(h.state(), first).sha256.unwrap();
    h.key_press(Key::C);
    for _ in 0..3 {
        h.step();
    }
    // Sent, not yet acknowledged: the row is not marked, the status bar says "Saving", and
    // frames keep coming quickly.
    assert!(h.state().is_saving());
    assert_eq!(row(h.state(), first).final_label, None);
    assert!(h.query_by_label_contains("Saving 1 decision").is_some());
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        h.step();
        slowest = slowest.max(t.elapsed());
    }
    assert!(h.state().is_saving(), "the store is still writing");
    assert!(
        slowest < std::time::Duration::from_millis(500),
        "a frame took {slowest:?} while the store was writing"
    );
    // Once acknowledged: saved, in the row and in the store.
    step_until(&mut h, "the acknowledgement", |app| !app.is_saving());
    assert!(row(h.state(), first).final_label.is_some());
    assert!(h.query_by_label_contains("Saved:").is_some());
    let store = DecisionStore::open(&fx.db).unwrap();
    assert!(store.current(&sha).unwrap().is_some());
}

#[test]
fn a_command_sender_can_be_kept_and_used_from_another_thread() {
    let fx = folder(2);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    let sender = h.state().command_sender();
    let last = *h.state().view_order().last().unwrap();
    std::thread::Builder::new()
        .name("test-sender".to_owned())
        .spawn(move || sender.send(Command::Select(last)))
        .unwrap()
        .join()
        .unwrap();
    settle(&mut h);
    assert_eq!(h.state().selected(), Some(last));
}

#[test]
fn a_file_replaced_after_scoring_is_not_shown_and_cannot_be_decided() {
    let fx = folder(6);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    // The last study of the list: its image has not been read for display yet.
    let last = *h.state().view_order().last().unwrap();
    let before = row(h.state(), last);
    assert!(before.score_value().is_some());
    // Another film takes its place on disk.
    app_common::write_study(&before.path, 999);
    h.state_mut().push(Command::Select(last));
    step_until(&mut h, "the changed file to be caught", |app| {
        app.worklist().unwrap().row(last).unwrap().changed
    });
    settle(&mut h);
    let after = row(h.state(), last);
    assert!(
        after.error().unwrap().contains("changed on disk"),
        "{after:?}"
    );
    assert_eq!(h.state().image_on_screen_secs(), None, "not shown");
    assert!(!after.can_be_decided());
    // No label, and no "read elsewhere" either: nothing is recorded.
    for _ in 0..4 {
        h.step();
    }
    h.key_press(Key::C);
    settle(&mut h);
    h.state_mut().push(Command::Dispose(
        cxr_triage::worklist::Disposition::ReadElsewhere,
    ));
    settle(&mut h);
    assert_eq!(events(&fx), 0);
    assert!(
        h.state()
            .status_message()
            .unwrap()
            .contains("changed on disk")
            || h.state()
                .status_message()
                .unwrap()
                .contains("cannot be shown"),
        "{:?}",
        h.state().status_message()
    );
}

/// A copy of the shipped model with other weights' bytes (an extra tensor the network never
/// reads, so the same scores) and its own card, named `model_id`, in `dir`.
fn model_copy(dir: &std::path::Path, model_id: &str) -> std::path::PathBuf {
    let shipped = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/cxrnet");
    let mut tensors = candle_core::safetensors::load(
        shipped.with_extension("safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    tensors.insert(
        "site.copy".to_owned(),
        candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    let out = dir.join(model_id);
    candle_core::safetensors::save(&tensors, out.with_extension("safetensors")).unwrap();
    let bytes = std::fs::read(out.with_extension("safetensors")).unwrap();
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped.with_extension("json")).unwrap()).unwrap();
    card["model_id"] = serde_json::json!(model_id);
    card["weights_sha256"] = serde_json::json!(cxr_triage::io::sha256_hex(&bytes));
    std::fs::write(out.with_extension("json"), card.to_string()).unwrap();
    out.with_extension("json")
}

#[test]
fn the_window_uses_the_model_in_force_at_the_site_and_records_it() {
    let fx = folder(5);
    let models = tempfile::tempdir().unwrap();
    let card_path = model_copy(models.path(), "site-copy");
    let shipped = cxr_triage::model::Classifier::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/cxrnet.json"),
    )
    .unwrap();
    let copy = cxr_triage::model::Classifier::load(&card_path).unwrap();
    let switched_threshold = 0.9f32;
    {
        let store = DecisionStore::open(&fx.db).unwrap();
        store
            .record_model_switch(&cxr_triage::audit::ModelSwitch {
                reader: "qa-lead".to_owned(),
                from_model_id: shipped.card().model_id.clone(),
                from_weights_sha256: shipped.card().weights_sha256.clone(),
                from_threshold: shipped.card().threshold,
                model_id: "site-copy".to_owned(),
                weights_sha256: copy.card().weights_sha256.clone(),
                card_path: card_path.clone(),
                threshold: switched_threshold,
                basis: serde_json::json!({}),
                reason: "adapted".to_owned(),
            })
            .unwrap();
        assert!(store.verify_thresholds().unwrap().is_intact());
    }
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    assert_eq!(h.state().model_id(), Some("site-copy"));
    assert_eq!(
        h.state().worklist().unwrap().threshold(),
        Some(switched_threshold)
    );
    let id = select_first_scored(&mut h);
    until_decidable(&mut h);
    h.key_press(Key::C);
    settle(&mut h);
    let sha = row(h.state(), id).sha256.unwrap();
    let state = DecisionStore::open(&fx.db)
        .unwrap()
        .current(&sha)
        .unwrap()
        .unwrap();
    assert_eq!(state.last_event.model_id.as_deref(), Some("site-copy"));
    assert_eq!(state.last_event.threshold, Some(switched_threshold));
    drop(h);

    // A model named on the command line wins over the site's.
    let mut named = config(&fx);
    named.follow_site_model = false;
    let mut h = harness(named);
    wait_for_scores(&mut h);
    assert_eq!(h.state().model_id(), Some(shipped.card().model_id.as_str()));
    drop(h);

    // The model in force is never replaced by another without a word: a card now naming other
    // weights is an error, and nothing is scored with the shipped model in its place.
    for ext in ["json", "safetensors"] {
        std::fs::copy(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("weights/cxrnet")
                .with_extension(ext),
            card_path.with_extension(ext),
        )
        .unwrap();
    }
    let mut h = harness(config(&fx));
    step_until(&mut h, "the model error", |app| {
        app.notices().iter().any(|n| n.contains("model in force"))
    });
    assert!(!h.state().model_ready());
    assert!(
        h.state()
            .notices()
            .iter()
            .any(|n| n.contains("is now another model")),
        "{:?}",
        h.state().notices()
    );
}

#[test]
fn the_window_follows_the_threshold_set_at_the_site_and_records_it() {
    let fx = folder(5);
    let card_path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/cxrnet.json");
    let card = cxr_triage::model::Classifier::load(&card_path)
        .unwrap()
        .card()
        .clone();
    // A threshold chosen at this site (as `cxr-triage threshold` records it), far above the
    // card's: every fixture study is then NORMAL.
    let site = 0.95f32;
    {
        let store = DecisionStore::open(&fx.db).unwrap();
        store
            .record_threshold_change(&cxr_triage::audit::ThresholdChange {
                reader: "qa-lead".to_owned(),
                model_id: card.model_id.clone(),
                weights_sha256: card.weights_sha256.clone(),
                old_threshold: card.threshold,
                new_threshold: site,
                basis_json: "{}".to_owned(),
                reason: "local ROC".to_owned(),
            })
            .unwrap();
    }
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    let w = h.state().worklist().unwrap();
    assert_eq!(w.threshold(), Some(site));
    assert!(
        w.rows()
            .iter()
            .filter_map(|r| w.ai_label(r))
            .all(|l| l == cxr_triage::worklist::Label::Normal)
    );
    assert!(h.query_by_label("SITE THRESHOLD").is_some());
    // A decision records the threshold in force.
    let id = select_first_scored(&mut h);
    until_decidable(&mut h);
    h.key_press(Key::C);
    settle(&mut h);
    let sha = row(h.state(), id).sha256.unwrap();
    let state = DecisionStore::open(&fx.db)
        .unwrap()
        .current(&sha)
        .unwrap()
        .unwrap();
    assert_eq!(state.last_event.threshold, Some(site));
    assert_eq!(
        state.last_event.ai_label,
        Some(cxr_triage::worklist::Label::Normal)
    );
}

#[test]
fn local_performance_measures_the_reviewed_studies_and_applies_a_threshold_as_an_audited_change() {
    use cxr_triage::audit::NewDecision;
    use cxr_triage::worklist::Label;

    let fx = folder(48);
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    // Readers' labels for every scored study: the upper half by score PNEUMONIA (with two
    // exceptions each way, so that the curve is not perfect).
    let mut scored: Vec<StudyRow> = h
        .state()
        .worklist()
        .unwrap()
        .rows()
        .iter()
        .filter(|r| r.score_value().is_some())
        .cloned()
        .collect();
    scored.sort_by(|a, b| {
        b.score_value()
            .unwrap()
            .total_cmp(&a.score_value().unwrap())
    });
    let half = scored.len() / 2;
    assert!(half >= 20, "{} scored studies", scored.len());
    {
        let store = DecisionStore::open(&fx.db).unwrap();
        let decisions: Vec<NewDecision> = scored
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let pneumonia = (i < half) != (i == 3 || i == scored.len() - 4);
                NewDecision {
                    reader: "dr-local".to_owned(),
                    study_sha256: r.sha256.clone().unwrap(),
                    study_path: r.path.clone(),
                    model_id: None,
                    weights_sha256: None,
                    score: None,
                    threshold: None,
                    ai_label: None,
                    new_label: Some(if pneumonia {
                        Label::Pneumonia
                    } else {
                        Label::Normal
                    }),
                    action: Action::Relabel,
                    reason: "truth".to_owned(),
                    viewed_ms: None,
                    ood_reason: None,
                }
            })
            .collect();
        store.record_all(&decisions).unwrap();
    }
    h.state_mut().push(Command::ShowLocalPerformance);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while h.query_by_label_contains("ROC AUC").is_none() {
        assert!(std::time::Instant::now() < deadline, "no figures");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        h.query_by_label_contains(&format!(
            "{} reviewed studies in this decision store",
            scored.len()
        ))
        .is_some()
    );
    // Apply the threshold proposed for a sensitivity of 0.95.
    let button = h.get_by_label_contains("Apply threshold");
    let label = button.accesskit_node().label().unwrap_or_default();
    let proposed: f32 = label.split_whitespace().nth(2).unwrap().parse().unwrap();
    button.click();
    step_until(&mut h, "the threshold change", |app| {
        app.worklist()
            .unwrap()
            .threshold()
            .is_some_and(|t| (t - proposed).abs() < 1e-3)
    });
    let store = DecisionStore::open(&fx.db).unwrap();
    let changes = store.threshold_events().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].reader, "Test Reader");
    assert!((changes[0].new_threshold - proposed).abs() < 1e-3);
    assert!(
        changes[0]
            .basis_json
            .contains("\"target_sensitivity\":0.95")
    );
    assert!(store.verify_thresholds().unwrap().is_intact());
    assert!(h.query_by_label("SITE THRESHOLD").is_some());
}

#[test]
fn adapting_in_the_window_then_switching_the_model_in_force_is_audited() {
    use cxr_triage::audit::NewDecision;
    use cxr_triage::worklist::Label;

    // A site whose films the shipped model has never seen: a bright patch means pneumonia.
    let fx = folder(0);
    let mut labels = Vec::new();
    for i in 0..56u32 {
        let pneumonia = i % 2 == 1;
        let path = fx.studies.join(format!("film-{i:03}.png"));
        common::write_film(&path, pneumonia, i);
        labels.push((path, pneumonia));
    }
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    {
        let rows = h.state().worklist().unwrap().rows().to_vec();
        let decisions: Vec<NewDecision> = labels
            .iter()
            .map(|(path, pneumonia)| {
                let r = rows.iter().find(|r| &r.path == path).unwrap();
                NewDecision {
                    reader: "dr-local".to_owned(),
                    study_sha256: r.sha256.clone().unwrap(),
                    study_path: r.path.clone(),
                    model_id: None,
                    weights_sha256: None,
                    score: None,
                    threshold: None,
                    ai_label: None,
                    new_label: Some(if *pneumonia {
                        Label::Pneumonia
                    } else {
                        Label::Normal
                    }),
                    action: Action::Relabel,
                    reason: "truth".to_owned(),
                    viewed_ms: None,
                    ood_reason: None,
                }
            })
            .collect();
        DecisionStore::open(&fx.db)
            .unwrap()
            .record_all(&decisions)
            .unwrap();
    }
    h.state_mut().push(Command::ShowAdapt);
    for _ in 0..10 {
        h.step();
    }
    h.get_by_label("Adapt").click();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while h.query_by_label_contains("After (adapted)").is_none() {
        assert!(std::time::Instant::now() < deadline, "no figures");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let shipped_id = h.state().model_id().unwrap().to_owned();
    let use_button = h.get_by_label_contains("at this site as Test Reader");
    let label = use_button.accesskit_node().label().unwrap_or_default();
    let new_id = label.split_whitespace().nth(1).unwrap().to_owned();
    assert!(new_id.starts_with("site-"), "{label}");
    use_button.click();
    step_until(&mut h, "the adapted model in force", |app| {
        app.model_id() == Some(new_id.as_str()) && !app.is_scoring()
    });
    wait_for_scores(&mut h);
    let store = DecisionStore::open(&fx.db).unwrap();
    let switch = store.model_in_force().unwrap().unwrap();
    assert_eq!(switch.event.model_id, new_id);
    assert_eq!(switch.event.reader, "Test Reader");
    assert_eq!(switch.from_model_id, shipped_id);
    assert!(switch.event.basis_json.contains("held_out_after"));
    assert!(
        switch
            .card_path
            .starts_with(fx.db.parent().unwrap().join("models"))
    );
    assert!(store.verify_thresholds().unwrap().is_intact());
    drop(store);

    // And back to the shipped model, the same way.
    h.get_by_label("Go back to the shipped model").click();
    step_until(&mut h, "the shipped model in force", |app| {
        app.model_id() == Some(shipped_id.as_str())
    });
    let store = DecisionStore::open(&fx.db).unwrap();
    assert_eq!(
        store.model_in_force().unwrap().unwrap().event.model_id,
        shipped_id
    );
    assert_eq!(store.threshold_events().unwrap().len(), 2);
}

#[test]
fn a_study_waiting_past_the_cap_comes_first_whatever_its_score() {
    use std::time::{Duration, SystemTime};
    let fx = folder(6);
    // Two studies arrived in the folder two hours ago; the others just now.
    let arrived = SystemTime::now() - Duration::from_secs(2 * 3600);
    for name in ["study-01.jpg", "ward/study-05.png"] {
        std::fs::File::options()
            .write(true)
            .open(fx.studies.join(name))
            .unwrap()
            .set_modified(arrived)
            .unwrap();
    }
    let order = |app: &App| -> Vec<(String, f32)> {
        let w = app.worklist().unwrap();
        app.view_order()
            .iter()
            .map(|&id| {
                let r = w.row(id).unwrap();
                (r.name.clone(), r.score_value().unwrap_or(f32::NAN))
            })
            .collect()
    };
    let by_score_after = |rows: &[(String, f32)]| rows.windows(2).all(|p| p[0].1 >= p[1].1);

    // With the default cap (60 minutes): the unreadable file first (it needs a manual read),
    // then the two overdue studies, by score, then the rest by score.
    let mut h = harness(config(&fx));
    wait_for_scores(&mut h);
    h.step();
    let rows = order(h.state());
    assert_eq!(rows[0].0, "notes.txt");
    let mut overdue: Vec<&str> = rows[1..3].iter().map(|r| r.0.as_str()).collect();
    overdue.sort_unstable();
    assert_eq!(overdue, ["study-01.jpg", "ward/study-05.png"]);
    assert!(by_score_after(&rows[1..3]) && by_score_after(&rows[3..]));
    assert_eq!(h.state().worklist().unwrap().counts().overdue, 2);
    assert!(
        h.query_by_label_contains("2 studies have waited over 60 min unread")
            .is_some()
    );
    // Their scores do not put them first on their own: at least one study that just arrived
    // scores higher than one of them.
    let lowest_overdue = rows[1].1.min(rows[2].1);
    assert!(
        rows[3..].iter().any(|r| r.1 > lowest_overdue),
        "the fixture must have a newer study scoring above an overdue one: {rows:?}"
    );
    drop(h);

    // With the cap off, the order is the score's alone.
    let mut h = harness(cxr_triage::app::AppConfig {
        wait_limit: None,
        ..config(&fx)
    });
    wait_for_scores(&mut h);
    h.step();
    let rows = order(h.state());
    assert_eq!(rows[0].0, "notes.txt");
    assert!(by_score_after(&rows[1..]));
    assert_eq!(h.state().worklist().unwrap().counts().overdue, 0);
    assert!(h.query_by_label_contains("waited over").is_none());
}

#[test]
fn blind_first_reading_hides_the_ai_until_the_readers_call_and_audits_both_calls() {
    let fx = folder(4);
    let mut h = harness_with_step(
        cxr_triage::app::AppConfig {
            blind_first: true,
            ..config(&fx)
        },
        0.1,
    );
    wait_for_scores(&mut h);
    let first = select_first_scored(&mut h);
    until_decidable(&mut h);
    let ai = {
        let app = h.state();
        let w = app.worklist().unwrap();
        w.ai_label(w.row(first).unwrap()).unwrap()
    };
    // Before the reader's call: no score, no AI label (header and buttons say "after your
    // call"), and C (confirm the AI) is refused.
    assert!(h.query_all_by_label("after your call").count() >= 2);
    assert!(
        h.query_by_label_contains(&format!("Confirm {ai}"))
            .is_none()
    );
    h.key_press(Key::C);
    h.step();
    assert_eq!(events(&fx), 0);
    let status = h.state().status_message().unwrap_or_default().to_owned();
    assert!(status.contains("make your own call first"), "{status}");

    // The reader's own call (the opposite of the AI's) is a blind call with no AI label; the
    // window stays on the study and shows the AI's call.
    let own = match ai {
        Label::Normal => Label::Pneumonia,
        Label::Pneumonia => Label::Normal,
    };
    h.key_press(if own == Label::Normal { Key::N } else { Key::P });
    settle(&mut h);
    assert_eq!(h.state().selected(), Some(first));
    let store = DecisionStore::open(&fx.db).unwrap();
    let sha = row(h.state(), first).sha256.unwrap();
    let blind = store.current(&sha).unwrap().unwrap().last_event;
    assert_eq!(blind.action, Action::BlindCall);
    assert_eq!((blind.ai_label, blind.new_label), (None, Some(own)));
    assert!(blind.viewed_ms.is_some());
    assert_eq!(h.query_all_by_label("after your call").count(), 0);
    assert!(
        h.query_by_label_contains(&format!("Confirm {ai}"))
            .is_some()
    );

    // Keeping the call is the final call, recorded against the AI label; then the window moves
    // on.
    until_decidable(&mut h);
    h.key_press(if own == Label::Normal { Key::N } else { Key::P });
    settle(&mut h);
    let last = store.current(&sha).unwrap().unwrap().last_event;
    assert_eq!(last.action, Action::Override);
    assert_eq!((last.ai_label, last.new_label), (Some(ai), Some(own)));
    assert_ne!(h.state().selected(), Some(first));
    let summary = store.blind_first_summary().unwrap();
    assert_eq!(
        (summary.blind_calls, summary.final_calls, summary.changed),
        (1, 1, 0)
    );
    assert_eq!(summary.blind_disagreed, 1);
    assert!(store.verify().unwrap().is_intact());
}
