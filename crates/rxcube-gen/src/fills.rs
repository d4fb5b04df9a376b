//! Prescription fills of one store-day: new prescriptions arriving along the demand curves,
//! refills of the prescriptions taken in 30, 60, ... days earlier (found again by arithmetic
//! on the earlier day's id range, so nothing is remembered), the local or CRP channel, and the
//! processing time that decides whether a local fill is on time.
//!
//! Prescription numbers encode (day, pharmacy, sequence) with the day most significant, so they
//! grow with time and are unique without a global counter; the store's systems write them as
//! its style of id ([`ids::rx`]).

use rand_chacha::ChaCha8Rng;

use crate::GenError;
use crate::clock::{Stamp, weekday};
use crate::corrections;
use crate::demand::{DaySlots, HOURLY_DEMAND, WEEKDAY_DEMAND};
use crate::ids::{self, Label, RX_PER_STORE_DAY};
use crate::org::Store;
use crate::pos::Till;
use crate::records::FillRow;
use crate::seed::{self, Purpose};
use crate::store_day::StoreDay;
use crate::writer::EventFiles;

/// Days between refills (a 30-day supply).
pub(crate) const REFILL_INTERVAL_DAYS: i64 = 30;
/// Most refills of one prescription.
pub(crate) const MAX_REFILLS: i64 = 12;
/// How far back refills can reach, and so the offset of the day in a number.
const LOOKBACK_DAYS: i64 = REFILL_INTERVAL_DAYS * MAX_REFILLS;

/// Hours Central Refill Processing takes, from..to.
const CRP_HOURS: (i64, i64) = (4, 30);

/// The number of the `seq`-th new prescription of `pharmacy` on day index `day` (at least
/// `-LOOKBACK_DAYS`).
fn rx_number(pharmacies: u32, pharmacy: u32, day: i64, seq: u32) -> u64 {
    let store_day = (day + LOOKBACK_DAYS) as u64 * u64::from(pharmacies) + u64::from(pharmacy) - 1;
    store_day * RX_PER_STORE_DAY + u64::from(seq) + 1
}

/// The id of the `seq`-th new prescription of `store` on day index `day`.
fn rx_id(pharmacies: u32, store: &Store, day: i64, seq: u32) -> Label {
    ids::rx(store.systems, rx_number(pharmacies, store.id, day, seq))
}

/// A permutation of `0..len`, `i ↦ (offset + i·step) mod len` with `step` coprime to `len`:
/// the order in which a day's prescriptions come back for refills. The first k refilled the
/// n-th time are (mostly) among the first refilled the (n-1)-th time.
struct RefillOrder {
    len: u64,
    step: u64,
    offset: u64,
}

impl RefillOrder {
    fn new(seed: u64, pharmacy: u32, origin_day: i64, len: u32) -> Self {
        let len = u64::from(len.max(1));
        let mut rng = seed::stream(seed, Purpose::RefillOrder, pharmacy, origin_day);
        let offset = seed::between(&mut rng, 0, len as i64) as u64;
        let mut step = seed::between(&mut rng, 1, len as i64) as u64;
        while gcd(step, len) != 1 {
            step = step % len + 1;
        }
        RefillOrder { len, step, offset }
    }

