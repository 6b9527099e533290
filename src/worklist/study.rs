//! One row per study of the opened folder, and the worklist that holds them.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use super::{DatasetLabel, Filter, Label, SortSpec, StudyFacts};

/// A study's place in the folder's listing (the order the files were found in). Stable while the
/// folder is open, whatever the sort order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StudyId(pub usize);

/// Where a study stands with the model.
#[derive(Clone, Debug, PartialEq)]
pub enum ScoreState {
    /// Not scored yet.
    Pending,
    /// The model's pneumonia probability, between 0 and 1.
    Scored(f32),
    /// The study could not be read or scored; the reason, in words for the reader.
    Failed(String),
}

/// Where a study stands with the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReviewState {
    /// No reader label is in force.
    Unreviewed,
    /// The reader's label equals the AI label.
    Confirmed,
    /// The reader's label differs from the AI label.
    Overridden,
    /// The reader set a label and there is no AI label to compare it with.
    Labelled,
    /// The reader recorded that the study was read elsewhere (no label here).
    ReadElsewhere,
    /// The reader recorded that the study is not a chest film (no label).
    NotChestFilm,
}

impl ReviewState {
    /// The state in one word, as the worklist shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreviewed => "unreviewed",
            Self::Confirmed => "confirmed",
            Self::Overridden => "overridden",
            Self::Labelled => "labelled",
            Self::ReadElsewhere => "read elsewhere",
            Self::NotChestFilm => "not a chest film",
        }
    }

    /// Whether a reader's decision is in force (a label, or "read elsewhere" / "not a chest
    /// film").
    pub fn is_reviewed(self) -> bool {
        self != Self::Unreviewed
    }
}

impl fmt::Display for ReviewState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision that closes a study without a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Read elsewhere (another system, on film).
    ReadElsewhere,
    /// Not a chest film: the model's label does not apply.
    NotChestFilm,
}

/// One study of the worklist.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyRow {
    /// The study's place in the folder's listing.
    pub id: StudyId,
    /// Where the file is.
    pub path: PathBuf,
    /// The path relative to the opened folder, for display.
    pub name: String,
    /// SHA-256 of the file (its identity in the decision store), once it has been read.
    pub sha256: Option<String>,
    /// DICOM patient ID, when the file carries one.
    pub patient_id: Option<String>,
    /// DICOM study instance UID, when the file carries one.
    pub study_uid: Option<String>,
    /// The model's score, or why there is none.
    pub score: ScoreState,
    /// The label the dataset already gives the study (label-correction mode).
    pub dataset_label: Option<DatasetLabel>,
    /// The reader's label in force, from the decision store (`None`: unreviewed, or closed
    /// without a label: see `disposition`).
    pub final_label: Option<Label>,
    /// "Read elsewhere" or "not a chest film", when that is the reader's decision in force.
    pub disposition: Option<Disposition>,
    /// Why the study is outside what the model has seen, when its attributes say so.
    pub scope_warning: Option<String>,
    /// The file's bytes no longer have the hash it was scored with (it was replaced on disk):
    /// it is not shown and cannot be decided until the folder is opened again.
    pub changed: bool,
    /// Age, sex, study date, view position and the start of the study's wait.
    pub facts: StudyFacts,
    /// Another reader who has the study open in their window (a claim on a shared store):
    /// "next unreviewed" skips it.
    pub claimed_by: Option<String>,
    /// Another reader's call on it is queued for a second read by this window's reader (an
    /// override of the AI, or a sampled study); the first read is not shown until then.
    pub second_read_due: bool,
}

impl StudyRow {
    /// A study that has not been read yet.
    pub fn new(id: StudyId, path: PathBuf, name: String) -> Self {
        Self {
            id,
            path,
            name,
            sha256: None,
            patient_id: None,
            study_uid: None,
            score: ScoreState::Pending,
            dataset_label: None,
            final_label: None,
            disposition: None,
            scope_warning: None,
            changed: false,
            facts: StudyFacts::default(),
            claimed_by: None,
            second_read_due: false,
        }
    }

