//! What a load generator run cost, beside what the infrastructure alone can do: the limit probe
//! before the run, CPU per decided order from `/proc` after it.

use super::args::LoadgenConfig;
use super::cpu::CpuUse;
use super::probe::{self, Ceiling, ProbeConfig};

/// Runs the limit probe before the load, when asked (`--probe-seconds` > 0).
pub async fn probe_first(c: &LoadgenConfig) -> Result<Option<Ceiling>, String> {
    if c.probe_seconds <= 0.0 {
        return Ok(None);
    }
    let probed = probe::run(&ProbeConfig {
        amqp_url: c.amqp_url.clone(),
        database_url: c.database_url.clone(),
        seconds: c.probe_seconds,
        batch: c.probe_batch as usize,
        hot: c.hot_share >= 0.5,
        prefetch: 256,
        events: c.probe_events,
        checkout_batch: c.probe_checkout_batch as usize,
        checkout_publishes: c.probe_checkout_publishes as usize,
        rate: c.probe_rate,
    })
    .await;
    match probed {
        Ok(ceiling) => {
            ceiling.print();
            Ok(Some(ceiling))
        }
        // The load still runs; its report then has no ceiling to compare with.
        Err(e) if !c.probe_only => {
            println!("probe failed ({e}); the run goes on without a ceiling");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The CPU of the load window, per decided order, and the decided rate against the ceiling.
pub fn report(ceiling: Option<&Ceiling>, used: &CpuUse, decided: u64, decided_per_second: f64) {
    println!("CPU per decided  {}", used.per_unit(decided));
    if decided > 0 {
        let service = used.of("orderflow") * 1e6 / decided as f64;
        println!(
            "service CPU      {service:.0} µs per decided order ({:.2} of {:.0} cores over {:.1} s)",
            used.of("orderflow") / used.seconds.max(1e-9),
            probe::cores(),
            used.seconds
        );
    }
    if let Some(ceiling) = ceiling {
        println!(
            "against probe    decided {decided_per_second:.0}/s = {:.0} % of the ceiling {:.0}/s (RabbitMQ alone {:.0}/s, Postgres alone {:.0}/s)",
            100.0 * decided_per_second / ceiling.per_second().max(1e-9),
            ceiling.per_second(),
            ceiling.rabbit.per_second,
            ceiling.postgres.per_second
        );
    }
}
