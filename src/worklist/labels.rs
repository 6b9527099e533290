//! Labels a dataset already carries: a parent folder named `NORMAL` or `PNEUMONIA`, or a CSV
//! file of `path,label` rows (`--labels FILE.csv`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::Label;

/// Where a dataset label came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LabelSource {
    /// A parent folder is named `NORMAL` or `PNEUMONIA`.
    FolderName,
    /// A row of the `--labels` CSV file.
    CsvFile,
}

impl LabelSource {
    /// The source in words, as the window and the audit reason say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FolderName => "folder name",
            Self::CsvFile => "label file",
        }
    }
}

/// A label that a study carries before any reader looks at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatasetLabel {
    /// The label.
    pub label: Label,
    /// Where it came from.
    pub source: LabelSource,
}

/// The label given by the nearest parent folder named `NORMAL` or `PNEUMONIA` (in any case) of
/// `rel_path`, a study's path relative to the opened folder. The file's own name does not count.
pub fn label_from_folder_names(rel_path: &Path) -> Option<Label> {
    let parent = rel_path.parent()?;
    parent.components().rev().find_map(|c| match c {
        Component::Normal(name) => Label::from_folder_name(name.to_str()?),
        _ => None,
    })
}

/// A label file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The file could not be read.
    #[error("the label file cannot be read: {source}: {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The header row lacks a `path` or a `label` column.
    #[error("the label file needs a header row with the columns path and label")]
    MissingColumns,
    /// A row is not valid CSV.
    #[error("the label file is not valid CSV at line {line}: {message}")]
    Csv {
        /// The 1-based line number.
        line: u64,
        /// What the CSV reader reported.
        message: String,
    },
    /// A row's label is neither NORMAL nor PNEUMONIA.
    #[error("line {line} of the label file: \"{value}\" is not a label (use NORMAL or PNEUMONIA)")]
    BadLabel {
        /// The 1-based line number.
        line: u64,
        /// The value found.
        value: String,
    },
}

/// The labels of a `path,label` CSV file (RFC 4180, with a header row). A `final_label` column
/// (as in `cxr-triage export`) serves when there is no `label` column, so that reviewed cases
/// feed label correction and training; rows without a label are skipped.
///
/// A relative path is taken relative to the CSV file's folder or, failing that, to the opened
/// folder. Paths are compared after removing `.` and `..` components, without following symbolic
/// links. Labels are `NORMAL`/`PNEUMONIA` in any case, or `0`/`1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelFile {
    /// By path as written, made absolute against the CSV's folder when relative.
    by_path: HashMap<PathBuf, Label>,
    /// Relative paths as written (normalised), to try against the opened folder.
    by_relative_path: HashMap<PathBuf, Label>,
}

