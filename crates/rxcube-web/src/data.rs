//! The pages' numbers: SQL over the cube relations, run in the signed-in user's scoped
//! session (the session its Flight SQL statements run in), so a page shows exactly what the
//! same SQL shows that user.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::DataType;
use rxcube_server::Service;

use crate::auth::SignedIn;

/// Why a page cannot be shown. Every variant renders a page that names nothing outside what
/// the request itself said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageError {
    /// Unknown, or outside the user's scope: the same answer for both.
    NotFound,
    /// A malformed request (a bad period, an unknown metric): what is wrong with it.
    BadRequest(String),
    /// The query failed or took too long (the log has why).
    Failed,
}

/// A SQL string literal: `'...'` with quotes doubled.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A node name as the pages accept it: the contract's text ids (at most 64 bytes, no control
/// characters) and the org's names. Anything else cannot exist.
pub fn valid_node(node: &str) -> bool {
    !node.is_empty() && node.len() <= 64 && !node.chars().any(char::is_control)
}

/// The rows of a query, every column read as text and, where it converts, as a number.
#[derive(Debug, Default)]
pub struct Rows {
    len: usize,
    text: HashMap<String, Vec<Option<String>>>,
    num: HashMap<String, Vec<Option<f64>>>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text of `column` in row `i` (timestamps as `2024-03-03T00:00:00`).
    pub fn text(&self, i: usize, column: &str) -> Option<&str> {
        self.text.get(column)?.get(i)?.as_deref()
    }

    pub fn num(&self, i: usize, column: &str) -> Option<f64> {
        *self.num.get(column)?.get(i)?
    }

    /// The date (`YYYY-MM-DD`) of a timestamp or date column.
    pub fn date(&self, i: usize, column: &str) -> Option<chrono::NaiveDate> {
        let t = self.text(i, column)?;
        chrono::NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok()
    }
}

fn texts(a: &ArrayRef) -> Option<Vec<Option<String>>> {
    let c = cast(a, &DataType::Utf8).ok()?;
    let s = c.as_any().downcast_ref::<StringArray>()?;
    Some(
        (0..s.len())
            .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
            .collect(),
    )
}

fn numbers(a: &ArrayRef) -> Option<Vec<Option<f64>>> {
    if !a.data_type().is_numeric() {
        return None;
    }
    let c = cast(a, &DataType::Float64).ok()?;
    let f = c.as_any().downcast_ref::<Float64Array>()?;
    Some(
        (0..f.len())
            .map(|i| (!f.is_null(i)).then(|| f.value(i)))
            .collect(),
    )
}

/// Runs `sql` for the signed-in `user` through the server's limits (its scoped session, the
/// statement timeout, a memory pool of its own, its running statements). Every page's SQL is
/// over the snapshot's relations only, so its answer is kept for the snapshot and the user
/// ([`Service::collect_kept`]): a page opened again is read back without planning.
pub async fn query(service: &Service, user: &SignedIn, sql: &str) -> Result<Rows, PageError> {
    let began = std::time::Instant::now();
    let collected = service
        .collect_kept(&user.principal, &user.session, sql, user.client.clone())
        .await;
    tracing::debug!(sql, elapsed = ?began.elapsed(), "web: a page's query");
    match collected {
        Ok(batches) => rows(&batches).map_err(|e| {
            tracing::warn!(sql, "web: a page's result is unreadable: {e}");
            PageError::Failed
        }),
        Err(status) => {
            tracing::warn!(sql, "web: a page's query failed: {}", status.message());
            Err(PageError::Failed)
        }
    }
}

/// The rows of `batches`, every column read as text and, where it converts, as a number.
pub fn rows(batches: &[RecordBatch]) -> Result<Rows, arrow::error::ArrowError> {
    let Some(first) = batches.first() else {
        return Ok(Rows::default());
    };
    let batch = concat_batches(&first.schema(), batches)?;
    let mut rows = Rows {
        len: batch.num_rows(),
        ..Rows::default()
    };
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if let Some(t) = texts(column) {
            rows.text.insert(field.name().clone(), t);
        }
        if let Some(n) = numbers(column) {
            rows.num.insert(field.name().clone(), n);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_nodes_bounded() {
        assert_eq!(quote("O'Hare"), "'O''Hare'");
        assert_eq!(quote("a\\'b"), "'a\\''b'");
        assert!(valid_node("RX101"));
        assert!(valid_node("00423"));
        assert!(!valid_node(""));
        assert!(!valid_node(&"x".repeat(65)));
        assert!(!valid_node("a\nb"));
    }

    #[tokio::test]
    async fn a_quoted_literal_reads_back_exactly() {
        let ctx = datafusion::prelude::SessionContext::new();
        for s in ["O'Hare", "a\\'b", "''", "\\", "x' OR '1'='1"] {
            let batches = ctx
                .sql(&format!("SELECT {} AS s, 2.5 AS n", quote(s)))
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run");
            let rows = rows(&batches).expect("rows");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows.text(0, "s"), Some(s));
            assert_eq!(rows.num(0, "n"), Some(2.5));
            assert_eq!(rows.num(0, "s"), None);
        }
        assert!(rows(&[]).expect("no batches").is_empty());
    }
}
