//! # rxcube-gen: a synthetic pharmacy chain
//!
//! The first stage of **land → store → cube → rollups → serve** needs data to land. This crate
//! writes the eight tables of the input contract ([`rxcube_model::contract`]) for a made-up but
//! realistic pharmacy chain, as CSV or Parquet, in files the import utility accepts as they are.
//!
//! Output is **deterministic**: the same [`GenConfig`] gives byte-identical files. Every
//! (pharmacy, day) draws from its own random stream, so the result does not depend on the order
//! in which days or pharmacies are produced. Output is **streamed**: the chain is generated day
//! by day and pharmacy by pharmacy, and each table is written as it goes (Parquet in batches of
//! 64k rows, CSV in chunks of 256 KiB), so a run of any length holds only the reference data,
//! one store-day and one batch per file in memory.
//!
//! ## What the chain exercises
//!
//! - **Org**: 2 to 4 regions of 2 service areas each, 2 or 3 local areas per service area.
//! - **Ids** are text labels in the styles of real source systems, mixed across stores and
//!   tables: pharmacies `RX101`, `RX102`, ... (the chain's own stores) and `00423`, `00845`,
//!   ... (an acquired chain's zero-padded store numbers), with one plain `423`, a different
//!   store from `00423`; employees `E1001`; prescriptions `RX288000001` or `000288100001`;
//!   transactions `T900001` or register-sequence composites `R03-000123`; survey responses
//!   `S000042` or UUID-shaped. The exact rules are in `ids.rs`.
//! - **Time zones**: America/Los_Angeles (some pharmacies leave the zone empty, which means Los
//!   Angeles), America/Denver, America/Phoenix (no daylight saving) and America/Chicago. All
//!   events are drawn in each store's local wall time, daylight-saving transitions included.
//! - **Peer groups** `large-24h` (open 168 hours a week, target 20 minutes), `large` (15),
//!   `medium` (no target minutes: the default 15) and `small` (15, some closed on Sundays).
//! - **Demand**: lunch and after-work peaks, busy Mondays, quiet Sundays, a little overnight
//!   volume at 24-hour stores.
//! - **Rx fills**: new fills and refills every 30 days (`fill_no` n refills the prescription
//!   first filled 30·n days earlier; refills of prescriptions older than the range point at ids
//!   that are not on file). Refills go partly to Central Refill Processing (a store-specific
//!   share of 15-60%); local processing time follows a store-specific distribution, so the
//!   on-time share differs by store.
//! - **POS**: every fill is sold (rx line with the copay), often with OTC lines; OTC-only
//!   baskets; about 1.5% of baskets lead to a return (negative quantity and amount).
//! - **Payroll**: pharmacists, technicians, clerks and a manager per store, shifts that cover
//!   the opening hours in local time, overnight shifts (22:00 to 06:30) at 24-hour stores, a
//!   30-minute unpaid break, overtime (`OT`, 1.5×) beyond 8 paid hours, now and then a
//!   technician called in for a few hours and paid the 4-hour minimum. Hours are paid by the
//!   wall clock, so the night over the spring-forward change (7.5 elapsed hours) is paid 8.00.
//! - **Surveys** from about 2% of baskets, with a store-specific rating mix.
//! - **Corrections**: `corrections/rx_fills`, `corrections/pos` and `corrections/payroll` hold
//!   about 0.3% of the records again with changed values (a later `filled_at`, sometimes on the
//!   next day; a different amount; fewer hours or a different cost), to be imported after the
//!   originals they replace.
//!
//! ## Dates
//!
//! Pay periods are 14 days from Sunday 2024-01-07, whatever the start date. Changes land on the
//! Wednesday in the second week of a pay period, so that they split a period:
//!
//! - the **re-organization** (the last pharmacy moves to another local area of its service
//!   area; the local area of pharmacy 2 moves to the next service area, in another region) on
//!   such a Wednesday nearest to 40% of the range: **2024-02-28** for the default config;
//! - the **peer-group change** (pharmacy 3 moves from `medium` to `large`) on such a Wednesday
//!   nearest to 70% of the range: **2024-03-27** for the default config;
//! - a **target change** (`on_time_pct` tier 2 and `labor_cost_per_rx` tier 3 of every peer
//!   group) from the first pay period that starts after the middle of the range:
//!   **2024-03-17** for the default config.
//!
//! A change is left out when no such Wednesday falls strictly inside the range. Reference rows
//! are valid from January 1 of the year before the start date.
//!
//! ## Output
//!
//! `generate` writes `<table>.csv` or `<table>.parquet` for every table into the output
//! directory, and the correction files into its `corrections/` subdirectory. CSV files have a
//! header row, timestamps in RFC 3339 with the pharmacy's UTC offset at that instant, dates as
//! `YYYY-MM-DD`, money and hours with exactly two decimals and NULL as an empty field. Parquet
//! files have exactly [`TableDef::schema`](rxcube_model::TableDef::schema) and zstd compression.

mod clock;
mod corrections;
mod demand;
mod error;
mod fills;
mod ids;
mod org;
mod payroll;
mod pipeline;
mod pos;
mod records;
mod seed;
mod store_day;
mod surveys;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveDate;
use rxcube_model::TableName;

pub use error::GenError;

/// The file format the tables are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    #[default]
    Csv,
    Parquet,
}

impl Format {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// Error for a format name other than `csv` or `parquet`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format '{0}': expected csv or parquet")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// The default first day: Sunday 2024-01-07, the pay-period anchor.
pub const DEFAULT_START: NaiveDate = clock::PAY_PERIOD_ANCHOR;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    /// Number of pharmacies.
    pub pharmacies: u32,
    /// Number of days of events, from `start`.
    pub days: u32,
    /// First day of events (local date in every store).
    pub start: NaiveDate,
    /// Seed of every random stream.
    pub seed: u64,
    /// File format of the tables.
    pub format: Format,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            pharmacies: 12,
            days: 120,
            start: DEFAULT_START,
            seed: 42,
            format: Format::Csv,
        }
    }
}

/// Reported after each generated day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenProgress {
    /// Days completed so far (1-based).
    pub day: u32,
    /// Days in the run.
    pub days: u32,
    /// Rows written so far, over all files.
    pub rows_written: u64,
}

/// The files a run wrote, in load order: every table in [`TableName::ALL`] order, then the
/// correction files (each to be imported after its table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenSummary {
    pub files: Vec<GeneratedFile>,
}

impl GenSummary {
    /// Rows over all files.
    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// The main (not correction) file of `table`.
    pub fn file(&self, table: TableName) -> Option<&GeneratedFile> {
        self.files
            .iter()
            .find(|f| f.table == table && !f.correction)
    }
}

/// One written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub table: TableName,
    pub path: PathBuf,
    /// Data rows (the CSV header is not counted).
    pub rows: u64,
    /// True for a file of corrections that replace records of the main file by natural key.
    pub correction: bool,
}

/// Generates the chain described by `config` into `out` (created if missing; existing files of
/// the same names are replaced), calling `progress` after every day.
pub fn generate(
    config: &GenConfig,
    out: &Path,
    progress: impl FnMut(&GenProgress),
) -> Result<GenSummary, GenError> {
    pipeline::run(config, out, progress)
}
