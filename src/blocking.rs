//! The one way into blocking code (diesel calls, waiting on a writer thread): a blocking thread,
//! never an async worker (DESIGN.md), inside the caller's tracing span so its logs keep the
//! order id or SKU they belong to.

/// Runs `f` on a blocking thread in the current span.
pub async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await
}
