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

/// Rows of a table grouped by pharmacy id, in file order.
fn by_pharmacy(t: &Table) -> BTreeMap<i64, Vec<&Vec<Val>>> {
    let id = t.col("pharmacy_id");
    let mut map: BTreeMap<i64, Vec<&Vec<Val>>> = BTreeMap::new();
    for r in &t.rows {
        map.entry(r[id].int().unwrap_or(0)).or_default().push(r);
    }
    map
}

/// (valid_from of the second row) for every id with two consecutive rows; asserts they chain.
fn split_dates(t: &Table) -> Vec<(i64, i32)> {
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
    let rows = &by_pharmacy(pg)[&id];
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
            let tz = zones[&fields[id].parse::<i64>()?];
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

    // The night shift into 2024-03-10 at a Los Angeles 24-hour store lasts 9 hours, not 10.
    let payroll = set.table(TableName::Payroll);
    let (start, end, pid) = (
        payroll.col("shift_start"),
        payroll.col("shift_end"),
        payroll.col("pharmacy_id"),
    );
    let short_night = payroll.rows.iter().any(|r| {
        let tz = zones[&r[pid].int().unwrap_or(0)];
        let s = local(r[start].micros().unwrap_or(0), tz);
        tz == chrono_tz::America::Los_Angeles
            && s.date() == NaiveDate::from_ymd_opt(2024, 3, 9).unwrap_or_default()
            && (s.hour(), s.minute()) == (21, 30)
            && r[end].micros().unwrap_or(0) - r[start].micros().unwrap_or(0) == 9 * 3_600_000_000
    });
    assert!(
        short_night,
        "no night shift across the spring-forward change"
    );
    Ok(())
}

