//! The import utility: two passes over the input, one commit.
//!
//! **Pass 1** reads every file, checks every record against the contract (types, domains,
//! ranges, time order, references, duplicate keys within a file) and stages the typed records:
//! in memory while they fit the import's memory budget, in an Arrow IPC stream file of its spill
//! directory beyond it ([`crate::spool`], [`crate::budget`]). CSV files are cut into blocks
//! that are parsed and checked on every core ([`crate::blocks`]). If it found any error,
//! nothing is posted: the run is logged as rejected with every error. **Pass 2** streams the
//! staged records into insert-or-replace by natural key in one atomic Delta commit
//! ([`Warehouse::upsert`]); a later file's record replaces an earlier file's record with the
//! same key. The exact key checks and the posting run in a DataFusion session bounded by the
//! budget, whose sorts and aggregates spill, so peak memory does not grow with the files.
//! Either way the run is appended to the import log (`system.import_log`,
//! `system.import_errors`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use rxcube_model::{TableDef, TableName};
use rxcube_warehouse::catalog::{new_session, register_contract_tables};
use rxcube_warehouse::runs::RUN_KEY;
use rxcube_warehouse::system::{ImportErrorEntry, ImportLogEntry};
use rxcube_warehouse::{Hook, UpsertRequest, Warehouse, WarehouseError};
use tracing::{info, info_span};

use crate::blocks::{Block, Splitter, ordered_parallel};
use crate::budget::Budget;
use crate::error::{IngestError, RecordError, Result};
use crate::keys::KeyHashes;
use crate::rules::{ReferenceSets, check_batch};
use crate::source::{Chunk, Source};
use crate::spool::{FILE_COLUMN, RECORD_COLUMN, Spool, StagedRecords, staged_schema};

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// 1-based record to start at: earlier records are skipped (after fixing a file).
    pub start_at: u64,
    /// Errors kept in full (reported and logged); beyond it they are only counted.
    pub max_errors_kept: usize,
    /// The memory budget in bytes (`None`: unbounded, everything is held in memory). Checked
    /// records beyond a share of it are staged on disk, and the key checks and the posting
    /// spill there, so peak memory stays near it however large the files are
    /// ([`crate::DEFAULT_MEMORY_LIMIT`] by default; at least [`crate::MIN_MEMORY_LIMIT`]).
    pub memory_limit: Option<usize>,
    /// How many times pass 2 matches the records to the table and commits when another
    /// import commits to the table first ([`POSTING_ATTEMPTS`] by default).
    pub posting_attempts: u32,
    /// A test hook, awaited at named moments of the run: `before-commit-N` (attempt N of the
    /// commit, after the records are matched to the table), `after-commit` (the table commit
    /// is made; the log row is not) and `before-log` (before the run is appended to the
    /// import log). Tests use it to line up concurrent imports or to kill one
    /// at that moment.
    pub pause: Option<Pause>,
    /// The metrics a target may name: the cube definition's metrics, as the CLI passes them
    /// (a metric added to `cube.toml` takes targets). `None`: the built-in cube's
    /// ([`rxcube_model::domain::is_targetable_metric`]).
    pub target_metrics: Option<Vec<String>>,
}

/// Pass 2's attempts by default: a run that loses the race to commit twice in a row to other
/// imports gives up, says so and is logged as failed.
pub const POSTING_ATTEMPTS: u32 = 3;

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            start_at: 1,
            max_errors_kept: 10_000,
            memory_limit: Some(crate::budget::DEFAULT_MEMORY_LIMIT),
            posting_attempts: POSTING_ATTEMPTS,
            pause: None,
            target_metrics: None,
        }
    }
}

/// An async test hook, called with the name of the moment ([`ImportOptions::pause`]).
#[derive(Clone)]
pub struct Pause(pub Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, ()> + Send + Sync>);

