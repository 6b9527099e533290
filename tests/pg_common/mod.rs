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
