//! Blind-first reading measured from the log: how often the AI's call changed a reader's own.

use super::{Action, AuditError, DecisionEvent, DecisionStore};

/// What the decision log says about blind-first reading (see [`Action::BlindCall`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlindFirstSummary {
    /// Studies with a blind call (the reader's call before the AI's was shown).
    pub blind_calls: usize,
    /// Of those, studies with a final call after the AI's was shown (a confirm or override
    /// recorded after the latest blind call, and still in force).
    pub final_calls: usize,
    /// Final calls that differ from the reader's blind call: the AI changed the reader's mind.
    pub changed: usize,
    /// Of the blind calls with a final call, those where the reader's blind call differed from
    /// the AI label.
    pub blind_disagreed: usize,
}

impl BlindFirstSummary {
    /// The figures in one line, or `None` when no blind call was recorded.
    pub fn text(&self) -> Option<String> {
        (self.blind_calls > 0).then(|| {
            format!(
                "blind-first reading: {} studies called before the AI's call was shown; {} with \
                 a final call after it, of which {} where the reader's own call disagreed with \
                 the AI's, and {} where the final call changed the reader's own",
                self.blind_calls, self.final_calls, self.blind_disagreed, self.changed
            )
        })
    }

    /// Adds one study's history (its events, oldest first).
    fn add(&mut self, history: &[DecisionEvent]) {
        let Some(at) = history.iter().rposition(|e| e.action == Action::BlindCall) else {
            return;
        };
        self.blind_calls += 1;
        let blind = history[at].new_label;
        let Some(last) = history.last() else { return };
        let is_final = |e: &DecisionEvent| matches!(e.action, Action::Confirm | Action::Override);
        if !history[at + 1..].iter().any(is_final) || !is_final(last) {
            return;
        }
        self.final_calls += 1;
        if last.new_label != blind {
            self.changed += 1;
        }
        if last.ai_label.is_some() && last.ai_label != blind {
            self.blind_disagreed += 1;
        }
    }
}

impl BlindFirstSummary {
    /// The summary of a whole log (its events, oldest first, any backend).
    pub fn from_events(events: &[DecisionEvent]) -> Self {
        let mut by_study: std::collections::BTreeMap<&str, Vec<DecisionEvent>> =
            std::collections::BTreeMap::new();
        for e in events {
            by_study
                .entry(e.study_sha256.as_str())
                .or_default()
                .push(e.clone());
        }
        let mut summary = Self::default();
        for history in by_study.values() {
            summary.add(history);
        }
        summary
    }
}

impl DecisionStore {
    /// How blind-first reading went at this site: blind calls, final calls, and how often the
    /// final call differs from the blind one.
    pub fn blind_first_summary(&self) -> Result<BlindFirstSummary, AuditError> {
        let studies: Vec<String> = {
            let mut stmt = self.conn.prepare(
                "SELECT DISTINCT study_sha256 FROM decisions WHERE action = 'blind_call' \
                 ORDER BY study_sha256",
            )?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let mut summary = BlindFirstSummary::default();
        for sha in studies {
            summary.add(&self.history(&sha)?);
        }
        Ok(summary)
    }
}
