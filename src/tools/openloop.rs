//! `orderflow loadgen --rate N --duration S [--then RATE:SECONDS …]`: an open-loop load. Checkouts
//! arrive at a fixed rate whatever the service answers — a closed loop (N customers each waiting
//! for the last answer) slows down with the service and hides overload. A 503 is retried after
//! its `Retry-After`, like a polite client (each retry is more offered load), unless it would
//! land after the last phase (the client gives up, counted: the run ends). Each phase reports
//! offered, admitted, shed and decided per second, accept → decided percentiles (an HDR
//! histogram, from the 202 to the `order.events` announcement), the checkout queue's peak depth
//! and — after an overloaded phase — how long admission took to reopen. The run ends with the
//! consistency check: every accepted order decided, sold = stock taken.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use uuid::Uuid;

use super::arrivals::{one_checkout, Shared};
use super::driving::{next_sku, order_status, setup, stock_taken, watch, Decided};
use super::loadgen::LoadgenConfig;
use super::open_report::{take_shared, Report, Tally};
use super::queues::queue_state;

pub use super::phases::{parse_phase, Phase};

/// Runs the phases and prints the report.
pub async fn run(c: LoadgenConfig, phases: Vec<Phase>) -> Result<(), String> {
    let total: f64 = phases.iter().map(|p| p.rate * p.seconds).sum();
    let mut c = c;
    c.orders = (total.ceil() as u32).max(1);
    let client = super::driving::http_client(c.customers as usize);
    let ceiling = super::costs::probe_first(&c).await?;
    if c.setup {
        setup(&client, &c).await?;
    }
    let (decided, skus_used, before) = watch(&client, &c).await?;
    let config = Rc::new(c.clone());
    let shared = Rc::new(RefCell::new(Shared::for_phases(phases.len())));
    let watcher = QueueWatcher::start(&client, &c.url, &shared);

    // The run's clock starts before the readings, as the timeline's second 0.
    let started = Instant::now();
    let work_from = super::work::read(&client, &c.url, &c.database_url, false).await;
    let cpu_from = super::cpu::read();
    let sent = send_arrivals(&client, &config, &phases, &shared, &watcher, started).await;
    let wait_until = wait_for_decisions(&shared, &decided).await;
    let cpu_used = cpu_from.until(&super::cpu::read());
    wait_until_quiet(&client, &c.url, &decided, wait_until).await;
    watcher.stop().await;

    let late = ask_unannounced(&client, &config, &shared, &decided).await;
    let mut failed: Vec<String> = Vec::new();
    if !late.is_empty() {
        failed.push(format!(
            "{} decided orders had no event on order.events",
            late.len()
        ));
    }
    let s = take_shared(&shared);
    let t = Tally::of(&s, &decided, &late, phases.len())?;
    println!(
        "open loop: {} phases, {:.1} s of arrivals, {} checkouts offered, hot share {:.0}%, peak requests in flight {}",
        phases.len(),
        sent.sending.as_secs_f64(),
        sent.n,
        c.hot_share * 100.0,
        s.peak_in_flight
    );
    let decisions: Vec<Instant> = s
        .offered
        .iter()
        .filter_map(|(id, _)| decided.get(id).map(|d| d.value().0))
        .collect();
    let report = Report {
        t: &t,
        s: &s,
        decisions: &decisions,
        sent: &sent,
        c: &c,
    };
    failed.extend(report.phases(&phases));
    let decided_total = t.print_all();
    // Arrivals pace an open loop: the decided rate here is over the whole window, from the
    // first arrival until everything accepted was decided.
    super::costs::report(
        ceiling.as_ref(),
        &cpu_used,
        decided_total,
        decided_total as f64 / cpu_used.seconds.max(1e-9),
    );
    if let Some(before) = work_from {
        if let Some(after) = super::work::read(&client, &c.url, &c.database_url, true).await {
            super::work::report(&before, &after, decided_total);
        }
    }
    if !books(&client, &c.url, &skus_used, &before, &t).await {
        failed.push("consistency check failed".into());
    }
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    Ok(())
}