impl LabelFile {
    /// Reads the label file at `path`.
    pub fn read(path: &Path) -> Result<Self, LabelsError> {
        let bytes = std::fs::read(path).map_err(|source| LabelsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
        Self::parse(bytes.as_slice(), &base)
    }

    /// Reads a label file from `reader`; relative paths are relative to `base_dir`.
    pub fn parse(reader: impl std::io::Read, base_dir: &Path) -> Result<Self, LabelsError> {
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(reader);
        let csv_error = |e: &csv::Error| LabelsError::Csv {
            line: e.position().map_or(0, csv::Position::line),
            message: e.to_string(),
        };
        let headers = csv.headers().map_err(|e| csv_error(&e))?.clone();
        let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let (Some(path_col), Some(label_col)) = (
            column("path"),
            column("label").or_else(|| column("final_label")),
        ) else {
            return Err(LabelsError::MissingColumns);
        };
        let mut out = Self::default();
        for record in csv.records() {
            let record = record.map_err(|e| csv_error(&e))?;
            let line = record.position().map_or(0, csv::Position::line);
            let path = record.get(path_col).unwrap_or_default();
            let value = record.get(label_col).unwrap_or_default();
            if value.is_empty() {
                continue;
            }
            let label: Label = value.parse().map_err(|_| LabelsError::BadLabel {
                line,
                value: value.to_owned(),
            })?;
            let written = normalise(Path::new(path));
            if written.is_relative() {
                out.by_relative_path.insert(written.clone(), label);
            }
            out.by_path
                .insert(normalise(&base_dir.join(&written)), label);
        }
        Ok(out)
    }

    /// The number of labelled paths.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether the file labels nothing.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Every labelled path, made absolute against the CSV file's folder, sorted.
    pub fn entries(&self) -> Vec<(&Path, Label)> {
        let mut v: Vec<(&Path, Label)> = self
            .by_path
            .iter()
            .map(|(p, &l)| (p.as_path(), l))
            .collect();
        v.sort();
        v
    }

    /// The label of the study at `path` (absolute), whose path relative to the opened folder is
    /// `rel_path`.
    pub fn label_for(&self, path: &Path, rel_path: &Path) -> Option<Label> {
        self.by_path
            .get(&normalise(path))
            .or_else(|| self.by_relative_path.get(&normalise(rel_path)))
            .copied()
    }
}

/// Removes `.` components and resolves `..` against the preceding component, lexically.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_parent_folder_gives_the_label() {
        let l = |p: &str| label_from_folder_names(Path::new(p));
        assert_eq!(l("test/NORMAL/IM-0001.jpeg"), Some(Label::Normal));
        assert_eq!(l("Pneumonia/x/y.dcm"), Some(Label::Pneumonia));
        assert_eq!(l("normal/pneumonia/a.png"), Some(Label::Pneumonia));
        assert_eq!(l("ward4/a.png"), None);
        // The file's own name is not a folder.
        assert_eq!(l("NORMAL"), None);
        assert_eq!(l("x/normal.png"), None);
    }

    #[test]
    fn label_file_matches_paths_relative_to_itself_or_to_the_folder() {
        let csv = "path,label,reason\n\
                   a/one.png,normal,\n\
                   ./b/../two.png, PNEUMONIA ,typo\n\
                   /abs/three.dcm,1,\n\
                   \n";
        let f = LabelFile::parse(csv.as_bytes(), Path::new("/data/labels")).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(
            f.label_for(Path::new("/data/labels/a/one.png"), Path::new("zzz")),
            Some(Label::Normal)
        );
        assert_eq!(
            f.label_for(Path::new("/data/labels/two.png"), Path::new("zzz")),
            Some(Label::Pneumonia)
        );
        assert_eq!(
            f.label_for(Path::new("/abs/three.dcm"), Path::new("three.dcm")),
            Some(Label::Pneumonia)
        );
        // Relative to the opened folder when the CSV lives elsewhere.
        assert_eq!(
            f.label_for(Path::new("/scans/a/one.png"), Path::new("a/one.png")),
            Some(Label::Normal)
        );
        assert_eq!(
            f.label_for(Path::new("/scans/other.png"), Path::new("other.png")),
            None
        );
    }

    #[test]
    fn an_export_of_reviewed_cases_is_a_label_file() {
        // The columns of `cxr-triage export --all`: unreviewed rows have no final label.
        let csv = "path,sha256,patient_id,study_uid,score,ai_label,final_label,agreed\n\
                   /w/a.png,aa,,,0.9,PNEUMONIA,NORMAL,no\n\
                   /w/b.png,bb,,,0.2,NORMAL,,\n";
        let f = LabelFile::parse(csv.as_bytes(), Path::new("/")).unwrap();
        assert_eq!(f.entries(), vec![(Path::new("/w/a.png"), Label::Normal)]);
    }

    #[test]
    fn bad_label_files_are_refused_with_the_line() {
        let err = LabelFile::parse(
            "path,label\na.png,normal\nb.png,maybe\n".as_bytes(),
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3 of the label file: \"maybe\" is not a label (use NORMAL or PNEUMONIA)"
        );
        let err = LabelFile::parse("file,diagnosis\na.png,normal\n".as_bytes(), Path::new("/"))
            .unwrap_err();
        assert!(matches!(err, LabelsError::MissingColumns), "{err}");
    }

    #[test]
    fn label_file_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        std::fs::write(&csv, "PATH,Label\nx/y.png,0\n").unwrap();
        let f = LabelFile::read(&csv).unwrap();
        assert_eq!(
            f.label_for(&dir.path().join("x/y.png"), Path::new("y.png")),
            Some(Label::Normal)
        );
        assert!(matches!(
            LabelFile::read(&dir.path().join("missing.csv")),
            Err(LabelsError::Read { .. })
        ));
    }
}
