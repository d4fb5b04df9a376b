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

/// One pharmacy, as `<dir>/ph.csv`; its path.
fn write_pharmacy(dir: &Path) -> String {
    let ph = dir.join("ph.csv");
    std::fs::write(
        &ph,
        "pharmacy_id,valid_from,valid_to,name,local_area,service_area,region,timezone,employees,hours_per_week\n\
         1,2024-01-01,,Main St,LA-1,SA-1,West,,12,84\n",
    )
    .expect("write");
    ph.display().to_string()
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
    let ph = write_pharmacy(dir.path());
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

    // The killed runs' spill folders land here; each import removes those of stopped runs.
    let spill = dir.path().join("tmp");
    std::fs::create_dir(&spill).expect("mkdir");
    let mut killed_pid = 0;
    let mut killed_mid_run = 0;
    for k in 1..=12 {
        let at = full.mul_f64(f64::from(k) / 12.0 * 0.98);
        let mut child = rxcube()
            .args(["import", "-w", &w, "rx_fills", &big])
            .env("TMPDIR", &spill)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        killed_pid = child.id();
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
    // Whatever the killed writes left, plus a file as a write killed before its commit leaves
    // it: the next import removes every data file that no commit references.
    let table = Path::new(&w).join("rx_fills");
    plant_uncommitted_file(&table);
    assert!(!unreferenced_files(&table).is_empty());
    // A spill folder as a killed run leaves it (each run also removes the ones before it),
    // and one of a run still going (this test's own process): only the first is removed.
    let stale = spill.join(format!("rxcube-import-{killed_pid}-x"));
    std::fs::create_dir(&stale).expect("mkdir");
    std::fs::write(stale.join("spill-1.arrow"), b"spilled").expect("write");
    let running = format!("rxcube-import-{}-y", std::process::id());
    std::fs::create_dir(spill.join(&running)).expect("mkdir");
    let status = rxcube()
        .args(["import", "-w", &w, "rx_fills", &big])
        .env("TMPDIR", &spill)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert!(status.success());
    assert_eq!(state(&w), after);
    assert_eq!(unreferenced_files(&table), Vec::<String>::new());
    assert_eq!(spill_folders(&spill), vec![running]);
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

/// The imports' spill folders under `tmp`.
fn spill_folders(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rxcube-import-"))
        .collect()
}

/// The `.parquet` files under a table's folder (outside `_delta_log`) that no commit of its
/// log adds or removes.
fn unreferenced_files(table: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().expect("type").is_dir() {
                walk(&e.path(), &rel, out);
            } else if name.ends_with(".parquet") {
                out.push(rel);
            }
        }
    }
    let mut referenced = std::collections::HashSet::new();
    for e in std::fs::read_dir(table.join("_delta_log"))
        .expect("log")
        .flatten()
    {
        if !e.file_name().to_string_lossy().ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("read");
        for piece in text.split("\"path\":\"").skip(1) {
            if let Some(end) = piece.find('"') {
                referenced.insert(piece[..end].to_string());
            }
        }
    }
    let mut files = Vec::new();
    walk(table, "", &mut files);
    files.retain(|f| !referenced.contains(f));
    files.sort();
    files
}

