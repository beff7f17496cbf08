//! The PostgreSQL roles of deploy/postgres/roles.sql (issue 18): the schema's owner migrates,
//! the service runs as a role that reads and writes rows and can do nothing else.

use diesel::prelude::*;
use serde_json::json;

use crate::checkout::body;
use crate::helpers::{pg_base, spawn_app_with, TestDb};

/// Two roles of this test's own, dropped (with what they own) at the end.
struct Roles {
    owner: String,
    app: String,
}

impl Drop for Roles {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&format!("{}/postgres", pg_base())) {
            for role in [&self.app, &self.owner] {
                let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS \"{role}\""))
                    .execute(&mut admin);
            }
        }
    }
}

fn url_as(user: &str, password: &str, db: &str) -> String {
    // pg_base() is `postgres://postgres@host:port`.
    let host = pg_base().rsplit('@').next().unwrap().to_owned();
    format!("postgres://{user}:{password}@{host}/{db}")
}

#[actix_web::test]
async fn the_application_role_reads_and_writes_rows_and_nothing_more() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let roles = Roles {
        owner: format!("of_owner_{tag}"),
        app: format!("of_app_{tag}"),
    };
    let db_name = format!("of_test_{tag}");
    let (owner_pw, app_pw) = ("owner-pw-1", "app-pw-1");
    let sql = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/postgres/roles.sql"),
    )
    .unwrap()
    .replace("{{OWNER}}", &roles.owner)
    .replace("{{APP}}", &roles.app)
    .replace("{{DB}}", &db_name);
    // The file, as psql runs it (its `\gexec` and `\connect` are psql's).
    let file = std::env::temp_dir().join(format!("roles-{tag}.sql"));
    std::fs::write(&file, sql).unwrap();
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .env("ORDERFLOW_DB_OWNER_PASSWORD", owner_pw)
        .env("ORDERFLOW_DB_APP_PASSWORD", app_pw)
        .arg(&file)
        .arg(format!("{}/postgres", pg_base()))
        .output()
        .expect("psql");
    std::fs::remove_file(&file).unwrap();
    let db = TestDb {
        name: db_name.clone(),
        url: url_as(&roles.app, app_pw, &db_name),
    };
    assert!(
        out.status.success(),
        "roles.sql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The owner migrates.
    let owner_url = url_as(&roles.owner, owner_pw, &db_name);
    let applied = orderflow::persistence::prepare_database(&owner_url).unwrap();
    assert!(applied > 0);
    // The application role: rows yes, schema no.
    let mut app_conn = PgConnection::establish(&db.url).unwrap();
    diesel::sql_query("SELECT count(*) FROM orders")
        .execute(&mut app_conn)
        .unwrap();
    for forbidden in [
        "DROP TABLE orders",
        "CREATE TABLE intruder (id int)",
        "ALTER TABLE stock DROP CONSTRAINT stock_on_hand_check",
        "TRUNCATE stock",
    ] {
        let e = diesel::sql_query(forbidden)
            .execute(&mut app_conn)
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("must be owner") || text.contains("permission denied"),
            "{forbidden}: {text}"
        );
    }
    drop(app_conn);
    // The service runs as it (no migration on start) and decides a checkout.
    let app = spawn_app_with(db, |c| c.migrate_on_start = false).await;
    app.product("RL-1", "c", &[], 100, 3).await;
    let r = app
        .checkout("rl-1", &body("rl", json!([{"sku": "RL-1", "quantity": 1}])))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        app.decided(r.body["order_id"].as_str().unwrap()).await["status"],
        "scheduled"
    );
    app.stop().await;
    drop(roles);
}
