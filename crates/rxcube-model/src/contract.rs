//! The eight landed tables of the input contract: columns, types, natural keys, domains,
//! references, row rules and the storage layout that makes scans fast.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::domain;

/// Name of the storage partition column added to every event table: the first day of the UTC
/// month of the table's event time.
pub const PARTITION_COLUMN: &str = "event_month";

/// Scale of money columns (cents) and of payroll hours.
pub const MONEY_SCALE: i8 = 2;
/// Precision of money columns.
pub const MONEY_PRECISION: u8 = 18;

/// The landed tables, in the order their references require them to be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableName {
    Pharmacies,
    PeerGroups,
    Targets,
    Employees,
    Payroll,
    Pos,
    RxFills,
    Surveys,
}

impl TableName {
    /// Every table, reference tables first.
    pub const ALL: [TableName; 8] = [
        TableName::Pharmacies,
        TableName::PeerGroups,
        TableName::Targets,
        TableName::Employees,
        TableName::Payroll,
        TableName::Pos,
        TableName::RxFills,
        TableName::Surveys,
    ];

    pub fn as_str(self) -> &'static str {
        self.def().name
    }

    /// The table's definition.
    pub fn def(self) -> &'static TableDef {
        match self {
            TableName::Pharmacies => &PHARMACIES,
            TableName::PeerGroups => &PEER_GROUPS,
            TableName::Targets => &TARGETS,
            TableName::Employees => &EMPLOYEES,
            TableName::Payroll => &PAYROLL,
            TableName::Pos => &POS,
            TableName::RxFills => &RX_FILLS,
            TableName::Surveys => &SURVEYS,
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a name that is not a contract table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTable(pub String);

impl fmt::Display for UnknownTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = TableName::ALL.iter().map(|t| t.as_str()).collect();
        write!(
            f,
            "unknown table '{}': the contract tables are {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownTable {}

impl FromStr for TableName {
    type Err = UnknownTable;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TableName::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTable(s.to_string()))
    }
}

/// The logical type of a contract column, as it is written in a file and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// 32-bit integer (ids, counts, minutes).
    Int32,
    /// 64-bit integer (event ids).
    Int64,
    /// UTF-8 text.
    Text,
    /// ISO 8601 calendar date, no zone.
    Date,
    /// RFC 3339 timestamp with offset; stored as a UTC instant in microseconds.
    Instant,
    /// US dollars with cents: decimal(18, 2).
    Money,
    /// Hours with hundredths: decimal(9, 2).
    Hours,
    /// A double-precision number.
    Float64,
}

impl ColumnType {
    /// The Arrow type the column is stored as.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Text => DataType::Utf8,
            ColumnType::Date => DataType::Date32,
            ColumnType::Instant => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Money => DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE),
            ColumnType::Hours => DataType::Decimal128(9, MONEY_SCALE),
            ColumnType::Float64 => DataType::Float64,
        }
    }

    /// How the type is described in error messages and docs.
    pub fn describe(self) -> &'static str {
        match self {
            ColumnType::Int32 | ColumnType::Int64 => "an integer",
            ColumnType::Text => "text",
            ColumnType::Date => "an ISO 8601 date (YYYY-MM-DD)",
            ColumnType::Instant => "an RFC 3339 timestamp with offset",
            ColumnType::Money => "a decimal amount with at most 2 decimals",
            ColumnType::Hours => "a decimal number of hours with at most 2 decimals",
            ColumnType::Float64 => "a number",
        }
    }
}

/// A rule on a single value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// The value is one of these strings.
    OneOf(&'static [&'static str]),
    /// An integer within the inclusive range.
    IntRange(i64, i64),
    /// A number (money, hours, float) within the inclusive range.
    NumRange(f64, f64),
    /// An instant or date within the inclusive range of years.
    YearRange(i32, i32),
    /// Not empty after trimming.
    NonEmpty,
    /// An IANA time zone name known to the tz database.
    TimeZone,
    /// A US social security number, `NNN-NN-NNNN`.
    Ssn,
    /// A metric that may carry a target.
    TargetableMetric,
    /// An identifier label as a source system writes it: non-empty, at most
    /// [`MAX_ID_BYTES`] bytes, no control characters; kept exactly (case, leading zeros).
    Identifier,
}

