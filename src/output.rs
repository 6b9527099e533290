//! Where a command may write a file, and how.
//!
//! Every file cxr-triage writes (CSV exports, `score --csv`, `explain --out`, reports) goes
//! through [`write_file`]: the destination is refused, with nothing touched, when it is
//!
//! - the decision store or one of its companion files (`-wal`, `-shm`, `-journal`);
//! - an input of the command (a study being explained, a labels file);
//! - anywhere under a folder being read (study folders are never written to);
//! - a symbolic link (writing through it would replace whatever it points to), or something
//!   that is not a regular file (a folder, a device, a named pipe).
//!
//! Paths are compared as the file system resolves them (`..`, symbolic links in the folders
//! above, relative paths). The bytes go to a temporary file beside the destination, are synced,
//! and the temporary file is renamed over it: a failed write leaves the old file as it was and no
//! temporary file behind.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why a file was not written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The destination is the decision store or one of its files.
    #[error("refusing to write {0}: it is the decision store (or one of its files)")]
    Store(PathBuf),
    /// The destination is one of the command's inputs.
    #[error("refusing to write {0}: it is an input of this command")]
    Input(PathBuf),
    /// The destination lies under a folder being read.
    #[error(
        "refusing to write {dest}: it is inside {folder}, a folder of studies (study folders are never written to)"
    )]
    InsideInput {
        /// The destination.
        dest: PathBuf,
        /// The folder.
        folder: PathBuf,
    },
    /// The destination is a symbolic link.
    #[error(
        "refusing to write {0}: it is a symbolic link (writing would replace what it points to)"
    )]
    Symlink(PathBuf),
    /// The destination exists and is not a regular file.
    #[error("refusing to write {0}: it is not a regular file")]
    NotAFile(PathBuf),
    /// The destination has no file name.
    #[error("{0} names no file")]
    NoFileName(PathBuf),
    /// Writing failed; the destination is as it was.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The destination.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What a command must not write over.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    stores: Vec<PathBuf>,
    inputs: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

impl Protected {
    /// Nothing protected yet (symbolic links and non-files are always refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Protects the decision store at `db` and its `-wal`, `-shm` and `-journal` files.
    #[must_use]
    pub fn store(mut self, db: &Path) -> Self {
        self.stores.push(resolved(db));
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            self.stores.push(resolved(Path::new(&name)));
        }
        self
    }

    /// Protects an input file.
    #[must_use]
    pub fn input(mut self, file: &Path) -> Self {
        self.inputs.push(resolved(file));
        self
    }

    /// Protects everything under a folder being read.
    #[must_use]
    pub fn folder(mut self, folder: &Path) -> Self {
        self.folders.push(resolved(folder));
        self
    }

    /// Whether `dest` may be written.
    pub fn check(&self, dest: &Path) -> Result<(), OutputError> {
        if dest.file_name().is_none() {
            return Err(OutputError::NoFileName(dest.to_owned()));
        }
        if let Ok(meta) = fs::symlink_metadata(dest) {
            if meta.file_type().is_symlink() {
                return Err(OutputError::Symlink(dest.to_owned()));
            }
            if !meta.is_file() {
                return Err(OutputError::NotAFile(dest.to_owned()));
            }
        }
        let target = resolved(dest);
        if self.stores.contains(&target) {
            return Err(OutputError::Store(dest.to_owned()));
        }
        if self.inputs.contains(&target) {
            return Err(OutputError::Input(dest.to_owned()));
        }
        if let Some(folder) = self.folders.iter().find(|f| target.starts_with(f)) {
            return Err(OutputError::InsideInput {
                dest: dest.to_owned(),
                folder: folder.clone(),
            });
        }
        Ok(())
    }
}

/// The path as the file system resolves it: the file itself if it exists, else its folder
/// resolved and its name added; lexically absolute when even the folder does not exist.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => match parent.canonicalize() {
            Ok(p) => p.join(name),
            Err(_) => absolute.clone(),
        },
        _ => absolute,
    }
}

/// Writes `dest` whole after [`Protected::check`]: `write` fills a temporary file beside it,
/// which is synced and renamed over `dest`. On any error `dest` is as it was and the temporary
/// file is gone.
pub fn write_file<T>(
    dest: &Path,
    protected: &Protected,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
) -> Result<T, OutputError> {
    protected.check(dest)?;
    let io_error = |source| OutputError::Io {
        path: dest.to_owned(),
        source,
    };
    let name = dest
        .file_name()
        .ok_or_else(|| OutputError::NoFileName(dest.to_owned()))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.partial", std::process::id()));
    let tmp = dest.with_file_name(tmp_name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_error)?;
    let result = (|| {
        let mut out = BufWriter::new(file);
        let value = write(&mut out)?;
        out.flush()?;
        let file = out
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        // Checked again just before the rename: the destination may have become a link.
        if fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(std::io::Error::other(
                "the destination became a symbolic link",
            ));
        }
        fs::rename(&tmp, dest)?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_error)
}

