//! The work a decided order costs, counted rather than timed (issue 19): PostgreSQL's
//! transactions, rows written and the index entries they imply, from the statistics of the
//! service's database; messages published, delivered and acknowledged, from the service's own
//! counters (`/metrics`). Read before and after the load; the difference per decided order is
//! reported.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;

/// One table's writes, as PostgreSQL counts them.
#[derive(Debug, Clone, Default, QueryableByName)]
struct TableRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    relname: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    ins: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    upd: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    hot: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    del: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    indexes: i64,
}

#[derive(QueryableByName)]
struct Commits {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    commits: i64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Work {
    commits: i64,
    tables: BTreeMap<String, TableRow>,
    /// `/metrics` counters of the service, by name and labels.
    counters: BTreeMap<String, f64>,
}

fn read_database(database_url: &str) -> Result<(i64, BTreeMap<String, TableRow>), String> {
    let mut conn = PgConnection::establish(database_url).map_err(|e| e.to_string())?;
    let commits = diesel::sql_query(
        "SELECT xact_commit AS commits FROM pg_stat_database WHERE datname = current_database()",
    )
    .get_result::<Commits>(&mut conn)
    .map_err(|e| e.to_string())?
    .commits;
    let tables = diesel::sql_query(
        "SELECT t.relname::text AS relname, t.n_tup_ins AS ins, t.n_tup_upd AS upd,
                t.n_tup_hot_upd AS hot, t.n_tup_del AS del,
                (SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid) AS indexes
         FROM pg_stat_user_tables t",
    )
    .load::<TableRow>(&mut conn)
    .map_err(|e| e.to_string())?;
    Ok((
        commits,
        tables.into_iter().map(|t| (t.relname.clone(), t)).collect(),
    ))
}

async fn read_counters(client: &awc::Client, url: &str) -> BTreeMap<String, f64> {
    let Ok(mut r) = client.get(format!("{url}/metrics")).send().await else {
        return BTreeMap::new();
    };
    let Ok(body) = r.body().limit(8 << 20).await else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("orderflow_") && !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// The counters now. The database's statistics lag a backend's last transactions (PostgreSQL
/// flushes them at most once a second, when the backend goes idle): after the load (`settle`)
/// the reading is repeated until two a second apart agree.
pub async fn read(
    client: &awc::Client,
    url: &str,
    database_url: &str,
    settle: bool,
) -> Option<Work> {
    let read_now = || {
        let db = database_url.to_owned();
        actix_web::rt::task::spawn_blocking(move || read_database(&db))
    };
    let mut database = read_now().await.ok()?;
    // After the load: read again until two readings a second apart agree (at most 10 s).
    for _ in 0..if settle { 10 } else { 0 } {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let again = read_now().await.ok()?;
        let rows = |r: &Result<(i64, BTreeMap<String, TableRow>), String>| {
            r.as_ref()
                .ok()
                .map(|(c, t)| (*c, t.values().map(|t| t.ins + t.upd + t.del).sum::<i64>()))
        };
        let stable = rows(&again).is_some() && rows(&again) == rows(&database);
        database = again;
        if stable {
            break;
        }
    }
    let (commits, tables) = match database {
        Ok(read) => read,
        Err(e) => {
            println!("work per order: the database's statistics could not be read ({e})");
            return None;
        }
    };
    Some(Work {
        commits,
        tables,
        counters: read_counters(client, url).await,
    })
}

/// Prints the work per decided order between two readings.
pub fn report(before: &Work, after: &Work, decided: u64) {
    if decided == 0 {
        return;
    }
    let per = |n: f64| n / decided as f64;
    let mut rows = Vec::new();
    let (mut written, mut index_entries) = (0i64, 0i64);
    for (name, a) in &after.tables {
        let b = before.tables.get(name).cloned().unwrap_or_default();
        let (ins, upd, hot, del) = (a.ins - b.ins, a.upd - b.upd, a.hot - b.hot, a.del - b.del);
        if ins + upd + del == 0 {
            continue;
        }
        written += ins + upd + del;
        // Every index gets an entry for an inserted row and for a row version an update could
        // not keep on its page (not HOT); partial indexes may skip some: an upper bound.
        index_entries += (ins + upd - hot) * a.indexes;
        let mut parts = Vec::new();
        for (what, n) in [("ins", ins), ("upd", upd), ("del", del)] {
            if n > 0 {
                parts.push(format!("{what} {:.2}", per(n as f64)));
            }
        }
        if upd > 0 {
            parts.push(format!("{:.0} % HOT", 100.0 * hot as f64 / upd as f64));
        }
        rows.push(format!("{name} {}", parts.join(" ")));
    }
    println!(
        "work per decided PostgreSQL: {:.2} transactions, {:.2} rows written, ≤ {:.1} index entries ({})",
        per((after.commits - before.commits) as f64),
        per(written as f64),
        per(index_entries as f64),
        rows.join("; ")
    );
    let sum = |prefix: &str, work: &Work| -> f64 {
        work.counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let delta = |prefix: &str| sum(prefix, after) - sum(prefix, before);
    let by_exchange: Vec<String> = after
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with("orderflow_publishes_total{"))
        .map(|(k, v)| {
            let was = before.counters.get(k).copied().unwrap_or(0.0);
            let exchange = k.split('"').nth(1).unwrap_or("?").to_owned();
            format!("{exchange} {:.2}", per(v - was))
        })
        .collect();
    let publishes = if by_exchange.is_empty() {
        // A build without the counter: only its publishes to work queues are counted.
        format!(
            "{:.2} publishes to work queues (events not counted by this build)",
            per(delta("orderflow_queue_published_total"))
        )
    } else {
        format!(
            "{:.2} publishes ({})",
            per(delta("orderflow_publishes_total")),
            by_exchange.join(", ")
        )
    };
    println!(
        "work per decided RabbitMQ: {publishes}, {:.2} deliveries, {:.2} acks",
        per(delta("orderflow_queue_delivered_total")),
        per(delta("orderflow_queue_acked_total"))
    );
}
