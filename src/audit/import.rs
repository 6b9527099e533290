//! Importing labels corrected outside the app: [`import_csv`].

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::event::{Action, NewDecision};
use super::{AuditError, DecisionLog};
use crate::worklist::Label;

/// A row that was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedRow {
    /// The row's line in the CSV file (the header is line 1).
    pub line: u64,
    /// The id of the relabel event it became.
    pub event_id: i64,
}

/// A row that was not recorded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    /// The row's line in the CSV file (the header is line 1).
    pub line: u64,
    /// Why it was not recorded.
    pub problem: RowProblem,
}

/// Why a row was not recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowProblem {
    /// The row names neither a path nor a SHA-256.
    NoStudy,
    /// The `sha256` cell is not 64 hexadecimal digits.
    BadSha256,
    /// The file named in `path` could not be read.
    UnreadableFile(String),
    /// The row's path and SHA-256 name different studies.
    PathAndSha256Disagree,
    /// The store has never seen the study.
    UnknownStudy,
    /// The `label` cell is not a label.
    InvalidLabel(String),
    /// The row could not be parsed as CSV.
    BadCsv(String),
    /// The store refused the decision.
    Refused(String),
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStudy => f.write_str("the row has neither a path nor a sha256"),
            Self::BadSha256 => f.write_str("the sha256 is not 64 hexadecimal digits"),
            Self::UnreadableFile(why) => write!(f, "the file cannot be read ({why})"),
            Self::PathAndSha256Disagree => {
                f.write_str("the file at the path does not have the row's sha256")
            }
            Self::UnknownStudy => f.write_str(
                "unknown study: the decision store has never seen it (open its folder in cxr-triage, or run cxr-triage score DIR --db STORE, first)",
            ),
            Self::InvalidLabel(label) => {
                write!(f, "\"{label}\" is not a label: use NORMAL or PNEUMONIA")
            }
            Self::BadCsv(why) => write!(f, "not readable as CSV: {why}"),
            Self::Refused(why) => f.write_str(why),
        }
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// The rows recorded, in file order.
    pub recorded: Vec<ImportedRow>,
    /// The rows not recorded, in file order.
    pub rejected: Vec<RejectedRow>,
    /// A store failure (disk full, store locked…) that stopped the import: then no row was
    /// recorded.
    pub stopped_by: Option<AuditError>,
}

/// The largest CSV file `import` reads (a label file of a million rows is about 100 MiB).
pub const MAX_IMPORT_BYTES: u64 = 256 << 20;

/// Refuses a CSV whose quotes do not pair up: a quote opened and never closed would swallow the
/// rows after it into one cell (RFC 4180 doubles a quote inside a quoted cell, so well-formed
/// files always close what they open). Says on which line the unclosed quote opens.
fn check_quotes(data: &[u8]) -> Result<(), AuditError> {
    let mut line = 1u64;
    let mut open_at = None;
    for &b in data {
        match b {
            b'"' => open_at = if open_at.is_some() { None } else { Some(line) },
            b'\n' => line += 1,
            _ => {}
        }
    }
    match open_at {
        None => Ok(()),
        Some(at) => Err(AuditError::Csv(format!(
            "line {at}: a quote opened here is never closed, so the rows after it would be read \
             as part of one cell; nothing was recorded"
        ))),
    }
}

/// SHA-256 of a study file named in a row, read as every study file is read
/// ([`crate::io::read_study_file`]: a regular file, under the size limit).
fn hash_study_file(path: &Path) -> Result<String, RowProblem> {
    crate::io::read_study_file(path)
        .map(|bytes| crate::io::sha256_hex(&bytes))
        .map_err(|e| RowProblem::UnreadableFile(e.to_string()))
}

/// The text recorded as the reason when a row gives none.
pub const DEFAULT_IMPORT_REASON: &str = "imported from CSV without a reason";

