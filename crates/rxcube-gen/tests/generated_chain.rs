//! The generated chain, read back from its files: it satisfies the contract and has the shape
//! the cube needs to be exercised (time zones, re-organization, peer-group change, overtime,
//! overnight shifts, corrections, differing on-time shares).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Datelike, NaiveDate, Timelike, Weekday};
use rxcube_gen::{Format, GenConfig, GenError, GenProgress, generate};
use rxcube_model::TableName;
use rxcube_model::domain::{DEFAULT_RX_TARGET_MINUTES, KEY_METRICS};
use support::{DataSet, Table, TestResult, Val, local, small_config, small_csv};

const ANCHOR: (i32, u32, u32) = (2024, 1, 7);

fn anchor_day() -> i32 {
    support::epoch_day(NaiveDate::from_ymd_opt(ANCHOR.0, ANCHOR.1, ANCHOR.2).unwrap_or_default())
}

fn date(day: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day + 719_163).unwrap_or_default()
}

#[test]
fn every_record_satisfies_the_contract() {
    let set = small_csv();
    for t in TableName::ALL {
        let v = support::violations(set.table(t), &set.tables);
        assert!(v.is_empty(), "{t}:\n{}", v.join("\n"));
        assert!(!set.table(t).rows.is_empty(), "{t} is empty");
    }
    assert_eq!(set.corrections.len(), 3);
    for (t, table) in &set.corrections {
        let v = support::violations(table, &set.tables);
        assert!(v.is_empty(), "corrections/{t}:\n{}", v.join("\n"));
    }
}

#[test]
fn files_are_listed_in_load_order_with_their_row_counts() -> TestResult {
    let set = small_csv();
    let order: Vec<(TableName, bool)> = set
        .summary
        .files
        .iter()
        .map(|f| (f.table, f.correction))
        .collect();
    let mut expected: Vec<(TableName, bool)> = TableName::ALL.iter().map(|t| (*t, false)).collect();
    expected.extend([TableName::Payroll, TableName::Pos, TableName::RxFills].map(|t| (t, true)));
    assert_eq!(order, expected);
    for f in &set.summary.files {
        let table = if f.correction {
            &set.corrections[&f.table]
        } else {
            set.table(f.table)
        };
        assert_eq!(table.rows.len() as u64, f.rows, "{}", f.path.display());
        let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(name, format!("{}.csv", f.table));
        assert_eq!(
            f.path.parent().is_some_and(|p| p.ends_with("corrections")),
            f.correction
        );
        // The header names the contract's columns in order.
        let text = std::fs::read_to_string(&f.path)?;
        let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
        let names: Vec<&str> = f.table.def().columns.iter().map(|c| c.name).collect();
        assert_eq!(header, names);
    }
    Ok(())
}

#[test]
fn output_is_deterministic_and_depends_on_the_seed() -> TestResult {
    let config = GenConfig {
        pharmacies: 3,
        days: 16,
        ..GenConfig::default()
    };
    let a = support::scratch_dir("determinism-a");
    let b = support::scratch_dir("determinism-b");
    let c = support::scratch_dir("determinism-c");
    let first = generate(&config, &a, |_| {})?;
    let second = generate(&config, &b, |_| {})?;
    generate(&GenConfig { seed: 43, ..config }, &c, |_| {})?;
    assert_eq!(first.files.len(), second.files.len());
    for (x, y) in first.files.iter().zip(&second.files) {
        assert_eq!(
            std::fs::read(&x.path)?,
            std::fs::read(&y.path)?,
            "{}",
            x.path.display()
        );
        assert_eq!(x.rows, y.rows);
    }
    for t in ["rx_fills.csv", "pos.csv", "payroll.csv", "employees.csv"] {
        assert_ne!(
            std::fs::read(a.join(t))?,
            std::fs::read(c.join(t))?,
            "{t} ignores the seed"
        );
    }
    Ok(())
}

