//! What can go wrong with the decision store, in words for a reader or hospital IT.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// An error of the decision store, its export or its import.
///
/// Messages are written for a radiologist or hospital IT person; where a message names a file, the
/// path comes last.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store file is empty (0 bytes, or no schema): truncated, or never a store.
    #[error(
        "the decision store {} is empty: it was truncated or emptied (a store that was ever used is never empty); restore it from a backup",
        path.display()
    )]
    EmptyStore {
        /// The file.
        path: PathBuf,
    },

    /// The store was made by an older cxr-triage and not migrated yet; checking does not write.
    #[error(
        "the decision store {} was made by an older cxr-triage (schema version {found}): open it once with this version (for example `cxr-triage export --csv FILE --db STORE`), which migrates it and keeps its chain verifiable, then check it",
        path.display()
    )]
    OlderStore {
        /// Its schema version.
        found: i64,
        /// The file.
        path: PathBuf,
    },

    /// The store failed `audit verify`: exporting from it is refused unless forced.
    #[error(
        "the decision store fails its audit check: {0}; run `cxr-triage audit verify` (export --force writes it anyway, saying so in the file)"
    )]
    FailsVerification(String),

    /// A file the command was to write was refused or could not be written.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),

    /// Another program holds the store's write lock for longer than the busy timeout.
    #[error(
        "the decision store is locked by another program (another cxr-triage window or an import?); close it and try again"
    )]
    Locked,

    /// The disk (or the user's quota) is full.
    #[error("the disk is full: the decision store could not be written")]
    DiskFull,

    /// The file or its folder is read-only for this user.
    #[error("the decision store cannot be written: the file or its folder is read-only")]
    ReadOnly,

    /// SQLite found the file damaged.
    #[error("the decision store file is damaged; restore it from a backup")]
    Damaged,

    /// The file is not a SQLite database, or one that another program made.
    #[error("the decision store is not a cxr-triage database: {}", path.display())]
    NotOurDatabase {
        /// The file that was opened.
        path: PathBuf,
    },

    /// The store was made by a newer cxr-triage than this one.
    #[error(
        "the decision store was written by a newer version of cxr-triage (schema {found}; this version knows up to {known}); update cxr-triage: {}",
        path.display()
    )]
    TooNew {
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build knows.
        known: i64,
        /// The file that was opened.
        path: PathBuf,
    },

    /// The store file does not exist (for commands that only read an existing store).
    #[error("there is no decision store at {}", path.display())]
    NoStore {
        /// The path that was looked for.
        path: PathBuf,
    },

    /// SQLite could not open the file (missing folder, permissions, a folder in its place).
    #[error("the decision store could not be opened (check that the folder exists and is writable): {}", path.display())]
    CannotOpen {
        /// The file that was opened.
        path: PathBuf,
    },

    /// The operating system gives this user no data directory.
    #[error(
        "this user account has no data folder for the decision store (is HOME set?); pass --db PATH"
    )]
    NoDataDir,

    /// A decision names a study that the store has never seen.
    #[error(
        "the study is not in the decision store: open its folder in cxr-triage, or score it with score --db, first"
    )]
    UnknownStudy,

    /// An undo for a study that has no decision left to undo.
    #[error("there is no decision to undo for this study")]
    NothingToUndo,

    /// A decision or study record that breaks a rule of the store.
    #[error("the decision was not recorded: {0}")]
    InvalidDecision(String),

    /// A study record that breaks a rule of the store.
    #[error("the study was not stored: {0}")]
    InvalidStudy(String),

    /// A value in the store that this version cannot read (damage or tampering).
    #[error("the decision store holds a value this version cannot read: {0}")]
    UnreadableValue(String),

    /// A file could not be read or written.
    #[error("{what}: {source}: {}", path.display())]
    File {
        /// What was being done, in words.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
        /// The file concerned.
        path: PathBuf,
    },

    /// Writing or reading CSV failed.
    #[error("CSV: {0}")]
    Csv(String),

    /// Any other database failure.
    #[error("the decision store reported an error: {0}")]
    Database(#[source] rusqlite::Error),

    /// The PostgreSQL server refused or failed a request.
    #[error("the decision store's server: {0}")]
    Server(String),

    /// The PostgreSQL server cannot be reached, or the connection to it broke (it restarted or
    /// shut down, the network dropped, an administrator ended the session): trying again later
    /// may work.
    #[error("the decision store's server cannot be reached: {0}")]
    ServerUnavailable(String),

    /// The command works on a SQLite store only (so far).
    #[error(
        "this works on a SQLite decision store only in this version; on a PostgreSQL store, the window, `store copy`, `audit verify`, `export`, `qa`, `import` and `score --db` work (copy the log to a SQLite file with `store copy` for the rest)"
    )]
    NotOnServer,

    /// The store on the PostgreSQL server is not set up and this user may not set it up.
    #[error(
        "the decision store on the server is not set up, and this database user may not create it: the store's owner runs `cxr-triage store init --db ADDRESS` once (README, \"A department's store\")"
    )]
    ServerNotSetUp,
}

