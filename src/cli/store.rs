//! `cxr-triage store init --db ADDRESS` and `cxr-triage store copy --from A --to B`: setting up
//! a department's store on a PostgreSQL server and moving a decision log between stores.

use std::process::ExitCode;

use crate::audit::{
    DecisionLog, PG_SCHEMA_VERSION, PgStore, copy_store, is_postgres_address, open_store,
};

/// Arguments of `store`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The `store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Set up (or bring up to date) the decision store on a PostgreSQL server. Run it once as
    /// the store's owner; readers' roles then get their grants (deploy/postgres/roles.sql).
    Init(InitArgs),
    /// Copy a decision log, verbatim, from one store to another (SQLite file or PostgreSQL
    /// server, either way). The source must verify and the destination hold no events; the
    /// destination's hash chain is verified on arrival and must end in the source's head hash.
    Copy(CopyArgs),
}

/// Arguments of `store init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The server, as `postgres://USER@HOST/DATABASE`.
    #[arg(long, value_name = "ADDRESS")]
    pub db: String,
}

/// Arguments of `store copy`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The store to copy from: a SQLite file or postgres://….
    #[arg(long, value_name = "STORE")]
    pub from: String,
    /// The store to copy to (created if it is a new SQLite file): a SQLite file or postgres://….
    #[arg(long, value_name = "STORE")]
    pub to: String,
}

/// Runs `store`.
pub fn run(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        StoreCommand::Init(a) => init(a),
        StoreCommand::Copy(a) => copy(a),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    if !is_postgres_address(&args.db) {
        anyhow::bail!(
            "store init sets up a PostgreSQL store (postgres://…); a SQLite store is set up when it is first opened"
        );
    }
    let mut store = PgStore::open(&args.db)?;
    let report = store.verify()?;
    println!(
        "OK: the decision store is set up (schema {PG_SCHEMA_VERSION}), owned by {}, {} events",
        store.user(),
        report.total_events
    );
    Ok(ExitCode::SUCCESS)
}

fn copy(args: &CopyArgs) -> anyhow::Result<ExitCode> {
    let path = std::path::Path::new(&args.from);
    if !is_postgres_address(&args.from) && !path.exists() {
        anyhow::bail!("there is no decision store at {}", path.display());
    }
    let mut from: Box<dyn DecisionLog> = open_store(&args.from)?;
    let mut to = open_store(&args.to)?;
    let report = copy_store(from.as_mut(), to.as_mut())?;
    println!(
        "OK: {} studies and {} decision events copied from {} to {}; the chain verifies on arrival; last event's hash {}",
        report.studies,
        report.events,
        from.backend(),
        to.backend(),
        report.head_hash.as_deref().unwrap_or("(no events)")
    );
    for what in &report.not_copied {
        println!("Not copied: {what}");
    }
    Ok(ExitCode::SUCCESS)
}
