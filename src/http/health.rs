//! `/health/live` and `/health/ready`.

use std::time::Duration;

use actix_web::{http::header, web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use crate::lease::Role;
use crate::persistence;

/// `GET /health/live`.
#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /health/ready`: 200 when active and every check is `ok`, else 503 with `error`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "role": "active", "epoch": 3, "checks": {"postgres": "ok", "rabbitmq": "ok", "engine": "ok"}}))]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// `active`, `starting` (holds the lease, still loading) or `standby`.
    role: &'static str,
    /// The lease's epoch while active.
    epoch: Option<i64>,
    checks: Checks,
    /// On a 503: the error body's `error` (`details`: `checks`, `role`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::openapi::ErrorDetail>)]
    error: Option<serde_json::Value>,
}

/// Each check: `ok`, or what fails.
#[derive(Serialize, ToSchema, Clone)]
pub struct Checks {
    postgres: String,
    rabbitmq: String,
    engine: String,
}

#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "The process runs", body = Liveness)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "ok" })
}

/// `SELECT 1` through the pool, within 3 s. The driver's words go to the log, not to an
/// anonymous caller.
async fn postgres_check(state: &AppState) -> String {
    let pool = state.pool.clone();
    let ping = crate::blocking::run(move || persistence::ping(&pool));
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(Ok(()))) => "ok".to_owned(),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "readiness: PostgreSQL is failing");
            "failing: no usable connection".to_owned()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the PostgreSQL check did not run");
            "failing: the check did not run".to_owned()
        }
        Err(_) => "failing: no answer within 3 s".to_owned(),
    }
}

/// Real checks: a `SELECT 1` through the pool, the broker connection, and — on the active
/// instance — the engine's persister and the order writer. A standby answers 503 with
/// `"role": "standby"`, so a load balancer routes to the active one.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses((status = 200, description = "Active and every check ok: role, epoch, checks", body = Readiness), (status = 503, description = "A check failing, or a standby (`role`), with `Retry-After`", body = Readiness)))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let postgres = postgres_check(&state).await;
    let rabbitmq = if state.broker.is_connected() {
        "ok".to_owned()
    } else {
        "failing: not connected".to_owned()
    };
    let role = state.leadership.role();
    let active = state.active();
    let (role_name, epoch) = match (role, &active) {
        (Role::Active { epoch }, Some(parts)) if parts.epoch == epoch => ("active", Some(epoch)),
        (Role::Active { .. }, _) => ("starting", None),
        (Role::Standby, _) => ("standby", None),
    };
    let engine = match &active {
        Some(parts) if parts.engine.is_healthy() && !parts.orders.writer_failing() => {
            "ok".to_owned()
        }
        Some(_) => {
            "failing: the write-behind persister or the order writer cannot write".to_owned()
        }
        None => format!("not running: this instance is {role_name}"),
    };
    let failing: Vec<&str> = [
        ("postgres", &postgres),
        ("rabbitmq", &rabbitmq),
        ("engine", &engine),
    ]
    .into_iter()
    .filter(|(_, v)| v.as_str() != "ok")
    .map(|(k, _)| k)
    .collect();
    let checks = Checks {
        postgres,
        rabbitmq,
        engine,
    };
    if failing.is_empty() && role_name == "active" {
        return HttpResponse::Ok().json(Readiness {
            status: "ready",
            role: "active",
            epoch,
            checks,
            error: None,
        });
    }
    let message = if role_name == "active" {
        format!("not ready: {}", failing.join(", "))
    } else {
        format!("not ready: this instance is {role_name}")
    };
    let error = json!({
        "code": "unavailable",
        "message": message,
        "details": { "checks": checks.clone(), "role": role_name },
    });
    HttpResponse::ServiceUnavailable()
        .insert_header((
            header::RETRY_AFTER,
            if role_name == "active" { "5" } else { "1" },
        ))
        .json(Readiness {
            status: "not_ready",
            role: role_name,
            epoch,
            checks,
            error: Some(error),
        })
}
