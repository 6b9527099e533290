//! `cxr-triage audit verify [--db PATH]`, and opening the decision store for the other commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::audit::{Anchor, DecisionStore};

/// Exit status of `audit verify` when it finds tampering, and of `import` when it rejects rows.
pub(crate) const EXIT_FINDINGS: u8 = 2;

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// What to do with the audit trail.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the decision store's hash chain and report the first broken link.
    ///
    /// Prints OK, the number of events and the hash of the last event (write it down: a later
    /// check that prints the same hash for the same events proves nothing was rewritten), then
    /// checks the log against the anchor beside the store and every anchor file and receipt
    /// given, which catch events deleted or rolled back from the end. Never writes to the store.
    /// Exit status: 0 when the trail is intact, 2 when it finds tampering (an edited, deleted,
    /// reordered or inserted event, a log shorter than an anchor or receipt records, or a
    /// removed append-only guard), 1 when the store cannot be read (missing, empty).
    Verify(VerifyArgs),
}

/// Arguments of `audit verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The decision store (default: decisions.sqlite3 in the user's data folder).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// An anchor file kept elsewhere (a copy of STORE.anchor); may be repeated.
    #[arg(long, value_name = "FILE")]
    pub anchor: Vec<PathBuf>,
    /// A receipt printed by an export (`cxr-triage-receipt:v1:N:HASH`); may be repeated.
    #[arg(long, value_name = "RECEIPT")]
    pub receipt: Vec<String>,
}

/// Runs `audit`.
pub fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        AuditCommand::Verify(v) => verify(v),
    }
}

fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(address) = args
        .db
        .as_deref()
        .and_then(std::path::Path::to_str)
        .filter(|a| crate::audit::is_postgres_address(a))
    {
        return verify_server(address, args);
    }
    let path = match &args.db {
        Some(p) => p.clone(),
        None => DecisionStore::default_path()?,
    };
    let store = DecisionStore::open_for_check(&path)?;
    let report = store.verify()?;
    let thresholds = store.verify_thresholds()?;
    print_decision_log(&report);
    print_log("threshold log", "threshold change", &thresholds);
    let studies = store.verify_studies()?;
    print_log("study log", "study record", &studies.log);
    if !studies.mismatched.is_empty() {
        println!(
            "TAMPERED: {} studies in the studies table are not what the study log recorded (path, \
             patient id, study UID or details edited, or a row added or removed), first {}",
            studies.mismatched.len(),
            studies.mismatched[0]
        );
    }
    let anchors_hold = check_anchors(&store, args)?;
    Ok(
        if report.is_intact() && thresholds.is_intact() && studies.is_intact() && anchors_hold {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FINDINGS)
        },
    )
}

