//! Property: every cube query gives the same answer from the rollups as from the raw tables,
//! after a build, after imports and corrections with an incremental refresh, and after a
//! re-organization and a change of target minutes with a refresh; and between each change and
//! its refresh, when the stale rollups serve caught up with the raw facts of the change.
//!
//! Queries are drawn at random (levels, grains, metrics, period bounds, node filters, with or
//! without the peer columns) from a fixed seed, every other one with small-cell protection on
//! (`rxcube.small_cells`, as pharmacy users' sessions have it: the employee counts of a cell
//! come from the rollups' sets of employees); a failure prints the query. Counts, medians
//! and ranks must match exactly; sums of dollars and hours to 1e-9 relative (the two paths
//! add the same terms in a different order).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rxcube_cube::CubeDef;
use rxcube_cube::rollup::{Mode, run};
use rxcube_gen::{GenConfig, generate};
use rxcube_ingest::{ImportOptions, NoProgress, Status, import};
use rxcube_model::TableName;
use rxcube_warehouse::Warehouse;

const EVENT_TABLES: [TableName; 4] = [
    TableName::Payroll,
    TableName::Pos,
    TableName::RxFills,
    TableName::Surveys,
];

async fn import_file(warehouse: &Warehouse, table: TableName, file: PathBuf) {
    let report = import(
        warehouse,
        table,
        std::slice::from_ref(&file),
        &ImportOptions::default(),
        &NoProgress,
    )
    .await
    .expect("import runs");
    assert_eq!(
        report.status,
        Status::Accepted,
        "{}: {:?}",
        file.display(),
        report.errors.first()
    );
}

/// Splits a CSV file after `fraction` of its data rows (the generator writes days in order).
fn split(file: &Path, fraction: f64, out: &Path) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(file).expect("read");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    let rows: Vec<&str> = lines.collect();
    let cut = (rows.len() as f64 * fraction) as usize;
    let name = file.file_stem().and_then(|s| s.to_str()).expect("name");
    let write = |suffix: &str, part: &[&str]| {
        let path = out.join(format!("{name}_{suffix}.csv"));
        let mut body = format!("{header}\n");
        for r in part {
            body.push_str(r);
            body.push('\n');
        }
        std::fs::write(&path, body).expect("write");
        path
    };
    (write("early", &rows[..cut]), write("late", &rows[cut..]))
}

