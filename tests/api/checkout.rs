//! The checkout pipeline end to end on the real broker and database.

use std::collections::HashMap;

use futures_util::future::join_all;
use orderflow::orders::payment::{AuthorizationState, SandboxGateway};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, Reply, TestApp};

pub fn body(customer: &str, items: Value) -> Value {
    json!({
        "customer_id": customer,
        "items": items,
        "payment": {"method": "card", "card": {"number": "4242424242424242", "holder_name": "Ana Silva",
                    "exp_month": 12, "exp_year": 2031, "cvv": "123"}},
        "shipping_address": {"recipient": "Ana Silva", "street": "Av. Paulista", "number": "1000",
                             "city": "São Paulo", "state": "SP", "postal_code": "01310-100", "country": "BR"},
        "delivery_method": "express"
    })
}

impl TestApp {
    /// A checkout as its customer sends it: with the customer's own token (support staff's when
    /// the body names no customer).
    pub async fn checkout(&self, key: &str, body: &Value) -> Reply {
        let req = self
            .client
            .post(self.url("/v1/checkout"))
            .insert_header(("Idempotency-Key", key));
        let req = match body["customer_id"].as_str() {
            Some(customer) => self.as_customer(req, customer),
            None => req,
        };
        self.send(req, Some(body.clone())).await
    }

    /// `POST /v1/orders/{id}/cancel` with the test client's default credentials.
    pub async fn cancel(&self, order_id: &str) -> Reply {
        let url = self.url(&format!("/v1/orders/{order_id}/cancel"));
        self.send(self.client.post(url), None).await
    }

    /// Waits until the order reaches a decided status; returns it.
    pub async fn decided(&self, order_id: &str) -> Value {
        self.eventually(&format!("/v1/orders/{order_id}"), |r| {
            r.status == 200
                && matches!(
                    r.body["status"].as_str(),
                    Some("scheduled" | "rejected" | "failed" | "cancelled")
                )
        })
        .await
        .body
    }
}

fn statuses(order: &Value) -> Vec<&str> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect()
}

#[actix_web::test]
async fn happy_path_reaches_scheduled_with_history_events_and_notification() {
    let app = spawn_app().await;
    app.product("HP-1", "tea", &["green"], 1500, 10).await;
    app.product("HP-2", "tea", &["black"], 2500, 10).await;
    let r = app
        .checkout(
            "key-happy",
            &body(
                "cust-h",
                json!([{"sku": "HP-1", "quantity": 2}, {"sku": "HP-2", "quantity": 1}]),
            ),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "received");
    let id = r.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["status_url"], format!("/v1/orders/{id}"));

    let order = app.decided(&id).await;
    assert_eq!(order["status"], "scheduled", "{order}");
    assert_eq!(statuses(&order), ["received", "reserved", "scheduled"]);
    assert_eq!(order["total_cents"], 5500);
    assert_eq!(
        order["items"][0],
        json!({"sku": "HP-1", "quantity": 2, "unit_price_cents": 1500})
    );
    let delivery = &order["delivery"];
    assert_eq!(delivery["carrier"], "Correios SEDEX");
    assert!(delivery["tracking_code"]
        .as_str()
        .unwrap()
        .starts_with("SX"));
    assert!(delivery["scheduled_for"].as_str().unwrap().len() == 10);
    assert_eq!(order["rejection"], Value::Null);
    assert!(
        order["payment"].to_string().contains("4242")
            && !order["payment"].to_string().contains("4242424242424242")
    );

    assert_eq!(app.db.stock("HP-1"), (10, 2, 2));
    assert_eq!(app.db.stock("HP-2"), (10, 1, 2));
    let mine = app.get("/v1/customers/cust-h/orders").await;
    assert_eq!(mine.body["data"][0]["order_id"], id);
    let notes = app.get("/v1/customers/cust-h/notifications").await;
    assert_eq!(notes.body["data"][0]["kind"], "order_scheduled");
    assert_eq!(notes.body["data"][0]["order_id"], id);

    // The event stream replays the history and ends at the decision.
    let mut resp = app
        .client
        .get(app.url(&format!("/v1/orders/{id}/events")))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&resp.body().await.unwrap()).into_owned();
    let streamed: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, ["received", "reserved", "scheduled"]);

    // Retrying the same key and body returns the same order.
    let again = app
        .checkout(
            "key-happy",
            &body(
                "cust-h",
                json!([{"sku": "HP-1", "quantity": 2}, {"sku": "HP-2", "quantity": 1}]),
            ),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["order_id"], id);
    assert_eq!(again.body["status"], "scheduled");
    let other = app
        .checkout(
            "key-happy",
            &body("cust-h", json!([{"sku": "HP-1", "quantity": 1}])),
        )
        .await;
    assert_error(&other, 422, "idempotency_mismatch");
    app.stop().await;
}

