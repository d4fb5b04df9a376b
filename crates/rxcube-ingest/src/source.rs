//! Reading an input file (CSV with a header row, or Parquet) into chunks of records in the
//! contract's Arrow schema, with every field that cannot be read reported where it is.
//!
//! A field that fails to parse becomes NULL in its chunk and an error in the chunk's list; the
//! records keep their positions, so the record number of row `i` is `first_record + i`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use rxcube_model::{ColumnDef, ColumnType, TableDef};

use crate::columns::ColumnBuilder;
use crate::error::{RecordError, quote};
use crate::parquet_check::{catch_panic, check_chunks, check_footer};

/// Records read per chunk.
pub(crate) const CHUNK_RECORDS: usize = 64 * 1024;

/// A run of consecutive records.
pub(crate) struct Chunk {
    pub batch: RecordBatch,
    pub first_record: u64,
    pub errors: Vec<RecordError>,
    /// Bytes of the file consumed so far (for progress).
    pub bytes_read: u64,
}

/// The schema of a chunk: the contract's columns, all nullable, since a field that cannot be
/// read becomes NULL beside its error.
pub(crate) fn chunk_schema(def: &TableDef) -> arrow::datatypes::SchemaRef {
    let fields: Vec<arrow::datatypes::Field> = def
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    std::sync::Arc::new(arrow::datatypes::Schema::new(fields))
}

/// An open input file.
pub(crate) enum Source {
    Csv(CsvSource),
    Parquet(ParquetSource),
}

impl Source {
    /// Opens `path` as CSV or Parquet by its extension and checks its columns against the
    /// contract. Parquet records before `start_at` (1-based) are skipped; CSV files are read
    /// whole and skipped by the caller (their record numbers are known only once parsed).
    pub(crate) fn open(
        def: &'static TableDef,
        path: &Path,
        start_at: u64,
    ) -> Result<Self, RecordError> {
        let file = path.display().to_string();
        let fail = |reason: String| RecordError {
            file: file.clone(),
            record: None,
            column: None,
            value: None,
            reason,
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if path.is_dir() {
            // Opening a directory succeeds on Unix; reading it would fail with a vaguer error.
            return Err(fail("is a directory, not a file".to_string()));
        }
        let handle = File::open(path).map_err(|e| fail(format!("cannot open the file: {e}")))?;
        let total_bytes = handle.metadata().map(|m| m.len()).unwrap_or(0);
        match ext.as_deref() {
            Some("csv") => CsvSource::open(def, file.clone(), handle, total_bytes).map(Source::Csv),
            Some("parquet") | Some("parq") | Some("pq") => {
                ParquetSource::open(def, file.clone(), handle, total_bytes, start_at)
                    .map(Source::Parquet)
            }
            _ => Err(fail(
                "unknown file type: the extension must be .csv or .parquet".to_string(),
            )),
        }
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        match self {
            Source::Csv(s) => s.total_bytes,
            Source::Parquet(s) => s.total_bytes,
        }
    }
}

fn missing_and_unknown(
    def: &TableDef,
    file: &str,
    names: &[String],
) -> Result<Vec<Option<usize>>, RecordError> {
    let fail = |column: Option<String>, reason: String| RecordError {
        file: file.to_string(),
        record: None,
        column,
        value: None,
        reason,
    };
    let expected = || {
        def.columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, n) in names.iter().enumerate() {
        if def.column(n).is_none() {
            return Err(fail(
                Some(n.clone()),
                format!(
                    "unknown column; the columns of {} are {}",
                    def.name,
                    expected()
                ),
            ));
        }
        if names[..i].contains(n) {
            return Err(fail(Some(n.clone()), "column appears twice".into()));
        }
    }
    def.columns
        .iter()
        .map(|c| {
            let pos = names.iter().position(|n| n == c.name);
            if pos.is_none() && !c.nullable {
                Err(fail(
                    Some(c.name.to_string()),
                    format!(
                        "required column is missing; the columns of {} are {}",
                        def.name,
                        expected()
                    ),
                ))
            } else {
                Ok(pos)
            }
        })
        .collect()
}

fn record_error(
    file: &str,
    record: u64,
    column: &str,
    value: Option<&str>,
    reason: impl Into<String>,
) -> RecordError {
    RecordError {
        file: file.to_string(),
        record: Some(record),
        column: Some(column.to_string()),
        value: value.map(quote),
        reason: reason.into(),
    }
}

const MISSING: &str = "required value is missing";

/// An open CSV file: its header is read and checked; the records are read in blocks
/// ([`crate::blocks`]) from `data_start` on.
pub(crate) struct CsvSource {
    pub layout: CsvLayout,
    pub handle: File,
    /// Byte offset of the first data record.
    pub data_start: u64,
    pub total_bytes: u64,
}

/// How a CSV file's fields map to the contract's columns.
pub(crate) struct CsvLayout {
    def: &'static TableDef,
    pub file: String,
    /// For each contract column, its field index in the file (None: absent, all NULL).
    positions: Vec<Option<usize>>,
    header_len: usize,
}

impl CsvSource {
    fn open(
        def: &'static TableDef,
        file: String,
        handle: File,
        total_bytes: u64,
    ) -> Result<Self, RecordError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(BufReader::with_capacity(64 << 10, &handle));
        let headers = reader.headers().map_err(|e| RecordError {
            file: file.clone(),
            record: None,
            column: None,
            value: None,
            reason: format!("cannot read the header row: {e}"),
        })?;
        let names: Vec<String> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = h.trim();
                let h = if i == 0 {
                    h.trim_start_matches('\u{feff}')
                } else {
                    h
                };
                h.to_string()
            })
            .collect();
        let positions = missing_and_unknown(def, &file, &names)?;
        let data_start = reader.position().byte();
        drop(reader);
        Ok(Self {
            layout: CsvLayout {
                def,
                file,
                positions,
                header_len: names.len(),
            },
            handle,
            data_start,
            total_bytes,
        })
    }
}

