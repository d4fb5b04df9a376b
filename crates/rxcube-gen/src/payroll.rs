//! Who works when: each store's staff (the employees table), the shifts that cover its opening
//! hours in local time (overnight shifts at 24-hour stores), and the time cards they produce.
//!
//! The payroll system pays **wall-clock** hours: the local clock-out time minus the clock-in
//! time, less a 30-minute unpaid break on shifts over six hours, and at least the 4-hour
//! call-in minimum; regular pay up to 8 paid hours, overtime at 1.5 times the rate beyond. So a
//! night shift over the spring-forward change (22:00 to 06:30, 7.5 elapsed hours) is paid 8.00
//! hours, one over the fall-back change is paid less than it lasted, and a technician called
//! in for two busy hours is paid four. The cube spreads cost and hours over the elapsed minutes.

use rand_chacha::ChaCha8Rng;

use crate::GenError;
use crate::clock::{SECS_PER_DAY, weekday};
use crate::corrections;
use crate::demand::OpeningHours;
use crate::ids::{self, Label};
use crate::org::{Chain, Staffing};
use crate::records::{EmployeeRow, PayrollRow};
use crate::seed::{self, Purpose};
use crate::store_day::StoreDay;
use crate::writer::{EventFiles, TableWriter};

/// Paid minutes a shift may run before overtime starts.
const REGULAR_MINUTES: i64 = 8 * 60;
/// Shifts longer than this include an unpaid break.
const BREAK_AFTER_MINUTES: i64 = 6 * 60;
const BREAK_MINUTES: i64 = 30;
/// Share of day shifts on which the employee stays late (the night crew leaves when the early
/// shift comes in).
const STAYS_LATE: f64 = 0.05;
/// Fewest paid minutes of a shift: a call-in is paid at least this.
const MINIMUM_PAID_MINUTES: i64 = 4 * 60;
/// Share of weekdays on which a store calls in a technician who is off.
const CALL_IN: f64 = 0.04;
/// Days a full-time employee works per week.
const WORKDAYS_PER_WEEK: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobClass {
    Pharmacist,
    Technician,
    Clerk,
    Manager,
}

impl JobClass {
    fn name(self) -> &'static str {
        match self {
            JobClass::Pharmacist => "pharmacist",
            JobClass::Technician => "technician",
            JobClass::Clerk => "clerk",
            JobClass::Manager => "manager",
        }
    }

    /// Range of hourly rates in cents.
    fn rates(self) -> (i64, i64) {
        match self {
            JobClass::Pharmacist => (5_600, 6_800),
            JobClass::Technician => (1_800, 2_400),
            JobClass::Clerk => (1_500, 1_800),
            JobClass::Manager => (4_400, 5_400),
        }
    }
}

/// The groups of employees that take turns on the same kind of shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    Pharmacists = 0,
    Technicians = 1,
    Clerks = 2,
    Manager = 3,
    NightPharmacists = 4,
    NightTechnicians = 5,
    NightClerks = 6,
}

const POOLS: usize = 7;

impl Pool {
    const ALL: [Pool; POOLS] = [
        Pool::Pharmacists,
        Pool::Technicians,
        Pool::Clerks,
        Pool::Manager,
        Pool::NightPharmacists,
        Pool::NightTechnicians,
        Pool::NightClerks,
    ];

    fn is_night(self) -> bool {
        matches!(
            self,
            Pool::NightPharmacists | Pool::NightTechnicians | Pool::NightClerks
        )
    }

    fn class(self) -> JobClass {
        match self {
            Pool::Pharmacists | Pool::NightPharmacists => JobClass::Pharmacist,
            Pool::Technicians | Pool::NightTechnicians => JobClass::Technician,
            Pool::Clerks | Pool::NightClerks => JobClass::Clerk,
            Pool::Manager => JobClass::Manager,
        }
    }
}

