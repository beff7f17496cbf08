//! Catalog listing, similar-product suggestions and the stock stream over HTTP.

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app};

fn skus(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|x| x["sku"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[actix_web::test]
async fn products_are_listed_filtered_and_paged() {
    let app = spawn_app().await;
    app.product("K-1", "kitchen", &["coffee"], 1000, 3).await;
    app.product("K-2", "kitchen", &["tea"], 1200, 0).await;
    app.product("K-3", "Kitchen", &["coffee", "tea"], 900, 1)
        .await;
    app.product("G-1", "garden", &["coffee"], 5000, 2).await;

    let page = app.get("/v1/products?category=kitchen&limit=2").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(skus(&page.body["data"]), ["K-1", "K-2"]);
    assert_eq!(page.body["data"][0]["stock"]["available"], 3);
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let next = app
        .get(&format!(
            "/v1/products?category=kitchen&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(skus(&next.body["data"]), ["K-3"]);
    assert_eq!(next.body["next_cursor"], Value::Null);

    let coffee = app.get("/v1/products?tag=coffee").await;
    assert_eq!(skus(&coffee.body["data"]), ["G-1", "K-1", "K-3"]);
    let both = app.get("/v1/products?category=kitchen&tag=tea").await;
    assert_eq!(skus(&both.body["data"]), ["K-2", "K-3"]);
    let all = app.get("/v1/products").await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 4);

    assert_error(
        &app.get("/v1/products?limit=0").await,
        422,
        "validation_failed",
    );
    assert_error(
        &app.get("/v1/products?limit=abc").await,
        422,
        "validation_failed",
    );
    assert_error(
        &app.get("/v1/products?cursor=%20").await,
        422,
        "validation_failed",
    );
    app.stop().await;
}

#[actix_web::test]
async fn similar_products_are_ranked_in_stock_and_follow_stock_changes() {
    let app = spawn_app().await;
    app.product("RUN-1", "shoes", &["running", "men"], 30000, 0)
        .await;
    app.product("RUN-2", "shoes", &["running", "men"], 31000, 4)
        .await;
    app.product("RUN-3", "shoes", &["running"], 45000, 4).await;
    app.product("BOOT-1", "shoes", &["hiking"], 30000, 4).await;
    app.product("RUN-4", "shoes", &["running", "men"], 29500, 0)
        .await;
    app.product("MUG-1", "kitchen", &[], 30000, 4).await;

    let r = app.get("/v1/products/RUN-1/similar?limit=3").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["sku"], "RUN-1");
    assert_eq!(skus(&r.body["suggestions"]), ["RUN-2", "RUN-3", "BOOT-1"]);
    let first = &r.body["suggestions"][0];
    assert_eq!(first["available"], 4);
    assert_eq!(first["price_cents"], 31000);
    assert!(first["score"].as_f64().unwrap() > r.body["suggestions"][1]["score"].as_f64().unwrap());

    // RUN-2 sells out and RUN-4 comes in: the suggestions follow at once.
    app.admin_put("/v1/inventory/RUN-2", json!({"on_hand": 0}))
        .await;
    app.admin_put("/v1/inventory/RUN-4", json!({"on_hand": 2}))
        .await;
    let r = app.get("/v1/products/RUN-1/similar?limit=3").await;
    assert_eq!(skus(&r.body["suggestions"]), ["RUN-4", "RUN-3", "BOOT-1"]);
    assert!(!skus(&r.body["suggestions"]).contains(&"RUN-1".to_owned()));

    // Default limit, unknown sku, bad limit.
    assert_eq!(
        app.get("/v1/products/RUN-1/similar").await.body["suggestions"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_error(
        &app.get("/v1/products/NOPE/similar").await,
        404,
        "not_found",
    );
    assert_error(
        &app.get("/v1/products/RUN-1/similar?limit=-1").await,
        422,
        "validation_failed",
    );
    app.stop().await;
}

#[actix_web::test]
async fn the_stock_stream_sends_every_change_in_order() {
    use futures_util::StreamExt;
    let app = spawn_app().await;
    app.product("S-1", "c", &[], 100, 10).await;
    let mut resp = app
        .client
        .get(app.url("/v1/inventory/stream"))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );

    app.admin_post(
        "/v1/inventory/S-1/adjustments",
        json!({"delta": 5, "reason": "r"}),
    )
    .await;
    app.admin_put("/v1/inventory/S-1", json!({"on_hand": 3}))
        .await;
    app.admin_post(
        "/v1/inventory/S-1/adjustments",
        json!({"delta": -1, "reason": "r"}),
    )
    .await;

    let mut text = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while text.matches("event: stock").count() < 3 && std::time::Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(std::time::Duration::from_millis(500), resp.next()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    let seen: Vec<(i64, &str, i64)> = events
        .iter()
        .map(|e| {
            (
                e["version"].as_i64().unwrap(),
                e["kind"].as_str().unwrap(),
                e["on_hand"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(2, "adjust", 15), (3, "set_on_hand", 3), (4, "adjust", 2)]
    );
    assert!(text.contains("id: S-1:2"));
    assert_eq!(events[2]["available"], 2);
    app.stop().await;
}

/// `orderflow demo-data N --url …` as a user runs it, against this test's service.
async fn demo_data_online(url: &str, n: u32, token: &str) -> std::process::Output {
    let (url, token) = (url.to_owned(), token.to_owned());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .args([
                "demo-data",
                &n.to_string(),
                "--url",
                &url,
                "--concurrency",
                "64",
            ])
            .env("ADMIN_TOKEN", token)
            .env_remove("AUTH_JWT_SECRET")
            .output()
            .expect("run orderflow demo-data")
    })
    .await
    .expect("the command ran")
}

/// `orderflow demo-data N` offline, straight into `db`'s database.
async fn demo_data_offline(db: &crate::helpers::TestDb, n: u32) -> std::process::Output {
    let (url, n) = (db.url.clone(), n.to_string());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .args(["demo-data", &n])
            .env("DATABASE_URL", url)
            .env_remove("AUTH_JWT_SECRET")
            .output()
            .expect("run orderflow demo-data")
    })
    .await
    .expect("the command ran")
}

/// Every SKU's stock in `db`'s database.
fn stock_in(db: &crate::helpers::TestDb) -> Vec<(String, i64)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        sku: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        on_hand: i64,
    }
    use diesel::RunQueryDsl;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT p.sku, s.on_hand FROM products p JOIN stock s USING (sku) ORDER BY p.sku",
    )
    .load(&mut db.conn())
    .expect("products with stock");
    rows.into_iter().map(|r| (r.sku, r.on_hand)).collect()
}

