//! The probe's PostgreSQL side.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use orderflow::domain::checkout::{Address, DeliveryMethod, Payment};
use orderflow::domain::delivery::{DeliverySlot, Window};
use orderflow::domain::order::{OrderItem, OrderStatus, Origin};
use orderflow::domain::Sku;
use orderflow::persistence;
use orderflow::persistence::orders::{
    self, DecidedRow, HistoryStep, KeyRow, NewOrderRow, NotificationRow,
};
use serde_json::json;
use uuid::Uuid;

use super::{ProbeConfig, Side};
use crate::tools::cpu;

/// A scratch database, dropped at the end.
struct Scratch {
    admin_url: String,
    name: String,
    url: String,
}

impl Scratch {
    fn new(database_url: &str) -> Result<Scratch, String> {
        let mut url = url::Url::parse(database_url).map_err(|e| format!("DATABASE_URL: {e}"))?;
        let name = format!("orderflow_probe_{}", std::process::id());
        url.set_path("/postgres");
        let admin_url = url.to_string();
        url.set_path(&format!("/{name}"));
        // Built before the database exists: dropped (with the database) whatever fails next.
        let scratch = Scratch {
            admin_url,
            name,
            url: url.to_string(),
        };
        scratch.drop_database(); // a leftover of an earlier process with the same id
        persistence::prepare_database(&scratch.url)
            .map_err(|e| format!("probe, Postgres scratch database: {e}"))?;
        Ok(scratch)
    }

    fn drop_database(&self) {
        if let Ok(mut conn) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.drop_database();
    }
}

/// The rows of one batch of orders, as the pipeline builds them: intake's keys, and the orders
/// written once, decided, each holding one unit.
fn order_rows(batch: usize, skus: &[String]) -> (Vec<KeyRow>, Vec<DecidedRow>) {
    let now = chrono::Utc::now();
    let (mut keys, mut decided) = (Vec::new(), Vec::new());
    for i in 0..batch {
        let key = format!("probe-{}", Uuid::new_v4().simple());
        let order_id = Uuid::new_v4();
        let fingerprint = format!("{:064x}", order_id.as_u128());
        let Ok(sku) = Sku::parse(skus.get(i % skus.len().max(1)).map_or("", String::as_str)) else {
            continue;
        };
        keys.push(KeyRow {
            order_id,
            customer_id: format!("lg-{i}"),
            idempotency_key: key.clone(),
            fingerprint: fingerprint.clone(),
        });
        let order = scheduled_order(order_id, key, fingerprint, format!("lg-{i}"), &sku, now);
        decided.push(DecidedRow {
            order,
            holds: vec![(sku.clone(), 1)],
            notification: Some(scheduled_note(order_id, format!("lg-{i}"), now)),
        });
    }
    (keys, decided)
}

/// A `scheduled` order of one unit of `sku`, as the one write records it.
fn scheduled_order(
    order_id: Uuid,
    idempotency_key: String,
    request_fingerprint: String,
    customer_id: String,
    sku: &Sku,
    now: chrono::DateTime<chrono::Utc>,
) -> NewOrderRow {
    NewOrderRow {
        order_id,
        idempotency_key,
        request_fingerprint,
        customer_id,
        cart_id: None,
        origin: Origin::Http,
        status: OrderStatus::Scheduled,
        items: vec![OrderItem {
            sku: sku.clone(),
            quantity: 1,
            unit_price_cents: 1990,
        }],
        total_cents: 1990,
        currency: "BRL".into(),
        delivery_method: DeliveryMethod::Standard,
        shipping_address: Address {
            recipient: "Load Test".into(),
            street: "Rua do Teste".into(),
            number: "1".into(),
            complement: None,
            district: None,
            city: "São Paulo".into(),
            state: "SP".into(),
            postal_code: "01001-000".into(),
            country: "BR".into(),
        },
        payment: Payment::Pix,
        delivery: Some(DeliverySlot {
            scheduled_for: now.date_naive(),
            window: Window {
                from: "09:00".into(),
                to: "18:00".into(),
            },
            carrier: "probe".into(),
            tracking_code: format!("PR{}", order_id.simple()),
        }),
        rejection: None,
        history: [
            OrderStatus::Received,
            OrderStatus::Reserved,
            OrderStatus::Scheduled,
        ]
        .map(|status| HistoryStep { status, at: now })
        .to_vec(),
        at: now,
        updated_at: now,
        settled: true,
    }
}

/// The `order_scheduled` notification of `order_id`.
fn scheduled_note(
    order_id: Uuid,
    customer_id: String,
    now: chrono::DateTime<chrono::Utc>,
) -> NotificationRow {
    NotificationRow {
        id: Uuid::new_v5(&order_id, b"order_scheduled"),
        customer_id,
        kind: "order_scheduled".into(),
        order_id,
        message: format!("Your order {order_id} is scheduled for delivery."),
        suggestions: json!([]),
        created_at: now,
    }
}

/// PostgreSQL alone: the order writer's batches (intake's keys, then the one write of the orders
/// decided with their stock), on one connection and thread as in the service, for `seconds`.
pub(super) fn run(c: &ProbeConfig) -> Result<Side, String> {
    let scratch = Scratch::new(&c.database_url)?;
    let err = |e: diesel::result::Error| format!("probe, Postgres: {e}");
    let mut conn = PgConnection::establish(&scratch.url).map_err(|e| e.to_string())?;
    let batch = c.batch.max(1);
    let n_skus = if c.hot { 1 } else { batch.max(1) * 16 };
    let skus: Vec<String> = (0..n_skus).map(|i| format!("PROBE-{i:05}")).collect();
    diesel::sql_query(
        "INSERT INTO products (sku, name, category, price_cents)
         SELECT s, s, 'probe', 1990 FROM unnest($1::text[]) AS s",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&skus)
    .execute(&mut conn)
    .map_err(err)?;
    diesel::sql_query(
        "INSERT INTO stock (sku, on_hand) SELECT s, 1000000000000 FROM unnest($1::text[]) AS s
         ON CONFLICT (sku) DO UPDATE SET on_hand = EXCLUDED.on_hand",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&skus)
    .execute(&mut conn)
    .map_err(err)?;
    let _ = diesel::sql_query("CHECKPOINT").execute(&mut conn);
    let pool = persistence::connect_pool(&scratch.url, 4).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs_f64(c.seconds);
    let started = cpu::read();
    // The order writer's two batches per order: intake's keys, then the one write (the orders
    // decided, with their units), each its own transaction, on the writer's one connection.
    let written = (|| -> Result<u64, String> {
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        let mut n = 0u64;
        while Instant::now() < deadline {
            let (keys, decided) = order_rows(batch, &skus);
            conn.transaction(|conn| orders::record_keys(conn, &keys))
                .map_err(|e| e.to_string())?;
            let refs: Vec<&DecidedRow> = decided.iter().collect();
            let outcomes = conn
                .transaction(|conn| orders::write_decided(conn, &refs))
                .map_err(|e| e.to_string())?;
            if let Some(bad) = outcomes
                .iter()
                .find(|o| !matches!(o, orders::DecidedOutcome::Written(_)))
            {
                return Err(format!(
                    "probe, Postgres: an order was not written: {bad:?}"
                ));
            }
            n += batch as u64;
        }
        Ok(n)
    })();
    let used = started.until(&cpu::read());
    let orders = written?;
    Ok(Side {
        orders,
        per_second: orders as f64 / used.seconds.max(1e-9),
        cpu: used,
    })
}
