//! The checked records between the two passes.
//!
//! Pass 1 hands every checked batch, in file order, with its provenance (the file's index in
//! [`FILE_COLUMN`], the record number in [`RECORD_COLUMN`]) to a [`Spool`]. The spool keeps
//! them in memory while they fit its share of the budget; past it, it writes everything to one
//! Arrow IPC stream file in the import's spill directory, in batches sized to the budget, and
//! from then on holds no records at all. Either way the key checks and the posting read the
//! records back as one table ([`StagedRecords::register`]): an in-memory table, or the IPC
//! file (read in byte ranges, on every core).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use datafusion::datasource::MemTable;
use datafusion::execution::options::ArrowReadOptions;
use datafusion::prelude::SessionContext;

use crate::error::{IngestError, Result};

/// The staged column holding the index of a record's file among the run's files.
pub(crate) const FILE_COLUMN: &str = "_file";
/// The staged column holding a record's 1-based number in its file.
pub(crate) const RECORD_COLUMN: &str = "_record";

/// The schema of staged records: the contract columns, then [`FILE_COLUMN`] and
/// [`RECORD_COLUMN`].
pub(crate) fn staged_schema(contract: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = contract
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(FILE_COLUMN, DataType::UInt32, false));
    fields.push(Field::new(RECORD_COLUMN, DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

/// Checked records on their way from pass 1 to pass 2: in memory up to a limit, then on disk.
pub(crate) struct Spool {
    schema: SchemaRef,
    memory: Vec<RecordBatch>,
    memory_bytes: usize,
    limit: usize,
    batch_rows: usize,
    path: PathBuf,
    writer: Option<StreamWriter<BufWriter<File>>>,
    rows: u64,
    bytes: u64,
}

impl Spool {
    /// A spool for records of `schema` (a [`staged_schema`]) that keeps at most `limit` bytes
    /// in memory and spills to a file in `dir`, in batches of `batch_rows`.
    pub(crate) fn new(schema: SchemaRef, dir: &Path, limit: usize, batch_rows: usize) -> Self {
        Self {
            schema,
            memory: Vec::new(),
            memory_bytes: 0,
            limit,
            batch_rows: batch_rows.max(1),
            path: dir.join("staged.arrow"),
            writer: None,
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds a batch of staged records.
    pub(crate) fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let size = batch.get_array_memory_size();
        self.rows += batch.num_rows() as u64;
        self.bytes += size as u64;
        if self.writer.is_none() {
            if self.memory_bytes + size <= self.limit {
                self.memory_bytes += size;
                self.memory.push(batch);
                return Ok(());
            }
            self.spill()?;
        }
        self.write(&batch)
    }

    /// Moves the records held in memory to the file; every later batch goes there too.
    fn spill(&mut self) -> Result<()> {
        let file = File::create(&self.path).map_err(|source| self.io_err(source))?;
        // The IPC stream format: DataFusion reads an IPC *file* split across partitions by
        // fetching each part's record batches into memory at once, the whole file in the end;
        // a stream is read batch by batch.
        let writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 20, file), &self.schema)
            .map_err(|e| self.arrow_err(e))?;
        self.writer = Some(writer);
        tracing::info!(
            bytes = self.memory_bytes,
            limit = self.limit,
            path = %self.path.display(),
            "staged records spill to disk"
        );
        for batch in std::mem::take(&mut self.memory) {
            self.write(&batch)?;
        }
        self.memory_bytes = 0;
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let mut offset = 0;
        let mut result = Ok(());
        while offset < batch.num_rows() && result.is_ok() {
            let len = self.batch_rows.min(batch.num_rows() - offset);
            result = writer.write(&batch.slice(offset, len));
            offset += len;
        }
        result.map_err(|e| self.arrow_err(e))
    }

    /// Records staged so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// The staged records, ready to be read back.
    pub(crate) fn finish(mut self) -> Result<StagedRecords> {
        let location = match self.writer.take() {
            None => Location::Memory(std::mem::take(&mut self.memory)),
            Some(mut writer) => {
                writer.finish().map_err(|e| self.arrow_err(e))?;
                let file = writer.into_inner().map_err(|e| self.arrow_err(e))?;
                file.into_inner()
                    .map_err(|e| self.io_err(e.into_error()))?
                    .sync_data()
                    .ok();
                Location::File(self.path.clone())
            }
        };
        Ok(StagedRecords {
            schema: self.schema.clone(),
            rows: self.rows,
            bytes: self.bytes,
            location,
        })
    }

    fn io_err(&self, source: std::io::Error) -> IngestError {
        IngestError::Io {
            file: self.path.display().to_string(),
            source,
        }
    }

    fn arrow_err(&self, source: arrow::error::ArrowError) -> IngestError {
        IngestError::Internal {
            context: format!("staging records in {}", self.path.display()),
            source,
        }
    }
}

enum Location {
    Memory(Vec<RecordBatch>),
    File(PathBuf),
}

/// Every checked record of a run, with its provenance.
pub(crate) struct StagedRecords {
    schema: SchemaRef,
    rows: u64,
    bytes: u64,
    location: Location,
}

impl StagedRecords {
    /// Records staged.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Their size in memory, in bytes (what a hash table over them would at least hold).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether they went to disk.
    pub(crate) fn spilled(&self) -> bool {
        matches!(self.location, Location::File(_))
    }

    /// Registers the records as table `name` of `ctx`. In memory, the batches are spread over
    /// one partition per core, so what reads them runs on every core.
    pub(crate) async fn register(
        self,
        ctx: &SessionContext,
        name: &str,
    ) -> datafusion::error::Result<()> {
        match self.location {
            Location::Memory(batches) => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); threads];
                for (i, b) in batches.into_iter().enumerate() {
                    partitions[i % threads].push(b);
                }
                let table = MemTable::try_new(self.schema.clone(), partitions)?;
                ctx.register_table(name, Arc::new(table))?;
            }
            Location::File(path) => {
                let path = path.display().to_string();
                ctx.register_arrow(
                    name,
                    &path,
                    ArrowReadOptions::default().schema(&self.schema),
                )
                .await?;
            }
        }
        Ok(())
    }
}