/// One employee as the payroll needs them; the name is kept as indices into the name lists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    /// Employee number, unique in the chain (from 1).
    pub id: i32,
    /// Its id in the files: `E1001` for number 1.
    pub label: Label,
    pub rate_cents: i64,
    first_name: u8,
    last_name: u8,
    hired_on: i64,
}

/// A store's employees, by pool, plus former employees (on file, no longer working).
#[derive(Debug, Clone)]
pub(crate) struct Roster {
    pools: [Vec<Member>; POOLS],
    /// Most shifts a pool covers on any day of the week.
    shifts_per_day: [usize; POOLS],
    former: Vec<(JobClass, Member, i64)>,
}

impl Roster {
    /// Hires enough people for the store's weekly shift plan, with ids from `next_id` on.
    pub(crate) fn build(
        seed: u64,
        pharmacy: u32,
        staffing: Staffing,
        hours: &OpeningHours,
        start_day: i64,
        next_id: &mut i32,
    ) -> Self {
        let mut shifts_per_day = [0usize; POOLS];
        let mut plan = Vec::new();
        for wd in 0..7 {
            plan.clear();
            plan_day(staffing, hours, wd, &mut plan);
            let mut counts = [0usize; POOLS];
            for s in &plan {
                counts[s.pool as usize] += 1;
            }
            for (max, n) in shifts_per_day.iter_mut().zip(counts) {
                *max = (*max).max(n);
            }
        }
        let mut rng = seed::stream(seed, Purpose::Roster, pharmacy, 0);
        let mut hire = |class: JobClass, rng: &mut ChaCha8Rng| {
            let id = *next_id;
            *next_id += 1;
            let (lo, hi) = class.rates();
            Member {
                id,
                label: ids::employee(id),
                rate_cents: seed::between(rng, lo / 5, hi / 5 + 1) * 5,
                first_name: seed::between(rng, 0, FIRST_NAMES.len() as i64) as u8,
                last_name: seed::between(rng, 0, LAST_NAMES.len() as i64) as u8,
                hired_on: (start_day - seed::between(rng, 30, 15 * 365)).max(EARLIEST_HIRE_DAY),
            }
        };
        let pools = Pool::ALL.map(|pool| {
            let per_day = shifts_per_day[pool as usize];
            let size = match pool {
                _ if per_day == 0 => 0,
                Pool::Manager => 1,
                _ => (per_day * 7).div_ceil(WORKDAYS_PER_WEEK),
            };
            (0..size).map(|_| hire(pool.class(), &mut rng)).collect()
        });
        let mut former = Vec::new();
        if pharmacy.is_multiple_of(2) {
            let mut member = hire(JobClass::Clerk, &mut rng);
            let left = start_day - seed::between(&mut rng, 10, 300);
            member.hired_on = (left - seed::between(&mut rng, 100, 2_000)).max(EARLIEST_HIRE_DAY);
            former.push((JobClass::Clerk, member, left.max(member.hired_on)));
        }
        Roster {
            pools,
            shifts_per_day,
            former,
        }
    }

    /// Employees currently working at the store.
    pub(crate) fn head_count(&self) -> i32 {
        self.pools.iter().map(Vec::len).sum::<usize>() as i32
    }
}

/// 1990-01-01, the earliest date the contract accepts.
const EARLIEST_HIRE_DAY: i64 = 7_305;

const FIRST_NAMES: [&str; 32] = [
    "Maria",
    "James",
    "Linda",
    "Robert",
    "Patricia",
    "Michael",
    "Jennifer",
    "David",
    "Elizabeth",
    "William",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Karen",
    "Daniel",
    "Nancy",
    "Anthony",
    "Lisa",
    "Mark",
    "Betty",
    "Kevin",
    "Sandra",
    "Jose",
    "Ashley",
    "Brian",
    "Emily",
    "Minh",
    "Priya",
    "Wei",
];

const LAST_NAMES: [&str; 32] = [
    "Smith",
    "Johnson",
    "Garcia",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Nguyen",
    "Clark",
    "Patel",
    "Kim",
    "Chen",
    "Lewis",
    "Walker",
];

