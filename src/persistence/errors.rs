//! Database errors and how each is handled: transient (the database or the way to it is away:
//! retry) or refused (the statement carries what the database will refuse again: never retry),
//! DESIGN.md rules 7 and 8.

/// A database failure at start-up or in a request.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// PostgreSQL could not be reached, or refused the login.
    #[error("cannot connect to PostgreSQL: {}", one_line(.0))]
    Connect(#[source] diesel::ConnectionError),
    /// A database URL this service cannot use.
    #[error("cannot connect to PostgreSQL: {0}")]
    Url(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("connection pool: {}", one_line(.0))]
    Pool(#[source] diesel::r2d2::PoolError),
    /// A blocking database task cancelled before it returned (the runtime shutting down).
    #[error("the database task was cancelled: {0}")]
    Cancelled(#[source] tokio::task::JoinError),
    /// The code around a database call panicked: a bug, not the database being away, so it is
    /// never retried (it would panic again).
    #[error("panicked during a database call: {0}")]
    Panicked(String),
}

/// Folds a multi-line driver message into one line, for start-up errors and logs.
pub(crate) fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl DbError {
    /// Whether retrying can help: the database (or the way to it) is away, as opposed to a
    /// request it refused (DESIGN.md rule 8).
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect(_) | DbError::Pool(_) | DbError::Cancelled(_) => true,
            DbError::Query(e) => classify(e) == ErrorClass::Transient,
            DbError::Url(_) | DbError::Migration(_) | DbError::Panicked(_) => false,
        }
    }
}

/// How a failed statement is handled (DESIGN.md rules 7 and 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection failed or the server is not serving (SQLSTATE classes 08, 57P, 53, and
    /// serialization failures and deadlocks): the same statement can succeed later. Retry.
    Transient,
    /// The database refused the statement for what it carries (data, SQLSTATE classes 22 and
    /// 23, or anything else it will refuse again). Never retry it.
    Refused,
}

/// Messages of transient errors that diesel does not give a kind of their own (it exposes no
/// SQLSTATE): deadlocks, cancelled statements, a server shutting down or starting, and the
/// server's resources running out (classes 53 and 58: disk full, out of memory, I/O) — the
/// same statement succeeds once an operator made room — and a statement this connection prepared
/// before a migration changed the type of a column it returns (`STALE_PLAN`: it succeeds once the
/// connection forgot its prepared statements, see [`forget_statements_if_stale`]).
const TRANSIENT_MESSAGES: [&str; 18] = [
    STALE_PLAN,
    "deadlock detected",
    "canceling statement due to",
    "could not serialize",
    "terminating connection",
    "the database system is",
    "server closed the connection",
    "no connection to the server",
    "could not connect",
    "too many clients",
    "No space left on device",
    "could not extend file",
    "could not write",
    "could not fsync",
    "out of memory",
    "Out of memory",
    "I/O error",
    "remaining connection slots",
];

/// PostgreSQL's answer to a prepared statement whose result's type a schema change altered.
const STALE_PLAN: &str = "cached plan must not change result type";

/// After `e` on `conn`: when it is a prepared statement gone stale under a schema change (a
/// migration run by another instance), the connection forgets the statements it prepared, so
/// the next attempt prepares them again as the schema now is. Without it every attempt on that
/// connection fails the same way until it is closed. (The old statements stay on the server
/// until the connection ends: a few per schema change.)
pub(crate) fn forget_statements_if_stale(
    conn: &mut diesel::PgConnection,
    e: &diesel::result::Error,
) {
    use diesel::connection::{CacheSize, Connection};
    if let diesel::result::Error::DatabaseError(_, info) = e {
        if info.message().contains(STALE_PLAN) {
            tracing::warn!("the schema changed under this connection's prepared statements: preparing them again");
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
            conn.set_prepared_statement_cache_size(CacheSize::Unbounded);
        }
    }
}

/// Classifies a diesel error; see [`ErrorClass`].
pub fn classify(e: &diesel::result::Error) -> ErrorClass {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    match e {
        Error::DatabaseError(
            Kind::ClosedConnection
            | Kind::UnableToSendCommand
            | Kind::SerializationFailure
            | Kind::ReadOnlyTransaction,
            _,
        ) => ErrorClass::Transient,
        Error::DatabaseError(_, info)
            if TRANSIENT_MESSAGES
                .iter()
                .any(|m| info.message().contains(m)) =>
        {
            ErrorClass::Transient
        }
        Error::BrokenTransactionManager | Error::RollbackErrorOnCommit { .. } => {
            ErrorClass::Transient
        }
        _ => ErrorClass::Refused,
    }
}

impl From<diesel::r2d2::PoolError> for DbError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        DbError::Pool(e)
    }
}
