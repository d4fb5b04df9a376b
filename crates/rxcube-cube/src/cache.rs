//! Results of cube relations, kept per snapshot: a dashboard that asks again gets them back
//! without planning.
//!
//! Planning a cube query (the generated SQL with its ranking windows) costs tens of
//! milliseconds even when a rollup makes reading it trivial, and dashboards re-issue the same
//! queries all day. A result is keyed by the *snapshot* the session reads (the version of every
//! landed table and rollup) and by the exact generated SQL, filters and columns, so a hit is
//! the answer the engine would compute again: a new import or refresh changes the snapshot,
//! and old entries simply stop being asked for. The cache is process-wide (the server's
//! sessions share it), bounded in bytes, and evicts the oldest entries first; results larger
//! than an entry's bound are not kept. `EXPLAIN` and the served-by note say `cached`.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use futures::Stream;

/// Bytes all cached results may take.
const MAX_BYTES: usize = 256 << 20;
/// The largest result kept.
const MAX_ENTRY_BYTES: usize = 16 << 20;

/// A kept result, and what served the relations its plan read (their
/// [`crate::relation::served_by_uncached`] labels), for the result's metadata on a hit.
#[derive(Debug)]
struct Entry {
    batches: Vec<RecordBatch>,
    served: Vec<String>,
}

#[derive(Debug, Default)]
struct Results {
    entries: HashMap<String, Arc<Entry>>,
    order: VecDeque<(String, usize)>,
    bytes: usize,
}

static RESULTS: LazyLock<Mutex<Results>> = LazyLock::new(Mutex::default);

fn size(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::get_array_memory_size).sum()
}

/// `batches` copied into arrays of their own, sized to their rows: a batch out of a filter or a
/// window shares (and would keep alive) buffers allocated for many more rows (a 20-row result
/// reported 650 KB), so a store of results keeps and counts these copies instead.
pub fn compacted(batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    batches
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            let n = u32::try_from(b.num_rows()).unwrap_or(u32::MAX);
            let all = arrow::array::UInt32Array::from_iter_values(0..n);
            arrow::compute::take_record_batch(&b, &all).unwrap_or(b)
        })
        .collect()
}

/// A cached result as a plan over its batches, and what served the relations it was
/// computed from.
pub type Hit = (Arc<dyn ExecutionPlan>, Vec<String>);

/// The cached result under `key`.
pub fn lookup(key: &str, schema: SchemaRef) -> Result<Option<Hit>> {
    let hit = RESULTS
        .lock()
        .ok()
        .and_then(|r| r.entries.get(key).cloned());
    let Some(entry) = hit else {
        return Ok(None);
    };
    let plan =
        MemorySourceConfig::try_new_exec(std::slice::from_ref(&entry.batches), schema, None)?;
    Ok(Some((plan, entry.served.clone())))
}

fn insert(key: String, batches: Vec<RecordBatch>, served: Vec<String>) {
    let batches = compacted(batches);
    let bytes = size(&batches);
    if bytes > MAX_ENTRY_BYTES {
        return;
    }
    let Ok(mut r) = RESULTS.lock() else {
        return;
    };
    if r.entries.contains_key(&key) {
        return;
    }
    while r.bytes + bytes > MAX_BYTES {
        let Some((old, n)) = r.order.pop_front() else {
            break;
        };
        r.entries.remove(&old);
        r.bytes -= n;
    }
    r.entries
        .insert(key.clone(), Arc::new(Entry { batches, served }));
    r.order.push_back((key, bytes));
    r.bytes += bytes;
}

/// Wraps `plan` so that a complete execution stores its result under `key`, with `served`
/// (what served the relations `plan` reads).
pub fn filling(
    plan: Arc<dyn ExecutionPlan>,
    key: String,
    served: Vec<String>,
) -> Arc<dyn ExecutionPlan> {
    let input: Arc<dyn ExecutionPlan> = if plan.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(plan))
    } else {
        plan
    };
    Arc::new(FillExec { input, key, served })
}

/// Passes its input through and, once it has ended, keeps every batch in the cache.
#[derive(Debug)]
struct FillExec {
    input: Arc<dyn ExecutionPlan>,
    key: String,
    served: Vec<String>,
}

impl DisplayAs for FillExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "CacheFillExec")
    }
}

impl ExecutionPlan for FillExec {
    fn name(&self) -> &str {
        "CacheFillExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    /// One stream sees the whole result.
    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|_| {
            datafusion::common::DataFusionError::Internal(
                "CacheFillExec has exactly one input".into(),
            )
        })?;
        Ok(Arc::new(FillExec {
            input,
            key: self.key.clone(),
            served: self.served.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(Filling {
            input: self.input.execute(partition, context)?,
            key: Some(self.key.clone()),
            served: self.served.clone(),
            batches: Vec::new(),
            bytes: 0,
        }))
    }
}

struct Filling {
    input: SendableRecordBatchStream,
    /// Taken when the result is stored, or dropped when it grows too large or fails.
    key: Option<String>,
    served: Vec<String>,
    batches: Vec<RecordBatch>,
    bytes: usize,
}

impl Stream for Filling {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.input.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) if self.key.is_some() => {
                self.bytes += batch.get_array_memory_size();
                if self.bytes > MAX_ENTRY_BYTES {
                    self.key = None;
                    self.batches.clear();
                } else {
                    let batch = batch.clone();
                    self.batches.push(batch);
                }
            }
            Poll::Ready(Some(Err(_))) => self.key = None,
            Poll::Ready(None) => {
                if let Some(key) = self.key.take() {
                    let batches = std::mem::take(&mut self.batches);
                    let served = std::mem::take(&mut self.served);
                    insert(key, batches, served);
                }
            }
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for Filling {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