impl CsvLayout {
    /// Reads up to [`CHUNK_RECORDS`] records from `reader`, numbering them from
    /// `*next_record` on; `None` when the reader is at its end.
    pub(crate) fn read_chunk<R: std::io::Read>(
        &self,
        reader: &mut csv::Reader<R>,
        next_record: &mut u64,
    ) -> Option<(RecordBatch, u64, Vec<RecordError>)> {
        let cols = self.def.columns;
        let mut builders: Vec<ColumnBuilder> = cols
            .iter()
            .map(|c| ColumnBuilder::new(c.ty, CHUNK_RECORDS))
            .collect();
        let mut errors = Vec::new();
        let mut record = csv::ByteRecord::new();
        let first_record = *next_record;
        let mut rows = 0;
        while rows < CHUNK_RECORDS {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    // A malformed record (bad quoting, invalid bytes): report it, keep going.
                    errors.push(RecordError {
                        file: self.file.clone(),
                        record: Some(*next_record),
                        column: None,
                        value: None,
                        reason: format!("unreadable CSV record: {e}"),
                    });
                    *next_record += 1;
                    builders.iter_mut().for_each(ColumnBuilder::append_null);
                    rows += 1;
                    if e.is_io_error() {
                        break;
                    }
                    continue;
                }
            }
            let n = *next_record;
            *next_record += 1;
            rows += 1;
            if record.len() != self.header_len {
                errors.push(RecordError {
                    file: self.file.clone(),
                    record: Some(n),
                    column: None,
                    value: None,
                    reason: format!(
                        "record has {} fields; the header has {}",
                        record.len(),
                        self.header_len
                    ),
                });
                builders.iter_mut().for_each(ColumnBuilder::append_null);
                continue;
            }
            for ((c, b), pos) in cols.iter().zip(builders.iter_mut()).zip(&self.positions) {
                let field = pos.and_then(|p| record.get(p)).unwrap_or(b"").trim_ascii();
                let Ok(text) = std::str::from_utf8(field) else {
                    errors.push(record_error(&self.file, n, c.name, None, "not valid UTF-8"));
                    b.append_null();
                    continue;
                };
                // ASCII space is trimmed above; other Unicode white space is rare.
                let trimmed = match field.first().zip(field.last()) {
                    Some((a, z)) if *a >= 0x80 || *z >= 0x80 => text.trim(),
                    _ => text,
                };
                if trimmed.is_empty() {
                    if !c.nullable {
                        errors.push(record_error(&self.file, n, c.name, None, MISSING));
                    }
                    b.append_null();
                } else if let Err(reason) = b.append_text(trimmed) {
                    errors.push(record_error(
                        &self.file,
                        n,
                        c.name,
                        Some(trimmed),
                        format!("{reason}; expected {}", c.ty.describe()),
                    ));
                }
            }
        }
        if rows == 0 {
            return None;
        }
        let columns: Vec<ArrayRef> = builders.iter_mut().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(chunk_schema(self.def), columns)
            .expect("builders follow the contract schema");
        Some((batch, first_record, errors))
    }
}

