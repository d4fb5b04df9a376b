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

/// (count, sum of rx_id, crp fills) as rxcube reads the table.
fn state(w: &str) -> String {
    let out = rxcube()
        .args(["sql", "-w", w, "--format", "csv", "SELECT count(*), sum(rx_id), sum(CASE WHEN channel = 'crp' THEN 1 ELSE 0 END) FROM rx_fills"])
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
    assert_eq!(before, format!("20000,{},0", 20_000i64 * 20_001 / 2));
    assert_eq!(after, format!("400000,{},400000", 400_000i64 * 400_001 / 2));

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