/// A data file as a write killed before its commit leaves it: a copy of a committed file
/// under a new name, in a partition folder.
fn plant_uncommitted_file(table: &Path) -> String {
    let part = std::fs::read_dir(table)
        .expect("read dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains('='))
        .expect("a partition folder")
        .path();
    let committed = std::fs::read_dir(&part)
        .expect("read dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .expect("a data file")
        .path();
    let name = "part-00000-00000000-dead-beef-0000-000000000000-c000.zstd.parquet";
    std::fs::copy(committed, part.join(name)).expect("copy");
    name.to_string()
}

/// Waits until the import test hook says a run reached `moment`, or fails.
fn await_moment(hook: &Path, moment: &str, child: &mut std::process::Child) {
    let t0 = Instant::now();
    loop {
        let reached = std::fs::read_dir(hook)
            .expect("read dir")
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("{moment}.")) && n.ends_with(".ready")
            });
        if reached {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the import exited ({status}) before {moment}");
        }
        assert!(
            t0.elapsed().as_secs() < 60,
            "the import never reached {moment}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn csv(w: &str, sql: &str) -> String {
    sql_csv(w, &[], sql)
}

/// `rxcube sql` of `sql` with `extra` flags, as CSV; a failure fails the test.
fn sql_csv(w: &str, extra: &[&str], sql: &str) -> String {
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

/// A warehouse with one pharmacy, a test-hook folder and two fill files: `first` holds
/// records 1..=100, `second` 51..=150 (50 replace the first file's, 50 are new).
struct Setup {
    dir: tempfile::TempDir,
    hook: std::path::PathBuf,
    w: String,
    ph: String,
    first: String,
    second: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = dir.path().join("hook");
    std::fs::create_dir(&hook).expect("mkdir");
    let w = dir.path().join("w").display().to_string();
    let ph = write_pharmacy(dir.path());
    assert!(import(&w, "pharmacies", &ph));
    let first = dir.path().join("first.csv");
    let second = dir.path().join("second.csv");
    write_fills(&first, 1..101, "local");
    write_fills(&second, 51..151, "crp");
    let (first, second) = (first.display().to_string(), second.display().to_string());
    Setup {
        dir,
        hook,
        w,
        ph,
        first,
        second,
    }
}

#[test]
fn a_run_killed_after_its_commit_is_logged_by_the_next_import() {
    let Setup {
        dir: _dir,
        hook,
        w,
        ph,
        first,
        second,
    } = setup();
    for m in ["before-commit-1", "before-log"] {
        std::fs::write(hook.join(format!("{m}.go")), b"").expect("go");
    }
    for (file, version, counts) in [(&first, 0, "100,0,0"), (&second, 1, "50,50,0")] {
        // Killed the moment its commit is made, before its log row.
        let mut child = rxcube()
            .args(["import", "-w", &w, "rx_fills", file])
            .env("RXCUBE_TEST_PAUSE", &hook)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        await_moment(&hook, "after-commit", &mut child);
        child.kill().expect("kill"); // SIGKILL
        child.wait().expect("reap");
        for f in std::fs::read_dir(&hook).expect("read dir").flatten() {
            if f.file_name().to_string_lossy().ends_with(".ready") {
                std::fs::remove_file(f.path()).expect("rm");
            }
        }
        let logged = format!("SELECT count(*) AS n FROM system.import_log WHERE file = '{file}'");
        assert_eq!(
            csv(&w, &logged),
            "n\n0\n",
            "the kill came before the log row"
        );
        // The next import, into any table, logs the killed run from its commit.
        assert!(import(&w, "pharmacies", &ph));
        let row = csv(
            &w,
            &format!(
                "SELECT status, records_read, inserted, replaced, unchanged, table_version, \
                 message LIKE 'logged by a later import%' AS recovered \
                 FROM system.import_log WHERE file = '{file}'"
            ),
        );
        let (ins, rep, unch) = {
            let c: Vec<&str> = counts.split(',').collect();
            (c[0], c[1], c[2])
        };
        assert_eq!(
            row,
            format!(
                "status,records_read,inserted,replaced,unchanged,table_version,recovered\n\
                 accepted,100,{ins},{rep},{unch},{version},true\n"
            )
        );
        // Once.
        assert!(import(&w, "pharmacies", &ph));
        assert_eq!(csv(&w, &logged), "n\n1\n");
    }
    assert_eq!(csv(&w, "SELECT count(*) AS n FROM rx_fills"), "n\n150\n");
}

#[test]
fn uncommitted_files_are_removed_only_when_no_other_import_runs() {
    let Setup {
        dir: _dir,
        hook,
        w,
        ph,
        first,
        second,
    } = setup();
    assert!(import(&w, "rx_fills", &first));
    let table = Path::new(&w).join("rx_fills");
    // While another import runs (it could be between its write and its commit), nothing is
    // removed.
    let mut running = rxcube()
        .args(["import", "-w", &w, "rx_fills", &second])
        .env("RXCUBE_TEST_PAUSE", &hook)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    await_moment(&hook, "before-commit-1", &mut running);
    let planted = plant_uncommitted_file(&table);
    assert_eq!(unreferenced_files(&table).len(), 1);
    assert!(import(&w, "pharmacies", &ph));
    let left = unreferenced_files(&table);
    assert!(left.iter().any(|f| f.ends_with(&planted)), "{left:?}");
    for m in ["before-commit-1", "after-commit", "before-log"] {
        std::fs::write(hook.join(format!("{m}.go")), b"").expect("go");
    }
    assert!(running.wait().expect("wait").success());
    // Alone, the next import removes it; every committed file stays and the table reads.
    assert!(import(&w, "pharmacies", &ph));
    assert_eq!(unreferenced_files(&table), Vec::<String>::new());
    assert_eq!(
        csv(
            &w,
            "SELECT count(*) AS n, count(DISTINCT rx_id) AS k FROM rx_fills"
        ),
        "n,k\n150,150\n"
    );
}

/// The cube's answer to a few grains, levels and metrics, rounded (the raw path and the
/// rollups add the same terms in different orders), as CSV.
fn cube_answer(w: &str, extra: &[&str]) -> String {
    let sql = "SELECT level, node, grain, CAST(period_start AS VARCHAR) AS p, metric, \
               round(value, 6) AS v, peer_rank FROM cube.metrics \
               WHERE level IN ('pharmacy', 'region') AND grain IN ('day', 'month') \
               AND metric IN ('on_time_pct', 'median_processing_minutes', 'rx_sold') \
               ORDER BY level, node, grain, p, metric";
    sql_csv(w, extra, sql)
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
