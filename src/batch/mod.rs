//! One batching writer, shared by the stock persister and the order writer: a thread that takes
//! items from a bounded queue, groups them into batches bounded by size and time, hands each
//! batch to a [`Sink`] (one transaction), and settles every caller's ticket.
//!
//! The rules it keeps (DESIGN.md rules 1, 7 and 8):
//! - Nothing is reported written before the sink says it is committed.
//! - A batch is a bulkhead: the sink refuses a row the database will not take (a data error)
//!   on its own ticket, and the rest of the batch commits.
//! - Only a [`SinkError::Transient`] failure (the database is away) is retried, with a capped backoff, in
//!   order: nothing behind a failing batch overtakes it. A permanent refusal is never retried.
//! - The queue is bounded: `submit` never blocks and says `Full` instead.
//!
//! ```text
//!  callers ──submit──▶ [bounded queue] ──▶ writer thread ──batch──▶ Sink::write (one transaction)
//!     ▲                                          │
//!     └────────────── Ticket: Ok(output) / Refused(reason) / Stopped ◀┘
//! ```

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The database refused one item for a data reason: retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Why a whole batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A dependency is away (connection-class): retry the batch. The error says why, with its
    /// own causes.
    #[error(transparent)]
    Transient(Box<dyn std::error::Error + Send + Sync>),
    /// This instance no longer holds the lease: nothing was written, nothing will be.
    #[error("fenced: another instance is active")]
    Fenced,
}

/// Writes batches. Every method blocks; it runs on the writer's own thread.
pub trait Sink: Send + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Writes `items` in one transaction and returns one result per item, in order: `Ok` when
    /// committed, `Err(Refusal)` for an item the database refused (the others still commit).
    /// `Err(SinkError::Transient)` when nothing can be said (the connection failed): the batch is retried
    /// whole, with `attempt` counting the earlier failures, so a sink can check whether a
    /// failed attempt did commit after all. `Err(Fenced)`: nothing was written and the batch is
    /// not retried.
    #[allow(clippy::type_complexity)]
    fn write(
        &mut self,
        items: &[Self::Item],
        attempt: u32,
    ) -> Result<Vec<Result<Self::Output, Refusal>>, SinkError>;
}

/// Why an item was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The database refused it for a data reason (permanent).
    #[error("the database refused the write: {0}")]
    Refused(String),
    /// The writer stopped before writing it; it may or may not have been written.
    #[error("the writer stopped before the write was confirmed")]
    Stopped,
    /// Another instance took over: it was not written, and this instance must stop acting.
    #[error("fenced: another instance is active")]
    Fenced,
}

/// Why an item could not be queued; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the writer's queue is full")]
    Full,
    #[error("the writer stopped")]
    Stopped,
}

/// Resolves once the item is committed, refused, or the writer stopped.
#[derive(Debug)]
pub struct Ticket<O>(oneshot::Receiver<Result<O, WriteError>>);

impl<O> Ticket<O> {
    /// A ticket already answered (a store that writes at once, in memory).
    pub fn ready(result: Result<O, WriteError>) -> Ticket<O> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Ticket(rx)
    }

    pub async fn wait(self) -> Result<O, WriteError> {
        self.0.await.unwrap_or(Err(WriteError::Stopped))
    }
}

/// Tuning of one writer.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Thread name, also used in logs.
    pub name: &'static str,
    pub max_batch: usize,
    /// How long the first item of a batch may wait for company.
    pub linger: Duration,
    /// A batch closes early when nothing arrives for this long — or at once, with nothing
    /// queued, when it already holds as many items as the batch before it (the callers that
    /// waited on that batch are back: a closed loop need not wait the gap out).
    pub idle_gap: Duration,
    /// Items queued at most (memory ahead of disk).
    pub capacity: usize,
}

/// Counters, readable from any thread.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub items: AtomicU64,
    pub refused: AtomicU64,
    /// Failed attempts (transient).
    pub db_errors: AtomicU64,
    /// Batches refused because this instance no longer holds the lease.
    pub fenced: AtomicU64,
    /// Items queued and not yet settled.
    pub queued: AtomicI64,
    /// The most items that may be queued (the writer's bound).
    pub capacity: AtomicU64,
    failing: AtomicBool,
    running: AtomicBool,
    /// Set by `stop_blocking`: batches already taken stop retrying, and once one is given up
    /// the rest are too (the database is away and the process is going).
    stopping: AtomicBool,
    /// Wall-clock milliseconds when the write under way began; 0 when idle.
    write_started_ms: AtomicU64,
}