/// How a Parquet column becomes its contract column.
#[derive(Debug, Clone, Copy)]
enum Conversion {
    /// Already the contract type.
    Exact,
    /// Text, parsed as a CSV field would be.
    Text,
    /// A lossless-when-it-fits Arrow cast; values that do not fit are errors.
    Cast,
    /// Formatted and parsed as text (decimals and floats into money: exact or rejected).
    ViaText,
}

fn conversion(from: &DataType, c: &ColumnDef) -> Result<Conversion, String> {
    use DataType as D;
    let to = c.ty.arrow_type();
    if *from == to {
        return Ok(Conversion::Exact);
    }
    let text = matches!(from, D::Utf8 | D::LargeUtf8 | D::Utf8View)
        || matches!(from, D::Dictionary(_, v) if matches!(**v, D::Utf8 | D::LargeUtf8 | D::Utf8View));
    if text {
        return Ok(Conversion::Text);
    }
    let int = from.is_integer();
    let ok = match c.ty {
        ColumnType::Int32 | ColumnType::Int64 => int,
        ColumnType::Date => matches!(from, D::Date32 | D::Date64),
        ColumnType::Instant => {
            match from {
                D::Timestamp(_, Some(_)) => true,
                D::Timestamp(_, None) => {
                    return Err("is a timestamp without time zone; instants need an offset (store them as UTC)".into());
                }
                _ => false,
            }
        }
        ColumnType::Money | ColumnType::Hours => {
            if int
                || matches!(
                    from,
                    D::Decimal32(..)
                        | D::Decimal64(..)
                        | D::Decimal128(..)
                        | D::Decimal256(..)
                        | D::Float32
                        | D::Float64
                )
            {
                return Ok(Conversion::ViaText);
            }
            false
        }
        ColumnType::Float64 => {
            int || from.is_floating()
                || matches!(
                    from,
                    D::Decimal128(..) | D::Decimal64(..) | D::Decimal32(..)
                )
        }
        // Integer ids of older exports land as their decimal text.
        ColumnType::Text => int,
    };
    if ok {
        Ok(Conversion::Cast)
    } else {
        Err(format!("has type {from}; expected {}", c.ty.describe()))
    }
}

pub(crate) struct ParquetSource {
    def: &'static TableDef,
    file: String,
    /// `None` once the file turned out unreadable: the rest of it is not read.
    reader: Option<ParquetRecordBatchReader>,
    /// The record number after each row group's last.
    row_group_ends: Vec<u64>,
    /// For each contract column: its index in the projected batch and how to convert it.
    plan: Vec<Option<(usize, Conversion)>>,
    next_record: u64,
    start_at: u64,
    total_rows: u64,
    total_bytes: u64,
}

impl ParquetSource {
    fn open(
        def: &'static TableDef,
        file: String,
        handle: File,
        total_bytes: u64,
        start_at: u64,
    ) -> Result<Self, RecordError> {
        let fail = |column: Option<String>, reason: String| RecordError {
            file: file.clone(),
            record: None,
            column,
            value: None,
            reason,
        };
        // A damaged file must be an error, never a failed allocation: its declared lengths
        // are checked before the reader sizes anything by them.
        let unreadable = |reason: String| format!("not a readable Parquet file: {reason}");
        let data_end = check_footer(&handle, total_bytes).map_err(|r| fail(None, unreadable(r)))?;
        let checked = handle
            .try_clone()
            .map_err(|e| fail(None, format!("cannot open the file: {e}")))?;
        let builder = catch_panic(|| ParquetRecordBatchReaderBuilder::try_new(handle))
            .map_err(|p| fail(None, unreadable(p)))?
            .map_err(|e| fail(None, unreadable(e.to_string())))?;
        check_chunks(&checked, builder.metadata(), data_end)
            .map_err(|(column, reason)| fail(column, unreadable(reason)))?;
        let row_group_ends: Vec<u64> = builder
            .metadata()
            .row_groups()
            .iter()
            .scan(0u64, |end, rg| {
                *end += rg.num_rows() as u64;
                Some(*end)
            })
            .collect();
        let schema = builder.schema().clone();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let positions = missing_and_unknown(def, &file, &names)?;
        let mut roots: Vec<usize> = positions.iter().flatten().copied().collect();
        roots.sort_unstable();
        let mut plan = Vec::with_capacity(def.columns.len());
        for (c, pos) in def.columns.iter().zip(&positions) {
            match pos {
                None => plan.push(None),
                Some(p) => {
                    let conv = conversion(schema.field(*p).data_type(), c).map_err(|reason| {
                        fail(Some(c.name.to_string()), format!("column {reason}"))
                    })?;
                    let projected = roots.iter().position(|r| r == p).unwrap_or(0);
                    plan.push(Some((projected, conv)));
                }
            }
        }
        let total_rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = catch_panic(|| {
            builder
                .with_projection(mask)
                .with_batch_size(CHUNK_RECORDS)
                .build()
        })
        .map_err(|p| fail(None, unreadable(p)))?
        .map_err(|e| fail(None, unreadable(e.to_string())))?;
        Ok(Self {
            def,
            file,
            reader: Some(reader),
            row_group_ends,
            plan,
            next_record: 1,
            start_at: start_at.max(1),
            total_rows,
            total_bytes,
        })
    }