#[test]
fn progress_is_reported_every_day() -> TestResult {
    let config = GenConfig {
        pharmacies: 2,
        days: 5,
        ..GenConfig::default()
    };
    let mut seen: Vec<GenProgress> = Vec::new();
    let summary = generate(&config, &support::scratch_dir("progress"), |p| {
        seen.push(*p)
    })?;
    assert_eq!(
        seen.iter().map(|p| p.day).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(seen.iter().all(|p| p.days == 5));
    assert!(
        seen.windows(2)
            .all(|w| w[0].rows_written < w[1].rows_written)
    );
    assert_eq!(
        seen.last().map(|p| p.rows_written),
        Some(summary.total_rows())
    );
    Ok(())
}

#[test]
fn bad_configurations_are_refused_with_a_clear_message() {
    let out = support::scratch_dir("refused");
    for (config, expected) in [
        (
            GenConfig {
                pharmacies: 0,
                ..GenConfig::default()
            },
            "pharmacies must be at least 1",
        ),
        (
            GenConfig {
                days: 0,
                ..GenConfig::default()
            },
            "days must be at least 1",
        ),
    ] {
        match generate(&config, &out, |_| {}) {
            Err(e @ GenError::Config(_)) => assert!(e.to_string().contains(expected), "{e}"),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
    assert!(
        !out.exists(),
        "nothing is written for a refused configuration"
    );
    assert_eq!("csv".parse::<Format>(), Ok(Format::Csv));
    assert_eq!("Parquet".parse::<Format>(), Ok(Format::Parquet));
    assert_eq!(Format::Parquet.to_string(), "parquet");
    let err = "json"
        .parse::<Format>()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("csv or parquet"), "{err}");
}

/// The text of a value that must be text (ids).
fn text(v: &Val) -> &str {
    v.text().unwrap_or_else(|| panic!("{v:?} is not text"))
}

/// Rows of a table grouped by pharmacy id, in file order.
fn by_pharmacy(t: &Table) -> BTreeMap<&str, Vec<&Vec<Val>>> {
    let id = t.col("pharmacy_id");
    let mut map: BTreeMap<&str, Vec<&Vec<Val>>> = BTreeMap::new();
    for r in &t.rows {
        map.entry(text(&r[id])).or_default().push(r);
    }
    map
}

/// (valid_from of the second row) for every id with two consecutive rows; asserts they chain.
fn split_dates(t: &Table) -> Vec<(&str, i32)> {
    let (from, to) = (t.col("valid_from"), t.col("valid_to"));
    let mut splits = Vec::new();
    for (id, rows) in by_pharmacy(t) {
        if let [first, second] = rows.as_slice() {
            assert_eq!(
                first[to], second[from],
                "{}: pharmacy {id} rows do not chain",
                t.def.name
            );
            assert_eq!(second[to], Val::Null);
            splits.push((id, second[from].day().unwrap_or(0)));
        } else {
            assert_eq!(rows.len(), 1, "pharmacy {id}");
        }
    }
    splits
}

fn assert_mid_pay_period(set: &DataSet, day: i32) {
    let start = support::epoch_day(set.config.start);
    assert!(
        day > start && day < start + set.config.days as i32,
        "{} outside the range",
        date(day)
    );
    let in_period = (day - anchor_day()).rem_euclid(14);
    assert!(in_period != 0, "{} starts a pay period", date(day));
}

#[test]
fn the_reorganization_splits_a_pay_period() {
    let set = small_csv();
    let t = set.table(TableName::Pharmacies);
    let splits = split_dates(t);
    assert!(!splits.is_empty(), "no re-organization");
    let rows = by_pharmacy(t);
    let (la, sa, region) = (t.col("local_area"), t.col("service_area"), t.col("region"));
    let mut moved_store = false;
    let mut moved_area = false;
    for (id, day) in &splits {
        assert_mid_pay_period(set, *day);
        let pair = &rows[id];
        moved_store |= pair[0][la] != pair[1][la];
        moved_area |= pair[0][la] == pair[1][la]
            && pair[0][sa] != pair[1][sa]
            && pair[0][region] != pair[1][region];
    }
    assert!(moved_store, "no pharmacy moved to another local area");
    assert!(
        moved_area,
        "no local area moved to another service area and region"
    );
    // Every local area belongs to one service area at any time.
    let mut area_of: HashMap<(String, i32), String> = HashMap::new();
    let day = splits[0].1;
    for r in &t.rows {
        let (from, to) = (
            r[t.col("valid_from")].day().unwrap_or(0),
            r[t.col("valid_to")].day(),
        );
        for d in [day - 1, day] {
            if from <= d && to.is_none_or(|to| d < to) {
                let key = (r[la].text().unwrap_or("").to_string(), d);
                let sa_name = r[sa].text().unwrap_or("").to_string();
                let prev = area_of.insert(key, sa_name.clone());
                assert!(prev.is_none_or(|p| p == sa_name), "{r:?}");
            }
        }
    }
}

#[test]
fn a_pharmacy_changes_peer_group_mid_pay_period_and_targets_cover_every_group() {
    let set = small_csv();
    let pg = set.table(TableName::PeerGroups);
    let splits = split_dates(pg);
    assert_eq!(splits.len(), 1);
    let (id, day) = splits[0];
    assert_mid_pay_period(set, day);
    let rows = &by_pharmacy(pg)[id];
    assert_ne!(rows[0][pg.col("peer_group")], rows[1][pg.col("peer_group")]);

    let minutes: BTreeSet<Option<i64>> = pg.column("rx_target_minutes").map(Val::int).collect();
    assert!(
        minutes.contains(&None) && minutes.contains(&Some(15)) && minutes.contains(&Some(20)),
        "{minutes:?}"
    );
    let hours = set.table(TableName::Pharmacies);
    assert!(
        hours.column("hours_per_week").any(|v| *v == Val::Int(168)),
        "no 24-hour store"
    );

    let targets = set.table(TableName::Targets);
    let groups: BTreeSet<&str> = pg.column("peer_group").filter_map(Val::text).collect();
    let start = support::epoch_day(set.config.start);
    let (g, m, tier, from, bonus) = (
        targets.col("peer_group"),
        targets.col("metric"),
        targets.col("tier"),
        targets.col("effective_from"),
        targets.col("bonus_amount"),
    );
    for group in &groups {
        for metric in KEY_METRICS {
            let mut bonuses = Vec::new();
            for t in 1..=3 {
                let row = targets.rows.iter().find(|r| {
                    r[g].text() == Some(group)
                        && r[m].text() == Some(metric)
                        && r[tier] == Val::Int(t)
                        && r[from].day() == Some(start)
                });
                let row = row.unwrap_or_else(|| panic!("no target {group} {metric} tier {t}"));
                bonuses.push(row[bonus].hundredths().unwrap_or(0));
            }
            assert!(
                bonuses.windows(2).all(|w| w[0] < w[1]),
                "{group} {metric}: {bonuses:?}"
            );
        }
    }
    let mut versions: HashMap<String, usize> = HashMap::new();
    for r in &targets.rows {
        *versions
            .entry(format!("{:?}{:?}{:?}", r[g], r[m], r[tier]))
            .or_default() += 1;
    }
    assert!(versions.values().any(|n| *n > 1), "no target changes later");
}

#[test]
fn stores_span_time_zones_and_events_carry_their_local_offset() -> TestResult {
    // Two weeks around the spring-forward change of 2024-03-10.
    let config = GenConfig {
        pharmacies: 6,
        days: 14,
        start: NaiveDate::from_ymd_opt(2024, 3, 4).unwrap_or_default(),
        ..GenConfig::default()
    };
    let set = support::generate_and_read("dst", config);
    let pharmacies = set.table(TableName::Pharmacies);
    let zones = set.zones();
    let distinct: BTreeSet<String> = zones.values().map(|z| z.name().to_string()).collect();
    assert!(distinct.len() >= 4, "{distinct:?}");
    assert!(
        pharmacies.column("timezone").any(|v| *v == Val::Null),
        "no store leaves the zone empty"
    );

    for (table, columns) in [
        (TableName::RxFills, &["received_at", "filled_at"][..]),
        (TableName::Pos, &["sold_at"][..]),
        (TableName::Payroll, &["shift_start", "shift_end"][..]),
        (TableName::Surveys, &["responded_at"][..]),
    ] {
        let path = set.dir.join(format!("{table}.csv"));
        let text = std::fs::read_to_string(&path)?;
        let def = table.def();
        let id = def.column_index("pharmacy_id").unwrap_or(0);
        let money: Vec<usize> = def
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                matches!(
                    c.ty,
                    rxcube_model::ColumnType::Money | rxcube_model::ColumnType::Hours
                )
            })
            .map(|(i, _)| i)
            .collect();
        for line in text.lines().skip(1) {
            assert!(!line.contains('"'), "{line}");
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), def.columns.len(), "{line}");
            let tz = zones[fields[id]];
            for c in columns {
                let field = fields[def.column_index(c).unwrap_or(0)];
                let at = chrono::DateTime::parse_from_rfc3339(field)?;
                let expected = support::offset_at(at.timestamp_micros(), tz);
                assert_eq!(
                    at.offset().local_minus_utc(),
                    expected,
                    "{table}.{c} {field} in {}",
                    tz.name()
                );
            }
            for &m in &money {
                let (_, cents) = fields[m].split_once('.').unwrap_or(("", ""));
                assert!(
                    cents.len() == 2 && cents.bytes().all(|b| b.is_ascii_digit()),
                    "{line}"
                );
            }
        }
    }

    assert_spring_forward_night_is_paid_by_the_wall_clock(&set);
    Ok(())
}

