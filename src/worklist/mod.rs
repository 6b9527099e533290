//! Studies, scores and decision states, with sorting and filtering. Plain Rust: no egui.
//!
//! - [`Label`]: what the model says or what a reader decided.
//! - [`Worklist`] holds one [`StudyRow`] per file of the opened folder: its score (or why it has
//!   none), the dataset label it may carry, and the reader's label in force. It derives the AI
//!   label at the model's threshold and the review state ([`ReviewState`]).
//! - [`SortSpec`] and [`Filter`] give the order and subset the window shows
//!   ([`Worklist::view`]), including the label-correction sort by disagreement, |label − score|.
//! - [`label_from_folder_names`] and [`LabelFile`] find the labels a dataset already carries.

mod facts;
mod labels;
mod order;
mod sort;
mod study;

use std::fmt;
use std::str::FromStr;

pub use facts::{StudyFacts, WaitingSince, waiting_text};
pub use labels::{DatasetLabel, LabelFile, LabelSource, LabelsError, label_from_folder_names};
pub use order::Order;
pub use sort::{Filter, SortKey, SortSpec, step_in_view};
pub use study::{
    Counts, Disposition, ReviewState, ScoreState, StudyId, StudyRow, Worklist, scope_warning,
};

/// A study's label: what the model says, or what a reader decided.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Label {
    /// No pneumonia.
    Normal,
    /// Pneumonia.
    Pneumonia,
}

impl Label {
    /// Both labels, in a fixed order.
    pub const ALL: [Self; 2] = [Self::Normal, Self::Pneumonia];

    /// The label as written in the store and in CSV files: `NORMAL` or `PNEUMONIA`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Pneumonia => "PNEUMONIA",
        }
    }

    /// The AI label of a score at a threshold: pneumonia when `score >= threshold`.
    pub fn from_score(score: f32, threshold: f32) -> Self {
        if score >= threshold {
            Self::Pneumonia
        } else {
            Self::Normal
        }
    }

    /// The label a folder named `NORMAL` or `PNEUMONIA` (in any case) stands for.
    pub fn from_folder_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("normal") {
            Some(Self::Normal)
        } else if name.eq_ignore_ascii_case("pneumonia") {
            Some(Self::Pneumonia)
        } else {
            None
        }
    }

    /// 1.0 for pneumonia, 0.0 for normal: the target of the model's score.
    pub fn target(self) -> f32 {
        match self {
            Self::Normal => 0.0,
            Self::Pneumonia => 1.0,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A label that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("\"{0}\" is not a label: use NORMAL or PNEUMONIA")]
pub struct ParseLabelError(pub String);

impl FromStr for Label {
    type Err = ParseLabelError;

    /// Accepts `NORMAL`/`PNEUMONIA` in any case, and `0`/`1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("normal") || t == "0" {
            Ok(Self::Normal)
        } else if t.eq_ignore_ascii_case("pneumonia") || t == "1" {
            Ok(Self::Pneumonia)
        } else {
            Err(ParseLabelError(t.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_in_any_case_and_round_trip() {
        assert_eq!("pneumonia".parse::<Label>().unwrap(), Label::Pneumonia);
        assert_eq!(" Normal ".parse::<Label>().unwrap(), Label::Normal);
        assert_eq!("1".parse::<Label>().unwrap(), Label::Pneumonia);
        assert!("maybe".parse::<Label>().is_err());
        for l in Label::ALL {
            assert_eq!(l.as_str().parse::<Label>().unwrap(), l);
        }
    }

    #[test]
    fn threshold_is_inclusive() {
        assert_eq!(Label::from_score(0.5, 0.5), Label::Pneumonia);
        assert_eq!(Label::from_score(0.499, 0.5), Label::Normal);
    }
}