    /// The score, if the study was scored.
    pub fn score_value(&self) -> Option<f32> {
        match self.score {
            ScoreState::Scored(s) => Some(s),
            ScoreState::Pending | ScoreState::Failed(_) => None,
        }
    }

    /// Why the study could not be read or scored, if it could not.
    pub fn error(&self) -> Option<&str> {
        match &self.score {
            ScoreState::Failed(e) => Some(e),
            ScoreState::Pending | ScoreState::Scored(_) => None,
        }
    }

    /// Whether a decision can be recorded: the file was read, so its identity is known.
    pub fn can_be_decided(&self) -> bool {
        self.sha256.is_some() && !self.changed
    }

    /// How far the dataset label is from the score, |label − score|: near 1 when the model
    /// strongly disagrees with the label, which makes the study a likely label error.
    pub fn disagreement(&self) -> Option<f32> {
        let label = self.dataset_label?.label;
        Some((label.target() - self.score_value()?).abs())
    }
}

/// Why a study is outside what the model has seen (frontal chest films), from its DICOM Body
/// Part Examined and View Position and from the model's own image-based flag (`image_reason`,
/// see [`crate::model::ood`]); `None` when nothing says so (absent attributes say nothing).
pub fn scope_warning(
    body_part: Option<&str>,
    view_position: Option<&str>,
    image_reason: Option<&str>,
) -> Option<String> {
    let mut reasons = Vec::new();
    if let Some(part) = body_part.map(str::trim).filter(|p| !p.is_empty()) {
        let upper = part.to_uppercase();
        if !["CHEST", "THORAX", "LUNG"]
            .iter()
            .any(|c| upper.contains(c))
        {
            reasons.push(format!("body part {part}"));
        }
    }
    if let Some(view) = view_position.map(str::trim).filter(|v| !v.is_empty()) {
        let upper = view.to_uppercase();
        if ["LL", "RL", "LAT", "LATERAL", "LLD", "RLD"].contains(&upper.as_str()) {
            reasons.push(format!("lateral view ({view})"));
        }
    }
    reasons.extend(image_reason.map(str::to_owned));
    (!reasons.is_empty())
        .then(|| format!("Outside what the model has seen: {}", reasons.join(", ")))
}

/// How many studies are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every study of the folder.
    pub total: usize,
    /// Studies with a score.
    pub scored: usize,
    /// Studies that could not be read or scored.
    pub failed: usize,
    /// Studies still waiting for the model.
    pub pending: usize,
    /// Studies with a reader's label in force.
    pub reviewed: usize,
    /// Studies whose reader's label differs from the AI label.
    pub disagreements: usize,
    /// Studies that could not be read or scored and have no decision: a reader must read them
    /// (they are also counted as not reviewed).
    pub manual: usize,
    /// Unreviewed studies that have waited longer than the waiting-time cap (see
    /// [`Worklist::set_overdue_before`]).
    pub overdue: usize,
    /// Studies due a second read by this reader.
    pub second_reads: usize,
}

impl Counts {
    /// The number of studies a filter keeps.
    pub fn of(&self, filter: Filter) -> usize {
        match filter {
            Filter::All => self.total,
            Filter::Unreviewed => self.total - self.reviewed,
            Filter::Disagreements => self.disagreements,
            Filter::Errors => self.failed,
            Filter::SecondReads => self.second_reads,
        }
    }
}

/// The studies of one opened folder, with the threshold that turns scores into AI labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Worklist {
    rows: Vec<StudyRow>,
    threshold: Option<f32>,
    /// Studies that began waiting before this time and are still unreviewed are overdue.
    overdue_before: Option<SystemTime>,
}

impl Worklist {
    /// A worklist of `rows`; each row's id is set to its position. `threshold` is the model's
    /// (none without a model).
    pub fn new(mut rows: Vec<StudyRow>, threshold: Option<f32>) -> Self {
        for (i, row) in rows.iter_mut().enumerate() {
            row.id = StudyId(i);
        }
        Self {
            rows,
            threshold,
            overdue_before: None,
        }
    }

    /// Every row, in listing order.
    pub fn rows(&self) -> &[StudyRow] {
        &self.rows
    }

