//! A PostgreSQL server for the tests that need one (`tests/audit_postgres.rs`,
//! `tests/app_postgres.rs`): `CXR_TRIAGE_TEST_PG=postgres://SUPERUSER@HOST:PORT`, which `.ci/run`
//! sets after starting a throw-away cluster with `scripts/pg-test-server.sh`. Without it the
//! tests skip and say why, except under `CI=true`, where they fail.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::sync::atomic::{AtomicU32, Ordering};

use cxr_triage::audit::PgStore;

/// The server's address without a database, or `None` (after saying why) when there is none.
pub fn server() -> Option<String> {
    match std::env::var("CXR_TRIAGE_TEST_PG") {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().trim_end_matches('/').to_owned()),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and CXR_TRIAGE_TEST_PG is not set: .ci/run starts a PostgreSQL server \
                 for these tests (scripts/pg-test-server.sh)"
            );
            eprintln!(
                "skipped: no PostgreSQL server (eval \"$(scripts/pg-test-server.sh start)\" \
                 starts one and sets CXR_TRIAGE_TEST_PG)"
            );
            None
        }
    }
}

/// What the server said.
pub fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

/// A new, empty database on the server; returns its address.
pub fn new_database(server: &str, name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let db = format!(
        "t_{name}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
        .expect("connect to the test server");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .expect("create a test database");
    format!("{server}/{db}")
}

/// The address `url` with another user.
pub fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

/// A store set up by its owner (the server's superuser here) with the readers' grants of
/// `deploy/postgres/roles.sql`, and reader roles `readers` in the readers' group.
pub fn department(name: &str, readers: &[&str]) -> Option<(String, PgStore)> {
    let server = server()?;
    let url = new_database(&server, name);
    let owner = PgStore::open(&url).expect("the owner sets the store up");
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let roles = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/postgres/roles.sql"),
    )
    .expect("roles.sql");
    let (_, grants) = roles
        .split_once("\n-- after store init:")
        .expect("roles.sql has its two parts");
    let grants: String = grants
        .lines()
        .skip(1)
        .map(|l| {
            l.replace(
                "cxr_triage ",
                &format!("{} ", url.rsplit('/').next().unwrap_or("")),
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    // Roles belong to the whole server: the tests of one binary create them one at a time.
    static ROLES: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ROLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    admin
        .batch_execute(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cxr_triage_readers') THEN
                     CREATE ROLE cxr_triage_readers NOLOGIN;
                 END IF;
             END $$;",
        )
        .expect("readers' group");
    admin.batch_execute(&grants).expect("the readers' grants");
    for r in readers {
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{r}') THEN
                         CREATE ROLE {r} LOGIN IN ROLE cxr_triage_readers;
                     END IF;
                 END $$;"
            ))
            .expect("a reader's role");
    }
    Some((url, owner))
}

/// A PostgreSQL cluster of a test's own (`scripts/pg-test-server.sh` on a free loopback port),
/// for tests that stop and start the server: the shared one stays up for the other tests.
/// Stopped and removed on drop.
pub struct PrivateServer {
    /// The superuser's address, without a database.
    pub url: String,
    dir: String,
}

impl PrivateServer {
    /// Starts one where the tests have a server at all (`None`, after saying why, otherwise).
    pub fn start() -> Option<Self> {
        server()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let out = std::process::Command::new("bash")
            .arg(script())
            .arg("start")
            .env("CXR_TRIAGE_TEST_PG_PORT", port.to_string())
            .output()
            .expect("run scripts/pg-test-server.sh");
        assert!(
            out.status.success(),
            "a private test server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {key}=")))
                .expect("the script prints the server's address and folder")
                .to_owned()
        };
        Some(Self {
            url: value("CXR_TRIAGE_TEST_PG"),
            dir: value("CXR_TRIAGE_TEST_PG_DIR"),
        })
    }

    /// Stops the server, keeping its data: `"fast"` (a clean shutdown that ends every session)
    /// or `"immediate"` (as a crash: no checkpoint; the server replays its log on restart).
    pub fn pause(&self, mode: &str) {
        run_script(&["pause", &self.dir, mode]);
    }

    /// Starts the paused server again on the same port.
    pub fn resume(&self) {
        run_script(&["resume", &self.dir]);
    }
}

fn run_script(args: &[&str]) {
    let status = std::process::Command::new("bash")
        .arg(script())
        .args(args)
        .status()
        .expect("run scripts/pg-test-server.sh");
    assert!(status.success(), "pg-test-server.sh {args:?} failed");
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .args(["stop", &self.dir])
            .status();
    }
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-test-server.sh")
}
