//! What a queue lets through before any handler sees a message: its size, and who published it
//! (DESIGN.md rule 9). Decided on the delivery as it is, unparsed.

use super::consumer::{Message, Outcome};

/// Who may publish to a queue, and how large a message may be.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Larger messages are dead-lettered `too_large` without being parsed.
    pub max_bytes: usize,
    /// RabbitMQ users allowed to publish (`*_PRODUCERS`); `None`: anyone with access to the
    /// vhost. orderflow's own messages always pass.
    pub producers: Option<Vec<String>>,
}

/// The largest message a queue takes (API.md).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

impl Default for Gate {
    fn default() -> Self {
        Gate {
            max_bytes: MAX_MESSAGE_BYTES,
            producers: None,
        }
    }
}

impl Gate {
    /// What happens to a delivery before its handler sees it: `Some` settles it here.
    pub fn check(&self, message: &Message) -> Option<Outcome> {
        if message.data.len() > self.max_bytes {
            let reason = format!(
                "too_large: {} bytes, more than the {} a message may have",
                message.data.len(),
                self.max_bytes
            );
            let body = serde_json::json!({
                "redacted": "too_large",
                "bytes": message.data.len(),
            })
            .to_string()
            .into_bytes();
            return Some(Outcome::DeadLetterRedacted { reason, body });
        }
        if let Some(allowed) = &self.producers {
            let ok = message.own
                || message
                    .producer
                    .as_deref()
                    .is_some_and(|p| allowed.iter().any(|a| a == p));
            if !ok {
                return Some(Outcome::DeadLetter(format!(
                    "unauthorized_producer: {}",
                    match message.producer.as_deref() {
                        Some(p) => format!("user {p:?} may not publish here"),
                        None => "the message names no user_id".into(),
                    }
                )));
            }
        }
        None
    }
}
