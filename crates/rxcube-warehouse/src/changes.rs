//! What changed in a table between two versions, read from its Delta log, and derived tables
//! replaced in one commit.
//!
//! Incremental jobs (the cube's rollups) keep, in the commit that wrote them, the versions of
//! the tables they were computed from (their *watermark*). To catch up they read the log
//! entries after the watermark: each added or removed data file, with its partition values and
//! the min/max statistics Delta keeps per file, tells which stretch of time was touched. The
//! result is then swapped in with one conditional commit ([`Warehouse::replace_derived`]): the
//! rows matching a predicate are replaced, so readers see the old rows or the new ones.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};

use datafusion::prelude::DataFrame;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use serde_json::Value;

use crate::{Result, Warehouse, WarehouseError};

/// One data file added or removed by a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct FileChange {
    pub added: bool,
    /// Partition column → value, as the log writes them (`event_month` → `2024-03-01`).
    pub partition: HashMap<String, Option<String>>,
    /// The file's least and greatest value of each column with statistics, as the log writes
    /// them (instants as RFC 3339 text). Empty when the log carries no statistics.
    pub min: HashMap<String, Value>,
    pub max: HashMap<String, Value>,
}

/// Commit times already read, by (table URL, version): a commit's time never changes.
type CommitTimes = HashMap<(String, i64), DateTime<Utc>>;
impl Warehouse {
    /// The application metadata (`commitInfo` entries) of the commit that made the loaded
    /// `table` (stored at `name`) what it is, with that version.
    pub async fn commit_info(
        &self,
        table: &DeltaTable,
        name: &str,
    ) -> Result<Option<(i64, Value)>> {
        let Some(version) = table.version().map(|v| v as i64) else {
            return Ok(None);
        };
        let info = self
            .commit_actions(table, name, version)
            .await?
            .into_iter()
            .find_map(|mut a| a.get_mut("commitInfo").map(Value::take))
            .unwrap_or(Value::Null);
        Ok(Some((version, info)))
    }

    /// When version `version` of the table at `name` was committed (its `commitInfo`
    /// timestamp); `None` when its log has no such entry or the entry no time. Reads that one
    /// log entry, not the table; a commit's time never changes, so each is read once per
    /// process.
    pub async fn commit_time(&self, name: &str, version: i64) -> Result<Option<DateTime<Utc>>> {
        static SEEN: LazyLock<Mutex<CommitTimes>> = LazyLock::new(Mutex::default);
        let url = self.table_url(name);
        let key = (url.to_string(), version);
        if let Some(t) = SEEN.lock().ok().and_then(|s| s.get(&key).copied()) {
            return Ok(Some(t));
        }
        let err = |source| WarehouseError::Delta {
            table: name.to_string(),
            url: url.to_string(),
            source,
        };
        let Ok(version_u64) = u64::try_from(version) else {
            return Ok(None);
        };
        let table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| {
                b.with_storage_options(self.storage_options().clone())
                    .build()
            })
            .map_err(err)?;
        let Some(bytes) = table
            .log_store()
            .read_commit_entry(version_u64)
            .await
            .map_err(err)?
        else {
            return Ok(None);
        };
        let time = bytes
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
            .find_map(|a| a.get("commitInfo")?.get("timestamp")?.as_i64())
            .and_then(DateTime::from_timestamp_millis);
        if let (Some(t), Ok(mut seen)) = (time, SEEN.lock()) {
            seen.insert(key, t);
        }
        Ok(time)
    }

    /// The data files added and removed by the commits after version `after` up to and
    /// including `upto`, of the table at `name`. Files rewritten without a change of data
    /// (`dataChange: false`, as a compaction writes them) are not changes.
    pub async fn changes(&self, name: &str, after: i64, upto: i64) -> Result<Vec<FileChange>> {
        let Some(table) = self.load_named(name).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for version in (after + 1)..=upto {
            for action in self.commit_actions(&table, name, version).await? {
                let (added, file) = match (action.get("add"), action.get("remove")) {
                    (Some(f), _) => (true, f),
                    (None, Some(f)) => (false, f),
                    _ => continue,
                };
                // A compaction rewrites files without changing what they hold.
                if file.get("dataChange") == Some(&Value::Bool(false)) {
                    continue;
                }
                let partition = file
                    .get("partitionValues")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                            .collect()
                    })
                    .unwrap_or_default();
                let stats: Value = file
                    .get("stats")
                    .and_then(Value::as_str)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Null);
                let bound = |key: &str| -> HashMap<String, Value> {
                    stats
                        .get(key)
                        .and_then(Value::as_object)
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default()
                };
                out.push(FileChange {
                    added,
                    partition,
                    min: bound("minValues"),
                    max: bound("maxValues"),
                });
            }
        }
        Ok(out)
    }

    async fn commit_actions(
        &self,
        table: &DeltaTable,
        name: &str,
        version: i64,
    ) -> Result<Vec<Value>> {
        let err = |source| WarehouseError::Delta {
            table: name.to_string(),
            url: self.table_url(name).to_string(),
            source,
        };
        let bytes = table
            .log_store()
            .read_commit_entry(version as u64)
            .await
            .map_err(err)?
            .ok_or_else(|| {
                err(deltalake::DeltaTableError::Generic(format!(
                    "the log entry of version {version} is missing (cleaned up?)"
                )))
            })?;
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect())
    }

    /// Writes the derived table at `name` in one commit: replaces the rows matching `replace`
    /// (SQL over its columns) with `rows`, which must all match it; with no predicate, replaces
    /// the whole table (creating it when missing, partitioned by `partition_by`). Rows are
    /// written sorted by `sort`. `metadata` goes into the commit's `commitInfo`. Returns the
    /// version committed.
    pub async fn replace_derived(
        &self,
        name: &str,
        rows: DataFrame,
        replace: Option<String>,
        metadata: Vec<(String, Value)>,
        sort: &[&str],
        partition_by: &[&str],
    ) -> Result<i64> {
        let err = |source| WarehouseError::Delta {
            table: name.to_string(),
            url: self.table_url(name).to_string(),
            source,
        };
        let table = match self.load_named(name).await? {
            Some(t) => t,
            None => self.handle(name)?,
        };
        let rows = rows
            .sort(
                sort.iter()
                    .map(|c| datafusion::prelude::col(*c).sort(true, false))
                    .collect(),
            )
            .map_err(|source| WarehouseError::Query {
                table: name.to_string(),
                source,
            })?;
        let mut write = table
            .write(Vec::new())
            .with_input_plan(rows.logical_plan().clone())
            .with_save_mode(SaveMode::Overwrite)
            .with_commit_properties(CommitProperties::default().with_metadata(metadata));
        if let Some(predicate) = replace {
            write = write.with_replace_where(predicate);
        } else {
            write = write
                .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
                .with_partition_columns(partition_by.iter().copied());
        }
        let table = write.await.map_err(err)?;
        Ok(table.version().unwrap_or_default() as i64)
    }
}
