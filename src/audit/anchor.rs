//! Catching a truncated or rolled-back log: anchors and receipts.
//!
//! The hash chain proves that no event was edited, inserted or reordered, but not that none
//! was deleted from the end: a log cut back to its first N events (by deleting rows with the
//! guard removed, by restoring an older copy of the store, or by losing a damaged or deleted
//! WAL file with events committed in it) is a shorter, valid chain. What catches that is a
//! record, kept outside the store, of how long the log was: an [`Anchor`], the number of events
//! and the hash of the last one.
//!
//! - After every commit of decisions, cxr-triage writes the anchor to `STORE.anchor` beside the
//!   store (atomically, and never with fewer events than the anchor already there).
//! - Every export prints the anchor as a receipt (`cxr-triage-receipt:v1:N:HASH`), for the
//!   quality team to keep elsewhere (a ticket, an e-mail, another machine).
//! - `audit verify` checks the store against the anchor beside it and every anchor file and
//!   receipt it is given: the store must hold at least N events, and its event N must have that
//!   hash.
//!
//! An anchor beside the store can be deleted or rolled back together with it; receipts and
//! anchor copies kept elsewhere cannot. `audit verify` says when there is no anchor to check.

use std::path::{Path, PathBuf};

use rusqlite::OptionalExtension as _;

use super::{AuditError, DecisionStore};

/// The length of the log at some moment: the number of events and the hash of the last one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    /// How many events the log held.
    pub events: u64,
    /// The hash of event number `events` (empty for an empty log).
    pub head_hash: String,
}

/// The prefix of a receipt.
const RECEIPT_PREFIX: &str = "cxr-triage-receipt:v1:";

impl Anchor {
    /// The anchor as a one-line receipt: `cxr-triage-receipt:v1:N:HASH`.
    pub fn receipt(&self) -> String {
        format!("{RECEIPT_PREFIX}{}:{}", self.events, self.head_hash)
    }

    /// Reads a receipt written by [`Anchor::receipt`].
    pub fn from_receipt(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix(RECEIPT_PREFIX)?;
        let (events, head_hash) = rest.split_once(':')?;
        let events = events.parse().ok()?;
        let head_hash = head_hash.to_ascii_lowercase();
        let valid = if events == 0 {
            head_hash.is_empty()
        } else {
            super::chain::is_sha256_hex(&head_hash)
        };
        valid.then_some(Self { events, head_hash })
    }

    /// Reads an anchor file (JSON, as [`DecisionStore::write_anchor`] writes it).
    pub fn read(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::File {
            what: "could not read the anchor file",
            source,
            path: path.to_owned(),
        })?;
        serde_json::from_str(&text).map_err(|e| {
            AuditError::UnreadableValue(format!(
                "the anchor file {} is damaged: {e}",
                path.display()
            ))
        })
    }
}

/// Where the anchor of the store at `store` is kept: `STORE.anchor`, beside it.
pub fn anchor_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".anchor");
    PathBuf::from(name)
}

impl DecisionStore {
    /// The log's anchor now: its number of events and the last one's hash.
    pub fn anchor(&self) -> Result<Anchor, AuditError> {
        let last: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT id, row_hash FROM decisions ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let events = self.event_count()?;
        Ok(Anchor {
            events,
            head_hash: last.map(|(_, h)| h).unwrap_or_default(),
        })
    }

    /// Writes the anchor beside the store, unless the anchor there already records more
    /// events (another window wrote after this one). Called after every commit of decisions.
    pub(crate) fn write_anchor(&self) -> Result<(), AuditError> {
        let anchor = self.anchor()?;
        let path = anchor_path(self.path());
        if let Ok(existing) = Anchor::read(&path)
            && existing.events > anchor.events
        {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&anchor)
            .map_err(|e| AuditError::UnreadableValue(e.to_string()))?;
        let protected = crate::output::Protected::new().store(self.path());
        crate::output::write_bytes(&path, &protected, &json)?;
        Ok(())
    }

    /// Checks the log against an anchor: `None` when the log holds at least the anchored events
    /// and the last of them has the anchored hash; otherwise what is wrong, in words.
    pub fn check_anchor(&self, anchor: &Anchor) -> Result<Option<String>, AuditError> {
        let events = self.event_count()?;
        if events < anchor.events {
            return Ok(Some(format!(
                "the log holds {events} events but {} were recorded: events at the end were \
                 deleted or rolled back (a damaged or deleted WAL file loses committed events too)",
                anchor.events
            )));
        }
        if anchor.events == 0 {
            return Ok(None);
        }
        let id = i64::try_from(anchor.events).unwrap_or(i64::MAX);
        let hash: Option<String> = self
            .conn
            .query_row("SELECT row_hash FROM decisions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(match hash {
            Some(h) if h.eq_ignore_ascii_case(&anchor.head_hash) => None,
            Some(_) => Some(format!(
                "event {id} does not have the hash recorded for it: the log was rewritten"
            )),
            None => Some(format!("event {id} is missing: the log was rewritten")),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn receipts_round_trip_and_junk_is_refused() {
        let a = Anchor {
            events: 42,
            head_hash: "ab".repeat(32),
        };
        assert_eq!(Anchor::from_receipt(&a.receipt()), Some(a.clone()));
        assert_eq!(
            Anchor::from_receipt(&format!(
                "  {}\n",
                a.receipt()
                    .to_uppercase()
                    .replace("CXR-TRIAGE-RECEIPT:V1:", "cxr-triage-receipt:v1:")
            )),
            Some(a)
        );
        let empty = Anchor {
            events: 0,
            head_hash: String::new(),
        };
        assert_eq!(Anchor::from_receipt(&empty.receipt()), Some(empty));
        for junk in [
            "cxr-triage-receipt:v1:5:",
            "cxr-triage-receipt:v1:x:abcd",
            "cxr-triage-receipt:v2:1:abcd",
            "receipt",
        ] {
            assert_eq!(Anchor::from_receipt(junk), None, "{junk}");
        }
    }
}
