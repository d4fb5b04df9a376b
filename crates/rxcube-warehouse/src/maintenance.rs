//! Keeping a table quick to read after many small commits.
//!
//! Continuous ingestion commits one small file after another; every reader then lists, opens
//! and plans over all of them. Delta itself writes a checkpoint every 100 commits (so a reader
//! never replays more than 100 log entries) and then removes log entries older than the
//! table's log retention (30 days by default). What is left to do is here:
//!
//! - [`Warehouse::compact`] rewrites each partition's small files into a few large ones, in
//!   one commit marked as no change of data (`dataChange: false`): readers see the same rows
//!   before and after, and the rollups' refresh does not count it as a change.
//! - [`Warehouse::vacuum`] deletes the files no version within the table's retention of
//!   deleted files (7 days by default) reads, so a reader on an older snapshot never loses a
//!   file it is reading.
//!
//! Neither blocks readers. A writer that commits at the same moment as a compaction wins; the
//! compaction fails plainly and is tried again later.

use std::num::NonZeroU64;

use crate::{Result, Warehouse, WarehouseError};

/// The size compaction aims for per file.
pub const TARGET_FILE_BYTES: u64 = 128 << 20;

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub files_removed: u64,
    pub files_added: u64,
    /// The version it committed, `None` when nothing needed compacting.
    pub version: Option<i64>,
}

impl Warehouse {
    /// Compacts the small files of the table at `name` (see the module docs); a table never
    /// committed is left alone.
    pub async fn compact(&self, name: &str) -> Result<Compaction> {
        let Some(table) = self.load_named(name).await? else {
            return Ok(Compaction {
                files_removed: 0,
                files_added: 0,
                version: None,
            });
        };
        let before = table.version();
        let err = |source| WarehouseError::Delta {
            table: name.to_string(),
            url: self.table_url(name).to_string(),
            source,
        };
        let target = NonZeroU64::new(TARGET_FILE_BYTES).unwrap_or(NonZeroU64::MIN);
        let (table, metrics) = table
            .optimize()
            .with_target_size(target)
            .await
            .map_err(err)?;
        let after = table.version();
        Ok(Compaction {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            version: (after != before)
                .then_some(after)
                .flatten()
                .map(|v| v as i64),
        })
    }

    /// Deletes the files of the table at `name` that no version within its retention reads;
    /// returns how many.
    pub async fn vacuum(&self, name: &str) -> Result<usize> {
        let Some(table) = self.load_named(name).await? else {
            return Ok(0);
        };
        let err = |source| WarehouseError::Delta {
            table: name.to_string(),
            url: self.table_url(name).to_string(),
            source,
        };
        let (_, metrics) = table.vacuum().await.map_err(err)?;
        Ok(metrics.files_deleted.len())
    }
}
