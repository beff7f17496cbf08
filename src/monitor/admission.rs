//! Admission by wait budget: a checkout is admitted while the wait it can expect — the backlog
//! ahead of it (queued, and admitted on its way to the queue) divided by the measured drain
//! rate, plus the current decision latency — stays inside a target. The decision latency is read ahead, not behind: the checkouts already in
//! flight (prefetched and being processed) will take `in_flight ÷ drain` to clear, which is
//! known now, while the measured latency only shows it once they finish; the measured median
//! is the floor (one decision's own time when little is in flight). Past it, intake answers 503 `overloaded` with an honest
//! `Retry-After`: no sooner than the backlog drains back to where admission reopens, and in a
//! second that the clients already told to come back have not filled ([`super::returns`]).
//!
//! Pure arithmetic on observations, no clock or I/O of its own: the sampler and intake feed it,
//! the unit tests below drive it.

use std::time::{Duration, Instant};

use super::places::Requester;
use super::returns::{Returns, RETURN_SHARE};

/// The wait budget and the bounds of the controller.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// What an admitted checkout may expect to wait, accept → decided (`ADMISSION_TARGET_MS`).
    pub target: Duration,
    /// The drain rate assumed before one was measured (decisions per second).
    pub initial_drain_per_s: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            target: Duration::from_millis(1000),
            initial_drain_per_s: 500.0,
        }
    }
}

/// Admission starts shedding when the expected wait passes this share of the target: the margin
/// is what the tail of the latency distribution needs to stay under the target.
pub const SHED_AT: f64 = 0.5;
/// …and a shedding *episode*, as the monitor shows it, ends when the wait falls under this share
/// (hysteresis for the display and `Retry-After`). The verdict itself has none: every checkout
/// is admitted whose expected wait is inside `SHED_AT`, so a queue that drains is refilled by
/// whoever asks next, at the rate it drains. Holding the door shut until the queue was down to
/// this share, for at least a second, while shed clients were told to come back in a second or
/// two, starved the consumers and then let a flood in: the collapse of issue 20.
pub const REOPEN_AT: f64 = 0.3;
/// The median decision latency counts for at most this share of the target: a decision that is
/// slow on its own is not a queue, and shedding cannot make it faster. Under [`REOPEN_AT`], so a
/// slow gateway alone can neither start a shedding episode nor keep one from ending.
pub const LATENCY_FLOOR_AT: f64 = 0.25;
/// The time to drain (and a broker's jittered wait) never says more than this; a booked
/// `Retry-After` may say up to [`super::returns::RETURN_HORIZON_S`], when a crowd is that large.
pub const MAX_RETRY_AFTER_S: u32 = 60;
/// The room for returns is a share of what is decided with work queued, but never of less than
/// this share of the drain estimate (a stall decides nothing for a while).
pub const MIN_DECIDING_SHARE: f64 = 0.5;
/// What a blocked or stalled broker asks clients to wait.
pub const BROKER_RETRY_AFTER_S: u32 = 2;

/// The broker connection as the monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerHealth {
    Ok,
    /// The broker said `connection.blocked` (a memory or disk alarm): publishes would hang.
    Blocked,
    /// Connected, but the queue cannot be read or publishes are not confirmed in time.
    Stalled,
}

/// Why admission sheds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShedReason {
    /// The expected wait is over the budget.
    WaitBudget,
    BrokerBlocked,
    BrokerStalled,
}

impl ShedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::WaitBudget => "wait_budget",
            ShedReason::BrokerBlocked => "broker_blocked",
            ShedReason::BrokerStalled => "broker_stalled",
        }
    }
}

/// What the controller is told at each decision.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// Checkouts waiting in the queue.
    pub backlog: u64,
    /// Checkouts admitted and not yet published (recording their key, awaiting the confirm).
    pub pending: u64,
    /// How long an admitted checkout takes to be published (recent mean).
    pub intake_latency: Duration,
    /// Checkouts delivered and being processed.
    pub in_flight: u64,
    /// Measured decisions per second (the [`super::drain::DrainEstimator`]'s figure; 0 when none yet).
    pub drain_per_s: f64,
    /// Decisions per second now, while there is work (the estimator's
    /// [`super::drain::DrainEstimator::deciding`]; 0 when none yet).
    pub deciding_per_s: f64,
    /// How long a decision takes once its message is consumed (recent median).
    pub decision_latency: Duration,
    pub broker: BrokerHealth,
}

/// Admit, or shed with the earliest Retry-After (whole seconds; before jitter for a broker
/// reason, before booking for the wait budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    Shed {
        reason: ShedReason,
        retry_after_s: u32,
    },
}

