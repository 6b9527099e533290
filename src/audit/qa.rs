//! Quality assurance from the decision log: how readers agree with the AI and with each other,
//! per reader and per month, and the studies where two readers disagree.
//!
//! A reader's call on a study is the label in force after that reader's latest event on it (a
//! confirm, override, relabel or blind call; after an undo, the label it restored, or none).
//! Reader–AI agreement pairs each call with the AI label shown with it (blind calls and imports
//! carry none and are left out). Reader–reader agreement pairs the calls of the first two readers
//! of each study that two or more readers called.

use std::collections::BTreeMap;

use rand::{RngExt as _, SeedableRng as _};

use super::{Action, AuditError, DecisionEvent, DecisionStore};
use crate::model::local::cohen_kappa;
use crate::model::metrics::{Confusion, Interval};
use crate::worklist::Label;

/// Bootstrap resamples for the kappa intervals.
const RESAMPLES: usize = 1000;

/// Agreement between two raters over paired calls.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Agreement {
    /// Paired calls.
    pub pairs: usize,
    /// Share of pairs that agree.
    pub observed: f64,
    /// Cohen's kappa with a 95% percentile bootstrap interval (NaN when undefined).
    pub kappa: Interval,
}

impl Agreement {
    /// The agreement of `pairs` (first rater, second rater; `true` for pneumonia).
    pub fn of(pairs: &[(bool, bool)], seed: u64) -> Self {
        let kappa_of = |pairs: &mut dyn Iterator<Item = (bool, bool)>| {
            let mut c = Confusion::default();
            for (a, b) in pairs {
                match (a, b) {
                    (true, true) => c.tp += 1,
                    (true, false) => c.fp += 1,
                    (false, false) => c.tn += 1,
                    (false, true) => c.fn_ += 1,
                }
            }
            cohen_kappa(&c)
        };
        let estimate = kappa_of(&mut pairs.iter().copied());
        let mut interval = Interval {
            estimate,
            low: f64::NAN,
            high: f64::NAN,
        };
        if pairs.len() >= 2 {
            let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut kappas: Vec<f64> = (0..RESAMPLES)
                .map(|_| {
                    kappa_of(&mut (0..pairs.len()).map(|_| pairs[rng.random_range(0..pairs.len())]))
                })
                .filter(|k| k.is_finite())
                .collect();
            kappas.sort_by(f64::total_cmp);
            if !kappas.is_empty() {
                let at = |q: f64| kappas[((q * (kappas.len() - 1) as f64).round()) as usize];
                interval.low = at(0.025);
                interval.high = at(0.975);
            }
        }
        let agree = pairs.iter().filter(|(a, b)| a == b).count();
        Self {
            pairs: pairs.len(),
            observed: if pairs.is_empty() {
                f64::NAN
            } else {
                agree as f64 / pairs.len() as f64
            },
            kappa: interval,
        }
    }
}

/// One reader's agreement with the AI, overall and per month.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReaderQa {
    /// The reader.
    pub reader: String,
    /// Studies the reader called.
    pub calls: usize,
    /// Calls that override the AI label shown.
    pub overrides: usize,
    /// Agreement with the AI label shown with each call.
    pub with_ai: Agreement,
    /// The same per month of the call (`YYYY-MM`).
    pub by_month: BTreeMap<String, Agreement>,
}

/// A study two readers called differently.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Disagreement {
    /// The study.
    pub study_sha256: String,
    /// Where its file was at the last call.
    pub path: String,
    /// The first reader and their call (`NORMAL` or `PNEUMONIA`).
    pub first: (String, String),
    /// The second reader and their call.
    pub second: (String, String),
}

/// The QA report of a store.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QaReport {
    /// Events read.
    pub events: usize,
    /// Per reader.
    pub readers: Vec<ReaderQa>,
    /// Every reader's calls against the AI.
    pub all_with_ai: Agreement,
    /// The first two readers of each study that two or more readers called.
    pub reader_reader: Agreement,
    /// Those studies where the two calls differ: the disagreement queue.
    pub disagreements: Vec<Disagreement>,
    /// Blind-first reading (see [`super::BlindFirstSummary`]).
    pub blind_first: super::BlindFirstSummary,
}

/// A reader's call on a study: the label and the AI label shown with it, when.
#[derive(Clone, Debug)]
struct Call {
    label: Label,
    ai: Option<Label>,
    at: String,
    first_at: String,
    path: String,
}

