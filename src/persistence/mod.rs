//! Postgres through diesel and r2d2: database creation, embedded migrations, the connection
//! pool, the engine's [`PgStore`] and the catalog's product queries.
//!
//! Every function here blocks; async callers run them with `web::block` / `spawn_blocking`.

pub mod carts;
mod decided;
pub mod keys;
pub mod orders;
mod prepared;
pub mod products;
pub mod schema;
mod stock;
mod stock_sql;
pub(crate) use prepared::Prepared;

mod errors;
pub(crate) use errors::forget_statements_if_stale;
pub(crate) use errors::one_line;
pub use errors::{classify, DbError, ErrorClass};
pub use stock::PgStore;

use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The migrations in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub type DbPool = Pool<ConnectionManager<PgConnection>>;

/// Splits a `postgres://` URL into (URL of the `postgres` maintenance database, database name).
/// The URL may be libpq's multi-host form (`postgres://u@h1:5432,h2:5432/db?target_session_attrs=
/// read-write`), which no generic URL parser reads, so it is cut by hand: the authority (user,
/// password and every host, percent-encoding kept) and the query stay as they are; the name is
/// percent-decoded.
pub fn split_database_url(url: &str) -> Result<(String, String), String> {
    let shown = || crate::urls::redact(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("DATABASE_URL={:?} is not a URL", shown()));
    };
    if !matches!(scheme, "postgres" | "postgresql") {
        return Err(format!(
            "DATABASE_URL={:?} must start with postgres://",
            shown()
        ));
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let Some((authority, raw_name)) = before_query.split_once('/') else {
        return Err(format!(
            "DATABASE_URL={:?} names no database (…/dbname)",
            shown()
        ));
    };
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    if hosts
        .split(',')
        .any(|h| h.trim().is_empty() || h.contains(char::is_whitespace))
    {
        return Err(format!(
            "DATABASE_URL={:?}: every host of a multi-host URL needs a name (h1:5432,h2:5432)",
            shown()
        ));
    }
    let name = crate::urls::percent_decode(raw_name);
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(format!(
            "DATABASE_URL={:?} names no database (…/dbname)",
            shown()
        ));
    }
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok((format!("{scheme}://{authority}/postgres{query}"), name))
}

/// `url` with libpq's connection timeouts added where the operator set none: a host that does
/// not answer (a dead primary of a multi-host list) is given up after 2 s instead of the
/// kernel's minutes, and a connection whose server vanished is found dead by keepalives in
/// seconds — which is how the pools follow a failover.
pub fn with_connect_timeouts(url: &str) -> String {
    let mut url = url.to_owned();
    for (key, value) in [
        ("connect_timeout", "2"),
        ("keepalives", "1"),
        ("keepalives_idle", "5"),
        ("keepalives_interval", "2"),
        ("keepalives_count", "3"),
    ] {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        if query.split('&').any(|kv| kv.split('=').next() == Some(key)) {
            continue;
        }
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(key);
        url.push('=');
        url.push_str(value);
    }
    url
}

/// Creates the database named in `url` if it does not exist yet.
pub fn create_database_if_missing(url: &str) -> Result<(), DbError> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        #[allow(dead_code)]
        one: i32,
    }
    // The usual case, the database is there: nothing to do, and a role that may reach only its
    // own database (the compose file's schema owner) never needs the maintenance database.
    if let Err(e) = PgConnection::establish(&with_connect_timeouts(url)) {
        // Only a missing database is made here; any other failure (a wrong password, no
        // primary) is the one to report, not what the maintenance database would say.
        let text = e.to_string();
        if !(text.contains("database \"") && text.contains("does not exist")) {
            return Err(DbError::Connect(e));
        }
    } else {
        return Ok(());
    }
    let (maintenance, name) = split_database_url(url).map_err(DbError::Url)?;
    let mut conn = establish(&maintenance)?;
    let exists = diesel::sql_query("SELECT 1 AS one FROM pg_database WHERE datname = $1")
        .bind::<diesel::sql_types::Text, _>(&name)
        .get_result::<Exists>(&mut conn)
        .optional()?
        .is_some();
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match diesel::sql_query(format!("CREATE DATABASE {quoted}")).execute(&mut conn) {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it in the meantime.
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One connection of its own (start-up, migrations), its failure kept as the error's source.
fn establish(url: &str) -> Result<PgConnection, DbError> {
    PgConnection::establish(url).map_err(DbError::Connect)
}

/// Runs the pending embedded migrations, one migrating process at a time.
pub fn run_migrations(url: &str) -> Result<usize, DbError> {
    let mut conn = establish(url)?;
    diesel::sql_query("SELECT pg_advisory_lock(7411001)").execute(&mut conn)?;
    let result = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|done| done.len())
        .map_err(DbError::Migration);
    diesel::sql_query("SELECT pg_advisory_unlock(7411001)").execute(&mut conn)?;
    result
}

