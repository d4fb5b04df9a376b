//! The embedded demo chain and `rxcube demo`, the quick start's main job.
//!
//! The demo chain's files (`data/demo/`, made by `rxcube generate` with the options in
//! `data/demo/README.md`) are compiled into the binary, so the demo works from anywhere.
//! Landing it is an ordinary import of each file, in load order; landing it again changes
//! nothing, which the summary lines show.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{NaiveDate, NaiveDateTime};
use rxcube_cube::time::{self, Grain};
use rxcube_ingest::{ImportOptions, NoProgress, Status, import};
use rxcube_model::TableName;
use rxcube_warehouse::Warehouse;

use crate::output::{Format, print_batches};

/// Where commands put the demo warehouse when no `--warehouse` is given.
pub const DEFAULT_DEMO_WAREHOUSE: &str = ".rxcube/demo";

macro_rules! demo_file {
    ($path:literal) => {
        (
            $path,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../data/demo/",
                $path
            ))
            .as_slice(),
        )
    };
}

/// A demo file: its path under `data/demo/` and its contents.
pub type DemoFile = (&'static str, &'static [u8]);

/// The demo files per table, in load order. A table's corrections come in the same run as the
/// table, after it, so they replace the records they correct and landing again changes nothing.
pub const DEMO_FILES: &[(TableName, &[DemoFile])] = &[
    (TableName::Pharmacies, &[demo_file!("pharmacies.parquet")]),
    (TableName::PeerGroups, &[demo_file!("peer_groups.parquet")]),
    (TableName::Targets, &[demo_file!("targets.parquet")]),
    (TableName::Employees, &[demo_file!("employees.parquet")]),
    (
        TableName::Payroll,
        &[
            demo_file!("payroll.parquet"),
            demo_file!("corrections/payroll.parquet"),
        ],
    ),
    (
        TableName::Pos,
        &[
            demo_file!("pos.parquet"),
            demo_file!("corrections/pos.parquet"),
        ],
    ),
    (
        TableName::RxFills,
        &[
            demo_file!("rx_fills.parquet"),
            demo_file!("corrections/rx_fills.parquet"),
        ],
    ),
    (TableName::Surveys, &[demo_file!("surveys.parquet")]),
];

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Warehouse to land the demo chain in.
    #[arg(long, short = 'w', env = "RXCUBE_WAREHOUSE", default_value = DEFAULT_DEMO_WAREHOUSE)]
    warehouse: String,
}

/// Imports the demo files into `warehouse`, one run per table, printing one summary line each.
pub async fn land(warehouse: &Warehouse, quiet: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("rxcube-demo-").tempdir()?;
    for (table, files) in DEMO_FILES {
        let mut paths: Vec<PathBuf> = Vec::new();
        for (name, bytes) in *files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes)?;
            paths.push(path);
        }
        let report = import(
            warehouse,
            *table,
            &paths,
            &ImportOptions::default(),
            &NoProgress,
        )
        .await?;
        if !quiet {
            let names: Vec<String> = files
                .iter()
                .map(|(n, _)| format!("data/demo/{n}"))
                .collect();
            println!(
                "{}\n    {}",
                names.join(" + "),
                crate::import_cmd::summary(&report)
            );
        }
        if report.status == Status::Rejected {
            for e in report.errors.iter().take(20) {
                eprintln!("error: {e}");
            }
            anyhow::bail!("the embedded demo files of {table} were rejected");
        }
    }
    Ok(())
}

