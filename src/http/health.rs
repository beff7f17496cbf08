//! `/health/live` and `/health/ready`.

use std::time::Duration;

use actix_web::{http::header, web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::persistence;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Real checks: a `SELECT 1` through the pool, the broker connection, and the engine's persister.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let pool = state.pool.clone();
    let postgres = match tokio::time::timeout(
        Duration::from_secs(3),
        web::block(move || persistence::ping(&pool)),
    )
    .await
    {
        Ok(Ok(Ok(()))) => "ok".to_owned(),
        Ok(Ok(Err(e))) => format!("failing: {e}"),
        Ok(Err(e)) => format!("failing: {e}"),
        Err(_) => "failing: no answer within 3 s".to_owned(),
    };
    let rabbitmq = if state.broker.is_connected() {
        "ok".to_owned()
    } else {
        "failing: not connected".to_owned()
    };
    let engine = if state.engine.is_healthy() && !state.orders.writer_failing() {
        "ok".to_owned()
    } else {
        "failing: the write-behind persister or the order writer cannot write".to_owned()
    };
    let checks = json!({ "postgres": postgres, "rabbitmq": rabbitmq, "engine": engine });
    let failing: Vec<&str> = [
        ("postgres", &postgres),
        ("rabbitmq", &rabbitmq),
        ("engine", &engine),
    ]
    .into_iter()
    .filter(|(_, v)| v.as_str() != "ok")
    .map(|(k, _)| k)
    .collect();
    if failing.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks }))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "5"))
            .json(json!({
                "status": "not_ready",
                "checks": checks,
                "error": {
                    "code": "unavailable",
                    "message": format!("not ready: {}", failing.join(", ")),
                    "details": { "checks": checks },
                }
            }))
    }
}