impl std::fmt::Debug for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pause")
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
    /// Unusual values flagged by the contract's advisories: counted, never a rejection.
    pub total_warnings: u64,
    /// The first warnings, in file and record order.
    pub warnings: Vec<RecordError>,
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
    // Held until the run ends; first, what killed runs left is repaired when none runs.
    let _guard = warehouse.begin_import().await;

    // The tables this one's references point to, and only those: each load replays a log.
    let ctx = new_session();
    let mut referenced: Vec<TableName> = Vec::new();
    for r in def.references {
        if !referenced.contains(&r.table) {
            referenced.push(r.table);
        }
    }
    register_contract_tables(&ctx, warehouse, referenced).await?;
    let mut refs = load_references(&ctx, def).await?;
    refs.target_metrics = options.target_metrics.clone();

    // Pass 1: read and check everything, stage the well-formed records.
    let budget = Budget::new(options.memory_limit)?;
    progress.phase("validating");
    let (mut pass1, staged) = tokio::task::block_in_place(|| {
        validate(def, files, &names, options, &refs, &budget, progress)
    })?;
    let (staged_rows, staged_bytes) = (staged.rows(), staged.bytes());
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        records = pass1.records_read,
        errors = pass1.errors.total,
        maybe_duplicates = pass1.maybe_duplicates,
        maybe_superseded = pass1.maybe_superseded,
        staged_bytes,
        spilled = staged.spilled(),
        "pass 1 read"
    );

    // Key hashes are exact enough to clear a file of duplicates; a shared hash is checked
    // exactly, by key, with the records' numbers.
    let staged_ctx = budget.ctx();
    staged
        .register(staged_ctx, "staged")
        .await
        .map_err(|e| query_err(def, e))?;
    if pass1.maybe_duplicates || pass1.maybe_superseded {
        progress.phase("checking keys");
        if pass1.maybe_duplicates {
            find_duplicate_keys(staged_ctx, def, &names, &mut pass1).await?;
        }
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "keys checked"
        );
    }

    let mut report = ImportReport {
        run_id: run_id.clone(),
        table,
        files: names.clone(),
        status: Status::Rejected,
        records_read: pass1.records_read,
        rejected: pass1.rejected.iter().map(RejectedRecords::len).sum(),
        total_errors: pass1.errors.total,
        errors: std::mem::take(&mut pass1.errors.kept),
        total_warnings: pass1.warnings.total,
        warnings: std::mem::take(&mut pass1.warnings.kept),
        inserted: 0,
        replaced: 0,
        unchanged: 0,
        superseded: 0,
        version: None,
        elapsed: Duration::ZERO,
    };
    for list in [&mut report.errors, &mut report.warnings] {
        list.sort_by_key(|e| (names.iter().position(|n| *n == e.file), e.record));
    }

    if report.total_errors == 0 {
        // Pass 2: post. The records are matched against one version of the table and
        // committed as the next; when another import commits first, nothing is committed and
        // they are matched again against the new version.
        progress.phase("posting");
        let mut attempt = 1;
        let posted = loop {
            let before_commit = options.pause.clone().map(|p| {
                let point = format!("before-commit-{attempt}");
                Hook(Arc::new(move || (p.0)(point.clone())))
            });
            let result = async {
                let source = posting_source(staged_ctx, def, pass1.maybe_superseded).await?;
                let request = UpsertRequest {
                    def,
                    source,
                    source_rows: Some(staged_rows),
                    source_bytes: Some(staged_bytes),
                    // The run's summary, from which a run killed before its log row is
                    // logged by the next import (rxcube_warehouse::runs).
                    commit_metadata: vec![
                        (RUN_KEY.into(), run_id.clone().into()),
                        ("rxcube.files".into(), names.clone().into()),
                        ("rxcube.started_at".into(), started_at.into()),
                        ("rxcube.start_at".into(), options.start_at.into()),
                        ("rxcube.records_read".into(), report.records_read.into()),
                        ("rxcube.warnings".into(), report.total_warnings.into()),
                    ],
                    before_commit,
                };
                Ok::<_, IngestError>(warehouse.upsert(staged_ctx, request).await?)
            }
            .await;
            match result {
                Err(IngestError::Warehouse(WarehouseError::Conflict { .. }))
                    if attempt < options.posting_attempts =>
                {
                    info!(
                        attempt,
                        "another import committed to the table first; posting again"
                    );
                    attempt += 1;
                }
                other => break other,
            }
        };
        let outcome = match posted {
            Ok(outcome) => {
                if let Some(p) = &options.pause {
                    (p.0)("after-commit".into()).await;
                }
                outcome
            }
            Err(e) => {
                // Nothing of this run was committed: it is logged as failed, with why.
                let e = match e {
                    IngestError::Warehouse(WarehouseError::Conflict { .. }) => {
                        IngestError::Conflict {
                            table: def.name.to_string(),
                            run_id: run_id.clone(),
                        }
                    }
                    other => other,
                };
                report.elapsed = started.elapsed();
                let entry = log_entry(&report, options, started_at, "failed", Some(e.to_string()));
                if let Err(log) = warehouse.append_import_log(&[entry], &[]).await {
                    tracing::warn!(error = %log, "the failed run could not be logged");
                }
                return Err(e);
            }
        };
        report.status = Status::Accepted;
        report.superseded = staged_rows
            - (outcome.inserted + outcome.replaced + outcome.unchanged).min(staged_rows);
        report.inserted = outcome.inserted;
        report.replaced = outcome.replaced;
        report.unchanged = outcome.unchanged;
        report.version = outcome.version;
    }
    report.elapsed = started.elapsed();

    let message = (report.total_errors > report.errors.len() as u64).then(|| {
        format!(
            "{} errors, the first {} logged",
            report.total_errors,
            report.errors.len()
        )
    });
    let entry = log_entry(
        &report,
        options,
        started_at,
        report.status.as_str(),
        message,
    );
    let errors: Vec<ImportErrorEntry> = report
        .errors
        .iter()
        .map(|e| (e, "error"))
        .chain(report.warnings.iter().map(|w| (w, "warning")))
        .map(|(e, severity)| ImportErrorEntry {
            run_id: run_id.clone(),
            table_name: def.name.to_string(),
            file: e.file.clone(),
            record: e.record,
            column: e.column.clone(),
            value: e.value.clone(),
            reason: e.reason.clone(),
            severity,
        })
        .collect();
    if let Some(p) = &options.pause {
        (p.0)("before-log".into()).await;
    }
    warehouse.append_import_log(&[entry], &errors).await?;
    Ok(report)
}

