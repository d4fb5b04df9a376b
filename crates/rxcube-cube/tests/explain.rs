//! What `EXPLAIN` shows of the cube over the tiny chain: the rollup that serves a query or why
//! none does, and the fact tables a slice reads. The `.slt` suites run in
//! `rxcube-access/tests/sqllogictests.rs`.

// Only its landing of a fixture is used here.
#[allow(dead_code)]
#[path = "support/slt_support.rs"]
mod slt_support;

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use datafusion::prelude::SessionContext;
use rxcube_ingest::{ImportOptions, NoProgress, Status, import};
use rxcube_model::TableName;
use rxcube_warehouse::Warehouse;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn land(name: &str, root: &Path) -> Warehouse {
    slt_support::land(&fixture_dir(name), root).await
}

/// Builds every rollup of `def` in `warehouse`.
async fn build_rollups(warehouse: &Warehouse, def: &rxcube_cube::CubeDef) {
    rxcube_cube::rollup::run(
        warehouse,
        std::sync::Arc::new(def.clone()),
        rxcube_cube::rollup::Mode::Build,
        &mut |_, _| {},
    )
    .await
    .expect("rollups build");
}

/// The definition with no rollups declared: the raw path, whatever the warehouse holds.
fn without_rollups(mut def: rxcube_cube::CubeDef) -> rxcube_cube::CubeDef {
    def.rollups.clear();
    def
}