/// The admission state machine: open, or shedding since a moment for a reason.
#[derive(Debug, Clone)]
pub struct Controller {
    config: AdmissionConfig,
    shedding: Option<(Instant, ShedReason)>,
    /// The clients told to come back, per second ahead.
    returns: Returns,
}

impl Controller {
    pub fn new(config: AdmissionConfig) -> Controller {
        Controller {
            config,
            shedding: None,
            returns: Returns::default(),
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// The drain rate used: the measured one, or the configured guess before any.
    pub fn drain(&self, o: &Observation) -> f64 {
        if o.drain_per_s > 0.0 {
            o.drain_per_s
        } else {
            self.config.initial_drain_per_s.max(1.0)
        }
    }

    /// The decision latency a checkout arriving now will see: what is in flight must clear
    /// first, and a decision takes at least its measured median (capped at
    /// [`LATENCY_FLOOR_AT`] × target, so a slow gateway alone never sheds).
    pub fn decision_latency(&self, o: &Observation) -> Duration {
        let clearing = Duration::from_secs_f64((o.in_flight as f64 / self.drain(o)).min(86_400.0));
        let floor = o
            .decision_latency
            .min(self.config.target.mul_f64(LATENCY_FLOOR_AT));
        clearing.max(floor)
    }

    /// The checkouts ahead of one admitted now, once it is accepted: the queue, and those
    /// admitted before it less what drains while it is being published (its 202 comes after
    /// its own intake time; so does the clock its wait budget is about).
    pub fn ahead(&self, o: &Observation) -> f64 {
        let drained_meanwhile = self.drain(o) * o.intake_latency.as_secs_f64();
        o.backlog as f64 + (o.pending as f64 - drained_meanwhile).max(0.0)
    }

    /// Checkouts ahead ÷ drain rate + decision latency.
    pub fn expected_wait(&self, o: &Observation) -> Duration {
        let queued = self.ahead(o) / self.drain(o);
        Duration::from_secs_f64(queued.min(86_400.0)) + self.decision_latency(o)
    }

    /// Seconds until the backlog drains to where admission reopens (at least 1): the earliest a
    /// shed client is told to come back.
    pub fn retry_after(&self, o: &Observation) -> u32 {
        let drain = self.drain(o);
        let reopen_backlog = (self.config.target.as_secs_f64() * REOPEN_AT
            - self.decision_latency(o).as_secs_f64())
        .max(0.0)
            * drain;
        let excess = (self.ahead(o) - reopen_backlog).max(0.0);
        let seconds = (excess / drain).ceil();
        (seconds as u32).clamp(1, MAX_RETRY_AFTER_S)
    }

    /// The `Retry-After` of a checkout shed now for the wait budget, booked: the first second,
    /// from when the backlog will have drained to the reopening point, with room among the
    /// clients already told to come back ([`RETURN_SHARE`] of what is decided per second; see
    /// [`super::returns`]), held for `who` ([`super::places`]). Ask only for a 503 that is
    /// sent: the booking counts it.
    pub fn book_return(
        &mut self,
        o: &Observation,
        now: Instant,
        who: Option<Requester<'_>>,
    ) -> u32 {
        let earliest = self.retry_after(o);
        // A share of what is decided with work queued, where that is less than the capacity
        // estimated (the estimate may run ahead of it under overload: raised by unsaturated
        // readings, never lowered by them) — but at least half the estimate: a stall (nothing
        // decided for a while) must not send every client to the far end of the timetable.
        let drain = self.drain(o);
        let deciding = if o.deciding_per_s > 0.0 {
            o.deciding_per_s.clamp(drain * MIN_DECIDING_SHARE, drain)
        } else {
            drain
        };
        let room = RETURN_SHARE * deciding;
        self.returns.book_for(now, earliest, room, who)
    }

    /// The state after this observation, and what to do with the checkout that asked.
    pub fn decide(&mut self, o: &Observation, now: Instant) -> Verdict {
        let broker = match o.broker {
            BrokerHealth::Ok => None,
            BrokerHealth::Blocked => Some(ShedReason::BrokerBlocked),
            BrokerHealth::Stalled => Some(ShedReason::BrokerStalled),
        };
        if let Some(reason) = broker {
            // At once, whatever the backlog: a publish now would hang or be lost to a time-out.
            if self.shedding.map(|(_, r)| r) != Some(reason) {
                self.shedding = Some((now, reason));
            }
            return Verdict::Shed {
                reason,
                retry_after_s: BROKER_RETRY_AFTER_S.max(self.retry_after(o)),
            };
        }
        let wait = self.expected_wait(o).as_secs_f64();
        let target = self.config.target.as_secs_f64();
        let over = wait > target * SHED_AT;
        // The episode (what the monitor shows) has hysteresis; the verdict has none.
        self.shedding = match self.shedding {
            None if over => Some((now, ShedReason::WaitBudget)),
            None => None,
            Some(_) if wait < target * REOPEN_AT => None,
            // A broker episode that ended becomes a wait-budget one until the backlog is down.
            Some((since, _)) => Some((since, ShedReason::WaitBudget)),
        };
        if over {
            Verdict::Shed {
                reason: ShedReason::WaitBudget,
                retry_after_s: self.retry_after(o),
            }
        } else {
            Verdict::Admit
        }
    }

    /// Moves the timetable of returns on to `now` (the sampler's tick).
    pub fn tick(&mut self, now: Instant) {
        self.returns.tick(now);
    }

    /// Clients told to come back from `now` on, and the checkouts whose places are remembered.
    pub fn returns_ahead(&mut self, now: Instant) -> (u64, usize) {
        self.returns.ahead(now)
    }

    /// `Some(reason)` while shedding.
    pub fn shedding(&self) -> Option<ShedReason> {
        self.shedding.map(|(_, r)| r)
    }
}

/// Spreads clients that were shed together: `base` plus up to half of it again (at least one
/// second of spread), chosen by `unit` in `[0, 1)`.
pub fn jittered(base: u32, unit: f64) -> u32 {
    let spread = (base / 2).max(1);
    let extra = (unit.clamp(0.0, 0.999_999) * f64::from(spread + 1)).floor() as u32;
    base.saturating_add(extra).min(MAX_RETRY_AFTER_S)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn obs(backlog: u64, drain: f64) -> Observation {
        Observation {
            backlog,
            pending: 0,
            intake_latency: Duration::ZERO,
            in_flight: 0,
            drain_per_s: drain,
            deciding_per_s: 0.0,
            decision_latency: Duration::from_millis(100),
            broker: BrokerHealth::Ok,
        }
    }

    pub(crate) fn controller() -> Controller {
        Controller::new(AdmissionConfig::default())
    }

    #[test]
    fn expected_wait_is_backlog_over_drain_plus_latency() {
        let c = controller();
        assert_eq!(
            c.expected_wait(&obs(500, 1000.0)),
            Duration::from_millis(600)
        );
        // No measurement yet: the configured guess (500/s).
        assert_eq!(c.expected_wait(&obs(100, 0.0)), Duration::from_millis(300));
        // 300 in flight at 1000/s clear in 300 ms, more than the measured 100 ms.
        let mut o = obs(500, 1000.0);
        o.in_flight = 300;
        assert_eq!(c.expected_wait(&o), Duration::from_millis(800));
    }

    #[test]
    fn checkouts_on_their_way_count_less_what_drains_while_one_is_published() {
        let c = controller();
        let mut o = obs(100, 1000.0);
        // 400 admitted and publishing; a publish takes 150 ms, while 150 are decided.
        o.pending = 400;
        o.intake_latency = Duration::from_millis(150);
        assert_eq!(c.ahead(&o), 350.0);
        assert_eq!(c.expected_wait(&o), Duration::from_millis(450));
        // A door slower than the queue: those on their way are decided before this one's 202.
        o.intake_latency = Duration::from_millis(600);
        assert_eq!(c.ahead(&o), 100.0);
    }

    #[test]
    fn sheds_past_the_budget_and_the_episode_ends_only_well_under_it() {
        let mut c = controller();
        let t0 = Instant::now();
        // 1000/s, 100 ms latency: shed above 400 queued (0.5 s), reopen under 200 (0.3 s).
        assert_eq!(c.decide(&obs(390, 1000.0), t0), Verdict::Admit);
        assert!(matches!(
            c.decide(&obs(410, 1000.0), t0),
            Verdict::Shed {
                reason: ShedReason::WaitBudget,
                ..
            }
        ));
        // Inside the band: admitted (the door refills the queue as it drains), while the
        // episode the monitor shows goes on until the wait is well under the budget.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(c.decide(&obs(210, 1000.0), later), Verdict::Admit);
        assert_eq!(c.shedding(), Some(ShedReason::WaitBudget));
        assert_eq!(c.decide(&obs(390, 1000.0), later), Verdict::Admit);
        assert!(matches!(
            c.decide(&obs(410, 1000.0), later),
            Verdict::Shed { .. }
        ));
        assert_eq!(c.decide(&obs(190, 1000.0), later), Verdict::Admit);
        assert_eq!(c.shedding(), None);
    }

    #[test]
    fn a_slow_decision_alone_never_sheds() {
        let mut c = controller();
        let mut o = obs(0, 100.0);
        o.decision_latency = Duration::from_millis(900);
        assert_eq!(c.decide(&o, Instant::now()), Verdict::Admit);
        assert_eq!(c.decision_latency(&o), Duration::from_millis(250));
        // Nor keeps an episode from ending once the queue is gone.
        let t0 = Instant::now();
        assert!(matches!(
            c.decide(&obs(5000, 100.0), t0),
            Verdict::Shed { .. }
        ));
        assert_eq!(c.decide(&o, t0), Verdict::Admit);
    }

    #[test]
    fn admission_reopens_as_soon_as_the_wait_allows_with_work_still_queued() {
        let mut c = controller();
        let t0 = Instant::now();
        assert!(matches!(
            c.decide(&obs(5000, 1000.0), t0),
            Verdict::Shed { .. }
        ));
        // A millisecond later the backlog is under the reopening point (200 at 1000/s, 100 ms
        // latency): open again, with 190 checkouts still queued for the consumers.
        let soon = t0 + Duration::from_millis(1);
        assert_eq!(c.decide(&obs(190, 1000.0), soon), Verdict::Admit);
        assert_eq!(c.shedding(), None);
    }

    #[test]
    fn retry_after_is_the_time_to_drain_to_the_reopening_point() {
        let c = controller();
        // Reopens at (0.3 s - 0.1 s) × 1000/s = 200 queued; 5200 queued → 5 s.
        assert_eq!(c.retry_after(&obs(5200, 1000.0)), 5);
        // Rounded up, never under a second, never over the cap.
        assert_eq!(c.retry_after(&obs(5201, 1000.0)), 6);
        assert_eq!(c.retry_after(&obs(201, 1000.0)), 1);
        assert_eq!(c.retry_after(&obs(10_000_000, 10.0)), MAX_RETRY_AFTER_S);
    }

    #[test]
    fn a_blocked_or_stalled_broker_sheds_at_once() {
        let mut c = controller();
        let t0 = Instant::now();
        let mut o = obs(0, 1000.0);
        o.broker = BrokerHealth::Blocked;
        assert_eq!(
            c.decide(&o, t0),
            Verdict::Shed {
                reason: ShedReason::BrokerBlocked,
                retry_after_s: BROKER_RETRY_AFTER_S
            }
        );
        o.broker = BrokerHealth::Stalled;
        assert!(matches!(
            c.decide(&o, t0),
            Verdict::Shed {
                reason: ShedReason::BrokerStalled,
                ..
            }
        ));
        // Healthy again with nothing queued: open at once.
        o.broker = BrokerHealth::Ok;
        assert_eq!(c.decide(&o, t0), Verdict::Admit);
    }

    #[test]
    fn jitter_spreads_within_half_the_base_and_at_least_a_second() {
        assert_eq!(jittered(1, 0.0), 1);
        assert_eq!(jittered(1, 0.99), 2);
        assert_eq!(jittered(10, 0.0), 10);
        assert_eq!(jittered(10, 0.99), 15);
        assert_eq!(jittered(MAX_RETRY_AFTER_S, 0.99), MAX_RETRY_AFTER_S);
        let seen: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| jittered(4, f64::from(i) / 100.0))
            .collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![4, 5, 6]);
    }

