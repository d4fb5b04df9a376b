//! Insert-or-replace by natural key, in one atomic Delta commit.
//!
//! Each incoming record is classified against the table by its natural key: *new* (no record
//! with that key), *unchanged* (the same values are already on file) or *replacing* (the key is
//! on file with other values). Only new and replacing records are written, so re-importing a
//! file commits nothing. With no replacements the records are appended; otherwise a Delta MERGE
//! swaps them in. Either way it is a single commit: a reader sees the table before or after, and
//! a writer killed at any moment leaves the last committed version intact.
//!
//! **Memory.** Everything runs in the caller's session and streams: its memory pool bounds what
//! the sorts and joins hold, and they spill to its disk manager. The classification is a join
//! of the source with the table: a hash join (the source is the build side) when the source
//! fits in a third of the pool, otherwise a sort-merge join, which spills. Its stream is counted
//! as it goes and the new and replacing records are written to a spill file of the session,
//! which the append or the MERGE then reads. A first import streams the sorted source straight
//! into the write.
//!
//! **Few records** (at most [`LOOKUP_ROWS`], the continuous-ingestion case) are matched only
//! against the table's rows whose first key column holds one of their values: the scan reads the
//! row groups whose Bloom filters may hold them ([`crate::layout`]), not the whole table.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int8Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::cmp::neq;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::execution::options::ArrowReadOptions;
use datafusion::execution::spill_file::SpillFile;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::functions::expr_fn::date_trunc;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, cast, col, lit};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use deltalake::arrow::datatypes::{DataType, TimeUnit};
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use futures::StreamExt;
use rxcube_model::TableDef;
use rxcube_model::contract::PARTITION_COLUMN;
use serde_json::Value;
use tracing::{info, info_span};

use crate::layout::{bloom_key, writer_properties};
use crate::{Result, Warehouse, WarehouseError};

/// Records to insert or replace in one contract table.
#[derive(Debug)]
pub struct UpsertRequest {
    pub def: &'static TableDef,
    /// The records: exactly the table's contract columns, keys unique.
    pub source: DataFrame,
    /// At most this many records, if known: `Some(0)` commits nothing without reading the
    /// source.
    pub source_rows: Option<u64>,
    /// About how many bytes the records take in memory, if known: a source that fits in the
    /// session's memory pool is matched against the table with a hash join.
    pub source_bytes: Option<u64>,
    /// Recorded in the commit's `commitInfo` (e.g. the import run id), for tracing a version
    /// back to what produced it.
    pub commit_metadata: Vec<(String, Value)>,
    /// Awaited after the records are matched to the table and before the commit (a test hook:
    /// it lines up concurrent imports, or stops one at that moment).
    pub before_commit: Option<Hook>,
}