/// Migrations not applied yet (a read: what a least-privilege role may ask).
pub fn pending_migrations(url: &str) -> Result<usize, DbError> {
    use diesel::migration::MigrationSource;
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let mut conn = establish(url)?;
    // Read directly: diesel's own check first tries to create its table, which a role without
    // DDL rights may not.
    let exists = !diesel::sql_query(
        "SELECT tablename AS version FROM pg_catalog.pg_tables \
         WHERE tablename = '__diesel_schema_migrations'",
    )
    .load::<Version>(&mut conn)?
    .is_empty();
    let applied: std::collections::HashSet<String> = if exists {
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load::<Version>(&mut conn)?
            .into_iter()
            .map(|v| v.version)
            .collect()
    } else {
        Default::default()
    };
    let known = <EmbeddedMigrations as MigrationSource<diesel::pg::Pg>>::migrations(&MIGRATIONS)
        .map_err(DbError::Migration)?;
    Ok(known
        .iter()
        .filter(|m| !applied.contains(&m.name().version().to_string()))
        .count())
}

/// Creates (if missing) and migrates the database; returns the number of migrations applied.
pub fn prepare_database(url: &str) -> Result<usize, DbError> {
    create_database_if_missing(url)?;
    run_migrations(url)
}

/// Builds the connection pool; fails when no connection can be made.
pub fn connect_pool(url: &str, size: u32) -> Result<DbPool, DbError> {
    let manager = ConnectionManager::<PgConnection>::new(with_connect_timeouts(url));
    Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(5))
        // A connection that died with the database is found out and replaced on checkout.
        .test_on_check_out(true)
        .build(manager)
        .map_err(DbError::Pool)
}

/// Runs `f` with a pooled connection on a blocking thread (never on an async worker).
pub async fn run_blocking<T: Send + 'static, E: From<DbError> + Send + 'static>(
    pool: &DbPool,
    f: impl FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    let pool = pool.clone();
    crate::blocking::run(move || {
        let mut conn = pool.get().map_err(DbError::from)?;
        f(&mut conn)
    })
    .await
    .map_err(|e| E::from(join_error(e)))?
}

/// A blocking database task that did not return: a panic is permanent ([`DbError::Panicked`]),
/// a task cancelled at shutdown is the pool going away (transient).
pub fn join_error(e: tokio::task::JoinError) -> DbError {
    if e.is_panic() {
        let why = crate::blocking::panic_message(e.into_panic().as_ref());
        DbError::Panicked(why)
    } else {
        DbError::Cancelled(e)
    }
}

/// What the database this service reaches says about its replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `synchronous_standby_names` on the server (empty: commits never wait for a standby).
    pub synchronous_standby_names: String,
    /// Standbys streaming in `sync` or `quorum` state right now.
    pub sync_standbys: i64,
    /// Standbys whose state this role may not read (without `pg_read_all_stats`).
    pub hidden: i64,
}

impl Replication {
    /// Whether an acknowledged commit is on a second server (so a failover keeps it), as far
    /// as this role can see; `None` when it cannot tell.
    pub fn synchronous(&self) -> Option<bool> {
        if self.synchronous_standby_names.trim().is_empty() {
            Some(false)
        } else if self.sync_standbys > 0 {
            Some(true)
        } else if self.hidden > 0 {
            None
        } else {
            Some(false)
        }
    }
}

