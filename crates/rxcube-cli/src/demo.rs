//! The embedded demo chain and `rxcube demo`, the quick start's main job.
//!
//! The demo chain's files (`data/demo/`, made by `rxcube generate` with the options in
//! `data/demo/README.md`) are compiled into the binary, so the demo works from anywhere.
//! Landing it is an ordinary import of each file, in load order; landing it again changes
//! nothing, which the summary lines show.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    let warehouse = Warehouse::open(DEFAULT_DEMO_WAREHOUSE)?;
    if warehouse.load(TableName::RxFills.def()).await?.is_none() {
        eprintln!("landing the embedded demo chain in {DEFAULT_DEMO_WAREHOUSE} (first use) ...");
        land(&warehouse, true).await?;
        crate::rollup_cmd::refresh(&warehouse, rxcube_cube::rollup::Mode::Refresh, false).await?;
    }
    Ok(warehouse)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let warehouse = Warehouse::open(&args.warehouse)?;
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
    let ctx = rxcube_cube::session(&warehouse, rxcube_cube::definition_for(&warehouse)?).await?;
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
    // The division's score card by region and pay period, from the cube.
    let by_region = "\
        SELECT node AS region, CAST(period_start AS DATE) AS pay_period, \
               round(max(value) FILTER (WHERE metric = 'labor_cost_per_rx'), 2) AS labor_cost_per_rx, \
               round(max(value) FILTER (WHERE metric = 'csat_pct'), 1) AS csat_pct, \
               round(max(value) FILTER (WHERE metric = 'on_time_pct'), 1) AS on_time_pct, \
               round(max(value) FILTER (WHERE metric = 'otc_sales_per_rx'), 2) AS otc_sales_per_rx, \
               round(max(value) FILTER (WHERE metric = 'crp_usage_pct'), 1) AS crp_usage_pct \
        FROM cube.metrics \
        WHERE level = 'region' AND grain = 'pay_period' AND metric IN \
          ('labor_cost_per_rx', 'csat_pct', 'on_time_pct', 'otc_sales_per_rx', 'crp_usage_pct') \
        GROUP BY node, period_start ORDER BY node, period_start";
    println!("The five key metrics by region and pay period (cube.metrics):");
    let batches = ctx.sql(by_region).await?.collect().await?;
    print_batches(&mut std::io::stdout().lock(), &batches, Format::Table)?;
    println!(
        "Query it: rxcube sql --warehouse {} \"SELECT * FROM cube.metrics WHERE level = 'pharmacy' \
         AND grain = 'pay_period' AND metric = 'on_time_pct'\"",
        args.warehouse
    );
    Ok(ExitCode::SUCCESS)
}
