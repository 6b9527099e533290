//! The "store-writer" thread: the only code of the window that touches the decision store.
//!
//! The window sends each decision over a bounded channel and goes on drawing; the thread opens the
//! store (and reopens it after a failure), records the decision (registering the study first if
//! the scorer could not), and acknowledges it with the recorded event or the reason it was not
//! recorded. While a PostgreSQL server cannot be reached (or another program holds a SQLite
//! store locked), it keeps the decision, says so ([`WriterMsg::Retrying`]) and sends it again,
//! named so that the server records it once.
//! The window shows a decision as saved only once it is acknowledged. A slow or locked
//! store (SQLite waits up to 10 seconds for another writer) therefore delays the acknowledgement,
//! never a frame.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use crate::audit::{
    AuditError, DecisionEvent, DecisionLog, NewDecision, StoreAddress, StudyRecord,
};

/// Decisions waiting for the writer at most (a reader cannot outpace a working disk by this much).
const QUEUE: usize = 32;

/// A decision to record.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    /// The window's number for this request (acknowledgements carry it back).
    pub seq: u64,
    /// The decision.
    pub decision: NewDecision,
}

/// What the writer reports.
#[derive(Debug)]
pub(crate) enum WriterMsg {
    /// The store could not be opened at start (decisions will try again).
    OpenFailed(String),
    /// The store is open (at start, or reopened after a failure).
    Opened {
        /// The authenticated database user on a PostgreSQL store, recorded as the reader of
        /// every decision (`None` on SQLite, where the reader's typed name is recorded).
        signed_in: Option<String>,
        /// Whether the connection to a PostgreSQL store is encrypted (TLS); `None` on SQLite.
        encrypted: Option<bool>,
    },
    /// A request could not be recorded because the server cannot be reached or the store is
    /// locked: it is kept and sent again (an acknowledgement follows once it is recorded or
    /// refused).
    Retrying {
        /// The request's number.
        seq: u64,
        /// Why the server cannot be reached, in words.
        why: String,
    },
    /// A request was recorded (the event, as stored) or not (why, in words for the reader).
    Ack {
        /// The request's number.
        seq: u64,
        /// The event, or why it was not recorded.
        result: Result<Box<DecisionEvent>, String>,
    },
}

/// The window's end of the writer thread.
pub(crate) struct WriterHandle {
    requests: SyncSender<WriteRequest>,
    /// Acknowledgements and store state.
    pub messages: Receiver<WriterMsg>,
}

impl WriterHandle {
    /// Starts the thread on the store at `db_path`. `delay` is waited before each write: a slow
    /// disk, simulated (benchmarks and tests).
    pub fn spawn(
        ctx: egui::Context,
        db_path: Result<PathBuf, String>,
        delay: Option<Duration>,
    ) -> std::io::Result<Self> {
        let (req_tx, req_rx) = sync_channel::<WriteRequest>(QUEUE);
        let (msg_tx, msg_rx) = sync_channel::<WriterMsg>(QUEUE + 2);
        std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || run(&ctx, &db_path, delay, &req_rx, &msg_tx))?;
        Ok(Self {
            requests: req_tx,
            messages: msg_rx,
        })
    }

    /// Queues a decision; fails (without blocking) when the writer is gone or far behind.
    pub fn submit(&self, request: WriteRequest) -> Result<(), String> {
        self.requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => {
                "the decision store is not keeping up: wait for the decisions being saved"
                    .to_owned()
            }
            TrySendError::Disconnected(_) => "the decision store's writer has stopped".to_owned(),
        })
    }
}

/// The first wait before a decision is sent again after the server could not be reached; each
/// further try waits twice as long, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two tries of a decision.
const RETRY_MAX: Duration = Duration::from_secs(4);

