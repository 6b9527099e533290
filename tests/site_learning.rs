//! Learning from the site, run as the real binary on generated studies and a real store:
//! `score --db`, `import`, `eval --db`, `threshold`, `export` and `adapt`.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod audit_common;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cxr_triage::audit::{DecisionStore, ScoreRecord};
use cxr_triage::model::card::AdaptedCard;
use cxr_triage::worklist::Label;

fn run(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxr-triage"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_DATA_HOME", home)
        .env("HOME", home)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A folder of `per_class` normal and `per_class` pneumonia films, and the CSV of their labels
/// (as a reader would import them), both under `dir`.
fn site(dir: &Path, per_class: u32) -> (PathBuf, PathBuf) {
    let folder = dir.join("ward");
    std::fs::create_dir_all(&folder).unwrap();
    let mut csv = String::from("path,label\n");
    for i in 0..per_class * 2 {
        let pneumonia = i % 2 == 1;
        let name = format!("film-{i:03}.png");
        common::write_film(&folder.join(&name), pneumonia, i);
        csv.push_str(&format!(
            "ward/{name},{}\n",
            if pneumonia { "PNEUMONIA" } else { "NORMAL" }
        ));
    }
    let labels = dir.join("labels.csv");
    std::fs::write(&labels, csv).unwrap();
    (folder, labels)
}

