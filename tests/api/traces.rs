//! Traces across the queue: `orderflow serve` exports its spans over OTLP/HTTP to a receiver in
//! this test, and one checkout is one trace — from the HTTP request (continuing the caller's
//! `traceparent`) through the publish, the consumer, the SKU actor, both writers and the event —
//! also when the process dies after the decision and another one takes the redelivery.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{json, Value};

use crate::checkout::body;
use crate::helpers::{http_client, Service, TestDb, TestVhost};
use crate::load::stock_up;

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
    /// Which process sent it (its `service.instance.id`-less resource: the pid we tag).
    process: String,
    /// The spans it links to, in other traces: (trace, span).
    links: Vec<(String, String)>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

async fn receive(spans: web::Data<Spans>, body: web::Bytes) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut out = spans.lock().unwrap();
    for resource in request.resource_spans {
        let process = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                out.push(Received {
                    trace: hex(&span.trace_id),
                    id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                    process: process.clone(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

/// An OTLP/HTTP receiver on a port of its own; its spans, and its address.
fn receiver() -> (Spans, String) {
    let spans: Spans = Arc::default();
    let data = web::Data::new(Arc::clone(&spans));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 << 20))
            .route("/v1/traces", web::post().to(receive))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let address = format!("http://{}", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    (spans, address)
}

fn otlp_env(endpoint: &str, name: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_SERVICE_NAME", name.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

fn start(db: &TestDb, vhost: &TestVhost, env: &[(&'static str, String)]) -> Service {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Service::start(&db.url, &vhost.url, &env)
}

async fn checkout(service: &Service, key: &str, traceparent: Option<&str>) -> Value {
    checkout_of(service, key, traceparent, "TR-1").await
}

async fn checkout_of(service: &Service, key: &str, traceparent: Option<&str>, sku: &str) -> Value {
    let mut req = http_client()
        .post(service.url("/v1/checkout"))
        .insert_header(("Idempotency-Key", key));
    if let Some(tp) = traceparent {
        req = req.insert_header(("traceparent", tp));
    }
    let mut resp = req
        .send_json(&body("tracer", json!([{"sku": sku, "quantity": 1}])))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    resp.json().await.unwrap()
}

/// Waits until `done` holds for the spans received (at most 20 s).
async fn spans_until(spans: &Spans, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = spans.lock().unwrap().clone();
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "spans never complete: {:#?}",
            now.iter()
                .map(|s| (&s.trace, &s.name, &s.process))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names(spans: &[&Received]) -> BTreeSet<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}

/// The spans a decided checkout leaves in its trace, whichever process made them: its lines
/// held at their actors, its one write (the order with its stock), its events.
const PIPELINE: [&str; 6] = [
    "POST /v1/checkout",
    "intake",
    "orders.checkout process",
    "sku actor hold",
    "orderflow-order-writer write",
    "order.events publish",
];

fn dump(trace: &[&Received]) -> String {
    let by_id: BTreeMap<&str, &Received> = trace.iter().map(|s| (s.id.as_str(), *s)).collect();
    let mut lines = Vec::new();
    for span in trace {
        let mut depth = 0;
        let mut at = span.parent.as_str();
        while let Some(parent) = by_id.get(at) {
            depth += 1;
            at = parent.parent.as_str();
        }
        let redelivered = span
            .attributes
            .get("messaging.rabbitmq.redelivered")
            .map(|r| format!(" redelivered={r}"))
            .unwrap_or_default();
        lines.push(format!(
            "{}{} [{}] span {} parent {}{}",
            "  ".repeat(depth),
            span.name,
            span.process,
            span.id,
            span.parent,
            redelivered
        ));
    }
    lines.join("\n")
}

#[actix_web::test]
async fn one_checkout_is_one_trace_from_the_request_to_its_decision_across_a_redelivery() {
    let (spans, endpoint) = receiver();
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    // The first process dies right after the first decision is durable, before its ack.
    let mut env = otlp_env(&endpoint, "orderflow-a");
    env.push(("ORDERFLOW_FAULT_ABORT_BEFORE_ACK", "1".into()));
    let mut first = start(&db, &vhost, &env);
    first.ready(&client).await;
    stock_up(&client, &first.base, &[("TR-1", 10)]).await;
    // The caller's own trace: the checkout continues it.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let accepted = checkout(&first, "trace-1", Some(&format!("00-{trace}-{caller}-01"))).await;
    let order_id = accepted["order_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first.log().contains("aborting after a commit") {
        assert!(Instant::now() < deadline, "never aborted: {}", first.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It aborts by itself once its spans are flushed (killing it at the log line could cut the
    // flush short: under load no span of the first process arrived).
    assert!(
        first.wait_exit(Duration::from_secs(30)).await,
        "the first process did not abort: {}",
        first.log()
    );

    // The second process takes the redelivery (the decision is found, the event sent again).
    let second = start(&db, &vhost, &otlp_env(&endpoint, "orderflow-b"));
    second.ready(&client).await;
    // Both processes' spans, in whatever order their exports land (the first one's last batch,
    // flushed just before its abort, can arrive after the second one's first).
    let received = spans_until(&spans, |all| {
        let has = |process: &str, name: &str| {
            all.iter()
                .any(|s| s.trace == trace && s.process == process && s.name == name)
        };
        has("orderflow-b", "orders.checkout process")
            && has("orderflow-b", "order.events publish")
            && has("orderflow-a", "sku actor hold")
            && has("orderflow-a", "orderflow-order-writer write")
    })
    .await;
    let ours: Vec<&Received> = received.iter().filter(|s| s.trace == trace).collect();
    println!("the trace of order {order_id}:\n{}", dump(&ours));
    // The request continued the caller's trace.
    let server = ours
        .iter()
        .find(|s| s.name == "POST /v1/checkout")
        .expect("the request's span");
    assert_eq!(server.parent, caller);
    assert_eq!(server.process, "orderflow-a");
    // Both deliveries are in it: the first (decided, then the crash) and the redelivery.
    let deliveries: Vec<&&Received> = ours
        .iter()
        .filter(|s| s.name == "orders.checkout process")
        .collect();
    let redelivery = deliveries
        .iter()
        .find(|s| s.process == "orderflow-b")
        .expect("the redelivery's span");
    assert_eq!(
        redelivery.attributes["messaging.rabbitmq.redelivered"],
        "true"
    );
    assert_eq!(redelivery.attributes["orderflow.order_id"], order_id);
    // The redelivery's parent is the span that published the checkout (from its header).
    let intake = ours
        .iter()
        .find(|s| s.name == "intake")
        .expect("intake span");
    assert_eq!(redelivery.parent, intake.id);
    assert_eq!(intake.parent, server.id);
    // The first process decided it: its hold and its one write are in the same trace.
    let first_names = names(
        &ours
            .iter()
            .copied()
            .filter(|s| s.process == "orderflow-a")
            .collect::<Vec<_>>(),
    );
    for name in ["sku actor hold", "orderflow-order-writer write"] {
        assert!(first_names.contains(name), "no {name} in {first_names:?}");
    }
    // The redelivery found the decision and announced it, in the same trace.
    let announced = ours
        .iter()
        .find(|s| s.name == "order.events publish" && s.process == "orderflow-b")
        .expect("the event's publish after the redelivery");
    let mut at = announced.parent.as_str();
    while let Some(parent) = ours.iter().find(|s| s.id == at) {
        if parent.id == redelivery.id {
            break;
        }
        at = parent.parent.as_str();
    }
    assert_eq!(at, redelivery.id, "{}", dump(&ours));
    // Nothing of this order went to another trace.
    let elsewhere: Vec<&Received> = received
        .iter()
        .filter(|s| s.trace != trace)
        .filter(|s| s.attributes.values().any(|v| v == &order_id))
        .collect();
    assert!(elsewhere.is_empty(), "{elsewhere:#?}");

    // A checkout without a caller's trace starts its own, complete in one process, every span
    // a child of another of it but the root.
    let accepted = checkout(&second, "trace-2", None).await;
    let order_2 = accepted["order_id"].as_str().unwrap().to_owned();
    let received = spans_until(&spans, |all| {
        let Some(root) = all
            .iter()
            .find(|s| s.attributes.get("orderflow.order_id") == Some(&order_2))
        else {
            return false;
        };
        let mine: Vec<&Received> = all.iter().filter(|s| s.trace == root.trace).collect();
        PIPELINE.iter().all(|n| names(&mine).contains(*n))
    })
    .await;
    let trace_2 = received
        .iter()
        .find(|s| s.attributes.get("orderflow.order_id") == Some(&order_2))
        .unwrap()
        .trace
        .clone();
    assert_ne!(trace_2, trace);
    let mine: Vec<&Received> = received.iter().filter(|s| s.trace == trace_2).collect();
    println!("the trace of order {order_2}:\n{}", dump(&mine));
    let ids: BTreeSet<&str> = mine.iter().map(|s| s.id.as_str()).collect();
    let roots: Vec<&&Received> = mine
        .iter()
        .filter(|s| !ids.contains(s.parent.as_str()))
        .collect();
    assert_eq!(roots.len(), 1, "{}", dump(&mine));
    assert_eq!(roots[0].name, "POST /v1/checkout");
    assert!(roots[0].parent.is_empty() || roots[0].parent == "0000000000000000");
    let order = client
        .get(second.url(&format!("/v1/orders/{order_id}")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(order["status"], "scheduled", "{order}");
}

/// A queue of the test's own bound to `exchange` with `key`: a copy of every message published
/// there, read without acks (keep the connection as long as the consumer).
async fn tap(vhost: &TestVhost, exchange: &str, key: &str) -> (lapin::Connection, lapin::Consumer) {
    let conn = lapin::Connection::connect(&vhost.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let exclusive = lapin::options::QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("".into(), exclusive, lapin::types::FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().as_str().into(),
            exchange.into(),
            key.into(),
            lapin::options::QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let no_ack = lapin::options::BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let consumer = channel
        .basic_consume(
            queue.name().as_str().into(),
            "tap".into(),
            no_ack,
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, consumer)
}

/// What a tap holds now (until it is quiet for half a second).
async fn drain(tap: &mut lapin::Consumer) -> Vec<lapin::message::Delivery> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(
        Duration::from_millis(500),
        futures_util::StreamExt::next(tap),
    )
    .await
    {
        out.push(d);
    }
    out
}

/// A text header of a message.
fn header(d: &lapin::message::Delivery, name: &str) -> Option<String> {
    match d.properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// (trace, span) of a W3C `traceparent`.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// The messages the service published to the checkout queue, from its `/metrics`.
async fn checkout_messages(service: &Service) -> u64 {
    let text = http_client()
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find(|l| {
            l.starts_with("orderflow_queue_confirmed_total{")
                && l.contains("queue=\"orders.checkout\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no confirmed count of orders.checkout in {text}"))
}

#[actix_web::test]
async fn checkouts_that_travel_in_one_batch_keep_one_trace_each() {
    let (spans, endpoint) = receiver();
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    // One checkout publish out at a time: those arriving meanwhile go out together.
    let mut env = otlp_env(&endpoint, "orderflow-batch");
    env.push(("CHECKOUT_PUBLISHES", "1".into()));
    let service = start(&db, &vhost, &env);
    service.ready(&client).await;
    // A SKU each: every checkout's stock write is its own (one SKU's would be written once for
    // all, in one of their traces).
    let sent = 24;
    let skus: Vec<String> = (0..sent).map(|i| format!("TB-{i}")).collect();
    let stock: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 5)).collect();
    stock_up(&client, &service.base, &stock).await;
    // Copies of every checkout message and every event, to read their headers.
    let (_c1, mut checkout_tap) = tap(&vhost, "orders", "checkout").await;
    let (_c2, mut event_tap) = tap(&vhost, "order.events", "#").await;
    // Each buyer's own caller trace.
    let traces: Vec<String> = (0..sent)
        .map(|i| format!("{:032x}", 0xb0_0000 + i))
        .collect();
    let accepted = futures_util::future::join_all(traces.iter().enumerate().map(|(i, trace)| {
        let service = &service;
        async move {
            let parent = format!("00-{trace}-{:016x}-01", 0xca11e7 + i);
            let key = format!("batch-trace-{i}");
            let reply = checkout_of(service, &key, Some(&parent), &format!("TB-{i}")).await;
            reply["order_id"].as_str().unwrap().to_owned()
        }
    }))
    .await;
    let messages = checkout_messages(&service).await;
    assert!(
        messages < sent as u64,
        "{sent} checkouts went out in {messages} messages: no batch to look at"
    );
    // Every checkout's trace complete: from its request to its event.
    let received = spans_until(&spans, |all| {
        let count = |name: &str| all.iter().filter(|s| s.name == name).count();
        let batches = count("orders.checkout publish");
        batches > 0
            && count("orders.checkout receive") == batches
            && traces.iter().all(|trace| {
                let mine: Vec<&Received> = all.iter().filter(|s| &s.trace == trace).collect();
                PIPELINE.iter().all(|n| names(&mine).contains(*n))
            })
    })
    .await;
    for (trace, order_id) in traces.iter().zip(&accepted) {
        let mine: Vec<&Received> = received.iter().filter(|s| &s.trace == trace).collect();
        let one = |name: &str| -> &Received {
            let found: Vec<&&Received> = mine.iter().filter(|s| s.name == name).collect();
            assert_eq!(found.len(), 1, "{name} in {}", dump(&mine));
            found[0]
        };
        // The consumer continued this checkout's own intake span, from the batch's header.
        let (intake, process) = (one("intake"), one("orders.checkout process"));
        assert_eq!(process.parent, intake.id, "{}", dump(&mine));
        assert_eq!(
            process.attributes["orderflow.order_id"],
            *order_id,
            "{}",
            dump(&mine)
        );
        // Nothing of this order went to another checkout's trace.
        let elsewhere = received
            .iter()
            .filter(|s| &s.trace != trace)
            .filter(|s| s.attributes.values().any(|v| v == order_id))
            .count();
        assert_eq!(elsewhere, 0, "spans of {order_id} outside its trace");
    }
    let span = |trace: &str, id: &str| -> Option<&Received> {
        received.iter().find(|s| s.trace == trace && s.id == id)
    };
    let intake_of = |trace: &str| -> (String, String) {
        let s = received
            .iter()
            .find(|s| s.trace == trace && s.name == "intake")
            .unwrap();
        (s.trace.clone(), s.id.clone())
    };
    // On the wire: a batch carries its own `traceparent` (its publish) and each checkout's in
    // x-orderflow-traceparents; a checkout alone carries its own in `traceparent`.
    let mut carried = BTreeSet::new();
    let mut batches = 0;
    for message in drain(&mut checkout_tap).await {
        let own = header(&message, "traceparent").expect("a traceparent header");
        let batch = message
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.to_string())
            == Some(orderflow::messaging::checkout::BATCH_CONTENT_TYPE.to_owned());
        if !batch {
            carried.insert(ids(&own));
            continue;
        }
        batches += 1;
        let checkouts = orderflow::messaging::checkout::Batch::parse(&message.data)
            .unwrap()
            .checkouts
            .len();
        let headers = message.properties.headers().clone().unwrap();
        let Some(lapin::types::AMQPValue::FieldArray(each)) =
            headers.inner().get("x-orderflow-traceparents")
        else {
            panic!("a batch without its checkouts' traces: {headers:?}");
        };
        assert_eq!(each.as_slice().len(), checkouts);
        let each: BTreeSet<(String, String)> = each
            .as_slice()
            .iter()
            .map(|t| match t {
                lapin::types::AMQPValue::LongString(t) => ids(&t.to_string()),
                other => panic!("{other:?}"),
            })
            .collect();
        // The batch's publish span links to each checkout's intake span; its receive span
        // continues the batch's header; each checkout's handling links to that receive.
        let (trace, id) = ids(&own);
        let publish = span(&trace, &id).expect("the batch's publish span");
        assert_eq!(publish.name, "orders.checkout publish");
        let links: BTreeSet<(String, String)> = publish.links.iter().cloned().collect();
        assert_eq!(
            links, each,
            "the publish links to every checkout it carried"
        );
        let receive = received
            .iter()
            .find(|s| s.trace == trace && s.parent == id && s.name == "orders.checkout receive")
            .expect("the batch's receive span, a child of its publish");
        for (t, _) in &each {
            let process = received
                .iter()
                .find(|s| &s.trace == t && s.name == "orders.checkout process")
                .unwrap();
            assert!(
                process.links.contains(&(trace.clone(), receive.id.clone())),
                "{process:?} does not link to its batch"
            );
        }
        carried.extend(each);
    }
    assert!(batches > 0, "no batch on the wire");
    let intakes: BTreeSet<(String, String)> = traces.iter().map(|t| intake_of(t)).collect();
    assert_eq!(carried, intakes, "every checkout's intake span on the wire");
    // Every event carries its order's trace.
    let trace_of: HashMap<&str, &str> = accepted
        .iter()
        .map(String::as_str)
        .zip(traces.iter().map(String::as_str))
        .collect();
    let events = drain(&mut event_tap).await;
    assert!(events.len() >= sent, "{} events", events.len());
    for event in &events {
        let body: Value = serde_json::from_slice(&event.data).unwrap();
        let order = body["order_id"].as_str().unwrap();
        let (trace, _) = ids(&header(event, "traceparent").expect("an event's traceparent"));
        assert_eq!(trace, trace_of[order], "{} of {order}", event.routing_key);
    }
    println!(
        "{sent} checkouts in {messages} messages; the trace of order {}:\n{}",
        accepted[0],
        dump(
            &received
                .iter()
                .filter(|s| s.trace == traces[0])
                .collect::<Vec<_>>()
        )
    );
}

#[actix_web::test]
async fn a_message_that_came_without_a_trace_keeps_the_one_it_started_in_its_copy() {
    let (spans, endpoint) = receiver();
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let service = start(&db, &vhost, &otlp_env(&endpoint, "orderflow-copies"));
    service.ready(&client).await;
    // Another system's message, with no trace, that is no checkout: dead-lettered.
    let conn = lapin::Connection::connect(&vhost.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
        .basic_publish(
            "orders".into(),
            "checkout".into(),
            lapin::options::BasicPublishOptions::default(),
            b"not a checkout",
            lapin::BasicProperties::default().with_message_id("untraced-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let received = spans_until(&spans, |all| {
        all.iter().any(|s| {
            s.name == "orders.checkout process"
                && s.attributes.get("messaging.message.id").map(String::as_str)
                    == Some("untraced-1")
        })
    })
    .await;
    let process = received
        .iter()
        .find(|s| {
            s.name == "orders.checkout process"
                && s.attributes.get("messaging.message.id").map(String::as_str)
                    == Some("untraced-1")
        })
        .unwrap();
    // Its dead letter carries the trace its handling started: whoever replays it continues it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let letter = loop {
        let got = channel
            .basic_get(
                "orders.checkout.dead".into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if let Some(letter) = got {
            break letter.delivery;
        }
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let traceparent = header(&letter, "traceparent").expect("the dead letter's traceparent");
    assert_eq!(
        ids(&traceparent),
        (process.trace.clone(), process.id.clone())
    );
}

#[actix_web::test]
async fn a_cancel_continues_the_callers_trace_to_its_event() {
    let (spans, endpoint) = receiver();
    let db = TestDb::new();
    let vhost = TestVhost::new();
    let client = http_client();
    let service = start(&db, &vhost, &otlp_env(&endpoint, "orderflow-cancel"));
    service.ready(&client).await;
    stock_up(&client, &service.base, &[("TR-1", 10)]).await;
    let accepted = checkout(&service, "cancel-trace-1", None).await;
    let order_id = accepted["order_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut r = client
            .get(service.url(&format!("/v1/orders/{order_id}")))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 && r.json::<Value>().await.unwrap()["status"] == "scheduled" {
            break;
        }
        assert!(Instant::now() < deadline, "never scheduled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (trace, caller) = ("5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e", "0ddba11c0ddba11c");
    let resp = client
        .post(service.url(&format!("/v1/orders/{order_id}/cancel")))
        .insert_header(("traceparent", format!("00-{trace}-{caller}-01")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let received = spans_until(&spans, |all| {
        let mine: Vec<&Received> = all.iter().filter(|s| s.trace == trace).collect();
        let names = names(&mine);
        names.contains("order.events publish")
            && names.contains("POST /v1/orders/{order_id}/cancel")
    })
    .await;
    let mine: Vec<&Received> = received.iter().filter(|s| s.trace == trace).collect();
    println!("the trace of the cancel of {order_id}:\n{}", dump(&mine));
    let request = mine
        .iter()
        .find(|s| s.name == "POST /v1/orders/{order_id}/cancel")
        .expect("the cancel's span");
    assert_eq!(request.parent, caller);
    assert_eq!(request.attributes["orderflow.order_id"], order_id);
}