/// Reads [`Replication`] from the server `conn` is connected to.
pub fn replication(conn: &mut PgConnection) -> Result<Replication, DbError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        names: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        sync: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        hidden: i64,
    }
    let row = diesel::sql_query(
        "SELECT current_setting('synchronous_standby_names') AS names, \
         (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')) AS sync, \
         (SELECT count(*) FROM pg_stat_replication WHERE sync_state IS NULL) AS hidden",
    )
    .get_result::<Row>(conn)?;
    Ok(Replication {
        synchronous_standby_names: row.names,
        sync_standbys: row.sync,
        hidden: row.hidden,
    })
}

/// `SELECT 1` through the pool: the readiness check.
pub fn ping(pool: &DbPool) -> Result<(), DbError> {
    let mut conn = pool.get_timeout(Duration::from_secs(2))?;
    diesel::sql_query("SELECT 1").execute(&mut conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19, item 7: an error keeps what caused it as its source (and says it once).
    #[test]
    fn a_failed_connection_keeps_the_drivers_error_as_its_source() {
        let e = establish("postgres://postgres@127.0.0.1:1/none")
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(e, DbError::Connect(_)), "{e}");
        assert!(e.is_transient(), "{e}");
        let source = std::error::Error::source(&e).expect("the driver's error is kept");
        assert!(e.to_string().contains(&one_line(source)), "{e}");
        assert_eq!(
            crate::messaging::error_chain(&e),
            e.to_string(),
            "said once"
        );
    }

    #[actix_web::test]
    async fn a_cancelled_database_task_is_transient_and_keeps_its_source() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let e = join_error(task.await.unwrap_err());
        assert!(matches!(e, DbError::Cancelled(_)), "{e}");
        assert!(e.is_transient(), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[actix_web::test]
    async fn a_panic_in_a_database_call_is_permanent_not_transient() {
        let e = crate::blocking::run(|| -> u8 { panic!("a bug in the row mapping") })
            .await
            .unwrap_err();
        let e = join_error(e);
        assert!(!e.is_transient(), "{e}");
        assert!(e.to_string().contains("a bug in the row mapping"), "{e}");
    }

    #[test]
    fn maintenance_url_keeps_everything_but_the_name() {
        assert_eq!(
            split_database_url("postgres://postgres@127.0.0.1:5432/orderflow").unwrap(),
            (
                "postgres://postgres@127.0.0.1:5432/postgres".into(),
                "orderflow".into()
            )
        );
        assert_eq!(
            split_database_url("postgresql://u:p@h/db?sslmode=disable").unwrap(),
            (
                "postgresql://u:p@h/postgres?sslmode=disable".into(),
                "db".into()
            )
        );
        assert!(split_database_url("postgres://h:5432").is_err());
        assert!(split_database_url("postgres://h:5432/").is_err());
        assert!(split_database_url("mysql://h/db").is_err());
        assert_eq!(
            split_database_url("postgres://u:p%40ss@[::1]:5432/my%20db").unwrap(),
            (
                "postgres://u:p%40ss@[::1]:5432/postgres".into(),
                "my db".into()
            )
        );
    }

    #[test]
    fn a_multi_host_url_keeps_every_host_and_its_attributes() {
        let url = "postgres://u:p%2Cw@db1:5432,db2:5433,[::1]:5434/orders?target_session_attrs=read-write";
        assert_eq!(
            split_database_url(url).unwrap(),
            (
                "postgres://u:p%2Cw@db1:5432,db2:5433,[::1]:5434/postgres?target_session_attrs=read-write"
                    .into(),
                "orders".into()
            )
        );
        assert!(split_database_url("postgres://u@db1:5432,,db2:5432/x").is_err());
        assert!(split_database_url("postgres://u@db1:5432,db2:5432").is_err());
        assert!(split_database_url("postgres://u@db1/a%00b").is_err());
    }

    #[test]
    fn connect_timeouts_are_added_only_where_none_is_set() {
        assert_eq!(
            with_connect_timeouts(
                "postgres://h1,h2/db?target_session_attrs=read-write&connect_timeout=9"
            ),
            "postgres://h1,h2/db?target_session_attrs=read-write&connect_timeout=9&keepalives=1\
             &keepalives_idle=5&keepalives_interval=2&keepalives_count=3"
        );
        assert!(with_connect_timeouts("postgres://h/db")
            .starts_with("postgres://h/db?connect_timeout=2&"));
    }
}
