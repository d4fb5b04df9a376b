//! The import utility end to end through the library: every validation rule rejects a bad file
//! with nothing posted and a message naming record and column; replacement; idempotence;
//! `--start-at`; round trips of every type from CSV and Parquet.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::prelude::SessionContext;
use rxcube_ingest::{ImportOptions, ImportReport, NoProgress, Status, import};
use rxcube_model::TableName;
use rxcube_warehouse::Warehouse;
use rxcube_warehouse::catalog::{new_session, register_tables};

struct Fixture {
    dir: tempfile::TempDir,
    warehouse: Warehouse,
}

const PHARMACIES: &str = "\
pharmacy_id,valid_from,valid_to,name,local_area,service_area,region,timezone,employees,hours_per_week
1,2024-01-01,,Main St,LA-1,SA-1,West,America/Los_Angeles,12,84
2,2024-01-01,,Elm St,LA-2,SA-1,West,,30,168
";
const PEER_GROUPS: &str = "\
pharmacy_id,valid_from,valid_to,peer_group,rx_target_minutes
1,2024-01-01,,small,
2,2024-01-01,,large-24h,20
";
const EMPLOYEES: &str = "\
employee_id,name,ssn,job_class,hourly_rate,home_pharmacy_id,hired_on,terminated_on
10,Ann,123-45-6789,pharmacist,61.50,1,2020-03-01,
11,Bob,987-65-4321,technician,22.00,2,2021-06-15,
";

impl Fixture {
    /// A warehouse with two pharmacies, their peer groups and two employees landed.
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let warehouse =
            Warehouse::open(dir.path().join("w").to_str().expect("utf8")).expect("open");
        let f = Self { dir, warehouse };
        for (table, csv) in [
            (TableName::Pharmacies, PHARMACIES),
            (TableName::PeerGroups, PEER_GROUPS),
            (TableName::Employees, EMPLOYEES),
        ] {
            let r = f.import_csv(table, "ref", csv).await;
            assert_eq!(r.status, Status::Accepted, "{:?}", r.errors);
        }
        f
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write");
        p
    }

    async fn import_files(
        &self,
        table: TableName,
        files: &[PathBuf],
        start_at: u64,
    ) -> ImportReport {
        let options = ImportOptions {
            start_at,
            ..ImportOptions::default()
        };
        import(&self.warehouse, table, files, &options, &NoProgress)
            .await
            .expect("import runs")
    }

    async fn import_csv(&self, table: TableName, name: &str, csv: &str) -> ImportReport {
        let p = self.write(&format!("{name}.csv"), csv);
        self.import_files(table, &[p], 1).await
    }

    async fn query(&self, sql: &str) -> Vec<RecordBatch> {
        let ctx: SessionContext = new_session();
        register_tables(&ctx, &self.warehouse)
            .await
            .expect("register");
        ctx.sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run")
    }

    async fn count(&self, table: &str) -> i64 {
        let b = self.query(&format!("SELECT count(*) FROM {table}")).await;
        b[0].column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("count")
            .value(0)
    }

    async fn version(&self, table: TableName) -> Option<i64> {
        self.warehouse
            .load(table.def())
            .await
            .expect("load")
            .and_then(|t| t.version())
            .map(|v| v as i64)
    }
}

/// The rows of a query as text, one string per row, columns joined by `|`.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let fmt: Vec<_> = b
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                    .expect("fmt")
            })
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                fmt.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

const FILLS_HEADER: &str = "rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n";
const GOOD_FILL: &str = "100,0,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n";
const PAYROLL_HEADER: &str = "employee_id,pharmacy_id,shift_start,pay_code,shift_end,hours,cost\n";
const GOOD_SHIFT: &str =
    "10,1,2024-03-01T08:00:00-08:00,REG,2024-03-01T16:30:00-08:00,8.00,492.00\n";
const POS_HEADER: &str = "txn_id,line_no,pharmacy_id,sold_at,kind,quantity,amount,rx_id\n";
const GOOD_LINE: &str = "5000,1,1,2024-03-01T10:00:00-08:00,rx,1,10.00,100\n";
const TARGETS_HEADER: &str = "peer_group,metric,tier,effective_from,value,bonus_amount\n";
const GOOD_TARGET: &str = "small,on_time_pct,1,2024-01-01,85,100.00\n";

