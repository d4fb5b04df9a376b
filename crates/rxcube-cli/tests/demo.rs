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