/// Every SKU's stock as the running engine serves it (and the database agrees).
async fn stock_of_every_sku(app: &crate::helpers::TestApp) -> Vec<(String, i64)> {
    let rows = stock_in(&app.db);
    for (sku, on_hand) in &rows {
        let live = app.get(&format!("/v1/inventory/{sku}")).await;
        assert_eq!(live.status, 200, "{}", live.body);
        assert_eq!(live.body["on_hand"], *on_hand, "{sku}: engine vs database");
    }
    rows
}

#[actix_web::test]
async fn demo_data_loads_into_a_running_service_through_its_admin_api_with_backpressure() {
    // A tiny write-behind bound: 64 stock writes at once meet 503 `overloaded`, which the
    // command must wait out (Retry-After) and send again.
    let app = crate::helpers::spawn_app_with(crate::helpers::TestDb::new(), |c| {
        c.engine.persister.queue_capacity = 2;
    })
    .await;
    let out = demo_data_online(&app.address, 400, crate::helpers::ADMIN_TOKEN).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("loaded 400 of 400"), "{stdout}");
    let retried: u64 = stdout
        .split(" answers waited out")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the report says how many answers were retried: {stdout}"));
    assert!(retried > 0, "the bound was never met: {stdout}");

    let first = stock_of_every_sku(&app).await;
    assert_eq!(first.len(), 400, "every SKU has a product and its stock");
    assert!(
        first.iter().any(|(_, s)| *s == 0),
        "some demo products are sold out"
    );
    assert!(first.iter().filter(|(_, s)| *s > 0).count() > 300);
    // The catalog is the running service's now: searchable with live stock.
    let page = app.get("/v1/products?limit=5").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.body["data"].as_array().map(Vec::len),
        Some(5),
        "{}",
        page.body
    );

    // Each SKU has exactly the stock of the demo catalog: the same as the offline mode writes.
    let offline = crate::helpers::TestDb::new();
    let out = demo_data_offline(&offline, 400).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stock_in(&offline), first);

    // Loading again is idempotent: the same products, the same stock.
    let again = demo_data_online(&app.address, 400, crate::helpers::ADMIN_TOKEN).await;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(stock_of_every_sku(&app).await, first);

    // A wrong token is one clear error, not 400 failures; nothing is written.
    let wrong = demo_data_online(&app.address, 10, &"x".repeat(40)).await;
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("refused the admin token"), "{said}");
    app.stop().await;
}

#[actix_web::test]
async fn demo_data_offline_loads_while_no_service_is_active_and_refuses_while_one_is() {
    let db = crate::helpers::TestDb::new();
    let out = demo_data_offline(&db, 200).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("loaded 200 demo products"), "{stdout}");
    let loaded = stock_in(&db);
    assert_eq!(loaded.len(), 200, "every SKU with its stock");
    assert!(loaded.iter().any(|(_, s)| *s > 0));
    // It gave the lease up: a service starts on the database at once and serves that stock.
    let app = crate::helpers::spawn_app_with(db, |_| {}).await;
    let (sku, on_hand) = &loaded[7];
    let live = app.get(&format!("/v1/inventory/{sku}")).await;
    assert_eq!(live.body["on_hand"], *on_hand, "{}", live.body);
    // While the service is active, the offline mode refuses (two engines must not own the
    // same SKUs) and says what to do; it changed nothing.
    app.admin_put(&format!("/v1/inventory/{sku}"), json!({"on_hand": 777}))
        .await;
    let refused = demo_data_offline(&app.db, 200).await;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("a service is active") && said.contains("--url"),
        "{said}"
    );
    let live = app.get(&format!("/v1/inventory/{sku}")).await;
    assert_eq!(live.body["on_hand"], 777, "{}", live.body);
    app.stop().await;
}
