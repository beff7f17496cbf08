//! A client generated from the service's own `/openapi.json` (openapi-typescript, called
//! through openapi-fetch) type-checks the storefront walk-through (`tests/client/walkthrough.ts`)
//! and runs it against the service: the document's types are the answers' shapes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::helpers::{customer_token, spawn_app, ADMIN_TOKEN};

/// `tests/client` with its node_modules, when node and the kit are here.
fn client_kit() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client");
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (node_ok
        && dir.join("node_modules/openapi-typescript").exists()
        && dir.join("node_modules/typescript").exists())
    .then_some(dir)
}

/// Runs `node args…` in `dir` off the runtime (the service answers on this thread's runtime).
async fn node(dir: &Path, args: Vec<String>) -> Output {
    let dir = dir.to_owned();
    actix_web::rt::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("node runs")
    })
    .await
    .expect("the node task ends")
}

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[actix_web::test]
async fn a_client_generated_from_the_openapi_document_type_checks_and_runs_the_walk_through() {
    let Some(kit) = client_kit() else {
        // .ci/run installs the kit (npm ci) and sets ORDERFLOW_CLIENT_TESTS=required.
        assert!(
            std::env::var("ORDERFLOW_CLIENT_TESTS").as_deref() != Ok("required"),
            "the client test is required here, but node or tests/client/node_modules is missing"
        );
        eprintln!("skipped: no node + tests/client/node_modules (see .ci/run)");
        return;
    };
    let app = spawn_app().await;
    // The document as the running service serves it.
    let document = app.get("/openapi.json").await;
    assert_eq!(document.status, 200);
    // A scratch copy of the script, beside the kit's modules, so the tree stays clean.
    let work = tempdir();
    std::fs::copy(kit.join("walkthrough.ts"), work.join("walkthrough.ts")).unwrap();
    for file in ["tsconfig.json", "package.json"] {
        std::fs::copy(kit.join(file), work.join(file)).unwrap();
    }
    std::os::unix::fs::symlink(kit.join("node_modules"), work.join("node_modules")).unwrap();
    std::fs::write(
        work.join("openapi.json"),
        serde_json::to_vec_pretty(&document.body).unwrap(),
    )
    .unwrap();

    let generate = node(
        &work,
        [
            "node_modules/openapi-typescript/bin/cli.js",
            "openapi.json",
            "--output",
            "generated/api.d.ts",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert!(
        generate.status.success(),
        "{}",
        show("openapi-typescript", &generate)
    );
    let types = std::fs::read_to_string(work.join("generated/api.d.ts")).unwrap();
    // Typed answers, not `Record<string, never>`/`unknown` objects.
    for schema in [
        "Order:",
        "CartView:",
        "CheckoutAccepted:",
        "ProductView:",
        "CardToken:",
    ] {
        assert!(types.contains(schema), "no {schema} in the generated types");
    }

    let check = node(
        &work,
        ["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(check.status.success(), "{}", show("tsc", &check));

    let customer = customer_token("ts-client");
    let run = node(
        &work,
        vec![
            "build/walkthrough.js".into(),
            app.address.clone(),
            ADMIN_TOKEN.into(),
            customer,
            "TS-MUG".into(),
        ],
    )
    .await;
    assert!(run.status.success(), "{}", show("walkthrough", &run));
    let line = String::from_utf8_lossy(&run.stdout);
    let seen: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(seen["accepted_status"], "received");
    assert_eq!(seen["order_status"], "scheduled", "{seen}");
    assert_eq!(
        seen["history"],
        json!(["received", "reserved", "scheduled"])
    );
    // The events stream told the same story and ended at the decision.
    assert_eq!(seen["streamed"], seen["history"], "{seen}");
    assert_eq!(seen["cart_total_cents"], 3980);
    assert_eq!(seen["order_total_cents"], 3980);
    assert_eq!(seen["card_last4"], "1111");
    assert_eq!(
        seen["payment"],
        json!({"method": "card", "brand": "visa", "last4": "1111"})
    );
    assert_eq!(seen["listed"], json!(["TS-MUG"]));
    assert_eq!(seen["my_order_ids"].as_array().map(Vec::len), Some(1));
    assert_eq!(seen["notification_kinds"], json!(["order_scheduled"]));
    assert_eq!(
        seen["stock_after"],
        json!({"on_hand": 25, "reserved": 2, "available": 23})
    );
    std::fs::remove_dir_all(&work).ok();
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orderflow-client-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
