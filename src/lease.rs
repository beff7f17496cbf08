//! One active instance at a time, by a lease in PostgreSQL (DESIGN.md rule 4: one owner per SKU,
//! across instances too).
//!
//! - **Taking it** (`UPDATE … WHERE expires_at < now()`) bumps the **epoch**. Only the holder of
//!   the current epoch rebuilds the engine, consumes, runs the writers and accepts writes.
//! - **Renewing** every `renew_every` pushes `expires_at` to `now() + ttl` — the database's clock,
//!   so the instances' clocks never matter.
//! - **Self-fencing**: an instance that has not renewed for `ttl − margin` (its own monotonic
//!   clock, measured from the *start* of its last successful renewal) steps down, even if the
//!   call is still hanging on a silent network — before any standby can have taken over.
//! - **Fencing** ([`Fence::check`]): every batch the writers commit first reads the lease row
//!   `FOR SHARE` and checks holder and epoch, in the same transaction. A takeover's `UPDATE`
//!   waits for such transactions; once it commits, no transaction of the old epoch commits
//!   anything.
//! - **Handing over** on SIGTERM: the lease is released at the end of the shutdown, so a
//!   standby takes over at once instead of after `ttl`.
//!
//! Why a lease row and not a session advisory lock: an advisory lock is released only when
//! PostgreSQL notices its session is gone, which after a network partition can take as long as
//! TCP keepalives allow (hours by default); a lease expires by the clock, and its epoch is a
//! fencing token the writers can check.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

/// Whether this instance may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    Standby,
    Active { epoch: i64 },
}

/// Timing of the lease.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
    /// How often the holder renews it.
    pub renew_every: Duration,
    /// How often a standby tries to take it.
    pub retry_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(2),
            renew_every: Duration::from_millis(400),
            retry_every: Duration::from_millis(200),
        }
    }
}

impl LeaseConfig {
    /// The holder steps down when it has not renewed for this long: well before the lease can
    /// expire in the database.
    pub fn step_down_after(&self) -> Duration {
        self.ttl
            .saturating_sub(self.renew_every.max(self.ttl / 4))
            .max(self.renew_every)
    }
}

/// The fencing token: the writers commit only while it is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub holder: Uuid,
    pub epoch: i64,
}

#[derive(QueryableByName)]
struct Epoch {
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

impl Fence {
    /// Inside a writer's transaction: `true` while this fence is the current lease. Holds a
    /// share lock on the lease row until the transaction ends, so a takeover waits for it.
    pub fn check(&self, conn: &mut PgConnection) -> QueryResult<bool> {
        let found = diesel::sql_query(
            "SELECT epoch FROM leader_lease WHERE id = 1 AND holder = $1 AND epoch = $2 FOR SHARE",
        )
        .bind::<SqlUuid, _>(self.holder)
        .bind::<BigInt, _>(self.epoch)
        .load::<Epoch>(conn)?;
        Ok(!found.is_empty())
    }
}

/// Takes the lease if it is free or expired; `Some(epoch)` when taken.
pub fn try_take(conn: &mut PgConnection, holder: Uuid, ttl: Duration) -> QueryResult<Option<i64>> {
    let taken = diesel::sql_query(
        "UPDATE leader_lease SET holder = $1, epoch = epoch + 1, taken_at = now(),
                expires_at = now() + $2 * interval '1 millisecond'
         WHERE id = 1 AND (holder IS NULL OR expires_at < now())
         RETURNING epoch",
    )
    .bind::<SqlUuid, _>(holder)
    .bind::<BigInt, _>(ttl.as_millis() as i64)
    .load::<Epoch>(conn)?;
    Ok(taken.first().map(|e| e.epoch))
}

/// Renews the lease; `false` when it is no longer ours.
pub fn renew(conn: &mut PgConnection, fence: Fence, ttl: Duration) -> QueryResult<bool> {
    let renewed = diesel::sql_query(
        "UPDATE leader_lease SET expires_at = now() + $3 * interval '1 millisecond'
         WHERE id = 1 AND holder = $1 AND epoch = $2 RETURNING epoch",
    )
    .bind::<SqlUuid, _>(fence.holder)
    .bind::<BigInt, _>(fence.epoch)
    .bind::<BigInt, _>(ttl.as_millis() as i64)
    .load::<Epoch>(conn)?;
    Ok(!renewed.is_empty())
}

/// What a writer does with a fence: checks it in each transaction, and when it is stale, tells
/// the instance to step down.
#[derive(Clone)]
pub struct FenceGuard {
    pub fence: Fence,
    on_stale: Arc<dyn Fn() + Send + Sync>,
}

impl FenceGuard {
    pub fn new(fence: Fence, on_stale: Arc<dyn Fn() + Send + Sync>) -> FenceGuard {
        FenceGuard { fence, on_stale }
    }

