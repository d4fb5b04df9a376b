//! The files a run lands: one writer per table and format that takes rows one at a time and
//! writes them as it goes, as CSV lines formatted by hand into a reused buffer (written out in
//! chunks of about 256 KiB), or as Arrow batches of [`BATCH_ROWS`] with exactly
//! [`TableDef::schema`] through parquet's `ArrowWriter` (zstd). Nothing bigger than a batch is
//! held in memory.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rxcube_model::{TableDef, TableName};

use crate::clock::{DIGIT_PAIRS, Stamp, TimeText};
use crate::records::{FieldSink, Record};
use crate::{Format, GenError, GeneratedFile};

/// Rows per written batch.
pub(crate) const BATCH_ROWS: usize = 65_536;
/// CSV text is written out in chunks of about this size: small enough for the buffer to stay
/// in the CPU cache, which matters more than the number of writes.
const CSV_CHUNK_BYTES: usize = 256 * 1024;

/// Subdirectory of the output directory that holds the correction files.
pub(crate) const CORRECTIONS_DIR: &str = "corrections";

/// Where the files of a run go.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    out: PathBuf,
    format: Format,
}

impl Layout {
    /// Creates the output directory and its corrections subdirectory.
    pub(crate) fn create(out: &Path, format: Format) -> Result<Self, GenError> {
        let corrections = out.join(CORRECTIONS_DIR);
        std::fs::create_dir_all(&corrections).map_err(|source| GenError::CreateDir {
            path: corrections,
            source,
        })?;
        Ok(Layout {
            out: out.to_path_buf(),
            format,
        })
    }

    /// A writer for the main file of `table`.
    pub(crate) fn table(&self, table: TableName) -> Result<TableWriter, GenError> {
        let path = self
            .out
            .join(format!("{}.{}", table, self.format.extension()));
        TableWriter::create(table, path, self.format, false)
    }

    /// A writer for the correction file of `table`.
    pub(crate) fn corrections(&self, table: TableName) -> Result<TableWriter, GenError> {
        let path =
            self.out
                .join(CORRECTIONS_DIR)
                .join(format!("{}.{}", table, self.format.extension()));
        TableWriter::create(table, path, self.format, true)
    }
}

/// The writers of the event tables and of their corrections, open for the whole day loop.
pub(crate) struct EventFiles {
    pub payroll: TableWriter,
    pub pos: TableWriter,
    pub rx_fills: TableWriter,
    pub surveys: TableWriter,
    pub payroll_corrections: TableWriter,
    pub pos_corrections: TableWriter,
    pub rx_fill_corrections: TableWriter,
}

impl EventFiles {
    pub(crate) fn create(layout: &Layout) -> Result<Self, GenError> {
        Ok(EventFiles {
            payroll: layout.table(TableName::Payroll)?,
            pos: layout.table(TableName::Pos)?,
            rx_fills: layout.table(TableName::RxFills)?,
            surveys: layout.table(TableName::Surveys)?,
            payroll_corrections: layout.corrections(TableName::Payroll)?,
            pos_corrections: layout.corrections(TableName::Pos)?,
            rx_fill_corrections: layout.corrections(TableName::RxFills)?,
        })
    }

    /// Rows written so far, over all files.
    pub(crate) fn rows(&self) -> u64 {
        [
            &self.payroll,
            &self.pos,
            &self.rx_fills,
            &self.surveys,
            &self.payroll_corrections,
            &self.pos_corrections,
            &self.rx_fill_corrections,
        ]
        .iter()
        .map(|w| w.rows())
        .sum()
    }

    /// Closes every file: the tables in contract order, then the corrections.
    pub(crate) fn finish(self) -> Result<Vec<GeneratedFile>, GenError> {
        [
            self.payroll,
            self.pos,
            self.rx_fills,
            self.surveys,
            self.payroll_corrections,
            self.pos_corrections,
            self.rx_fill_corrections,
        ]
        .into_iter()
        .map(TableWriter::finish)
        .collect()
    }
}

/// Writes the rows of one table into one file.
pub(crate) struct TableWriter {
    table: TableName,
    path: PathBuf,
    correction: bool,
    rows: u64,
    pending: usize,
    output: Output,
}

enum Output {
    Csv {
        file: File,
        line: CsvLine,
    },
    Parquet {
        writer: Box<ArrowWriter<File>>,
        columns: ArrowColumns,
    },
}