impl QaReport {
    /// Builds the report from every event of the log, oldest first.
    pub fn from_events(events: &[DecisionEvent], blind_first: super::BlindFirstSummary) -> Self {
        // (study, reader) -> the reader's call in force; BTreeMap for a stable order.
        let mut calls: BTreeMap<(String, String), Option<Call>> = BTreeMap::new();
        for e in events {
            let key = (e.study_sha256.clone(), e.reader.clone());
            let first_at = calls
                .get(&key)
                .and_then(|c| c.as_ref().map(|c| c.first_at.clone()))
                .unwrap_or_else(|| e.decided_at.clone());
            let call = match (e.action, e.new_label) {
                (Action::ReadElsewhere | Action::NotChestFilm, _) | (_, None) => None,
                (_, Some(label)) => Some(Call {
                    label,
                    ai: e.ai_label.filter(|_| e.action != Action::Undo),
                    at: e.decided_at.clone(),
                    first_at,
                    path: e.study_path.display().to_string(),
                }),
            };
            calls.insert(key, call);
        }
        let pneumonia = |l: Label| l == Label::Pneumonia;
        let mut per_reader: BTreeMap<String, Vec<&Call>> = BTreeMap::new();
        let mut per_study: BTreeMap<&str, Vec<(&str, &Call)>> = BTreeMap::new();
        for ((study, reader), call) in &calls {
            if let Some(call) = call {
                per_reader.entry(reader.clone()).or_default().push(call);
                per_study.entry(study).or_default().push((reader, call));
            }
        }
        let mut all_pairs = Vec::new();
        let readers = per_reader
            .iter()
            .enumerate()
            .map(|(i, (reader, calls))| {
                let pairs: Vec<(bool, bool)> = calls
                    .iter()
                    .filter_map(|c| Some((pneumonia(c.label), pneumonia(c.ai?))))
                    .collect();
                all_pairs.extend_from_slice(&pairs);
                let mut months: BTreeMap<String, Vec<(bool, bool)>> = BTreeMap::new();
                for c in calls {
                    if let Some(ai) = c.ai {
                        let month = c.at.get(..7).unwrap_or_default().to_owned();
                        months
                            .entry(month)
                            .or_default()
                            .push((pneumonia(c.label), pneumonia(ai)));
                    }
                }
                ReaderQa {
                    reader: reader.clone(),
                    calls: calls.len(),
                    overrides: calls
                        .iter()
                        .filter(|c| c.ai.is_some_and(|ai| ai != c.label))
                        .count(),
                    with_ai: Agreement::of(&pairs, 7 + i as u64),
                    by_month: months
                        .into_iter()
                        .map(|(m, p)| {
                            let a = Agreement::of(&p, 11);
                            (m, a)
                        })
                        .collect(),
                }
            })
            .collect();
        let mut rr_pairs = Vec::new();
        let mut disagreements = Vec::new();
        for (study, mut calls) in per_study {
            if calls.len() < 2 {
                continue;
            }
            calls.sort_by(|a, b| a.1.first_at.cmp(&b.1.first_at).then(a.0.cmp(b.0)));
            let ((r1, c1), (r2, c2)) = (calls[0], calls[1]);
            rr_pairs.push((pneumonia(c1.label), pneumonia(c2.label)));
            if c1.label != c2.label {
                disagreements.push(Disagreement {
                    study_sha256: study.to_owned(),
                    path: c2.path.clone(),
                    first: (r1.to_owned(), c1.label.as_str().to_owned()),
                    second: (r2.to_owned(), c2.label.as_str().to_owned()),
                });
            }
        }
        Self {
            events: events.len(),
            readers,
            all_with_ai: Agreement::of(&all_pairs, 3),
            reader_reader: Agreement::of(&rr_pairs, 5),
            disagreements,
            blind_first,
        }
    }

