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

/// The text a panic carried (`panic!` with a message gives a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_panic_keeps_its_message() {
        let e = super::run(|| -> u8 { panic!("boom {}", 7) })
            .await
            .unwrap_err();
        assert!(e.is_panic());
        assert_eq!(super::panic_message(e.into_panic().as_ref()), "boom 7");
        let e = super::run(|| -> u8 { panic!("plain") }).await.unwrap_err();
        assert_eq!(super::panic_message(e.into_panic().as_ref()), "plain");
    }
}