impl TableWriter {
    fn create(
        table: TableName,
        path: PathBuf,
        format: Format,
        correction: bool,
    ) -> Result<Self, GenError> {
        let file = File::create(&path).map_err(|source| GenError::Io {
            path: path.clone(),
            source,
        })?;
        let def = table.def();
        let output = match format {
            Format::Csv => {
                let mut line = CsvLine {
                    buf: Vec::with_capacity(CSV_CHUNK_BYTES + 4096),
                    ..CsvLine::default()
                };
                line.header(def);
                Output::Csv { file, line }
            }
            Format::Parquet => {
                let schema = def.schema();
                let columns =
                    ArrowColumns::new(schema.clone()).map_err(|source| GenError::Arrow {
                        path: path.clone(),
                        source,
                    })?;
                let parquet_error = |source| GenError::Parquet {
                    path: path.clone(),
                    source,
                };
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(
                        ZstdLevel::try_new(3).map_err(parquet_error)?,
                    ))
                    .build();
                let writer =
                    ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet_error)?;
                Output::Parquet {
                    writer: Box::new(writer),
                    columns,
                }
            }
        };
        Ok(TableWriter {
            table,
            path,
            correction,
            rows: 0,
            pending: 0,
            output,
        })
    }

    /// Appends one row.
    pub(crate) fn write<R: Record>(&mut self, row: &R) -> Result<(), GenError> {
        debug_assert_eq!(R::TABLE, self.table, "row written to another table's file");
        self.rows += 1;
        self.pending += 1;
        let full = match &mut self.output {
            Output::Csv { line, .. } => {
                row.emit(line);
                line.end_row();
                line.buf.len() >= CSV_CHUNK_BYTES || self.pending >= BATCH_ROWS
            }
            Output::Parquet { columns, .. } => {
                columns.cursor = 0;
                row.emit(columns);
                self.pending >= BATCH_ROWS
            }
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    fn flush(&mut self) -> Result<(), GenError> {
        self.pending = 0;
        match &mut self.output {
            Output::Csv { file, line } => {
                file.write_all(&line.buf).map_err(|source| GenError::Io {
                    path: self.path.clone(),
                    source,
                })?;
                line.buf.clear();
            }
            Output::Parquet { writer, columns } => {
                let batch = columns.finish_batch().map_err(|source| GenError::Arrow {
                    path: self.path.clone(),
                    source,
                })?;
                if batch.num_rows() > 0 {
                    writer.write(&batch).map_err(|source| GenError::Parquet {
                        path: self.path.clone(),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Writes what is left and closes the file.
    pub(crate) fn finish(mut self) -> Result<GeneratedFile, GenError> {
        self.flush()?;
        let path = self.path;
        match self.output {
            Output::Csv { mut file, .. } => file.flush().map_err(|source| GenError::Io {
                path: path.clone(),
                source,
            })?,
            Output::Parquet { writer, .. } => {
                writer.close().map_err(|source| GenError::Parquet {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(GeneratedFile {
            table: self.table,
            path,
            rows: self.rows,
            correction: self.correction,
        })
    }
}

/// CSV text of the pending rows: fields separated by commas, NULL as an empty field, text
/// quoted only when it must be.
#[derive(Default)]
struct CsvLine {
    buf: Vec<u8>,
    /// True before the first field of a line.
    line_start: bool,
    time: TimeText,
}

impl CsvLine {
    fn header(&mut self, def: &TableDef) {
        self.line_start = true;
        for c in def.columns {
            self.text(c.name);
        }
        self.end_row();
    }

    fn end_row(&mut self) {
        self.buf.push(b'\n');
        self.line_start = true;
    }

    fn separate(&mut self) {
        if self.line_start {
            self.line_start = false;
        } else {
            self.buf.push(b',');
        }
    }
}

/// Appends an integer in decimal, four digits at a time, straight into the buffer.
fn push_int(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    let mut n = v.unsigned_abs();
    // Most fields (line numbers, pharmacy ids, quantities, dollars) are short.
    if n < 10 {
        buf.push(b'0' + n as u8);
        return;
    }
    if n < 100 {
        buf.extend_from_slice(&[DIGIT_PAIRS[n as usize * 2], DIGIT_PAIRS[n as usize * 2 + 1]]);
        return;
    }
    let len = n.checked_ilog10().map_or(1, |l| l as usize + 1);
    let start = buf.len();
    // A fixed-size extend and a truncate: no call to memset for a variable length.
    buf.extend_from_slice(&[b'0'; 20]);
    buf.truncate(start + len);
    let digits = &mut buf[start..];
    let mut end = len;
    while n >= 10_000 {
        let chunk = (n % 10_000) as usize;
        n /= 10_000;
        let (hi, lo) = (chunk / 100 * 2, chunk % 100 * 2);
        digits[end - 4..end].copy_from_slice(&[
            DIGIT_PAIRS[hi],
            DIGIT_PAIRS[hi + 1],
            DIGIT_PAIRS[lo],
            DIGIT_PAIRS[lo + 1],
        ]);
        end -= 4;
    }
    let mut n = n as usize;
    if n >= 100 {
        let pair = n % 100 * 2;
        n /= 100;
        digits[end - 2..end].copy_from_slice(&[DIGIT_PAIRS[pair], DIGIT_PAIRS[pair + 1]]);
        end -= 2;
    }
    if n >= 10 {
        digits[end - 2..end].copy_from_slice(&[DIGIT_PAIRS[n * 2], DIGIT_PAIRS[n * 2 + 1]]);
    } else {
        digits[end - 1] = b'0' + n as u8;
    }
}

impl FieldSink for CsvLine {
    fn int32(&mut self, v: i32) {
        self.separate();
        push_int(&mut self.buf, i64::from(v));
    }

    fn opt_int32(&mut self, v: Option<i32>) {
        match v {
            Some(v) => self.int32(v),
            None => self.separate(),
        }
    }

    fn text(&mut self, v: &str) {
        self.separate();
        if v.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
            self.buf.push(b'"');
            for b in v.bytes() {
                if b == b'"' {
                    self.buf.push(b'"');
                }
                self.buf.push(b);
            }
            self.buf.push(b'"');
        } else {
            self.buf.extend_from_slice(v.as_bytes());
        }
    }

    fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.text(v),
            None => self.separate(),
        }
    }

    fn date(&mut self, epoch_day: i64) {
        self.separate();
        self.time.date(&mut self.buf, epoch_day);
    }

    fn opt_date(&mut self, epoch_day: Option<i64>) {
        match epoch_day {
            Some(d) => self.date(d),
            None => self.separate(),
        }
    }

    fn instant(&mut self, v: Stamp) {
        self.separate();
        self.time.stamp(&mut self.buf, v);
    }

    fn hundredths(&mut self, v: i64) {
        self.separate();
        if v < 0 {
            self.buf.push(b'-');
        }
        let abs = v.unsigned_abs();
        push_int(&mut self.buf, (abs / 100) as i64);
        let cents = (abs % 100) as u8;
        self.buf
            .extend_from_slice(&[b'.', b'0' + cents / 10, b'0' + cents % 10]);
    }

    fn float64(&mut self, v: f64) {
        self.separate();
        // Writing into a Vec cannot fail.
        let _ = write!(self.buf, "{v}");
    }
}

/// Arrow builders for one batch, one per contract column.
struct ArrowColumns {
    schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    /// Column the next field goes to.
    cursor: usize,
    /// Set when a row's fields did not match the column types; reported at the next batch.
    mismatch: bool,
}

enum ColumnBuilder {
    Int32(Int32Builder),
    Int64(Int64Builder),
    Utf8(StringBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Decimal(Decimal128Builder),
    Float64(Float64Builder),
}

impl ColumnBuilder {
    fn new(data_type: &DataType) -> Result<Self, ArrowError> {
        let n = BATCH_ROWS;
        Ok(match data_type {
            DataType::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(n)),
            DataType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(n)),
            DataType::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(n, n * 16)),
            DataType::Date32 => ColumnBuilder::Date32(Date32Builder::with_capacity(n)),
            DataType::Timestamp(TimeUnit::Microsecond, _) => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(n).with_data_type(data_type.clone()),
            ),
            DataType::Decimal128(precision, scale) => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(n).with_precision_and_scale(*precision, *scale)?,
            ),
            DataType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(n)),
            other => {
                return Err(ArrowError::NotYetImplemented(format!(
                    "the generator has no builder for {other}"
                )));
            }
        })
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Date32(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
        }
    }
}

impl ArrowColumns {
    fn new(schema: SchemaRef) -> Result<Self, ArrowError> {
        let builders = schema
            .fields()
            .iter()
            .map(|f| ColumnBuilder::new(f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ArrowColumns {
            schema,
            builders,
            cursor: 0,
            mismatch: false,
        })
    }

    fn finish_batch(&mut self) -> Result<RecordBatch, ArrowError> {
        if std::mem::take(&mut self.mismatch) {
            return Err(ArrowError::SchemaError(
                "a generated row does not match the contract's column types".to_string(),
            ));
        }
        let arrays = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        RecordBatch::try_new(self.schema.clone(), arrays)
    }

    /// Hands the next column's builder to `append`, which returns false on a type mismatch.
    fn put(&mut self, append: impl FnOnce(&mut ColumnBuilder) -> bool) {
        let ok = self.builders.get_mut(self.cursor).is_some_and(append);
        self.cursor += 1;
        self.mismatch |= !ok;
    }
}

impl FieldSink for ArrowColumns {
    fn int32(&mut self, v: i32) {
        self.opt_int32(Some(v));
    }

    fn opt_int32(&mut self, v: Option<i32>) {
        self.put(|b| match b {
            ColumnBuilder::Int32(b) => {
                b.append_option(v);
                true
            }
            _ => false,
        });
    }

    fn text(&mut self, v: &str) {
        self.opt_text(Some(v));
    }

    fn opt_text(&mut self, v: Option<&str>) {
        self.put(|b| match b {
            ColumnBuilder::Utf8(b) => {
                b.append_option(v);
                true
            }
            _ => false,
        });
    }

    fn date(&mut self, epoch_day: i64) {
        self.opt_date(Some(epoch_day));
    }

    fn opt_date(&mut self, epoch_day: Option<i64>) {
        self.put(|b| match b {
            ColumnBuilder::Date32(b) => {
                b.append_option(epoch_day.map(|d| d as i32));
                true
            }
            _ => false,
        });
    }

    fn instant(&mut self, v: Stamp) {
        self.put(|b| match b {
            ColumnBuilder::Timestamp(b) => {
                b.append_value(v.micros());
                true
            }
            _ => false,
        });
    }

    fn hundredths(&mut self, v: i64) {
        self.put(|b| match b {
            ColumnBuilder::Decimal(b) => {
                b.append_value(i128::from(v));
                true
            }
            _ => false,
        });
    }

    fn float64(&mut self, v: f64) {
        self.put(|b| match b {
            ColumnBuilder::Float64(b) => {
                b.append_value(v);
                true
            }
            _ => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(f: impl FnOnce(&mut CsvLine)) -> String {
        let mut line = CsvLine {
            line_start: true,
            ..CsvLine::default()
        };
        f(&mut line);
        String::from_utf8_lossy(&line.buf).into_owned()
    }

    #[test]
    fn csv_fields_are_formatted_by_type() {
        let text = csv(|l| {
            l.int32(-1_234_567_890);
            l.int32(i32::MIN);
            l.int32(9);
            l.int32(10);
            l.int32(100);
            l.int32(0);
            l.opt_int32(None);
            l.hundredths(-5);
            l.hundredths(123_456);
            l.hundredths(0);
            l.text("Say \"hi\", Bob");
            l.id(crate::ids::pharmacy(1).0);
            l.opt_id(None);
            l.opt_date(Some(19_729));
            l.float64(7.5);
            l.float64(85.0);
            l.end_row();
        });
        assert_eq!(
            text,
            "-1234567890,-2147483648,9,10,100,0,,-0.05,1234.56,0.00,\"Say \"\"hi\"\", Bob\",00423,,2024-01-07,7.5,85\n"
        );
        let mut buf = Vec::new();
        push_int(&mut buf, i64::MIN);
        push_int(&mut buf, -1_234_567_890_123);
        assert_eq!(buf, b"-9223372036854775808-1234567890123");
    }

    #[test]
    fn a_row_of_the_wrong_shape_fails_the_batch_instead_of_panicking() -> Result<(), ArrowError> {
        let mut columns = ArrowColumns::new(TableName::Surveys.def().schema())?;
        columns.cursor = 0;
        columns.int32(7);
        assert!(columns.finish_batch().is_err());
        Ok(())
    }
}
