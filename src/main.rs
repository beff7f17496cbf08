//! `orderflow`: the command line. Everything the service is lives in the library; the operator's
//! tools (the load generator, the demo catalog) live here, outside its public surface.

mod tools;

/// mimalloc instead of glibc's malloc: under load the service allocates and frees many small
/// buffers across threads (JSON, AMQP frames), where glibc spent a fifth of its CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orderflow::config::Config;
use orderflow::startup::{self, Application};

/// An order-flow and inventory engine for online marketplaces.
///
/// Configuration comes from the environment (see the README); the flags below override it.
#[derive(Debug, Parser)]
#[command(name = "orderflow", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The settings every command shares, each a flag that mirrors its environment variable.
#[derive(Debug, clap::Args)]
struct Settings {
    /// PostgreSQL; created if missing and migrated on start. (`--help` never shows its value:
    /// it may hold a password.)
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// RabbitMQ; the vhost in the URL is honoured.
    #[arg(long, global = true, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    /// Listen address (port 0 picks a free port).
    #[arg(long, global = true, env = "HTTP_ADDR")]
    http_addr: Option<String>,
    /// Bearer token of the admin endpoints (at least 32 characters; `ADMIN_TOKENS` for several).
    #[arg(long, global = true, env = "ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Tracing filter.
    #[arg(long, global = true, env = "RUST_LOG")]
    log: Option<String>,
    /// Log format: `text` or `json` (one JSON object a line, for log collectors).
    #[arg(long, global = true, env = "LOG_FORMAT")]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, the consumers, the engine and the persister (the default).
    Serve,
    /// Create the database if missing, run the migrations, exit.
    Migrate,
    /// Load N demo products with stock: with --url, through the admin API of a running service
    /// (ADMIN_TOKEN); without, straight into the database while the service is stopped.
    DemoData {
        /// How many products.
        #[arg(default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        n: u32,
        /// A running service (the load balancer or the active instance), e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// Products in flight at once (with --url).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
        concurrency: u32,
    },
    /// Drive a running service over HTTP and report throughput and latency.
    Loadgen(Box<tools::loadgen::LoadgenConfig>),
    /// Print an HS256 customer token signed with AUTH_JWT_SECRET (development, demos, load).
    Token {
        /// The customer the token stands for (its `sub`).
        #[arg(long)]
        customer: String,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
        ttl: u64,
    },
    /// Exit 0 when the service on HTTP_ADDR answers /health/ready with 200 (container health).
    Healthcheck {
        /// Probe /health/live instead: a standby is alive, not ready.
        #[arg(long)]
        live: bool,
    },
    /// An operator's view of a queue's dead letters.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// Show each dead letter of `<queue>.dead` and why (they stay where they are). Personal
    /// data in the bodies is masked.
    List {
        /// orders.checkout, inventory.updates or carts.events.
        queue: String,
        /// Show the bodies as they are (names, addresses, documents).
        #[arg(long)]
        unmasked: bool,
    },
    /// Re-publish them to their queue with confirms; remove only what the broker confirmed.
    Replay {
        /// orders.checkout, inventory.updates or carts.events.
        queue: String,
    },
}

impl Settings {
    /// The configuration: flags first, then the environment, then the defaults.
    fn config(&self) -> Result<Config, orderflow::config::ConfigError> {
        let flags = [
            ("DATABASE_URL", &self.database_url),
            ("AMQP_URL", &self.amqp_url),
            ("HTTP_ADDR", &self.http_addr),
            ("ADMIN_TOKEN", &self.admin_token),
            ("RUST_LOG", &self.log),
        ];
        Config::from_lookup(|key| {
            flags
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| (*v).clone())
                .or_else(|| std::env::var(key).ok())
        })
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit(); // --help and --version: printed, exit 0
            }
            // A usage error: what is wrong, the usage line, exit 2.
            let _ = e.print();
            eprintln!(
                "\n{}",
                <Cli as clap::CommandFactory>::command().render_usage()
            );
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let config = match cli.settings.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orderflow: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Healthcheck { live } => healthcheck(
            config.http_addr,
            if live {
                "/health/live"
            } else {
                "/health/ready"
            },
        ),
        Command::DeadLetters { action } => dead_letters(&config, action),
        Command::Token { customer, ttl } => token(&config, &customer, ttl),
        Command::DemoData {
            n,
            url: Some(url),
            concurrency,
        } => demo_data_online(&config, &url, n, concurrency),
        Command::Loadgen(mut load) => {
            load.amqp_url = config.amqp_url.clone();
            load.admin_token = config.admin_tokens.first().map(|t| t.expose().to_owned());
            load.customer_secret = config.auth.secret.clone();
            load.issuer = config.auth.issuer.clone();
            load.audience = config.auth.audience.clone();
            load.database_url = config.database_url.clone();
            if let Err(e) = load.check() {
                eprintln!("orderflow loadgen: {e}");
                return ExitCode::from(2);
            }
            let run = async move {
                if load.probe_only {
                    return tools::costs::probe_first(&load).await.map(|_| ());
                }
                match load.open_loop() {
                    Some(phases) => tools::openloop::run(*load, phases).await,
                    None => tools::loadgen::run(*load).await,
                }
            };
            match actix_web::rt::System::new().block_on(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("orderflow loadgen: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        command => {
            init_tracing(&config, cli.settings.log_format.as_deref());
            let code = run(config, command);
            orderflow::telemetry::shutdown();
            code
        }
    }
}

