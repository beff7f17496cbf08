//! `orderflow loadgen`: drives a running service over HTTP with N concurrent customers and a
//! configurable share of orders on one hot SKU, times every decision through the `order.events`
//! exchange, and ends with a consistency check (sold = stock taken, nothing undecided).
//!
//! Its requests go only to the URL it is given (a local service); its loops are bounded by
//! `--orders` and by a deadline.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::join_all;
use uuid::Uuid;

pub use super::args::LoadgenConfig;
use super::driving::{
    checkout_body, http_client, next_sku, send_checkout, setup, stock_taken, token_for, watch,
};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).or(sorted.last()).copied().unwrap_or(f64::NAN)
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&v, 0.50),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

/// What became of the accepted orders, from the decisions `order.events` announced.
struct Tally {
    /// Accept→decided, ms, one per decided order.
    to_decision: Vec<f64>,
    /// Decided orders by status.
    outcome: HashMap<String, usize>,
    /// Units sold (scheduled orders) per SKU.
    sold: HashMap<String, i64>,
    undecided: usize,
    /// The last decision (`started` when there is none).
    last: Instant,
}

impl Tally {
    fn of(
        accepted: &[(String, Instant, String)],
        decided: &DashMap<String, (Instant, String)>,
        started: Instant,
    ) -> Tally {
        let mut t = Tally {
            to_decision: Vec::with_capacity(accepted.len()),
            outcome: HashMap::new(),
            sold: HashMap::new(),
            undecided: 0,
            last: started,
        };
        for (id, at, sku) in accepted {
            match decided.get(id) {
                Some(d) => {
                    let (when, status) = d.value();
                    t.to_decision
                        .push(when.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                    *t.outcome.entry(status.clone()).or_default() += 1;
                    if status == "scheduled" {
                        *t.sold.entry(sku.clone()).or_default() += 1;
                    }
                    t.last = t.last.max(*when);
                }
                None => t.undecided += 1,
            }
        }
        t
    }
}

/// The intake answers by status code, `0` as "no answer".
fn answers_line(statuses: &HashMap<u16, usize>) -> String {
    let mut codes: Vec<_> = statuses.iter().map(|(k, v)| (*k, *v)).collect();
    codes.sort();
    codes
        .iter()
        .map(|(k, v)| match k {
            0 => format!("no answer: {v}"),
            k => format!("{k}: {v}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits (at most `patience`) until every accepted order's decision was announced.
async fn wait_for_decisions(
    accepted: &[(String, Instant, String)],
    decided: &DashMap<String, (Instant, String)>,
    patience: Duration,
) {
    let until = Instant::now() + patience;
    while accepted.iter().any(|(id, _, _)| !decided.contains_key(id)) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets the run's products and stock up, and says how long it took.
async fn timed_setup(client: &awc::Client, c: &LoadgenConfig) -> Result<(), String> {
    let t = Instant::now();
    setup(client, c).await?;
    println!(
        "setup: LG-HOT stock {} and {} other SKUs in {:.1} s",
        c.hot_stock(),
        if c.hot_share < 1.0 { c.skus } else { 0 },
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The intake side of the report: orders and requests sent, the answers, accepted/s.
fn print_intake(shared: &Customers, sending: Duration, accepted: usize) {
    let c = &shared.c;
    println!(
        "orders sent      {} ({} requests with retries) in {:.2} s by {} customers, hot share {:.0}%",
        (c.orders as usize).min(*shared.next.borrow()),
        shared.intake_ms.borrow().len(),
        sending.as_secs_f64(),
        c.customers,
        c.hot_share * 100.0
    );
    println!(
        "intake answers   {}",
        answers_line(&shared.statuses.borrow())
    );
    println!(
        "accepted/s       {:.0}",
        accepted as f64 / sending.as_secs_f64().max(1e-9)
    );
}

/// What the run's customers share: where to send, what they count.
struct Customers {
    client: awc::Client,
    c: LoadgenConfig,
    run_id: String,
    deadline: Instant,
    /// Orders sent so far (each customer takes the next number).
    next: RefCell<usize>,
    /// Intake latencies, ms, one per request (retries included).
    intake_ms: RefCell<Vec<f64>>,
    /// `(buyer, accepted at, sku)` of each accepted checkout.
    accepted: RefCell<Vec<(String, Instant, String)>>,
    /// Intake answers by status code (`0`: none).
    statuses: RefCell<HashMap<u16, usize>>,
}

/// Customer `w` of the closed loop: checkouts one after another (a 503 waits what
/// `Retry-After` says and tries again) until the run's orders are all sent or its deadline.
async fn customer(s: Rc<Customers>, w: usize) {
    let Customers {
        client,
        c,
        run_id,
        next,
        intake_ms,
        accepted,
        statuses,
        ..
    } = &*s;
    let deadline = s.deadline;
    let mut rng: u64 = 0x9E37_79B9 ^ (w as u64 + 1).wrapping_mul(0x5851_F42D_4C95_7F2D);
    loop {
        let i = {
            let mut n = next.borrow_mut();
            if *n >= c.orders as usize || Instant::now() > deadline {
                return;
            }
            *n += 1;
            *n
        };
        let sku = next_sku(&mut rng, c);
        let key = format!("lg-{run_id}-{i}");
        let buyer = key.clone();
        let token = token_for(c, &buyer);
        // Like a real client: on 503, wait what Retry-After says and send it again.
        for _attempt in 0..30 {
            let t = Instant::now();
            let body = checkout_body(&buyer, &sku);
            let (code, retry_after) = send_checkout(client, &c.url, &key, &token, &body).await;
            intake_ms
                .borrow_mut()
                .push(t.elapsed().as_secs_f64() * 1000.0);
            *statuses.borrow_mut().entry(code).or_default() += 1;
            if code == 202 || code == 200 {
                accepted
                    .borrow_mut()
                    .push((buyer.clone(), Instant::now(), sku.clone()));
            }
            if code != 503 && code != 0 {
                break;
            }
            let wait = retry_after.map_or(Duration::from_millis(200), Duration::from_secs);
            tokio::time::sleep(wait).await;
        }
    }
}

/// Runs the load and prints the report.
pub async fn run(c: LoadgenConfig) -> Result<(), String> {
    // A connection for every customer, and a few more.
    let client = http_client((c.customers as usize + 8).max(40));
    let ceiling = super::costs::probe_first(&c).await?;
    if c.setup {
        timed_setup(&client, &c).await?;
    }
    let (decided, skus_used, before) = watch(&client, &c).await?;

    let run_id = Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let work_from = super::work::read(&client, &c.url, &c.database_url, false).await;
    let cpu_from = super::cpu::read();
    let shared = Rc::new(Customers {
        client: client.clone(),
        c: c.clone(),
        run_id,
        deadline: started + Duration::from_secs(600),
        next: RefCell::new(0),
        intake_ms: RefCell::default(),
        accepted: RefCell::default(),
        statuses: RefCell::default(),
    });
    let workers = (0..c.customers as usize).map(|w| customer(Rc::clone(&shared), w));
    join_all(workers).await;
    let sending = started.elapsed();
    let accepted = shared.accepted.borrow().clone();
    wait_for_decisions(&accepted, &decided, Duration::from_secs(60)).await;
    let cpu_to = super::cpu::read();
    let Tally {
        to_decision,
        outcome,
        sold,
        undecided,
        last,
    } = Tally::of(&accepted, &decided, started);
    let (taken_ok, taken_total) = stock_taken(&client, &c.url, &skus_used, &before, &sold).await;
    let sold_total: i64 = sold.values().sum();
    let decided_n = to_decision.len();
    let span = last
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    print_intake(&shared, sending, accepted.len());
    println!(
        "decided/s        {:.0}  ({decided_n} decided: {})",
        decided_n as f64 / span,
        outcome
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "intake latency   {}",
        summary(shared.intake_ms.borrow().clone())
    );
    println!("accept→decided   {}", summary(to_decision));
    super::costs::report(
        ceiling.as_ref(),
        &cpu_from.until(&cpu_to),
        decided_n as u64,
        decided_n as f64 / span,
    );
    if let Some(before) = work_from {
        if let Some(after) = super::work::read(&client, &c.url, &c.database_url, true).await {
            super::work::report(&before, &after, decided_n as u64);
        }
    }
    println!(
        "consistency      sold {sold_total} = stock taken {taken_total}: {}; undecided {undecided}: {}",
        if taken_ok && sold_total == taken_total { "ok" } else { "MISMATCH" },
        if undecided == 0 { "ok" } else { "NOT OK" }
    );
    if !(taken_ok && undecided == 0) {
        return Err("consistency check failed".into());
    }
    Ok(())
}
