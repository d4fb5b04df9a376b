//! The memory budget of an import, and the temporary directory where it spills.
//!
//! An import may read a file many times larger than memory. Its budget
//! ([`crate::ImportOptions::memory_limit`]) is shared out once, up front:
//!
//! - **pass 1** keeps the checked records in memory only while they fit [`Budget::spool_bytes`];
//!   beyond it they go to an Arrow IPC stream file ([`crate::spool`]), and the key hashes of the
//!   duplicate screen beyond [`Budget::key_hash_bytes`] go to disk too ([`crate::keys`]);
//! - **the key checks and pass 2** run in [`Budget::ctx`], a DataFusion session whose memory
//!   pool holds [`Budget::pool_bytes`] and whose sorts and aggregates spill to the same
//!   directory when it is full. Hash joins cannot spill, so the session prefers sort-merge
//!   joins; the posting picks a hash join only for a source that fits the pool.
//!
//! DataFusion 55's `RepartitionExec` spills the batches it cannot reserve to a spill pool whose
//! reader can wait forever on the older of two open files (apache/datafusion#24883, fixed after
//! 55): an import under a tight budget then stops with every thread parked. [`ExchangePool`]
//! grants the exchanges' buffers (a few batches per partition, as before DataFusion spilled
//! them) and counts them against the pool, so the sorts around them spill sooner instead.
//! The merges of spilled runs (`ExternalSorterMerge`, which cannot spill) are granted too:
//! what they hold is bounded up front by the merge fan-in and the batch size chosen here, and
//! refusing them while the exchanges' buffers fill a tight pool failed the import. So are
//! ungrouped aggregates (`AggregateStream`, the counts and checks of a posting's plan and of
//! delta-rs's writes): they hold one accumulator state per aggregate, a few bytes, and refusing
//! their first 16 bytes while the exchanges fill the pool failed an import at 4 MiB.
//!
//! The rest of the budget is headroom for what no pool tracks: the blocks being parsed, the
//! Parquet writers' open row groups, the allocator. The directory is removed when the import
//! ends; one that a `kill -9` left behind is removed by the next import
//! ([`remove_stale_spill_dirs`]).

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
    UnboundedMemoryPool,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionContext;
use rxcube_warehouse::catalog::session_config;

use crate::error::{IngestError, Result};

/// The default budget of an import: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;
/// The smallest budget honoured; a smaller one is raised to it.
pub const MIN_MEMORY_LIMIT: usize = 4 << 20;

/// Records per batch of what is staged on disk and of what the session produces, at most.
const MAX_BATCH_ROWS: usize = 8192;
/// Records per batch, at least.
const MIN_BATCH_ROWS: usize = 256;
/// A batch is held to a share of the pool (with records of about 128 bytes), so a tight pool
/// can always take one more: every sort of a plan gets a few.
const BATCHES_PER_POOL: usize = 64;
const RECORD_BYTES: usize = 128;
/// Spilled runs one merge pass reads at once, at most.
const MAX_MERGE_FAN_IN: usize = 16;

/// The spill directory of an import: `<temp>/rxcube-import-<pid>-<random>`.
const SPILL_PREFIX: &str = "rxcube-import-";

/// Removes the spill directories under `temp` of imports whose process is gone (killed with
/// `kill -9`, they leave gigabytes behind). A directory whose process may still run (or whose
/// name carries no process id) is left alone; problems are logged, never fatal.
pub(crate) fn remove_stale_spill_dirs(temp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SPILL_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_may_run(pid) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed the spill folder of a stopped import")
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot remove the spill folder of a stopped import")
            }
        }
    }
}

