//! `rxcube import`: the import utility on the command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rxcube_ingest::{ImportOptions, ImportReport, Pause, Progress, Status, escape, import};
use rxcube_model::TableName;

use crate::WarehouseArg;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Every record is checked before anything is posted: types, domains, ranges, references to the \
reference tables, time order and duplicate keys within a file. If any record is wrong, nothing \
is posted and each error names the file, record number (1-based data record; the CSV header is \
not a record), column, value and reason. Unusual values that the contract allows (a shift paid \
more hours than it lasted, a year far from today, a zero quantity) are warnings: counted in the \
summary and the log, never a rejection. Otherwise every record is inserted, or replaces the \
record with the same natural key, in one atomic commit; re-importing a file changes nothing.

Every run is logged: SELECT * FROM system.import_log; SELECT * FROM system.import_errors;

Load reference tables first: pharmacies, peer_groups, targets, employees; then payroll, pos, \
rx_fills, surveys.

Continuous ingestion: `rxcube import --follow DIR` watches a landing directory and imports each \
file as it arrives (same checks, same atomic commit); files of a table found ready together \
land in one run, and each alone if that run is rejected. Files go in the folder \
of their table (DIR/rx_fills/day-1.csv), or straight in DIR with `rxcube import <table> --follow \
DIR`. A file is taken once its size and time stop changing between two scans (--poll); names \
starting with . or _ and ending in .tmp or .part are left alone, so a writer may write a \
temporary and rename it into place. Accepted files are moved to DIR/_imported/<table>/, \
rejected ones to DIR/_rejected/<table>/ with <name>.errors.txt beside them; a file whose run \
failed otherwise (the warehouse unreachable) stays and is tried again. Nothing is lost on a \
crash: a file is either committed or still waiting (one committed but not moved yet is \
imported again, which changes nothing). Ctrl-C or SIGTERM stops after the file being imported.

Exit status: 0 accepted (--follow: stopped by a signal), 1 rejected, 2 usage or operational \
error.

Examples:
  rxcube import pharmacies stores.csv
  rxcube import rx_fills fills-*.parquet --refresh
  rxcube import --follow /landing            (files in /landing/<table>/)
  rxcube import pos --follow /landing/pos --poll 0.5")]
pub struct ImportArgs {
    #[command(flatten)]
    warehouse: WarehouseArg,
    /// Contract table to import into: pharmacies, peer_groups, targets, employees, payroll, pos,
    /// rx_fills or surveys (with --follow: the table of every file in DIR).
    #[arg(required_unless_present = "follow")]
    pub(crate) table: Option<TableName>,
    /// Input files, .csv (with a header row) or .parquet; a later file's record replaces an
    /// earlier file's record with the same key.
    #[arg(required_unless_present = "follow", conflicts_with = "follow", value_parser = crate::existing_file)]
    files: Vec<PathBuf>,
    /// Watch landing directory DIR and import each file as it arrives (see below); runs until
    /// stopped.
    #[arg(long, value_name = "DIR")]
    follow: Option<PathBuf>,
    /// Seconds between scans of the --follow directory.
    #[arg(long, value_name = "S", default_value_t = 1.0, value_parser = positive_seconds, requires = "follow")]
    pub(crate) poll: f64,
    /// With --follow: after this many files imported into a table, compact its small files into
    /// large ones and delete the files no recent version reads (7 days' retention); 0: never.
    /// Delta writes a checkpoint every 100 commits itself.
    #[arg(long, value_name = "N", default_value_t = 100, requires = "follow")]
    pub(crate) compact_every: usize,
    /// Start at this 1-based data record (after fixing a file); earlier records are skipped.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "follow")]
    start_at: u64,
    /// Print only the summary and the error counts by column and reason. (`--verbose` prints
    /// every error kept, up to 10,000, instead of the first 20, and the phases of the run.)
    #[arg(long)]
    brief: bool,
    /// After an accepted import, refresh the cube's rollups (`rxcube rollup refresh`).
    #[arg(long)]
    pub(crate) refresh: bool,
    /// Memory budget of the import: bytes, or a size such as 512M or 2G (K, M, G, T are
    /// binary multiples). Checked records beyond a share of it are staged in a directory under
    /// the temporary directory ($TMPDIR), and the key checks and the posting spill there, so
    /// peak memory does not grow with the files (a 19M-line POS file peaks near 800 MiB with
    /// the default; a budget below that spills more but the process still peaks near 800 MiB);
    /// a larger budget spills less. At least 4M.
    #[arg(long, default_value = "1G", value_parser = parse_size, value_name = "SIZE")]
    memory_limit: usize,
}

/// A size in bytes: a number with an optional binary multiple, `K`, `M`, `G` or `T` (also
/// `KB`, `KiB`, ...; any case).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "'{s}' is not a size: use bytes or K, M, G, T (e.g. 512M, 2G)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a size: use bytes or K, M, G, T (e.g. 512M, 2G)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes <= usize::MAX as f64) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(bytes as usize)
}

/// A progress bar on a terminal (hidden otherwise).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix:>10} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str) {
        self.0.set_prefix(name.to_string());
    }
    fn file_started(&self, file: &str, bytes: u64) {
        self.0.set_length(bytes);
        self.0.set_position(0);
        self.0.set_message(file.to_string());
    }
    fn advanced(&self, bytes: u64, records: u64) {
        self.0.set_position(bytes);
        self.0.set_message(format!("{records} records"));
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds between 0 and 86400"
        )),
    }
}

