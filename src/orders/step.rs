//! What a step of the pipeline can come to when it does not finish, and the deadline it runs
//! under.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::WriteError;
use crate::persistence::DbError;

/// What went wrong in a step: a message, and the error that caused it (kept as the source, so a
/// log shows the whole chain).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Cause {
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with the error behind it.
    pub fn of(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Cause {
        Cause {
            message,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Cause {
        Cause::from(message.to_owned())
    }
}

/// Why a step of the pipeline could not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// A dependency is away: the step can succeed later (DESIGN.md rule 8).
    #[error(transparent)]
    Transient(Cause),
    /// The database refused what the step carries: retrying cannot help.
    #[error(transparent)]
    Refused(Cause),
    /// Another instance holds the lease now: this one must stop acting (the delivery goes back
    /// to the queue with its channel, untouched).
    #[error("fenced: another instance is active")]
    Fenced,
}

impl From<DbError> for StepError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            StepError::Transient(Cause::of("the database is away", e))
        } else {
            StepError::Refused(Cause::of("the database refused it", e))
        }
    }
}

impl From<WriteError> for StepError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Refused(why) => StepError::Refused(why.into()),
            WriteError::Stopped => StepError::Transient("the order writer stopped".into()),
            WriteError::Fenced => StepError::Fenced,
        }
    }
}

/// When a step must have finished. Waits on the database are bounded by it; waits on the SKU
/// actors (memory) are not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Instant);

impl Deadline {
    pub fn after(window: Duration) -> Deadline {
        Deadline(Instant::now() + window)
    }

    /// The later of the two deadlines.
    pub fn max(self, other: Deadline) -> Deadline {
        Deadline(self.0.max(other.0))
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// Runs `step`, or gives up (transient) when the deadline passes first.
    pub async fn bound<T>(&self, step: impl Future<Output = T>) -> Result<T, StepError> {
        tokio::time::timeout_at(self.0.into(), step)
            .await
            .map_err(|_| StepError::Transient("timed out waiting for the database".into()))
    }
}
