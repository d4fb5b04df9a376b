//! The embedded demo chain: it is exactly the generator's output, landing it twice changes
//! nothing the second time, and every report in `queries/` runs on it.

use std::path::Path;
use std::process::Command;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn rxcube(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rxcube"))
        .args(args)
        .env_remove("RXCUBE_WAREHOUSE")
        .output()
        .expect("run rxcube")
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("batches")
}

#[test]
fn the_committed_demo_chain_is_the_generators_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let o = rxcube(&[
        "generate",
        "--out",
        out.to_str().expect("utf8"),
        "--format",
        "parquet",
        "--pharmacies",
        "8",
        "--days",
        "70",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo");
    let mut compared = 0;
    for name in [
        "pharmacies",
        "peer_groups",
        "targets",
        "employees",
        "payroll",
        "pos",
        "rx_fills",
        "surveys",
        "corrections/payroll",
        "corrections/pos",
        "corrections/rx_fills",
    ] {
        let file = format!("{name}.parquet");
        let ours = arrow::compute::concat_batches(
            &read(&out.join(&file))[0].schema(),
            &read(&out.join(&file)),
        )
        .expect("concat");
        let theirs = read(&committed.join(&file));
        let theirs = arrow::compute::concat_batches(&theirs[0].schema(), &theirs).expect("concat");
        assert_eq!(
            ours, theirs,
            "data/demo/{file} differs from the generator's output: regenerate it (data/demo/README.md)"
        );
        compared += 1;
    }
    assert_eq!(compared, 11);
}

#[test]
fn landing_the_demo_twice_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w");
    let w = w.to_str().expect("utf8");
    let first = rxcube(&["demo", "--warehouse", w]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first = String::from_utf8_lossy(&first.stdout).into_owned();
    // Counts read from the files themselves, not from the importer.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo");
    let rows = |f: &str| {
        read(&demo.join(f))
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>()
    };
    let (fills, corrections) = (
        rows("rx_fills.parquet"),
        rows("corrections/rx_fills.parquet"),
    );
    let expected = format!(
        "rx_fills: accepted: read {}, inserted {fills}, replaced 0, unchanged 0, rejected 0, \
         superseded within the run {corrections}",
        fills + corrections
    );
    assert!(first.contains(&expected), "{first}");
    let second = rxcube(&["demo", "--warehouse", w]);
    assert!(second.status.success());
    let second = String::from_utf8_lossy(&second.stdout).into_owned();
    let lines: Vec<&str> = second
        .lines()
        .filter(|l| l.contains(": accepted:"))
        .collect();
    assert_eq!(lines.len(), 8, "{second}");
    for l in lines {
        assert!(
            l.contains("inserted 0, replaced 0,") && l.contains("nothing committed"),
            "{l}"
        );
    }
}

/// Every report in `queries/` runs with `rxcube sql -f` on the demo chain and answers.
#[test]
fn every_report_in_queries_runs_on_the_demo_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = dir.path().join("w");
    let wh = wh.to_str().expect("utf8");
    let o = rxcube(&["demo", "--warehouse", wh]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../queries");
    let mut files: Vec<_> = std::fs::read_dir(&queries)
        .expect("queries/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let o = rxcube(&[
            "sql",
            "--warehouse",
            wh,
            "--format",
            "csv",
            "-f",
            file.to_str().expect("utf8"),
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        // A header and at least one row.
        assert!(
            out.lines().count() >= 2,
            "{}: no rows\n{out}",
            file.display()
        );
    }
    // The demo builds the rollups; their histograms print as text in CSV.
    let o = rxcube(&[
        "sql",
        "--warehouse",
        wh,
        "--format",
        "csv",
        "SELECT pharmacy_id, median_processing_minutes FROM rollups.daily \
         WHERE fills_rows > 0 ORDER BY period_start, pharmacy_id LIMIT 1",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("\"[{v: "), "{out}");
}

/// The score card shows the latest pay period the demo chain covers in full. The chain starts
/// 2024-01-07 and covers 70 days (`data/demo/README.md`), so its last whole day is 2024-03-16;
/// pay periods run 14 days from 2024-01-07, so the last whole one runs 2024-03-03 to 2024-03-16.
/// The period from 2024-03-17 holds only a few hours (overnight shifts, late fills) and is left
/// out, not printed as if it were complete.
#[test]
fn the_score_card_shows_the_latest_complete_pay_period() {
    use chrono::{Days, NaiveDate};
    let start = NaiveDate::from_ymd_opt(2024, 1, 7).expect("date");
    let (days, period) = (70u64, 14u64);
    let end = start + Days::new(days);
    let first = start + Days::new((days / period - 1) * period);
    let last = end - Days::new(1);
    assert_eq!(
        (first.to_string(), last.to_string()),
        ("2024-03-03".into(), "2024-03-16".into())
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w");
    let o = rxcube(&["demo", "--warehouse", w.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let heading = format!(
        "The five key metrics of pay period {first} to {last} by region (cube.metrics): the latest \
         pay period the data covers in full (it runs from {start} 00:00:00 to {end} "
    );
    // ... to an hour of 2024-03-17: the 24-hour stores open the first day at midnight, and the
    // overnight shifts and late fills of the last day end the next morning.
    let at = out
        .find(&heading)
        .unwrap_or_else(|| panic!("no `{heading}` in\n{out}"));
    // The table after the heading: a header row, then one row per region and the division.
    let rows: Vec<Vec<String>> = out[at..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('|') || l.starts_with('+'))
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        rows.first().map(|r| r[..3].join(",")),
        Some("region,pay_period,labor_cost_per_rx".into()),
        "{out}"
    );
    // The regions, read from the demo's pharmacies file itself.
    let mut regions: Vec<String> =
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/pharmacies.parquet"))
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name("region").expect("region");
                let col =
                    arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("cast");
                let col = arrow::array::AsArray::as_string::<i32>(&col).clone();
                col.iter()
                    .map(|v| v.expect("region").to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
    regions.sort();
    regions.dedup();
    regions.push("ALL (division)".into());
    let shown: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(shown, regions, "{out}");
    for r in &rows[1..] {
        assert_eq!(r[1], first.to_string(), "{out}");
        // A whole period's numbers: on time well above the partial period's 0.
        let on_time: f64 = r[4].parse().unwrap_or_else(|_| panic!("{r:?}"));
        assert!(on_time > 10.0, "{r:?}\n{out}");
    }
    assert!(!out.contains(&format!("| {end} ")), "{out}");
}