/// The longest identifier accepted, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 64;

/// A rule relating two or more columns of the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRule {
    /// `later` is after `earlier` (`strict`) or not before it. Skipped when either is NULL.
    Ordered {
        earlier: &'static str,
        later: &'static str,
        strict: bool,
    },
    /// `end - start` is at most this many hours.
    MaxSpanHours {
        start: &'static str,
        end: &'static str,
        hours: i64,
    },
    /// Paid `hours` do not exceed the shift's elapsed length.
    HoursWithinSpan {
        hours: &'static str,
        start: &'static str,
        end: &'static str,
    },
    /// `amount` is zero or has the sign of `quantity` (a return refunds money).
    SignMatches {
        amount: &'static str,
        quantity: &'static str,
    },
    /// `column` may be set only when `when` equals `value`.
    OnlyWhen {
        column: &'static str,
        when: &'static str,
        value: &'static str,
    },
    /// For percentage metrics (named in `metric`), `value` lies within 0..=100.
    PercentageTarget {
        metric: &'static str,
        value: &'static str,
    },
}

/// A column whose non-NULL values must exist in a column of another table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    pub column: &'static str,
    pub table: TableName,
    pub target_column: &'static str,
}

/// One column of a contract table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnDef {
    pub name: &'static str,
    pub ty: ColumnType,
    pub nullable: bool,
    pub checks: &'static [Check],
    /// Checks that flag an unusual value with a warning (counted, never a rejection): useful,
    /// but not rules of the contract.
    pub advisories: &'static [Check],
    /// Strings with few distinct values, stored dictionary-encoded.
    pub low_cardinality: bool,
    pub doc: &'static str,
}

/// A landed table: its columns, natural key, rules and layout.
#[derive(Debug, PartialEq)]
pub struct TableDef {
    pub name: &'static str,
    pub doc: &'static str,
    pub columns: &'static [ColumnDef],
    /// The natural key: a record whose key is on file replaces it.
    pub key: &'static [&'static str],
    /// For event tables, the instant that buckets the event: files are partitioned by its UTC
    /// month ([`PARTITION_COLUMN`]) and sorted by it.
    pub event_time: Option<&'static str>,
    pub references: &'static [Reference],
    pub row_rules: &'static [RowRule],
    /// Rules between columns that only warn (counted, never a rejection).
    pub row_advisories: &'static [RowRule],
}

impl TableDef {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Index of the column named `name` in [`TableDef::columns`].
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Indices of the natural key's columns.
    pub fn key_indices(&self) -> Vec<usize> {
        self.key
            .iter()
            .filter_map(|k| self.column_index(k))
            .collect()
    }

    /// The schema of a file or batch holding this table's records (the contract columns).
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(c.name, c.ty.arrow_type(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// The schema the table is stored with: the contract columns and, for event tables, the
    /// partition column.
    pub fn stored_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(c.name, c.ty.arrow_type(), c.nullable))
            .collect();
        if self.event_time.is_some() {
            fields.push(Field::new(PARTITION_COLUMN, DataType::Date32, false));
        }
        Arc::new(Schema::new(fields))
    }

    /// Columns the stored files are sorted by: the event time then the key, or the key.
    pub fn sort_columns(&self) -> Vec<&'static str> {
        let mut cols: Vec<&'static str> = self.event_time.into_iter().collect();
        cols.extend(self.key.iter().filter(|k| Some(**k) != self.event_time));
        cols
    }

    /// Partition columns of the stored table.
    pub fn partition_columns(&self) -> Vec<&'static str> {
        if self.event_time.is_some() {
            vec![PARTITION_COLUMN]
        } else {
            Vec::new()
        }
    }
}

