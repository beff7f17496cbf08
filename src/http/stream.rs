//! `GET /v1/inventory/stream`: server-sent events, one per stock change, fed by the SKU actors.
//!
//! The actors publish into a bounded broadcast and never wait for readers. A reader that falls
//! more than `STOCK_STREAM_BUFFER` events behind is not dropped silently: it receives an
//! `event: lagged` with the number of events it missed (and should re-read the SKUs it cares
//! about with `GET /v1/inventory/{sku}`), then continues with the oldest event still buffered.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::Active;
use crate::engine::StockEvent;

const KEEPALIVE: Duration = Duration::from_secs(15);

fn frame(event: &StockEvent) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!(
        "id: {}:{}\nevent: stock\ndata: {data}\n\n",
        event.sku, event.version
    ))
}

pub async fn stock(state: Active) -> HttpResponse {
    let receiver = state.engine.feed().subscribe();
    let hello = Bytes::from_static(b": orderflow stock stream\nretry: 2000\n\n");
    let events = stream::unfold(receiver, |mut rx| async move {
        let chunk = match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
            Ok(Ok(event)) => frame(&event),
            Ok(Err(RecvError::Lagged(missed))) => Bytes::from(format!(
                "event: lagged\ndata: {}\n\n",
                json!({ "missed": missed, "hint": "re-read GET /v1/inventory/{sku}" })
            )),
            Ok(Err(RecvError::Closed)) => return None,
            Err(_) => Bytes::from_static(b": keepalive\n\n"),
        };
        Some((Ok::<_, actix_web::Error>(chunk), rx))
    });
    let body = futures_util::StreamExt::chain(
        stream::once(async move { Ok::<_, actix_web::Error>(hello) }),
        events,
    );
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