#[test]
fn score_import_adapt_then_score_with_the_adapted_model() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, labels) = site(dir.path(), 28);
    let db = dir.path().join("store/decisions.sqlite3");
    let (folder_s, labels_s, db_s) = (
        folder.to_str().unwrap(),
        labels.to_str().unwrap(),
        db.to_str().unwrap(),
    );

    // Without the window: score --db makes the studies known, so import works on a new store.
    let scored = run(&["score", folder_s, "--db", db_s], dir.path());
    assert_eq!(scored.status.code(), Some(0), "{}", text(&scored));
    assert!(
        text(&scored).contains("recorded 56 studies and their scores"),
        "{}",
        text(&scored)
    );
    let imported = run(
        &[
            "import", "--csv", labels_s, "--reader", "dr-site", "--db", db_s,
        ],
        dir.path(),
    );
    assert_eq!(imported.status.code(), Some(0), "{}", text(&imported));
    assert!(text(&imported).contains("recorded 56 relabel events"));

    // One file changes after it was labelled: adaptation leaves it out and lists it.
    common::write_film(&folder.join("film-000.png"), false, 999);

    let out = dir.path().join("weights/site-a");
    let out_s = out.to_str().unwrap();
    let adapt_args = [
        "adapt", "--db", db_s, "--out", out_s, "--epochs", "4", "--seed", "3",
    ];
    let adapted = run(&adapt_args, dir.path());
    let said = text(&adapted);
    assert_eq!(adapted.status.code(), Some(0), "{said}");
    assert!(
        said.contains("left out: the file has changed since it was labelled"),
        "{said}"
    );
    assert!(said.contains("film-000.png"), "{said}");
    assert!(said.contains("before (the parent model)") && said.contains("after (adapted)"));

    let card: AdaptedCard =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    let record = card.adaptation.as_ref().unwrap();
    let parent: AdaptedCard =
        serde_json::from_str(&std::fs::read_to_string(common::shipped_model()).unwrap()).unwrap();
    assert_eq!(record.parent_model_id, parent.card.model_id);
    assert_eq!(record.parent_weights_sha256, parent.card.weights_sha256);
    assert_eq!((record.local_labels, record.left_out), (55, 1));
    assert_eq!(record.train_labels + record.held_out_labels, 55);
    assert!(record.held_out_after.auc.estimate > record.held_out_before.auc.estimate);
    assert_eq!(card.card.threshold, record.threshold);
    assert_eq!(card.card.model_id, "site-a");
    let store = DecisionStore::open_existing(&db).unwrap();
    assert_eq!(record.store_last_event_hash, store.head_hash().unwrap());
    assert_eq!(
        record.store_last_event_hash,
        store.verify().unwrap().head_hash
    );

    // The adapted model loads and scores (its weights hash checked against its card).
    let rescored = run(
        &[
            "score",
            folder_s,
            "--weights",
            out.with_extension("json").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(rescored.status.code(), Some(0), "{}", text(&rescored));
    assert!(
        text(&rescored).contains("model site-a"),
        "{}",
        text(&rescored)
    );

    // The site switches to it (an audited event): commands on the store use it from then on,
    // with the threshold chosen on the local labels, until the site switches back.
    let card_s = out.with_extension("json");
    let switched = run(
        &[
            "use-model",
            "--db",
            db_s,
            "--weights",
            card_s.to_str().unwrap(),
            "--reader",
            "dr-lead",
        ],
        dir.path(),
    );
    assert_eq!(switched.status.code(), Some(0), "{}", text(&switched));
    assert!(
        text(&switched).contains(&format!(
            "model in force: {} -> site-a (threshold {:.4}",
            parent.card.model_id, record.threshold
        )),
        "{}",
        text(&switched)
    );
    let in_force = run(&["score", folder_s, "--db", db_s], dir.path());
    assert_eq!(in_force.status.code(), Some(0), "{}", text(&in_force));
    assert!(
        text(&in_force).contains("model site-a"),
        "{}",
        text(&in_force)
    );
    let store = DecisionStore::open_existing(&db).unwrap();
    let switch = store.model_in_force().unwrap().unwrap();
    assert_eq!(switch.event.model_id, "site-a");
    assert_eq!(switch.event.reader, "dr-lead");
    assert_eq!(switch.event.new_threshold, record.threshold);
    assert_eq!(switch.from_model_id, parent.card.model_id);
    assert!(store.verify_thresholds().unwrap().is_intact());
    let again = run(
        &[
            "use-model",
            "--db",
            db_s,
            "--weights",
            card_s.to_str().unwrap(),
            "--reader",
            "dr-lead",
        ],
        dir.path(),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("site-a is already the model in force"),
        "{}",
        text(&again)
    );
    let verified = run(&["audit", "verify", "--db", db_s], dir.path());
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    assert!(
        text(&verified).contains("OK: 1 threshold changes"),
        "{}",
        text(&verified)
    );

    // A model in force that is gone is an error, never another model in its place.
    let moved = dir.path().join("moved");
    std::fs::rename(out.with_extension("json"), &moved).unwrap();
    let missing = run(&["score", folder_s, "--db", db_s], dir.path());
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).contains("the model in force at this site (site-a, switched to by dr-lead"),
        "{}",
        text(&missing)
    );
    std::fs::rename(&moved, out.with_extension("json")).unwrap();

    // Back to the shipped model.
    let back = run(
        &[
            "use-model",
            "--db",
            db_s,
            "--reader",
            "dr-lead",
            "--reason",
            "trial over",
        ],
        dir.path(),
    );
    assert_eq!(back.status.code(), Some(0), "{}", text(&back));
    let shipped_again = run(&["score", folder_s, "--db", db_s], dir.path());
    assert!(
        text(&shipped_again).contains(&format!("model {}", parent.card.model_id)),
        "{}",
        text(&shipped_again)
    );

    // adapt --use writes the adapted model and makes it the one in force in one go.
    let out_b = dir.path().join("weights/site-b");
    let adapted_b = run(
        &[
            "adapt",
            "--db",
            db_s,
            "--out",
            out_b.to_str().unwrap(),
            "--epochs",
            "4",
            "--seed",
            "3",
            "--use",
            "--reader",
            "dr-lead",
        ],
        dir.path(),
    );
    assert_eq!(adapted_b.status.code(), Some(0), "{}", text(&adapted_b));
    assert!(
        text(&adapted_b).contains("model in force at this site: site-b"),
        "{}",
        text(&adapted_b)
    );
    let store = DecisionStore::open_existing(&db).unwrap();
    let switch = store.model_in_force().unwrap().unwrap();
    assert_eq!(switch.event.model_id, "site-b");
    assert_eq!(switch.from_model_id, parent.card.model_id);
    assert!(switch.event.basis_json.contains("held_out_after"));

    // Never over an existing model.
    let again = run(&adapt_args, dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("refusing to overwrite an existing model file"),
        "{}",
        text(&again)
    );
}

