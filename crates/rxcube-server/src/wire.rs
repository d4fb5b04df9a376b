//! What crosses the wire: types clients can read, and parameters bound the way clients send
//! them.
//!
//! - DataFusion reads Parquet strings as `Utf8View` and binary as `BinaryView`; many clients
//!   (JDBC before 19, older pyarrow and ADBC builds) cannot read view types, so every schema
//!   and batch the server sends has them cast to `Utf8` / `Binary`, nested types included.
//! - Clients write `?` placeholders; DataFusion binds `$1`, `$2`, ...: [`positional`] rewrites
//!   them (outside literals, identifiers and comments, using DataFusion's own SQL tokenizer).
//! - Parameters arrive as a record batch, one row per parameter set, columns in placeholder
//!   order: [`parameter_sets`] turns each row into values, cast to the types the plan expects.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// `t` with view types replaced by their plain counterparts.
pub fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(plain_field(f)),
        DataType::LargeList(f) => DataType::LargeList(plain_field(f)),
        DataType::ListView(f) => DataType::List(plain_field(f)),
        DataType::LargeListView(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(plain_fields(fields)),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(plain_type(v))),
        t => t.clone(),
    }
}

fn plain_field(f: &FieldRef) -> FieldRef {
    Arc::new(f.as_ref().clone().with_data_type(plain_type(f.data_type())))
}

fn plain_fields(fields: &Fields) -> Fields {
    fields.iter().map(plain_field).collect()
}

/// `schema` as sent to clients (metadata kept).
pub fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        plain_fields(schema.fields()),
        schema.metadata().clone(),
    ))
}

/// `batch` cast to `schema` (a [`plain_schema`] of its own).
pub fn plain_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.with_schema(schema.clone())?);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, ... in order.
pub fn positional(sql: &str) -> Result<String> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| DataFusionError::Plan(format!("cannot read the SQL: {e}")))?;
    let mut n = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for t in tokens {
        match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            t => out.push_str(&t.to_string()),
        }
    }
    Ok(out)
}

/// The placeholders of a plan (`$1`, `$2`, ...), ordered by number, with the types the plan
/// infers for them (`None`: any).
pub fn placeholders(types: &HashMap<String, Option<DataType>>) -> Vec<(String, Option<DataType>)> {
    let mut out: Vec<(String, Option<DataType>)> =
        types.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    out.sort_by_key(|(k, _)| {
        k.trim_start_matches('$')
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    out
}

/// The parameter schema reported for a prepared statement: one field per placeholder, in
/// order (`Null` where the plan leaves the type open).
pub fn parameter_schema(types: &HashMap<String, Option<DataType>>) -> Schema {
    Schema::new(
        placeholders(types)
            .into_iter()
            .map(|(name, t)| Field::new(name, plain_type(&t.unwrap_or(DataType::Null)), true))
            .collect::<Vec<_>>(),
    )
}

/// The parameter sets of `batch` (one per row), each value cast to the type its placeholder
/// expects.
pub fn parameter_sets(
    batch: &RecordBatch,
    types: &HashMap<String, Option<DataType>>,
) -> Result<Vec<ParamValues>> {
    let expected = placeholders(types);
    if batch.num_columns() != expected.len() {
        return Err(DataFusionError::Plan(format!(
            "the statement has {} parameter(s), {} were bound",
            expected.len(),
            batch.num_columns()
        )));
    }
    (0..batch.num_rows())
        .map(|row| {
            let values = batch
                .columns()
                .iter()
                .zip(&expected)
                .map(|(c, (name, t))| {
                    let v = ScalarValue::try_from_array(c, row)?;
                    match t {
                        Some(t) if v.data_type() != *t => v.cast_to(t).map_err(|e| {
                            DataFusionError::Plan(format!(
                                "parameter {name}: cannot use {v:?} as {t}: {e}"
                            ))
                        }),
                        _ => Ok(v),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(ParamValues::List(
                values.into_iter().map(Into::into).collect(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, StringViewArray};

    #[test]
    fn question_marks_become_numbered_placeholders_outside_literals_and_comments() {
        assert_eq!(
            positional("SELECT '?', \"a?\" FROM t WHERE x = ? AND y = ? -- why?\n").expect("sql"),
            "SELECT '?', \"a?\" FROM t WHERE x = $1 AND y = $2 -- why?\n"
        );
        assert_eq!(positional("SELECT 1").expect("sql"), "SELECT 1");
    }

    #[test]
    fn views_go_out_as_plain_types_nested_ones_included() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, false),
            Field::new_list("l", Field::new("item", DataType::Utf8View, true), true),
        ]);
        let plain = plain_schema(&schema);
        assert_eq!(plain.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            plain.field(1).data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "s",
                DataType::Utf8View,
                false,
            )])),
            vec![Arc::new(StringViewArray::from(vec!["a", "b"]))],
        )
        .expect("batch");
        let target = plain_schema(&batch.schema());
        let out = plain_batch(batch, &target).expect("cast");
        assert_eq!(out.column(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn parameters_are_cast_to_what_the_plan_expects_and_counted() {
        let types = HashMap::from([
            ("$2".to_string(), Some(DataType::Utf8)),
            ("$1".to_string(), Some(DataType::Int32)),
        ]);
        assert_eq!(
            parameter_schema(&types)
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
            ["$1", "$2"]
        );
        let batch = RecordBatch::try_from_iter(vec![
            ("0", Arc::new(Int64Array::from(vec![4, 5])) as _),
            (
                "1",
                Arc::new(StringArray::from(vec!["x", "' OR 1=1 --"])) as _,
            ),
        ])
        .expect("batch");
        let sets = parameter_sets(&batch, &types).expect("sets");
        assert_eq!(sets.len(), 2);
        let ParamValues::List(second) = &sets[1] else {
            panic!("positional")
        };
        assert_eq!(second[0].value(), &ScalarValue::Int32(Some(5)));
        assert_eq!(
            second[1].value(),
            &ScalarValue::Utf8(Some("' OR 1=1 --".into()))
        );
        let one = RecordBatch::try_from_iter(vec![("0", Arc::new(Int64Array::from(vec![4])) as _)])
            .expect("batch");
        let err = parameter_sets(&one, &types).unwrap_err().to_string();
        assert!(err.contains("2 parameter(s), 1 were bound"), "{err}");
    }
}
