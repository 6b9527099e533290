//! Two readers' windows on the department's PostgreSQL store: each is signed in as its database
//! user (the name typed is not what is recorded), sees which study the other has open, and
//! shows the other's decision without being reopened (the server's NOTIFY).
//!
//! Needs `CXR_TRIAGE_TEST_PG` (see `tests/pg_common`); skips without it, except under `CI=true`.

#![allow(clippy::unwrap_used)]

mod app_common;
mod pg_common;

use std::path::PathBuf;

use app_common::{
    config, folder, harness, step_both, step_until, until_decidable, wait_for_scores,
};
use cxr_triage::app::{App, AppConfig, Command};
use cxr_triage::audit::PgStore;
use cxr_triage::worklist::StudyId;
use egui::Key;
use egui_kittest::kittest::Queryable as _;
use pg_common::{as_user, department};

#[test]
fn two_readers_on_the_department_store_are_recorded_as_themselves_and_see_each_other() {
    let Some((url, _owner)) = department("window", &["dr_ada", "dr_bo"]) else {
        return;
    };
    let fx = folder(4);
    let window = |user: &str| AppConfig {
        db_path: Some(PathBuf::from(as_user(&url, user))),
        // Typed, and not what the department's store records.
        reader: Some("Someone Else".to_owned()),
        ..config(&fx)
    };
    let mut ada = harness(window("dr_ada"));
    wait_for_scores(&mut ada);
    step_until(&mut ada, "Ada to be signed in", |a| {
        a.signed_in() == Some("dr_ada")
    });
    assert_eq!(ada.state().reader(), "dr_ada");
    assert!(ada.query_by_label("Signed in as").is_some());
    assert!(ada.query_by_label("dr_ada").is_some());
    if std::env::var_os("CXR_TRIAGE_TEST_PG_CA").is_some() {
        // The test server offers TLS: the window's connection uses it, and says so.
        assert!(ada.query_by_label("TLS").is_some());
    }
    let mut bo = harness(window("dr_bo"));
    wait_for_scores(&mut bo);

    // Ada opens the top scored study; Bo's window shows it as being read by her.
    let w = ada.state().worklist().unwrap();
    let x: StudyId = ada
        .state()
        .view_order()
        .iter()
        .copied()
        .find(|&id| w.row(id).unwrap().score_value().is_some())
        .unwrap();
    let sha = w.row(x).unwrap().sha256.clone().unwrap();
    ada.state_mut().push(Command::Select(x));
    step_both(&mut ada, &mut bo, "Ada's claim in Bo's window", |_, b| {
        b.worklist().unwrap().row(x).unwrap().claimed_by.as_deref() == Some("dr_ada")
    });
    assert!(bo.query_by_label("being read by dr_ada").is_some());
    // A window opened after the claim learns of it too, although the claim reaches it before
    // its rows know their studies' hashes (they learn them as the folder is read).
    let mut late = harness(window("dr_bo"));
    wait_for_scores(&mut late);
    step_both(
        &mut ada,
        &mut late,
        "Ada's claim in a window opened later",
        |_, l| l.worklist().unwrap().row(x).unwrap().claimed_by.as_deref() == Some("dr_ada"),
    );
    drop(late);

    // Ada confirms; Bo's window shows the decision without being reopened.
    until_decidable(&mut ada);
    ada.key_press(Key::C);
    step_both(
        &mut ada,
        &mut bo,
        "Ada's decision in Bo's window",
        |_, b| b.worklist().unwrap().row(x).unwrap().final_label.is_some(),
    );
    let mut store = PgStore::open(&url).unwrap();
    let current = store.current(&sha).unwrap().unwrap();
    assert_eq!(current.last_event.reader, "dr_ada");
    assert_eq!(
        bo.state().worklist().unwrap().row(x).unwrap().final_label,
        current.final_label
    );

    // The server ends Ada's sessions (as a restart would); her next decision is saved all the
    // same, over a new connection, and reaches Bo.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let ended: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = 'dr_ada') AS t",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        ended >= 2,
        "the writer's and the sync thread's sessions: {ended}"
    );
    let y = ada.state().selected().unwrap();
    assert_ne!(y, x);
    until_decidable(&mut ada);
    ada.key_press(Key::C);
    step_both(
        &mut ada,
        &mut bo,
        "Ada's second decision in Bo's window",
        |_, b| b.worklist().unwrap().row(y).unwrap().final_label.is_some(),
    );
    assert!(
        !ada.state()
            .notices()
            .iter()
            .any(|n| n.contains("not saved")),
        "{:?}",
        ada.state().notices()
    );
    let y_sha = bo
        .state()
        .worklist()
        .unwrap()
        .row(y)
        .unwrap()
        .sha256
        .clone()
        .unwrap();
    let current = store.current(&y_sha).unwrap().unwrap();
    assert_eq!(current.last_event.reader, "dr_ada");
    assert!(store.verify().unwrap().is_intact());
}