/// `demo-data N --url`: through a running service's admin API.
fn demo_data_online(config: &Config, url: &str, n: u32, concurrency: u32) -> ExitCode {
    let Some(token) = config.admin_tokens.first().map(|t| t.expose().to_owned()) else {
        eprintln!("orderflow demo-data: --url needs ADMIN_TOKEN (the running service's)");
        return ExitCode::from(2);
    };
    let started = std::time::Instant::now();
    let load = tools::demo_online::load(url, &token, n as usize, concurrency as usize);
    match actix_web::rt::System::new().block_on(load) {
        Ok(report) => {
            println!(
                "orderflow: loaded {} of {n} demo products with stock into {url} in {:.1} s ({} answers waited out and sent again)",
                report.loaded,
                started.elapsed().as_secs_f64(),
                report.retried
            );
            if report.failed.is_empty() {
                demo_shopper(config);
                return ExitCode::SUCCESS;
            }
            eprintln!("orderflow demo-data: {} SKUs failed:", report.failed.len());
            for (sku, why) in &report.failed {
                eprintln!("  {sku}: {why}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("orderflow demo-data: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A shopper to try the storefront routes with (customer routes need a token).
fn demo_shopper(config: &Config) {
    if let Some(secret) = &config.auth.secret {
        if let Ok(token) = orderflow::auth::customer::issue_token(
            secret,
            "demo-shopper",
            std::time::Duration::from_secs(86_400),
            config.auth.issuer.as_deref(),
            config.auth.audience.as_deref(),
        ) {
            println!("a demo shopper's token (customer demo-shopper, 24 h):\n{token}");
        }
    }
}

fn init_tracing(config: &Config, format: Option<&str>) {
    let otlp = orderflow::telemetry::otlp_endpoint(|name| std::env::var(name).ok());
    orderflow::telemetry::init(&config.log_filter, format == Some("json"), otlp.as_deref());
}

/// `serve`, `migrate` and `demo-data`: they need the runtime and the database.
fn run(config: Config, command: Command) -> ExitCode {
    let outcome = actix_web::rt::System::new().block_on(async move {
        match command {
            Command::DemoData { n, .. } => {
                let loaded = tools::demo::load(&config, n as usize).await?;
                println!("orderflow: loaded {loaded} demo products with stock");
                demo_shopper(&config);
            }
            Command::Migrate => {
                let applied = startup::migrate(&config).await?;
                println!("orderflow: database ready ({applied} migrations applied)");
            }
            _ => {
                let app = Application::build(config).await?;
                app.run_until_stopped(true)
                    .await
                    .map_err(|source| startup::StartupError::Serve { source })?;
            }
        }
        Ok::<(), startup::StartupError>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderflow: {e}");
            exit_now(1)
        }
    }
}

/// Ends a process that failed at once, its one line said. Threads it started may still be
/// running — the database pool's, connecting to PostgreSQL through libpq and OpenSSL — and
/// libc's exit handlers (OpenSSL's clean-up among them) racing them can kill the process with a
/// signal instead of the exit code (seen once in the start-up test, status `None`).
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    extern "C" {
        fn _exit(status: i32) -> !;
    }
    // SAFETY: `_exit` takes a plain int and never returns; what it skips (exit handlers, stdio
    // buffers) holds nothing of ours: stdout and stderr are flushed above.
    unsafe { _exit(code) }
}

/// `orderflow token --customer ID [--ttl SECONDS]`.
fn token(config: &Config, customer: &str, ttl: u64) -> ExitCode {
    let Some(secret) = &config.auth.secret else {
        eprintln!("orderflow token: set AUTH_JWT_SECRET (the service's HS256 key) to sign customer tokens");
        return ExitCode::from(2);
    };
    if let Err(e) = orderflow::domain::cart::CustomerId::parse(customer) {
        eprintln!("orderflow token: --customer {e}");
        return ExitCode::from(2);
    }
    match orderflow::auth::customer::issue_token(
        secret,
        customer,
        std::time::Duration::from_secs(ttl),
        config.auth.issuer.as_deref(),
        config.auth.audience.as_deref(),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orderflow token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `orderflow dead-letters list|replay <queue>`.
fn dead_letters(config: &Config, action: DeadLetterAction) -> ExitCode {
    use orderflow::messaging::dead_letters::{self, queue_named};
    let (action, name, unmasked) = match &action {
        DeadLetterAction::List { queue, unmasked } => ("list", queue, *unmasked),
        DeadLetterAction::Replay { queue } => ("replay", queue, false),
    };
    let Some(queue) = queue_named(name) else {
        eprintln!("orderflow dead-letters: unknown queue {name:?} (orders.checkout, inventory.updates, carts.events)");
        eprintln!("usage: orderflow dead-letters list|replay <queue>");
        return ExitCode::from(2);
    };
    let outcome = actix_web::rt::System::new().block_on(async {
        let broker = orderflow::messaging::Broker::connect(
            &config.amqp_url,
            orderflow::messaging::topology::TopologyConfig {
                delivery_limit: config.delivery_limit,
                dead_letter_ttl: config.dead_letter_ttl,
                handback_limit: config.handback_limit,
                ..Default::default()
            },
            // The command counts nothing anyone reads.
            std::sync::Arc::default(),
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
                let shown = if unmasked {
                    l.body.clone()
                } else {
                    l.masked_body()
                };
                let body: String = shown.chars().take(200).collect();
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
        Err(e) => {
            let e: orderflow::messaging::BrokerError = e;
            eprintln!(
                "orderflow dead-letters: RabbitMQ at {} is not usable ({}). Check AMQP_URL.",
                orderflow::messaging::redact(&config.amqp_url),
                e.detail()
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
        Ok(String::from_utf8_lossy(head.get(..n).unwrap_or_default()).into_owned())
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
