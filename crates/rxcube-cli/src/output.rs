//! Printing query results: a table for people, CSV or JSON for programs.

use std::io::Write;

use arrow::array::{Array, RecordBatch};
use arrow::util::pretty::pretty_format_batches;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
}

pub fn print_batches(
    out: &mut dyn Write,
    batches: &[RecordBatch],
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let cols: Vec<_> = batches
                    .first()
                    .map(|b| {
                        b.schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect()
                    })
                    .unwrap_or_default();
                writeln!(
                    out,
                    "(no rows{})",
                    if cols.is_empty() {
                        String::new()
                    } else {
                        format!("; columns: {}", cols.join(", "))
                    }
                )?;
            } else {
                writeln!(out, "{}", pretty_format_batches(batches)?)?;
            }
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for b in batches {
                w.write(&nested_as_text(b)?)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The batch with its nested columns (lists, structs: a rollup's histograms) rendered as text,
/// as the table format shows them; CSV has no nested values.
fn nested_as_text(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let options = arrow::util::display::FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<arrow::array::ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let f = arrow::util::display::ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: arrow::array::StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| f.value(i).to_string()))
                .collect();
            fields.push(arrow::datatypes::Field::new(
                field.name(),
                arrow::datatypes::DataType::Utf8,
                true,
            ));
            columns.push(std::sync::Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )?)
}