/// A social security number `NNN-NN-NNNN`, unique per employee id: the id is scrambled by a
/// bijection of `0..M` (M = 550·99·9999), then split into serial (1..=9999), group (1..=99) and
/// area (101..=650, so never 000, 666 or 9xx).
fn write_ssn(id: i32, out: &mut String) {
    use std::fmt::Write;
    const SERIALS: i64 = 9_999;
    const GROUPS: i64 = 99;
    const SPACE: i64 = 550 * GROUPS * SERIALS;
    // Coprime to SPACE (whose prime factors are 2, 3, 5, 11 and 101).
    const SCRAMBLE: i64 = 1_000_003;
    let k = (i64::from(id) * SCRAMBLE + 12_345).rem_euclid(SPACE);
    let serial = 1 + k % SERIALS;
    let rest = k / SERIALS;
    let group = 1 + rest % GROUPS;
    let area = 101 + rest / GROUPS;
    out.clear();
    let _ = write!(out, "{area:03}-{group:02}-{serial:04}");
}

/// Writes the employees table: every store's staff, then its former employees.
pub(crate) fn write_employees(chain: &Chain, out: &mut TableWriter) -> Result<(), GenError> {
    let mut name = String::new();
    let mut ssn = String::new();
    for store in &chain.stores {
        let current = Pool::ALL.iter().flat_map(|pool| {
            store.roster.pools[*pool as usize]
                .iter()
                .map(|m| (pool.class(), *m, None))
        });
        let former = store
            .roster
            .former
            .iter()
            .map(|&(class, m, left)| (class, m, Some(left)));
        for (class, member, terminated_on) in current.chain(former) {
            name.clear();
            name.push_str(FIRST_NAMES[member.first_name as usize % FIRST_NAMES.len()]);
            name.push(' ');
            name.push_str(LAST_NAMES[member.last_name as usize % LAST_NAMES.len()]);
            write_ssn(member.id, &mut ssn);
            out.write(&EmployeeRow {
                employee_id: member.label,
                name: &name,
                ssn: &ssn,
                job_class: class.name(),
                hourly_rate_cents: member.rate_cents,
                home_pharmacy_id: store.label,
                hired_on: member.hired_on,
                terminated_on,
            })?;
        }
    }
    Ok(())
}

/// A shift of the plan: local minutes after midnight of its day (the end may be past
/// midnight, up to 48 hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlannedShift {
    pool: Pool,
    start: i64,
    end: i64,
}

/// The shifts that cover weekday `wd` (Monday = 0) of a store.
fn plan_day(staffing: Staffing, hours: &OpeningHours, wd: usize, out: &mut Vec<PlannedShift>) {
    let Some(today) = hours.on(wd) else {
        return;
    };
    let mut push = |pool: Pool, start: i64, end: i64| out.push(PlannedShift { pool, start, end });
    let day_pools = [
        (Pool::Pharmacists, staffing.pharmacists),
        (Pool::Technicians, staffing.technicians),
        (Pool::Clerks, staffing.clerks),
    ];
    if hours.is_all_day() {
        // Three shifts of 8.5 hours (8 paid), overlapping half an hour at each hand-over.
        for (pool, people) in day_pools {
            for _ in 0..people {
                push(pool, 6 * 60, 14 * 60 + 30);
                push(pool, 14 * 60, 22 * 60 + 30);
            }
        }
        if staffing.night {
            for pool in [
                Pool::NightPharmacists,
                Pool::NightTechnicians,
                Pool::NightClerks,
            ] {
                push(pool, 22 * 60, 30 * 60 + 30);
            }
        }
    } else {
        // The pharmacy team opens and closes the store; clerks work the opening hours.
        for (pool, people) in day_pools {
            let (from, to) = match pool {
                Pool::Clerks => (today.open, today.close),
                _ => (today.open - 30, today.close + 15),
            };
            for _ in 0..people {
                cover(from, to, |start, end| push(pool, start, end));
            }
        }
    }
    if wd < 5 {
        push(Pool::Manager, 8 * 60, 17 * 60 + 30);
    }
}

