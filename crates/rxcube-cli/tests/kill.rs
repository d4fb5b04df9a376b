//! A `kill -9` at any moment of an import leaves the tables exactly as they were.
//!
//! An uninterrupted import of the same file is timed first; then imports are killed at spread
//! fractions of that time (reading, checking, writing files, committing). After each kill the
//! table must be readable and hold either the old records or all the new ones, never a mix;
//! a final run completes and everything is there exactly once.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn rxcube() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rxcube"));
    c.env_remove("RXCUBE_WAREHOUSE");
    c
}

fn import(w: &str, table: &str, file: &str) -> bool {
    rxcube()
        .args(["import", "-w", w, table, file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run")
        .success()
}

/// (count, distinct rx_ids, crp fills) as rxcube reads the table.
fn state(w: &str) -> String {
    let out = rxcube()
        .args(["sql", "-w", w, "--format", "csv", "SELECT count(*), count(DISTINCT rx_id), sum(CASE WHEN channel = 'crp' THEN 1 ELSE 0 END) FROM rx_fills"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "table unreadable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn write_fills(path: &Path, ids: std::ops::Range<i64>, channel: &str) {
    let mut f = BufWriter::new(std::fs::File::create(path).expect("create"));
    writeln!(f, "rx_id,fill_no,pharmacy_id,channel,received_at,filled_at").expect("write");
    for id in ids {
        // Spread over three months so the commit touches several partitions.
        let day = 1 + id % 28;
        let month = 1 + id % 3;
        writeln!(
            f,
            "{id},0,1,{channel},2024-0{month}-{day:02}T09:00:00-08:00,2024-0{month}-{day:02}T09:{:02}:00-08:00",
            id % 60
        )
        .expect("write");
    }
}

#[test]
fn kill_9_at_any_moment_of_an_import_leaves_the_tables_as_they_were() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ph = dir.path().join("ph.csv");
    std::fs::write(
        &ph,
        "pharmacy_id,valid_from,valid_to,name,local_area,service_area,region,timezone,employees,hours_per_week\n\
         1,2024-01-01,,Main St,LA-1,SA-1,West,,12,84\n",
    )
    .expect("write");
    let ph = ph.display().to_string();
    let first = dir.path().join("first.csv");
    let big = dir.path().join("big.csv");
    // The big file replaces the first file's records (their channel changes) and adds many more.
    write_fills(&first, 1..20_001, "local");
    write_fills(&big, 1..400_001, "crp");
    let (first, big) = (first.display().to_string(), big.display().to_string());

    // Time an uninterrupted run on a scratch warehouse.
    let scratch = dir.path().join("scratch").display().to_string();
    assert!(import(&scratch, "pharmacies", &ph));
    assert!(import(&scratch, "rx_fills", &first));
    let t0 = Instant::now();
    assert!(import(&scratch, "rx_fills", &big));
    let full = t0.elapsed();
    let after = state(&scratch);

    let w = dir.path().join("w").display().to_string();
    assert!(import(&w, "pharmacies", &ph));
    assert!(import(&w, "rx_fills", &first));
    let before = state(&w);
    assert_eq!(before, "20000,20000,0");
    assert_eq!(after, "400000,400000,400000");

    let mut killed_mid_run = 0;
    for k in 1..=12 {
        let at = full.mul_f64(f64::from(k) / 12.0 * 0.98);
        let mut child = rxcube()
            .args(["import", "-w", &w, "rx_fills", &big])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(at);
        child.kill().ok(); // SIGKILL
        child.wait().expect("reap");
        let now = state(&w);
        assert!(
            now == before || now == after,
            "after a kill at {at:?} the table holds a mix: {now}"
        );
        if now == after {
            break; // this run committed before the kill
        }
        killed_mid_run += 1;
    }
    assert!(
        killed_mid_run > 0,
        "no kill landed before the commit; the test proves nothing"
    );
    assert!(import(&w, "rx_fills", &big));
    assert_eq!(state(&w), after);
    // Killed runs left no entries and no partial commits: the log shows whole runs only.
    let out = rxcube()
        .args(["sql", "-w", &w, "--format", "csv", "SELECT count(*) FROM system.import_log WHERE table_name = 'rx_fills' AND status = 'accepted'"])
        .output()
        .expect("run");
    let accepted: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .expect("count");
    assert!(accepted >= 2, "{accepted}");
}

/// The cube's answer to a few grains, levels and metrics, rounded (the raw path and the
/// rollups add the same terms in different orders), as CSV.
fn cube_answer(w: &str, extra: &[&str]) -> String {
    let sql = "SELECT level, node, grain, CAST(period_start AS VARCHAR) AS p, metric, \
               round(value, 6) AS v, peer_rank FROM cube.metrics \
               WHERE level IN ('pharmacy', 'region') AND grain IN ('day', 'month') \
               AND metric IN ('on_time_pct', 'median_processing_minutes', 'rx_sold') \
               ORDER BY level, node, grain, p, metric";
    let out = rxcube()
        .args(["sql", "-w", w, "--format", "csv"])
        .args(extra)
        .arg(sql)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "cube unreadable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kill_9_at_any_moment_of_a_rollup_job_never_shows_a_wrong_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let scratch = dir.path().join("scratch").display().to_string();
    let extra = dir.path().join("extra.csv");
    let mut fills = String::from("rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n");
    for i in 0..50 {
        fills.push_str(&format!(
            "{},0,RX101,local,2024-02-01T09:{i:02}:00-08:00,2024-02-01T10:{i:02}:00-08:00\n",
            990_000_000 + i
        ));
    }
    std::fs::write(&extra, fills).expect("write");
    let extra = extra.display().to_string();
    for wh in [&w, &scratch] {
        let o = rxcube().args(["demo", "-w", wh]).output().expect("demo");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(import(wh, "rx_fills", &extra));
    }
    // The raw answer after the import, and the time of an uninterrupted rebuild.
    let raw = cube_answer(&w, &["--no-rollups"]);
    assert!(raw.lines().count() > 100, "{raw}");
    let t0 = Instant::now();
    let o = rxcube()
        .args(["rollup", "build", "-w", &scratch])
        .output()
        .expect("build");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full = t0.elapsed();
    assert_eq!(cube_answer(&scratch, &[]), raw);

    for k in 1..=8 {
        let at = full.mul_f64(f64::from(k) / 8.0 * 0.95);
        let mut child = rxcube()
            .args(["rollup", "build", "-w", &w])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(at);
        child.kill().ok(); // SIGKILL
        child.wait().expect("reap");
        // Whatever was committed, what readers see is the raw answer.
        assert_eq!(cube_answer(&w, &[]), raw, "after a kill at {at:?}");
    }
    let o = rxcube()
        .args(["rollup", "refresh", "-w", &w])
        .output()
        .expect("refresh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status = rxcube()
        .args(["rollup", "status", "-w", &w])
        .output()
        .expect("status");
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(status.matches(" fresh").count(), 3, "{status}");
    assert_eq!(cube_answer(&w, &[]), raw);
    // Served from the rollups now.
    let o = rxcube()
        .args([
            "sql",
            "-w",
            &w,
            "--timing",
            "SELECT count(*) FROM cube.region_month",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("(served by cube.metrics: rollup monthly"),
        "{stderr}"
    );
}