/// The options of a run into `table`.
pub(crate) fn options(
    warehouse: &rxcube_warehouse::Warehouse,
    table: TableName,
    args: &ImportArgs,
) -> anyhow::Result<ImportOptions> {
    // Targets may name any metric of the warehouse's cube definition, its own additions too.
    let target_metrics = match table {
        TableName::Targets => Some(rxcube_cube::definition_for(warehouse)?.target_metrics()),
        _ => None,
    };
    Ok(ImportOptions {
        target_metrics,
        start_at: args.start_at,
        memory_limit: Some(args.memory_limit),
        pause: test_pause(),
        ..ImportOptions::default()
    })
}

pub async fn run(args: ImportArgs, verbosity: u8) -> anyhow::Result<ExitCode> {
    let warehouse = args.warehouse.open().await?;
    if let Some(dir) = args.follow.clone() {
        return crate::follow_cmd::follow(&warehouse, &dir, &args).await;
    }
    let Some(table) = args.table else {
        anyhow::bail!("name the table to import into (or --follow a landing directory)");
    };
    let options = options(&warehouse, table, &args)?;
    let bar = Bar::new();
    let report = import(&warehouse, table, &args.files, &options, &bar).await;
    bar.0.finish_and_clear();
    let report = report?;
    let shown = if args.brief {
        0
    } else if verbosity > 0 {
        usize::MAX
    } else {
        20
    };
    print_errors(&report, shown, args.brief);
    println!("{}", summary(&report));
    if args.refresh && report.status == Status::Accepted {
        crate::rollup_cmd::refresh(&warehouse, rxcube_cube::rollup::Mode::Refresh, true).await?;
    }
    Ok(match report.status {
        Status::Accepted => ExitCode::SUCCESS,
        Status::Rejected => ExitCode::from(1),
    })
}

/// The test hook `RXCUBE_TEST_PAUSE=<dir>`, for tests that drive the binary (not for use):
/// at each named moment of the run ([`ImportOptions::pause`], e.g. `before-commit-1`) the
/// import creates `<dir>/<moment>.<pid>.ready` and waits until `<dir>/<moment>.go` exists.
fn test_pause() -> Option<Pause> {
    let dir = PathBuf::from(std::env::var_os("RXCUBE_TEST_PAUSE")?);
    Some(Pause(std::sync::Arc::new(move |moment: String| {
        let dir = dir.clone();
        Box::pin(async move {
            let ready = dir.join(format!("{moment}.{}.ready", std::process::id()));
            if let Err(e) = std::fs::write(&ready, b"") {
                eprintln!("test hook: cannot create {}: {e}", ready.display());
            }
            let go = dir.join(format!("{moment}.go"));
            let t0 = std::time::Instant::now();
            while !go.exists() {
                if t0.elapsed() > Duration::from_secs(300) {
                    // A test that died does not leave an import waiting forever.
                    eprintln!("test hook: {} never appeared", go.display());
                    std::process::exit(3);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    })))
}

fn print_errors(report: &ImportReport, shown: usize, brief: bool) {
    for line in error_lines(report, shown, brief) {
        eprintln!("{line}");
    }
}

/// The lines [`print_errors`] prints: the first `shown` errors (`brief`: counts by column and
/// reason instead), a few warnings, and what more the log keeps.
pub(crate) fn error_lines(report: &ImportReport, shown: usize, brief: bool) -> Vec<String> {
    let mut out = Vec::new();
    for e in report.errors.iter().take(shown) {
        out.push(format!("error: {e}"));
    }
    // Warnings never reject a record: a few are shown, every one is counted and logged.
    let warnings_shown = shown.min(5).min(report.warnings.len());
    for w in report.warnings.iter().take(warnings_shown) {
        out.push(format!("warning: {w}"));
    }
    if report.total_warnings > warnings_shown as u64 {
        out.push(format!(
            "... {} more warnings (the first {} are in system.import_errors with severity 'warning', run {})",
            report.total_warnings - warnings_shown as u64,
            report.warnings.len(),
            report.run_id
        ));
    }
    let kept = report.errors.len();
    if brief && report.total_errors > 0 {
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for e in &report.errors {
            let reason = e.reason.split(';').next().unwrap_or(&e.reason).to_string();
            *counts
                .entry((e.column.clone().unwrap_or_else(|| "-".into()), reason))
                .or_default() += 1;
        }
        for ((column, reason), n) in counts {
            out.push(format!("{n:>8}  {}: {}", escape(&column), escape(&reason)));
        }
    } else if report.total_errors > shown.min(kept) as u64 {
        out.push(format!(
            "... {} more errors (--verbose shows up to {kept}; all are in system.import_errors, run {})",
            report.total_errors - shown.min(kept) as u64,
            report.run_id
        ));
    }
    out
}

/// The one summary line of a run.
pub fn summary(r: &ImportReport) -> String {
    let version = r
        .version
        .map(|v| format!(", table version {v}"))
        .unwrap_or_else(|| ", nothing committed".into());
    let outcome = match r.status {
        Status::Accepted => format!(
            "accepted: read {}, inserted {}, replaced {}, unchanged {}, rejected 0{}",
            r.records_read,
            r.inserted,
            r.replaced,
            r.unchanged,
            if r.superseded > 0 {
                format!(", superseded within the run {}", r.superseded)
            } else {
                String::new()
            }
        ),
        Status::Rejected => format!(
            "rejected, nothing posted: read {}, rejected {} records ({} errors)",
            r.records_read, r.rejected, r.total_errors
        ),
    };
    let warnings = if r.total_warnings > 0 {
        format!(", warnings {}", r.total_warnings)
    } else {
        String::new()
    };
    format!(
        "{}: {outcome}{warnings}{version}; {:.2} s, {:.0} rows/s",
        r.table,
        r.elapsed.as_secs_f64(),
        r.rows_per_second()
    )
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_multiples() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1 GB"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("0").is_err());
    }
}
