//! `orderflow [serve|migrate]`: thin entry point; everything lives in the library.

use std::process::ExitCode;

use orderflow::config::Config;
use orderflow::startup::{self, Application};

const USAGE: &str = "usage: orderflow [serve|migrate|demo-data [N]|loadgen [OPTIONS]|healthcheck]
  serve        run the API, the engine and the persister (default)
  migrate      create the database if missing, run migrations, exit
  demo-data    load N demo products with stock (default 3000); run it while the service is stopped
  loadgen      drive a running service over HTTP and report throughput and latency (loadgen --help)
  healthcheck  exit 0 when the service on HTTP_ADDR answers /health/ready with 200 (for containers)
Configuration comes from the environment: DATABASE_URL, AMQP_URL, HTTP_ADDR, ADMIN_TOKEN, RUST_LOG (see README).";

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if !matches!(
        command.as_str(),
        "serve" | "migrate" | "demo-data" | "loadgen" | "healthcheck"
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
        return healthcheck(config.http_addr);
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

/// A minimal HTTP/1.0 probe of `/health/ready`, so the runtime image needs no curl.
fn healthcheck(addr: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let probe = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(b"GET /health/ready HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
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
