//! `orderflow [serve|migrate]`: thin entry point; everything lives in the library.

use std::process::ExitCode;

use orderflow::config::Config;
use orderflow::startup::{self, Application};

const USAGE: &str = "usage: orderflow [serve|migrate]
  serve    run the API, the engine and the persister (default)
  migrate  create the database if missing, run migrations, exit
Configuration comes from the environment: DATABASE_URL, AMQP_URL, HTTP_ADDR, ADMIN_TOKEN, RUST_LOG (see README).";

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if !matches!(command.as_str(), "serve" | "migrate") {
        eprintln!("orderflow: unknown command {command:?}\n{USAGE}");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orderflow: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = actix_web::rt::System::new().block_on(async move {
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
