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
mod tests {
    use super::*;
    use crate::monitor::admission::tests::{controller, obs};
    use crate::monitor::admission::{jittered, Controller, Observation, Verdict};
    use crate::monitor::places::PLACES_PER_CUSTOMER;
    use std::time::Duration;

    fn tenths(n: u64) -> Duration {
        Duration::from_millis(100 * n)
    }

    #[test]
    fn each_second_takes_its_room_then_the_next_is_told() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        // Shed a tenth of a second apart (each in a tenth of its own).
        let told: Vec<u32> = (0..7).map(|i| r.book(t0 + tenths(i), 1, 3.0)).collect();
        assert_eq!(told, vec![1, 1, 1, 2, 2, 2, 3]);
        // Never before the drain allows, and never second 0.
        assert_eq!(r.book(t0 + tenths(7), 5, 3.0), 5);
        assert_eq!(r.book(t0 + tenths(8), 0, 3.0), 3);
        assert_eq!(r.booked(t0, 3), 2);
        // A client shed 1.5 s later comes back at the same fraction of a second: 1 s from
        // then is second 2 (full), 2 s from then second 3 (one place left).
        let later = t0 + tenths(15);
        assert_eq!(r.book(later, 1, 3.0), 2);
        assert_eq!(r.booked(later, 1), 3);
    }

    #[test]
    fn clients_shed_together_are_spread_over_seconds_a_tenth_of_the_room_at_a_time() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        // 100 a second, but 25 shed in the same instant would come back in the same instant:
        // ten in each second.
        let told: Vec<u32> = (0..25).map(|_| r.book(t0, 1, 100.0)).collect();
        assert_eq!(told, [vec![1; 10], vec![2; 10], vec![3; 5]].concat());
        // Shed half a second later, the next clients come back in second 1's other tenths.
        assert_eq!(r.book(t0 + tenths(5), 1, 100.0), 1);
        assert_eq!(r.booked(t0, 1), 11);
        // A second's room under ten: still at most one a tenth.
        let mut r = Returns::default();
        assert_eq!(r.book(t0, 1, 3.0), 1);
        assert_eq!(r.book(t0, 1, 3.0), 2);
    }

    #[test]
    fn seconds_that_passed_are_free_again() {
        let h = RETURN_HORIZON_S;
        let mut r = Returns::default();
        let t0 = Instant::now();
        for _ in 0..h {
            r.book(t0, 1, 1.0);
        }
        assert_eq!(r.booked(t0, h), 1);
        // A horizon on, every booked second but the last has passed; the last is now.
        let later = t0 + Duration::from_secs(u64::from(h));
        assert_eq!(r.booked(later, 0), 1);
        assert_eq!(r.booked(later, 1), 0);
        assert_eq!(r.book(later, 1, 1.0), 1);
        // Long idle: nothing is left over either.
        let much_later = later + Duration::from_secs(36_000);
        for wait in 0..=h {
            assert_eq!(r.booked(much_later, wait), 0, "second {wait}");
        }
        assert_eq!(r.book(much_later, 1, 1.0), 1);
    }

    #[test]
    fn a_crowd_is_booked_beyond_the_minute_up_to_the_horizon_and_counted_there() {
        let h = RETURN_HORIZON_S;
        let mut r = Returns::default();
        let t0 = Instant::now();
        // 100 a second, shed over the first second: the 6,001st client is told second 61.
        for i in 0..6_000 {
            assert!(r.book(t0 + tenths(i % 10), 1, 100.0) <= 60);
        }
        assert_eq!(r.booked(t0, 60), 100);
        assert_eq!(r.book(t0, 1, 100.0), 61);
        // Every second taken: the horizon, each one counted in it.
        let mut r = Returns::default();
        for _ in 0..h {
            r.book(t0, 1, 1.0);
        }
        assert_eq!(r.book(t0, 1, 1.0), h);
        assert_eq!(r.book(t0, 1, 1.0), h);
        assert_eq!(r.booked(t0, h), 3);
    }

    #[test]
    fn more_room_opens_the_seconds_a_smaller_room_had_filled() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        // One a second: 30 clients fill seconds 1–30.
        for _ in 0..30 {
            r.book(t0, 1, 1.0);
        }
        assert_eq!(r.book(t0, 1, 1.0), 31);
        // Ten a second now: second 1 has room again, for a client shed half a second later
        // (the tenth the others come back in holds its one a tenth).
        assert_eq!(r.book(t0 + tenths(5), 1, 10.0), 1);
        // Back to one: full up to 31 (and 1 now holds two).
        assert_eq!(r.book(t0, 1, 1.0), 32);
        assert_eq!(r.booked(t0, 1), 2);
    }

    #[test]
    fn a_room_under_one_still_takes_one_a_second() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        assert_eq!(r.book(t0, 1, 0.0), 1);
        assert_eq!(r.book(t0, 1, f64::NAN), 2);
        assert_eq!(r.book(t0, 1, 0.2), 3);
        assert_eq!(r.book(t0, 1, f64::INFINITY), 1);
    }

    fn who<'a>(customer: &'a str, key: &'a str) -> Option<Requester<'a>> {
        Some(Requester { customer, key })
    }

    #[test]
    fn a_request_shed_again_before_its_place_comes_is_told_that_place_and_takes_no_other() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        assert_eq!(r.book_for(t0, 1, 1.0, who("ana", "k1")), 1);
        // Its retries, before second 1: the same place, nothing more booked.
        for i in 1..=9 {
            assert_eq!(r.book_for(t0 + tenths(i), 1, 1.0, who("ana", "k1")), 1);
        }
        assert_eq!(r.booked(t0, 1), 1);
        assert_eq!(r.booked(t0, 2), 0);
        // The same key of another customer is another request.
        assert_eq!(r.book_for(t0, 1, 1.0, who("bia", "k1")), 2);
        // A 503 without a requester books every time, as before.
        assert_eq!(r.book_for(t0, 1, 1.0, None), 3);
        assert_eq!(r.book_for(t0, 1, 1.0, None), 4);
        assert_eq!(r.places.remembered(), 2);
        // Told 5 s, back after 1 s, when seconds 2–4 have room: still its place, 4 s on — a
        // client that retries early does not jump ahead of those told sooner.
        let mut r = Returns::default();
        assert_eq!(r.book_for(t0, 5, 1.0, who("cy", "k1")), 5);
        let early = t0 + tenths(10);
        assert_eq!(r.book_for(early, 1, 1.0, who("cy", "k1")), 4);
        assert_eq!(r.booked(t0, 5), 1);
        assert_eq!(r.book_for(early, 1, 1.0, who("di", "k1")), 1);
    }

    #[test]
    fn a_request_shed_again_when_its_place_came_books_anew() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        assert_eq!(r.book_for(t0, 1, 1.0, who("ana", "k1")), 1);
        // Back in its second and shed again: that place is used; the next free second.
        let back = t0 + tenths(10);
        assert_eq!(r.book_for(back, 1, 1.0, who("ana", "k1")), 1);
        assert_eq!(r.booked(back, 0), 1);
        assert_eq!(r.booked(back, 1), 1);
        assert_eq!(r.places.remembered(), 1);
    }

    #[test]
    fn a_place_sooner_than_the_drain_now_allows_moves_and_frees_its_second() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        assert_eq!(r.book_for(t0, 1, 1.0, who("ana", "k1")), 1);
        assert_eq!(r.book_for(t0, 1, 1.0, who("bia", "k1")), 2);
        // The backlog grew: no return before 5 s. Ana's place moves there.
        assert_eq!(r.book_for(t0, 5, 1.0, who("ana", "k1")), 5);
        assert_eq!(r.booked(t0, 1), 0);
        assert_eq!(r.booked(t0, 5), 1);
        // Second 1 is free again, and found (though searches had passed it as full).
        assert_eq!(r.book_for(t0, 1, 1.0, who("cy", "k1")), 1);
        assert_eq!(r.book_for(t0, 1, 1.0, who("di", "k1")), 3);
        assert_eq!(r.places.remembered(), 4);
        // Moved again and again (an impatient client while the backlog grows): still one
        // place and one entry each.
        for earliest in 6..100 {
            assert_eq!(r.book_for(t0, earliest, 1.0, who("ana", "k1")), earliest);
        }
        assert_eq!(r.ahead(t0), (4, 4));
        assert_eq!(r.places.entries(), 4);
    }

    #[test]
    fn a_place_kept_moves_to_the_tenth_its_client_will_come_back_in() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        r.tick(t0);
        // Shed at 0.5 s, told 5 s: its place is at 5.5 s, in second 5.
        assert_eq!(r.book_for(t0 + tenths(5), 5, 1.0, who("ana", "k1")), 5);
        assert_eq!(r.booked(t0, 5), 1);
        // Shed again at 1.1 s: told 5 s (4.4 rounded up), it comes back at 6.1 s — counted
        // in second 6, not 5; still one place.
        assert_eq!(r.book_for(t0 + tenths(11), 1, 1.0, who("ana", "k1")), 5);
        assert_eq!(r.booked(t0, 5), 0);
        assert_eq!(r.booked(t0, 6), 1);
        // And kept there: again at 1.3 s, told 5 s (4.8 rounded up): 6.3 s, second 6.
        assert_eq!(r.book_for(t0 + tenths(13), 1, 1.0, who("ana", "k1")), 5);
        assert_eq!(r.booked(t0, 6), 1);
        assert_eq!(r.places.remembered(), 1);
        // One entry, left in second 5's bucket: carried to second 6's when 5 has passed, and
        // forgotten when 6 has.
        assert_eq!(r.places.entries(), 1);
        r.tick(t0 + tenths(65));
        assert_eq!((r.places.remembered(), r.places.entries()), (1, 1));
        r.tick(t0 + tenths(70));
        assert_eq!((r.places.remembered(), r.places.entries()), (0, 0));
        assert_eq!(r.ahead(t0 + tenths(70)).0, 0);
    }

    #[test]
    fn a_jump_past_the_timetable_forgets_every_place_at_once() {
        let mut r = Returns::default();
        let t0 = Instant::now();
        for i in 0..PLACES_PER_CUSTOMER {
            r.book_for(t0, 1, 1.0, who("flood", &format!("k{i}")));
        }
        assert_eq!(r.ahead(t0), (u64::from(PLACES_PER_CUSTOMER), 10));
        let later = t0 + Duration::from_secs(u64::from(RETURN_HORIZON_S) + 5);
        assert_eq!(r.ahead(later), (0, 0));
        // The customer's places are gone with them: a new one is booked, not capped.
        assert_eq!(r.book_for(later, 1, 1.0, who("flood", "k99")), 1);
        assert_eq!(r.ahead(later), (1, 1));
    }

    #[test]
    fn one_customer_holds_its_share_of_places_and_cannot_crowd_others_out() {
        let cap = PLACES_PER_CUSTOMER;
        let mut r = Returns::default();
        let t0 = Instant::now();
        // A flood of checkouts from one customer, one place a second.
        let told: Vec<u32> = (0..50)
            .map(|i| r.book_for(t0, 1, 1.0, who("flood", &format!("k{i}"))))
            .collect();
        let expected: Vec<u32> = (1..=cap)
            .chain(std::iter::repeat_n(cap, 50 - cap as usize))
            .collect();
        assert_eq!(told, expected);
        assert_eq!(r.booked(t0, cap + 1), 0);
        // Another customer is told the next second, not one after the flood's 50.
        assert_eq!(r.book_for(t0, 1, 1.0, who("ana", "k1")), cap + 1);
        // Once the flood's places have come and gone, it may book again.
        let later = t0 + Duration::from_secs(u64::from(cap) + 1);
        assert_eq!(r.book_for(later, 1, 1.0, who("flood", "k99")), 1);
        // Remembered: ana's place (second 11, now) and that one; the flood's ten forgotten.
        assert_eq!(r.places.remembered(), 2);
    }

    #[test]
    fn the_requests_remembered_are_bounded_and_forgotten_once_their_places_pass() {
        use crate::monitor::places::PLACES_REMEMBERED;
        let mut r = Returns::default();
        let t0 = Instant::now();
        let customers: Vec<String> = (0..PLACES_REMEMBERED + 5)
            .map(|i| format!("c{i}"))
            .collect();
        for c in &customers {
            r.book_for(t0, 1, 1e9, who(c, "k"));
        }
        assert_eq!(r.places.remembered(), PLACES_REMEMBERED);
        // The ones past the bound still booked their place (forgotten).
        assert_eq!(r.booked(t0, 1), PLACES_REMEMBERED as u32 + 5);
        let later = t0 + Duration::from_secs(2);
        r.book(later, 1, 1.0);
        assert_eq!(r.places.remembered(), 0);
    }

    /// A model of issue 20's run: checkouts arrive fresh at `3 × drain` for 30 s, then at half
    /// the drain for `tail` s; the queue is decided at `drain`/s; a shed client comes back after
    /// what it was told, up to ten attempts (as the load generator's), until the last fresh
    /// arrival. Returns the checkouts admitted during the overload and the time of every 503 (s).
    fn issue_20_run(
        tail: f64,
        mut told: impl FnMut(&mut Controller, &Observation, Instant, u64) -> u32,
    ) -> (u64, Vec<f64>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let drain = 400.0;
        let t0 = Instant::now();
        let mut c = controller();
        let mut backlog = 0.0_f64;
        let mut last = 0.0_f64;
        // (when, in µs; attempts made; the client)
        let mut returns: BinaryHeap<Reverse<(u64, u32, u64)>> = BinaryHeap::new();
        let fresh = (0..(3.0 * drain * 30.0) as u64)
            .map(|k| k as f64 / (3.0 * drain))
            .chain((0..(0.5 * drain * tail) as u64).map(|k| 30.0 + k as f64 / (0.5 * drain)));
        let mut fresh = fresh.peekable();
        let (mut admitted, mut sheds, mut clients) = (0, Vec::new(), 0);
        loop {
            let next_return = returns.peek().map(|Reverse((at, ..))| *at as f64 / 1e6);
            let a_return_first = match (fresh.peek(), next_return) {
                (Some(f), Some(r)) => r < *f,
                (None, Some(r)) if r < 30.0 + tail => true,
                (Some(_), _) => false,
                (None, _) => break,
            };
            let (at, attempts, client) = if a_return_first {
                let Reverse((at, attempts, client)) = returns.pop().unwrap();
                (at as f64 / 1e6, attempts, client)
            } else {
                clients += 1;
                (fresh.next().unwrap(), 0, clients)
            };
            backlog = (backlog - drain * (at - last)).max(0.0);
            last = at;
            let o = obs(backlog.ceil() as u64, drain);
            let now = t0 + Duration::from_secs_f64(at);
            match c.decide(&o, now) {
                Verdict::Admit => {
                    backlog += 1.0;
                    if at < 30.0 {
                        admitted += 1;
                    }
                }
                Verdict::Shed { .. } => {
                    sheds.push(at);
                    let wait = told(&mut c, &o, now, client);
                    if attempts + 1 < 10 {
                        let back = ((at + f64::from(wait)) * 1e6) as u64;
                        returns.push(Reverse((back, attempts + 1, client)));
                    }
                }
            }
        }
        (admitted, sheds)
    }

    #[test]
    fn after_an_overload_the_clients_told_to_come_back_fit_beside_the_fresh_ones() {
        // Booked: the door is full during the overload (goodput held), and within a second of
        // the fall nobody is shed any more — nor in the next ten minutes, when the last of the
        // crowd has come back: the returns fit in the room left to them.
        // The same with each client's place held for it (its customer and key), as intake
        // does: each client is a customer of its own, as the load generator's.
        for held in [false, true] {
            let (admitted, sheds) = issue_20_run(700.0, |c, o, now, client| {
                let customer = client.to_string();
                let who = held.then_some(Requester {
                    customer: &customer,
                    key: "k",
                });
                c.book_return(o, now, who)
            });
            assert!(
                admitted as f64 >= 0.95 * 400.0 * 30.0,
                "admitted {admitted} (held {held})"
            );
            let last = sheds.iter().copied().fold(0.0, f64::max);
            assert!(
                last < 31.0,
                "the last 503 {last:.2} s, the rate fell at 30 s (held {held})"
            );
        }
        // Told only the time to drain (jittered), every client shed comes back within a second
        // or two, together: the door stays at its budget long after the fall.
        let mut unit = 0.0;
        let (_, sheds) = issue_20_run(10.0, |c, o, _, _| {
            unit = (unit + 0.618_034) % 1.0;
            jittered(c.retry_after(o), unit)
        });
        let late = sheds.iter().filter(|t| **t > 32.0).count();
        assert!(late > 1000, "{late} shed more than 2 s after the fall");
    }
}