/// The import log's row for the run of `report`.
fn log_entry(
    report: &ImportReport,
    options: &ImportOptions,
    started_at: i64,
    status: &str,
    message: Option<String>,
) -> ImportLogEntry {
    ImportLogEntry {
        run_id: report.run_id.clone(),
        started_at,
        finished_at: chrono::Utc::now().timestamp_micros(),
        table_name: report.table.def().name.to_string(),
        file: report.files.join(", "),
        status: status.to_string(),
        start_at: options.start_at,
        records_read: report.records_read,
        inserted: report.inserted,
        replaced: report.replaced,
        unchanged: report.unchanged,
        rejected: report.rejected,
        warnings: report.total_warnings,
        table_version: report.version,
        message,
    }
}

fn query_err(def: &TableDef, source: datafusion::error::DataFusionError) -> IngestError {
    IngestError::Query {
        table: def.name.to_string(),
        source,
    }
}

async fn run_sql(ctx: &SessionContext, def: &TableDef, sql: &str) -> Result<Vec<RecordBatch>> {
    ctx.sql(sql)
        .await
        .map_err(|e| query_err(def, e))?
        .collect()
        .await
        .map_err(|e| query_err(def, e))
}

/// The values on file that this table's references may point to.
async fn load_references(ctx: &SessionContext, def: &TableDef) -> Result<ReferenceSets> {
    let mut refs = ReferenceSets::default();
    for r in def.references {
        let sql = format!(
            "SELECT DISTINCT CAST({} AS VARCHAR) FROM {}",
            r.target_column, r.table
        );
        let batches = run_sql(ctx, def, &sql).await?;
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
        refs.sets.push((*r, values));
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

/// What pass 1 found: errors, warnings, and whether keys may repeat. (The well-formed
/// records themselves go to a [`Spool`].)
struct Pass1 {
    records_read: u64,
    errors: ErrorLog,
    warnings: ErrorLog,
    rejected: Vec<RejectedRecords>,
    /// The schema records are staged with: the contract's, and their provenance.
    staged_schema: SchemaRef,
    /// The hash of every kept record's key.
    keys: KeyHashes,
    /// Two records of one file share a key hash: the exact duplicate check must run.
    maybe_duplicates: bool,
    /// Records of different files share a key hash: the later file's record must win.
    maybe_superseded: bool,
}

impl Pass1 {
    fn record(&mut self, file: usize, e: RecordError) {
        if let Some(r) = e.record {
            self.rejected[file].insert(r);
        }
        self.errors.push(e);
    }

    /// Takes one checked chunk, in file order: its errors here, its records to `spool`.
    fn keep(&mut self, spool: &mut Spool, file: usize, chunk: Staged) -> Result<()> {
        for e in chunk.errors {
            self.record(file, e);
        }
        for w in chunk.warnings {
            self.warnings.push(w);
        }
        self.records_read += chunk.records;
        let Some(batch) = chunk.batch else {
            return Ok(());
        };
        for h in chunk.hashes {
            self.keys.push(h, file).map_err(|source| IngestError::Io {
                file: self.keys.spill_path(),
                source,
            })?;
        }
        let rows = batch.num_rows();
        let first = chunk.first_record;
        let records: UInt64Array = match &chunk.kept {
            None => (0..rows as u64).map(|i| first + i).collect(),
            Some(k) => k.iter().map(|i| first + u64::from(*i)).collect(),
        };
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(UInt32Array::from(vec![file as u32; rows])));
        columns.push(Arc::new(records));
        let batch =
            RecordBatch::try_new(self.staged_schema.clone(), columns).map_err(|source| {
                IngestError::Internal {
                    context: "staging records".into(),
                    source,
                }
            })?;
        spool.push(batch)
    }
}

/// One chunk after its checks: the well-formed records, the errors, and the key hashes.
struct Staged {
    batch: Option<RecordBatch>,
    first_record: u64,
    kept: Option<Vec<u32>>,
    /// Records read (well-formed or not).
    records: u64,
    errors: Vec<RecordError>,
    warnings: Vec<RecordError>,
    hashes: Vec<u64>,
}

impl Staged {
    /// Renumbers a chunk read from a block whose first record is `offset + 1`, and drops the
    /// records before `start_at`.
    fn shift(mut self, offset: u64, start_at: u64) -> Self {
        self.first_record += offset;
        for e in self.errors.iter_mut().chain(&mut self.warnings) {
            if let Some(r) = &mut e.record {
                *r += offset;
            }
        }
        let last = self.first_record + self.records;
        if start_at <= self.first_record {
            return self;
        }
        self.errors
            .retain(|e| e.record.is_none_or(|r| r >= start_at));
        self.warnings
            .retain(|e| e.record.is_none_or(|r| r >= start_at));
        self.records = last.saturating_sub(start_at);
        let Some(batch) = &self.batch else {
            return self;
        };
        // Kept rows are in record order: drop those before `start_at`.
        let skip = (start_at - self.first_record) as usize;
        let drop_rows = match &self.kept {
            None => skip.min(batch.num_rows()),
            Some(k) => k.partition_point(|i| (*i as usize) < skip),
        };
        let rows = batch.num_rows() - drop_rows;
        self.batch = (rows > 0).then(|| batch.slice(drop_rows, rows));
        self.hashes.drain(..drop_rows);
        match &mut self.kept {
            None => {
                self.kept = Some((skip as u32..(skip + rows) as u32).collect());
            }
            Some(k) => {
                k.drain(..drop_rows);
            }
        }
        self
    }
}

/// Checks one chunk and keeps its well-formed records in the contract schema.
fn stage(
    def: &TableDef,
    schema: &SchemaRef,
    name: &str,
    chunk: Chunk,
    refs: &ReferenceSets,
) -> Result<Staged> {
    let internal = |source| IngestError::Internal {
        context: format!("staging the records of {name}"),
        source,
    };
    let rows = chunk.batch.num_rows();
    let mut errors = chunk.errors;
    let mut warnings = Vec::new();
    check_batch(
        def,
        name,
        &chunk.batch,
        chunk.first_record,
        refs,
        &mut errors,
        &mut warnings,
    );
    warnings.sort_by_key(|e| e.record);
    errors.sort_by_key(|e| e.record);
    let mut bad_rows = vec![false; rows];
    for e in &errors {
        if let Some(r) = e.record.and_then(|r| r.checked_sub(chunk.first_record))
            && let Some(slot) = bad_rows.get_mut(r as usize)
        {
            *slot = true;
        }
    }
    // Only well-formed records are kept; the others are already rejected.
    let (batch, kept) = if errors.is_empty() {
        (chunk.batch, None)
    } else {
        let keep = BooleanArray::from_iter(bad_rows.iter().map(|b| Some(!b)));
        let kept: Vec<u32> = (0..rows as u32)
            .filter(|i| !bad_rows[*i as usize])
            .collect();
        (
            filter_record_batch(&chunk.batch, &keep).map_err(internal)?,
            Some(kept),
        )
    };
    let n = batch.num_rows();
    let batch = (n > 0)
        .then(|| RecordBatch::try_new(schema.clone(), batch.columns().to_vec()))
        .transpose()
        .map_err(internal)?;
    let mut hashes = vec![0u64; n];
    if let Some(b) = &batch {
        let keys: Vec<ArrayRef> = def
            .key
            .iter()
            .filter_map(|k| def.column_index(k).map(|i| b.column(i).clone()))
            .collect();
        create_hashes(&keys, &RandomState::with_seed(0x5eed), &mut hashes)
            .map_err(|e| query_err(def, e))?;
    }
    Ok(Staged {
        batch,
        first_record: chunk.first_record,
        kept,
        records: rows as u64,
        errors,
        warnings,
        hashes,
    })
}

/// Pass 1: reads every file, checks every record, stages the well-formed records.
fn validate(
    def: &'static TableDef,
    files: &[PathBuf],
    names: &[String],
    options: &ImportOptions,
    refs: &ReferenceSets,
    budget: &Budget,
    progress: &dyn Progress,
) -> Result<(Pass1, StagedRecords)> {
    let schema = def.schema();
    let staged = staged_schema(&schema);
    let mut spool = Spool::new(
        staged.clone(),
        budget.dir(),
        budget.spool_bytes(),
        budget.batch_rows(),
    );
    let mut pass = Pass1 {
        records_read: 0,
        errors: ErrorLog {
            kept: Vec::new(),
            total: 0,
            limit: options.max_errors_kept,
        },
        warnings: ErrorLog {
            kept: Vec::new(),
            total: 0,
            limit: options.max_errors_kept,
        },
        rejected: files.iter().map(|_| RejectedRecords::default()).collect(),
        staged_schema: staged,
        keys: KeyHashes::new(
            budget.key_hash_bytes(),
            budget.is_bounded().then(|| budget.dir()),
        ),
        maybe_duplicates: false,
        maybe_superseded: false,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (f, (path, name)) in files.iter().zip(names).enumerate() {
        let _span = info_span!("file", file = %name).entered();
        let source = match Source::open(def, path, options.start_at) {
            Ok(s) => s,
            Err(e) => {
                pass.record(f, e);
                continue;
            }
        };
        progress.file_started(name, source.total_bytes());
        match source {
            Source::Parquet(mut source) => {
                while let Some(chunk) = source.next_chunk() {
                    let bytes = chunk.bytes_read;
                    let staged = stage(def, &schema, name, chunk, refs)?;
                    pass.keep(&mut spool, f, staged)?;
                    progress.advanced(bytes, pass.records_read);
                }
            }
            Source::Csv(mut csv) => {
                use std::io::{Seek, SeekFrom};
                csv.handle
                    .seek(SeekFrom::Start(csv.data_start))
                    .map_err(|source| IngestError::Io {
                        file: name.clone(),
                        source,
                    })?;
                let layout = &csv.layout;
                let blocks = Splitter::new(&csv.handle, csv.data_start);
                let mut offset = 0u64;
                let parse = |block: std::io::Result<Block>| -> Result<(Vec<Staged>, u64, u64)> {
                    let block = block.map_err(|source| IngestError::Io {
                        file: name.clone(),
                        source,
                    })?;
                    let mut reader = csv::ReaderBuilder::new()
                        .has_headers(false)
                        .flexible(true)
                        .from_reader(&block.data[..]);
                    let mut next_record = 1;
                    let mut staged = Vec::new();
                    while let Some((batch, first_record, errors)) =
                        layout.read_chunk(&mut reader, &mut next_record)
                    {
                        let chunk = Chunk {
                            batch,
                            first_record,
                            errors,
                            bytes_read: block.end_offset,
                        };
                        staged.push(stage(def, &schema, name, chunk, refs)?);
                    }
                    Ok((staged, next_record - 1, block.end_offset))
                };
                let total = csv.total_bytes.saturating_sub(csv.data_start);
                ordered_parallel(blocks, threads, parse, |result| {
                    let (staged, records, end_offset) = result?;
                    if offset == 0 && records > 0 {
                        // Size the key set once, from the first block's record length.
                        let per_record = (end_offset - csv.data_start) as f64 / records as f64;
                        pass.keys.reserve((total as f64 / per_record) as usize);
                    }
                    for s in staged {
                        pass.keep(&mut spool, f, s.shift(offset, options.start_at))?;
                    }
                    offset += records;
                    progress.advanced(end_offset, pass.records_read);
                    Ok::<_, IngestError>(())
                })?;
            }
        }
    }
    let spill_path = pass.keys.spill_path();
    let overlaps = std::mem::take(&mut pass.keys)
        .overlaps(threads)
        .map_err(|source| IngestError::Io {
            file: spill_path,
            source,
        })?;
    pass.maybe_duplicates = overlaps.within_file;
    pass.maybe_superseded = overlaps.across_files;
    info!(staged = spool.rows(), "records staged");
    Ok((pass, spool.finish()?))
}

/// Reports every record whose natural key appeared earlier in the same file.
///
/// A running `first_value` over the records of a key in record order names, for every record
/// after the first, the record that first had the key. It sorts (and spills when the budget is
/// full) instead of holding a hash table of every key, and its result streams.
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
    let shown = def
        .key
        .iter()
        .map(|k| format!("CAST({k} AS VARCHAR)"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {FILE_COLUMN}, {RECORD_COLUMN}, first_record, concat_ws(', ', {shown}) AS key_value \
         FROM (SELECT {FILE_COLUMN}, {RECORD_COLUMN}, {keys}, first_value({RECORD_COLUMN}) OVER \
               (PARTITION BY {FILE_COLUMN}, {keys} ORDER BY {RECORD_COLUMN}) AS first_record \
               FROM staged WHERE {not_null}) \
         WHERE {RECORD_COLUMN} <> first_record"
    );
    let mut stream = ctx
        .sql(&sql)
        .await
        .map_err(|e| query_err(def, e))?
        .execute_stream()
        .await
        .map_err(|e| query_err(def, e))?;
    let column = if def.key.len() == 1 {
        def.key[0].to_string()
    } else {
        format!("({keys})")
    };
    while let Some(b) = stream.next().await {
        let b = b.map_err(|e| query_err(def, e))?;
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

/// The records to post, one per key (the last file wins when files of the run share keys): a
/// plan over the staged records, run by the upsert in the budget's session.
async fn posting_source(
    ctx: &SessionContext,
    def: &TableDef,
    superseded: bool,
) -> Result<datafusion::prelude::DataFrame> {
    let cols = def
        .columns
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ");
    let sql = if superseded {
        // A window over the records of a key, sorted by file: it sorts and spills, where a
        // hash of every key would not fit the budget.
        let keys = def.key.join(", ");
        format!(
            "SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {keys} \
             ORDER BY {FILE_COLUMN} DESC) AS rn FROM staged) WHERE rn = 1"
        )
    } else {
        format!("SELECT {cols} FROM staged")
    };
    ctx.sql(&sql).await.map_err(|e| query_err(def, e))
}
