//! The import utility: two passes over the input, one commit.
//!
//! **Pass 1** reads every file, checks every record against the contract (types, domains,
//! ranges, time order, references, duplicate keys within a file) and spools the typed records
//! to a local Arrow IPC file. If it found any error, nothing is posted: the run is logged as
//! rejected with every error. **Pass 2** posts the spooled records with insert-or-replace by
//! natural key in one atomic Delta commit ([`Warehouse::upsert`]); a later file's record
//! replaces an earlier file's record with the same key. Either way the run is appended to the
//! import log (`system.import_log`, `system.import_errors`).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::FileWriter;
use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::prelude::SessionContext;
use rxcube_model::{TableDef, TableName};
use rxcube_warehouse::catalog::{new_session, register_tables};
use rxcube_warehouse::system::{ImportErrorEntry, ImportLogEntry};
use rxcube_warehouse::{UpsertRequest, Warehouse};
use tracing::{info, info_span};

use crate::error::{IngestError, RecordError, Result};
use crate::rules::{ReferenceSets, check_batch};
use crate::source::Source;

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// 1-based record to start at: earlier records are skipped (after fixing a file).
    pub start_at: u64,
    /// Errors kept in full (reported and logged); beyond it they are only counted.
    pub max_errors_kept: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            start_at: 1,
            max_errors_kept: 10_000,
        }
    }
}

/// Receives progress of a running import (a terminal progress bar, a log).
pub trait Progress: Send + Sync {
    /// A phase begins: `validating`, `checking keys`, `posting`.
    fn phase(&self, _name: &str) {}
    /// A file begins; `bytes` is its size.
    fn file_started(&self, _file: &str, _bytes: u64) {}
    /// Reading the current file reached `bytes`; `records` read so far in this import.
    fn advanced(&self, _bytes: u64, _records: u64) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Whether the run posted its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
        }
    }
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub run_id: String,
    pub table: TableName,
    pub files: Vec<String>,
    pub status: Status,
    pub records_read: u64,
    /// Records with at least one error.
    pub rejected: u64,
    /// Every error found, counted.
    pub total_errors: u64,
    /// The first errors, in file and record order ([`ImportOptions::max_errors_kept`]).
    pub errors: Vec<RecordError>,
    pub inserted: u64,
    pub replaced: u64,
    pub unchanged: u64,
    /// Records replaced by a later file of the same run before posting.
    pub superseded: u64,
    /// The table version committed; `None` if nothing was committed.
    pub version: Option<i64>,
    pub elapsed: Duration,
}