    fn nth(&self, i: u32) -> u32 {
        ((self.offset + u64::from(i) * self.step) % self.len) as u32
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Generates the fills of a store-day and sells them. Returns the number of new
/// prescriptions, which sets the day's OTC-only traffic.
pub(crate) fn fill_day(
    sd: &mut StoreDay<'_>,
    slots: &DaySlots,
    till: &mut Till,
    out: &mut EventFiles,
    arrivals: &mut Vec<(Stamp, u8)>,
) -> Result<u32, GenError> {
    if !slots.is_open() {
        return Ok(0);
    }
    let chain = sd.chain;
    let store = sd.store;
    let volume = chain.volume(store);
    let today = volume.on(sd.day);
    let mut rng = seed::stream(chain.seed, Purpose::Fills, store.id, sd.day);

    arrivals.clear();
    arrivals.extend((0..today.count).map(|_| slots.sample(&mut rng)));
    arrivals.sort_unstable_by_key(|(at, _)| at.utc);
    for (seq, &(received, hour)) in arrivals.iter().enumerate() {
        let rx = rx_id(chain.pharmacies, store, sd.day, seq as u32);
        local_fill(sd, till, out, &mut rng, rx, 0, received, hour)?;
    }

    let busy = WEEKDAY_DEMAND[weekday(sd.epoch_day)];
    let persistence = store.profile.refill_persistence;
    for n in 1..=MAX_REFILLS {
        let origin = sd.day - n * REFILL_INTERVAL_DAYS;
        let then = volume.on(origin);
        if then.count == 0 {
            continue;
        }
        let expected = then.raw * persistence.powi(n as i32) * busy;
        let refills = seed::round_stochastic(&mut rng, expected).min(then.count);
        if refills == 0 {
            continue;
        }
        let order = RefillOrder::new(chain.seed, store.id, origin, then.count);
        for i in 0..refills {
            let rx = rx_id(chain.pharmacies, store, origin, order.nth(i));
            let (received, hour) = slots.sample(&mut rng);
            if seed::chance(&mut rng, store.profile.crp_share) {
                crp_fill(sd, till, out, &mut rng, rx, n as i32, received)?;
            } else {
                local_fill(sd, till, out, &mut rng, rx, n as i32, received, hour)?;
            }
        }
    }
    Ok(today.count)
}

/// Minutes the store takes to fill a prescription received in local hour `hour`: log-normal
/// around the store's median, slower in busy hours.
fn processing_minutes(sd: &StoreDay<'_>, hour: u8, rng: &mut ChaCha8Rng) -> f64 {
    let profile = &sd.store.profile;
    let load = 1.0 + 0.3 * (HOURLY_DEMAND[hour as usize % 24] - 1.0).max(0.0);
    let spread = (profile.processing_sigma * seed::normal(rng)).exp();
    (profile.processing_median * load * spread).clamp(1.0, 240.0)
}

#[allow(clippy::too_many_arguments)]
fn local_fill(
    sd: &mut StoreDay<'_>,
    till: &mut Till,
    out: &mut EventFiles,
    rng: &mut ChaCha8Rng,
    rx_id: Label,
    fill_no: i32,
    received: Stamp,
    hour: u8,
) -> Result<(), GenError> {
    let seconds = (processing_minutes(sd, hour, rng) * 60.0).round() as i64;
    let filled = received.utc + seconds;
    record_fill(sd, till, out, (rx_id, fill_no), received, filled, false)
}

fn crp_fill(
    sd: &mut StoreDay<'_>,
    till: &mut Till,
    out: &mut EventFiles,
    rng: &mut ChaCha8Rng,
    rx_id: Label,
    fill_no: i32,
    received: Stamp,
) -> Result<(), GenError> {
    let filled = received.utc + seed::between(rng, CRP_HOURS.0 * 3600, CRP_HOURS.1 * 3600);
    record_fill(sd, till, out, (rx_id, fill_no), received, filled, true)
}

/// Writes one fill (and any correction of it) and sells it at the till once filled.
fn record_fill(
    sd: &mut StoreDay<'_>,
    till: &mut Till,
    out: &mut EventFiles,
    (rx_id, fill_no): (Label, i32),
    received: Stamp,
    filled: i64,
    crp: bool,
) -> Result<(), GenError> {
    let row = FillRow {
        rx_id,
        fill_no,
        pharmacy_id: sd.store.label,
        channel: if crp { "crp" } else { "local" },
        received_at: received,
        filled_at: sd.clock.stamp(filled),
    };
    out.rx_fills.write(&row)?;
    corrections::fill(sd, &row, out)?;
    till.sell_fill(sd, out, rx_id, filled, crp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_and_grow_with_the_day() {
        let a = rx_number(12, 12, 5, crate::demand::MAX_NEW_FILLS_PER_DAY - 1);
        let b = rx_number(12, 1, 6, 0);
        assert!(a < b);
        assert_eq!(rx_number(12, 1, -LOOKBACK_DAYS, 0), 1);
        assert_ne!(rx_number(12, 3, 7, 4), rx_number(12, 4, 7, 4));
        // The first prescription of the first store-day of the demo chain (8 pharmacies).
        assert_eq!(rx_number(8, 1, 0, 0), 288_000_001);
        assert!(u64::from(crate::demand::MAX_NEW_FILLS_PER_DAY) <= RX_PER_STORE_DAY);
    }

    #[test]
    fn refill_orders_are_permutations() {
        for len in [1u32, 2, 7, 12, 100, 360] {
            let order = RefillOrder::new(5, 1, -30, len);
            let mut seen: Vec<u32> = (0..len).map(|i| order.nth(i)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..len).collect::<Vec<_>>(), "len {len}");
        }
    }
}
