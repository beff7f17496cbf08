//! Server-sent events (through `actix-web-lab`'s `Sse`): `GET /v1/inventory/stream`, and the
//! shared shape of every stream here — a broadcast read without ever slowing its writer. A
//! reader that falls more than the broadcast's capacity behind is not dropped silently: it gets
//! an `event: lagged` with the number it missed (and should re-read what it cares about), then
//! continues with the oldest event still buffered. Idle streams get a keep-alive comment.
//!
//! Every stream holds one of a fixed number of [`Slots`] while it is open (beyond them: 503
//! `unavailable` with `Retry-After`) and ends after the configured lifetime (a client's
//! `EventSource` reconnects), so idle readers cannot pile up without bound.

use std::time::Duration;

use actix_web_lab::sse::{self, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

#[allow(unused_imports)]
use super::openapi::ErrorBody;
use super::{Active, ApiError, AppState};
use crate::engine::StockEvent;

const KEEPALIVE: Duration = Duration::from_secs(15);

/// The open-stream budget shared by every SSE route.
#[derive(Debug)]
pub struct Slots {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
    lifetime: Duration,
}

/// One open stream; its slot is free again when the stream is dropped.
pub struct Slot(std::sync::Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Slots {
    pub fn new(max: usize, lifetime: Duration) -> Slots {
        Slots {
            open: Default::default(),
            max,
            lifetime,
        }
    }

    /// A slot for a new stream, or 503 when all are taken.
    pub fn take(self: &std::sync::Arc<Self>) -> Result<Slot, ApiError> {
        use std::sync::atomic::Ordering;
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Slot(std::sync::Arc::clone(self))),
            Err(_) => Err(ApiError::unavailable(
                "too many open event streams; retry shortly",
                5,
            )),
        }
    }
}

/// `body`, holding `slot` while it runs and ending after the slots' lifetime.
pub(super) fn bounded<S: Stream + 'static>(slot: Slot, body: S) -> impl Stream<Item = S::Item> {
    use futures_util::StreamExt;
    let lifetime = slot.0.lifetime;
    body.take_until(Box::pin(tokio::time::sleep(lifetime)))
        .map(move |item| {
            let _held = &slot;
            item
        })
}

/// What to do with one message of the broadcast.
pub(super) enum Step {
    /// Not for this reader.
    Skip,
    /// Send this event.
    Send(sse::Event),
    /// Send this event, then end the stream.
    Last(sse::Event),
}

type Events = std::pin::Pin<Box<dyn Stream<Item = sse::Event>>>;

/// `first` (a replay), then every broadcast message `step` lets through, with `lagged` notes
/// saying `hint` when the reader fell behind. Ends when `step` says `Last`, or at once when
/// `finished`.
pub(super) fn events<T: Clone + 'static>(
    slot: Slot,
    first: Vec<sse::Event>,
    receiver: broadcast::Receiver<T>,
    finished: bool,
    hint: String,
    step: impl Fn(&T) -> Step + 'static,
) -> Sse<impl Stream<Item = Result<sse::Event, std::convert::Infallible>>> {
    let (step, hint) = (std::rc::Rc::new(step), std::rc::Rc::new(hint));
    let live = stream::unfold((receiver, finished), move |(mut rx, done)| {
        let (step, hint) = (std::rc::Rc::clone(&step), std::rc::Rc::clone(&hint));
        async move {
            if done {
                return None;
            }
            let (event, last) = next_event(&mut rx, &*step, &hint).await?;
            Some((event, (rx, last)))
        }
    });
    let replay: Events = Box::pin(stream::iter(first));
    let body = futures_util::StreamExt::chain(replay, live);
    Sse::from_infallible_stream(bounded(slot, body)).with_keep_alive(KEEPALIVE)
}

/// The next event for this reader (and whether it is the last), or `None` when the writer is gone.
async fn next_event<T: Clone>(
    rx: &mut broadcast::Receiver<T>,
    step: &impl Fn(&T) -> Step,
    hint: &str,
) -> Option<(sse::Event, bool)> {
    loop {
        match rx.recv().await {
            Ok(message) => match step(&message) {
                Step::Skip => continue,
                Step::Send(event) => return Some((event, false)),
                Step::Last(event) => return Some((event, true)),
            },
            Err(RecvError::Lagged(missed)) => {
                let note = sse::Data::new(json!({ "missed": missed, "hint": hint }).to_string())
                    .event("lagged");
                return Some((note.into(), false));
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

/// One stock change as an event (`id: {sku}:{version}`, `event: stock`).
fn stock_event(event: &StockEvent) -> sse::Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    sse::Data::new(data)
        .event("stock")
        .id(format!("{}:{}", event.sku, event.version))
        .into()
}

/// `GET /v1/inventory/stream`: one event per committed stock change.
#[utoipa::path(get, path = "/v1/inventory/stream", tag = "inventory", responses((status = 200, description = "Server-sent events, one per committed stock change; `lagged` when a reader falls behind", content_type = "text/event-stream"), (status = 503, description = "Unavailable, overloaded or too many open streams, with `Retry-After`", body = ErrorBody)))]
pub async fn stock(
    state: Active,
    app: actix_web::web::Data<AppState>,
) -> Result<impl actix_web::Responder, ApiError> {
    Ok(events(
        app.streams.stock.take()?,
        vec![sse::Event::Comment("orderflow stock stream".into())],
        state.engine.feed().subscribe(),
        false,
        "re-read GET /v1/inventory/{sku}".into(),
        |event| Step::Send(stock_event(event)),
    )
    .with_retry_duration(Duration::from_secs(2)))
}
