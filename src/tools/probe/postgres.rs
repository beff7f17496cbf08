//! The probe's PostgreSQL side.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use orderflow::domain::checkout::{Address, DeliveryMethod, Payment};
use orderflow::domain::delivery::{DeliverySlot, Window};
use orderflow::domain::order::{OrderItem, OrderStatus, Origin};
use orderflow::domain::{OnHandEffect, Sku};
use orderflow::engine::{EventRecord, RowOutcome, RowWrite, Store};
use orderflow::persistence::orders::{
    self, HistoryStep, KeyRow, NewOrderRow, NotificationRow, TransitionRow,
};
use orderflow::persistence::{self, PgStore};
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

/// The rows of one batch of orders, as the pipeline builds them.
fn order_rows(
    batch: usize,
    skus: &[String],
) -> (Vec<KeyRow>, Vec<NewOrderRow>, Vec<TransitionRow>) {
    let now = chrono::Utc::now();
    let (mut keys, mut creates, mut moves) = (Vec::new(), Vec::new(), Vec::new());
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
        creates.push(NewOrderRow {
            order_id,
            idempotency_key: key,
            request_fingerprint: fingerprint,
            customer_id: format!("lg-{i}"),
            cart_id: None,
            origin: Origin::Http,
            status: OrderStatus::Received,
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
            delivery: None,
            rejection: None,
            history: vec![HistoryStep {
                status: OrderStatus::Received,
                at: now,
            }],
            at: now,
            updated_at: now,
            settled: true,
        });
        moves.push(TransitionRow {
            order_id,
            from_status: OrderStatus::Received,
            to_status: OrderStatus::Scheduled,
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
            at: now,
            via_status: Some(OrderStatus::Reserved),
            via_at: Some(now),
            settled: true,
            notification: Some(NotificationRow {
                id: Uuid::new_v5(&order_id, b"order_scheduled"),
                customer_id: format!("lg-{i}"),
                kind: "order_scheduled".into(),
                order_id,
                message: format!("Your order {order_id} is scheduled for delivery."),
                suggestions: json!([]),
                created_at: now,
            }),
        });
    }
    (keys, creates, moves)
}

/// PostgreSQL alone: the order writer's and the stock persister's batches, each on its own
/// connection and thread as in the service, for `seconds`.
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
    let (written, reserved) = std::thread::scope(|scope| {
        let orders = scope.spawn(|| -> Result<u64, String> {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (keys, creates, moves) = order_rows(batch, &skus);
                conn.transaction(|conn| {
                    orders::record_keys(conn, &keys)?;
                    orders::create_orders(conn, &creates)?;
                    orders::apply_transitions(conn, &moves)
                })
                .map_err(|e| e.to_string())?;
                n += batch as u64;
            }
            Ok(n)
        });
        let stock = scope.spawn(|| -> Result<u64, String> {
            let store = PgStore::new(pool.clone());
            let mut n = 0u64;
            let mut next_sku = 0usize;
            while Instant::now() < deadline {
                // A batch of `batch` reservations: one row write per SKU it touches.
                let mut rows: Vec<RowWrite> = Vec::new();
                for _ in 0..batch {
                    let i = next_sku % skus.len();
                    next_sku += 1;
                    let sku = Sku::parse(skus.get(i).map_or("", String::as_str))
                        .map_err(|e| e.to_string())?;
                    let event = |v: i64| EventRecord {
                        version: v,
                        kind: "reserve",
                        quantity: 1,
                        on_hand: 1_000_000_000_000,
                        reserved: v,
                        reason: None,
                        reference: Some(format!("order:{}:reserve", Uuid::new_v4())),
                        change_id: Uuid::new_v4(),
                    };
                    match rows.iter_mut().find(|r| r.sku == sku) {
                        Some(row) => {
                            row.reserved_delta += 1;
                            row.events.push(event(0));
                        }
                        None => rows.push(RowWrite {
                            sku,
                            on_hand: OnHandEffect::Delta(0),
                            reserved_delta: 1,
                            events: vec![event(0)],
                        }),
                    }
                }
                let outcomes = store.write_batch(&rows, false).map_err(|e| e.to_string())?;
                if let Some(refused) = outcomes.iter().find(|o| **o != RowOutcome::Applied) {
                    return Err(format!(
                        "probe, Postgres: a stock row was not applied: {refused:?}"
                    ));
                }
                n += batch as u64;
            }
            Ok(n)
        });
        (
            orders
                .join()
                .map_err(|_| "probe thread panicked".to_owned()),
            stock.join().map_err(|_| "probe thread panicked".to_owned()),
        )
    });
    let used = started.until(&cpu::read());
    let orders = written??.min(reserved??);
    Ok(Side {
        orders,
        per_second: orders as f64 / used.seconds.max(1e-9),
        cpu: used,
    })
}