/// A write taking longer than this counts as failing (the database is not answering).
const STUCK_AFTER_MS: u64 = 1_000;
/// Attempts made on a batch when stopping before giving up on it.
const ATTEMPTS_WHEN_STOPPING: u32 = 5;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl BatchStats {
    /// True while the last attempt failed, or the current one has been waiting on the database
    /// for more than a second.
    pub fn is_failing(&self) -> bool {
        let started = self.write_started_ms.load(Ordering::Relaxed);
        self.failing.load(Ordering::Relaxed)
            || (started != 0 && now_ms().saturating_sub(started) > STUCK_AFTER_MS)
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

struct Job<I, O> {
    item: I,
    ticket: oneshot::Sender<Result<O, WriteError>>,
    /// The submitter's span: the write continues its trace (none when nothing is exported).
    span: tracing::Span,
}

enum Msg<I, O> {
    Job(Job<I, O>),
    Flush(mpsc::Sender<()>),
    Stop,
}

/// Handle to a writer thread; cheap to clone.
pub struct BatchWriter<S: Sink> {
    tx: SyncSender<Msg<S::Item, S::Output>>,
    stats: Arc<BatchStats>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl<S: Sink> Clone for BatchWriter<S> {
    fn clone(&self) -> Self {
        BatchWriter {
            tx: self.tx.clone(),
            stats: Arc::clone(&self.stats),
            thread: Arc::clone(&self.thread),
        }
    }
}

impl<S: Sink> BatchWriter<S> {
    /// Starts the writer thread.
    pub fn spawn(sink: S, config: BatchConfig) -> BatchWriter<S> {
        let (tx, rx) = mpsc::sync_channel(config.capacity.max(1));
        let stats = Arc::new(BatchStats::default());
        stats.running.store(true, Ordering::Relaxed);
        stats
            .capacity
            .store(config.capacity.max(1) as u64, Ordering::Relaxed);
        let thread_stats = Arc::clone(&stats);
        let name = config.name;
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut writer = Writer {
                    sink,
                    config,
                    stats: Arc::clone(&thread_stats),
                    given_up: false,
                    last_len: usize::MAX,
                };
                writer.run(rx);
                thread_stats.running.store(false, Ordering::Relaxed);
            });
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::error!(writer = name, error = %e, "could not start a writer thread");
                stats.running.store(false, Ordering::Relaxed);
                None
            }
        };
        BatchWriter {
            tx,
            stats,
            thread: Arc::new(Mutex::new(thread)),
        }
    }

    /// Queues an item without blocking.
    pub fn submit(&self, item: S::Item) -> Result<Ticket<S::Output>, SubmitError> {
        let (ticket, rx) = oneshot::channel();
        let span = crate::telemetry::current();
        match self.tx.try_send(Msg::Job(Job { item, ticket, span })) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(Ticket(rx))
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Blocks until everything queued before this call is settled. Call it from a blocking
    /// thread.
    pub fn flush_blocking(&self) -> Result<(), SubmitError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| SubmitError::Stopped)?;
        rx.recv().map_err(|_| SubmitError::Stopped)
    }

    /// Writes what is queued, then stops the thread and waits for it. Blocking. With the
    /// database away, a batch is tried a few more times and then given up (its callers are told
    /// `Stopped`; nothing was reported written).
    pub fn stop_blocking(&self) {
        self.stats.stopping.store(true, Ordering::Release);
        // Never blocks on a full queue: the flag alone ends the thread once the queue is drained.
        let _ = self.tx.try_send(Msg::Stop);
        let handle = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    pub fn stats(&self) -> Arc<BatchStats> {
        Arc::clone(&self.stats)
    }
}

struct Writer<S: Sink> {
    sink: S,
    config: BatchConfig,
    stats: Arc<BatchStats>,
    given_up: bool,
    /// Items in the batch written last (`usize::MAX` before the first).
    last_len: usize,
}

