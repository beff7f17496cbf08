//! `orderflow [serve|migrate]`: thin entry point; everything lives in the library.

use std::process::ExitCode;

use orderflow::config::Config;
use orderflow::startup::{self, Application};

const USAGE: &str = "usage: orderflow [serve|migrate|demo-data [N]|loadgen [OPTIONS]|healthcheck]
  serve        run the API, the engine and the persister (default)
  migrate      create the database if missing, run migrations, exit
  demo-data    load N demo products with stock (default 3000); run it while the service is stopped
  loadgen      drive a running service over HTTP and report throughput and latency (loadgen --help)
  healthcheck  exit 0 when the service on HTTP_ADDR answers /health/ready with 200
               (--live: /health/live, for container health: a standby is alive, not ready)
  dead-letters list <queue>    show the dead letters of a queue and why (they stay)
  dead-letters replay <queue>  re-publish them to their queue; removes only what the broker confirmed
Configuration comes from the environment: DATABASE_URL, AMQP_URL, HTTP_ADDR, ADMIN_TOKEN, RUST_LOG (see README).";

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if !matches!(
        command.as_str(),
        "serve" | "migrate" | "demo-data" | "loadgen" | "healthcheck" | "dead-letters"
    ) {
        eprintln!("orderflow: unknown command {command:?}\n{USAGE}");
        return ExitCode::from(2);
    }
    if command == "loadgen" {
        let args: Vec<String> = std::env::args().skip(2).collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            println!("{}", orderflow::loadgen::USAGE);
            return ExitCode::SUCCESS;
        }
        let config = match orderflow::loadgen::LoadgenConfig::from_args(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("orderflow loadgen: {e}\n{}", orderflow::loadgen::USAGE);
                return ExitCode::from(2);
            }
        };
        let result = actix_web::rt::System::new().block_on(orderflow::loadgen::run(config));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("orderflow loadgen: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orderflow: {e}");
            return ExitCode::from(2);
        }
    };
    if command == "healthcheck" {
        let live = std::env::args().nth(2).as_deref() == Some("--live");
        return healthcheck(
            config.http_addr,
            if live {
                "/health/live"
            } else {
                "/health/ready"
            },
        );
    }
    if command == "dead-letters" {
        return dead_letters(&config);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let outcome = actix_web::rt::System::new().block_on(async move {
        if command == "demo-data" {
            let n = match std::env::args().nth(2) {
                None => 3000,
                Some(raw) => raw
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        startup::StartupError::Engine(format!(
                            "demo-data takes a number of products, not {raw:?}"
                        ))
                    })?,
            };
            let loaded = startup::load_demo_data(&config, n).await?;
            println!("orderflow: loaded {loaded} demo products with stock");
            return Ok(());
        }
        if command == "migrate" {
            let applied = startup::migrate(&config).await?;
            println!("orderflow: database ready ({applied} migrations applied)");
            return Ok(());
        }
        let app = Application::build(config).await?;
        app.run_until_stopped(true)
            .await
            .map_err(|e| startup::StartupError::Engine(format!("server failed: {e}")))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderflow: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `orderflow dead-letters list|replay <queue>`.
fn dead_letters(config: &Config) -> ExitCode {
    use orderflow::messaging::dead_letters::{self, queue_named};
    let args: Vec<String> = std::env::args().skip(2).collect();
    let (action, queue) = match args.as_slice() {
        [action, queue] if action == "list" || action == "replay" => match queue_named(queue) {
            Some(q) => (action.as_str(), q),
            None => {
                eprintln!("orderflow dead-letters: unknown queue {queue:?} (orders.checkout, inventory.updates, carts.events)");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: orderflow dead-letters list|replay <queue>");
            return ExitCode::from(2);
        }
    };
    let outcome = actix_web::rt::System::new().block_on(async {
        let broker = orderflow::messaging::Broker::connect(
            &config.amqp_url,
            orderflow::messaging::topology::TopologyConfig {
                delivery_limit: config.delivery_limit,
                ..Default::default()
            },
        )
        .await?;
        let result = if action == "list" {
            let letters = dead_letters::list(&broker, queue).await?;
            println!(
                "{} dead letter(s) in {}",
                letters.len(),
                queue.dead_letter_queue()
            );
            for (i, l) in letters.iter().enumerate() {
                let body: String = l.body.chars().take(200).collect();
                println!(
                    "{}. message_id={} reason={}\n   {}",
                    i + 1,
                    l.message_id.as_deref().unwrap_or("-"),
                    if l.reason.is_empty() {
                        "(delivery limit reached)"
                    } else {
                        &l.reason
                    },
                    body
                );
            }
            Ok(())
        } else {
            let report = dead_letters::replay(&broker, queue).await?;
            println!(
                "replayed {} dead letter(s) to {}; {} kept (not confirmed)",
                report.replayed, queue.name, report.kept
            );
            Ok(())
        };
        broker.close().await;
        result
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(orderflow::messaging::BrokerError(e)) => {
            eprintln!(
                "orderflow dead-letters: RabbitMQ at {} is not usable ({e}). Check AMQP_URL.",
                orderflow::messaging::redact(&config.amqp_url)
            );
            ExitCode::FAILURE
        }
    }
}

/// A minimal HTTP/1.0 probe of `/health/ready` (or `/health/live`), so the runtime image needs
/// no curl.
fn healthcheck(addr: std::net::SocketAddr, path: &str) -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let probe = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..n]).into_owned())
    };
    match probe() {
        Ok(head) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => {
            ExitCode::SUCCESS
        }
        Ok(head) => {
            eprintln!(
                "orderflow: not ready: {}",
                head.lines().next().unwrap_or("")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("orderflow: no answer from {target}: {e}");
            ExitCode::FAILURE
        }
    }
}