impl From<postgres::Error> for AuditError {
    fn from(err: postgres::Error) -> Self {
        // The message says what the server said (never the address, which may hold a password).
        let Some(db) = err.as_db_error() else {
            // No answer from the server: it could not be reached, or the connection broke.
            return Self::ServerUnavailable(if err.is_closed() {
                "the connection to the server was lost".to_owned()
            } else {
                err.to_string()
            });
        };
        let text = match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_owned(),
        };
        // Class 08 (connection exception) and 57P01-57P03 (the server shutting down, or not
        // accepting connections yet) say the server is not there for now.
        let code = db.code().code();
        if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") {
            Self::ServerUnavailable(text)
        } else {
            Self::Server(text)
        }
    }
}

impl From<rusqlite::Error> for AuditError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Locked,
            Some(ErrorCode::DiskFull) => Self::DiskFull,
            Some(ErrorCode::ReadOnly) => Self::ReadOnly,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Self::Damaged,
            _ => match err {
                rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::Utf8Error(..) => Self::UnreadableValue(err.to_string()),
                _ => Self::Database(err),
            },
        }
    }
}

impl From<csv::Error> for AuditError {
    fn from(err: csv::Error) -> Self {
        match err.kind() {
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                Self::DiskFull
            }
            _ => Self::Csv(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_failures_become_plain_words() {
        assert!(matches!(
            AuditError::from(sqlite(rusqlite::ffi::SQLITE_BUSY)),
            AuditError::Locked
        ));
        assert!(matches!(
            AuditError::from(sqlite(rusqlite::ffi::SQLITE_FULL)),
            AuditError::DiskFull
        ));
        assert!(matches!(
            AuditError::from(sqlite(rusqlite::ffi::SQLITE_READONLY)),
            AuditError::ReadOnly
        ));
        assert!(matches!(
            AuditError::from(sqlite(rusqlite::ffi::SQLITE_CORRUPT)),
            AuditError::Damaged
        ));
        assert_eq!(
            AuditError::Locked.to_string(),
            "the decision store is locked by another program (another cxr-triage window or an import?); close it and try again"
        );
        assert_eq!(
            AuditError::DiskFull.to_string(),
            "the disk is full: the decision store could not be written"
        );
    }

    #[test]
    fn paths_come_last_in_messages() {
        let err = AuditError::NotOurDatabase {
            path: PathBuf::from("/home/a/notes.txt"),
        };
        assert_eq!(
            err.to_string(),
            "the decision store is not a cxr-triage database: /home/a/notes.txt"
        );
        let err = AuditError::NoStore {
            path: PathBuf::from("/x/decisions.sqlite3"),
        };
        assert!(err.to_string().ends_with("/x/decisions.sqlite3"));
    }
}
