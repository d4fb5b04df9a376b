//! One pharmacy's day, the unit of generation: its open hours, its random streams and the
//! order in which it runs: fills (and their sales and surveys), walk-in baskets, time cards.
//! A store-day depends only on the seed, the store and the date, never on other store-days.

use crate::clock::{Stamp, ZoneClock};
use crate::corrections::Corrector;
use crate::demand::DaySlots;
use crate::org::{Chain, Store};
use crate::payroll::{self, PlannedShift};
use crate::pos::Till;
use crate::writer::EventFiles;
use crate::{GenError, fills};

/// What every part of a store-day shares.
pub(crate) struct StoreDay<'a> {
    pub chain: &'a Chain,
    pub store: &'a Store,
    pub clock: &'a ZoneClock,
    /// Day index from the start of the range.
    pub day: i64,
    pub epoch_day: i64,
    /// Decides which records are corrected later, and how.
    pub corrections: Corrector,
}

/// Buffers reused from one store-day to the next.
#[derive(Default)]
pub(crate) struct Scratch {
    slots: DaySlots,
    arrivals: Vec<(Stamp, u8)>,
    shifts: Vec<PlannedShift>,
}

/// Generates day index `day` of `store`.
pub(crate) fn generate(
    chain: &Chain,
    store: &Store,
    day: i64,
    out: &mut EventFiles,
    scratch: &mut Scratch,
) -> Result<(), GenError> {
    let epoch_day = chain.start_day + day;
    let clock = chain.clock(store.zone);
    scratch.slots.fill(clock, &store.hours, epoch_day);
    let mut sd = StoreDay {
        chain,
        store,
        clock,
        day,
        epoch_day,
        corrections: Corrector::new(chain.seed, store.id, day),
    };
    let mut till = Till::new(&sd);
    let new_fills = fills::fill_day(
        &mut sd,
        &scratch.slots,
        &mut till,
        out,
        &mut scratch.arrivals,
    )?;
    till.otc_baskets(&mut sd, out, &scratch.slots, new_fills)?;
    payroll::work_day(&mut sd, out, &mut scratch.shifts)
}
