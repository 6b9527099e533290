//! The order and the subset of studies the worklist shows.

use std::cmp::Ordering;

use super::{StudyId, StudyRow, Worklist};
use crate::worklist::ScoreState;

/// A column to sort the worklist by.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum SortKey {
    /// The model's score (the rank column sorts the same way).
    #[default]
    Score,
    /// The AI label (pneumonia first when descending).
    AiLabel,
    /// The review state: unreviewed, confirmed, overridden, labelled.
    Review,
    /// The file's path relative to the folder.
    Name,
    /// The DICOM patient ID.
    Patient,
    /// The DICOM study instance UID.
    StudyUid,
    /// The error message, for studies that could not be read or scored.
    Error,
    /// The label the dataset gives the study.
    DatasetLabel,
    /// |dataset label − score|: likely label errors first when descending.
    Disagreement,
    /// The patient's age (DICOM), in days.
    Age,
    /// The study date (DICOM).
    StudyDate,
    /// The view position (DICOM).
    View,
    /// How long the study has waited: the longest first when descending.
    Waiting,
}

impl SortKey {
    /// The direction a click on a new column starts with: the most useful end first (highest
    /// score, pneumonia, strongest disagreement), alphabetical for text.
    pub fn descending_by_default(self) -> bool {
        matches!(
            self,
            Self::Score | Self::AiLabel | Self::Disagreement | Self::Waiting
        )
    }
}

/// A sort column and direction.
///
/// Studies without a value for the column (no score yet, no patient ID) come last in both
/// directions. Ties are broken by score (highest first), then by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SortSpec {
    /// The column.
    pub key: SortKey,
    /// Highest (or last) first.
    pub descending: bool,
}

impl Default for SortSpec {
    /// By score, highest first: the triage order.
    fn default() -> Self {
        Self {
            key: SortKey::Score,
            descending: true,
        }
    }
}

impl SortSpec {
    /// The sort after a click on `key`'s column header: the same column flips direction, another
    /// column starts in its default direction.
    pub fn clicked(self, key: SortKey) -> Self {
        if self.key == key {
            Self {
                key,
                descending: !self.descending,
            }
        } else {
            Self {
                key,
                descending: key.descending_by_default(),
            }
        }
    }

    /// Orders two rows of `w`.
    pub fn compare(self, w: &Worklist, a: &StudyRow, b: &StudyRow) -> Ordering {
        let d = self.descending;
        let primary = match self.key {
            SortKey::Score => score_order(a, b, d),
            SortKey::AiLabel => present_first(w.ai_label(a), w.ai_label(b), d, Ord::cmp),
            SortKey::Review => directed(w.review_state(a).cmp(&w.review_state(b)), d),
            SortKey::Name => directed(name_order(a, b), d),
            SortKey::Patient => present_first(
                a.patient_id.as_deref(),
                b.patient_id.as_deref(),
                d,
                Ord::cmp,
            ),
            SortKey::StudyUid => {
                present_first(a.study_uid.as_deref(), b.study_uid.as_deref(), d, Ord::cmp)
            }
            SortKey::Error => present_first(a.error(), b.error(), d, Ord::cmp),
            SortKey::DatasetLabel => present_first(
                a.dataset_label.map(|l| l.label),
                b.dataset_label.map(|l| l.label),
                d,
                Ord::cmp,
            ),
            SortKey::Disagreement => {
                present_first(a.disagreement(), b.disagreement(), d, f32::total_cmp)
            }
            SortKey::Age => {
                present_first(a.facts.age_days(), b.facts.age_days(), d, f64::total_cmp)
            }
            SortKey::StudyDate => present_first(
                a.facts.study_date.as_deref(),
                b.facts.study_date.as_deref(),
                d,
                Ord::cmp,
            ),
            SortKey::View => present_first(
                a.facts.view.as_deref(),
                b.facts.view.as_deref(),
                d,
                Ord::cmp,
            ),
            // Waited longer = started earlier.
            SortKey::Waiting => present_first(
                a.facts.waiting_since.map(|(t, _)| std::cmp::Reverse(t)),
                b.facts.waiting_since.map(|(t, _)| std::cmp::Reverse(t)),
                d,
                Ord::cmp,
            ),
        };
        primary
            .then_with(|| score_order(a, b, true))
            .then_with(|| name_order(a, b))
            .then_with(|| a.id.cmp(&b.id))
    }
}

/// Which studies the worklist shows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Filter {
    /// Every study.
    #[default]
    All,
    /// Studies without a reader's label.
    Unreviewed,
    /// Studies whose reader's label differs from the AI label.
    Disagreements,
    /// Studies that could not be read or scored.
    Errors,
    /// Studies another reader called that are due a second read by this reader.
    SecondReads,
}

impl Filter {
    /// Every filter, in the order the window offers them.
    pub const ALL: [Self; 5] = [
        Self::All,
        Self::Unreviewed,
        Self::Disagreements,
        Self::Errors,
        Self::SecondReads,
    ];