#[actix_web::test]
async fn flash_sale_sells_exactly_the_stock_over_http_and_messages() {
    let app = spawn_app().await;
    app.product("FLASH", "phones", &["sale"], 99_900, 50).await;
    app.product("ALT-1", "phones", &["sale"], 98_000, 5).await;
    let line = json!([{"sku": "FLASH", "quantity": 1}]);
    let http = (0..400).map(|i| {
        let b = body(&format!("buyer-{i}"), line.clone());
        let app = &app;
        async move {
            // A burst may meet admission control: like a client, wait what Retry-After says.
            loop {
                let r = app.checkout(&format!("flash-{i}"), &b).await;
                if r.status != 503 {
                    return r;
                }
                assert_eq!(r.body["error"]["code"], "overloaded", "{}", r.body);
                let wait: u64 = r.retry_after.as_deref().unwrap().parse().unwrap();
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            }
        }
    });
    let messages = (400..500).map(|i| {
        let b = body(&format!("buyer-{i}"), line.clone());
        let app = &app;
        async move {
            app.publish("orders", "checkout", &b, Some(&format!("flash-{i}")))
                .await;
        }
    });
    let (replies, _) = tokio::join!(join_all(http), join_all(messages));
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for r in &replies {
        *by_status.entry(r.status).or_default() += 1;
        if r.status == 409 {
            assert_eq!(r.body["error"]["code"], "out_of_stock");
            assert_eq!(r.body["error"]["details"]["items"][0]["sku"], "FLASH");
        }
    }
    assert_eq!(
        by_status.get(&202).copied().unwrap_or(0) + by_status.get(&409).copied().unwrap_or(0),
        400,
        "{by_status:?}"
    );

    // Every accepted order and every message reaches a decision.
    let mut outcome: HashMap<String, usize> = HashMap::new();
    for i in 0..500 {
        let key = format!("flash-{i}");
        if replies.get(i).is_some_and(|r| r.status != 202) {
            continue; // refused at the door (409): no order
        }
        let id = match replies.get(i) {
            Some(r) => r.body["order_id"].as_str().unwrap().to_owned(),
            None => crate::helpers::wait_order_of_key(&app.db, &key).await,
        };
        let order = app.decided(&id).await;
        *outcome
            .entry(order["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if order["status"] == "rejected" {
            let reason = order["rejection"]["reason"].as_str().unwrap();
            assert_eq!(
                reason,
                if i < 400 {
                    "stock_conflict"
                } else {
                    "out_of_stock"
                }
            );
            assert_eq!(order["rejection"]["items"][0]["requested"], 1);
            assert_eq!(
                order["rejection"]["items"][0]["suggestions"][0]["sku"],
                "ALT-1"
            );
        }
    }
    assert_eq!(
        outcome.get("scheduled").copied().unwrap_or(0),
        50,
        "{outcome:?}"
    );
    // Every outcome counted: the fast path refused some at the door, every order that got in
    // was scheduled or rejected, nothing else.
    assert!(
        by_status.get(&409).copied().unwrap_or(0) > 0,
        "{by_status:?}"
    );
    let accepted_http = by_status.get(&202).copied().unwrap_or(0);
    assert_eq!(
        outcome.values().sum::<usize>(),
        accepted_http + 100,
        "every accepted checkout and every message decided: {outcome:?}"
    );
    assert_eq!(
        outcome.get("scheduled").copied().unwrap_or(0)
            + outcome.get("rejected").copied().unwrap_or(0),
        accepted_http + 100,
        "{outcome:?}"
    );
    // Books balance: 50 units held for 50 scheduled orders, nothing else.
    assert_eq!(app.db.stock("FLASH").0, 50);
    assert_eq!(app.db.stock("FLASH").1, 50);
    let inventory = app.get("/v1/inventory/FLASH").await;
    assert_eq!(inventory.body["available"], 0);
    app.stop().await;
}

#[actix_web::test]
async fn a_multi_line_order_short_on_one_line_reserves_nothing() {
    let app = spawn_app().await;
    app.product("ML-A", "c", &[], 100, 5).await;
    app.product("ML-B", "c", &[], 100, 1).await;
    // Over HTTP the engine already knows: 409 at once, no order.
    let r = app
        .checkout(
            "ml-http",
            &body(
                "m-1",
                json!([{"sku": "ML-A", "quantity": 2}, {"sku": "ML-B", "quantity": 3}]),
            ),
        )
        .await;
    assert_error(&r, 409, "out_of_stock");
    let items = r.body["error"]["details"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["sku"], "ML-B");
    assert_eq!(items[0]["requested"], 3);
    assert_eq!(items[0]["available"], 1);
    assert_eq!(
        crate::helpers::order_of_key(&app.db, "ml-http"),
        None,
        "no order was created"
    );

    // As a message (no fast path) the consumer reserves A, finds B short, releases A.
    app.publish(
        "orders",
        "checkout",
        &body(
            "m-1",
            json!([{"sku": "ML-A", "quantity": 2}, {"sku": "ML-B", "quantity": 3}]),
        ),
        Some("ml-msg"),
    )
    .await;
    let order = app
        .decided(&crate::helpers::wait_order_of_key(&app.db, "ml-msg").await)
        .await;
    assert_eq!(order["status"], "rejected");
    assert_eq!(order["rejection"]["reason"], "out_of_stock");
    assert_eq!(order["rejection"]["items"][0]["sku"], "ML-B");
    assert_eq!(app.db.stock("ML-A").1, 0, "line A released");
    assert_eq!(app.db.stock("ML-B").1, 0);
    let notes = app.get("/v1/customers/m-1/notifications").await;
    assert_eq!(notes.body["data"][0]["kind"], "out_of_stock");
    app.stop().await;
}

#[actix_web::test]
async fn declined_payment_and_cancel_release_the_stock() {
    let app = spawn_app().await;
    app.product("PAY-1", "c", &[], 700, 4).await;
    let mut declined = body("p-1", json!([{"sku": "PAY-1", "quantity": 3}]));
    declined["payment"]["card"]["number"] = json!("4000000000000002");
    let r = app.checkout("pay-declined", &declined).await;
    assert_eq!(r.status, 202);
    let order = app.decided(r.body["order_id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "failed");
    assert_eq!(statuses(&order), ["received", "reserved", "failed"]);
    assert_eq!(order["rejection"]["reason"], "payment_declined");
    // Held in memory and let go there: a declined order never touches the stock row (the one
    // write; the staged path reserved and released it, two versions).
    assert_eq!(app.db.stock("PAY-1"), (4, 0, 1), "held, then let go");

    let mut pix = body("p-1", json!([{"sku": "PAY-1", "quantity": 4}]));
    pix["payment"] = json!({"method": "pix"});
    let r = app.checkout("pay-pix", &pix).await;
    let id = r.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(app.decided(&id).await["status"], "scheduled");
    assert_eq!(app.db.stock("PAY-1").1, 4);
    assert_eq!(authorization(&id), Some(AuthorizationState::Authorized));
    let declined_id = order["order_id"].as_str().unwrap();
    assert_eq!(
        authorization(declined_id),
        None,
        "a declined payment holds nothing"
    );

    let cancelled = app.cancel(&id).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(app.db.stock("PAY-1"), (4, 0, 3));
    assert_eq!(
        authorization(&id),
        Some(AuthorizationState::Voided),
        "a cancelled order's funds are no longer held"
    );
    // Cancelling again answers the cancelled order (a retried request) and releases nothing twice.
    let again = app.cancel(&id).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["status"], "cancelled");
    assert_eq!(app.db.stock("PAY-1"), (4, 0, 3));
    // A failed order is past the point of no return.
    let failed_id = order["order_id"].as_str().unwrap();
    let refused = app.cancel(failed_id).await;
    assert_error(&refused, 409, "not_cancellable");
    let kinds: Vec<String> = app.get("/v1/customers/p-1/notifications").await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_owned())
        .collect();
    for k in ["payment_declined", "order_scheduled", "order_cancelled"] {
        assert!(kinds.contains(&k.to_owned()), "{kinds:?}");
    }
    assert_error(
        &app.send(
            app.client
                .post(app.url("/v1/orders/00000000-0000-4000-8000-000000000000/cancel")),
            None,
        )
        .await,
        404,
        "not_found",
    );
    app.stop().await;
}

#[actix_web::test]
async fn retried_keys_and_duplicate_deliveries_make_one_order() {
    let app = spawn_app().await;
    app.product("DUP-1", "c", &[], 100, 100).await;
    let b = body("d-1", json!([{"sku": "DUP-1", "quantity": 1}]));
    let replies = join_all((0..16).map(|_| app.checkout("dup-key", &b))).await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| {
            assert!(
                r.status == 202 || r.status == 200,
                "{} {}",
                r.status,
                r.body
            );
            r.body["order_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let id = ids.into_iter().next().unwrap();
    assert_eq!(app.decided(&id).await["status"], "scheduled");

    // The same message delivered three times.
    let m = body("d-2", json!([{"sku": "DUP-1", "quantity": 2}]));
    for _ in 0..3 {
        app.publish("orders", "checkout", &m, Some("dup-msg")).await;
    }
    let mid = crate::helpers::wait_order_of_key(&app.db, "dup-msg").await;
    assert_eq!(app.decided(&mid).await["status"], "scheduled");
    // Every copy settled (none waiting, none held), then: the stock was taken once, by one
    // recorded reservation.
    assert_eq!(
        crate::helpers::settle_depth(&app.vhost, "orders.checkout", (0, 0)).await,
        (0, 0)
    );
    assert_eq!(
        app.db.stock("DUP-1").1,
        3,
        "one unit for the first order, two for the second"
    );
    assert_eq!(
        crate::helpers::sql_i64(
            &app.db,
            &format!("SELECT count(*) AS n FROM stock_events WHERE ref = 'order:{mid}:reserve'")
        ),
        1
    );
    assert_eq!(
        app.get("/v1/customers/d-2/orders").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

/// A checkout the fast path refuses records nothing — a flash sale's refusals cost no write, and
/// a refused key may be used again with another body; one refused for its payment lets its key
/// go — while a repeat of an accepted checkout
/// still gets its own answer before any 409 (its order, 422 for another body, 202 again while it
/// is not decided, its cart's too): after a restart too, when only the database remembers the
/// key.
#[actix_web::test]
async fn a_checkout_refused_at_the_door_records_no_key_but_a_repeat_keeps_its_order() {
    let app = spawn_app().await;
    app.product("DOOR-1", "c", &[], 100, 1).await;
    let one = json!([{"sku": "DOOR-1", "quantity": 1}]);
    let first = body("door-0", one.clone());
    let r = app.checkout("door-key", &first).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(app.decided(&id).await["status"], "scheduled");
    // Sold out: every new checkout is refused at the door, and none leaves its key behind.
    for i in 1..=20 {
        let b = body(&format!("door-{i}"), one.clone());
        assert_error(
            &app.checkout(&format!("door-key-{i}"), &b).await,
            409,
            "out_of_stock",
        );
    }
    let keys = "SELECT count(*) AS n FROM checkout_keys";
    assert_eq!(crate::helpers::sql_i64(&app.db, keys), 1);
    let two = json!([{"sku": "DOOR-1", "quantity": 2}]);
    let r = app.checkout("door-key", &body("door-0", two.clone())).await;
    assert_error(&r, 422, "idempotency_mismatch");

    // A new process: only the database remembers the accepted key.
    let crate::helpers::TestApp { db, .. } = app.stop_keeping_db().await;
    let app = crate::helpers::spawn_app_with(db, |_| {}).await;
    let r = app.checkout("door-key", &first).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["order_id"], id.as_str());
    let r = app.checkout("door-key", &body("door-0", two.clone())).await;
    assert_error(&r, 422, "idempotency_mismatch");
    // A key accepted with this body and not decided yet (its checkout still in the queue, or
    // its publish lost): the same body gets its 202 again, not 409, and its order is decided —
    // rejected, the units being short.
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        order_id: uuid::Uuid,
    }
    use diesel::RunQueryDsl;
    let queued = diesel::sql_query(
        "INSERT INTO checkout_keys (order_id, customer_id, idempotency_key, fingerprint)
         SELECT gen_random_uuid(), customer_id, 'door-queued', fingerprint FROM checkout_keys
         WHERE idempotency_key = 'door-key' RETURNING order_id",
    )
    .get_result::<Id>(&mut app.db.conn())
    .unwrap()
    .order_id
    .to_string();
    let r = app.checkout("door-queued", &first).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["order_id"], queued.as_str());
    assert_eq!(app.decided(&queued).await["status"], "rejected");

    // Restocked, a key refused before is a new checkout, its body another one.
    let r = app
        .admin_put("/v1/inventory/DOOR-1", json!({"on_hand": 5}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.checkout("door-key-1", &body("door-1", two)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let order = app.decided(r.body["order_id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "scheduled");
    assert_eq!(crate::helpers::sql_i64(&app.db, keys), 3);
    // Refused for its payment (a card token the gateway does not know) after its key was
    // recorded: the key is let go too, and the same key comes again with a card.
    let mut forged = body("door-2", one.clone());
    forged["payment"] = json!({"method": "card", "card_token": "tok_forged"});
    let r = app.checkout("door-key-2", &forged).await;
    assert_error(&r, 422, "validation_failed");
    assert!(
        r.body["error"]["details"]["fields"]["payment.card_token"].is_array(),
        "{}",
        r.body
    );
    assert_eq!(crate::helpers::sql_i64(&app.db, keys), 3);
    let r = app
        .checkout("door-key-2", &body("door-2", one.clone()))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    // A cart's checkout accepted, the cart claimed by its order and the order not written yet
    // (the consumer deciding it; its row removed here to stand for that moment): the repeat is
    // 202 with that order, not 409 "cart already ordered".
    let cart = app
        .send(
            app.client.post(app.url("/v1/carts")),
            Some(json!({"customer_id": "door-0"})),
        )
        .await
        .body["cart_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .send(
            app.client
                .put(app.url(&format!("/v1/carts/{cart}/items/DOOR-1"))),
            Some(json!({"quantity": 1, "added_to_cart": true})),
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.body);
    let mut by_cart = body("door-0", json!(null));
    by_cart.as_object_mut().unwrap().remove("items");
    by_cart["cart_id"] = json!(cart);
    let r = app.checkout("door-cart", &by_cart).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let claimed = r.body["order_id"].as_str().unwrap().to_owned();
    app.decided(&claimed).await;
    diesel::sql_query(format!("DELETE FROM orders WHERE order_id = '{claimed}'"))
        .execute(&mut app.db.conn())
        .unwrap();
    let r = app.checkout("door-cart", &by_cart).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["order_id"], claimed.as_str());
    app.stop().await;
}

/// A checkout refused for its payment lets go only of a key its own request recorded. A repeat
/// of a key an earlier request recorded (accepted, its checkout still in the queue) that the
/// gateway refuses this time leaves that key: without it, the key with another body would be
/// taken for a new checkout while the first is still on its way.
#[actix_web::test]
async fn a_payment_refusal_keeps_a_key_another_request_recorded() {
    use diesel::RunQueryDsl;
    let app = spawn_app().await;
    app.product("KEEP-1", "c", &[], 100, 5).await;
    // A key let go is kept aside by this test's own trigger: the fingerprint a request is
    // recorded under is the server's to compute.
    for statement in [
        "CREATE TABLE let_go (LIKE checkout_keys)",
        "CREATE FUNCTION keep_let_go() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO let_go SELECT OLD.*; RETURN NULL; END $$",
        "CREATE TRIGGER keep_let_go AFTER DELETE ON checkout_keys \
         FOR EACH ROW EXECUTE FUNCTION keep_let_go()",
    ] {
        diesel::sql_query(statement)
            .execute(&mut app.db.conn())
            .unwrap();
    }
    let mut refused = body("keep-0", json!([{"sku": "KEEP-1", "quantity": 1}]));
    refused["payment"] = json!({"method": "card", "card_token": "tok_forged"});
    let r = app.checkout("keep-key-1", &refused).await;
    assert_error(&r, 422, "validation_failed");
    let count = |q: &str| crate::helpers::sql_i64(&app.db, q);
    assert_eq!(count("SELECT count(*) AS n FROM checkout_keys"), 0);
    assert_eq!(count("SELECT count(*) AS n FROM let_go"), 1);

    // The same request recorded under another key by an earlier request whose checkout is
    // still queued (the row written here stands for it): refused again, the key stays.
    let recorded =
        "INSERT INTO checkout_keys (order_id, customer_id, idempotency_key, fingerprint) \
         SELECT gen_random_uuid(), customer_id, 'keep-key-2', fingerprint FROM let_go";
    diesel::sql_query(recorded)
        .execute(&mut app.db.conn())
        .unwrap();
    let r = app.checkout("keep-key-2", &refused).await;
    assert_error(&r, 422, "validation_failed");
    let kept = "SELECT count(*) AS n FROM checkout_keys WHERE idempotency_key = 'keep-key-2'";
    assert_eq!(count(kept), 1, "a key another request recorded was let go");
    let two = body("keep-0", json!([{"sku": "KEEP-1", "quantity": 2}]));
    assert_error(
        &app.checkout("keep-key-2", &two).await,
        422,
        "idempotency_mismatch",
    );
    app.stop().await;
}

#[actix_web::test]
async fn poison_messages_are_dead_lettered_and_the_service_keeps_serving() {
    let app = spawn_app().await;
    app.product("PSN-1", "c", &[], 100, 10).await;
    app.app_state
        .broker()
        .publish(
            "orders",
            "checkout",
            b"{not json",
            lapin::BasicProperties::default().with_message_id("p1".into()),
        )
        .await
        .unwrap();
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("not JSON"), "{reason}");
    let mut bad =
        crate::helpers::tokenized(&body("ps-1", json!([{"sku": "PSN-1", "quantity": 1}])));
    bad["delivery_method"] = json!("teleport");
    app.publish("orders", "checkout", &bad, Some("p2")).await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("delivery_method"), "{reason}");
    // A card on a queue: refused, and its dead letter keeps none of it.
    let carded = body("ps-1", json!([{"sku": "PSN-1", "quantity": 1}]));
    app.publish_checkout_raw(carded.to_string().as_bytes(), "p2-card")
        .await;
    let (dead, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.starts_with("card_data_refused"), "{reason}");
    assert!(!dead.to_string().contains("4242424242424242"), "{dead}");
    app.publish(
        "orders",
        "checkout",
        &body("ps-1", json!([{"sku": "PSN-1", "quantity": 1}])),
        None,
    )
    .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("message_id"), "{reason}");
    app.publish(
        "orders",
        "checkout",
        &body("ps-1", json!([{"sku": "NOPE", "quantity": 1}])),
        Some("p4"),
    )
    .await;
    let (_, reason) = app.dead_letter("orders.checkout.dead").await;
    assert!(reason.contains("unknown sku"), "{reason}");

    let ok = app
        .checkout(
            "after-poison",
            &body("ps-1", json!([{"sku": "PSN-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(ok.status, 202);
    assert_eq!(
        app.decided(ok.body["order_id"].as_str().unwrap()).await["status"],
        "scheduled"
    );
    app.stop().await;
}

#[actix_web::test]
async fn checkout_by_cart_makes_one_order_per_cart() {
    let app = spawn_app().await;
    app.product("CRT-1", "c", &[], 300, 10).await;
    let cart = app
        .send(
            app.client.post(app.url("/v1/carts")),
            Some(json!({"customer_id": "cc-1"})),
        )
        .await
        .body["cart_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send(
        app.client
            .put(app.url(&format!("/v1/carts/{cart}/items/CRT-1"))),
        Some(json!({"quantity": 3, "added_to_cart": true})),
    )
    .await;
    let mut by_cart = body("cc-1", json!(null));
    by_cart.as_object_mut().unwrap().remove("items");
    by_cart["cart_id"] = json!(cart);

    // Someone else's cart is not found.
    let mut stranger = by_cart.clone();
    stranger["customer_id"] = json!("someone-else");
    assert_error(
        &app.checkout("cart-stranger", &stranger).await,
        404,
        "not_found",
    );

    let r = app.checkout("cart-1", &by_cart).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let order = app.decided(r.body["order_id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "scheduled");
    assert_eq!(order["items"][0]["quantity"], 3);
    assert_eq!(order["cart_id"], cart);
    assert_eq!(app.db.stock("CRT-1").1, 3);

    let cart_now = app.get(&format!("/v1/carts/{cart}")).await;
    assert_eq!(cart_now.body["status"], "ordered");
    assert_eq!(cart_now.body["order_id"], order["order_id"]);
    // A second checkout of the same cart, with another key, is refused; the cart is frozen.
    assert_error(
        &app.checkout("cart-2", &by_cart).await,
        409,
        "cart_checked_out",
    );
    let frozen = app
        .send(
            app.client
                .put(app.url(&format!("/v1/carts/{cart}/items/CRT-1"))),
            Some(json!({"quantity": 1, "added_to_cart": true})),
        )
        .await;
    assert_error(&frozen, 409, "cart_checked_out");
    assert_eq!(app.db.stock("CRT-1").1, 3);
    app.stop().await;
}

#[actix_web::test]
async fn checkout_validation_answers_422_with_every_field() {
    let app = spawn_app().await;
    app.product("V-1", "c", &[], 100, 10).await;
    let good = body("v-1", json!([{"sku": "V-1", "quantity": 1}]));
    let no_key = app
        .send(app.client.post(app.url("/v1/checkout")), Some(good.clone()))
        .await;
    assert_error(&no_key, 422, "validation_failed");
    assert!(no_key.body["error"]["details"]["fields"]["Idempotency-Key"].is_array());

    let mut bad = good.clone();
    bad["payment"]["card"]["number"] = json!("4242424242424241");
    bad["payment"]["card"]["exp_year"] = json!(2020);
    bad["shipping_address"]["postal_code"] = json!("12");
    bad["delivery_method"] = json!("teleport");
    bad["items"] = json!([{"sku": "V-1", "quantity": 0}, {"sku": "GHOST", "quantity": 1}]);
    let r = app.checkout("v-bad", &bad).await;
    assert_error(&r, 422, "validation_failed");
    let fields = &r.body["error"]["details"]["fields"];
    for f in [
        "payment.card.number",
        "payment.card.exp_year",
        "shipping_address.postal_code",
        "delivery_method",
        "items.0.quantity",
    ] {
        assert!(fields[f].is_array(), "{f}: {fields}");
    }
    let mut unknown = good.clone();
    unknown["items"] = json!([{"sku": "GHOST", "quantity": 1}]);
    let r = app.checkout("v-unknown", &unknown).await;
    assert!(
        r.body["error"]["details"]["fields"]["items.0.sku"].is_array(),
        "{}",
        r.body
    );
    let mut boleto = good.clone();
    boleto["payment"] = json!({"method": "boleto", "document": "111.111.111-11"});
    assert!(
        app.checkout("v-boleto", &boleto).await.body["error"]["details"]["fields"]
            ["payment.document"]
            .is_array()
    );
    let mut both = good.clone();
    both["cart_id"] = json!("6f0c1c2e-9a43-4a49-9a40-3e3f0c6b9a11");
    assert_error(
        &app.checkout("v-both", &both).await,
        422,
        "validation_failed",
    );
    let mut wrong_type = good.clone();
    wrong_type["items"][0]["quantity"] = json!("one");
    assert_error(
        &app.checkout("v-type", &wrong_type).await,
        400,
        "bad_request",
    );
    assert_error(
        &app.checkout(&"k".repeat(256), &good).await,
        422,
        "validation_failed",
    );
    assert_eq!(
        app.db.stock("V-1").1,
        0,
        "nothing was reserved by any of these"
    );
    app.stop().await;
}

/// A service whose gateway answers in 1.5 s, a product with 5 units, and the id of an order for
/// `quantity` of them, accepted (202).
async fn order_at_a_slow_gateway(sku: &str, quantity: i64) -> (TestApp, String) {
    let app = crate::helpers::spawn_app_with(crate::helpers::TestDb::new(), |c| {
        c.sandbox_payment_delay = std::time::Duration::from_millis(1500)
    })
    .await;
    app.product(sku, "c", &[], 100, 5).await;
    let key = sku.to_lowercase();
    let line = json!([{"sku": sku, "quantity": quantity}]);
    let r = app.checkout(&key, &body(&key, line)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["order_id"].as_str().unwrap().to_owned();
    (app, id)
}

#[actix_web::test]
async fn with_a_slow_gateway_reserved_is_visible_before_the_decision() {
    use futures_util::StreamExt;
    let (app, id) = order_at_a_slow_gateway("SLOW-1", 1).await;
    // Follow the order's events (once the consumer made the order): `reserved` comes first, and
    // while it is the latest, the order reads as reserved — the decision comes after.
    app.eventually(&format!("/v1/orders/{id}"), |r| r.status == 200)
        .await;
    let mut events = app
        .client
        .get(app.url(&format!("/v1/orders/{id}/events")))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let mut read_while_reserved = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !text.contains("\"scheduled\"") {
        assert!(std::time::Instant::now() < deadline, "{text}");
        match tokio::time::timeout(std::time::Duration::from_millis(500), events.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) | Ok(Some(Err(_))) => break,
            Err(_) => {}
        }
        if read_while_reserved.is_none()
            && text.contains("\"reserved\"")
            && !text.contains("\"scheduled\"")
        {
            read_while_reserved = Some(app.get(&format!("/v1/orders/{id}")).await.body);
        }
    }
    let streamed: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, ["received", "reserved", "scheduled"]);
    let seen = read_while_reserved.expect("reserved was streamed before the decision");
    assert_eq!(seen["status"], "reserved", "{seen}");
    assert_eq!(statuses(&seen), ["received", "reserved"]);
    let order = app.decided(&id).await;
    assert_eq!(statuses(&order), ["received", "reserved", "scheduled"]);
    app.stop().await;
}

#[actix_web::test]
async fn a_cancel_while_the_gateway_is_answering_voids_the_authorization_it_gave() {
    let (app, id) = order_at_a_slow_gateway("VOID-1", 2).await;
    // The stock is held and the gateway is still answering.
    app.eventually(&format!("/v1/orders/{id}"), |r| {
        r.body["status"] == "reserved"
    })
    .await;
    assert_eq!(authorization(&id), None, "not authorized yet");
    let cancelled = app.cancel(&id).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(app.db.stock("VOID-1").1, 0, "the stock is back on sale");
    assert_eq!(
        authorization(&id),
        Some(AuthorizationState::Voided),
        "the authorization the gateway gave meanwhile holds nothing"
    );
    app.db.assert_books_balance();
    app.stop().await;
}

/// Issue 19: an order accepted and still in the queue is in no table yet (the one write records
/// it decided); cancelling it then answers 503 with `Retry-After` — not 404, which would tell its
/// owner it does not exist — and, once it is decided, the cancel goes through.
#[actix_web::test]
async fn a_cancel_of_an_order_still_in_the_queue_answers_retry_not_404() {
    // One consumer, busy with a slow payment, while the second order waits in the queue.
    let app = crate::helpers::spawn_app_with(crate::helpers::TestDb::new(), |c| {
        c.consumer_prefetch = 1;
        c.sandbox_payment_delay = std::time::Duration::from_millis(1500);
    })
    .await;
    app.product("CQ-BUSY", "c", &[], 100, 10).await;
    app.product("CQ-1", "c", &[], 100, 5).await;
    let busy = app
        .checkout(
            "cq-busy",
            &body("cq", json!([{"sku": "CQ-BUSY", "quantity": 1}])),
        )
        .await;
    assert_eq!(busy.status, 202, "{}", busy.body);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let queued = app
        .checkout("cq-1", &body("cq", json!([{"sku": "CQ-1", "quantity": 2}])))
        .await;
    assert_eq!(queued.status, 202, "{}", queued.body);
    let id = queued.body["order_id"].as_str().unwrap().to_owned();
    let read = app
        .send(
            app.as_customer(app.anon.get(app.url(&format!("/v1/orders/{id}"))), "cq"),
            None,
        )
        .await;
    assert_eq!(
        read.status, 503,
        "its owner is told to retry: {}",
        read.body
    );
    assert!(read.retry_after.is_some());
    let early = app.cancel(&id).await;
    assert_eq!(early.status, 503, "{}", early.body);
    assert_eq!(early.body["error"]["code"], "unavailable", "{}", early.body);
    assert!(early.retry_after.is_some(), "a 503 says when to retry");
    // A stranger's cancel of the same queued order is a plain 404 (ids cannot be probed).
    let stranger = app
        .send(
            app.as_customer(
                app.anon.post(app.url(&format!("/v1/orders/{id}/cancel"))),
                "eve",
            ),
            None,
        )
        .await;
    assert_eq!(stranger.status, 404, "{}", stranger.body);
    let decided = app.decided(&id).await;
    assert_eq!(decided["status"], "scheduled", "{decided}");
    let cancelled = app.cancel(&id).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(app.db.stock("CQ-1").1, 0, "its units are back on sale");
    app.db.assert_books_balance();
    // A key whose checkout never became an order (dead-lettered) is "retry" only for a while:
    // accepted eleven minutes ago, it reads as unknown.
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        order_id: uuid::Uuid,
    }
    use diesel::RunQueryDsl;
    let key = |age: &str| {
        diesel::sql_query(format!(
            "INSERT INTO checkout_keys (order_id, customer_id, idempotency_key, fingerprint, \
             created_at) VALUES (gen_random_uuid(), 'cq', 'cq-{age}', 'f', \
             now() - interval '{age}') RETURNING order_id"
        ))
        .get_result::<Id>(&mut app.db.conn())
        .unwrap()
        .order_id
    };
    let (fresh, old) = (key("1 second"), key("11 minutes"));
    let read = |id: uuid::Uuid| {
        let app = &app;
        async move {
            app.send(
                app.as_customer(app.anon.get(app.url(&format!("/v1/orders/{id}"))), "cq"),
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(read(fresh).await, 503);
    assert_eq!(read(old).await, 404);
    app.stop().await;
}

#[actix_web::test]
async fn an_accepted_checkout_that_loses_the_last_unit_is_rejected_as_stock_conflict() {
    // One consumer, busy with a slow payment, while two checkouts for the last unit are both
    // accepted (the stock is there when each arrives): the first gets it, the second cannot.
    let app = crate::helpers::spawn_app_with(crate::helpers::TestDb::new(), |c| {
        c.consumer_prefetch = 1;
        c.sandbox_payment_delay = std::time::Duration::from_millis(1500);
    })
    .await;
    app.product("SC-BUSY", "c", &[], 100, 10).await;
    app.product("SC-LAST", "c", &["t"], 100, 1).await;
    app.product("SC-ALT", "c", &["t"], 110, 5).await;
    let busy = app
        .checkout(
            "sc-busy",
            &body("sc", json!([{"sku": "SC-BUSY", "quantity": 1}])),
        )
        .await;
    assert_eq!(busy.status, 202);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let line = json!([{"sku": "SC-LAST", "quantity": 1}]);
    let first = app.checkout("sc-first", &body("sc-1", line.clone())).await;
    let second = app.checkout("sc-second", &body("sc-2", line)).await;
    assert_eq!(
        (first.status, second.status),
        (202, 202),
        "both accepted at the door"
    );
    let first = app.decided(first.body["order_id"].as_str().unwrap()).await;
    let second = app.decided(second.body["order_id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "scheduled");
    assert_eq!(second["status"], "rejected");
    assert_eq!(second["rejection"]["reason"], "stock_conflict");
    assert_eq!(second["rejection"]["items"][0]["available"], 0);
    assert_eq!(
        second["rejection"]["items"][0]["suggestions"][0]["sku"],
        "SC-ALT"
    );
    let notes = app.get("/v1/customers/sc-2/notifications").await;
    assert_eq!(notes.body["data"][0]["kind"], "stock_conflict");
    assert_eq!(app.db.stock("SC-LAST"), (1, 1, 2));
    app.stop().await;
}

#[actix_web::test]
async fn overload_turns_into_503_overloaded_with_retry_after() {
    // One order at a time, each taking 300 ms at the gateway: the queue backs up at once.
    let app = crate::helpers::spawn_app_with(crate::helpers::TestDb::new(), |c| {
        c.consumer_prefetch = 1;
        c.sandbox_payment_delay = std::time::Duration::from_millis(300);
        c.admission_target = std::time::Duration::from_millis(1000);
    })
    .await;
    app.product("OV-1", "c", &[], 100, 1000).await;
    let mut accepted = Vec::new();
    let mut shed = None;
    for i in 0..80 {
        let r = app
            .checkout(
                &format!("ov-{i}"),
                &body("ov", json!([{"sku": "OV-1", "quantity": 1}])),
            )
            .await;
        match r.status {
            202 => accepted.push(r.body["order_id"].as_str().unwrap().to_owned()),
            503 => {
                shed = Some(r);
                break;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    let shed = shed.expect("intake sheds load once the backlog passes the bound");
    assert_error(&shed, 503, "overloaded");
    let retry: u32 = shed.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(
        accepted.len() >= 3,
        "it accepted up to the bound first ({})",
        accepted.len()
    );
    // What was accepted is still processed.
    for id in &accepted {
        assert_eq!(app.decided(id).await["status"], "scheduled");
    }
    app.stop().await;
}

/// While shedding, a place among the clients told to come back is held per checkout, not per
/// 503 (`monitor::places`): the same checkout retried early takes no second place, and one
/// customer's flood of checkouts holds at most its share (10) of places. Counted by the places
/// `/v1/queues` shows booked, which only the test's own 503s change (none of them comes due
/// within the test: every place is a second or more ahead).
#[actix_web::test]
async fn a_retried_checkout_keeps_its_place_and_a_flood_holds_only_its_share() {
    // One order at a time, 600 ms each at the gateway: the queue backs up and the door stays
    // shut for seconds.
    let app = crate::helpers::spawn_app_with(crate::helpers::TestDb::new(), |c| {
        c.consumer_prefetch = 1;
        c.sandbox_payment_delay = std::time::Duration::from_millis(600);
        c.admission_target = std::time::Duration::from_millis(1000);
    })
    .await;
    app.product("PL-1", "c", &[], 100, 1000).await;
    let send = |customer: &'static str, key: String| {
        let app = &app;
        async move {
            app.checkout(
                &key,
                &body(customer, json!([{"sku": "PL-1", "quantity": 1}])),
            )
            .await
        }
    };
    let booked = || async {
        let q = app.get("/v1/queues").await;
        q.body["admission"]["returns_booked"].as_u64().unwrap()
    };
    let mut first = None;
    for i in 0..200 {
        let r = send("pl", format!("pl-{i}")).await;
        match r.status {
            202 => {}
            503 => {
                assert_error(&r, 503, "overloaded");
                first = Some(format!("pl-{i}"));
                break;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    let key = first.expect("intake sheds once the queue backs up");
    let shed = |r: crate::helpers::Reply| {
        assert_error(&r, 503, "overloaded");
        let told: u32 = r.retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=600).contains(&told), "Retry-After {told}");
    };
    let before = booked().await;
    assert!(before >= 1, "the first 503 booked its place");
    // The same checkout, retried at once: no second place (a place per 503 would add three).
    for _ in 0..3 {
        shed(send("pl", key.clone()).await);
    }
    assert_eq!(booked().await, before, "a retry takes no second place");
    // Another customer's flood of 14 new checkouts: 10 places, then none.
    for i in 0..14 {
        shed(send("flood", format!("fl-{i}")).await);
    }
    assert_eq!(
        booked().await,
        before + 10,
        "a customer holds 10 places at most"
    );
    let q = app.get("/v1/queues").await;
    assert_eq!(q.body["admission"]["returns_remembered"], 11);
    app.stop().await;
}

/// Where the sandbox gateway says an order's authorization stands.
fn authorization(order_id: &str) -> Option<AuthorizationState> {
    SandboxGateway::authorization_of(order_id.parse().unwrap())
}