/// `audit verify` of a store on a PostgreSQL server: the decision log's chain and guards.
fn verify_server(address: &str, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut store = crate::audit::PgStore::open(address)?;
    let report = store.verify()?;
    print_decision_log(&report);
    let mut anchors_hold = true;
    for receipt in &args.receipt {
        let anchor = Anchor::from_receipt(receipt)
            .ok_or_else(|| anyhow::anyhow!("not a cxr-triage receipt: {receipt}"))?;
        let Ok(id) = i64::try_from(anchor.events) else {
            anyhow::bail!("not a cxr-triage receipt: {receipt}");
        };
        // The log holds event N with that hash (an empty log's receipt always holds).
        let holds = id == 0
            || store
                .events_after(id - 1)?
                .first()
                .is_some_and(|e| e.id == id && e.row_hash == anchor.head_hash);
        if holds {
            println!("OK: the log holds what the receipt {receipt} records");
        } else {
            println!(
                "TAMPERED: the log does not hold the {} events the receipt {receipt} records",
                anchor.events
            );
            anchors_hold = false;
        }
    }
    if !args.anchor.is_empty() {
        println!("Anchor files are kept beside SQLite stores only; use receipts for a server.");
    }
    Ok(if report.is_intact() && anchors_hold {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}

/// Prints what the check of the decision log found.
fn print_decision_log(report: &crate::audit::VerifyReport) {
    if report.is_intact() {
        match &report.head_hash {
            Some(head) => println!(
                "OK: {} events, the hash chain is intact; last event's hash {head}",
                report.total_events
            ),
            None => println!("OK: 0 events"),
        }
    }
    if let Some(broken) = &report.first_broken {
        println!(
            "TAMPERED: the hash chain is broken at {broken} ({} of {} events check out before it)",
            report.events_checked, report.total_events
        );
    }
    if !report.append_only_guard_intact {
        println!(
            "TAMPERED: the triggers that keep the decision log append-only were removed or changed"
        );
    }
}

/// Prints what the check of a chained log besides the decision log found (`what`: "threshold
/// log"; `event`: "threshold change").
fn print_log(what: &str, event: &str, report: &crate::audit::ThresholdLogReport) {
    if let Some(head) = report.head_hash.as_ref().filter(|_| report.is_intact()) {
        println!(
            "OK: {} {event}s, the {what}'s hash chain is intact; last hash {head}",
            report.total_events
        );
    }
    if let Some(broken) = &report.first_broken {
        println!(
            "TAMPERED: the {what}'s hash chain is broken at {event} {}: {}",
            broken.id, broken.problem
        );
    }
    if !report.append_only_guard_intact {
        println!("TAMPERED: the triggers that keep the {what} append-only were removed or changed");
    }
}

/// Checks the log against the anchor beside the store and the anchors and receipts given;
/// prints a line for each; `false` when any finds the log shorter or rewritten.
fn check_anchors(store: &DecisionStore, args: &VerifyArgs) -> anyhow::Result<bool> {
    let beside = crate::audit::anchor_path(store.path());
    let mut anchors: Vec<(String, Anchor)> = Vec::new();
    if beside.is_file() {
        anchors.push((
            format!("the anchor beside the store ({})", beside.display()),
            Anchor::read(&beside)?,
        ));
    } else if args.anchor.is_empty() && args.receipt.is_empty() {
        println!(
            "NOTE: no anchor beside the store ({}): events deleted from the end cannot be ruled \
             out; give a receipt printed by an export (--receipt) to check that",
            beside.display()
        );
    }
    for file in &args.anchor {
        anchors.push((
            format!("the anchor {}", file.display()),
            Anchor::read(file)?,
        ));
    }
    for receipt in &args.receipt {
        let anchor = Anchor::from_receipt(receipt)
            .ok_or_else(|| anyhow::anyhow!("not a cxr-triage receipt: {receipt}"))?;
        anchors.push((format!("the receipt {receipt}"), anchor));
    }
    let mut hold = true;
    for (what, anchor) in &anchors {
        match store.check_anchor(anchor)? {
            None => println!("OK: {what}: the log holds its {} events", anchor.events),
            Some(problem) => {
                hold = false;
                println!("TAMPERED: {what}: {problem}");
            }
        }
    }
    Ok(hold)
}

/// The decision store at `db` (a SQLite file or a `postgres://` server; default: the user's
/// SQLite file), which must exist.
pub(crate) fn open_existing_log(
    db: Option<&Path>,
) -> anyhow::Result<Box<dyn crate::audit::DecisionLog>> {
    let address = match db {
        Some(p) => crate::audit::StoreAddress::from_path(p),
        None => crate::audit::StoreAddress::File(DecisionStore::default_path()?),
    };
    Ok(address.open_existing()?)
}

/// The SQLite decision store at `db` (default: the user's), which must exist.
pub(crate) fn open_existing_store(db: Option<&Path>) -> anyhow::Result<DecisionStore> {
    let path = match db {
        Some(p) => p.to_owned(),
        None => DecisionStore::default_path()?,
    };
    Ok(DecisionStore::open_existing(&path)?)
}
