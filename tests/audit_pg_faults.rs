//! The department's store under faults: the PostgreSQL server crashes and comes back while eight
//! writers append, and a writer process is killed with SIGKILL. Every decision a writer was told
//! is saved is in the log, none is recorded twice, and the chain verifies.
//!
//! Each test runs a PostgreSQL cluster of its own (`scripts/pg-test-server.sh`), which it stops
//! and starts; needs the server's programs as `tests/pg_common` describes (skips without them,
//! except under `CI=true`).

#![allow(clippy::unwrap_used)]

mod audit_common;
mod pg_common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_common::{confirm, sha, study};
use cxr_triage::audit::{AuditError, DecisionEvent, NewDecision, PgStore};
use pg_common::{PrivateServer, new_database};

const WRITERS: u32 = 8;
const EACH: u32 = 60;

/// Records `d` as a window's writer does: while the server cannot be reached, connects again and
/// sends the decision again under the same name, until it is recorded (at most a minute).
fn record_retrying(
    store: &mut Option<PgStore>,
    url: &str,
    request_id: &str,
    d: &NewDecision,
    retries: &AtomicUsize,
) -> DecisionEvent {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the server did not come back");
        if store.is_none() {
            match PgStore::open(url) {
                Ok(s) => *store = Some(s),
                Err(AuditError::ServerUnavailable(_)) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => panic!("connecting failed otherwise than unreachable: {e}"),
            }
        }
        match store.as_mut().unwrap().record_once(request_id, d) {
            Ok(event) => return event,
            Err(AuditError::ServerUnavailable(_)) => {
                retries.fetch_add(1, Ordering::Relaxed);
                *store = None;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("a decision was refused otherwise than unreachable: {e}"),
        }
    }
}

/// A private server with a store of its own, set up by its owner, who knows every study the
/// writers decide on.
fn private_store(name: &str) -> Option<(PrivateServer, String, PgStore)> {
    let pg = PrivateServer::start()?;
    let url = new_database(&pg.url, name);
    let mut owner = PgStore::open(&url).unwrap();
    let studies: Vec<_> = (0..WRITERS * EACH).map(study).collect();
    owner.upsert_studies(&studies).unwrap();
    Some((pg, url, owner))
}

#[test]
fn a_server_crash_under_eight_writers_loses_and_doubles_nothing() {
    let Some((pg, url, owner)) = private_store("crash") else {
        return;
    };
    drop(owner);

    let saved = Arc::new(Mutex::new(Vec::<DecisionEvent>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, saved, done, retries) = (
                url.clone(),
                Arc::clone(&saved),
                Arc::clone(&done),
                Arc::clone(&retries),
            );
            std::thread::Builder::new()
                .name(format!("writer-{w}"))
                .spawn(move || {
                    let mut store = Some(PgStore::open(&url).unwrap());
                    for i in 0..EACH {
                        let n = w * EACH + i;
                        let event = record_retrying(
                            &mut store,
                            &url,
                            &format!("fault-test-writer-{w}-{i}"),
                            &confirm(n, 0.9),
                            &retries,
                        );
                        assert_eq!(event.study_sha256, sha(n));
                        saved.lock().unwrap().push(event);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .unwrap()
        })
        .collect();
    // The server crashes a quarter of the way in, and is back a second later.
    let total = (WRITERS * EACH) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < total / 4 {
        assert!(Instant::now() < deadline, "the writers did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.pause("immediate");
    let at_crash = done.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    pg.resume();
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        at_crash < total,
        "the crash came before the writers were done ({at_crash} of {total})"
    );
    assert!(
        retries.load(Ordering::Relaxed) > 0,
        "some writer met the crash"
    );

    let mut store = PgStore::open(&url).unwrap();
    let log = store.events_after(0).unwrap();
    assert_eq!(log.len(), total, "every decision once");
    let saved = saved.lock().unwrap();
    assert_eq!(saved.len(), total);
    for event in saved.iter() {
        let in_log = &log[usize::try_from(event.id - 1).unwrap()];
        assert_eq!(
            in_log, event,
            "a decision reported saved is in the log as reported"
        );
    }
    let mut studies: Vec<&str> = log.iter().map(|e| e.study_sha256.as_str()).collect();
    studies.sort_unstable();
    studies.dedup();
    assert_eq!(studies.len(), total, "no study decided twice");
    let report = store.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
}

/// The writer process of [`a_writer_killed_with_sigkill_loses_no_decision_it_reported_saved`]:
/// runs only when that test starts this binary with `CXR_TRIAGE_FAULT_WRITER` set, records
/// decisions one by one and prints `saved ID N` for each, as soon as the server has it.
#[test]
fn fault_writer_process() {
    let Ok(url) = std::env::var("CXR_TRIAGE_FAULT_WRITER") else {
        return;
    };
    let mut store = PgStore::open(&url).unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0..EACH * WRITERS {
        let event = store.record(&confirm(n, 0.9)).unwrap();
        writeln!(out, "saved {} {n}", event.id).unwrap();
        out.flush().unwrap();
        // A reader's pace, compressed: the test kills the process well before the end.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_writer_killed_with_sigkill_loses_no_decision_it_reported_saved() {
    let Some((_pg, url, mut owner)) = private_store("sigkill") else {
        return;
    };

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["fault_writer_process", "--exact", "--nocapture"])
        .env("CXR_TRIAGE_FAULT_WRITER", &url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported = Vec::new();
    while reported.len() < 50 {
        let line = lines.next().expect("the writer stopped early").unwrap();
        // libtest may print the test's name on the same line, before the first one.
        if let Some(at) = line.find("saved ") {
            reported.push(line[at + 6..].to_owned());
        }
    }
    child.kill().unwrap(); // SIGKILL: no chance to finish a write or clean up.
    child.wait().unwrap();
    // What it printed before it died counts too.
    for line in lines {
        let line = line.unwrap();
        if let Some(at) = line.find("saved ") {
            reported.push(line[at + 6..].to_owned());
        }
    }

    let log = owner.events_after(0).unwrap();
    for r in &reported {
        let (id, n) = r.split_once(' ').unwrap();
        let (id, n): (i64, u32) = (id.parse().unwrap(), n.parse().unwrap());
        let event = &log[usize::try_from(id - 1).unwrap()];
        assert_eq!(
            event.study_sha256,
            sha(n),
            "event {id} is the decision reported"
        );
    }
    assert!(
        log.len() >= reported.len() && log.len() <= reported.len() + 1,
        "the log holds what was reported and at most the decision in flight: {} events, {} \
         reported",
        log.len(),
        reported.len()
    );
    assert!(
        log.len() < (WRITERS * EACH) as usize,
        "killed before it was done"
    );
    let report = owner.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    // The store takes the next writer's decisions as if nothing happened.
    owner.record(&confirm(WRITERS * EACH - 1, 0.9)).unwrap();
    assert!(owner.verify().unwrap().is_intact());
}