impl<S: Sink> Writer<S> {
    fn run(&mut self, rx: mpsc::Receiver<Msg<S::Item, S::Output>>) {
        let mut stopping = false;
        while !stopping {
            let first = if self.stats.stopping.load(Ordering::Acquire) {
                match rx.try_recv() {
                    Ok(msg) => msg,
                    Err(_) => break, // stopping and nothing left
                }
            } else {
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            };
            let mut jobs = Vec::new();
            let mut flushes = Vec::new();
            let mut take =
                |msg: Msg<S::Item, S::Output>, jobs: &mut Vec<Job<S::Item, S::Output>>| match msg {
                    Msg::Job(job) => jobs.push(job),
                    Msg::Flush(tx) => flushes.push(tx),
                    Msg::Stop => stopping = true,
                };
            take(first, &mut jobs);
            let deadline = Instant::now() + self.config.linger;
            while jobs.len() < self.config.max_batch {
                let next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Disconnected) => None,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if jobs.is_empty() || now >= deadline || jobs.len() >= self.last_len {
                            None
                        } else {
                            // Wait for company only while it keeps coming.
                            rx.recv_timeout((deadline - now).min(self.config.idle_gap))
                                .ok()
                        }
                    }
                };
                match next {
                    Some(msg) => take(msg, &mut jobs),
                    None => break,
                }
            }
            if !jobs.is_empty() {
                self.last_len = jobs.len();
                self.write_batch(jobs, stopping);
            }
            for flush in flushes {
                let _ = flush.send(());
            }
        }
    }

    /// One batch written, timed and counted, each item's span a child of its submitter's.
    fn write_batch(&mut self, jobs: Vec<Job<S::Item, S::Output>>, stopping: bool) {
        let n = jobs.len() as i64;
        self.stats
            .write_started_ms
            .store(now_ms(), Ordering::Relaxed);
        let started = std::time::Instant::now();
        // One span per item, each a child of its submitter's, over the whole batch
        // transaction (its items commit together).
        let traced = if crate::telemetry::exporting() {
            &jobs[..]
        } else {
            &[]
        };
        let spans: Vec<tracing::Span> = traced
            .iter()
            .filter(|job| !job.span.is_none())
            .map(|job| {
                tracing::debug_span!(
                    target: crate::telemetry::TARGET,
                    parent: &job.span,
                    "batch write",
                    otel.name = format!("{} write", self.config.name),
                    db.system = "postgresql",
                    orderflow.batch_rows = n,
                )
            })
            .collect();
        self.write(jobs, stopping);
        drop(spans);
        self.stats.write_started_ms.store(0, Ordering::Relaxed);
        let writer = self.config.name;
        metrics::histogram!("orderflow_batch_rows", "writer" => writer).record(n as f64);
        metrics::histogram!("orderflow_batch_commit_seconds", "writer" => writer)
            .record(started.elapsed().as_secs_f64());
        self.stats.queued.fetch_sub(n, Ordering::Relaxed);
    }

    fn write(&mut self, jobs: Vec<Job<S::Item, S::Output>>, stopping: bool) {
        if self.given_up {
            // Stopping, and an earlier batch found the database away: give these up too.
            for job in jobs {
                let _ = job.ticket.send(Err(WriteError::Stopped));
            }
            return;
        }
        let (items, tickets): (Vec<S::Item>, Vec<_>) =
            jobs.into_iter().map(|j| (j.item, j.ticket)).unzip();
        let mut attempt: u32 = 0;
        let results: Vec<Result<S::Output, WriteError>> = loop {
            match self.sink.write(&items, attempt) {
                Ok(results) if results.len() == items.len() => {
                    self.stats.failing.store(false, Ordering::Relaxed);
                    break results
                        .into_iter()
                        .map(|r| r.map_err(|Refusal(why)| WriteError::Refused(why)))
                        .collect();
                }
                Ok(results) => {
                    // A bug, not an outage: retrying would give the same answer.
                    tracing::error!(
                        writer = self.config.name,
                        items = items.len(),
                        results = results.len(),
                        "a sink answered with the wrong number of results"
                    );
                    break items
                        .iter()
                        .map(|_| Err(WriteError::Refused("internal: unmatched results".into())))
                        .collect();
                }
                Err(SinkError::Fenced) => {
                    self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                    break items.iter().map(|_| Err(WriteError::Fenced)).collect();
                }
                Err(SinkError::Transient(e)) => {
                    self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                    self.stats.failing.store(true, Ordering::Relaxed);
                    tracing::warn!(writer = self.config.name, error = %crate::telemetry::error_chain(e.as_ref()), attempt, items = items.len(), "batch failed on a transient error; retrying");
                }
            }
            attempt = attempt.saturating_add(1);
            let stopping = stopping || self.stats.stopping.load(Ordering::Acquire);
            if stopping && attempt >= ATTEMPTS_WHEN_STOPPING {
                self.given_up = true;
                tracing::error!(
                    writer = self.config.name,
                    items = items.len(),
                    "giving up on a batch at shutdown; it was never reported written"
                );
                break items.iter().map(|_| Err(WriteError::Stopped)).collect();
            }
            let backoff = Duration::from_millis(50u64.saturating_mul(1 << attempt.min(5)));
            std::thread::sleep(backoff.min(Duration::from_secs(2)));
        };
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .items
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        for (ticket, result) in tickets.into_iter().zip(results) {
            if result.is_err() {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            let _ = ticket.send(result);
        }
    }
}

#[cfg(test)]
mod tests;