    /// The filter's name, as the window shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "All",
            Self::Unreviewed => "Unreviewed",
            Self::Disagreements => "Disagreements",
            Self::Errors => "Errors",
            Self::SecondReads => "Second reads",
        }
    }

    /// Whether the filter keeps `row`.
    pub fn keeps(self, w: &Worklist, row: &StudyRow) -> bool {
        match self {
            Self::All => true,
            Self::Unreviewed => !w.review_state(row).is_reviewed(),
            Self::Disagreements => {
                w.review_state(row) == super::ReviewState::Overridden && !row.second_read_due
            }
            Self::Errors => row.error().is_some(),
            Self::SecondReads => row.second_read_due,
        }
    }
}

/// The study `delta` places from `current` in `view`, stopping at either end. With no current
/// study (or one the view hides), the first study of the view.
pub fn step_in_view(view: &[StudyId], current: Option<StudyId>, delta: isize) -> Option<StudyId> {
    let Some(pos) = current.and_then(|c| view.iter().position(|&id| id == c)) else {
        return view.first().copied();
    };
    let last = view.len().saturating_sub(1);
    let target = pos.saturating_add_signed(delta).min(last);
    view.get(target).copied()
}

fn directed(o: Ordering, descending: bool) -> Ordering {
    if descending { o.reverse() } else { o }
}

