//! `orderflow demo-data N --url URL`: the demo catalog loaded into a running service through its
//! admin API — each product with `PUT /v1/products/{sku}`, then its stock with
//! `PUT /v1/inventory/{sku}` (answered once durable), a bounded number at a time. A 503 or 429
//! is waited out as its `Retry-After` says and sent again; a SKU that still fails is named in the
//! report. The active instance's engine owns the stock, so this is the way while it runs.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use orderflow::domain::Product;

/// Attempts per request before a SKU is reported failed.
const ATTEMPTS: u32 = 12;
/// The longest wait between two attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// What a load did.
#[derive(Debug, Default)]
pub struct Report {
    pub loaded: usize,
    /// SKU and why, for each that did not end with its product and stock.
    pub failed: Vec<(String, String)>,
    /// Answers that asked to come back later (503/429) and were sent again.
    pub retried: u64,
}

/// Loads `n` demo products into the service at `base` with `token`, `concurrency` at a time.
pub async fn load(base: &str, token: &str, n: usize, concurrency: usize) -> Result<Report, String> {
    let base = base.trim_end_matches('/').to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!(
            "--url must be an http:// or https:// URL, not {base:?}"
        ));
    }
    let client = super::driving::http_client(concurrency + 4);
    // One request first: a wrong URL or token is one clear error, not N failures.
    check_admin(&client, &base, token).await?;
    let products = super::demo::catalog(n);
    let mut report = Report::default();
    let mut outcomes = futures_util::stream::iter(products)
        .map(|(product, stock)| {
            let (client, base) = (&client, base.as_str());
            async move {
                put_one(client, base, token, &product, stock)
                    .await
                    .map_err(|e| (product.sku.to_string(), e))
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            Ok(retries) => {
                report.loaded += 1;
                report.retried += retries;
            }
            Err(failure) => report.failed.push(failure),
        }
    }
    report.failed.sort();
    Ok(report)
}

async fn check_admin(client: &awc::Client, base: &str, token: &str) -> Result<(), String> {
    let sent = client
        .get(format!("{base}/v1/monitor/dead-letters"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{base} does not answer: {e}"))?;
    match sent.status().as_u16() {
        200 => Ok(()),
        401 | 403 => Err(format!("{base} refused the admin token (set ADMIN_TOKEN to the service's)")),
        503 => Err(format!("{base} is not ready (a standby, or starting): point --url at the active instance or the load balancer")),
        code => Err(format!("{base} answered {code} to an admin request")),
    }
}

/// The product, then its stock; the number of retried answers.
async fn put_one(
    client: &awc::Client,
    base: &str,
    token: &str,
    product: &Product,
    stock: i64,
) -> Result<u64, String> {
    let sku = product.sku.to_string();
    // The product as the catalog serializes it is the PUT body (its `sku` is the path's).
    let mut retries = put(client, &format!("{base}/v1/products/{sku}"), token, product).await?;
    retries += put(
        client,
        &format!("{base}/v1/inventory/{sku}"),
        token,
        &json!({ "on_hand": stock }),
    )
    .await?;
    Ok(retries)
}

/// One PUT until it is answered 2xx; waits out 503/429 and connection trouble.
async fn put(
    client: &awc::Client,
    url: &str,
    token: &str,
    body: &impl serde::Serialize,
) -> Result<u64, String> {
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let sent = client.put(url).bearer_auth(token).send_json(body).await;
        let (code, retry_after) = super::driving::answer(&sent);
        if (200..300).contains(&code) {
            return Ok(u64::from(attempt - 1));
        }
        let retryable = matches!(code, 0 | 429 | 502 | 503 | 504);
        if !retryable || attempt == ATTEMPTS {
            let detail = match sent {
                Ok(mut r) => {
                    let text = r
                        .body()
                        .limit(4096)
                        .await
                        .map(|b| b.to_vec())
                        .unwrap_or_default();
                    String::from_utf8_lossy(&text).into_owned()
                }
                Err(e) => e.to_string(),
            };
            return Err(format!("{code} after {attempt} attempt(s): {detail}"));
        }
        let wait = retry_after
            .map_or(backoff, Duration::from_secs)
            .min(MAX_WAIT);
        backoff = (backoff * 2).min(MAX_WAIT);
        actix_web::rt::time::sleep(wait).await;
    }
    Err("no answer".into())
}
