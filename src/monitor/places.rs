//! Whose places the timetable of returns holds ([`super::returns`]): a place is booked for a
//! request — a customer's checkout, by its `Idempotency-Key` — not for a 503.
//!
//! Without this, every 503 took a place: a client that retried before its time (or was shed
//! again when it came back) took another, and kept the first; one customer sending many
//! checkouts took as many places as it was shed, and could push everyone else's
//! `Retry-After` to the horizon. Here:
//! - a request shed again before its place comes keeps it (told the time to it, and counted in
//!   the tenth of a second it will come back in), unless the backlog now allows no return that
//!   early: then its place moves later;
//! - one that came back at its time and is shed again has used its place, and books anew;
//! - a customer holds at most [`PLACES_PER_CUSTOMER`] places: past that, its further requests
//!   are told its furthest place and take none, so they cannot crowd anyone else out (they are
//!   not counted in the timetable: how many come back together is bounded by the
//!   per-customer write limit, not by the room);
//! - at most [`PLACES_REMEMBERED`] requests are remembered: past that, a 503 books a place as
//!   before, forgotten (and the per-customer bound does not see it) — memory stays bounded
//!   however many clients are shed. Many customers together can still fill the timetable.
//!
//! Requests and customers are kept as keyed hashes (the process's own random keys): bounded
//! size whatever a key holds, and no attacker can choose two that collide.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Places one customer may hold in the timetable at once: as many checkouts as the default
/// per-customer write limit lets it send in a second.
pub const PLACES_PER_CUSTOMER: u32 = 10;

/// Requests remembered at most (with the maps' overhead, up to about 120 bytes each: 30 MB
/// when full).
pub const PLACES_REMEMBERED: usize = 1 << 18;

/// The whole seconds from tenth `now` to tenth `back`, rounded up (at least 1): a client told
/// them comes back no sooner than its place, and less than a second after it.
pub fn wait_until(back: u64, now: u64) -> u32 {
    u32::try_from(back.saturating_sub(now).div_ceil(10))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Who asks: a customer and the `Idempotency-Key` of its checkout.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub customer: &'a str,
    pub key: &'a str,
}

/// A remembered place: the tenth of a second its client comes back in.
#[derive(Debug, Clone, Copy)]
struct Place {
    back: u64,
    customer: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Held {
    count: u32,
    /// The furthest tenth among the customer's places.
    furthest: u64,
}

/// What to do for a requester, before any booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Book a place: for a request not remembered (then remembered), or in place of one
    /// that has come (its client came back and was shed again).
    New,
    /// Its place is at this tenth, still ahead.
    Placed(u64),
    /// Its place at this tenth is given up (the drain now allows no return that early):
    /// take it out of the timetable, then book anew.
    Moved(u64),
    /// The customer holds all the places it may: tell it this tenth, book nothing.
    Capped(u64),
}

/// The requests holding places, and how many each customer holds.
#[derive(Debug, Clone)]
pub struct Places {
    hasher: RandomState,
    places: HashMap<u64, Place>,
    held: HashMap<u64, Held>,
    /// Each remembered request once, in the bucket of a second (`second % len`) no later than
    /// its place's: when that second has passed, a place that has come is forgotten, one that
    /// moved later (places only ever move later) is carried to its own second's bucket.
    expiring: Vec<Vec<u64>>,
}

impl Places {
    pub fn new(seconds: usize) -> Places {
        Places {
            hasher: RandomState::new(),
            places: HashMap::new(),
            held: HashMap::new(),
            expiring: vec![Vec::new(); seconds.max(1)],
        }
    }

    fn ids(&self, who: Requester<'_>) -> (u64, u64) {
        (
            self.hasher.hash_one((who.customer, who.key)),
            self.hasher.hash_one(who.customer),
        )
    }

    /// Forgets the places of the seconds `from..to` (they have passed). The sampler moves the
    /// clock on twice a second, so a 503 seldom has a second's bucket to go through; a jump
    /// past the whole timetable (every place is at most its length ahead) forgets everything
    /// at once.
    pub fn expire(&mut self, from: u64, to: u64) {
        let len = self.expiring.len() as u64;
        if to >= from.saturating_add(len) {
            self.places.clear();
            self.held.clear();
            for bucket in &mut self.expiring {
                *bucket = Vec::new();
            }
            return;
        }
        for second in from..to {
            let Some(bucket) = self.expiring.get_mut((second % len) as usize) else {
                continue;
            };
            for request in std::mem::take(bucket) {
                let Some(place) = self.places.get(&request).copied() else {
                    continue;
                };
                let its_second = place.back / 10;
                if its_second <= second {
                    self.forget(request);
                } else if let Some(later) = self.expiring.get_mut((its_second % len) as usize) {
                    later.push(request);
                }
            }
        }
    }

    fn forget(&mut self, request: u64) {
        let Some(place) = self.places.remove(&request) else {
            return;
        };
        if let Some(held) = self.held.get_mut(&place.customer) {
            held.count = held.count.saturating_sub(1);
            if held.count == 0 {
                self.held.remove(&place.customer);
            }
        }
    }

    /// What the timetable holds for `who` at tenth `now`, when the drain allows no return
    /// sooner than `earliest` seconds. A place that has come (used) or is sooner than that
    /// stays remembered until [`Places::remember`] gives the request its new one.
    pub fn known(&mut self, who: Requester<'_>, now: u64, earliest: u32) -> Known {
        let (request, customer) = self.ids(who);
        if let Some(place) = self.places.get(&request).copied() {
            if place.back > now && wait_until(place.back, now) >= earliest {
                return Known::Placed(place.back);
            }
            if place.back > now {
                return Known::Moved(place.back);
            }
            // Its place came: a new one, in place of that one (not another of the customer's).
            return Known::New;
        }
        match self.held.get(&customer) {
            Some(held) if held.count >= PLACES_PER_CUSTOMER && held.furthest > now => {
                Known::Capped(held.furthest)
            }
            _ => Known::New,
        }
    }

    /// Remembers `who`'s place at tenth `back`, no earlier than a place it holds (nothing for a
    /// new request when memory is full).
    pub fn remember(&mut self, who: Requester<'_>, back: u64) {
        let (request, customer) = self.ids(who);
        if let Some(place) = self.places.get_mut(&request) {
            // Its entry stays where it is, and is carried on when that second passes.
            place.back = place.back.max(back);
            if let Some(held) = self.held.get_mut(&customer) {
                held.furthest = held.furthest.max(back);
            }
            return;
        }
        if self.places.len() >= PLACES_REMEMBERED {
            return;
        }
        let len = self.expiring.len() as u64;
        let Some(bucket) = self.expiring.get_mut(((back / 10) % len) as usize) else {
            return;
        };
        bucket.push(request);
        self.places.insert(request, Place { back, customer });
        let held = self.held.entry(customer).or_default();
        held.count = held.count.saturating_add(1);
        held.furthest = held.furthest.max(back);
    }

    /// Requests remembered now.
    pub fn remembered(&self) -> usize {
        self.places.len()
    }

    /// Entries in the buckets: one per remembered request.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.expiring.iter().map(Vec::len).sum()
    }
}