/// The night crew of the 24-hour store RX101 (Los Angeles) clocks in at 22:00 PST on Saturday
/// 2024-03-09 (06:00 UTC) and out at 06:30 PDT (13:30 UTC): 7.5 elapsed hours, 8.5 on the wall
/// clock, so 8.00 paid hours after the 30-minute break, at 8 × the hourly rate, all regular.
fn assert_spring_forward_night_is_paid_by_the_wall_clock(set: &DataSet) {
    let utc = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros())
            .unwrap_or(0)
    };
    let (clock_in, clock_out) = (utc("2024-03-10T06:00:00Z"), utc("2024-03-10T13:30:00Z"));
    assert_eq!(clock_out - clock_in, 7 * 3_600_000_000 + 1_800_000_000);
    let zones = set.zones();
    assert_eq!(zones["RX101"], chrono_tz::America::Los_Angeles);
    assert_eq!(
        local(clock_in, zones["RX101"]).to_string(),
        "2024-03-09 22:00:00"
    );
    assert_eq!(
        local(clock_out, zones["RX101"]).to_string(),
        "2024-03-10 06:30:00"
    );
    let rates = hourly_rates(set);
    let class_of = job_classes(set);
    let payroll = set.table(TableName::Payroll);
    let night: Vec<&Vec<Val>> = payroll
        .rows
        .iter()
        .filter(|r| {
            r[payroll.col("pharmacy_id")].text() == Some("RX101")
                && r[payroll.col("shift_start")].micros() == Some(clock_in)
        })
        .collect();
    let mut classes: Vec<&str> = night
        .iter()
        .map(|r| class_of[text(&r[payroll.col("employee_id")])])
        .collect();
    classes.sort_unstable();
    assert_eq!(
        classes,
        ["clerk", "pharmacist", "technician"],
        "the night crew: {night:?}"
    );
    for r in night {
        assert_eq!(
            r[payroll.col("shift_end")].micros(),
            Some(clock_out),
            "{r:?}"
        );
        assert_eq!(r[payroll.col("pay_code")].text(), Some("REG"), "{r:?}");
        assert_eq!(r[payroll.col("hours")].hundredths(), Some(800), "{r:?}");
        let rate = rates[text(&r[payroll.col("employee_id")])];
        // 8 hours × the rate in cents, to the cent: (800 × rate + 50) / 100.
        assert_eq!(
            r[payroll.col("cost")].hundredths(),
            Some((800 * rate + 50) / 100),
            "{r:?} at rate {rate}"
        );
    }
}

/// Hourly rate in cents by employee id.
fn hourly_rates(set: &DataSet) -> HashMap<&str, i128> {
    let employees = set.table(TableName::Employees);
    employees
        .rows
        .iter()
        .map(|r| {
            (
                text(&r[employees.col("employee_id")]),
                r[employees.col("hourly_rate")].hundredths().unwrap_or(0),
            )
        })
        .collect()
}

/// Each employee's job class, by employee id.
fn job_classes(set: &DataSet) -> HashMap<&str, &str> {
    let employees = set.table(TableName::Employees);
    employees
        .rows
        .iter()
        .map(|r| {
            (
                text(&r[employees.col("employee_id")]),
                text(&r[employees.col("job_class")]),
            )
        })
        .collect()
}

