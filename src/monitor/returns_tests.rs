//! The timetable of returns' tests: its rules one by one, places held per checkout, and a
//! model of issue 20's run.
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
