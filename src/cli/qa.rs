//! `cxr-triage qa --db STORE [--out DIR]`: how readers agree with the AI and with each other.

use std::path::PathBuf;
use std::process::ExitCode;

use super::audit::open_existing_store;

/// Arguments of `qa`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads the decision log (never writes to it) and reports, for quality assurance: each reader's \
agreement with the AI label shown with their calls (share and Cohen's kappa with a 95% bootstrap \
interval), overall and per month; agreement between readers on studies two or more readers \
called (the first two readers of each); the disagreement queue (studies those two called \
differently); and blind-first reading (how often the AI's call changed the reader's own). \
Writes OUT/report.json and the plots OUT/kappa.png (agreement per reader and overall) and \
OUT/kappa_by_month.png (each reader with the AI, per month) (default OUT: reports/qa).")]
pub struct QaArgs {
    /// The decision store: a SQLite file or `postgres://USER@HOST/DATABASE`.
    #[arg(long, value_name = "STORE")]
    pub db: PathBuf,
    /// Where to write report.json and the plots.
    #[arg(long, value_name = "DIR", default_value = "reports/qa")]
    pub out: PathBuf,
}

/// Runs `qa`.
pub fn run(args: &QaArgs) -> anyhow::Result<ExitCode> {
    let report = match crate::audit::StoreAddress::from_path(&args.db) {
        crate::audit::StoreAddress::File(path) => open_existing_store(Some(&path))?.qa_report()?,
        server => server.open_existing()?.qa_report()?,
    };
    print!("{}", report.text());
    let protected = crate::output::Protected::new().store(&args.db);
    let json = args.out.join("report.json");
    protected.check(&json)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    crate::output::write_bytes(
        &json,
        &protected,
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )?;
    println!("wrote {}", json.display());
    crate::audit::write_qa_plots(&report, &args.out)?;
    println!(
        "wrote {} and {}",
        args.out.join("kappa.png").display(),
        args.out.join("kappa_by_month.png").display()
    );
    Ok(ExitCode::SUCCESS)
}
