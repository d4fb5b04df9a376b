//! System tables kept in the warehouse beside the contract tables: the import log and the
//! audit log.
//!
//! `system.import_log` has one row per file per import run (accepted or rejected, with its
//! counts); `system.import_errors` one row per rejected record (and per warning kept); `system.audit_log` one row per
//! login, failed login, denied statement and query of the Flight SQL server. All are Delta
//! tables under `<root>/_rxcube/`, appended to, and queryable with SQL like any table.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::protocol::SaveMode;

use crate::{Result, Warehouse, WarehouseError};

/// A system table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemTable {
    ImportLog,
    ImportErrors,
    AuditLog,
}

impl SystemTable {
    pub const ALL: [SystemTable; 3] = [
        SystemTable::ImportLog,
        SystemTable::ImportErrors,
        SystemTable::AuditLog,
    ];

    /// The SQL name within the `system` schema.
    pub fn name(self) -> &'static str {
        match self {
            SystemTable::ImportLog => "import_log",
            SystemTable::ImportErrors => "import_errors",
            SystemTable::AuditLog => "audit_log",
        }
    }

    /// Where it is stored, relative to the warehouse root.
    pub fn location(self) -> &'static str {
        match self {
            SystemTable::ImportLog => "_rxcube/import_log",
            SystemTable::ImportErrors => "_rxcube/import_errors",
            SystemTable::AuditLog => "_rxcube/audit_log",
        }
    }

    pub fn schema(self) -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let fields = match self {
            SystemTable::ImportLog => vec![
                Field::new("run_id", DataType::Utf8, false),
                Field::new("started_at", ts.clone(), false),
                Field::new("finished_at", ts, false),
                Field::new("table_name", DataType::Utf8, false),
                Field::new("file", DataType::Utf8, false),
                Field::new("status", DataType::Utf8, false),
                Field::new("start_at", DataType::UInt64, false),
                Field::new("records_read", DataType::UInt64, false),
                Field::new("inserted", DataType::UInt64, false),
                Field::new("replaced", DataType::UInt64, false),
                Field::new("unchanged", DataType::UInt64, false),
                Field::new("rejected", DataType::UInt64, false),
                // Unusual values flagged by the contract's advisories (never a rejection).
                Field::new("warnings", DataType::UInt64, false),
                Field::new("table_version", DataType::Int64, true),
                Field::new("message", DataType::Utf8, true),
            ],
            SystemTable::ImportErrors => vec![
                Field::new("run_id", DataType::Utf8, false),
                Field::new("table_name", DataType::Utf8, false),
                Field::new("file", DataType::Utf8, false),
                Field::new("record", DataType::UInt64, true),
                Field::new("column_name", DataType::Utf8, true),
                Field::new("value", DataType::Utf8, true),
                Field::new("reason", DataType::Utf8, false),
                // error (the record was rejected) or warning (an advisory; the record landed)
                Field::new("severity", DataType::Utf8, false),
            ],
            SystemTable::AuditLog => vec![
                Field::new("at", ts, false),
                Field::new("user_name", DataType::Utf8, false),
                // login, login_failed, denied, query, error
                Field::new("event", DataType::Utf8, false),
                Field::new("client", DataType::Utf8, true),
                Field::new("sql", DataType::Utf8, true),
                Field::new("rows", DataType::Int64, true),
                Field::new("millis", DataType::Float64, true),
                Field::new("detail", DataType::Utf8, true),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

/// One file of one import run.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportLogEntry {
    pub run_id: String,
    /// Microseconds since the Unix epoch, UTC.
    pub started_at: i64,
    pub finished_at: i64,
    pub table_name: String,
    pub file: String,
    /// `accepted`, `rejected` (nothing posted: records were wrong) or `failed` (nothing
    /// posted: the posting failed, e.g. another import committed first; `message` says why).
    pub status: String,
    pub start_at: u64,
    pub records_read: u64,
    pub inserted: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub warnings: u64,
    pub table_version: Option<i64>,
    pub message: Option<String>,
}

/// One rejected record (or a file-level problem, with no record number).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportErrorEntry {
    pub run_id: String,
    pub table_name: String,
    pub file: String,
    pub record: Option<u64>,
    pub column: Option<String>,
    pub value: Option<String>,
    pub reason: String,
    /// `error` or `warning`.
    pub severity: &'static str,
}

