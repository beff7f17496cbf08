//! The batch writer against a sink over a vector.
use super::*;

/// A sink over a vector: refuses odd numbers, fails transiently `fail_first` times.
struct Numbers {
    written: Arc<Mutex<Vec<i64>>>,
    fail_first: u32,
    calls: u32,
}

impl Sink for Numbers {
    type Item = i64;
    type Output = usize;

    fn write(
        &mut self,
        items: &[i64],
        _attempt: u32,
    ) -> Result<Vec<Result<usize, Refusal>>, SinkError> {
        self.calls += 1;
        if self.calls <= self.fail_first {
            return Err(SinkError::Transient("database away".into()));
        }
        let mut written = self.written.lock().unwrap();
        Ok(items
            .iter()
            .map(|n| {
                if n % 2 == 1 {
                    Err(Refusal(format!("{n} is odd")))
                } else {
                    written.push(*n);
                    Ok(written.len())
                }
            })
            .collect())
    }
}

fn config() -> BatchConfig {
    BatchConfig {
        name: "test-writer",
        max_batch: 64,
        linger: Duration::from_millis(5),
        idle_gap: Duration::from_millis(1),
        capacity: 1024,
    }
}

#[actix_rt::test]
async fn a_refused_item_fails_alone_and_transient_failures_are_retried() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let writer = BatchWriter::spawn(
        Numbers {
            written: Arc::clone(&written),
            fail_first: 2,
            calls: 0,
        },
        config(),
    );
    let tickets: Vec<_> = (0..10).map(|n| writer.submit(n).unwrap()).collect();
    let mut refused = 0;
    for (n, ticket) in tickets.into_iter().enumerate() {
        match ticket.wait().await {
            Ok(_) => assert_eq!(n % 2, 0),
            Err(WriteError::Refused(why)) => {
                assert_eq!(n % 2, 1);
                assert!(why.contains("odd"));
                refused += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 5);
    assert_eq!(*written.lock().unwrap(), vec![0, 2, 4, 6, 8]);
    assert!(writer.stats().db_errors.load(Ordering::Relaxed) >= 2);
    assert!(!writer.stats().is_failing());
    writer.stop_blocking();
    assert!(matches!(writer.submit(2), Err(SubmitError::Stopped)));
}

#[actix_rt::test]
async fn a_full_queue_says_so_instead_of_blocking() {
    let writer = BatchWriter::spawn(
        Numbers {
            written: Arc::default(),
            fail_first: u32::MAX,
            calls: 0,
        },
        BatchConfig {
            capacity: 2,
            max_batch: 1,
            ..config()
        },
    );
    let mut full = false;
    for n in 0..100 {
        if matches!(writer.submit(n * 2), Err(SubmitError::Full)) {
            full = true;
            break;
        }
    }
    assert!(full, "the bounded queue refused at some point");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(writer.stats().is_failing());
}

/// Issue 19, item 7: a transient failure is the sink's own error, its causes kept, said once.
#[test]
fn a_transient_failure_keeps_the_error_and_its_causes() {
    #[derive(Debug, thiserror::Error)]
    #[error("the pool timed out")]
    struct PoolTimeout(#[source] std::io::Error);
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    let e = SinkError::Transient(Box::new(PoolTimeout(refused)));
    assert_eq!(e.to_string(), "the pool timed out");
    let cause = std::error::Error::source(&e).map(ToString::to_string);
    assert_eq!(cause.as_deref(), Some("connection refused"));
    assert_eq!(
        crate::telemetry::error_chain(&e),
        "the pool timed out: connection refused"
    );
}

/// A sink that keeps the size of every batch it is given.
struct Sizes(Arc<Mutex<Vec<usize>>>);

impl Sink for Sizes {
    type Item = u32;
    type Output = ();

    fn write(
        &mut self,
        items: &[u32],
        _attempt: u32,
    ) -> Result<Vec<Result<(), Refusal>>, SinkError> {
        self.0.lock().unwrap().push(items.len());
        Ok(items.iter().map(|_| Ok(())).collect())
    }
}

#[actix_rt::test]
async fn a_batch_as_large_as_the_last_closes_without_waiting_the_idle_gap() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let gap = Duration::from_secs(2);
    let writer = BatchWriter::spawn(
        Sizes(Arc::clone(&sizes)),
        BatchConfig {
            idle_gap: gap,
            linger: Duration::from_secs(20),
            ..config()
        },
    );
    let round = |n: u32| {
        let tickets: Vec<_> = (0..n).map(|i| writer.submit(i).unwrap()).collect();
        async move {
            let started = Instant::now();
            for t in tickets {
                t.wait().await.unwrap();
            }
            started.elapsed()
        }
    };
    // The first batch has no batch before it: it waits the gap out.
    assert!(round(3).await >= gap / 2);
    // Three again: the batch closes as soon as the third is in and nothing else is queued.
    assert!(round(3).await < gap / 2);
    // Two are fewer than the last batch: they wait for company the whole gap.
    assert!(round(2).await >= gap / 2);
    assert_eq!(*sizes.lock().unwrap(), vec![3, 3, 2]);
    writer.stop_blocking();
}