/// Whether process `pid` may be running: on Linux, whether `/proc/<pid>` exists; elsewhere
/// always (nothing is removed).
fn process_may_run(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// An import's share-out of its memory limit, its spill directory and its bounded session.
pub(crate) struct Budget {
    limit: Option<usize>,
    batch_rows: usize,
    dir: tempfile::TempDir,
    ctx: SessionContext,
}

impl Budget {
    /// A budget of `limit` bytes (`None`: unbounded, everything stays in memory).
    pub(crate) fn new(limit: Option<usize>) -> Result<Self> {
        let limit = limit.map(|l| l.max(MIN_MEMORY_LIMIT));
        remove_stale_spill_dirs(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{SPILL_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|source| IngestError::Io {
                file: std::env::temp_dir().display().to_string(),
                source,
            })?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Sort-merge joins need at least two partitions to be planned.
        let mut config = session_config().with_target_partitions(threads.max(2));
        let batch_rows = limit.map_or(MAX_BATCH_ROWS, |l| {
            (pool_bytes(l) / BATCHES_PER_POOL / RECORD_BYTES).clamp(MIN_BATCH_ROWS, MAX_BATCH_ROWS)
        });
        config = config.with_batch_size(batch_rows);
        let pool: Arc<dyn MemoryPool> = match limit {
            Some(l) => {
                let pool = pool_bytes(l);
                let options = config.options_mut();
                options.optimizer.prefer_hash_join = false;
                // Sorts reserve this much for their merge phase up front: a share of the pool.
                options.execution.sort_spill_reservation_bytes = (pool / 16).min(10 << 20);
                options.execution.sort_in_place_threshold_bytes = (pool / 32).min(1 << 20);
                // Strings read from Parquet as views share whole pages, which a pool counts
                // once per batch: plain strings are counted as they are.
                options.execution.parquet.schema_force_view_types = false;
                // An exhausted pool names its largest consumers.
                Arc::new(ExchangePool(Arc::new(TrackConsumersPool::new(
                    FairSpillPool::new(pool),
                    NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
                ))))
            }
            None => Arc::new(UnboundedMemoryPool::default()),
        };
        let mut disk = DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::Directories(vec![dir.path().to_path_buf()]));
        if limit.is_some() {
            // A merge of spilled runs holds a batch of each run it reads: merging a few at a
            // time (in more passes) keeps the merges of every partition within the pool.
            disk = disk.with_max_spill_merge_fan_in(merge_fan_in(
                pool_bytes(limit.unwrap_or_default()),
                batch_rows,
                threads.max(2),
            ));
        }
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .with_disk_manager_builder(disk)
            .build_arc()
            .map_err(|e| IngestError::Query {
                table: String::new(),
                source: e,
            })?;
        Ok(Self {
            limit,
            batch_rows,
            dir,
            ctx: SessionContext::new_with_config_rt(config, runtime),
        })
    }

    /// The session for the key checks and the posting: bounded pool, spilling to [`Self::dir`].
    pub(crate) fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    /// Where the import spills (removed when the budget is dropped).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Records per batch of what is staged on disk.
    pub(crate) fn batch_rows(&self) -> usize {
        self.batch_rows
    }

    /// Whether the budget is bounded.
    pub(crate) fn is_bounded(&self) -> bool {
        self.limit.is_some()
    }

    /// Bytes of checked records pass 1 may keep in memory before it spills them.
    pub(crate) fn spool_bytes(&self) -> usize {
        self.limit.map_or(usize::MAX, |l| l / 4)
    }

    /// Bytes of key hashes pass 1 may keep in memory before it spills them.
    pub(crate) fn key_hash_bytes(&self) -> usize {
        self.limit.map_or(usize::MAX, |l| l / 8)
    }
}

/// Spilled runs one merge pass reads at once: a merge holds a few batches of every run it
/// reads, and every partition may merge at the same time, so a small pool merges two at a
/// time (in more passes).
fn merge_fan_in(pool: usize, batch_rows: usize, partitions: usize) -> usize {
    let batch_bytes = batch_rows * 2 * RECORD_BYTES;
    (pool / (partitions * 8 * batch_bytes)).clamp(2, MAX_MERGE_FAN_IN)
}

/// The DataFusion pool of a budget of `limit` bytes.
fn pool_bytes(limit: usize) -> usize {
    limit / 2
}

/// A pool that never refuses a `RepartitionExec` its buffers, a sort's merge its batches nor
/// an ungrouped aggregate its states (see the module docs): they are granted and counted, every other consumer is refused as
/// `0`'s pool refuses it.
#[derive(Debug)]
struct ExchangePool(Arc<dyn MemoryPool>);

/// The name of DataFusion's repartitioning operator, which its consumers' names start with.
const EXCHANGE: &str = "RepartitionExec";
/// The name of a sort's merge of its spilled runs (bounded by [`merge_fan_in`]).
const SORT_MERGE: &str = "ExternalSorterMerge";
/// The name of DataFusion's ungrouped aggregate (one state per aggregate, no groups).
const UNGROUPED_AGGREGATE: &str = "AggregateStream";

impl std::fmt::Display for ExchangePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl MemoryPool for ExchangePool {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.0.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.0.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.0.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.0.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        let name = reservation.consumer().name();
        if [EXCHANGE, SORT_MERGE, UNGROUPED_AGGREGATE]
            .iter()
            .any(|granted| name.starts_with(granted))
        {
            self.0.grow(reservation, additional);
            Ok(())
        } else {
            self.0.try_grow(reservation, additional)
        }
    }

    fn reserved(&self) -> usize {
        self.0.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.0.memory_limit()
    }
}
