//! Who may call what (API.md, issue 17): every customer route against every kind of credential,
//! ownership, idempotency keys per customer, order ids nobody can compute, key and token
//! rotation, rate limits, stream caps, and answers that leak nothing.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::checkout::body;
use crate::helpers::{
    assert_error, order_of_key, spawn_app_with, sql_i64, Reply, TestApp, TestDb, ADMIN_TOKEN,
};

/// A scratch directory for key files, removed when dropped.
struct KeyDir(std::path::PathBuf);

impl KeyDir {
    fn new() -> KeyDir {
        let dir = std::env::temp_dir().join(format!("of-keys-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        KeyDir(dir)
    }

    /// A fresh Ed25519 key pair (openssl): (private PEM, public PEM).
    fn ed25519(&self, name: &str) -> (String, String) {
        let private = self.0.join(format!("{name}.pem"));
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&private)
            .status()
            .expect("run openssl")
            .success();
        assert!(ok, "openssl genpkey");
        let public = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .output()
            .expect("run openssl");
        assert!(public.status.success());
        (
            std::fs::read_to_string(&private).unwrap(),
            String::from_utf8(public.stdout).unwrap(),
        )
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.join("customer-keys.pem")
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn ed_token(private_pem: &str, claims: Value) -> String {
    let key = EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "iss": "shop", "aud": "orderflow"})
}

/// The credentials of the matrix, with the header each sends.
fn credentials(private: &str, stranger_private: &str) -> Vec<(&'static str, Option<String>)> {
    let b64 = |bytes: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("ana").to_string().as_bytes())
    );
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("ana"),
        &EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let bearer = |t: String| Some(format!("Bearer {t}"));
    vec![
        ("no credential", None),
        (
            "bad signature",
            bearer(ed_token(stranger_private, claims("ana"))),
        ),
        (
            "expired",
            bearer(ed_token(
                private,
                json!({"sub": "ana", "exp": now() - 120, "iss": "shop", "aud": "orderflow"}),
            )),
        ),
        ("alg: none", bearer(alg_none)),
        (
            "wrong iss",
            bearer(ed_token(
                private,
                json!({"sub": "ana", "exp": now() + 600, "iss": "evil", "aud": "orderflow"}),
            )),
        ),
        (
            "wrong aud",
            bearer(ed_token(
                private,
                json!({"sub": "ana", "exp": now() + 600, "iss": "shop", "aud": "other"}),
            )),
        ),
        ("HS256 vs public keys", bearer(hs256)),
        ("owner", bearer(ed_token(private, claims("ana")))),
        ("another customer", bearer(ed_token(private, claims("bia")))),
        ("admin", bearer(ADMIN_TOKEN.to_owned())),
    ]
}

/// What the refused writes must leave as it was.
fn state(app: &TestApp, cart: &str, order: &str) -> (i64, i64, i64, i64, i64, String) {
    let db = &app.db;
    (
        db.stock("MX-1").0,
        db.stock("MX-1").1,
        sql_i64(db, "SELECT count(*) AS n FROM orders"),
        sql_i64(db, "SELECT count(*) AS n FROM carts"),
        sql_i64(
            db,
            &format!("SELECT coalesce(sum(quantity), 0)::int8 AS n FROM cart_items WHERE cart_id = '{cart}'"),
        ),
        order_status(db, order),
    )
}

fn order_status(db: &TestDb, order: &str) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct S {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
    }
    diesel::sql_query(format!(
        "SELECT status FROM orders WHERE order_id = '{order}'"
    ))
    .get_result::<S>(&mut db.conn())
    .map(|s| s.status)
    .unwrap_or_default()
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
    key: Option<&str>,
) -> (Reply, Option<String>) {
    let url = app.url(path);
    let mut req = match method {
        "GET" => app.anon.get(url),
        "PUT" => app.anon.put(url),
        _ => app.anon.post(url),
    };
    if let Some(a) = auth {
        req = req.insert_header(("Authorization", a));
    }
    if let Some(k) = key {
        req = req.insert_header(("Idempotency-Key", k));
    }
    let resp = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .expect("answered");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (crate::helpers::read(resp).await, challenge)
}

