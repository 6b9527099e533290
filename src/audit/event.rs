//! The records of the decision store: studies, decisions asked for, and decision events.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::worklist::Label;

/// What a reader did to a study's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The reader agreed with the AI label: the final label is the AI label.
    Confirm,
    /// The reader disagreed with the AI label: the final label is the other label.
    Override,
    /// The reader took back the most recent decision that is still in force.
    Undo,
    /// The reader set a label without reference to the AI call (for example in a spreadsheet
    /// imported with `cxr-triage import`).
    Relabel,
    /// The study was read elsewhere (another system, on film): no label is recorded here, but
    /// the study counts as reviewed.
    ReadElsewhere,
    /// The study is not a chest film, so the model's label does not apply: no label, but the
    /// study counts as reviewed.
    NotChestFilm,
    /// Blind-first reading: the reader's own call, made before the AI's score, label and heat
    /// map were shown (the event records no AI label). The final call, made once they are
    /// shown, follows as a confirm or an override; comparing the two tells how often the AI
    /// changed a reader's mind.
    BlindCall,
}

impl Action {
    /// Every action, in a fixed order.
    pub const ALL: [Self; 7] = [
        Self::Confirm,
        Self::Override,
        Self::Undo,
        Self::Relabel,
        Self::ReadElsewhere,
        Self::NotChestFilm,
        Self::BlindCall,
    ];

    /// The action as written in the store and in CSV files: `confirm`, `override`, `undo`,
    /// `relabel`, `read_elsewhere`, `not_chest_film` or `blind_call`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Override => "override",
            Self::Undo => "undo",
            Self::Relabel => "relabel",
            Self::ReadElsewhere => "read_elsewhere",
            Self::NotChestFilm => "not_chest_film",
            Self::BlindCall => "blind_call",
        }
    }

    /// Whether the action closes a study without a label (read elsewhere, not a chest film).
    pub fn is_disposition(self) -> bool {
        matches!(self, Self::ReadElsewhere | Self::NotChestFilm)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "\"{0}\" is not an action: use confirm, override, undo, relabel, read_elsewhere, not_chest_film or blind_call"
)]
pub struct ParseActionError(pub String);

impl FromStr for Action {
    type Err = ParseActionError;

    /// Accepts exactly the names that [`Action::as_str`] writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| ParseActionError(s.to_owned()))
    }
}

/// A study as the store knows it: its identity (the SHA-256 of its file), where it was last seen,
/// and what its loader found out about it.
///
/// The studies table is not audited: it is a cache that [`DecisionStore::upsert_study`] overwrites
/// each time a folder is opened, so that decisions follow a file that was moved or renamed.
///
/// [`DecisionStore::upsert_study`]: super::DecisionStore::upsert_study
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StudyRecord {
    /// Lower-case hexadecimal SHA-256 of the file's bytes (see [`crate::io::sha256_hex`]).
    pub sha256: String,
    /// Where the file was last seen.
    pub path: PathBuf,
    /// The patient ID, where the file carries one (DICOM).
    pub patient_id: Option<String>,
    /// The study instance UID, where the file carries one (DICOM).
    pub study_uid: Option<String>,
    /// Any other metadata the loader wants kept, as a JSON document (`{}` when there is none).
    pub metadata_json: String,
}

/// A decision to record, as the window or an import asks for it.
///
/// The store adds the id, the time, the app version, the previous final label and the hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDecision {
    /// Who decided (the reader's name as they typed it).
    pub reader: String,
    /// The study's identity: lower-case hexadecimal SHA-256 of its file.
    pub study_sha256: String,
    /// Where the study's file was when the reader decided.
    pub study_path: PathBuf,
    /// The model that scored the study, if any.
    pub model_id: Option<String>,
    /// Lower-case hexadecimal SHA-256 of the model's weights file, if any.
    pub weights_sha256: Option<String>,
    /// The model's pneumonia score, between 0 and 1.
    pub score: Option<f32>,
    /// The decision threshold in force, between 0 and 1.
    pub threshold: Option<f32>,
    /// The AI label shown to the reader.
    pub ai_label: Option<Label>,
    /// The new final label. Required for every action but [`Action::Undo`], for which the store
    /// works out the label to restore (leave it `None`, or give the label you expect back).
    pub new_label: Option<Label>,
    /// What the reader did.
    pub action: Action,
    /// Why, in the reader's words (may be empty).
    pub reason: String,
    /// How long the study's full-resolution image was on screen before the decision, in
    /// milliseconds (`None` when no image was shown: an undo, an import, an unreadable study).
    pub viewed_ms: Option<u64>,
    /// Why the model considers the study unlike the films it was trained on, when it says so.
    pub ood_reason: Option<String>,
}