/// Writes `bytes` to `dest` as [`write_file`] does.
pub fn write_bytes(dest: &Path, protected: &Protected, bytes: &[u8]) -> Result<(), OutputError> {
    write_file(dest, protected, |w| w.write_all(bytes))
}

/// A text cell as cxr-triage writes it into a CSV file that spreadsheets will open:
///
/// - a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return would be read as a
///   formula (OWASP "CSV injection"); it gets a leading `'`, which spreadsheets show as text;
/// - control characters other than line feed and tab (ESC, NUL, DEL, the C1 range) are written
///   as `\xNN` (`\u{NNNN}` above `\xFF`), so that a CSV viewed in a terminal cannot move the
///   cursor or change colours. Line feeds stay: the CSV quotes the cell (RFC 4180).
pub fn csv_cell(text: &str) -> std::borrow::Cow<'_, str> {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let controls = text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t');
    if !formula && !controls {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    if formula {
        out.push('\'');
    }
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&escaped(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Text for one line of a terminal: every control character (line feeds and tabs too) is written
/// as `\xNN`, so that a file name cannot break a one-line-per-study listing or send escape
/// sequences to the terminal.
pub fn terminal_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    escaped(c)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// `\xNN` for a character up to U+00FF, `\u{NNNN}` above.
fn escaped(c: char) -> String {
    let n = u32::from(c);
    if n <= 0xFF {
        format!("\\x{n:02X}")
    } else {
        format!("\\u{{{n:04X}}}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_store_its_files_inputs_and_study_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let studies = root.join("studies");
        fs::create_dir_all(studies.join("sub")).unwrap();
        fs::write(studies.join("sub/a.png"), b"study").unwrap();
        let db = root.join("store.sqlite3");
        fs::write(&db, b"store").unwrap();
        let input = root.join("labels.csv");
        fs::write(&input, b"labels").unwrap();
        let p = Protected::new().store(&db).input(&input).folder(&studies);
        let refused = |dest: &Path| write_bytes(dest, &p, b"x").unwrap_err();
        assert!(matches!(refused(&db), OutputError::Store(_)));
        assert!(matches!(
            refused(&root.join("store.sqlite3-wal")),
            OutputError::Store(_)
        ));
        assert!(matches!(refused(&input), OutputError::Input(_)));
        assert!(matches!(
            refused(&studies.join("sub/a.png")),
            OutputError::InsideInput { .. }
        ));
        assert!(matches!(
            refused(&studies.join("new.csv")),
            OutputError::InsideInput { .. }
        ));
        // The same places reached another way: `..` and a relative spelling.
        assert!(matches!(
            refused(&studies.join("sub/../../store.sqlite3")),
            OutputError::Store(_)
        ));
        assert!(matches!(refused(&studies), OutputError::NotAFile(_)));
        assert_eq!(fs::read(&db).unwrap(), b"store");
        assert_eq!(fs::read(studies.join("sub/a.png")).unwrap(), b"study");
        // Beside them, writing works and replaces the file whole.
        let out = root.join("out.csv");
        write_bytes(&out, &p, b"first").unwrap();
        write_bytes(&out, &p, b"second").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"second");
        let left: Vec<_> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious.txt");
        fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("out.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_bytes(&link, &Protected::new(), b"x").unwrap_err();
        assert!(matches!(err, OutputError::Symlink(_)), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        // A store reached through a link in the folders above is still the store.
        let db_dir = dir.path().join("db");
        fs::create_dir(&db_dir).unwrap();
        fs::write(db_dir.join("s.sqlite3"), b"store").unwrap();
        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(&db_dir, &alias).unwrap();
        let p = Protected::new().store(&db_dir.join("s.sqlite3"));
        let err = write_bytes(&alias.join("s.sqlite3"), &p, b"x").unwrap_err();
        assert!(matches!(err, OutputError::Store(_)), "{err}");
    }

    #[test]
    fn cells_that_would_be_formulas_or_hold_control_characters_are_made_safe() {
        for (text, safe) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tindent", "'\tindent"),
            ("\rcmd", "'\\x0Dcmd"),
            ("colour \u{1b}[31mred", "colour \\x1B[31mred"),
            ("nul\0byte", "nul\\x00byte"),
            ("two\nlines", "two\nlines"),
            ("Dr. O'Brien, MD", "Dr. O'Brien, MD"),
            ("0.5", "0.5"),
        ] {
            assert_eq!(csv_cell(text), safe, "{text:?}");
        }
        assert_eq!(terminal_text("a\nb\u{1b}c.png"), "a\\x0Ab\\x1Bc.png");
        assert_eq!(terminal_text("plain é.png"), "plain é.png");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report.csv");
        fs::write(&out, b"old").unwrap();
        let err = write_file(&out, &Protected::new(), |w| {
            w.write_all(b"half")?;
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(fs::read(&out).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
