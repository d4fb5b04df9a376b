//! Reads generated files back (CSV through Arrow's CSV reader with the contract schema, Parquet
//! through parquet's Arrow reader) and checks every record against the contract's definitions,
//! independently of the generator's own code.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, SchemaRef,
    TimestampMicrosecondType,
};
use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rxcube_gen::{GenConfig, GenSummary, generate};
use rxcube_model::contract::{Check, ColumnType, RowRule, TableDef, TableName};
use rxcube_model::domain;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A value read back from a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    /// Days since 1970-01-01.
    Day(i32),
    /// Microseconds since the epoch, UTC.
    Micros(i64),
    /// A decimal with two places, in hundredths.
    Hundredths(i128),
    Float(f64),
}

impl Val {
    pub fn int(&self) -> Option<i64> {
        match self {
            Val::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Val::Text(v) => Some(v),
            _ => None,
        }
    }

    pub fn micros(&self) -> Option<i64> {
        match self {
            Val::Micros(v) => Some(*v),
            _ => None,
        }
    }

    pub fn day(&self) -> Option<i32> {
        match self {
            Val::Day(v) => Some(*v),
            _ => None,
        }
    }

    pub fn hundredths(&self) -> Option<i128> {
        match self {
            Val::Hundredths(v) => Some(*v),
            _ => None,
        }
    }