#[test]
fn adapt_refuses_with_too_few_labels_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, labels) = site(dir.path(), 12);
    let db = dir.path().join("decisions.sqlite3");
    let db_s = db.to_str().unwrap();
    assert!(
        run(
            &["score", folder.to_str().unwrap(), "--db", db_s],
            dir.path()
        )
        .status
        .success()
    );
    let imported = run(
        &[
            "import",
            "--csv",
            labels.to_str().unwrap(),
            "--reader",
            "dr-site",
            "--db",
            db_s,
        ],
        dir.path(),
    );
    assert!(imported.status.success(), "{}", text(&imported));
    let out = dir.path().join("site-b");
    let adapted = run(
        &["adapt", "--db", db_s, "--out", out.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(adapted.status.code(), Some(1));
    assert!(
        text(&adapted).contains(
            "too few local labels to adapt the model: 12 PNEUMONIA and 12 NORMAL studies"
        ),
        "{}",
        text(&adapted)
    );
    assert!(!out.with_extension("json").exists());
    assert!(!out.with_extension("safetensors").exists());

    // eval --db says plainly that there are too few, instead of figures.
    let eval = run(
        &[
            "eval",
            "--db",
            db_s,
            "--out",
            dir.path().join("report").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(eval.status.code(), Some(0), "{}", text(&eval));
    assert!(
        text(&eval).contains("too few reviewed studies for figures: 12 PNEUMONIA and 12 NORMAL"),
        "{}",
        text(&eval)
    );
    assert!(!text(&eval).contains("ROC AUC"));
}

/// A store whose 40 fixture studies carry the shipped model's scores and a reader's label:
/// 20 PNEUMONIA scored 0.05, 0.10, …, 1.00 and 20 NORMAL scored 0.025, 0.075, …, 0.975.
fn scored_store(dir: &Path) -> (DecisionStore, String) {
    let mut store = audit_common::store_with_studies(dir, 40);
    let card: AdaptedCard =
        serde_json::from_str(&std::fs::read_to_string(common::shipped_model()).unwrap()).unwrap();
    let weights = card.card.weights_sha256.clone();
    let scores: Vec<ScoreRecord> = (0..40)
        .map(|n| ScoreRecord {
            study_sha256: audit_common::sha(n),
            model_id: card.card.model_id.clone(),
            weights_sha256: weights.clone(),
            score: score_of(n),
            threshold: card.card.threshold,
        })
        .collect();
    store.record_scores(&scores).unwrap();
    let mut csv = String::from("sha256,label\n");
    for n in 0..40 {
        csv.push_str(&format!(
            "{},{}\n",
            audit_common::sha(n),
            if n < 20 { "PNEUMONIA" } else { "NORMAL" }
        ));
    }
    let report =
        cxr_triage::audit::import_csv(&mut store, csv.as_bytes(), dir, "dr-truth").unwrap();
    assert_eq!(report.recorded.len(), 40);
    (store, card.card.threshold.to_string())
}

fn score_of(n: u32) -> f32 {
    if n < 20 {
        (n + 1) as f32 * 0.05
    } else {
        (n - 20) as f32 * 0.05 + 0.025
    }
}

#[test]
fn local_figures_match_hand_computed_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = scored_store(dir.path());
    let db = store.path().to_str().unwrap().to_owned();
    let out = dir.path().join("local");
    let eval = run(
        &["eval", "--db", &db, "--out", out.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(eval.status.code(), Some(0), "{}", text(&eval));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let threshold = report["threshold"].as_f64().unwrap() as f32;
    // By hand, at the shipped threshold t: pneumonia at or above t are found, normal at or above
    // t are false alarms.
    let tp = (0..20).filter(|&n| score_of(n) >= threshold).count() as u64;
    let fp = (20..40).filter(|&n| score_of(n) >= threshold).count() as u64;
    let c = &report["figures"]["confusion"];
    assert_eq!(c["tp"].as_u64(), Some(tp));
    assert_eq!(c["fn_"].as_u64(), Some(20 - tp));
    assert_eq!(c["fp"].as_u64(), Some(fp));
    assert_eq!(c["tn"].as_u64(), Some(20 - fp));
    // AUC by hand: pneumonia k (score 0.05 k) outranks the normal films below it, k of them
    // (0.025, …, 0.05 k - 0.025): sum over k = 1..20 of k = 210 of 400 pairs.
    let auc = report["figures"]["auc"]["estimate"].as_f64().unwrap();
    assert!((auc - 210.0 / 400.0).abs() < 1e-9, "{auc}");
    assert_eq!(report["pneumonia"].as_u64(), Some(20));
    assert_eq!(report["normal"].as_u64(), Some(20));
    assert!(out.join("roc.png").is_file() && out.join("histogram.png").is_file());
}

#[test]
fn a_threshold_change_is_audited_and_exports_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, old) = scored_store(dir.path());
    let db = store.path().to_str().unwrap().to_owned();
    let changed = run(
        &[
            "threshold",
            "--db",
            &db,
            "--target-sensitivity",
            "0.5",
            "--reader",
            "dr-lead",
            "--reason",
            "local audit",
        ],
        dir.path(),
    );
    assert_eq!(changed.status.code(), Some(0), "{}", text(&changed));
    // Sensitivity 0.5 of 20: the 10 highest pneumonia scores (0.55 .. 1.00) are kept; the
    // threshold lies halfway between 0.55 and the next lower score, the normal film at 0.525.
    let events = store.threshold_events().unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert!(
        (e.new_threshold - 0.5375).abs() < 1e-6,
        "{}",
        e.new_threshold
    );
    assert_eq!(e.old_threshold.to_string(), old);
    assert_eq!(e.reader, "dr-lead");
    assert_eq!(e.reason, "local audit");
    let basis: serde_json::Value = serde_json::from_str(&e.basis_json).unwrap();
    assert_eq!(basis["reviewed"].as_u64(), Some(40));
    assert!((basis["after"]["sensitivity"]["estimate"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(
        store
            .threshold_in_force(&e.weights_sha256)
            .unwrap()
            .unwrap()
            .id,
        1
    );

    let verify = run(&["audit", "verify", "--db", &db], dir.path());
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(text(&verify).contains("OK: 1 threshold changes"));

    // Exports follow the threshold in force; scores are unchanged.
    let csv_path = dir.path().join("out.csv");
    let export = run(
        &["export", "--db", &db, "--csv", csv_path.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(export.status.code(), Some(0), "{}", text(&export));
    let mut rdr = csv::Reader::from_path(&csv_path).unwrap();
    let mut rows = 0;
    for row in rdr.records() {
        let row = row.unwrap();
        let score: f32 = row[4].parse().unwrap();
        let ai: Label = row[5].parse().unwrap();
        assert_eq!(ai, Label::from_score(score, e.new_threshold), "{row:?}");
        assert_eq!(row[12].parse::<f32>().unwrap(), e.new_threshold);
        rows += 1;
    }
    assert_eq!(rows, 40);
    let n = 12; // Pneumonia scored 0.65: unchanged.
    assert!(
        std::fs::read_to_string(&csv_path)
            .unwrap()
            .contains(&format!("{},", score_of(n)))
    );

    // Tampering with the threshold log is found.
    drop(store);
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute_batch(
        "DROP TRIGGER threshold_events_no_update; UPDATE threshold_events SET new_threshold = 0.9;",
    )
    .unwrap();
    drop(raw);
    let bad = run(&["audit", "verify", "--db", &db], dir.path());
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("threshold change 1: its content was changed"),
        "{}",
        text(&bad)
    );
}
