//! The order writer: one thread that batches order creations and status changes (with their
//! history rows and notifications) into one transaction per batch, like the stock persister
//! does for stock. A caller awaits its ticket to know the write is durable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::persistence::orders::{self, NewOrderRow, TransitionRow};
use crate::persistence::DbPool;

enum Msg {
    Create(NewOrderRow, oneshot::Sender<bool>),
    Transition(TransitionRow, oneshot::Sender<bool>),
}

/// Why a write was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("the order writer is saturated")]
    Full,
    #[error("the order writer stopped")]
    Stopped,
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct OrderWriter {
    tx: SyncSender<Msg>,
    failing: Arc<AtomicBool>,
}

const MAX_BATCH: usize = 1024;
const LINGER: Duration = Duration::from_millis(2);
const IDLE_GAP: Duration = Duration::from_micros(300);

impl OrderWriter {
    pub fn spawn(pool: DbPool, capacity: usize) -> OrderWriter {
        let (tx, rx) = mpsc::sync_channel(capacity.max(16));
        let failing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failing);
        let spawned = std::thread::Builder::new()
            .name("orderflow-order-writer".into())
            .spawn(move || run(pool, rx, flag));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the order writer");
        }
        OrderWriter { tx, failing }
    }

    fn send(&self, msg: Msg) -> Result<(), WriteError> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(WriteError::Full),
            Err(TrySendError::Disconnected(_)) => Err(WriteError::Stopped),
        }
    }

    /// Queues the creation of an order (unless it exists); the receiver resolves, once the
    /// batch is committed, to whether it was created now.
    pub fn create(&self, row: NewOrderRow) -> Result<oneshot::Receiver<bool>, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Create(row, tx))?;
        Ok(rx)
    }

    /// Queues a status change, applied only if the order is still in `from_status`; the
    /// receiver resolves, once committed, to whether it moved.
    pub fn transition(&self, row: TransitionRow) -> Result<oneshot::Receiver<bool>, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Transition(row, tx))?;
        Ok(rx)
    }

    /// True while the last batch failed on a database error.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

fn run(pool: DbPool, rx: mpsc::Receiver<Msg>, failing: Arc<AtomicBool>) {
    loop {
        let Ok(first) = rx.recv() else { return };
        let mut batch = vec![first];
        let deadline = Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout((deadline - now).min(IDLE_GAP)) {
                        Ok(m) => batch.push(m),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
        let mut creates = Vec::new();
        let mut create_tickets = Vec::new();
        let mut transitions = Vec::new();
        let mut transition_tickets = Vec::new();
        for m in batch {
            match m {
                Msg::Create(row, t) => {
                    creates.push(row);
                    create_tickets.push(t);
                }
                Msg::Transition(row, t) => {
                    transitions.push(row);
                    transition_tickets.push(t);
                }
            }
        }
        let mut attempt: u32 = 0;
        let (created, moved) = loop {
            let result = pool
                .get()
                .map_err(crate::persistence::DbError::from)
                .and_then(|mut conn| orders::write_batch(&mut conn, &creates, &transitions));
            match result {
                Ok(done) => {
                    failing.store(false, Ordering::Relaxed);
                    break done;
                }
                Err(e) => {
                    failing.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, "order batch failed; retrying");
                    attempt = attempt.saturating_add(1);
                    std::thread::sleep(Duration::from_millis(50 * u64::from(attempt.min(40))));
                }
            }
        };
        for (row, ticket) in creates.iter().zip(create_tickets) {
            let _ = ticket.send(created.contains(&row.order_id));
        }
        for (row, ticket) in transitions.iter().zip(transition_tickets) {
            let _ = ticket.send(moved.contains(&row.order_id));
        }
    }
}
