//! The decision store: append-only, hash-chained, in `SQLite`.
