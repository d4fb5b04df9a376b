//! When customers come: the weekly and intraday demand curves, each store's opening hours, the
//! daily number of new prescriptions (recomputable for any day, so refills can point back at
//! the prescriptions of an earlier day without remembering them), and the open hours of one
//! store-day in which arrivals are drawn.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::clock::{SECS_PER_DAY, Stamp, ZoneClock, weekday};
use crate::seed::{self, Purpose};

/// Relative demand by day of the week, Monday first: busy Mondays, quiet Sundays.
pub(crate) const WEEKDAY_DEMAND: [f64; 7] = [1.25, 1.05, 1.0, 1.0, 1.1, 0.8, 0.6];

/// Relative demand by local hour of the day: a lunch peak and a larger after-work peak, a
/// trickle overnight (seen only at 24-hour stores).
pub(crate) const HOURLY_DEMAND: [f64; 24] = [
    0.05, 0.04, 0.03, 0.03, 0.04, 0.08, // 00-05
    0.20, 0.45, 0.80, 1.00, 1.05, 1.15, // 06-11
    1.50, 1.45, 1.05, 1.00, 1.15, 1.55, // 12-17
    1.60, 1.25, 0.90, 0.60, 0.30, 0.12, // 18-23
];

/// Upper bound of new prescriptions per store-day, so their sequence fits the id layout.
pub(crate) const MAX_NEW_FILLS_PER_DAY: u32 = 60_000;

/// Opening hours of one day, in minutes after local midnight (whole hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hours {
    pub open: i64,
    pub close: i64,
}

impl Hours {
    const fn new(open_hour: i64, close_hour: i64) -> Self {
        Hours {
            open: open_hour * 60,
            close: close_hour * 60,
        }
    }
}

/// A store's weekly opening hours, Monday first; `None` = closed that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpeningHours {
    days: [Option<Hours>; 7],
}

impl OpeningHours {
    pub(crate) const fn around_the_clock() -> Self {
        OpeningHours {
            days: [Some(Hours::new(0, 24)); 7],
        }
    }

    /// The same hours Monday to Friday, others on Saturday and Sunday (hours as `(open,
    /// close)` in whole hours).
    pub(crate) const fn weekly(
        weekdays: (i64, i64),
        saturday: (i64, i64),
        sunday: Option<(i64, i64)>,
    ) -> Self {
        let wd = Some(Hours::new(weekdays.0, weekdays.1));
        let sun = match sunday {
            Some((o, c)) => Some(Hours::new(o, c)),
            None => None,
        };
        OpeningHours {
            days: [
                wd,
                wd,
                wd,
                wd,
                wd,
                Some(Hours::new(saturday.0, saturday.1)),
                sun,
            ],
        }
    }

    pub(crate) fn is_all_day(&self) -> bool {
        self.days.iter().all(|d| {
            *d == Some(Hours {
                open: 0,
                close: 1440,
            })
        })
    }

    /// Hours on weekday `weekday` (Monday = 0).
    pub(crate) fn on(&self, weekday: usize) -> Option<Hours> {
        self.days.get(weekday).copied().flatten()
    }

    pub(crate) fn hours_per_week(&self) -> i32 {
        let minutes: i64 = self.days.iter().flatten().map(|h| h.close - h.open).sum();
        (minutes / 60) as i32
    }

    /// `utc` if the store is open then, else an instant shortly after it next opens: for
    /// customers who come back later.
    pub(crate) fn next_open(&self, clock: &ZoneClock, utc: i64, rng: &mut ChaCha8Rng) -> i64 {
        if self.is_all_day() {
            return utc;
        }
        let local = utc + i64::from(clock.offset_at(utc));
        let today = local.div_euclid(SECS_PER_DAY);
        let minute = local.rem_euclid(SECS_PER_DAY) / 60;
        for ahead in 0..8 {
            let day = today + ahead;
            let Some(hours) = self.on(weekday(day)) else {
                continue;
            };
            if ahead == 0 && minute >= hours.open && minute < hours.close {
                return utc;
            }
            if ahead > 0 || minute < hours.open {
                let within = seed::between(rng, 0, (hours.close - hours.open).min(120) * 60);
                let wall = day * SECS_PER_DAY + hours.open * 60 + within;
                if let Some(at) = clock.local_to_utc(wall) {
                    return at;
                }
            }
        }
        utc
    }
}

/// One open hour of a store-day: its first instant, the UTC offset during it and its local
/// wall-clock hour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub start: i64,
    pub offset: i32,
    pub wall_hour: u8,
}

/// The open hours of one store-day, weighted by the intraday curve. Hours are walked as
/// elapsed time from local midnight, so a spring-forward day has no 2 a.m. hour and a
/// fall-back day has two 1 a.m. hours.
#[derive(Debug, Default)]
pub(crate) struct DaySlots {
    slots: Vec<Slot>,
    cumulative: Vec<f64>,
}

