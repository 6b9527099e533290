//! Two windows on one store, as two readers of a department would have: the second window shows
//! the study the first has open ("being read by …"), skips it in "next unreviewed", and shows the
//! first reader's decision within seconds, without being reopened.

#![allow(clippy::unwrap_used)]

mod app_common;

use std::time::{Duration, Instant};

use app_common::{config, folder, harness, step_both, until_decidable, wait_for_scores};
use cxr_triage::app::{AppConfig, Command};
use cxr_triage::audit::DecisionStore;
use cxr_triage::worklist::{Label, StudyId};
use egui::Key;
use egui_kittest::kittest::Queryable as _;

fn reader(fx: &app_common::Fixture, name: &str) -> AppConfig {
    AppConfig {
        reader: Some(name.to_owned()),
        ..config(fx)
    }
}

#[test]
fn a_second_window_sees_the_first_readers_claim_and_decision() {
    let fx = folder(6);
    let mut alice = harness(reader(&fx, "Alice"));
    wait_for_scores(&mut alice);
    let mut bob = harness(reader(&fx, "Bob"));
    wait_for_scores(&mut bob);

    // Alice opens the top scored study.
    let view: Vec<StudyId> = alice.state().view_order().to_vec();
    let w = alice.state().worklist().unwrap();
    let scored: Vec<StudyId> = view
        .iter()
        .copied()
        .filter(|&id| w.row(id).unwrap().score_value().is_some())
        .collect();
    let (x, before_x) = (scored[1], scored[0]);
    let sha = w.row(x).unwrap().sha256.clone().unwrap();
    alice.state_mut().push(Command::Select(x));

    // Bob's window shows it as being read by Alice.
    step_both(
        &mut alice,
        &mut bob,
        "Alice's claim in Bob's window",
        |_, b| b.worklist().unwrap().row(x).unwrap().claimed_by.as_deref() == Some("Alice"),
    );
    assert!(bob.query_by_label("being read by Alice").is_some());
    // "Next unreviewed" from the study before it skips it.
    bob.state_mut().push(Command::Select(before_x));
    bob.step();
    bob.state_mut().push(Command::NextUnreviewed);
    bob.step();
    let next = bob.state().selected().unwrap();
    assert_ne!(next, x, "Bob was sent to the study Alice is reading");
    assert_ne!(next, before_x);
    // Bob goes back to the first study (out of the way of Alice's next one).
    bob.state_mut().push(Command::Select(before_x));

    // Alice decides; Bob's window shows it without being reopened.
    alice.step();
    until_decidable(&mut alice);
    alice.key_press(Key::C);
    step_both(
        &mut alice,
        &mut bob,
        "Alice's decision in Bob's window",
        |_, b| b.worklist().unwrap().row(x).unwrap().final_label.is_some(),
    );
    let store = DecisionStore::open(&fx.db).unwrap();
    let current = store.current(&sha).unwrap().unwrap();
    assert_eq!(current.last_event.reader, "Alice");
    assert_eq!(
        bob.state().worklist().unwrap().row(x).unwrap().final_label,
        current.final_label
    );
    assert_eq!(bob.state().worklist().unwrap().counts().reviewed, 1);

    // Alice has moved on to the next study; Bob opens it too and is told she has it.
    let y = alice.state().selected().unwrap();
    assert_ne!(y, x);
    let y_sha = bob
        .state()
        .worklist()
        .unwrap()
        .row(y)
        .unwrap()
        .sha256
        .clone()
        .unwrap();
    step_both(
        &mut alice,
        &mut bob,
        "Alice's claim on the next study",
        |_, b| b.worklist().unwrap().row(y).unwrap().claimed_by.as_deref() == Some("Alice"),
    );
    bob.state_mut().push(Command::Select(y));
    step_both(
        &mut alice,
        &mut bob,
        "the warning in Bob's window",
        |_, b| {
            b.notices()
                .iter()
                .any(|n| n.contains("is being read by Alice"))
        },
    );
    // When Alice's window closes, its claim goes with it, and Bob's window takes the study.
    drop(alice);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let claims = store.active_claims(std::time::SystemTime::now()).unwrap();
        if claims.iter().all(|c| c.reader != "Alice")
            && claims
                .iter()
                .any(|c| c.reader == "Bob" && c.study_sha256 == y_sha)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Bob never got the study Alice let go of: {claims:?}"
        );
        bob.step();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_override_is_queued_for_a_second_read_that_does_not_show_the_first() {
    let fx = folder(5);
    let mut alice = harness(reader(&fx, "Alice"));
    wait_for_scores(&mut alice);
    let mut bob = harness(AppConfig {
        // Only overrides: no sampled studies.
        second_read_share: 0.0,
        ..reader(&fx, "Bob")
    });
    wait_for_scores(&mut bob);
    let w = alice.state().worklist().unwrap();
    let z = *alice
        .state()
        .view_order()
        .iter()
        .find(|&&id| w.row(id).unwrap().score_value().is_some())
        .unwrap();
    let ai = w.ai_label(w.row(z).unwrap()).unwrap();
    let sha = w.row(z).unwrap().sha256.clone().unwrap();

    // Alice overrides the AI on Z.
    alice.state_mut().push(Command::Select(z));
    alice.step();
    until_decidable(&mut alice);
    alice.key_press(if ai == Label::Pneumonia {
        Key::N
    } else {
        Key::P
    });
    step_both(
        &mut alice,
        &mut bob,
        "the second read in Bob's window",
        |_, b| b.worklist().unwrap().row(z).unwrap().second_read_due,
    );
    assert_eq!(bob.state().worklist().unwrap().counts().second_reads, 1);
    assert!(bob.query_by_label_contains("Second reads 1").is_some());
    // Bob's row says a second read is due, not what Alice decided.
    assert!(bob.query_by_label("second read due").is_some());
    assert!(bob.query_by_label_contains("overridden to").is_none());
    assert!(bob.query_by_label_contains("Disagreements 0").is_some());
    // Alice's own window has nothing to second-read.
    assert_eq!(alice.state().worklist().unwrap().counts().second_reads, 0);

    // Bob reads it and agrees with the AI (so with Alice's first read he disagrees).
    bob.state_mut().push(Command::Select(z));
    bob.step();
    until_decidable(&mut bob);
    bob.key_press(Key::C);
    step_both(&mut alice, &mut bob, "the second read recorded", |_, b| {
        !b.worklist().unwrap().row(z).unwrap().second_read_due
    });
    let store = DecisionStore::open(&fx.db).unwrap();
    let history = store.history(&sha).unwrap();
    let readers: Vec<&str> = history.iter().map(|e| e.reader.as_str()).collect();
    assert_eq!(readers, ["Alice", "Bob"]);
    let qa = store.qa_report().unwrap();
    assert_eq!(qa.reader_reader.pairs, 1);
    assert_eq!(qa.disagreements.len(), 1);
}
