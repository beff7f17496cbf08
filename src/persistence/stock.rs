//! [`PgStore`]: the engine's durable store on Postgres.
//!
//! A batch is one statement, its own transaction and one round trip (`stock_sql.rs`): the fence,
//! one `UPDATE … FROM unnest(…)` writing every SKU row of the batch as deltas guarded by the
//! table's `CHECK`s, and one `INSERT … SELECT FROM unnest(…)` appending the change log. A hot SKU costs one
//! row write per batch, however many orders it served. The writer keeps its connection between
//! batches.

use std::sync::{Arc, Mutex};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::schema::stock;
use super::stock_sql::{write_all, write_each, write_in_one};
use super::DbPool;
use crate::domain::{Ledger, Sku};
use crate::engine::{RowOutcome, RowWrite, Store, StoreError};
use crate::lease::FenceGuard;

type Conn = diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<PgConnection>>;

/// The engine's store on Postgres.
#[derive(Clone)]
pub struct PgStore {
    pool: DbPool,
    /// Checked in every write transaction when this store belongs to a leased instance.
    fence: Option<FenceGuard>,
    /// The writer's connection, kept between batches while it works: a batch is then one
    /// round trip, without the pool's check-out query before it. Dropped on any error (the pool
    /// gives a tested one next time).
    kept: Arc<Mutex<Option<Conn>>>,
}

impl PgStore {
    pub fn new(pool: DbPool) -> PgStore {
        PgStore {
            pool,
            fence: None,
            kept: Arc::default(),
        }
    }

    /// A store whose every write checks, in its transaction, that this instance still holds the
    /// lease (and commits nothing when it does not).
    pub fn fenced(pool: DbPool, fence: FenceGuard) -> PgStore {
        PgStore {
            pool,
            fence: Some(fence),
            kept: Arc::default(),
        }
    }

    /// The kept connection, or one from the pool.
    fn writer_conn(&self) -> Result<Conn, StoreError> {
        let kept = self.kept.lock().ok().and_then(|mut k| k.take());
        match kept {
            Some(conn) => Ok(conn),
            None => self.pool.get().map_err(pool),
        }
    }

    /// Keeps a connection that just worked for the next batch.
    fn keep(&self, conn: Conn) {
        if let Ok(mut k) = self.kept.lock() {
            *k = Some(conn);
        }
    }
}

/// A store error from a diesel error: transient (retry) or refused (do not).
fn db(e: DieselError) -> StoreError {
    match super::classify(&e) {
        super::ErrorClass::Transient => StoreError::Unavailable(super::one_line(&e)),
        super::ErrorClass::Refused => StoreError::Refused(super::one_line(&e)),
    }
}

/// The pool could not give a connection: the database is away.
fn pool(e: diesel::r2d2::PoolError) -> StoreError {
    StoreError::Unavailable(super::one_line(e))
}

impl Store for PgStore {
    fn change_applied(&self, sku: &Sku, reference: &str) -> Result<bool, StoreError> {
        use super::schema::stock_events;
        let mut conn = self.pool.get().map_err(pool)?;
        let found = stock_events::table
            .filter(stock_events::sku.eq(sku.as_str()))
            .filter(stock_events::reference.eq(reference))
            .select(stock_events::version)
            .first::<i64>(&mut conn)
            .optional()
            .map_err(db)?;
        Ok(found.is_some())
    }

    fn load(&self, sku: &Sku) -> Result<Option<Ledger>, StoreError> {
        let mut conn = self.pool.get().map_err(pool)?;
        let row = stock::table
            .find(sku.as_str())
            .select((stock::on_hand, stock::reserved, stock::version))
            .first::<(i64, i64, i64)>(&mut conn)
            .optional()
            .map_err(db)?;
        Ok(row.map(|(on_hand, reserved, version)| Ledger::new(on_hand, reserved, version)))
    }

    fn load_all(&self) -> Result<Vec<(Sku, Ledger)>, StoreError> {
        let mut conn = self.pool.get().map_err(pool)?;
        let rows = stock::table
            .select((stock::sku, stock::on_hand, stock::reserved, stock::version))
            .load::<(String, i64, i64, i64)>(&mut conn)
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for (sku, on_hand, reserved, version) in rows {
            match Sku::parse(&sku) {
                Ok(sku) => out.push((sku, Ledger::new(on_hand, reserved, version))),
                Err(e) => {
                    tracing::error!(%sku, error = %e, "skipping a stock row with an invalid sku")
                }
            }
        }
        Ok(out)
    }

    fn write_batch(&self, rows: &[RowWrite], retry: bool) -> Result<Vec<RowOutcome>, StoreError> {
        let mut conn = self.writer_conn()?;
        if !retry {
            // The fast path: one statement, one round trip (a retry instead looks first for
            // what an attempt whose answer was lost did commit).
            match write_in_one(&mut conn, rows, self.fence.as_ref()) {
                Ok(Some(applied)) => {
                    self.keep(conn);
                    return Ok(rows
                        .iter()
                        .map(|r| match applied.contains(r.sku.as_str()) {
                            true => RowOutcome::Applied,
                            false => RowOutcome::Conflict,
                        })
                        .collect());
                }
                Ok(None) => {
                    if let Some(guard) = &self.fence {
                        guard.stale();
                    }
                    return Err(StoreError::Fenced);
                }
                Err(e) if super::classify(&e) == super::ErrorClass::Transient => {
                    super::errors::forget_statements_if_stale(&mut conn, &e);
                    return Err(StoreError::Unavailable(super::one_line(&e)));
                }
                // Some row was refused: the bulkhead below finds it and writes the others.
                Err(_) => return self.write_each_fenced(&mut conn, rows, retry),
            }
        }
        let fenced = std::cell::Cell::new(false);
        // First, in the same transaction: is this instance still the one that may write?
        let check = |conn: &mut PgConnection| -> Result<(), DieselError> {
            match &self.fence {
                Some(guard) if !guard.check(conn)? => {
                    fenced.set(true);
                    Err(DieselError::RollbackTransaction)
                }
                _ => Ok(()),
            }
        };
        let first = conn.transaction(|conn| {
            check(conn)?;
            write_all(conn, rows, retry)
        });
        match first {
            Ok(outcomes) => Ok(outcomes),
            Err(_) if fenced.get() => Err(StoreError::Fenced),
            Err(e) if super::classify(&e) == super::ErrorClass::Transient => {
                super::errors::forget_statements_if_stale(&mut conn, &e);
                Err(StoreError::Unavailable(super::one_line(&e)))
            }
            // Some row was refused (memory was wrong, or bad data): find it, write the others.
            Err(_) => self.write_each_fenced(&mut conn, rows, retry),
        }
    }
}

impl PgStore {
    /// The bulkhead ([`write_each`]) in one transaction that checks the fence first.
    fn write_each_fenced(
        &self,
        conn: &mut PgConnection,
        rows: &[RowWrite],
        retry: bool,
    ) -> Result<Vec<RowOutcome>, StoreError> {
        let fenced = std::cell::Cell::new(false);
        let each = conn.transaction(|conn| {
            if let Some(guard) = &self.fence {
                if !guard.check(conn)? {
                    fenced.set(true);
                    return Err(DieselError::RollbackTransaction);
                }
            }
            write_each(conn, rows, retry)
        });
        match each {
            Err(_) if fenced.get() => Err(StoreError::Fenced),
            other => other.map_err(db),
        }
    }
}