impl DaySlots {
    pub(crate) fn fill(&mut self, clock: &ZoneClock, hours: &OpeningHours, epoch_day: i64) {
        self.slots.clear();
        self.cumulative.clear();
        let Some(today) = hours.on(weekday(epoch_day)) else {
            return;
        };
        let end = clock.day_start(epoch_day + 1);
        let mut t = clock.day_start(epoch_day);
        let mut total = 0.0;
        while t < end {
            let offset = clock.offset_at(t);
            let wall_hour = (t + i64::from(offset)).rem_euclid(SECS_PER_DAY) / 3600;
            let minute = wall_hour * 60;
            if minute >= today.open && minute < today.close {
                total += HOURLY_DEMAND[wall_hour as usize % 24];
                self.slots.push(Slot {
                    start: t,
                    offset,
                    wall_hour: wall_hour as u8,
                });
                self.cumulative.push(total);
            }
            t += 3600;
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.slots.is_empty()
    }

    /// An arrival drawn from the intraday curve: its stamp and the local hour it falls in.
    /// Call only when [`DaySlots::is_open`].
    pub(crate) fn sample(&self, rng: &mut ChaCha8Rng) -> (Stamp, u8) {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = rng.random::<f64>() * total;
        let i = self
            .cumulative
            .partition_point(|&c| c <= u)
            .min(self.slots.len().saturating_sub(1));
        let slot = self.slots.get(i).copied().unwrap_or(Slot {
            start: 0,
            offset: 0,
            wall_hour: 0,
        });
        let utc = slot.start + rng.random_range(0..3600);
        (
            Stamp {
                utc,
                offset: slot.offset,
            },
            slot.wall_hour,
        )
    }
}

/// How many new prescriptions a store takes in per day.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Volume {
    pub seed: u64,
    pub pharmacy: u32,
    /// Mean new prescriptions on an average weekday.
    pub base: f64,
    pub hours: OpeningHours,
    /// Epoch day of day index 0.
    pub start_day: i64,
}

/// One day's new prescriptions: `raw` is the level before the weekday factor (what refills
/// scale from), `count` the number actually taken in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DayVolume {
    pub raw: f64,
    pub count: u32,
}

impl Volume {
    /// The volume of day index `day`, from its own stream: the same answer whenever asked.
    pub(crate) fn on(&self, day: i64) -> DayVolume {
        let wd = weekday(self.start_day + day);
        if self.hours.on(wd).is_none() {
            return DayVolume { raw: 0.0, count: 0 };
        }
        let mut rng = seed::stream(self.seed, Purpose::Volume, self.pharmacy, day);
        let raw = self.base * (1.0 + 0.08 * seed::normal(&mut rng)).clamp(0.6, 1.4);
        let count = (raw * WEEKDAY_DEMAND[wd]).round() as u32;
        DayVolume {
            raw,
            count: count.min(MAX_NEW_FILLS_PER_DAY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Zone, epoch_day};
    use chrono::NaiveDate;

    fn day(y: i32, m: u32, d: u32) -> i64 {
        epoch_day(NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default())
    }

    #[test]
    fn hours_per_week_add_up() {
        assert_eq!(OpeningHours::around_the_clock().hours_per_week(), 168);
        assert!(OpeningHours::around_the_clock().is_all_day());
        let medium = OpeningHours::weekly((9, 21), (9, 18), Some((10, 17)));
        assert_eq!(medium.hours_per_week(), 76);
        assert!(!medium.is_all_day());
        let small = OpeningHours::weekly((9, 19), (9, 17), None);
        assert_eq!(small.hours_per_week(), 58);
        assert_eq!(small.on(6), None);
    }

    #[test]
    fn daylight_saving_days_have_23_and_25_hours() {
        let clock = ZoneClock::new(
            Zone::LosAngeles,
            day(2024, 1, 1) * 86_400,
            day(2025, 1, 1) * 86_400,
        );
        let mut slots = DaySlots::default();
        let all_day = OpeningHours::around_the_clock();
        slots.fill(&clock, &all_day, day(2024, 3, 10));
        assert_eq!(slots.slots.len(), 23);
        assert!(slots.slots.iter().all(|s| s.wall_hour != 2));
        slots.fill(&clock, &all_day, day(2024, 11, 3));
        assert_eq!(slots.slots.len(), 25);
        assert_eq!(slots.slots.iter().filter(|s| s.wall_hour == 1).count(), 2);
        let medium = OpeningHours::weekly((9, 21), (9, 18), Some((10, 17)));
        slots.fill(&clock, &medium, day(2024, 3, 10));
        let hours: Vec<u8> = slots.slots.iter().map(|s| s.wall_hour).collect();
        assert_eq!(hours, (10..17).collect::<Vec<u8>>(), "a Sunday");
    }

    #[test]
    fn volume_is_a_pure_function_of_the_day() {
        let v = Volume {
            seed: 7,
            pharmacy: 3,
            base: 100.0,
            hours: OpeningHours::weekly((9, 19), (9, 17), None),
            start_day: day(2024, 1, 7),
        };
        assert_eq!(v.on(5), v.on(5));
        assert_eq!(v.on(0).count, 0, "closed on Sunday");
        assert!(
            v.on(1).count > v.on(6).count,
            "Monday is busier than Saturday"
        );
    }
}
