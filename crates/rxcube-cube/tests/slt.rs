//! sqllogictest suites over hand-built fixture chains (`tests/slt/*.slt`), the way DataFusion
//! tests itself. Each suite's answers were worked out by hand (see the fixture's README).
//!
//! Floats print with 4 decimals, NULL as `NULL`, timestamps as ISO 8601.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use rxcube_ingest::{ImportOptions, NoProgress, Status, import};
use rxcube_model::TableName;
use rxcube_warehouse::Warehouse;
use sqllogictest::{DBOutput, DefaultColumnType};

struct Db {
    ctx: SessionContext,
}

#[async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let batches = self.ctx.sql(sql).await?.collect().await?;
        let Some(first) = batches.first() else {
            return Ok(DBOutput::Rows {
                types: vec![],
                rows: vec![],
            });
        };
        let columns = first.num_columns();
        let mut rows = Vec::new();
        let options = FormatOptions::default().with_null("NULL");
        for b in &batches {
            let formatters = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()?;
            for i in 0..b.num_rows() {
                rows.push(
                    (0..columns)
                        .map(|c| {
                            let col = b.column(c);
                            if *col.data_type() == DataType::Float64 && col.is_valid(i) {
                                let v = col.as_primitive::<Float64Type>().value(i);
                                let s = format!("{v:.4}");
                                if s == "-0.0000" {
                                    "0.0000".to_string()
                                } else {
                                    s
                                }
                            } else {
                                formatters[c].value(i).to_string()
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows,
        })
    }

    async fn shutdown(&mut self) {}
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Lands a fixture chain (every CSV present, in load order) into a fresh warehouse.
async fn land(name: &str, root: &Path) -> Warehouse {
    let warehouse = Warehouse::open(root.to_str().expect("utf8 path")).expect("warehouse");
    for table in TableName::ALL {
        let file = fixture_dir(name).join(format!("{}.csv", table.as_str()));
        if !file.exists() {
            continue;
        }
        let report = import(
            &warehouse,
            table,
            &[file],
            &ImportOptions::default(),
            &NoProgress,
        )
        .await
        .expect("import runs");
        assert_eq!(
            report.status,
            Status::Accepted,
            "{table:?}: {:?}",
            report.errors
        );
    }
    warehouse
}

async fn run_suite(fixture: &str, suite: &str) {
    run_suite_with(fixture, suite, rxcube_cube::CubeDef::built_in()).await;
}

async fn run_suite_with(fixture: &str, suite: &str, def: rxcube_cube::CubeDef) {
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = land(fixture, &dir.path().join("w")).await;
    let ctx = rxcube_cube::session(&warehouse, def)
        .await
        .expect("session");
    let mut runner = sqllogictest::Runner::new(|| {
        let ctx = ctx.clone();
        async move { Ok(Db { ctx }) }
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/slt")
        .join(suite);
    if let Err(e) = runner.run_file_async(&path).await {
        panic!("{}: {e}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_chain_metrics() {
    run_suite("tiny", "metrics.slt").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_chain_relations() {
    run_suite("tiny", "relations.slt").await;
}

/// A new ratio metric takes a few lines of the cube definition and no Rust.
#[tokio::test(flavor = "multi_thread")]
async fn a_metric_added_in_the_definition_is_served() {
    let extra = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repeat_fill.toml"),
    )
    .expect("extra definition");
    let text = format!("{}\n{extra}", rxcube_cube::definition::BUILT_IN);
    let def = rxcube_cube::CubeDef::parse(&text, "built-in + repeat_fill.toml").expect("valid");
    run_suite_with("tiny", "repeat_fill.slt", def).await;
}

/// A slice reads only what it needs: on-time at the region level scans fills (and the
/// reference tables), never sales, payroll or surveys; EXPLAIN shows it.
#[tokio::test(flavor = "multi_thread")]
async fn filters_on_the_slice_prune_the_fact_tables_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = land("tiny", &dir.path().join("w")).await;
    let ctx = rxcube_cube::session(&warehouse, rxcube_cube::CubeDef::built_in())
        .await
        .expect("session");
    let plan_of = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx
                .sql(&format!("EXPLAIN {sql}"))
                .await
                .expect("plan")
                .collect()
                .await
                .expect("explain");
            let mut text = String::new();
            for b in &batches {
                let plans = b.column(1).as_string::<i32>();
                for i in 0..b.num_rows() {
                    text.push_str(plans.value(i));
                    text.push('\n');
                }
            }
            text
        }
    };
    let scans = |plan: &str| {
        ["/rx_fills/", "/pos/", "/payroll/", "/surveys/"]
            .into_iter()
            .filter(|t| plan.contains(t))
            .collect::<Vec<_>>()
    };
    // A wide view computes only the metric columns read; rankings and the budget pass their
    // filters down to cube.metrics.
    let cases: [(&str, &[&str]); 5] = [
        (
            "SELECT * FROM cube.metrics WHERE level = 'region' AND grain = 'pay_period' \
             AND metric = 'on_time_pct'",
            &["/rx_fills/"],
        ),
        (
            "SELECT * FROM cube.metrics WHERE level = 'region' AND grain = 'pay_period' \
             AND metric IN ('labor_cost_per_rx', 'csat_pct')",
            &["/pos/", "/payroll/", "/surveys/"],
        ),
        (
            "SELECT node, on_time_pct FROM cube.region_month",
            &["/rx_fills/"],
        ),
        (
            "SELECT * FROM cube.rankings WHERE level = 'pharmacy' AND grain = 'week' \
             AND metric = 'csat_pct'",
            &["/surveys/"],
        ),
        (
            "SELECT * FROM cube.budget WHERE node = '1'",
            &["/pos/", "/payroll/"],
        ),
    ];
    for (sql, expected) in cases {
        let plan = plan_of(sql.to_string()).await;
        assert_eq!(scans(&plan), expected, "{sql}\n{plan}");
    }
    // A bound on period_start bounds the instants every fact scan reads.
    let plan = plan_of(
        "SELECT * FROM cube.metrics WHERE level = 'region' AND grain = 'day' \
         AND period_start = TIMESTAMP '2024-03-05 00:00:00' \
         AND metric IN ('labor_cost_per_rx', 'csat_pct', 'on_time_pct')"
            .into(),
    )
    .await;
    for column in ["filled_at", "sold_at", "responded_at", "shift_start"] {
        assert!(
            plan.contains(&format!("predicate={column}@"))
                || plan.contains(&format!("AND {column}@")),
            "no bound on {column}:\n{plan}"
        );
    }
}