#[test]
fn fills_follow_opening_hours_and_the_demand_curves() {
    let set = small_csv();
    let zones = set.zones();
    let hours_per_week: HashMap<&str, i64> = {
        let t = set.table(TableName::Pharmacies);
        t.rows
            .iter()
            .map(|r| {
                (
                    text(&r[t.col("pharmacy_id")]),
                    r[t.col("hours_per_week")].int().unwrap_or(0),
                )
            })
            .collect()
    };
    let fills = set.table(TableName::RxFills);
    let (pid, received) = (fills.col("pharmacy_id"), fills.col("received_at"));
    let mut by_hour = [0u32; 24];
    let mut by_weekday: HashMap<Weekday, u32> = HashMap::new();
    let mut overnight_24h = 0;
    for r in &fills.rows {
        let id = text(&r[pid]);
        let at = local(r[received].micros().unwrap_or(0), zones[id]);
        by_hour[at.hour() as usize] += 1;
        *by_weekday.entry(at.weekday()).or_default() += 1;
        if at.hour() < 6 {
            assert_eq!(
                hours_per_week[id], 168,
                "pharmacy {id} received a prescription at {at}"
            );
            overnight_24h += 1;
        }
    }
    assert!(
        overnight_24h > 0,
        "the 24-hour store takes no prescriptions at night"
    );
    assert!(
        by_hour[12] > by_hour[10] && by_hour[17] > by_hour[15],
        "{by_hour:?}"
    );
    assert!(by_hour[3] * 10 < by_hour[12], "{by_hour:?}");
    let monday = by_weekday[&Weekday::Mon];
    let sunday = by_weekday[&Weekday::Sun];
    assert!(
        f64::from(monday) > 1.5 * f64::from(sunday),
        "Mon {monday} Sun {sunday}"
    );
}

/// Target minutes of a pharmacy at a local date, from peer_groups (NULL = the default).
fn target_minutes(pg: &Table, pharmacy: &str, day: i32) -> i64 {
    let row = pg.rows.iter().find(|r| {
        r[pg.col("pharmacy_id")].text() == Some(pharmacy)
            && r[pg.col("valid_from")].day().is_some_and(|f| f <= day)
            && r[pg.col("valid_to")].day().is_none_or(|t| day < t)
    });
    row.and_then(|r| r[pg.col("rx_target_minutes")].int())
        .unwrap_or(i64::from(DEFAULT_RX_TARGET_MINUTES))
}

