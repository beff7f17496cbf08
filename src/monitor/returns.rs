//! When shed clients are told to come back: a `Retry-After` that counts the clients already told.
//!
//! A shed checkout's `Retry-After` used to be the time for the backlog to drain to where
//! admission reopens — a second or two under any overload — so every client shed in a second
//! came back together a second or two later, was mostly shed again, and came back again. After
//! the overload those returns alone were more than the capacity: the door stayed at its budget,
//! shedding, for 3.6–4.5 s after the rate fell to half the capacity (issue 20 expects ≤ 2 s).
//!
//! Here the seconds ahead are a timetable: each second may take [`RETURN_SHARE`] of what is
//! decided (see [`super::admission::Controller::book_return`]) in returning clients, the rest
//! being left for checkouts arriving fresh. A shed client is told the first second, no earlier
//! than the drain allows, that still has room, so — up to the horizon — the clients told to
//! come back come back no faster than that share of the capacity (but for the few a customer
//! sends past its share of places, told its furthest and counted nowhere, and a kept place
//! moved less than a second on, [`super::places`]): during the overload, and after it, when
//! they and the fresh checkouts at up to half the capacity fit together and the door stops
//! shedding. Every client is booked: a crowd larger than a minute's room is told
//! later seconds, up to [`RETURN_HORIZON_S`] (at 0.3 × 3,000 decisions/s, 540,000 clients);
//! told a time inside a minute and left unbooked, those would come back a minute later as a
//! second overload. Past the horizon the last second takes everyone (no cap there). A client
//! that comes back while fresh checkouts still fill the door may be shed again, and is booked
//! again. A place is held per checkout (customer and `Idempotency-Key`), not per 503, and a
//! customer holds only so many ([`super::places`]).
//!
//! Pure, like the controller: the caller passes the clock.

use std::time::Instant;

use super::places::{wait_until, Known, Places, Requester};

/// The share of the rate decided per second that returning clients may book. Under one half, so that
/// after an overload the returns and fresh checkouts at up to half the capacity stay together
/// under it, and the queue drains instead of holding at the budget.
pub const RETURN_SHARE: f64 = 0.3;

/// The furthest second a client is told (and booked): ten minutes. With every second up to it
/// taken, the client is told this one all the same (and counted in it).
pub const RETURN_HORIZON_S: u32 = 600;

/// Seconds kept ahead, the current one included.
const SLOTS: usize = RETURN_HORIZON_S as usize + 1;

/// Counts per unit of time (a second, a tenth), for the `counts.len()` units from `head` on:
/// unit `u` in `counts[u % len]`.
#[derive(Debug, Clone)]
struct Ring {
    head: u64,
    counts: Vec<u32>,
}

impl Ring {
    fn new(len: usize) -> Ring {
        Ring {
            head: 0,
            counts: vec![0; len],
        }
    }

    /// Moves on to unit `to`: the units that have passed are emptied for reuse.
    fn advance(&mut self, to: u64) {
        let len = self.counts.len() as u64;
        for unit in self.head..to.min(self.head + len) {
            if let Some(count) = self.count(unit) {
                *count = 0;
            }
        }
        self.head = self.head.max(to);
    }

    fn count(&mut self, unit: u64) -> Option<&mut u32> {
        let len = self.counts.len() as u64;
        self.counts.get_mut((unit % len.max(1)) as usize)
    }
}

/// Clients told to come back, per second ahead and per tenth of a second: a client shed at
/// some fraction of a second comes back at the same fraction (a `Retry-After` is whole
/// seconds), so clients shed together would come back together, a clump the door's budget
/// may not hold; each tenth takes at most a tenth of the second's room.
#[derive(Debug, Clone)]
pub struct Returns {
    origin: Option<Instant>,
    seconds: Ring,
    tenths: Ring,
    /// Every second before this one (since `origin`) holds at least `full_at` clients: where
    /// a search may start (a full timetable is not walked a second at a time by every 503).
    full_until: u64,
    full_at: u32,
    /// Whose the places are ([`super::places`]).
    places: Places,
}

impl Default for Returns {
    fn default() -> Self {
        Returns {
            origin: None,
            seconds: Ring::new(SLOTS),
            tenths: Ring::new(SLOTS * 10),
            full_until: 0,
            full_at: 0,
            places: Places::new(SLOTS),
        }
    }
}

impl Returns {
    /// The current tenth of a second (since the first use); what has passed is emptied.
    fn advance(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let tenth = (now.saturating_duration_since(origin).as_millis() / 100) as u64;
        self.places.expire(self.seconds.head, tenth / 10);
        self.seconds.advance(tenth / 10);
        self.tenths.advance(tenth);
        tenth
    }