/// One bad record per rule: (table, file contents, record, column, words of the reason).
fn bad_files() -> Vec<(TableName, String, u64, &'static str, &'static str)> {
    use TableName::*;
    let fills = |bad: &str| format!("{FILLS_HEADER}{GOOD_FILL}{bad}\n");
    let shifts = |bad: &str| format!("{PAYROLL_HEADER}{GOOD_SHIFT}{bad}\n");
    let targets = |bad: &str| format!("{TARGETS_HEADER}{GOOD_TARGET}{bad}\n");
    vec![
        (
            RxFills,
            fills("101,x,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "fill_no",
            "not an integer",
        ),
        (
            RxFills,
            fills("101,0,1,,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "channel",
            "required value is missing",
        ),
        (
            RxFills,
            fills("101,0,1,mail,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "channel",
            "must be one of local, crp",
        ),
        (
            RxFills,
            fills("101,-1,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "fill_no",
            "out of range 0..=2147483647",
        ),
        (
            RxFills,
            fills(&format!(
                "{},0,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00",
                "9".repeat(65)
            )),
            2,
            "rx_id",
            "longer than 64 bytes",
        ),
        (
            RxFills,
            fills("R\u{7}X1,0,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "rx_id",
            "contains a control character",
        ),
        (
            RxFills,
            fills("101,0,1,local,2024-03-01T09:00:00,2024-03-01T09:10:00-08:00"),
            2,
            "received_at",
            "no UTC offset",
        ),
        (
            RxFills,
            fills("101,0,1,local,2024-03-01T09:20:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "filled_at",
            "must be on or after received_at",
        ),
        (
            RxFills,
            fills("101,0,999,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "pharmacy_id",
            "no such pharmacies.pharmacy_id",
        ),
        (
            RxFills,
            fills("100,0,2,crp,2024-03-02T09:00:00-08:00,2024-03-02T09:10:00-08:00"),
            2,
            "(rx_id, fill_no)",
            "duplicate key: the same key is at record 1",
        ),
        (
            RxFills,
            fills("101,0,1,local"),
            2,
            "",
            "record has 4 fields; the header has 6",
        ),
        (
            Payroll,
            shifts("10,1,2024-03-01T08:00:00-08:00,OT,2024-03-01T08:00:00-08:00,0.50,10.00"),
            2,
            "shift_end",
            "must be after shift_start",
        ),
        (
            Payroll,
            shifts("10,1,2024-03-02T08:00:00-08:00,REG,2024-03-02T16:00:00-08:00,8.00,492.005"),
            2,
            "cost",
            "more than 2 decimals",
        ),
        (
            Payroll,
            shifts("10,1,2024-03-02T08:00:00-08:00,VAC,2024-03-02T16:00:00-08:00,8.00,492.00"),
            2,
            "pay_code",
            "must be one of REG, OT, HOL, TRN",
        ),
        (
            Payroll,
            shifts("12,1,2024-03-02T08:00:00-08:00,REG,2024-03-02T16:00:00-08:00,8.00,492.00"),
            2,
            "employee_id",
            "no such employees.employee_id",
        ),
        (
            Payroll,
            shifts("10,1,2024-03-02T08:00:00-08:00,REG,2024-03-02T16:00:00-08:00,30.00,492.00"),
            2,
            "hours",
            "out of range",
        ),
        (
            Pharmacies,
            format!("{PHARMACIES}3,2024-01-01,,Oak St,LA-1,SA-1,West,Mars/Olympus,5,60\n"),
            3,
            "timezone",
            "not an IANA time zone",
        ),
        (
            Pharmacies,
            format!("{PHARMACIES}3,2024-01-01,2023-06-01,Oak St,LA-1,SA-1,West,,5,60\n"),
            3,
            "valid_to",
            "must be after valid_from",
        ),
        (
            Pharmacies,
            format!("{PHARMACIES}3,2024-02-30,,Oak St,LA-1,SA-1,West,,5,60\n"),
            3,
            "valid_from",
            "not a valid date",
        ),
        (
            Pharmacies,
            format!("{PHARMACIES}3,2024-01-01,,  ,LA-1,SA-1,West,,5,60\n"),
            3,
            "name",
            "required value is missing",
        ),
        (
            Pharmacies,
            format!("{PHARMACIES}3,2024-01-01,,Oak St,LA-1,SA-1,West,,5,169\n"),
            3,
            "hours_per_week",
            "out of range 1..=168",
        ),
        (
            Employees,
            format!("{EMPLOYEES}12,Cy,123456789,clerk,15.00,1,2022-01-01,\n"),
            3,
            "ssn",
            "not a social security number",
        ),
        (
            Employees,
            format!("{EMPLOYEES}12,Cy,111-22-3333,clerk,15.00,1,2022-01-01,2021-01-01\n"),
            3,
            "terminated_on",
            "must be on or after hired_on",
        ),
        (
            Employees,
            format!("{EMPLOYEES}12,Cy,111-22-3333,clerk,15.00,7,2022-01-01,\n"),
            3,
            "home_pharmacy_id",
            "no such pharmacies.pharmacy_id",
        ),
        (
            Targets,
            targets("small,profit,1,2024-01-01,5,0.00"),
            2,
            "metric",
            "not a metric that takes targets",
        ),
        (
            Targets,
            targets("small,on_time_pct,2,2024-01-01,120,50.00"),
            2,
            "value",
            "on_time_pct is a percentage",
        ),
        (
            Targets,
            targets("tiny,on_time_pct,1,2024-01-01,80,50.00"),
            2,
            "peer_group",
            "no such peer_groups.peer_group",
        ),
        (
            Targets,
            targets("small,on_time_pct,10,2024-01-01,80,50.00"),
            2,
            "tier",
            "out of range 1..=9",
        ),
        (
            Surveys,
            "response_id,pharmacy_id,responded_at,rating\n1,1,2024-03-01T10:00:00Z,meh\n".into(),
            1,
            "rating",
            "must be one of very_satisfied",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rule_rejects_a_bad_file_naming_record_column_and_reason_and_posts_nothing() {
    let f = Fixture::new().await;
    let before: Vec<_> = {
        let mut v = Vec::new();
        for t in TableName::ALL {
            v.push((t, f.version(t).await));
        }
        v
    };
    for (i, (table, csv, record, column, reason)) in bad_files().into_iter().enumerate() {
        let name = format!("bad{i}");
        let r = f.import_csv(table, &name, &csv).await;
        assert_eq!(r.status, Status::Rejected, "case {i}: {csv}");
        assert_eq!(
            r.rejected, 1,
            "case {i}: exactly the bad record is rejected: {:?}",
            r.errors
        );
        let e = r
            .errors
            .first()
            .unwrap_or_else(|| panic!("case {i}: an error"));
        assert!(e.file.ends_with(&format!("{name}.csv")), "case {i}: {e}");
        assert_eq!(e.record, Some(record), "case {i}: {e}");
        assert_eq!(e.column.as_deref().unwrap_or(""), column, "case {i}: {e}");
        assert!(
            e.reason.contains(reason),
            "case {i}: '{}' lacks '{reason}'",
            e.reason
        );
        assert_eq!(
            (r.inserted, r.replaced, r.version),
            (0, 0, None),
            "case {i}"
        );
    }
    for (t, v) in before {
        assert_eq!(f.version(t).await, v, "{t} changed after rejected imports");
    }
    assert_eq!(f.count("rx_fills").await, 0);
    assert_eq!(f.count("pharmacies").await, 2);
    // Every run and every error is in the import log.
    let logged = f
        .query("SELECT count(*) FROM system.import_log WHERE status = 'rejected'")
        .await;
    assert_eq!(rows(&logged), vec![bad_files().len().to_string()]);
    let errs = f
        .query("SELECT record, column_name, reason FROM system.import_errors WHERE column_name = 'ssn'")
        .await;
    assert_eq!(
        rows(&errs),
        vec!["3|ssn|not a social security number (NNN-NN-NNNN)".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn file_level_problems_are_named() {
    let f = Fixture::new().await;
    let r = f
        .import_csv(
            TableName::RxFills,
            "extra",
            "rx_id,fill_no,pharmacy_id,chanel,received_at,filled_at\n",
        )
        .await;
    assert_eq!(r.status, Status::Rejected);
    let e = &r.errors[0];
    assert_eq!((e.record, e.column.as_deref()), (None, Some("chanel")));
    assert!(
        e.reason
            .starts_with("unknown column; the columns of rx_fills are rx_id, fill_no"),
        "{e}"
    );

    let r = f
        .import_csv(
            TableName::RxFills,
            "short",
            "rx_id,fill_no,pharmacy_id,channel,received_at\n",
        )
        .await;
    assert_eq!(r.errors[0].column.as_deref(), Some("filled_at"));
    assert!(r.errors[0].reason.starts_with("required column is missing"));

    let p = f.write("fills.txt", FILLS_HEADER);
    let r = f.import_files(TableName::RxFills, &[p], 1).await;
    assert!(
        r.errors[0]
            .reason
            .contains("extension must be .csv or .parquet"),
        "{}",
        r.errors[0]
    );

    let p = f.write("broken.parquet", "not parquet at all");
    let r = f.import_files(TableName::RxFills, &[p], 1).await;
    assert!(
        r.errors[0]
            .reason
            .starts_with("not a readable Parquet file"),
        "{}",
        r.errors[0]
    );
    assert_eq!(f.version(TableName::RxFills).await, None);

    // A directory named as a file (`fills.csv/`) is said to be one.
    let d = f.dir.path().join("dir.csv");
    std::fs::create_dir(&d).expect("mkdir");
    let r = f
        .import_files(TableName::RxFills, std::slice::from_ref(&d), 1)
        .await;
    assert_eq!(r.status, Status::Rejected);
    assert_eq!(r.errors[0].file, d.display().to_string());
    assert_eq!(
        r.errors[0].reason, "is a directory, not a file",
        "{}",
        r.errors[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn records_with_a_key_on_file_replace_it_and_reimporting_changes_nothing() {
    let f = Fixture::new().await;
    let a = format!(
        "{FILLS_HEADER}{GOOD_FILL}\
         101,0,1,crp,2024-03-01T09:00:00-08:00,2024-03-01T11:00:00-08:00\n\
         102,1,2,local,2024-03-31T15:00:00-07:00,2024-03-31T15:05:00-07:00\n"
    );
    let r = f.import_csv(TableName::RxFills, "a", &a).await;
    assert_eq!(
        (r.status, r.inserted, r.replaced, r.unchanged),
        (Status::Accepted, 3, 0, 0)
    );
    let v1 = f.version(TableName::RxFills).await;
    assert!(v1.is_some());

    // The same file again: nothing to commit.
    let r = f.import_csv(TableName::RxFills, "a", &a).await;
    assert_eq!(
        (r.inserted, r.replaced, r.unchanged, r.version),
        (0, 0, 3, None)
    );
    assert_eq!(f.version(TableName::RxFills).await, v1);

    // A correction: 101 changes channel, 102 moves to April (another partition), 103 is new.
    let b = format!(
        "{FILLS_HEADER}{GOOD_FILL}\
         101,0,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:05:00-08:00\n\
         102,1,2,local,2024-03-31T15:00:00-07:00,2024-04-01T08:00:00-07:00\n\
         103,0,2,local,2024-04-02T10:00:00Z,2024-04-02T10:01:00Z\n"
    );
    let r = f.import_csv(TableName::RxFills, "b", &b).await;
    assert_eq!(
        (r.status, r.inserted, r.replaced, r.unchanged),
        (Status::Accepted, 1, 2, 1)
    );
    assert_eq!(
        f.version(TableName::RxFills).await,
        v1.map(|v| v + 1),
        "one commit"
    );
    let got = f
        .query(
            "SELECT rx_id, fill_no, channel, CAST(filled_at AS VARCHAR), CAST(event_month AS VARCHAR) \
             FROM rx_fills ORDER BY rx_id",
        )
        .await;
    assert_eq!(
        rows(&got),
        vec![
            "100|0|local|2024-03-01T17:10:00Z|2024-03-01",
            "101|0|local|2024-03-01T17:05:00Z|2024-03-01",
            "102|1|local|2024-04-01T15:00:00Z|2024-04-01",
            "103|0|local|2024-04-02T10:01:00Z|2024-04-01",
        ]
    );
    let log = f
        .query("SELECT status, inserted, replaced, unchanged FROM system.import_log WHERE table_name = 'rx_fills' ORDER BY started_at")
        .await;
    assert_eq!(
        rows(&log),
        vec!["accepted|3|0|0", "accepted|0|0|3", "accepted|1|2|1"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_file_of_the_same_run_wins() {
    let f = Fixture::new().await;
    let a = f.write("a.csv", &format!("{FILLS_HEADER}{GOOD_FILL}"));
    let b = f.write(
        "b.csv",
        &format!("{FILLS_HEADER}100,0,1,crp,2024-03-01T09:00:00-08:00,2024-03-01T09:30:00-08:00\n"),
    );
    let r = f.import_files(TableName::RxFills, &[a, b], 1).await;
    assert_eq!(
        (r.status, r.records_read, r.inserted, r.superseded),
        (Status::Accepted, 2, 1, 1)
    );
    assert_eq!(
        rows(&f.query("SELECT channel FROM rx_fills").await),
        vec!["crp"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_at_skips_earlier_records_and_keeps_record_numbers() {
    let f = Fixture::new().await;
    let csv = format!(
        "{FILLS_HEADER}100,0,1,mail,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n\
         101,0,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n\
         102,0,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n"
    );
    let p = f.write("s.csv", &csv);
    let r = f
        .import_files(TableName::RxFills, std::slice::from_ref(&p), 1)
        .await;
    assert_eq!((r.status, r.errors[0].record), (Status::Rejected, Some(1)));
    let r = f
        .import_files(TableName::RxFills, std::slice::from_ref(&p), 2)
        .await;
    assert_eq!(
        (r.status, r.records_read, r.inserted),
        (Status::Accepted, 2, 2)
    );
    assert_eq!(
        rows(&f.query("SELECT rx_id FROM rx_fills ORDER BY rx_id").await),
        vec!["101", "102"]
    );
    // Numbers stay those of the file.
    let bad = format!(
        "{FILLS_HEADER}{GOOD_FILL}{GOOD_FILL}101,0,1,mail,2024-03-01T09:00:00Z,2024-03-01T09:10:00Z\n"
    );
    let p = f.write("t.csv", &bad);
    let r = f.import_files(TableName::RxFills, &[p], 3).await;
    assert_eq!((r.records_read, r.errors[0].record), (1, Some(3)));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_and_offsets_give_the_same_instants() {
    let f = Fixture::new().await;
    let csv = format!(
        "{PAYROLL_HEADER}\
         10,1,2024-03-10T01:30:00-08:00,REG,2024-03-10T09:30:00-07:00,6.75,415.13\n\
         11,2,2024-03-10T09:30:00Z,OT,2024-03-10T13:15:30.25+02:00,1.50,-0.00\n"
    );
    let r = f.import_csv(TableName::Payroll, "p", &csv).await;
    assert_eq!(r.status, Status::Accepted, "{:?}", r.errors);
    // Expected instants computed independently by chrono from the same text.
    let utc = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%S%.fZ")
            .to_string()
    };
    let got = f
        .query(
            "SELECT employee_id, pharmacy_id, to_char(shift_start, '%Y-%m-%dT%H:%M:%S%.fZ'), pay_code, \
             to_char(shift_end, '%Y-%m-%dT%H:%M:%S%.fZ'), CAST(hours AS VARCHAR), CAST(cost AS VARCHAR), \
             CAST(event_month AS VARCHAR) FROM payroll ORDER BY employee_id",
        )
        .await;
    assert_eq!(
        rows(&got),
        vec![
            format!(
                "10|1|{}|REG|{}|6.75|415.13|2024-03-01",
                utc("2024-03-10T01:30:00-08:00"),
                utc("2024-03-10T09:30:00-07:00")
            ),
            format!(
                "11|2|{}|OT|{}|1.50|0.00|2024-03-01",
                utc("2024-03-10T09:30:00Z"),
                utc("2024-03-10T13:15:30.25+02:00")
            ),
        ]
    );
    // Dates, NULLs, Int64s, floats and the stored types.
    let got = f
        .query("SELECT CAST(valid_from AS VARCHAR), valid_to IS NULL, timezone IS NULL FROM pharmacies ORDER BY pharmacy_id")
        .await;
    assert_eq!(
        rows(&got),
        vec!["2024-01-01|true|false", "2024-01-01|true|true"]
    );
    let r = f
        .import_csv(
            TableName::Targets,
            "t",
            &format!("{TARGETS_HEADER}small,labor_cost_per_rx,1,2024-01-01,4.25,250.50\n"),
        )
        .await;
    assert_eq!(r.status, Status::Accepted, "{:?}", r.errors);
    assert_eq!(
        rows(
            &f.query("SELECT value, CAST(bonus_amount AS VARCHAR) FROM targets")
                .await
        ),
        vec!["4.25|250.50"]
    );
    let schema = f.query("SELECT * FROM payroll").await;
    let types: Vec<String> = schema[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(types[2], "Timestamp(µs, \"UTC\")");
    assert_eq!(types[5], "Decimal128(9, 2)");
    assert_eq!(types[6], "Decimal128(18, 2)");
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_input_is_checked_like_csv() {
    use arrow::array::{Int32Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let f = Fixture::new().await;
    // Milliseconds in another zone, ids as Int32 and a bad channel on the second record.
    let schema = Arc::new(Schema::new(vec![
        Field::new("rx_id", DataType::Int32, false),
        Field::new("fill_no", DataType::Int32, false),
        Field::new("pharmacy_id", DataType::Int32, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new(
            "received_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("-05:00".into())),
            false,
        ),
        Field::new(
            "filled_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("-05:00".into())),
            false,
        ),
    ]));
    let t0 = 1_709_280_000_000i64; // 2024-03-01T08:00:00Z
    let write = |name: &str, channels: Vec<&str>| -> PathBuf {
        let n = channels.len();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from_iter_values(1..=n as i32)),
                Arc::new(Int32Array::from(vec![0; n])),
                Arc::new(Int32Array::from(vec![1; n])),
                Arc::new(StringArray::from(channels)),
                Arc::new(TimestampMillisecondArray::from(vec![t0; n]).with_timezone("-05:00")),
                Arc::new(
                    TimestampMillisecondArray::from(vec![t0 + 600_000; n]).with_timezone("-05:00"),
                ),
            ],
        )
        .expect("batch");
        let path = f.dir.path().join(name);
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).expect("create"),
            schema.clone(),
            None,
        )
        .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        path
    };
    let bad = write("bad.parquet", vec!["local", "fax"]);
    let r = f.import_files(TableName::RxFills, &[bad], 1).await;
    assert_eq!(r.status, Status::Rejected);
    assert_eq!(
        (r.errors[0].record, r.errors[0].column.as_deref()),
        (Some(2), Some("channel"))
    );
    let good = write("good.parquet", vec!["local", "crp"]);
    let r = f.import_files(TableName::RxFills, &[good], 1).await;
    assert_eq!((r.status, r.inserted), (Status::Accepted, 2));
    let got = f
        .query("SELECT rx_id, CAST(received_at AS VARCHAR) FROM rx_fills ORDER BY rx_id")
        .await;
    assert_eq!(
        rows(&got),
        vec!["1|2024-03-01T08:00:00Z", "2|2024-03-01T08:00:00Z"]
    );
}

/// Instants must lie in the years 1678 to 2261, which the engine's time functions represent:
/// one outside (a Parquet instant far off the calendar, as a damaged page can hold, or a CSV
/// instant in 2300) is an error of its record, not a failure of the posting.
#[tokio::test(flavor = "multi_thread")]
async fn instants_outside_years_1678_to_2261_are_rejected() {
    use arrow::array::{Int32Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let f = Fixture::new().await;
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("rx_id", DataType::Utf8, false),
        Field::new("fill_no", DataType::Int32, false),
        Field::new("pharmacy_id", DataType::Utf8, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("received_at", utc.clone(), false),
        Field::new("filled_at", utc, false),
    ]));
    let t0 = 1_709_280_000_000_000i64; // 2024-03-01T08:00:00Z
    let far = 4_616_828_798_511_912_128i64; // about the year 146,000,000
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["1", "2", "3"])),
            Arc::new(Int32Array::from(vec![0; 3])),
            Arc::new(StringArray::from(vec!["1"; 3])),
            Arc::new(StringArray::from(vec!["local"; 3])),
            Arc::new(TimestampMicrosecondArray::from(vec![t0, far, t0]).with_timezone("UTC")),
            Arc::new(
                TimestampMicrosecondArray::from(vec![t0 + 600_000_000, t0, -far])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .expect("batch");
    let path = f.dir.path().join("far.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).expect("create"),
        schema,
        None,
    )
    .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let r = f.import_files(TableName::RxFills, &[path], 1).await;
    assert_eq!(
        (r.status, r.rejected, r.version),
        (Status::Rejected, 2, None)
    );
    let got: Vec<_> = r
        .errors
        .iter()
        .map(|e| (e.record, e.column.as_deref(), e.reason.as_str()))
        .collect();
    let reason =
        "instant out of range (years 1678 to 2261); expected an RFC 3339 timestamp with offset";
    assert_eq!(
        got,
        vec![
            (Some(2), Some("received_at"), reason),
            (Some(3), Some("filled_at"), reason)
        ],
        "{:?}",
        r.errors
    );
    assert_eq!(f.count("rx_fills").await, 0);

    let r = f
        .import_csv(
            TableName::RxFills,
            "far",
            &format!(
                "{FILLS_HEADER}1,0,1,local,2261-12-31T09:00:00-08:00,2261-12-31T23:59:59Z\n\
                 2,0,1,local,2024-03-01T09:00:00-08:00,2300-03-01T09:10:00-08:00\n"
            ),
        )
        .await;
    assert_eq!((r.status, r.rejected), (Status::Rejected, 1));
    assert_eq!(
        (r.errors[0].record, r.errors[0].column.as_deref()),
        (Some(2), Some("filled_at"))
    );
    assert_eq!(r.errors[0].reason, reason);
}

/// One unusual record per advisory: (table, file contents, record, column, words of the
/// warning). The contract allows each of them, so the file lands with one warning.
fn unusual_files() -> Vec<(TableName, String, u64, &'static str, &'static str)> {
    use TableName::*;
    let fills = |odd: &str| format!("{FILLS_HEADER}{GOOD_FILL}{odd}\n");
    let shifts = |odd: &str| format!("{PAYROLL_HEADER}{GOOD_SHIFT}{odd}\n");
    let lines = |odd: &str| format!("{POS_HEADER}{GOOD_LINE}{odd}\n");
    vec![
        (
            RxFills,
            fills("101,100,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "fill_no",
            "out of range 0..=99",
        ),
        (
            RxFills,
            fills("102,0,1,local,1989-12-31T10:00:00-08:00,1990-01-01T10:00:00-08:00"),
            2,
            "received_at",
            "year outside 1990..=2100",
        ),
        (
            RxFills,
            fills("103,0,1,local,2024-01-01T09:00:00-08:00,2024-03-01T09:10:00-08:00"),
            2,
            "filled_at",
            "more than 720 hours after received_at",
        ),
        (
            Payroll,
            shifts("10,1,2024-03-02T08:00:00-08:00,REG,2024-03-03T14:00:00-08:00,8.00,492.00"),
            2,
            "shift_end",
            "more than 24 hours after shift_start",
        ),
        // A night over the spring-forward change: 22:00 PST to 06:00 PDT lasts 7 hours and is
        // paid the 8 hours of the wall clock.
        (
            Payroll,
            shifts("10,1,2024-03-09T22:00:00-08:00,REG,2024-03-10T06:00:00-07:00,8.00,492.00"),
            2,
            "hours",
            "exceeds the shift's elapsed length of 7.00 hours",
        ),
        // A call-in minimum: 2 hours on the clock, 4 paid.
        (
            Payroll,
            shifts("11,1,2024-03-04T08:00:00-08:00,OT,2024-03-04T10:00:00-08:00,4.00,132.00"),
            2,
            "hours",
            "exceeds the shift's elapsed length of 2.00 hours",
        ),
        (
            Pos,
            lines("5001,2,1,2024-03-01T10:00:00-08:00,otc,1,-4.99,"),
            2,
            "amount",
            "sign differs from quantity",
        ),
        (
            Pos,
            lines("5002,2,1,2024-03-01T10:00:00-08:00,otc,0,4.99,"),
            2,
            "quantity",
            "is 0 (a return is negative)",
        ),
        (
            Pos,
            lines("5003,2,1,2024-03-01T10:00:00-08:00,otc,1,4.99,100"),
            2,
            "rx_id",
            "expected only when kind is rx",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn unusual_values_the_contract_allows_land_with_a_counted_and_logged_warning() {
    let f = Fixture::new().await;
    let cases = unusual_files();
    for (i, (table, csv, record, column, reason)) in cases.iter().enumerate() {
        let name = format!("odd{i}");
        let r = f.import_csv(*table, &name, csv).await;
        assert_eq!(r.status, Status::Accepted, "case {i}: {:?}", r.errors);
        assert_eq!((r.rejected, r.total_errors), (0, 0), "case {i}");
        assert_eq!(r.total_warnings, 1, "case {i}: {:?}", r.warnings);
        let w = &r.warnings[0];
        assert!(w.file.ends_with(&format!("{name}.csv")), "case {i}: {w}");
        assert_eq!(w.record, Some(*record), "case {i}: {w}");
        assert_eq!(w.column.as_deref(), Some(*column), "case {i}: {w}");
        assert!(
            w.reason.contains(reason),
            "case {i}: '{}' lacks '{reason}'",
            w.reason
        );
    }
    // Every unusual record landed beside the good one of its file.
    assert_eq!(f.count("payroll").await, 4);
    assert_eq!(f.count("pos").await, 4);
    assert_eq!(f.count("rx_fills").await, 4);
    let logged = f
        .query(
            "SELECT sum(warnings), sum(rejected) FROM system.import_log \
             WHERE file LIKE '%odd%' AND status = 'accepted'",
        )
        .await;
    assert_eq!(rows(&logged), vec![format!("{}|0", cases.len())]);
    let kept = f
        .query(
            "SELECT record, column_name, severity FROM system.import_errors \
             WHERE file LIKE '%odd4.csv'",
        )
        .await;
    assert_eq!(rows(&kept), vec!["2|hours|warning".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn text_ids_are_kept_exactly_leading_zeros_and_case_included() {
    let f = Fixture::new().await;
    let pharmacies = format!(
        "{PHARMACIES}00423,2024-01-01,,Acquired,LA-1,SA-1,West,,9,84\n\
         423,2024-01-01,,Other,LA-1,SA-1,West,,9,84\n\
         RX101,2024-01-01,,Own,LA-2,SA-1,West,,9,84\n\
         rx101,2024-01-01,,Lower,LA-2,SA-1,West,,9,84\n"
    );
    let r = f
        .import_csv(TableName::Pharmacies, "labels", &pharmacies)
        .await;
    assert_eq!(
        (r.status, r.inserted),
        (Status::Accepted, 4),
        "{:?}",
        r.errors
    );
    let fills = format!(
        "{FILLS_HEADER}\
         RX-000288000001,0,00423,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n\
         000288000001,0,423,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n\
         550e8400-e29b-41d4-a716-446655440000,1,rx101,crp,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n"
    );
    let r = f.import_csv(TableName::RxFills, "labels", &fills).await;
    assert_eq!(
        (r.status, r.inserted),
        (Status::Accepted, 3),
        "{:?}",
        r.errors
    );
    let got = f
        .query("SELECT pharmacy_id, rx_id FROM rx_fills ORDER BY pharmacy_id")
        .await;
    assert_eq!(
        rows(&got),
        vec![
            "00423|RX-000288000001",
            "423|000288000001",
            "rx101|550e8400-e29b-41d4-a716-446655440000",
        ]
    );
    // A label that differs only by its zeros or case is another pharmacy: not on file.
    let r = f
        .import_csv(
            TableName::RxFills,
            "unknown",
            &format!(
                "{FILLS_HEADER}7,0,0423,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n"
            ),
        )
        .await;
    assert_eq!(r.status, Status::Rejected);
    assert_eq!(r.errors[0].column.as_deref(), Some("pharmacy_id"));
    assert!(
        r.errors[0]
            .reason
            .contains("no such pharmacies.pharmacy_id")
    );
}

#[test]
fn bad_file_cases_cover_every_rule_kind() {
    // Guard: the table above names every check and row rule kind in the contract.
    let reasons: Vec<&str> = bad_files().iter().map(|c| c.4).collect();
    for needle in [
        "must be one of",
        "out of range",
        "not an IANA",
        "social security",
        "not a metric",
        "percentage",
        "must be after",
        "on or after",
        "longer than 64 bytes",
        "control character",
        "no such",
        "duplicate key",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no case for '{needle}'"
        );
    }
    // ... and the table of unusual values every advisory kind.
    let reasons: Vec<&str> = unusual_files().iter().map(|c| c.4).collect();
    for needle in [
        "out of range",
        "year outside",
        "more than",
        "exceeds",
        "sign differs",
        "is 0",
        "expected only when",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no unusual case for '{needle}'"
        );
    }
}

/// A file of several read blocks (4 MiB each, parsed on every core): record numbers, a
/// duplicate key across blocks and `--start-at` inside a later block are those of the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_of_many_blocks_keeps_file_record_numbers() {
    let f = Fixture::new().await;
    let records: u64 = 200_000; // about 16 MiB: four blocks
    // Every third channel is quoted: the blocks are cut by the quote-aware path.
    let line_of = |n: u64| {
        let rx = 1_000_000 + n;
        let channel = if n.is_multiple_of(3) {
            "\"local\""
        } else {
            "crp"
        };
        format!("{rx},0,1,{channel},2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n")
    };
    let mut csv = String::from(FILLS_HEADER);
    for n in 1..=records {
        csv.push_str(&line_of(n));
    }
    let mut bad = csv.clone();
    // Record 130001 repeats record 7's key; record 190000 has an unknown channel.
    bad = bad.replacen(&line_of(130_001), &line_of(7).replace("crp", "\"crp\""), 1);
    bad = bad.replacen(
        &line_of(190_000),
        &line_of(190_000).replace("crp", "fax"),
        1,
    );
    let p = f.write("many.csv", &bad);
    let r = f
        .import_files(TableName::RxFills, std::slice::from_ref(&p), 1)
        .await;
    assert_eq!(
        (r.status, r.records_read, r.rejected),
        (Status::Rejected, records, 2)
    );
    let found: Vec<(Option<u64>, Option<String>)> = r
        .errors
        .iter()
        .map(|e| (e.record, e.column.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Some(130_001), Some("(rx_id, fill_no)".to_string())),
            (Some(190_000), Some("channel".to_string())),
        ],
        "{:?}",
        r.errors
    );
    assert!(
        r.errors[0].reason.contains("at record 7"),
        "{}",
        r.errors[0].reason
    );
    assert_eq!(f.version(TableName::RxFills).await, None);

    // Starting after the duplicate and before the bad channel: only the channel is wrong.
    let r = f
        .import_files(TableName::RxFills, std::slice::from_ref(&p), 150_000)
        .await;
    assert_eq!(
        (r.records_read, r.errors.len(), r.errors[0].record),
        (records - 150_000 + 1, 1, Some(190_000))
    );

    let p = f.write("good.csv", &csv);
    let r = f.import_files(TableName::RxFills, &[p], 1).await;
    assert_eq!((r.status, r.inserted), (Status::Accepted, records));
    assert_eq!(
        rows(
            &f.query("SELECT count(*), count(DISTINCT rx_id), count(*) FILTER (WHERE channel = 'local') FROM rx_fills")
                .await
        ),
        vec![format!(
            "{records}|{records}|{}",
            records / 3
        )]
    );
}

/// One generated POS line: transaction `txn`, line `line`; `variant` changes its amount.
fn pos_line(txn: u64, line: u64, variant: u64) -> String {
    let pharmacy = 1 + txn % 2;
    let (month, day, hour, minute) = (1 + txn % 3, 1 + txn % 28, 8 + txn % 10, txn % 60);
    let quantity = 1 + (txn + line) % 3;
    let (kind, rx) = if line == 1 {
        ("rx", format!("{}", 900_000 + txn))
    } else {
        ("otc", String::new())
    };
    format!(
        "T{txn:07},{line},{pharmacy},2024-0{month}-{day:02}T{hour:02}:{minute:02}:00-08:00,{kind},\
         {quantity},{}.{:02},{rx}\n",
        quantity * (3 + variant),
        txn % 100
    )
}

fn pos_file(lines: impl Iterator<Item = (u64, u64, u64)>) -> String {
    let mut csv = String::from(POS_HEADER);
    for (txn, line, variant) in lines {
        csv.push_str(&pos_line(txn, line, variant));
    }
    csv
}

async fn import_with_budget(
    f: &Fixture,
    table: TableName,
    files: &[PathBuf],
    memory_limit: Option<usize>,
) -> ImportReport {
    let options = ImportOptions {
        memory_limit,
        ..ImportOptions::default()
    };
    import(&f.warehouse, table, files, &options, &NoProgress)
        .await
        .expect("import runs")
}

/// A memory budget far below the files (the smallest one, 4 MiB, against 32 MiB of CSV)
/// stages the records on disk and spills the key checks, the dedup of a later file's records,
/// the match against the table and the sorted write: the same reports, the same errors with
/// the same record numbers, and the same table as an import without a budget.
#[tokio::test(flavor = "multi_thread")]
async fn a_memory_budget_far_below_the_files_gives_the_same_table_as_none() {
    let unbounded = Fixture::new().await;
    let bounded = Fixture::new().await;
    let budget = Some(8 << 20);

    // a: 200,000 transactions of 3 lines; b, in the same run, changes every tenth
    // transaction's first line and adds 5,000; c, in the next run, changes every seventh
    // transaction's second line, repeats every thirteenth's third line as it is, and adds 10,000.
    let a = pos_file((0..200_000).flat_map(|t| (1..=3).map(move |l| (t, l, 0))));
    assert!(a.len() > 7 * rxcube_ingest::MIN_MEMORY_LIMIT, "{}", a.len());
    let b = pos_file(
        (0..200_000)
            .step_by(10)
            .map(|t| (t, 1, 1))
            .chain((200_000..205_000).map(|t| (t, 1, 0))),
    );
    let c = pos_file(
        (0..200_000)
            .step_by(7)
            .map(|t| (t, 2, 2))
            .chain((0..200_000).step_by(13).map(|t| (t, 3, 0)))
            .chain((300_000..310_000).map(|t| (t, 2, 0))),
    );
    // d repeats a's record 7 at record 60,001 and its record 9 at record 60,002 and 60,003.
    let mut d = pos_file((0..20_000).flat_map(|t| (1..=3).map(move |l| (t, l, 0))));
    d.push_str(&pos_line(2, 1, 5));
    d.push_str(&pos_line(2, 3, 0));
    d.push_str(&pos_line(2, 3, 0));
    let [a, b, c, d] = [("a", a), ("b", b), ("c", c), ("d", d)]
        .map(|(n, csv)| unbounded.write(&format!("budget-{n}.csv"), &csv));

    let summary = |r: &ImportReport| {
        (
            r.status,
            r.records_read,
            r.inserted,
            r.replaced,
            r.unchanged,
            r.superseded,
            r.version,
        )
    };
    // The duplicates are named exactly, budget or not, and nothing is posted.
    for f in [&unbounded, &bounded] {
        let limit = if std::ptr::eq(f, &bounded) {
            budget
        } else {
            None
        };
        let r = import_with_budget(f, TableName::Pos, std::slice::from_ref(&d), limit).await;
        let found: Vec<(Option<u64>, Option<String>, String)> = r
            .errors
            .iter()
            .map(|e| (e.record, e.value.clone(), e.reason.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    Some(60_001),
                    Some("(T0000002, 1)".to_string()),
                    "duplicate key: the same key is at record 7".to_string()
                ),
                (
                    Some(60_002),
                    Some("(T0000002, 3)".to_string()),
                    "duplicate key: the same key is at record 9".to_string()
                ),
                (
                    Some(60_003),
                    Some("(T0000002, 3)".to_string()),
                    "duplicate key: the same key is at record 9".to_string()
                ),
            ],
            "limit {limit:?}"
        );
        assert_eq!(
            (r.status, r.rejected, r.version),
            (Status::Rejected, 3, None)
        );
    }

    let first = import_with_budget(&unbounded, TableName::Pos, &[a.clone(), b.clone()], None).await;
    assert_eq!(
        summary(&first),
        (Status::Accepted, 625_000, 605_000, 0, 0, 20_000, Some(0))
    );
    let r = import_with_budget(&bounded, TableName::Pos, &[a.clone(), b.clone()], budget).await;
    assert_eq!(summary(&r), summary(&first));

    let second =
        import_with_budget(&unbounded, TableName::Pos, std::slice::from_ref(&c), None).await;
    assert_eq!(
        summary(&second),
        (Status::Accepted, 53_957, 10_000, 28_572, 15_385, 0, Some(1))
    );
    let r = import_with_budget(&bounded, TableName::Pos, std::slice::from_ref(&c), budget).await;
    assert_eq!(summary(&r), summary(&second));
    // Re-importing changes nothing, within the budget too.
    let r = import_with_budget(&bounded, TableName::Pos, std::slice::from_ref(&c), budget).await;
    assert_eq!(
        (r.inserted, r.replaced, r.unchanged, r.version),
        (0, 0, 53_957, None)
    );

    let all = "SELECT txn_id, line_no, pharmacy_id, CAST(sold_at AS VARCHAR), kind, quantity, \
               CAST(amount AS VARCHAR), rx_id, CAST(event_month AS VARCHAR) FROM pos \
               ORDER BY txn_id, line_no";
    let expected = rows(&unbounded.query(all).await);
    assert_eq!(expected.len(), 615_000);
    let got = rows(&bounded.query(all).await);
    assert!(got == expected, "the tables differ");
    // A later file's record won, and the next run's replacement landed.
    let spot = "SELECT CAST(amount AS VARCHAR) FROM pos WHERE txn_id = 'T0000070' ORDER BY line_no";
    assert_eq!(
        rows(&bounded.query(spot).await),
        vec!["12.70", "5.70", "6.70"]
    );

    // A few records (the continuous-ingestion case) are matched against the row groups whose
    // txn_id Bloom filters may hold their keys, and every row group of the table has one.
    // T0000070 line 1 (b's variant 1) changes, T0000071 line 1 is as on file, T0999999 is new.
    let few = pos_file([(70, 1, 9), (71, 1, 0), (999_999, 1, 0)].into_iter());
    let few = unbounded.write("budget-few.csv", &few);
    for (f, limit) in [(&unbounded, None), (&bounded, budget)] {
        let r = import_with_budget(f, TableName::Pos, std::slice::from_ref(&few), limit).await;
        assert_eq!(
            (r.status, r.inserted, r.replaced, r.unchanged, r.version),
            (Status::Accepted, 1, 1, 1, Some(2)),
            "limit {limit:?}"
        );
    }
    assert_eq!(
        rows(&bounded.query(spot).await),
        vec!["36.70", "5.70", "6.70"]
    );
    let got = rows(&bounded.query(all).await);
    assert_eq!(got.len(), 615_001);
    assert!(
        got == rows(&unbounded.query(all).await),
        "the tables differ"
    );
    let (mut files, mut groups) = (0, 0);
    for path in parquet_files(&bounded.dir.path().join("w").join("pos")) {
        let reader = parquet::file::reader::SerializedFileReader::new(
            std::fs::File::open(&path).expect("open"),
        )
        .expect("a Parquet file");
        use parquet::file::reader::FileReader;
        for g in reader.metadata().row_groups() {
            let txn_id = g
                .columns()
                .iter()
                .find(|c| c.column_path().string() == "txn_id")
                .expect("txn_id");
            assert!(
                txn_id.bloom_filter_offset().is_some(),
                "{}: a row group without a txn_id Bloom filter",
                path.display()
            );
            groups += 1;
        }
        files += 1;
    }
    assert!(
        files > 0 && groups > files,
        "{files} files, {groups} row groups"
    );
}

/// Every `.parquet` file under `dir`.
fn parquet_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            found.push(path);
        }
    }
    found
}

/// Continuous ingestion commits one small import after another (`rxcube import --follow`):
/// Delta writes a checkpoint at every 100th commit (version 99, the versions counting from 0),
/// so a reader replays at most 100 log entries, and a reader after the checkpoint still sees
/// every fill.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_committed_to_a_hundred_times_is_checkpointed_and_reads_every_row() {
    let f = Fixture::new().await;
    let mut imports = 0;
    while f.version(TableName::RxFills).await.unwrap_or(-1) < 99 {
        let csv = format!(
            "{FILLS_HEADER}C{imports:03},0,1,local,2024-03-01T09:00:00-08:00,2024-03-01T09:10:00-08:00\n"
        );
        let r = f.import_csv(TableName::RxFills, "one", &csv).await;
        assert_eq!(
            (r.status, r.inserted),
            (Status::Accepted, 1),
            "{:?}",
            r.errors
        );
        imports += 1;
        assert!(imports <= 100, "a hundred imports made no version 99");
    }
    let log = f.dir.path().join("w").join("rx_fills").join("_delta_log");
    assert!(
        log.join("00000000000000000099.checkpoint.parquet")
            .is_file(),
        "no checkpoint at version 99 in {}",
        log.display()
    );
    let last = std::fs::read_to_string(log.join("_last_checkpoint")).expect("_last_checkpoint");
    assert!(last.contains("\"version\":99"), "{last}");
    assert_eq!(f.count("rx_fills").await, imports);
}
