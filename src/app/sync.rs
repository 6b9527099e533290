//! The "store-sync" thread: several readers on one store.
//!
//! Once a second it claims the study this window has open (a lease of a few minutes, renewed
//! while it stays open; see [`DecisionStore::claim`]), reads which studies other windows have
//! open, and reads the decisions recorded since its last look, by any window, and sends them to
//! the window, which shows "being read by …", skips those studies in "next unreviewed", and shows
//! other readers' decisions within about two seconds. A crashed window's claims lapse by
//! themselves. On SQLite the store file is polled; on PostgreSQL the thread listens for the
//! server's NOTIFY of each append and reads at once. Nothing here writes to the audit trail.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::time::{Duration, Instant, SystemTime};

use crate::audit::{Action, DecisionLog, StoreAddress};
use crate::worklist::Label;

/// How long a claim lasts unless renewed.
pub(crate) const LEASE: Duration = Duration::from_secs(180);
/// How often an open study's claim is renewed.
const RENEW: Duration = Duration::from_secs(60);

/// What the window tells the thread: the study on screen (by SHA-256; `None`: no study) and
/// who reads in this window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyncCmd {
    /// The study on screen.
    pub study: Option<String>,
    /// The reader (empty until named).
    pub reader: String,
}

/// A study's decision in force, as the store has it now.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InForce {
    /// The study.
    pub sha256: String,
    /// The reader's label in force.
    pub label: Option<Label>,
    /// "Read elsewhere" or "not a chest film", when that is in force.
    pub disposition: Option<Action>,
    /// The id of the study's newest event when this was read.
    pub as_of: i64,
}

/// What the thread reports.
#[derive(Debug)]
pub(crate) enum SyncMsg {
    /// Studies other windows have open (SHA-256 to reader), and the decisions in force of
    /// studies decided since the last report.
    Update {
        /// Claims of other windows.
        others: HashMap<String, String>,
        /// Studies with new decision events.
        decided: Vec<InForce>,
        /// The studies due a second read by this window's reader, when that changed.
        second_reads: Option<HashSet<String>>,
    },
    /// The study this window opened is being read by another reader.
    Taken {
        /// The study.
        sha256: String,
        /// Who reads it.
        reader: String,
    },
}

/// The newest decision event a window knows of, per study (SHA-256): its own acknowledged
/// writes and the sync thread's reports. A report read before a newer event was saved is stale
/// and must not be applied: it would show a decision this window has just undone or changed.
#[derive(Debug, Default)]
pub(crate) struct NewestEvents(HashMap<String, i64>);

impl NewestEvents {
    /// Notes an event this window saved.
    pub fn saved(&mut self, sha256: &str, id: i64) {
        let newest = self.0.entry(sha256.to_owned()).or_insert(id);
        *newest = (*newest).max(id);
    }

    /// Whether a report is at least as new as everything known of its study (and notes it).
    pub fn is_fresh(&mut self, report: &InForce) -> bool {
        let newest = self.0.entry(report.sha256.clone()).or_insert(report.as_of);
        if *newest > report.as_of {
            return false;
        }
        *newest = report.as_of;
        true
    }
}

/// The window's end of the thread.
pub(crate) struct SyncHandle {
    commands: SyncSender<SyncCmd>,
    /// Reports.
    pub messages: Receiver<SyncMsg>,
    /// The last state sent with [`SyncHandle::viewing`].
    sent: Option<SyncCmd>,
}

impl SyncHandle {
    /// Starts the thread on the store at `db_path`, looking every `interval`; `second_read_share`
    /// of the studies (besides every override) are queued for a second read.
    pub fn spawn(
        ctx: egui::Context,
        db_path: PathBuf,
        interval: Duration,
        second_read_share: f64,
    ) -> std::io::Result<Self> {
        let (cmd_tx, cmd_rx) = sync_channel::<SyncCmd>(8);
        let (msg_tx, msg_rx) = sync_channel::<SyncMsg>(8);
        std::thread::Builder::new()
            .name("store-sync".to_owned())
            .spawn(move || {
                run(
                    &ctx,
                    &db_path,
                    interval,
                    second_read_share,
                    &cmd_rx,
                    &msg_tx,
                );
            })?;
        Ok(Self {
            commands: cmd_tx,
            messages: msg_rx,
            sent: None,
        })
    }

