//! Insert-or-replace by natural key, in one atomic Delta commit.
//!
//! Each incoming record is classified against the table by its natural key: *new* (no record
//! with that key), *unchanged* (the same values are already on file) or *replacing* (the key is
//! on file with other values). Only new and replacing records are written, so re-importing a
//! file commits nothing. With no replacements the records are appended; otherwise a Delta MERGE
//! swaps them in. Either way it is a single commit: a reader sees the table before or after, and
//! a writer killed at any moment leaves the last committed version intact.

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::datasource::MemTable;
use datafusion::functions::expr_fn::date_trunc;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use deltalake::arrow::datatypes::{DataType, TimeUnit};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use rxcube_model::TableDef;
use rxcube_model::contract::PARTITION_COLUMN;
use serde_json::Value;
use tracing::info_span;

use crate::layout::writer_properties;
use crate::{Result, Warehouse, WarehouseError};

/// Records to insert or replace in one contract table.
#[derive(Debug)]
pub struct UpsertRequest {
    pub def: &'static TableDef,
    /// The records: exactly the table's contract columns, keys unique.
    pub source: DataFrame,
    /// Recorded in the commit's `commitInfo` (e.g. the import run id), for tracing a version
    /// back to what produced it.
    pub commit_metadata: Vec<(String, Value)>,
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

impl Warehouse {
    /// Inserts new records and replaces records whose natural key is on file, in one commit.
    pub async fn upsert(&self, ctx: &SessionContext, req: UpsertRequest) -> Result<UpsertOutcome> {
        let def = req.def;
        let _span = info_span!("upsert", table = def.name).entered();
        let query_err = |source| WarehouseError::Query {
            table: def.name.to_string(),
            source,
        };
        let source = with_partition_column(def, req.source).map_err(query_err)?;
        let commit = CommitProperties::default().with_metadata(req.commit_metadata);

        let Some(table) = self.load(def).await? else {
            // First import: everything is new; the write creates the table.
            let inserted = source.clone().count().await.map_err(query_err)? as u64;
            if inserted == 0 {
                return Ok(UpsertOutcome::default());
            }
            let table = self.handle(def.name)?;
            let table = self.append(def, table, source, commit, true).await?;
            return Ok(UpsertOutcome {
                inserted,
                version: table.version().map(|v| v as i64),
                ..Default::default()
            });
        };

        let classified = classify(ctx, def, &table, source)
            .await
            .map_err(query_err)?;
        let mut outcome = UpsertOutcome {
            inserted: classified.inserted,
            replaced: classified.replaced,
            unchanged: classified.unchanged,
            version: None,
        };
        if classified.inserted + classified.replaced == 0 {
            return Ok(outcome);
        }
        let changed = ctx
            .read_table(Arc::new(
                MemTable::try_new(classified.schema, vec![classified.changed])
                    .map_err(query_err)?,
            ))
            .map_err(query_err)?;
        let table = if classified.replaced == 0 {
            self.append(def, table, changed, commit, false).await?
        } else {
            self.merge(def, table, changed, commit).await?
        };
        outcome.version = table.version().map(|v| v as i64);
        Ok(outcome)
    }

    async fn append(
        &self,
        def: &'static TableDef,
        table: DeltaTable,
        source: DataFrame,
        commit: CommitProperties,
        create: bool,
    ) -> Result<DeltaTable> {
        let delta_err = |source| WarehouseError::Delta {
            table: def.name.to_string(),
            url: self.table_url(def.name).to_string(),
            source,
        };
        let sorted = sort_for_layout(def, source).map_err(|source| WarehouseError::Query {
            table: def.name.to_string(),
            source,
        })?;
        let mut write = table
            .write(Vec::new())
            .with_input_plan(sorted.logical_plan().clone())
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(writer_properties(def))
            .with_commit_properties(commit);
        if create {
            write = write
                .with_partition_columns(def.partition_columns())
                .with_table_name(def.name)
                .with_description(def.doc);
        }
        write.await.map_err(delta_err)
    }

    async fn merge(
        &self,
        def: &'static TableDef,
        table: DeltaTable,
        source: DataFrame,
        commit: CommitProperties,
    ) -> Result<DeltaTable> {
        let delta_err = |source| WarehouseError::Delta {
            table: def.name.to_string(),
            url: self.table_url(def.name).to_string(),
            source,
        };
        let on = def
            .key
            .iter()
            .map(|k| qualified(TARGET, k).eq(qualified(SOURCE, k)))
            .reduce(Expr::and)
            .unwrap_or_else(|| lit(false));
        let columns: Vec<&str> = stored_columns(def);
        let (table, _metrics) = table
            .merge(source, on)
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
    changed: Vec<deltalake::arrow::array::RecordBatch>,
    inserted: u64,
    replaced: u64,
    unchanged: u64,
}

/// Joins the incoming records to the table on the natural key and sorts them into new,
/// replacing and unchanged; keeps the new and replacing ones.
async fn classify(
    ctx: &SessionContext,
    def: &TableDef,
    table: &DeltaTable,
    source: DataFrame,
) -> datafusion::error::Result<Classified> {
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let columns: Vec<&str> = def.columns.iter().map(|c| c.name).collect();
    let target = ctx.read_table(provider)?.select(
        columns
            .iter()
            .map(|c| col(Column::from_name(*c)).alias(format!("{TARGET}__{c}")))
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
    let status = datafusion::logical_expr::when(col("__on_file").is_null(), lit("insert"))
        .when(same, lit("same"))
        .otherwise(lit("replace"))?;
    let mut keep: Vec<Expr> = stored_columns(def)
        .into_iter()
        .map(|c| col(Column::from_name(c)))
        .collect();
    keep.push(status.alias("__status"));
    let joined = source
        .join(
            target,
            datafusion::common::JoinType::Left,
            &left_keys.iter().map(String::as_str).collect::<Vec<_>>(),
            &right_keys.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        )?
        .select(keep)?
        .cache()
        .await?;
    let counts = joined
        .clone()
        .aggregate(
            vec![col("__status")],
            vec![datafusion::functions_aggregate::count::count_all()],
        )?
        .collect()
        .await?;
    let (mut inserted, mut replaced, mut unchanged) = (0, 0, 0);
    for batch in &counts {
        let status = deltalake::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let status = datafusion::common::cast::as_string_array(&status)?;
        let n = datafusion::common::cast::as_int64_array(batch.column(1))?;
        for i in 0..batch.num_rows() {
            let v = n.value(i) as u64;
            match status.value(i) {
                "insert" => inserted = v,
                "replace" => replaced = v,
                _ => unchanged = v,
            }
        }
    }
    let changed_df = joined.filter(col("__status").not_eq(lit("same")))?.select(
        stored_columns(def)
            .into_iter()
            .map(|c| col(Column::from_name(c)))
            .collect::<Vec<Expr>>(),
    )?;
    let schema = Arc::new(changed_df.schema().as_arrow().clone());
    let changed = changed_df.collect().await?;
    Ok(Classified {
        schema,
        changed,
        inserted,
        replaced,
        unchanged,
    })
}
