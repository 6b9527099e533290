//! Claims: which reader has a study open, so that several readers on one store do not read the
//! same study at once. A claim is a lease: it lapses unless its window renews it, so a crashed
//! window's claims expire by themselves. Claims are coordination, not decisions: they are kept
//! in their own table, outside the audit trail, and replaced freely.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::store::{EVENT_COLUMNS_SQL, event_from_row};
use super::{AuditError, DecisionEvent, DecisionStore};

/// A study held open by a reader's window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The study.
    pub study_sha256: String,
    /// Who has it open.
    pub reader: String,
    /// Which window holds the claim (a random id per window).
    pub holder: String,
}

/// Milliseconds since the Unix epoch of `t`.
fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl DecisionStore {
    /// Claims `sha256` for `reader`'s window `holder` until `now + lease`, and lets go of every
    /// other study that window held. Returns the other reader when another window holds an
    /// unexpired claim on it (nothing changes then, apart from letting go of the others).
    pub fn claim(
        &self,
        sha256: &str,
        reader: &str,
        holder: &str,
        now: SystemTime,
        lease: Duration,
    ) -> Result<Option<String>, AuditError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM claims WHERE holder = ?1 AND study_sha256 <> ?2",
            params![holder, sha256],
        )?;
        let other: Option<String> = tx
            .query_row(
                "SELECT reader FROM claims WHERE study_sha256 = ?1 AND holder <> ?2 \
                 AND expires_at_ms > ?3",
                params![sha256, holder, millis(now)],
                |r| r.get(0),
            )
            .optional()?;
        if other.is_none() {
            tx.execute(
                "INSERT INTO claims (study_sha256, reader, holder, expires_at_ms) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (study_sha256) DO UPDATE SET \
                 reader = excluded.reader, holder = excluded.holder, \
                 expires_at_ms = excluded.expires_at_ms",
                params![sha256, reader, holder, millis(now + lease)],
            )?;
        }
        tx.commit()?;
        Ok(other)
    }

    /// Lets go of every study the window `holder` has claimed (it closed, or shows none).
    pub fn release_claims(&self, holder: &str) -> Result<(), AuditError> {
        self.conn
            .execute("DELETE FROM claims WHERE holder = ?1", [holder])?;
        Ok(())
    }

    /// The claims that have not expired at `now`.
    pub fn active_claims(&self, now: SystemTime) -> Result<Vec<Claim>, AuditError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT study_sha256, reader, holder FROM claims WHERE expires_at_ms > ?1 \
             ORDER BY study_sha256",
        )?;
        let claims = stmt
            .query_map([millis(now)], |r| {
                Ok(Claim {
                    study_sha256: r.get(0)?,
                    reader: r.get(1)?,
                    holder: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(claims)
    }

    /// The id of the newest decision event (0 for an empty log).
    pub fn last_event_id(&self) -> Result<i64, AuditError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM decisions", [], |r| {
                r.get(0)
            })?)
    }

    /// The decision events after `id`, oldest first (what other windows recorded since).
    pub fn events_after(&self, id: i64) -> Result<Vec<DecisionEvent>, AuditError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS_SQL} FROM decisions WHERE id > ?1 ORDER BY id"
        ))?;
        let events = stmt
            .query_map([id], event_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_other_windows_off_until_it_lapses_or_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = DecisionStore::open(&dir.path().join("s.sqlite3")).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let lease = Duration::from_secs(180);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(store.claim(&a, "Alice", "w1", t0, lease).unwrap(), None);
        // Bob's window cannot take it while the lease runs...
        assert_eq!(
            store.claim(&a, "Bob", "w2", t0, lease).unwrap().as_deref(),
            Some("Alice")
        );
        assert_eq!(
            store.active_claims(t0).unwrap(),
            [Claim {
                study_sha256: a.clone(),
                reader: "Alice".to_owned(),
                holder: "w1".to_owned(),
            }]
        );
        // ...but can once it lapses (Alice's window crashed and never renewed it).
        let later = t0 + lease + Duration::from_secs(1);
        assert!(store.active_claims(later).unwrap().is_empty());
        assert_eq!(store.claim(&a, "Bob", "w2", later, lease).unwrap(), None);
        // Renewing is claiming again; opening another study lets go of the first.
        assert_eq!(store.claim(&a, "Bob", "w2", later, lease).unwrap(), None);
        assert_eq!(store.claim(&b, "Bob", "w2", later, lease).unwrap(), None);
        let held: Vec<String> = store
            .active_claims(later)
            .unwrap()
            .into_iter()
            .map(|c| c.study_sha256)
            .collect();
        assert_eq!(held, [b]);
        store.release_claims("w2").unwrap();
        assert!(store.active_claims(later).unwrap().is_empty());
        assert_eq!(store.last_event_id().unwrap(), 0);
        assert!(store.events_after(0).unwrap().is_empty());
        // Claims are not part of the audit trail: the store still verifies.
        assert!(store.verify().unwrap().is_intact());
    }
}