    /// A number as a float (integers, decimals, floats).
    pub fn number(&self) -> Option<f64> {
        match self {
            Val::Int(v) => Some(*v as f64),
            Val::Hundredths(v) => Some(*v as f64 / 100.0),
            Val::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The instant or date as something ordered (microseconds; dates at midnight UTC).
    fn time(&self) -> Option<i64> {
        match self {
            Val::Micros(v) => Some(*v),
            Val::Day(d) => Some(i64::from(*d) * 86_400_000_000),
            _ => None,
        }
    }
}

/// The rows of one file.
#[derive(Debug)]
pub struct Table {
    pub def: &'static TableDef,
    pub rows: Vec<Vec<Val>>,
}

impl Table {
    pub fn col(&self, name: &str) -> usize {
        self.def
            .column_index(name)
            .unwrap_or_else(|| panic!("{} has no column {name}", self.def.name))
    }

    /// The values of column `name`, row by row.
    pub fn column<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Val> + 'a {
        let i = self.col(name);
        self.rows.iter().map(move |r| &r[i])
    }

    pub fn key_of(&self, row: &[Val]) -> String {
        self.def
            .key_indices()
            .iter()
            .map(|&i| format!("{:?}", row[i]))
            .collect::<Vec<_>>()
            .join("|")
    }
}

fn value(array: &ArrayRef, row: usize) -> Val {
    if array.is_null(row) {
        return Val::Null;
    }
    match array.data_type() {
        DataType::Int32 => Val::Int(i64::from(array.as_primitive::<Int32Type>().value(row))),
        DataType::Int64 => Val::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::Utf8 => Val::Text(array.as_string::<i32>().value(row).to_string()),
        DataType::Date32 => Val::Day(array.as_primitive::<Date32Type>().value(row)),
        DataType::Timestamp(_, _) => {
            Val::Micros(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::Decimal128(_, _) => {
            Val::Hundredths(array.as_primitive::<Decimal128Type>().value(row))
        }
        DataType::Float64 => Val::Float(array.as_primitive::<Float64Type>().value(row)),
        other => panic!("unexpected type {other}"),
    }
}

fn rows_of(batches: impl IntoIterator<Item = arrow::record_batch::RecordBatch>) -> Vec<Vec<Val>> {
    let mut rows = Vec::new();
    for batch in batches {
        for r in 0..batch.num_rows() {
            rows.push(batch.columns().iter().map(|c| value(c, r)).collect());
        }
    }
    rows
}

/// Reads a CSV file with the table's contract schema.
pub fn read_csv(path: &Path, table: TableName) -> Table {
    let def = table.def();
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = arrow::csv::ReaderBuilder::new(def.schema())
        .with_header(true)
        .build(file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Table {
        def,
        rows: rows_of(batches),
    }
}

/// Reads a Parquet file; also returns the schema it was written with.
pub fn read_parquet(path: &Path, table: TableName) -> (SchemaRef, Table) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema = builder.schema().clone();
    let reader = builder
        .build()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (
        schema,
        Table {
            def: table.def(),
            rows: rows_of(batches),
        },
    )
}

/// A generated data set, read back.
pub struct DataSet {
    pub config: GenConfig,
    pub dir: PathBuf,
    pub summary: GenSummary,
    pub tables: HashMap<TableName, Table>,
    pub corrections: HashMap<TableName, Table>,
}

impl DataSet {
    pub fn table(&self, t: TableName) -> &Table {
        &self.tables[&t]
    }

    /// The time zone of each pharmacy id (empty = Los Angeles).
    pub fn zones(&self) -> HashMap<String, Tz> {
        let t = self.table(TableName::Pharmacies);
        let (id, tz) = (t.col("pharmacy_id"), t.col("timezone"));
        t.rows
            .iter()
            .map(|r| {
                let name = r[tz].text().unwrap_or(domain::DEFAULT_TIMEZONE);
                (
                    r[id].text().unwrap_or("").to_string(),
                    name.parse::<Tz>().unwrap_or(Tz::UTC),
                )
            })
            .collect()
    }

    /// The main file's or the correction file's rows of `t`.
    pub fn file(&self, t: TableName, correction: bool) -> &Table {
        if correction {
            &self.corrections[&t]
        } else {
            self.table(t)
        }
    }
}

/// A directory for generated files, under the target directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("rxcube-gen")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Generates `config` into `name` and reads every file back.
pub fn generate_and_read(name: &str, config: GenConfig) -> DataSet {
    let dir = scratch_dir(name);
    let summary = generate(&config, &dir, |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut tables = HashMap::new();
    let mut corrections = HashMap::new();
    for f in &summary.files {
        let table = match config.format {
            rxcube_gen::Format::Csv => read_csv(&f.path, f.table),
            rxcube_gen::Format::Parquet => read_parquet(&f.path, f.table).1,
        };
        if f.correction {
            corrections.insert(f.table, table);
        } else {
            tables.insert(f.table, table);
        }
    }
    DataSet {
        config,
        dir,
        summary,
        tables,
        corrections,
    }
}

/// Reads the Parquet files of `tables` (main files only) from the directory of a chain made
/// with `config`, such as the committed demo chain.
pub fn read_parquet_dir(dir: &Path, config: GenConfig, tables: &[TableName]) -> DataSet {
    let tables = tables
        .iter()
        .map(|&t| (t, read_parquet(&dir.join(format!("{t}.parquet")), t).1))
        .collect();
    DataSet {
        config,
        dir: dir.to_path_buf(),
        summary: GenSummary { files: Vec::new() },
        tables,
        corrections: HashMap::new(),
    }
}

/// The small chain most tests look at: 4 pharmacies (one per time zone and peer group) over 6
/// weeks (three pay periods, long enough for refills of prescriptions in the range).
pub fn small_config() -> GenConfig {
    GenConfig {
        pharmacies: 4,
        days: 42,
        ..GenConfig::default()
    }
}

pub fn small_csv() -> &'static DataSet {
    static SET: OnceLock<DataSet> = OnceLock::new();
    SET.get_or_init(|| generate_and_read("small-csv", small_config()))
}

/// Local wall time of an instant in a zone.
pub fn local(micros: i64, tz: Tz) -> chrono::NaiveDateTime {
    let utc = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    tz.from_utc_datetime(&utc.naive_utc()).naive_local()
}

/// UTC offset (seconds) of a zone at an instant.
pub fn offset_at(micros: i64, tz: Tz) -> i32 {
    let utc = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    tz.offset_from_utc_datetime(&utc.naive_utc())
        .fix()
        .local_minus_utc()
}

pub fn epoch_day(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - 719_163
}

fn check_value(check: &Check, v: &Val) -> bool {
    match check {
        Check::OneOf(options) => v.text().is_some_and(|t| options.contains(&t)),
        Check::IntRange(lo, hi) => v.int().is_some_and(|i| (*lo..=*hi).contains(&i)),
        Check::NumRange(lo, hi) => v.number().is_some_and(|x| (*lo..=*hi).contains(&x)),
        Check::YearRange(lo, hi) => {
            let year = match v {
                Val::Day(d) => NaiveDate::from_num_days_from_ce_opt(d + 719_163).map(|d| d.year()),
                Val::Micros(m) => DateTime::<Utc>::from_timestamp_micros(*m).map(|t| t.year()),
                _ => None,
            };
            year.is_some_and(|y| (*lo..=*hi).contains(&y))
        }
        Check::NonEmpty => v.text().is_some_and(|t| !t.trim().is_empty()),
        Check::TimeZone => v.text().is_some_and(|t| t.parse::<Tz>().is_ok()),
        Check::Ssn => v.text().is_some_and(|t| {
            let b = t.as_bytes();
            b.len() == 11
                && b.iter().enumerate().all(|(i, c)| {
                    if i == 3 || i == 6 {
                        *c == b'-'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        }),
        Check::TargetableMetric => v.text().is_some_and(domain::is_targetable_metric),
        // domain.md: a label as the source system writes it, at most 64 bytes, no control
        // characters.
        Check::Identifier => v
            .text()
            .is_some_and(|t| !t.is_empty() && t.len() <= 64 && !t.chars().any(char::is_control)),
    }
}

/// Names of the contract's id columns: every column that names a pharmacy, employee,
/// prescription, transaction or survey response.
pub fn is_id_column(name: &str) -> bool {
    name.ends_with("_id")
}

/// True if every id column of `def` is text, as the contract says ids are.
pub fn ids_are_text(def: &TableDef) -> bool {
    def.columns
        .iter()
        .filter(|c| is_id_column(c.name))
        .all(|c| c.ty == ColumnType::Text)
}

fn check_rule(t: &Table, rule: &RowRule, row: &[Val]) -> bool {
    let get = |name: &str| &row[t.col(name)];
    match *rule {
        RowRule::Ordered {
            earlier,
            later,
            strict,
        } => match (get(earlier).time(), get(later).time()) {
            (Some(a), Some(b)) => {
                if strict {
                    a < b
                } else {
                    a <= b
                }
            }
            _ => true,
        },
        RowRule::MaxSpanHours { start, end, hours } => match (get(start).time(), get(end).time()) {
            (Some(a), Some(b)) => b - a <= hours * 3_600_000_000,
            _ => true,
        },
        // Paid hours are what the payroll system writes and may exceed the elapsed time (a night
        // over spring-forward, a call-in minimum: domain.md); the generator writes such shifts
        // on purpose, so this advisory is not held against it.
        RowRule::HoursWithinSpan { .. } => true,
        RowRule::SignMatches { amount, quantity } => {
            match (get(amount).number(), get(quantity).number()) {
                (Some(a), Some(q)) => a == 0.0 || a.signum() == q.signum(),
                _ => false,
            }
        }
        RowRule::OnlyWhen {
            column,
            when,
            value,
        } => *get(column) == Val::Null || get(when).text() == Some(value),
        RowRule::PercentageTarget { metric, value } => {
            let m = get(metric).text().unwrap_or("");
            !domain::is_percentage_metric(m)
                || get(value)
                    .number()
                    .is_some_and(|v| (0.0..=100.0).contains(&v))
        }
    }
}

/// Every way the records of `t` break the contract (empty when none), given the main tables
/// for references. At most 20 messages.
pub fn violations(t: &Table, tables: &HashMap<TableName, Table>) -> Vec<String> {
    let def = t.def;
    let mut out = Vec::new();
    let mut keys = HashSet::new();
    let references: Vec<(usize, HashSet<String>)> = def
        .references
        .iter()
        .map(|r| {
            let target = &tables[&r.table];
            let set = target
                .column(r.target_column)
                .map(|v| format!("{v:?}"))
                .collect();
            (t.col(r.column), set)
        })
        .collect();
    for (n, row) in t.rows.iter().enumerate() {
        for (c, col) in def.columns.iter().enumerate() {
            let v = &row[c];
            if *v == Val::Null {
                if !col.nullable {
                    out.push(format!("{} row {n}: {} is NULL", def.name, col.name));
                }
                continue;
            }
            // The generator keeps to the advisories as well as the rules.
            for check in col.checks.iter().chain(col.advisories) {
                if !check_value(check, v) {
                    out.push(format!(
                        "{} row {n}: {} = {v:?} fails {check:?}",
                        def.name, col.name
                    ));
                }
            }
        }
        for rule in def.row_rules.iter().chain(def.row_advisories) {
            if !check_rule(t, rule, row) {
                out.push(format!("{} row {n}: {row:?} breaks {rule:?}", def.name));
            }
        }
        for (c, set) in &references {
            if row[*c] != Val::Null && !set.contains(&format!("{:?}", row[*c])) {
                out.push(format!("{} row {n}: {:?} not found", def.name, row[*c]));
            }
        }
        if !keys.insert(t.key_of(row)) {
            out.push(format!(
                "{} row {n}: duplicate key {}",
                def.name,
                t.key_of(row)
            ));
        }
        if out.len() >= 20 {
            break;
        }
    }
    out
}
