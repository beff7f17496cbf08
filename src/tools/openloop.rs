//! `orderflow loadgen --rate N --duration S [--then RATE:SECONDS …]`: an open-loop load. Checkouts
//! arrive at a fixed rate whatever the service answers — a closed loop (N customers each waiting
//! for the last answer) slows down with the service and hides overload. A 503 is retried after
//! its `Retry-After`, like a polite client (each retry is more offered load). Each phase reports
//! offered, admitted, shed and decided per second, accept → decided percentiles (an HDR
//! histogram, from the 202 to the `order.events` announcement), the checkout queue's peak depth
//! and — after an overloaded phase — how long admission took to reopen. The run ends with the
//! consistency check: every accepted order decided, sold = stock taken.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use uuid::Uuid;

use super::arrivals::{one_checkout, PhaseStats, Shared};
use super::loadgen::{next_sku, order_status, reserved_of, setup, watch, LoadgenConfig};
use super::queues::{print_timeline, queue_state};

pub use super::phases::{parse_phase, Phase};

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Runs the phases and prints the report.
pub async fn run(c: LoadgenConfig, phases: Vec<Phase>) -> Result<(), String> {
    let total: f64 = phases.iter().map(|p| p.rate * p.seconds).sum();
    let mut c = c;
    c.orders = (total.ceil() as u32).max(1);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .connector(awc::Connector::new().limit(c.customers as usize))
        .finish();
    let ceiling = super::costs::probe_first(&c).await?;
    if c.setup {
        setup(&client, &c).await?;
    }
    let (decided, skus_used, before) = watch(&client, &c).await?;
    let shared_config = Rc::new(c.clone());

    let shared = Rc::new(RefCell::new(Shared {
        phases: phases.iter().map(|_| PhaseStats::default()).collect(),
        accepted: Vec::new(),
        offered: Vec::new(),
        answers: Vec::new(),
        in_flight: 0,
        peak_in_flight: 0,
        timeline: Vec::new(),
    }));
    let current = Rc::new(std::cell::Cell::new(0usize));
    let done = Rc::new(std::cell::Cell::new(false));
    // The queue watcher: peak depth per phase, and when admission reopened.
    let watcher = {
        let (client, url, shared, current, done) = (
            client.clone(),
            c.url.clone(),
            Rc::clone(&shared),
            Rc::clone(&current),
            Rc::clone(&done),
        );
        let starts: Rc<RefCell<Vec<Instant>>> = Rc::default();
        let starts_w = Rc::clone(&starts);
        let handle = actix_web::rt::spawn(async move {
            while !done.get() {
                if let Some(q) = queue_state(&client, &url).await {
                    let phase = current.get();
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
        (handle, starts)
    };

    let run_id = Uuid::new_v4().simple().to_string();
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut n = 0u64;
    let started = Instant::now();
    let work_from = super::work::read(&client, &c.url, &c.database_url, false).await;
    let cpu_from = super::cpu::read();
    let mut phase_starts = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        current.set(i);
        let start = Instant::now();
        phase_starts.push(start);
        watcher.1.borrow_mut().push(start);
        let shedding = queue_state(&client, &c.url)
            .await
            .is_some_and(|q| q.shedding);
        if let Some(stats) = shared.borrow_mut().phases.get_mut(i) {
            stats.shedding_at_start = shedding;
        }
        let count = (phase.rate * phase.seconds).round() as u64;
        for k in 0..count {
            let due = start + Duration::from_secs_f64(k as f64 / phase.rate);
            tokio::time::sleep_until(due.into()).await;
            let sku = next_sku(&mut rng, &c);
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
                Rc::clone(&shared_config),
                Rc::clone(&shared),
                i,
                key,
                sku,
            ));
        }
    }
    let sending = started.elapsed();
    // Retries still pending finish (at most `arrivals::ATTEMPTS` × Retry-After), then everything accepted
    // must be decided.
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
    let cpu_used = cpu_from.until(&super::cpu::read());
    // Checkouts accepted without the client hearing it (its answer timed out) are decided too:
    // the queue runs empty first.
    let mut empty = 0;
    while empty < 3 && Instant::now() < wait_until + Duration::from_secs(60) {
        empty = match queue_state(&client, &c.url).await {
            Some(q) if q.depth == 0 => empty + 1,
            _ => 0,
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every decision's event is on `order.events` before its checkout leaves the queue; this
    // client may still be reading them: until a second passes with none new.
    let mut seen_events = decided.len();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now_seen = decided.len();
        if now_seen == seen_events {
            break;
        }
        seen_events = now_seen;
    }
    done.set(true);
    let _ = watcher.0.await;

    // Checkouts whose announcement this client did not receive (accepted, or never answered
    // 202 yet accepted — a retry shed while the first copy was being decided): asked directly.
    // Their decision time is unknown, so they count for the books, not for the latencies.
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
            let (client, c) = (client.clone(), Rc::clone(&shared_config));
            async move { order_status(&client, &c, &id).await.map(|s| (id, s)) }
        })
        .buffer_unordered(32)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let mut late = std::collections::HashSet::new();
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
    let mut failed: Vec<String> = Vec::new();
    if !late.is_empty() {
        failed.push(format!(
            "{} decided orders had no event on order.events",
            late.len()
        ));
    }
    let s = {
        let mut b = shared.borrow_mut();
        Shared {
            phases: std::mem::take(&mut b.phases),
            timeline: std::mem::take(&mut b.timeline),
            accepted: std::mem::take(&mut b.accepted),
            offered: std::mem::take(&mut b.offered),
            answers: std::mem::take(&mut b.answers),
            in_flight: b.in_flight,
            peak_in_flight: b.peak_in_flight,
        }
    };
    // 1 µs … 1 h, 3 significant digits.
    let proto: Histogram<u64> =
        Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
    let mut latency: Vec<Histogram<u64>> = phases.iter().map(|_| proto.clone()).collect();
    let mut all = proto.clone();
    let mut decided_in: Vec<u64> = vec![0; phases.len()];
    let mut undecided = 0u64;
    let mut sold: HashMap<String, i64> = HashMap::new();
    let mut outcome: BTreeMap<String, u64> = BTreeMap::new();
    // What was sold, from the decisions themselves: a checkout whose 202 never arrived (a
    // time-out, then a 503 on every retry) may still have been accepted.
    let seen: std::collections::HashSet<&String> = s.accepted.iter().map(|a| &a.0).collect();
    let mut unseen_accepts = 0u64;
    for (id, sku) in &s.offered {
        if let Some(d) = decided.get(id) {
            if d.value().1 == "scheduled" {
                *sold.entry(sku.clone()).or_default() += 1;
            }
            if !seen.contains(id) {
                unseen_accepts += 1;
            }
        }
    }
    for (id, phase, at, _sku) in &s.accepted {
        let Some(d) = decided.get(id) else {
            undecided += 1;
            continue;
        };
        let (when, status) = d.value();
        if late.contains(id) {
            *outcome.entry(status.clone()).or_default() += 1;
            continue;
        }
        let micros = u64::try_from(when.saturating_duration_since(*at).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(h) = latency.get_mut(*phase) {
            h.saturating_record(micros);
        }
        all.saturating_record(micros);
        if let Some(count) = decided_in.get_mut(*phase) {
            *count += 1;
        }
        *outcome.entry(status.clone()).or_default() += 1;
    }
    println!(
        "open loop: {} phases, {:.1} s of arrivals, {} checkouts offered, hot share {:.0}%, peak requests in flight {}",
        phases.len(),
        sending.as_secs_f64(),
        n,
        c.hot_share * 100.0,
        s.peak_in_flight
    );
    let decisions: Vec<Instant> = s
        .offered
        .iter()
        .filter_map(|(id, _)| decided.get(id).map(|d| d.value().0))
        .collect();
    for (i, (phase, stats)) in phases.iter().zip(&s.phases).enumerate() {
        let h = latency.get(i).cloned().unwrap_or_else(|| proto.clone());
        let secs = phase.seconds;
        // Wall-clock rates while the phase ran (retries of earlier arrivals included).
        let from = phase_starts.get(i).copied().unwrap_or(started);
        let to = phase_starts
            .get(i + 1)
            .copied()
            .unwrap_or(started + sending);
        let window = to.saturating_duration_since(from).as_secs_f64().max(1e-9);
        let within = |t: &Instant| *t >= from && *t < to;
        let count = |codes: &[u16]| {
            s.answers
                .iter()
                .filter(|(t, c)| within(t) && codes.contains(c))
                .count() as f64
                / window
        };
        let decided_rate = decisions.iter().filter(|t| within(t)).count() as f64 / window;
        let last_shed = s
            .answers
            .iter()
            .filter(|(t, c)| within(t) && *c == 503)
            .map(|(t, _)| t.saturating_duration_since(from).as_secs_f64())
            .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.max(t))));
        println!(
            "phase {} while it ran: 202 {:.0}/s, 503 {:.0}/s, 409 {:.0}/s, no answer {:.0}/s, decided {:.0}/s; last 503 {}",
            i + 1,
            count(&[202, 200]),
            count(&[503]),
            count(&[409]),
            count(&[0]),
            decided_rate,
            last_shed.map_or("none".into(), |t| format!("{t:.1} s after the phase began"))
        );
        println!(
            "  its arrivals @ {:.0}/s for {:.0} s: offered {:.0}/s ({} not sent: {} requests already in flight); over their retries: requests {}, admitted {}, shed {} (503 without Retry-After: {}), other answers {:?}",
            phase.rate,
            secs,
            stats.offered as f64 / secs,
            stats.client_dropped,
            c.customers,
            stats.requests,
            stats.admitted,
            stats.shed,
            stats.shed_without_retry_after,
            stats.other
        );
        println!(
            "  decided {} of {} admitted; accept→decided p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms  max {:.0} ms; queue peak depth {}{}",
            decided_in.get(i).copied().unwrap_or(0),
            stats.admitted,
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.95)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
            stats.peak_depth,
            match (stats.shedding_at_start, stats.reopened_after) {
                (true, Some(t)) => format!("; shedding when it began, admission reopened after {t:.1} s"),
                (true, None) => "; shedding when it began, admission did NOT reopen".into(),
                _ => String::new(),
            }
        );
        if !stats.shed_answer_us.is_empty() {
            let mut t = stats.shed_answer_us.clone();
            t.sort_unstable();
            let at = |q: f64| {
                let i = ((t.len() - 1) as f64 * q).round() as usize;
                ms(t.get(i).copied().unwrap_or(0))
            };
            println!(
                "  503 answered in p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                at(0.5),
                at(0.99),
                ms(t.last().copied().unwrap_or(0))
            );
        }
        let seen = super::expect::PhaseSeen {
            rate: phase.rate,
            slower_than_before: i > 0 && phases.get(i - 1).is_some_and(|p| p.rate > phase.rate),
            decided_per_s: decided_rate,
            p99_ms: ms(h.value_at_quantile(0.99)),
            last_shed_s: last_shed,
            shed_without_retry_after: stats.shed_without_retry_after,
        };
        failed.extend(super::expect::phase_failures(&c.expect(), i + 1, &seen));
    }
    if c.timeline {
        print_timeline(started, &phase_starts, &s.timeline, &s.answers, &decisions);
    }
    let decided_total: u64 = decided_in.iter().sum();
    println!(
        "all: decided {} ({}), accept→decided p99 {:.0} ms max {:.0} ms",
        decided_total,
        outcome
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        ms(all.value_at_quantile(0.99)),
        ms(all.max())
    );
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
    // A rejected order's decision is announced before its held stock is released (decisions
    // are written first): the books balance once the releases are through.
    let mut taken_total = 0i64;
    let mut taken_ok = false;
    for _ in 0..20 {
        taken_total = 0;
        taken_ok = true;
        for sku in &skus_used {
            let after = reserved_of(&client, &c.url, sku).await.unwrap_or(-1);
            let taken = after - before.get(sku).copied().unwrap_or(0);
            taken_total += taken;
            taken_ok &= taken == sold.get(sku).copied().unwrap_or(0);
        }
        if taken_ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sold_total: i64 = sold.values().sum();
    println!("decided without a 202 seen by this client (its answer timed out): {unseen_accepts}");
    println!(
        "consistency      sold {sold_total} = stock taken {taken_total}: {}; accepted and undecided {undecided}: {}",
        if taken_ok { "ok" } else { "MISMATCH" },
        if undecided == 0 { "ok" } else { "NOT OK" }
    );
    if !taken_ok || undecided > 0 {
        failed.push("consistency check failed".into());
    }
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    Ok(())
}