/// Covers `from..to` with one shift, or with an early and a late shift that overlap.
fn cover(from: i64, to: i64, mut push: impl FnMut(i64, i64)) {
    if to - from <= 10 * 60 {
        push(from, to);
    } else {
        let length = ((to - from) / 2 + 60 + 14) / 15 * 15;
        push(from, from + length);
        push(to - length, to);
    }
}

/// Writes the time cards of one store-day.
pub(crate) fn work_day(
    sd: &mut StoreDay<'_>,
    out: &mut EventFiles,
    plan: &mut Vec<PlannedShift>,
) -> Result<(), GenError> {
    let store = sd.store;
    plan.clear();
    plan_day(store.staffing, &store.hours, weekday(sd.epoch_day), plan);
    let mut rng = seed::stream(sd.chain.seed, Purpose::Payroll, store.id, sd.day);
    let mut taken = [0usize; POOLS];
    for shift in plan.iter() {
        let pool = shift.pool as usize;
        let members = &store.roster.pools[pool];
        let turn = taken[pool];
        taken[pool] += 1;
        // Rotate through the pool so everyone works about five days a week and nobody works
        // two shifts of a day.
        let per_day = store.roster.shifts_per_day[pool].max(1) as i64;
        if members.is_empty() {
            continue;
        }
        let index = (sd.epoch_day * per_day + turn as i64).rem_euclid(members.len() as i64);
        let Some(member) = members.get(index as usize) else {
            continue;
        };
        let stays_late = if !shift.pool.is_night() && seed::chance(&mut rng, STAYS_LATE) {
            seed::between(&mut rng, 2, 7) * 15
        } else {
            0
        };
        clock_in(sd, out, member, shift.start, shift.end + stays_late)?;
    }
    // Now and then the store calls in a technician who is off for a few busy weekday hours.
    if weekday(sd.epoch_day) < 5 && seed::chance(&mut rng, CALL_IN) {
        let pool = Pool::Technicians as usize;
        let members = &store.roster.pools[pool];
        // Today's technicians are the next `per_day` of the rotation; the one after is off.
        let per_day = store.roster.shifts_per_day[pool] as i64;
        let start = seed::between(&mut rng, 11 * 4, 15 * 4 + 1) * 15;
        let minutes = seed::between(&mut rng, 8, 15) * 15;
        if members.len() as i64 > per_day {
            let index = (sd.epoch_day * per_day + per_day).rem_euclid(members.len() as i64);
            if let Some(member) = members.get(index as usize) {
                clock_in(sd, out, member, start, start + minutes)?;
            }
        }
    }
    Ok(())
}

/// The time card of `member` for a shift from local minute `start` to local minute `end` of
/// the store-day (`end` may be on the next day); none if either falls in a daylight-saving gap.
fn clock_in(
    sd: &mut StoreDay<'_>,
    out: &mut EventFiles,
    member: &Member,
    start: i64,
    end: i64,
) -> Result<(), GenError> {
    let midnight = sd.epoch_day * SECS_PER_DAY;
    let clock_in = sd.clock.local_to_utc(midnight + start * 60);
    let clock_out = sd.clock.local_to_utc(midnight + end * 60);
    let (Some(clock_in), Some(clock_out)) = (clock_in, clock_out) else {
        return Ok(());
    };
    time_card(sd, out, member, clock_in, clock_out, end - start)
}

/// Hours in hundredths of `minutes`.
fn hundredths_of(minutes: i64) -> i64 {
    (minutes * 100 + 30) / 60
}

/// Cost in cents of `hours` (hundredths) at `rate_cents`, times `factor_x2` / 2, rounded.
pub(crate) fn cost_cents(hours: i64, rate_cents: i64, factor_x2: i64) -> i64 {
    (hours * rate_cents * factor_x2 + 100) / 200
}