/// A random query on cube.metrics.
fn random_query(rng: &mut ChaCha8Rng, def: &CubeDef, pharmacies: &[String]) -> String {
    let pick = |rng: &mut ChaCha8Rng, all: &[&str], most: usize| {
        let n = rng.random_range(1..=most);
        let mut chosen: Vec<&str> = Vec::new();
        while chosen.len() < n {
            let x = all[rng.random_range(0..all.len())];
            if !chosen.contains(&x) {
                chosen.push(x);
            }
        }
        chosen
            .iter()
            .map(|x| format!("'{x}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let levels = pick(rng, &rxcube_cube::LEVELS, 2);
    let grains = pick(
        rng,
        &[
            "hour",
            "day",
            "week",
            "pay_period",
            "month",
            "quarter",
            "year",
        ],
        2,
    );
    let metrics = pick(rng, &def.metric_names(), 3);
    let peers = rng.random_bool(0.5);
    let columns = if peers {
        "level, node, grain, period_start, metric, value, numerator, denominator, \
         peer_group, peer_avg, peer_rank, peer_size"
    } else {
        "level, node, grain, period_start, metric, value, numerator, denominator"
    };
    let mut sql = format!(
        "SELECT {columns} FROM cube.metrics WHERE level IN ({levels}) AND grain IN ({grains}) \
         AND metric IN ({metrics})"
    );
    if rng.random_bool(0.4) {
        let day = rng.random_range(7..40);
        sql.push_str(&format!(
            " AND period_start >= TIMESTAMP '2024-01-{:02} 00:00:00'",
            day.min(31)
        ));
        if rng.random_bool(0.5) {
            sql.push_str(" AND period_start < TIMESTAMP '2024-02-10 00:00:00'");
        }
    }
    if rng.random_bool(0.3) {
        let id = &pharmacies[rng.random_range(0..pharmacies.len())];
        sql.push_str(&format!(" AND node IN ('{id}', 'ALL', 'West')"));
    }
    sql
}

/// The rows of a result, sorted, with floats kept apart for a tolerant comparison.
fn rows(batches: &[RecordBatch]) -> Vec<(Vec<String>, Vec<Option<f64>>)> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("format"))
            .collect();
        for i in 0..b.num_rows() {
            let mut text = Vec::new();
            let mut floats = Vec::new();
            for (c, col) in b.columns().iter().enumerate() {
                if *col.data_type() == DataType::Float64 {
                    floats.push(
                        col.is_valid(i)
                            .then(|| col.as_primitive::<Float64Type>().value(i)),
                    );
                } else {
                    text.push(formatters[c].value(i).to_string());
                }
            }
            out.push((text, floats));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        _ => false,
    }
}

/// Runs `queries` random queries with and without rollups and compares the answers; every
/// other query protects small cells.
/// How the rollups stand when [`compare`] runs.
#[derive(Clone, Copy, PartialEq)]
enum Rollups {
    /// Refreshed since the last change: served as stored.
    Fresh,
    /// Changed since the last refresh: served caught up with the raw facts of the change.
    CaughtUp,
}

async fn compare(
    warehouse: &Warehouse,
    def: &CubeDef,
    rng: &mut ChaCha8Rng,
    queries: usize,
    rollups: Rollups,
) {
    let session = |settings: &'static [&'static str]| async move {
        let ctx = rxcube_cube::session(warehouse, def.clone())
            .await
            .expect("session");
        for s in settings {
            ctx.sql(s).await.expect("set");
        }
        ctx
    };
    let on = session(&[]).await;
    let off = session(&["SET rxcube.rollups = false"]).await;
    let protected_on = session(&["SET rxcube.small_cells = true"]).await;
    let protected_off = session(&[
        "SET rxcube.rollups = false",
        "SET rxcube.small_cells = true",
    ])
    .await;
    // The pharmacies' ids, as labels (the generator's mix of RX101, 00423, 423 ...).
    let ids = off
        .sql("SELECT DISTINCT pharmacy_id FROM pharmacies ORDER BY 1")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("ids");
    let pharmacies: Vec<String> = ids
        .iter()
        .flat_map(|b| {
            let col =
                arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).expect("text");
            let col = col
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("strings")
                .clone();
            (0..col.len())
                .map(|i| col.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(pharmacies.len(), 6, "{pharmacies:?}");
    // Pay is judged per day: protection suppresses every hour cell, and the days (and the
    // cells holding them) with fewer than 7 employees paid, on both paths alike.
    for grain in ["hour", "day", "week", "month"] {
        let (shown, kept) = (
            labor_cells(&on, grain).await,
            labor_cells(&protected_on, grain).await,
        );
        if grain == "hour" {
            assert!(
                kept == 0 && shown > 0,
                "{kept} of {shown} {grain} cells kept"
            );
        } else {
            assert!(
                0 < kept && kept < shown,
                "{kept} of {shown} {grain} cells kept"
            );
        }
        assert_eq!(kept, labor_cells(&protected_off, grain).await, "{grain}");
    }
    for i in 0..queries {
        let sql = random_query(rng, def, &pharmacies);
        let (on, off) = if i % 2 == 1 {
            (&protected_on, &protected_off)
        } else {
            (&on, &off)
        };
        let (fast, served) = rxcube_cube::run_statement(on, &sql).await.expect(&sql);
        assert!(
            served.iter().all(|s| s.contains(": rollup ")),
            "{sql}\nnot served by a rollup: {served:?}"
        );
        assert!(
            served
                .iter()
                .all(|s| s.contains(" + raw tables for ") == (rollups == Rollups::CaughtUp)),
            "{sql}\nserved by {served:?}"
        );
        let (slow, _) = rxcube_cube::run_statement(off, &sql).await.expect(&sql);
        let (fast, slow) = (rows(&fast), rows(&slow));
        assert_eq!(fast.len(), slow.len(), "{sql}: row counts differ");
        for (f, s) in fast.iter().zip(&slow) {
            assert_eq!(f.0, s.0, "{sql}");
            assert!(
                f.1.iter().zip(&s.1).all(|(a, b)| close(*a, *b)),
                "{sql}\nrollup {f:?}\nraw    {s:?}"
            );
        }
    }
}

/// The hour cells of pharmacies with a labor cost shown in `ctx`.
async fn labor_cells(ctx: &datafusion::prelude::SessionContext, grain: &str) -> i64 {
    let sql = format!(
        "SELECT count(value) FROM cube.metrics WHERE level = 'pharmacy' AND grain = '{grain}' \
         AND metric = 'labor_cost'"
    );
    let (batches, _) = rxcube_cube::run_statement(ctx, &sql).await.expect(&sql);
    batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0)
}

async fn refresh(warehouse: &Warehouse, def: &CubeDef) -> Vec<rxcube_cube::rollup::Report> {
    run(
        warehouse,
        Arc::new(def.clone()),
        Mode::Refresh,
        &mut |_, _| {},
    )
    .await
    .expect("refresh")
}

#[tokio::test(flavor = "multi_thread")]
async fn rollup_answers_equal_raw_answers_through_imports_corrections_and_reorgs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain");
    let config = GenConfig {
        pharmacies: 6,
        days: 35,
        ..GenConfig::default()
    };
    let summary = generate(&config, &chain, |_| {}).expect("generate");
    let warehouse = Warehouse::open(dir.path().join("w").to_str().expect("utf8")).expect("open");
    // The built-in definition with stricter small-cell rules, so that this chain has small
    // atoms of both kinds (days paid to fewer than 7 employees, days of fewer than 5 survey
    // responses) for protected queries to suppress, and the cells holding them.
    let strict = rxcube_cube::definition::BUILT_IN
        .replace("minimum = 3\natom = \"day\"", "minimum = 7\natom = \"day\"")
        .replace(
            "minimum = 5\natom = \"cell\"",
            "minimum = 5\natom = \"day\"",
        );
    assert!(
        strict.contains("minimum = 7\natom = \"day\"")
            && strict.contains("minimum = 5\natom = \"day\""),
        "the built-in rules changed: update the strict ones"
    );
    let def = CubeDef::parse(&strict, "strict cube.toml").expect("definition");
    let mut rng = ChaCha8Rng::seed_from_u64(7);

    // Reference tables, then the first 70% of every event file.
    let mut late = Vec::new();
    for table in TableName::ALL {
        let Some(file) = summary.file(table) else {
            continue;
        };
        if EVENT_TABLES.contains(&table) {
            let (a, b) = split(&file.path, 0.7, dir.path());
            import_file(&warehouse, table, a).await;
            late.push((table, b));
        } else {
            import_file(&warehouse, table, file.path.clone()).await;
        }
    }
    run(
        &warehouse,
        Arc::new(def.clone()),
        Mode::Build,
        &mut |_, _| {},
    )
    .await
    .expect("build");
    compare(&warehouse, &def, &mut rng, 40, Rollups::Fresh).await;

    // The rest of the events, queried before any refresh (the rollups caught up with the raw
    // facts of the periods they touch); then the corrections, queried again; then an
    // incremental refresh.
    for (table, file) in late {
        import_file(&warehouse, table, file).await;
    }
    compare(&warehouse, &def, &mut rng, 20, Rollups::CaughtUp).await;
    for f in summary.files.iter().filter(|f| f.correction) {
        import_file(&warehouse, f.table, f.path.clone()).await;
    }
    compare(&warehouse, &def, &mut rng, 20, Rollups::CaughtUp).await;
    let reports = refresh(&warehouse, &def).await;
    assert!(
        reports.iter().all(|r| r.action == "refreshed"),
        "{reports:?}"
    );
    compare(&warehouse, &def, &mut rng, 40, Rollups::Fresh).await;

    // A re-organization: the second pharmacy moves to another local area from 2024-01-20, and
    // the third one's target minutes change. Only those pharmacies are recomputed.
    let pharmacies =
        std::fs::read_to_string(&summary.file(TableName::Pharmacies).expect("file").path)
            .expect("read");
    let mut lines = pharmacies.lines();
    let header = lines.next().expect("header");
    let column = |name: &str| header.split(',').position(|h| h == name).expect(name);
    // The pharmacies' ids (text labels), in file order.
    let mut ids: Vec<String> = Vec::new();
    for l in pharmacies.lines().skip(1) {
        let id = l.split(',').next().unwrap_or_default().to_string();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let (second, third) = (format!("{},", ids[1]), format!("{},", ids[2]));
    // The second pharmacy's current org row.
    let row = lines
        .find(|l| l.starts_with(&second) && l.split(',').nth(column("valid_to")) == Some(""))
        .expect("second pharmacy")
        .to_string();
    let fields: Vec<&str> = row.split(',').collect();
    assert!(fields[column("valid_from")] < "2024-01-20", "{row}");
    let mut closed = fields.clone();
    closed[column("valid_to")] = "2024-01-20";
    let mut moved = fields.clone();
    moved[column("valid_from")] = "2024-01-20";
    moved[column("local_area")] = "Moved Area";
    let reorg = dir.path().join("reorg.csv");
    std::fs::write(
        &reorg,
        format!("{header}\n{}\n{}\n", closed.join(","), moved.join(",")),
    )
    .expect("write");
    import_file(&warehouse, TableName::Pharmacies, reorg).await;
    compare(&warehouse, &def, &mut rng, 20, Rollups::CaughtUp).await;
    let groups = std::fs::read_to_string(&summary.file(TableName::PeerGroups).expect("file").path)
        .expect("read");
    let mut lines = groups.lines();
    let gheader = lines.next().expect("header");
    let row = lines
        .find(|l| l.starts_with(&third) && l.ends_with(','))
        .or_else(|| groups.lines().find(|l| l.starts_with(&third)))
        .expect("third pharmacy")
        .to_string();
    let mut fields: Vec<String> = row.split(',').map(str::to_string).collect();
    let target = gheader
        .split(',')
        .position(|h| h == "rx_target_minutes")
        .expect("column");
    fields[target] = "4".to_string();
    let retarget = dir.path().join("retarget.csv");
    std::fs::write(&retarget, format!("{gheader}\n{}\n", fields.join(","))).expect("write");
    import_file(&warehouse, TableName::PeerGroups, retarget).await;
    compare(&warehouse, &def, &mut rng, 20, Rollups::CaughtUp).await;
    let reports = refresh(&warehouse, &def).await;
    for r in &reports {
        assert_eq!(r.part, "2 pharmacies", "{r:?}");
    }
    compare(&warehouse, &def, &mut rng, 40, Rollups::Fresh).await;

    // Nothing changed since: a refresh does nothing.
    let reports = refresh(&warehouse, &def).await;
    assert!(
        reports.iter().all(|r| r.action == "up to date"),
        "{reports:?}"
    );

    // Late events of a few pharmacies only (a store's own files): fills of the first and
    // fourth pharmacy in one file, a sale of the third in another. The rollups catch up only
    // the pharmacies between the least and greatest id of those files (a coarser rollup merged
    // from a finer one), and the answers still equal the raw ones; a refresh recomputes that
    // part only.
    let copy_rows = |table: TableName, id_column: &str, wanted: &[&str], tag: &str| {
        let text = std::fs::read_to_string(&summary.file(table).expect("file").path).expect("read");
        let mut lines = text.lines();
        let header = lines.next().expect("header");
        let column = |name: &str| header.split(',').position(|h| h == name).expect(name);
        let (pharmacy, id) = (column("pharmacy_id"), column(id_column));
        let mut body = format!("{header}\n");
        for w in wanted {
            let row = text
                .lines()
                .skip(1)
                .filter(|l| l.split(',').nth(pharmacy) == Some(w))
                .nth(50)
                .expect("a row of the pharmacy");
            let mut fields: Vec<String> = row.split(',').map(str::to_string).collect();
            fields[id] = format!("{tag}{}", fields[id]);
            body.push_str(&fields.join(","));
            body.push('\n');
        }
        let path = dir.path().join(format!("{tag}.csv"));
        std::fs::write(&path, body).expect("write");
        path
    };
    let late_fills = copy_rows(TableName::RxFills, "rx_id", &[&ids[0], &ids[3]], "LATE");
    import_file(&warehouse, TableName::RxFills, late_fills).await;
    let late_sale = copy_rows(TableName::Pos, "txn_id", &[&ids[2]], "LATE");
    import_file(&warehouse, TableName::Pos, late_sale).await;
    let ctx = rxcube_cube::base_session();
    let versions = rxcube_warehouse::catalog::register_tables(&ctx, &warehouse)
        .await
        .expect("tables");
    let states = rxcube_cube::rollup::Rollups::load(&ctx, &warehouse, &def, &versions)
        .await
        .expect("load");
    let (lo, hi) = {
        let mut touched = [ids[0].clone(), ids[2].clone(), ids[3].clone()];
        touched.sort();
        (touched[0].clone(), touched[2].clone())
    };
    for s in &states.states {
        let part = s.catch_up.as_deref().expect("caught up");
        assert!(
            part.contains(&format!("of pharmacies {lo} .. {hi}")),
            "{}: {part}",
            s.def.name
        );
        assert_eq!(
            part.contains("merged from rollups."),
            s.def.name != "hourly",
            "{}: {part}",
            s.def.name
        );
    }
    compare(&warehouse, &def, &mut rng, 40, Rollups::CaughtUp).await;
    let reports = refresh(&warehouse, &def).await;
    for r in &reports {
        assert!(
            r.part.contains(&format!("of pharmacies {lo} .. {hi}")),
            "{r:?}"
        );
    }
    compare(&warehouse, &def, &mut rng, 40, Rollups::Fresh).await;
}