const fn col(
    name: &'static str,
    ty: ColumnType,
    nullable: bool,
    checks: &'static [Check],
    doc: &'static str,
) -> ColumnDef {
    ColumnDef {
        name,
        ty,
        nullable,
        checks,
        advisories: &[],
        low_cardinality: false,
        doc,
    }
}

/// A low-cardinality text column (stored with a dictionary).
const fn tag(
    name: &'static str,
    nullable: bool,
    checks: &'static [Check],
    doc: &'static str,
) -> ColumnDef {
    ColumnDef {
        name,
        ty: ColumnType::Text,
        nullable,
        checks,
        advisories: &[],
        low_cardinality: true,
        doc,
    }
}

impl ColumnDef {
    /// An identifier label (`pharmacy_id`, `rx_id`, ...): text, kept exactly.
    pub fn is_identifier(&self) -> bool {
        self.checks.contains(&Check::Identifier)
    }

    /// The same column, with checks that only warn.
    const fn advise(mut self, advisories: &'static [Check]) -> Self {
        self.advisories = advisories;
        self
    }
}

use Check::*;
use ColumnType::*;

const ID: &[Check] = &[Identifier];
const YEARS: &[Check] = &[YearRange(1990, 2100)];
const NAME: &[Check] = &[NonEmpty];
const PHARMACY_REF: Reference = Reference {
    column: "pharmacy_id",
    table: TableName::Pharmacies,
    target_column: "pharmacy_id",
};

pub static PHARMACIES: TableDef = TableDef {
    name: "pharmacies",
    doc: "Each pharmacy's place in the org (local area, service area, region) for a validity \
          interval of local dates; a re-organization is a new row.",
    columns: &[
        col("pharmacy_id", Text, false, ID, "Pharmacy id."),
        col(
            "valid_from",
            Date,
            false,
            &[],
            "First local date this row holds (inclusive).",
        )
        .advise(YEARS),
        col(
            "valid_to",
            Date,
            true,
            &[],
            "Local date this row stops holding (exclusive); NULL = open.",
        )
        .advise(YEARS),
        col("name", Text, false, NAME, "Pharmacy name."),
        tag(
            "local_area",
            false,
            NAME,
            "Local area the pharmacy belongs to.",
        ),
        tag(
            "service_area",
            false,
            NAME,
            "Service area of the local area.",
        ),
        tag("region", false, NAME, "Region of the service area."),
        tag(
            "timezone",
            true,
            &[TimeZone],
            "IANA time zone of the pharmacy; NULL = America/Los_Angeles.",
        ),
        col(
            "employees",
            Int32,
            false,
            &[IntRange(0, i32::MAX as i64)],
            "Head count.",
        )
        .advise(&[IntRange(0, 10_000)]),
        col(
            "hours_per_week",
            Int32,
            false,
            &[IntRange(1, 168)],
            "Opening hours per week (168 = 24 hours).",
        ),
    ],
    key: &["pharmacy_id", "valid_from"],
    event_time: None,
    references: &[],
    row_rules: &[RowRule::Ordered {
        earlier: "valid_from",
        later: "valid_to",
        strict: true,
    }],
    row_advisories: &[],
};

pub static PEER_GROUPS: TableDef = TableDef {
    name: "peer_groups",
    doc: "Which peer group a pharmacy belongs to over a validity interval of local dates, with \
          the target minutes for on-time processing.",
    columns: &[
        col("pharmacy_id", Text, false, ID, "Pharmacy id."),
        col(
            "valid_from",
            Date,
            false,
            &[],
            "First local date of the assignment (inclusive).",
        )
        .advise(YEARS),
        col(
            "valid_to",
            Date,
            true,
            &[],
            "Local date the assignment ends (exclusive); NULL = open.",
        )
        .advise(YEARS),
        tag("peer_group", false, NAME, "Peer group name."),
        col(
            "rx_target_minutes",
            Int32,
            true,
            &[IntRange(1, 1440)],
            "Minutes within which a local fill is on time; NULL = 15.",
        ),
    ],
    key: &["pharmacy_id", "valid_from"],
    event_time: None,
    references: &[PHARMACY_REF],
    row_rules: &[RowRule::Ordered {
        earlier: "valid_from",
        later: "valid_to",
        strict: true,
    }],
    row_advisories: &[],
};

