//! The load generator's arguments.

/// `orderflow loadgen`: drive a running service over HTTP and report throughput and latency.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenConfig {
    /// Service to drive.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// RabbitMQ, for timing decisions through `order.events` (the global `--amqp-url`).
    #[arg(skip)]
    pub amqp_url: String,
    /// Admin token, to create the products and their stock (the global `--admin-token`).
    #[arg(skip)]
    pub admin_token: Option<String>,
    /// The customer-token secret (`AUTH_JWT_SECRET`): the generator signs a token per buyer.
    #[arg(skip)]
    pub customer_secret: Option<orderflow::auth::Secret>,
    /// `AUTH_JWT_ISSUER` / `AUTH_JWT_AUDIENCE`, put in the buyers' tokens when the service checks them.
    #[arg(skip)]
    pub issuer: Option<String>,
    #[arg(skip)]
    pub audience: Option<String>,
    /// PostgreSQL, for the limit probe's scratch database (the global `--database-url`).
    #[arg(skip)]
    pub database_url: String,
    /// Seconds for each side of the limit probe (RabbitMQ alone, Postgres alone) before the
    /// run; 0 skips it.
    #[arg(long, default_value_t = 5.0)]
    pub probe_seconds: f64,
    /// Run the limit probe only (no load).
    #[arg(long)]
    pub probe_only: bool,
    /// The events per order the probe publishes, as the service's `ORDER_EVENTS`: `decisions`
    /// (two: the decision and its notification; the service's default) or `all` (four).
    #[arg(long, default_value = "decisions", value_parser = parse_events)]
    pub probe_events: orderflow::orders::EventScope,
    /// Orders per database batch in the probe.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub probe_batch: u32,
    /// Checkouts per broker message at most in the probe, as the service's `CHECKOUT_BATCH`
    /// (1: each alone, the pattern before checkout batches).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub probe_checkout_batch: u32,
    /// Checkout publishes unconfirmed at once in the probe, as the service's
    /// `CHECKOUT_PUBLISHES`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub probe_checkout_publishes: u32,
    /// The probe's RabbitMQ side paced to this many orders/s (0: as fast as it goes; else 1 to
    /// 1,000,000, with `--probe-only`): what the pattern costs the broker at a pipeline's rate.
    /// Its orders/s is then that rate, no ceiling.
    #[arg(long, default_value_t = 0.0)]
    pub probe_rate: f64,
    /// Concurrent customers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub customers: u32,
    /// Orders to send in all.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub orders: u32,
    /// Share of orders (0..=1) on the one hot SKU LG-HOT; the rest spread uniformly over `--skus`.
    #[arg(long, default_value_t = 1.0)]
    pub hot_share: f64,
    /// Other SKUs, LG-00000…
    #[arg(long, default_value_t = 10_000)]
    pub skus: usize,
    /// Stock of LG-HOT (default: a quarter of the orders).
    #[arg(long)]
    pub hot_stock: Option<i64>,
    /// Open loop: checkouts arrive at this rate (per second) whatever the service answers,
    /// for `--duration` seconds; `--orders` and `--customers` then do not pace the run.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: seconds at `--rate`.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Open loop: further phases after the first, `RATE:SECONDS` (e.g. `--then 500:15` to see
    /// admission reopen when the rate drops under capacity).
    #[arg(long, value_parser = super::openloop::parse_phase)]
    pub then: Vec<super::openloop::Phase>,
    /// Open loop: print the admission state, queue depth and answers second by second.
    #[arg(long)]
    pub timeline: bool,
    /// Open loop: fail unless every phase offered more than this decides at least this many
    /// orders per second while it runs (goodput held under overload).
    #[arg(long)]
    pub expect_goodput: Option<f64>,
    /// Open loop: fail unless every phase's admitted p99 accept → decided is under this.
    #[arg(long)]
    pub expect_p99_ms: Option<f64>,
    /// Open loop: fail unless, in a phase slower than the one before, the last 503 comes at
    /// most this many seconds after it began.
    #[arg(long)]
    pub expect_reopen_s: Option<f64>,
    /// Do not create the products and stock (they exist).
    #[arg(long = "no-setup", action = clap::ArgAction::SetFalse)]
    pub setup: bool,
}

impl LoadgenConfig {
    /// Checks what clap cannot.
    pub fn check(&self) -> Result<(), String> {
        // 0 (or -0) is unpaced; a pace slower than one order a second is no pace to measure.
        if self.probe_rate != 0.0 && !(1.0..=1e6).contains(&self.probe_rate) {
            return Err("--probe-rate must be 0 (as fast as it goes) or in 1..1000000".into());
        }
        if self.probe_rate != 0.0 && !self.probe_only {
            return Err(
                "--probe-rate goes with --probe-only: a paced probe is no ceiling for a run".into(),
            );
        }
        if !(0.0..=600.0).contains(&self.probe_seconds) {
            return Err("--probe-seconds must be in 0..600".into());
        }
        if self.customer_secret.is_none() && !self.probe_only {
            return Err(
                "checkouts need customer tokens: set AUTH_JWT_SECRET (the service's HS256 key)"
                    .into(),
            );
        }
        if self.probe_only && self.probe_seconds <= 0.0 {
            return Err("--probe-only needs --probe-seconds > 0".into());
        }
        if let Some(rate) = self.rate {
            super::openloop::parse_phase(&format!("{rate}:{}", self.duration))?;
        }
        if !(0.0..=1.0).contains(&self.hot_share) || (self.hot_share < 1.0 && self.skus == 0) {
            return Err(
                "--hot-share must be in 0..1, and --skus > 0 unless --hot-share is 1".into(),
            );
        }
        Ok(())
    }

    /// What the open loop is expected to show.
    pub fn expect(&self) -> super::expect::Expect {
        super::expect::Expect {
            goodput: self.expect_goodput,
            p99_ms: self.expect_p99_ms,
            reopen_s: self.expect_reopen_s,
        }
    }

    /// The open-loop phases, when `--rate` asks for one.
    pub fn open_loop(&self) -> Option<Vec<super::openloop::Phase>> {
        let rate = self.rate?;
        let mut phases = vec![super::openloop::Phase {
            rate,
            seconds: self.duration,
        }];
        phases.extend(self.then.iter().copied());
        Some(phases)
    }

    pub(super) fn hot_stock(&self) -> i64 {
        self.hot_stock.unwrap_or(i64::from(self.orders / 4))
    }
}

fn parse_events(raw: &str) -> Result<orderflow::orders::EventScope, String> {
    orderflow::orders::EventScope::parse(raw).ok_or_else(|| "expected all or decisions".into())
}