    pub(crate) fn next_chunk(&mut self) -> Option<Chunk> {
        loop {
            let reader = self.reader.as_mut()?;
            // A panic of the decoder on damaged data is an error of the file, as its errors are.
            let next = catch_panic(|| reader.next())
                .unwrap_or_else(|p| Some(Err(arrow::error::ArrowError::ExternalError(p.into()))));
            let batch = match next? {
                Ok(b) => b,
                Err(e) => {
                    let n = self.next_record;
                    // The rest of the file cannot be read: one file-level error ends it.
                    self.reader = None;
                    let group = self.row_group_ends.partition_point(|end| *end < n);
                    let batch = RecordBatch::new_empty(chunk_schema(self.def));
                    return Some(Chunk {
                        batch,
                        first_record: n,
                        errors: vec![RecordError {
                            file: self.file.clone(),
                            record: Some(n),
                            column: None,
                            value: None,
                            reason: format!(
                                "unreadable Parquet data in row group {group} from this record on: {e}"
                            ),
                        }],
                        bytes_read: self.total_bytes,
                    });
                }
            };
            let first = self.next_record;
            let rows = batch.num_rows() as u64;
            self.next_record += rows;
            if first + rows <= self.start_at {
                continue;
            }
            let skip = self.start_at.saturating_sub(first) as usize;
            let batch = batch.slice(skip, batch.num_rows() - skip);
            let first = first + skip as u64;
            let mut errors = Vec::new();
            let columns: Vec<ArrayRef> = self
                .def
                .columns
                .iter()
                .zip(&self.plan)
                .map(|(c, plan)| match plan {
                    None => arrow::array::new_null_array(&c.ty.arrow_type(), batch.num_rows()),
                    Some((i, conv)) => {
                        convert(&self.file, c, batch.column(*i), *conv, first, &mut errors)
                    }
                })
                .collect();
            let batch = RecordBatch::try_new(chunk_schema(self.def), columns)
                .expect("conversions produce the contract schema");
            let done = self.next_record.saturating_sub(1);
            let bytes_read = if self.total_rows == 0 {
                self.total_bytes
            } else {
                (self.total_bytes as f64 * done as f64 / self.total_rows as f64) as u64
            };
            return Some(Chunk {
                batch,
                first_record: first,
                errors,
                bytes_read,
            });
        }
    }
}