    /// [`Fence::check`]; on a stale fence the instance is told to step down.
    pub fn check(&self, conn: &mut PgConnection) -> QueryResult<bool> {
        let current = self.fence.check(conn)?;
        if !current {
            self.stale();
        }
        Ok(current)
    }

    /// A statement that checked the fence itself found it stale: the batch committed nothing,
    /// and the instance is told to step down.
    pub fn stale(&self) {
        tracing::error!(
            epoch = self.fence.epoch,
            "fenced: another instance holds the lease; this batch commits nothing"
        );
        (self.on_stale)();
    }
}

impl std::fmt::Debug for FenceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FenceGuard({:?})", self.fence)
    }
}

/// Gives the lease up (a standby may take it at once).
pub fn release(conn: &mut PgConnection, fence: Fence) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE leader_lease SET holder = NULL, expires_at = '-infinity'
         WHERE id = 1 AND holder = $1 AND epoch = $2",
    )
    .bind::<SqlUuid, _>(fence.holder)
    .bind::<BigInt, _>(fence.epoch)
    .execute(conn)?;
    Ok(())
}

/// `url` with libpq parameters that bound connecting and keep dead peers from hanging us.
fn with_timeouts(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout=2&keepalives=1&keepalives_idle=2&keepalives_interval=1&keepalives_count=2")
}

