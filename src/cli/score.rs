//! `cxr-triage score DIR`: ranks every study in a folder by pneumonia score.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::audit::{DecisionLog, ScoreRecord, StoreAddress, StudyRecord};
use crate::io;
use crate::model::scoring::{self, Scored};
use crate::worklist::Label;

/// Arguments of `score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The folder to score, recursively.
    pub dir: PathBuf,
    /// Also write the ranking to this CSV file (`path`, `sha256`, `score`, `label`, `model_id`,
    /// `not_seen`, `ood_distance`, `error`).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Print only the N highest scores.
    #[arg(long)]
    pub top: Option<usize>,
    /// The model card (weights beside it) [default: the model in force at the site of --db, else
    /// the shipped model].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Studies per inference batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Also record the studies (hash, path, DICOM ids) and their scores in this decision store
    /// (a SQLite file, created if missing, or a PostgreSQL server: postgres://…), as opening the
    /// folder in the window does, so that `import` can record labels for them; labels then
    /// follow the threshold in force in a SQLite store (the model card's on a server).
    #[arg(long, value_name = "STORE")]
    pub db: Option<PathBuf>,
}

/// Runs `score`.
pub fn run(args: &ScoreArgs) -> anyhow::Result<ExitCode> {
    // Where the CSV may go is checked before anything is read: never into the folder being
    // scored, over the store or the model.
    let mut protected = crate::output::Protected::new().folder(&args.dir);
    if let Some(db) = &args.db {
        protected = protected.store(db);
    }
    if let Some(weights) = &args.weights {
        protected = protected
            .input(&weights.with_extension("json"))
            .input(&weights.with_extension("safetensors"));
    }
    if let Some(csv_path) = &args.csv {
        protected.check(csv_path)?;
    }
    let address = args.db.as_deref().map(StoreAddress::from_path);
    let mut store = address.as_ref().map(StoreAddress::open).transpose()?;
    // The site's model and threshold in force are kept in a SQLite store only.
    let site = store.as_deref().and_then(|s| s.as_sqlite());
    let classifier = match site {
        Some(site) => super::model_for_store(args.weights.as_deref(), site)?.1,
        None => super::load_classifier(args.weights.as_deref())?,
    };
    let card = classifier.card();
    let threshold = match site {
        Some(site) => site
            .threshold_in_force(&card.weights_sha256)?
            .map_or(card.threshold, |e| e.new_threshold),
        None => card.threshold,
    };
    // The folder as the file system resolves it, so that the paths recorded in a store match
    // however the folder was named on the command line.
    let root = args.dir.canonicalize().unwrap_or_else(|_| args.dir.clone());
    let discovery = io::discover(&root)
        .map_err(|e| anyhow::anyhow!("cannot read the folder {}: {e}", args.dir.display()))?;
    let paths: Vec<PathBuf> = discovery.files.iter().map(|f| f.path.clone()).collect();
    let bar = ProgressBar::new(paths.len() as u64).with_style(ProgressStyle::with_template(
        "scoring [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
    )?);
    let mut results: Vec<Scored> = Vec::with_capacity(paths.len());
    scoring::score_paths(
        &classifier,
        &paths,
        args.batch_size,
        &AtomicBool::new(false),
        &mut |batch| {
            bar.inc(batch.len() as u64);
            results.extend(batch);
        },
    );
    bar.finish_and_clear();

    if let (Some(store), Some(address)) = (store.as_deref_mut(), &address) {
        let recorded = register(store, &paths, &results, &classifier, threshold)?;
        println!(
            "recorded {recorded} studies and their scores in the decision store {}",
            address.describe()
        );
    }
    let rel = |i: usize| discovery.files[i].rel_path.display().to_string();
    // On the terminal: one line per study, whatever the file is called.
    let shown = |i: usize| crate::output::terminal_text(&rel(i)).into_owned();
    let result = |i: usize| results.iter().find(|r| r.index == i);
    let not_seen = |i: usize| {
        result(i)
            .and_then(|r| r.not_seen.clone())
            .unwrap_or_default()
    };
    let mut ranked: Vec<(usize, f32)> = results
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok().map(|&s| (r.index, s)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let failed: Vec<(usize, &str)> = results
        .iter()
        .filter_map(|r| r.outcome.as_ref().err().map(|e| (r.index, e.as_str())))
        .collect();

    println!(
        "model {} (threshold {threshold:.4}: a score at or above it is called PNEUMONIA)",
        card.model_id
    );
    println!("{:>5}  {:>6}  {:<9}  path", "rank", "score", "AI label");
    for (rank, &(i, score)) in ranked
        .iter()
        .take(args.top.unwrap_or(usize::MAX))
        .enumerate()
    {
        let label = Label::from_score(score, threshold);
        let flag = not_seen(i);
        println!(
            "{:>5}  {score:>6.4}  {:<9}  {}{}",
            rank + 1,
            label.as_str(),
            shown(i),
            if flag.is_empty() {
                String::new()
            } else {
                format!("  (not seen: {flag})")
            }
        );
    }
    if !failed.is_empty() {
        println!("\ncould not be scored:");
        for (i, err) in &failed {
            println!("  {}: {err}", shown(*i));
        }
    }
    for (path, problem) in &discovery.problems {
        println!(
            "  {}: {problem}",
            crate::output::terminal_text(&path.display().to_string())
        );
    }
    let flagged = ranked
        .iter()
        .filter(|&&(_, s)| Label::from_score(s, threshold) == Label::Pneumonia)
        .count();
    let unlike = ranked
        .iter()
        .filter(|&&(i, _)| !not_seen(i).is_empty())
        .count();
    println!(
        "\n{} studies scored, {flagged} flagged PNEUMONIA, {unlike} unlike the films the model was \
         trained on, {} could not be scored",
        ranked.len(),
        failed.len()
    );

    if let Some(csv_path) = &args.csv {
        crate::output::write_file(csv_path, &protected, |out| {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "path",
                "sha256",
                "score",
                "label",
                "model_id",
                "not_seen",
                "ood_distance",
                "error",
            ])
            .map_err(std::io::Error::other)?;
            // Cells a spreadsheet would read as formulas, or control characters, are made safe.
            let safe = |cells: [String; 8]| cells.map(|c| crate::output::csv_cell(&c).into_owned());
            let sha = |i: usize| {
                result(i)
                    .and_then(|r| r.meta.as_ref())
                    .map_or_else(String::new, |m| m.sha256.clone())
            };
            let distance = |i: usize| {
                result(i)
                    .and_then(|r| r.ood_distance)
                    .map_or_else(String::new, |d| format!("{d:.3}"))
            };
            for &(i, score) in &ranked {
                w.write_record(safe([
                    rel(i),
                    sha(i),
                    format!("{score:.6}"),
                    Label::from_score(score, threshold).as_str().to_owned(),
                    card.model_id.clone(),
                    not_seen(i),
                    distance(i),
                    String::new(),
                ]))
                .map_err(std::io::Error::other)?;
            }
            for &(i, err) in &failed {
                w.write_record(safe([
                    rel(i),
                    sha(i),
                    String::new(),
                    String::new(),
                    card.model_id.clone(),
                    String::new(),
                    String::new(),
                    err.to_owned(),
                ]))
                .map_err(std::io::Error::other)?;
            }
            w.flush()?;
            Ok(())
        })?;
        println!("wrote {}", csv_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Records the readable studies in the store (as the window does when it opens a folder) and the
/// scores they got, in two transactions. Returns the number of studies recorded.
fn register(
    store: &mut dyn DecisionLog,
    paths: &[PathBuf],
    results: &[Scored],
    classifier: &crate::model::Classifier,
    threshold: f32,
) -> anyhow::Result<usize> {
    let card = classifier.card();
    let mut studies = Vec::new();
    let mut scores = Vec::new();
    for r in results {
        let (Some(meta), Some(path)) = (r.meta.as_ref(), paths.get(r.index)) else {
            continue;
        };
        studies.push(StudyRecord::from_meta(path, meta));
        if let Ok(score) = &r.outcome {
            scores.push(ScoreRecord {
                study_sha256: meta.sha256.clone(),
                model_id: card.model_id.clone(),
                weights_sha256: card.weights_sha256.to_ascii_lowercase(),
                score: score.clamp(0.0, 1.0),
                threshold,
            });
        }
    }
    store
        .upsert_studies(&studies)
        .context("the studies could not be recorded in the decision store")?;
    store
        .record_scores(&scores)
        .context("the scores could not be recorded in the decision store")?;
    Ok(studies.len())
}