#[actix_web::test]
async fn access_matrix_every_customer_route_by_every_credential() {
    let keys = KeyDir::new();
    let (private, public) = keys.ed25519("issuer");
    let (stranger, _) = keys.ed25519("stranger");
    std::fs::write(keys.path(), &public).unwrap();
    let key_file = keys.path();
    // Public keys only (so an HS256 token is an algorithm confusion), with iss and aud.
    let app = spawn_app_with(TestDb::new(), move |c| {
        c.auth.secret = None;
        c.auth.public_keys = Some(key_file);
        c.auth.issuer = Some("shop".into());
        c.auth.audience = Some("orderflow".into());
    })
    .await;
    app.product("MX-1", "c", &[], 700, 50).await;
    let creds = credentials(&private, &stranger);
    let owner = creds[7].1.clone().unwrap();
    // Ana's cart (one line) and Ana's decided order.
    let (cart, _) = call(
        &app,
        "POST",
        "/v1/carts",
        Some(&owner),
        Some(json!({})),
        None,
    )
    .await;
    assert_eq!(cart.status, 201, "{}", cart.body);
    let cart = cart.body["cart_id"].as_str().unwrap().to_owned();
    let line = json!({"quantity": 2, "added_to_cart": true});
    let (r, _) = call(
        &app,
        "PUT",
        &format!("/v1/carts/{cart}/items/MX-1"),
        Some(&owner),
        Some(line.clone()),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut order_body = body("ana", json!([{"sku": "MX-1", "quantity": 1}]));
    order_body.as_object_mut().unwrap().remove("customer_id");
    let (r, _) = call(
        &app,
        "POST",
        "/v1/checkout",
        Some(&owner),
        Some(order_body.clone()),
        Some("mx-first"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let order = r.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(app.decided(&order).await["customer_id"], "ana");

    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/v1/carts".into(), Some(json!({}))),
        ("GET", format!("/v1/carts/{cart}"), None),
        (
            "PUT",
            format!("/v1/carts/{cart}/items/MX-1"),
            Some(json!({"quantity": 5, "added_to_cart": true})),
        ),
        ("POST", "/v1/checkout".into(), Some(order_body.clone())),
        ("GET", format!("/v1/orders/{order}"), None),
        ("GET", format!("/v1/orders/{order}/events"), None),
        ("POST", format!("/v1/orders/{order}/cancel"), None),
        ("GET", "/v1/customers/ana/orders".into(), None),
        ("GET", "/v1/customers/ana/notifications".into(), None),
        ("GET", "/v1/customers/me/orders".into(), None),
        ("GET", "/v1/customers/me/notifications".into(), None),
    ];
    // What API.md names, route by route: [owner, another customer, admin]; every credential
    // that is not valid gets 401.
    let allowed: [[u16; 3]; 11] = [
        [201, 201, 201], // a cart of one's own (staff name the customer)
        [200, 404, 200],
        [200, 404, 200],
        [202, 202, 202], // an order of one's own (staff name the customer)
        [200, 404, 200],
        [200, 404, 200],
        [200, 404, 200], // cancel: 200 again for the admin (already cancelled)
        [200, 404, 200],
        [200, 404, 200],
        [200, 200, 404], // staff have no orders of their own
        [200, 200, 404],
    ];
    let mut table = String::from("| route | ");
    table.push_str(&creds.iter().map(|c| c.0).collect::<Vec<_>>().join(" | "));
    table.push_str(" |\n");
    let mut checkout_n = 0;
    for (i, (method, path, body)) in routes.iter().enumerate() {
        let mut row = format!("| {method} {path} |")
            .replace(&order, "{order}")
            .replace(&cart, "{cart}");
        for (c, (name, auth)) in creds.iter().enumerate() {
            let expected = match c {
                7 => allowed[i][0],
                8 => allowed[i][1],
                9 => allowed[i][2],
                _ => 401,
            };
            let mut body = body.clone();
            if c == 9 && (path == "/v1/carts" || path == "/v1/checkout") {
                body.as_mut().unwrap()["customer_id"] = json!("ana");
            }
            checkout_n += 1;
            let key = format!("mx-{checkout_n}");
            let before = state(&app, &cart, &order);
            let (reply, challenge) =
                call(&app, method, path, auth.as_deref(), body, Some(&key)).await;
            assert_eq!(
                reply.status, expected,
                "{method} {path} with {name}: {}",
                reply.body
            );
            if expected >= 400 {
                assert!(
                    reply.body["error"]["code"].is_string(),
                    "{name}: {}",
                    reply.body
                );
                assert_eq!(
                    state(&app, &cart, &order),
                    before,
                    "{method} {path} with {name} changed something"
                );
            }
            if expected == 401 {
                assert_eq!(
                    challenge.as_deref(),
                    Some("Bearer"),
                    "{method} {path} {name}"
                );
                assert_eq!(reply.body["error"]["code"], "unauthorized");
            }
            if expected == 404 {
                assert_eq!(reply.body["error"]["code"], "not_found");
            }
            if reply.status == 202 {
                // Let it be decided, so the next cell's before/after compare a still state.
                let id = reply.body["order_id"].as_str().unwrap().to_owned();
                app.decided(&id).await;
            }
            row.push_str(&format!(" {} |", reply.status));
        }
        table.push_str(&row);
        table.push('\n');
    }
    println!("{table}");
    // A customer naming someone else in the body: 403, nothing made.
    let stranger_acts = creds[8].1.clone().unwrap();
    let before = state(&app, &cart, &order);
    let (r, _) = call(
        &app,
        "POST",
        "/v1/carts",
        Some(&stranger_acts),
        Some(json!({"customer_id": "ana"})),
        None,
    )
    .await;
    assert_error(&r, 403, "forbidden");
    let mut as_ana = order_body.clone();
    as_ana["customer_id"] = json!("ana");
    let (r, _) = call(
        &app,
        "POST",
        "/v1/checkout",
        Some(&stranger_acts),
        Some(as_ana),
        Some("mx-forged"),
    )
    .await;
    assert_error(&r, 403, "forbidden");
    assert_eq!(state(&app, &cart, &order), before);
    app.stop().await;
}

#[actix_web::test]
async fn one_key_from_two_customers_is_two_orders_and_no_id_comes_from_a_key() {
    let app = spawn_app_with(TestDb::new(), |_| {}).await;
    app.product("TK-1", "c", &[], 300, 10).await;
    let a = app
        .checkout(
            "shared-key",
            &body("ana", json!([{"sku": "TK-1", "quantity": 1}])),
        )
        .await;
    let b = app
        .checkout(
            "shared-key",
            &body("bia", json!([{"sku": "TK-1", "quantity": 2}])),
        )
        .await;
    assert_eq!((a.status, b.status), (202, 202), "{} {}", a.body, b.body);
    let (ida, idb) = (
        a.body["order_id"].as_str().unwrap(),
        b.body["order_id"].as_str().unwrap(),
    );
    assert_ne!(ida, idb);
    assert_eq!(app.decided(ida).await["customer_id"], "ana");
    assert_eq!(app.decided(idb).await["customer_id"], "bia");
    // The same key and body again: the same order. Another body: 422 naming no order.
    let again = app
        .checkout(
            "shared-key",
            &body("ana", json!([{"sku": "TK-1", "quantity": 1}])),
        )
        .await;
    assert_eq!(again.body["order_id"], ida);
    let other = app
        .checkout(
            "shared-key",
            &body("ana", json!([{"sku": "TK-1", "quantity": 3}])),
        )
        .await;
    assert_error(&other, 422, "idempotency_mismatch");
    assert!(!other.body.to_string().contains(ida) && !other.body.to_string().contains(idb));
    // A checkout from another system: its id too is nobody's computation.
    app.publish(
        "orders",
        "checkout",
        &body("caio", json!([{"sku": "TK-1", "quantity": 1}])),
        Some("shared-key"),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sql_i64(
        &app.db,
        "SELECT count(*) AS n FROM orders WHERE customer_id = 'caio'",
    ) == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "caio's order never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No order id equals UUIDv5 of its key under any namespace in the source (the standard
    // ones, the nil one, and every 128-bit constant the crate's source spells).
    let mut namespaces = vec![
        uuid::Uuid::NAMESPACE_DNS,
        uuid::Uuid::NAMESPACE_URL,
        uuid::Uuid::NAMESPACE_OID,
        uuid::Uuid::NAMESPACE_X500,
        uuid::Uuid::nil(),
    ];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (i, _) in text.match_indices("from_u128(0x") {
            let hex: String = text[i + 12..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == '_')
                .filter(|c| *c != '_')
                .collect();
            if let Ok(n) = u128::from_str_radix(&hex, 16) {
                namespaces.push(uuid::Uuid::from_u128(n));
            }
        }
    }
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        order_id: uuid::Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        idempotency_key: String,
    }
    use diesel::RunQueryDsl;
    let rows: Vec<Row> = diesel::sql_query("SELECT order_id, idempotency_key FROM orders")
        .load(&mut app.db.conn())
        .unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        for ns in &namespaces {
            assert_ne!(
                row.order_id,
                uuid::Uuid::new_v5(ns, row.idempotency_key.as_bytes())
            );
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn keys_are_forgotten_after_their_retention_and_a_reuse_is_a_new_order() {
    let app = spawn_app_with(TestDb::new(), |c| {
        c.key_retention = Duration::from_secs(60);
    })
    .await;
    app.product("KR-1", "c", &[], 300, 10).await;
    let b = body("ana", json!([{"sku": "KR-1", "quantity": 1}]));
    let first = app.checkout("kr-1", &b).await;
    let first = first.body["order_id"].as_str().unwrap().to_owned();
    app.decided(&first).await;
    // A day later (the key's row made old), the sweeper forgets it.
    use diesel::RunQueryDsl;
    diesel::sql_query("UPDATE checkout_keys SET created_at = now() - interval '2 minutes'")
        .execute(&mut app.db.conn())
        .unwrap();
    let report = app.active().orders.sweep().await.unwrap();
    assert_eq!(report.keys_forgotten, 1);
    let second = app.checkout("kr-1", &b).await;
    assert_eq!(second.status, 202, "{}", second.body);
    assert_ne!(second.body["order_id"], first.as_str());
    app.decided(second.body["order_id"].as_str().unwrap()).await;
    assert_eq!(app.db.stock("KR-1").1, 2, "two orders, two units");
    app.stop().await;
}

/// Keys arrive at the checkout rate: a round of the sweeper forgets every key past its
/// retention, however many, not one batch of them (5,000 a round was 167 a second, so under
/// a sustained load above that the table only grew).
#[actix_web::test]
async fn a_sweep_forgets_every_key_past_its_retention_not_one_batch() {
    use diesel::RunQueryDsl;
    // The service's own rounds: the first as it starts, then none during the test.
    let app = spawn_app_with(TestDb::new(), |c| {
        c.key_retention = Duration::from_secs(60);
        c.sweep_every = Duration::from_secs(3600);
    })
    .await;
    diesel::sql_query(
        "INSERT INTO checkout_keys (order_id, customer_id, idempotency_key, fingerprint, created_at)
         SELECT gen_random_uuid(), 'c-' || i, 'k', 'f', now() - interval '2 minutes'
         FROM generate_series(1, 12000) i",
    )
    .execute(&mut app.db.conn())
    .unwrap();
    // One recent key stays.
    diesel::sql_query(
        "INSERT INTO checkout_keys (order_id, customer_id, idempotency_key, fingerprint)
         VALUES (gen_random_uuid(), 'recent', 'k', 'f')",
    )
    .execute(&mut app.db.conn())
    .unwrap();
    // One round (the service's own first round may run meanwhile and take its share: wait
    // for it too, briefly).
    app.active().orders.sweep().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left = sql_i64(&app.db, "SELECT count(*) AS n FROM checkout_keys");
        if left == 1 || std::time::Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(left, 1, "only the recent key is left after one round");
    app.stop().await;
}

#[actix_web::test]
async fn customer_keys_rotate_through_the_key_file_without_a_restart() {
    let keys = KeyDir::new();
    let (old_private, old_public) = keys.ed25519("old");
    let (new_private, new_public) = keys.ed25519("new");
    std::fs::write(keys.path(), &old_public).unwrap();
    let key_file = keys.path();
    let app = spawn_app_with(TestDb::new(), move |c| {
        c.auth.public_keys = Some(key_file);
    })
    .await;
    let ask = |token: String| {
        let app = &app;
        async move {
            app.send(
                app.anon
                    .get(app.url("/v1/customers/me/orders"))
                    .insert_header(("Authorization", format!("Bearer {token}"))),
                None,
            )
            .await
            .status
        }
    };
    let exp = now() + 600;
    let old = || ed_token(&old_private, json!({"sub": "ana", "exp": exp}));
    let new = || ed_token(&new_private, json!({"sub": "ana", "exp": exp}));
    assert_eq!(ask(old()).await, 200);
    assert_eq!(ask(new()).await, 401);
    // Both keys during the rotation, then only the new one.
    std::fs::write(keys.path(), format!("{old_public}{new_public}")).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ask(old()).await, 200);
    assert_eq!(ask(new()).await, 200);
    std::fs::write(keys.path(), &new_public).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ask(old()).await, 401);
    assert_eq!(ask(new()).await, 200);
    // A broken file keeps the keys read last.
    std::fs::write(keys.path(), "-----BEGIN PUBLIC KEY-----\ngarbage\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ask(new()).await, 200);
    // The HS256 secret still works beside the file.
    let hs = crate::helpers::customer_token("ana");
    assert_eq!(ask(hs).await, 200);
    app.stop().await;
}

#[actix_web::test]
async fn two_admin_tokens_work_during_a_rotation_and_nothing_else_does() {
    let second = "second-admin-token-fedcba9876543210-rotation";
    let app = spawn_app_with(TestDb::new(), move |c| {
        c.admin_tokens = orderflow::auth::AdminTokens::from_tokens([ADMIN_TOKEN, second]);
    })
    .await;
    for (token, expected) in [
        (ADMIN_TOKEN.to_owned(), 201),
        (second.to_owned(), 200),
        (format!("{second}x"), 401),
        (second[..31].to_owned(), 401),
    ] {
        let r = app
            .send(
                app.anon
                    .put(app.url("/v1/products/AT-1"))
                    .insert_header(("Authorization", format!("Bearer {token}"))),
                Some(json!({"name": "x", "category": "c", "price_cents": 1})),
            )
            .await;
        assert_eq!(r.status, expected, "{}", r.body);
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_customer_past_its_allowance_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_app_with(TestDb::new(), |c| {
        c.rate_limits = orderflow::auth::RateSettings {
            per_second: 1,
            burst: 3,
        };
    })
    .await;
    let create = |who: &'static str| {
        let app = &app;
        async move {
            app.send(
                app.as_customer(app.anon.post(app.url("/v1/carts")), who),
                Some(json!({})),
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(create("ana").await.status, 201);
    }
    let limited = create("ana").await;
    assert_error(&limited, 429, "rate_limited");
    let wait: u64 = limited.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        sql_i64(&app.db, "SELECT count(*) AS n FROM carts"),
        3,
        "the refused write made nothing"
    );
    assert_eq!(
        create("bia").await.status,
        201,
        "another customer's allowance is its own"
    );
    // Reads are not writes.
    let read = app
        .send(
            app.as_customer(app.anon.get(app.url("/v1/customers/me/orders")), "ana"),
            None,
        )
        .await;
    assert_eq!(read.status, 200);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        create("ana").await.status,
        201,
        "after Retry-After it fits again"
    );
    app.stop().await;
}

#[actix_web::test]
async fn event_streams_are_capped_and_end_after_their_lifetime() {
    let app = spawn_app_with(TestDb::new(), |c| {
        c.sse_max_streams = 2;
        c.sse_max_lifetime = Duration::from_secs(2);
    })
    .await;
    let open = || app.anon.get(app.url("/v1/inventory/stream")).send();
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = crate::helpers::read(open().await.unwrap()).await;
    assert_error(&third, 503, "unavailable");
    assert!(third.retry_after.is_some());
    // Another route's budget is its own: the dashboard's feed still opens.
    let monitor = app
        .anon
        .get(app.url("/v1/monitor/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(monitor.status().as_u16(), 200);
    drop(monitor);
    // A stream ends by itself after its lifetime (its body completes), and frees its slot.
    let started = std::time::Instant::now();
    let mut first = first;
    let _ = tokio::time::timeout(Duration::from_secs(10), first.body().limit(1 << 20))
        .await
        .expect("the stream ended within its lifetime");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(first);
    drop(second);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(open().await.unwrap().status().as_u16(), 200);
    app.stop().await;
}

#[actix_web::test]
async fn a_dead_database_is_a_503_naming_a_request_id_and_no_driver_text() {
    use crate::helpers::{pg_addr, Proxy};
    let proxy = Proxy::start(pg_addr());
    let db = TestDb::new();
    let url = proxy.pg_url(&db.url);
    let app = spawn_app_with(db, move |c| c.database_url = url).await;
    app.product("DD-1", "c", &[], 300, 10).await;
    proxy.cut();
    let r = app
        .send(
            app.as_customer(app.anon.get(app.url("/v1/customers/me/orders")), "ana"),
            None,
        )
        .await;
    assert_error(&r, 503, "unavailable");
    let text = r.body.to_string().to_lowercase();
    for leak in [
        "connection",
        "refused",
        "postgres",
        "diesel",
        "r2d2",
        "sql",
        "timed out",
    ] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    assert!(
        r.body["error"]["details"]["request_id"].is_string(),
        "{}",
        r.body
    );
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, 503);
    let ready = ready.body.to_string().to_lowercase();
    for leak in ["refused", "os error", "r2d2", "diesel", "timed out"] {
        assert!(!ready.contains(leak), "{leak} in {ready}");
    }
    proxy.restore();
    assert!(order_of_key(&app.db, "none").is_none());
    app.stop().await;
}