pub static TARGETS: TableDef = TableDef {
    name: "targets",
    doc: "Target tiers per peer group and metric (1 = threshold, 2 = target, 3 = stretch, ...), \
          each with a bonus, holding from effective_from until the next effective_from.",
    columns: &[
        tag(
            "peer_group",
            false,
            NAME,
            "Peer group the target applies to.",
        ),
        tag(
            "metric",
            false,
            &[TargetableMetric],
            "Metric name, e.g. on_time_pct.",
        ),
        col(
            "tier",
            Int32,
            false,
            &[IntRange(1, 9)],
            "Tier: 1 = threshold, 2 = target, 3 = stretch.",
        ),
        col(
            "effective_from",
            Date,
            false,
            &[],
            "First date the value holds.",
        )
        .advise(YEARS),
        col(
            "value",
            Float64,
            false,
            &[NumRange(0.0, 1.0e9)],
            "Target value in the metric's unit.",
        ),
        col(
            "bonus_amount",
            Money,
            false,
            &[NumRange(0.0, 1.0e9)],
            "Bonus earned on attaining the tier, USD.",
        ),
    ],
    key: &["peer_group", "metric", "tier", "effective_from"],
    event_time: None,
    references: &[Reference {
        column: "peer_group",
        table: TableName::PeerGroups,
        target_column: "peer_group",
    }],
    row_rules: &[RowRule::PercentageTarget {
        metric: "metric",
        value: "value",
    }],
    row_advisories: &[],
};

pub static EMPLOYEES: TableDef = TableDef {
    name: "employees",
    doc: "Employees with their home pharmacy. ssn and hourly_rate are sensitive.",
    columns: &[
        col("employee_id", Text, false, ID, "Employee id."),
        col("name", Text, false, NAME, "Employee name."),
        col(
            "ssn",
            Text,
            false,
            &[Ssn],
            "Social security number, NNN-NN-NNNN (sensitive).",
        ),
        tag(
            "job_class",
            false,
            &[OneOf(domain::JOB_CLASSES)],
            "pharmacist, technician, clerk or manager.",
        ),
        col(
            "hourly_rate",
            Money,
            false,
            &[NumRange(0.01, 1000.0)],
            "Base pay per hour, USD (sensitive).",
        ),
        col(
            "home_pharmacy_id",
            Text,
            false,
            ID,
            "Pharmacy the employee belongs to.",
        ),
        col("hired_on", Date, false, &[], "Hire date.").advise(YEARS),
        col(
            "terminated_on",
            Date,
            true,
            &[],
            "Termination date; NULL = employed.",
        )
        .advise(YEARS),
    ],
    key: &["employee_id"],
    event_time: None,
    references: &[Reference {
        column: "home_pharmacy_id",
        table: TableName::Pharmacies,
        target_column: "pharmacy_id",
    }],
    row_rules: &[RowRule::Ordered {
        earlier: "hired_on",
        later: "terminated_on",
        strict: false,
    }],
    row_advisories: &[],
};

