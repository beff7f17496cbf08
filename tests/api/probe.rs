//! The load generator's limit probe, run for real: RabbitMQ alone and Postgres alone, each for a
//! second, on a vhost and a scratch database of its own, and nothing left behind.

use crate::helpers::{pg_base, TestVhost};

fn databases_named(prefix: &str) -> Vec<String> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let mut conn = PgConnection::establish(&format!("{}/postgres", pg_base())).unwrap();
    diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE $1")
        .bind::<diesel::sql_types::Text, _>(format!("{prefix}%"))
        .load::<Name>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|n| n.datname)
        .collect()
}

/// A figure from a probe line: the number before `unit`.
fn figure(line: &str, unit: &str) -> f64 {
    let at = line
        .find(unit)
        .unwrap_or_else(|| panic!("{unit} in {line}"));
    line[..at]
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("a number before {unit} in {line}"))
}

#[test]
fn the_limit_probe_measures_each_side_alone_and_cleans_up() {
    let vhost = TestVhost::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "loadgen",
            "--probe-only",
            "--probe-seconds",
            "1",
            "--probe-batch",
            "16",
        ])
        .env("AMQP_URL", &vhost.url)
        .env("DATABASE_URL", format!("{}/postgres", pg_base()))
        .output()
        .expect("run orderflow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("a line {start}: {stdout}"))
            .to_owned()
    };
    let rabbit = line("probe RabbitMQ alone");
    let postgres = line("probe Postgres alone");
    let ceiling = line("probe ceiling");
    let (r, p, both) = (
        figure(&rabbit, "orders/s"),
        figure(&postgres, "orders/s"),
        figure(&ceiling, "orders/s"),
    );
    assert!(r > 0.0 && p > 0.0, "{stdout}");
    // Sharing the machine, both together do less than either alone.
    assert!(both < r.min(p) + 1.0, "{stdout}");
    assert!(
        (both - 1.0 / (1.0 / r + 1.0 / p)).abs() <= 1.0,
        "ceiling = 1/(1/rabbit + 1/postgres): {stdout}"
    );
    // Each side's CPU lands on its own server process.
    let beam = rabbit
        .split("beam.smp ")
        .nth(1)
        .map(|s| figure(s, "µs"))
        .unwrap();
    let pg = postgres
        .split("postgres ")
        .nth(1)
        .map(|s| figure(s, "µs"))
        .unwrap();
    assert!(
        beam > 0.0,
        "RabbitMQ worked for the RabbitMQ side: {rabbit}"
    );
    assert!(
        pg > 0.0,
        "PostgreSQL worked for the Postgres side: {postgres}"
    );
    // Nothing left: the scratch database is dropped, the probe's queues are gone.
    assert!(
        databases_named("orderflow_probe_").is_empty(),
        "scratch databases left: {:?}",
        databases_named("orderflow_probe_")
    );
    let queues = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "-p", &vhost.name, "name"])
        .output()
        .expect("rabbitmqctl");
    let queues = String::from_utf8_lossy(&queues.stdout);
    assert!(!queues.contains("probe."), "probe queues left: {queues}");
}