fn run(
    ctx: &egui::Context,
    db_path: &Result<PathBuf, String>,
    delay: Option<Duration>,
    requests: &Receiver<WriteRequest>,
    tx: &SyncSender<WriterMsg>,
) {
    let path = match db_path {
        Ok(path) => path,
        Err(e) => {
            // No store to open (no data folder): every decision is refused, with the reason.
            let _ = tx.send(WriterMsg::OpenFailed(e.clone()));
            ctx.request_repaint();
            for request in requests {
                let ack = WriterMsg::Ack {
                    seq: request.seq,
                    result: Err(format!("The decision was not saved: {e}")),
                };
                if tx.send(ack).is_err() {
                    return;
                }
                ctx.request_repaint();
            }
            return;
        }
    };
    let open = || StoreAddress::from_path(path).open();
    let opened = |s: &mut dyn DecisionLog| WriterMsg::Opened {
        signed_in: s.authenticated_reader().map(str::to_owned),
        encrypted: s.encrypted().ok().flatten(),
    };
    let mut store = match open() {
        Ok(mut s) => {
            let _ = tx.send(opened(s.as_mut()));
            Some(s)
        }
        Err(e) => {
            let _ = tx.send(WriterMsg::OpenFailed(e.to_string()));
            None
        }
    };
    ctx.request_repaint();
    // Each decision this window sends is named by this run and its number, so that one sent
    // again after a broken connection is recorded once (see `DecisionLog::record_once`).
    let run_id = format!("{:032x}", rand::random::<u128>());
    for request in requests {
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        let request_id = format!("{run_id}-{}", request.seq);
        let mut wait = RETRY_FIRST;
        // Tries until the decision is recorded or refused. While the server cannot be reached
        // (stopped, restarting, the network down), the decision is kept and sent again, under
        // its name: it may have been committed just before the connection broke.
        let result = loop {
            let attempt = match store.as_deref_mut() {
                Some(s) => record(s, &request_id, &request.decision),
                None => match open() {
                    Ok(mut s) => {
                        let result = record(s.as_mut(), &request_id, &request.decision);
                        let msg = opened(s.as_mut());
                        store = Some(s);
                        if tx.send(msg).is_err() {
                            return;
                        }
                        result
                    }
                    Err(e) => {
                        let words = format!("The decision was not saved: {e}");
                        Err((e, words))
                    }
                },
            };
            match attempt {
                Ok(event) => break Ok(Box::new(event)),
                // Nothing of the decision was written: a server that cannot be reached, or a
                // SQLite file another program holds locked past the busy timeout (10 s).
                Err((e @ (AuditError::ServerUnavailable(_) | AuditError::Locked), _)) => {
                    let why = match e {
                        AuditError::ServerUnavailable(why) => why,
                        _ => "another program holds the store's write lock".to_owned(),
                    };
                    store = None;
                    let msg = WriterMsg::Retrying {
                        seq: request.seq,
                        why,
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                    ctx.request_repaint();
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Err((e, words)) => {
                    // Any other server failure: connect again for the next decision.
                    if matches!(e, AuditError::Server(_)) {
                        store = None;
                    }
                    break Err(words);
                }
            }
        };
        if tx
            .send(WriterMsg::Ack {
                seq: request.seq,
                result,
            })
            .is_err()
        {
            return;
        }
        ctx.request_repaint();
    }
}

/// Records a decision, registering the study first if the store does not know it yet (the
/// scorer registers studies as it reads them; if its store failed, this one does).
fn record(
    store: &mut dyn DecisionLog,
    request_id: &str,
    decision: &NewDecision,
) -> Result<DecisionEvent, (AuditError, String)> {
    let result = match store.record_once(request_id, decision) {
        Err(AuditError::UnknownStudy) => store
            .upsert_studies(&[StudyRecord {
                sha256: decision.study_sha256.clone(),
                path: decision.study_path.clone(),
                patient_id: None,
                study_uid: None,
                metadata_json: "{}".to_owned(),
            }])
            .and_then(|()| store.record_once(request_id, decision)),
        other => other,
    };
    result.map_err(|e| {
        let words = decision_error(&e);
        (e, words)
    })
}

/// A store error in words for a notice.
fn decision_error(e: &AuditError) -> String {
    match e {
        AuditError::NothingToUndo => "Nothing to undo for this study.".to_owned(),
        other => format!("The decision was not saved: {other}"),
    }
}