    /// The row of a study.
    pub fn row(&self, id: StudyId) -> Option<&StudyRow> {
        self.rows.get(id.0)
    }

    /// The row of a study, to update it.
    pub fn row_mut(&mut self, id: StudyId) -> Option<&mut StudyRow> {
        self.rows.get_mut(id.0)
    }

    /// The number of studies.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the folder holds no study.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The threshold in force: a score at or above it is called pneumonia.
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// Sets the threshold (when the model is loaded after the folder was listed).
    pub fn set_threshold(&mut self, threshold: Option<f32>) {
        self.threshold = threshold;
    }

    /// The AI label of a row: its score at the threshold, when both exist.
    pub fn ai_label(&self, row: &StudyRow) -> Option<Label> {
        Some(Label::from_score(row.score_value()?, self.threshold?))
    }

    /// Where the row stands with the reader.
    pub fn review_state(&self, row: &StudyRow) -> ReviewState {
        match row.disposition {
            Some(Disposition::ReadElsewhere) => return ReviewState::ReadElsewhere,
            Some(Disposition::NotChestFilm) => return ReviewState::NotChestFilm,
            None => {}
        }
        match (row.final_label, self.ai_label(row)) {
            (None, _) => ReviewState::Unreviewed,
            (Some(_), None) => ReviewState::Labelled,
            (Some(f), Some(ai)) if f == ai => ReviewState::Confirmed,
            (Some(_), Some(_)) => ReviewState::Overridden,
        }
    }

    /// Sets the reader's label of every row whose file has this SHA-256 (identical copies share
    /// their decisions). Returns how many rows changed.
    pub fn set_final_label(&mut self, sha256: &str, label: Option<Label>) -> usize {
        self.set_decision(sha256, label, None)
    }

    /// Sets the reader's decision in force (a label, or a disposition without one) of every row
    /// whose file has this SHA-256. Returns how many rows changed.
    pub fn set_decision(
        &mut self,
        sha256: &str,
        label: Option<Label>,
        disposition: Option<Disposition>,
    ) -> usize {
        let mut changed = 0;
        for row in &mut self.rows {
            if row.sha256.as_deref() == Some(sha256)
                && (row.final_label != label || row.disposition != disposition)
            {
                row.final_label = label;
                row.disposition = disposition;
                changed += 1;
            }
        }
        changed
    }

    /// Whether a study could not be read or scored and has no decision: the reader must read
    /// it, so the worklist shows it at the top.
    pub fn needs_manual_read(&self, row: &StudyRow) -> bool {
        row.error().is_some() && !self.review_state(row).is_reviewed()
    }

    /// Whether a study has waited past the waiting-time cap without a decision: the worklist
    /// shows it at the top (after the studies that need a manual read) whatever its score, so
    /// that a low score never leaves a study waiting for ever.
    pub fn is_overdue(&self, row: &StudyRow) -> bool {
        match (self.overdue_before, row.facts.waiting_since) {
            (Some(cutoff), Some((since, _))) => {
                since < cutoff
                    && !self.needs_manual_read(row)
                    && !self.review_state(row).is_reviewed()
            }
            _ => false,
        }
    }

    /// Sets the waiting-time cap's cut-off: `now` less the site's limit (`None`: no cap).
    /// Returns whether any study became overdue or stopped being so (the order then changes).
    pub fn set_overdue_before(&mut self, cutoff: Option<SystemTime>) -> bool {
        if cutoff == self.overdue_before {
            return false;
        }
        let before: Vec<bool> = self.rows.iter().map(|r| self.is_overdue(r)).collect();
        self.overdue_before = cutoff;
        self.rows
            .iter()
            .zip(before)
            .any(|(r, was)| self.is_overdue(r) != was)
    }

    /// The cut-off in force (see [`Worklist::set_overdue_before`]).
    pub fn overdue_before(&self) -> Option<SystemTime> {
        self.overdue_before
    }

    /// Whether every study of the folder has a decision in force.
    pub fn all_reviewed(&self) -> bool {
        self.rows.iter().all(|r| self.review_state(r).is_reviewed())
    }

    /// Whether any study carries a dataset label (the label-correction columns are shown).
    pub fn has_dataset_labels(&self) -> bool {
        self.rows.iter().any(|r| r.dataset_label.is_some())
    }