impl Warehouse {
    /// Appends an import run's log entries and errors to the system tables.
    pub async fn append_import_log(
        &self,
        entries: &[ImportLogEntry],
        errors: &[ImportErrorEntry],
    ) -> Result<()> {
        if !errors.is_empty() {
            self.append_system(SystemTable::ImportErrors, errors_batch(errors))
                .await?;
        }
        if !entries.is_empty() {
            self.append_system(SystemTable::ImportLog, log_batch(entries))
                .await?;
        }
        Ok(())
    }

    /// Appends rows (of [`SystemTable::AuditLog`]'s schema) to the audit log: one commit.
    pub async fn append_audit(&self, batch: RecordBatch) -> Result<()> {
        self.append_system(SystemTable::AuditLog, Ok(batch)).await
    }

    /// Appends `batch` to a system table: one commit, made again (on the table's new version)
    /// when another writer committed first, as concurrent runs do. Appends never conflict with
    /// each other once the table exists; the first ones can race to create it.
    async fn append_system(
        &self,
        table: SystemTable,
        batch: std::result::Result<RecordBatch, arrow::error::ArrowError>,
    ) -> Result<()> {
        const ATTEMPTS: u32 = 6;
        let batch = batch.map_err(|e| WarehouseError::Query {
            table: table.name().into(),
            source: e.into(),
        })?;
        let mut attempt = 1;
        loop {
            // Through the loaded table when there is one: a plain append, not a create.
            let handle = match self.load_named(table.location()).await? {
                Some(t) => t,
                None => self.handle(table.location())?,
            };
            let result = handle
                .write(vec![batch.clone()])
                .with_save_mode(SaveMode::Append)
                .with_table_name(table.name())
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if attempt < ATTEMPTS && crate::error::is_commit_conflict(&e) => {
                    tracing::info!(
                        table = table.name(),
                        attempt,
                        "concurrent commit; appending again"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(
                        20 * u64::from(attempt) + u64::from(rand_jitter()),
                    ))
                    .await;
                    attempt += 1;
                }
                Err(source) if crate::error::is_commit_conflict(&source) => {
                    return Err(WarehouseError::Conflict {
                        table: format!("system.{}", table.name()),
                    });
                }
                Err(source) => {
                    return Err(WarehouseError::Delta {
                        table: table.name().into(),
                        url: self.table_url(table.location()).to_string(),
                        source,
                    });
                }
            }
        }
    }
}

/// A few milliseconds that differ between processes, so that racing appends spread out.
fn rand_jitter() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) % 30
}

fn utc(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn log_batch(e: &[ImportLogEntry]) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let u = |f: fn(&ImportLogEntry) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(e.iter().map(f)))
    };
    RecordBatch::try_new(
        SystemTable::ImportLog.schema(),
        vec![
            strings(e.iter().map(|x| x.run_id.as_str())),
            utc(e.iter().map(|x| x.started_at).collect()),
            utc(e.iter().map(|x| x.finished_at).collect()),
            strings(e.iter().map(|x| x.table_name.as_str())),
            strings(e.iter().map(|x| x.file.as_str())),
            strings(e.iter().map(|x| x.status.as_str())),
            u(|x| x.start_at),
            u(|x| x.records_read),
            u(|x| x.inserted),
            u(|x| x.replaced),
            u(|x| x.unchanged),
            u(|x| x.rejected),
            u(|x| x.warnings),
            Arc::new(Int64Array::from_iter(e.iter().map(|x| x.table_version))),
            Arc::new(StringArray::from_iter(
                e.iter().map(|x| x.message.as_deref()),
            )),
        ],
    )
}

fn errors_batch(
    e: &[ImportErrorEntry],
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    RecordBatch::try_new(
        SystemTable::ImportErrors.schema(),
        vec![
            strings(e.iter().map(|x| x.run_id.as_str())),
            strings(e.iter().map(|x| x.table_name.as_str())),
            strings(e.iter().map(|x| x.file.as_str())),
            Arc::new(UInt64Array::from_iter(e.iter().map(|x| x.record))),
            Arc::new(StringArray::from_iter(
                e.iter().map(|x| x.column.as_deref()),
            )),
            Arc::new(StringArray::from_iter(e.iter().map(|x| x.value.as_deref()))),
            strings(e.iter().map(|x| x.reason.as_str())),
            strings(e.iter().map(|x| x.severity)),
        ],
    )
}