fn convert(
    file: &str,
    c: &ColumnDef,
    array: &ArrayRef,
    conv: Conversion,
    first: u64,
    errors: &mut Vec<RecordError>,
) -> ArrayRef {
    let target = c.ty.arrow_type();
    let out: ArrayRef = match conv {
        Conversion::Exact => array.clone(),
        Conversion::Cast => {
            let opts = CastOptions {
                safe: true,
                ..Default::default()
            };
            match cast_with_options(array, &target, &opts) {
                Ok(out) => {
                    let formatter =
                        ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()).ok();
                    for i in 0..array.len() {
                        if array.is_valid(i) && out.is_null(i) {
                            let value = formatter.as_ref().map(|f| f.value(i).to_string());
                            errors.push(record_error(
                                file,
                                first + i as u64,
                                c.name,
                                value.as_deref(),
                                format!("out of range; expected {}", c.ty.describe()),
                            ));
                        }
                    }
                    out
                }
                Err(e) => {
                    errors.push(RecordError {
                        file: file.to_string(),
                        record: Some(first),
                        column: Some(c.name.to_string()),
                        value: None,
                        reason: format!("cannot convert the column: {e}"),
                    });
                    arrow::array::new_null_array(&target, array.len())
                }
            }
        }
        Conversion::Text | Conversion::ViaText => {
            let texts: Vec<Option<String>> = if matches!(conv, Conversion::Text) {
                match cast_with_options(array, &DataType::Utf8, &CastOptions::default()) {
                    Ok(a) => {
                        let s = a.as_any().downcast_ref::<StringArray>().cloned();
                        s.map(|s| s.iter().map(|v| v.map(str::to_string)).collect())
                            .unwrap_or_default()
                    }
                    Err(_) => vec![None; array.len()],
                }
            } else {
                match ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()) {
                    Ok(f) => (0..array.len())
                        .map(|i| array.is_valid(i).then(|| f.value(i).to_string()))
                        .collect(),
                    Err(_) => vec![None; array.len()],
                }
            };
            let mut b = ColumnBuilder::new(c.ty, texts.len());
            for (i, t) in texts.iter().enumerate() {
                match t.as_deref().map(str::trim) {
                    None | Some("") => b.append_null(),
                    Some(t) => {
                        if let Err(reason) = b.append_text(t) {
                            errors.push(record_error(
                                file,
                                first + i as u64,
                                c.name,
                                Some(t),
                                format!("{reason}; expected {}", c.ty.describe()),
                            ));
                        }
                    }
                }
            }
            b.finish()
        }
    };
    // Dates and instants of a Parquet file are numbers: keep them to the years a CSV file can
    // write (0000 to 9999, an instant a day either side for its offset), which every later
    // step can represent; a damaged page can hold any number.
    let out = if matches!(conv, Conversion::Exact | Conversion::Cast) {
        out_of_calendar(file, c, out, first, errors)
    } else {
        out
    };
    if !c.nullable && out.null_count() > 0 {
        for i in 0..out.len() {
            // Values that failed conversion were reported above; report the truly missing.
            if out.is_null(i) && array.is_null(i) {
                errors.push(record_error(file, first + i as u64, c.name, None, MISSING));
            }
        }
    }
    // Instants cast from another unit or zone are normalized to the stored type.
    debug_assert!(
        matches!(
            out.data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, _)
        ) || *out.data_type() == target
    );
    out
}

/// Reports the dates outside the years 0000 to 9999 (what a CSV file can write) and the
/// instants outside [`crate::text::instant_range`] (what the engine computes with), and makes
/// them NULL, as a field that cannot be read, so that the rules never compute with them.
fn out_of_calendar(
    file: &str,
    c: &ColumnDef,
    out: ArrayRef,
    first: u64,
    errors: &mut Vec<RecordError>,
) -> ArrayRef {
    use arrow::array::{Date32Array, TimestampMicrosecondArray};
    let bad: Vec<(usize, String)> = match c.ty {
        ColumnType::Date => {
            let Some(a) = out.as_any().downcast_ref::<Date32Array>() else {
                return out;
            };
            let days = crate::text::days_from_civil(0, 1, 1)
                ..=crate::text::days_from_civil(10_000, 1, 1) - 1;
            (0..a.len())
                .filter(|i| a.is_valid(*i) && !days.contains(&i64::from(a.value(*i))))
                .map(|i| (i, format!("{} days from 1970-01-01", a.value(i))))
                .collect()
        }
        ColumnType::Instant => {
            let Some(a) = out.as_any().downcast_ref::<TimestampMicrosecondArray>() else {
                return out;
            };
            let range = crate::text::instant_range();
            (0..a.len())
                .filter(|i| a.is_valid(*i) && !range.contains(&a.value(*i)))
                .map(|i| (i, format!("{} µs from 1970-01-01T00:00:00Z", a.value(i))))
                .collect()
        }
        _ => return out,
    };
    if bad.is_empty() {
        return out;
    }
    let mut null = vec![false; out.len()];
    for (i, value) in bad {
        null[i] = true;
        let reason = match c.ty {
            ColumnType::Date => "date out of range (years 0000 to 9999)",
            _ => crate::text::INSTANT_OUT_OF_RANGE,
        };
        errors.push(record_error(
            file,
            first + i as u64,
            c.name,
            Some(&value),
            format!("{reason}; expected {}", c.ty.describe()),
        ));
    }
    arrow::compute::nullif(&out, &arrow::array::BooleanArray::from(null)).unwrap_or(out)
}