    /// How many studies are in each state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            total: self.rows.len(),
            ..Counts::default()
        };
        for row in &self.rows {
            self.tally(row, &mut c, true);
        }
        c
    }

    /// Adds `row`'s states to `c` (or takes them away), all but the total.
    pub(super) fn tally(&self, row: &StudyRow, c: &mut Counts, add: bool) {
        let step = |n: &mut usize| {
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
        };
        match row.score {
            ScoreState::Pending => step(&mut c.pending),
            ScoreState::Scored(_) => step(&mut c.scored),
            ScoreState::Failed(_) => step(&mut c.failed),
        }
        if self.needs_manual_read(row) {
            step(&mut c.manual);
        }
        if self.is_overdue(row) {
            step(&mut c.overdue);
        }
        if row.second_read_due {
            step(&mut c.second_reads);
        }
        match self.review_state(row) {
            ReviewState::Unreviewed => {}
            // A first read queued for this reader's second read is not shown as a disagreement.
            ReviewState::Overridden if row.second_read_due => step(&mut c.reviewed),
            ReviewState::Overridden => {
                step(&mut c.reviewed);
                step(&mut c.disagreements);
            }
            ReviewState::Confirmed
            | ReviewState::Labelled
            | ReviewState::ReadElsewhere
            | ReviewState::NotChestFilm => step(&mut c.reviewed),
        }
    }

    /// The order of two studies in a view: those that need a manual read first, then those
    /// overdue ([`Worklist::is_overdue`]), each group in the order of `sort`.
    pub(super) fn view_order(&self, sort: SortSpec, a: StudyId, b: StudyId) -> std::cmp::Ordering {
        let (ra, rb) = (&self.rows[a.0], &self.rows[b.0]);
        self.needs_manual_read(rb)
            .cmp(&self.needs_manual_read(ra))
            .then_with(|| self.is_overdue(rb).cmp(&self.is_overdue(ra)))
            .then_with(|| sort.compare(self, ra, rb))
    }

    /// The order of two scored studies by score, highest first, ties in listing order.
    pub(super) fn score_order(&self, a: StudyId, b: StudyId) -> std::cmp::Ordering {
        let score = |id: StudyId| self.rows[id.0].score_value().unwrap_or(f32::NEG_INFINITY);
        score(b).total_cmp(&score(a)).then(a.cmp(&b))
    }

    /// The studies `filter` keeps, in the order `sort` gives, after the group of studies that
    /// need a manual read ([`needs_manual_read`](Self::needs_manual_read)) and then the group
    /// of overdue ones ([`is_overdue`](Self::is_overdue)): whatever the sort, a study no model
    /// could read, or one that has waited too long, is never moved out of sight.
    pub fn view(&self, sort: SortSpec, filter: Filter) -> Vec<StudyId> {
        let mut ids: Vec<StudyId> = self
            .rows
            .iter()
            .filter(|r| filter.keeps(self, r))
            .map(|r| r.id)
            .collect();
        ids.sort_by(|&a, &b| self.view_order(sort, a, b));
        ids
    }

    /// The other studies of the same patient (same DICOM patient ID), best score first.
    pub fn same_patient(&self, id: StudyId) -> Vec<StudyId> {
        let Some(patient) = self.row(id).and_then(|r| r.patient_id.as_deref()) else {
            return Vec::new();
        };
        let mut ids: Vec<StudyId> = self
            .rows
            .iter()
            .filter(|r| r.id != id && r.patient_id.as_deref() == Some(patient))
            .map(|r| r.id)
            .collect();
        ids.sort_by(|a, b| SortSpec::default().compare(self, &self.rows[a.0], &self.rows[b.0]));
        ids
    }

    /// The first study after `after` in `view` (wrapping around) that has no decision, including
    /// those that could not be read (a reader must read them). With no `after`, the first such
    /// study of the view.
    pub fn next_unreviewed(&self, view: &[StudyId], after: Option<StudyId>) -> Option<StudyId> {
        let start = after
            .and_then(|a| view.iter().position(|&id| id == a))
            .map_or(0, |p| p + 1);
        let n = view.len();
        (0..n)
            .map(|k| view[(start + k) % n])
            .filter(|&id| Some(id) != after)
            .find(|&id| {
                self.row(id)
                    .is_some_and(|r| !self.review_state(r).is_reviewed() && r.claimed_by.is_none())
            })
    }

    /// Marks the studies due a second read by this reader (by SHA-256). Returns whether any row
    /// changed (the filter of second reads and the counts change with it).
    pub fn set_second_reads(&mut self, due: &std::collections::HashSet<String>) -> bool {
        let mut changed = false;
        for row in &mut self.rows {
            let now = row.sha256.as_ref().is_some_and(|s| due.contains(s));
            changed |= row.second_read_due != now;
            row.second_read_due = now;
        }
        changed
    }

    /// Sets which studies other readers have open (SHA-256 to reader); the others are free.
    pub fn set_claims(&mut self, others: &std::collections::HashMap<String, String>) {
        for row in &mut self.rows {
            row.claimed_by = row.sha256.as_ref().and_then(|s| others.get(s)).cloned();
        }
    }

    /// A warning when the model gives (nearly) the same score to every study: the sign of
    /// images the model cannot read (wrong kind of image, broken preprocessing). Needs at least
    /// 20 scored studies.
    pub fn uniform_scores_warning(&self) -> Option<String> {
        let scores: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|r| r.score_value().map(f64::from))
            .collect();
        if scores.len() < 20 {
            return None;
        }
        let n = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let sd = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
        (sd < 0.01).then(|| {
            format!(
                "The model gave all {} scored studies nearly the same score ({mean:.3} ± {sd:.3}). \
                 These images may be of a kind it cannot read (not frontal chest films?): do not \
                 rely on the ranking.",
                scores.len()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worklist::LabelSource;

    fn row(name: &str, score: Option<f32>) -> StudyRow {
        let mut r = StudyRow::new(StudyId(0), PathBuf::from(name), name.to_owned());
        if let Some(s) = score {
            r.score = ScoreState::Scored(s);
            r.sha256 = Some(format!("{name:0>64}"));
        }
        r
    }

    #[test]
    fn studies_past_the_waiting_cap_come_first_whatever_their_score() {
        use crate::worklist::{SortKey, WaitingSince};
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let mins = |m: u64| t0 + std::time::Duration::from_secs(m * 60);
        // Waiting since minute 0, 10, 50 and 70; one decided, one unreadable.
        let mut rows = vec![
            row("high", Some(0.9)),
            row("low-old", Some(0.1)),
            row("mid", Some(0.5)),
            row("low-older", Some(0.05)),
            row("decided-old", Some(0.2)),
            row("unreadable", None),
        ];
        for (r, m) in rows.iter_mut().zip([70, 10, 50, 0, 0, 0]) {
            r.facts.waiting_since = Some((mins(m), WaitingSince::FileModified));
        }
        rows[4].final_label = Some(Label::Normal);
        rows[5].score = ScoreState::Failed("unreadable".to_owned());
        let mut w = Worklist::new(rows, Some(0.5));
        let names = |w: &Worklist, sort| -> Vec<String> {
            w.view(sort, Filter::All)
                .iter()
                .map(|&id| w.row(id).unwrap().name.clone())
                .collect()
        };
        let by_score = SortSpec::default();
        assert_eq!(
            names(&w, by_score),
            [
                "unreadable",
                "high",
                "mid",
                "decided-old",
                "low-old",
                "low-older"
            ]
        );
        assert!(!w.set_overdue_before(None), "no cap, no change");
        // At minute 75 with a 60-minute cap: those waiting since before minute 15 are overdue,
        // by score among themselves; the decided and the unreadable study are not.
        assert!(w.set_overdue_before(Some(mins(15))));
        assert_eq!(
            names(&w, by_score),
            [
                "unreadable",
                "low-old",
                "low-older",
                "high",
                "mid",
                "decided-old"
            ]
        );
        assert_eq!(w.counts().overdue, 2);
        // The group holds whatever the sort.
        let by_name = by_score.clicked(SortKey::Name);
        assert_eq!(
            names(&w, by_name),
            [
                "unreadable",
                "low-old",
                "low-older",
                "decided-old",
                "high",
                "mid"
            ]
        );
        // A later cut-off that moves no study changes nothing; one that does is reported.
        assert!(!w.set_overdue_before(Some(mins(20))));
        assert!(w.set_overdue_before(Some(mins(55))));
        assert_eq!(w.counts().overdue, 3);
        // A decision takes the study out of the group.
        w.row_mut(StudyId(1)).unwrap().final_label = Some(Label::Normal);
        assert_eq!(w.counts().overdue, 2);
        assert_eq!(names(&w, by_score)[..3], ["unreadable", "mid", "low-older"]);
    }

    #[test]
    fn ai_label_and_review_state_follow_the_threshold() {
        let mut w = Worklist::new(
            vec![row("a", Some(0.9)), row("b", Some(0.1)), row("c", None)],
            Some(0.5),
        );
        let a = w.row(StudyId(0)).unwrap().clone();
        assert_eq!(w.ai_label(&a), Some(Label::Pneumonia));
        assert_eq!(w.review_state(&a), ReviewState::Unreviewed);
        w.row_mut(StudyId(0)).unwrap().final_label = Some(Label::Pneumonia);
        w.row_mut(StudyId(1)).unwrap().final_label = Some(Label::Pneumonia);
        w.row_mut(StudyId(2)).unwrap().final_label = Some(Label::Normal);
        let states: Vec<ReviewState> = w.rows().iter().map(|r| w.review_state(r)).collect();
        assert_eq!(
            states,
            [
                ReviewState::Confirmed,
                ReviewState::Overridden,
                ReviewState::Labelled
            ]
        );
        let c = w.counts();
        assert_eq!((c.total, c.scored, c.pending, c.reviewed), (3, 2, 1, 3));
        assert_eq!(c.disagreements, 1);
        assert_eq!(c.of(Filter::Unreviewed), 0);
    }

    #[test]
    fn identical_files_share_their_label() {
        let mut a = row("a", Some(0.9));
        let mut b = row("b", Some(0.9));
        b.sha256.clone_from(&a.sha256);
        a.final_label = None;
        let sha = a.sha256.clone().unwrap();
        let mut w = Worklist::new(vec![a, b, row("c", Some(0.2))], Some(0.5));
        assert_eq!(w.set_final_label(&sha, Some(Label::Normal)), 2);
        assert_eq!(w.set_final_label(&sha, Some(Label::Normal)), 0);
        assert_eq!(w.row(StudyId(2)).unwrap().final_label, None);
    }

    #[test]
    fn ranks_go_by_score_and_skip_unscored_studies() {
        let w = Worklist::new(
            vec![
                row("a", Some(0.2)),
                row("b", None),
                row("c", Some(0.8)),
                row("d", Some(0.2)),
            ],
            Some(0.5),
        );
        let order = crate::worklist::Order::build(&w, SortSpec::default(), Filter::All);
        assert_eq!(order.ranks, vec![Some(2), None, Some(1), Some(3)]);
    }

    #[test]
    fn next_unreviewed_wraps_skips_reviewed_studies_and_keeps_unreadable_ones() {
        let mut w = Worklist::new(
            vec![
                row("a", Some(0.9)),
                row("b", Some(0.8)),
                row("c", None),
                row("d", Some(0.1)),
                row("e", None),
            ],
            Some(0.5),
        );
        w.row_mut(StudyId(2)).unwrap().score = ScoreState::Failed("not an image".into());
        w.row_mut(StudyId(1)).unwrap().final_label = Some(Label::Pneumonia);
        let view = w.view(SortSpec::default(), Filter::All);
        // The unreadable study first ("needs a manual read"), then by score, pending last.
        assert_eq!(
            view,
            [StudyId(2), StudyId(0), StudyId(1), StudyId(3), StudyId(4)]
        );
        assert_eq!(w.next_unreviewed(&view, Some(StudyId(0))), Some(StudyId(3)));
        // After the last study, wrap to the first: the unreadable one is not skipped.
        assert_eq!(w.next_unreviewed(&view, Some(StudyId(4))), Some(StudyId(2)));
        assert_eq!(w.next_unreviewed(&view, Some(StudyId(2))), Some(StudyId(0)));
        assert_eq!(w.counts().manual, 1);
        assert!(!w.all_reviewed());
        // Read elsewhere: reviewed, out of the manual group, no label.
        let sha = "c".repeat(64);
        w.row_mut(StudyId(2)).unwrap().sha256 = Some(sha.clone());
        assert_eq!(
            w.set_decision(&sha, None, Some(Disposition::ReadElsewhere)),
            1
        );
        let c = w.row(StudyId(2)).unwrap().clone();
        assert_eq!(w.review_state(&c), ReviewState::ReadElsewhere);
        assert!(!w.needs_manual_read(&c));
        assert_eq!(w.counts().manual, 0);
        let view = w.view(SortSpec::default(), Filter::All);
        assert_eq!(view[0], StudyId(0));
        for id in [0, 3, 4] {
            w.row_mut(StudyId(id)).unwrap().final_label = Some(Label::Normal);
        }
        assert!(w.all_reviewed());
        assert_eq!(w.next_unreviewed(&view, None), None);
    }

    #[test]
    fn disagreement_is_the_distance_between_label_and_score() {
        let mut r = row("a", Some(0.9));
        assert_eq!(r.disagreement(), None);
        r.dataset_label = Some(DatasetLabel {
            label: Label::Normal,
            source: LabelSource::FolderName,
        });
        assert!((r.disagreement().unwrap() - 0.9).abs() < 1e-6);
        r.dataset_label = Some(DatasetLabel {
            label: Label::Pneumonia,
            source: LabelSource::FolderName,
        });
        assert!((r.disagreement().unwrap() - 0.1).abs() < 1e-6);
    }

    #[test]
    fn uniform_scores_are_flagged_and_spread_scores_are_not() {
        let same: Vec<StudyRow> = (0..25)
            .map(|i| row(&format!("s{i}"), Some(0.731)))
            .collect();
        assert!(
            Worklist::new(same, Some(0.5))
                .uniform_scores_warning()
                .is_some()
        );
        let spread: Vec<StudyRow> = (0..25)
            .map(|i| row(&format!("s{i}"), Some(i as f32 / 25.0)))
            .collect();
        assert!(
            Worklist::new(spread, Some(0.5))
                .uniform_scores_warning()
                .is_none()
        );
    }

    #[test]
    fn non_chest_and_lateral_films_are_flagged() {
        assert_eq!(scope_warning(Some("CHEST"), Some("PA"), None), None);
        assert_eq!(scope_warning(None, None, None), None);
        assert_eq!(scope_warning(Some(" thorax "), Some("AP"), None), None);
        assert_eq!(
            scope_warning(Some("EXTREMITY"), None, None).as_deref(),
            Some("Outside what the model has seen: body part EXTREMITY")
        );
        assert_eq!(
            scope_warning(Some("CHEST"), Some("LL"), None).as_deref(),
            Some("Outside what the model has seen: lateral view (LL)")
        );
        assert_eq!(
            scope_warning(
                None,
                None,
                Some("unlike the films the model was trained on")
            )
            .as_deref(),
            Some("Outside what the model has seen: unlike the films the model was trained on")
        );
        assert_eq!(
            scope_warning(
                Some("HAND"),
                None,
                Some("unlike the films the model was trained on")
            )
            .as_deref(),
            Some(
                "Outside what the model has seen: body part HAND, unlike the films the model \
                 was trained on"
            )
        );
    }

    #[test]
    fn same_patient_lists_other_studies_of_that_patient_only() {
        let mut rows = vec![
            row("a", Some(0.2)),
            row("b", Some(0.9)),
            row("c", Some(0.5)),
        ];
        rows[0].patient_id = Some("P1".into());
        rows[1].patient_id = Some("P2".into());
        rows[2].patient_id = Some("P1".into());
        let w = Worklist::new(rows, Some(0.5));
        assert_eq!(w.same_patient(StudyId(0)), [StudyId(2)]);
        assert!(w.same_patient(StudyId(1)).is_empty());
    }
}