/// An async callback of a test hook.
#[derive(Clone)]
pub struct Hook(pub Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

impl Hook {
    async fn call(hook: &Option<Hook>) {
        if let Some(h) = hook {
            (h.0)().await;
        }
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    pub inserted: u64,
    pub replaced: u64,
    pub unchanged: u64,
    /// The table version committed, or `None` when nothing changed and nothing was committed.
    pub version: Option<i64>,
}

const SOURCE: &str = "source";
const TARGET: &str = "target";
const STATUS: &str = "__status";
const INSERT: i8 = 0;
const SAME: i8 = 1;
const REPLACE: i8 = 2;

/// A source of at most this many records is matched against the table's rows that share its
/// key values only (see the module's documentation).
pub const LOOKUP_ROWS: u64 = 4096;

impl Warehouse {
    /// Inserts new records and replaces records whose natural key is on file, in one commit.
    ///
    /// Runs in `ctx`, whose memory pool and disk manager bound what it holds: a source far
    /// larger than memory streams through.
    ///
    /// The records are matched against one version of the table, and the commit must be the
    /// next version: if another writer committed in between, nothing is committed and the
    /// result is [`WarehouseError::Conflict`] (Delta would let two appends of the same new keys
    /// both commit, leaving the key twice); the caller may match and commit again.
    pub async fn upsert(&self, ctx: &SessionContext, req: UpsertRequest) -> Result<UpsertOutcome> {
        let def = req.def;
        let _span = info_span!("upsert", table = def.name).entered();
        let query_err = |source| WarehouseError::Query {
            table: def.name.to_string(),
            source,
        };
        if req.source_rows == Some(0) {
            return Ok(UpsertOutcome::default());
        }
        let source = with_partition_column(def, req.source).map_err(query_err)?;
        // No rebase onto a newer version: the records were matched against this one.
        let commit_with = |counts: &[(&str, u64)]| {
            let mut metadata = req.commit_metadata.clone();
            metadata.extend(
                counts
                    .iter()
                    .map(|(k, v)| (format!("rxcube.{k}"), (*v).into())),
            );
            CommitProperties::default()
                .with_metadata(metadata)
                .with_max_retries(0)
        };

        let Some(table) = self.load(def).await? else {
            // First import: everything is new; the write creates the table.
            let table = self.handle(def.name)?;
            let state = ctx.state();
            Hook::call(&req.before_commit).await;
            let (table, rows) = self
                .append(def, table, &state, source, commit_with(&[]), true)
                .await?;
            return Ok(UpsertOutcome {
                inserted: rows,
                version: table.version().map(|v| v as i64),
                ..Default::default()
            });
        };

        let state = join_state(ctx, req.source_bytes);
        let lookup = key_lookup(def, &source, req.source_rows)
            .await
            .map_err(query_err)?;
        let classified = classify(&state, def, &table, source, lookup)
            .await
            .map_err(query_err)?;
        let mut outcome = UpsertOutcome {
            inserted: classified.inserted,
            replaced: classified.replaced,
            unchanged: classified.unchanged,
            version: None,
        };
        let Some(changed_file) = classified.changed else {
            return Ok(outcome);
        };
        let path = changed_file
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let schema = classified.schema;
        let changed = ctx
            .read_arrow(
                &path,
                ArrowReadOptions {
                    schema: Some(&schema),
                    file_extension: "",
                    ..Default::default()
                },
            )
            .await
            .map_err(query_err)?;
        Hook::call(&req.before_commit).await;
        // The counts go into the commit: a run killed before its log row is logged from them.
        let commit = commit_with(&[
            ("inserted", classified.inserted),
            ("replaced", classified.replaced),
            ("unchanged", classified.unchanged),
        ]);
        let table = if classified.replaced == 0 {
            self.append(def, table, &ctx.state(), changed, commit, false)
                .await?
                .0
        } else {
            let state = join_state(ctx, Some(classified.changed_bytes));
            self.merge(def, table, state, changed, commit).await?
        };
        drop(changed_file);
        outcome.version = table.version().map(|v| v as i64);
        Ok(outcome)
    }

    /// Appends `source`, sorted as the files store it; returns the table and the rows added.
    async fn append(
        &self,
        def: &'static TableDef,
        table: DeltaTable,
        state: &SessionState,
        source: DataFrame,
        commit: CommitProperties,
        create: bool,
    ) -> Result<(DeltaTable, u64)> {
        let delta_err = |source| self.commit_err(def.name, source);
        let sorted = sort_for_layout(def, source).map_err(|source| WarehouseError::Query {
            table: def.name.to_string(),
            source,
        })?;
        let mut write = table
            .write(Vec::new())
            .with_input_plan(sorted.logical_plan().clone())
            .with_session_state(Arc::new(delta_state(state)))
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(writer_properties(def))
            .with_commit_properties(commit);
        if create {
            write = write
                .with_partition_columns(def.partition_columns())
                .with_table_name(def.name)
                .with_description(def.doc);
        }
        let table = write.await.map_err(delta_err)?;
        let rows = added_rows(&table).await.map_err(delta_err)?;
        Ok((table, rows))
    }

    async fn merge(
        &self,
        def: &'static TableDef,
        table: DeltaTable,
        state: SessionState,
        source: DataFrame,
        commit: CommitProperties,
    ) -> Result<DeltaTable> {
        let delta_err = |source| self.commit_err(def.name, source);
        let on = def
            .key
            .iter()
            .map(|k| qualified(TARGET, k).eq(qualified(SOURCE, k)))
            .reduce(Expr::and)
            .unwrap_or_else(|| lit(false));
        let columns: Vec<&str> = stored_columns(def);
        let (table, _metrics) = table
            .merge(source, on)
            .with_session_state(Arc::new(state))
            .with_source_alias(SOURCE)
            .with_target_alias(TARGET)
            .with_writer_properties(writer_properties(def))
            .with_commit_properties(commit)
            .when_matched_update(|u| {
                columns
                    .iter()
                    .fold(u, |u, c| u.update(*c, qualified(SOURCE, c)))
            })
            .map_err(delta_err)?
            .when_not_matched_insert(|i| {
                columns
                    .iter()
                    .fold(i, |i, c| i.set(*c, qualified(SOURCE, c)))
            })
            .map_err(delta_err)?
            .await
            .map_err(delta_err)?;
        Ok(table)
    }
}

impl Warehouse {
    /// A Delta error of a commit to `table`: a conflict with another writer, or other.
    pub(crate) fn commit_err(
        &self,
        table: &str,
        source: deltalake::DeltaTableError,
    ) -> WarehouseError {
        if crate::error::is_commit_conflict(&source) {
            WarehouseError::Conflict {
                table: table.to_string(),
            }
        } else {
            WarehouseError::Delta {
                table: table.to_string(),
                url: self.table_url(table).to_string(),
                source,
            }
        }
    }
}

/// `state` with delta-rs's query planner, which a write's plan needs (it counts the rows
/// written with a node of its own).
fn delta_state(state: &SessionState) -> SessionState {
    SessionStateBuilder::new_from_existing(state.clone())
        .with_query_planner(DeltaPlanner::new())
        .build()
}

/// The rows the last commit of `table` (a write) added, from its operation metrics.
async fn added_rows(table: &DeltaTable) -> deltalake::DeltaResult<u64> {
    let mut history = table.history(Some(1));
    let mut rows = 0;
    if let Some(info) = history.next().await {
        rows = info?
            .info
            .get("operationMetrics")
            .and_then(|m| m.get("num_added_rows"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
    }
    Ok(rows)
}

/// The session state for matching a source of about `source_bytes` against a table: a hash
/// join with the source as its build side when the source fits in a third of the memory pool
/// (or the pool is unbounded), a sort-merge join, which spills, otherwise.
fn join_state(ctx: &SessionContext, source_bytes: Option<u64>) -> SessionState {
    let mut state = ctx.state();
    let hash = match state.runtime_env().memory_pool.memory_limit() {
        MemoryLimit::Finite(pool) => {
            source_bytes.is_some_and(|b| b.saturating_mul(3) <= pool as u64)
        }
        MemoryLimit::Infinite | MemoryLimit::Unknown => true,
    };
    let options = state.config_mut().options_mut();
    options.optimizer.prefer_hash_join = hash;
    // The build side stays the source (the left input), whatever the statistics say.
    options.optimizer.join_reordering = !hash;
    info!(
        hash_join = hash,
        source_bytes, "matching the records to the table"
    );
    state
}

fn qualified(relation: &str, column: &str) -> Expr {
    Expr::Column(Column::new(Some(relation), column))
}

fn stored_columns(def: &TableDef) -> Vec<&'static str> {
    let mut cols: Vec<&'static str> = def.columns.iter().map(|c| c.name).collect();
    cols.extend(def.partition_columns());
    cols
}

/// Adds the partition column: the first day of the event's UTC month.
fn with_partition_column(
    def: &TableDef,
    source: DataFrame,
) -> datafusion::error::Result<DataFrame> {
    match def.event_time {
        // Instants are UTC: truncating them as zone-less timestamps gives the UTC month
        // without a time-zone lookup per row.
        Some(event_time) => source.with_column(
            PARTITION_COLUMN,
            cast(
                date_trunc(
                    lit("month"),
                    cast(
                        col(Column::from_name(event_time)),
                        DataType::Timestamp(TimeUnit::Microsecond, None),
                    ),
                ),
                DataType::Date32,
            ),
        ),
        None => Ok(source),
    }
}

/// Orders records as the files store them: by partition, event time, then key.
fn sort_for_layout(def: &TableDef, df: DataFrame) -> datafusion::error::Result<DataFrame> {
    let mut order: Vec<&str> = def.partition_columns();
    order.extend(def.sort_columns());
    df.sort(
        order
            .into_iter()
            .map(|c| col(Column::from_name(c)).sort(true, false))
            .collect(),
    )
}

struct Classified {
    schema: deltalake::arrow::datatypes::SchemaRef,
    /// The new and replacing records, in an Arrow IPC stream file of the session's disk manager;
    /// `None` when there are none.
    changed: Option<Arc<dyn SpillFile>>,
    /// Their size in memory.
    changed_bytes: u64,
    inserted: u64,
    replaced: u64,
    unchanged: u64,
}

/// For a source of at most [`LOOKUP_ROWS`] records of a table with a Bloom-filtered key column:
/// `target.<key> IN (the source's values)`, which the table's scan prunes its row groups with.
async fn key_lookup(
    def: &TableDef,
    source: &DataFrame,
    rows: Option<u64>,
) -> datafusion::error::Result<Option<Expr>> {
    let Some(key) = bloom_key(def) else {
        return Ok(None);
    };
    if rows.is_none_or(|n| n > LOOKUP_ROWS) {
        return Ok(None);
    }
    let batches = source
        .clone()
        .select(vec![col(Column::from_name(key))])?
        .distinct()?
        .collect()
        .await?;
    let mut values = Vec::new();
    for batch in &batches {
        let column = batch.column(0);
        for i in (0..column.len()).filter(|i| column.is_valid(*i)) {
            values.push(lit(ScalarValue::try_from_array(column, i)?));
        }
    }
    Ok(Some(
        col(Column::new(Some(TARGET), key)).in_list(values, false),
    ))
}

/// Joins the incoming records to the table on the natural key and sorts them into new,
/// replacing and unchanged, streaming: counts them all, and writes the new and replacing ones
/// to a spill file. `lookup` narrows the table's rows to those that can match.
async fn classify(
    state: &SessionState,
    def: &TableDef,
    table: &DeltaTable,
    source: DataFrame,
    lookup: Option<Expr>,
) -> datafusion::error::Result<Classified> {
    table
        .update_datafusion_session(state)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let provider = table.table_provider().await?;
    let columns: Vec<&str> = def.columns.iter().map(|c| c.name).collect();
    // The table's strings come as views of whole Parquet pages, which a memory pool counts in
    // full for every batch that points into them: cast to the records' own types, which copies
    // each batch's strings out, so a bounded pool counts what the join really holds.
    let source_schema = source.schema().clone();
    let mut scan = datafusion::logical_expr::LogicalPlanBuilder::scan(
        TARGET,
        datafusion::datasource::provider_as_source(provider),
        None,
    )?;
    if let Some(lookup) = lookup {
        scan = scan.filter(lookup)?;
    }
    let target = DataFrame::new(state.clone(), scan.build()?).select(
        columns
            .iter()
            .map(|c| {
                let column = col(Column::new(Some(TARGET), *c));
                let column = match source_schema.field_with_unqualified_name(c) {
                    Ok(field) => cast(column, field.data_type().clone()),
                    Err(_) => column,
                };
                column.alias(format!("{TARGET}__{c}"))
            })
            .chain(std::iter::once(lit(true).alias("__on_file")))
            .collect::<Vec<_>>(),
    )?;
    let left_keys: Vec<String> = def.key.iter().map(|k| (*k).to_string()).collect();
    let right_keys: Vec<String> = def.key.iter().map(|k| format!("{TARGET}__{k}")).collect();
    let same = columns
        .iter()
        .map(|c| {
            Expr::BinaryExpr(BinaryExpr::new(
                Box::new(col(Column::from_name(*c))),
                Operator::IsNotDistinctFrom,
                Box::new(col(Column::from_name(format!("{TARGET}__{c}")))),
            ))
        })
        .reduce(Expr::and)
        .unwrap_or_else(|| lit(true));
    let status = datafusion::logical_expr::when(col("__on_file").is_null(), lit(INSERT))
        .when(same, lit(SAME))
        .otherwise(lit(REPLACE))?;
    let mut keep: Vec<Expr> = stored_columns(def)
        .into_iter()
        .map(|c| col(Column::from_name(c)))
        .collect();
    keep.push(status.alias(STATUS));
    let joined = source
        .join(
            target,
            datafusion::common::JoinType::Left,
            &left_keys.iter().map(String::as_str).collect::<Vec<_>>(),
            &right_keys.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        )?
        .select(keep)?;
    let plan = state.create_physical_plan(joined.logical_plan()).await?;
    let stored = plan.schema().fields().len() - 1;
    let schema = Arc::new(plan.schema().project(&(0..stored).collect::<Vec<_>>())?);
    let mut stream = execute_stream(plan, state.task_ctx())?;

    let mut out = Classified {
        schema: schema.clone(),
        changed: None,
        changed_bytes: 0,
        inserted: 0,
        replaced: 0,
        unchanged: 0,
    };
    // The IPC stream format, read back batch by batch (an IPC file split across partitions is
    // read into memory whole).
    let mut writer: Option<StreamWriter<std::io::BufWriter<std::fs::File>>> = None;
    let same = Int8Array::new_scalar(SAME);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let codes = batch
            .column(stored)
            .as_any()
            .downcast_ref::<Int8Array>()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal("status is not Int8".into())
            })?;
        for code in codes.values() {
            match *code {
                INSERT => out.inserted += 1,
                SAME => out.unchanged += 1,
                _ => out.replaced += 1,
            }
        }
        let keep = neq(codes, &same)?;
        if keep.true_count() == 0 {
            continue;
        }
        let changed = filter_record_batch(
            &RecordBatch::try_new(schema.clone(), batch.columns()[..stored].to_vec())?,
            &keep,
        )?;
        out.changed_bytes += changed.get_array_memory_size() as u64;
        let w = match &mut writer {
            Some(w) => w,
            None => {
                let file = state
                    .runtime_env()
                    .disk_manager
                    .create_tmp_file("changed records")?;
                let path = file.path().ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(
                        "the session's spill files are not local files".into(),
                    )
                })?;
                let handle = std::fs::File::create(path)?;
                out.changed = Some(file);
                writer.insert(StreamWriter::try_new(
                    std::io::BufWriter::with_capacity(1 << 20, handle),
                    &schema,
                )?)
            }
        };
        w.write(&changed)?;
    }
    if let Some(mut w) = writer {
        w.finish()?;
    }
    info!(
        inserted = out.inserted,
        replaced = out.replaced,
        unchanged = out.unchanged,
        "records matched to the table"
    );
    Ok(out)
}