/// The store's server goes down (as a crash) while a reader works: the decision made meanwhile
/// is kept, the window says "Not saved, retrying" and refuses to close without warning, and once
/// the server is back the decision is recorded, once, on an unbroken chain.
#[test]
fn a_decision_made_while_the_server_is_down_is_retried_and_recorded_once() {
    let Some(pg) = pg_common::PrivateServer::start() else {
        return;
    };
    let url = pg_common::new_database(&pg.url, "outage");
    drop(PgStore::open(&url).unwrap()); // The owner sets the store up.
    let fx = folder(3);
    let mut w = harness(AppConfig {
        db_path: Some(PathBuf::from(&url)),
        ..config(&fx)
    });
    wait_for_scores(&mut w);
    step_until(&mut w, "the reader to be signed in", |a| {
        a.signed_in().is_some()
    });
    let wl = w.state().worklist().unwrap();
    let scored: Vec<StudyId> = w
        .state()
        .view_order()
        .iter()
        .copied()
        .filter(|&id| wl.row(id).unwrap().score_value().is_some())
        .collect();
    let (first, second) = (scored[0], scored[1]);
    w.state_mut().push(Command::Select(first));
    until_decidable(&mut w);
    w.key_press(Key::C);
    // The key is read in the next frame: wait for the decision to be sent, then saved, before
    // the server goes down.
    step_until(&mut w, "the first decision to be sent", App::is_saving);
    step_until(&mut w, "the first decision to be saved", |a| !a.is_saving());

    pg.pause("immediate");
    w.state_mut().push(Command::Select(second));
    until_decidable(&mut w);
    w.key_press(Key::C);
    step_until(&mut w, "the window to say it retries", |a| {
        a.save_retrying().is_some()
    });
    assert!(w.state().is_saving());
    w.step();
    assert_eq!(
        w.query_all_by_label_contains("Not saved, retrying").count(),
        2,
        "the status bar and a banner say so"
    );
    // Closing now would lose the decision: the window stays open and says why.
    w.input_mut()
        .viewports
        .entry(egui::ViewportId::ROOT)
        .or_default()
        .events
        .push(egui::ViewportEvent::Close);
    w.step();
    w.step();
    assert!(
        w.query_by_label_contains("not saved yet: closing now would lose it")
            .is_some(),
        "the window says why it stays open: {:?}",
        w.state().status_message()
    );
    assert!(w.state().is_saving());

    pg.resume();
    step_until(&mut w, "the retried decision to be saved", |a| {
        !a.is_saving()
    });
    assert!(w.state().save_retrying().is_none());
    let row = w.state().worklist().unwrap().row(second).unwrap();
    let sha = row.sha256.clone().unwrap();
    assert!(row.final_label.is_some());
    let mut store = PgStore::open(&url).unwrap();
    let events = store.events_after(0).unwrap();
    assert_eq!(events.len(), 2, "each decision once: {events:?}");
    assert_eq!(events[1].study_sha256, sha);
    assert_eq!(events[1].action, cxr_triage::audit::Action::Confirm);
    assert!(store.verify().unwrap().is_intact());
}
