//! The load generator's limit probe, run for real: RabbitMQ alone and Postgres alone, each for a
//! second, on a vhost and a scratch database of its own, and nothing left behind.

use crate::helpers::{pg_base, TestVhost};

fn database_exists(name: &str) -> bool {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(&format!("{}/postgres", pg_base())).unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n
        > 0
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

/// Runs `orderflow loadgen --probe-only` with `args` on `vhost`: its output, and the name of
/// the scratch database it made (named after its process: another test's probe may run beside
/// it).
fn probe(vhost: &TestVhost, args: &[&str]) -> (String, String) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["loadgen", "--probe-only"])
        .args(args)
        .env("AMQP_URL", &vhost.url)
        .env("DATABASE_URL", format!("{}/postgres", pg_base()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run orderflow");
    let scratch = format!("orderflow_probe_{}", child.id());
    let out = child.wait_with_output().expect("orderflow ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, scratch)
}

#[test]
fn the_limit_probe_measures_each_side_alone_and_cleans_up() {
    let vhost = TestVhost::new();
    let (stdout, scratch) = probe(&vhost, &["--probe-seconds", "1", "--probe-batch", "16"]);
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
        !database_exists(&scratch),
        "scratch database left: {scratch}"
    );
    let queues = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "-p", &vhost.name, "name"])
        .output()
        .expect("rabbitmqctl");
    let queues = String::from_utf8_lossy(&queues.stdout);
    assert!(!queues.contains("probe."), "probe queues left: {queues}");
}

/// Paced, the RabbitMQ side runs at the rate asked (what the pattern costs the broker at a
/// pipeline's rate), not at its ceiling.
#[test]
fn a_paced_probe_keeps_to_its_rate() {
    let vhost = TestVhost::new();
    let (stdout, _) = probe(&vhost, &["--probe-seconds", "2", "--probe-rate", "300"]);
    let rabbit = stdout
        .lines()
        .find(|l| l.starts_with("probe RabbitMQ alone"))
        .unwrap_or_else(|| panic!("the RabbitMQ side: {stdout}"));
    let rate = figure(rabbit, "orders/s");
    let orders = figure(rabbit.split_once('(').map_or("", |(_, r)| r), "orders;");
    // A grid of 1/300 s slots over 2 s: at most 600, and a customer that falls behind (a slow
    // confirm) loses its slot rather than catching up.
    assert!((400.0..=600.0).contains(&orders), "{rabbit}");
    assert!((200.0..=300.0 * 1.25).contains(&rate), "{rabbit}");
    assert!(stdout.contains("probe paced"), "{stdout}");
    assert!(
        !stdout.contains("probe ceiling"),
        "a paced probe is no ceiling: {stdout}"
    );
}

/// A pace the probe cannot keep, or one asked of a whole run, is refused before anything runs.
#[test]
fn a_probe_rate_out_of_range_or_without_probe_only_is_refused() {
    for args in [
        &["--probe-only", "--probe-rate", "1e-300"][..],
        &["--probe-only", "--probe-rate=-5"],
        &["--probe-only", "--probe-rate", "NaN"],
        &["--probe-rate", "300"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .arg("loadgen")
            .args(args)
            .env("AMQP_URL", "amqp://127.0.0.1:1/none")
            .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
            .env("AUTH_JWT_SECRET", "a-secret-only-for-this-check-0123456789")
            .output()
            .expect("run orderflow");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(stderr.contains("--probe-rate"), "{args:?}: {stderr}");
    }
}