#[test]
fn fills_follow_opening_hours_and_the_demand_curves() {
    let set = small_csv();
    let zones = set.zones();
    let hours_per_week: HashMap<i64, i64> = {
        let t = set.table(TableName::Pharmacies);
        t.rows
            .iter()
            .map(|r| {
                (
                    r[t.col("pharmacy_id")].int().unwrap_or(0),
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
        let id = r[pid].int().unwrap_or(0);
        let at = local(r[received].micros().unwrap_or(0), zones[&id]);
        by_hour[at.hour() as usize] += 1;
        *by_weekday.entry(at.weekday()).or_default() += 1;
        if at.hour() < 6 {
            assert_eq!(
                hours_per_week[&id], 168,
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
fn target_minutes(pg: &Table, pharmacy: i64, day: i32) -> i64 {
    let row = pg.rows.iter().find(|r| {
        r[pg.col("pharmacy_id")].int() == Some(pharmacy)
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
    let mut stats: BTreeMap<i64, [f64; 6]> = BTreeMap::new();
    for r in &fills.rows {
        let id = r[pid].int().unwrap_or(0);
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
            let day = support::epoch_day(local(received, zones[&id]).date());
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
    let mut new: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut last: HashMap<i64, (i64, i64)> = HashMap::new();
    for r in fills.rows.iter().filter(|r| r[no] == Val::Int(0)) {
        let (id, at, p) = (
            r[rx].int().unwrap_or(0),
            r[rec].micros().unwrap_or(0),
            r[pid].int().unwrap_or(0),
        );
        new.insert(id, (p, at));
        // Within a store, a later prescription has a larger id.
        if let Some((prev_id, prev_at)) = last.insert(p, (id, at)) {
            assert!(
                id > prev_id && at >= prev_at,
                "ids do not follow time at pharmacy {p}"
            );
        }
    }
    let mut in_file = 0;
    let mut refills = 0;
    for r in fills.rows.iter().filter(|r| r[no] != Val::Int(0)) {
        refills += 1;
        let n = r[no].int().unwrap_or(0);
        if let Some((p, first)) = new.get(&r[rx].int().unwrap_or(0)) {
            in_file += 1;
            assert_eq!(Some(*p), r[pid].int(), "refilled at another store");
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
    let mut filled: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in &fills.rows {
        let at = r[fills.col("filled_at")].micros().unwrap_or(0);
        filled
            .entry(r[fills.col("rx_id")].int().unwrap_or(0))
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
    let mut sold: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut returns = [0u32; 2];
    let mut basket_has_rx: HashMap<i64, bool> = HashMap::new();
    for r in &pos.rows {
        let q = r[qty].int().unwrap_or(0);
        let is_rx = r[kind].text() == Some("rx");
        *basket_has_rx.entry(r[txn].int().unwrap_or(0)).or_default() |= is_rx;
        if q < 0 {
            returns[usize::from(is_rx)] += 1;
            assert!(r[amount].hundredths().unwrap_or(0) <= 0, "{r:?}");
        } else if is_rx {
            assert_eq!(q, 1, "{r:?}");
            let at = r[sold_at].micros().unwrap_or(0);
            sold.entry(r[rx].int().unwrap_or(0)).or_default().push(at);
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
    let baskets: BTreeSet<i64> = set
        .table(TableName::Pos)
        .column("txn_id")
        .filter_map(Val::int)
        .collect();
    let surveys = set.table(TableName::Surveys).rows.len() as f64;
    let share = surveys / baskets.len() as f64;
    assert!(
        (0.017..=0.023).contains(&share),
        "{surveys} surveys for {} baskets",
        baskets.len()
    );
    let t = set.table(TableName::Surveys);
    let stores: BTreeSet<i64> = t.column("pharmacy_id").filter_map(Val::int).collect();
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
type ShiftKey = (i64, i64, i64);
/// (shift end, rows as (pay code, hours in hundredths)).
type Shift = (i64, Vec<(String, i128)>);

#[test]
fn payroll_has_overnight_shifts_overtime_and_honest_costs() {
    let set = small_csv();
    let zones = set.zones();
    let employees = set.table(TableName::Employees);
    let rates: HashMap<i64, i128> = employees
        .rows
        .iter()
        .map(|r| {
            (
                r[employees.col("employee_id")].int().unwrap_or(0),
                r[employees.col("hourly_rate")].hundredths().unwrap_or(0),
            )
        })
        .collect();
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
        let tz = zones[&r[pid].int().unwrap_or(0)];
        let (s, e) = (r[start].micros().unwrap_or(0), r[end].micros().unwrap_or(0));
        overnight |= local(s, tz).date() != local(e, tz).date();
        let rate = rates[&r[emp].int().unwrap_or(0)];
        let h = r[hours].hundredths().unwrap_or(0);
        let c = r[code].text().unwrap_or("").to_string();
        let factor = if c == "OT" { 150 } else { 100 };
        // cost = hours × rate (× 1.5 for overtime), rounded to the cent.
        let exact = h * rate * factor;
        let expected = (exact + 5_000) / 10_000;
        assert_eq!(r[cost].hundredths(), Some(expected), "{r:?} at rate {rate}");
        shifts
            .entry((r[emp].int().unwrap_or(0), r[pid].int().unwrap_or(0), s))
            .or_insert((e, Vec::new()))
            .1
            .push((c, h));
    }
    assert!(overnight, "no shift crosses local midnight");
    let mut overtime = 0;
    for ((e, _, s), (end, rows)) in &shifts {
        let minutes = (end - s) / 60_000_000;
        let paid: i128 = rows.iter().map(|(_, h)| h).sum();
        let expected = if minutes > 360 { minutes - 30 } else { minutes };
        assert_eq!(
            paid,
            i128::from(expected) * 100 / 60,
            "employee {e}: {rows:?} for {minutes} minutes"
        );
        if rows.iter().any(|(c, _)| c == "OT") {
            overtime += 1;
            assert!(rows.contains(&("REG".to_string(), 800)), "{rows:?}");
        } else {
            assert!(paid <= 800, "{rows:?}");
        }
    }
    assert!(overtime > 0, "no overtime");
    // Nobody works two shifts at once.
    let mut last_end: HashMap<i64, i64> = HashMap::new();
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
    let mut staff: HashMap<i64, (i64, i64)> = HashMap::new();
    for r in &employees.rows {
        if r[employees.col("terminated_on")] == Val::Null {
            let e = staff
                .entry(r[employees.col("home_pharmacy_id")].int().unwrap_or(0))
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
        let id = r[pharmacies.col("pharmacy_id")].int().unwrap_or(0);
        assert_eq!(
            r[pharmacies.col("employees")].int(),
            Some(staff[&id].0),
            "pharmacy {id}"
        );
        assert_eq!(staff[&id].1, 1, "pharmacy {id} has one manager");
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
        let tz = zones[&r[main.col("pharmacy_id")].int().unwrap_or(0)];
        let before = originals[&main.key_of(r)][filled].micros().unwrap_or(0);
        local(before, tz).date() != local(r[filled].micros().unwrap_or(0), tz).date()
    });
    assert!(moved_day, "no corrected fill moves to another day");
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
    }
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
