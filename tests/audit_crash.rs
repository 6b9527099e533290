//! Crash safety and concurrency of the decision store, with real processes.
//!
//! The child role is this test binary itself, started again with `--ignored --exact` and an
//! environment variable naming the store: it records decisions and prints each returned id and
//! hash to stdout, flushed, as soon as `record` returns.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod audit_common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit_common::{confirm, decision, store_with_studies, undo};
use cxr_triage::audit::{Action, AuditError, DecisionStore};
use cxr_triage::worklist::Label;

/// The store the child records into. Its presence selects the child role.
const CHILD_DB: &str = "CXR_TRIAGE_TEST_CHILD_DB";
/// The reader name the child records as.
const CHILD_READER: &str = "CXR_TRIAGE_TEST_CHILD_READER";
/// How many decisions the child records before it exits (unset: until it is killed).
const CHILD_COUNT: &str = "CXR_TRIAGE_TEST_CHILD_COUNT";
/// Microseconds the child pauses after each decision, as a reader would (unset: none).
const CHILD_PAUSE_US: &str = "CXR_TRIAGE_TEST_CHILD_PAUSE_US";
/// The number of studies the store knows.
const STUDIES: u32 = 7;

#[test]
#[ignore = "child process of the crash and concurrency tests below, which start it themselves"]
fn child_records_decisions() {
    let db = std::env::var_os(CHILD_DB)
        .expect("this is the child role of the crash tests; they set CXR_TRIAGE_TEST_CHILD_DB");
    let reader = std::env::var(CHILD_READER).unwrap_or_else(|_| "child".to_owned());
    let count: u32 = std::env::var(CHILD_COUNT).map_or(u32::MAX, |c| c.parse().unwrap());
    let pause_us: u64 = std::env::var(CHILD_PAUSE_US).map_or(0, |c| c.parse().unwrap());
    let store = DecisionStore::open(Path::new(&db)).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        let n = i % STUDIES;
        let score = 0.125 * f32::from(u8::try_from(i % 8).unwrap());
        let mut d = match i % 3 {
            0 => confirm(n, score),
            1 => decision(n, Action::Relabel, score, Some(Label::Pneumonia)),
            _ => undo(n, score),
        };
        d.reader.clone_from(&reader);
        d.reason = format!("decision {i} of {reader}");
        match store.record(&d) {
            Ok(event) => {
                writeln!(out, "recorded {} {}", event.id, event.row_hash).unwrap();
                out.flush().unwrap();
            }
            Err(AuditError::NothingToUndo) => {}
            Err(e) => panic!("record failed: {e}"),
        }
        std::thread::sleep(Duration::from_micros(pause_us));
    }
}

/// Starts the child role on `db`.
fn spawn_child(db: &Path, reader: &str, count: Option<u32>, pause_us: u64) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "child_records_decisions",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DB, db)
    .env(CHILD_READER, reader)
    .env(CHILD_PAUSE_US, pause_us.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(c) = count {
        cmd.env(CHILD_COUNT, c.to_string());
    }
    cmd.spawn().unwrap()
}

/// The (id, row hash) pairs a child printed.
fn printed_events(child: &mut Child) -> Vec<(i64, String)> {
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        // libtest may print "test child_records_decisions ... " in front of the first line.
        .filter_map(|l| l.split_once("recorded ").map(|(_, rest)| rest))
        .map(|l| {
            let (id, hash) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), hash.to_owned())
        })
        .collect()
}

/// Every event in the store: id → (row hash, reader).
fn stored_events(db: &Path) -> BTreeMap<i64, (String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, row_hash, reader FROM decisions")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// xorshift64*: a fixed-seed generator, so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn every_returned_decision_survives_sigkill_at_random_moments() {
    const TRIALS: u32 = 60;
    let dir = tempfile::tempdir().unwrap();
    let db = store_with_studies(dir.path(), STUDIES).path().to_owned();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut promised: Vec<(i64, String)> = Vec::new();
    let mut trials_with_records = 0;
    let started = Instant::now();
    for trial in 0..TRIALS {
        let mut child = spawn_child(&db, &format!("trial-{trial}"), None, 0);
        // From "still starting up" to "dozens of decisions in".
        std::thread::sleep(Duration::from_micros(rng.below(120_000)));
        child.kill().unwrap(); // SIGKILL on Unix.
        let status = child.wait().unwrap();
        let printed = printed_events(&mut child);
        assert!(
            !status.success(),
            "trial {trial}: the child ended before the kill"
        );
        if !printed.is_empty() {
            trials_with_records += 1;
        }
        let stored = stored_events(&db);
        for (id, hash) in &printed {
            assert_eq!(
                stored.get(id).map(|(h, _)| h),
                Some(hash),
                "trial {trial}: event {id} was returned by record but is not in the store"
            );
        }
        promised.extend(printed);
    }
    let stored = stored_events(&db);
    let report = DecisionStore::open(&db).unwrap().verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.total_events, stored.len() as u64);
    for (id, hash) in &promised {
        assert_eq!(stored.get(id).map(|(h, _)| h), Some(hash), "event {id}");
    }
    // The kills landed while the children were recording, not only before they began.
    assert!(
        trials_with_records >= TRIALS / 2,
        "only {trials_with_records} trials recorded"
    );
    eprintln!(
        "{TRIALS} kills, {} decisions promised, {} stored, {:.1} s",
        promised.len(),
        stored.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn two_processes_recording_at_once_lose_nothing() {
    const EACH: u32 = 150;
    let dir = tempfile::tempdir().unwrap();
    let db = store_with_studies(dir.path(), STUDIES).path().to_owned();
    // Each pauses 1 ms between decisions (a fast reader), leaving the other room to write:
    // SQLite's lock is not fair, and two writers that never pause take turns in long runs.
    let mut a = spawn_child(&db, "proc-a", Some(EACH), 1000);
    let mut b = spawn_child(&db, "proc-b", Some(EACH), 1000);
    let from_a = printed_events(&mut a);
    let from_b = printed_events(&mut b);
    for (name, child) in [("a", &mut a), ("b", &mut b)] {
        let out = child.wait_with_output_stderr();
        assert!(out.0.success(), "process {name} failed: {}", out.1);
    }
    let stored = stored_events(&db);
    assert_eq!(stored.len(), from_a.len() + from_b.len());
    let mut ids = HashSet::new();
    for (reader, events) in [("proc-a", &from_a), ("proc-b", &from_b)] {
        assert!(
            events.len() > EACH as usize / 2,
            "{reader} recorded {}",
            events.len()
        );
        for (id, hash) in events {
            assert!(ids.insert(*id), "id {id} was handed out twice");
            assert_eq!(stored[id], (hash.clone(), reader.to_owned()), "event {id}");
        }
    }
    let report = DecisionStore::open(&db).unwrap().verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    // How much the two processes interleaved, for the log.
    let switches = stored
        .values()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .count();
    eprintln!(
        "{} events, the writer changed {switches} times",
        stored.len()
    );
    assert!(
        switches >= 2,
        "the two processes never wrote at the same time"
    );
}

/// Waiting for a child whose stdout was already read.
trait WaitStderr {
    fn wait_with_output_stderr(&mut self) -> (std::process::ExitStatus, String);
}

impl WaitStderr for Child {
    fn wait_with_output_stderr(&mut self) -> (std::process::ExitStatus, String) {
        let mut err = String::new();
        if let Some(mut s) = self.stderr.take() {
            s.read_to_string(&mut err).unwrap();
        }
        (self.wait().unwrap(), err)
    }
}