#[test]
fn on_time_and_crp_shares_differ_by_store() {
    let set = small_csv();
    let zones = set.zones();
    let pg = set.table(TableName::PeerGroups);
    let fills = set.table(TableName::RxFills);
    let (pid, ch, no, rec, fil) = (
        fills.col("pharmacy_id"),
        fills.col("channel"),
        fills.col("fill_no"),
        fills.col("received_at"),
        fills.col("filled_at"),
    );
    // pharmacy -> (local, on time, refills, crp refills, local minutes, crp minutes)
    let mut stats: BTreeMap<&str, [f64; 6]> = BTreeMap::new();
    for r in &fills.rows {
        let id = text(&r[pid]);
        let received = r[rec].micros().unwrap_or(0);
        let minutes = (r[fil].micros().unwrap_or(0) - received) as f64 / 60e6;
        let s = stats.entry(id).or_default();
        let refill = r[no].int().unwrap_or(0) > 0;
        let crp = r[ch].text() == Some("crp");
        if refill {
            s[2] += 1.0;
        }
        if crp {
            assert!(refill, "a new prescription went to CRP");
            s[3] += 1.0;
            s[5] += minutes;
        } else {
            let day = support::epoch_day(local(received, zones[id]).date());
            s[0] += 1.0;
            s[4] += minutes;
            if minutes < target_minutes(pg, id, day) as f64 {
                s[1] += 1.0;
            }
        }
    }
    let on_time: Vec<f64> = stats.values().map(|s| s[1] / s[0]).collect();
    let crp: Vec<f64> = stats.values().map(|s| s[3] / s[2]).collect();
    let spread = |v: &[f64]| {
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    assert!(
        on_time.iter().all(|s| (0.4..=1.0).contains(s)),
        "{on_time:?}"
    );
    assert!(
        spread(&on_time) >= 0.08,
        "on-time shares barely differ: {on_time:?}"
    );
    assert!(crp.iter().all(|s| (0.1..=0.7).contains(s)), "{crp:?}");
    assert!(spread(&crp) >= 0.05, "CRP shares barely differ: {crp:?}");
    for s in stats.values() {
        assert!(
            s[5] / s[3] > 2.0 * s[4] / s[0],
            "CRP is not slower than local: {s:?}"
        );
    }
}

#[test]
fn refills_point_back_at_earlier_prescriptions_and_ids_grow_with_time() {
    let set = small_csv();
    let fills = set.table(TableName::RxFills);
    let (rx, no, pid, rec) = (
        fills.col("rx_id"),
        fills.col("fill_no"),
        fills.col("pharmacy_id"),
        fills.col("received_at"),
    );
    let mut new: HashMap<&str, (&str, i64)> = HashMap::new();
    let mut last: HashMap<&str, (u64, i64)> = HashMap::new();
    for r in fills.rows.iter().filter(|r| r[no] == Val::Int(0)) {
        let (id, at, p) = (text(&r[rx]), r[rec].micros().unwrap_or(0), text(&r[pid]));
        new.insert(id, (p, at));
        // Within a store, a later prescription has a larger number (the digits of its id).
        let number: u64 = id.trim_start_matches("RX").parse().unwrap_or(0);
        if let Some((prev, prev_at)) = last.insert(p, (number, at)) {
            assert!(
                number > prev && at >= prev_at,
                "ids do not follow time at pharmacy {p}: {id}"
            );
        }
    }
    let mut in_file = 0;
    let mut refills = 0;
    for r in fills.rows.iter().filter(|r| r[no] != Val::Int(0)) {
        refills += 1;
        let n = r[no].int().unwrap_or(0);
        if let Some((p, first)) = new.get(text(&r[rx])) {
            in_file += 1;
            assert_eq!(Some(*p), r[pid].text(), "refilled at another store");
            let days = (r[rec].micros().unwrap_or(0) - first) as f64 / 86_400e6;
            assert!(
                (days - 30.0 * n as f64).abs() < 1.2,
                "fill {n} {days} days after the first"
            );
        }
    }
    assert!(
        refills as f64 > 0.4 * fills.rows.len() as f64,
        "{refills} refills"
    );
    assert!(
        in_file > 100,
        "only {in_file} refills of prescriptions on file"
    );
}

#[test]
fn every_fill_is_sold_after_it_is_filled_and_some_baskets_come_back() {
    let set = small_csv();
    let fills = set.table(TableName::RxFills);
    let mut filled: HashMap<&str, Vec<i64>> = HashMap::new();
    for r in &fills.rows {
        let at = r[fills.col("filled_at")].micros().unwrap_or(0);
        filled
            .entry(text(&r[fills.col("rx_id")]))
            .or_default()
            .push(at);
    }
    let pos = set.table(TableName::Pos);
    let (txn, kind, qty, amount, rx, sold_at) = (
        pos.col("txn_id"),
        pos.col("kind"),
        pos.col("quantity"),
        pos.col("amount"),
        pos.col("rx_id"),
        pos.col("sold_at"),
    );
    let mut sold: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut returns = [0u32; 2];
    let mut basket_has_rx: HashMap<&str, bool> = HashMap::new();
    for r in &pos.rows {
        let q = r[qty].int().unwrap_or(0);
        let is_rx = r[kind].text() == Some("rx");
        *basket_has_rx.entry(text(&r[txn])).or_default() |= is_rx;
        if q < 0 {
            returns[usize::from(is_rx)] += 1;
            assert!(r[amount].hundredths().unwrap_or(0) <= 0, "{r:?}");
        } else if is_rx {
            assert_eq!(q, 1, "{r:?}");
            let at = r[sold_at].micros().unwrap_or(0);
            sold.entry(text(&r[rx])).or_default().push(at);
        }
    }
    assert_eq!(sold.len(), filled.len(), "prescriptions sold vs filled");
    for (id, fills_at) in &mut filled {
        let sales = sold
            .get_mut(id)
            .unwrap_or_else(|| panic!("rx {id} never sold"));
        assert_eq!(
            sales.len(),
            fills_at.len(),
            "rx {id}: filled {} times, sold {}",
            fills_at.len(),
            sales.len()
        );
        // Fills of a prescription are 30 days apart, sales follow within days: pair in order.
        fills_at.sort_unstable();
        sales.sort_unstable();
        assert!(
            fills_at.iter().zip(sales.iter()).all(|(f, s)| s >= f),
            "rx {id} sold before it was filled"
        );
    }
    let share = f64::from(returns[0] + returns[1]) / pos.rows.len() as f64;
    assert!(
        (0.003..0.03).contains(&share),
        "returns are {share} of lines"
    );
    assert!(
        returns[0] > 0 && returns[1] > 0,
        "returns of both kinds: {returns:?}"
    );
    assert!(
        basket_has_rx.values().any(|has_rx| !has_rx),
        "no OTC-only baskets"
    );
}

#[test]
fn surveys_come_from_about_two_percent_of_baskets() {
    let set = small_csv();
    let baskets: BTreeSet<&str> = set
        .table(TableName::Pos)
        .column("txn_id")
        .filter_map(Val::text)
        .collect();
    let surveys = set.table(TableName::Surveys).rows.len() as f64;
    let share = surveys / baskets.len() as f64;
    assert!(
        (0.017..=0.023).contains(&share),
        "{surveys} surveys for {} baskets",
        baskets.len()
    );
    let t = set.table(TableName::Surveys);
    let stores: BTreeSet<&str> = t.column("pharmacy_id").filter_map(Val::text).collect();
    assert_eq!(
        stores.len(),
        set.config.pharmacies as usize,
        "every store is surveyed"
    );
    let ratings: BTreeSet<&str> = t.column("rating").filter_map(Val::text).collect();
    assert_eq!(
        ratings.len(),
        rxcube_model::domain::RATINGS.len(),
        "{ratings:?}"
    );
}

/// (employee, pharmacy, shift start).
type ShiftKey<'a> = (&'a str, &'a str, i64);
/// (shift end, rows as (pay code, hours in hundredths)).
type Shift = (i64, Vec<(String, i128)>);

#[test]
fn payroll_pays_the_wall_clock_with_overnight_shifts_overtime_call_ins_and_honest_costs() {
    let set = small_csv();
    let zones = set.zones();
    let rates = hourly_rates(set);
    let class_of = job_classes(set);
    let payroll = set.table(TableName::Payroll);
    let (emp, pid, start, end, code, hours, cost) = (
        payroll.col("employee_id"),
        payroll.col("pharmacy_id"),
        payroll.col("shift_start"),
        payroll.col("shift_end"),
        payroll.col("pay_code"),
        payroll.col("hours"),
        payroll.col("cost"),
    );
    let mut shifts: BTreeMap<ShiftKey, Shift> = BTreeMap::new();
    let mut overnight = false;
    for r in &payroll.rows {
        let tz = zones[text(&r[pid])];
        let (s, e) = (r[start].micros().unwrap_or(0), r[end].micros().unwrap_or(0));
        overnight |= local(s, tz).date() != local(e, tz).date();
        let rate = rates[text(&r[emp])];
        let h = r[hours].hundredths().unwrap_or(0);
        let c = r[code].text().unwrap_or("").to_string();
        let factor = if c == "OT" { 150 } else { 100 };
        // cost = hours × rate (× 1.5 for overtime), rounded to the cent.
        let exact = h * rate * factor;
        let expected = (exact + 5_000) / 10_000;
        assert_eq!(r[cost].hundredths(), Some(expected), "{r:?} at rate {rate}");
        shifts
            .entry((text(&r[emp]), text(&r[pid]), s))
            .or_insert((e, Vec::new()))
            .1
            .push((c, h));
    }
    assert!(overnight, "no shift crosses local midnight");
    let mut overtime = 0;
    let mut call_ins = 0;
    for ((e, p, s), (end, rows)) in &shifts {
        let tz = zones[*p];
        let (clock_in, clock_out) = (local(*s, tz), local(*end, tz));
        // Paid: the wall-clock length, less 30 minutes on shifts over 6 hours, at least 4 hours.
        let wall = (clock_out - clock_in).num_minutes();
        let worked = if wall > 360 { wall - 30 } else { wall };
        let paid_minutes = worked.max(240);
        let paid: i128 = rows.iter().map(|(_, h)| h).sum();
        assert_eq!(
            paid,
            i128::from(paid_minutes) * 100 / 60,
            "employee {e}: {rows:?} for {wall} minutes"
        );
        if rows.iter().any(|(c, _)| c == "OT") {
            overtime += 1;
            assert!(rows.contains(&("REG".to_string(), 800)), "{rows:?}");
        } else {
            assert!(paid <= 800, "{rows:?}");
        }
        if wall < 240 {
            // A call-in: a technician for a few weekday hours, paid the 4-hour minimum, so the
            // paid hours exceed the elapsed time of the shift.
            call_ins += 1;
            assert_eq!(rows, &[("REG".to_string(), 400)], "employee {e}");
            assert_eq!(class_of[*e], "technician", "employee {e}");
            assert!(clock_in.weekday().num_days_from_monday() < 5, "{clock_in}");
            assert!(
                clock_in.hour() >= 11
                    && clock_out.time()
                        <= chrono::NaiveTime::from_hms_opt(18, 30, 0).unwrap_or_default(),
                "{clock_in} to {clock_out}"
            );
            let elapsed_hundredths = i128::from(end - s) / 36_000_000;
            assert!(
                elapsed_hundredths < paid,
                "{elapsed_hundredths} elapsed, {paid} paid"
            );
        }
    }
    assert!(overtime > 0, "no overtime");
    assert!(call_ins > 0, "no call-in shifts");
    // Nobody works two shifts at once.
    let mut last_end: HashMap<&str, i64> = HashMap::new();
    for ((e, _, s), (end, _)) in &shifts {
        if let Some(prev) = last_end.insert(*e, *end) {
            assert!(*s >= prev, "employee {e} works overlapping shifts");
        }
    }
}

#[test]
fn head_counts_match_the_staff_on_file() {
    let set = small_csv();
    let pharmacies = set.table(TableName::Pharmacies);
    let employees = set.table(TableName::Employees);
    let mut staff: HashMap<&str, (i64, i64)> = HashMap::new();
    for r in &employees.rows {
        if r[employees.col("terminated_on")] == Val::Null {
            let e = staff
                .entry(text(&r[employees.col("home_pharmacy_id")]))
                .or_default();
            e.0 += 1;
            e.1 += i64::from(r[employees.col("job_class")].text() == Some("manager"));
        }
    }
    assert!(
        employees.column("terminated_on").any(|v| *v != Val::Null),
        "no former employees"
    );
    for r in &pharmacies.rows {
        let id = text(&r[pharmacies.col("pharmacy_id")]);
        assert_eq!(
            r[pharmacies.col("employees")].int(),
            Some(staff[id].0),
            "pharmacy {id}"
        );
        assert_eq!(staff[id].1, 1, "pharmacy {id} has one manager");
    }
    let ssns: BTreeSet<&str> = employees.column("ssn").filter_map(Val::text).collect();
    assert_eq!(ssns.len(), employees.rows.len(), "SSNs are unique");
}

#[test]
fn corrections_replace_existing_records_with_changed_values() {
    let set = small_csv();
    for (t, corrections) in &set.corrections {
        let main = set.table(*t);
        let originals: HashMap<String, &Vec<Val>> =
            main.rows.iter().map(|r| (main.key_of(r), r)).collect();
        assert!(!corrections.rows.is_empty(), "no corrections of {t}");
        let share = corrections.rows.len() as f64 / main.rows.len() as f64;
        assert!((0.0005..=0.01).contains(&share), "{t}: {share}");
        for r in &corrections.rows {
            let original = originals
                .get(&main.key_of(r))
                .unwrap_or_else(|| panic!("{t}: {r:?} corrects nothing"));
            assert_ne!(*original, r, "{t}: correction changes nothing");
        }
    }
    // Some corrected fills move to another local day.
    let fills = &set.corrections[&TableName::RxFills];
    let main = set.table(TableName::RxFills);
    let zones = set.zones();
    let originals: HashMap<String, &Vec<Val>> =
        main.rows.iter().map(|r| (main.key_of(r), r)).collect();
    let filled = main.col("filled_at");
    let moved_day = fills.rows.iter().any(|r| {
        let tz = zones[text(&r[main.col("pharmacy_id")])];
        let before = originals[&main.key_of(r)][filled].micros().unwrap_or(0);
        local(before, tz).date() != local(r[filled].micros().unwrap_or(0), tz).date()
    });
    assert!(moved_day, "no corrected fill moves to another day");
}

/// The pharmacy ids of a table in order of first appearance.
fn pharmacy_ids(t: &Table) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for id in t.column("pharmacy_id").map(text) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// 8-4-4-4-12 lowercase hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// `R<2+ digits>-<6+ digits>`: the register and its sequence.
fn register_of(txn: &str) -> Option<u32> {
    let (register, seq) = txn.strip_prefix('R')?.split_once('-')?;
    (register.len() >= 2 && all_digits(register) && seq.len() >= 6 && all_digits(seq))
        .then(|| register.parse().ok())
        .flatten()
}

#[test]
fn ids_are_text_labels_in_the_styles_of_their_source_systems() {
    let set = small_csv();
    for t in TableName::ALL {
        assert!(
            support::ids_are_text(t.def()),
            "{t}: an id column is not text"
        );
    }
    // The chain's own stores are RX101, RX102; the acquired chain's are 00423 and the plain
    // 423, two stores that would be one if their ids were read as numbers.
    assert_eq!(
        pharmacy_ids(set.table(TableName::Pharmacies)),
        ["RX101", "00423", "RX102", "423"]
    );
    for t in [
        TableName::PeerGroups,
        TableName::Payroll,
        TableName::Pos,
        TableName::RxFills,
        TableName::Surveys,
    ] {
        let mut ids = pharmacy_ids(set.table(t));
        ids.sort_unstable();
        assert_eq!(ids, ["00423", "423", "RX101", "RX102"], "{t}");
    }
    let own = |pharmacy: &str| pharmacy.starts_with("RX");

    // Employees: E1001, E1002, ... one HR system, numbered across the chain.
    let employees = set.table(TableName::Employees);
    let mut numbers: Vec<usize> = employees
        .column("employee_id")
        .map(|v| {
            let id = text(v);
            assert!(id.starts_with('E') && all_digits(&id[1..]), "{id}");
            id[1..].parse().unwrap_or(0)
        })
        .collect();
    numbers.sort_unstable();
    let expected: Vec<usize> = (1001..1001 + employees.rows.len()).collect();
    assert_eq!(numbers, expected);

    // Prescriptions: RX and digits at the chain's own stores, twelve digits with leading zeros
    // at the acquired ones; the POS lines name them the same way.
    let check_rx = |rx: &str, pharmacy: &str| {
        if own(pharmacy) {
            assert!(
                rx.starts_with("RX") && all_digits(&rx[2..]),
                "{rx} at {pharmacy}"
            );
        } else {
            assert!(
                rx.len() == 12 && all_digits(rx) && rx.starts_with('0'),
                "{rx} at {pharmacy}"
            );
        }
    };
    let fills = set.table(TableName::RxFills);
    for r in &fills.rows {
        check_rx(
            text(&r[fills.col("rx_id")]),
            text(&r[fills.col("pharmacy_id")]),
        );
    }
    // Transactions: T-numbers from T900001 at the chain's own stores; register-sequence
    // composites at the acquired ones, registers 01-03 at 00423 and 04-06 at 423.
    let pos = set.table(TableName::Pos);
    let mut txns: BTreeSet<&str> = BTreeSet::new();
    for r in &pos.rows {
        let (txn, pharmacy) = (
            text(&r[pos.col("txn_id")]),
            text(&r[pos.col("pharmacy_id")]),
        );
        txns.insert(txn);
        if let Some(rx) = r[pos.col("rx_id")].text() {
            check_rx(rx, pharmacy);
        }
        match pharmacy {
            "RX101" | "RX102" => {
                assert!(txn.starts_with('T') && all_digits(&txn[1..]), "{txn}");
                assert!(txn[1..].parse::<u64>().unwrap_or(0) >= 900_001, "{txn}");
            }
            "00423" => assert!(matches!(register_of(txn), Some(1..=3)), "{txn} at 00423"),
            "423" => assert!(matches!(register_of(txn), Some(4..=6)), "{txn} at 423"),
            other => panic!("unknown pharmacy {other}"),
        }
    }
    // The first basket of the first day at RX101, at 00423 and at 423.
    for first in ["T900001", "R01-000001", "R04-000001"] {
        assert!(txns.contains(first), "no transaction {first}");
    }

    // Survey responses: S and at least six digits by phone, UUID-shaped from the web survey.
    let surveys = set.table(TableName::Surveys);
    let (mut phone, mut web) = (0, 0);
    for id in surveys.column("response_id").map(text) {
        if is_uuid(id) {
            web += 1;
        } else {
            assert!(
                id.starts_with('S') && id.len() >= 7 && all_digits(&id[1..]),
                "{id}"
            );
            phone += 1;
        }
    }
    let web_share = f64::from(web) / f64::from(web + phone);
    assert!((0.2..=0.5).contains(&web_share), "{web} web, {phone} phone");

    // Every id of every file, corrections included: short, no control characters.
    for (t, correction) in set.summary.files.iter().map(|f| (f.table, f.correction)) {
        let table = set.file(t, correction);
        for (c, col) in t.def().columns.iter().enumerate() {
            if support::is_id_column(col.name) {
                for v in table.rows.iter().filter_map(|r| r[c].text()) {
                    assert!(
                        !v.is_empty() && v.len() <= 64 && !v.chars().any(char::is_control),
                        "{t}.{}: {v:?}",
                        col.name
                    );
                }
            }
        }
    }
}

#[test]
fn ids_are_written_verbatim_in_the_csv_text() -> TestResult {
    let set = small_csv();
    let first_fields = |file: &str| -> Result<BTreeSet<String>, std::io::Error> {
        let text = std::fs::read_to_string(set.dir.join(file))?;
        Ok(text
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap_or("").to_string())
            .collect())
    };
    let expected: BTreeSet<String> = ["00423", "423", "RX101", "RX102"].map(String::from).into();
    assert_eq!(first_fields("pharmacies.csv")?, expected);
    assert_eq!(first_fields("peer_groups.csv")?, expected);
    // payroll.csv: employee_id, pharmacy_id, ...; both acquired stores appear as written.
    let payroll = std::fs::read_to_string(set.dir.join("payroll.csv"))?;
    for store in ["00423", "423"] {
        let needle = format!(",{store},");
        assert!(
            payroll
                .lines()
                .any(|l| l.starts_with('E') && l.contains(&needle)),
            "no time card of {store}"
        );
    }
    let fills = std::fs::read_to_string(set.dir.join("rx_fills.csv"))?;
    assert!(
        fills
            .lines()
            .any(|l| l.starts_with("000") && l.contains(",00423,")),
        "no zero-padded prescription id at 00423"
    );
    Ok(())
}