/// One recorded event of the append-only decision log, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionEvent {
    /// Position in the log: 1, 2, 3, … with no gaps.
    pub id: i64,
    /// UTC time of recording, RFC 3339 with milliseconds and `Z` (`2026-03-01T09:30:12.345Z`).
    pub decided_at: String,
    /// Who decided.
    pub reader: String,
    /// The cxr-triage version that recorded the event.
    pub app_version: String,
    /// The study's identity.
    pub study_sha256: String,
    /// Where the study's file was at the time.
    pub study_path: PathBuf,
    /// The model that scored the study, if any.
    pub model_id: Option<String>,
    /// SHA-256 of the model's weights, if any.
    pub weights_sha256: Option<String>,
    /// The model's score, if any.
    pub score: Option<f32>,
    /// The threshold in force, if any.
    pub threshold: Option<f32>,
    /// The AI label shown, if any.
    pub ai_label: Option<Label>,
    /// The final label in force just before this event (`None`: unreviewed).
    pub prev_label: Option<Label>,
    /// The final label from this event on (`None`: unreviewed again, after an undo).
    pub new_label: Option<Label>,
    /// What the reader did.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Milliseconds the study's image was on screen before the decision (version 2 events).
    pub viewed_ms: Option<u64>,
    /// Why the model considered the study unlike its training films (version 2 events).
    pub ood_reason: Option<String>,
    /// The canonical encoding the event's hash was computed with: 1 (written before
    /// `viewed_ms` existed) or 2.
    pub format_version: i64,
    /// Hexadecimal hash of the previous event (64 zeros for the first event).
    pub prev_hash: String,
    /// Hexadecimal SHA-256 of the previous hash and this event's canonical encoding.
    pub row_hash: String,
}

/// The AI call on record for a study: the latest event that carries an AI label.
#[derive(Clone, Debug, PartialEq)]
pub struct AiCall {
    /// The AI label.
    pub label: Label,
    /// The model's score, if recorded.
    pub score: Option<f32>,
    /// The threshold in force, if recorded.
    pub threshold: Option<f32>,
    /// The model, if recorded.
    pub model_id: Option<String>,
    /// SHA-256 of the model's weights, if recorded.
    pub weights_sha256: Option<String>,
}

/// A study's state now, rebuilt from its events.
#[derive(Clone, Debug, PartialEq)]
pub struct CurrentState {
    /// The final label in force (`None`: unreviewed, for example after undoing every decision).
    pub final_label: Option<Label>,
    /// The study's most recent event.
    pub last_event: DecisionEvent,
    /// The AI call on record (the latest event that carries an AI label), if any.
    pub ai: Option<AiCall>,
    /// Whether the reader's final label equals the AI label; `None` when either is missing.
    pub agreed: Option<bool>,
    /// [`Action::ReadElsewhere`] or [`Action::NotChestFilm`] when that is the decision in force
    /// (the study is reviewed, without a label).
    pub disposition: Option<Action>,
}

impl CurrentState {
    /// Builds the state from the last event and the latest event with an AI label.
    pub(crate) fn new(last_event: DecisionEvent, ai_event: Option<&DecisionEvent>) -> Self {
        let ai = ai_event.and_then(|e| {
            e.ai_label.map(|label| AiCall {
                label,
                score: e.score,
                threshold: e.threshold,
                model_id: e.model_id.clone(),
                weights_sha256: e.weights_sha256.clone(),
            })
        });
        let final_label = last_event.new_label;
        let disposition = Some(last_event.action).filter(|a| a.is_disposition());
        let agreed = match (final_label, &ai) {
            (Some(f), Some(a)) => Some(f == a.label),
            _ => None,
        };
        Self {
            final_label,
            last_event,
            ai,
            agreed,
            disposition,
        }
    }

    /// Whether a reader's label, or a "read elsewhere" or "not a chest film", is in force.
    pub fn is_reviewed(&self) -> bool {
        self.final_label.is_some() || self.disposition.is_some()
    }
}