pub static PAYROLL: TableDef = TableDef {
    name: "payroll",
    doc: "Time cards: one row per employee, pharmacy, shift and pay code; cost and hours are \
          spread over the shift pro rata by the minute.",
    columns: &[
        col(
            "employee_id",
            Text,
            false,
            ID,
            "Employee who worked the shift.",
        ),
        col(
            "pharmacy_id",
            Text,
            false,
            ID,
            "Pharmacy the shift was worked at.",
        ),
        col("shift_start", Instant, false, &[], "Start of the shift.").advise(YEARS),
        tag(
            "pay_code",
            false,
            &[OneOf(domain::PAY_CODES)],
            "REG, OT (overtime), HOL or TRN.",
        ),
        col("shift_end", Instant, false, &[], "End of the shift.").advise(YEARS),
        col(
            "hours",
            Hours,
            false,
            &[NumRange(0.01, 24.0)],
            "Paid hours.",
        ),
        col(
            "cost",
            Money,
            false,
            &[NumRange(0.0, 100_000.0)],
            "Payroll cost of the shift, USD.",
        ),
    ],
    key: &["employee_id", "pharmacy_id", "shift_start", "pay_code"],
    event_time: Some("shift_start"),
    references: &[
        PHARMACY_REF,
        Reference {
            column: "employee_id",
            table: TableName::Employees,
            target_column: "employee_id",
        },
    ],
    row_rules: &[RowRule::Ordered {
        earlier: "shift_start",
        later: "shift_end",
        strict: true,
    }],
    // Paid hours are what the payroll system writes: a night over a daylight-saving change or a
    // call-in minimum pays more than the elapsed time, so these only warn.
    row_advisories: &[
        RowRule::MaxSpanHours {
            start: "shift_start",
            end: "shift_end",
            hours: 24,
        },
        RowRule::HoursWithinSpan {
            hours: "hours",
            start: "shift_start",
            end: "shift_end",
        },
    ],
};

pub static POS: TableDef = TableDef {
    name: "pos",
    doc: "Point-of-sale lines: rx lines count Rx sold (net of returns), otc lines carry OTC sales.",
    columns: &[
        col("txn_id", Text, false, ID, "Transaction (basket) id."),
        col(
            "line_no",
            Int32,
            false,
            &[IntRange(0, i32::MAX as i64)],
            "Line within the transaction.",
        )
        .advise(&[IntRange(1, 10_000)]),
        col("pharmacy_id", Text, false, ID, "Pharmacy of the sale."),
        col("sold_at", Instant, false, &[], "When the sale happened.").advise(YEARS),
        tag("kind", false, &[OneOf(domain::POS_KINDS)], "rx or otc."),
        col("quantity", Int32, false, &[], "Units; negative = return.")
            .advise(&[IntRange(-1000, 1000)]),
        col(
            "amount",
            Money,
            false,
            &[],
            "Line amount, USD; negative on a return.",
        )
        .advise(&[NumRange(-1.0e7, 1.0e7)]),
        col("rx_id", Text, true, ID, "Prescription sold, on rx lines."),
    ],
    key: &["txn_id", "line_no"],
    event_time: Some("sold_at"),
    references: &[PHARMACY_REF],
    row_rules: &[],
    row_advisories: &[
        RowRule::SignMatches {
            amount: "amount",
            quantity: "quantity",
        },
        RowRule::OnlyWhen {
            column: "rx_id",
            when: "kind",
            value: "rx",
        },
    ],
};

pub static RX_FILLS: TableDef = TableDef {
    name: "rx_fills",
    doc: "Prescription fills: fill_no 0 is a new fill, 1 and up are refills; channel says whether \
          the pharmacy (local) or Central Refill Processing (crp) filled it.",
    columns: &[
        col("rx_id", Text, false, ID, "Prescription id."),
        col(
            "fill_no",
            Int32,
            false,
            &[IntRange(0, i32::MAX as i64)],
            "0 = new fill, 1 and up = refill.",
        )
        .advise(&[IntRange(0, 99)]),
        col(
            "pharmacy_id",
            Text,
            false,
            ID,
            "Pharmacy the fill belongs to.",
        ),
        tag(
            "channel",
            false,
            &[OneOf(domain::CHANNELS)],
            "local or crp.",
        ),
        col(
            "received_at",
            Instant,
            false,
            &[],
            "When the prescription was received.",
        )
        .advise(YEARS),
        col(
            "filled_at",
            Instant,
            false,
            &[],
            "When it was filled; buckets the fill.",
        )
        .advise(YEARS),
    ],
    key: &["rx_id", "fill_no"],
    event_time: Some("filled_at"),
    references: &[PHARMACY_REF],
    row_rules: &[RowRule::Ordered {
        earlier: "received_at",
        later: "filled_at",
        strict: false,
    }],
    row_advisories: &[RowRule::MaxSpanHours {
        start: "received_at",
        end: "filled_at",
        hours: 24 * 30,
    }],
};