#[test]
fn parquet_files_have_the_contract_schema_and_the_same_records_as_csv() {
    let csv = small_csv();
    let dir = support::scratch_dir("small-parquet");
    let config = GenConfig {
        format: Format::Parquet,
        ..small_config()
    };
    let summary = generate(&config, &dir, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.files.len(), csv.summary.files.len());
    for (p, c) in summary.files.iter().zip(&csv.summary.files) {
        assert_eq!(
            (p.table, p.correction, p.rows),
            (c.table, c.correction, c.rows)
        );
        assert_eq!(p.path.extension().and_then(|e| e.to_str()), Some("parquet"));
        let (schema, table) = support::read_parquet(&p.path, p.table);
        assert_eq!(
            schema.fields(),
            p.table.def().schema().fields(),
            "{}",
            p.path.display()
        );
        let from_csv = if c.correction {
            &csv.corrections[&c.table]
        } else {
            csv.table(c.table)
        };
        assert_eq!(table.rows.len(), from_csv.rows.len());
        assert!(
            table.rows == from_csv.rows,
            "{}: Parquet and CSV records differ",
            p.path.display()
        );
        // Ids are Utf8 strings in the file, kept as written.
        for (field, def) in schema.fields().iter().zip(p.table.def().columns) {
            if support::is_id_column(def.name) {
                assert_eq!(
                    field.data_type(),
                    &arrow::datatypes::DataType::Utf8,
                    "{}",
                    def.name
                );
            }
        }
        if p.table == TableName::Pharmacies {
            assert_eq!(pharmacy_ids(&table), ["RX101", "00423", "RX102", "423"]);
        }
    }
}

