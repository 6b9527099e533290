//! The worklist's order, each study's rank by score and the counts, kept up to date as batches
//! of scores arrive, without sorting the whole folder again for every batch (at 50,000 studies a
//! full sort per batch cost more than a frame).

use std::collections::HashSet;

use super::{Counts, Filter, SortSpec, StudyId, Worklist};

/// What the window shows of a worklist for one sort and filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Order {
    /// The studies the filter keeps, in order (see [`Worklist::view`]).
    pub view: Vec<StudyId>,
    /// Each study's rank by score (1 is the highest; ties in listing order), `None` for studies
    /// without a score. Indexed by [`StudyId`].
    pub ranks: Vec<Option<usize>>,
    /// How many studies are in each state (see [`Worklist::counts`]).
    pub counts: Counts,
    /// The scored studies, highest score first.
    by_score: Vec<StudyId>,
}

impl Order {
    /// The order of `w` from scratch.
    pub fn build(w: &Worklist, sort: SortSpec, filter: Filter) -> Self {
        let mut by_score: Vec<StudyId> = w
            .rows()
            .iter()
            .filter(|r| r.score_value().is_some())
            .map(|r| r.id)
            .collect();
        by_score.sort_by(|&a, &b| w.score_order(a, b));
        let mut order = Self {
            view: w.view(sort, filter),
            ranks: Vec::new(),
            counts: w.counts(),
            by_score,
        };
        order.rank(w.len());
        order
    }

    /// Takes the `changed` studies out, before their rows change (`w` as it still is).
    pub fn remove(&mut self, w: &Worklist, changed: &[StudyId]) {
        let set: HashSet<StudyId> = changed.iter().copied().collect();
        self.view.retain(|id| !set.contains(id));
        self.by_score.retain(|id| !set.contains(id));
        for &id in &set {
            if let Some(row) = w.row(id) {
                w.tally(row, &mut self.counts, false);
            }
        }
    }

    /// Puts the `changed` studies back, after their rows changed (`w` as it is now): the result
    /// is what [`Order::build`] gives.
    pub fn insert(&mut self, w: &Worklist, sort: SortSpec, filter: Filter, changed: &[StudyId]) {
        let set: HashSet<StudyId> = changed.iter().copied().collect();
        for &id in &set {
            let Some(row) = w.row(id) else { continue };
            w.tally(row, &mut self.counts, true);
            if filter.keeps(w, row) {
                let at = self
                    .view
                    .partition_point(|&x| w.view_order(sort, x, id).is_lt());
                self.view.insert(at, id);
            }
            if row.score_value().is_some() {
                let at = self
                    .by_score
                    .partition_point(|&x| w.score_order(x, id).is_lt());
                self.by_score.insert(at, id);
            }
        }
        self.rank(w.len());
    }

    fn rank(&mut self, n: usize) {
        self.ranks.clear();
        self.ranks.resize(n, None);
        for (rank, id) in self.by_score.iter().enumerate() {
            if let Some(r) = self.ranks.get_mut(id.0) {
                *r = Some(rank + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::worklist::{ScoreState, SortKey, StudyRow};

    /// A worklist of `n` pending studies with names out of order.
    fn worklist(n: usize) -> Worklist {
        let rows = (0..n)
            .map(|i| {
                let name = format!("study-{:03}.png", (i * 37) % n);
                StudyRow::new(StudyId(0), PathBuf::from(format!("/w/{name}")), name)
            })
            .collect();
        Worklist::new(rows, Some(0.5))
    }

    #[test]
    fn batches_of_scores_give_the_order_a_full_sort_gives() {
        for (sort, filter) in [
            (SortSpec::default(), Filter::All),
            (SortSpec::default().clicked(SortKey::Name), Filter::All),
            (SortSpec::default().clicked(SortKey::Score), Filter::Errors),
            (
                SortSpec::default().clicked(SortKey::AiLabel),
                Filter::Unreviewed,
            ),
        ] {
            let mut w = worklist(300);
            let mut order = Order::build(&w, sort, filter);
            // Batches of 32 in listing order, some equal scores, some failures.
            for batch in (0..300).collect::<Vec<_>>().chunks(32) {
                let ids: Vec<StudyId> = batch.iter().map(|&i| StudyId(i)).collect();
                order.remove(&w, &ids);
                for &i in batch {
                    let row = w.row_mut(StudyId(i)).unwrap();
                    row.score = if i % 23 == 5 {
                        ScoreState::Failed("unreadable".to_owned())
                    } else {
                        ScoreState::Scored(((i * 7919) % 101) as f32 / 100.0)
                    };
                }
                order.insert(&w, sort, filter, &ids);
                assert_eq!(order, Order::build(&w, sort, filter), "{sort:?} {filter:?}");
            }
            assert_eq!(order.counts.pending, 0);
            assert_eq!(order.counts.failed, 13);
        }
    }
}