/// The default warehouse of every command: the demo warehouse, landed on first use.
pub async fn open_demo_warehouse() -> anyhow::Result<Warehouse> {
    let warehouse = open_current(DEFAULT_DEMO_WAREHOUSE).await?;
    if warehouse.load(TableName::RxFills.def()).await?.is_none() {
        eprintln!("landing the embedded demo chain in {DEFAULT_DEMO_WAREHOUSE} (first use) ...");
        land(&warehouse, true).await?;
        crate::rollup_cmd::refresh(&warehouse, rxcube_cube::rollup::Mode::Refresh, false).await?;
    }
    Ok(warehouse)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let warehouse = open_current(&args.warehouse).await?;
    println!(
        "Landing the embedded demo chain in {}",
        Path::new(&args.warehouse).display()
    );
    land(&warehouse, false).await?;
    println!("\nRollups (rxcube rollup refresh):");
    crate::rollup_cmd::refresh(&warehouse, rxcube_cube::rollup::Mode::Refresh, true).await?;
    let added = crate::users_cmd::add_demo_users(&warehouse).await?;
    if !added.is_empty() {
        println!(
            "\nDemo users for `rxcube serve` (password demo): {}",
            crate::users_cmd::DEMO_USERS
                .iter()
                .map(|(name, scope, _)| format!("{name} ({scope})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let def = rxcube_cube::definition_for(&warehouse)?;
    let anchor = def.time.pay_period_anchor;
    let components: Vec<String> = def.components.iter().map(|c| quote(&c.name)).collect();
    // Each component's fact source, as SQL over a metric name.
    let by_source = def
        .components
        .iter()
        .map(|c| format!("WHEN metric = {} THEN {}", quote(&c.name), quote(&c.source)))
        .collect::<Vec<_>>()
        .join(" ");
    let ctx = rxcube_cube::session(&warehouse, def).await?;
    let overview = "\
        SELECT table_name, records FROM ( \
        SELECT 1 AS o, 'pharmacies' AS table_name, count(*) AS records FROM pharmacies UNION ALL \
        SELECT 2, 'peer_groups', count(*) FROM peer_groups UNION ALL \
        SELECT 3, 'targets', count(*) FROM targets UNION ALL \
        SELECT 4, 'employees', count(*) FROM employees UNION ALL \
        SELECT 5, 'payroll', count(*) FROM payroll UNION ALL \
        SELECT 6, 'pos', count(*) FROM pos UNION ALL \
        SELECT 7, 'rx_fills', count(*) FROM rx_fills UNION ALL \
        SELECT 8, 'surveys', count(*) FROM surveys) ORDER BY o";
    println!("\nLanded tables:");
    let batches = ctx.sql(overview).await?.collect().await?;
    print_batches(&mut std::io::stdout().lock(), &batches, Format::Table)?;

    // What the data covers, in local time: from its first fact to the end of the local hour
    // where the first of its fact sources ends (returns and survey responses trail the sales
    // they follow, and a source loaded less far must not make a period look complete).
    let span = format!(
        "SELECT min(first_hour) AS first_hour, min(last_hour) AS last_hour FROM ( \
           SELECT CASE {by_source} END AS source, min(period_start) AS first_hour, \
                  max(period_start) AS last_hour \
           FROM cube.metrics \
           WHERE level = 'division' AND grain = 'hour' AND metric IN ({}) AND value <> 0 \
           GROUP BY 1)",
        components.join(", ")
    );
    let span = ctx.sql(&span).await?.collect().await?;
    let hour = |column: usize| {
        span.first()
            .and_then(|b| {
                b.column(column)
                    .as_primitive_opt::<TimestampMicrosecondType>()
            })
            .filter(|a| !a.is_empty() && a.is_valid(0))
            .and_then(|a| a.value_as_datetime(0))
    };
    let (Some(first), Some(last)) = (hour(0), hour(1)) else {
        println!("The demo chain has no facts: no score card.");
        return Ok(ExitCode::SUCCESS);
    };
    let end = last + chrono::Duration::hours(1);
    let covered = format!(
        "it runs from {first} to {end}, local time: from its first fact to where the first of \
         its sources ends"
    );
    let Some(period) = latest_complete_period(Grain::PayPeriod, first, end, anchor) else {
        println!("The data covers no whole pay period ({covered}): no score card.");
        return Ok(ExitCode::SUCCESS);
    };
    let last_day = time::period_end(Grain::PayPeriod, period).date() - chrono::Days::new(1);
    // The division's score card: the five key metrics by region and for the division, of the
    // latest pay period the data covers in full. A later, partial period is left out: its few
    // hours of cost, sales and fills would read as a collapse.
    let card = format!(
        "SELECT CASE WHEN level = 'division' THEN 'ALL (division)' ELSE node END AS region, \
               CAST(period_start AS DATE) AS pay_period, \
               round(max(value) FILTER (WHERE metric = 'labor_cost_per_rx'), 2) AS labor_cost_per_rx, \
               round(max(value) FILTER (WHERE metric = 'csat_pct'), 1) AS csat_pct, \
               round(max(value) FILTER (WHERE metric = 'on_time_pct'), 1) AS on_time_pct, \
               round(max(value) FILTER (WHERE metric = 'otc_sales_per_rx'), 2) AS otc_sales_per_rx, \
               round(max(value) FILTER (WHERE metric = 'crp_usage_pct'), 1) AS crp_usage_pct \
        FROM cube.metrics \
        WHERE level IN ('region', 'division') AND grain = 'pay_period' \
          AND period_start = TIMESTAMP '{period}' AND metric IN \
          ('labor_cost_per_rx', 'csat_pct', 'on_time_pct', 'otc_sales_per_rx', 'crp_usage_pct') \
        GROUP BY level, node, period_start ORDER BY level = 'division', node"
    );
    println!(
        "The five key metrics of pay period {} to {last_day} by region (cube.metrics): the latest \
         pay period the data covers in full ({covered}):",
        period.date()
    );
    let batches = ctx.sql(&card).await?.collect().await?;
    print_batches(&mut std::io::stdout().lock(), &batches, Format::Table)?;
    println!(
        "Query it: rxcube sql --warehouse {} \"SELECT * FROM cube.metrics WHERE level = 'pharmacy' \
         AND grain = 'pay_period' AND metric = 'on_time_pct'\"",
        args.warehouse
    );
    Ok(ExitCode::SUCCESS)
}

/// Opens a demo warehouse; one landed by an older rxcube (integer ids) is moved aside, not
/// deleted, so that it is landed again from the embedded files.
async fn open_current(location: &str) -> anyhow::Result<Warehouse> {
    let warehouse = Warehouse::open(location)?;
    match warehouse.load(TableName::Pharmacies.def()).await {
        Err(rxcube_warehouse::WarehouseError::Schema { .. }) => {
            let dir = warehouse.root().to_file_path().map_err(|()| {
                anyhow::anyhow!(
                    "the demo warehouse {location} was landed by an older rxcube (integer ids); \
                     remove it and run rxcube demo again"
                )
            })?;
            // The root URL ends in '/': its components drop it.
            let dir = dir.components().as_path().to_path_buf();
            let aside = PathBuf::from(format!(
                "{}.old-{}",
                dir.display(),
                chrono::Utc::now().format("%Y%m%dT%H%M%S")
            ));
            std::fs::rename(&dir, &aside)?;
            eprintln!(
                "the demo warehouse {location} was landed by an older rxcube (integer ids): moved \
                 it to {} and landing the demo chain again",
                aside.display()
            );
            Ok(Warehouse::open(location)?)
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(warehouse),
    }
}

/// The start of the latest `grain` period that lies wholly within the local times from `first`
/// to `end`: the period ending at or before `end` (the one holding `end` is partial unless it
/// starts there), if it starts at or after `first`.
pub fn latest_complete_period(
    grain: Grain,
    first: NaiveDateTime,
    end: NaiveDateTime,
    anchor: NaiveDate,
) -> Option<NaiveDateTime> {
    let next = time::period_start(grain, end, anchor);
    let start = time::period_start(grain, next - chrono::Duration::seconds(1), anchor);
    (start >= first && time::period_end(grain, start) <= end).then_some(start)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("time")
    }

    #[test]
    fn the_latest_complete_period_ends_within_the_data() {
        let anchor = NaiveDate::from_ymd_opt(2024, 1, 7).expect("date");
        let p = |first, end| latest_complete_period(Grain::PayPeriod, at(first), at(end), anchor);
        // A few hours into a period: the one before it.
        assert_eq!(
            p("2024-01-07 00:00", "2024-03-17 07:00"),
            Some(at("2024-03-03 00:00"))
        );
        // Exactly at a period's end: that period.
        assert_eq!(
            p("2024-01-07 00:00", "2024-03-17 00:00"),
            Some(at("2024-03-03 00:00"))
        );
        assert_eq!(
            p("2024-01-07 00:00", "2024-03-16 23:00"),
            Some(at("2024-02-18 00:00"))
        );
        // Less than one whole period: none.
        assert_eq!(
            p("2024-01-07 00:00", "2024-01-21 00:00"),
            Some(at("2024-01-07 00:00"))
        );
        assert_eq!(p("2024-01-07 00:00", "2024-01-20 23:00"), None);
        assert_eq!(p("2024-01-08 00:00", "2024-02-01 00:00"), None);
    }
}
