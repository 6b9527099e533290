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
use cxr_triage::app::{AppConfig, Command};
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
