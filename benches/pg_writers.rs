//! The department's store under load: eight writers appending 500 decisions each, at once, to
//! one PostgreSQL log (throughput, each append's latency, the chain verified afterwards); and
//! how long a decision takes to reach another window's listening connection (NOTIFY); and the
//! same eight writers on a SQLite store on this machine's disk, for comparison.
//!
//! Run against a server whose superuser may create databases, for example the throw-away one:
//! `eval "$(scripts/pg-test-server.sh start)"; cargo bench --bench pg_writers`
//! (`CXR_TRIAGE_TEST_PG=postgres://USER@HOST:PORT`). Note that the throw-away cluster runs with
//! `fsync=off`; point it at a real server for figures that include the disk.

#![allow(clippy::unwrap_used)] // Benchmark set-up: a failed unwrap is a failed run.

use std::time::{Duration, Instant};

use cxr_triage::audit::{Action, DecisionLog, DecisionStore, NewDecision, PgStore, StudyRecord};
use cxr_triage::io::sha256_hex;
use cxr_triage::worklist::Label;

const WRITERS: u32 = 8;
const EACH: u32 = 500;
const NOTIFY_SAMPLES: u32 = 200;

fn sha(n: u32) -> String {
    sha256_hex(format!("bench study {n}").as_bytes())
}

fn decision(n: u32, i: u32) -> NewDecision {
    let undo = i % 2 == 1;
    NewDecision {
        reader: "dr-bench".to_owned(), // On PostgreSQL the database user.
        study_sha256: sha(n),
        study_path: format!("/bench/{n}.dcm").into(),
        model_id: Some("bench".to_owned()),
        weights_sha256: Some(sha256_hex(b"weights")),
        score: Some(0.9),
        threshold: Some(0.5),
        ai_label: Some(Label::Pneumonia),
        new_label: (!undo).then_some(Label::Pneumonia),
        action: if undo { Action::Undo } else { Action::Confirm },
        reason: String::new(),
        viewed_ms: Some(1500),
        ood_reason: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs [`WRITERS`] threads of [`EACH`] appends at once, each on its own connection from
/// `open`, and prints the throughput and each append's latency.
fn writers(backend: &str, open: impl Fn() -> Box<dyn DecisionLog> + Clone + Send + 'static) {
    let started = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let open = open.clone();
            std::thread::Builder::new()
                .name(format!("writer-{w}"))
                .spawn(move || {
                    let mut store = open();
                    (0..EACH)
                        .map(|i| {
                            let t = Instant::now();
                            store.record(&decision(w, i)).unwrap();
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap()
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let wall = started.elapsed();
    latencies.sort_unstable();
    let total = latencies.len();
    println!(
        "{backend}: {WRITERS} writers x {EACH} appends: {total} events in {:.2} s ({:.0} appends/s); append latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
}

fn main() {
    let Ok(server) = std::env::var("CXR_TRIAGE_TEST_PG") else {
        eprintln!("pg_writers: no server; run eval \"$(scripts/pg-test-server.sh start)\" first");
        return;
    };
    let server = server.trim_end_matches('/').to_owned();
    let db = format!("bench_{}", std::process::id());
    let mut admin =
        postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let url = format!("{server}/{db}");
    let mut owner = PgStore::open(&url).unwrap();
    let studies: Vec<StudyRecord> = (0..WRITERS)
        .map(|n| StudyRecord {
            sha256: sha(n),
            path: format!("/bench/{n}.dcm").into(),
            patient_id: None,
            study_uid: None,
            metadata_json: "{}".to_owned(),
        })
        .collect();
    owner.upsert_studies(&studies).unwrap();
    println!(
        "CPU: {}; server: {}",
        cxr_triage::model::fast::cpu_description(),
        postgres::Client::connect(&url, postgres::NoTls)
            .unwrap()
            .query_one("SELECT version()", &[])
            .unwrap()
            .get::<_, String>(0)
    );

    let pg_url = url.clone();
    writers("PostgreSQL", move || {
        Box::new(PgStore::open(&pg_url).unwrap()) as Box<dyn DecisionLog>
    });
    let t = Instant::now();
    let report = owner.verify().unwrap();
    println!(
        "verify: {} of {} events check out, intact {} ({:.0} ms)",
        report.events_checked,
        report.total_events,
        report.is_intact(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert!(report.is_intact());
    assert_eq!(report.total_events, u64::from(WRITERS * EACH));

    // The same load on a SQLite store on this machine's disk (one file, eight connections).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("decisions.sqlite3");
    DecisionStore::open(&file)
        .unwrap()
        .upsert_studies(&studies)
        .unwrap();
    let sqlite_file = file.clone();
    writers("SQLite", move || {
        Box::new(DecisionStore::open(&sqlite_file).unwrap()) as Box<dyn DecisionLog>
    });
    let report = DecisionStore::open(&file).unwrap().verify().unwrap();
    assert!(report.is_intact());
    assert_eq!(report.total_events, u64::from(WRITERS * EACH));

    // NOTIFY: from the writer's commit to the listening connection's wake-up.
    let mut listener = PgStore::open(&url).unwrap();
    listener.listen().unwrap();
    let mut waits: Vec<Duration> = (0..NOTIFY_SAMPLES)
        .map(|i| {
            let t = Instant::now();
            let event = owner.record(&decision(0, i)).unwrap();
            let heard = listener.wait_for_decision(Duration::from_secs(5)).unwrap();
            assert_eq!(heard, Some(event.id));
            t.elapsed()
        })
        .collect();
    waits.sort_unstable();
    println!(
        "a decision reaches a listening window ({NOTIFY_SAMPLES} samples, append included): p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        percentile(&waits, 0.5),
        percentile(&waits, 0.95),
        percentile(&waits, 1.0),
    );
    drop((owner, listener));
    admin.batch_execute(&format!("DROP DATABASE {db}")).unwrap();
}