/// Orders present values by `cmp` in the given direction, and puts missing values last.
fn present_first<T>(
    a: Option<T>,
    b: Option<T>,
    descending: bool,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => directed(cmp(&x, &y), descending),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Scored studies by score; then those that failed (they need a reader's attention); then
/// those still waiting for the model.
fn score_order(a: &StudyRow, b: &StudyRow, descending: bool) -> Ordering {
    let tier = |r: &StudyRow| match r.score {
        ScoreState::Scored(_) => 0,
        ScoreState::Failed(_) => 1,
        ScoreState::Pending => 2,
    };
    tier(a)
        .cmp(&tier(b))
        .then_with(|| present_first(a.score_value(), b.score_value(), descending, f32::total_cmp))
}

/// Case-insensitive, then exact; allocates nothing (sorting 5,000 rows compares names often).
fn name_order(a: &StudyRow, b: &StudyRow) -> Ordering {
    a.name
        .chars()
        .flat_map(char::to_lowercase)
        .cmp(b.name.chars().flat_map(char::to_lowercase))
        .then_with(|| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::worklist::{DatasetLabel, Label, LabelSource};

    fn row(name: &str, score: ScoreState) -> StudyRow {
        let mut r = StudyRow::new(StudyId(0), PathBuf::from(name), name.to_owned());
        if matches!(score, ScoreState::Scored(_)) {
            r.sha256 = Some(format!("{name:0>64}"));
        }
        r.score = score;
        r
    }

    fn names(w: &Worklist, view: &[StudyId]) -> Vec<String> {
        view.iter()
            .map(|&id| w.row(id).unwrap().name.clone())
            .collect()
    }

    fn sample() -> Worklist {
        Worklist::new(
            vec![
                row("b.jpg", ScoreState::Scored(0.2)),
                row("a.jpg", ScoreState::Scored(0.9)),
                row("junk.txt", ScoreState::Failed("not an image".into())),
                row("c.jpg", ScoreState::Pending),
                row("d.jpg", ScoreState::Scored(0.6)),
            ],
            Some(0.5),
        )
    }

    #[test]
    fn default_order_is_manual_reads_then_score_highest_first_then_pending() {
        let w = sample();
        let view = w.view(SortSpec::default(), Filter::All);
        // The unreadable file needs a manual read: it heads the list whatever the sort.
        assert_eq!(
            names(&w, &view),
            ["junk.txt", "a.jpg", "d.jpg", "b.jpg", "c.jpg"]
        );
        // Ascending keeps the studies without a score at the end.
        let up = SortSpec::default().clicked(SortKey::Score);
        assert!(!up.descending);
        assert_eq!(
            names(&w, &w.view(up, Filter::All)),
            ["junk.txt", "b.jpg", "d.jpg", "a.jpg", "c.jpg"]
        );
        // Once it has a decision it sorts with the others (errors after scored studies).
        let mut w = w;
        let sha = w.row(StudyId(2)).unwrap().sha256.clone();
        w.row_mut(StudyId(2)).unwrap().sha256 = Some("e".repeat(64));
        w.set_decision(
            &"e".repeat(64),
            None,
            Some(crate::worklist::Disposition::NotChestFilm),
        );
        assert_eq!(sha, None);
        assert_eq!(
            names(&w, &w.view(SortSpec::default(), Filter::All)),
            ["a.jpg", "d.jpg", "b.jpg", "junk.txt", "c.jpg"]
        );
    }

    #[test]
    fn every_column_sorts_and_clicking_twice_reverses() {
        let w = sample();
        let by_name = SortSpec::default().clicked(SortKey::Name);
        assert_eq!(
            names(&w, &w.view(by_name, Filter::All)),
            ["junk.txt", "a.jpg", "b.jpg", "c.jpg", "d.jpg"]
        );
        let back = by_name.clicked(SortKey::Name);
        assert_eq!(
            names(&w, &w.view(back, Filter::All)),
            ["junk.txt", "d.jpg", "c.jpg", "b.jpg", "a.jpg"]
        );
        let by_error = SortSpec::default().clicked(SortKey::Error);
        assert_eq!(names(&w, &w.view(by_error, Filter::All))[0], "junk.txt");
        let by_ai = SortSpec::default().clicked(SortKey::AiLabel);
        assert_eq!(
            names(&w, &w.view(by_ai, Filter::All)),
            ["junk.txt", "a.jpg", "d.jpg", "b.jpg", "c.jpg"]
        );
    }

    #[test]
    fn filters_keep_unreviewed_disagreements_and_errors() {
        let mut w = sample();
        w.row_mut(StudyId(1)).unwrap().final_label = Some(Label::Pneumonia); // a: confirmed
        w.row_mut(StudyId(4)).unwrap().final_label = Some(Label::Normal); // d: overridden
        let sort = SortSpec::default();
        assert_eq!(
            names(&w, &w.view(sort, Filter::Unreviewed)),
            ["junk.txt", "b.jpg", "c.jpg"]
        );
        assert_eq!(names(&w, &w.view(sort, Filter::Disagreements)), ["d.jpg"]);
        assert_eq!(names(&w, &w.view(sort, Filter::Errors)), ["junk.txt"]);
        let by_review = SortSpec::default().clicked(SortKey::Review);
        assert_eq!(
            names(&w, &w.view(by_review, Filter::All))[3..],
            ["a.jpg", "d.jpg"]
        );
    }

    #[test]
    fn disagreement_sort_puts_likely_label_errors_first() {
        let mut w = sample();
        let label = |l| {
            Some(DatasetLabel {
                label: l,
                source: LabelSource::FolderName,
            })
        };
        w.row_mut(StudyId(0)).unwrap().dataset_label = label(Label::Pneumonia); // b: |1-0.2| = 0.8
        w.row_mut(StudyId(1)).unwrap().dataset_label = label(Label::Pneumonia); // a: 0.1
        w.row_mut(StudyId(4)).unwrap().dataset_label = label(Label::Normal); // d: 0.6
        let sort = SortSpec::default().clicked(SortKey::Disagreement);
        assert!(sort.descending);
        assert_eq!(
            names(&w, &w.view(sort, Filter::All)),
            ["junk.txt", "b.jpg", "d.jpg", "a.jpg", "c.jpg"]
        );
    }

    #[test]
    fn dicom_columns_and_waiting_time_sort_with_unknowns_last() {
        use std::time::{Duration, SystemTime};
        let mut w = sample();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // b: 45 y, waited 3 h; a: 6 months, waited 1 h; d: 3 y, waited 2 h; the others unknown.
        for (id, age, mins) in [(0, "045Y", 0), (1, "006M", 120), (4, "003Y", 60)] {
            let facts = &mut w.row_mut(StudyId(id)).unwrap().facts;
            facts.age = Some(age.to_owned());
            facts.waiting_since = Some((
                t0 + Duration::from_secs(mins * 60),
                crate::worklist::WaitingSince::FileModified,
            ));
        }
        let by_age = SortSpec::default().clicked(SortKey::Age);
        assert!(!by_age.descending);
        assert_eq!(
            names(&w, &w.view(by_age, Filter::All)),
            ["junk.txt", "a.jpg", "d.jpg", "b.jpg", "c.jpg"]
        );
        assert_eq!(
            names(&w, &w.view(by_age.clicked(SortKey::Age), Filter::All)),
            ["junk.txt", "b.jpg", "d.jpg", "a.jpg", "c.jpg"]
        );
        let by_wait = SortSpec::default().clicked(SortKey::Waiting);
        assert!(by_wait.descending, "the longest wait comes first");
        assert_eq!(
            names(&w, &w.view(by_wait, Filter::All)),
            ["junk.txt", "b.jpg", "d.jpg", "a.jpg", "c.jpg"]
        );
    }

    #[test]
    fn stepping_stops_at_the_ends() {
        let view = [StudyId(3), StudyId(1), StudyId(2)];
        assert_eq!(step_in_view(&view, None, 1), Some(StudyId(3)));
        assert_eq!(step_in_view(&view, Some(StudyId(3)), 1), Some(StudyId(1)));
        assert_eq!(step_in_view(&view, Some(StudyId(2)), 1), Some(StudyId(2)));
        assert_eq!(step_in_view(&view, Some(StudyId(3)), -1), Some(StudyId(3)));
        assert_eq!(step_in_view(&view, Some(StudyId(9)), -1), Some(StudyId(3)));
        assert_eq!(step_in_view(&[], None, 1), None);
    }
}
