//! The record rules of the contract, checked on typed chunks: value domains and ranges, rules
//! between columns of a record (time order, spans, signs), and references to reference tables.
//! NULLs are skipped here: a missing required value was already reported when it was read.

use std::collections::HashSet;
use std::str::FromStr;

use arrow::array::{
    Array, ArrayRef, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use rxcube_model::contract::{Check, MAX_ID_BYTES, Reference, RowRule};
use rxcube_model::{ColumnDef, ColumnType, TableDef, domain};

use crate::error::{RecordError, quote};
use crate::text::{days_from_civil, format_date};

const DAY_MICROS: i64 = 86_400_000_000;

/// Values on file in referenced tables, loaded once per import.
#[derive(Debug, Default, Clone)]
pub struct ReferenceSets {
    /// (table.column) → the values on file (references are text: identifiers and names).
    pub sets: Vec<(Reference, HashSet<String>)>,
    /// The metrics a target may name, when the caller's cube definition says
    /// ([`crate::ImportOptions::target_metrics`]); else the built-in cube's.
    pub target_metrics: Option<Vec<String>>,
}

impl ReferenceSets {
    fn values(&self, r: &Reference) -> Option<&HashSet<String>> {
        self.sets.iter().find(|(x, _)| x == r).map(|(_, s)| s)
    }
}

/// A typed view of one column for value access by row.
enum Col<'a> {
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    Text(&'a StringArray),
    Date(&'a Date32Array),
    Instant(&'a TimestampMicrosecondArray),
    Dec(&'a Decimal128Array, i32),
    F64(&'a Float64Array),
}

impl<'a> Col<'a> {
    fn new(c: &ColumnDef, a: &'a ArrayRef) -> Self {
        let any = a.as_any();
        // The chunk was built in the contract schema, so each downcast matches its type.
        match c.ty {
            ColumnType::Int32 => Col::I32(any.downcast_ref().expect("contract type")),
            ColumnType::Int64 => Col::I64(any.downcast_ref().expect("contract type")),
            ColumnType::Text => Col::Text(any.downcast_ref().expect("contract type")),
            ColumnType::Date => Col::Date(any.downcast_ref().expect("contract type")),
            ColumnType::Instant => Col::Instant(any.downcast_ref().expect("contract type")),
            ColumnType::Money | ColumnType::Hours => {
                let scale = match a.data_type() {
                    DataType::Decimal128(_, s) => i32::from(*s),
                    _ => 0,
                };
                Col::Dec(any.downcast_ref().expect("contract type"), scale)
            }
            ColumnType::Float64 => Col::F64(any.downcast_ref().expect("contract type")),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Col::I32(a) => a.is_null(i),
            Col::I64(a) => a.is_null(i),
            Col::Text(a) => a.is_null(i),
            Col::Date(a) => a.is_null(i),
            Col::Instant(a) => a.is_null(i),
            Col::Dec(a, _) => a.is_null(i),
            Col::F64(a) => a.is_null(i),
        }
    }

    /// An integer view: ints as is, dates in days, instants in microseconds, decimals scaled.
    fn int(&self, i: usize) -> i64 {
        match self {
            Col::I32(a) => i64::from(a.value(i)),
            Col::I64(a) => a.value(i),
            Col::Date(a) => i64::from(a.value(i)),
            Col::Instant(a) => a.value(i),
            Col::Dec(a, _) => a.value(i) as i64,
            Col::F64(a) => a.value(i) as i64,
            Col::Text(_) => 0,
        }
    }

    fn num(&self, i: usize) -> f64 {
        match self {
            Col::Dec(a, s) => a.value(i) as f64 / 10f64.powi(*s),
            Col::F64(a) => a.value(i),
            other => other.int(i) as f64,
        }
    }

    fn text(&self, i: usize) -> &str {
        match self {
            Col::Text(a) => a.value(i),
            _ => "",
        }
    }

    /// The value as the user wrote it, for messages.
    fn show(&self, i: usize) -> String {
        match self {
            Col::Text(a) => quote(a.value(i)),
            Col::Date(a) => format_date(a.value(i)),
            Col::Instant(a) => chrono::DateTime::from_timestamp_micros(a.value(i))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default(),
            Col::Dec(a, s) => {
                let v = a.value(i);
                let p = 10i128.pow(*s as u32);
                let sign = if v < 0 { "-" } else { "" };
                format!(
                    "{sign}{}.{:0w$}",
                    (v / p).abs(),
                    (v % p).abs(),
                    w = *s as usize
                )
            }
            Col::F64(a) => a.value(i).to_string(),
            other => other.int(i).to_string(),
        }
    }
}

fn is_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11
        && b[3] == b'-'
        && b[6] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 3 || i == 6 || c.is_ascii_digit())
}

fn year_bounds(c: ColumnType, from: i32, to: i32) -> (i64, i64) {
    let lo = days_from_civil(i64::from(from), 1, 1);
    let hi = days_from_civil(i64::from(to) + 1, 1, 1) - 1;
    match c {
        ColumnType::Instant => (lo * DAY_MICROS, (hi + 1) * DAY_MICROS - 1),
        _ => (lo, hi),
    }
}

/// Checks every rule and advisory of `def` on `batch` (record numbers from `first_record`):
/// a broken rule is appended to `errors`, an unusual value flagged by an advisory to `warnings`.
pub(crate) fn check_batch(
    def: &TableDef,
    file: &str,
    batch: &RecordBatch,
    first_record: u64,
    refs: &ReferenceSets,
    errors: &mut Vec<RecordError>,
    warnings: &mut Vec<RecordError>,
) {
    let cols: Vec<Col<'_>> = def
        .columns
        .iter()
        .zip(batch.columns())
        .map(|(c, a)| Col::new(c, a))
        .collect();
    let rows = batch.num_rows();
    {
        let mut fail = reporter(errors, file, first_record);
        for (c, col) in def.columns.iter().zip(&cols) {
            check_values(c, col, c.checks, rows, refs, &mut fail);
        }
        for rule in def.row_rules {
            check_row_rule(def, &cols, rule, rows, &mut fail);
        }
        check_references(def, &cols, refs, rows, &mut fail);
    }
    let mut warn = reporter(warnings, file, first_record);
    for (c, col) in def.columns.iter().zip(&cols) {
        check_values(c, col, c.advisories, rows, refs, &mut warn);
    }
    for rule in def.row_advisories {
        check_row_rule(def, &cols, rule, rows, &mut warn);
    }
}

/// Where a check reports a value: (row, column, value as written, reason).
type Report<'f> = dyn FnMut(usize, &str, Option<String>, String) + 'f;

/// Reports into `out`, numbering rows from `first_record`.
fn reporter<'a>(
    out: &'a mut Vec<RecordError>,
    file: &'a str,
    first_record: u64,
) -> impl FnMut(usize, &str, Option<String>, String) + 'a {
    move |i, column, value, reason| {
        out.push(RecordError {
            file: file.to_string(),
            record: Some(first_record + i as u64),
            column: Some(column.to_string()),
            value,
            reason,
        });
    }
}

fn idx(def: &TableDef, name: &str) -> usize {
    def.column_index(name).expect("rules name contract columns")
}

fn check_values(
    c: &ColumnDef,
    col: &Col<'_>,
    checks: &[Check],
    rows: usize,
    refs: &ReferenceSets,
    fail: &mut Report<'_>,
) {
    for check in checks {
        for i in 0..rows {
            if col.is_null(i) {
                continue;
            }
            let reason = match *check {
                Check::OneOf(values) => (!values.contains(&col.text(i)))
                    .then(|| format!("must be one of {}", values.join(", "))),
                Check::IntRange(lo, hi) => {
                    let v = col.int(i);
                    (v < lo || v > hi).then(|| format!("out of range {lo}..={hi}"))
                }
                Check::NumRange(lo, hi) => {
                    let v = col.num(i);
                    (v < lo || v > hi).then(|| format!("out of range {lo}..={hi}"))
                }
                Check::YearRange(from, to) => {
                    let (lo, hi) = year_bounds(c.ty, from, to);
                    let v = col.int(i);
                    (v < lo || v > hi).then(|| format!("year outside {from}..={to}"))
                }
                Check::NonEmpty => col
                    .text(i)
                    .trim()
                    .is_empty()
                    .then(|| "must not be blank".to_string()),
                Check::TimeZone => chrono_tz::Tz::from_str(col.text(i))
                    .is_err()
                    .then(|| "not an IANA time zone name (e.g. America/Chicago)".to_string()),
                Check::Ssn => (!is_ssn(col.text(i)))
                    .then(|| "not a social security number (NNN-NN-NNNN)".to_string()),
                Check::TargetableMetric => targetable_problem(col.text(i), refs),
                Check::Identifier => identifier_problem(col.text(i)).map(str::to_string),
            };
            if let Some(reason) = reason {
                fail(i, c.name, Some(col.show(i)), reason);
            }
        }
    }
}

/// Why `metric` may not carry a target, if it may not: it is none of the cube definition's
/// metrics (the built-in cube's when the caller gave none).
fn targetable_problem(metric: &str, refs: &ReferenceSets) -> Option<String> {
    let listed =
        |names: Vec<&str>| format!("not a metric that takes targets: {}", names.join(", "));
    match &refs.target_metrics {
        Some(names) => (!names.iter().any(|n| n == metric))
            .then(|| listed(names.iter().map(String::as_str).collect())),
        None => (!domain::is_targetable_metric(metric)).then(|| {
            listed(
                domain::KEY_METRICS
                    .iter()
                    .chain(domain::OTHER_TARGETABLE_METRICS)
                    .copied()
                    .collect(),
            )
        }),
    }
}

/// Why `s` is not an identifier label, if it is not one.
fn identifier_problem(s: &str) -> Option<&'static str> {
    if s.trim().is_empty() {
        Some("must not be blank")
    } else if s.len() > MAX_ID_BYTES {
        Some("longer than 64 bytes")
    } else if s.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

fn check_row_rule(
    def: &TableDef,
    cols: &[Col<'_>],
    rule: &RowRule,
    rows: usize,
    fail: &mut Report<'_>,
) {
    match *rule {
        RowRule::Ordered {
            earlier,
            later,
            strict,
        } => {
            let (a, b) = (&cols[idx(def, earlier)], &cols[idx(def, later)]);
            for i in 0..rows {
                if a.is_null(i) || b.is_null(i) {
                    continue;
                }
                let bad = if strict {
                    b.int(i) <= a.int(i)
                } else {
                    b.int(i) < a.int(i)
                };
                if bad {
                    let rel = if strict { "after" } else { "on or after" };
                    fail(
                        i,
                        later,
                        Some(b.show(i)),
                        format!("must be {rel} {earlier} ({})", a.show(i)),
                    );
                }
            }
        }
        RowRule::MaxSpanHours { start, end, hours } => {
            let (a, b) = (&cols[idx(def, start)], &cols[idx(def, end)]);
            for i in 0..rows {
                if !a.is_null(i) && !b.is_null(i) && b.int(i) - a.int(i) > hours * 3_600_000_000 {
                    fail(
                        i,
                        end,
                        Some(b.show(i)),
                        format!("more than {hours} hours after {start} ({})", a.show(i)),
                    );
                }
            }
        }
        RowRule::HoursWithinSpan { hours, start, end } => {
            let (h, a, b) = (
                &cols[idx(def, hours)],
                &cols[idx(def, start)],
                &cols[idx(def, end)],
            );
            for i in 0..rows {
                if h.is_null(i) || a.is_null(i) || b.is_null(i) {
                    continue;
                }
                let span = (b.int(i) - a.int(i)) as f64 / 3_600_000_000.0;
                if h.num(i) > span + 1e-9 {
                    fail(
                        i,
                        hours,
                        Some(h.show(i)),
                        format!("exceeds the shift's elapsed length of {span:.2} hours"),
                    );
                }
            }
        }
        RowRule::SignMatches { amount, quantity } => {
            let (a, q) = (&cols[idx(def, amount)], &cols[idx(def, quantity)]);
            for i in 0..rows {
                if a.is_null(i) || q.is_null(i) {
                    continue;
                }
                let (av, qv) = (a.num(i), q.int(i));
                if qv == 0 {
                    fail(
                        i,
                        quantity,
                        Some("0".into()),
                        "is 0 (a return is negative)".into(),
                    );
                } else if av != 0.0 && (av < 0.0) != (qv < 0) {
                    fail(
                        i,
                        amount,
                        Some(a.show(i)),
                        format!("sign differs from {quantity} ({qv})"),
                    );
                }
            }
        }
        RowRule::OnlyWhen {
            column,
            when,
            value,
        } => {
            let (c, w) = (&cols[idx(def, column)], &cols[idx(def, when)]);
            for i in 0..rows {
                if !c.is_null(i) && !w.is_null(i) && w.text(i) != value {
                    fail(
                        i,
                        column,
                        Some(c.show(i)),
                        format!("expected only when {when} is {value}"),
                    );
                }
            }
        }
        RowRule::PercentageTarget { metric, value } => {
            let (m, v) = (&cols[idx(def, metric)], &cols[idx(def, value)]);
            for i in 0..rows {
                if !m.is_null(i)
                    && !v.is_null(i)
                    && domain::is_percentage_metric(m.text(i))
                    && v.num(i) > 100.0
                {
                    fail(
                        i,
                        value,
                        Some(v.show(i)),
                        format!("{} is a percentage: 0..=100", m.text(i)),
                    );
                }
            }
        }
    }
}

fn check_references(
    def: &TableDef,
    cols: &[Col<'_>],
    refs: &ReferenceSets,
    rows: usize,
    fail: &mut Report<'_>,
) {
    for r in def.references {
        let col = &cols[idx(def, r.column)];
        let Some(set) = refs.values(r) else { continue };
        let target = format!("{}.{}", r.table, r.target_column);
        for i in 0..rows {
            if !col.is_null(i) && !set.contains(col.text(i)) {
                fail(
                    i,
                    r.column,
                    Some(col.show(i)),
                    format!("no such {target} on file"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssn_shape() {
        assert!(is_ssn("123-45-6789"));
        assert!(!is_ssn("123456789"));
        assert!(!is_ssn("123-45-678X"));
    }

    #[test]
    fn identifiers_are_labels_of_at_most_64_bytes_without_control_characters() {
        for ok in [
            "RX101",
            "00423",
            "E1001",
            "R03-000123",
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert_eq!(identifier_problem(ok), None, "{ok}");
        }
        assert_eq!(identifier_problem(&"9".repeat(64)), None);
        assert_eq!(
            identifier_problem(&"9".repeat(65)),
            Some("longer than 64 bytes")
        );
        assert_eq!(
            identifier_problem("RX\u{0}1"),
            Some("contains a control character")
        );
        assert_eq!(
            identifier_problem("RX\n1"),
            Some("contains a control character")
        );
        assert_eq!(identifier_problem("  "), Some("must not be blank"));
    }

    #[test]
    fn year_bounds_cover_whole_years() {
        let (lo, hi) = year_bounds(ColumnType::Date, 1970, 1970);
        assert_eq!((lo, hi), (0, 364));
        let (lo, hi) = year_bounds(ColumnType::Instant, 1970, 1970);
        assert_eq!((lo, hi), (0, 365 * DAY_MICROS - 1));
    }
}