    /// Books a return for a client shed at `now`: the first second from `earliest` on (the
    /// next one at the soonest) with fewer than `room` booked, and fewer than a tenth of it in
    /// the tenth the client will come back in — or, every one taken, the last. Returns the
    /// seconds to wait.
    pub fn book(&mut self, now: Instant, earliest: u32, room: f64) -> u32 {
        let tenth = self.advance(now);
        self.book_at(tenth, earliest, room).0
    }

    /// As [`Returns::book`], for a request that may hold a place already
    /// ([`super::places`]): shed again before its place comes, it is told that place again
    /// and takes no other; a customer holding all the places it may is told its furthest and
    /// takes none.
    pub fn book_for(
        &mut self,
        now: Instant,
        earliest: u32,
        room: f64,
        who: Option<Requester<'_>>,
    ) -> u32 {
        let tenth = self.advance(now);
        let Some(who) = who else {
            return self.book_at(tenth, earliest, room).0;
        };
        let earliest = earliest.clamp(1, RETURN_HORIZON_S);
        match self.places.known(who, tenth, earliest) {
            Known::Placed(back) => {
                // Told whole seconds, the client comes back at the fraction of a second it
                // asks at now: its place moves there (less than a second on).
                let wait = wait_until(back, tenth).min(RETURN_HORIZON_S);
                let at = tenth + 10 * u64::from(wait);
                if at != back {
                    self.unbook(back);
                    self.count(at);
                    self.places.remember(who, at);
                }
                return wait;
            }
            Known::Capped(back) => return wait_until(back, tenth).max(earliest),
            Known::Moved(back) => self.unbook(back),
            Known::New => {}
        }
        let (wait, back) = self.book_at(tenth, earliest, room);
        self.places.remember(who, back);
        wait
    }

    /// Gives back a place at tenth `back` (still ahead).
    fn unbook(&mut self, back: u64) {
        for count in [self.seconds.count(back / 10), self.tenths.count(back)]
            .into_iter()
            .flatten()
        {
            *count = count.saturating_sub(1);
        }
        // The seconds before the pointer may no longer all be full.
        self.full_until = self.full_until.min(back / 10);
    }

    /// Books at tenth `tenth` (the clock advanced): the seconds to wait, and the tenth the
    /// client comes back in.
    fn book_at(&mut self, tenth: u64, earliest: u32, room: f64) -> (u32, u64) {
        let per_second = room.max(1.0).min(f64::from(u32::MAX)) as u32;
        let per_tenth = per_second.div_ceil(10);
        let second = tenth / 10;
        let last = second + u64::from(RETURN_HORIZON_S);
        // Seconds known full at this room (or a smaller one) are skipped; the pointer moves on
        // over those found full since.
        if per_second > self.full_at {
            self.full_until = 0;
        }
        self.full_at = per_second;
        let mut full_until = self.full_until.max(second + 1);
        while full_until < last
            && self
                .seconds
                .count(full_until)
                .is_some_and(|n| *n >= per_second)
        {
            full_until += 1;
        }
        self.full_until = full_until;
        let from = (full_until - second).min(u64::from(RETURN_HORIZON_S)) as u32;
        let mut wait = earliest.clamp(1, RETURN_HORIZON_S).max(from);
        while wait < RETURN_HORIZON_S {
            let back = tenth + 10 * u64::from(wait);
            let second_full = self
                .seconds
                .count(back / 10)
                .is_some_and(|n| *n >= per_second);
            let tenth_full = self.tenths.count(back).is_some_and(|n| *n >= per_tenth);
            if !second_full && !tenth_full {
                break;
            }
            wait += 1;
        }
        let back = tenth + 10 * u64::from(wait);
        self.count(back);
        (wait, back)
    }

    /// Counts a client coming back in tenth `back`.
    fn count(&mut self, back: u64) {
        for count in [self.seconds.count(back / 10), self.tenths.count(back)]
            .into_iter()
            .flatten()
        {
            *count = count.saturating_add(1);
        }
    }

    /// Moves the clock on (the sampler calls it, so that a 503 seldom forgets the places of
    /// passed seconds itself).
    pub fn tick(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Clients booked to come back from now on, and the requests remembered.
    pub fn ahead(&mut self, now: Instant) -> (u64, usize) {
        self.advance(now);
        let booked = self.seconds.counts.iter().map(|n| u64::from(*n)).sum();
        (booked, self.places.remembered())
    }

    /// Clients booked to come back in the second `wait` seconds after `now`'s (0 for a second
    /// out of range).
    #[cfg(test)]
    pub fn booked(&mut self, now: Instant, wait: u32) -> u32 {
        let second = self.advance(now) / 10;
        if wait > RETURN_HORIZON_S {
            return 0;
        }
        self.seconds
            .count(second + u64::from(wait))
            .map_or(0, |count| *count)
    }
}

#[cfg(test)]
#[path = "returns_tests.rs"]
mod tests;