    /// Tells the thread which study is on screen and who reads, when that changed.
    pub fn viewing(&mut self, state: SyncCmd) {
        if self.sent.as_ref() == Some(&state) {
            return;
        }
        match self.commands.try_send(state.clone()) {
            Ok(()) => self.sent = Some(state),
            // Full: sent again on a later frame. Gone: nothing to tell.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }
}

/// A window's id for its claims: unique enough among the windows of one site.
fn holder_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

fn run(
    ctx: &egui::Context,
    db_path: &std::path::Path,
    interval: Duration,
    second_read_share: f64,
    commands: &Receiver<SyncCmd>,
    messages: &SyncSender<SyncMsg>,
) {
    let holder = holder_id();
    let address = StoreAddress::from_path(db_path);
    let mut store: Option<Box<dyn DecisionLog>> = None;
    // Whether the store notifies appends (PostgreSQL), so that the thread waits on those.
    let mut notifies = false;
    let mut last_id: Option<i64> = None;
    let mut viewing: Option<(String, String)> = None;
    let mut reader = String::new();
    let mut second_reads_of: Option<String> = None;
    let mut claimed: Option<(String, Instant)> = None;
    // The study this window opened while another reader held it (said once; claimed again every
    // look, so that it is this reader's as soon as the other lets go).
    let mut taken: Option<String> = None;
    let mut others_sent: Option<HashMap<String, String>> = None;
    loop {
        let latest = match store.as_deref_mut().filter(|_| notifies) {
            Some(s) => match wait_notified(s, commands, interval) {
                Ok(cmd) => cmd,
                Err(Gone::Window) => break,
                Err(Gone::Store) => {
                    // Reconnected on the next look.
                    store = None;
                    None
                }
            },
            None => match commands.recv_timeout(interval) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut latest = latest;
        while let Ok(cmd) = commands.try_recv() {
            latest = Some(cmd);
        }
        if let Some(cmd) = latest {
            reader = cmd.reader.clone();
            viewing = cmd
                .study
                .filter(|_| !reader.is_empty())
                .map(|s| (s, cmd.reader));
        }
        if store.is_none() {
            // The writer creates a SQLite store; until it exists there is nothing to look at.
            let exists = address.file().is_none_or(std::path::Path::exists);
            store = exists.then(|| address.open_existing().ok()).flatten();
            notifies = match store.as_deref_mut().map(DecisionLog::listen) {
                Some(Ok(listening)) => listening,
                Some(Err(_)) => {
                    store = None;
                    false
                }
                None => false,
            };
        }
        let Some(s) = store.as_deref_mut() else {
            continue;
        };
        let now = SystemTime::now();
        // Claim the study on screen (again when it changed or the renewal is due).
        let due = match (&viewing, &claimed) {
            (Some(_), _) if taken.is_some() => true,
            (Some((sha, _)), Some((held, at))) => sha != held || at.elapsed() >= RENEW,
            (Some(_), None) | (None, Some(_)) => true,
            (None, None) => false,
        };
        if due {
            let result = match &viewing {
                Some((sha, reader)) => {
                    s.claim(sha, reader, &holder, now, LEASE)
                        .map(|other| match other {
                            None => {
                                claimed = Some((sha.clone(), Instant::now()));
                                taken = None;
                                None
                            }
                            Some(_) if taken.as_ref() == Some(sha) => None,
                            Some(reader) => {
                                claimed = None;
                                taken = Some(sha.clone());
                                Some(SyncMsg::Taken {
                                    sha256: sha.clone(),
                                    reader,
                                })
                            }
                        })
                }
                None => s.release_claims(&holder).map(|()| {
                    claimed = None;
                    taken = None;
                    None
                }),
            };
            match result {
                Ok(Some(msg)) => {
                    if !send(ctx, messages, msg) {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(target: "cxr_triage::app", "cannot claim a study: {e}"),
            }
        }
        // Who reads what, and what was decided since the last look.
        let others: HashMap<String, String> = match s.active_claims(now) {
            Ok(claims) => claims
                .into_iter()
                .filter(|c| c.holder != holder)
                .map(|c| (c.study_sha256, c.reader))
                .collect(),
            Err(_) => {
                // A server that went away: connect again on the next look.
                store = None;
                continue;
            }
        };
        let decided = match last_id {
            None => {
                last_id = s.last_event_id().ok();
                Vec::new()
            }
            Some(id) => match s.events_after(id) {
                Ok(events) => {
                    if let Some(last) = events.last() {
                        last_id = Some(last.id);
                    }
                    let mut shas: Vec<&str> =
                        events.iter().map(|e| e.study_sha256.as_str()).collect();
                    shas.sort_unstable();
                    shas.dedup();
                    match s.current_many(&shas) {
                        Ok(states) => shas
                            .iter()
                            .map(|&sha| {
                                let state = states.get(sha);
                                let newest = events
                                    .iter()
                                    .filter(|e| e.study_sha256 == sha)
                                    .map(|e| e.id)
                                    .max()
                                    .unwrap_or_default();
                                InForce {
                                    sha256: sha.to_owned(),
                                    label: state.and_then(|c| c.final_label),
                                    disposition: state.and_then(|c| c.disposition),
                                    as_of: state.map_or(newest, |c| c.last_event.id.max(newest)),
                                }
                            })
                            .collect(),
                        Err(_) => Vec::new(),
                    }
                }
                Err(_) => Vec::new(),
            },
        };
        // The second reads due for this reader, again when something was decided or the
        // reader changed.
        let second_reads = if !reader.is_empty()
            && (!decided.is_empty() || second_reads_of.as_deref() != Some(reader.as_str()))
        {
            match s.events_after(0) {
                Ok(events) => {
                    second_reads_of = Some(reader.clone());
                    Some(crate::audit::second_reads_due(
                        &events,
                        &reader,
                        second_read_share,
                    ))
                }
                Err(_) => None,
            }
        } else {
            None
        };
        if others_sent.as_ref() == Some(&others) && decided.is_empty() && second_reads.is_none() {
            continue;
        }
        others_sent = Some(others.clone());
        let update = SyncMsg::Update {
            others,
            decided,
            second_reads,
        };
        if !send(ctx, messages, update) {
            break;
        }
    }
    if let Some(s) = store.as_deref_mut() {
        let _ = s.release_claims(&holder);
    }
}

/// What ended a wait.
enum Gone {
    /// The window closed.
    Window,
    /// The connection to the store broke.
    Store,
}

/// Waits up to `interval` for the server's notice of an append or for a command from the
/// window, whichever comes first (a tenth of the interval at a time on each).
fn wait_notified(
    store: &mut dyn DecisionLog,
    commands: &Receiver<SyncCmd>,
    interval: Duration,
) -> Result<Option<SyncCmd>, Gone> {
    let until = Instant::now() + interval;
    loop {
        match commands.try_recv() {
            Ok(cmd) => return Ok(Some(cmd)),
            Err(TryRecvError::Disconnected) => return Err(Gone::Window),
            Err(TryRecvError::Empty) => {}
        }
        match store.wait_for_decision(interval / 10) {
            Ok(Some(_)) => return Ok(None),
            Ok(None) => {}
            Err(_) => return Err(Gone::Store),
        }
        if Instant::now() >= until {
            return Ok(None);
        }
    }
}

/// Sends a report and wakes the window; `false` when the window is gone.
fn send(ctx: &egui::Context, tx: &SyncSender<SyncMsg>, msg: SyncMsg) -> bool {
    let delivered = tx.send(msg).is_ok();
    ctx.request_repaint();
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sha: &str, label: Option<Label>, as_of: i64) -> InForce {
        InForce {
            sha256: sha.to_owned(),
            label,
            disposition: None,
            as_of,
        }
    }

    #[test]
    fn a_report_read_before_this_windows_newer_write_is_stale() {
        let mut newest = NewestEvents::default();
        // The window saved an override (event 3) and then its undo (event 4); the sync thread
        // had read the study after the override only.
        newest.saved("a", 3);
        newest.saved("a", 4);
        assert!(!newest.is_fresh(&report("a", Some(Label::Normal), 3)));
        // Another reader's later decision, and a report about another study, are applied.
        assert!(newest.is_fresh(&report("a", Some(Label::Pneumonia), 5)));
        assert!(newest.is_fresh(&report("b", None, 1)));
        // Once a newer report was applied, an older write acknowledged late changes nothing.
        newest.saved("a", 4);
        assert!(!newest.is_fresh(&report("a", Some(Label::Normal), 4)));
        assert!(newest.is_fresh(&report("a", Some(Label::Pneumonia), 5)));
    }
}