/// Writes the rows of a shift from the UTC instants `start` to `end` that the wall clock shows
/// as `wall_minutes` long (more or less than elapsed across a daylight-saving change).
fn time_card(
    sd: &mut StoreDay<'_>,
    out: &mut EventFiles,
    member: &Member,
    start: i64,
    end: i64,
    wall_minutes: i64,
) -> Result<(), GenError> {
    if end <= start || wall_minutes <= 0 {
        return Ok(());
    }
    let worked = if wall_minutes > BREAK_AFTER_MINUTES {
        wall_minutes - BREAK_MINUTES
    } else {
        wall_minutes
    };
    let paid = worked.max(MINIMUM_PAID_MINUTES);
    let regular = paid.min(REGULAR_MINUTES);
    let overtime = paid - regular;
    let hours = hundredths_of(regular);
    let mut row = PayrollRow {
        employee_id: member.label,
        pharmacy_id: sd.store.label,
        shift_start: sd.clock.stamp(start),
        pay_code: "REG",
        shift_end: sd.clock.stamp(end),
        hours,
        cost_cents: cost_cents(hours, member.rate_cents, 2),
    };
    out.payroll.write(&row)?;
    corrections::time_card(sd, &row, member.rate_cents, 2, out)?;
    if overtime > 0 {
        row.pay_code = "OT";
        row.hours = hundredths_of(overtime);
        row.cost_cents = cost_cents(row.hours, member.rate_cents, 3);
        out.payroll.write(&row)?;
        corrections::time_card(sd, &row, member.rate_cents, 3, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssns_are_well_formed_and_unique() {
        let mut seen = std::collections::HashSet::new();
        let mut ssn = String::new();
        for id in 1..20_000 {
            write_ssn(id, &mut ssn);
            let b = ssn.as_bytes();
            assert_eq!(b.len(), 11, "{ssn}");
            assert!(b[3] == b'-' && b[6] == b'-', "{ssn}");
            assert!(!ssn.starts_with("000") && !ssn.starts_with("666"), "{ssn}");
            assert!(&ssn[4..6] != "00" && &ssn[7..] != "0000", "{ssn}");
            assert!(seen.insert(ssn.clone()), "duplicate {ssn}");
        }
    }

    #[test]
    fn long_days_are_covered_by_overlapping_shifts() {
        let mut shifts = Vec::new();
        cover(510, 1275, |a, b| shifts.push((a, b)));
        assert_eq!(shifts, vec![(510, 960), (825, 1275)]);
        shifts.clear();
        cover(510, 1095, |a, b| shifts.push((a, b)));
        assert_eq!(
            shifts,
            vec![(510, 1095)],
            "one long Saturday shift, with overtime"
        );
    }

    #[test]
    fn overtime_costs_half_again() {
        assert_eq!(cost_cents(800, 6_000, 2), 48_000);
        assert_eq!(cost_cents(125, 6_000, 3), 11_250);
        assert_eq!(cost_cents(25, 1_555, 2), 389, "388.75 rounds up");
    }

    #[test]
    fn rosters_staff_every_shift_and_24h_stores_have_a_night_crew() {
        let hours = OpeningHours::around_the_clock();
        let staffing = Staffing {
            pharmacists: 2,
            technicians: 3,
            clerks: 2,
            night: true,
        };
        let mut next = 1;
        let roster = Roster::build(1, 1, staffing, &hours, 19_729, &mut next);
        assert_eq!(roster.shifts_per_day[Pool::NightPharmacists as usize], 1);
        for pool in Pool::ALL {
            let (n, per_day) = (
                roster.pools[pool as usize].len(),
                roster.shifts_per_day[pool as usize],
            );
            assert!(n >= per_day, "{pool:?}: {n} people for {per_day} shifts");
        }
        assert_eq!(
            next - 1,
            roster.head_count(),
            "ids are consecutive; no former staff at odd ids"
        );
    }
}