/// The text of `EXPLAIN <sql>`: the logical and physical plans, one line each.
async fn explain(ctx: &SessionContext, sql: &str) -> String {
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

/// EXPLAIN names the rollup that serves a query, or why none does; `rxcube.rollups = false`
/// forces the raw path; an import makes the rollups stale (never served) until a refresh.
#[tokio::test(flavor = "multi_thread")]
async fn explain_names_the_rollup_or_why_none_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = land("tiny", &dir.path().join("w")).await;
    let def = rxcube_cube::CubeDef::built_in();
    build_rollups(&warehouse, &def).await;
    let served = |ctx: SessionContext, sql: &'static str| async move {
        explain(&ctx, sql)
            .await
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CubeScanExec: "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let month = "SELECT * FROM cube.metrics WHERE level = 'region' AND grain = 'quarter'";
    let week = "SELECT * FROM cube.metrics WHERE grain = 'week' AND metric = 'csat_pct'";
    let hour = "SELECT * FROM cube.metrics WHERE grain = 'hour' AND metric = 'rx_sold'";
    let ctx = rxcube_cube::session(&warehouse, def.clone())
        .await
        .expect("session");
    let first = served(ctx.clone(), month).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].starts_with("cube.metrics served by rollup monthly (version 0, built "),
        "{first:?}"
    );
    assert!(first[0].contains("rx_fills@0"), "{first:?}");
    // Run once, the answer is kept for this snapshot: asked again, it is not recomputed.
    let sorted = format!("{month} ORDER BY node, period_start, metric");
    let answer = |ctx: SessionContext, sql: String| async move {
        let batches = ctx
            .sql(&sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string()
    };
    let first_answer = answer(ctx.clone(), sorted.clone()).await;
    let again = served(ctx.clone(), month).await;
    assert!(again[0].ends_with(", cached result"), "{again:?}");
    assert_eq!(answer(ctx.clone(), sorted).await, first_answer);
    assert!(first_answer.lines().count() > 10, "{first_answer}");
    // Every pharmacy's score card of a period shares the result of the first.
    let card = |node: &str| {
        format!(
            "SELECT metric, value, peer_avg, peer_rank FROM cube.metrics WHERE level = 'pharmacy' \
             AND grain = 'month' AND node = '{node}' AND metric IN ('on_time_pct', 'csat_pct') \
             ORDER BY metric"
        )
    };
    let one = answer(ctx.clone(), card("1")).await;
    assert!(one.contains("on_time_pct"), "{one}");
    let plan = explain(&ctx, &card("2")).await;
    assert!(
        plan.contains("served by rollup monthly") && plan.contains("cached result"),
        "{plan}"
    );
    ctx.sql("SET rxcube.result_cache = false")
        .await
        .expect("set");
    let recomputed = served(ctx.clone(), month).await;
    assert!(!recomputed[0].contains("cached"), "{recomputed:?}");
    ctx.sql("SET rxcube.result_cache = true")
        .await
        .expect("set");
    let second = served(ctx.clone(), week).await;
    assert!(
        second[0].starts_with("cube.metrics served by rollup daily"),
        "{second:?}"
    );
    let third = served(ctx.clone(), hour).await;
    assert!(
        third[0].starts_with("cube.metrics served by rollup hourly"),
        "{third:?}"
    );

    ctx.sql("SET rxcube.rollups = false").await.expect("set");
    assert_eq!(
        served(ctx.clone(), month).await,
        ["cube.metrics served by raw tables (rxcube.rollups is off)"]
    );

    // One more fill: every rollup over fills is stale, and says so.
    let extra = dir.path().join("more_fills.csv");
    std::fs::write(
        &extra,
        "rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n\
         900,0,1,local,2024-03-05T09:00:00-08:00,2024-03-05T09:04:00-08:00\n",
    )
    .expect("write");
    let report = import(
        &warehouse,
        TableName::RxFills,
        &[extra],
        &ImportOptions::default(),
        &NoProgress,
    )
    .await
    .expect("import");
    assert_eq!(report.status, Status::Accepted, "{:?}", report.errors);
    let ctx = rxcube_cube::session(&warehouse, def.clone())
        .await
        .expect("session");
    // Stale, each rollup is caught up: its stored rows outside the periods the import touched
    // and the raw facts' rows inside them (the part a refresh would recompute), in one plan.
    let caught_up = served(ctx.clone(), month).await;
    assert!(
        caught_up[0].starts_with("cube.metrics served by rollup monthly (version 0, built "),
        "{caught_up:?}"
    );
    assert!(
        caught_up[0].contains(
            " + raw tables for periods 2024-03-01 00:00:00 .. 2024-03-01 00:00:00 of pharmacy 1 \
             (merged from rollups.daily) (changed since: rx_fills is at version 1, the rollup at \
             version 0)"
        ),
        "{caught_up:?}"
    );
    let day = "SELECT value FROM cube.metrics WHERE level = 'pharmacy' AND node = '1' \
               AND grain = 'day' AND period_start = TIMESTAMP '2024-03-05 00:00:00' \
               AND metric = 'local_fills'";
    let caught_up_plan = explain(&ctx, day).await;
    assert!(
        caught_up_plan.contains("served by rollup daily (version 0")
            && caught_up_plan
                .contains(" + raw tables for periods 2024-03-05 00:00:00 .. 2024-03-06 00:00:00 of pharmacy 1 (merged from rollups.hourly)"),
        "{caught_up_plan}"
    );
    let caught_up_day = ctx
        .sql(day)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    // With the catching up off (no rollups), the raw path: the same answer, checked below
    // against the fixture worked out by hand.
    // `system.rollups` says so too, and since when: the time the Delta log records for the
    // commit of rx_fills version 1, the first the rollups do not hold.
    let root = warehouse.root().to_file_path().expect("a local warehouse");
    let entry = std::fs::read_to_string(root.join("rx_fills/_delta_log/00000000000000000001.json"))
        .expect("the log entry of the import");
    let committed = entry
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|a| a.get("commitInfo")?.get("timestamp")?.as_i64())
        .expect("a commit time");
    let ctx = rxcube_cube::session(&warehouse, def.clone())
        .await
        .expect("session");
    let status = ctx
        .sql(
            "SELECT rollup, fresh, stale, CAST(behind_since AS BIGINT) AS since, lag_seconds \
             FROM system.rollups ORDER BY rollup",
        )
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let status = arrow::util::pretty::pretty_format_batches(&status)
        .expect("format")
        .to_string();
    for name in ["daily", "hourly", "monthly"] {
        let line = status
            .lines()
            .find(|l| l.contains(&format!("| {name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{status}"));
        assert!(line.contains("| false "), "{line}");
        assert!(
            line.contains("rx_fills is at version 1, the rollup at version 0"),
            "{line}"
        );
        assert!(
            line.contains(&format!("| {committed} ")),
            "{committed}: {line}"
        );
    }
    let reports = rxcube_cube::rollup::run(
        &warehouse,
        std::sync::Arc::new(def.clone()),
        rxcube_cube::rollup::Mode::Refresh,
        &mut |_, _| {},
    )
    .await
    .expect("refresh");
    let actions: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| (r.rollup.as_str(), r.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("hourly", "refreshed"),
            ("daily", "refreshed"),
            ("monthly", "refreshed")
        ]
    );
    // Only the periods around the new fill, of its pharmacy, were recomputed, the coarser
    // from the finer.
    assert_eq!(
        reports[0].part,
        "periods 2024-03-05 02:00:00 .. 2024-03-06 08:00:00 of pharmacy 1"
    );
    assert_eq!(reports[1].from, "rollup rollups.hourly");
    let ctx = rxcube_cube::session(&warehouse, def.clone())
        .await
        .expect("session");
    assert!(served(ctx.clone(), month).await[0].contains("served by rollup monthly (version 1"));
    // The new fill counts: 4 minutes, local, on time.
    let local_fills = |ctx: SessionContext| async move {
        ctx.sql(
            "SELECT value FROM cube.metrics WHERE level = 'pharmacy' AND node = '1' \
             AND grain = 'day' AND period_start = TIMESTAMP '2024-03-05 00:00:00' \
             AND metric = 'local_fills'",
        )
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run")
    };
    let batches = local_fills(ctx).await;
    let raw = local_fills(
        rxcube_cube::session(&warehouse, without_rollups(def))
            .await
            .expect("session"),
    )
    .await;
    let value =
        |b: &[arrow::array::RecordBatch]| b[0].column(0).as_primitive::<Float64Type>().value(0);
    assert_eq!(value(&batches), value(&raw));
    // Worked out from the fixture itself: pharmacy 1's local fills filled on its local
    // 2024-03-05 (the file writes local times with their offset), plus the new one.
    let fixture = std::fs::read_to_string(fixture_dir("tiny").join("rx_fills.csv")).expect("read");
    let on_file = fixture
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[2] == "1" && f[3] == "local" && f[5].starts_with("2024-03-05T"))
        .count();
    assert!(on_file > 0);
    assert_eq!(value(&batches), (on_file + 1) as f64);
    assert_eq!(value(&caught_up_day), (on_file + 1) as f64);
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
        async move { explain(&ctx, &sql).await }
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