impl ImportReport {
    /// Records per second over the whole run.
    pub fn rows_per_second(&self) -> f64 {
        self.records_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

const FILE_COLUMN: &str = "_file";
const RECORD_COLUMN: &str = "_record";

/// Imports `files` into `table` of `warehouse`: validate everything, then post everything or
/// nothing.
pub async fn import(
    warehouse: &Warehouse,
    table: TableName,
    files: &[PathBuf],
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportReport> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().timestamp_micros();
    let def = table.def();
    let _span = info_span!("import", table = def.name).entered();
    if files.is_empty() {
        return Err(IngestError::Usage("no files to import".into()));
    }
    if options.start_at > 1 && files.len() > 1 {
        return Err(IngestError::Usage(
            "--start-at applies to one file; import the other files separately".into(),
        ));
    }
    let run_id = uuid::Uuid::new_v4().to_string();
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();

    let ctx = new_session();
    register_tables(&ctx, warehouse).await?;
    let refs = load_references(&ctx, def).await?;

    // Pass 1: read, check, spool.
    progress.phase("validating");
    let spool_dir = tempfile::Builder::new()
        .prefix("rxcube-import-")
        .tempdir()
        .map_err(|source| IngestError::Io {
            file: std::env::temp_dir().display().to_string(),
            source,
        })?;
    let spool_path = spool_dir.path().join("records.arrow");
    let mut pass1 = tokio::task::block_in_place(|| {
        validate_and_spool(def, files, &names, options, &refs, &spool_path, progress)
    })?;
    info!(
        records = pass1.records_read,
        errors = pass1.errors.total,
        "pass 1 read"
    );

    progress.phase("checking keys");
    let spool_ctx = SessionContext::new();
    spool_ctx
        .register_arrow("spool", path_str(&spool_path)?, ArrowReadOptions::default())
        .await
        .map_err(|source| query_err(def, source))?;
    find_duplicate_keys(&spool_ctx, def, &names, &mut pass1).await?;

    let mut report = ImportReport {
        run_id: run_id.clone(),
        table,
        files: names.clone(),
        status: Status::Rejected,
        records_read: pass1.records_read,
        rejected: pass1.rejected.iter().map(RejectedRecords::len).sum(),
        total_errors: pass1.errors.total,
        errors: std::mem::take(&mut pass1.errors.kept),
        inserted: 0,
        replaced: 0,
        unchanged: 0,
        superseded: 0,
        version: None,
        elapsed: Duration::ZERO,
    };
    report
        .errors
        .sort_by_key(|e| (names.iter().position(|n| *n == e.file), e.record));

    if report.total_errors == 0 {
        // Pass 2: post.
        progress.phase("posting");
        let source = posting_source(&spool_ctx, def, files.len()).await?;
        let rows = source
            .clone()
            .count()
            .await
            .map_err(|e| query_err(def, e))? as u64;
        report.superseded = report.records_read - rows;
        let outcome = warehouse
            .upsert(
                &new_session(),
                UpsertRequest {
                    def,
                    source,
                    commit_metadata: vec![
                        ("rxcube.import_run".into(), run_id.clone().into()),
                        ("rxcube.files".into(), names.clone().into()),
                    ],
                },
            )
            .await?;
        report.status = Status::Accepted;
        report.inserted = outcome.inserted;
        report.replaced = outcome.replaced;
        report.unchanged = outcome.unchanged;
        report.version = outcome.version;
    }
    report.elapsed = started.elapsed();

    let entry = ImportLogEntry {
        run_id: run_id.clone(),
        started_at,
        finished_at: chrono::Utc::now().timestamp_micros(),
        table_name: def.name.to_string(),
        file: names.join(", "),
        status: report.status.as_str().to_string(),
        start_at: options.start_at,
        records_read: report.records_read,
        inserted: report.inserted,
        replaced: report.replaced,
        unchanged: report.unchanged,
        rejected: report.rejected,
        table_version: report.version,
        message: (report.total_errors > report.errors.len() as u64).then(|| {
            format!(
                "{} errors, the first {} logged",
                report.total_errors,
                report.errors.len()
            )
        }),
    };
    let errors: Vec<ImportErrorEntry> = report
        .errors
        .iter()
        .map(|e| ImportErrorEntry {
            run_id: run_id.clone(),
            table_name: def.name.to_string(),
            file: e.file.clone(),
            record: e.record,
            column: e.column.clone(),
            value: e.value.clone(),
            reason: e.reason.clone(),
        })
        .collect();
    warehouse.append_import_log(&[entry], &errors).await?;
    Ok(report)
}

fn query_err(def: &TableDef, source: datafusion::error::DataFusionError) -> IngestError {
    IngestError::Query {
        table: def.name.to_string(),
        source,
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| IngestError::Usage(format!("path is not UTF-8: {}", p.display())))
}

/// The values on file that this table's references may point to.
async fn load_references(ctx: &SessionContext, def: &TableDef) -> Result<ReferenceSets> {
    let mut refs = ReferenceSets::default();
    for r in def.references {
        let sql = format!(
            "SELECT DISTINCT CAST({} AS VARCHAR) FROM {}",
            r.target_column, r.table
        );
        let batches = ctx
            .sql(&sql)
            .await
            .map_err(|e| query_err(def, e))?
            .collect()
            .await
            .map_err(|e| query_err(def, e))?;
        let mut values = HashSet::new();
        for b in &batches {
            let col = arrow::compute::cast(b.column(0), &DataType::Utf8)
                .map_err(|e| query_err(def, e.into()))?;
            let col = col.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                query_err(
                    def,
                    datafusion::error::DataFusionError::Internal("cast to Utf8".into()),
                )
            })?;
            values.extend(col.iter().flatten().map(str::to_string));
        }
        let ty = r
            .table
            .def()
            .column(r.target_column)
            .map(|c| c.ty.arrow_type());
        if matches!(ty, Some(DataType::Int32 | DataType::Int64)) {
            let ints = values
                .iter()
                .filter_map(|v| v.parse::<i64>().ok())
                .collect();
            refs.int_sets.push((*r, ints));
        } else {
            refs.sets.push((*r, values));
        }
    }
    Ok(refs)
}

