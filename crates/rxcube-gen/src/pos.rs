//! The till of one store-day: every fill is sold in a basket (an rx line at the copay, often
//! with OTC lines), walk-in OTC-only baskets follow the demand curve, and a few baskets come
//! back as returns (negative quantity and amount). Customers who do not wait come back while
//! the store is open.

use rand_chacha::ChaCha8Rng;

use crate::GenError;
use crate::corrections;
use crate::demand::DaySlots;
use crate::ids::{self, Label};
use crate::records::PosRow;
use crate::seed::{self, Purpose};
use crate::store_day::StoreDay;
use crate::surveys::Surveys;
use crate::writer::EventFiles;

/// Share of baskets from which a line is returned later.
pub(crate) const RETURN_RATE: f64 = 0.015;

/// Copay tiers in cents and their weights; some plans charge coinsurance instead.
const COPAYS: [i64; 7] = [0, 500, 1_000, 1_500, 2_000, 3_500, 5_000];
const COPAY_WEIGHTS: [f64; 7] = [0.08, 0.20, 0.25, 0.17, 0.12, 0.10, 0.08];
const COINSURANCE: f64 = 0.12;
/// Weights of 0, 1, 2, ... OTC lines in a basket.
const OTC_LINES: [f64; 5] = [0.55, 0.25, 0.12, 0.05, 0.03];
/// Weights of buying 1, 2 or 3 of an OTC item.
const OTC_QUANTITY: [f64; 3] = [0.80, 0.15, 0.05];

/// Sells the baskets of one store-day.
pub(crate) struct Till {
    rng: ChaCha8Rng,
    /// Day index × pharmacies + store index: unique to the store-day.
    store_day: u64,
    day: u64,
    baskets: u64,
    surveys: Surveys,
}

impl Till {
    pub(crate) fn new(sd: &StoreDay<'_>) -> Self {
        let chain = sd.chain;
        // Store-days are in the range (day index >= 0), so these are never negative.
        let day = sd.day.max(0) as u64;
        Till {
            rng: seed::stream(chain.seed, Purpose::Sales, sd.store.id, sd.day),
            store_day: day * u64::from(chain.pharmacies) + u64::from(sd.store.id) - 1,
            day,
            baskets: 0,
            surveys: Surveys::new(sd),
        }
    }

    /// The id of the next basket.
    fn next_txn(&mut self, sd: &StoreDay<'_>) -> Label {
        let txn = ids::txn(sd.store.systems, self.store_day, self.day, self.baskets);
        self.baskets += 1;
        txn
    }

    /// Sells a fill that is ready at `ready` (UTC seconds): right away to a waiting customer,
    /// or when the customer comes back (always for CRP fills, which ship to the store).
    pub(crate) fn sell_fill(
        &mut self,
        sd: &mut StoreDay<'_>,
        out: &mut EventFiles,
        rx_id: Label,
        ready: i64,
        crp: bool,
    ) -> Result<(), GenError> {
        let waits = !crp && seed::chance(&mut self.rng, sd.store.profile.waiter_share);
        let sold = if waits {
            ready + seed::between(&mut self.rng, 60, 15 * 60)
        } else {
            let back = ready + seed::between(&mut self.rng, 2 * 3600, 72 * 3600);
            sd.store.hours.next_open(sd.clock, back, &mut self.rng)
        };
        self.basket(sd, out, sold, Some(rx_id))
    }

    /// Walk-in baskets with OTC lines only; `new_fills` sets the day's traffic.
    pub(crate) fn otc_baskets(
        &mut self,
        sd: &mut StoreDay<'_>,
        out: &mut EventFiles,
        slots: &DaySlots,
        new_fills: u32,
    ) -> Result<(), GenError> {
        if !slots.is_open() {
            return Ok(());
        }
        let expected = f64::from(new_fills) * sd.store.profile.otc_basket_ratio;
        let count = seed::round_stochastic(&mut self.rng, expected);
        for _ in 0..count {
            let (at, _) = slots.sample(&mut self.rng);
            self.basket(sd, out, at.utc, None)?;
        }
        Ok(())
    }

    fn basket(
        &mut self,
        sd: &mut StoreDay<'_>,
        out: &mut EventFiles,
        sold: i64,
        rx_id: Option<Label>,
    ) -> Result<(), GenError> {
        let txn_id = self.next_txn(sd);
        let rng = &mut self.rng;
        let mut row = PosRow {
            txn_id,
            line_no: 0,
            pharmacy_id: sd.store.label,
            sold_at: sd.clock.stamp(sold),
            kind: "otc",
            quantity: 1,
            amount_cents: 0,
            rx_id: None,
        };
        let otc_lines = seed::weighted(rng, &OTC_LINES) + usize::from(rx_id.is_none());
        let returns = seed::chance(rng, RETURN_RATE);
        let mut returned: Option<PosRow> = None;

        if let Some(rx) = rx_id {
            row.line_no += 1;
            row.kind = "rx";
            row.rx_id = Some(rx);
            row.quantity = 1;
            row.amount_cents = copay(rng);
            out.pos.write(&row)?;
            corrections::pos_line(sd, &row, out)?;
            returned = Some(row);
        }
        for _ in 0..otc_lines {
            row.line_no += 1;
            row.kind = "otc";
            row.rx_id = None;
            row.quantity = seed::weighted(rng, &OTC_QUANTITY) as i32 + 1;
            let unit = 99 + 100 * seed::between(rng, 0, 25);
            row.amount_cents = i64::from(row.quantity) * unit;
            out.pos.write(&row)?;
            corrections::pos_line(sd, &row, out)?;
            // Every line is equally likely to be the one returned (reservoir of one).
            if returned.is_none() || seed::chance(rng, 1.0 / f64::from(row.line_no)) {
                returned = Some(row);
            }
        }
        self.surveys.after_basket(sd, out, sold)?;

        if let Some(line) = returned.filter(|_| returns) {
            let back = sold + seed::between(&mut self.rng, 3600, 96 * 3600);
            let at = sd.store.hours.next_open(sd.clock, back, &mut self.rng);
            let row = PosRow {
                txn_id: self.next_txn(sd),
                line_no: 1,
                sold_at: sd.clock.stamp(at),
                quantity: -line.quantity,
                amount_cents: -line.amount_cents,
                ..line
            };
            out.pos.write(&row)?;
            corrections::pos_line(sd, &row, out)?;
        }
        Ok(())
    }
}

/// The customer's share of a prescription, in cents.
fn copay(rng: &mut ChaCha8Rng) -> i64 {
    if seed::chance(rng, COINSURANCE) {
        seed::between(rng, 100, 12_000)
    } else {
        COPAYS[seed::weighted(rng, &COPAY_WEIGHTS) % COPAYS.len()]
    }
}