fn connect(url: &str) -> Result<PgConnection, String> {
    let mut conn = PgConnection::establish(&with_timeouts(url)).map_err(|e| e.to_string())?;
    diesel::sql_query("SET statement_timeout = 1000")
        .execute(&mut conn)
        .map_err(|e| e.to_string())?;
    diesel::sql_query("SET lock_timeout = 1000")
        .execute(&mut conn)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

enum Control {
    /// A writer found the fence stale: step down now.
    Demote,
    /// Shutdown: release the lease if held, then end.
    Stop(mpsc::Sender<()>),
}

/// This instance's side of the lease: a thread that takes, renews and releases it, and a
/// watcher that steps down in time even while that thread hangs on a silent network.
#[derive(Clone)]
pub struct Leadership {
    holder: Uuid,
    role: watch::Receiver<Role>,
    role_tx: Arc<watch::Sender<Role>>,
    control: mpsc::Sender<Control>,
}

/// Milliseconds since `base`.
fn ms_since(base: Instant) -> u64 {
    base.elapsed().as_millis() as u64
}

impl Leadership {
    /// Starts competing for the lease. Must run inside a Tokio runtime.
    pub fn start(db_url: &str, config: LeaseConfig) -> Leadership {
        let holder = Uuid::new_v4();
        let (role_tx, role) = watch::channel(Role::Standby);
        let role_tx = Arc::new(role_tx);
        let (control, inbox) = mpsc::channel();
        let base = Instant::now();
        // Start of the last successful take or renewal (ms since `base`); the epoch it is for.
        let renewed_at = Arc::new(AtomicU64::new(0));
        let held_epoch = Arc::new(AtomicI64::new(0));
        let url = db_url.to_owned();
        {
            let (role_tx, renewed_at, held_epoch, config) = (
                Arc::clone(&role_tx),
                Arc::clone(&renewed_at),
                Arc::clone(&held_epoch),
                config.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("orderflow-lease".into())
                .spawn(move || {
                    run(
                        &url,
                        holder,
                        &config,
                        &inbox,
                        &role_tx,
                        base,
                        &renewed_at,
                        &held_epoch,
                    )
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start the lease thread; staying standby");
            }
        }
        // The watcher: steps down when renewals stop succeeding, whatever the thread is doing.
        let watcher_tx = Arc::clone(&role_tx);
        let watcher_control = control.clone();
        let limit = config.step_down_after().as_millis() as u64;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let role = *watcher_tx.borrow();
                if let Role::Active { epoch } = role {
                    let since = ms_since(base).saturating_sub(renewed_at.load(Ordering::Acquire));
                    if held_epoch.load(Ordering::Acquire) == epoch && since > limit {
                        tracing::error!(
                            epoch,
                            since_ms = since,
                            "lease not renewed in time; stepping down"
                        );
                        let _ = watcher_tx.send(Role::Standby);
                        let _ = watcher_control.send(Control::Demote);
                    }
                }
                if watcher_tx.is_closed() {
                    return; // nobody listens: the instance is gone
                }
            }
        });
        Leadership {
            holder,
            role,
            role_tx,
            control,
        }
    }

    /// A leadership that is always active with epoch 0 and never checks a lease: for tools and
    /// tests that run one engine on a database of their own.
    pub fn sole() -> Leadership {
        let (role_tx, role) = watch::channel(Role::Active { epoch: 0 });
        let (control, _) = mpsc::channel();
        Leadership {
            holder: Uuid::nil(),
            role,
            role_tx: Arc::new(role_tx),
            control,
        }
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Role changes, as they happen.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The fence of the current epoch, when active (`None` for [`Leadership::sole`]: no fence).
    pub fn fence(&self) -> Option<Fence> {
        match self.role() {
            Role::Active { epoch } if !self.holder.is_nil() => Some(Fence {
                holder: self.holder,
                epoch,
            }),
            _ => None,
        }
    }

    /// A writer found its fence stale: another instance took over. Step down now.
    pub fn demote(&self) {
        if matches!(self.role(), Role::Active { .. }) {
            let _ = self.role_tx.send(Role::Standby);
        }
        let _ = self.control.send(Control::Demote);
    }

    /// Stops competing; releases the lease if held, so a standby takes over at once.
    pub async fn release(&self) {
        let (done, wait) = mpsc::channel();
        if self.control.send(Control::Stop(done)).is_ok() {
            let _ = crate::blocking::run(move || wait.recv_timeout(Duration::from_secs(5))).await;
        }
        let _ = self.role_tx.send(Role::Standby);
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    url: &str,
    holder: Uuid,
    config: &LeaseConfig,
    inbox: &mpsc::Receiver<Control>,
    role: &watch::Sender<Role>,
    base: Instant,
    renewed_at: &AtomicU64,
    held_epoch: &AtomicI64,
) {
    let mut conn: Option<PgConnection> = None;
    let mut held: Option<Fence> = None;
    gauge_role(None);
    loop {
        let wait = if held.is_some() {
            config.renew_every
        } else {
            config.retry_every
        };
        match inbox.recv_timeout(wait) {
            Ok(Control::Stop(done)) => {
                if let (Some(fence), Some(c)) = (held, conn.as_mut()) {
                    match release(c, fence) {
                        Ok(()) => tracing::info!(epoch = fence.epoch, "lease released"),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not release the lease; it expires")
                        }
                    }
                }
                let _ = done.send(());
                return;
            }
            Ok(Control::Demote) => {
                if let Some(fence) = held.take() {
                    tracing::warn!(epoch = fence.epoch, "stepped down");
                }
                held_epoch.store(0, Ordering::Release);
                gauge_role(None);
                conn = None; // a fresh connection: the old one may be hanging
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if conn.is_none() {
            match connect(url) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "lease: no database connection");
                    metrics::gauge!("orderflow_database_reachable").set(0.0);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let shared = Shared {
            role,
            renewed_at,
            held_epoch,
        };
        let reached = attempt(c, holder, config, &mut held, ms_since(base), &shared);
        if !reached {
            conn = None; // a fresh connection next time
        }
        metrics::gauge!("orderflow_database_reachable").set(f64::from(u8::from(reached)));
    }
}

/// What the lease thread publishes to the rest of the instance.
struct Shared<'a> {
    role: &'a watch::Sender<Role>,
    /// Start of the last successful take or renewal (ms since the thread's base).
    renewed_at: &'a AtomicU64,
    /// The epoch `renewed_at` is for (0: none held).
    held_epoch: &'a AtomicI64,
}

/// One step of the loop on a live connection: take the lease when none is held, else renew
/// it. `started` is when the step began (ms since the base). Whether the database answered.
fn attempt(
    c: &mut PgConnection,
    holder: Uuid,
    config: &LeaseConfig,
    held: &mut Option<Fence>,
    started: u64,
    shared: &Shared<'_>,
) -> bool {
    match *held {
        None => match try_take(c, holder, config.ttl) {
            Ok(Some(epoch)) => {
                *held = Some(Fence { holder, epoch });
                shared.renewed_at.store(started, Ordering::Release);
                shared.held_epoch.store(epoch, Ordering::Release);
                tracing::info!(epoch, "took the lease: this instance is active");
                metrics::counter!("orderflow_lease_acquired_total").increment(1);
                gauge_role(Some(epoch));
                let _ = shared.role.send(Role::Active { epoch });
                true
            }
            Ok(None) => true,
            Err(e) => {
                tracing::debug!(error = %e, "lease: could not try to take it");
                false
            }
        },
        Some(fence) => match renew(c, fence, config.ttl) {
            Ok(true) => {
                // Still ours only if the watcher has not stepped down meanwhile.
                if *shared.role.borrow() == (Role::Active { epoch: fence.epoch }) {
                    shared.renewed_at.store(started, Ordering::Release);
                }
                true
            }
            Ok(false) => {
                tracing::error!(
                    epoch = fence.epoch,
                    "the lease was taken over; stepping down"
                );
                *held = None;
                shared.held_epoch.store(0, Ordering::Release);
                gauge_role(None);
                let _ = shared.role.send(Role::Standby);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                false
            }
        },
    }
}

/// The lease gauges: `orderflow_lease_active` and `orderflow_lease_epoch`.
fn gauge_role(epoch: Option<i64>) {
    metrics::gauge!("orderflow_lease_active").set(f64::from(u8::from(epoch.is_some())));
    metrics::gauge!("orderflow_lease_epoch").set(epoch.unwrap_or(0) as f64);
}
