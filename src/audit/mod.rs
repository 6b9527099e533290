//! The decision store: append-only, hash-chained, in SQLite.
//!
//! Every reader decision (confirm, override, undo, relabel, read elsewhere, not a chest film) is
//! one event in the `decisions` table of a SQLite file ([`DecisionStore`]). Events are never
//! changed or deleted: an undo is a new event. Together they form the audit trail that 21 CFR 11.10(e) asks for: who decided what,
//! when, about which exact image (the SHA-256 of its file), with which model, score and
//! threshold, the label before and after, and why.
//!
//! # Files
//!
//! - The store lives in the user's data folder ([`DecisionStore::default_path`]) or wherever
//!   `--db PATH` says. It uses write-ahead logging, `synchronous=FULL` (a decision is on disk
//!   when [`DecisionStore::record`] returns) and a 10-second busy timeout, so that several
//!   windows or commands can share it.
//! - Study folders are only ever read.
//! - The schema is versioned with `PRAGMA user_version` and migrated on open; a store written by
//!   a newer cxr-triage is refused rather than guessed at. `PRAGMA application_id` marks the file
//!   as ours.
//!
//! # Studies and resuming
//!
//! A study's identity is the SHA-256 of its file's bytes. The `studies` table maps that hash to
//! the last path the file was seen at and the metadata its loader found (patient ID, study UID,
//! any JSON). It is a cache, not part of the audit trail: [`DecisionStore::upsert_studies`]
//! overwrites it whenever a folder is opened. Decisions are keyed by hash, so a reopened folder
//! gets every study's state back from [`DecisionStore::current_many`], and a moved or renamed
//! file keeps its decisions. A decision can only be recorded for a study in the `studies` table.
//!
//! # Final labels and undo
//!
//! Each event stores the final label before it (`prev_label`, read inside the same write
//! transaction) and after it (`new_label`). A study's current final label is the `new_label` of
//! its latest event; `None` means unreviewed.
//!
//! ## Undo
//!
//! An undo takes back the most recent decision that is still in force, and restores the final
//! label that was in force just before that decision. Successive undos walk further back:
//!
//! | event | final label after |
//! |---|---|
//! | confirm PNEUMONIA | PNEUMONIA |
//! | override to NORMAL | NORMAL |
//! | undo (takes back the override) | PNEUMONIA |
//! | undo (takes back the confirm) | unreviewed |
//! | undo | refused: [`AuditError::NothingToUndo`] |
//!
//! An undo is never itself undone; a decision after an undo simply becomes the newest decision
//! in force.
//!
//! "Read elsewhere" (`read_elsewhere`) and "not a chest film" (`not_chest_film`) close a study
//! without a label: it counts as reviewed, and its final label is `None`. While one is in force,
//! nothing else is recorded for the study until it is undone (so an undo always restores a label
//! or unreviewed). The store works this out from the study's events in the write transaction, so the
//! caller need not (and the undo event records the restored label in `new_label`).
//!
//! # The hash chain
//!
//! Each event stores `prev_hash`, the `row_hash` of the event before it (for the first event: 32
//! zero bytes), and `row_hash` = SHA-256(`prev_hash` ‖ `encoding`), both written as 64 lower-case
//! hexadecimal digits. The hash input uses the 32 raw bytes of `prev_hash`.
//!
//! `encoding` is the canonical encoding of every other column but `format_version`, in this
//! order: a format tag, then `id`, `decided_at`, `reader`, `app_version`, `study_sha256`,
//! `study_path`, `model_id`, `weights_sha256`, `score`, `threshold`, `ai_label`, `prev_label`,
//! `new_label`, `action`, `reason`, and in version 2 also `viewed_ms` and `ood_reason`. Each
//! field is written as one byte `0x00` for NULL, or as one byte `0x01`, the field's length in
//! bytes as an unsigned 64-bit big-endian integer, and the bytes:
//!
//! - the format tag is the ASCII text `cxr-triage decision event v2` (events written before
//!   schema version 2: `cxr-triage decision event v1`, and the encoding stops after `reason`);
//! - `id` and `viewed_ms` are their signed 64-bit big-endian two's complement (8 bytes);
//! - text is its UTF-8 bytes exactly as stored (labels `NORMAL`/`PNEUMONIA`, actions
//!   `confirm`/`override`/`undo`/`relabel`/`read_elsewhere`/`not_chest_film`, times as RFC 3339
//!   UTC with milliseconds and `Z`);
//! - `score` and `threshold` are the 8 big-endian bytes of the IEEE 754 binary64 value stored in
//!   SQLite (the model's `f32`, widened exactly).
//!
//! Each event's `format_version` column (1 or 2) says which encoding its hash was computed with,
//! and [`DecisionStore::verify`] encodes each event accordingly. The schema migration to version
//! 2 copies every existing event unchanged with `format_version` 1, so a chain started by an
//! older cxr-triage still verifies; a version 1 event must have `viewed_ms` and `ood_reason` NULL
//! (its hash does not cover them). Changing an event's `format_version` changes its encoding and
//! breaks its hash.
//!
//! `viewed_ms` is how long the study's full-resolution image had been on screen when the reader
//! decided (NULL for undos, imports and studies without an image); `ood_reason` is why the model
//! found the study unlike the films it was trained on (NULL when it did not say so).
//!
//! Because the `id` is hashed, and [`DecisionStore::verify`] checks that ids run 1, 2, 3, …, an
//! edited, deleted, reordered or inserted row breaks the chain at that row. SQLite triggers also
//! refuse UPDATE and DELETE on the table, and `verify` reports if they are missing. Deleting the
//! last events is caught through `sqlite_sequence`, which remembers the highest id handed out.
//!
//! A chain only proves that nobody edited the log *without recomputing every later hash*.
//! Someone who knows this format can rewrite the whole log; to catch that, write down the head
//! hash that `cxr-triage audit verify` prints (or export the event log) and compare it later.
//!
//! # Learning from the site
//!
//! Schema version 2 adds two tables; the decisions log and its encoding are unchanged.
//!
//! - `scores`: the score each model (by the SHA-256 of its weights) gave each study, with the
//!   threshold in force then, as `cxr-triage score --db` records it. A cache like `studies`,
//!   not audited.
//! - `threshold_events`: the append-only log of threshold changes (`cxr-triage threshold`): who,
//!   when, the model and its weights' hash, the old and new threshold, the local figures the
//!   change rests on (JSON) and why. The latest event for a set of weights gives the threshold
//!   in force for that model; without one, the model card's threshold is in force. AI labels in
//!   exports follow the threshold in force; scores never change. It has its own hash chain,
//!   built as the decisions' is (same field layout, 32 zero bytes before the first event), over
//!   the format tag `cxr-triage threshold event v1`, then `id`, `recorded_at`, `reader`,
//!   `app_version`, `model_id`, `weights_sha256`, `old_threshold`, `new_threshold` (binary64, as
//!   stored), `basis_json` and `reason`, and its own append-only triggers;
//!   [`DecisionStore::verify_thresholds`] checks it and `audit verify` reports it.
//! - A switch of the model in force (`cxr-triage use-model`, or `adapt --use`) is a threshold
//!   event in the same log, for the new model's weights, whose `basis_json` is
//!   `{"model_switch": {"from_model_id", "from_weights_sha256", "card_path"}, "figures": …}`:
//!   the latest such event names the model in force ([`DecisionStore::model_in_force`]) and its
//!   `new_threshold` is that model's threshold in force, under the same chain and guard.