/// The committed demo chain (`data/demo`: 8 pharmacies, 70 days from 2024-01-07) has the text
/// ids and the spring-forward night shift paid by the wall clock.
#[test]
fn the_committed_demo_chain_has_text_ids_and_the_wall_clock_night() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo");
    let config = GenConfig {
        pharmacies: 8,
        days: 70,
        format: Format::Parquet,
        ..GenConfig::default()
    };
    let tables = [
        TableName::Pharmacies,
        TableName::Employees,
        TableName::Payroll,
    ];
    let set = support::read_parquet_dir(&dir, config, &tables);
    assert_eq!(
        pharmacy_ids(set.table(TableName::Pharmacies)),
        [
            "RX101", "00423", "RX102", "423", "RX103", "00845", "RX104", "01056"
        ]
    );
    assert_spring_forward_night_is_paid_by_the_wall_clock(&set);
}

/// The default chain (12 pharmacies, 120 days over the spring-forward change, both changes):
/// every record valid, and the same row counts in both formats. Slow in a debug build; run
/// with `cargo test -p rxcube-gen --release -- --ignored`.
#[test]
#[ignore = "default-size run: seconds in release, slow in debug"]
fn the_default_chain_is_valid_in_both_formats() -> TestResult {
    let csv = support::generate_and_read("default-csv", GenConfig::default());
    for t in TableName::ALL {
        let v = support::violations(csv.table(t), &csv.tables);
        assert!(v.is_empty(), "{t}:\n{}", v.join("\n"));
    }
    for (t, table) in &csv.corrections {
        let v = support::violations(table, &csv.tables);
        assert!(v.is_empty(), "corrections/{t}:\n{}", v.join("\n"));
    }
    assert_eq!(split_dates(csv.table(TableName::Pharmacies)).len(), 3);
    assert_eq!(split_dates(csv.table(TableName::PeerGroups)).len(), 1);
    assert_eq!(
        pharmacy_ids(csv.table(TableName::Pharmacies)),
        [
            "RX101", "00423", "RX102", "423", "RX103", "00845", "RX104", "01056", "RX105", "01267",
            "RX106", "01478"
        ]
    );
    assert_spring_forward_night_is_paid_by_the_wall_clock(&csv);
    let config = GenConfig {
        format: Format::Parquet,
        ..GenConfig::default()
    };
    let parquet = generate(&config, &support::scratch_dir("default-parquet"), |_| {})?;
    let rows = |s: &rxcube_gen::GenSummary| {
        s.files
            .iter()
            .map(|f| (f.table, f.correction, f.rows))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&parquet), rows(&csv.summary));
    Ok(())
}