/// Errors found so far: the first ones in full, all of them counted.
struct ErrorLog {
    kept: Vec<RecordError>,
    total: u64,
    limit: usize,
}

impl ErrorLog {
    fn push(&mut self, e: RecordError) {
        self.total += 1;
        if self.kept.len() < self.limit {
            self.kept.push(e);
        }
    }
}

/// Record numbers with an error, per file, as a bitset.
#[derive(Default)]
struct RejectedRecords {
    bits: Vec<u64>,
    count: u64,
}

impl RejectedRecords {
    fn insert(&mut self, record: u64) {
        let (w, b) = ((record / 64) as usize, record % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) == 0 {
            self.bits[w] |= 1 << b;
            self.count += 1;
        }
    }
    fn len(&self) -> u64 {
        self.count
    }
}

struct Pass1 {
    records_read: u64,
    errors: ErrorLog,
    rejected: Vec<RejectedRecords>,
}

impl Pass1 {
    fn record(&mut self, file: usize, e: RecordError) {
        if let Some(r) = e.record {
            self.rejected[file].insert(r);
        }
        self.errors.push(e);
    }
}

fn spool_schema(def: &TableDef) -> SchemaRef {
    let mut fields: Vec<Field> = def
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(FILE_COLUMN, DataType::UInt32, false));
    fields.push(Field::new(RECORD_COLUMN, DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

fn validate_and_spool(
    def: &'static TableDef,
    files: &[PathBuf],
    names: &[String],
    options: &ImportOptions,
    refs: &ReferenceSets,
    spool_path: &Path,
    progress: &dyn Progress,
) -> Result<Pass1> {
    let spool_err = |source| IngestError::Spool {
        file: spool_path.display().to_string(),
        source,
    };
    let schema = spool_schema(def);
    let spool = File::create(spool_path).map_err(|source| IngestError::Io {
        file: spool_path.display().to_string(),
        source,
    })?;
    let mut writer =
        FileWriter::try_new(std::io::BufWriter::with_capacity(1 << 20, spool), &schema)
            .map_err(spool_err)?;
    let mut pass = Pass1 {
        records_read: 0,
        errors: ErrorLog {
            kept: Vec::new(),
            total: 0,
            limit: options.max_errors_kept,
        },
        rejected: files.iter().map(|_| RejectedRecords::default()).collect(),
    };
    for (f, (path, name)) in files.iter().zip(names).enumerate() {
        let _span = info_span!("file", file = %name).entered();
        let mut source = match Source::open(def, path, options.start_at) {
            Ok(s) => s,
            Err(e) => {
                pass.record(f, e);
                continue;
            }
        };
        progress.file_started(name, source.total_bytes());
        let mut chunk_errors = Vec::new();
        while let Some(chunk) = source.next_chunk() {
            let rows = chunk.batch.num_rows();
            pass.records_read += rows as u64;
            chunk_errors.clear();
            chunk_errors.extend(chunk.errors);
            check_batch(
                def,
                name,
                &chunk.batch,
                chunk.first_record,
                refs,
                &mut chunk_errors,
            );
            chunk_errors.sort_by_key(|e| e.record);
            let bad_before = pass.errors.total;
            let mut bad_rows = vec![false; rows];
            for e in chunk_errors.drain(..) {
                if let Some(r) = e.record.and_then(|r| r.checked_sub(chunk.first_record))
                    && let Some(slot) = bad_rows.get_mut(r as usize)
                {
                    *slot = true;
                }
                pass.record(f, e);
            }
            // Only well-formed records are spooled; the others are already rejected.
            let batch = if pass.errors.total == bad_before {
                chunk.batch
            } else {
                let keep = BooleanArray::from_iter(bad_rows.iter().map(|b| Some(!b)));
                filter_record_batch(&chunk.batch, &keep).map_err(spool_err)?
            };
            let kept = batch.num_rows();
            if kept > 0 {
                let first = chunk.first_record;
                let records: Vec<u64> = bad_rows
                    .iter()
                    .enumerate()
                    .filter(|(_, bad)| !**bad)
                    .map(|(i, _)| first + i as u64)
                    .collect();
                let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                columns.push(Arc::new(UInt32Array::from(vec![f as u32; kept])));
                columns.push(Arc::new(UInt64Array::from(records)));
                let batch = RecordBatch::try_new(schema.clone(), columns).map_err(spool_err)?;
                writer.write(&batch).map_err(spool_err)?;
            }
            progress.advanced(chunk.bytes_read, pass.records_read);
        }
    }
    writer.finish().map_err(spool_err)?;
    Ok(pass)
}

/// Reports every record whose natural key appeared earlier in the same file.
async fn find_duplicate_keys(
    ctx: &SessionContext,
    def: &TableDef,
    names: &[String],
    pass: &mut Pass1,
) -> Result<()> {
    let keys = def.key.join(", ");
    let not_null = def
        .key
        .iter()
        .map(|k| format!("{k} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let on = def
        .key
        .iter()
        .map(|k| format!("s.{k} = d.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let shown = def
        .key
        .iter()
        .map(|k| format!("CAST(s.{k} AS VARCHAR)"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH d AS (SELECT {FILE_COLUMN}, {keys}, min({RECORD_COLUMN}) AS first_record \
           FROM spool WHERE {not_null} GROUP BY {FILE_COLUMN}, {keys} HAVING count(*) > 1) \
         SELECT s.{FILE_COLUMN}, s.{RECORD_COLUMN}, d.first_record, concat_ws(', ', {shown}) AS key_value \
         FROM spool s JOIN d ON s.{FILE_COLUMN} = d.{FILE_COLUMN} AND {on} \
         WHERE s.{RECORD_COLUMN} <> d.first_record"
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| query_err(def, e))?
        .collect()
        .await
        .map_err(|e| query_err(def, e))?;
    let column = if def.key.len() == 1 {
        def.key[0].to_string()
    } else {
        format!("({keys})")
    };
    for b in batches {
        let as_u64 = |i: usize| arrow::compute::cast(b.column(i), &DataType::UInt64);
        let (file, record, first) = match (as_u64(0), as_u64(1), as_u64(2)) {
            (Ok(a), Ok(r), Ok(f)) => (a, r, f),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => return Err(query_err(def, e.into())),
        };
        let value = arrow::compute::cast(b.column(3), &DataType::Utf8)
            .map_err(|e| query_err(def, e.into()))?;
        let downcast = |a: &ArrayRef| a.as_any().downcast_ref::<UInt64Array>().cloned();
        let (Some(file), Some(record), Some(first), Some(value)) = (
            downcast(&file),
            downcast(&record),
            downcast(&first),
            value.as_any().downcast_ref::<StringArray>().cloned(),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            let f = file.value(i) as usize;
            let key = if def.key.len() == 1 {
                value.value(i).to_string()
            } else {
                format!("({})", value.value(i))
            };
            pass.record(
                f,
                RecordError {
                    file: names.get(f).cloned().unwrap_or_default(),
                    record: Some(record.value(i)),
                    column: Some(column.clone()),
                    value: Some(key),
                    reason: format!(
                        "duplicate key: the same key is at record {}",
                        first.value(i)
                    ),
                },
            );
        }
    }
    Ok(())
}

/// The spooled records to post: the contract columns, one record per key (the last file wins).
async fn posting_source(
    ctx: &SessionContext,
    def: &TableDef,
    files: usize,
) -> Result<datafusion::prelude::DataFrame> {
    let cols = def
        .columns
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ");
    let sql = if files > 1 {
        let keys = def.key.join(", ");
        format!(
            "SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {keys} \
             ORDER BY {FILE_COLUMN} DESC) AS rn FROM spool) WHERE rn = 1"
        )
    } else {
        format!("SELECT {cols} FROM spool")
    };
    ctx.sql(&sql).await.map_err(|e| query_err(def, e))
}
