//! The "store-writer" thread: the only code of the window that touches the decision store.
//!
//! The window sends each decision over a bounded channel and goes on drawing; the thread opens the
//! store (and reopens it after a failure), records the decision (registering the study first if
//! the scorer could not), and acknowledges it with the recorded event or the reason it was not
//! recorded. The window shows a decision as saved only once it is acknowledged. A slow or locked
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

fn run(
    ctx: &egui::Context,
    db_path: &Result<PathBuf, String>,
    delay: Option<Duration>,
    requests: &Receiver<WriteRequest>,
    tx: &SyncSender<WriterMsg>,
) {
    let open = || -> Result<Box<dyn DecisionLog>, String> {
        let path = db_path.as_ref().map_err(Clone::clone)?;
        StoreAddress::from_path(path)
            .open()
            .map_err(|e| e.to_string())
    };
    let opened = |s: &dyn DecisionLog| WriterMsg::Opened {
        signed_in: s.authenticated_reader().map(str::to_owned),
    };
    let mut store = match open() {
        Ok(s) => {
            let _ = tx.send(opened(s.as_ref()));
            Some(s)
        }
        Err(e) => {
            let _ = tx.send(WriterMsg::OpenFailed(e));
            None
        }
    };
    ctx.request_repaint();
    for request in requests {
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        if store.is_none() {
            match open() {
                Ok(s) => {
                    let msg = opened(s.as_ref());
                    store = Some(s);
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let ack = WriterMsg::Ack {
                        seq: request.seq,
                        result: Err(format!("The decision was not saved: {e}")),
                    };
                    if tx.send(ack).is_err() {
                        return;
                    }
                    ctx.request_repaint();
                    continue;
                }
            }
        }
        let result = match store.as_deref_mut() {
            Some(s) => match record(s, &request.decision) {
                Ok(event) => Ok(Box::new(event)),
                Err((e, words)) => {
                    // A server that went away (restarted, network): reconnect for the next
                    // decision. The one that failed is reported, not retried: it may have been
                    // committed just before the connection broke, and recording it twice
                    // would be worse.
                    if matches!(e, AuditError::Server(_)) {
                        store = None;
                    }
                    Err(words)
                }
            },
            None => Err("The decision was not saved: no decision store".to_owned()),
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
    decision: &NewDecision,
) -> Result<DecisionEvent, (AuditError, String)> {
    let result = match store.record(decision) {
        Err(AuditError::UnknownStudy) => store
            .upsert_studies(&[StudyRecord {
                sha256: decision.study_sha256.clone(),
                path: decision.study_path.clone(),
                patient_id: None,
                study_uid: None,
                metadata_json: "{}".to_owned(),
            }])
            .and_then(|()| store.record(decision)),
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