/// Polls `/v1/queues` every quarter second while the run lasts: the timeline, each phase's
/// peak depth, and when admission reopened after a phase that began shedding.
struct QueueWatcher {
    current: Rc<Cell<usize>>,
    starts: Rc<RefCell<Vec<Instant>>>,
    done: Rc<Cell<bool>>,
    handle: actix_web::rt::task::JoinHandle<()>,
}

impl QueueWatcher {
    fn start(client: &awc::Client, url: &str, shared: &Rc<RefCell<Shared>>) -> QueueWatcher {
        let current = Rc::new(Cell::new(0usize));
        let done = Rc::new(Cell::new(false));
        let starts: Rc<RefCell<Vec<Instant>>> = Rc::default();
        let (client, url, shared) = (client.clone(), url.to_owned(), Rc::clone(shared));
        let (current_w, done_w, starts_w) =
            (Rc::clone(&current), Rc::clone(&done), Rc::clone(&starts));
        let handle = actix_web::rt::spawn(async move {
            while !done_w.get() {
                if let Some(q) = queue_state(&client, &url).await {
                    let phase = current_w.get();
                    let started = starts_w.borrow().get(phase).copied();
                    let mut s = shared.borrow_mut();
                    s.timeline.push((Instant::now(), q));
                    if let Some(stats) = s.phases.get_mut(phase) {
                        stats.peak_depth = stats.peak_depth.max(q.depth);
                        if stats.shedding_at_start && !q.shedding && stats.reopened_after.is_none()
                        {
                            stats.reopened_after = started.map(|t| t.elapsed().as_secs_f64());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        QueueWatcher {
            current,
            starts,
            done,
            handle,
        }
    }

    fn begin_phase(&self, i: usize, start: Instant) {
        self.current.set(i);
        self.starts.borrow_mut().push(start);
    }

    async fn stop(self) {
        self.done.set(true);
        let _ = self.handle.await;
    }
}

/// What the arrivals were: how many, when they began and how long sending took.
pub(super) struct Sent {
    pub(super) n: u64,
    pub(super) started: Instant,
    pub(super) sending: Duration,
    pub(super) phase_starts: Vec<Instant>,
}

/// Sends every phase's arrivals at its rate, each its own task; an arrival finding
/// `--customers` requests in flight is dropped (counted), not queued.
async fn send_arrivals(
    client: &awc::Client,
    c: &Rc<LoadgenConfig>,
    phases: &[Phase],
    shared: &Rc<RefCell<Shared>>,
    watcher: &QueueWatcher,
    started: Instant,
) -> Sent {
    let run_id = Uuid::new_v4().simple().to_string();
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut n = 0u64;
    let mut phase_starts = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        let start = Instant::now();
        phase_starts.push(start);
        if i == 0 {
            let seconds: f64 = phases.iter().map(|p| p.seconds).sum();
            shared.borrow_mut().retry_until = Some(start + Duration::from_secs_f64(seconds));
        }
        watcher.begin_phase(i, start);
        let shedding = queue_state(client, &c.url)
            .await
            .is_some_and(|q| q.shedding);
        if let Some(stats) = shared.borrow_mut().phases.get_mut(i) {
            stats.shedding_at_start = shedding;
        }
        let count = (phase.rate * phase.seconds).round() as u64;
        for k in 0..count {
            let due = start + Duration::from_secs_f64(k as f64 / phase.rate);
            tokio::time::sleep_until(due.into()).await;
            let sku = next_sku(&mut rng, c);
            n += 1;
            let key = format!("ol-{run_id}-{n}");
            {
                let mut s = shared.borrow_mut();
                if s.in_flight >= u64::from(c.customers) {
                    if let Some(stats) = s.phases.get_mut(i) {
                        stats.client_dropped += 1;
                    }
                    continue;
                }
                s.offered.push((key.clone(), sku.clone()));
                if let Some(stats) = s.phases.get_mut(i) {
                    stats.offered += 1;
                }
            }
            actix_web::rt::spawn(one_checkout(
                client.clone(),
                Rc::clone(c),
                Rc::clone(shared),
                i,
                key,
                sku,
            ));
        }
    }
    Sent {
        n,
        started,
        sending: started.elapsed(),
        phase_starts,
    }
}

/// Waits until no retry can be sent any more (the last phase's end: a later one gives up) and
/// none is in flight, then for every accepted checkout's decision; returns the deadline it
/// waited to.
async fn wait_for_decisions(shared: &Rc<RefCell<Shared>>, decided: &Decided) -> Instant {
    let retry_until = shared.borrow().retry_until;
    if let Some(until) = retry_until {
        tokio::time::sleep_until(until.into()).await;
    }
    let settle_until = Instant::now() + Duration::from_secs(120);
    while shared.borrow().in_flight > 0 && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wait_until = Instant::now() + Duration::from_secs(90);
    loop {
        let pending = shared
            .borrow()
            .accepted
            .iter()
            .filter(|(id, ..)| !decided.contains_key(id))
            .count();
        if pending == 0 || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until
}

/// Checkouts accepted without the client hearing it (its answer timed out) are decided too:
/// the queue runs empty first. Every decision's event is on `order.events` before its checkout
/// leaves the queue; this client may still be reading them: until a second passes with none new.
async fn wait_until_quiet(client: &awc::Client, url: &str, decided: &Decided, wait_until: Instant) {
    let mut empty = 0;
    while empty < 3 && Instant::now() < wait_until + Duration::from_secs(60) {
        empty = match queue_state(client, url).await {
            Some(q) if q.depth == 0 => empty + 1,
            _ => 0,
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut seen_events = decided.len();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now_seen = decided.len();
        if now_seen == seen_events {
            break;
        }
        seen_events = now_seen;
    }
}

/// Checkouts whose announcement this client did not receive (accepted, or never answered 202
/// yet accepted — a retry shed while the first copy was being decided): asked directly. Their
/// decision time is unknown, so they count for the books, not for the latencies. Returns the
/// decided ones, which are also entered in `decided`.
async fn ask_unannounced(
    client: &awc::Client,
    c: &Rc<LoadgenConfig>,
    shared: &Rc<RefCell<Shared>>,
    decided: &Decided,
) -> HashSet<String> {
    let missing: Vec<String> = shared
        .borrow()
        .offered
        .iter()
        .map(|a| a.0.clone())
        .filter(|id| !decided.contains_key(id))
        .collect();
    let asked = missing.len();
    let found: Vec<(String, String)> = futures_util::stream::iter(missing)
        .map(|id| {
            let (client, c) = (client.clone(), Rc::clone(c));
            async move { order_status(&client, &c, &id).await.map(|s| (id, s)) }
        })
        .buffer_unordered(32)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let mut late = HashSet::new();
    for (id, status) in found {
        if ["scheduled", "rejected", "failed", "cancelled"].contains(&status.as_str()) {
            late.insert(id.clone());
            decided.insert(id, (Instant::now(), status));
        }
    }
    println!(
        "asked the service for {asked} checkouts without an announcement seen: {} decided — decision events missing: {}",
        late.len(),
        late.len()
    );
    late
}

/// The books: each SKU's stock taken against what the decisions sold, and every accepted
/// checkout decided; printed, and whether they balance. A rejected order's decision is
/// announced before its held stock is released (decisions are written first): the books
/// balance once the releases are through, so this asks again for 10 s at most.
async fn books(
    client: &awc::Client,
    url: &str,
    skus_used: &[String],
    before: &HashMap<String, i64>,
    t: &Tally,
) -> bool {
    let (mut taken_ok, mut taken_total) = (false, 0);
    for _ in 0..20 {
        (taken_ok, taken_total) = stock_taken(client, url, skus_used, before, &t.sold).await;
        if taken_ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sold_total: i64 = t.sold.values().sum();
    println!(
        "decided without a 202 seen by this client (its answer timed out): {}",
        t.unseen_accepts
    );
    println!(
        "consistency      sold {sold_total} = stock taken {taken_total}: {}; accepted and undecided {}: {}",
        if taken_ok { "ok" } else { "MISMATCH" },
        t.undecided,
        if t.undecided == 0 { "ok" } else { "NOT OK" }
    );
    taken_ok && t.undecided == 0
}