    #[test]
    fn returns_are_a_share_of_what_is_decided_now_when_that_is_less_than_the_estimate() {
        let t0 = Instant::now();
        let tenth = |i: u64| t0 + Duration::from_millis(100 * (i % 10));
        // Estimated 100/s: 30 a second may come back.
        let mut c = controller();
        let o = obs(0, 100.0);
        let told: Vec<u32> = (0..31).map(|i| c.book_return(&o, tenth(i), None)).collect();
        assert_eq!(told.iter().filter(|w| **w == 1).count(), 30);
        // Deciding 60/s with work queued, under the estimate: 18.
        let mut c = controller();
        let mut o = obs(0, 100.0);
        o.deciding_per_s = 60.0;
        let told: Vec<u32> = (0..31).map(|i| c.book_return(&o, tenth(i), None)).collect();
        assert_eq!(told.iter().filter(|w| **w == 1).count(), 18);
        // Deciding next to nothing (a stall): half the estimate still, 15 — not everyone sent
        // to the far end of the timetable.
        let mut c = controller();
        o.deciding_per_s = 1.0;
        let told: Vec<u32> = (0..31).map(|i| c.book_return(&o, tenth(i), None)).collect();
        assert_eq!(told.iter().filter(|w| **w == 1).count(), 15);
        assert!(told.iter().all(|w| *w <= 3), "{told:?}");
        // Deciding more than the estimate: the estimate.
        let mut c = controller();
        o.deciding_per_s = 400.0;
        let told: Vec<u32> = (0..31).map(|i| c.book_return(&o, tenth(i), None)).collect();
        assert_eq!(told.iter().filter(|w| **w == 1).count(), 30);
    }
}