pub static SURVEYS: TableDef = TableDef {
    name: "surveys",
    doc: "Customer-survey responses.",
    columns: &[
        col("response_id", Text, false, ID, "Response id."),
        col(
            "pharmacy_id",
            Text,
            false,
            ID,
            "Pharmacy the response is about.",
        ),
        col(
            "responded_at",
            Instant,
            false,
            &[],
            "When the customer responded.",
        )
        .advise(YEARS),
        tag(
            "rating",
            false,
            &[OneOf(domain::RATINGS)],
            "very_satisfied, satisfied, dissatisfied or very_dissatisfied.",
        ),
    ],
    key: &["response_id"],
    event_time: Some("responded_at"),
    references: &[PHARMACY_REF],
    row_rules: &[],
    row_advisories: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_rule_and_reference_names_a_real_column() {
        for t in TableName::ALL {
            let def = t.def();
            for k in def.key {
                assert!(def.column(k).is_some(), "{}: key {k}", def.name);
                assert!(
                    !def.column(k).is_some_and(|c| c.nullable),
                    "{}: nullable key {k}",
                    def.name
                );
            }
            for r in def.references {
                assert!(def.column(r.column).is_some(), "{}: {}", def.name, r.column);
                assert!(r.table.def().column(r.target_column).is_some());
                assert!(
                    r.table < t,
                    "{} references {} which loads later",
                    def.name,
                    r.table
                );
            }
            if let Some(e) = def.event_time {
                assert_eq!(def.column(e).map(|c| c.ty), Some(ColumnType::Instant));
            }
            for rule in def.row_rules.iter().chain(def.row_advisories) {
                let names: Vec<&str> = match *rule {
                    RowRule::Ordered { earlier, later, .. } => vec![earlier, later],
                    RowRule::MaxSpanHours { start, end, .. } => vec![start, end],
                    RowRule::HoursWithinSpan { hours, start, end } => vec![hours, start, end],
                    RowRule::SignMatches { amount, quantity } => vec![amount, quantity],
                    RowRule::OnlyWhen { column, when, .. } => vec![column, when],
                    RowRule::PercentageTarget { metric, value } => vec![metric, value],
                };
                for n in names {
                    assert!(def.column(n).is_some(), "{}: rule names {n}", def.name);
                }
            }
        }
    }

    #[test]
    fn table_names_round_trip_and_unknown_names_list_the_contract() {
        for t in TableName::ALL {
            assert_eq!(t.as_str().parse::<TableName>(), Ok(t));
        }
        let err = "fills".parse::<TableName>().unwrap_err().to_string();
        assert!(
            err.contains("unknown table 'fills'") && err.contains("rx_fills"),
            "{err}"
        );
    }

    #[test]
    fn event_tables_are_partitioned_and_sorted_by_event_time() {
        let s = RX_FILLS.stored_schema();
        assert_eq!(
            s.fields().last().map(|f| f.name().as_str()),
            Some(PARTITION_COLUMN)
        );
        assert_eq!(
            RX_FILLS.sort_columns(),
            vec!["filled_at", "rx_id", "fill_no"]
        );
        assert!(PHARMACIES.partition_columns().is_empty());
        assert_eq!(
            PHARMACIES.stored_schema().fields().len(),
            PHARMACIES.columns.len()
        );
    }
}