    /// The report in words, for the terminal.
    pub fn text(&self) -> String {
        let fmt = |a: &Agreement| {
            if a.pairs == 0 {
                "no paired calls".to_owned()
            } else if a.kappa.estimate.is_nan() {
                format!(
                    "{} pairs, {:.1}% agree, kappa undefined (one rater called only one label)",
                    a.pairs,
                    a.observed * 100.0
                )
            } else {
                format!(
                    "{} pairs, {:.1}% agree, Cohen's kappa {:.3} (95% CI {:.3} to {:.3})",
                    a.pairs,
                    a.observed * 100.0,
                    a.kappa.estimate,
                    a.kappa.low,
                    a.kappa.high
                )
            }
        };
        let mut out = format!("{} events\n", self.events);
        out.push_str(&format!("readers and AI: {}\n", fmt(&self.all_with_ai)));
        for r in &self.readers {
            out.push_str(&format!(
                "  {}: {} studies called, {} overriding the AI; with the AI: {}\n",
                r.reader,
                r.calls,
                r.overrides,
                fmt(&r.with_ai)
            ));
            for (month, a) in &r.by_month {
                out.push_str(&format!("    {month}: {}\n", fmt(a)));
            }
        }
        out.push_str(&format!(
            "reader and reader (first two readers of each study read twice): {}\n",
            fmt(&self.reader_reader)
        ));
        out.push_str(&format!(
            "disagreement queue: {} studies\n",
            self.disagreements.len()
        ));
        for d in &self.disagreements {
            out.push_str(&format!(
                "  {}: {} {} / {} {}\n",
                crate::output::terminal_text(&d.path),
                d.first.0,
                d.first.1,
                d.second.0,
                d.second.1
            ));
        }
        if let Some(line) = self.blind_first.text() {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// The share of studies sent for a second read besides every override, unless a site sets
/// another: 5%.
pub const DEFAULT_SECOND_READ_SHARE: f64 = 0.05;

/// Whether a study falls in the sampled `share` of second reads. Decided by its hash, so that
/// every window and every run picks the same studies.
pub fn sampled_for_second_read(sha256: &str, share: f64) -> bool {
    sha256
        .get(..8)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .is_some_and(|v| f64::from(v) / f64::from(u32::MAX) < share)
}

/// The studies due a second read by `reader`, from the log's events (oldest first): those one
/// other reader has called, where that reader's call in force overrides the AI, or that fall in
/// the sampled `share`.
pub fn second_reads_due(
    events: &[DecisionEvent],
    reader: &str,
    share: f64,
) -> std::collections::HashSet<String> {
    #[derive(Default)]
    struct Study<'a> {
        first: Option<&'a str>,
        readers: Vec<&'a str>,
        first_reader_last: Option<(Action, Option<Label>)>,
    }
    let mut studies: BTreeMap<&str, Study<'_>> = BTreeMap::new();
    for e in events {
        let calls = matches!(
            e.action,
            Action::Confirm | Action::Override | Action::Relabel | Action::BlindCall
        );
        let st = studies.entry(e.study_sha256.as_str()).or_default();
        if calls && st.first.is_none() {
            st.first = Some(e.reader.as_str());
        }
        if calls && !st.readers.contains(&e.reader.as_str()) {
            st.readers.push(e.reader.as_str());
        }
        if st.first == Some(e.reader.as_str()) {
            st.first_reader_last = Some((e.action, e.new_label));
        }
    }
    studies
        .into_iter()
        .filter(|(sha, st)| {
            let Some(first) = st.first else { return false };
            let in_force = st
                .first_reader_last
                .is_some_and(|(_, label)| label.is_some());
            first != reader
                && st.readers.len() == 1
                && in_force
                && (st.first_reader_last.map(|(a, _)| a) == Some(Action::Override)
                    || sampled_for_second_read(sha, share))
        })
        .map(|(sha, _)| sha.to_owned())
        .collect()
}

impl DecisionStore {
    /// Every decision event, oldest first.
    pub fn all_events(&self) -> Result<Vec<DecisionEvent>, AuditError> {
        self.events_after(0)
    }

    /// The QA report of this store (see [`QaReport`]).
    pub fn qa_report(&self) -> Result<QaReport, AuditError> {
        let events = self.all_events()?;
        Ok(QaReport::from_events(&events, self.blind_first_summary()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampled_share_is_about_the_share_and_the_same_every_time() {
        let shas: Vec<String> = (0..20_000u32)
            .map(|i| crate::io::sha256_hex(&i.to_le_bytes()))
            .collect();
        let picked = shas
            .iter()
            .filter(|s| sampled_for_second_read(s, 0.05))
            .count();
        assert!((900..1100).contains(&picked), "{picked}");
        assert!(!sampled_for_second_read(&shas[0], 0.0));
        assert!(sampled_for_second_read(&shas[0], 1.0));
        assert!(!sampled_for_second_read("not hex", 0.5));
    }

    #[test]
    fn kappa_of_paired_calls_with_an_interval() {
        // 10 pairs: 4 both pneumonia, 4 both normal, 2 disagree: p_o 0.8, p_e 0.5, kappa 0.6.
        let mut pairs = vec![(true, true); 4];
        pairs.extend([(false, false); 4]);
        pairs.extend([(true, false), (false, true)]);
        let a = Agreement::of(&pairs, 1);
        assert_eq!(a.pairs, 10);
        assert!((a.observed - 0.8).abs() < 1e-12);
        assert!((a.kappa.estimate - 0.6).abs() < 1e-12);
        assert!(a.kappa.low < 0.6 && 0.6 < a.kappa.high, "{a:?}");
        assert_eq!(a, Agreement::of(&pairs, 1), "seeded");
        assert_eq!(Agreement::of(&[], 1).pairs, 0);
    }
}