//! # The study log
//!
//! Schema version 4 keeps each study's path losslessly (`studies.path_bytes`, the operating
//! system's bytes, beside the display form in `last_path`) and adds `study_events`: every change
//! to what the store knows of a study (new, moved, other patient or study ids, other details) is
//! appended there, hash-chained like the threshold log (32 zero bytes before the first event)
//! over the format tag `cxr-triage study event v1`, then `id`, `recorded_at`, `sha256`, `path`,
//! `path_bytes`, `patient_id`, `study_uid` (a single `0x00` when NULL) and `metadata_json`, with
//! its own append-only triggers. Opening a folder again appends nothing. The `studies` table
//! stays the store's index; [`DecisionStore::verify_studies`] checks the log and that every row
//! of `studies` is what the log last recorded for that study, so an edited path or patient id,
//! or a row added or removed behind the store's back, is reported by `audit verify` and makes
//! `export` refuse the store. The migration records every existing study as its first event.

mod anchor;
mod backend;
mod blind;
mod chain;
mod claims;
mod error;
mod event;
mod export;
mod import;
mod pg;
mod pg_tls;
mod qa;
mod qa_plots;
mod schema;
mod site;
mod store;
mod study_log;
mod verify;

pub use anchor::{Anchor, anchor_path};
pub use backend::{CopyReport, DecisionLog, StoreAddress, copy_store, open_store};
pub use blind::BlindFirstSummary;
pub use chain::GENESIS_PREV_HASH;
pub use claims::Claim;
pub use error::AuditError;
pub use event::{
    Action, AiCall, CurrentState, DecisionEvent, NewDecision, ParseActionError, StudyRecord,
};
pub use export::{EVENT_COLUMNS, ExportKind, ExportOptions, STUDY_COLUMNS};
pub use import::{
    DEFAULT_IMPORT_REASON, ImportReport, ImportedRow, RejectedRow, RowProblem, import_csv,
};
pub use pg::{NOTIFY_CHANNEL, PG_SCHEMA_VERSION, PgStore, is_postgres_address};
pub use pg_tls::{ServerAddress, TlsMode};
pub use qa::{
    Agreement, DEFAULT_SECOND_READ_SHARE, Disagreement, QaReport, ReaderQa,
    sampled_for_second_read, second_reads_due,
};
pub use qa_plots::write_qa_plots;
pub use site::{
    LabelledStudy, ModelInForce, ModelSwitch, ScoreRecord, ThresholdChange, ThresholdEvent,
    ThresholdLogReport,
};
pub use store::DecisionStore;
pub use study_log::{StudyEvent, StudyLogReport};
pub use verify::{BrokenLink, LinkProblem, VerifyReport};
