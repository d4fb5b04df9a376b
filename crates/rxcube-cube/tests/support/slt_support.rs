//! Shared by the sqllogictest harness (`rxcube-access/tests/sqllogictests.rs`) and the cube's
//! `EXPLAIN` tests (`rxcube-cube/tests/explain.rs`): landing a fixture chain, and printing results the way
//! the `.slt` files expect (floats with 4 decimals, NULL as `NULL`, timestamps ISO 8601).

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use rxcube_ingest::{ImportOptions, NoProgress, Status, import};
use rxcube_model::TableName;
use rxcube_warehouse::Warehouse;
use sqllogictest::{DBOutput, DefaultColumnType};

/// The rows of `batches` as sqllogictest compares them.
pub fn output(batches: &[RecordBatch]) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
    let Some(first) = batches.first() else {
        return Ok(DBOutput::Rows {
            types: vec![],
            rows: vec![],
        });
    };
    let columns = first.num_columns();
    let mut rows = Vec::new();
    let options = FormatOptions::default().with_null("NULL");
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            rows.push(
                (0..columns)
                    .map(|c| {
                        let col = b.column(c);
                        if *col.data_type() == DataType::Float64 && col.is_valid(i) {
                            let v = col.as_primitive::<Float64Type>().value(i);
                            let s = format!("{v:.4}");
                            if s == "-0.0000" {
                                "0.0000".to_string()
                            } else {
                                s
                            }
                        } else {
                            formatters[c].value(i).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(DBOutput::Rows {
        types: vec![DefaultColumnType::Any; columns],
        rows,
    })
}

/// Lands the fixture chain in `dir` (every `<table>.csv` present, in load order) into a fresh
/// warehouse at `root`; every file must be accepted.
pub async fn land(dir: &Path, root: &Path) -> Warehouse {
    let warehouse = Warehouse::open(root.to_str().expect("utf8 path")).expect("warehouse");
    for table in TableName::ALL {
        let file = dir.join(format!("{}.csv", table.as_str()));
        if !file.exists() {
            continue;
        }
        let report = import(
            &warehouse,
            table,
            &[file],
            &ImportOptions::default(),
            &NoProgress,
        )
        .await
        .expect("import runs");
        assert_eq!(
            report.status,
            Status::Accepted,
            "{table:?}: {:?}",
            report.errors
        );
    }
    warehouse
}