/// Records the corrected labels of a CSV file as audited [`Action::Relabel`] events by `reader`.
///
/// The CSV has a header row naming its columns, in any order and any case: `path` or `sha256`
/// (or both), `label` (`NORMAL`/`PNEUMONIA` in any case, or `0`/`1`), and optionally `reason`.
/// A relative `path` is taken relative to `base_dir` (the CSV file's folder). Files are only
/// read, to hash them. Each bad row (unknown study, invalid label, unreadable file) is reported
/// with its line number and not recorded. Once every row is checked, the good rows are recorded
/// together in one transaction ([`DecisionLog::record_all`]): all of them, or none if the
/// store fails. On a PostgreSQL store the events are recorded as the authenticated database
/// user, whatever `reader` says.
///
/// Fails before recording anything when the reader name is empty or the header lacks the needed
/// columns.
pub fn import_csv(
    store: &mut dyn DecisionLog,
    csv_data: impl Read,
    base_dir: &Path,
    reader: &str,
) -> Result<ImportReport, AuditError> {
    if reader.trim().is_empty() {
        return Err(AuditError::InvalidDecision(
            "the reader's name is empty".to_owned(),
        ));
    }
    // The whole file is read first (up to [`MAX_IMPORT_BYTES`]) so that line numbers count every
    // line, blank ones included: the csv crate's line count skips blank lines, and its byte
    // position of a record that follows blank lines points at them, so the count starts after
    // any line breaks there.
    let mut data = Vec::new();
    csv_data
        .take(MAX_IMPORT_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| AuditError::Csv(format!("the file cannot be read: {e}")))?;
    if data.len() as u64 > MAX_IMPORT_BYTES {
        return Err(AuditError::Csv(format!(
            "the file is larger than {} MiB: split it",
            MAX_IMPORT_BYTES >> 20
        )));
    }
    check_quotes(&data)?;
    // Lines are counted from where the previous row ended (rows come in file order), so that the
    // import stays linear in the file's size.
    let counted = std::cell::Cell::new((0usize, 1u64));
    let line_of = |pos: Option<&csv::Position>, fallback: u64| {
        let Some(byte) = pos.and_then(|p| usize::try_from(p.byte()).ok()) else {
            return fallback;
        };
        let byte = byte
            + data
                .get(byte..)
                .unwrap_or_default()
                .iter()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
        let (from, line) = counted.get();
        let (from, line) = if byte >= from { (from, line) } else { (0, 1) };
        let Some(between) = data.get(from..byte) else {
            return fallback;
        };
        let line = line + between.iter().filter(|&&b| b == b'\n').count() as u64;
        counted.set((byte, line));
        line
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(data.as_slice());
    let headers = rdr.headers()?.clone();
    for (i, h) in headers.iter().enumerate() {
        if !h.is_empty()
            && headers
                .iter()
                .skip(i + 1)
                .any(|other| other.eq_ignore_ascii_case(h))
        {
            return Err(AuditError::Csv(format!(
                "line 1: the column \"{h}\" appears twice in the header; nothing was recorded"
            )));
        }
    }
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (path_col, sha_col) = (column("path"), column("sha256"));
    let label_col = column("label");
    let reason_col = column("reason");
    if path_col.is_none() && sha_col.is_none() {
        return Err(AuditError::Csv(
            "the CSV has neither a \"path\" nor a \"sha256\" column".to_owned(),
        ));
    }
    let Some(label_col) = label_col else {
        return Err(AuditError::Csv(
            "the CSV has no \"label\" column".to_owned(),
        ));
    };

    let mut report = ImportReport::default();
    let mut pending = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line_before = rdr.position().line();
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = line_of(e.position(), line_before);
                report.rejected.push(RejectedRow {
                    line,
                    problem: RowProblem::BadCsv(e.to_string()),
                });
                if e.is_io_error() {
                    break;
                }
                continue;
            }
        }
        let line = line_of(record.position(), line_before);
        let cell = |col: Option<usize>| col.and_then(|i| record.get(i)).unwrap_or_default();
        if record.iter().all(str::is_empty) {
            continue; // A blank line, as spreadsheets leave at the end.
        }
        let row = Row {
            path: cell(path_col),
            sha256: cell(sha_col),
            label: cell(Some(label_col)),
            reason: cell(reason_col),
        };
        match check_row(store, &row, base_dir) {
            Err(problem) => report.rejected.push(RejectedRow { line, problem }),
            Ok((sha256, path, label)) => {
                let reason = if row.reason.is_empty() {
                    DEFAULT_IMPORT_REASON.to_owned()
                } else {
                    row.reason.to_owned()
                };
                let decision = NewDecision {
                    reader: reader.trim().to_owned(),
                    study_sha256: sha256,
                    study_path: path,
                    model_id: None,
                    weights_sha256: None,
                    score: None,
                    threshold: None,
                    ai_label: None,
                    new_label: Some(label),
                    action: Action::Relabel,
                    reason,
                    viewed_ms: None,
                    ood_reason: None,
                };
                pending.push((line, decision));
            }
        }
    }
    let (lines, decisions): (Vec<u64>, Vec<NewDecision>) = pending.into_iter().unzip();
    match store.record_all(&decisions) {
        Ok(events) => {
            report.recorded = lines
                .into_iter()
                .zip(events)
                .map(|(line, event)| ImportedRow {
                    line,
                    event_id: event.id,
                })
                .collect();
        }
        Err(e) => report.stopped_by = Some(e),
    }
    Ok(report)
}

/// The cells of one row that the import reads.
struct Row<'a> {
    path: &'a str,
    sha256: &'a str,
    label: &'a str,
    reason: &'a str,
}

/// Resolves a row to a known study's hash, its path and the label, or says what is wrong.
fn check_row(
    store: &mut dyn DecisionLog,
    row: &Row<'_>,
    base_dir: &Path,
) -> Result<(String, PathBuf, Label), RowProblem> {
    let label: Label = row
        .label
        .parse()
        .map_err(|_| RowProblem::InvalidLabel(row.label.to_owned()))?;
    let given_sha = if row.sha256.is_empty() {
        None
    } else {
        let sha = row.sha256.to_ascii_lowercase();
        if !super::chain::is_sha256_hex(&sha) {
            return Err(RowProblem::BadSha256);
        }
        Some(sha)
    };
    let from_path = if row.path.is_empty() {
        None
    } else {
        let path = base_dir.join(row.path);
        Some((hash_study_file(&path)?, path.canonicalize().unwrap_or(path)))
    };
    let (sha256, path) = match (given_sha, from_path) {
        (None, None) => return Err(RowProblem::NoStudy),
        (Some(given), Some((hashed, _))) if given != hashed => {
            return Err(RowProblem::PathAndSha256Disagree);
        }
        (_, Some((hashed, path))) => (hashed, path),
        (Some(given), None) => {
            let study = store
                .study(&given)
                .map_err(|e| RowProblem::Refused(e.to_string()))?
                .ok_or(RowProblem::UnknownStudy)?;
            (given, study.path)
        }
    };
    match store.study(&sha256) {
        Ok(Some(_)) => Ok((sha256, path, label)),
        Ok(None) => Err(RowProblem::UnknownStudy),
        Err(e) => Err(RowProblem::Refused(e.to_string())),
    }
}