/// The views (`cube.rankings` here) keep their results per snapshot like `cube.metrics`: asked
/// again, the answer comes from the cache and still names the rollup its metrics came from;
/// a session whose small-cell protection differs never gets the other's answer; each cached
/// answer equals the one computed again with the cache off.
#[tokio::test(flavor = "multi_thread")]
async fn view_results_are_cached_per_snapshot_and_protection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = land("tiny", &dir.path().join("w")).await;
    let def = rxcube_cube::CubeDef::built_in();
    build_rollups(&warehouse, &def).await;
    let ctx = rxcube_cube::session(&warehouse, def.clone())
        .await
        .expect("session");
    let sql = "SELECT node, period_start, value, rank, group_size, pacesetter_1 FROM cube.rankings \
               WHERE level = 'pharmacy' AND grain = 'hour' AND metric = 'labor_cost' \
               AND ranked_among = 'peer_group' ORDER BY node, period_start";
    let answer = |ctx: SessionContext| async move {
        let (batches, served) = rxcube_cube::run_statement(&ctx, sql).await.expect("run");
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        (text, served)
    };
    let set = |ctx: SessionContext, setting: &'static str| async move {
        ctx.sql(&format!("SET {setting}"))
            .await
            .expect("set")
            .collect()
            .await
            .expect("set");
    };
    let mut answers = Vec::new();
    for protected in ["rxcube.small_cells = false", "rxcube.small_cells = true"] {
        set(ctx.clone(), protected).await;
        let (first, served) = answer(ctx.clone()).await;
        assert!(
            served
                .iter()
                .any(|s| s.starts_with("cube.metrics: rollup hourly")),
            "{served:?}"
        );
        let plan = explain(&ctx, sql).await;
        assert!(
            plan.contains("CubeScanExec: cube.rankings served by a cached result"),
            "{protected}: {plan}"
        );
        let (again, served) = answer(ctx.clone()).await;
        assert_eq!(again, first, "{protected}");
        assert!(
            served.contains(&"cube.rankings: a cached result".to_string()),
            "{served:?}"
        );
        assert!(
            served
                .iter()
                .any(|s| s.starts_with("cube.metrics: rollup hourly")),
            "a hit still names what served its metrics: {served:?}"
        );
        set(ctx.clone(), "rxcube.result_cache = false").await;
        let (recomputed, _) = answer(ctx.clone()).await;
        assert_eq!(recomputed, first, "{protected}");
        set(ctx.clone(), "rxcube.result_cache = true").await;
        answers.push(first);
    }
    // The tiny chain's hourly pay comes from fewer than 3 employees: protected, it is NULL.
    assert!(answers[0].lines().count() > 4, "{}", answers[0]);
    assert_ne!(answers[0], answers[1]);
}
