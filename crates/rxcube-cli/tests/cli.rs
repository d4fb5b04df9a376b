//! The `rxcube` binary end to end, as a user runs it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn rxcube(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rxcube"))
        .args(args)
        .env_remove("RXCUBE_WAREHOUSE")
        .output()
        .expect("run rxcube")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .expect("write");
    p.display().to_string()
}

const PHARMACIES: &str = "\
pharmacy_id,valid_from,valid_to,name,local_area,service_area,region,timezone,employees,hours_per_week
00017,2024-01-01,,Main St,LA-1,SA-1,West,America/Los_Angeles,12,84
";

#[test]
fn help_lists_the_commands_and_explains_the_import_rules() {
    let out = rxcube(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for c in ["demo", "generate", "import", "sql"] {
        assert!(help.contains(c), "{help}");
    }
    let help = text(&rxcube(&["import", "--help"]).stdout);
    assert!(
        help.contains("Exit status: 0 accepted (--follow: stopped by a signal), 1 rejected"),
        "{help}"
    );
    assert!(help.contains("--start-at"), "{help}");
}

#[test]
fn a_rejected_import_exits_1_names_record_and_column_and_posts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let ph = write(dir.path(), "ph.csv", PHARMACIES);
    let out = rxcube(&["import", "-w", &w, "pharmacies", &ph]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("pharmacies: accepted: read 1, inserted 1, replaced 0, unchanged 0, rejected 0, table version 0;"), "{}", text(&out.stdout));

    let fills = write(
        dir.path(),
        "fills.csv",
        "rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n\
         1,0,00017,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n\
         2,0,00017,mail,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n",
    );
    let out = rxcube(&["import", "-w", &w, "rx_fills", &fills]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "error: {fills}: record 2, column channel, value 'mail': must be one of local, crp"
        )),
        "{err}"
    );
    assert!(text(&out.stdout).contains("rx_fills: rejected, nothing posted: read 2, rejected 1 records (1 errors), nothing committed"));

    let out = rxcube(&[
        "sql",
        "-w",
        &w,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM rx_fills",
    ]);
    assert_eq!(text(&out.stdout), "n\n0\n");

    let out = rxcube(&["import", "-w", &w, "--brief", "rx_fills", &fills]);
    assert!(
        text(&out.stderr).contains("       1  channel: must be one of local, crp"),
        "{}",
        text(&out.stderr)
    );

    // A night over the spring-forward change, paid the wall clock's 8 hours for 7 elapsed:
    // allowed by the contract, so it lands, with a warning in the summary and on stderr.
    let emp = write(
        dir.path(),
        "emp.csv",
        "employee_id,name,ssn,job_class,hourly_rate,home_pharmacy_id,hired_on,terminated_on\n\
         E1001,Ann,123-45-6789,pharmacist,61.50,00017,1987-03-01,\n",
    );
    let out = rxcube(&["import", "-w", &w, "employees", &emp]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("rejected 0, warnings 1, table version 0"),
        "the 1987 hire date is unusual, not wrong: {}",
        text(&out.stdout)
    );
    let night = write(
        dir.path(),
        "night.csv",
        "employee_id,pharmacy_id,shift_start,pay_code,shift_end,hours,cost\n\
         E1001,00017,2024-03-09T22:00:00-08:00,REG,2024-03-10T06:00:00-07:00,8.00,492.00\n",
    );
    let out = rxcube(&["import", "-w", &w, "payroll", &night]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(
            "payroll: accepted: read 1, inserted 1, replaced 0, unchanged 0, rejected 0, warnings 1, table version 0;"
        ),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains(&format!(
            "warning: {night}: record 1, column hours, value '8.00': exceeds the shift's elapsed length of 7.00 hours"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn control_characters_in_bad_values_are_escaped_on_the_error_line_and_kept_in_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let ph = write(dir.path(), "ph.csv", PHARMACIES);
    assert!(
        rxcube(&["import", "-w", &w, "pharmacies", &ph])
            .status
            .success()
    );
    // A NUL, a quoted line break, a terminal escape and a literal backslash-n in bad values.
    let fills = write(
        dir.path(),
        "fills.csv",
        "rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n\
         1,0,00017,lo\0cal,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n\
         2,0,00017,\"mail\nbox\",2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n\
         3,0,00017,\u{1b}[31mcrp,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n\
         4,0,00017,mail\\nbox,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n",
    );
    for brief in [false, true] {
        let mut args = vec!["import", "-w", &w, "rx_fills", &fills];
        if brief {
            args.insert(4, "--brief");
        }
        let out = rxcube(&args);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            !err.contains(['\0', '\u{1b}']),
            "a raw control character reached the terminal: {err:?}"
        );
        if brief {
            assert!(
                err.contains("       4  channel: must be one of local, crp"),
                "{err}"
            );
            continue;
        }
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(lines.len(), 4, "one line per error: {err}");
        for (line, shown) in lines.iter().zip([
            r"record 1, column channel, value 'lo\0cal'",
            r"record 2, column channel, value 'mail\nbox'",
            r"record 3, column channel, value '\u{1b}[31mcrp'",
            r"record 4, column channel, value 'mail\\nbox'",
        ]) {
            assert!(line.contains(shown), "{line:?} lacks {shown:?}");
        }
    }
    // The log keeps the values exactly as the file holds them.
    let out = rxcube(&[
        "sql",
        "-w",
        &w,
        "--format",
        "csv",
        "SELECT record, octet_length(value) AS n, \
         strpos(value, chr(10)) AS lf, strpos(value, chr(27)) AS esc, strpos(value, chr(92)) AS bs \
         FROM system.import_errors ORDER BY run_id, record LIMIT 4",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "record,n,lf,esc,bs\n1,6,0,0,0\n2,8,5,0,0\n3,8,0,1,0\n4,9,0,0,5\n"
    );
}

/// A demo Parquet file, as committed.
fn demo_file(name: &str) -> String {
    format!("{}/../../data/demo/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_parquet_file_with_flipped_bytes_is_rejected_by_name_never_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    for t in ["pharmacies", "employees"] {
        let out = rxcube(&["import", "-w", &w, t, &demo_file(&format!("{t}.parquet"))]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let clean = std::fs::read(demo_file("payroll.parquet")).expect("read");
    let n = clean.len();
    let footer_len = u32::from_le_bytes(clean[n - 8..n - 4].try_into().expect("4 bytes")) as usize;
    let footer = n - 8 - footer_len;
    // One byte inverted at a time: spread over the pages, over the footer, and in the footer's
    // length. Before the checks, a third of these aborted the process (a failed allocation of
    // 2^61 bytes) or panicked in the decoder.
    let offsets: Vec<usize> = (0..48)
        .map(|k| 4 + k * (footer - 4) / 48)
        .chain((0..24).map(|k| footer + k * footer_len / 24))
        .chain([n - 6, n - 5])
        .collect();
    let mut rejected = 0;
    for (i, at) in offsets.iter().enumerate() {
        let mut bytes = clean.clone();
        bytes[*at] ^= 0xff;
        let file = dir.path().join(format!("payroll-{i}.parquet"));
        std::fs::write(&file, &bytes).expect("write");
        let file = file.display().to_string();
        let out = rxcube(&["import", "-w", &w, "payroll", &file]);
        let err = text(&out.stderr);
        match out.status.code() {
            // The flip landed in a value that still reads (or in unused statistics).
            Some(0) => {}
            Some(1) => {
                rejected += 1;
                assert!(
                    err.contains(&format!("error: {file}")),
                    "byte {at}: the error names the file: {err}"
                );
                assert!(
                    text(&out.stdout).contains("payroll: rejected, nothing posted"),
                    "byte {at}: {}",
                    text(&out.stdout)
                );
            }
            code => panic!("byte {at} of {n}: exit {code:?} (a crash): {err}"),
        }
    }
    assert!(rejected >= offsets.len() / 3, "only {rejected} rejected");
    // Every rejected run is in the import log.
    let out = rxcube(&[
        "sql",
        "-w",
        &w,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM system.import_log \
         WHERE table_name = 'payroll' AND status = 'rejected' AND file LIKE '%payroll-%'",
    ]);
    assert_eq!(text(&out.stdout), format!("n\n{rejected}\n"));
}

#[test]
fn usage_errors_are_clear() {
    let out = rxcube(&["import", "-w", "/tmp/x", "fills", "/nonexistent.csv"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown table 'fills'") && err.contains("rx_fills"),
        "{err}"
    );
    let out = rxcube(&["import", "-w", "/tmp/x", "rx_fills", "/nonexistent.csv"]);
    assert!(text(&out.stderr).contains("no such file: /nonexistent.csv"));
    // A directory is named as one, not as a missing file.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("fills.csv");
    std::fs::create_dir(&d).expect("mkdir");
    let d = d.display().to_string();
    let out = rxcube(&["import", "-w", "/tmp/x", "rx_fills", &d]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{d} is a directory")), "{err}");
    assert!(!err.contains("no such file"), "{err}");
}

#[test]
fn sql_prints_tables_csv_and_json_and_reports_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let ph = write(dir.path(), "ph.csv", PHARMACIES);
    assert!(
        rxcube(&["import", "-w", &w, "pharmacies", &ph])
            .status
            .success()
    );
    let q = "SELECT pharmacy_id, name, hours_per_week FROM pharmacies";
    let out = rxcube(&["sql", "-w", &w, "--format", "json", q]);
    assert_eq!(
        text(&out.stdout).trim(),
        r#"[{"pharmacy_id":"00017","name":"Main St","hours_per_week":84}]"#
    );
    let out = rxcube(&["sql", "-w", &w, "--format", "csv", q]);
    assert_eq!(
        text(&out.stdout),
        "pharmacy_id,name,hours_per_week\n00017,Main St,84\n"
    );
    let out = rxcube(&["sql", "-w", &w, q]);
    assert!(
        text(&out.stdout).contains("| 00017       | Main St | 84             |"),
        "{}",
        text(&out.stdout)
    );
    let script = write(
        dir.path(),
        "q.sql",
        "-- two statements\nSELECT 1 AS a;\nSELECT 'x;y' AS b;\n",
    );
    let out = rxcube(&["sql", "-w", &w, "--format", "csv", "-f", &script]);
    assert_eq!(text(&out.stdout), "a\n1\nb\nx;y\n");
    let out = rxcube(&["sql", "-w", &w, "SELECT nope FROM pharmacies"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
    let out = rxcube(&[
        "sql",
        "-w",
        &w,
        "--format",
        "csv",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'system' ORDER BY 1",
    ]);
    assert_eq!(
        text(&out.stdout),
        "table_name\naudit_log\nimport_errors\nimport_log\nrollups\n"
    );
}

#[test]
fn the_interactive_prompt_runs_multi_line_statements_until_quit() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rxcube"))
        .args(["sql", "-w", &w, "--format", "csv"])
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"SELECT 40 +\n 2 AS answer;\nSELECT nope;\nSELECT 'still here' AS s;\n\\q\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "answer\n42\ns\nstill here\n");
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

/// Waits until `n` files named `<moment>.<pid>.ready` are in `dir` (the import test hook),
/// or fails after a minute or when one of `running` has exited; returns them.
fn await_ready(
    dir: &Path,
    moment: &str,
    n: usize,
    running: &mut [&mut std::process::Child],
) -> Vec<String> {
    let t0 = std::time::Instant::now();
    loop {
        for child in running.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).ok();
                }
                panic!("an import exited ({status}) before {moment}: {err}");
            }
        }
        let ready: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with(&format!("{moment}.")) && f.ends_with(".ready"))
            .collect();
        if ready.len() >= n {
            return ready;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "{n} imports never reached {moment}: {ready:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn release(dir: &Path, moment: &str) {
    std::fs::write(dir.join(format!("{moment}.go")), b"").expect("go");
}

fn fills_csv(dir: &Path, name: &str, ids: std::ops::Range<u32>, channel: &str) -> String {
    let mut csv = String::from("rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n");
    for id in ids {
        csv.push_str(&format!(
            "{id},0,00017,{channel},2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n"
        ));
    }
    write(dir, name, &csv)
}

fn csv_query(w: &str, sql: &str) -> String {
    let out = rxcube(&["sql", "-w", w, "--format", "csv", sql]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn two_concurrent_imports_into_one_table_both_land_each_key_once() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = dir.path().join("hook");
    std::fs::create_dir(&hook).expect("mkdir");
    let w = dir.path().join("w").display().to_string();
    let ph = write(dir.path(), "ph.csv", PHARMACIES);
    assert!(
        rxcube(&["import", "-w", &w, "pharmacies", &ph])
            .status
            .success()
    );
    // Keys 1..300 and 200..500: the 100 shared keys must land once, from the later commit;
    // the second round changes every record (the channels swap).
    for (round, (ca, cb)) in [
        ("creates the table", ("local", "crp")),
        ("replaces records", ("crp", "local")),
    ] {
        let a = fills_csv(dir.path(), &format!("a-{ca}.csv"), 1..300, ca);
        let b = fills_csv(dir.path(), &format!("b-{cb}.csv"), 200..500, cb);
        let spawn = |file: &str| {
            Command::new(env!("CARGO_BIN_EXE_rxcube"))
                .args(["import", "-w", &w, "rx_fills", file])
                .env_remove("RXCUBE_WAREHOUSE")
                .env("RXCUBE_TEST_PAUSE", &hook)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        };
        for f in std::fs::read_dir(&hook).expect("read dir") {
            std::fs::remove_file(f.expect("entry").path()).expect("rm");
        }
        release(&hook, "after-commit");
        release(&hook, "before-log");
        let (mut pa, mut pb) = (spawn(&a), spawn(&b));
        // Both have matched their records to the same version; then both commit at once.
        await_ready(&hook, "before-commit-1", 2, &mut [&mut pa, &mut pb]);
        release(&hook, "before-commit-2");
        release(&hook, "before-commit-1");
        for p in [pa, pb] {
            let out = p.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "{round}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        // The loser matched its records again against the winner's version.
        await_ready(&hook, "before-commit-2", 1, &mut []);
        assert_eq!(
            csv_query(
                &w,
                "SELECT count(*) AS n, count(DISTINCT rx_id) AS keys FROM rx_fills"
            ),
            "n,keys\n499,499\n",
            "{round}"
        );
    }
    // Four accepted runs, and the shared keys hold the channel of the last commit.
    let log = csv_query(
        &w,
        "SELECT status, count(*) AS n FROM system.import_log WHERE table_name = 'rx_fills' GROUP BY status",
    );
    assert_eq!(log, "status,n\naccepted,4\n");
    let last = csv_query(
        &w,
        "SELECT CASE WHEN file LIKE '%-local.csv' THEN 'local' ELSE 'crp' END AS c \
         FROM system.import_log WHERE table_name = 'rx_fills' ORDER BY table_version DESC LIMIT 1",
    );
    let shared = csv_query(
        &w,
        "SELECT DISTINCT channel AS c FROM rx_fills WHERE CAST(rx_id AS INT) BETWEEN 200 AND 299",
    );
    assert_eq!(shared, last);
}

#[test]
fn an_import_that_keeps_losing_the_race_to_commit_fails_plainly_and_is_logged() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = dir.path().join("hook");
    std::fs::create_dir(&hook).expect("mkdir");
    let w = dir.path().join("w").display().to_string();
    let ph = write(dir.path(), "ph.csv", PHARMACIES);
    assert!(
        rxcube(&["import", "-w", &w, "pharmacies", &ph])
            .status
            .success()
    );
    let slow = fills_csv(dir.path(), "slow.csv", 1..100, "local");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rxcube"))
        .args(["import", "-w", &w, "rx_fills", &slow])
        .env_remove("RXCUBE_WAREHOUSE")
        .env("RXCUBE_TEST_PAUSE", &hook)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    release(&hook, "after-commit");
    // Each time it has matched its records, another import commits first.
    for attempt in 1..=3 {
        let moment = format!("before-commit-{attempt}");
        await_ready(&hook, &moment, 1, &mut [&mut child]);
        let other = fills_csv(
            dir.path(),
            &format!("other{attempt}.csv"),
            attempt * 1000..attempt * 1000 + 10,
            "crp",
        );
        let out = rxcube(&["import", "-w", &w, "rx_fills", &other]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        release(&hook, &moment);
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "another import committed to table rx_fills while this one ran; nothing of this run \
             was posted; run it again"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one plain line: {err}");
    assert_eq!(
        csv_query(&w, "SELECT count(*) AS n FROM rx_fills"),
        "n\n30\n"
    );
    let log = csv_query(
        &w,
        "SELECT status, inserted, table_version IS NULL AS none, message LIKE 'another import committed%' AS why \
         FROM system.import_log WHERE file LIKE '%slow.csv'",
    );
    assert_eq!(log, "status,inserted,none,why\nfailed,0,true,true\n");
}

#[test]
fn concurrent_runs_append_to_a_new_import_log_without_a_conflict() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = dir.path().join("hook");
    std::fs::create_dir(&hook).expect("mkdir");
    let w = dir.path().join("w").display().to_string();
    // Three rejected runs (no pharmacies on file) of a fresh warehouse append their errors and
    // log rows at the same moment: the first commits create the system tables.
    let fills = fills_csv(dir.path(), "fills.csv", 1..5, "local");
    let mut runs: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_rxcube"))
                .args(["import", "-w", &w, "rx_fills", &fills])
                .env_remove("RXCUBE_WAREHOUSE")
                .env("RXCUBE_TEST_PAUSE", &hook)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    {
        let mut running: Vec<&mut std::process::Child> = runs.iter_mut().collect();
        await_ready(&hook, "before-log", 3, &mut running);
    }
    release(&hook, "before-log");
    for r in runs {
        let out = r.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    }
    assert_eq!(
        csv_query(
            &w,
            "SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM system.import_log"
        ),
        "n,runs\n3,3\n"
    );
    assert_eq!(
        csv_query(
            &w,
            "SELECT count(DISTINCT run_id) AS runs FROM system.import_errors"
        ),
        "runs\n3\n"
    );
}

/// A metric the warehouse's own `cube.toml` adds takes targets, and `cube.attainment` judges
/// them; without that definition the import rejects the target, naming the metrics that take
/// them.
#[test]
fn targets_may_name_a_metric_the_warehouses_cube_definition_adds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let cube = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rxcube-cube");
    for table in ["pharmacies", "peer_groups", "rx_fills"] {
        let file = cube.join(format!("tests/fixtures/tiny/{table}.csv"));
        let out = rxcube(&["import", "-w", &w, table, &file.display().to_string()]);
        assert!(out.status.success(), "{table}: {}", text(&out.stdout));
    }
    let targets = write(
        dir.path(),
        "targets.csv",
        "peer_group,metric,tier,effective_from,value,bonus_amount\n\
         small,repeat_fill_pct,1,2024-01-01,30,50.00\n",
    );
    let out = rxcube(&["import", "-w", &w, "targets", &targets]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("'repeat_fill_pct'")
            && said.contains("not a metric that takes targets: labor_cost_per_rx, csat_pct"),
        "{said}"
    );
    // The warehouse's definition: the built-in one and a new ratio.
    let definition = format!(
        "{}\n{}",
        std::fs::read_to_string(cube.join("cube.toml")).expect("cube.toml"),
        std::fs::read_to_string(cube.join("tests/fixtures/repeat_fill.toml")).expect("extra")
    );
    std::fs::create_dir_all(dir.path().join("w/_rxcube")).expect("mkdir");
    write(&dir.path().join("w/_rxcube"), "cube.toml", &definition);
    let out = rxcube(&["import", "-w", &w, "targets", &targets]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    // Pharmacy 1 (`small` on the period's last day) has 2 refills and 4 new fills in the pay
    // period of 2024-03-03 (the tiny chain's README): 2 / 6 = 33.33, at or above 30, so tier 1's
    // 50.00 is earned. Pharmacies 2 and 3 are `large`, which has no target on it.
    assert_eq!(
        csv_query(
            &w,
            "SELECT node, CAST(round(value, 2) AS VARCHAR) AS value, tier, \
             CAST(target AS VARCHAR) AS target, attained, CAST(bonus_earned AS VARCHAR) AS bonus \
             FROM cube.attainment WHERE grain = 'pay_period' AND metric = 'repeat_fill_pct'"
        ),
        "node,value,tier,target,attained,bonus\n1,33.33,1,30.0,true,50.0\n"
    );
}

/// Waits (at most a minute) until `path` exists, failing with `child`'s output if it does not.
fn await_file(path: &Path, child: &mut std::process::Child) {
    let t0 = std::time::Instant::now();
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "rxcube import --follow exited ({status}) before {}",
                path.display()
            );
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Stops a following import with SIGTERM; returns its output (it must exit 0).
fn stop_following(child: std::process::Child) -> String {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `rxcube import -w W [TABLE] --follow LANDING --poll 0.2 [ARGS]`, its output piped.
fn spawn_follow(w: &str, table: &[&str], landing: &Path, args: &[&str]) -> std::process::Child {
    use std::process::Stdio;
    Command::new(env!("CARGO_BIN_EXE_rxcube"))
        .args(["import", "-w", w])
        .args(table)
        .arg("--follow")
        .arg(landing)
        .args(["--poll", "0.2"])
        .args(args)
        .env_remove("RXCUBE_WAREHOUSE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

#[test]
fn follow_imports_each_file_as_it_arrives_and_moves_it_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let landing = dir.path().join("landing");
    std::fs::create_dir(&landing).expect("mkdir");
    let follow = || spawn_follow(&w, &[], &landing, &["--compact-every", "2"]);
    let mut child = follow();
    // The reference table first, then fills written under a temporary name and renamed into
    // place, as a writer that never exposes a half-written file does.
    for t in ["pharmacies", "rx_fills"] {
        std::fs::create_dir(landing.join(t)).expect("mkdir");
    }
    write(&landing.join("pharmacies"), "stores.csv", PHARMACIES);
    await_file(&landing.join("_imported/pharmacies/stores.csv"), &mut child);
    let tmp = fills_csv(&landing.join("rx_fills"), ".day-1.csv.tmp", 1..5, "local");
    std::fs::rename(&tmp, landing.join("rx_fills/day-1.csv")).expect("rename");
    // One file at a time here (files that arrive together share a run: the next test).
    await_file(&landing.join("_imported/rx_fills/day-1.csv"), &mut child);
    write(
        &landing.join("rx_fills"),
        "day-2.csv",
        "rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n\
         9,0,00017,drone,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n",
    );
    await_file(
        &landing.join("_rejected/rx_fills/day-2.csv.errors.txt"),
        &mut child,
    );
    // A second good file: two small files in the month's partition, compacted into one.
    fills_csv(&landing.join("rx_fills"), "day-3.csv", 5..9, "crp");
    await_file(&landing.join("_imported/rx_fills/day-3.csv"), &mut child);
    // Committed, each file once; the rejected one posted nothing and says why.
    assert_eq!(
        csv_query(
            &w,
            "SELECT channel, count(*) AS n FROM rx_fills GROUP BY channel ORDER BY channel"
        ),
        "channel,n\ncrp,4\nlocal,4\n"
    );
    let log = csv_query(
        &w,
        "SELECT table_name, status, count(*) AS n FROM system.import_log GROUP BY 1, 2 ORDER BY 1, 2",
    );
    assert_eq!(
        log,
        "table_name,status,n\npharmacies,accepted,1\nrx_fills,accepted,2\nrx_fills,rejected,1\n"
    );
    let why = std::fs::read_to_string(landing.join("_rejected/rx_fills/day-2.csv.errors.txt"))
        .expect("report");
    assert!(why.contains("rejected, nothing posted"), "{why}");
    assert!(
        why.contains("record 1") && why.contains("channel") && why.contains("drone"),
        "{why}"
    );
    assert!(landing.join("_rejected/rx_fills/day-2.csv").exists());
    let out = stop_following(child);
    assert!(out.contains("stores.csv: pharmacies: accepted"), "{out}");
    assert!(
        out.contains("day-1.csv: rx_fills: accepted: read 4, inserted 4"),
        "{out}"
    );
    assert!(out.contains("day-2.csv: rx_fills: rejected"), "{out}");
    assert!(
        out.contains("rx_fills: compacted 2 files into 1 (table version"),
        "{out}"
    );

    // A file committed but not moved when the process died comes back: importing it again
    // changes nothing.
    let mut child = follow();
    std::fs::copy(
        landing.join("_imported/rx_fills/day-1.csv"),
        landing.join("rx_fills/day-1.csv"),
    )
    .expect("copy");
    await_file(&landing.join("_imported/rx_fills/day-1.csv.1"), &mut child);
    let out = stop_following(child);
    assert!(
        out.contains("day-1.csv: rx_fills: accepted: read 4, inserted 0, replaced 0, unchanged 4"),
        "{out}"
    );
    assert_eq!(
        csv_query(&w, "SELECT count(*) AS n FROM rx_fills"),
        "n\n8\n"
    );
}

#[test]
fn follow_lands_files_that_arrive_together_in_one_run_and_a_bad_one_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let stores = write(dir.path(), "stores.csv", PHARMACIES);
    assert!(
        rxcube(&["import", "-w", &w, "pharmacies", &stores])
            .status
            .success()
    );
    let landing = dir.path().join("landing");
    std::fs::create_dir(&landing).expect("mkdir");
    let follow = || spawn_follow(&w, &["rx_fills"], &landing, &[]);
    // Three files waiting when the follower starts: one run lands the twelve fills.
    for (i, name) in ["a.csv", "b.csv", "c.csv"].iter().enumerate() {
        let first = 4 * i as u32;
        fills_csv(&landing, name, first..first + 4, "local");
    }
    let mut child = follow();
    await_file(&landing.join("_imported/rx_fills/c.csv"), &mut child);
    let out = stop_following(child);
    assert!(
        out.contains("3 files in one run: rx_fills: accepted: read 12, inserted 12"),
        "{out}"
    );
    assert_eq!(
        csv_query(
            &w,
            "SELECT status, count(*) AS n FROM system.import_log WHERE table_name = 'rx_fills' GROUP BY 1"
        ),
        "status,n\naccepted,1\n"
    );

    // Two good files and a bad one: their run is rejected, posting nothing; then each file
    // runs alone, so the good ones land and only the bad one is set aside.
    fills_csv(&landing, "d.csv", 12..14, "crp");
    write(
        &landing,
        "e.csv",
        "rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n\
         99,0,00017,drone,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n",
    );
    fills_csv(&landing, "f.csv", 14..17, "crp");
    let mut child = follow();
    await_file(
        &landing.join("_rejected/rx_fills/e.csv.errors.txt"),
        &mut child,
    );
    await_file(&landing.join("_imported/rx_fills/f.csv"), &mut child);
    let out = stop_following(child);
    assert!(
        out.contains(
            "3 rx_fills files were not all accepted in one run: importing them one by one"
        ),
        "{out}"
    );
    assert!(
        out.contains("d.csv: rx_fills: accepted: read 2, inserted 2"),
        "{out}"
    );
    assert!(out.contains("e.csv: rx_fills: rejected"), "{out}");
    assert!(
        out.contains("f.csv: rx_fills: accepted: read 3, inserted 3"),
        "{out}"
    );
    assert!(landing.join("_imported/rx_fills/d.csv").exists());
    assert_eq!(
        csv_query(
            &w,
            "SELECT channel, count(*) AS n FROM rx_fills GROUP BY channel ORDER BY channel"
        ),
        "channel,n\ncrp,5\nlocal,12\n"
    );
}

#[test]
fn follow_refuses_what_is_not_a_landing_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("w").display().to_string();
    let file = write(dir.path(), "f.csv", PHARMACIES);
    let out = rxcube(&["import", "-w", &w, "--follow", &file]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a directory"),
        "{}",
        text(&out.stderr)
    );
    let out = rxcube(&[
        "import",
        "-w",
        &w,
        "rx_fills",
        &file,
        "--follow",
        dir.path().to_str().unwrap_or("."),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--follow"),
        "{}",
        text(&out.stderr)
    );
}
