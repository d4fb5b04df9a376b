//! Accounting adjustments: a small share of fills, POS lines and time cards is written again
//! to the correction files with the same natural key and a changed, still valid value, to be
//! imported after the originals they replace.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::GenError;
use crate::payroll::cost_cents;
use crate::records::{FillRow, PayrollRow, PosRow};
use crate::seed::{self, Purpose};
use crate::store_day::StoreDay;
use crate::writer::EventFiles;

/// Share of records that are corrected later.
pub(crate) const CORRECTION_RATE: f64 = 0.003;

/// The kinds of records that get corrected.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Fill = 0,
    PosLine = 1,
    TimeCard = 2,
}

/// Decides which records of a store-day are corrected, and how. Each record is corrected with
/// probability [`CORRECTION_RATE`]; rather than a draw per record, the number of records until
/// the next correction is drawn (geometric), which is the same process at a fraction of the
/// cost.
pub(crate) struct Corrector {
    rng: ChaCha8Rng,
    until: [u32; 3],
}

impl Corrector {
    pub(crate) fn new(seed: u64, pharmacy: u32, day: i64) -> Self {
        let mut rng = seed::stream(seed, Purpose::Corrections, pharmacy, day);
        let until = [gap(&mut rng), gap(&mut rng), gap(&mut rng)];
        Corrector { rng, until }
    }

    /// True when this record of `kind` is to be corrected.
    fn due(&mut self, kind: Kind) -> bool {
        let left = &mut self.until[kind as usize];
        if *left > 0 {
            *left -= 1;
            false
        } else {
            *left = gap(&mut self.rng);
            true
        }
    }
}

/// Records to pass over before the next correction.
fn gap(rng: &mut ChaCha8Rng) -> u32 {
    let u = 1.0 - rng.random::<f64>();
    (u.ln() / (1.0 - CORRECTION_RATE).ln()).min(f64::from(u32::MAX)) as u32
}

/// A fill was recorded too early: it was filled some minutes, or a day, later.
pub(crate) fn fill(
    sd: &mut StoreDay<'_>,
    row: &FillRow,
    out: &mut EventFiles,
) -> Result<(), GenError> {
    if !sd.corrections.due(Kind::Fill) {
        return Ok(());
    }
    let rng = &mut sd.corrections.rng;
    let minutes = if seed::chance(rng, 0.25) {
        // Crosses into the next day (and now and then the next month).
        24 * 60 + seed::between(rng, 0, 120)
    } else {
        seed::between(rng, 15, 180)
    };
    let corrected = FillRow {
        filled_at: sd.clock.stamp(row.filled_at.utc + minutes * 60),
        ..*row
    };
    out.rx_fill_corrections.write(&corrected)
}

/// A line was rung up at the wrong amount; the corrected amount keeps the quantity's sign.
pub(crate) fn pos_line(
    sd: &mut StoreDay<'_>,
    row: &PosRow,
    out: &mut EventFiles,
) -> Result<(), GenError> {
    if !sd.corrections.due(Kind::PosLine) {
        return Ok(());
    }
    let change = seed::between(&mut sd.corrections.rng, 1, 500) * i64::from(row.quantity.signum());
    let corrected = PosRow {
        amount_cents: row.amount_cents + change,
        ..*row
    };
    out.pos_corrections.write(&corrected)
}

/// A time card was keyed wrong: a quarter hour fewer was worked, or the cost was off by a
/// dollar. `factor_x2` is twice the pay factor of the row (2 regular, 3 overtime).
pub(crate) fn time_card(
    sd: &mut StoreDay<'_>,
    row: &PayrollRow,
    rate_cents: i64,
    factor_x2: i64,
    out: &mut EventFiles,
) -> Result<(), GenError> {
    if !sd.corrections.due(Kind::TimeCard) {
        return Ok(());
    }
    let corrected = if row.hours > 50 {
        let hours = row.hours - 25;
        PayrollRow {
            hours,
            cost_cents: cost_cents(hours, rate_cents, factor_x2),
            ..*row
        }
    } else {
        PayrollRow {
            cost_cents: row.cost_cents + 100,
            ..*row
        }
    };
    out.payroll_corrections.write(&corrected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_the_correction_rate_of_records_is_corrected() {
        let mut corrector = Corrector::new(9, 1, 0);
        let n = 400_000;
        let due = (0..n).filter(|_| corrector.due(Kind::PosLine)).count();
        let rate = due as f64 / f64::from(n);
        assert!((rate - CORRECTION_RATE).abs() < 0.0005, "{rate}");
    }
}
